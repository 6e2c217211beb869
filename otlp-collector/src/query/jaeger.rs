//! The Jaeger v1 HTTP query API (the one Grafana's Jaeger data source calls),
//! answered in Jaeger's exact JSON shapes: the `{data,total,limit,offset,errors}`
//! envelope; traces with `processes` keyed `p1, p2, …`; typed tags; events as
//! logs; the parent as the first `CHILD_OF` reference and links as `FOLLOWS_FROM`.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{
    hex, AttrValue, Event, KeyValue, Span, SpanKind, StatusCode as SpanStatus, TraceId,
};
use crate::storage::{AttrFilter, TraceQuery};

use super::engine::{search_read_range, QueryError};
use super::params::{
    parse_duration, parse_limit_clamped, parse_time, parse_trace_id, Pairs, ParamError,
};
use super::tree::{NodeInfo, TraceTree};
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
) -> Result<Response, Response> {
    let p = Pairs::parse(q.as_deref());
    let trace_id = parse_trace_id(&id).map_err(bad)?;
    let raw = p.flag(&["raw"]).map_err(bad)?;
    match st.trace(trace_id, raw).await.map_err(error_response)? {
        Some(t) => Ok(traces_response(std::slice::from_ref(&t))),
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

async fn find_traces(
    State(st): State<QueryState>,
    RawQuery(q): RawQuery,
) -> Result<Response, Response> {
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
    Ok(traces_response(&trees))
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

/// One trace in Jaeger's v1 JSON model, as a `Value` (the responses are
/// written by [`JaegerTrace`], which produces the same text without the
/// intermediate tree).
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

/// One trace in Jaeger's v1 JSON model, serialized straight into the response
/// bytes: the same document as [`trace_json`] (the same keys in the same
/// sorted order, the same values), without building a `serde_json::Value` per
/// span, tag and log first. A search page of 20 traces of 200 spans spent most
/// of its rendering time allocating and freeing those maps.
pub struct JaegerTrace<'a>(pub &'a TraceTree);

/// The processes of a trace: one per (service, resource without
/// `service.name`), numbered `p1, p2, …` in order of first appearance, as
/// Jaeger does; and the process of each span.
struct Processes<'a> {
    /// (process id, service, resource tags), in order of first appearance.
    list: Vec<(String, &'a str, Vec<&'a KeyValue>)>,
    /// Index into `list` for each span.
    of_span: Vec<usize>,
}

impl<'a> Processes<'a> {
    fn of(t: &'a TraceTree) -> Self {
        let mut ids: HashMap<(&'a str, String), usize> = HashMap::new();
        let mut list = Vec::new();
        let mut of_span = Vec::with_capacity(t.spans.len());
        for s in &t.spans {
            let res: Vec<&KeyValue> = s
                .resource_attributes
                .iter()
                .filter(|kv| kv.key != "service.name")
                .collect();
            // Keyed by the resource's JSON text, as `trace_json` does, so the
            // two agree on which resources are equal.
            let key = (
                s.service_name.as_str(),
                serde_json::to_string(&res).unwrap_or_default(),
            );
            let n = list.len();
            let idx = *ids.entry(key).or_insert(n);
            if idx == n {
                list.push((format!("p{}", n + 1), s.service_name.as_str(), res));
            }
            of_span.push(idx);
        }
        Processes { list, of_span }
    }
}

/// A tag as [`tag`] / [`str_tag`] build it.
#[derive(Clone)]
enum TagSer<'a> {
    Attr(&'a str, &'a AttrValue),
    Str(&'a str, &'a str),
    ErrorTrue,
}

impl Serialize for TagSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        let (key, v) = match self {
            TagSer::Attr(k, v) => (*k, *v),
            TagSer::Str(k, v) => {
                m.serialize_entry("key", k)?;
                m.serialize_entry("type", "string")?;
                m.serialize_entry("value", v)?;
                return m.end();
            }
            TagSer::ErrorTrue => {
                m.serialize_entry("key", "error")?;
                m.serialize_entry("type", "bool")?;
                m.serialize_entry("value", &true)?;
                return m.end();
            }
        };
        m.serialize_entry("key", key)?;
        match v {
            AttrValue::Str(v) => {
                m.serialize_entry("type", "string")?;
                m.serialize_entry("value", v)?;
            }
            AttrValue::Bool(b) => {
                m.serialize_entry("type", "bool")?;
                m.serialize_entry("value", b)?;
            }
            AttrValue::Int(i) => {
                m.serialize_entry("type", "int64")?;
                m.serialize_entry("value", i)?;
            }
            AttrValue::Double(d) => {
                m.serialize_entry("type", "float64")?;
                // `json!(d)` turns a non-finite double into null: so does this.
                m.serialize_entry("value", &serde_json::Number::from_f64(*d))?;
            }
            AttrValue::Bytes(b) => {
                m.serialize_entry("type", "binary")?;
                m.serialize_entry(
                    "value",
                    &base64::engine::general_purpose::STANDARD.encode(b),
                )?;
            }
            other => {
                m.serialize_entry("type", "string")?;
                m.serialize_entry("value", &other.to_text())?;
            }
        }
        m.end()
    }
}

