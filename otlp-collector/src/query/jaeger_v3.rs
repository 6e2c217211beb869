//! The Jaeger v3 HTTP query API (the one the current Jaeger UI calls for
//! services, operations and search), answered as Jaeger's `api_v3` HTTP
//! gateway answers: traces as OTLP JSON (`resourceSpans` → `scopeSpans` →
//! `spans`, hex ids, 64-bit integers as strings) in `{"result": ...}`; search
//! summaries as `{"summaries": [...]}`; errors as
//! `{"error": {"httpCode": ..., "message": ...}}`. Parameters in camelCase
//! (`query.serviceName`) and Jaeger's deprecated snake_case aliases
//! (`query.service_name`); trace ids in hex or base64.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::model::{hex, AttrValue, KeyValue, Span, SpanKind, StatusCode as SpanStatus};
use crate::storage::{AttrFilter, TraceQuery};

use super::engine::QueryError;
use super::params::{
    parse_duration, parse_jaeger_trace_id, parse_limit_clamped, parse_time, Pairs, ParamError,
};
use super::tree::TraceTree;
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

/// The answer to a request that found no trace (get by id, or a search).
fn no_traces() -> Response {
    error_response(QueryError::NotFound("No traces found".into()))
}

type VResult = Result<Json<Value>, Response>;

async fn services(State(st): State<QueryState>) -> VResult {
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let s = st.services(range).await.map_err(error_response)?;
    Ok(Json(json!({ "services": s })))
}

/// The v3 span-kind text: Jaeger's gateway reports an operation without a
/// kind as `internal`.
fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => SpanKind::Internal.as_str(),
        other => other.as_str(),
    }
}

async fn operations(State(st): State<QueryState>, RawQuery(q): RawQuery) -> VResult {
    let p = Pairs::parse(q.as_deref());
    let service = p
        .get(&["service"])
        .ok_or_else(|| bad(ParamError::new("parameter 'service' is required")))?;
    let kind = p.get(&["spanKind", "span_kind"]);
    let range = st
        .window_or_lookback(None, None, st.limits.max_window_ns)
        .map_err(bad)?;
    let ops = st
        .operations(service, range)
        .await
        .map_err(error_response)?;
    let mut seen = std::collections::HashSet::new();
    let ops: Vec<Value> = ops
        .iter()
        .filter(|o| kind.is_none_or(|k| kind_name(o.kind) == k))
        // An unspecified and an internal kind of one name show as one row.
        .filter(|o| seen.insert((o.name.as_str(), kind_name(o.kind))))
        .map(|o| json!({ "name": o.name, "spanKind": kind_name(o.kind) }))
        .collect();
    Ok(Json(json!({ "operations": ops })))
}

/// An optional RFC 3339 time parameter (canonical name first, then the alias).
fn time_param(p: &Pairs, names: &[&str]) -> Result<Option<u64>, ParamError> {
    match names.iter().find_map(|n| p.get(&[n]).map(|v| (*n, v))) {
        Some((n, v)) => parse_time(n, v, 1).map(Some),
        None => Ok(None),
    }
}

async fn get_trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> VResult {
    let p = Pairs::parse(q.as_deref());
    let trace_id = parse_jaeger_trace_id(&id).map_err(|e| {
        bad(ParamError::new(format!(
            "malformed parameter trace_id: {e}"
        )))
    })?;
    // Lookup hints in Jaeger; the whole trace is read here, but malformed
    // values are refused as Jaeger refuses them.
    time_param(&p, &["startTime", "start_time"]).map_err(bad)?;
    time_param(&p, &["endTime", "end_time"]).map_err(bad)?;
    let raw = p.flag(&["rawTraces", "raw_traces"]).map_err(bad)?;
    match st.trace(trace_id, raw).await.map_err(error_response)? {
        Some(t) => Ok(Json(json!({ "result": otlp_json(t.spans.iter()) }))),
        None => Err(no_traces()),
    }
}

