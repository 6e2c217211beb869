//! The trace reader: traces by id, search (a probe of time slices, then
//! windows), services and operations.

use async_trait::async_trait;

use super::connection::map_err;
use super::{
    ClickHouseStore, NewestRow, OperationRow, PayloadRow, SummaryChRow, TraceKeyRow,
    TracePayloadRow,
};
use crate::model::{hex, Span, SpanKind, StatusCode, TraceId};
use crate::storage::sink_common::{self as common, SummaryRow};
use crate::storage::span_codec::decode_span;
use crate::storage::{
    Operation, SearchPage, StorageResult, TimeRange, TraceQuery, TraceReader, TraceSpans,
};

/// Width of the search probe's first time slice below its top (100 ms): a
/// dense store fills the probe from a slice or two; a sparse hour takes about
/// nine slices, each reading next to nothing.
const PROBE_FIRST_SLICE_NS: u64 = 100_000_000;

/// Search condition for error spans.
const ERROR_STATUS_COND: &str = "status_code = 2";
const _: () = assert!(StatusCode::Error as u8 == 2);

impl ClickHouseStore {
    /// Starts of the newest `n` matching spans in `[range start, top)`, newest
    /// first.
    ///
    /// ClickHouse 18.16 answers `ORDER BY start_ns DESC LIMIT n` by reading
    /// every matching row of its bounds, so the probe asks for time slices
    /// below `top` instead — `[top − w, top)` first, then each older slice
    /// four times as wide — and stops once `n` starts are in: a broad search
    /// over a dense store reads only its recent part. Slices are disjoint and
    /// each is newer than the next, so their answers concatenate into exactly
    /// the newest `n` of the whole range.
    pub(super) async fn search_probe(
        &self,
        q: &TraceQuery,
        filter: &SpanFilter,
        top: u64,
        n: usize,
    ) -> StorageResult<Vec<u64>> {
        let sql = format!(
            "SELECT start_ns FROM ft_spans WHERE {} ORDER BY start_ns DESC LIMIT ?",
            filter.sql()
        );
        let mut starts = Vec::new();
        let mut hi = top;
        let mut width = PROBE_FIRST_SLICE_NS;
        let mut jumped = false;
        while starts.len() < n && hi > q.range.start_ns {
            let lo = hi.saturating_sub(width).max(q.range.start_ns);
            let slice = filter
                .bind(self.query(&sql), q, lo, hi)
                .bind((n - starts.len()) as u64)
                .fetch_all::<u64>()
                .await
                .map_err(map_err)?;
            let empty = slice.is_empty();
            starts.extend(slice);
            hi = lo;
            width = width.saturating_mul(4);
            if empty && starts.is_empty() && !jumped && hi > q.range.start_ns {
                // Nothing just below `top` (the matching spans stopped a while
                // ago): widening from here would end in one slice over all of
                // them. One pass over the key columns finds the newest instead,
                // and the slices restart just above it.
                jumped = true;
                match self.newest_start(q, filter, hi).await? {
                    Some(newest) => {
                        hi = newest + 1;
                        width = PROBE_FIRST_SLICE_NS;
                    }
                    None => break,
                }
            }
        }
        Ok(starts)
    }

    /// Start of the newest matching span in `[range start, hi)`, if any.
    pub(super) async fn newest_start(
        &self,
        q: &TraceQuery,
        filter: &SpanFilter,
        hi: u64,
    ) -> StorageResult<Option<u64>> {
        let sql = format!(
            "SELECT count() AS n, max(start_ns) AS newest FROM ft_spans WHERE {}",
            filter.sql()
        );
        let row = filter
            .bind(self.query(&sql), q, q.range.start_ns, hi)
            .fetch_one::<NewestRow>()
            .await
            .map_err(map_err)?;
        Ok((row.n > 0).then_some(row.newest))
    }

    /// One search window (see `sink_common::SearchWindows`): traces with a
    /// matching span starting in `[max(from, range start), range end)` whose
    /// trace start is `>= from` and sorts after the cursor, newest first, at
    /// most `n`. The trace starts come from the lookup table (ordered by trace
    /// id), reading only the granules of the candidate traces.
    pub(super) async fn search_window(
        &self,
        q: &TraceQuery,
        filter: &SpanFilter,
        from: Option<u64>,
        cursor: Option<(u64, TraceId)>,
        n: usize,
    ) -> StorageResult<Vec<(TraceId, u64)>> {
        let lo = from.map_or(q.range.start_ns, |a| a.max(q.range.start_ns));
        let (pre, _) = self.prewhere();
        let mut sql = format!(
            "SELECT trace_id, min(start_ns) AS tstart FROM ft_traces \
             {pre} trace_id IN (SELECT trace_id FROM ft_spans WHERE {}) \
             GROUP BY trace_id HAVING 1",
            filter.sql()
        );
        if from.is_some() {
            sql.push_str(" AND tstart >= ?");
        }
        if cursor.is_some() {
            sql.push_str(
                " AND (tstart < ? OR (tstart = ? AND trace_id < toFixedString(unhex(?), 16)))",
            );
        }
        sql.push_str(" ORDER BY tstart DESC, trace_id DESC LIMIT ?");
        let mut query = filter.bind(self.query(&sql), q, lo, q.range.end_ns);
        if let Some(a) = from {
            query = query.bind(a);
        }
        if let Some((cs, cid)) = cursor {
            query = query.bind(cs).bind(cs).bind(hex(&cid));
        }
        let keys = query
            .bind(n as u64)
            .fetch_all::<TraceKeyRow>()
            .await
            .map_err(map_err)?;
        Ok(keys.into_iter().map(|k| (k.trace_id, k.tstart)).collect())
    }

