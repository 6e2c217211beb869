//! Jaeger's v1 JSON trace model (`internal/uimodel` in Jaeger's source), as
//! Jaeger's query service renders an OTLP span: the OpenTelemetry Collector's
//! OTLP → Jaeger translation, then Jaeger's JSON conversion.
//!
//! - Processes are deduplicated by service and resource, `p1, p2, …` in order of
//!   first appearance; the resource without `service.name` becomes the tags.
//! - Span tags: `otel.scope.name`, `otel.scope.version`, the attributes,
//!   `span.kind`, `otel.status_code`, `error`, `otel.status_description`,
//!   `w3c.tracestate`. Integers beyond ±(2^53−1) are strings (JavaScript would
//!   round the number); arrays, maps and empty values are `string` tags.
//! - `references`: the parent as the first `CHILD_OF`, links as `FOLLOWS_FROM`
//!   (`CHILD_OF` when the link says `opentracing.ref_type=child_of`; a link to
//!   the parent only sets the parent reference's type).
//! - Events are logs, with an `event` field for the name unless the event has
//!   an `event` attribute or no name.
//! - `duration` is `(end − start) / 1000` (µs); `flags` is left out when zero.
//!
//! Where Jaeger cannot render a value we do: a NaN or infinite double makes
//! Jaeger's response fail; here it is the string `NaN`, `Infinity` or
//! `-Infinity`.

use std::collections::HashMap;

use base64::Engine as _;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{hex, AttrValue, Event, KeyValue, Link, Span, SpanKind, StatusCode, TraceId};

use super::tree::{NodeInfo, TraceTree};

/// Largest integer JavaScript represents exactly (`Number.MAX_SAFE_INTEGER`).
const JS_MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Jaeger's trace id text: 16 hex digits when the high half is zero, else 32.
pub fn jaeger_trace_id(id: &TraceId) -> String {
    if id[..8] == [0u8; 8] {
        hex(&id[8..])
    } else {
        hex(id)
    }
}

/// A tag's `value`, typed as Jaeger's JSON has it.
enum TagValue<'a> {
    Str(&'a str),
    Owned(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Serialize for TagValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TagValue::Str(v) => s.serialize_str(v),
            TagValue::Owned(v) => s.serialize_str(v),
            TagValue::Bool(b) => s.serialize_bool(*b),
            TagValue::Int(i) => s.serialize_i64(*i),
            TagValue::Float(d) => s.serialize_f64(*d),
        }
    }
}

/// The Jaeger `type` and `value` of an attribute.
fn typed(v: &AttrValue) -> (&'static str, TagValue<'_>) {
    match v {
        AttrValue::Str(s) => ("string", TagValue::Str(s)),
        AttrValue::Bool(b) => ("bool", TagValue::Bool(*b)),
        AttrValue::Int(i) if (-JS_MAX_SAFE_INTEGER..=JS_MAX_SAFE_INTEGER).contains(i) => {
            ("int64", TagValue::Int(*i))
        }
        AttrValue::Int(i) => ("int64", TagValue::Owned(i.to_string())),
        AttrValue::Double(d) if d.is_finite() => ("float64", TagValue::Float(*d)),
        AttrValue::Double(d) if d.is_nan() => ("float64", TagValue::Str("NaN")),
        AttrValue::Double(d) if *d > 0.0 => ("float64", TagValue::Str("Infinity")),
        AttrValue::Double(_) => ("float64", TagValue::Str("-Infinity")),
        AttrValue::Bytes(b) => (
            "binary",
            TagValue::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        AttrValue::Empty => ("string", TagValue::Str("")),
        other => ("string", TagValue::Owned(other.to_text())),
    }
}

/// One `{"key", "type", "value"}` tag.
#[derive(Clone)]
enum TagSer<'a> {
    Attr(&'a str, &'a AttrValue),
    Str(&'a str, &'a str),
    ErrorTrue,
}

impl Serialize for TagSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (key, ty, value) = match self {
            TagSer::Attr(k, v) => {
                let (ty, value) = typed(v);
                (*k, ty, value)
            }
            TagSer::Str(k, v) => (*k, "string", TagValue::Str(v)),
            TagSer::ErrorTrue => ("error", "bool", TagValue::Bool(true)),
        };
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("key", key)?;
        m.serialize_entry("type", ty)?;
        m.serialize_entry("value", &value)?;
        m.end()
    }
}

