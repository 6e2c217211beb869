//! Readiness: everything that keeps the collector from doing its job now,
//! which `GET /readyz` lists (503, one line per reason) and
//! `ferrotrace_ready` counts:
//!
//! - the WAL is being replayed, or shutdown has begun;
//! - the sink: not connected yet, not answering a health check (run every
//!   [`PROBE_INTERVAL`], so a sink lost after it was connected is noticed
//!   without traffic), or its writes failing since the last one that
//!   succeeded;
//! - the disk: the WAL could not write for lack of space (until a write
//!   succeeds or the file system has [`crate::pipeline::wal::SPACE_RECOVERED_BYTES`] free
//!   again, checked by the same periodic task, so readiness returns without
//!   traffic);
//! - the WAL refusing appends because it holds `wal.max_bytes`.
//!
//! Reasons are facts observed by the collector, never guesses from a
//! threshold: a nearly full disk or WAL is for alerts on the metrics
//! (`ferrotrace_wal_disk_free_bytes`, `ferrotrace_wal_bytes` against
//! `ferrotrace_wal_max_bytes`).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::pipeline::wal::Wal;
use crate::storage::{SpanWriter, StorageError};

/// How often the sink is asked whether it answers, and the disk's free space read.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A sink health check that takes longer than this counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The collector's readiness, shared by `/readyz`, the sink task (which
/// reports write results) and the periodic health check.
pub struct Health {
    store: Arc<dyn SpanWriter>,
    wal: Wal,
    metrics: Arc<Metrics>,
    /// WAL replay done and not shutting down.
    serving: AtomicBool,
    /// Why the last health check of a connected sink failed.
    sink_probe: Mutex<Option<String>>,
    /// The first retryable write failure since the last successful write,
    /// and the latest error.
    sink_writes: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("reasons", &self.reasons())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Readiness of a collector writing through `wal` into `store`; not
    /// serving until [`Health::set_serving`].
    pub fn new(store: Arc<dyn SpanWriter>, wal: Wal, metrics: Arc<Metrics>) -> Arc<Health> {
        Arc::new(Health {
            store,
            wal,
            metrics,
            serving: AtomicBool::new(false),
            sink_probe: Mutex::new(None),
            sink_writes: Mutex::new(None),
        })
    }

    /// Marks WAL replay as done (`true`) or shutdown as begun (`false`).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Relaxed);
        self.publish();
    }

    /// True once WAL replay is done and until shutdown begins.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Relaxed)
    }

    /// Records a sink write that committed.
    pub fn sink_write_ok(&self) {
        if self.sink_writes.lock().take().is_some() {
            tracing::info!(sink = self.store.name(), "sink writes succeed again");
            self.publish();
        }
    }

    /// Records a sink write that failed and will be retried.
    pub fn sink_write_failed(&self, e: &StorageError) {
        let mut w = self.sink_writes.lock();
        let since = w.as_ref().map_or_else(Instant::now, |(t, _)| *t);
        *w = Some((since, e.to_string()));
        drop(w);
        self.publish();
    }

    /// Why the collector is not ready; empty when it is.
    pub fn reasons(&self) -> Vec<String> {
        let mut why = Vec::new();
        if !self.serving.load(Relaxed) {
            why.push("replaying the write-ahead log or shutting down".to_string());
        }
        let name = self.store.name();
        match self.store.ready() {
            Err(sink) => why.push(format!("sink: {sink}")),
            Ok(()) => {
                if let Some(e) = self.sink_probe.lock().as_ref() {
                    why.push(format!(
                        "sink: the {name} sink does not answer its health check: {e}; spans wait \
                         in the write-ahead log"
                    ));
                }
            }
        }
        if let Some((since, e)) = self.sink_writes.lock().as_ref() {
            why.push(format!(
                "sink: {name} writes failing for {} s (retried with backoff; spans wait in the \
                 write-ahead log): {e}",
                since.elapsed().as_secs()
            ));
        }
        if let Some(e) = self.wal.out_of_space() {
            why.push(format!(
                "disk full: the write-ahead log in {} cannot write: {e}; new spans are refused \
                 (503 / UNAVAILABLE) until space is freed",
                self.wal.dir().display()
            ));
        }
        if self.wal.refusing_full() {
            why.push(format!(
                "write-ahead log full: {} bytes of wal.max_bytes = {}; new spans are refused \
                 (429 / RESOURCE_EXHAUSTED) until the sink catches up",
                self.wal.total_bytes(),
                self.wal.max_bytes()
            ));
        }
        why
    }

    /// Sets `ferrotrace_ready` from the current reasons.
    fn publish(&self) {
        let ready = self.reasons().is_empty();
        self.metrics.ready.store(u64::from(ready), Relaxed);
    }

    /// One round of the periodic check: asks a connected sink whether it
    /// answers, and reads the WAL disk's free space.
    pub async fn probe(&self) {
        if self.store.ready().is_ok() {
            let result = match tokio::time::timeout(PROBE_TIMEOUT, self.store.ping()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
            };
            let mut probe = self.sink_probe.lock();
            match (&*probe, result) {
                (None, Err(e)) => {
                    tracing::warn!(sink = self.store.name(), error = %e, "the sink does not answer its health check; /readyz reports it");
                    *probe = Some(e);
                }
                (Some(_), Err(e)) => *probe = Some(e),
                (Some(_), Ok(())) => {
                    tracing::info!(
                        sink = self.store.name(),
                        "the sink answers its health check again"
                    );
                    *probe = None;
                }
                (None, Ok(())) => {}
            }
        }
        let wal = self.wal.clone();
        let _ = tokio::task::spawn_blocking(move || wal.check_space()).await;
        self.publish();
    }
}

