//! The native JSON API under `/api/native/` (documented in `docs/openapi.yaml`).
//! Errors are `{"error": "..."}` with HTTP 400/404/500/503. Timestamps and
//! durations are nanoseconds; span timings inside a trace are also given as
//! offsets from the trace start, which stay exact in JavaScript numbers.

// Handlers return axum's `Response` as their error type: it is exactly what
// the client receives, and boxing it would only add an allocation per error.
#![allow(clippy::result_large_err)]

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::model::hex;
use crate::storage::{
    LatencyPoint, LatencyQuery, StorageError, TimeRange, TraceQuery, TraceSummary,
};

use super::engine::{QueryError, RateBasis};
use super::params::{
    format_rfc3339, parse_attr_condition, parse_duration, parse_limit, parse_time, parse_trace_id,
    Pairs, ParamError,
};
use super::trace_json::{tier_name, TraceJson};
use super::QueryState;

/// Native API routes.
pub fn routes() -> Router<QueryState> {
    Router::new()
        .route("/api/native/traces/{trace_id}", get(get_trace))
        .route("/api/native/search", get(search))
        .route("/api/native/services", get(services))
        .route("/api/native/services/{service}/operations", get(operations))
        .route("/api/native/dependencies", get(dependencies))
        .route("/api/native/latency", get(latency))
        .route("/api/native/latency/series", get(latency_series))
        .route("/api/native/latency/operations", get(latency_by_operation))
        .route("/api/native/rates", get(rates))
}

/// Renders a query error as `{"error": "..."}` with its status.
pub fn error_response(e: QueryError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(error = %e, "query failed");
    }
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}

type ApiResult = Result<Json<Value>, Response>;

fn bad(e: ParamError) -> Response {
    error_response(QueryError::BadRequest(e))
}

/// The mandatory `start`/`end` window (RFC 3339 or Unix nanoseconds).
fn required_window(st: &QueryState, p: &Pairs) -> Result<TimeRange, Response> {
    let start = p.get(&["start"]).ok_or_else(|| {
        bad(ParamError::new(
            "missing start: a time range is required (start and end as RFC 3339 or Unix nanoseconds)",
        ))
    })?;
    let end = p.get(&["end"]).ok_or_else(|| {
        bad(ParamError::new(
            "missing end: a time range is required (start and end as RFC 3339 or Unix nanoseconds)",
        ))
    })?;
    let start = parse_time("start", start, 1).map_err(bad)?;
    let end = parse_time("end", end, 1).map_err(bad)?;
    st.check_window(start, end).map_err(bad)
}

/// An optional window; when absent, the last `max_window_ns`.
fn optional_window(st: &QueryState, p: &Pairs) -> Result<TimeRange, Response> {
    let start = p
        .get(&["start"])
        .map(|s| parse_time("start", s, 1))
        .transpose()
        .map_err(bad)?;
    let end = p
        .get(&["end"])
        .map(|s| parse_time("end", s, 1))
        .transpose()
        .map_err(bad)?;
    st.window_or_lookback(start, end, st.limits.max_window_ns)
        .map_err(bad)
}

async fn get_trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, Response> {
    let p = Pairs::parse(q.as_deref());
    let trace_id = parse_trace_id(&id).map_err(bad)?;
    let raw = p.flag(&["raw"]).map_err(bad)?;
    match st
        .trace_tiered(trace_id, raw)
        .await
        .map_err(error_response)?
    {
        // Streamed from the tree: a large trace never exists as a JSON value tree.
        Some((tree, cold_spans)) => match serde_json::to_vec(&TraceJson {
            tree: &tree,
            raw,
            cold_spans,
        }) {
            Ok(body) => Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response()),
            Err(e) => Err(error_response(QueryError::Storage(StorageError::Backend(
                format!("cannot encode trace {}: {e}", hex(&trace_id)),
            )))),
        },
        None => Err(error_response(QueryError::NotFound(format!(
            "trace {} not found",
            hex(&trace_id)
        )))),
    }
}

/// Parses the native search parameters into a [`TraceQuery`].
pub fn parse_search(st: &QueryState, p: &Pairs) -> Result<TraceQuery, Response> {
    let range = required_window(st, p)?;
    let mut attributes = Vec::new();
    for a in p.all("attr") {
        attributes.push(parse_attr_condition(a, '=').map_err(bad)?);
    }
    let dur = |name: &str| {
        p.get(&[name])
            .map(|v| parse_duration(name, v, 1))
            .transpose()
            .map_err(bad)
    };
    Ok(TraceQuery {
        service: p.get(&["service"]).map(str::to_string),
        operation: p.get(&["operation"]).map(str::to_string),
        attributes,
        min_duration_ns: dur("min_duration")?,
        max_duration_ns: dur("max_duration")?,
        errors_only: p.flag(&["errors_only"]).map_err(bad)?,
        range,
        limit: parse_limit(
            p.get(&["limit"]),
            st.limits.default_limit,
            st.limits.max_limit,
        )
        .map_err(bad)?,
        cursor: p.get(&["cursor"]).map(str::to_string),
    })
}

