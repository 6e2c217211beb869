//! The Jaeger v3 HTTP query API (the one the current Jaeger UI calls). Traces
//! are OTLP JSON (`resourceSpans` → `scopeSpans` → `spans`, hex ids, nanosecond
//! timestamps as strings) wrapped in `{"result": ...}`; errors are
//! `{"error": {"httpCode": ..., "message": ...}}`. Parameters are accepted in
//! both snake_case (`query.service_name`) and camelCase (`query.serviceName`).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::model::{hex, AttrValue, KeyValue, Span};
use crate::storage::{AttrFilter, TraceQuery};

use super::engine::{search_read_range, QueryError};
use super::params::{
    format_rfc3339, parse_duration, parse_limit_clamped, parse_time, parse_trace_id, Pairs,
    ParamError,
};
use super::QueryState;

/// Jaeger v3 routes.
pub fn routes() -> Router<QueryState> {
    Router::new()
        .route("/api/v3/services", get(services))
        .route("/api/v3/operations", get(operations))
        .route("/api/v3/traces/{trace_id}", get(get_trace))
        .route("/api/v3/traces", get(find_traces))
        .route("/api/v3/trace-summaries", get(find_summaries))
}

/// A v3-shaped error: `{"error":{"httpCode":400,"message":"..."}}`.
pub fn error_response(e: QueryError) -> Response {
    let code = e.status();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({ "error": { "httpCode": code, "message": e.to_string() } })),
    )
        .into_response()
}

fn bad(e: ParamError) -> Response {
    error_response(QueryError::BadRequest(e))
}

type VResult = Result<Json<Value>, Response>;

async fn services(State(st): State<QueryState>) -> VResult {
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let s = st.services(range).await.map_err(error_response)?;
    Ok(Json(json!({ "services": s })))
}

async fn operations(State(st): State<QueryState>, RawQuery(q): RawQuery) -> VResult {
    let p = Pairs::parse(q.as_deref());
    let service = p
        .get(&["service"])
        .ok_or_else(|| bad(ParamError::new("parameter 'service' is required")))?;
    let kind = p.get(&["span_kind", "spanKind"]);
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let ops = st
        .operations(service, range)
        .await
        .map_err(error_response)?;
    let ops: Vec<Value> = ops
        .iter()
        .filter(|o| kind.is_none_or(|k| o.kind.as_str() == k))
        .map(|o| json!({ "name": o.name, "spanKind": o.kind.as_str() }))
        .collect();
    Ok(Json(json!({ "operations": ops })))
}

async fn get_trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> VResult {
    let p = Pairs::parse(q.as_deref());
    let trace_id = parse_trace_id(&id).map_err(bad)?;
    let raw = p.flag(&["raw_traces", "rawTraces"]).map_err(bad)?;
    match st.trace(trace_id, raw).await.map_err(error_response)? {
        Some(t) => Ok(Json(json!({ "result": otlp_json(t.spans.iter()) }))),
        None => Err(error_response(QueryError::NotFound(format!(
            "trace {} not found",
            hex(&trace_id)
        )))),
    }
}

