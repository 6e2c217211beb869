//! The query engine: validation of windows and limits, and the store calls
//! behind every API (each API module only translates parameters and shapes).

use crate::model::{SpanKind, TraceId};
use crate::storage::{
    DependencyEdge, LatencyPoint, LatencyQuery, Operation, SearchPage, StorageError, TimeRange,
    TraceQuery, TraceSummary, MAX_TRACES_PER_READ,
};

use super::params::{now_ns, ParamError};
use super::tree::TraceTree;
use super::QueryState;

/// Why a query failed; each API renders it in its own error shape.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter was missing or invalid (HTTP 400).
    #[error(transparent)]
    BadRequest(#[from] ParamError),
    /// The thing asked for does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The store failed (HTTP 503 when retryable, 400 for an invalid query, else 500).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl QueryError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            QueryError::BadRequest(_) => 400,
            QueryError::NotFound(_) => 404,
            QueryError::Storage(StorageError::InvalidQuery(_)) => 400,
            QueryError::Storage(StorageError::Unavailable(_)) => 503,
            QueryError::Storage(StorageError::Backend(_)) => 500,
        }
    }
}

/// The number of traces a Jaeger search returns when the request gives no
/// limit (`defaultQueryLimit` of Jaeger's v1 API, `defaultSearchDepth` of v3).
pub const JAEGER_DEFAULT_LIMIT: usize = 100;

/// The span kinds that are a service's requests: the spans where work enters
/// it. Internal and client spans are work it does to answer them, so counting
/// them would inflate the request rate (and dilute the error rate).
pub const ENTRY_KINDS: [SpanKind; 2] = [SpanKind::Server, SpanKind::Consumer];

/// The time range to read a search page's traces in: from the UTC day of the
/// earliest span start among the summaries, unbounded above; `None` for an
/// empty page.
///
/// A summary covers every span the trace had at search time, so every one of
/// them starts in the range, and the stores skip the day partitions before it
/// (PostgreSQL, ClickHouse): a trace-id probe otherwise visits every retained
/// day. The lower bound is floored to the day (the partition unit, so nothing
/// is lost) so that a span arriving between the search and the read, such as
/// a root span that ends and is exported last, is still shown unless it
/// started on an earlier day; no upper bound, because late spans start later.
pub fn search_read_range(traces: &[TraceSummary]) -> Option<TimeRange> {
    const DAY_NS: u64 = 86_400 * 1_000_000_000;
    let earliest = traces.iter().map(|t| t.start_ns).min()?;
    Some(TimeRange {
        start_ns: earliest - earliest % DAY_NS,
        end_ns: u64::MAX,
    })
}

/// Which spans a service-level figure (request rate, error rate, percentiles) counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateBasis {
    /// The service's `SERVER` and `CONSUMER` spans ([`ENTRY_KINDS`]).
    EntrySpans,
    /// Every span of the service: used only when it has no entry spans in the
    /// window (a batch job, a client-only service), where that is all there is.
    AllSpans,
}

impl RateBasis {
    /// `entry_spans` or `all_spans`, as the APIs report it.
    pub fn as_str(self) -> &'static str {
        match self {
            RateBasis::EntrySpans => "entry_spans",
            RateBasis::AllSpans => "all_spans",
        }
    }

    /// The span kinds to ask the store for (empty = every kind).
    pub fn kinds(self) -> Vec<SpanKind> {
        match self {
            RateBasis::EntrySpans => ENTRY_KINDS.to_vec(),
            RateBasis::AllSpans => Vec::new(),
        }
    }
}

/// Request rate and error rate of one service over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRate {
    /// Service.
    pub service: String,
    /// Which spans were counted.
    pub basis: RateBasis,
    /// Requests (spans) counted in the rollups.
    pub count: u64,
    /// Of which errors.
    pub errors: u64,
    /// Requests per second over the window.
    pub rate_per_s: f64,
    /// Errors / requests (0 when there were none).
    pub error_rate: f64,
}

impl QueryState {
    /// Checks a window: start before end, no wider than the maximum.
    pub fn check_window(&self, start_ns: u64, end_ns: u64) -> Result<TimeRange, ParamError> {
        if start_ns >= end_ns {
            return Err(ParamError::new(
                "invalid time range: start must be before end",
            ));
        }
        let max = self.limits.max_window_ns;
        if end_ns - start_ns > max {
            return Err(ParamError::new(format!(
                "time range too wide: {}s exceeds the maximum window of {}s; narrow start/end",
                (end_ns - start_ns) / 1_000_000_000,
                max / 1_000_000_000
            )));
        }
        Ok(TimeRange { start_ns, end_ns })
    }

