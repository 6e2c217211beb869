//! The un-ended span watchdog: reports, once, every sampled span still open
//! after a configurable age (a span leaked in a map, a future never polled to
//! completion, a missing `end()` on a manually managed span).
//!
//! Cost model: a sharded registry of start times, touched only at span start
//! and end (one uncontended lock of the calling thread's shard each time), and
//! scanned by one background thread a few times per age period. Nothing runs
//! per attribute or event, and unsampled spans never touch it. The registry is
//! bounded; spans started while it is full are not watched and are counted.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::diagnostics::{report, Diagnostic};
use crate::ids::{SpanId, TraceId};

const SHARDS: usize = 16;
/// Default maximum number of open spans watched per provider.
pub const DEFAULT_WATCH_CAPACITY: usize = 65_536;

struct Slot {
    start_ns: u64,
    trace_id: TraceId,
    span_id: SpanId,
    name: Option<&'static str>,
    live: bool,
    reported: bool,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

/// Where a watched span is registered; given back at end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchToken {
    shard: u16,
    slot: u32,
}

pub(crate) struct WatchdogState {
    shards: Box<[Mutex<Shard>]>,
    per_shard_capacity: usize,
    max_age_ns: u64,
    reported: AtomicU64,
    unwatched: AtomicU64,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_shard() -> usize {
    MY_SHARD
        .try_with(|c| {
            let v = c.get();
            if v != usize::MAX {
                return v;
            }
            let v = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            c.set(v);
            v
        })
        .unwrap_or(0)
}

impl WatchdogState {
    fn new(max_age: Duration, capacity: usize) -> Self {
        WatchdogState {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard_capacity: capacity.div_ceil(SHARDS).max(1),
            max_age_ns: u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX),
            reported: AtomicU64::new(0),
            unwatched: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn register(
        &self,
        start_ns: u64,
        trace_id: TraceId,
        span_id: SpanId,
        name: Option<&'static str>,
    ) -> Option<WatchToken> {
        let shard_idx = my_shard();
        let mut shard = self.shards[shard_idx].lock();
        let slot = Slot {
            start_ns,
            trace_id,
            span_id,
            name,
            live: true,
            reported: false,
        };
        let idx = if let Some(i) = shard.free.pop() {
            shard.slots[i as usize] = slot;
            i
        } else if shard.slots.len() < self.per_shard_capacity {
            shard.slots.push(slot);
            (shard.slots.len() - 1) as u32
        } else {
            drop(shard);
            self.unwatched.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        shard.live += 1;
        Some(WatchToken {
            shard: shard_idx as u16,
            slot: idx,
        })
    }

    #[inline]
    pub(crate) fn unregister(&self, t: WatchToken) {
        let mut shard = self.shards[t.shard as usize].lock();
        if let Some(s) = shard.slots.get_mut(t.slot as usize) {
            if s.live {
                s.live = false;
                shard.live -= 1;
                shard.free.push(t.slot);
            }
        }
    }

    /// Reports every live span older than the age, once. Returns how many.
    pub(crate) fn scan(&self, now_ns: u64) -> usize {
        let mut found: Vec<Diagnostic> = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            if shard.live == 0 {
                continue;
            }
            for s in shard.slots.iter_mut() {
                if s.live && !s.reported && now_ns.saturating_sub(s.start_ns) >= self.max_age_ns {
                    s.reported = true;
                    found.push(Diagnostic::UnendedSpan {
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        name: s.name,
                        age: Duration::from_nanos(now_ns.saturating_sub(s.start_ns)),
                    });
                }
            }
        }
        let n = found.len();
        self.reported.fetch_add(n as u64, Ordering::Relaxed);
        // Reported outside the shard locks: the hook may be slow.
        for d in found {
            report(d);
        }
        n
    }

    pub(crate) fn reported(&self) -> u64 {
        self.reported.load(Ordering::Relaxed)
    }

    pub(crate) fn unwatched(&self) -> u64 {
        self.unwatched.load(Ordering::Relaxed)
    }
}

/// The watchdog of one provider: registry + scanning thread. Dropping it stops the thread.
pub(crate) struct Watchdog {
    pub(crate) state: Arc<WatchdogState>,
    _stop: crossbeam_channel::Sender<()>,
}

impl Watchdog {
    pub(crate) fn start(max_age: Duration, capacity: usize) -> Self {
        let state = Arc::new(WatchdogState::new(max_age, capacity));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        // Several checks per period bound the reporting delay to ~1.25x the age.
        let interval = (max_age / 4).clamp(Duration::from_millis(5), Duration::from_secs(30));
        let st = state.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrotrace-watchdog".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(interval) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        st.scan(crate::time::now_ns());
                    }
                    _ => return,
                }
            });
        if let Err(e) = spawned {
            report(Diagnostic::Config(format!(
                "could not start the un-ended span watchdog thread ({e}); old spans will not be reported"
            )));
        }
        Watchdog {
            state,
            _stop: stop_tx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_and_forgets_ended() {
        let st = WatchdogState::new(Duration::from_secs(1), 64);
        let a = st
            .register(
                0,
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([1; 8]),
                Some("a"),
            )
            .unwrap();
        let b = st
            .register(
                0,
                TraceId::from_bytes([2; 16]),
                SpanId::from_bytes([2; 8]),
                None,
            )
            .unwrap();
        st.unregister(b);
        assert_eq!(st.scan(500_000_000), 0);
        assert_eq!(st.scan(1_000_000_000), 1);
        assert_eq!(st.scan(2_000_000_000), 0);
        assert_eq!(st.reported(), 1);
        st.unregister(a);
        st.unregister(a);
        assert_eq!(st.shards.iter().map(|s| s.lock().live).sum::<usize>(), 0);
    }

    #[test]
    fn bounded() {
        let st = WatchdogState::new(Duration::from_secs(1), 16);
        let toks: Vec<_> = (0..3)
            .map(|_| {
                st.register(
                    0,
                    TraceId::from_bytes([1; 16]),
                    SpanId::from_bytes([1; 8]),
                    None,
                )
            })
            .collect();
        assert!(toks[0].is_some());
        assert!(toks[1].is_none());
        assert_eq!(st.unwatched(), 2);
    }
}
