//! Logic shared by the networked sinks (PostgreSQL and ClickHouse): the parts
//! of the [`SpanStore`](super::SpanStore) semantics that are computed in Rust
//! rather than in SQL, so both sinks (and the SQLite sink they mirror) agree
//! exactly: search cursors and windows, trace summaries and grouping, attribute
//! filter typing and calendar days. The rollup math is in `rollup_math`.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    SearchPage, StorageError, StorageResult, TimeRange, TraceSpans, TraceSummary,
    MAX_TRACES_PER_READ,
};
use crate::model::{AttrValue, Span, SpanId, StatusCode, TraceId};

/// One day in nanoseconds (partitions are per UTC day).
pub(crate) const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// Attribute type codes shared by the sinks' typed attribute columns.
pub(crate) const T_STR: u8 = 0;
/// Boolean attribute.
pub(crate) const T_BOOL: u8 = 1;
/// Integer attribute.
pub(crate) const T_INT: u8 = 2;
/// Double attribute.
pub(crate) const T_DOUBLE: u8 = 3;

/// A searchable scalar attribute value: its type code and canonical text.
///
/// The text form is what the ClickHouse sink stores and compares; it is
/// canonical per value (equal values give equal text, `-0.0` is written as `0`
/// so it equals `0.0` as in SQL numeric comparison).
pub(crate) fn scalar_text(v: &AttrValue) -> Option<(u8, String)> {
    let mut text = String::new();
    write_scalar_text(v, &mut text).map(|t| (t, text))
}

/// Type code of a searchable scalar attribute value (`None` for bytes,
/// arrays, maps and NaN), without making its text.
pub(crate) fn scalar_type(v: &AttrValue) -> Option<u8> {
    match v {
        AttrValue::Str(_) => Some(T_STR),
        AttrValue::Bool(_) => Some(T_BOOL),
        AttrValue::Int(_) => Some(T_INT),
        AttrValue::Double(d) if d.is_nan() => None,
        AttrValue::Double(_) => Some(T_DOUBLE),
        _ => None,
    }
}

/// Appends the canonical text of [`scalar_text`] to `out` and returns the
/// type code (`None`, appending nothing, for a value that is not searchable).
/// Lets a sink write the text into a reused buffer instead of a new `String`.
pub(crate) fn write_scalar_text(v: &AttrValue, out: &mut String) -> Option<u8> {
    use std::fmt::Write;
    let t = scalar_type(v)?;
    // Writing into a String cannot fail.
    let _ = match v {
        AttrValue::Str(s) => {
            out.push_str(s);
            Ok(())
        }
        AttrValue::Bool(b) => write!(out, "{b}"),
        AttrValue::Int(i) => write!(out, "{i}"),
        AttrValue::Double(d) if *d == 0.0 => {
            out.push('0');
            Ok(())
        }
        AttrValue::Double(d) => write!(out, "{d:?}"),
        _ => Ok(()),
    };
    Some(t)
}

/// Checks that an attribute filter value is searchable (string, bool, int or
/// a non-NaN double), with the same error the SQLite sink gives.
pub(crate) fn check_filter(key: &str, v: &AttrValue) -> StorageResult<()> {
    match v {
        AttrValue::Str(_) | AttrValue::Bool(_) | AttrValue::Int(_) => Ok(()),
        AttrValue::Double(d) if !d.is_nan() => Ok(()),
        other => Err(StorageError::InvalidQuery(format!(
            "attribute filter on {key:?} must be a string, bool, int or double, got {other:?}"
        ))),
    }
}

/// Cursor: the sort key of the last trace on the page, `(trace start, trace id)`.
/// One format for every sink, so a cursor means the same thing everywhere.
pub(crate) fn encode_cursor(start_ns: u64, trace_id: &TraceId) -> String {
    format!("{start_ns:016x}{}", crate::model::hex(trace_id))
}

