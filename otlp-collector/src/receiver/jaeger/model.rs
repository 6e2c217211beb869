//! Jaeger's span model, as both its wire encodings carry it (Thrift
//! `jaeger.Batch` and protobuf `jaeger.api_v2.Batch`), and its mapping to
//! the collector's [`Span`], done as the OpenTelemetry Collector's Jaeger
//! translator (`pkg/translator/jaeger`) does:
//!
//! - The process → the resource: `service.name` from `serviceName` (a process
//!   named `OTLPResourceNoServiceName` means none: no resource at all), then
//!   its tags; `hostname` becomes `host.name` and `jaeger.version` becomes
//!   `opencensus.exporterversion = "Jaeger-<version>"` (unless those are set).
//!   A protobuf span's own process wins over its batch's.
//! - Tags → attributes with their types; a repeated key keeps its last value.
//!   Then these tags are taken out: `span.kind` → the span kind;
//!   `error = true` (a bool) → status ERROR with `otel.status_description`
//!   (else `http.status_message`) as message; otherwise `otel.status_code`
//!   (`OK`/`ERROR`) with `otel.status_description`; otherwise an
//!   `http.status_code` implies ERROR (5xx, and 4xx except on server spans,
//!   as the HTTP semantic conventions say); `w3c.tracestate` → the trace
//!   state; `otel.scope.name` / `otel.scope.version` → the scope.
//!   Everything else stays an attribute with its type, including
//!   `sampler.type` and `sampler.param` (the sampling decision a Jaeger
//!   client made; kept as sampling-probability hints).
//! - The sampled flag (bit 0 of `flags`) → the W3C sampled flag.
//! - Logs → events: the `event` field is the name, the others attributes.
//! - References → the parent and links: the parent is Thrift's
//!   `parentSpanId` when not 0, else the first `CHILD_OF` reference within
//!   the same trace, else the first `FOLLOWS_FROM` one; every other
//!   reference is a link with `opentracing.ref_type` = `child_of` /
//!   `follows_from`.
//! - Times: microseconds (Thrift) or `Timestamp`/`Duration` (protobuf) to
//!   nanoseconds; a negative time or one past what 64-bit nanoseconds hold
//!   rejects the span (saturating would store a time that was never sent).

use std::collections::HashMap;

use crate::model::{
    AttrValue, CompactString, Event, KeyValue, Link, ResourceAttrs, Span, SpanKind, StatusCode,
};
use crate::receiver::convert::{convert_ids, limit_attrs, DecodeError, Decoded};
use crate::receiver::limits::LimitsConfig;

/// A batch of spans from one process (Thrift `Batch`, protobuf `Batch`).
#[derive(Debug, Default)]
pub struct JBatch {
    /// The reporting process; a protobuf span may carry its own.
    pub process: Option<JProcess>,
    /// The spans.
    pub spans: Vec<JSpan>,
}

/// A Jaeger process: service name and tags.
#[derive(Clone, Debug, Default)]
pub struct JProcess {
    /// `serviceName`.
    pub service_name: String,
    /// Process tags.
    pub tags: Vec<KeyValue>,
}

/// One Jaeger span in wire-neutral form.
#[derive(Debug)]
pub struct JSpan {
    /// 16 bytes from Thrift; as sent from protobuf (checked later).
    pub trace_id: Vec<u8>,
    /// 8 bytes from Thrift; as sent from protobuf.
    pub span_id: Vec<u8>,
    /// Thrift's `parentSpanId` (0: none, look at the references).
    pub parent_span_id: u64,
    /// `operationName`.
    pub operation_name: String,
    /// `references`.
    pub references: Vec<JRef>,
    /// `flags` (1 sampled, 2 debug).
    pub flags: u32,
    /// Start and end in nanoseconds since the epoch, or why they cannot be.
    pub times: Result<(u64, u64), String>,
    /// `tags`.
    pub tags: Vec<KeyValue>,
    /// `logs`.
    pub logs: Vec<JLog>,
    /// A protobuf span's own process.
    pub process: Option<JProcess>,
}