fn attr_tags<'a>(kvs: &'a [KeyValue]) -> impl Iterator<Item = TagSer<'a>> + Clone {
    kvs.iter().map(|kv| TagSer::Attr(&kv.key, &kv.value))
}

/// Serializes an iterator as a JSON array.
struct Seq<I>(I);

impl<I> Serialize for Seq<I>
where
    I: Iterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// A span's tags, in `trace_json`'s order: its attributes, then kind, status,
/// scope and `tracestate`.
fn span_tags(s: &Span) -> Vec<TagSer<'_>> {
    let mut tg: Vec<TagSer<'_>> = attr_tags(&s.attributes).collect();
    if s.kind != SpanKind::Unspecified {
        tg.push(TagSer::Str("span.kind", s.kind.as_str()));
    }
    match s.status_code {
        SpanStatus::Ok => tg.push(TagSer::Str("otel.status_code", "OK")),
        SpanStatus::Error => {
            tg.push(TagSer::Str("otel.status_code", "ERROR"));
            tg.push(TagSer::ErrorTrue);
        }
        SpanStatus::Unset => {}
    }
    if !s.status_message.is_empty() {
        tg.push(TagSer::Str("otel.status_description", &s.status_message));
    }
    if !s.scope_name.is_empty() {
        tg.push(TagSer::Str("otel.scope.name", &s.scope_name));
    }
    if !s.scope_version.is_empty() {
        tg.push(TagSer::Str("otel.scope.version", &s.scope_version));
    }
    if !s.trace_state.is_empty() {
        tg.push(TagSer::Str("w3c.tracestate", &s.trace_state));
    }
    tg
}

/// `{"refType", "spanID", "traceID"}` from (type, trace id, span id).
struct RefSer(&'static str, String, String);

impl Serialize for RefSer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("refType", self.0)?;
        m.serialize_entry("spanID", &self.2)?;
        m.serialize_entry("traceID", &self.1)?;
        m.end()
    }
}

/// `{"fields", "timestamp"}` of one event.
struct LogSer<'a>(&'a Event);

impl Serialize for LogSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(
            "fields",
            &Seq(std::iter::once(TagSer::Str("event", &e.name)).chain(attr_tags(&e.attributes))),
        )?;
        m.serialize_entry("timestamp", &micros(e.time_ns))?;
        m.end()
    }
}

/// One span of a [`JaegerTrace`].
struct SpanSer<'a> {
    span: &'a Span,
    node: &'a NodeInfo,
    trace_id: &'a str,
    process_id: &'a str,
}