/// Parses a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(c: &str) -> StorageResult<(u64, TraceId)> {
    let bad = || {
        StorageError::InvalidQuery(
            "malformed cursor: pass next_cursor from the previous page unchanged".into(),
        )
    };
    if c.len() != 48 || !c.is_ascii() {
        return Err(bad());
    }
    let start = u64::from_str_radix(&c[..16], 16).map_err(|_| bad())?;
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&c[16 + 2 * i..18 + 2 * i], 16).map_err(|_| bad())?;
    }
    Ok((start, id))
}

/// A search page: `traces` (summaries of `ids`, in order) and, when `more`
/// traces match, the cursor after the last one on the page.
pub(crate) fn search_page(
    ids: &[(TraceId, u64)],
    more: bool,
    traces: Vec<TraceSummary>,
) -> SearchPage {
    let next_cursor = if more {
        ids.last().map(|(id, start)| encode_cursor(*start, id))
    } else {
        None
    };
    SearchPage {
        traces,
        next_cursor,
    }
}

/// Traces of one search step: `(trace id, trace start)`, newest first.
pub(crate) type TraceKeys = Vec<(TraceId, u64)>;

/// How many of the newest matching span starts a sink's probe returns at most
/// (see [`SearchWindows`]); bounds the probe's result and its sort.
const MAX_PROBE: usize = 16_384;

/// The early-stopping search plan every sink runs (described in
/// `docs/storage.md`, "Search").
///
/// A search returns the traces with a matching span in the range, ordered by
/// trace start (the earliest span of the whole trace) then trace id, newest
/// first. Instead of computing the start of every matching trace, a sink
/// answers a sequence of windows with decreasing lower bounds `a`: "traces
/// with a matching span starting in `[a, range end)` whose trace start is
/// `>= a` (and past the cursor), newest first, at most `limit + 1`". A trace
/// missing from that answer has all its matching spans before `a`, so its
/// trace start is before `a` and it sorts after every trace in the answer:
/// once a window yields `limit + 1` traces, they are exactly the first
/// `limit + 1` of the full result, so the page and its `more` flag are exact.
/// The last window is the whole range without a trace-start bound (the
/// complete search), used only when no earlier window was enough.
///
/// Where windows start: a probe returns the starts of the newest matching
/// spans below `top` (the range end, or just past the cursor's trace start,
/// since no later-starting trace can be on the page); window `k` starts at
/// the `2·(limit+1)·4^k`-th of them, so window sizes follow the data's density
/// (a burst of spans gives a narrow window, sparse data a wide one). Past the
/// probe the width below `top` grows ×4 per step until it covers the range.
#[derive(Debug)]
pub(crate) struct SearchWindows {
    range_start: u64,
    top: u64,
    first_rank: usize,
    probe: Vec<u64>,
    probe_full: bool,
    step: u32,
    prev: Option<u64>,
    done: bool,
}

impl SearchWindows {
    /// The exclusive upper bound of the probe: matching spans at or after it
    /// cannot start a trace that may appear on the page.
    pub(crate) fn probe_top(range: TimeRange, cursor: Option<(u64, TraceId)>) -> u64 {
        match cursor {
            Some((cs, _)) => range.end_ns.min(cs.saturating_add(1)),
            None => range.end_ns,
        }
    }

    /// How many span starts the probe should return for a page of `limit`.
    pub(crate) fn probe_len(limit: usize) -> usize {
        (limit + 1).saturating_mul(2 * 64).min(MAX_PROBE)
    }

    /// A plan for a page of `limit` traces from the probe's answer: the
    /// starts of the newest matching spans in `[range start, top)`, newest
    /// first, at most [`Self::probe_len`] of them.
    pub(crate) fn new(
        range: TimeRange,
        cursor: Option<(u64, TraceId)>,
        limit: usize,
        probe: Vec<u64>,
    ) -> Self {
        let probe_full = probe.len() >= Self::probe_len(limit);
        SearchWindows {
            range_start: range.start_ns,
            top: Self::probe_top(range, cursor),
            first_rank: (limit + 1).saturating_mul(2),
            probe,
            probe_full,
            step: 0,
            prev: None,
            done: false,
        }
    }

