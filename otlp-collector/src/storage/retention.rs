//! Age-based retention: a background task that periodically asks the sink to
//! delete spans and rollups older than the configured maximum age.

use std::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::model::now_ns;

use serde::Deserialize;

use super::Retention;
use crate::metrics::{Collector, EncodeResult, Families, MetricType};

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
    pub size: SizeStats,
}

/// Why data was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Older than `retention.max_age_hours`.
    Age = 0,
    /// The store exceeded `retention.max_disk_bytes`.
    Size = 1,
    /// Less than the free-space reserve was free on the store's disk.
    DiskFull = 2,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 3] = [Reason::Age, Reason::Size, Reason::DiskFull];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Age => "age",
            Reason::Size => "size",
            Reason::DiskFull => "disk_full",
        }
    }
}

/// What the size task measured and deleted (exported as self-metrics).
#[derive(Debug, Default)]
pub struct SizeStats {
    /// Deletion passes that removed something, by [`Reason`].
    pub evictions: [AtomicU64; 3],
    /// Spans deleted, by [`Reason`].
    pub evicted_spans: [AtomicU64; 3],
    /// The store's files on disk (bytes), at the last check.
    pub file_bytes: AtomicU64,
    /// The store's live bytes (what the budget counts), at the last check.
    pub live_bytes: AtomicU64,
    /// The budget in bytes (0 until the task has resolved it).
    pub max_bytes: AtomicU64,
    /// Start of the oldest stored span (ns; 0 = empty or unknown).
    pub oldest_ns: AtomicU64,
    /// Size and disk-full evictions deleted everything that started before
    /// this (ns; 0 = none yet). Only grows.
    pub evicted_before_ns: AtomicU64,
}

impl SizeStats {
    /// Counts a deletion pass of `spans` spans for `reason` (a pass that
    /// deleted nothing is not an eviction).
    pub fn count(&self, reason: Reason, spans: u64) {
        if spans > 0 {
            self.evictions[reason as usize].fetch_add(1, Relaxed);
            self.evicted_spans[reason as usize].fetch_add(spans, Relaxed);
        }
    }

    /// Writes these families; `wal_bytes` is the write-ahead log's size (the
    /// other tier on the collector's disk).
    pub fn encode(&self, f: &mut Families, wal_bytes: u64) -> EncodeResult {
        let secs = |ns: &AtomicU64| ns.load(Relaxed) as f64 / 1e9;
        let hot = [("tier", "hot")];
        f.family(
            "ferrotrace_storage_bytes",
            MetricType::Gauge,
            "Bytes on disk per storage tier: hot = the embedded store's files, wal = the write-ahead log's segments.",
            [
                (hot, self.file_bytes.load(Relaxed)),
                ([("tier", "wal")], wal_bytes),
            ],
        )?;
        f.family(
            "ferrotrace_storage_used_bytes",
            MetricType::Gauge,
            "Bytes of the hot store holding data, compared with retention.max_disk_bytes.",
            [(hot, self.live_bytes.load(Relaxed))],
        )?;
        f.family(
            "ferrotrace_storage_max_bytes",
            MetricType::Gauge,
            "The hot store's size budget (retention.max_disk_bytes, resolved; 0 = not known yet).",
            [(hot, self.max_bytes.load(Relaxed))],
        )?;
        f.family(
            "ferrotrace_storage_oldest_timestamp_seconds",
            MetricType::Gauge,
            "Start time of the oldest stored span (Unix seconds; 0 = empty).",
            [(hot, secs(&self.oldest_ns))],
        )?;
        f.family(
            "ferrotrace_storage_evicted_before_seconds",
            MetricType::Gauge,
            "Size and disk-full evictions deleted every span that started before this (Unix seconds; 0 = none).",
            [(hot, secs(&self.evicted_before_ns))],
        )?;
        let by_reason = |v: &[AtomicU64; 3]| {
            Reason::ALL.map(|r| ([("reason", r.as_str())], v[r as usize].load(Relaxed)))
        };
        f.family(
            "ferrotrace_storage_evictions_total",
            MetricType::Counter,
            "Deletion passes that removed stored data, by reason (age, size, disk_full).",
            by_reason(&self.evictions),
        )?;
        f.family(
            "ferrotrace_storage_evicted_spans_total",
            MetricType::Counter,
            "Stored spans deleted, by reason (age, size, disk_full).",
            by_reason(&self.evicted_spans),
        )
    }
}

impl RetentionStats {
    /// The families of both retention passes (age here, size in
    /// `storage::budget`) for [`crate::metrics::Metrics::register`];
    /// `wal_bytes` is the WAL's size gauge, shown beside the hot store's.
    pub fn collector(self: &Arc<Self>, wal_bytes: Arc<AtomicU64>) -> Box<dyn Collector> {
        Box::new(RetentionFamilies {
            stats: self.clone(),
            wal_bytes,
        })
    }
}

#[derive(Debug)]
struct RetentionFamilies {
    stats: Arc<RetentionStats>,
    wal_bytes: Arc<AtomicU64>,
}

impl Collector for RetentionFamilies {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> EncodeResult {
        let f = &mut Families::new(encoder);
        let r = &self.stats;
        for (name, help, v) in [
            (
                "ferrotrace_retention_runs_total",
                "Age retention passes completed (retention.max_age_hours).",
                &r.runs,
            ),
            (
                "ferrotrace_retention_failures_total",
                "Age retention passes that failed (retried at the next interval).",
                &r.failures,
            ),
            (
                "ferrotrace_retention_spans_deleted_total",
                "Spans deleted by age retention.",
                &r.spans_deleted,
            ),
            (
                "ferrotrace_retention_rollups_deleted_total",
                "Rollup rows deleted by age retention.",
                &r.rollups_deleted,
            ),
        ] {
            f.counter(name, help, v.load(Relaxed))?;
        }
        r.size.encode(f, self.wal_bytes.load(Relaxed))
    }
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
            stats.size.count(Reason::Age, report.spans_deleted);
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

    #[test]
    fn metrics_name_every_reason_and_tier() {
        let stats = Arc::new(RetentionStats::default());
        let s = &stats.size;
        s.count(Reason::Size, 7);
        s.count(Reason::DiskFull, 0);
        s.evicted_before_ns
            .store(1_500_000_000_000_000_000, Ordering::Relaxed);
        stats.runs.store(3, Ordering::Relaxed);
        let metrics = crate::metrics::Metrics::default();
        metrics.register(stats.collector(Arc::new(AtomicU64::new(42))));
        let out = metrics.render();
        for line in [
            "ferrotrace_storage_bytes{tier=\"wal\"} 42",
            "ferrotrace_storage_evictions_total{reason=\"size\"} 1",
            "ferrotrace_storage_evictions_total{reason=\"disk_full\"} 0",
            "ferrotrace_storage_evicted_spans_total{reason=\"size\"} 7",
            "ferrotrace_storage_evicted_spans_total{reason=\"age\"} 0",
            "ferrotrace_storage_evicted_before_seconds{tier=\"hot\"} 1500000000.0",
            "# TYPE ferrotrace_retention_runs_total counter\nferrotrace_retention_runs_total 3",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
    }
}
