//! The trace reader: traces by id, search (windowed over the day partitions'
//! covering indexes), services and operations.

use async_trait::async_trait;
use tokio_postgres::Transaction;

use super::{attr_json, esc, from_i64, map_err, refs, to_i64, unesc, Params, PostgresStore};
use crate::model::{Span, SpanKind, StatusCode, TraceId};
use crate::storage::sink_common::{self as common, SearchWindows, SummaryRow};
use crate::storage::span_codec::decode_span;
use crate::storage::{
    Operation, SearchPage, StorageError, StorageResult, TimeRange, TraceQuery, TraceReader,
    TraceSpans,
};

/// The conditions on a matching span besides its start time, with their
/// values appended to `params` (numbered after what `params` already holds).
/// `None` when no stored span can match (an unsearchable attribute value).
fn span_conditions(q: &TraceQuery, params: &mut Params) -> StorageResult<Option<Vec<String>>> {
    let mut conds = Vec::new();
    if let Some(svc) = &q.service {
        params.push(Box::new(esc(svc).into_owned()));
        conds.push(format!("service = ${}", params.len()));
    }
    if let Some(op) = &q.operation {
        params.push(Box::new(esc(op).into_owned()));
        conds.push(format!("name = ${}", params.len()));
    }
    if let Some(min) = q.min_duration_ns {
        params.push(Box::new(to_i64(min)));
        conds.push(format!("duration_ns >= ${}", params.len()));
    }
    if let Some(max) = q.max_duration_ns {
        params.push(Box::new(to_i64(max)));
        conds.push(format!("duration_ns <= ${}", params.len()));
    }
    if q.errors_only {
        conds.push(format!("status_code = {}", StatusCode::Error as i16));
    }
    for f in &q.attributes {
        common::check_filter(&f.key, &f.value)?;
        // A typed condition has one candidate value; a Jaeger text
        // condition one per type whose text equals it. Any of them matches.
        let mut alts = Vec::new();
        for value in f.candidates() {
            // An infinite double cannot be stored searchably, so it matches nothing.
            if let Some(el) = attr_json(&f.key, &value) {
                params.push(Box::new(serde_json::Value::Array(vec![el])));
                alts.push(format!("attributes @> ${}", params.len()));
            }
        }
        if alts.is_empty() {
            return Ok(None);
        }
        conds.push(format!("({})", alts.join(" OR ")));
    }
    Ok(Some(conds))
}

/// Starts of the newest `n` matching spans in `[range start, top)`, newest
/// first: a backward scan of the (service, start) indexes of the partitions
/// the bounds select, stopping after `n`.
async fn search_probe(
    client: &Transaction<'_>,
    q: &TraceQuery,
    top: u64,
    n: usize,
) -> StorageResult<Vec<u64>> {
    let mut params: Params = vec![Box::new(to_i64(q.range.start_ns)), Box::new(to_i64(top))];
    let mut conds = vec!["start_ns >= $1".to_string(), "start_ns < $2".to_string()];
    match span_conditions(q, &mut params)? {
        Some(c) => conds.extend(c),
        None => return Ok(Vec::new()),
    }
    params.push(Box::new(n as i64));
    let sql = format!(
        "SELECT start_ns FROM ft_spans WHERE {} ORDER BY start_ns DESC LIMIT ${}",
        conds.join(" AND "),
        params.len()
    );
    let rows = client.query(&sql, &refs(&params)).await.map_err(map_err)?;
    Ok(rows.iter().map(|r| from_i64(r.get(0))).collect())
}

