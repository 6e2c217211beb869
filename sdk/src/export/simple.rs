//! The simple processor: exports each span synchronously when it ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{ExportError, ExportResult, SpanData, SpanExporter, SpanProcessor};
use crate::trace::diagnostics::{report, Diagnostic};

/// Exports every ended span immediately, on the thread that ended it. Meant
/// for tests, examples and exporters that only buffer in memory; production
/// services use the batch processor so the caller never waits for I/O.
#[derive(Debug)]
pub struct SimpleSpanProcessor<E: SpanExporter> {
    // The exporter contract is "one call at a time": the lock serializes callers.
    exporter: Mutex<E>,
    is_shutdown: AtomicBool,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl<E: SpanExporter> SimpleSpanProcessor<E> {
    /// Wraps `exporter`.
    pub fn new(exporter: E) -> Self {
        SimpleSpanProcessor {
            exporter: Mutex::new(exporter),
            is_shutdown: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Spans received after shutdown (dropped).
    pub fn dropped_spans(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Exports that returned an error.
    pub fn failed_exports(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl<E: SpanExporter> SpanProcessor for SimpleSpanProcessor<E> {
    fn on_end(&self, span: SpanData) {
        if self.is_shutdown.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let exporter = self.exporter.lock();
        if let Err(e) = exporter.export(vec![span]) {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if !exporter.reports_failures() {
                report(Diagnostic::Export(format!("simple span processor: {e}")));
            }
        }
    }

    fn observes_start(&self) -> bool {
        false
    }

    fn force_flush(&self, _timeout: Duration) -> ExportResult {
        self.exporter.lock().force_flush()
    }

    fn shutdown(&self, _timeout: Duration) -> ExportResult {
        if self.is_shutdown.swap(true, Ordering::AcqRel) {
            return Err(ExportError::Shutdown);
        }
        self.exporter.lock().shutdown()
    }
}
