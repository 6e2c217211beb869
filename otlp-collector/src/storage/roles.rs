//! The storage interface, split by role as Jaeger v2 splits `tracestore`
//! (writer, reader) from `depstore`: each part of the collector depends on
//! the role it uses and nothing more.
//!
//! - [`SpanWriter`]: what the pipeline needs: spans, rollups, the rollup
//!   origins that make WAL replay exact, and readiness (`/readyz` asks
//!   whether the sink can take writes).
//! - [`TraceReader`]: traces by id (one or a batch), search, services and
//!   operations: the trace half of the query API.
//! - [`AnalyticsReader`]: dependencies, latency/rate series and exact
//!   percentiles: the aggregate half of the query API.
//! - [`Retention`]: deleting what is older than the configured age.
//! - [`SamplingCounts`]: each collector's adjusted root-span counts per
//!   adaptive-sampling period, shared through the store so that every
//!   collector on it computes the same rates (`source = "store"`).
//!
//! A database sink implements all four; [`SpanStore`] names that bundle (it
//! is implemented for every type that has the four roles), and is what
//! [`open`](super::connecting::open) returns and the collector starts with.
//! [`SpanReader`] bundles the two readers for the query layer.

use async_trait::async_trait;

use super::{
    DependencyEdge, DiskUsage, EvictionReport, ExportCursor, ExportPage, LatencyPoint,
    LatencyQuery, Operation, RetentionReport, SearchPage, StorageError, StorageResult, TieredTrace,
    TimeRange, TraceQuery, TraceSpans,
};
use crate::model::{Span, SpanKind, TraceId};
use crate::rollup::{RollupBatch, RollupOrigin};

/// The write side of a sink, used by the pipeline (and by `/readyz`).
#[async_trait]
pub trait SpanWriter: Send + Sync + 'static {
    /// Short name for logs and metrics (`sqlite`, `postgres`, `clickhouse`).
    fn name(&self) -> &'static str;

    /// `Ok` when the sink can take writes now; otherwise why not (shown by
    /// `/readyz`). A sink that is opened before the collector starts is ready.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// One cheap round trip to the database (`SELECT 1`), run every few
    /// seconds by the readiness check so that a sink lost after it was
    /// connected is reported without waiting for a write to fail. Embedded
    /// stores have nothing to ask.
    async fn ping(&self) -> StorageResult<()> {
        Ok(())
    }

    /// Writes a batch of spans durably; idempotent on `(trace_id, span_id)`.
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()>;

    /// Writes `spans` and the spans of `wire`, requests a router scanned
    /// but never built into spans (`receiver::otlp_proto::route_scan`).
    /// Only the router's forwarder takes wire requests; every other sink
    /// writes `spans` and refuses them (they never reach it).
    async fn write_spans_and_wire(
        &self,
        spans: &[Span],
        wire: &[std::sync::Arc<crate::receiver::otlp_proto::wire_request::WireRequest>],
    ) -> StorageResult<()> {
        if !wire.is_empty() {
            return Err(StorageError::Backend(format!(
                "the {} sink cannot store OTLP requests that were not decoded \
                 (route.reslice is for routers only)",
                self.name()
            )));
        }
        self.write_spans(spans).await
    }

    /// Merges per-minute rollups into the stored ones (counts add, sketches
    /// merge), and stores the batch's `origins` (the WAL spans it accounts
    /// for, under `wal_instance`) in the same transaction where the database
    /// has transactions; otherwise after the rows.
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()>;

    /// The rollup origins stored by [`write_rollups`](Self::write_rollups)
    /// for WAL `instance`'s `segments` (any number of rows per segment, any
    /// order). Read at start, before the WAL is replayed.
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>>;

    /// Deletes the stored origins of WAL `instance` for segments below
    /// `below_segment` (deleted from the WAL, never reused); returns the rows
    /// removed (an estimate where the database deletes asynchronously).
    async fn prune_rollup_origins(&self, instance: u64, below_segment: u64) -> StorageResult<u64>;
}

