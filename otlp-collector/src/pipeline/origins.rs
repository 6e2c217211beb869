//! WAL rollup-origin bookkeeping on the pipeline side: loading what the sink
//! already stored before replay, handing it to the aggregator, and pruning
//! origins of deleted WAL segments (see `rollup::origins`).

use std::time::{Duration, Instant};

use super::wal::Wal;
use crate::rollup::WrittenOrigins;
use crate::storage::SpanWriter;

/// Hands stored rollup origins to the pipeline's aggregator (see
/// [`Pipeline::written_origins_sender`](crate::pipeline::Pipeline::written_origins_sender)).
#[derive(Debug, Clone)]
pub struct WrittenOriginsSender(pub(super) crossbeam_channel::Sender<WrittenOrigins>);

impl WrittenOriginsSender {
    /// Sends them; the aggregator takes them before the next queue item.
    pub fn send(&self, written: WrittenOrigins) {
        let _ = self.0.send(written);
    }
}

/// Deletes stored rollup origins of this WAL's deleted segments now and then
/// (segment ids are never reused, so they are never needed again).
#[derive(Default)]
pub(super) struct OriginPruner {
    last_run: Option<Instant>,
    pruned_below: u64,
}

impl OriginPruner {
    const EVERY: Duration = Duration::from_secs(60);

    pub(super) async fn after_write(&mut self, store: &dyn SpanWriter, wal: &Wal) {
        if self.last_run.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last_run = Some(Instant::now());
        let Some(oldest) = wal.oldest_segment() else {
            return;
        };
        if oldest <= self.pruned_below {
            return;
        }
        match store.prune_rollup_origins(wal.instance(), oldest).await {
            Ok(_) => self.pruned_below = oldest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune stored rollup origins; retrying later")
            }
        }
    }
}

/// Loads the rollup origins the sink stored for the WAL segments about to be
/// replayed, retrying while the sink is unavailable. A sink that refuses the
/// query for good is logged and replay counts everything (which may count
/// some spans twice) rather than not starting.
pub async fn load_written_origins(
    store: &dyn SpanWriter,
    instance: u64,
    segments: &[u64],
) -> WrittenOrigins {
    if segments.is_empty() {
        return WrittenOrigins::default();
    }
    let mut delay = Duration::from_millis(100);
    loop {
        match store.rollup_origins(instance, segments).await {
            Ok(rows) => return WrittenOrigins::from_stored(rows),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "cannot load stored rollup origins before replay; retrying");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load stored rollup origins; replayed spans are counted in rollups again");
                return WrittenOrigins::default();
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