/// Runs [`Health::probe`] every [`PROBE_INTERVAL`] until `shutdown` turns true.
pub async fn run(health: Arc<Health>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => health.probe().await,
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::wal::WalConfig;
    use crate::storage::StorageResult;
    use async_trait::async_trait;

    /// A sink whose health check answers as told.
    #[derive(Debug, Default)]
    struct Flaky {
        down: AtomicBool,
    }

    #[async_trait]
    impl crate::storage::SpanWriter for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn ping(&self) -> StorageResult<()> {
            if self.down.load(Relaxed) {
                Err(StorageError::Unavailable("connection refused".into()))
            } else {
                Ok(())
            }
        }
        async fn write_spans(&self, spans: &[crate::model::Span]) -> StorageResult<()> {
            crate::storage::null::NullStore.write_spans(spans).await
        }
        async fn write_rollups(&self, r: &crate::rollup::RollupBatch) -> StorageResult<()> {
            crate::storage::null::NullStore.write_rollups(r).await
        }
        async fn rollup_origins(
            &self,
            instance: u64,
            segments: &[u64],
        ) -> StorageResult<Vec<crate::rollup::RollupOrigin>> {
            crate::storage::null::NullStore
                .rollup_origins(instance, segments)
                .await
        }
        async fn prune_rollup_origins(&self, instance: u64, below: u64) -> StorageResult<u64> {
            crate::storage::null::NullStore
                .prune_rollup_origins(instance, below)
                .await
        }
    }

    #[tokio::test]
    async fn reasons_follow_probes_and_write_results() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let (wal, _) = Wal::open(dir.path(), &WalConfig::default(), metrics.clone()).unwrap();
        let store = Arc::new(Flaky::default());
        let h = Health::new(store.clone(), wal.clone(), metrics.clone());
        assert_eq!(h.reasons().len(), 1, "replaying");
        h.set_serving(true);
        assert!(h.reasons().is_empty(), "{:?}", h.reasons());
        assert_eq!(metrics.ready.load(Relaxed), 1);

        store.down.store(true, Relaxed);
        h.probe().await;
        let why = h.reasons().join("\n");
        assert!(
            why.contains("flaky sink does not answer") && why.contains("connection refused"),
            "{why}"
        );
        assert_eq!(metrics.ready.load(Relaxed), 0);
        store.down.store(false, Relaxed);
        h.probe().await;
        assert!(h.reasons().is_empty(), "{:?}", h.reasons());

        h.sink_write_failed(&StorageError::Unavailable("disk I/O error".into()));
        let why = h.reasons().join("\n");
        assert!(
            why.contains("writes failing") && why.contains("disk I/O error"),
            "{why}"
        );
        h.sink_write_ok();
        assert!(h.reasons().is_empty());
        assert_eq!(metrics.ready.load(Relaxed), 1);
        h.set_serving(false);
        assert_eq!(metrics.ready.load(Relaxed), 0);
        wal.close();
    }
}
