//! The sink task: takes span and rollup batches from the worker over a
//! bounded channel, writes span batches with up to
//! `batcher.max_concurrent_writes` in flight, retries with backoff, reports
//! outcomes to `/readyz`, and releases WAL spans once a batch is committed
//! (or given up on, counted).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batcher::{BatcherConfig, SinkBatch};
use super::origins::OriginPruner;
use super::wal::Wal;
use crate::metrics::Metrics;
use crate::rollup::RollupBatch;
use crate::storage::{SpanStore, StorageResult};

/// What travels from the worker to the sink task.
pub(super) enum SinkMsg {
    Spans(SinkBatch),
    Rollups(RollupBatch),
}

pub(super) async fn sink_task(
    mut rx: tokio::sync::mpsc::Receiver<SinkMsg>,
    store: Arc<dyn SpanStore>,
    wal: Wal,
    metrics: Arc<Metrics>,
    health: Arc<crate::health::Health>,
    cfg: BatcherConfig,
) {
    let mut prune = OriginPruner::default();
    // Span batches in flight: each is committed (or dropped) on its own and
    // releases its own WAL spans, so their order does not matter. A slot is
    // free before the next message is taken, so at most this many batches
    // are held beyond the channel's `max_pending_batches`.
    let max_writes = cfg.max_concurrent_writes.unwrap_or(1).max(1);
    let mut writing = tokio::task::JoinSet::new();
    loop {
        while writing.len() >= max_writes {
            reap(writing.join_next().await);
        }
        let Some(msg) = rx.recv().await else { break };
        match msg {
            SinkMsg::Spans(batch) => {
                let (store, wal, metrics, health, cfg) = (
                    store.clone(),
                    wal.clone(),
                    metrics.clone(),
                    health.clone(),
                    cfg.clone(),
                );
                writing.spawn(async move {
                    write_span_batch(&*store, &wal, &metrics, &health, &cfg, batch).await
                });
            }
            SinkMsg::Rollups(r) => {
                if write_with_retry(&cfg, &metrics, &health, "rollups", || {
                    store.write_rollups(&r)
                })
                .await
                {
                    metrics.rollups_written.fetch_add(1, Relaxed);
                    prune.after_write(&*store, &wal).await;
                }
                // Committed (or given up for good, and counted): the WAL need
                // not keep these segments for the batch any more.
                for seg in r.origin_segments() {
                    wal.release_rollups(seg, 1);
                }
            }
        }
    }
    while let Some(done) = writing.join_next().await {
        reap(Some(done));
    }
}

/// A finished span-batch write: a panic in it goes on as before (it ends
/// the sink task), it is not swallowed.
fn reap(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Writes one span batch (retrying as [`write_with_retry`] does), counts it,
/// and releases its spans from the WAL once committed or given up on.
async fn write_span_batch(
    store: &dyn SpanStore,
    wal: &Wal,
    metrics: &Metrics,
    health: &crate::health::Health,
    cfg: &BatcherConfig,
    batch: SinkBatch,
) {
    let n = batch.spans.len() as u64;
    let ok = write_with_retry(cfg, metrics, health, "spans", || {
        store.write_spans(&batch.spans)
    })
    .await;
    if ok {
        metrics.sink_spans_written.fetch_add(n, Relaxed);
    } else {
        metrics.dropped.add("sink_rejected", n);
    }
    for (seg, c) in batch.segments {
        wal.release(seg, c);
    }
}

/// Writes with exponential backoff: retryable errors are retried until they
/// succeed (the WAL holds the data meanwhile); other errors are tried
/// `max_attempts_non_retryable` times. Returns true on success. Outcomes are
/// reported to `health`: a retryable failure makes `/readyz` report the sink
/// until a write succeeds.
async fn write_with_retry<F, Fut>(
    cfg: &BatcherConfig,
    metrics: &Metrics,
    health: &crate::health::Health,
    what: &str,
    mut op: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StorageResult<()>>,
{
    let mut delay = Duration::from_millis(cfg.retry_initial_ms.max(1));
    let mut fatal_attempts = 0u32;
    loop {
        let started = Instant::now();
        match op().await {
            Ok(()) => {
                metrics.sink_write_latency.observe(started.elapsed());
                health.sink_write_ok();
                return true;
            }
            Err(e) if e.is_retryable() => {
                metrics.sink_errors.add("retryable", 1);
                health.sink_write_failed(&e);
                tracing::warn!(error = %e, what, retry_in_ms = delay.as_millis() as u64, "sink write failed; retrying");
            }
            Err(e) => {
                metrics.sink_errors.add("fatal", 1);
                fatal_attempts += 1;
                if fatal_attempts >= cfg.max_attempts_non_retryable {
                    tracing::error!(error = %e, what, attempts = fatal_attempts, "sink rejected the batch; dropping it");
                    return false;
                }
                tracing::warn!(error = %e, what, "sink rejected the batch; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(cfg.retry_max_ms.max(1)));
    }
}