impl Serialize for SpanSer<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (s, n) = (self.span, self.node);
        let mut references = Vec::with_capacity(s.links.len() + 1);
        if let Some(parent) = s.parent_span_id {
            references.push(RefSer("CHILD_OF", self.trace_id.to_string(), hex(&parent)));
        }
        for l in &s.links {
            references.push(RefSer(
                "FOLLOWS_FROM",
                jaeger_trace_id(&l.trace_id),
                hex(&l.span_id),
            ));
        }
        let mut warnings = Vec::new();
        if n.skew_shift_ns != 0 {
            warnings.push(format!(
                "This span's timestamps were adjusted by {}µs for clock skew",
                n.skew_shift_ns / 1000
            ));
        }
        if let (true, Some(p)) = (n.orphan, n.missing_parent) {
            warnings.push(format!(
                "invalid parent span IDs={}; skipping clock skew adjustment",
                hex(&p)
            ));
        }
        let mut m = ser.serialize_map(Some(11))?;
        m.serialize_entry(
            "duration",
            &micros(s.end_ns).saturating_sub(micros(s.start_ns)),
        )?;
        m.serialize_entry("flags", &(s.flags & 0xff))?;
        m.serialize_entry("logs", &Seq(s.events.iter().map(LogSer)))?;
        m.serialize_entry("operationName", &s.name)?;
        m.serialize_entry("processID", self.process_id)?;
        m.serialize_entry("references", &references)?;
        m.serialize_entry("spanID", &hex(&s.span_id))?;
        m.serialize_entry("startTime", &micros(s.start_ns))?;
        m.serialize_entry("tags", &span_tags(s))?;
        m.serialize_entry("traceID", self.trace_id)?;
        if warnings.is_empty() {
            m.serialize_entry("warnings", &())?;
        } else {
            m.serialize_entry("warnings", &warnings)?;
        }
        m.end()
    }
}

/// `{"p1": {"serviceName", "tags"}, …}`, keys in text order like a `Value` map.
struct ProcessesSer<'a>(&'a Processes<'a>);

impl Serialize for ProcessesSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut order: Vec<&(String, &str, Vec<&KeyValue>)> = self.0.list.iter().collect();
        order.sort_by(|a, b| a.0.cmp(&b.0));
        let mut m = s.serialize_map(Some(order.len()))?;
        for (id, service, res) in order {
            m.serialize_entry(id, &ProcessSer(service, res))?;
        }
        m.end()
    }
}

struct ProcessSer<'a>(&'a str, &'a [&'a KeyValue]);

impl Serialize for ProcessSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("serviceName", self.0)?;
        m.serialize_entry(
            "tags",
            &Seq(self.1.iter().map(|kv| TagSer::Attr(&kv.key, &kv.value))),
        )?;
        m.end()
    }
}

impl Serialize for JaegerTrace<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let trace_id = t
            .spans
            .first()
            .map(|s| jaeger_trace_id(&s.trace_id))
            .unwrap_or_default();
        let processes = Processes::of(t);
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("processes", &ProcessesSer(&processes))?;
        m.serialize_entry(
            "spans",
            &Seq(t
                .spans
                .iter()
                .zip(&t.nodes)
                .zip(&processes.of_span)
                .map(|((span, node), p)| SpanSer {
                    span,
                    node,
                    trace_id: &trace_id,
                    process_id: &processes.list[*p].0,
                })),
        )?;
        m.serialize_entry("traceID", &trace_id)?;
        m.serialize_entry("warnings", &())?;
        m.end()
    }
}

