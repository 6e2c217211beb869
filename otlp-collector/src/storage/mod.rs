//! The storage roles every sink implements (SQLite, PostgreSQL, ClickHouse,
//! null; see [`SpanStore`] and the traits it gathers), and the query types they speak.
//!
//! Rules every sink follows (checked by the shared conformance suite):
//! - `write_spans` is idempotent on `(trace_id, span_id)`: a retried batch never
//!   duplicates a span.
//! - Every query carries a time range and a limit; results come newest first.
//! - Values are always passed as bound parameters, never spliced into SQL.

use serde::{Deserialize, Serialize};

use crate::model::{AttrValue, Span, SpanKind, TraceId};

pub mod budget;
pub mod clickhouse;
pub mod cold;
pub mod connecting;
pub mod null;
pub mod postgres;
pub mod retention;
mod roles;
mod rollup_math;
mod sink_common;
pub mod span_codec;
pub mod sqlite;
pub mod url;

pub use roles::{
    AnalyticsReader, Retention, SamplingCountRow, SamplingCounts, SamplingPeriodCounts, SpanReader,
    SpanStore, SpanWriter, TraceReader,
};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be reached or the connection broke (retryable).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database rejected the operation (not retryable as is).
    #[error("storage error: {0}")]
    Backend(String),
    /// The query was invalid (e.g. a malformed cursor).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

impl StorageError {
    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

/// Result alias for storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// A half-open time window `[start_ns, end_ns)` in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// Inclusive start.
    pub start_ns: u64,
    /// Exclusive end.
    pub end_ns: u64,
}

/// One attribute condition of a search. With [`AttrMatch::Typed`] (the native
/// API) the span attribute `key` equals `value` with the same type (a string
/// `"200"` does not match the integer `200`); with [`AttrMatch::Text`] (the
/// Jaeger APIs) `value` is a string and the attribute matches, whatever its
/// type, when its text as Jaeger renders it equals that string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttrFilter {
    /// Attribute key.
    pub key: String,
    /// Expected value (Str, Bool, Int or Double; always Str for [`AttrMatch::Text`]).
    pub value: AttrValue,
    /// How `value` is compared.
    #[serde(default)]
    pub mode: AttrMatch,
}

/// How an [`AttrFilter`] compares values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrMatch {
    /// Same type and value.
    #[default]
    Typed,
    /// Same text, as Jaeger renders a tag: strings as is, bools as
    /// `true`/`false`, ints in decimal, doubles as Go's
    /// `strconv.FormatFloat(v, 'g', 10, 64)`. Jaeger matches tags this way, so
    /// `http.status_code:500` finds both the OTLP int and Zipkin's string tag.
    Text,
}

impl AttrFilter {
    /// A typed condition: `key` equals `value` with the same type.
    pub fn typed(key: impl Into<String>, value: AttrValue) -> Self {
        AttrFilter {
            key: key.into(),
            value,
            mode: AttrMatch::Typed,
        }
    }

    /// A Jaeger-style condition: `key` rendered as text equals `text`.
    pub fn text(key: impl Into<String>, text: impl Into<String>) -> Self {
        AttrFilter {
            key: key.into(),
            value: AttrValue::Str(text.into().into()),
            mode: AttrMatch::Text,
        }
    }

    /// The typed values a stored attribute may have to satisfy this condition:
    /// the value itself for a typed condition; for a text condition the string
    /// and every bool, int and double whose Jaeger text is exactly that string
    /// (`"500"` → `"500"`, `500`, `500.0`; `"1.0"` → only the string, since
    /// Jaeger prints the double `1.0` as `1`). Stores match any of them.
    pub fn candidates(&self) -> Vec<AttrValue> {
        let text = match (&self.mode, &self.value) {
            (AttrMatch::Typed, v) => return vec![v.clone()],
            (AttrMatch::Text, AttrValue::Str(t)) => t.to_string(),
            (AttrMatch::Text, AttrValue::Double(d)) => jaeger_float_text(*d),
            (AttrMatch::Text, other) => other.to_text(),
        };
        let mut out = vec![AttrValue::Str(text.as_str().into())];
        match text.as_str() {
            "true" => out.push(AttrValue::Bool(true)),
            "false" => out.push(AttrValue::Bool(false)),
            _ => {}
        }
        if let Ok(i) = text.parse::<i64>() {
            if i.to_string() == text {
                out.push(AttrValue::Int(i));
            }
        }
        if let Ok(d) = text.parse::<f64>() {
            if d.is_finite() && jaeger_float_text(d) == text {
                out.push(AttrValue::Double(d));
            }
        }
        out
    }
}