    /// A window for the Jaeger-compatible APIs: start before end, and a window
    /// wider than the maximum narrowed to its newest part instead of refused.
    /// Jaeger has no such maximum and its UI offers two-week lookbacks; results
    /// are newest first, so the newest part holds what a limited page shows.
    pub fn jaeger_window(&self, start_ns: u64, end_ns: u64) -> Result<TimeRange, ParamError> {
        let start_ns = start_ns.max(end_ns.saturating_sub(self.limits.max_window_ns));
        self.check_window(start_ns, end_ns)
    }

    /// Jaeger's default search limit (100), within this server's maximum.
    pub fn jaeger_default_limit(&self) -> usize {
        JAEGER_DEFAULT_LIMIT.min(self.limits.max_limit)
    }

    /// A window from optional bounds: a missing end means now, a missing start
    /// means `lookback_ns` before the end.
    pub fn window_or_lookback(
        &self,
        start_ns: Option<u64>,
        end_ns: Option<u64>,
        lookback_ns: u64,
    ) -> Result<TimeRange, ParamError> {
        let end = end_ns.unwrap_or_else(|| now_ns().saturating_add(60_000_000_000));
        let start = start_ns.unwrap_or_else(|| end.saturating_sub(lookback_ns));
        self.check_window(start, end)
    }

    /// A trace assembled into a tree (skew-adjusted unless `raw`); `None` when
    /// the store has no span of it. A trace whose root has not arrived yet is
    /// returned with `partial` set.
    pub async fn trace(
        &self,
        trace_id: TraceId,
        raw: bool,
    ) -> Result<Option<TraceTree>, QueryError> {
        let spans = self.store.get_trace(trace_id, None).await?;
        if spans.is_empty() {
            return Ok(None);
        }
        Ok(Some(TraceTree::build(spans, !raw)))
    }

    /// [`trace`](Self::trace) and how many of its spans came from the cold
    /// tier (the native API marks them).
    pub async fn trace_tiered(
        &self,
        trace_id: TraceId,
        raw: bool,
    ) -> Result<Option<(TraceTree, u64)>, QueryError> {
        let t = self.store.get_trace_tiered(trace_id, None).await?;
        if t.spans.is_empty() {
            return Ok(None);
        }
        Ok(Some((TraceTree::build(t.spans, !raw), t.cold_spans)))
    }

    /// Several traces assembled into trees (skew-adjusted unless `raw`), read
    /// with one store round trip per [`MAX_TRACES_PER_READ`] ids, in the order
    /// of `trace_ids`; unknown ids are left out and a repeated id gives one
    /// tree. `range` narrows the read as in [`TraceReader::get_traces`]
    /// (see [`search_read_range`] for a search page's).
    ///
    /// [`TraceReader::get_traces`]: crate::storage::TraceReader::get_traces
    pub async fn traces(
        &self,
        trace_ids: &[TraceId],
        raw: bool,
        range: Option<TimeRange>,
    ) -> Result<Vec<TraceTree>, QueryError> {
        let mut out = Vec::with_capacity(trace_ids.len());
        let mut seen = std::collections::HashSet::new();
        for chunk in trace_ids.chunks(MAX_TRACES_PER_READ) {
            for (id, spans) in self.store.get_traces(chunk, range).await? {
                // An id repeated across chunks is read twice but shown once.
                if seen.insert(id) {
                    out.push(TraceTree::build(spans, !raw));
                }
            }
        }
        Ok(out)
    }

    /// A search's page of traces as trees (skew-adjusted unless `raw`), in
    /// the search's order: the whole page (bounded by `max_limit`) read in
    /// one store round trip per [`MAX_TRACES_PER_READ`] ids, narrowed to
    /// [`search_read_range`]. The Jaeger v1 and v3 searches answer with it.
    pub async fn search_trees(
        &self,
        q: &TraceQuery,
        raw: bool,
    ) -> Result<Vec<TraceTree>, QueryError> {
        let page = self.search(q).await?;
        let ids: Vec<_> = page.traces.iter().map(|t| t.trace_id).collect();
        self.traces(&ids, raw, search_read_range(&page.traces))
            .await
    }

    /// Searches traces after validating the window and the limit.
    pub async fn search(&self, q: &TraceQuery) -> Result<SearchPage, QueryError> {
        self.check_window(q.range.start_ns, q.range.end_ns)?;
        if q.limit == 0 || q.limit > self.limits.max_limit {
            return Err(ParamError::new(format!(
                "invalid limit {}: expected an integer from 1 to {}",
                q.limit, self.limits.max_limit
            ))
            .into());
        }
        if let (Some(a), Some(b)) = (q.min_duration_ns, q.max_duration_ns) {
            if a > b {
                return Err(ParamError::new(
                    "invalid duration range: min duration is greater than max duration",
                )
                .into());
            }
        }
        Ok(self.store.search(q).await?)
    }

