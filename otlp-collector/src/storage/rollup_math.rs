//! Rollup math shared by every sink: the per-minute operation and edge
//! rollups are stored by each sink in its own tables, but merging them into
//! dependency edges and latency points, checking a latency query's step and
//! quantiles, and the stored form of a latency sketch are computed here once,
//! so SQLite, PostgreSQL and ClickHouse give identical answers.

use std::collections::BTreeMap;

use super::{DependencyEdge, LatencyPoint, LatencyQuery, StorageError, StorageResult, TimeRange};
use crate::rollup::{LatencySketch, MINUTE_NS};

/// Serializes a latency sketch for storage (JSON; SQLite stores its bytes as a BLOB, the
/// networked sinks as text).
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