impl Default for JSpan {
    fn default() -> Self {
        JSpan {
            trace_id: Vec::new(),
            span_id: Vec::new(),
            parent_span_id: 0,
            operation_name: String::new(),
            references: Vec::new(),
            flags: 0,
            times: Ok((0, 0)),
            tags: Vec::new(),
            logs: Vec::new(),
            process: None,
        }
    }
}

/// A span reference.
#[derive(Debug, Default)]
pub struct JRef {
    /// `CHILD_OF` (else `FOLLOWS_FROM` or unknown, treated as follows-from).
    pub child_of: bool,
    /// Referenced trace.
    pub trace_id: Vec<u8>,
    /// Referenced span.
    pub span_id: Vec<u8>,
}

/// A span log.
#[derive(Debug)]
pub struct JLog {
    /// Nanoseconds since the epoch, or why not.
    pub time: Result<u64, String>,
    /// `fields`.
    pub fields: Vec<KeyValue>,
}

/// The process name the OpenTelemetry exporters write for "no resource".
const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// Microseconds since the epoch (Thrift) as nanoseconds; `what` names the field.
pub fn micros_to_nanos(what: &str, us: i64) -> Result<u64, String> {
    let us = u64::try_from(us).map_err(|_| format!("{what} {us} µs is negative"))?;
    us.checked_mul(1000).ok_or_else(|| {
        format!("{what} {us} µs is past the year 2554 (64-bit nanoseconds overflow)")
    })
}

/// Thrift's start time and duration (microseconds) as start and end in nanoseconds.
pub fn thrift_times(start_us: i64, duration_us: i64) -> Result<(u64, u64), String> {
    let start = micros_to_nanos("startTime", start_us)?;
    let dur = micros_to_nanos("duration", duration_us)?;
    let end = start
        .checked_add(dur)
        .ok_or_else(|| "startTime + duration is past the year 2554".to_string())?;
    Ok((start, end))
}

/// Keeps the last value of a repeated key, at the first one's position (a
/// map's `put`, as the translator's attribute map behaves).
fn dedupe(kvs: Vec<KeyValue>) -> Vec<KeyValue> {
    if kvs.len() < 2 {
        return kvs;
    }
    let mut at: HashMap<CompactString, usize> = HashMap::with_capacity(kvs.len());
    let mut out: Vec<KeyValue> = Vec::with_capacity(kvs.len());
    for kv in kvs {
        match at.get(&kv.key) {
            Some(&i) => out[i].value = kv.value,
            None => {
                at.insert(kv.key.clone(), out.len());
                out.push(kv);
            }
        }
    }
    out
}

fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<AttrValue> {
    let i = attrs.iter().position(|kv| kv.key == key)?;
    Some(attrs.remove(i).value)
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AttrValue> {
    attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

/// A value as a string the way the translator reads one: strings as they
/// are, any other type as the empty string.
fn str_of<T: for<'a> From<&'a str> + Default>(v: Option<&AttrValue>) -> T {
    match v {
        Some(AttrValue::Str(s)) => T::from(s.as_str()),
        _ => T::default(),
    }
}

/// The resource of a process: (service name, attributes).
fn resource(p: Option<&JProcess>) -> (CompactString, Vec<KeyValue>) {
    let unknown = || CompactString::const_new("unknown_service");
    let Some(p) = p.filter(|p| p.service_name != NO_SERVICE_NAME) else {
        return (unknown(), Vec::new());
    };
    let mut attrs = Vec::with_capacity(p.tags.len() + 1);
    if !p.service_name.is_empty() {
        attrs.push(KeyValue::new(
            "service.name",
            AttrValue::Str(p.service_name.as_str().into()),
        ));
    }
    attrs.extend(p.tags.iter().cloned());
    let mut attrs = dedupe(attrs);
    if get(&attrs, "host.name").is_none() {
        if let Some(i) = attrs.iter().position(|kv| kv.key == "hostname") {
            attrs[i].key = "host.name".into();
        }
    }
    if get(&attrs, "opencensus.exporterversion").is_none() {
        if let Some(v) = take(&mut attrs, "jaeger.version") {
            attrs.push(KeyValue::new(
                "opencensus.exporterversion",
                AttrValue::Str(format!("Jaeger-{}", str_of::<CompactString>(Some(&v))).into()),
            ));
        }
    }
    let service = match get(&attrs, "service.name") {
        Some(AttrValue::Str(s)) if !s.is_empty() => s.clone(),
        _ => unknown(),
    };
    (service, attrs)
}

fn kind_of(v: Option<AttrValue>) -> SpanKind {
    match str_of::<CompactString>(v.as_ref()).as_str() {
        "client" => SpanKind::Client,
        "server" => SpanKind::Server,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => SpanKind::Unspecified,
    }
}

/// The status an `http.status_code` implies: 4xx is an error except on
/// server spans; 1xx-398 is unset; anything else an error.
fn status_from_http(code: i64, kind: SpanKind) -> StatusCode {
    if (400..500).contains(&code) {
        match kind {
            SpanKind::Client => return StatusCode::Error,
            SpanKind::Server => return StatusCode::Unset,
            _ => {}
        }
    }
    if (100..399).contains(&code) {
        StatusCode::Unset
    } else {
        StatusCode::Error
    }
}

/// Takes the status tags out of `attrs` (see the module docs).
fn status(attrs: &mut Vec<KeyValue>, kind: SpanKind) -> (StatusCode, String) {
    let mut code = StatusCode::Unset;
    let mut message = String::new();
    let mut set = false;
    if matches!(get(attrs, "error"), Some(AttrValue::Bool(true))) {
        take(attrs, "error");
        code = StatusCode::Error;
        set = true;
        message = match take(attrs, "otel.status_description") {
            Some(d) => str_of(Some(&d)),
            None => str_of(get(attrs, "http.status_message")),
        };
    }
    if let Some(c) = take(attrs, "otel.status_code") {
        if !set {
            set = true;
            code = match str_of::<CompactString>(Some(&c))
                .to_ascii_uppercase()
                .as_str()
            {
                "OK" => StatusCode::Ok,
                "ERROR" => StatusCode::Error,
                _ => StatusCode::Unset,
            };
            if let Some(d) = take(attrs, "otel.status_description") {
                message = str_of(Some(&d));
            }
        }
    } else if !set {
        let http = match get(attrs, "http.status_code") {
            Some(AttrValue::Int(i)) => Some(*i),
            Some(AttrValue::Str(s)) => s.parse::<i64>().ok(),
            _ => None,
        };
        if let Some(h) = http {
            let c = status_from_http(h, kind);
            if c != StatusCode::Unset {
                set = true;
                code = c;
            }
            if let Some(m) = get(attrs, "http.status_message") {
                message = str_of(Some(m));
            }
        }
    }
    if set {
        (code, message)
    } else {
        (StatusCode::Unset, String::new())
    }
}

fn id_u64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

/// Converts one span; `res` is its resource (service name, attributes).
fn convert(i: usize, js: JSpan, res: &(CompactString, ResourceAttrs)) -> Result<Span, String> {
    let (start_ns, end_ns) = js.times.map_err(|e| format!("span {i}: {e}"))?;
    // The parent: Thrift's explicit id, else a reference within the trace.
    let parent: Vec<u8> = if js.parent_span_id != 0 {
        js.parent_span_id.to_be_bytes().to_vec()
    } else {
        let same_trace = |r: &&JRef| r.trace_id == js.trace_id;
        js.references
            .iter()
            .filter(same_trace)
            .find(|r| r.child_of)
            .or_else(|| {
                js.references
                    .iter()
                    .filter(same_trace)
                    .find(|r| !r.child_of)
            })
            .map(|r| r.span_id.clone())
            .unwrap_or_default()
    };
    let (trace_id, span_id, parent_span_id) = convert_ids(i, &js.trace_id, &js.span_id, &parent)?;
    let parent_u64 = id_u64(&parent);
    let mut links = Vec::new();
    for r in js.references {
        if r.child_of && parent_u64.is_some() && id_u64(&r.span_id) == parent_u64 {
            continue;
        }
        let (Ok(t), Ok(s)) = (
            <[u8; 16]>::try_from(r.trace_id.as_slice()),
            <[u8; 8]>::try_from(r.span_id.as_slice()),
        ) else {
            return Err(format!(
                "span {i}: a reference has a trace_id of {} bytes / span_id of {} bytes (need 16 / 8)",
                r.trace_id.len(),
                r.span_id.len()
            ));
        };
        let ref_type = if r.child_of {
            "child_of"
        } else {
            "follows_from"
        };
        links.push(Link {
            trace_id: t,
            span_id: s,
            trace_state: String::new(),
            attributes: vec![KeyValue::new(
                "opentracing.ref_type",
                AttrValue::Str(ref_type.into()),
            )],
            dropped_attributes_count: 0,
            flags: 0,
        });
    }
    let mut attrs = dedupe(js.tags);
    let kind = kind_of(take(&mut attrs, "span.kind"));
    let (status_code, status_message) = status(&mut attrs, kind);
    let trace_state = str_of(take(&mut attrs, "w3c.tracestate").as_ref());
    let (mut scope_name, mut scope_version) = (CompactString::default(), CompactString::default());
    if let Some(n) = take(&mut attrs, "otel.scope.name") {
        scope_name = str_of(Some(&n));
        if let Some(v) = take(&mut attrs, "otel.scope.version") {
            scope_version = str_of(Some(&v));
        }
    }
    let mut events = Vec::with_capacity(js.logs.len());
    for log in js.logs {
        let time_ns = log.time.map_err(|e| format!("span {i}: a log's {e}"))?;
        let mut fields = dedupe(log.fields);
        let name = str_of(take(&mut fields, "event").as_ref());
        events.push(Event {
            time_ns,
            name,
            attributes: fields,
            dropped_attributes_count: 0,
        });
    }
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state,
        flags: js.flags & 1,
        name: js.operation_name.into(),
        kind,
        start_ns,
        end_ns,
        attributes: attrs,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status_code,
        status_message,
        service_name: res.0.clone(),
        resource_attributes: res.1.clone(),
        scope_name,
        scope_version,
    })
}

