//! Opening the configured sink without making the collector depend on it at
//! start: a database sink (PostgreSQL, ClickHouse) that cannot be reached is
//! connected in the background with backoff while the receivers keep
//! acknowledging into the write-ahead log. Until the connection is made,
//! writes wait (the WAL and the bounded queue hold the spans, and the
//! receivers push back once those fill), queries answer "unavailable", and
//! [`SpanWriter::ready`] says why, for `/readyz`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::clickhouse::ClickHouseOptions;
use super::postgres::PostgresOptions;
use super::sqlite::SqliteConfig;
use super::url::redact_url;
use super::{
    AnalyticsReader, DependencyEdge, DiskUsage, EvictionReport, LatencyPoint, LatencyQuery,
    Operation, Retention, RetentionReport, SamplingCountRow, SamplingCounts, SamplingPeriodCounts,
    SearchPage, SpanStore, SpanWriter, StorageError, StorageResult, TimeRange, TraceQuery,
    TraceReader, TraceSpans,
};
use crate::model::{Span, SpanKind, TraceId};
use crate::rollup::{RollupBatch, RollupOrigin};

/// Which sink stores spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Embedded SQLite in `data_dir` (default).
    #[default]
    Sqlite,
    /// PostgreSQL at `storage.url`.
    Postgres,
    /// ClickHouse at `storage.url`.
    Clickhouse,
    /// Discards everything after the pipeline: for benchmarking the ingest path only.
    Null,
}

impl StorageKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Sqlite => "sqlite",
            StorageKind::Postgres => "postgres",
            StorageKind::Clickhouse => "clickhouse",
            StorageKind::Null => "null",
        }
    }
}

/// Sink selection.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite`, `postgres`, `clickhouse` or `null`.
    pub kind: StorageKind,
    /// Connection URL for postgres/clickhouse; SQLite file path override for sqlite.
    pub url: Option<String>,
}

/// Everything [`open`] needs, assembled by `config` from the `[storage]`,
/// `[sqlite]`, `[postgres]`, `[clickhouse]` and `[batcher]` sections.
#[derive(Clone, Debug, Default)]
pub struct SinkOptions {
    /// Which sink, and its URL.
    pub storage: StorageConfig,
    /// The SQLite database file (for `kind = sqlite`).
    pub sqlite_path: PathBuf,
    /// SQLite sink tuning.
    pub sqlite: SqliteConfig,
    /// PostgreSQL sink tuning.
    pub postgres: PostgresOptions,
    /// ClickHouse sink tuning.
    pub clickhouse: ClickHouseOptions,
    /// First delay between connection attempts of a database sink.
    pub retry_initial: Duration,
    /// Longest delay between connection attempts.
    pub retry_max: Duration,
}

/// Why the configured sink could not be opened at all (as opposed to "not
/// reachable yet", which is retried).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A required setting is missing or malformed (the URL, for instance).
    #[error("storage {kind}: {reason}")]
    Config {
        /// Sink kind.
        kind: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The embedded SQLite store could not be opened.
    #[error("opening SQLite store {path}: {source}")]
    Sqlite {
        /// Database file.
        path: String,
        /// Underlying error.
        source: StorageError,
    },
}

type Connected = Option<Arc<dyn SpanStore>>;

