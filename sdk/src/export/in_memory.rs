//! An exporter that keeps finished spans in memory, for tests and examples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{ExportResult, SpanData, SpanExporter};

/// Default maximum number of spans kept.
pub const DEFAULT_IN_MEMORY_CAPACITY: usize = 100_000;

#[derive(Debug)]
struct Shared {
    spans: Mutex<Vec<SpanData>>,
    capacity: usize,
    dropped: AtomicU64,
}

/// Collects exported spans in memory. Clones share the same storage, so keep
/// one clone to inspect what the provider exported. Bounded: beyond the
/// capacity new spans are dropped and counted.
#[derive(Clone, Debug)]
pub struct InMemorySpanExporter {
    shared: Arc<Shared>,
}

impl Default for InMemorySpanExporter {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_IN_MEMORY_CAPACITY)
    }
}

impl InMemorySpanExporter {
    /// An exporter keeping at most `capacity` spans.
    pub fn with_capacity(capacity: usize) -> Self {
        InMemorySpanExporter {
            shared: Arc::new(Shared {
                spans: Mutex::new(Vec::new()),
                capacity,
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// A copy of the spans exported so far, in export order.
    pub fn finished_spans(&self) -> Vec<SpanData> {
        self.shared.spans.lock().clone()
    }

    /// Removes and returns the spans exported so far.
    pub fn take_spans(&self) -> Vec<SpanData> {
        std::mem::take(&mut *self.shared.spans.lock())
    }

    /// Forgets all spans.
    pub fn reset(&self) {
        self.shared.spans.lock().clear();
    }

    /// Spans dropped because the capacity was reached.
    pub fn dropped_spans(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl SpanExporter for InMemorySpanExporter {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        let mut spans = self.shared.spans.lock();
        let room = self.shared.capacity.saturating_sub(spans.len());
        let n = batch.len();
        spans.extend(batch.into_iter().take(room));
        if n > room {
            self.shared
                .dropped
                .fetch_add((n - room) as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}
