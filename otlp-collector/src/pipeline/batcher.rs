//! Groups spans into sink batches by count or age, remembering how many spans
//! of each WAL segment a batch holds so the segments can be released once the
//! sink has committed it.

use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::model::Span;
use crate::receiver::otlp_proto::wire_request::WireRequest;
use serde::{Deserialize, Serialize};

use crate::storage::connecting::StorageKind;

/// Batching towards the sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatcherConfig {
    /// A batch is written once it has this many spans; unset means 32768
    /// for ClickHouse (every insert makes a new part per table that the
    /// server merges again later, so fewer, larger inserts cost it less CPU
    /// per span) and 8192 for the other sinks ([`BatcherConfig::spans_per_batch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_spans: Option<usize>,
    /// ... or once its oldest span has waited this long.
    pub max_delay_ms: u64,
    /// Batches waiting for the sink (each up to `max_spans`); when full the pipeline waits.
    pub max_pending_batches: usize,
    /// First retry delay after a failed sink write; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// A non-retryable sink error is tried this many times before the batch is dropped (counted).
    pub max_attempts_non_retryable: u32,
    /// How often rollups are flushed to the sink.
    pub rollup_flush_ms: u64,
    /// Span batches written to the sink at the same time; unset means 2 for
    /// ClickHouse and PostgreSQL (one insert is largely single-threaded on the
    /// server, so a second one overlaps the server's work with the next
    /// batch's encoding; each PostgreSQL write has its own pooled connection
    /// and staging table) and 1 for SQLite, which has one writer
    /// ([`BatcherConfig::concurrent_writes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_writes: Option<usize>,
    /// Longest one span-batch write may take (ms); a write still running
    /// then is abandoned, counted (`ferrotrace_sink_errors_total{kind="timeout"}`)
    /// and retried like a retryable error. Span writes are idempotent, so a
    /// write that committed anyway is harmless; rollup writes are not, so
    /// they are not timed out.
    pub write_timeout_ms: u64,
}

impl BatcherConfig {
    /// Batch size for the `kind` sink (at least 1).
    pub fn spans_per_batch(&self, kind: StorageKind) -> usize {
        match self.max_spans {
            Some(n) => n.max(1),
            None if kind == StorageKind::Clickhouse => 32_768,
            None => 8_192,
        }
    }

    /// Span batches written at the same time for the `kind` sink (at least 1).
    pub fn concurrent_writes(&self, kind: StorageKind) -> usize {
        match self.max_concurrent_writes {
            Some(n) => n.max(1),
            None if matches!(kind, StorageKind::Clickhouse | StorageKind::Postgres) => 2,
            None => 1,
        }
    }
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_spans: None,
            max_delay_ms: 200,
            max_pending_batches: 4,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            max_attempts_non_retryable: 3,
            rollup_flush_ms: 2_000,
            max_concurrent_writes: None,
            write_timeout_ms: 60_000,
        }
    }
}

/// A batch ready for the sink.
#[derive(Debug, Default)]
pub struct SinkBatch {
    /// Spans to write.
    pub spans: Vec<Span>,
    /// A router's requests forwarded as bytes (`QueueItem::wire`).
    pub wire: Vec<Arc<WireRequest>>,
    /// Spans in `wire`.
    pub wire_spans: usize,
    /// `(segment, spans)` to release after the write commits.
    pub segments: Vec<(u64, u64)>,
}

impl SinkBatch {
    /// Spans in the batch, built or on the wire.
    pub fn len(&self) -> usize {
        self.spans.len() + self.wire_spans
    }

    /// True when it holds no span.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Accumulates spans until `max_spans` or `max_delay` is reached.
#[derive(Debug)]
pub struct Batcher {
    max_spans: usize,
    max_delay: Duration,
    current: SinkBatch,
    first_at: Option<Instant>,
    /// Spans in the last batch taken: the next one is sized for as many when
    /// its first span arrives, so it is not grown (and copied) step by step.
    last_len: usize,
}

impl Batcher {
    /// A batcher with the given bounds.
    pub fn new(max_spans: usize, max_delay: Duration) -> Self {
        Batcher {
            max_spans: max_spans.max(1),
            max_delay,
            current: SinkBatch::default(),
            first_at: None,
            last_len: 0,
        }
    }