    /// The next window: `Some(Some(a))` for "matching in `[a, end)`, trace
    /// start `>= a`", `Some(None)` for the complete search (always the last),
    /// `None` when the plan is exhausted.
    pub(crate) fn next_window(&mut self) -> Option<Option<u64>> {
        if self.done {
            return None;
        }
        loop {
            let rank = 4usize
                .checked_pow(self.step)
                .and_then(|m| m.checked_mul(self.first_rank));
            self.step = self.step.saturating_add(1);
            let candidate = match rank.and_then(|r| self.probe.get(r - 1)) {
                Some(&a) => Some(a),
                // Every matching span below `top` is in the probe and some
                // trace starts before the oldest: only the complete search is left.
                None if !self.probe_full => None,
                None => {
                    let oldest = self.probe.last().copied().unwrap_or(self.top);
                    match self.prev {
                        Some(p) if p <= oldest => {
                            Some(self.top.saturating_sub((self.top - p).saturating_mul(4)))
                        }
                        _ => Some(oldest),
                    }
                }
            };
            match candidate {
                Some(a) if a > self.range_start && a < self.top => {
                    // Equal starts at several probe ranks give the same window twice.
                    if self.prev.is_some_and(|p| a >= p) {
                        continue;
                    }
                    self.prev = Some(a);
                    return Some(Some(a));
                }
                _ => {
                    self.done = true;
                    return Some(None);
                }
            }
        }
    }
}

/// Runs a [`SearchWindows`] plan with a synchronous sink. `probe(top, n)`
/// returns the starts of the newest `n` matching spans in `[range start, top)`,
/// newest first; `window(a, n)` the traces of window `a` (see
/// [`SearchWindows`]), at most `n`. Returns the page's traces and whether more
/// follow.
pub(crate) fn search_windows_sync(
    range: TimeRange,
    cursor: Option<(u64, TraceId)>,
    limit: usize,
    probe: impl FnOnce(u64, usize) -> StorageResult<Vec<u64>>,
    mut window: impl FnMut(Option<u64>, usize) -> StorageResult<TraceKeys>,
) -> StorageResult<(TraceKeys, bool)> {
    let top = SearchWindows::probe_top(range, cursor);
    let starts = probe(top, SearchWindows::probe_len(limit))?;
    let mut plan = SearchWindows::new(range, cursor, limit, starts);
    while let Some(from) = plan.next_window() {
        let keys = window(from, limit + 1)?;
        if keys.len() > limit || from.is_none() {
            return Ok(page_keys(keys, limit));
        }
    }
    Ok((Vec::new(), false))
}

/// [`search_windows_sync`] for an asynchronous sink.
pub(crate) async fn search_windows<P, W, PF, WF>(
    range: TimeRange,
    cursor: Option<(u64, TraceId)>,
    limit: usize,
    probe: P,
    mut window: W,
) -> StorageResult<(TraceKeys, bool)>
where
    P: FnOnce(u64, usize) -> PF,
    PF: std::future::Future<Output = StorageResult<Vec<u64>>>,
    W: FnMut(Option<u64>, usize) -> WF,
    WF: std::future::Future<Output = StorageResult<TraceKeys>>,
{
    let top = SearchWindows::probe_top(range, cursor);
    let starts = probe(top, SearchWindows::probe_len(limit)).await?;
    let mut plan = SearchWindows::new(range, cursor, limit, starts);
    while let Some(from) = plan.next_window() {
        let keys = window(from, limit + 1).await?;
        if keys.len() > limit || from.is_none() {
            return Ok(page_keys(keys, limit));
        }
    }
    Ok((Vec::new(), false))
}

