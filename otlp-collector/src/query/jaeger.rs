//! The Jaeger v1 HTTP query API (the one Grafana's Jaeger data source and
//! Jaeger UIs before the v3 search call), answered as Jaeger's query service
//! answers: the `{data,total,limit,offset,errors}` envelope (`total` counts
//! services and operations, and is 0 for traces and dependencies, as in
//! Jaeger), traces in Jaeger's JSON model ([`super::jaeger_model`]), Jaeger's
//! parameters and defaults (a 100-trace search limit, a two-day search window
//! and a one-day dependency window when none is given, `lookback` ignored when
//! `start` is given), `?prettyPrint`.

use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::SpanKind;
use crate::storage::{AttrFilter, TraceQuery};

use super::engine::QueryError;
use super::jaeger_model::{jaeger_trace_id, JaegerTrace};
use super::params::{
    now_ns, parse_duration, parse_jaeger_trace_id, parse_limit_clamped, parse_lookback, parse_time,
    parse_trace_id, Pairs, ParamError,
};
use super::tree::TraceTree;
use super::QueryState;

/// Jaeger's search window when the request gives no `start` (two days).
const DEFAULT_SEARCH_LOOKBACK_NS: u64 = 2 * 86_400 * 1_000_000_000;
/// Jaeger's dependency window when the request gives no `lookback` (one day).
const DEFAULT_DEPENDENCY_LOOKBACK_NS: u64 = 86_400 * 1_000_000_000;

/// Jaeger v1 routes.
pub fn routes() -> Router<QueryState> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
}

/// Jaeger's response envelope.
#[derive(Serialize)]
struct Envelope<D: Serialize> {
    data: D,
    errors: Option<Vec<Value>>,
    limit: u32,
    offset: u32,
    total: usize,
}

/// Writes `body` as JSON, indented with four spaces when the request has
/// `prettyPrint` set to anything but `false` (as Jaeger does).
fn json_response(p: &Pairs, body: &impl Serialize) -> Response {
    let pretty = p.get(&["prettyPrint"]).is_some_and(|v| v != "false");
    let mut out = Vec::new();
    let written = if pretty {
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        body.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
    } else {
        body.serialize(&mut serde_json::Serializer::new(&mut out))
    };
    match written {
        Ok(()) => ([(CONTENT_TYPE, "application/json")], out).into_response(),
        Err(e) => error_response(QueryError::Storage(crate::storage::StorageError::Backend(
            format!("cannot render the response as JSON: {e}"),
        ))),
    }
}

fn envelope<D: Serialize>(
    p: &Pairs,
    data: D,
    total: usize,
    errors: Option<Vec<Value>>,
) -> Response {
    json_response(
        p,
        &Envelope {
            data,
            errors,
            limit: 0,
            offset: 0,
            total,
        },
    )
}

/// A Jaeger-shaped error: `{"data":null,...,"errors":[{"code":400,"msg":"..."}]}`.
pub fn error_response(e: QueryError) -> Response {
    let code = e.status();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Envelope {
        data: (),
        errors: Some(vec![json!({ "code": code, "msg": e.to_string() })]),
        limit: 0,
        offset: 0,
        total: 0,
    };
    (status, axum::Json(body)).into_response()
}

fn bad(e: ParamError) -> Response {
    error_response(QueryError::BadRequest(e))
}

type JResult = Result<Response, Response>;

async fn services(State(st): State<QueryState>, RawQuery(q): RawQuery) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let s = st.services(range).await.map_err(error_response)?;
    let n = s.len();
    Ok(envelope(&p, s, n, None))
}

async fn service_operations(
    State(st): State<QueryState>,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let ops = st
        .operations(&service, range)
        .await
        .map_err(error_response)?;
    // Unique names, whatever their kinds.
    let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
    names.sort_unstable();
    names.dedup();
    let n = names.len();
    Ok(envelope(&p, names, n, None))
}

