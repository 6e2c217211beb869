//! The trace reader: traces by id (one or batched), search (the shared
//! early-stopping windows over the time indexes), services and operations.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection};

use super::{from_i64, map_err, postings, to_i64, SqliteStore};
use crate::model::{Span, SpanKind, StatusCode, TraceId};
use crate::storage::sink_common as common;
use crate::storage::span_codec::decode_span;
use crate::storage::{
    Operation, SearchPage, StorageError, StorageResult, TimeRange, TraceQuery, TraceReader,
    TraceSpans, TraceSummary,
};

fn trace_id_from(v: Vec<u8>) -> StorageResult<TraceId> {
    TraceId::try_from(v.as_slice()).map_err(|_| {
        StorageError::Backend(format!(
            "stored trace id has {} bytes, expected 16",
            v.len()
        ))
    })
}

/// Searches with the shared early-stopping plan ([`common::SearchWindows`]):
/// a probe of the newest matching span starts, then windows of traces whose
/// start is at or after the window's lower bound.
pub(super) fn search_tx(conn: &Connection, q: &TraceQuery) -> StorageResult<SearchPage> {
    if q.limit == 0 || q.range.end_ns <= q.range.start_ns {
        return Ok(SearchPage::default());
    }
    let cursor = q.cursor.as_deref().map(common::decode_cursor).transpose()?;
    let (conds, args) = span_conditions(conn, q)?;
    let (ids, more) = common::search_windows_sync(
        q.range,
        cursor,
        q.limit,
        |top, n| probe_tx(conn, q, &conds, &args, top, n),
        |from, n| window_tx(conn, q, &conds, &args, from, cursor, n),
    )?;
    let mut traces = Vec::with_capacity(ids.len());
    for (id, _) in &ids {
        traces.push(summarize(conn, id)?);
    }
    Ok(common::search_page(&ids, more, traces))
}

/// The conditions a matching span `s` satisfies besides its start time, and
/// their bound values. An attribute condition's form is chosen from the
/// store's counts ([`postings::choose_lookup`]).
pub(super) fn span_conditions(
    conn: &Connection,
    q: &TraceQuery,
) -> StorageResult<(Vec<String>, Vec<rusqlite::types::Value>)> {
    let mut conds = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(svc) = &q.service {
        conds.push("s.service = ?".into());
        args.push(svc.clone().into());
    }
    if let Some(op) = &q.operation {
        conds.push("s.name = ?".into());
        args.push(op.clone().into());
    }
    if let Some(min) = q.min_duration_ns {
        conds.push("s.duration_ns >= ?".into());
        args.push(to_i64(min).into());
    }
    if let Some(max) = q.max_duration_ns {
        conds.push("s.duration_ns <= ?".into());
        args.push(to_i64(max).into());
    }
    if q.errors_only {
        // A literal, not a bound value: SQLite uses the partial error indexes
        // (`WHERE status_code = 2`, see `layout`) only when it sees it.
        conds.push(format!("s.status_code = {}", StatusCode::Error as i64));
    }
    for f in &q.attributes {
        let lookup = postings::choose_lookup(conn, f)?;
        // Every statement built on these conditions reads spans at or after
        // the range's start.
        let since = Some(to_i64(q.range.start_ns));
        let (cond, cond_args) = postings::attr_condition(f, "s.id", lookup, since)?;
        conds.push(cond);
        args.extend(cond_args);
    }
    Ok((conds, args))
}

/// The probe's statement: starts of the newest matching spans in
/// `[?, ?)`, newest first, `LIMIT ?`; the conditions' values are bound
/// between the time bounds and the limit.
pub(super) fn probe_sql(conds: &[String]) -> String {
    let mut sql =
        "SELECT s.start_ns FROM spans s WHERE s.start_ns >= ? AND s.start_ns < ?".to_string();
    for c in conds {
        sql.push_str(" AND ");
        sql.push_str(c);
    }
    sql.push_str(" ORDER BY s.start_ns DESC LIMIT ?");
    sql
}

/// Starts of the newest `n` matching spans in `[range start, top)`, newest
/// first (walks a time index backwards — per service, or of error spans
/// only, when the query names them — and stops after `n`).
fn probe_tx(
    conn: &Connection,
    q: &TraceQuery,
    conds: &[String],
    args: &[rusqlite::types::Value],
    top: u64,
    n: usize,
) -> StorageResult<Vec<u64>> {
    let mut all: Vec<rusqlite::types::Value> =
        vec![to_i64(q.range.start_ns).into(), to_i64(top).into()];
    all.extend(args.iter().cloned());
    all.push(to_i64(n as u64).into());
    let mut stmt = conn.prepare_cached(&probe_sql(conds)).map_err(map_err)?;
    let rows = stmt
        .query_map(params_from_iter(all.iter()), |r| r.get::<_, i64>(0))
        .map_err(map_err)?;
    rows.map(|r| r.map(from_i64).map_err(map_err)).collect()
}