fn attr_tags(kvs: &[KeyValue]) -> impl Iterator<Item = TagSer<'_>> + Clone {
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

/// A span's tags, in the translator's order.
fn span_tags(s: &Span) -> Vec<TagSer<'_>> {
    let mut tg: Vec<TagSer<'_>> = Vec::with_capacity(s.attributes.len() + 6);
    if !s.scope_name.is_empty() {
        tg.push(TagSer::Str("otel.scope.name", &s.scope_name));
    }
    if !s.scope_version.is_empty() {
        tg.push(TagSer::Str("otel.scope.version", &s.scope_version));
    }
    tg.extend(attr_tags(&s.attributes));
    if s.kind != SpanKind::Unspecified {
        tg.push(TagSer::Str("span.kind", s.kind.as_str()));
    }
    match s.status_code {
        StatusCode::Ok => tg.push(TagSer::Str("otel.status_code", "OK")),
        StatusCode::Error => {
            tg.push(TagSer::Str("otel.status_code", "ERROR"));
            tg.push(TagSer::ErrorTrue);
        }
        StatusCode::Unset => {}
    }
    if !s.status_message.is_empty() {
        tg.push(TagSer::Str("otel.status_description", &s.status_message));
    }
    if !s.trace_state.is_empty() {
        tg.push(TagSer::Str("w3c.tracestate", &s.trace_state));
    }
    tg
}

/// A log's fields: the event name (unless empty or given as an `event`
/// attribute), then the attributes.
fn log_fields(e: &Event) -> impl Iterator<Item = TagSer<'_>> + Clone {
    let named = !e.name.is_empty() && !e.attributes.iter().any(|kv| kv.key == "event");
    named
        .then_some(TagSer::Str("event", &e.name))
        .into_iter()
        .chain(attr_tags(&e.attributes))
}

/// `CHILD_OF` or `FOLLOWS_FROM` for a link.
fn link_ref_type(l: &Link) -> &'static str {
    let child_of = l.attributes.iter().any(|kv| {
        kv.key == "opentracing.ref_type" && kv.value == AttrValue::Str("child_of".into())
    });
    if child_of {
        "CHILD_OF"
    } else {
        "FOLLOWS_FROM"
    }
}

/// One reference: (type, trace id, span id).
struct Ref(&'static str, String, String);

/// A span's references: the parent first, then its links.
fn references(s: &Span, trace_id: &str) -> Vec<Ref> {
    let mut refs = Vec::with_capacity(s.links.len() + 1);
    if let Some(parent) = s.parent_span_id {
        refs.push(Ref("CHILD_OF", trace_id.to_string(), hex(&parent)));
    }
    for l in &s.links {
        let ty = link_ref_type(l);
        if s.parent_span_id == Some(l.span_id) && l.trace_id == s.trace_id {
            refs[0].0 = ty;
            continue;
        }
        refs.push(Ref(ty, jaeger_trace_id(&l.trace_id), hex(&l.span_id)));
    }
    refs
}

impl Serialize for Ref {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("refType", self.0)?;
        m.serialize_entry("spanID", &self.2)?;
        m.serialize_entry("traceID", &self.1)?;
        m.end()
    }
}

/// A span's warnings: clock-skew shifts and missing parents.
fn warnings(n: &NodeInfo) -> Vec<String> {
    let mut w = Vec::new();
    if n.skew_shift_ns != 0 {
        w.push(format!(
            "This span's timestamps were adjusted by {}µs for clock skew",
            n.skew_shift_ns / 1000
        ));
    }
    if let (true, Some(p)) = (n.orphan, n.missing_parent) {
        w.push(format!(
            "invalid parent span IDs={}; skipping clock skew adjustment",
            hex(&p)
        ));
    }
    w
}

fn micros(ns: u64) -> u64 {
    ns / 1000
}

/// Duration in µs, as Jaeger computes it: the difference first, then the unit.
fn duration_us(s: &Span) -> u64 {
    s.end_ns.saturating_sub(s.start_ns) / 1000
}

/// The resource tags of a span's process: the resource without `service.name`.
fn process_tags(s: &Span) -> Vec<&KeyValue> {
    s.resource_attributes
        .iter()
        .filter(|kv| kv.key != "service.name")
        .collect()
}

