//! Export counters any program can read: how many spans were exported, dropped
//! (and why), rejected by the server, how often a request was retried, and the
//! circuit breaker's state.
//!
//! The batch processor and the OTLP exporters write to an [`ExportStats`]
//! handle. By default both use the process-wide [`ExportStats::global`] one, so
//! a program reads everything with `ExportStats::global().snapshot()`; pass a
//! fresh [`ExportStats::new`] to the builders to keep pipelines apart.
//!
//! ```
//! use ferrotrace::export::stats::ExportStats;
//! let stats = ExportStats::new();
//! stats.add_exported(3);
//! assert_eq!(stats.snapshot().exported, 3);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// The circuit breaker's state (see [`crate::export::breaker`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Exports go to the network (the normal state).
    #[default]
    Closed,
    /// Too many consecutive failures: batches are dropped without touching the
    /// network until the cool-down ends.
    Open,
    /// The cool-down ended; one probe export decides whether the breaker closes.
    HalfOpen,
}

impl BreakerState {
    fn to_u8(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        })
    }
}

/// The longest `last_error` message kept (longer ones are cut), so a hostile
/// server cannot make the counters grow.
const MAX_ERROR_LEN: usize = 512;

#[derive(Default)]
struct Inner {
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_shutdown: AtomicU64,
    dropped_export_failed: AtomicU64,
    dropped_breaker_open: AtomicU64,
    rejected_by_server: AtomicU64,
    retries: AtomicU64,
    export_attempts: AtomicU64,
    breaker_opened: AtomicU64,
    breaker_state: AtomicU8,
    last_error: Mutex<Option<String>>,
}

/// A shared, cheaply cloneable handle to a set of export counters.
#[derive(Clone, Default)]
pub struct ExportStats(Arc<Inner>);

impl fmt::Debug for ExportStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

/// A point-in-time copy of the counters. All counts are spans unless the name
/// says otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Spans in batches the exporter accepted (includes `rejected_by_server`,
    /// which the server refused after receiving them).
    pub exported: u64,
    /// Spans dropped by `on_end` because the processor's queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because they ended after the processor was shut down.
    pub dropped_shutdown: u64,
    /// Spans dropped because their export failed (non-retryable error, retries
    /// exhausted, timeout, or breaker open).
    pub dropped_export_failed: u64,
    /// Spans dropped without a network attempt because the circuit breaker was
    /// open (a subset of `dropped_export_failed`).
    pub dropped_breaker_open: u64,
    /// Spans the server reported as rejected through OTLP partial success.
    pub rejected_by_server: u64,
    /// Requests sent again after a retryable failure (a request attempted three
    /// times counts two retries).
    pub retries: u64,
    /// Network requests attempted (first tries and retries).
    pub export_attempts: u64,
    /// How many times the circuit breaker opened.
    pub breaker_opened: u64,
    /// The circuit breaker's current state.
    pub breaker_state: BreakerState,
    /// The most recent export error or partial-success message, if any.
    pub last_error: Option<String>,
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exported={} dropped_queue_full={} dropped_shutdown={} dropped_export_failed={} \
             dropped_breaker_open={} rejected_by_server={} retries={} export_attempts={} \
             breaker_opened={} breaker_state={}",
            self.exported,
            self.dropped_queue_full,
            self.dropped_shutdown,
            self.dropped_export_failed,
            self.dropped_breaker_open,
            self.rejected_by_server,
            self.retries,
            self.export_attempts,
            self.breaker_opened,
            self.breaker_state
        )?;
        if let Some(e) = &self.last_error {
            write!(f, " last_error={e:?}")?;
        }
        Ok(())
    }
}

impl ExportStats {
    /// A fresh set of counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide counters the processor and exporters use unless given
    /// their own.
    pub fn global() -> &'static ExportStats {
        static GLOBAL: OnceLock<ExportStats> = OnceLock::new();
        GLOBAL.get_or_init(ExportStats::new)
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let i = &self.0;
        StatsSnapshot {
            exported: i.exported.load(Ordering::Relaxed),
            dropped_queue_full: i.dropped_queue_full.load(Ordering::Relaxed),
            dropped_shutdown: i.dropped_shutdown.load(Ordering::Relaxed),
            dropped_export_failed: i.dropped_export_failed.load(Ordering::Relaxed),
            dropped_breaker_open: i.dropped_breaker_open.load(Ordering::Relaxed),
            rejected_by_server: i.rejected_by_server.load(Ordering::Relaxed),
            retries: i.retries.load(Ordering::Relaxed),
            export_attempts: i.export_attempts.load(Ordering::Relaxed),
            breaker_opened: i.breaker_opened.load(Ordering::Relaxed),
            breaker_state: BreakerState::from_u8(i.breaker_state.load(Ordering::Relaxed)),
            last_error: i.last_error.lock().clone(),
        }
    }

    /// The circuit breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        BreakerState::from_u8(self.0.breaker_state.load(Ordering::Relaxed))
    }

    /// Counts spans accepted by the exporter.
    pub fn add_exported(&self, n: u64) {
        self.0.exported.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts spans dropped because the queue was full.
    pub fn add_dropped_queue_full(&self, n: u64) {
        self.0.dropped_queue_full.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts spans that ended after shutdown.
    pub fn add_dropped_shutdown(&self, n: u64) {
        self.0.dropped_shutdown.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts spans whose export failed.
    pub fn add_dropped_export_failed(&self, n: u64) {
        self.0.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts spans dropped because the breaker was open.
    pub fn add_dropped_breaker_open(&self, n: u64) {
        self.0.dropped_breaker_open.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts spans the server rejected (partial success).
    pub fn add_rejected_by_server(&self, n: u64) {
        self.0.rejected_by_server.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts one retry.
    pub fn add_retry(&self) {
        self.0.retries.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one network attempt.
    pub fn add_export_attempt(&self) {
        self.0.export_attempts.fetch_add(1, Ordering::Relaxed);
    }
    /// Records a breaker state change (and counts openings).
    pub fn set_breaker_state(&self, state: BreakerState) {
        let prev = self.0.breaker_state.swap(state.to_u8(), Ordering::Relaxed);
        if state == BreakerState::Open && prev != BreakerState::Open.to_u8() {
            self.0.breaker_opened.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Remembers the latest error message (cut to a bounded length).
    pub fn set_last_error(&self, msg: impl Into<String>) {
        let mut msg: String = msg.into();
        if msg.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
        }
        *self.0.last_error.lock() = Some(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_breaker_openings() {
        let s = ExportStats::new();
        s.add_dropped_queue_full(2);
        s.set_breaker_state(BreakerState::Open);
        s.set_breaker_state(BreakerState::Open);
        s.set_breaker_state(BreakerState::HalfOpen);
        s.set_breaker_state(BreakerState::Open);
        let snap = s.snapshot();
        assert_eq!(snap.dropped_queue_full, 2);
        assert_eq!(snap.breaker_opened, 2);
        assert_eq!(snap.breaker_state, BreakerState::Open);
    }

    #[test]
    fn last_error_is_bounded() {
        let s = ExportStats::new();
        s.set_last_error("é".repeat(1000));
        let e = s.snapshot().last_error.unwrap();
        assert!(e.len() <= MAX_ERROR_LEN);
    }
}
