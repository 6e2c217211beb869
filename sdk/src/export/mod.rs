//! Span processors and exporters: the pipeline a finished span travels through.
//!
//! - [`SpanProcessor`]: hooks called when a span starts and ends.
//! - [`SpanExporter`]: delivers batches of [`SpanData`] somewhere.

use std::mem::ManuallyDrop;
use std::time::Duration;

pub use crate::trace::span_data::SpanData;

pub mod batch;
pub mod breaker;
pub mod console;
mod handoff;
pub mod in_memory;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod retry;
pub mod simple;
mod span_queue;
pub mod stats;

pub use batch::BatchSpanProcessor;
pub use console::ConsoleExporter;
pub use in_memory::InMemorySpanExporter;
#[cfg(feature = "otlp")]
pub use otlp::OtlpExporter;
pub use simple::SimpleSpanProcessor;
pub use stats::ExportStats;

/// Why an export, flush or shutdown failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The operation did not finish within its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The processor or exporter was already shut down.
    #[error("already shut down")]
    Shutdown,
    /// The exporter failed; the message says why.
    #[error("export failed: {0}")]
    Failed(String),
}

/// Result of exporting a batch.
pub type ExportResult = Result<(), ExportError>;

/// Delivers finished spans. Called from one thread at a time (the processor's).
pub trait SpanExporter: Send + Sync + 'static {
    /// Exports one batch. Must return; the processor bounds it with its export timeout.
    fn export(&self, batch: Vec<SpanData>) -> ExportResult;
    /// Exports a batch the caller keeps: what the exporter leaves in the
    /// spans (or in `batch`) is the caller's to reuse. The batch processor
    /// calls this and hands the spans' emptied attribute and event lists
    /// back to the threads that record spans, instead of freeing them on
    /// its export thread (see `trace::attribute_buffers`). The default moves the batch
    /// out and calls [`export`](SpanExporter::export); an exporter that only
    /// reads the spans overrides it to leave them in place.
    #[doc(hidden)]
    fn export_in_place(&self, batch: &mut Vec<SpanData>) -> ExportResult {
        self.export(std::mem::take(batch))
    }
    /// Flushes anything buffered by the exporter itself.
    fn force_flush(&self) -> ExportResult {
        Ok(())
    }
    /// Releases resources; later exports fail with [`ExportError::Shutdown`].
    fn shutdown(&self) -> ExportResult {
        Ok(())
    }
    /// True if the exporter reports its own failures through
    /// [`diagnostics`](crate::trace::diagnostics) (with what only it knows,
    /// such as the endpoint and a likely fix); the processors then only count
    /// them. Otherwise (the default) the processor reports each failed export.
    fn reports_failures(&self) -> bool {
        false
    }
}

/// Hooks into the span lifecycle. Implementations must never block the caller
/// of `on_end` and must never panic.
pub trait SpanProcessor: Send + Sync + 'static {
    /// Called synchronously when a sampled span starts (keep it cheap: it is
    /// on the caller's hot path).
    fn on_start(&self, _span_context: &crate::context::SpanContext, _name: &str) {}
    /// Called when a sampled span ends.
    fn on_end(&self, span: SpanData);
    /// Called instead of [`on_end`](SpanProcessor::on_end) for the last
    /// processor, with the finished span where it was recorded: a processor
    /// that stores spans can copy it straight to its destination (the batch
    /// processor's queue slot) instead of receiving it by value first. The
    /// default moves the span out and calls `on_end`.
    #[doc(hidden)]
    fn on_end_in_place(&self, span: SpanSlot<'_>) {
        self.on_end(span.take());
    }
    /// Whether [`on_start`](SpanProcessor::on_start) does anything; a
    /// provider whose processors all say `false` skips the call per span.
    #[doc(hidden)]
    fn observes_start(&self) -> bool {
        true
    }
    /// Exports everything queued, within `timeout`.
    fn force_flush(&self, timeout: Duration) -> ExportResult;
    /// Flushes and stops, within `timeout`; later spans are dropped and counted.
    fn shutdown(&self, timeout: Duration) -> ExportResult;
}

/// A finished span owned in place (inside the span's recycled record), handed
/// to [`SpanProcessor::on_end_in_place`]. Dereferences to the span; dropping
/// the slot drops the span.
#[doc(hidden)]
pub struct SpanSlot<'a> {
    span: &'a mut ManuallyDrop<SpanData>,
}

impl<'a> SpanSlot<'a> {
    /// # Safety
    /// `span` points to an initialised `SpanData` that the slot owns from
    /// here: nothing else drops or reads it as owned during `'a`, and the
    /// memory is treated as uninitialised after the slot is gone.
    #[inline]
    pub(crate) unsafe fn new(span: *mut SpanData) -> Self {
        SpanSlot {
            // SAFETY: `ManuallyDrop<T>` has `T`'s layout; the caller
            // guarantees a valid, exclusively owned value.
            span: unsafe { &mut *span.cast::<ManuallyDrop<SpanData>>() },
        }
    }

    /// Moves the span out.
    #[inline]
    pub fn take(self) -> SpanData {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: the slot owns an initialised span and is not dropped
        // (`ManuallyDrop`), so the span is moved out exactly once.
        unsafe { ManuallyDrop::take(this.span) }
    }

    /// Gives up the span without dropping it: the caller has moved it
    /// elsewhere by a bitwise copy (the batch queue's slot).
    #[inline]
    pub(crate) fn forget(self) {
        std::mem::forget(self);
    }
}

impl std::ops::Deref for SpanSlot<'_> {
    type Target = SpanData;
    #[inline]
    fn deref(&self) -> &SpanData {
        self.span
    }
}

impl Drop for SpanSlot<'_> {
    fn drop(&mut self) {
        // SAFETY: the slot owns the span (see `new`) and was not consumed.
        unsafe { ManuallyDrop::drop(self.span) }
    }
}
