//! [`TieredStore`]: the hot store and the cold tier behind one set of
//! storage roles. Writes, analytics and size eviction go to the hot store;
//! trace reads and searches fall through to the cold files for the time
//! they cover, and a trace with spans in both tiers is merged (one copy of
//! each span id).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;

use super::store::{span_matches, ColdStore};
use crate::model::{Span, SpanKind, TraceId};
use crate::rollup::{RollupBatch, RollupOrigin};
use crate::storage::sink_common::{self as common, SummaryRow};
use crate::storage::{
    AnalyticsReader, DependencyEdge, DiskUsage, EvictionReport, ExportCursor, ExportPage,
    LatencyPoint, LatencyQuery, Operation, Retention, RetentionReport, SamplingCountRow,
    SamplingCounts, SamplingPeriodCounts, SearchPage, SpanStore, SpanWriter, StorageError,
    StorageResult, TieredTrace, TimeRange, TraceQuery, TraceReader, TraceSpans, TraceSummary,
};

/// Marks a search cursor that continues in the cold tier (a hot cursor is
/// the sinks' 48 hex digits; `c` alone = the cold tier from its newest).
const COLD_CURSOR: char = 'c';

/// A hot store with a cold tier under it.
pub struct TieredStore {
    hot: Arc<dyn SpanStore>,
    cold: Arc<ColdStore>,
}

impl TieredStore {
    /// Puts `cold` under `hot`.
    pub fn new(hot: Arc<dyn SpanStore>, cold: Arc<ColdStore>) -> Self {
        TieredStore { hot, cold }
    }

    /// The cold tier.
    pub fn cold(&self) -> &Arc<ColdStore> {
        &self.cold
    }

    /// The hot store.
    pub fn hot(&self) -> &Arc<dyn SpanStore> {
        &self.hot
    }

    /// Spans of `ids` from both tiers, grouped per trace in the order of
    /// `ids`, with the number of distinct cold span ids per trace.
    async fn merged(
        &self,
        ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<(TraceId, Vec<Span>, u64)>> {
        let order = common::distinct_trace_ids(ids)?;
        let hot = self.hot.get_traces(&order, range).await?;
        let (cold, _) = self.cold.spans_of(&order, range).await?;
        let mut cold_ids: std::collections::HashMap<TraceId, BTreeSet<[u8; 8]>> =
            std::collections::HashMap::new();
        for s in &cold {
            cold_ids.entry(s.trace_id).or_default().insert(s.span_id);
        }
        let mut rows: Vec<(TraceId, Span)> = Vec::new();
        for (id, spans) in hot {
            rows.extend(spans.into_iter().map(|s| (id, s)));
        }
        rows.extend(cold.into_iter().map(|s| (s.trace_id, s)));
        Ok(common::group_traces(&order, rows)
            .into_iter()
            .map(|(id, spans)| {
                let n = cold_ids.get(&id).map_or(0, |s| s.len() as u64);
                (id, spans, n)
            })
            .collect())
    }

    /// Of `ids`, the traces with a span in the hot store matching `q` in
    /// `hot_range`: the hot phase of the search lists those.
    async fn listed_hot(
        &self,
        ids: &[TraceId],
        q: &TraceQuery,
        hot_range: TimeRange,
    ) -> StorageResult<HashSet<TraceId>> {
        if ids.is_empty() || hot_range.start_ns >= hot_range.end_ns {
            return Ok(HashSet::new());
        }
        let hq = TraceQuery {
            range: hot_range,
            ..q.clone()
        };
        Ok(self
            .hot
            .get_traces(ids, Some(hot_range))
            .await?
            .into_iter()
            .filter(|(_, spans)| spans.iter().any(|s| span_matches(s, &hq)))
            .map(|(id, _)| id)
            .collect())
    }

    /// The part of `range` the cold tier covers (`None` if none).
    fn cold_part(&self, range: TimeRange) -> Option<TimeRange> {
        let end = range.end_ns.min(self.cold.covered_until());
        (range.start_ns < end).then_some(TimeRange {
            start_ns: range.start_ns,
            end_ns: end,
        })
    }

    /// The summaries of `ids` from both tiers.
    async fn summaries(&self, ids: &[TraceId]) -> StorageResult<Vec<TraceSummary>> {
        let merged = self.merged(ids, None).await?;
        let mut cold_counts = std::collections::HashMap::new();
        let mut rows = Vec::new();
        for (id, spans, n) in merged {
            cold_counts.insert(id, n);
            rows.extend(spans.into_iter().map(|s| SummaryRow {
                trace_id: s.trace_id,
                span_id: s.span_id,
                is_root: s.parent_span_id.is_none(),
                service: s.service_name.into(),
                name: s.name.into(),
                start_ns: s.start_ns,
                end_ns: s.end_ns,
                status_code: s.status_code as u8,
            }));
        }
        let mut out = common::summarize(ids, rows);
        for t in &mut out {
            t.cold_spans = cold_counts.get(&t.trace_id).copied().unwrap_or(0);
        }
        Ok(out)
    }
}

#[async_trait]
impl SpanWriter for TieredStore {
    fn name(&self) -> &'static str {
        self.hot.name()
    }
    fn ready(&self) -> Result<(), String> {
        self.hot.ready()
    }
    async fn ping(&self) -> StorageResult<()> {
        self.hot.ping().await
    }
    /// To the hot store; while a tiering pass runs, spans older than its
    /// cutoff go to the cold tier instead (its hot delete would remove them
    /// uncopied; see [`super::fence::Fence`]).
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        let (_guard, cutoff) = self.cold.fence.enter().await;
        if spans.iter().all(|s| s.start_ns >= cutoff) {
            return self.hot.write_spans(spans).await;
        }
        let (late, fresh): (Vec<Span>, Vec<Span>) =
            spans.iter().cloned().partition(|s| s.start_ns < cutoff);
        let n = late.len() as u64;
        let kept = super::tiering::keep(self.hot.as_ref(), self.cold.config(), late).await?;
        let stats = &self.cold.stats;
        stats.late_spans.fetch_add(n, Relaxed);
        stats
            .spans_not_kept
            .fetch_add(n - kept.len() as u64, Relaxed);
        if !kept.is_empty() {
            self.cold.write(kept).await?;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        self.hot.write_spans(&fresh).await
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        self.hot.write_rollups(rollups).await
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        self.hot.rollup_origins(instance, segments).await
    }
    async fn prune_rollup_origins(&self, instance: u64, below_segment: u64) -> StorageResult<u64> {
        self.hot.prune_rollup_origins(instance, below_segment).await
    }
}