    /// WHERE clause and binder for spans of a service (and operation) in a window.
    pub(super) fn span_filter(
        &self,
        sql_head: &str,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        sql_tail: &str,
    ) -> clickhouse::query::Query {
        let op = if operation.is_some() {
            " AND name = ?"
        } else {
            ""
        };
        let kind = kinds_cond(kinds);
        let sql = format!(
            "{sql_head} FROM ft_spans WHERE service = ?{op} AND start_ns >= ? AND start_ns < ?{kind} \
             LIMIT 1 BY trace_id, span_id{sql_tail}"
        );
        let mut q = self.query(&sql).bind(service);
        if let Some(op) = operation {
            q = q.bind(op);
        }
        q = q.bind(range.start_ns).bind(range.end_ns);
        for k in kinds {
            q = q.bind(*k as u8);
        }
        q
    }
}

/// ` AND kind IN (?, …)` with one placeholder per kind; empty for no kinds.
pub(super) fn kinds_cond(kinds: &[SpanKind]) -> String {
    if kinds.is_empty() {
        String::new()
    } else {
        format!(" AND kind IN ({})", vec!["?"; kinds.len()].join(", "))
    }
}

/// The conditions on a matching span besides its start time, in `ft_spans`
/// terms, with the values to bind in order.
pub(super) struct SpanFilter {
    conds: Vec<std::borrow::Cow<'static, str>>,
    attrs: Vec<(String, Vec<(u8, String)>)>,
}

impl SpanFilter {
    /// `None` when no stored span can match (an unsearchable attribute value).
    fn new(q: &TraceQuery) -> StorageResult<Option<Self>> {
        let mut conds: Vec<std::borrow::Cow<'static, str>> = Vec::new();
        let mut attrs = Vec::new();
        if q.service.is_some() {
            conds.push("service = ?".into());
        }
        if q.operation.is_some() {
            conds.push("name = ?".into());
        }
        if q.min_duration_ns.is_some() {
            conds.push("duration_ns >= ?".into());
        }
        if q.max_duration_ns.is_some() {
            conds.push("duration_ns <= ?".into());
        }
        if q.errors_only {
            conds.push(ERROR_STATUS_COND.into());
        }
        for f in &q.attributes {
            common::check_filter(&f.key, &f.value)?;
            // A typed condition has one candidate value; a Jaeger text
            // condition one per type whose text equals it. Any of them matches.
            let alts: Vec<(u8, String)> = f
                .candidates()
                .iter()
                .filter_map(common::scalar_text)
                .collect();
            if alts.is_empty() {
                return Ok(None);
            }
            conds.push(
                format!(
                    "arrayExists((k, t, v) -> k = ? AND ({}), attr_keys, attr_types, attr_values)",
                    vec!["(t = ? AND v = ?)"; alts.len()].join(" OR ")
                )
                .into(),
            );
            attrs.push((f.key.clone(), alts));
        }
        Ok(Some(SpanFilter { conds, attrs }))
    }

    /// `start_ns >= ? AND start_ns < ?` and the conditions, to bind with [`Self::bind`].
    fn sql(&self) -> String {
        let mut out = "start_ns >= ? AND start_ns < ?".to_string();
        for c in &self.conds {
            out.push_str(" AND ");
            out.push_str(c);
        }
        out
    }

    /// Binds the time bounds and the condition values of [`Self::sql`].
    fn bind(
        &self,
        mut query: clickhouse::query::Query,
        q: &TraceQuery,
        lo: u64,
        hi: u64,
    ) -> clickhouse::query::Query {
        query = query.bind(lo).bind(hi);
        if let Some(s) = &q.service {
            query = query.bind(s.as_str());
        }
        if let Some(o) = &q.operation {
            query = query.bind(o.as_str());
        }
        if let Some(v) = q.min_duration_ns {
            query = query.bind(v);
        }
        if let Some(v) = q.max_duration_ns {
            query = query.bind(v);
        }
        for (k, alts) in &self.attrs {
            query = query.bind(k.as_str());
            for (t, v) in alts {
                query = query.bind(*t).bind(v.as_str());
            }
        }
        query
    }
}

