//! A bounded queue between the batch processor's threads whose waiting side
//! sleeps in the kernel at once.
//!
//! Used for the batches the batch thread hands to the export thread and for
//! the replies to flush and shutdown. `crossbeam-channel`'s blocking `send`
//! and `recv` first spin and then call `sched_yield` several times before
//! parking (`Backoff::snooze`); with a batch a few microseconds' work for a
//! discarding exporter, the export thread spun in `recv` and the batch thread
//! in `send` on every batch: about a quarter of each thread's CPU in a
//! profile of the batch benchmark (docs/benchmarks.md, session 15).
//! `std::sync::mpsc` has no timed send, which handing a batch to a busy
//! exporter needs. This is a `VecDeque` under a `parking_lot` mutex with two
//! condition variables; the critical sections are a push or a pop.
//!
//! The wake-ups producers send to the batch thread stay on
//! `crossbeam-channel`, on purpose: while its receiver is still spinning or
//! yielding, a producer's `try_send` wakes it without a system call, and
//! with this queue every chunk's wake-up cost the calling thread a futex
//! wake (the calling thread's CPU per span against `opentelemetry_sdk`'s went
//! from a median 0.33 to 0.38 over nine runs of the same benchmark).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Why [`Sender::try_send`] failed; the item comes back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    Full(T),
    Disconnected(T),
}

/// Why [`Sender::send_timeout`] failed; the item comes back.
#[derive(Debug)]
pub(crate) enum SendTimeoutError<T> {
    Timeout(T),
    Disconnected(T),
}

impl<T> SendTimeoutError<T> {
    pub(crate) fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(t) | SendTimeoutError::Disconnected(t) => t,
        }
    }
}

/// Why [`Receiver::recv_timeout`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RecvTimeoutError {
    Timeout,
    /// Every sender is gone and the queue is empty.
    Disconnected,
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    cap: usize,
}

/// The sending half; cloning adds a sender.
pub(crate) struct Sender<T> {
    inner: Arc<Inner<T>>,
}

/// The receiving half (one per queue).
pub(crate) struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

/// A queue holding at most `cap` items (at least one).
pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let cap = cap.max(1);
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::with_capacity(cap),
            senders: 1,
            receiver: true,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
        cap,
    });
    (
        Sender {
            inner: Arc::clone(&inner),
        },
        Receiver { inner },
    )
}

impl<T> Sender<T> {
    /// Queues `item` if there is room, without waiting.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut s = self.inner.state.lock();
        if !s.receiver {
            return Err(TrySendError::Disconnected(item));
        }
        if s.items.len() >= self.inner.cap {
            return Err(TrySendError::Full(item));
        }
        s.items.push_back(item);
        drop(s);
        self.inner.not_empty.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting at most `timeout` for room.
    pub(crate) fn send_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.inner.state.lock();
        loop {
            if !s.receiver {
                return Err(SendTimeoutError::Disconnected(item));
            }
            if s.items.len() < self.inner.cap {
                s.items.push_back(item);
                drop(s);
                self.inner.not_empty.notify_one();
                return Ok(());
            }
            match deadline {
                Some(d) => {
                    if self.inner.not_full.wait_until(&mut s, d).timed_out()
                        && s.items.len() >= self.inner.cap
                    {
                        return Err(SendTimeoutError::Timeout(item));
                    }
                }
                None => self.inner.not_full.wait(&mut s),
            }
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.state.lock().senders += 1;
        Sender {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.inner.state.lock();
        s.senders -= 1;
        let last = s.senders == 0;
        drop(s);
        if last {
            self.inner.not_empty.notify_all();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting at most `timeout`; queued items are still
    /// delivered after the last sender is gone.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.inner.state.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                drop(s);
                self.inner.not_full.notify_one();
                return Ok(item);
            }
            if s.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            match deadline {
                Some(d) => {
                    if self.inner.not_empty.wait_until(&mut s, d).timed_out() && s.items.is_empty()
                    {
                        return Err(if s.senders == 0 {
                            RecvTimeoutError::Disconnected
                        } else {
                            RecvTimeoutError::Timeout
                        });
                    }
                }
                None => self.inner.not_empty.wait(&mut s),
            }
        }
    }

    /// The next item, waiting as long as a sender exists; `None` once every
    /// sender is gone and the queue is empty.
    pub(crate) fn recv(&self) -> Option<T> {
        // No deadline: `recv_timeout` waits without one and only returns
        // `Disconnected`.
        self.recv_timeout(Duration::MAX).ok()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.inner.state.lock();
        s.receiver = false;
        // Items left behind are dropped here, as a channel's would be.
        let left = std::mem::take(&mut s.items);
        drop(s);
        self.inner.not_full.notify_all();
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn bounded_in_order_and_full_when_at_capacity() {
        let (tx, rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let t = Instant::now();
        assert!(matches!(
            tx.send_timeout(3, Duration::from_millis(50)),
            Err(SendTimeoutError::Timeout(3))
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(rx.recv_timeout(Duration::ZERO), Ok(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.recv(), Some(2));
        assert_eq!(rx.recv(), Some(3));
        let t = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(50)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_waiting_sender_and_receiver_are_woken() {
        let (tx, rx) = bounded::<u32>(1);
        tx.try_send(0).unwrap();
        let sender = thread::spawn(move || {
            // Waits for room: the receiver below takes the first item.
            tx.send_timeout(1, Duration::from_secs(30)).unwrap();
            tx.send_timeout(2, Duration::from_secs(30)).unwrap();
        });
        thread::sleep(Duration::from_millis(20));
        let got: Vec<u32> = std::iter::from_fn(|| rx.recv()).collect();
        assert_eq!(
            got,
            [0, 1, 2],
            "every item, then None once the sender is gone"
        );
        sender.join().unwrap();
    }

    #[test]
    fn disconnection_is_seen_by_both_sides() {
        let (tx, rx) = bounded(4);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        drop(tx);
        // One sender is left: still connected.
        assert_eq!(rx.recv_timeout(Duration::ZERO), Ok(1));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
        tx2.try_send(2).unwrap();
        drop(tx2);
        // Queued items outlive the senders.
        assert_eq!(rx.recv_timeout(Duration::ZERO), Ok(2));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert_eq!(rx.recv(), None);

        let (tx, rx) = bounded(1);
        tx.try_send(1).unwrap();
        let waiting = thread::spawn(move || tx.send_timeout(2, Duration::from_secs(30)));
        thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert!(matches!(
            waiting.join().unwrap(),
            Err(SendTimeoutError::Disconnected(2))
        ));
    }

    #[test]
    fn a_receiver_waiting_without_timeout_sees_the_last_sender_go() {
        let (tx, rx) = bounded::<u8>(1);
        let r = thread::spawn(move || rx.recv());
        thread::sleep(Duration::from_millis(20));
        drop(tx);
        assert_eq!(r.join().unwrap(), None);
    }
}
