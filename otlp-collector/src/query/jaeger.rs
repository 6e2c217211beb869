//! The Jaeger v1 HTTP query API (the one Grafana's Jaeger data source calls),
//! answered in Jaeger's exact JSON shapes: the `{data,total,limit,offset,errors}`
//! envelope; traces with `processes` keyed `p1, p2, …`; typed tags; events as
//! logs; the parent as the first `CHILD_OF` reference and links as `FOLLOWS_FROM`.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::model::{hex, AttrValue, KeyValue, SpanKind, StatusCode as SpanStatus, TraceId};
use crate::storage::{AttrFilter, TraceQuery};

use super::engine::{search_read_range, QueryError};
use super::params::{
    parse_duration, parse_limit_clamped, parse_time, parse_trace_id, Pairs, ParamError,
};
use super::tree::TraceTree;
use super::QueryState;

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

fn envelope(data: Value, total: usize) -> Json<Value> {
    Json(json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": null }))
}

/// A Jaeger-shaped error: `{"data":null,...,"errors":[{"code":400,"msg":"..."}]}`.
pub fn error_response(e: QueryError) -> Response {
    let code = e.status();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{ "code": code, "msg": e.to_string() }],
        })),
    )
        .into_response()
}

fn bad(e: ParamError) -> Response {
    error_response(QueryError::BadRequest(e))
}

type JResult = Result<Json<Value>, Response>;

/// Jaeger's trace id text: 16 hex digits when the high half is zero, else 32.
pub fn jaeger_trace_id(id: &TraceId) -> String {
    if id[..8] == [0u8; 8] {
        hex(&id[8..])
    } else {
        hex(id)
    }
}

async fn services(State(st): State<QueryState>) -> JResult {
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let s = st.services(range).await.map_err(error_response)?;
    let n = s.len();
    Ok(envelope(json!(s), n))
}

async fn service_operations(State(st): State<QueryState>, Path(service): Path<String>) -> JResult {
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let ops = st
        .operations(&service, range)
        .await
        .map_err(error_response)?;
    let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
    names.dedup();
    let n = names.len();
    Ok(envelope(json!(names), n))
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
    Ok(envelope(Value::Array(data), n))
}

/// Jaeger's span-kind text (`""` for unspecified, as Jaeger stores no tag then).
fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "",
        other => other.as_str(),
    }
}

async fn get_trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let trace_id = parse_trace_id(&id).map_err(bad)?;
    let raw = p.flag(&["raw"]).map_err(bad)?;
    match st.trace(trace_id, raw).await.map_err(error_response)? {
        Some(t) => Ok(envelope(json!([trace_json(&t)]), 1)),
        None => Err(error_response(QueryError::NotFound(
            "trace not found".into(),
        ))),
    }
}

/// Parses Jaeger's `/api/traces` parameters into a search.
fn parse_find(st: &QueryState, p: &Pairs) -> Result<TraceQuery, ParamError> {
    let service = p
        .get(&["service"])
        .ok_or_else(|| ParamError::new("parameter 'service' is required"))?;
    let start = p
        .get(&["start"])
        .map(|v| parse_time("start", v, 1000))
        .transpose()?;
    let end = p
        .get(&["end"])
        .map(|v| parse_time("end", v, 1000))
        .transpose()?;
    let lookback = match p.get(&["lookback"]) {
        Some(l) if l != "custom" => parse_duration("lookback", l, 1000)?,
        _ => st.limits.default_lookback_ns,
    };
    let range = st.window_or_lookback(start, end, lookback)?;
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
    if let Some(tags) = p.get(&["tags"]) {
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
    for t in p.all("tag") {
        let (k, v) = t.split_once(':').ok_or_else(|| {
            ParamError::new(format!(
                "malformed 'tag' parameter {t:?}: expected key:value"
            ))
        })?;
        add(k, v);
    }
    let dur = |name: &str| {
        p.get(&[name])
            .map(|v| parse_duration(name, v, 1000))
            .transpose()
    };
    Ok(TraceQuery {
        service: Some(service.to_string()),
        operation: p.get(&["operation"]).map(str::to_string),
        attributes,
        min_duration_ns: dur("minDuration")?,
        max_duration_ns: dur("maxDuration")?,
        errors_only,
        range,
        limit: parse_limit_clamped(
            p.get(&["limit"]),
            st.limits.default_limit,
            st.limits.max_limit,
        )?,
        cursor: None,
    })
}

async fn find_traces(State(st): State<QueryState>, RawQuery(q): RawQuery) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let raw = p.flag(&["raw"]).map_err(bad)?;
    let ids: Vec<&str> = p.all("traceID").collect();
    let mut trace_ids = Vec::new();
    let mut range = None;
    if !ids.is_empty() {
        if ids.len() > st.limits.max_limit {
            return Err(bad(ParamError::new(format!(
                "too many traceID parameters: at most {}",
                st.limits.max_limit
            ))));
        }
        for id in ids {
            trace_ids.push(parse_trace_id(id).map_err(bad)?);
        }
    } else {
        let query = parse_find(&st, &p).map_err(bad)?;
        let page = st.search(&query).await.map_err(error_response)?;
        trace_ids = page.traces.iter().map(|t| t.trace_id).collect();
        range = search_read_range(&page.traces);
    }
    // The whole page is read in one store round trip (the page is bounded by
    // `max_limit`), in the search's order; a repeated `traceID` is shown once.
    let trees = st
        .traces(&trace_ids, raw, range)
        .await
        .map_err(error_response)?;
    let data: Vec<Value> = trees.iter().map(trace_json).collect();
    let n = data.len();
    Ok(envelope(Value::Array(data), n))
}