async fn search(State(st): State<QueryState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let query = parse_search(&st, &p)?;
    let page = st.search(&query).await.map_err(error_response)?;
    Ok(Json(json!({
        "traces": page.traces.iter().map(summary_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

/// One search result as native JSON.
pub fn summary_json(t: &TraceSummary) -> Value {
    json!({
        "trace_id": hex(&t.trace_id),
        "root_service": t.root_service,
        "root_operation": t.root_operation,
        "start_ns": t.start_ns,
        "start_time": format_rfc3339(t.start_ns),
        "duration_ns": t.duration_ns,
        "span_count": t.span_count,
        "services": t.services,
        "error_count": t.error_count,
        "cold_spans": t.cold_spans,
        "tier": tier_name(t.cold_spans, t.span_count),
    })
}

async fn services(State(st): State<QueryState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let range = optional_window(&st, &p)?;
    let services = st.services(range).await.map_err(error_response)?;
    Ok(Json(json!({ "services": services })))
}

async fn operations(
    State(st): State<QueryState>,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let range = optional_window(&st, &p)?;
    let kind = p.get(&["span_kind", "kind"]);
    let ops = st
        .operations(&service, range)
        .await
        .map_err(error_response)?;
    let ops: Vec<Value> = ops
        .iter()
        .filter(|o| kind.is_none_or(|k| o.kind.as_str() == k))
        .map(|o| json!({ "name": o.name, "span_kind": o.kind.as_str() }))
        .collect();
    Ok(Json(json!({ "service": service, "operations": ops })))
}

async fn dependencies(State(st): State<QueryState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let range = required_window(&st, &p)?;
    let edges = st.dependencies(range).await.map_err(error_response)?;
    let mut nodes: Vec<&str> = edges
        .iter()
        .flat_map(|e| [e.caller.as_str(), e.callee.as_str()])
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    Ok(Json(json!({
        "start_ns": range.start_ns,
        "end_ns": range.end_ns,
        "nodes": nodes,
        "edges": edges.iter().map(|e| json!({
            "caller": e.caller,
            "callee": e.callee,
            "calls": e.calls,
            "errors": e.errors,
            "error_rate": if e.calls == 0 { 0.0 } else { e.errors as f64 / e.calls as f64 },
            "avg_ns": e.avg_ns,
            "p95_ns": e.p95_ns,
        })).collect::<Vec<_>>(),
    })))
}

fn point_json(p: &LatencyPoint, step_s: f64) -> Value {
    json!({
        "start_ns": p.start_ns,
        "start_time": format_rfc3339(p.start_ns),
        "count": p.count,
        "errors": p.errors,
        "p50_ns": p.p50_ns,
        "p95_ns": p.p95_ns,
        "p99_ns": p.p99_ns,
        "rate_per_s": if step_s > 0.0 { p.count as f64 / step_s } else { 0.0 },
        "error_rate": if p.count == 0 { 0.0 } else { p.errors as f64 / p.count as f64 },
    })
}

/// One total from the store's answer to a total query (normally one point; if
/// a store splits it anyway, counts add and the busiest point's percentiles stand).
fn fold_total(points: Vec<LatencyPoint>, start_ns: u64) -> LatencyPoint {
    let init = LatencyPoint {
        start_ns,
        count: 0,
        errors: 0,
        p50_ns: 0,
        p95_ns: 0,
        p99_ns: 0,
    };
    let mut busiest = 0;
    points.into_iter().fold(init, |mut acc, p| {
        if p.count > busiest {
            busiest = p.count;
            acc.p50_ns = p.p50_ns;
            acc.p95_ns = p.p95_ns;
            acc.p99_ns = p.p99_ns;
        }
        acc.count += p.count;
        acc.errors += p.errors;
        acc
    })
}

fn required_service(p: &Pairs) -> Result<String, Response> {
    p.get(&["service"]).map(str::to_string).ok_or_else(|| {
        bad(ParamError::new(
            "missing service: name the service to measure",
        ))
    })
}

async fn latency(State(st): State<QueryState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let service = required_service(&p)?;
    let operation = p.get(&["operation"]).map(str::to_string);
    let range = required_window(&st, &p)?;
    let exact = p.flag(&["exact"]).map_err(bad)?;
    let secs = (range.end_ns - range.start_ns) as f64 / 1e9;
    let (points, basis) = match &operation {
        // One operation: all of its spans, whatever their kind.
        Some(op) => (
            st.latency(&LatencyQuery {
                service: service.clone(),
                operation: Some(op.clone()),
                range,
                step_ns: None,
                kinds: vec![],
            })
            .await,
            RateBasis::AllSpans,
        ),
        None => match st.service_latency(&service, range, None).await {
            Ok((p, b)) => (Ok(p), b),
            Err(e) => (Err(e), RateBasis::AllSpans),
        },
    };
    let points = points.map_err(error_response)?;
    let total = fold_total(points, range.start_ns);
    let mut body = point_json(&total, secs);
    body["service"] = json!(service);
    body["operation"] = json!(operation);
    body["source"] = json!("rollups");
    body["basis"] = json!(basis.as_str());
    if exact {
        let v = st
            .exact_percentiles(
                &service,
                operation.as_deref(),
                &basis.kinds(),
                range,
                &[0.5, 0.95, 0.99],
            )
            .await
            .map_err(error_response)?;
        body["exact"] = if v.len() == 3 {
            json!({ "p50_ns": v[0], "p95_ns": v[1], "p99_ns": v[2] })
        } else {
            Value::Null
        };
    }
    Ok(Json(body))
}

async fn latency_series(State(st): State<QueryState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let service = required_service(&p)?;
    let operation = p.get(&["operation"]).map(str::to_string);
    let range = required_window(&st, &p)?;
    let step_ns = match p.get(&["step"]) {
        Some(s) => parse_duration("step", s, 1_000_000_000).map_err(bad)?,
        None => {
            // About 60 points, rounded up to whole minutes.
            let m = crate::rollup::MINUTE_NS;
            ((range.end_ns - range.start_ns) / 60).div_ceil(m).max(1) * m
        }
    };
    let step_s = step_ns as f64 / 1e9;
    // Service level: entry spans (or all, for a service without any), decided
    // on the main range and kept for the comparison range.
    let (points, basis) = match &operation {
        Some(_) => (
            st.latency(&LatencyQuery {
                service: service.clone(),
                operation: operation.clone(),
                range,
                step_ns: Some(step_ns),
                kinds: vec![],
            })
            .await
            .map_err(error_response)?,
            RateBasis::AllSpans,
        ),
        None => st
            .service_latency(&service, range, Some(step_ns))
            .await
            .map_err(error_response)?,
    };
    let run = |range: TimeRange| {
        let st = st.clone();
        let q = LatencyQuery {
            service: service.clone(),
            operation: operation.clone(),
            range,
            step_ns: Some(step_ns),
            kinds: basis.kinds(),
        };
        async move { st.latency(&q).await }
    };
    let mut body = json!({
        "service": service,
        "operation": operation,
        "basis": basis.as_str(),
        "step_ns": step_ns,
        "start_ns": range.start_ns,
        "end_ns": range.end_ns,
        "points": points.iter().map(|x| point_json(x, step_s)).collect::<Vec<_>>(),
    });
    if let Some(c) = p.get(&["compare_start"]) {
        let cs = parse_time("compare_start", c, 1).map_err(bad)?;
        let width = range.end_ns - range.start_ns;
        let cr = st.check_window(cs, cs.saturating_add(width)).map_err(bad)?;
        let cp = run(cr).await.map_err(error_response)?;
        body["compare"] = json!({
            "start_ns": cr.start_ns,
            "end_ns": cr.end_ns,
            "points": cp.iter().map(|x| point_json(x, step_s)).collect::<Vec<_>>(),
        });
    }
    Ok(Json(body))
}

/// p50/p95/p99 and rates of every operation of a service over a window.
async fn latency_by_operation(State(st): State<QueryState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let service = required_service(&p)?;
    let range = required_window(&st, &p)?;
    let secs = (range.end_ns - range.start_ns) as f64 / 1e9;
    let mut ops = st
        .operations(&service, range)
        .await
        .map_err(error_response)?;
    // Rollups are per operation name; the same name under two kinds is one row.
    ops.dedup_by(|a, b| a.name == b.name);
    let mut rows = Vec::with_capacity(ops.len());
    for op in ops {
        let points = st
            .latency(&LatencyQuery {
                service: service.clone(),
                operation: Some(op.name.clone()),
                range,
                step_ns: None,
                kinds: vec![],
            })
            .await
            .map_err(error_response)?;
        if !points.is_empty() {
            let mut row = point_json(&fold_total(points, range.start_ns), secs);
            row["operation"] = json!(op.name);
            row["span_kind"] = json!(op.kind.as_str());
            rows.push(row);
        }
    }
    Ok(Json(
        json!({ "service": service, "start_ns": range.start_ns, "end_ns": range.end_ns, "operations": rows }),
    ))
}

async fn rates(State(st): State<QueryState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Pairs::parse(q.as_deref());
    let range = required_window(&st, &p)?;
    let rates = st.rates(range).await.map_err(error_response)?;
    Ok(Json(json!({
        "start_ns": range.start_ns,
        "end_ns": range.end_ns,
        "services": rates.iter().map(|r| json!({
            "service": r.service,
            "basis": r.basis.as_str(),
            "count": r.count,
            "errors": r.errors,
            "rate_per_s": r.rate_per_s,
            "error_rate": r.error_rate,
        })).collect::<Vec<_>>(),
    })))
}