/// Maps a decoded batch to validated spans (limits applied).
pub fn to_spans(batch: JBatch, limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    DecodeError::check_span_count(batch.spans.len(), limits)?;
    let mut out = Decoded {
        spans: Vec::with_capacity(batch.spans.len()),
        ..Decoded::default()
    };
    let limited = |mut res: (CompactString, Vec<KeyValue>), out: &mut Decoded| {
        let (d, t) = limit_attrs(&mut res.1, limits);
        out.attributes_dropped += d;
        out.values_truncated += t;
        (res.0, ResourceAttrs::new(res.1))
    };
    let base = limited(resource(batch.process.as_ref()), &mut out);
    for (i, mut js) in batch.spans.into_iter().enumerate() {
        let own = js
            .process
            .take()
            .map(|p| limited(resource(Some(&p)), &mut out));
        match convert(i, js, own.as_ref().unwrap_or(&base)) {
            Ok(span) => out.push(span, limits, i),
            Err(e) => out.reject(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, AttrValue::Str(v.into()))
    }

    fn span(tags: Vec<KeyValue>) -> JSpan {
        JSpan {
            trace_id: [0u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2].to_vec(),
            span_id: 3u64.to_be_bytes().to_vec(),
            operation_name: "op".into(),
            times: thrift_times(1_000_000, 5),
            tags,
            ..JSpan::default()
        }
    }

    fn one(js: JSpan, process: Option<JProcess>) -> Span {
        let d = to_spans(
            JBatch {
                process,
                spans: vec![js],
            },
            &LimitsConfig::default(),
        )
        .unwrap();
        assert_eq!(d.rejected, 0, "{}", d.error_message());
        d.spans.into_iter().next().unwrap()
    }

    #[test]
    fn process_becomes_the_resource() {
        let p = JProcess {
            service_name: "svc".into(),
            tags: vec![
                s("hostname", "h1"),
                s("jaeger.version", "Python-4.8.0"),
                s("ip", "10.0.0.1"),
            ],
        };
        let sp = one(span(vec![]), Some(p));
        assert_eq!(sp.service_name, "svc");
        assert_eq!(
            sp.resource_attributes,
            vec![
                s("service.name", "svc"),
                s("host.name", "h1"),
                s("ip", "10.0.0.1"),
                s("opencensus.exporterversion", "Jaeger-Python-4.8.0"),
            ]
        );
        let none = JProcess {
            service_name: NO_SERVICE_NAME.into(),
            tags: vec![s("a", "b")],
        };
        let sp = one(span(vec![]), Some(none));
        assert_eq!(sp.service_name, "unknown_service");
        assert!(sp.resource_attributes.is_empty());
    }

    #[test]
    fn special_tags_become_fields() {
        let sp = one(
            span(vec![
                s("span.kind", "client"),
                KeyValue::new("error", AttrValue::Bool(true)),
                s("otel.status_description", "boom"),
                s("w3c.tracestate", "a=b"),
                s("otel.scope.name", "lib"),
                s("otel.scope.version", "1.0"),
                s("sampler.type", "probabilistic"),
                KeyValue::new("sampler.param", AttrValue::Double(0.25)),
                s("k", "v1"),
                s("k", "v2"),
            ]),
            None,
        );
        assert_eq!(sp.kind, SpanKind::Client);
        assert_eq!(
            (sp.status_code, sp.status_message.as_str()),
            (StatusCode::Error, "boom")
        );
        assert_eq!(sp.trace_state, "a=b");
        assert_eq!(
            (sp.scope_name.as_str(), sp.scope_version.as_str()),
            ("lib", "1.0")
        );
        assert_eq!(
            sp.attributes,
            vec![
                s("sampler.type", "probabilistic"),
                KeyValue::new("sampler.param", AttrValue::Double(0.25)),
                s("k", "v2"),
            ]
        );
        assert_eq!(sp.service_name, "unknown_service");
    }

    #[test]
    fn status_rules() {
        let st = |tags: Vec<KeyValue>| {
            let sp = one(span(tags), None);
            (sp.status_code, sp.status_message, sp.attributes.len())
        };
        // error=false stays an attribute; otel.status_code applies.
        assert_eq!(
            st(vec![
                KeyValue::new("error", AttrValue::Bool(false)),
                s("otel.status_code", "ok"),
                s("otel.status_description", "fine"),
            ]),
            (StatusCode::Ok, "fine".into(), 1)
        );
        // A string "true" error tag is not the error flag.
        assert_eq!(
            st(vec![s("error", "true")]),
            (StatusCode::Unset, String::new(), 1)
        );
        // HTTP fallback: 500 is an error, with the status message kept as attribute.
        assert_eq!(
            st(vec![
                KeyValue::new("http.status_code", AttrValue::Int(503)),
                s("http.status_message", "busy"),
            ]),
            (StatusCode::Error, "busy".into(), 2)
        );
        // 404 on a server span is not an error; on a client span it is.
        assert_eq!(
            st(vec![s("span.kind", "server"), s("http.status_code", "404")]),
            (StatusCode::Unset, String::new(), 1)
        );
        assert_eq!(
            st(vec![s("span.kind", "client"), s("http.status_code", "404")]),
            (StatusCode::Error, String::new(), 1)
        );
        // error=true wins over otel.status_code, which is removed anyway.
        assert_eq!(
            st(vec![
                s("otel.status_code", "OK"),
                KeyValue::new("error", AttrValue::Bool(true)),
                s("http.status_message", "teapot"),
            ]),
            (StatusCode::Error, "teapot".into(), 1)
        );
    }

    #[test]
    fn references_give_parent_and_links() {
        let trace = span(vec![]).trace_id;
        let r = |child_of, t: &[u8], id: u64| JRef {
            child_of,
            trace_id: t.to_vec(),
            span_id: id.to_be_bytes().to_vec(),
        };
        let other = [9u8; 16];
        let mut js = span(vec![]);
        js.references = vec![r(false, &trace, 5), r(true, &other, 6), r(true, &trace, 7)];
        let sp = one(js, None);
        assert_eq!(sp.parent_span_id, Some(7u64.to_be_bytes()));
        let links: Vec<(u64, String)> = sp
            .links
            .iter()
            .map(|l| {
                (
                    u64::from_be_bytes(l.span_id),
                    l.attributes[0].value.to_text(),
                )
            })
            .collect();
        assert_eq!(
            links,
            vec![(5, "follows_from".into()), (6, "child_of".into())]
        );
        // Only a follows-from within the trace: it is the parent, and a link too.
        let mut js = span(vec![]);
        js.references = vec![r(false, &trace, 5)];
        let sp = one(js, None);
        assert_eq!(sp.parent_span_id, Some(5u64.to_be_bytes()));
        assert_eq!(sp.links.len(), 1);
        // Thrift's explicit parent wins over references.
        let mut js = span(vec![]);
        js.parent_span_id = 8;
        js.references = vec![r(true, &trace, 7)];
        let sp = one(js, None);
        assert_eq!(sp.parent_span_id, Some(8u64.to_be_bytes()));
        assert_eq!(sp.links.len(), 1);
        // A reference with a short id rejects the span.
        let mut js = span(vec![]);
        js.references = vec![JRef {
            child_of: false,
            trace_id: vec![1; 3],
            span_id: vec![1; 8],
        }];
        let d = to_spans(
            JBatch {
                process: None,
                spans: vec![js],
            },
            &LimitsConfig::default(),
        )
        .unwrap();
        assert_eq!(d.rejected, 1);
        assert!(
            d.error_message().contains("reference"),
            "{}",
            d.error_message()
        );
    }

    #[test]
    fn logs_become_events_and_flags_keep_the_sampled_bit() {
        let mut js = span(vec![]);
        js.flags = 3;
        js.logs = vec![JLog {
            time: micros_to_nanos("timestamp", 1_000_002),
            fields: vec![s("event", "retry"), s("attempt", "2")],
        }];
        let sp = one(js, None);
        assert_eq!(sp.flags, 1);
        assert_eq!(sp.events[0].name, "retry");
        assert_eq!(sp.events[0].time_ns, 1_000_002_000);
        assert_eq!(sp.events[0].attributes, vec![s("attempt", "2")]);
    }

    #[test]
    fn bad_times_reject_the_span() {
        assert!(thrift_times(-1, 0).unwrap_err().contains("negative"));
        assert!(thrift_times(1, -1).unwrap_err().contains("negative"));
        assert!(thrift_times(i64::MAX, 0).unwrap_err().contains("2554"));
        assert!(thrift_times(18_446_744_073_709_000, 1_000).is_err());
        let mut js = span(vec![]);
        js.logs = vec![JLog {
            time: micros_to_nanos("timestamp", -5),
            fields: vec![],
        }];
        let d = to_spans(
            JBatch {
                process: None,
                spans: vec![js],
            },
            &LimitsConfig::default(),
        )
        .unwrap();
        assert_eq!(d.rejected, 1);
        assert!(d.error_message().contains("negative"));
    }
}