/// One trace as a `serde_json::Value`: the reference the streamed
/// [`JaegerTrace`] is tested against (same keys, in the same sorted order,
/// same values).
pub fn trace_json(t: &TraceTree) -> Value {
    let tag_value = |ty: &str, v: &AttrValue| -> Value {
        match (ty, v) {
            ("int64", AttrValue::Int(i)) if i.unsigned_abs() > JS_MAX_SAFE_INTEGER as u64 => {
                json!(i.to_string())
            }
            ("float64", AttrValue::Double(d)) if !d.is_finite() => json!(if d.is_nan() {
                "NaN"
            } else if *d > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }),
            (_, AttrValue::Str(s)) => json!(s),
            (_, AttrValue::Bool(b)) => json!(b),
            (_, AttrValue::Int(i)) => json!(i),
            (_, AttrValue::Double(d)) => json!(d),
            (_, AttrValue::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
            (_, AttrValue::Empty) => json!(""),
            (_, other) => json!(other.to_text()),
        }
    };
    let tag = |k: &str, v: &AttrValue| -> Value {
        let ty = match v {
            AttrValue::Bool(_) => "bool",
            AttrValue::Int(_) => "int64",
            AttrValue::Double(_) => "float64",
            AttrValue::Bytes(_) => "binary",
            _ => "string",
        };
        json!({ "key": k, "type": ty, "value": tag_value(ty, v) })
    };
    let str_tag = |k: &str, v: &str| json!({ "key": k, "type": "string", "value": v });
    let trace_id = t
        .spans
        .first()
        .map(|s| jaeger_trace_id(&s.trace_id))
        .unwrap_or_default();
    let mut process_ids: HashMap<(&str, String), String> = HashMap::new();
    let mut processes = serde_json::Map::new();
    let mut spans = Vec::with_capacity(t.spans.len());
    for (s, n) in t.spans.iter().zip(&t.nodes) {
        let res: Vec<KeyValue> = process_tags(s).into_iter().cloned().collect();
        let key = (
            s.service_name.as_str(),
            serde_json::to_string(&res).unwrap_or_default(),
        );
        let next = format!("p{}", process_ids.len() + 1);
        let pid = process_ids.entry(key).or_insert_with(|| {
            let tags: Vec<Value> = res.iter().map(|kv| tag(&kv.key, &kv.value)).collect();
            processes.insert(
                next.clone(),
                json!({ "serviceName": s.service_name, "tags": tags }),
            );
            next
        });
        let mut references: Vec<Value> = Vec::new();
        if let Some(parent) = s.parent_span_id {
            references.push(
                json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": hex(&parent) }),
            );
        }
        for l in &s.links {
            let child_of = l.attributes.iter().any(|kv| {
                kv.key == "opentracing.ref_type" && kv.value == AttrValue::Str("child_of".into())
            });
            let ty = if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" };
            if s.parent_span_id == Some(l.span_id) && l.trace_id == s.trace_id {
                references[0]["refType"] = json!(ty);
            } else {
                references.push(json!({
                    "refType": ty, "traceID": jaeger_trace_id(&l.trace_id), "spanID": hex(&l.span_id),
                }));
            }
        }
        let mut tg = Vec::new();
        if !s.scope_name.is_empty() {
            tg.push(str_tag("otel.scope.name", &s.scope_name));
        }
        if !s.scope_version.is_empty() {
            tg.push(str_tag("otel.scope.version", &s.scope_version));
        }
        tg.extend(s.attributes.iter().map(|kv| tag(&kv.key, &kv.value)));
        if s.kind != SpanKind::Unspecified {
            tg.push(str_tag("span.kind", s.kind.as_str()));
        }
        match s.status_code {
            StatusCode::Ok => tg.push(str_tag("otel.status_code", "OK")),
            StatusCode::Error => {
                tg.push(str_tag("otel.status_code", "ERROR"));
                tg.push(json!({ "key": "error", "type": "bool", "value": true }));
            }
            StatusCode::Unset => {}
        }
        if !s.status_message.is_empty() {
            tg.push(str_tag("otel.status_description", &s.status_message));
        }
        if !s.trace_state.is_empty() {
            tg.push(str_tag("w3c.tracestate", &s.trace_state));
        }
        let logs: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = Vec::new();
                if !e.name.is_empty() && !e.attributes.iter().any(|kv| kv.key == "event") {
                    fields.push(str_tag("event", &e.name));
                }
                fields.extend(e.attributes.iter().map(|kv| tag(&kv.key, &kv.value)));
                json!({ "timestamp": micros(e.time_ns), "fields": fields })
            })
            .collect();
        let w = warnings(n);
        let mut span = json!({
            "traceID": trace_id,
            "spanID": hex(&s.span_id),
            "operationName": s.name,
            "references": references,
            "startTime": micros(s.start_ns),
            "duration": s.end_ns.saturating_sub(s.start_ns) / 1000,
            "tags": tg,
            "logs": logs,
            "processID": pid,
            "warnings": if w.is_empty() { Value::Null } else { json!(w) },
        });
        if s.flags & 0xff != 0 {
            span["flags"] = json!(s.flags & 0xff);
        }
        spans.push(span);
    }
    json!({
        "traceID": trace_id,
        "spans": spans,
        "processes": processes,
        "warnings": null,
    })
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
            let res = process_tags(s);
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