/// A sink connected in the background; see the module documentation.
pub struct ConnectingStore {
    name: &'static str,
    target: String,
    store: watch::Receiver<Connected>,
    status: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ConnectingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectingStore")
            .field("name", &self.name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for ConnectingStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectingStore {
    /// Starts connecting on the current tokio runtime: `connect` is called
    /// until it succeeds, waiting `initial` after the first failure and
    /// doubling up to `max`. `name` is the sink kind and `url` the target,
    /// logged with its password hidden.
    pub fn spawn<F, Fut>(
        name: &'static str,
        url: &str,
        initial: Duration,
        max: Duration,
        connect: F,
    ) -> ConnectingStore
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StorageResult<Arc<dyn SpanStore>>> + Send,
    {
        let target = redact_url(url);
        let (tx, rx) = watch::channel::<Connected>(None);
        let status = Arc::new(Mutex::new(format!(
            "{name} sink at {target}: connecting (first attempt)"
        )));
        let task = {
            let (target, status) = (target.clone(), status.clone());
            let initial = initial.max(Duration::from_millis(1));
            let max = max.max(initial);
            tokio::spawn(async move {
                let mut delay = initial;
                let mut attempt = 1u64;
                loop {
                    match connect().await {
                        Ok(store) => {
                            tracing::info!(
                                sink = name,
                                url = %target,
                                attempts = attempt,
                                "connected to the sink; draining the write-ahead log into it"
                            );
                            *status.lock() = String::new();
                            let _ = tx.send(Some(store));
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(
                                sink = name,
                                url = %target,
                                attempt,
                                error = %e,
                                retry_in_ms = delay.as_millis() as u64,
                                "cannot connect to the sink; receivers keep acknowledging into \
                                 the write-ahead log; retrying"
                            );
                            *status.lock() = format!(
                                "{name} sink at {target} not connected: {e} (attempt {attempt}; \
                                 next retry in {} ms)",
                                delay.as_millis()
                            );
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max);
                    attempt += 1;
                }
            })
        };
        ConnectingStore {
            name,
            target,
            store: rx,
            status,
            task,
        }
    }

    /// The connected store, if the connection has been made.
    pub fn connected(&self) -> Option<Arc<dyn SpanStore>> {
        self.store.borrow().clone()
    }

    /// Waits for the connection.
    async fn wait(&self) -> Arc<dyn SpanStore> {
        let mut rx = self.store.clone();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The connect task ended without a store (aborted): nothing
                // will ever connect, so park like a sink that never answers.
                std::future::pending::<()>().await;
            }
        }
    }

    fn now(&self) -> StorageResult<Arc<dyn SpanStore>> {
        self.connected().ok_or_else(|| {
            StorageError::Unavailable(format!(
                "{}; spans are kept in the write-ahead log meanwhile",
                self.status.lock()
            ))
        })
    }
}

#[async_trait]
impl SpanWriter for ConnectingStore {
    fn name(&self) -> &'static str {
        self.name
    }
    fn ready(&self) -> Result<(), String> {
        match self.connected() {
            Some(s) => s.ready(),
            None => Err(self.status.lock().clone()),
        }
    }
    async fn ping(&self) -> StorageResult<()> {
        // Not connected yet is what ready() reports; nothing to ask meanwhile.
        match self.connected() {
            Some(s) => s.ping().await,
            None => Ok(()),
        }
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        self.wait().await.write_spans(spans).await
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        self.wait().await.write_rollups(rollups).await
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        self.wait().await.rollup_origins(instance, segments).await
    }
    async fn prune_rollup_origins(&self, instance: u64, below_segment: u64) -> StorageResult<u64> {
        self.now()?
            .prune_rollup_origins(instance, below_segment)
            .await
    }
}

#[async_trait]
impl TraceReader for ConnectingStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        self.now()?.get_trace(trace_id, range).await
    }
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        self.now()?.get_traces(trace_ids, range).await
    }
    async fn search(&self, query: &TraceQuery) -> StorageResult<SearchPage> {
        self.now()?.search(query).await
    }
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        self.now()?.services(range).await
    }
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        self.now()?.operations(service, range).await
    }
}

#[async_trait]
impl AnalyticsReader for ConnectingStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.now()?.dependencies(range).await
    }
    async fn latency(&self, query: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        self.now()?.latency(query).await
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        self.now()?
            .exact_percentiles(service, operation, kinds, range, qs)
            .await
    }
}

