//! Age-based retention: a background task that periodically asks the sink to
//! delete spans and rollups older than the configured maximum age.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::model::now_ns;

use serde::Deserialize;

use super::Retention;

/// `[retention]` configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep spans and rollups this many hours (default 168 = 7 days); 0 keeps
    /// everything forever.
    pub max_age_hours: u64,
    /// How often retention runs, in seconds (default 300).
    pub interval_secs: u64,
    /// Size budget of the store's data (`storage::budget`): past it the
    /// oldest data is deleted. 0 (the default) = half the size of the file
    /// system holding the SQLite store; no size budget for a database server.
    pub max_disk_bytes: u64,
    /// How often the store's size and the disk's free space are checked,
    /// in milliseconds (default 1000).
    pub size_check_interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_hours: 168,
            interval_secs: 300,
            max_disk_bytes: 0,
            size_check_interval_ms: 1000,
        }
    }
}

impl RetentionConfig {
    /// The maximum age, or `None` when retention is disabled.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_hours > 0)
            .then(|| Duration::from_secs(self.max_age_hours.saturating_mul(3600)))
    }
}

/// Counters of the retention task (exported as self-metrics).
#[derive(Debug, Default)]
pub struct RetentionStats {
    /// Completed runs.
    pub runs: AtomicU64,
    /// Runs that failed (the next run retries).
    pub failures: AtomicU64,
    /// Spans deleted in total.
    pub spans_deleted: AtomicU64,
    /// Rollup rows deleted in total.
    pub rollups_deleted: AtomicU64,
    /// Size retention's gauges and eviction counters.
    pub size: super::budget::SizeStats,
}

/// The cutoff for a retention run at `now_ns`: everything that started before
/// it is deleted.
pub fn cutoff_ns(now_ns: u64, max_age: Duration) -> u64 {
    now_ns.saturating_sub(u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs one retention pass now; returns what was deleted, or `None` when
/// retention is disabled.
pub async fn run_once(
    store: &dyn Retention,
    sink: &str,
    config: &RetentionConfig,
    stats: &RetentionStats,
) -> Option<super::RetentionReport> {
    let max_age = config.max_age()?;
    let cutoff = cutoff_ns(now_ns(), max_age);
    match store.apply_retention(cutoff).await {
        Ok(report) => {
            stats.runs.fetch_add(1, Ordering::Relaxed);
            stats
                .spans_deleted
                .fetch_add(report.spans_deleted, Ordering::Relaxed);
            stats
                .rollups_deleted
                .fetch_add(report.rollups_deleted, Ordering::Relaxed);
            stats
                .size
                .count(super::budget::Reason::Age, report.spans_deleted);
            tracing::debug!(
                sink,
                spans = report.spans_deleted,
                rollups = report.rollups_deleted,
                "retention pass done"
            );
            Some(report)
        }
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sink, error = %e, "retention pass failed; retrying at the next interval");
            None
        }
    }
}

/// Runs retention every `interval_secs` until `shutdown` turns true (or its
/// sender is dropped). Returns at once when retention is disabled.
pub async fn run(
    store: Arc<dyn Retention>,
    sink: &'static str,
    config: RetentionConfig,
    stats: Arc<RetentionStats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if config.max_age().is_none() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(config.interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The pass is inside the select so shutdown cancels it: it may wait
        // for a sink that is still connecting.
        tokio::select! {
            _ = async {
                tick.tick().await;
                run_once(store.as_ref(), sink, &config, &stats).await;
            } => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_saturates_and_disabled_when_zero() {
        assert_eq!(cutoff_ns(10, Duration::from_secs(1)), 0);
        assert_eq!(
            cutoff_ns(5_000_000_000, Duration::from_secs(2)),
            3_000_000_000
        );
        assert!(RetentionConfig {
            max_age_hours: 0,
            interval_secs: 1,
            ..RetentionConfig::default()
        }
        .max_age()
        .is_none());
        assert_eq!(
            RetentionConfig::default().max_age(),
            Some(Duration::from_secs(7 * 24 * 3600))
        );
    }

    /// A sink still connecting at start-up is not a failed retention pass:
    /// the first pass waits for the connection (no failure counted, no
    /// warning), and shutdown ends the task even if it never connects.
    #[tokio::test]
    async fn first_pass_waits_for_a_connecting_sink_and_shutdown_cancels_it() {
        use crate::storage::connecting::ConnectingStore;
        use crate::storage::{SpanStore, StorageError};
        let dir = tempfile::tempdir().unwrap();
        let sqlite: Arc<dyn SpanStore> = Arc::new(
            crate::storage::sqlite::SqliteStore::open(dir.path().join("spans.db")).unwrap(),
        );
        let connects = |fail_first: u32| {
            let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let sqlite = sqlite.clone();
            move || {
                let k = n.fetch_add(1, Ordering::SeqCst);
                let sqlite = sqlite.clone();
                async move {
                    if k < fail_first {
                        Err(StorageError::Unavailable("connection refused".into()))
                    } else {
                        Ok(sqlite)
                    }
                }
            }
        };
        let config = RetentionConfig {
            max_age_hours: 1,
            interval_secs: 3600,
            ..RetentionConfig::default()
        };

        let store: Arc<dyn Retention> = Arc::new(ConnectingStore::spawn(
            "null",
            "postgres://nowhere/db",
            Duration::from_millis(20),
            Duration::from_millis(20),
            connects(3),
        ));
        let stats = Arc::new(RetentionStats::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(store, "null", config.clone(), stats.clone(), rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stats.runs.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no retention pass after connecting"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops at shutdown")
            .unwrap();

        let never: Arc<dyn Retention> = Arc::new(ConnectingStore::spawn(
            "null",
            "postgres://nowhere/db",
            Duration::from_millis(20),
            Duration::from_millis(20),
            connects(u32::MAX),
        ));
        let stats = Arc::new(RetentionStats::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(never, "null", config, stats.clone(), rx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a pass waiting for a sink that never connects is cancelled at shutdown")
            .unwrap();
        assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
        assert_eq!(stats.runs.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = serde_json::from_str::<RetentionConfig>(r#"{"max_age_hours": 1, "bogus": 2}"#);
        assert!(err.is_err());
        let ok: RetentionConfig = serde_json::from_str(r#"{"max_age_hours": 2}"#).expect("parse");
        assert_eq!(ok.max_age_hours, 2);
        assert_eq!(ok.interval_secs, 300);
    }
}
