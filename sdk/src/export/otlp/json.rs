//! OTLP/JSON, as the OTLP specification maps the protobuf messages: field
//! names in lowerCamelCase, trace and span ids as hex, enums as integers,
//! 64-bit integers as decimal strings, `bytes` as base64, fields with default
//! values left out. Written directly (no intermediate tree); strings are
//! escaped by `serde_json`.

use std::io::Write;

use super::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use super::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use super::proto::trace::v1::{span, Span, Status};

struct W(Vec<u8>);

impl W {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }
    fn string(&mut self, s: &str) {
        // A `&str` always serializes.
        let _ = serde_json::to_writer(&mut self.0, s);
    }
    fn hex(&mut self, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.0.push(b'"');
        for b in bytes {
            self.0.push(HEX[(b >> 4) as usize]);
            self.0.push(HEX[(b & 0xf) as usize]);
        }
        self.0.push(b'"');
    }
    fn u64_string(&mut self, v: u64) {
        let _ = write!(self.0, "\"{v}\"");
    }
    fn num(&mut self, v: impl std::fmt::Display) {
        let _ = write!(self.0, "{v}");
    }
}

/// Writes `"name":` preceded by a comma unless it is the first field.
fn field(w: &mut W, first: &mut bool, name: &str) {
    if !std::mem::take(first) {
        w.raw(",");
    }
    w.raw("\"");
    w.raw(name);
    w.raw("\":");
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn any_value(w: &mut W, v: &AnyValue) {
    w.raw("{");
    match &v.value {
        None => {}
        Some(any_value::Value::StringValue(s)) => {
            w.raw("\"stringValue\":");
            w.string(s);
        }
        Some(any_value::Value::BoolValue(b)) => {
            w.raw("\"boolValue\":");
            w.num(b);
        }
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(w.0, "\"intValue\":\"{i}\"");
        }
        Some(any_value::Value::DoubleValue(d)) => {
            w.raw("\"doubleValue\":");
            // proto3 JSON: the non-finite values are strings.
            if d.is_nan() {
                w.raw("\"NaN\"");
            } else if d.is_infinite() {
                w.raw(if *d > 0.0 {
                    "\"Infinity\""
                } else {
                    "\"-Infinity\""
                });
            } else {
                let _ = serde_json::to_writer(&mut w.0, d);
            }
        }
        Some(any_value::Value::ArrayValue(a)) => {
            w.raw("\"arrayValue\":{\"values\":[");
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    w.raw(",");
                }
                any_value(w, v);
            }
            w.raw("]}");
        }
        Some(any_value::Value::KvlistValue(l)) => {
            w.raw("\"kvlistValue\":{\"values\":");
            key_values(w, &l.values);
            w.raw("}");
        }
        Some(any_value::Value::BytesValue(b)) => {
            w.raw("\"bytesValue\":");
            w.string(&base64(b));
        }
    }
    w.raw("}");
}

fn key_values(w: &mut W, kvs: &[KeyValue]) {
    w.raw("[");
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.raw("{\"key\":");
        w.string(&kv.key);
        if let Some(v) = &kv.value {
            w.raw(",\"value\":");
            any_value(w, v);
        }
        w.raw("}");
    }
    w.raw("]");
}

/// `"attributes":[...]` and `"droppedAttributesCount":n`, each only when not empty.
fn attributes(w: &mut W, first: &mut bool, attrs: &[KeyValue], dropped: u32) {
    if !attrs.is_empty() {
        field(w, first, "attributes");
        key_values(w, attrs);
    }
    if dropped > 0 {
        field(w, first, "droppedAttributesCount");
        w.num(dropped);
    }
}

fn scope(w: &mut W, s: &InstrumentationScope) {
    let mut first = true;
    w.raw("{");
    field(w, &mut first, "name");
    w.string(&s.name);
    if !s.version.is_empty() {
        field(w, &mut first, "version");
        w.string(&s.version);
    }
    attributes(w, &mut first, &s.attributes, s.dropped_attributes_count);
    w.raw("}");
}

fn status(w: &mut W, s: &Status) {
    let mut first = true;
    w.raw("{");
    if !s.message.is_empty() {
        field(w, &mut first, "message");
        w.string(&s.message);
    }
    if s.code != 0 {
        field(w, &mut first, "code");
        w.num(s.code);
    }
    w.raw("}");
}

fn event(w: &mut W, e: &span::Event) {
    let mut first = true;
    w.raw("{");
    field(w, &mut first, "timeUnixNano");
    w.u64_string(e.time_unix_nano);
    field(w, &mut first, "name");
    w.string(&e.name);
    attributes(w, &mut first, &e.attributes, e.dropped_attributes_count);
    w.raw("}");
}

fn link(w: &mut W, l: &span::Link) {
    let mut first = true;
    w.raw("{");
    field(w, &mut first, "traceId");
    w.hex(&l.trace_id);
    field(w, &mut first, "spanId");
    w.hex(&l.span_id);
    if !l.trace_state.is_empty() {
        field(w, &mut first, "traceState");
        w.string(&l.trace_state);
    }
    attributes(w, &mut first, &l.attributes, l.dropped_attributes_count);
    if l.flags != 0 {
        field(w, &mut first, "flags");
        w.num(l.flags);
    }
    w.raw("}");
}

