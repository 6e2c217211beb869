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
use crate::storage::{SpanWriter, StorageError, StorageResult};

/// What travels from the worker to the sink task.
pub(super) enum SinkMsg {
    Spans(SinkBatch),
    Rollups(RollupBatch),
}

/// The worker's ends of the two channels to the sink task.
pub(super) struct SinkTx {
    /// Span batches, at most `batcher.max_pending_batches` waiting.
    pub spans: tokio::sync::mpsc::Sender<SinkMsg>,
    /// Rollup batches, taken before any waiting span batch.
    pub rollups: tokio::sync::mpsc::Sender<SinkMsg>,
}

/// The sink task's ends of [`SinkTx`].
pub(super) struct SinkRx {
    spans: tokio::sync::mpsc::Receiver<SinkMsg>,
    rollups: tokio::sync::mpsc::Receiver<SinkMsg>,
}

/// The channels from the worker to the sink task. Rollups have their own,
/// read first: a WAL segment whose spans are all stored still waits for
/// the rollups counting them, and behind a full channel of span batches (a
/// slow sink) a rollup batch waited seconds, keeping the WAL full of
/// stored spans while the collector refused requests for a full WAL.
pub(super) fn channels(max_pending_batches: usize) -> (SinkTx, SinkRx) {
    let (spans_tx, spans) = tokio::sync::mpsc::channel(max_pending_batches.max(1));
    let (rollups_tx, rollups) = tokio::sync::mpsc::channel(max_pending_batches.max(1));
    (
        SinkTx {
            spans: spans_tx,
            rollups: rollups_tx,
        },
        SinkRx { spans, rollups },
    )
}

impl SinkRx {
    /// The next message, rollups first; `None` once the worker has gone and
    /// both channels are drained.
    async fn recv(&mut self) -> Option<SinkMsg> {
        tokio::select! {
            biased;
            Some(m) = self.rollups.recv() => Some(m),
            m = self.spans.recv() => match m {
                Some(m) => Some(m),
                None => self.rollups.recv().await,
            },
        }
    }
}

pub(super) async fn sink_task(
    mut rx: SinkRx,
    store: Arc<dyn SpanWriter>,
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
                // No timeout: a rollup write merges counts, so retrying one that
                // committed after it was abandoned would count it twice.
                if write_with_retry(&cfg, &metrics, &health, "rollups", None, || {
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
    store: &dyn SpanWriter,
    wal: &Wal,
    metrics: &Metrics,
    health: &crate::health::Health,
    cfg: &BatcherConfig,
    batch: SinkBatch,
) {
    let n = batch.len() as u64;
    let timeout = Some(Duration::from_millis(cfg.write_timeout_ms.max(1)));
    let ok = write_with_retry(cfg, metrics, health, "spans", timeout, || {
        store.write_spans_and_wire(&batch.spans, &batch.wire)
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
/// until a write succeeds. With a `timeout`, an attempt still running then is
/// abandoned and retried as a retryable failure (counted as `timeout`).
async fn write_with_retry<F, Fut>(
    cfg: &BatcherConfig,
    metrics: &Metrics,
    health: &crate::health::Health,
    what: &str,
    timeout: Option<Duration>,
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
        let outcome = match timeout {
            Some(t) => match tokio::time::timeout(t, op()).await {
                Ok(r) => r,
                Err(_) => {
                    metrics.sink_errors.add("timeout", 1);
                    let e = StorageError::Unavailable(format!(
                        "sink {what} write did not finish within {} ms (batcher.write_timeout_ms); \
                         the database is slow or stuck",
                        t.as_millis()
                    ));
                    health.sink_write_failed(&e);
                    tracing::warn!(error = %e, what, retry_in_ms = delay.as_millis() as u64, "sink write timed out; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(cfg.retry_max_ms.max(1)));
                    continue;
                }
            },
            None => op().await,
        };
        match outcome {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::wal::WalConfig;
    use crate::storage::null::NullStore;
    use std::sync::atomic::AtomicU32;

    fn cfg(timeout_ms: u64) -> BatcherConfig {
        BatcherConfig {
            retry_initial_ms: 1,
            retry_max_ms: 2,
            write_timeout_ms: timeout_ms,
            ..BatcherConfig::default()
        }
    }

    fn health(metrics: &Arc<Metrics>) -> (tempfile::TempDir, Arc<crate::health::Health>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _) = Wal::open(dir.path(), &WalConfig::default(), metrics.clone()).expect("wal");
        let h = crate::health::Health::new(Arc::new(NullStore), wal, metrics.clone());
        (dir, h)
    }

    #[tokio::test]
    async fn a_stuck_write_is_abandoned_counted_and_retried() {
        let metrics = Arc::new(Metrics::default());
        let (_dir, health) = health(&metrics);
        let calls = AtomicU32::new(0);
        let ok = write_with_retry(
            &cfg(20),
            &metrics,
            &health,
            "spans",
            Some(Duration::from_millis(20)),
            || {
                let n = calls.fetch_add(1, Relaxed);
                async move {
                    if n < 2 {
                        // Hangs far beyond the timeout (a stuck database).
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Ok(())
                }
            },
        )
        .await;
        assert!(ok, "the write succeeds once the sink answers");
        assert_eq!(calls.load(Relaxed), 3);
        assert_eq!(metrics.sink_errors.get("timeout"), 2);
        assert_eq!(metrics.sink_errors.get("retryable"), 0);
    }

    #[tokio::test]
    async fn without_a_timeout_a_slow_write_is_waited_for() {
        let metrics = Arc::new(Metrics::default());
        let (_dir, health) = health(&metrics);
        let ok = write_with_retry(&cfg(1), &metrics, &health, "rollups", None, || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(())
        })
        .await;
        assert!(ok);
        assert_eq!(metrics.sink_errors.get("timeout"), 0);
    }
}