#[async_trait]
impl Retention for ConnectingStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        // A store not connected yet has nothing to delete: the pass waits for
        // the connection (the retention task cancels it at shutdown) instead
        // of failing and warning on every start against a database.
        self.wait().await.apply_retention(cutoff_ns).await
    }
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        self.now()?.disk_usage().await
    }
    fn set_disk_budget(&self, bytes: u64) {
        if let Ok(store) = self.now() {
            store.set_disk_budget(bytes);
        }
    }
    async fn evict_oldest(&self, bytes: u64, give_back: bool) -> StorageResult<EvictionReport> {
        self.now()?.evict_oldest(bytes, give_back).await
    }
    async fn eviction_cutoff(&self, bytes: u64, give_back: bool) -> StorageResult<Option<u64>> {
        self.now()?.eviction_cutoff(bytes, give_back).await
    }
    async fn evict_before(&self, cutoff_ns: u64, give_back: bool) -> StorageResult<EvictionReport> {
        self.now()?.evict_before(cutoff_ns, give_back).await
    }
    fn tier_cutoff(&self, cutoff_ns: u64) -> u64 {
        // Not connected yet: the pass fails at its first read anyway.
        self.now().map_or(cutoff_ns, |s| s.tier_cutoff(cutoff_ns))
    }
    async fn export_before(
        &self,
        cutoff_ns: u64,
        after: Option<super::ExportCursor>,
        limit: usize,
    ) -> StorageResult<super::ExportPage> {
        self.now()?.export_before(cutoff_ns, after, limit).await
    }
}

#[async_trait]
impl SamplingCounts for ConnectingStore {
    async fn write_sampling_counts(&self, counts: &SamplingPeriodCounts) -> StorageResult<()> {
        self.now()?.write_sampling_counts(counts).await
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        self.now()?
            .read_sampling_counts(period_secs, from_ns, to_ns)
            .await
    }
    async fn prune_sampling_counts(&self, before_ns: u64) -> StorageResult<u64> {
        // Housekeeping, run every period from start: before the first
        // connection there is nothing this collector could prune, and the
        // first prune after connecting covers the same rows — not an error
        // (a collector whose database connects after its first period
        // boundary counted one, seen on a loaded machine).
        match self.connected() {
            Some(store) => store.prune_sampling_counts(before_ns).await,
            None => Ok(0),
        }
    }
}

/// Checks what [`open`] checks before connecting: a database sink has a
/// URL, and it is well formed. Connects to nothing.
pub fn check_url(storage: &StorageConfig) -> Result<(), OpenError> {
    let kind = storage.kind;
    let check: fn(&str) -> Result<(), String> = match kind {
        StorageKind::Postgres => |u| super::postgres::check_url(u).map_err(|e| e.to_string()),
        StorageKind::Clickhouse => |u| super::clickhouse::check_url(u).map_err(|e| e.to_string()),
        StorageKind::Sqlite | StorageKind::Null => return Ok(()),
    };
    let url = storage.url.as_deref().ok_or_else(|| OpenError::Config {
        kind: kind.as_str(),
        reason: "needs a connection URL (--storage-url or storage.url)".into(),
    })?;
    check(url).map_err(|reason| OpenError::Config {
        kind: kind.as_str(),
        reason,
    })
}