/// One search window (see `sink_common::SearchWindows`): traces with a
/// matching span starting in `[max(from, range start), range end)` whose
/// trace start is `>= from` and sorts after the cursor, newest first, at most
/// `n`. The matching spans' trace ids come from the covering (service, start)
/// indexes (index-only). Each candidate's start is one `MIN` over its entries
/// in the primary key index (a lateral subquery: its cost follows the
/// window's traces, where a join let the planner hash the whole primary key
/// once a window held a few thousand traces).
async fn search_window(
    client: &Transaction<'_>,
    q: &TraceQuery,
    from: Option<u64>,
    cursor: Option<(u64, TraceId)>,
    n: usize,
) -> StorageResult<Vec<(TraceId, u64)>> {
    let lo = from.map_or(q.range.start_ns, |a| a.max(q.range.start_ns));
    let mut params: Params = vec![Box::new(to_i64(lo)), Box::new(to_i64(q.range.end_ns))];
    let mut conds = vec!["start_ns >= $1".to_string(), "start_ns < $2".to_string()];
    match span_conditions(q, &mut params)? {
        Some(c) => conds.extend(c),
        None => return Ok(Vec::new()),
    }
    let mut sql = format!(
        "WITH m AS (SELECT DISTINCT trace_id FROM ft_spans WHERE {}), \
         t AS (SELECT m.trace_id, x.tstart FROM m CROSS JOIN LATERAL \
               (SELECT MIN(s.start_ns) AS tstart FROM ft_spans s \
                WHERE s.trace_id = m.trace_id) x) \
         SELECT trace_id, tstart FROM t WHERE true",
        conds.join(" AND ")
    );
    if let Some(a) = from {
        params.push(Box::new(to_i64(a)));
        sql.push_str(&format!(" AND tstart >= ${}", params.len()));
    }
    if let Some((cs, cid)) = cursor {
        params.push(Box::new(to_i64(cs)));
        params.push(Box::new(cid.to_vec()));
        sql.push_str(&format!(
            " AND (tstart, trace_id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    params.push(Box::new(n as i64));
    sql.push_str(&format!(
        " ORDER BY tstart DESC, trace_id DESC LIMIT ${}",
        params.len()
    ));
    let rows = client.query(&sql, &refs(&params)).await.map_err(map_err)?;
    rows.iter()
        .map(|r| Ok((trace_id_from(r.get::<_, &[u8]>(0))?, from_i64(r.get(1)))))
        .collect()
}

fn trace_id_from(v: &[u8]) -> StorageResult<TraceId> {
    TraceId::try_from(v).map_err(|_| {
        StorageError::Backend(format!(
            "stored trace id has {} bytes, expected 16",
            v.len()
        ))
    })
}

#[async_trait]
impl TraceReader for PostgresStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        let (lo, hi) = match range {
            Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
            None => (i64::MIN, i64::MAX),
        };
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT payload FROM ft_spans WHERE trace_id = $1 AND start_ns >= $2 AND start_ns < $3",
                &[&&trace_id[..], &lo, &hi],
            )
            .await
            .map_err(map_err)?;
        let mut spans = rows
            .iter()
            .map(|r| decode_span(r.get::<_, &[u8]>(0)))
            .collect::<StorageResult<Vec<Span>>>()?;
        common::order_trace(&mut spans);
        Ok(spans)
    }
    /// One statement: `trace_id = ANY($1)` probes the trace-id index of each
    /// partition, and the time bounds prune the day partitions outside `range`.
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        let ids = common::distinct_trace_ids(trace_ids)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (lo, hi) = match range {
            Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
            None => (i64::MIN, i64::MAX),
        };
        let id_list: Vec<&[u8]> = ids.iter().map(|id| &id[..]).collect();
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT trace_id, payload FROM ft_spans WHERE trace_id = ANY($1) AND start_ns >= $2 AND start_ns < $3",
                &[&id_list, &lo, &hi],
            )
            .await
            .map_err(map_err)?;
        let spans = rows
            .iter()
            .map(|r| {
                Ok((
                    trace_id_from(r.get::<_, &[u8]>(0))?,
                    decode_span(r.get::<_, &[u8]>(1))?,
                ))
            })
            .collect::<StorageResult<Vec<(TraceId, Span)>>>()?;
        Ok(common::group_traces(&ids, spans))
    }
    async fn search(&self, q: &TraceQuery) -> StorageResult<SearchPage> {
        if q.limit == 0 || q.range.end_ns <= q.range.start_ns {
            return Ok(SearchPage::default());
        }
        let limit = q.limit.min(self.opts.max_search_limit);
        let cursor = q.cursor.as_deref().map(common::decode_cursor).transpose()?;
        // Validates the filters once; `None`: no stored span can match.
        if span_conditions(q, &mut Vec::new())?.is_none() {
            return Ok(SearchPage::default());
        }
        let mut conn = self.pool.get().await?;
        // The probe and the windows are short index walks: a parallel plan
        // costs more to start its workers (15-40 ms measured) than the walk
        // itself (1-3 ms), and on recent, not yet vacuumed rows the planner's
        // cost estimate of the per-trace MIN passes the JIT thresholds, whose
        // compilation took 100-140 ms per window that ran in 2-11 ms. So this
        // read-only transaction runs serially and without JIT.
        let tx = conn.client.transaction().await.map_err(map_err)?;
        tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off")
            .await
            .map_err(map_err)?;
        let top = SearchWindows::probe_top(q.range, cursor);
        let starts = search_probe(&tx, q, top, SearchWindows::probe_len(limit)).await?;
        // Windows grow below the newest matching start rather than below the
        // range end: when the matching spans stopped minutes before the end
        // (a burst, a service that went quiet), growing from the end made the
        // first window past the probe cover them all. No matching span lies
        // in `[newest + 1, top)`, so the probe's answer is the same and every
        // window stays exact; the windows still query up to the range end.
        let anchored = TimeRange {
            start_ns: q.range.start_ns,
            end_ns: starts.first().map_or(top, |s| s.saturating_add(1)),
        };
        let client = &tx;
        let (ids, more) = common::search_windows(
            anchored,
            cursor,
            limit,
            move |_, _| std::future::ready(Ok(starts)),
            move |from, n| search_window(client, q, from, cursor, n),
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        if ids.is_empty() {
            return Ok(SearchPage::default());
        }
        let id_list: Vec<Vec<u8>> = ids.iter().map(|(id, _)| id.to_vec()).collect();
        let rows = conn
            .client
            .query(
                "SELECT trace_id, span_id, parent_span_id IS NULL, service, name, start_ns, end_ns, \
                 status_code FROM ft_spans WHERE trace_id = ANY($1)",
                &[&id_list],
            )
            .await
            .map_err(map_err)?;
        let mut summary_rows = Vec::with_capacity(rows.len());
        for r in &rows {
            let span_id: &[u8] = r.get(1);
            summary_rows.push(SummaryRow {
                trace_id: trace_id_from(r.get::<_, &[u8]>(0))?,
                span_id: span_id.try_into().map_err(|_| {
                    StorageError::Backend(format!(
                        "stored span id has {} bytes, expected 8",
                        span_id.len()
                    ))
                })?,
                is_root: r.get(2),
                service: unesc(r.get(3)),
                name: unesc(r.get(4)),
                start_ns: from_i64(r.get(5)),
                end_ns: from_i64(r.get(6)),
                status_code: r.get::<_, i16>(7) as u8,
            });
        }
        let order: Vec<TraceId> = ids.iter().map(|(id, _)| *id).collect();
        let traces = common::summarize(&order, summary_rows);
        Ok(common::search_page(&ids, more, traces))
    }
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        let conn = self.pool.get().await?;
        // Loose index scan over (service, start_ns): one probe per service.
        let rows = conn
            .client
            .query(
                "WITH RECURSIVE svc(s) AS ( \
                   SELECT MIN(service) FROM ft_spans WHERE start_ns >= $1 AND start_ns < $2 \
                   UNION ALL \
                   SELECT (SELECT MIN(service) FROM ft_spans \
                           WHERE service > svc.s AND start_ns >= $1 AND start_ns < $2) \
                   FROM svc WHERE svc.s IS NOT NULL) \
                 SELECT s FROM svc WHERE s IS NOT NULL",
                &[&to_i64(range.start_ns), &to_i64(range.end_ns)],
            )
            .await
            .map_err(map_err)?;
        let mut out: Vec<String> = rows.iter().map(|r| unesc(r.get(0))).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT DISTINCT name, kind FROM ft_spans WHERE service = $1 AND start_ns >= $2 AND start_ns < $3",
                &[&esc(service).as_ref(), &to_i64(range.start_ns), &to_i64(range.end_ns)],
            )
            .await
            .map_err(map_err)?;
        let mut out: Vec<Operation> = rows
            .iter()
            .map(|r| Operation {
                name: unesc(r.get(0)),
                kind: SpanKind::from_i32(r.get::<_, i16>(1) as i32),
            })
            .collect();
        out.sort();
        Ok(out)
    }
}