/// A double as Jaeger renders a `float64` tag as text: Go's
/// `strconv.FormatFloat(v, 'g', 10, 64)` (10 significant digits, exponent form
/// below 1e-4 and from 1e10, trailing zeros dropped).
pub fn jaeger_float_text(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{d:.9e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..10).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        trim(&format!("{d:.*}", (9 - exp) as usize))
    }
}

/// A trace search. A trace matches when at least one of its spans in the time
/// range satisfies every condition at once. The limit applies after all filters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceQuery {
    /// Service name of the matching span.
    pub service: Option<String>,
    /// Span name (operation) of the matching span.
    pub operation: Option<String>,
    /// Attribute conditions on the matching span (all must hold).
    pub attributes: Vec<AttrFilter>,
    /// Minimum duration of the matching span (inclusive).
    pub min_duration_ns: Option<u64>,
    /// Maximum duration of the matching span (inclusive).
    pub max_duration_ns: Option<u64>,
    /// Only spans with status `Error` match.
    pub errors_only: bool,
    /// Time window for the matching span's start (mandatory).
    pub range: TimeRange,
    /// Maximum number of traces returned (the API caps it at 100).
    pub limit: usize,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// Trace id.
    pub trace_id: TraceId,
    /// Service of the root span (or of the earliest span when the root is missing).
    pub root_service: String,
    /// Name of the root span (or of the earliest span).
    pub root_operation: String,
    /// Earliest span start in the trace (ns).
    pub start_ns: u64,
    /// Latest end minus earliest start (ns).
    pub duration_ns: u64,
    /// Number of stored spans in the trace.
    pub span_count: u64,
    /// Distinct services, sorted.
    pub services: Vec<String>,
    /// Number of spans with status `Error`.
    pub error_count: u64,
    /// Spans read from the cold tier (`storage::cold`); 0 for a hot trace.
    #[serde(default)]
    pub cold_spans: u64,
}

/// A trace and how many of its spans came from the cold tier
/// ([`TraceReader::get_trace_tiered`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TieredTrace {
    /// All spans, as [`TraceReader::get_trace`] returns them.
    pub spans: Vec<Span>,
    /// Distinct span ids read from the cold tier.
    pub cold_spans: u64,
}

/// One page of search results, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchPage {
    /// Matching traces, newest first.
    pub traces: Vec<TraceSummary>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// An operation (span name) of a service, with its kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Operation {
    /// Span name.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
}

/// A caller → callee edge of the service graph over a window, merged from
/// per-minute rollups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DependencyEdge {
    /// Calling service.
    pub caller: String,
    /// Called service (or an uninstrumented peer named by a `CLIENT` span).
    pub callee: String,
    /// Number of calls.
    pub calls: u64,
    /// Number of failed calls.
    pub errors: u64,
    /// Average latency (ns).
    pub avg_ns: u64,
    /// 95th percentile latency (ns), from the merged sketch.
    pub p95_ns: u64,
}

/// A latency/rate question over per-minute rollups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyQuery {
    /// Service.
    pub service: String,
    /// Operation; `None` aggregates the whole service.
    pub operation: Option<String>,
    /// Window.
    pub range: TimeRange,
    /// Bucket width for a time series (a multiple of one minute); `None` for one total.
    pub step_ns: Option<u64>,
    /// Span kinds counted; empty counts every kind. A service's requests are
    /// its `SERVER` and `CONSUMER` spans (see `query::engine::ENTRY_KINDS`).
    #[serde(default)]
    pub kinds: Vec<SpanKind>,
}

/// Latency and rate figures for one time bucket (or the whole window).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyPoint {
    /// Bucket start (ns).
    pub start_ns: u64,
    /// Requests (spans) counted.
    pub count: u64,
    /// Of which errors.
    pub errors: u64,
    /// Median latency (ns).
    pub p50_ns: u64,
    /// 95th percentile (ns).
    pub p95_ns: u64,
    /// 99th percentile (ns).
    pub p99_ns: u64,
}

/// What retention removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Spans deleted (may be an estimate where a sink drops whole partitions).
    pub spans_deleted: u64,
    /// Rollup rows deleted.
    pub rollups_deleted: u64,
}