fn parse_query(st: &QueryState, p: &Pairs) -> Result<(TraceQuery, bool), ParamError> {
    let g = |snake: &str, camel: &str| {
        p.get(&[&format!("query.{snake}"), &format!("query.{camel}")])
            .map(str::to_string)
    };
    let service = g("service_name", "serviceName")
        .ok_or_else(|| ParamError::new("parameter 'query.service_name' is required"))?;
    let start = g("start_time_min", "startTimeMin").ok_or_else(|| {
        ParamError::new("parameter 'query.start_time_min' is required (RFC 3339)")
    })?;
    let end = g("start_time_max", "startTimeMax").ok_or_else(|| {
        ParamError::new("parameter 'query.start_time_max' is required (RFC 3339)")
    })?;
    let start = parse_time("query.start_time_min", &start, 1)?;
    let end = parse_time("query.start_time_max", &end, 1)?;
    let range = st.check_window(start, end)?;
    let dur = |snake: &str, camel: &str| {
        g(snake, camel)
            .map(|v| parse_duration(&format!("query.{snake}"), &v, 1))
            .transpose()
    };
    let mut attributes = Vec::new();
    let mut errors_only = false;
    if let Some(a) = g("attributes", "attributes") {
        let map: serde_json::Map<String, Value> = serde_json::from_str(&a).map_err(|e| {
            ParamError::new(format!(
                "malformed 'query.attributes': expected a JSON object such as {{\"http.status_code\":\"500\"}} ({e})"
            ))
        })?;
        for (k, v) in map {
            let text = match &v {
                Value::String(s) => s.clone(),
                Value::Bool(_) | Value::Number(_) => v.to_string(),
                _ => {
                    return Err(ParamError::new(format!(
                        "malformed 'query.attributes': the value of {k:?} must be a string"
                    )))
                }
            };
            if (k == "error" && text == "true") || (k == "otel.status_code" && text == "ERROR") {
                errors_only = true;
            } else {
                // Jaeger matches attributes by their text, whatever the stored type.
                attributes.push(AttrFilter::text(k, text));
            }
        }
    }
    let raw = p.flag(&["query.raw_traces", "query.rawTraces"])?;
    Ok((
        TraceQuery {
            service: Some(service),
            operation: g("operation_name", "operationName"),
            attributes,
            min_duration_ns: dur("duration_min", "durationMin")?,
            max_duration_ns: dur("duration_max", "durationMax")?,
            errors_only,
            range,
            limit: parse_limit_clamped(
                g("search_depth", "searchDepth").as_deref(),
                st.limits.default_limit,
                st.limits.max_limit,
            )?,
            cursor: g("page_token", "pageToken"),
        },
        raw,
    ))
}

async fn find_traces(State(st): State<QueryState>, RawQuery(q): RawQuery) -> VResult {
    let p = Pairs::parse(q.as_deref());
    let (query, raw) = parse_query(&st, &p).map_err(bad)?;
    let page = st.search(&query).await.map_err(error_response)?;
    let ids: Vec<_> = page.traces.iter().map(|t| t.trace_id).collect();
    // The whole page in one store round trip, in the search's order.
    let trees = st
        .traces(&ids, raw, search_read_range(&page.traces))
        .await
        .map_err(error_response)?;
    let spans: Vec<_> = trees.into_iter().flat_map(|t| t.spans).collect();
    if spans.is_empty() {
        // Jaeger's v3 gateway answers an empty search with 404.
        return Err(error_response(QueryError::NotFound(
            "No traces found".into(),
        )));
    }
    Ok(Json(json!({ "result": otlp_json(spans.iter()) })))
}

async fn find_summaries(State(st): State<QueryState>, RawQuery(q): RawQuery) -> VResult {
    let p = Pairs::parse(q.as_deref());
    let (query, _) = parse_query(&st, &p).map_err(bad)?;
    let page = st.search(&query).await.map_err(error_response)?;
    let summaries: Vec<Value> = page
        .traces
        .iter()
        .map(|t| {
            json!({
                "traceId": hex(&t.trace_id),
                "rootServiceName": t.root_service,
                "rootSpanName": t.root_operation,
                "startTime": format_rfc3339(t.start_ns),
                "startTimeUnixNano": t.start_ns.to_string(),
                "durationNanos": t.duration_ns.to_string(),
                "spanCount": t.span_count,
                "services": t.services,
                "errorCount": t.error_count,
            })
        })
        .collect();
    Ok(Json(json!({
        "result": { "summaries": summaries, "nextPageToken": page.next_cursor }
    })))
}