#[async_trait]
impl TraceReader for ClickHouseStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        self.failover(move || async move {
            let (lo, hi) = match range {
                Some(r) => (r.start_ns, r.end_ns),
                None => (0, u64::MAX),
            };
            let (pre, rest) = self.prewhere();
            let sql = format!(
                "SELECT payload FROM ft_traces {pre} trace_id = toFixedString(unhex(?), 16) \
                 {rest} start_ns >= ? AND start_ns < ?"
            );
            let rows = self
                .query(&sql)
                .bind(hex(&trace_id))
                .bind(lo)
                .bind(hi)
                .fetch_all::<PayloadRow>()
                .await
                .map_err(map_err)?;
            let mut spans = rows
                .iter()
                .map(|r| decode_span(&r.payload))
                .collect::<StorageResult<Vec<Span>>>()?;
            common::order_trace(&mut spans);
            Ok(spans)
        })
        .await
    }
    /// One query on the trace-id lookup table, as `get_trace` and the search's
    /// summaries read it: `trace_id IN (subquery)` is matched against the
    /// primary key (18.16 included), so only the granules holding the ids are
    /// read; the time bounds skip day partitions outside `range`. The ids go
    /// as hex in one array parameter (client-side bound, so in the query
    /// text); [`MAX_TRACES_PER_READ`](crate::storage::MAX_TRACES_PER_READ) keeps that
    /// text under 40 KB.
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        self.failover(move || async move {
            let ids = common::distinct_trace_ids(trace_ids)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let (lo, hi) = match range {
                Some(r) => (r.start_ns, r.end_ns),
                None => (0, u64::MAX),
            };
            let hex_ids: Vec<String> = ids.iter().map(|id| hex(id)).collect();
            let (pre, rest) = self.prewhere();
            let sql = format!(
                "SELECT trace_id, payload FROM ft_traces \
                 {pre} trace_id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16)) \
                 {rest} start_ns >= ? AND start_ns < ?"
            );
            let rows = self
                .query(&sql)
                .bind(hex_ids)
                .bind(lo)
                .bind(hi)
                .fetch_all::<TracePayloadRow>()
                .await
                .map_err(map_err)?;
            let spans = rows
                .iter()
                .map(|r| Ok((r.trace_id, decode_span(&r.payload)?)))
                .collect::<StorageResult<Vec<(TraceId, Span)>>>()?;
            Ok(common::group_traces(&ids, spans))
        })
        .await
    }
    async fn search(&self, q: &TraceQuery) -> StorageResult<SearchPage> {
        self.failover(move || async move {
            if q.limit == 0 || q.range.end_ns <= q.range.start_ns {
                return Ok(SearchPage::default());
            }
            let limit = q.limit.min(self.opts.max_search_limit);
            let cursor = q.cursor.as_deref().map(common::decode_cursor).transpose()?;
            let Some(filter) = SpanFilter::new(q)? else {
                return Ok(SearchPage::default());
            };
            let filter = &filter;
            let (ids, more) = common::search_windows(
                q.range,
                cursor,
                limit,
                move |top, n| self.search_probe(q, filter, top, n),
                move |from, n| self.search_window(q, filter, from, cursor, n),
            )
            .await?;
            if ids.is_empty() {
                return Ok(SearchPage::default());
            }
            let hex_ids: Vec<String> = ids.iter().map(|(id, _)| hex(id)).collect();
            let (pre, _) = self.prewhere();
            let sql = format!(
                "SELECT trace_id, span_id, has_parent, service, name, start_ns, end_ns, status_code \
                 FROM ft_traces {pre} trace_id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16))"
            );
            let rows = self
                .query(&sql)
                .bind(hex_ids)
                .fetch_all::<SummaryChRow>()
                .await
                .map_err(map_err)?;
            let summary_rows = rows
                .into_iter()
                .map(|r| SummaryRow {
                    trace_id: r.trace_id,
                    span_id: r.span_id,
                    is_root: r.has_parent == 0,
                    service: r.service,
                    name: r.name,
                    start_ns: r.start_ns,
                    end_ns: r.end_ns,
                    status_code: r.status_code,
                })
                .collect();
            let order: Vec<TraceId> = ids.iter().map(|(id, _)| *id).collect();
            let traces = common::summarize(&order, summary_rows);
            Ok(common::search_page(&ids, more, traces))
        })
        .await
    }
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        self.failover(move || async move {
            let mut out = self
                .query("SELECT DISTINCT service FROM ft_spans WHERE start_ns >= ? AND start_ns < ?")
                .bind(range.start_ns)
                .bind(range.end_ns)
                .fetch_all::<String>()
                .await
                .map_err(map_err)?;
            out.sort();
            Ok(out)
        })
        .await
    }
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        self.failover(move || async move {
            let rows = self
                .query(
                    "SELECT DISTINCT name, kind FROM ft_spans WHERE service = ? AND start_ns >= ? AND start_ns < ?",
                )
                .bind(service)
                .bind(range.start_ns)
                .bind(range.end_ns)
                .fetch_all::<OperationRow>()
                .await
                .map_err(map_err)?;
            let mut out: Vec<Operation> = rows
                .into_iter()
                .map(|r| Operation {
                    name: r.name,
                    kind: SpanKind::from_i32(r.kind as i32),
                })
                .collect();
            out.sort();
            Ok(out)
        })
        .await
    }
}
