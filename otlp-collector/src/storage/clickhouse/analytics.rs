//! The analytics reader: dependencies, latency series and exact percentiles.

use async_trait::async_trait;

use super::connection::map_err;
use super::read::kinds_cond;
use super::{ClickHouseStore, EdgeRow, LatencyRow};
use crate::model::SpanKind;
use crate::storage::rollup_math;
use crate::storage::{
    AnalyticsReader, DependencyEdge, LatencyPoint, LatencyQuery, StorageResult, TimeRange,
};

#[async_trait]
impl AnalyticsReader for ClickHouseStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.failover(move || async move {
            if range.end_ns <= range.start_ns {
                return Ok(Vec::new());
            }
            let (lo, hi) = rollup_math::minute_bounds(range);
            let rows = self
                .query(
                    "SELECT caller, callee, calls, errors, sketch FROM ft_edge_rollups \
                     WHERE minute_ns >= ? AND minute_ns < ?",
                )
                .bind(lo)
                .bind(hi)
                .fetch_all::<EdgeRow>()
                .await
                .map_err(map_err)?;
            let mut merged = Vec::with_capacity(rows.len());
            for r in rows {
                let sketch = rollup_math::decode_sketch(&r.sketch)?;
                merged.push((r.caller, r.callee, r.calls, r.errors, sketch));
            }
            Ok(rollup_math::merge_edges(merged))
        })
        .await
    }
    async fn latency(&self, q: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        self.failover(move || async move {
            if q.range.end_ns <= q.range.start_ns {
                return Ok(Vec::new());
            }
            let step = rollup_math::latency_step(q, self.opts.max_latency_points)?;
            let (lo, hi) = rollup_math::minute_bounds(q.range);
            let op = if q.operation.is_some() {
                " AND operation = ?"
            } else {
                ""
            };
            let kinds = kinds_cond(&q.kinds);
            let mut query = self
                .query(&format!(
                    "SELECT minute_ns, count, errors, sketch FROM ft_op_rollups \
                     WHERE service = ?{op} AND minute_ns >= ? AND minute_ns < ?{kinds}"
                ))
                .bind(q.service.as_str());
            if let Some(o) = &q.operation {
                query = query.bind(o.as_str());
            }
            query = query.bind(lo).bind(hi);
            for k in &q.kinds {
                query = query.bind(*k as u8);
            }
            let rows = query.fetch_all::<LatencyRow>().await.map_err(map_err)?;
            let mut data = Vec::with_capacity(rows.len());
            for r in rows {
                data.push((
                    r.minute_ns,
                    r.count,
                    r.errors,
                    rollup_math::decode_sketch(&r.sketch)?,
                ));
            }
            Ok(rollup_math::latency_points(q, step, data))
        })
        .await
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        self.failover(move || async move {
            rollup_math::check_quantiles(qs)?;
            if qs.is_empty() {
                return Ok(Vec::new());
            }
            let n = self
                .span_filter(
                    "SELECT count() FROM (SELECT 1",
                    service,
                    operation,
                    kinds,
                    range,
                    ")",
                )
                .fetch_one::<u64>()
                .await
                .map_err(map_err)?;
            if n == 0 {
                return Ok(Vec::new());
            }
            // Ranks are computed here, in the same floating point as the other
            // sinks, then picked from the sorted durations in one pass.
            let ranks: Vec<u64> = qs
                .iter()
                .map(|q| rollup_math::nearest_rank(*q, n))
                .collect();
            let op = if operation.is_some() {
                " AND name = ?"
            } else {
                ""
            };
            let kind = kinds_cond(kinds);
            let sql = format!(
                "SELECT arrayMap(r -> s[least(r, length(s))], ?) FROM \
                 (SELECT arraySort(groupArray(d)) AS s FROM (SELECT duration_ns AS d FROM ft_spans \
                  WHERE service = ?{op} AND start_ns >= ? AND start_ns < ?{kind} LIMIT 1 BY trace_id, span_id))"
            );
            let mut query = self.query(&sql).bind(ranks).bind(service);
            if let Some(o) = operation {
                query = query.bind(o);
            }
            query = query.bind(range.start_ns).bind(range.end_ns);
            for k in kinds {
                query = query.bind(*k as u8);
            }
            let values = query.fetch_one::<Vec<u64>>().await.map_err(map_err)?;
            Ok(values)
        })
        .await
    }
}