/// An attribute value in OTLP JSON (`AnyValue`).
pub fn any_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Double(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => json!({ "doubleValue": n }),
            None => json!({ "doubleValue": d.to_string() }),
        },
        AttrValue::Bytes(b) => {
            json!({ "bytesValue": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        AttrValue::Array(a) => {
            json!({ "arrayValue": { "values": a.iter().map(any_value).collect::<Vec<_>>() } })
        }
        AttrValue::KvList(kvs) => json!({ "kvlistValue": { "values": kvs_json(kvs) } }),
    }
}

fn kvs_json(kvs: &[KeyValue]) -> Vec<Value> {
    kvs.iter()
        .map(|kv| json!({ "key": kv.key, "value": any_value(&kv.value) }))
        .collect()
}

/// Spans as an OTLP JSON `TracesData`, grouped by resource then scope.
pub fn otlp_json<'a>(spans: impl Iterator<Item = &'a Span>) -> Value {
    // (resource key, scope key) grouping that keeps first-seen order.
    type ScopeGroup<'a> = (String, &'a Span, Vec<Value>);
    let mut resources: Vec<(String, &'a Span, Vec<ScopeGroup<'a>>)> = Vec::new();
    for s in spans {
        let rkey =
            serde_json::to_string(&s.resource_attributes).unwrap_or_default() + &s.service_name;
        let ri = match resources.iter().position(|r| r.0 == rkey) {
            Some(i) => i,
            None => {
                resources.push((rkey, s, Vec::new()));
                resources.len() - 1
            }
        };
        let skey = format!("{}\u{0}{}", s.scope_name, s.scope_version);
        let scopes = &mut resources[ri].2;
        let si = match scopes.iter().position(|x| x.0 == skey) {
            Some(i) => i,
            None => {
                scopes.push((skey, s, Vec::new()));
                scopes.len() - 1
            }
        };
        scopes[si].2.push(span_json(s));
    }
    let rs: Vec<Value> = resources
        .into_iter()
        .map(|(_, first, scopes)| {
            let mut attrs = first.resource_attributes.clone();
            if !attrs.iter().any(|kv| kv.key == "service.name") {
                attrs.insert(
                    0,
                    KeyValue::new("service.name", AttrValue::Str(first.service_name.clone())),
                );
            }
            json!({
                "resource": { "attributes": kvs_json(&attrs) },
                "scopeSpans": scopes.into_iter().map(|(_, s0, spans)| json!({
                    "scope": { "name": s0.scope_name, "version": s0.scope_version },
                    "spans": spans,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "resourceSpans": rs })
}

fn span_json(s: &Span) -> Value {
    json!({
        "traceId": hex(&s.trace_id),
        "spanId": hex(&s.span_id),
        "parentSpanId": s.parent_span_id.map(|p| hex(&p)).unwrap_or_default(),
        "traceState": s.trace_state,
        "flags": s.flags,
        "name": s.name,
        "kind": s.kind as u8,
        "startTimeUnixNano": s.start_ns.to_string(),
        "endTimeUnixNano": s.end_ns.to_string(),
        "attributes": kvs_json(&s.attributes),
        "droppedAttributesCount": s.dropped_attributes_count,
        "events": s.events.iter().map(|e| json!({
            "timeUnixNano": e.time_ns.to_string(),
            "name": e.name,
            "attributes": kvs_json(&e.attributes),
            "droppedAttributesCount": e.dropped_attributes_count,
        })).collect::<Vec<_>>(),
        "droppedEventsCount": s.dropped_events_count,
        "links": s.links.iter().map(|l| json!({
            "traceId": hex(&l.trace_id),
            "spanId": hex(&l.span_id),
            "traceState": l.trace_state,
            "attributes": kvs_json(&l.attributes),
            "droppedAttributesCount": l.dropped_attributes_count,
            "flags": l.flags,
        })).collect::<Vec<_>>(),
        "droppedLinksCount": s.dropped_links_count,
        "status": { "code": s.status_code as u8, "message": s.status_message },
    })
}