/// The first `limit` keys and whether there were more.
fn page_keys(mut keys: TraceKeys, limit: usize) -> (TraceKeys, bool) {
    let more = keys.len() > limit;
    keys.truncate(limit);
    (keys, more)
}

/// The columns of one stored span that a trace summary needs.
#[derive(Clone, Debug)]
pub(crate) struct SummaryRow {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id (summaries count each span once even if a sink returns a
    /// not-yet-merged duplicate).
    pub span_id: SpanId,
    /// The span has no parent.
    pub is_root: bool,
    /// Service.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Start (ns).
    pub start_ns: u64,
    /// End (ns).
    pub end_ns: u64,
    /// Status code number.
    pub status_code: u8,
}

/// Builds the summaries of `ids` (in that order) from their spans' rows.
/// Mirrors the SQLite sink: root = first parentless span by (start, span id),
/// else the earliest span.
pub(crate) fn summarize(ids: &[TraceId], rows: Vec<SummaryRow>) -> Vec<TraceSummary> {
    let mut by_trace: BTreeMap<TraceId, BTreeMap<(u64, SpanId), SummaryRow>> = BTreeMap::new();
    for r in rows {
        by_trace
            .entry(r.trace_id)
            .or_default()
            .entry((r.start_ns, r.span_id))
            .or_insert(r);
    }
    ids.iter()
        .map(|id| {
            let spans = by_trace.remove(id).unwrap_or_default();
            let mut seen = BTreeSet::new();
            let mut first: Option<(String, String)> = None;
            let mut root: Option<(String, String)> = None;
            let (mut start, mut end, mut count, mut errors) = (u64::MAX, 0u64, 0u64, 0u64);
            let mut services = BTreeSet::new();
            for r in spans.into_values() {
                // A span id seen twice with different start times is still one span.
                if !seen.insert(r.span_id) {
                    continue;
                }
                start = start.min(r.start_ns);
                end = end.max(r.end_ns);
                count += 1;
                if r.status_code == StatusCode::Error as u8 {
                    errors += 1;
                }
                if first.is_none() {
                    first = Some((r.service.clone(), r.name.clone()));
                }
                if r.is_root && root.is_none() {
                    root = Some((r.service.clone(), r.name));
                }
                services.insert(r.service);
            }
            let (root_service, root_operation) = root.or(first).unwrap_or_default();
            let start = if count == 0 { 0 } else { start };
            TraceSummary {
                trace_id: *id,
                root_service,
                root_operation,
                start_ns: start,
                duration_ns: end.saturating_sub(start),
                span_count: count,
                services: services.into_iter().collect(),
                error_count: errors,
                cold_spans: 0,
            }
        })
        .collect()
}

/// Puts one trace's spans in the order `get_trace` promises (start time, then
/// span id) and keeps one copy of each span id: a retried batch may still be
/// stored twice until the database merges it (ClickHouse), and a span id seen
/// twice with different start times is still one span (the earliest is kept).
pub(crate) fn order_trace(spans: &mut Vec<Span>) {
    spans.sort_by_key(|a| (a.start_ns, a.span_id));
    let mut seen = BTreeSet::new();
    spans.retain(|s| seen.insert(s.span_id));
}

/// The distinct ids of a `get_traces` call in order of first appearance, or
/// `InvalidQuery` when the call asks for more than [`MAX_TRACES_PER_READ`].
pub(crate) fn distinct_trace_ids(ids: &[TraceId]) -> StorageResult<Vec<TraceId>> {
    if ids.len() > MAX_TRACES_PER_READ {
        return Err(StorageError::InvalidQuery(format!(
            "{} trace ids in one read: at most {MAX_TRACES_PER_READ}; split the ids into several reads",
            ids.len()
        )));
    }
    let mut seen = BTreeSet::new();
    Ok(ids.iter().filter(|id| seen.insert(**id)).copied().collect())
}

/// Splits the spans a `get_traces` call read, each with the trace id of its
/// row, into traces in the order of `order` (distinct ids), each one ordered
/// by [`order_trace`]; ids without spans are left out, and so are spans of ids
/// not asked for. Grouped by the row's indexed id column, the one the lookup
/// matched, as `get_trace` returns whatever rows match its id.
pub(crate) fn group_traces(order: &[TraceId], rows: Vec<(TraceId, Span)>) -> Vec<TraceSpans> {
    let mut by_trace: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    for (id, s) in rows {
        by_trace.entry(id).or_default().push(s);
    }
    order
        .iter()
        .filter_map(|id| {
            let mut spans = by_trace.remove(id)?;
            order_trace(&mut spans);
            Some((*id, spans))
        })
        .collect()
}

/// Size eviction in a day-partitioned store (PostgreSQL day tables, ClickHouse
/// day partitions): given each stored day (days since the epoch) with its
/// bytes, in any order, the cutoff that drops the oldest whole days until
/// together they free at least `bytes` — the end of the last of them — and at
/// least one day when `bytes > 0`; `None` when nothing is stored or
/// `bytes == 0`.
pub(crate) fn day_eviction_cutoff(
    days: impl IntoIterator<Item = (u64, u64)>,
    bytes: u64,
) -> Option<u64> {
    let mut days: Vec<(u64, u64)> = days.into_iter().collect();
    days.sort_unstable();
    let mut freed = 0u64;
    let mut last = None;
    for (day, size) in days {
        if bytes == 0 || (last.is_some() && freed >= bytes) {
            break;
        }
        freed = freed.saturating_add(size);
        last = Some(day);
    }
    last.map(|day| day.saturating_add(1).saturating_mul(DAY_NS))
}

/// [`Retention::evict_oldest`](super::Retention::evict_oldest) of a
/// day-partitioned store: the cutoff its
/// [`eviction_cutoff`](super::Retention::eviction_cutoff) picks (the end of
/// the oldest days whose partitions add up to `bytes`), then
/// [`evict_days_before`] it. A dropped partition's space goes back to the
/// file system at once, so `give_back` needs nothing more. Shared by
/// PostgreSQL and ClickHouse; not a trait default, because a store without
/// size-bounded retention (the null sink) must keep refusing.
pub(crate) async fn evict_oldest_days<R: super::Retention + ?Sized>(
    store: &R,
    bytes: u64,
    give_back: bool,
) -> StorageResult<super::EvictionReport> {
    match store.eviction_cutoff(bytes, give_back).await? {
        Some(cutoff) => evict_days_before(store, cutoff).await,
        None => Ok(super::EvictionReport::default()),
    }
}

/// [`Retention::evict_before`](super::Retention::evict_before) of a
/// day-partitioned store: its age retention at `cutoff_ns` (whole days
/// dropped, the rest of the cutoff's day deleted).
pub(crate) async fn evict_days_before<R: super::Retention + ?Sized>(
    store: &R,
    cutoff_ns: u64,
) -> StorageResult<super::EvictionReport> {
    let report = store.apply_retention(cutoff_ns).await?;
    Ok(super::EvictionReport {
        spans_deleted: report.spans_deleted,
        rollups_deleted: report.rollups_deleted,
        cutoff_ns,
    })
}

/// [`Retention::tier_cutoff`](super::Retention::tier_cutoff) of a
/// day-partitioned store: rounded down to a UTC day, so that a tiering
/// pass's hot delete only drops partitions (no row deletes or mutations);
/// spans then stay hot up to a day longer.
pub(crate) fn day_tier_cutoff(cutoff_ns: u64) -> u64 {
    cutoff_ns / DAY_NS * DAY_NS
}

/// UTC calendar date `(year, month, day)` of a day number since the epoch
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day number since the epoch of a UTC calendar date (inverse of [`civil_from_days`]).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_eviction_drops_the_oldest_whole_days_until_enough_is_freed() {
        let days = [(20_002, 10), (20_000, 5), (20_001, 7)];
        assert_eq!(day_eviction_cutoff(days, 0), None);
        assert_eq!(day_eviction_cutoff([], 10), None);
        // One day at least, even when it frees less than asked... then more.
        assert_eq!(day_eviction_cutoff(days, 1), Some(20_001 * DAY_NS));
        assert_eq!(day_eviction_cutoff(days, 5), Some(20_001 * DAY_NS));
        assert_eq!(day_eviction_cutoff(days, 6), Some(20_002 * DAY_NS));
        assert_eq!(day_eviction_cutoff(days, 1_000), Some(20_003 * DAY_NS));
    }