async fn operations(State(st): State<QueryState>, RawQuery(q): RawQuery) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let service = p
        .get(&["service"])
        .ok_or_else(|| bad(ParamError::new("parameter 'service' is required")))?;
    let kind = p.get(&["spanKind"]);
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let ops = st
        .operations(service, range)
        .await
        .map_err(error_response)?;
    let data: Vec<Value> = ops
        .iter()
        .filter(|o| kind.is_none_or(|k| kind_name(o.kind) == k))
        .map(|o| json!({ "name": o.name, "spanKind": kind_name(o.kind) }))
        .collect();
    let n = data.len();
    Ok(envelope(&p, data, n, None))
}

/// Jaeger's span-kind text (`""` for unspecified, as Jaeger stores no tag then).
fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "",
        other => other.as_str(),
    }
}

/// An optional µs timestamp parameter (`start`, `end`), checked as Jaeger does.
fn micros_param(p: &Pairs, name: &str) -> Result<Option<u64>, ParamError> {
    p.get(&[name])
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ParamError::new(format!(
                    "unable to parse param '{name}': expected microseconds since the epoch, got {v:?}"
                ))
            })
        })
        .transpose()
        .map(|o| o.map(|us| us.saturating_mul(1000)))
}

async fn get_trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let trace_id = parse_jaeger_trace_id(&id).map_err(bad)?;
    // `start` / `end` are lookup hints in Jaeger; the whole trace is read here,
    // but malformed values are refused as Jaeger refuses them.
    micros_param(&p, "start").map_err(bad)?;
    micros_param(&p, "end").map_err(bad)?;
    let raw = p.flag(&["raw"]).map_err(bad)?;
    match st.trace(trace_id, raw).await.map_err(error_response)? {
        Some(t) => Ok(traces_response(&p, std::slice::from_ref(&t), None)),
        None => Err(error_response(QueryError::NotFound(
            "trace not found".into(),
        ))),
    }
}

/// The search window: `start`/`end` in µs; without `start`, `lookback` (the
/// UI's `1h`, `2d`, `2w`, or a Go duration) if it parses, else two days;
/// without `end`, now. `lookback` never fails a request.
fn search_window(st: &QueryState, p: &Pairs) -> Result<crate::storage::TimeRange, ParamError> {
    let start = micros_param(p, "start")?;
    let end = micros_param(p, "end")?.unwrap_or_else(now_ns);
    let start = start.unwrap_or_else(|| {
        let lookback = p
            .get(&["lookback"])
            .and_then(parse_lookback)
            .unwrap_or(DEFAULT_SEARCH_LOOKBACK_NS);
        end.saturating_sub(lookback)
    });
    st.jaeger_window(start, end)
}

/// Parses Jaeger's `/api/traces` search parameters.
fn parse_find(st: &QueryState, p: &Pairs) -> Result<TraceQuery, ParamError> {
    let range = search_window(st, p)?;
    let mut attributes = Vec::new();
    let mut errors_only = false;
    let mut add = |k: &str, v: &str| {
        if (k == "error" && v == "true") || (k == "otel.status_code" && v == "ERROR") {
            errors_only = true;
        } else {
            // Jaeger matches tags by their text, whatever the stored type.
            attributes.push(AttrFilter::text(k, v));
        }
    };
    for t in p.all("tag") {
        let (k, v) = t.split_once(':').ok_or_else(|| {
            ParamError::new(format!(
                "malformed 'tag' parameter {t:?}: expected key:value"
            ))
        })?;
        add(k, v);
    }
    for tags in p.all("tags") {
        let map: serde_json::Map<String, Value> = serde_json::from_str(tags).map_err(|e| {
            ParamError::new(format!(
                "malformed 'tags' parameter: expected a JSON object of strings, e.g. {{\"http.status_code\":\"500\"}} ({e})"
            ))
        })?;
        for (k, v) in &map {
            match v {
                Value::String(s) => add(k, s),
                Value::Bool(_) | Value::Number(_) => add(k, &v.to_string()),
                _ => {
                    return Err(ParamError::new(format!(
                        "malformed 'tags' parameter: the value of {k:?} must be a string"
                    )))
                }
            }
        }
    }
    let dur = |name: &str| {
        p.get(&[name])
            .map(|v| parse_duration(name, v, 1000))
            .transpose()
    };
    Ok(TraceQuery {
        // Jaeger leaves the service optional where its storage can search
        // every service; all of ours can.
        service: p.get(&["service"]).map(str::to_string),
        operation: p.get(&["operation"]).map(str::to_string),
        attributes,
        min_duration_ns: dur("minDuration")?,
        max_duration_ns: dur("maxDuration")?,
        errors_only,
        range,
        limit: parse_limit_clamped(
            p.get(&["limit"]),
            st.jaeger_default_limit(),
            st.limits.max_limit,
        )?,
        cursor: None,
    })
}

