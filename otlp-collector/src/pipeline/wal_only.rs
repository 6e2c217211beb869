//! Spans kept in the WAL only: when the in-memory queue is full (a slow or
//! failed sink), a receiver still appends the request to the WAL and
//! acknowledges it, but does not queue its spans; only its position is
//! remembered here. A reader thread reads those records back from the WAL,
//! oldest first, one at a time, into the queue as it gets room, so the WAL's
//! size (`wal.max_bytes`), not the queue's byte budget, bounds how long a
//! sink outage is absorbed.
//!
//! Exactly once: a request is either pushed into the queue by its receiver
//! or admitted here, never both, and each admitted position is read back
//! once. While anything waits here, receivers admit here too (first in,
//! first out), so the reader is not starved by new requests taking the room
//! it waits for. The spans are outstanding in their WAL segment from the
//! append on (the writer counts them), so the segment stays until the sink
//! commits them; after a crash, the start-up replay reads them like every
//! other record. Read-back spans enter the queue with their WAL position
//! and run through the same stages (rollups, sampling) exactly once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::queue::Queue;
use super::wal::{Wal, WalPos};
use crate::metrics::Metrics;
use crate::receiver::limits::LimitsConfig;

/// Positions of acknowledged records whose spans are in the WAL only.
#[derive(Debug)]
pub struct WalOnly {
    pending: Mutex<VecDeque<(WalPos, u64)>>,
    ready: Condvar,
    /// Records admitted (pending plus admissions whose append is under way).
    records: AtomicU64,
    max_records: u64,
    metrics: Arc<Metrics>,
}

/// Room for one record, taken before its WAL append; given back if dropped unused.
#[derive(Debug)]
pub struct Admission {
    wal_only: Arc<WalOnly>,
    used: bool,
}

impl Admission {
    /// Records that the `spans` acknowledged at `pos` wait in the WAL only.
    pub fn push(mut self, pos: WalPos, spans: u64) {
        self.used = true;
        let w = &self.wal_only;
        w.pending.lock().push_back((pos, spans));
        w.metrics.wal_only_spans.fetch_add(spans, Relaxed);
        w.ready.notify_one();
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.used {
            let n = self.wal_only.records.fetch_sub(1, Relaxed) - 1;
            self.wal_only.metrics.wal_only_records.store(n, Relaxed);
        }
    }
}

impl WalOnly {
    /// At most `max_records` records waiting (0 = never keep spans in the
    /// WAL only: a full queue is refused, as before).
    pub fn new(max_records: u64, metrics: Arc<Metrics>) -> Arc<WalOnly> {
        Arc::new(WalOnly {
            pending: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            records: AtomicU64::new(0),
            max_records,
            metrics,
        })
    }

    /// True while records wait (or are being admitted): new requests then
    /// queue behind them rather than into the queue directly.
    pub fn is_active(&self) -> bool {
        self.records.load(Relaxed) > 0
    }

    /// Room for one more record, or `None` when `max_records` wait already.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        let mut cur = self.records.load(Relaxed);
        loop {
            if cur >= self.max_records {
                return None;
            }
            match self
                .records
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        self.metrics.wal_only_records.store(cur + 1, Relaxed);
        Some(Admission {
            wal_only: self.clone(),
            used: false,
        })
    }

    /// The oldest waiting record, waiting up to `timeout` for one.
    fn front(&self, timeout: Duration) -> Option<(WalPos, u64)> {
        let mut p = self.pending.lock();
        if p.is_empty() {
            self.ready.wait_for(&mut p, timeout);
        }
        p.front().copied()
    }

    /// The oldest record has been handled.
    fn pop(&self) {
        if let Some((_, spans)) = self.pending.lock().pop_front() {
            self.metrics.wal_only_spans.fetch_sub(spans, Relaxed);
            let n = self.records.fetch_sub(1, Relaxed) - 1;
            self.metrics.wal_only_records.store(n, Relaxed);
        }
    }
}

/// The reader: until `stop`, reads the oldest waiting record back from the
/// WAL, decodes it as replay does and pushes it into the queue once there is
/// room. One record is in memory at a time. At `stop`, whatever still waits
/// stays in the WAL and is replayed at the next start.
pub(super) fn run(
    wal_only: Arc<WalOnly>,
    queue: Arc<Queue>,
    wal: Wal,
    limits: LimitsConfig,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Relaxed) {
        let Some((pos, spans)) = wal_only.front(Duration::from_millis(50)) else {
            continue;
        };
        let record = match wal.read_record_at(pos) {
            Ok(r) => r,
            Err(e) => {
                // Not released: the segment stays, and the next start's
                // replay reads the record (or counts it corrupt).
                metrics.wal_only_read_errors.fetch_add(1, Relaxed);
                tracing::error!(segment = pos.segment, offset = pos.offset, error = %e, "cannot read back a WAL-only record; it stays in the WAL for the next start's replay");
                wal_only.pop();
                continue;
            }
        };
        match crate::receiver::decoding::decode(record.format, &record.payload, &limits) {
            Ok(d) if !d.spans.is_empty() => {
                let n = d.spans.len() as u64;
                let reservation = loop {
                    if stop.load(Relaxed) {
                        return;
                    }
                    if let Some(r) = queue.try_reserve(n, d.bytes) {
                        break r;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                };
                reservation.push(pos, d.spans);
                metrics.wal_only_read_back.fetch_add(n, Relaxed);
            }
            Ok(_) => wal.release(pos.segment, spans),
            Err(e) => {
                // It decoded when it was received; count it as replay would.
                metrics.wal_corrupt_records.fetch_add(1, Relaxed);
                tracing::warn!(segment = pos.segment, error = %e, "undecodable WAL-only record skipped");
                wal.release(pos.segment, spans);
            }
        }
        wal_only.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(first_span: u64) -> WalPos {
        WalPos {
            segment: 1,
            first_span,
            offset: 0,
        }
    }

    #[test]
    fn admissions_are_bounded_and_an_unused_one_gives_its_room_back() {
        let metrics = Arc::new(Metrics::default());
        let w = WalOnly::new(2, metrics.clone());
        assert!(!w.is_active());
        let a = w.try_admit().expect("room");
        let b = w.try_admit().expect("room");
        assert!(w.is_active(), "an admission under way counts");
        assert!(w.try_admit().is_none(), "bounded");
        drop(b); // its WAL append failed
        a.push(pos(0), 5);
        assert_eq!(metrics.wal_only_spans.load(Relaxed), 5);
        assert_eq!(metrics.wal_only_records.load(Relaxed), 1);
        let c = w.try_admit().expect("the dropped one's room");
        c.push(pos(5), 3);
        assert!(w.try_admit().is_none());
        // Oldest first.
        assert_eq!(w.front(Duration::ZERO), Some((pos(0), 5)));
        w.pop();
        assert_eq!(w.front(Duration::ZERO), Some((pos(5), 3)));
        w.pop();
        assert_eq!(w.front(Duration::from_millis(1)), None);
        assert!(!w.is_active());
        assert_eq!(metrics.wal_only_spans.load(Relaxed), 0);
        assert_eq!(metrics.wal_only_records.load(Relaxed), 0);
    }

    #[test]
    fn zero_records_means_never() {
        let w = WalOnly::new(0, Arc::new(Metrics::default()));
        assert!(w.try_admit().is_none());
    }
}