fn span(w: &mut W, s: &Span) {
    let mut first = true;
    w.raw("{");
    field(w, &mut first, "traceId");
    w.hex(&s.trace_id);
    field(w, &mut first, "spanId");
    w.hex(&s.span_id);
    if !s.trace_state.is_empty() {
        field(w, &mut first, "traceState");
        w.string(&s.trace_state);
    }
    if !s.parent_span_id.is_empty() {
        field(w, &mut first, "parentSpanId");
        w.hex(&s.parent_span_id);
    }
    if s.flags != 0 {
        field(w, &mut first, "flags");
        w.num(s.flags);
    }
    field(w, &mut first, "name");
    w.string(&s.name);
    field(w, &mut first, "kind");
    w.num(s.kind);
    field(w, &mut first, "startTimeUnixNano");
    w.u64_string(s.start_time_unix_nano);
    field(w, &mut first, "endTimeUnixNano");
    w.u64_string(s.end_time_unix_nano);
    attributes(w, &mut first, &s.attributes, s.dropped_attributes_count);
    if !s.events.is_empty() {
        field(w, &mut first, "events");
        w.raw("[");
        for (i, e) in s.events.iter().enumerate() {
            if i > 0 {
                w.raw(",");
            }
            event(w, e);
        }
        w.raw("]");
    }
    if s.dropped_events_count > 0 {
        field(w, &mut first, "droppedEventsCount");
        w.num(s.dropped_events_count);
    }
    if !s.links.is_empty() {
        field(w, &mut first, "links");
        w.raw("[");
        for (i, l) in s.links.iter().enumerate() {
            if i > 0 {
                w.raw(",");
            }
            link(w, l);
        }
        w.raw("]");
    }
    if s.dropped_links_count > 0 {
        field(w, &mut first, "droppedLinksCount");
        w.num(s.dropped_links_count);
    }
    if let Some(st) = &s.status {
        field(w, &mut first, "status");
        status(w, st);
    }
    w.raw("}");
}

/// The OTLP/JSON body of an export request.
pub fn request_to_json(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(1024));
    w.raw("{\"resourceSpans\":[");
    for (i, rs) in req.resource_spans.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        let mut first = true;
        w.raw("{");
        if let Some(r) = &rs.resource {
            field(&mut w, &mut first, "resource");
            w.raw("{");
            let mut rf = true;
            attributes(&mut w, &mut rf, &r.attributes, r.dropped_attributes_count);
            w.raw("}");
        }
        field(&mut w, &mut first, "scopeSpans");
        w.raw("[");
        for (j, ss) in rs.scope_spans.iter().enumerate() {
            if j > 0 {
                w.raw(",");
            }
            let mut sf = true;
            w.raw("{");
            if let Some(s) = &ss.scope {
                field(&mut w, &mut sf, "scope");
                scope(&mut w, s);
            }
            field(&mut w, &mut sf, "spans");
            w.raw("[");
            for (k, s) in ss.spans.iter().enumerate() {
                if k > 0 {
                    w.raw(",");
                }
                span(&mut w, s);
            }
            w.raw("]");
            if !ss.schema_url.is_empty() {
                field(&mut w, &mut sf, "schemaUrl");
                w.string(&ss.schema_url);
            }
            w.raw("}");
        }
        w.raw("]");
        if !rs.schema_url.is_empty() {
            field(&mut w, &mut first, "schemaUrl");
            w.string(&rs.schema_url);
        }
        w.raw("}");
    }
    w.raw("]}");
    w.0
}

/// Reads an OTLP/JSON export response (`partialSuccess` with
/// `rejectedSpans` as a string or a number); `None` if it is not one.
pub fn response_from_json(body: &[u8]) -> Option<ExportTraceServiceResponse> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let Some(ps) = obj.get("partialSuccess").and_then(|p| p.as_object()) else {
        return Some(ExportTraceServiceResponse::default());
    };
    let rejected = match ps.get("rejectedSpans") {
        Some(serde_json::Value::String(s)) => s.parse().ok()?,
        Some(serde_json::Value::Number(n)) => n.as_i64()?,
        None | Some(serde_json::Value::Null) => 0,
        Some(_) => return None,
    };
    let error_message = ps
        .get("errorMessage")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    Some(ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn responses() {
        let r =
            response_from_json(br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"bad"}}"#)
                .unwrap();
        let ps = r.partial_success.unwrap();
        assert_eq!((ps.rejected_spans, ps.error_message.as_str()), (3, "bad"));
        let r = response_from_json(br#"{"partialSuccess":{"rejectedSpans":2}}"#).unwrap();
        assert_eq!(r.partial_success.unwrap().rejected_spans, 2);
        assert_eq!(
            response_from_json(b"{}"),
            Some(ExportTraceServiceResponse::default())
        );
        assert_eq!(response_from_json(b"not json"), None);
        assert_eq!(
            response_from_json(br#"{"partialSuccess":{"rejectedSpans":[1]}}"#),
            None
        );
    }

    #[test]
    fn special_values() {
        let mut w = W(Vec::new());
        any_value(
            &mut w,
            &AnyValue {
                value: Some(any_value::Value::DoubleValue(f64::NAN)),
            },
        );
        any_value(
            &mut w,
            &AnyValue {
                value: Some(any_value::Value::IntValue(i64::MIN)),
            },
        );
        any_value(
            &mut w,
            &AnyValue {
                value: Some(any_value::Value::StringValue("q\"\n\u{1}".into())),
            },
        );
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            r#"{"doubleValue":"NaN"}{"intValue":"-9223372036854775808"}{"stringValue":"q\"\n\u0001"}"#
        );
    }
}