    /// Services with spans in the window.
    pub async fn services(&self, range: TimeRange) -> Result<Vec<String>, QueryError> {
        Ok(self.store.services(range).await?)
    }

    /// Operations of a service in the window.
    pub async fn operations(
        &self,
        service: &str,
        range: TimeRange,
    ) -> Result<Vec<Operation>, QueryError> {
        Ok(self.store.operations(service, range).await?)
    }

    /// Service-graph edges over the window (from rollups).
    pub async fn dependencies(&self, range: TimeRange) -> Result<Vec<DependencyEdge>, QueryError> {
        let mut edges = self.store.dependencies(range).await?;
        edges.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
        Ok(edges)
    }

    /// Latency/rate figures from rollups, one total or a series of `step_ns` buckets.
    pub async fn latency(&self, q: &LatencyQuery) -> Result<Vec<LatencyPoint>, QueryError> {
        self.check_window(q.range.start_ns, q.range.end_ns)?;
        if let Some(step) = q.step_ns {
            if step == 0 || step % crate::rollup::MINUTE_NS != 0 {
                return Err(ParamError::new(
                    "invalid step: expected a whole number of minutes, e.g. 1m or 5m",
                )
                .into());
            }
            let points = (q.range.end_ns - q.range.start_ns).div_ceil(step);
            if points > self.limits.max_series_points {
                return Err(ParamError::new(format!(
                    "step too small: {points} points exceed the maximum of {}; use a larger step",
                    self.limits.max_series_points
                ))
                .into());
            }
        }
        Ok(self.store.latency(q).await?)
    }

    /// Service-level latency/rate figures from rollups, counting the
    /// service's entry spans ([`ENTRY_KINDS`]), or every span when it has no
    /// entry span in the window; says which.
    pub async fn service_latency(
        &self,
        service: &str,
        range: TimeRange,
        step_ns: Option<u64>,
    ) -> Result<(Vec<LatencyPoint>, RateBasis), QueryError> {
        let points = self
            .service_latency_on(service, range, step_ns, RateBasis::EntrySpans)
            .await?;
        if points.iter().any(|p| p.count > 0) {
            return Ok((points, RateBasis::EntrySpans));
        }
        let points = self
            .service_latency_on(service, range, step_ns, RateBasis::AllSpans)
            .await?;
        Ok((points, RateBasis::AllSpans))
    }

    /// Service-level figures on a given basis (so a comparison period counts
    /// the same spans as the period it is compared with).
    pub async fn service_latency_on(
        &self,
        service: &str,
        range: TimeRange,
        step_ns: Option<u64>,
        basis: RateBasis,
    ) -> Result<Vec<LatencyPoint>, QueryError> {
        self.latency(&LatencyQuery {
            service: service.to_string(),
            operation: None,
            range,
            step_ns,
            kinds: basis.kinds(),
        })
        .await
    }

    /// Exact percentiles from stored spans, for windows up to
    /// [`super::QueryLimits::exact_percentiles_max_window_ns`], over spans of
    /// `kinds` (empty = every kind; a service-level figure passes its
    /// [`RateBasis::kinds`]).
    pub async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> Result<Vec<u64>, QueryError> {
        self.check_window(range.start_ns, range.end_ns)?;
        if range.end_ns - range.start_ns > self.limits.exact_percentiles_max_window_ns {
            return Err(ParamError::new(format!(
                "exact percentiles are limited to windows of {}s; narrow the range or drop exact=true to use rollups",
                self.limits.exact_percentiles_max_window_ns / 1_000_000_000
            ))
            .into());
        }
        Ok(self
            .store
            .exact_percentiles(service, operation, kinds, range, qs)
            .await?)
    }

    /// Request and error rate per service over the window (from rollups).
    pub async fn rates(&self, range: TimeRange) -> Result<Vec<ServiceRate>, QueryError> {
        self.check_window(range.start_ns, range.end_ns)?;
        let services = self.store.services(range).await?;
        let secs = (range.end_ns - range.start_ns) as f64 / 1e9;
        let mut out = Vec::with_capacity(services.len());
        for service in services {
            let (points, basis) = self.service_latency(&service, range, None).await?;
            let (count, errors) = points
                .iter()
                .fold((0, 0), |(c, e), p| (c + p.count, e + p.errors));
            out.push(ServiceRate {
                service,
                basis,
                count,
                errors,
                rate_per_s: count as f64 / secs,
                error_rate: if count == 0 {
                    0.0
                } else {
                    errors as f64 / count as f64
                },
            });
        }
        Ok(out)
    }
}