async fn find_traces(State(st): State<QueryState>, RawQuery(q): RawQuery) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let raw = p.flag(&["raw"]).map_err(bad)?;
    let ids: Vec<&str> = p.all("traceID").collect();
    if !ids.is_empty() {
        return traces_by_ids(&st, &p, &ids, raw).await;
    }
    let query = parse_find(&st, &p).map_err(bad)?;
    let trees = st.search_trees(&query, raw).await.map_err(error_response)?;
    Ok(traces_response(&p, &trees, None))
}

/// `?traceID=a&traceID=b`: the traces found, in the order asked (a repeated
/// id once), and one `{"msg":"trace not found","traceID":…}` error per id that
/// is not, as Jaeger reports them (with HTTP 200).
async fn traces_by_ids(st: &QueryState, p: &Pairs, ids: &[&str], raw: bool) -> JResult {
    if ids.len() > st.limits.max_limit {
        return Err(bad(ParamError::new(format!(
            "too many traceID parameters: at most {}",
            st.limits.max_limit
        ))));
    }
    let mut trace_ids = Vec::with_capacity(ids.len());
    for id in ids {
        let t = parse_trace_id(id)
            .map_err(|e| bad(ParamError::new(format!("cannot parse traceID param: {e}"))))?;
        if !trace_ids.contains(&t) {
            trace_ids.push(t);
        }
    }
    let trees = st
        .traces(&trace_ids, raw, None)
        .await
        .map_err(error_response)?;
    let missing: Vec<Value> = trace_ids
        .iter()
        .filter(|id| {
            !trees
                .iter()
                .any(|t| t.spans.first().map(|s| &s.trace_id) == Some(id))
        })
        .map(|id| json!({ "msg": "trace not found", "traceID": jaeger_trace_id(id) }))
        .collect();
    Ok(traces_response(
        p,
        &trees,
        (!missing.is_empty()).then_some(missing),
    ))
}

async fn dependencies(State(st): State<QueryState>, RawQuery(q): RawQuery) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let end = p
        .get(&["endTs"])
        .map(|v| parse_time("endTs", v, 1_000_000))
        .transpose()
        .map_err(bad)?
        .unwrap_or_else(now_ns);
    let lookback = p
        .get(&["lookback"])
        .map(|v| parse_duration("lookback", v, 1_000_000))
        .transpose()
        .map_err(bad)?
        .unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK_NS);
    let range = st
        .jaeger_window(end.saturating_sub(lookback), end)
        .map_err(bad)?;
    let edges = st.dependencies(range).await.map_err(error_response)?;
    // Filtered to the edges that touch `service` when given, one per
    // (parent, child), as Jaeger does.
    let service = p.get(&["service"]);
    let mut links: Vec<(&str, &str, u64)> = Vec::with_capacity(edges.len());
    for e in edges
        .iter()
        .filter(|e| service.is_none_or(|s| e.caller == s || e.callee == s))
    {
        match links
            .iter_mut()
            .find(|l| l.0 == e.caller && l.1 == e.callee)
        {
            Some(l) => l.2 += e.calls,
            None => links.push((&e.caller, &e.callee, e.calls)),
        }
    }
    let data: Vec<Value> = links
        .iter()
        .map(|(parent, child, calls)| json!({ "parent": parent, "child": child, "callCount": calls }))
        .collect();
    Ok(envelope(&p, data, 0, None))
}

/// The envelope around serialized traces (`total` 0, as Jaeger sends it),
/// written straight into the response bytes.
fn traces_response(p: &Pairs, trees: &[TraceTree], errors: Option<Vec<Value>>) -> Response {
    let data: Vec<JaegerTrace<'_>> = trees.iter().map(JaegerTrace).collect();
    envelope(p, data, 0, errors)
}
