//! Logic shared by the networked sinks (PostgreSQL and ClickHouse): the parts
//! of the [`SpanStore`](super::SpanStore) semantics that are computed in Rust
//! rather than in SQL, so both sinks (and the SQLite sink they mirror) agree
//! exactly: search cursors, trace summaries, rollup merging into latency points
//! and dependency edges, nearest-rank positions, and attribute filter typing.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    DependencyEdge, LatencyPoint, LatencyQuery, SearchPage, StorageError, StorageResult, TimeRange,
    TraceSummary,
};
use crate::model::{AttrValue, SpanId, StatusCode, TraceId};
use crate::rollup::{LatencySketch, MINUTE_NS};

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
    match v {
        AttrValue::Str(s) => Some((T_STR, s.clone())),
        AttrValue::Bool(b) => Some((T_BOOL, b.to_string())),
        AttrValue::Int(i) => Some((T_INT, i.to_string())),
        AttrValue::Double(d) if d.is_nan() => None,
        AttrValue::Double(d) if *d == 0.0 => Some((T_DOUBLE, "0".into())),
        AttrValue::Double(d) => Some((T_DOUBLE, format!("{d:?}"))),
        // Bytes, arrays and maps stay in the span blob but are not searchable.
        _ => None,
    }
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
            }
        })
        .collect()
}

/// Serializes a latency sketch for storage (JSON, like the SQLite sink).
pub(crate) fn encode_sketch(s: &LatencySketch) -> StorageResult<String> {
    serde_json::to_string(s)
        .map_err(|e| StorageError::Backend(format!("cannot encode latency sketch: {e}")))
}

/// Parses a stored latency sketch.
pub(crate) fn decode_sketch(b: &[u8]) -> StorageResult<LatencySketch> {
    serde_json::from_slice(b).map_err(|e| {
        StorageError::Backend(format!(
            "stored latency sketch is corrupt ({e}); delete the affected rollup rows"
        ))
    })
}

/// Minute buckets whose start lies in `[floor_minute(start), end)`.
pub(crate) fn minute_bounds(range: TimeRange) -> (u64, u64) {
    (range.start_ns - range.start_ns % MINUTE_NS, range.end_ns)
}

/// Merges edge rollup rows `(caller, callee, calls, errors, sketch)` into edges.
pub(crate) fn merge_edges(
    rows: impl IntoIterator<Item = (String, String, u64, u64, LatencySketch)>,
) -> Vec<DependencyEdge> {
    let mut acc: BTreeMap<(String, String), (u64, u64, LatencySketch)> = BTreeMap::new();
    for (caller, callee, calls, errors, sketch) in rows {
        let e = acc.entry((caller, callee)).or_default();
        e.0 += calls;
        e.1 += errors;
        e.2.merge(&sketch);
    }
    acc.into_iter()
        .map(
            |((caller, callee), (calls, errors, sketch))| DependencyEdge {
                caller,
                callee,
                calls,
                errors,
                avg_ns: sketch.mean(),
                p95_ns: sketch.quantile(0.95),
            },
        )
        .collect()
}

/// Validates a latency query's step and returns it (`None` for one total).
pub(crate) fn latency_step(q: &LatencyQuery, max_points: usize) -> StorageResult<Option<u64>> {
    let (lo, _) = minute_bounds(q.range);
    match q.step_ns {
        Some(s) if s == 0 || s % MINUTE_NS != 0 => Err(StorageError::InvalidQuery(format!(
            "step_ns {s} must be a positive multiple of 60s (60000000000)"
        ))),
        Some(s) => {
            let buckets = (q.range.end_ns - lo).div_ceil(s);
            if buckets > max_points as u64 {
                return Err(StorageError::InvalidQuery(format!(
                    "{buckets} latency buckets requested, at most {max_points} allowed: use a larger step"
                )));
            }
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

/// Folds operation rollup rows `(minute, count, errors, sketch)` into latency
/// points: every bucket of the window is present (empty ones with zeros), or a
/// single point at the window start when there is no step.
pub(crate) fn latency_points(
    q: &LatencyQuery,
    step: Option<u64>,
    rows: impl IntoIterator<Item = (u64, u64, u64, LatencySketch)>,
) -> Vec<LatencyPoint> {
    let (lo, _) = minute_bounds(q.range);
    let mut buckets: BTreeMap<u64, (u64, u64, LatencySketch)> = BTreeMap::new();
    if let Some(s) = step {
        let mut b = lo;
        while b < q.range.end_ns {
            buckets.insert(b, Default::default());
            b += s;
        }
    } else {
        buckets.insert(q.range.start_ns, Default::default());
    }
    for (minute, count, errors, sketch) in rows {
        let key = match step {
            Some(s) => lo + (minute.saturating_sub(lo)) / s * s,
            None => q.range.start_ns,
        };
        let e = buckets.entry(key).or_default();
        e.0 += count;
        e.1 += errors;
        e.2.merge(&sketch);
    }
    buckets
        .into_iter()
        .map(|(start_ns, (count, errors, s))| LatencyPoint {
            start_ns,
            count,
            errors,
            p50_ns: s.quantile(0.5),
            p95_ns: s.quantile(0.95),
            p99_ns: s.quantile(0.99),
        })
        .collect()
}

/// Checks quantiles are in `[0, 1]`.
pub(crate) fn check_quantiles(qs: &[f64]) -> StorageResult<()> {
    match qs.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        Some(q) => Err(StorageError::InvalidQuery(format!(
            "quantile {q} is outside [0, 1]"
        ))),
        None => Ok(()),
    }
}

/// Nearest rank (1-based, in `1..=n`) of quantile `q` among `n` values.
pub(crate) fn nearest_rank(q: f64, n: u64) -> u64 {
    ((q * n as f64).ceil() as u64).clamp(1, n)
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

/// Current time in nanoseconds since the epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
