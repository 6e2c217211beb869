//! The analytics reader: dependencies, latency series and exact percentiles.

use async_trait::async_trait;

use super::{esc, from_i64, map_err, refs, to_i64, unesc, Params, PostgresStore};
use crate::model::SpanKind;
use crate::storage::rollup_math;
use crate::storage::{
    AnalyticsReader, DependencyEdge, LatencyPoint, LatencyQuery, StorageResult, TimeRange,
};

#[async_trait]
impl AnalyticsReader for PostgresStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        if range.end_ns <= range.start_ns {
            return Ok(Vec::new());
        }
        let (lo, hi) = rollup_math::minute_bounds(range);
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT caller, callee, calls, errors, sketch FROM ft_edge_rollups \
                 WHERE minute_ns >= $1 AND minute_ns < $2",
                &[&to_i64(lo), &to_i64(hi)],
            )
            .await
            .map_err(map_err)?;
        let mut merged = Vec::with_capacity(rows.len());
        for r in &rows {
            merged.push((
                unesc(r.get(0)),
                unesc(r.get(1)),
                from_i64(r.get(2)),
                from_i64(r.get(3)),
                rollup_math::decode_sketch(r.get::<_, &[u8]>(4))?,
            ));
        }
        Ok(rollup_math::merge_edges(merged))
    }
    async fn latency(&self, q: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        if q.range.end_ns <= q.range.start_ns {
            return Ok(Vec::new());
        }
        let step = rollup_math::latency_step(q, self.opts.max_latency_points)?;
        let (lo, hi) = rollup_math::minute_bounds(q.range);
        let svc = esc(&q.service).into_owned();
        let mut params: Params = vec![Box::new(svc), Box::new(to_i64(lo)), Box::new(to_i64(hi))];
        let mut sql = String::from(
            "SELECT minute_ns, count, errors, sketch FROM ft_op_rollups \
             WHERE service = $1 AND minute_ns >= $2 AND minute_ns < $3",
        );
        if let Some(op) = &q.operation {
            params.push(Box::new(esc(op).into_owned()));
            sql.push_str(" AND operation = $4");
        }
        if !q.kinds.is_empty() {
            let mut marks = Vec::with_capacity(q.kinds.len());
            for k in &q.kinds {
                params.push(Box::new(*k as i16));
                marks.push(format!("${}", params.len()));
            }
            sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
        }
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(&sql, &refs(&params))
            .await
            .map_err(map_err)?;
        let mut data = Vec::with_capacity(rows.len());
        for r in &rows {
            data.push((
                from_i64(r.get(0)),
                from_i64(r.get(1)),
                from_i64(r.get(2)),
                rollup_math::decode_sketch(r.get::<_, &[u8]>(3))?,
            ));
        }
        Ok(rollup_math::latency_points(q, step, data))
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        rollup_math::check_quantiles(qs)?;
        if qs.is_empty() {
            return Ok(Vec::new());
        }
        // percentile_disc picks the ceil(q*n)-th value (at least the first):
        // exactly the nearest rank.
        let mut params: Params = vec![
            Box::new(esc(service).into_owned()),
            Box::new(to_i64(range.start_ns)),
            Box::new(to_i64(range.end_ns)),
            Box::new(qs.to_vec()),
        ];
        let mut sql = String::from(
            "SELECT COUNT(*), percentile_disc($4::float8[]) WITHIN GROUP (ORDER BY duration_ns) \
             FROM ft_spans WHERE service = $1 AND start_ns >= $2 AND start_ns < $3",
        );
        if let Some(op) = operation {
            params.push(Box::new(esc(op).into_owned()));
            sql.push_str(" AND name = $5");
        }
        if !kinds.is_empty() {
            let mut marks = Vec::with_capacity(kinds.len());
            for k in kinds {
                params.push(Box::new(*k as i16));
                marks.push(format!("${}", params.len()));
            }
            sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
        }
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_one(&sql, &refs(&params))
            .await
            .map_err(map_err)?;
        let n: i64 = row.get(0);
        if n == 0 {
            return Ok(Vec::new());
        }
        let values: Vec<i64> = row.get(1);
        Ok(values.into_iter().map(from_i64).collect())
    }
}