/// `{"fields", "timestamp"}` of one event.
struct LogSer<'a>(&'a Event);

impl Serialize for LogSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("fields", &Seq(log_fields(self.0)))?;
        m.serialize_entry("timestamp", &micros(self.0.time_ns))?;
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
        let s = self.span;
        let w = warnings(self.node);
        let flags = s.flags & 0xff;
        let mut m = ser.serialize_map(Some(11))?;
        m.serialize_entry("duration", &duration_us(s))?;
        // Jaeger's `flags` is `omitempty`.
        if flags != 0 {
            m.serialize_entry("flags", &flags)?;
        }
        m.serialize_entry("logs", &Seq(s.events.iter().map(LogSer)))?;
        m.serialize_entry("operationName", &s.name)?;
        m.serialize_entry("processID", self.process_id)?;
        m.serialize_entry("references", &references(s, self.trace_id))?;
        m.serialize_entry("spanID", &hex(&s.span_id))?;
        m.serialize_entry("startTime", &micros(s.start_ns))?;
        m.serialize_entry("tags", &span_tags(s))?;
        m.serialize_entry("traceID", self.trace_id)?;
        if w.is_empty() {
            m.serialize_entry("warnings", &())?;
        } else {
            m.serialize_entry("warnings", &w)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Link, Span, StatusCode as SpanStatus};

    fn span(id: u8, parent: Option<u8>, service: &str, host: &str, start: u64) -> Span {
        Span {
            trace_id: [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            flags: 0x301,
            name: compact_str::format_compact!("op {id}"),
            kind: SpanKind::Unspecified,
            start_ns: start,
            end_ns: start + 1_234_567,
            status_code: SpanStatus::Unset,
            service_name: service.into(),
            resource_attributes: vec![
                KeyValue::new("service.name", AttrValue::Str(service.into())),
                KeyValue::new("host.name", AttrValue::Str(host.into())),
            ]
            .into(),
            ..Span::test(0)
        }
    }

    fn link(trace_id: TraceId, span_id: [u8; 8], attrs: Vec<KeyValue>) -> Link {
        Link {
            trace_id,
            span_id,
            trace_state: String::new(),
            attributes: attrs,
            dropped_attributes_count: 0,
            flags: 0,
        }
    }

    fn fixture() -> Vec<Span> {
        let t0 = 1_767_225_600_000_000_999u64;
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
        full.flags = 0x100;
        full.status_code = SpanStatus::Error;
        full.status_message = "boom \"quoted\" \u{1F600}".into();
        full.scope_name = "scope".into();
        full.scope_version = "1.0".into();
        full.trace_state = "k=v".into();
        full.attributes = vec![
            KeyValue::new("s", AttrValue::Str("<script>".into())),
            KeyValue::new("b", AttrValue::Bool(true)),
            KeyValue::new("i", AttrValue::Int(i64::MIN)),
            KeyValue::new("safe", AttrValue::Int(JS_MAX_SAFE_INTEGER)),
            KeyValue::new("unsafe", AttrValue::Int(JS_MAX_SAFE_INTEGER + 1)),
            KeyValue::new("d", AttrValue::Double(0.1 + 0.2)),
            KeyValue::new("nan", AttrValue::Double(f64::NAN)),
            KeyValue::new("inf", AttrValue::Double(f64::INFINITY)),
            KeyValue::new("-inf", AttrValue::Double(f64::NEG_INFINITY)),
            KeyValue::new("bytes", AttrValue::Bytes(vec![0, 255, 7])),
            KeyValue::new("empty", AttrValue::Empty),
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
            Event {
                time_ns: t0 + 31_000,
                name: "named".into(),
                attributes: vec![KeyValue::new("event", AttrValue::Str("own".into()))],
                dropped_attributes_count: 0,
            },
            Event {
                time_ns: t0 + 32_000,
                name: Default::default(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ];
        full.links = vec![
            link([9; 16], [8; 8], vec![]),
            link(
                [9; 16],
                [7; 8],
                vec![KeyValue::new(
                    "opentracing.ref_type",
                    AttrValue::Str("child_of".into()),
                )],
            ),
            // A link to the parent only retypes the parent reference.
            link(full.trace_id, [1; 8], vec![]),
        ];
        spans.push(full);
        // A child that starts before its parent on another host (skew
        // warning) and an orphan (missing parent warning).
        spans.push(span(3, Some(10), "svc-9", "other", t0 - 5_000_000));
        spans.push(span(4, Some(99), "svc-9", "other", t0 + 50));
        spans
    }

    /// The streaming serializer writes byte for byte the document of the
    /// `Value`-building `trace_json`: keys, their order, numbers, nulls.
    #[test]
    fn streamed_trace_equals_value_trace() {
        let spans = fixture();
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

    /// Jaeger's conversion rules, value by value.
    #[test]
    fn jaeger_rendering_rules() {
        let tree = TraceTree::build(fixture(), false);
        let doc = serde_json::to_value(JaegerTrace(&tree)).unwrap();
        let full = doc["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["spanID"] == "0202020202020202")
            .unwrap();
        let tags = full["tags"].as_array().unwrap();
        let keys: Vec<&str> = tags.iter().map(|t| t["key"].as_str().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "otel.scope.name",
                "otel.scope.version",
                "s",
                "b",
                "i",
                "safe",
                "unsafe",
                "d",
                "nan",
                "inf",
                "-inf",
                "bytes",
                "empty",
                "arr",
                "map",
                "span.kind",
                "otel.status_code",
                "error",
                "otel.status_description",
                "w3c.tracestate"
            ]
        );
        let tag = |k: &str| tags.iter().find(|t| t["key"] == k).unwrap().clone();
        assert_eq!(
            tag("i"),
            json!({"key": "i", "type": "int64", "value": "-9223372036854775808"})
        );
        assert_eq!(tag("safe")["value"], json!(9_007_199_254_740_991i64));
        assert_eq!(tag("unsafe")["value"], json!("9007199254740992"));
        assert_eq!(tag("nan")["value"], "NaN");
        assert_eq!(tag("inf")["value"], "Infinity");
        assert_eq!(tag("-inf")["value"], "-Infinity");
        assert_eq!(tag("nan")["type"], "float64");
        assert_eq!(tag("bytes")["value"], "AP8H");
        assert_eq!(
            tag("empty"),
            json!({"key": "empty", "type": "string", "value": ""})
        );
        assert_eq!(tag("arr")["value"], "[1,\"x\"]");
        // (end − start) / 1000, not end/1000 − start/1000: 1,234,567 ns is 1234 µs.
        assert_eq!(full["duration"], 1234);
        assert!(full.get("flags").is_none(), "flags 0 are left out");
        assert_eq!(doc["spans"][0]["flags"], 1);
        assert_eq!(
            full["references"],
            json!([
                {"refType": "FOLLOWS_FROM", "traceID": "0102030405060708", "spanID": "0101010101010101"},
                {"refType": "FOLLOWS_FROM", "traceID": hex(&[9; 16]), "spanID": "0808080808080808"},
                {"refType": "CHILD_OF", "traceID": hex(&[9; 16]), "spanID": "0707070707070707"},
            ])
        );
        let logs = full["logs"].as_array().unwrap();
        assert_eq!(
            logs[0]["fields"][0],
            json!({"key": "event", "type": "string", "value": "exception"})
        );
        assert_eq!(
            logs[1]["fields"],
            json!([{"key": "event", "type": "string", "value": "plain"}])
        );
        assert_eq!(
            logs[2]["fields"],
            json!([{"key": "event", "type": "string", "value": "own"}])
        );
        assert_eq!(logs[3]["fields"], json!([]));
    }
}
