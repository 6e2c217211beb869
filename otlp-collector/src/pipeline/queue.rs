//! The bounded queue between the receivers and the pipeline worker, bounded in
//! spans and in estimated bytes. A receiver first *reserves* room, then writes
//! the WAL, then pushes: so a batch the WAL acknowledged always fits, and a
//! full queue is detected before anything is written (the request is then kept
//! in the WAL only, see `pipeline::wal_only`, or refused: 429 / RESOURCE_EXHAUSTED).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use crate::metrics::Metrics;
use crate::model::Span;
use crate::pipeline::wal::WalPos;
use crate::receiver::otlp_proto::wire_request::WireRequest;
use serde::{Deserialize, Serialize};

/// Queue bounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Maximum spans waiting for the pipeline.
    pub max_spans: u64,
    /// Maximum estimated in-memory bytes waiting for the pipeline; unset =
    /// a quarter of `limits.memory_limit_mib` (see [`Config::memory_budgets`](crate::config::Config::memory_budgets)).
    pub max_bytes: Option<u64>,
    /// `Retry-After` seconds (and gRPC RetryInfo delay) sent when full.
    pub retry_after_secs: u64,
    /// Requests acknowledged while the queue is full and kept in the WAL
    /// only (read back as the queue gets room), at most; beyond it, and
    /// when the WAL is full, requests are refused. 0 = refuse when the
    /// queue is full. Each costs about 32 bytes of memory.
    pub wal_only_max_records: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_spans: 200_000,
            max_bytes: None,
            retry_after_secs: 1,
            wal_only_max_records: 1_000_000,
        }
    }
}

/// A batch of validated spans from one WAL record.
#[derive(Debug)]
pub struct QueueItem {
    /// WAL segment holding these spans (released after commit or drop).
    pub segment: u64,
    /// Ordinal of the first span in its WAL segment (the rest follow in order).
    pub first_span: u64,
    /// The spans.
    pub spans: Vec<Span>,
    /// On a router: an OTLP protobuf request whose spans were found on the
    /// wire and are forwarded as bytes (`spans` is then empty).
    pub wire: Option<Arc<WireRequest>>,
    /// Estimated in-memory bytes (what the reservation counted).
    pub bytes: u64,
    /// Spans the reservation counted (freed when the item is popped).
    reserved_spans: u64,
}

/// The queue; share it through an `Arc`.
#[derive(Debug)]
pub struct Queue {
    tx: Sender<QueueItem>,
    rx: Receiver<QueueItem>,
    spans: AtomicU64,
    bytes: AtomicU64,
    max_spans: u64,
    max_bytes: u64,
    metrics: Arc<Metrics>,
}

/// Room reserved in the queue; returned to the queue if dropped unused.
#[derive(Debug)]
pub struct Reservation {
    queue: Arc<Queue>,
    spans: u64,
    bytes: u64,
}

impl Reservation {
    /// Pushes the batch, which sits at `pos` in the WAL, into the room reserved for it.
    pub fn push(self, pos: WalPos, spans: Vec<Span>) {
        self.push_with_wire(pos, spans, None)
    }

    /// [`Reservation::push`] for a decoded request that may hold its spans
    /// on the wire (`Decoded::wire`, a router's OTLP protobuf).
    pub fn push_with_wire(mut self, pos: WalPos, spans: Vec<Span>, wire: Option<Arc<WireRequest>>) {
        let item = QueueItem {
            segment: pos.segment,
            first_span: pos.first_span,
            spans,
            wire,
            bytes: self.bytes,
            reserved_spans: self.spans,
        };
        // The channel is unbounded, but only reserved items enter it, so its size is
        // bounded by the reservation counters.
        if self.queue.tx.send(item).is_ok() {
            self.spans = 0;
            self.bytes = 0;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.spans > 0 || self.bytes > 0 {
            self.queue.release(self.spans, self.bytes);
        }
    }
}

impl Queue {
    /// A queue holding at most `max_spans` spans and `max_bytes` estimated bytes.
    pub fn new(max_spans: u64, max_bytes: u64, metrics: Arc<Metrics>) -> Arc<Queue> {
        let (tx, rx) = unbounded();
        Arc::new(Queue {
            tx,
            rx,
            spans: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_spans,
            max_bytes,
            metrics,
        })
    }

    /// Reserves room for `spans`/`bytes`, or `None` when the queue is full. A
    /// batch larger than the whole queue is admitted only into an empty queue,
    /// so that it is not refused forever.
    pub fn try_reserve(self: &Arc<Self>, spans: u64, bytes: u64) -> Option<Reservation> {
        let mut cur = self.spans.load(Relaxed);
        loop {
            if cur > 0 && cur + spans > self.max_spans {
                return None;
            }
            match self
                .spans
                .compare_exchange_weak(cur, cur + spans, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        let prev = self.bytes.fetch_add(bytes, Relaxed);
        if prev > 0 && prev + bytes > self.max_bytes {
            self.release(spans, bytes);
            return None;
        }
        self.metrics
            .queue_spans
            .store(self.spans.load(Relaxed), Relaxed);
        self.metrics
            .queue_bytes
            .store(self.bytes.load(Relaxed), Relaxed);
        Some(Reservation {
            queue: self.clone(),
            spans,
            bytes,
        })
    }

    /// Waits (polling) until room is reserved; used by WAL replay, which must not drop.
    pub fn reserve_blocking(self: &Arc<Self>, spans: u64, bytes: u64) -> Reservation {
        loop {
            if let Some(r) = self.try_reserve(spans, bytes) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn release(&self, spans: u64, bytes: u64) {
        let s = self.spans.fetch_sub(spans, Relaxed) - spans;
        let b = self.bytes.fetch_sub(bytes, Relaxed) - bytes;
        self.metrics.queue_spans.store(s, Relaxed);
        self.metrics.queue_bytes.store(b, Relaxed);
    }

    /// Takes the next batch, waiting up to `timeout`; its room is freed.
    pub fn pop(&self, timeout: Duration) -> Option<QueueItem> {
        match self.rx.recv_timeout(timeout) {
            Ok(item) => {
                self.release(item.reserved_spans, item.bytes);
                Some(item)
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Spans waiting.
    pub fn len_spans(&self) -> u64 {
        self.spans.load(Relaxed)
    }

    /// True when nothing is waiting or reserved.
    pub fn is_empty(&self) -> bool {
        self.spans.load(Relaxed) == 0 && self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_push_pop_and_bounds() {
        let q = Queue::new(10, 1000, Arc::new(Metrics::default()));
        let r = q.try_reserve(8, 100).unwrap();
        assert!(q.try_reserve(3, 10).is_none(), "span bound");
        drop(q.try_reserve(2, 10).unwrap());
        r.push(
            WalPos {
                segment: 7,
                first_span: 3,
                offset: 0,
            },
            Vec::new(),
        );
        assert_eq!(q.len_spans(), 8);
        let item = q.pop(Duration::from_millis(10)).unwrap();
        assert_eq!((item.segment, item.first_span), (7, 3));
        assert_eq!(q.len_spans(), 0);
        // Oversized batch admitted only into an empty queue; byte bound enforced.
        let big = q.try_reserve(50, 10).unwrap();
        assert!(q.try_reserve(1, 1).is_none());
        drop(big);
        let _b = q.try_reserve(1, 900).unwrap();
        assert!(q.try_reserve(1, 200).is_none(), "byte bound");
    }
}