fn parse_query(st: &QueryState, p: &Pairs) -> Result<(TraceQuery, bool), ParamError> {
    let g = |camel: &str, snake: &str| {
        p.get(&[&format!("query.{camel}"), &format!("query.{snake}")])
            .map(str::to_string)
    };
    if g("filter", "filter").is_some() {
        return Err(ParamError::new(
            "query.filter (a filter expression) is not supported; use query.attributes",
        ));
    }
    let (start, end) = match (
        time_param(p, &["query.startTimeMin", "query.start_time_min"])?,
        time_param(p, &["query.startTimeMax", "query.start_time_max"])?,
    ) {
        (Some(s), Some(e)) => (s, e),
        _ => {
            return Err(ParamError::new(
                "query.startTimeMin and query.startTimeMax are required (RFC 3339, e.g. 2024-05-01T10:00:00Z)",
            ))
        }
    };
    if start >= end {
        return Err(ParamError::new(
            "query.startTimeMin must be before query.startTimeMax",
        ));
    }
    let range = st.jaeger_window(start, end)?;
    let dur = |camel: &str, snake: &str| {
        g(camel, snake)
            .map(|v| parse_duration(&format!("query.{camel}"), &v, 1))
            .transpose()
    };
    let mut attributes = Vec::new();
    let mut errors_only = false;
    if let Some(a) = g("attributes", "attributes") {
        let map: serde_json::Map<String, Value> = serde_json::from_str(&a).map_err(|e| {
            ParamError::new(format!(
                "malformed parameter query.attributes: expected a JSON object such as {{\"http.status_code\":\"500\"}} ({e})"
            ))
        })?;
        for (k, v) in map {
            let text = match &v {
                Value::String(s) => s.clone(),
                Value::Bool(_) | Value::Number(_) => v.to_string(),
                _ => {
                    return Err(ParamError::new(format!(
                        "malformed parameter query.attributes: the value of {k:?} must be a string"
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
    let raw = p.flag(&["query.rawTraces", "query.raw_traces"])?;
    let depth = g("searchDepth", "search_depth").or_else(|| g("num_traces", "numTraces"));
    Ok((
        TraceQuery {
            // Absent means every service (the UI's "all services").
            service: g("serviceName", "service_name"),
            operation: g("operationName", "operation_name"),
            attributes,
            min_duration_ns: dur("durationMin", "duration_min")?,
            max_duration_ns: dur("durationMax", "duration_max")?,
            errors_only,
            range,
            limit: parse_limit_clamped(
                depth.as_deref(),
                st.jaeger_default_limit(),
                st.limits.max_limit,
            )?,
            cursor: g("pageToken", "page_token"),
        },
        raw,
    ))
}

async fn find_traces(State(st): State<QueryState>, RawQuery(q): RawQuery) -> VResult {
    let p = Pairs::parse(q.as_deref());
    let (query, raw) = parse_query(&st, &p).map_err(bad)?;
    let trees = st.search_trees(&query, raw).await.map_err(error_response)?;
    let spans: Vec<_> = trees.into_iter().flat_map(|t| t.spans).collect();
    if spans.is_empty() {
        // Jaeger's v3 gateway answers an empty search with 404.
        return Err(no_traces());
    }
    Ok(Json(json!({ "result": otlp_json(spans.iter()) })))
}

/// Jaeger's `TraceSummary` of one trace, computed from its (skew-adjusted)
/// spans as Jaeger's query service does: the root is the earliest span without
/// a parent; errors are spans with status `ERROR`; orphans are spans whose
/// parent is not in the trace; services sorted by name, with their counts.
fn summary(t: &TraceTree) -> Option<Value> {
    let first = t.spans.first()?;
    let ids: std::collections::HashSet<_> = t.spans.iter().map(|s| s.span_id).collect();
    let mut services: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    let (mut min_start, mut max_end) = (u64::MAX, 0u64);
    let (mut errors, mut orphans) = (0u64, 0u64);
    let mut root: Option<&Span> = None;
    for s in &t.spans {
        let err = s.status_code == SpanStatus::Error;
        let e = services.entry(&s.service_name).or_default();
        e.0 += 1;
        e.1 += u64::from(err);
        errors += u64::from(err);
        min_start = min_start.min(s.start_ns);
        max_end = max_end.max(s.end_ns);
        match s.parent_span_id {
            None => {
                if root.is_none_or(|r| s.start_ns < r.start_ns) {
                    root = Some(s);
                }
            }
            Some(p) if !ids.contains(&p) => orphans += 1,
            Some(_) => {}
        }
    }
    Some(json!({
        "traceId": hex(&first.trace_id),
        "rootServiceName": root.map(|r| r.service_name.as_str()).unwrap_or_default(),
        "rootOperationName": root.map(|r| r.name.as_str()).unwrap_or_default(),
        "minStartTimeUnixNano": min_start.to_string(),
        "maxEndTimeUnixNano": max_end.to_string(),
        "spanCount": t.spans.len(),
        "errorSpanCount": errors,
        "orphanSpanCount": orphans,
        "services": services
            .iter()
            .map(|(name, (spans, errors))| json!({
                "name": name, "spanCount": spans, "errorSpanCount": errors,
            }))
            .collect::<Vec<_>>(),
    }))
}

async fn find_summaries(State(st): State<QueryState>, RawQuery(q): RawQuery) -> VResult {
    let p = Pairs::parse(q.as_deref());
    // Summaries always use adjusted data, as in Jaeger: rawTraces has no effect.
    let (query, _) = parse_query(&st, &p).map_err(bad)?;
    let trees = st
        .search_trees(&query, false)
        .await
        .map_err(error_response)?;
    let summaries: Vec<Value> = trees.iter().filter_map(summary).collect();
    Ok(Json(json!({ "summaries": summaries })))
}

/// An attribute value in OTLP JSON (`AnyValue`), as protobuf's JSON mapping
/// writes it: 64-bit integers as strings, non-finite doubles as `"NaN"`,
/// `"Infinity"`, `"-Infinity"`, bytes as base64, an empty value as `{}`.
pub fn any_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Double(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => json!({ "doubleValue": n }),
            None if d.is_nan() => json!({ "doubleValue": "NaN" }),
            None if *d > 0.0 => json!({ "doubleValue": "Infinity" }),
            None => json!({ "doubleValue": "-Infinity" }),
        },
        AttrValue::Bytes(b) => {
            json!({ "bytesValue": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        AttrValue::Array(a) => {
            json!({ "arrayValue": { "values": a.iter().map(any_value).collect::<Vec<_>>() } })
        }
        AttrValue::KvList(kvs) => json!({ "kvlistValue": { "values": kvs_json(kvs) } }),
        AttrValue::Empty => json!({}),
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
            let mut attrs = first.resource_attributes.to_vec();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_values_follow_the_protobuf_json_mapping() {
        assert_eq!(
            any_value(&AttrValue::Int(i64::MAX)),
            json!({"intValue": "9223372036854775807"})
        );
        assert_eq!(
            any_value(&AttrValue::Double(f64::NAN)),
            json!({"doubleValue": "NaN"})
        );
        assert_eq!(
            any_value(&AttrValue::Double(f64::INFINITY)),
            json!({"doubleValue": "Infinity"})
        );
        assert_eq!(
            any_value(&AttrValue::Double(f64::NEG_INFINITY)),
            json!({"doubleValue": "-Infinity"})
        );
        assert_eq!(
            any_value(&AttrValue::Double(1.5)),
            json!({"doubleValue": 1.5})
        );
        assert_eq!(any_value(&AttrValue::Empty), json!({}));
        assert_eq!(
            any_value(&AttrValue::Array(vec![
                AttrValue::Empty,
                AttrValue::Bytes(vec![1, 2, 3])
            ])),
            json!({"arrayValue": {"values": [{}, {"bytesValue": "AQID"}]}})
        );
    }
}