async fn dependencies(State(st): State<QueryState>, RawQuery(q): RawQuery) -> JResult {
    let p = Pairs::parse(q.as_deref());
    let end = p
        .get(&["endTs"])
        .map(|v| parse_time("endTs", v, 1_000_000))
        .transpose()
        .map_err(bad)?;
    let lookback = p
        .get(&["lookback"])
        .map(|v| parse_duration("lookback", v, 1_000_000))
        .transpose()
        .map_err(bad)?
        .unwrap_or(st.limits.default_lookback_ns);
    let range = st.window_or_lookback(None, end, lookback).map_err(bad)?;
    let edges = st.dependencies(range).await.map_err(error_response)?;
    let data: Vec<Value> = edges
        .iter()
        .map(|e| json!({ "parent": e.caller, "child": e.callee, "callCount": e.calls }))
        .collect();
    let n = data.len();
    Ok(envelope(Value::Array(data), n))
}

fn tag(key: &str, v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({ "key": key, "type": "string", "value": s }),
        AttrValue::Bool(b) => json!({ "key": key, "type": "bool", "value": b }),
        AttrValue::Int(i) => json!({ "key": key, "type": "int64", "value": i }),
        AttrValue::Double(d) => json!({ "key": key, "type": "float64", "value": d }),
        AttrValue::Bytes(b) => json!({
            "key": key, "type": "binary",
            "value": base64::engine::general_purpose::STANDARD.encode(b),
        }),
        other => json!({ "key": key, "type": "string", "value": other.to_text() }),
    }
}

fn tags(kvs: &[KeyValue]) -> Vec<Value> {
    kvs.iter().map(|kv| tag(&kv.key, &kv.value)).collect()
}

fn str_tag(key: &str, v: &str) -> Value {
    json!({ "key": key, "type": "string", "value": v })
}

fn micros(ns: u64) -> u64 {
    ns / 1000
}

/// One trace in Jaeger's v1 JSON model.
pub fn trace_json(t: &TraceTree) -> Value {
    let trace_id = t
        .spans
        .first()
        .map(|s| jaeger_trace_id(&s.trace_id))
        .unwrap_or_default();
    // Processes are deduplicated by service and resource, numbered in order of
    // first appearance, as Jaeger does.
    let mut process_ids: HashMap<(&str, String), String> = HashMap::new();
    let mut processes = serde_json::Map::new();
    let mut spans = Vec::with_capacity(t.spans.len());
    for (s, n) in t.spans.iter().zip(&t.nodes) {
        let res: Vec<KeyValue> = s
            .resource_attributes
            .iter()
            .filter(|kv| kv.key != "service.name")
            .cloned()
            .collect();
        let key = (
            s.service_name.as_str(),
            serde_json::to_string(&res).unwrap_or_default(),
        );
        let next = format!("p{}", process_ids.len() + 1);
        let pid = process_ids.entry(key).or_insert_with(|| {
            processes.insert(
                next.clone(),
                json!({ "serviceName": s.service_name, "tags": tags(&res) }),
            );
            next
        });
        let mut references = Vec::new();
        if let Some(parent) = s.parent_span_id {
            references.push(json!({
                "refType": "CHILD_OF", "traceID": trace_id, "spanID": hex(&parent),
            }));
        }
        for l in &s.links {
            references.push(json!({
                "refType": "FOLLOWS_FROM",
                "traceID": jaeger_trace_id(&l.trace_id),
                "spanID": hex(&l.span_id),
            }));
        }
        let mut tg = tags(&s.attributes);
        if s.kind != SpanKind::Unspecified {
            tg.push(str_tag("span.kind", s.kind.as_str()));
        }
        match s.status_code {
            SpanStatus::Ok => tg.push(str_tag("otel.status_code", "OK")),
            SpanStatus::Error => {
                tg.push(str_tag("otel.status_code", "ERROR"));
                tg.push(json!({ "key": "error", "type": "bool", "value": true }));
            }
            SpanStatus::Unset => {}
        }
        if !s.status_message.is_empty() {
            tg.push(str_tag("otel.status_description", &s.status_message));
        }
        if !s.scope_name.is_empty() {
            tg.push(str_tag("otel.scope.name", &s.scope_name));
        }
        if !s.scope_version.is_empty() {
            tg.push(str_tag("otel.scope.version", &s.scope_version));
        }
        if !s.trace_state.is_empty() {
            tg.push(str_tag("w3c.tracestate", &s.trace_state));
        }
        let logs: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![str_tag("event", &e.name)];
                fields.extend(tags(&e.attributes));
                json!({ "timestamp": micros(e.time_ns), "fields": fields })
            })
            .collect();
        let mut warnings = Vec::new();
        if n.skew_shift_ns != 0 {
            warnings.push(json!(format!(
                "This span's timestamps were adjusted by {}µs for clock skew",
                n.skew_shift_ns / 1000
            )));
        }
        if let (true, Some(p)) = (n.orphan, n.missing_parent) {
            warnings.push(json!(format!(
                "invalid parent span IDs={}; skipping clock skew adjustment",
                hex(&p)
            )));
        }
        spans.push(json!({
            "traceID": trace_id,
            "spanID": hex(&s.span_id),
            "flags": s.flags & 0xff,
            "operationName": s.name,
            "references": references,
            "startTime": micros(s.start_ns),
            "duration": micros(s.end_ns).saturating_sub(micros(s.start_ns)),
            "tags": tg,
            "logs": logs,
            "processID": pid,
            "warnings": if warnings.is_empty() { Value::Null } else { Value::Array(warnings) },
        }));
    }
    json!({ "traceID": trace_id, "spans": spans, "processes": processes, "warnings": null })
}