/// Opens the sink the configuration selects. SQLite (a local file) is opened
/// now and its failure is fatal; PostgreSQL and ClickHouse have their URL
/// checked now and are then connected in the background (see
/// [`ConnectingStore`]), with the backoff of `batcher.retry_initial_ms` ..
/// `batcher.retry_max_ms`. Must be called on a tokio runtime.
pub fn open(opts: impl Into<SinkOptions>) -> Result<Arc<dyn SpanStore>, OpenError> {
    let cfg: SinkOptions = opts.into();
    let kind = cfg.storage.kind;
    check_url(&cfg.storage)?;
    if matches!(kind, StorageKind::Clickhouse) {
        super::clickhouse::check_options(&cfg.clickhouse).map_err(|e| OpenError::Config {
            kind: kind.as_str(),
            reason: e.to_string(),
        })?;
    }
    // Present for the database sinks: check_url made sure of it.
    let url = || cfg.storage.url.clone().unwrap_or_default();
    let (initial, max) = (cfg.retry_initial, cfg.retry_max);
    Ok(match kind {
        StorageKind::Sqlite => {
            let path = cfg.sqlite_path.clone();
            let store = super::sqlite::SqliteStore::open_with(&path, cfg.sqlite.clone()).map_err(
                |source| OpenError::Sqlite {
                    path: path.display().to_string(),
                    source,
                },
            )?;
            Arc::new(store)
        }
        StorageKind::Postgres => {
            let url = url();
            let opts = cfg.postgres.clone();
            let u = url.clone();
            Arc::new(ConnectingStore::spawn(
                "postgres",
                &url,
                initial,
                max,
                move || {
                    let (u, opts) = (u.clone(), opts.clone());
                    async move {
                        let s = super::postgres::PostgresStore::connect_with(&u, opts).await?;
                        Ok(Arc::new(s) as Arc<dyn SpanStore>)
                    }
                },
            ))
        }
        StorageKind::Clickhouse => {
            let url = url();
            let opts = cfg.clickhouse.clone();
            let u = url.clone();
            Arc::new(ConnectingStore::spawn(
                "clickhouse",
                &url,
                initial,
                max,
                move || {
                    let (u, opts) = (u.clone(), opts.clone());
                    async move {
                        let s = super::clickhouse::ClickHouseStore::connect(&u, opts).await?;
                        Ok(Arc::new(s) as Arc<dyn SpanStore>)
                    }
                },
            ))
        }
        StorageKind::Null => {
            tracing::warn!(
                "storage = null: spans are discarded after the pipeline (benchmarking only)"
            );
            Arc::new(crate::storage::null::NullStore)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://ft:s3cr%40t@db:5432/traces?sslmode=disable"),
            "postgres://ft:***@db:5432/traces?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://ft@db/traces"),
            "postgres://ft@db/traces"
        );
        assert_eq!(
            redact_url("http://u:p@ss@ch:8123/db"),
            "http://u:***@ch:8123/db"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=hunter2&x=1"),
            "postgres://db/x?user=a&password=***&x=1"
        );
        assert_eq!(
            redact_url("host=db user=ft password='a b\\' c' dbname=t"),
            "host=db user=ft password=*** dbname=t"
        );
        assert_eq!(
            redact_url("host=db PASSWORD = hunter2"),
            "host=db PASSWORD = ***"
        );
    }

    #[tokio::test]
    async fn retries_until_connected_and_reports_readiness() {
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let a = attempts.clone();
        let store = ConnectingStore::spawn(
            "null",
            "postgres://u:pw@nowhere/db",
            Duration::from_millis(5),
            Duration::from_millis(20),
            move || {
                let n = a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(StorageError::Unavailable("connection refused".into()))
                    } else {
                        Ok(Arc::new(crate::storage::null::NullStore) as Arc<dyn SpanStore>)
                    }
                }
            },
        );
        let writer = store.write_spans(&[]);
        let why = store.ready().unwrap_err();
        assert!(why.contains("postgres://u:***@nowhere/db"), "{why}");
        assert!(!why.contains("pw"), "{why}");
        let range = TimeRange {
            start_ns: 0,
            end_ns: 1,
        };
        // Nothing has run yet on this single-threaded runtime: not connected.
        let q = store.services(range).await;
        assert!(matches!(q, Err(StorageError::Unavailable(_))), "{q:?}");
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("write waits for the connection, then succeeds")
            .unwrap();
        assert!(store.ready().is_ok());
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn sampling_counts_before_the_first_connection_prune_nothing_and_write_fails() {
        use crate::storage::{SamplingCounts, SamplingPeriodCounts, StorageError};
        let store = ConnectingStore::spawn(
            "null",
            "postgres://nowhere/db",
            Duration::from_millis(20),
            Duration::from_millis(20),
            || async {
                Err::<Arc<dyn SpanStore>, _>(StorageError::Unavailable("connection refused".into()))
            },
        );
        // Housekeeping is not an error before the database is there...
        assert_eq!(store.prune_sampling_counts(u64::MAX).await.unwrap(), 0);
        // ...but losing this collector's counts is.
        let counts = SamplingPeriodCounts {
            period_start_ns: 0,
            period_secs: 1,
            collector: "c".into(),
            counts: Vec::new(),
        };
        assert!(store.write_sampling_counts(&counts).await.is_err());
        assert!(store.read_sampling_counts(1, 0, 1).await.is_err());
    }
}