    /// A span of the model store: trace, start, and whether it matches the query.
    type ModelSpan = (u8, u64, bool);

    fn model_keys(
        spans: &[ModelSpan],
        range: TimeRange,
        from: Option<u64>,
        cursor: Option<(u64, TraceId)>,
        n: usize,
    ) -> TraceKeys {
        let lo = from.map_or(range.start_ns, |a| a.max(range.start_ns));
        let starts = trace_starts(spans);
        let hit: BTreeSet<u8> = spans
            .iter()
            .filter(|(_, s, m)| *m && *s >= lo && *s < range.end_ns)
            .map(|(t, _, _)| *t)
            .collect();
        let mut keys: TraceKeys = hit
            .into_iter()
            .map(|t| ([t; 16], starts[&t]))
            .filter(|(id, s)| from.is_none_or(|a| *s >= a) && cursor.is_none_or(|c| (*s, *id) < c))
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse((k.1, k.0)));
        keys.truncate(n);
        keys
    }

    fn trace_starts(spans: &[ModelSpan]) -> BTreeMap<u8, u64> {
        let mut starts: BTreeMap<u8, u64> = BTreeMap::new();
        for &(t, s, _) in spans {
            let e = starts.entry(t).or_insert(s);
            *e = (*e).min(s);
        }
        starts
    }

    fn model_probe(spans: &[ModelSpan], range: TimeRange, top: u64, n: usize) -> Vec<u64> {
        let mut v: Vec<u64> = spans
            .iter()
            .filter(|(_, s, m)| *m && *s >= range.start_ns && *s < top)
            .map(|(_, s, _)| *s)
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.truncate(n);
        v
    }

    /// The windowed search gives exactly the complete search's pages on random
    /// stores: long traces whose root starts long before their matching span,
    /// many equal trace starts, matches only in the oldest part of the range,
    /// traces starting before the range, every page size.
    #[test]
    fn windowed_search_equals_complete_search() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut windows_run, mut beyond_probe) = (0usize, 0usize);
        for round in 0..120 {
            let traces = 1 + rnd(if round % 3 == 1 { 8 } else { 60 }) as u8;
            let span_len = [1, 10, 1_000, 100_000][rnd(4) as usize];
            let mut spans = Vec::new();
            for t in 0..traces {
                let root = rnd(1_000_000);
                // Every third round: enough matching spans to fill the probe.
                let n = 1 + rnd(if round % 3 == 0 { 40 } else { 6 });
                for i in 0..n {
                    let s = if i == 0 { root } else { root + rnd(span_len) };
                    // Round 0 mod 5: matches only in the oldest tenth.
                    let m = rnd(3) == 0 && (round % 5 != 0 || s < 100_000);
                    spans.push((t, if rnd(4) == 0 { s / 1000 * 1000 } else { s }, m));
                }
            }
            // Every third round: two old traces match often in the newest
            // tenth, filling the probe with spans of traces that start before
            // every window it gives.
            if round % 3 == 1 {
                for t in [traces, traces.wrapping_add(1)] {
                    spans.push((t, rnd(1_000), false));
                    for _ in 0..400 {
                        spans.push((t, 1_000_000 - rnd(100_000), true));
                    }
                }
            }
            let range = TimeRange {
                start_ns: rnd(50_000),
                end_ns: 1_000_000 - rnd(50_000) + rnd(2) * 200_000,
            };
            for limit in [1, 3, 7, 20] {
                let mut cursor = None;
                for _page in 0..300 {
                    let want = model_keys(&spans, range, None, cursor, limit + 1);
                    let (want_page, want_more) = page_keys(want, limit);
                    let probed = model_probe(
                        &spans,
                        range,
                        SearchWindows::probe_top(range, cursor),
                        SearchWindows::probe_len(limit),
                    );
                    let got = search_windows_sync(
                        range,
                        cursor,
                        limit,
                        |top, n| Ok(model_probe(&spans, range, top, n)),
                        |from, n| {
                            windows_run += 1;
                            if from.is_some_and(|a| !probed.contains(&a)) {
                                beyond_probe += 1;
                            }
                            Ok(model_keys(&spans, range, from, cursor, n))
                        },
                    )
                    .unwrap();
                    assert_eq!(
                        got,
                        (want_page.clone(), want_more),
                        "round {round} limit {limit}"
                    );
                    match (want_more, want_page.last()) {
                        (true, Some((id, s))) => cursor = Some((*s, *id)),
                        _ => break,
                    }
                }
            }
        }
        assert!(windows_run > 500, "{windows_run} windows");
        assert!(beyond_probe > 20, "{beyond_probe} windows past the probe");
    }

    #[test]
    fn windows_shrink_then_cover_the_range() {
        let range = TimeRange {
            start_ns: 0,
            end_ns: 1 << 40,
        };
        let probe: Vec<u64> = (0..SearchWindows::probe_len(20) as u64)
            .map(|i| (1 << 40) - 1 - i * 10)
            .collect();
        let mut plan = SearchWindows::new(range, None, 20, probe.clone());
        let mut got = Vec::new();
        while let Some(w) = plan.next_window() {
            got.push(w);
        }
        assert_eq!(
            got[0],
            Some(probe[41]),
            "first window: the 42nd newest match"
        );
        assert_eq!(got[1], Some(probe[4 * 42 - 1]));
        assert_eq!(
            got.last(),
            Some(&None),
            "last window is the complete search"
        );
        let bounds: Vec<u64> = got.iter().flatten().copied().collect();
        assert!(bounds.windows(2).all(|w| w[0] > w[1]), "{bounds:?}");
        assert!(got.len() < 30, "{} windows", got.len());
        // A cursor moves the top of the windows to its trace start.
        let mut plan = SearchWindows::new(range, Some((1000, [0; 16])), 20, vec![]);
        assert_eq!(SearchWindows::probe_top(range, Some((1000, [0; 16]))), 1001);
        assert_eq!(plan.next_window(), Some(None), "no match below the cursor");
        assert_eq!(plan.next_window(), None);
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in [-1000i64, 0, 1, 59, 10_957, 20_415, 20_780, 100_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let id = [0xab; 16];
        let c = encode_cursor(42, &id);
        assert_eq!(decode_cursor(&c).unwrap(), (42, id));
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor(&"é".repeat(24)).is_err());
    }

    #[test]
    fn scalar_text_is_canonical() {
        assert_eq!(
            scalar_text(&AttrValue::Double(-0.0)),
            scalar_text(&AttrValue::Double(0.0))
        );
        assert_eq!(scalar_text(&AttrValue::Double(f64::NAN)), None);
        assert_ne!(
            scalar_text(&AttrValue::Int(200)),
            scalar_text(&AttrValue::Double(200.0))
        );
        assert_ne!(
            scalar_text(&AttrValue::Int(200)),
            scalar_text(&AttrValue::Str("200".into()))
        );
    }
}