#[async_trait]
impl TraceReader for TieredStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        Ok(self.get_trace_tiered(trace_id, range).await?.spans)
    }

    async fn get_trace_tiered(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<TieredTrace> {
        let (spans, cold_spans) = self
            .merged(&[trace_id], range)
            .await?
            .into_iter()
            .next()
            .map(|(_, s, n)| (s, n))
            .unwrap_or_default();
        Ok(TieredTrace { spans, cold_spans })
    }

    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        Ok(self
            .merged(trace_ids, range)
            .await?
            .into_iter()
            .map(|(id, s, _)| (id, s))
            .collect())
    }

    /// Hot first, then cold: the hot store answers for `[covered, end)`
    /// (where `covered` is one past the newest cold span), the cold tier for
    /// `[start, covered)`; a cold-phase trace that also has a matching span
    /// in the hot part was already listed there and is left out. A cursor
    /// starting with `c` continues in the cold tier.
    async fn search(&self, q: &TraceQuery) -> StorageResult<SearchPage> {
        let covered = self.cold.covered_until();
        let cold_cursor = match q.cursor.as_deref() {
            Some(c) if c.starts_with(COLD_CURSOR) => {
                let rest = &c[1..];
                Some(if rest.is_empty() {
                    None
                } else {
                    Some(common::decode_cursor(rest)?)
                })
            }
            _ => None,
        };
        if covered <= q.range.start_ns && cold_cursor.is_none() {
            return self.hot.search(q).await;
        }
        let hot_range = TimeRange {
            start_ns: q.range.start_ns.max(covered),
            end_ns: q.range.end_ns,
        };
        let mut traces = Vec::new();
        if cold_cursor.is_none() && hot_range.start_ns < hot_range.end_ns {
            let page = self
                .hot
                .search(&TraceQuery {
                    range: hot_range,
                    ..q.clone()
                })
                .await?;
            if page.next_cursor.is_some() {
                return Ok(page);
            }
            traces = page.traces;
        }
        let remaining = q.limit.saturating_sub(traces.len());
        if remaining == 0 {
            return Ok(SearchPage {
                traces,
                next_cursor: Some(COLD_CURSOR.to_string()),
            });
        }
        let cq = TraceQuery {
            range: TimeRange {
                start_ns: q.range.start_ns,
                end_ns: q.range.end_ns.min(covered),
            },
            cursor: None,
            ..q.clone()
        };
        let (keys, more) = self
            .cold
            .search(&cq, cold_cursor.flatten(), remaining)
            .await?;
        let next_cursor = if more {
            keys.last()
                .map(|(id, s)| format!("{COLD_CURSOR}{}", common::encode_cursor(*s, id)))
        } else {
            None
        };
        let ids: Vec<TraceId> = keys.iter().map(|(id, _)| *id).collect();
        let listed_hot = self.listed_hot(&ids, q, hot_range).await?;
        let ids: Vec<TraceId> = ids
            .into_iter()
            .filter(|id| !listed_hot.contains(id))
            .collect();
        traces.extend(self.summaries(&ids).await?);
        Ok(SearchPage {
            traces,
            next_cursor,
        })
    }

    /// The hot store's services, and for the part of `range` the cold tier
    /// covers, those of its files.
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        let mut out: BTreeSet<String> = self.hot.services(range).await?.into_iter().collect();
        if let Some(cr) = self.cold_part(range) {
            out.extend(self.cold.operations(cr).await?.into_iter().map(|o| o.0));
        }
        Ok(out.into_iter().collect())
    }
    /// As [`services`](Self::services), the operations of `service`.
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        let mut out: BTreeSet<Operation> = self
            .hot
            .operations(service, range)
            .await?
            .into_iter()
            .collect();
        if let Some(cr) = self.cold_part(range) {
            out.extend(
                self.cold
                    .operations(cr)
                    .await?
                    .into_iter()
                    .filter(|o| o.0 == service)
                    .map(|(_, name, kind)| Operation {
                        name,
                        kind: SpanKind::from_i32(kind),
                    }),
            );
        }
        Ok(out.into_iter().collect())
    }
}