/// Trace reads: by id, in batches, by search, and the service/operation
/// lists the search forms offer (Jaeger's `tracestore.Reader`).
#[async_trait]
pub trait TraceReader: Send + Sync + 'static {
    /// All spans of a trace, ordered by start time. `range` narrows the lookup
    /// when known; an unknown trace gives an empty vector.
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>>;

    /// [`get_trace`](Self::get_trace) and how many of the spans came from
    /// the cold tier (`storage::cold`), for the native API to mark them. A
    /// store without a cold tier has none.
    async fn get_trace_tiered(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<TieredTrace> {
        Ok(TieredTrace {
            spans: self.get_trace(trace_id, range).await?,
            cold_spans: 0,
        })
    }

    /// All spans of each trace in `trace_ids`, read in one round trip (one
    /// statement per 500 ids on SQLite), for a search page that shows whole
    /// traces. Each trace's spans are exactly what
    /// [`get_trace`](Self::get_trace) returns for it with the same `range`
    /// (ordered by start time, then span id). Traces come in the order of
    /// their first appearance in `trace_ids`, once each however often they
    /// are asked for; an id with no stored span (in `range`) is left out.
    /// More than [`MAX_TRACES_PER_READ`](super::MAX_TRACES_PER_READ) ids is
    /// [`StorageError::InvalidQuery`](super::StorageError::InvalidQuery). No default implementation: a wrapper
    /// that fell back to one `get_trace` per id would silently lose the
    /// single round trip, so every store spells out how it reads a batch.
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>>;

    /// Searches traces, newest first, with cursor pagination.
    async fn search(&self, query: &TraceQuery) -> StorageResult<SearchPage>;

    /// Services that have spans in the window, sorted.
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>>;

    /// Operations of a service in the window, sorted.
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>>;
}

/// Aggregate reads over rollups and span durations (Jaeger's
/// `depstore.Reader`, plus latency and rates).
#[async_trait]
pub trait AnalyticsReader: Send + Sync + 'static {
    /// Service-graph edges over the window (from rollups).
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>>;

    /// Latency/rate figures from rollups: one point per `step_ns` bucket, or one in total.
    async fn latency(&self, query: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>>;

    /// Exact duration percentiles (ns) from stored spans of `service`
    /// (and `operation`, and of one of `kinds` unless it is empty) that start
    /// in `range`; one value per quantile in `qs` (each in `[0, 1]`,
    /// nearest-rank). Empty when no span matches.
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>>;
}

/// Deleting old data: by age (`storage::retention`, on a timer) and by size
/// (`storage::budget`: the store's size budget and a full disk).
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Deletes spans and rollups that started before `cutoff_ns`.
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport>;

    /// The store's size on disk (for a database server its tables' size on
    /// the server, without a directory), or `None` for a store that does not
    /// account for it (the null sink); such a store is bounded by age only.
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        Ok(None)
    }

    /// Tells the store its size budget once it is known (an embedded store
    /// sizes its own journal from it). The default ignores it.
    fn set_disk_budget(&self, _bytes: u64) {}

    /// Deletes about `bytes` of the oldest data, oldest first: every span
    /// (and rollup minute) before a cutoff chosen so that roughly that much
    /// goes. With `give_back`, the freed space is returned to the file system
    /// (a full disk); otherwise later writes reuse it inside the store.
    async fn evict_oldest(&self, _bytes: u64, _give_back: bool) -> StorageResult<EvictionReport> {
        Err(StorageError::Backend(
            "this sink has no size-bounded retention".into(),
        ))
    }

    /// The cutoff [`evict_oldest`](Self::evict_oldest) would delete before
    /// for `bytes` now, without deleting anything (`None`: nothing to evict,
    /// or a store that cannot tell). With a cold tier the spans before it
    /// are copied cold first, then [`evict_before`](Self::evict_before) runs.
    async fn eviction_cutoff(&self, _bytes: u64, _give_back: bool) -> StorageResult<Option<u64>> {
        Ok(None)
    }

    /// [`evict_oldest`](Self::evict_oldest) with the cutoff given: deletes
    /// every span (and rollup minute) before `cutoff_ns`, and with
    /// `give_back` returns the space to the file system.
    async fn evict_before(
        &self,
        _cutoff_ns: u64,
        _give_back: bool,
    ) -> StorageResult<EvictionReport> {
        Err(StorageError::Backend(
            "this sink has no size-bounded retention".into(),
        ))
    }

    /// The cutoff a tiering pass moves spans before, given the age cutoff
    /// `cutoff_ns` (`now - cold.hot_days`). A sink that deletes whole
    /// partitions cheaply and single rows dearly (PostgreSQL and ClickHouse,
    /// by UTC day) rounds it down to a partition boundary, so that the hot
    /// delete after the copy only drops partitions; its spans then stay hot
    /// up to one partition longer. The default keeps it.
    fn tier_cutoff(&self, cutoff_ns: u64) -> u64 {
        cutoff_ns
    }

    /// Up to `limit` spans that started before `cutoff_ns`, after `after`
    /// (the previous page's `next`), each span once over all pages: what the
    /// cold tier's tiering task copies out before the hot delete
    /// (`storage::cold`). SQLite returns them oldest first; PostgreSQL and
    /// ClickHouse a day at a time, oldest day first, in trace-id order
    /// within it (a page may be short, even empty, while `next` is set). A
    /// sink that cannot page its spans this way has no cold tier.
    async fn export_before(
        &self,
        _cutoff_ns: u64,
        _after: Option<ExportCursor>,
        _limit: usize,
    ) -> StorageResult<ExportPage> {
        Err(StorageError::Backend(
            "this sink cannot move spans to the cold tier".into(),
        ))
    }
}