    /// Adds one span from `segment`.
    pub fn add(&mut self, span: Span, segment: u64) {
        if self.first_at.is_none() {
            self.first_at = Some(Instant::now());
        }
        if self.current.spans.capacity() == 0 {
            self.current
                .spans
                .reserve_exact(self.last_len.clamp(1, self.max_spans));
        }
        self.current.spans.push(span);
        self.count(segment, 1);
    }

    /// Adds a request whose spans are forwarded as bytes, from `segment`.
    pub fn add_wire(&mut self, wire: Arc<WireRequest>, segment: u64) {
        let n = wire.spans.len();
        if n == 0 {
            return;
        }
        if self.first_at.is_none() {
            self.first_at = Some(Instant::now());
        }
        self.current.wire_spans += n;
        self.current.wire.push(wire);
        self.count(segment, n as u64);
    }

    /// Accounts spans of `segment` without adding spans (used when a later stage
    /// will release them with this batch).
    fn count(&mut self, segment: u64, n: u64) {
        match self.current.segments.last_mut() {
            Some((s, c)) if *s == segment => *c += n,
            _ => self.current.segments.push((segment, n)),
        }
    }

    /// True when the batch is full or its oldest span has waited `max_delay`.
    pub fn ready(&self) -> bool {
        self.is_full() || self.first_at.is_some_and(|t| t.elapsed() >= self.max_delay)
    }

    /// True when the batch has `max_spans` spans (no clock read: checked
    /// after every span added; the age is checked once per round).
    pub fn is_full(&self) -> bool {
        self.current.len() >= self.max_spans
    }

    /// Time until the age bound triggers (`None` when empty).
    pub fn time_left(&self) -> Option<Duration> {
        self.first_at
            .map(|t| self.max_delay.saturating_sub(t.elapsed()))
    }

    /// True when no span is waiting.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Takes the current batch.
    pub fn take(&mut self) -> SinkBatch {
        self.first_at = None;
        self.last_len = self.current.spans.len();
        std::mem::take(&mut self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn span(i: u8) -> Span {
        Span {
            service_name: "s".into(),
            ..Span::test(i)
        }
    }

    #[test]
    fn batches_by_count_and_tracks_segments() {
        let mut b = Batcher::new(3, Duration::from_secs(60));
        b.add(span(1), 4);
        b.add(span(2), 4);
        assert!(!b.ready());
        b.add(span(3), 5);
        assert!(b.ready());
        let batch = b.take();
        assert_eq!(batch.spans.len(), 3);
        assert_eq!(batch.segments, vec![(4, 2), (5, 1)]);
        assert!(b.is_empty() && b.time_left().is_none());
    }

    /// The next batch is sized for the last one when its first span
    /// arrives (never past `max_spans`), so it does not grow step by step.
    #[test]
    fn a_batch_is_sized_like_the_last_one() {
        let mut b = Batcher::new(3, Duration::from_secs(60));
        b.add(span(1), 1);
        b.add(span(2), 1);
        assert!(!b.is_full());
        b.add(span(3), 1);
        assert!(b.is_full());
        let _ = b.take();
        assert_eq!(b.current.spans.capacity(), 0, "nothing held while empty");
        b.add(span(4), 2);
        assert_eq!(b.current.spans.capacity(), 3);
        let batch = b.take();
        assert_eq!(batch.spans.len(), 1);
        assert_eq!(batch.segments, vec![(2, 1)]);
    }

    #[test]
    fn batches_by_age() {
        let mut b = Batcher::new(100, Duration::from_millis(1));
        b.add(span(1), 1);
        std::thread::sleep(Duration::from_millis(3));
        assert!(b.ready());
    }
}

#[cfg(test)]
mod config_defaults {
    use super::*;

    #[test]
    fn batch_size_and_writes_in_flight_default_per_sink() {
        let b = BatcherConfig::default();
        assert_eq!(b.concurrent_writes(StorageKind::Clickhouse), 2);
        assert_eq!(b.concurrent_writes(StorageKind::Postgres), 2);
        assert_eq!(b.concurrent_writes(StorageKind::Sqlite), 1);
        assert_eq!(b.spans_per_batch(StorageKind::Clickhouse), 32_768);
        assert_eq!(b.spans_per_batch(StorageKind::Postgres), 8_192);
        let set = BatcherConfig {
            max_concurrent_writes: Some(0),
            max_spans: Some(10),
            ..BatcherConfig::default()
        };
        assert_eq!(set.concurrent_writes(StorageKind::Postgres), 1);
        assert_eq!(set.spans_per_batch(StorageKind::Clickhouse), 10);
    }
}
