//! The analytics reader: dependencies and latency from the minute rollups,
//! exact percentiles from the spans' covering indexes.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection};

use super::{from_i64, map_err, to_i64, SqliteConfig, SqliteStore};
use crate::model::SpanKind;
use crate::storage::rollup_math;
use crate::storage::{
    AnalyticsReader, DependencyEdge, LatencyPoint, LatencyQuery, StorageResult, TimeRange,
};

/// [`rollup_math::minute_bounds`] as SQLite integers.
fn minute_bounds(range: TimeRange) -> (i64, i64) {
    let (lo, hi) = rollup_math::minute_bounds(range);
    (to_i64(lo), to_i64(hi))
}

fn dependencies_tx(conn: &Connection, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
    let (lo, hi) = minute_bounds(range);
    let mut stmt = conn
        .prepare_cached("SELECT caller, callee, calls, errors, sketch FROM edge_rollups WHERE minute_ns >= ?1 AND minute_ns < ?2")
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![lo, hi], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })
        .map_err(map_err)?;
    let rows = rows
        .map(|row| {
            let (caller, callee, calls, errors, sketch) = row.map_err(map_err)?;
            let sketch = rollup_math::decode_sketch(&sketch)?;
            Ok((caller, callee, from_i64(calls), from_i64(errors), sketch))
        })
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(rollup_math::merge_edges(rows))
}

fn latency_tx(
    conn: &Connection,
    q: &LatencyQuery,
    config: &SqliteConfig,
) -> StorageResult<Vec<LatencyPoint>> {
    if q.range.end_ns <= q.range.start_ns {
        return Ok(Vec::new());
    }
    let (lo, hi) = minute_bounds(q.range);
    let step = rollup_math::latency_step(q, config.max_latency_points)?;
    let mut sql = String::from("SELECT minute_ns, count, errors, sketch FROM op_rollups WHERE service = ?1 AND minute_ns >= ?2 AND minute_ns < ?3");
    let mut args: Vec<rusqlite::types::Value> =
        vec![q.service.clone().into(), lo.into(), hi.into()];
    if let Some(op) = &q.operation {
        sql.push_str(" AND operation = ?4");
        args.push(op.clone().into());
    }
    if !q.kinds.is_empty() {
        let mut marks = Vec::with_capacity(q.kinds.len());
        for k in &q.kinds {
            args.push((*k as i64).into());
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
    }
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .map_err(map_err)?;
    let rows = rows
        .map(|row| {
            let (minute, count, errors, sketch) = row.map_err(map_err)?;
            let sketch = rollup_math::decode_sketch(&sketch)?;
            Ok((from_i64(minute), from_i64(count), from_i64(errors), sketch))
        })
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(rollup_math::latency_points(q, step, rows))
}

/// The statements of [`exact_percentiles_tx`] — the count of matching spans
/// and their durations in ascending order — and their bound values. Both are
/// answered from the `(service[, name], start_ns, duration_ns, kind)` index
/// alone, without reading span rows.
pub(super) fn exact_statements(
    service: &str,
    operation: Option<&str>,
    kinds: &[SpanKind],
    range: TimeRange,
) -> (String, String, Vec<rusqlite::types::Value>) {
    let mut where_ = String::from("service = ?1 AND start_ns >= ?2 AND start_ns < ?3");
    let mut args: Vec<rusqlite::types::Value> = vec![
        service.to_string().into(),
        to_i64(range.start_ns).into(),
        to_i64(range.end_ns).into(),
    ];
    if let Some(op) = operation {
        where_.push_str(" AND name = ?4");
        args.push(op.to_string().into());
    }
    if !kinds.is_empty() {
        let mut marks = Vec::with_capacity(kinds.len());
        for k in kinds {
            args.push((*k as i64).into());
            marks.push(format!("?{}", args.len()));
        }
        where_.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
    }
    (
        format!("SELECT COUNT(*) FROM spans WHERE {where_}"),
        format!("SELECT duration_ns FROM spans WHERE {where_} ORDER BY duration_ns"),
        args,
    )
}

pub(super) fn exact_percentiles_tx(
    conn: &Connection,
    service: &str,
    operation: Option<&str>,
    kinds: &[SpanKind],
    range: TimeRange,
    qs: &[f64],
) -> StorageResult<Vec<u64>> {
    rollup_math::check_quantiles(qs)?;
    let (count_sql, durations_sql, args) = exact_statements(service, operation, kinds, range);
    let n: i64 = conn
        .prepare_cached(&count_sql)
        .map_err(map_err)?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))
        .map_err(map_err)?;
    let n = from_i64(n);
    if n == 0 || qs.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<(u64, usize)> = qs
        .iter()
        .enumerate()
        .map(|(i, q)| (rollup_math::nearest_rank(*q, n), i))
        .collect();
    wanted.sort();
    let mut out = vec![0u64; qs.len()];
    // One sorted pass over the durations picks every rank; memory stays O(qs).
    let mut stmt = conn.prepare_cached(&durations_sql).map_err(map_err)?;
    let mut rows = stmt.query(params_from_iter(args.iter())).map_err(map_err)?;
    let mut rank = 0u64;
    let mut w = 0;
    while w < wanted.len() {
        let Some(row) = rows.next().map_err(map_err)? else {
            break;
        };
        rank += 1;
        let d = from_i64(row.get::<_, i64>(0).map_err(map_err)?);
        while w < wanted.len() && wanted[w].0 == rank {
            out[wanted[w].1] = d;
            w += 1;
        }
    }
    Ok(out)
}

#[async_trait]
impl AnalyticsReader for SqliteStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.with_reader(move |c, _| dependencies_tx(c, range))
            .await
    }
    async fn latency(&self, query: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        let q = query.clone();
        self.with_reader(move |c, cfg| latency_tx(c, &q, cfg)).await
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        let (service, operation, kinds, qs) = (
            service.to_string(),
            operation.map(str::to_string),
            kinds.to_vec(),
            qs.to_vec(),
        );
        self.with_reader(move |c, _| {
            exact_percentiles_tx(c, &service, operation.as_deref(), &kinds, range, &qs)
        })
        .await
    }
}