/// Both readers: what the query layer holds.
pub trait SpanReader: TraceReader + AnalyticsReader {}

impl<T: TraceReader + AnalyticsReader + ?Sized> SpanReader for T {}

/// One collector's adjusted root-span counts for one adaptive-sampling
/// period (`[sampling_api.adaptive] source = "store"`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SamplingPeriodCounts {
    /// Start of the period, ns since the epoch (a multiple of the period).
    pub period_start_ns: u64,
    /// Length of the period in seconds (`interval_secs`); collectors with a
    /// different period never mix their rows.
    pub period_secs: u32,
    /// Which collector counted them (random per process, so a retried
    /// write is stored once and a restart never collides with itself).
    pub collector: String,
    /// `(service, operation, adjusted count × 1000)`: integers, so that the
    /// store's sums are exact and the same whatever order it adds them in.
    pub counts: Vec<(String, String, u64)>,
}

/// The sum over every collector of one (period, service, operation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SamplingCountRow {
    /// Start of the period, ns since the epoch.
    pub period_start_ns: u64,
    /// Service name.
    pub service: String,
    /// Root span name.
    pub operation: String,
    /// Adjusted count × 1000, summed over collectors.
    pub count_milli: u64,
}

/// Adaptive sampling's shared counts. A sink without them (the null sink, a
/// router's forwarder) keeps the defaults, which refuse.
#[async_trait]
pub trait SamplingCounts: Send + Sync + 'static {
    /// Stores one collector's counts for one period; storing the same
    /// (period, collector, service, operation) again changes nothing.
    async fn write_sampling_counts(&self, _counts: &SamplingPeriodCounts) -> StorageResult<()> {
        Err(StorageError::Backend(
            "this sink does not store adaptive sampling counts".into(),
        ))
    }

    /// Every collector's counts summed per (period, service, operation), for
    /// periods of `period_secs` starting in `[from_ns, to_ns)`, sorted.
    async fn read_sampling_counts(
        &self,
        _period_secs: u32,
        _from_ns: u64,
        _to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        Err(StorageError::Backend(
            "this sink does not store adaptive sampling counts".into(),
        ))
    }

    /// Deletes counts of periods starting before `before_ns`; returns the
    /// rows removed (0 where age retention drops them instead).
    async fn prune_sampling_counts(&self, _before_ns: u64) -> StorageResult<u64> {
        Ok(0)
    }
}

/// A whole sink: all five roles. One implementation per database; all pass
/// the shared conformance suite (`tests/conformance`).
pub trait SpanStore: SpanWriter + SpanReader + Retention + SamplingCounts {}

impl<T: SpanWriter + TraceReader + AnalyticsReader + Retention + SamplingCounts + ?Sized> SpanStore
    for T
{
}