impl TieredStore {
    /// Analytics come from the hot store only: its rollups (dependency
    /// edges, rates, latency sketches) and, for exact percentiles, its spans
    /// are deleted with the spans that move cold, and the cold files keep
    /// spans only. A range reaching before what the hot store still holds
    /// (one past the newest cold span) would be answered from part of its
    /// data, so it is refused with the first instant that is covered.
    fn analytics_covered(&self, range: TimeRange, what: &str) -> StorageResult<()> {
        let from = self.cold.covered_until();
        if range.start_ns >= from {
            return Ok(());
        }
        let secs = from.div_ceil(1_000_000_000);
        let (y, m, d) = common::civil_from_days((secs / 86_400) as i64);
        let t = secs % 86_400;
        Err(StorageError::InvalidQuery(format!(
            "{what} is not available before {y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z: older \
             spans are in the cold tier, which serves traces by id and search only; \
             dependency graphs, rates and latency are kept for cold.hot_days ({} days) — \
             start the range at or after that instant",
            t / 3600,
            t % 3600 / 60,
            t % 60,
            self.cold.config().hot_days
        )))
    }
}

#[async_trait]
impl AnalyticsReader for TieredStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.analytics_covered(range, "the dependency graph")?;
        self.hot.dependencies(range).await
    }
    async fn latency(&self, query: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        self.analytics_covered(query.range, "latency and rates")?;
        self.hot.latency(query).await
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        self.analytics_covered(range, "exact latency percentiles")?;
        self.hot
            .exact_percentiles(service, operation, kinds, range, qs)
            .await
    }
}

#[async_trait]
impl Retention for TieredStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        self.hot.apply_retention(cutoff_ns).await
    }
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        self.hot.disk_usage().await
    }
    fn set_disk_budget(&self, bytes: u64) {
        self.hot.set_disk_budget(bytes)
    }
    /// Moves the oldest spans to the cold tier, then deletes them hot
    /// ([`super::tiering::evict_moving`]); deletes them uncopied when the
    /// copy cannot be made, so collection always continues.
    async fn evict_oldest(&self, bytes: u64, give_back: bool) -> StorageResult<EvictionReport> {
        super::tiering::evict_moving(self.hot.as_ref(), &self.cold, bytes, give_back).await
    }
    async fn eviction_cutoff(&self, bytes: u64, give_back: bool) -> StorageResult<Option<u64>> {
        self.hot.eviction_cutoff(bytes, give_back).await
    }
    async fn evict_before(&self, cutoff_ns: u64, give_back: bool) -> StorageResult<EvictionReport> {
        self.hot.evict_before(cutoff_ns, give_back).await
    }
    fn tier_cutoff(&self, cutoff_ns: u64) -> u64 {
        self.hot.tier_cutoff(cutoff_ns)
    }
    async fn export_before(
        &self,
        cutoff_ns: u64,
        after: Option<ExportCursor>,
        limit: usize,
    ) -> StorageResult<ExportPage> {
        self.hot.export_before(cutoff_ns, after, limit).await
    }
}

#[async_trait]
impl SamplingCounts for TieredStore {
    async fn write_sampling_counts(&self, counts: &SamplingPeriodCounts) -> StorageResult<()> {
        self.hot.write_sampling_counts(counts).await
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        self.hot
            .read_sampling_counts(period_secs, from_ns, to_ns)
            .await
    }
    async fn prune_sampling_counts(&self, before_ns: u64) -> StorageResult<u64> {
        self.hot.prune_sampling_counts(before_ns).await
    }
}