/// How much disk a store takes, for its size budget ([`budget`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The directory holding the store's files (its free space is what a
    /// full disk is judged by); `None` for a database server, whose disk is
    /// not the collector's (then only an explicit budget applies).
    pub dir: Option<std::path::PathBuf>,
    /// Bytes of the store's files on disk (database, journal, shared memory).
    pub file_bytes: u64,
    /// Bytes holding data: what the size budget (`retention.max_disk_bytes`)
    /// is compared with. Space freed by deletes is reused by later writes,
    /// so the files stay about this size.
    pub live_bytes: u64,
    /// Start of the oldest stored span (ns), `None` when the store is empty.
    pub oldest_ns: Option<u64>,
}

/// What one size eviction removed ([`Retention::evict_oldest`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictionReport {
    /// Spans deleted.
    pub spans_deleted: u64,
    /// Rollup rows deleted (whole minutes before the cutoff).
    pub rollups_deleted: u64,
    /// Everything that started before this (ns) was deleted; 0 when nothing was.
    pub cutoff_ns: u64,
}

/// Where an [`ExportPage`] ended, opaque to the caller: SQLite pages by
/// `(start_ns, row id)`; PostgreSQL and ClickHouse page one slice (a day,
/// a trace-id bucket of a day) at a time by `(trace_id, span_id)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCursor {
    /// Start of the last span returned (ns).
    pub start_ns: u64,
    /// The sink's tiebreaker among equal starts (SQLite's row id), or the
    /// slice being read (PostgreSQL and ClickHouse: its day number).
    pub row: i64,
    /// The sink's position inside the slice (ClickHouse: the trace-id
    /// buckets of the day and the current one); 0 for the others.
    pub slice: u64,
    /// The last `(trace_id, span_id)` returned in the slice; `None` at the
    /// slice's start (and always for SQLite).
    pub key: Option<(crate::model::TraceId, crate::model::SpanId)>,
}

/// One page of [`Retention::export_before`].
#[derive(Clone, Debug, Default)]
pub struct ExportPage {
    /// Spans, oldest first.
    pub spans: Vec<Span>,
    /// Pass as `after` for the next page; `None` when this was the last.
    pub next: Option<ExportCursor>,
}

/// Most trace ids one [`TraceReader::get_traces`] call accepts (duplicates
/// included). It bounds the size of the statement a sink sends (SQLite binds
/// ids in chunks of 500, below its variable limit; PostgreSQL binds one array;
/// ClickHouse sends the ids in the query text) and, with the per-trace size,
/// what one call holds in memory. 1,000 is ten times the query API's largest
/// page; callers with more ids split them (see `QueryState::traces`).
pub const MAX_TRACES_PER_READ: usize = 1_000;

/// The spans of one trace as [`TraceReader::get_traces`] returns them.
pub type TraceSpans = (TraceId, Vec<Span>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_like_go_g10() {
        for (d, want) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (500.0, "500"),
            (-2.25, "-2.25"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e10, "1e+10"),
            (123456789.0, "123456789"),
            (1234567890.0, "1234567890"),
            (12345678901.0, "1.23456789e+10"),
            (0.1 + 0.2, "0.3"),
            (1.0 / 3.0, "0.3333333333"),
            (9.99999999999, "10"),
            (1e21, "1e+21"),
        ] {
            assert_eq!(jaeger_float_text(d), want, "{d}");
        }
    }

    #[test]
    fn text_filters_accept_every_type_with_that_text() {
        let c = AttrFilter::text("k", "500").candidates();
        assert_eq!(
            c,
            vec![
                AttrValue::Str("500".into()),
                AttrValue::Int(500),
                AttrValue::Double(500.0)
            ]
        );
        assert_eq!(
            AttrFilter::text("k", "1.0").candidates(),
            vec![AttrValue::Str("1.0".into())]
        );
        assert_eq!(
            AttrFilter::text("k", "1.5").candidates(),
            vec![AttrValue::Str("1.5".into()), AttrValue::Double(1.5)]
        );
        assert_eq!(
            AttrFilter::text("k", "true").candidates(),
            vec![AttrValue::Str("true".into()), AttrValue::Bool(true)]
        );
        assert_eq!(
            AttrFilter::text("k", "0500").candidates(),
            vec![AttrValue::Str("0500".into())]
        );
        assert_eq!(
            AttrFilter::typed("k", AttrValue::Int(5)).candidates(),
            vec![AttrValue::Int(5)]
        );
    }
}