/// The `{data,errors,limit,offset,total}` envelope around serialized traces,
/// written straight into the response bytes.
fn traces_response(trees: &[TraceTree]) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a> {
        data: Vec<JaegerTrace<'a>>,
        errors: (),
        limit: u32,
        offset: u32,
        total: usize,
    }
    let body = Envelope {
        data: trees.iter().map(JaegerTrace).collect(),
        errors: (),
        limit: 0,
        offset: 0,
        total: trees.len(),
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => ([(CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => error_response(QueryError::Storage(crate::storage::StorageError::Backend(
            format!("cannot render traces as JSON: {e}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Link, Span};

    fn span(id: u8, parent: Option<u8>, service: &str, host: &str, start: u64) -> Span {
        Span {
            trace_id: [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 0x301,
            name: format!("op {id}"),
            kind: SpanKind::Unspecified,
            start_ns: start,
            end_ns: start + 1_234_567,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: SpanStatus::Unset,
            status_message: String::new(),
            service_name: service.into(),
            resource_attributes: vec![
                KeyValue::new("service.name", AttrValue::Str(service.into())),
                KeyValue::new("host.name", AttrValue::Str(host.into())),
            ],
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    /// The streaming serializer writes byte for byte the document of the
    /// `Value`-building `trace_json`: keys, their order, numbers, nulls.
    #[test]
    fn streamed_trace_equals_value_trace() {
        let t0 = 1_767_225_600_000_000_000u64;
        let mut spans = vec![span(1, None, "edge", "h1", t0)];
        // Twelve processes, so `p10`..`p12` sort before `p2` as in a `Value` map.
        for i in 0..12u8 {
            let mut s = span(
                10 + i,
                Some(1),
                &format!("svc-{}", i % 6),
                &format!("h{}", i / 6),
                t0 + 1_000 * i as u64,
            );
            s.kind = SpanKind::Server;
            spans.push(s);
        }
        let mut full = span(2, Some(1), "edge", "h1", t0 + 10);
        full.kind = SpanKind::Client;
        full.status_code = SpanStatus::Error;
        full.status_message = "boom \"quoted\" \u{1F600}".into();
        full.scope_name = "scope".into();
        full.scope_version = "1.0".into();
        full.trace_state = "k=v".into();
        full.attributes = vec![
            KeyValue::new("s", AttrValue::Str("<script>".into())),
            KeyValue::new("b", AttrValue::Bool(true)),
            KeyValue::new("i", AttrValue::Int(i64::MIN)),
            KeyValue::new("d", AttrValue::Double(0.1 + 0.2)),
            KeyValue::new("nan", AttrValue::Double(f64::NAN)),
            KeyValue::new("inf", AttrValue::Double(f64::INFINITY)),
            KeyValue::new("bytes", AttrValue::Bytes(vec![0, 255, 7])),
            KeyValue::new(
                "arr",
                AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Str("x".into())]),
            ),
            KeyValue::new(
                "map",
                AttrValue::KvList(vec![KeyValue::new("k", AttrValue::Double(1.5))]),
            ),
        ];
        full.events = vec![
            Event {
                time_ns: t0 + 20_000,
                name: "exception".into(),
                attributes: vec![KeyValue::new(
                    "exception.message",
                    AttrValue::Str("x".into()),
                )],
                dropped_attributes_count: 0,
            },
            Event {
                time_ns: t0 + 30_000,
                name: "plain".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ];
        full.links = vec![Link {
            trace_id: [9; 16],
            span_id: [8; 8],
            trace_state: String::new(),
            attributes: vec![],
            dropped_attributes_count: 0,
            flags: 0,
        }];
        spans.push(full);
        // A child that starts before its parent on another host (skew
        // warning) and an orphan (missing parent warning).
        spans.push(span(3, Some(10), "svc-9", "other", t0 - 5_000_000));
        spans.push(span(4, Some(99), "svc-9", "other", t0 + 50));
        for skew in [true, false] {
            let tree = TraceTree::build(spans.clone(), skew);
            let want = serde_json::to_string(&trace_json(&tree)).expect("value");
            let got = serde_json::to_string(&JaegerTrace(&tree)).expect("streamed");
            assert_eq!(got, want, "skew adjustment {skew}");
        }
        assert!(
            serde_json::to_string(&trace_json(&TraceTree::build(spans.clone(), true)))
                .expect("value")
                .contains("adjusted by"),
            "the fixture exercises the skew warning"
        );
        let empty = TraceTree::build(Vec::new(), true);
        assert_eq!(
            serde_json::to_string(&JaegerTrace(&empty)).expect("streamed"),
            serde_json::to_string(&trace_json(&empty)).expect("value")
        );
    }
}