/// A window's statement. Bound in order: the lower and upper start bounds,
/// the conditions' values, then the trace-start bound if `bounded`, the
/// cursor's start (twice) and trace id if `after_cursor`, and the limit.
pub(super) fn window_sql(conds: &[String], bounded: bool, after_cursor: bool) -> String {
    let mut sql = "SELECT trace_id, (SELECT MIN(sp.start_ns) FROM spans sp WHERE sp.trace_id = m.trace_id) AS tstart \
         FROM (SELECT DISTINCT s.trace_id FROM spans s WHERE s.start_ns >= ? AND s.start_ns < ?"
        .to_string();
    for c in conds {
        sql.push_str(" AND ");
        sql.push_str(c);
    }
    sql.push_str(") m WHERE 1");
    if bounded {
        sql.push_str(" AND tstart >= ?");
    }
    if after_cursor {
        sql.push_str(" AND (tstart < ? OR (tstart = ? AND trace_id < ?))");
    }
    sql.push_str(" ORDER BY tstart DESC, trace_id DESC LIMIT ?");
    sql
}

/// One search window: traces with a matching span starting in
/// `[max(from, range start), range end)` whose trace start is `>= from` (any
/// start when `from` is `None`) and sorts after the cursor, newest first, at
/// most `n`. Each candidate's start is one lookup by trace id.
fn window_tx(
    conn: &Connection,
    q: &TraceQuery,
    conds: &[String],
    args: &[rusqlite::types::Value],
    from: Option<u64>,
    cursor: Option<(u64, TraceId)>,
    n: usize,
) -> StorageResult<Vec<(TraceId, u64)>> {
    let lo = from.map_or(q.range.start_ns, |a| a.max(q.range.start_ns));
    let mut all: Vec<rusqlite::types::Value> =
        vec![to_i64(lo).into(), to_i64(q.range.end_ns).into()];
    all.extend(args.iter().cloned());
    if let Some(a) = from {
        all.push(to_i64(a).into());
    }
    if let Some((cs, cid)) = cursor {
        all.push(to_i64(cs).into());
        all.push(to_i64(cs).into());
        all.push(cid.to_vec().into());
    }
    all.push(to_i64(n as u64).into());
    let sql = window_sql(conds, from.is_some(), cursor.is_some());
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let rows = stmt
        .query_map(params_from_iter(all.iter()), |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(map_err)?;
    let mut ids = Vec::new();
    for row in rows {
        let (id, start) = row.map_err(map_err)?;
        ids.push((trace_id_from(id)?, from_i64(start)));
    }
    Ok(ids)
}

/// Summary over every stored span of the trace (not only the matching ones).
fn summarize(conn: &Connection, id: &TraceId) -> StorageResult<TraceSummary> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT parent_span_id IS NULL, service, name, start_ns, end_ns, status_code FROM spans \
             WHERE trace_id = ?1 ORDER BY start_ns, span_id",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![&id[..]], |r| {
            Ok((
                r.get::<_, bool>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(map_err)?;
    let mut first: Option<(String, String)> = None;
    let mut root: Option<(String, String)> = None;
    let (mut start, mut end, mut count, mut errors) = (u64::MAX, 0u64, 0u64, 0u64);
    let mut services = std::collections::BTreeSet::new();
    for row in rows {
        let (is_root, svc, name, s, e, status) = row.map_err(map_err)?;
        let (s, e) = (from_i64(s), from_i64(e));
        start = start.min(s);
        end = end.max(e);
        count += 1;
        if status == StatusCode::Error as i64 {
            errors += 1;
        }
        if first.is_none() {
            first = Some((svc.clone(), name.clone()));
        }
        if is_root && root.is_none() {
            root = Some((svc.clone(), name));
        }
        services.insert(svc);
    }
    let (root_service, root_operation) = root.or(first).unwrap_or_default();
    Ok(TraceSummary {
        trace_id: *id,
        root_service,
        root_operation,
        start_ns: if count == 0 { 0 } else { start },
        duration_ns: end.saturating_sub(if count == 0 { 0 } else { start }),
        span_count: count,
        services: services.into_iter().collect(),
        error_count: errors,
        cold_spans: 0,
    })
}

fn get_trace_tx(
    conn: &Connection,
    id: &TraceId,
    range: Option<TimeRange>,
) -> StorageResult<Vec<Span>> {
    let (lo, hi) = match range {
        Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
        None => (i64::MIN, i64::MAX),
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT data FROM spans WHERE trace_id = ?1 AND start_ns >= ?2 AND start_ns < ?3 ORDER BY start_ns, span_id",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![&id[..], lo, hi], |r| r.get::<_, Vec<u8>>(0))
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode_span(&row.map_err(map_err)?)?);
    }
    Ok(out)
}

/// Ids bound per `get_traces` statement: below SQLite's variable limit (999
/// before 3.32, 32,766 since) with room for the two time bounds.
const TRACE_IDS_PER_STATEMENT: usize = 500;

/// [`TraceReader::get_traces`]: one `trace_id IN (...)` statement per
/// [`TRACE_IDS_PER_STATEMENT`] distinct ids, each answered from the
/// `(trace_id, span_id)` index, all on one connection.
fn get_traces_tx(
    conn: &Connection,
    ids: &[TraceId],
    range: Option<TimeRange>,
) -> StorageResult<Vec<TraceSpans>> {
    let ids = common::distinct_trace_ids(ids)?;
    let (lo, hi) = match range {
        Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
        None => (i64::MIN, i64::MAX),
    };
    let mut spans = Vec::new();
    for chunk in ids.chunks(TRACE_IDS_PER_STATEMENT) {
        let marks = vec!["?"; chunk.len()].join(",");
        // Unary `+` keeps the planner off the `start_ns` index: the ids are
        // always the narrower condition. Not `prepare_cached`: every chunk
        // length is another statement, which would evict the hot ones.
        let mut stmt = conn
            .prepare(&format!(
                "SELECT trace_id, data FROM spans WHERE trace_id IN ({marks}) \
                 AND +start_ns >= ? AND +start_ns < ?"
            ))
            .map_err(map_err)?;
        let mut args: Vec<rusqlite::types::Value> = chunk
            .iter()
            .map(|id| rusqlite::types::Value::Blob(id.to_vec()))
            .collect();
        args.push(lo.into());
        args.push(hi.into());
        let rows = stmt
            .query_map(params_from_iter(args.iter()), |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(map_err)?;
        for row in rows {
            let (id, data) = row.map_err(map_err)?;
            spans.push((trace_id_from(id)?, decode_span(&data)?));
        }
    }
    Ok(common::group_traces(&ids, spans))
}

fn services_tx(conn: &Connection, range: TimeRange) -> StorageResult<Vec<String>> {
    // Loose index scan: one probe per distinct service instead of reading every
    // span in the window.
    let mut stmt = conn
        .prepare_cached(
            "WITH RECURSIVE svc(s) AS ( \
               SELECT MIN(service) FROM spans \
               UNION ALL \
               SELECT (SELECT MIN(service) FROM spans WHERE service > svc.s) FROM svc WHERE svc.s IS NOT NULL) \
             SELECT s FROM svc WHERE s IS NOT NULL AND EXISTS \
               (SELECT 1 FROM spans x WHERE x.service = svc.s AND x.start_ns >= ?1 AND x.start_ns < ?2)",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![to_i64(range.start_ns), to_i64(range.end_ns)], |r| {
            r.get::<_, String>(0)
        })
        .map_err(map_err)?;
    let mut out: Vec<String> = rows.collect::<Result<_, _>>().map_err(map_err)?;
    out.sort();
    Ok(out)
}

fn operations_tx(
    conn: &Connection,
    service: &str,
    range: TimeRange,
) -> StorageResult<Vec<Operation>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT name, kind FROM spans WHERE service = ?1 AND start_ns >= ?2 AND start_ns < ?3",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(
            params![service, to_i64(range.start_ns), to_i64(range.end_ns)],
            |r| {
                Ok(Operation {
                    name: r.get(0)?,
                    kind: SpanKind::from_i32(r.get::<_, i32>(1)?),
                })
            },
        )
        .map_err(map_err)?;
    let mut out: Vec<Operation> = rows.collect::<Result<_, _>>().map_err(map_err)?;
    out.sort();
    Ok(out)
}

#[async_trait]
impl TraceReader for SqliteStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        self.with_reader(move |c, _| get_trace_tx(c, &trace_id, range))
            .await
    }
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        let ids = trace_ids.to_vec();
        self.with_reader(move |c, _| get_traces_tx(c, &ids, range))
            .await
    }
    async fn search(&self, query: &TraceQuery) -> StorageResult<SearchPage> {
        let q = query.clone();
        self.with_reader(move |c, _| search_tx(c, &q)).await
    }
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        self.with_reader(move |c, _| services_tx(c, range)).await
    }
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        let service = service.to_string();
        self.with_reader(move |c, _| operations_tx(c, &service, range))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let c = common::encode_cursor(123, &[0xab; 16]);
        assert_eq!(
            common::decode_cursor(&c).expect("cursor"),
            (123, [0xab; 16])
        );
        for bad in [
            "",
            "zz",
            &c[..47],
            &format!("{c}0"),
            "é".repeat(24).as_str(),
        ] {
            assert!(
                matches!(
                    common::decode_cursor(bad),
                    Err(StorageError::InvalidQuery(_))
                ),
                "{bad}"
            );
        }
    }
}
