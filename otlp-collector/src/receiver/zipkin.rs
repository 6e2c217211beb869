//! Zipkin v2 JSON (`POST /api/v2/spans`) → [`Span`], mapped the way
//! OpenTelemetry maps Zipkin:
//!
//! - `localEndpoint.serviceName` → resource `service.name`; its `ipv4`/`ipv6`
//!   and `port` → `net.host.ip` / `net.host.port`.
//! - `remoteEndpoint.serviceName` → `peer.service`; `ipv4`/`ipv6` → `net.peer.ip`;
//!   `port` → `net.peer.port`.
//! - `kind` CLIENT/SERVER/PRODUCER/CONSUMER → span kind (else the `span.kind`
//!   tag, else unspecified); `shared: true` → attribute `zipkin.shared = true`.
//! - `tags` → string attributes, except: `otel.status_code` / `otel.status_description`
//!   and `error` → status (an `error` tag means status ERROR with its value as
//!   message), `otel.scope.name`/`otel.library.name` and the `*.version` tags → scope.
//! - `annotations` → events (microseconds → nanoseconds, value → name; one
//!   without a timestamp is placed at the span's start).
//! - A span without `timestamp` (or 0) is rejected (counted and logged; Zipkin
//!   has no partial-success answer): giving it the receive time would change
//!   it on WAL replay.
//! - 64-bit trace ids are left-padded to 128 bits.
//!
//! [`decode`] ([`direct`]) parses straight into the model's types (issue
//! 19). [`decode_via_structs`], the earlier path through `ZSpan` with
//! `String`s and `serde_json::Value` tags, is kept: the v1 JSON and protobuf
//! receivers build `ZSpan`s and share its mapping (`convert_with_ids`), and
//! the differential tests hold the direct decoder to it.

pub mod direct;

pub use direct::decode;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::convert::{convert_ids, DecodeError, Decoded};
use super::otlp_json::decode_hex;
use crate::model::{
    AttrValue, CompactString, Event, KeyValue, ResourceAttrs, Span, SpanKind, StatusCode,
};
use crate::receiver::limits::LimitsConfig;
use direct::service_resource;

/// A Zipkin v2 span; the protobuf and v1 JSON receivers build these too
/// (`zipkin_proto`, `zipkin_v1`) and share the mapping (`convert_with_ids`).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct ZSpan {
    pub(super) trace_id: Option<String>,
    pub(super) id: Option<String>,
    pub(super) parent_id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) timestamp: Option<u64>,
    pub(super) duration: Option<u64>,
    pub(super) local_endpoint: Option<ZEndpoint>,
    pub(super) remote_endpoint: Option<ZEndpoint>,
    pub(super) annotations: Option<Vec<ZAnnotation>>,
    pub(super) tags: Option<BTreeMap<String, serde_json::Value>>,
    pub(super) shared: Option<bool>,
}

/// A Zipkin endpoint.
#[derive(Deserialize, Default, Clone)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct ZEndpoint {
    pub(super) service_name: Option<String>,
    pub(super) ipv4: Option<String>,
    pub(super) ipv6: Option<String>,
    pub(super) port: Option<i64>,
}

/// A Zipkin annotation.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ZAnnotation {
    pub(super) timestamp: Option<u64>,
    pub(super) value: Option<String>,
}

/// Decodes a Zipkin v2 JSON span list into validated spans through
/// `ZSpan` (the earlier path; see the module docs).
pub fn decode_via_structs(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    let spans: Vec<ZSpan> = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("invalid Zipkin v2 JSON span list: {e}")))?;
    DecodeError::check_span_count(spans.len(), limits)?;
    let mut out = Decoded {
        spans: Vec::with_capacity(spans.len()),
        ..Decoded::default()
    };
    let mut resource = None;
    for (i, z) in spans.into_iter().enumerate() {
        match convert(i, z, &mut resource) {
            Ok(span) => out.push(span, limits, i),
            Err(e) => out.reject(e),
        }
    }
    Ok(out)
}

fn hex_id(i: usize, field: &str, v: Option<&str>) -> Result<Vec<u8>, String> {
    match v {
        None | Some("") => Ok(Vec::new()),
        Some(s) => decode_hex(s).ok_or_else(|| format!("span {i}: {field} {s:?} is not hex")),
    }
}

fn convert(i: usize, z: ZSpan, resource: &mut Option<ResourceAttrs>) -> Result<Span, String> {
    let trace = hex_id(i, "traceId", z.trace_id.as_deref())?;
    let span_id = hex_id(i, "id", z.id.as_deref())?;
    let parent = hex_id(i, "parentId", z.parent_id.as_deref())?;
    convert_with_ids(i, trace, &span_id, &parent, z, resource)
}

/// Maps a Zipkin span whose ids are already bytes (the `ZSpan`'s own id
/// fields are not read); a 64-bit trace id is left-padded to 128 bits.
/// `resource` is the request's last resource (`direct::service_resource`).
pub(super) fn convert_with_ids(
    i: usize,
    mut trace: Vec<u8>,
    span_id: &[u8],
    parent: &[u8],
    z: ZSpan,
    resource: &mut Option<ResourceAttrs>,
) -> Result<Span, String> {
    if trace.len() == 8 {
        let mut t = vec![0u8; 8];
        t.extend_from_slice(&trace);
        trace = t;
    }
    let (trace_id, span_id, parent_span_id) = convert_ids(i, &trace, span_id, parent)?;

    let mut tags: BTreeMap<String, String> = z
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect();

    let kind = match z.kind.as_deref() {
        Some("CLIENT") => SpanKind::Client,
        Some("SERVER") => SpanKind::Server,
        Some("PRODUCER") => SpanKind::Producer,
        Some("CONSUMER") => SpanKind::Consumer,
        _ => match tags
            .get("span.kind")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            Some("client") => SpanKind::Client,
            Some("server") => SpanKind::Server,
            Some("producer") => SpanKind::Producer,
            Some("consumer") => SpanKind::Consumer,
            Some("internal") => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        },
    };

    let mut status_code = StatusCode::Unset;
    let mut status_message = String::new();
    if let Some(code) = tags.remove("otel.status_code") {
        status_code = match code.to_ascii_uppercase().as_str() {
            "OK" => StatusCode::Ok,
            "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        };
    }
    if let Some(desc) = tags.remove("otel.status_description") {
        status_message = desc;
    }
    if let Some(err) = tags.remove("error") {
        status_code = StatusCode::Error;
        if status_message.is_empty() && err != "true" {
            status_message = err;
        }
    }
    let scope_name = tags
        .remove("otel.scope.name")
        .or_else(|| tags.remove("otel.library.name"))
        .unwrap_or_default();
    let scope_version = tags
        .remove("otel.scope.version")
        .or_else(|| tags.remove("otel.library.version"))
        .unwrap_or_default();

    let mut attributes: Vec<KeyValue> = tags
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, AttrValue::Str(v.into())))
        .collect();
    let local = z.local_endpoint.unwrap_or_default();
    if let Some(ip) = local.ipv4.or(local.ipv6) {
        attributes.push(KeyValue::new("net.host.ip", AttrValue::Str(ip.into())));
    }
    if let Some(p) = local.port.filter(|p| *p > 0) {
        attributes.push(KeyValue::new("net.host.port", AttrValue::Int(p)));
    }
    if let Some(remote) = z.remote_endpoint {
        if let Some(s) = remote.service_name.filter(|s| !s.is_empty()) {
            attributes.push(KeyValue::new("peer.service", AttrValue::Str(s.into())));
        }
        if let Some(ip) = remote.ipv4.or(remote.ipv6) {
            attributes.push(KeyValue::new("net.peer.ip", AttrValue::Str(ip.into())));
        }
        if let Some(p) = remote.port.filter(|p| *p > 0) {
            attributes.push(KeyValue::new("net.peer.port", AttrValue::Int(p)));
        }
    }
    if z.shared == Some(true) {
        attributes.push(KeyValue::new("zipkin.shared", AttrValue::Bool(true)));
    }

    let service_name: CompactString = local
        .service_name
        .filter(|s| !s.is_empty())
        .map_or_else(|| CompactString::const_new("unknown_service"), Into::into);
    // Microseconds beyond what u64 nanoseconds hold (past the year 2554)
    // reject the span: saturating would store a time that was never sent.
    let nanos = |what: &str, us: u64| {
        us.checked_mul(1000).ok_or_else(|| {
            format!("span {i}: {what} {us} µs is past the year 2554 (64-bit nanoseconds overflow)")
        })
    };
    // Rejected rather than stamped with the receive time: WAL replay decodes
    // the same bytes again and must produce the same span.
    let start_ns = match z.timestamp {
        Some(t) if t > 0 => nanos("timestamp", t)?,
        _ => {
            return Err(format!(
                "span {i}: no timestamp (Zipkin spans need their start time in epoch microseconds)"
            ))
        }
    };
    let end_ns = start_ns
        .checked_add(nanos("duration", z.duration.unwrap_or(0))?)
        .ok_or_else(|| format!("span {i}: timestamp + duration is past the year 2554"))?;
    let events = z
        .annotations
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            Ok(Event {
                // An annotation without a time is placed at the span's start.
                time_ns: match a.timestamp.filter(|t| *t > 0) {
                    Some(t) => nanos("annotation timestamp", t)?,
                    None => start_ns,
                },
                name: a.value.unwrap_or_default().into(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: String::new(),
        flags: 0,
        name: z.name.unwrap_or_default().into(),
        kind,
        start_ns,
        end_ns,
        attributes,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status_code,
        status_message,
        resource_attributes: service_resource(resource, &service_name),
        service_name,
        scope_name: scope_name.into(),
        scope_version: scope_version.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both decoders, which must agree; the direct one's result.
    fn both(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
        let (new, old) = (decode(body, limits), decode_via_structs(body, limits));
        let show = |d: &Result<Decoded, DecodeError>| match d {
            Ok(d) => format!("{:?} {} {:?}", d.spans, d.rejected, d.errors),
            Err(e) => format!("err {e}"),
        };
        assert_eq!(show(&new), show(&old));
        new
    }

    #[test]
    fn maps_like_opentelemetry() {
        let body = br#"[{"traceId":"86154a4ba6e91385","parentId":"86154a4ba6e91385","id":"4d1e00c0db9010db",
            "kind":"CLIENT","name":"get /api","timestamp":1472470996199000,"duration":207000,
            "localEndpoint":{"serviceName":"frontend","ipv4":"127.0.0.1","port":8080},
            "remoteEndpoint":{"serviceName":"backend","ipv4":"192.168.99.101","port":9000},
            "annotations":[{"timestamp":1472470996238000,"value":"ws"}],
            "tags":{"http.method":"GET","error":"timeout","otel.library.name":"lib"},"shared":true},
            {"traceId":"xyz","id":"4d1e00c0db9010db"}]"#;
        let d = both(body, &LimitsConfig::default()).unwrap();
        assert_eq!(d.rejected, 1);
        let s = &d.spans[0];
        assert_eq!(&s.trace_id[..8], &[0; 8]);
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.service_name, "frontend");
        assert_eq!(s.start_ns, 1_472_470_996_199_000_000);
        assert_eq!(s.end_ns - s.start_ns, 207_000_000);
        assert_eq!(s.status_code, StatusCode::Error);
        assert_eq!(s.status_message, "timeout");
        assert_eq!(s.scope_name, "lib");
        assert_eq!(s.events[0].name, "ws");
        assert_eq!(
            s.attribute("peer.service"),
            Some(&AttrValue::Str("backend".into()))
        );
        assert_eq!(s.attribute("net.peer.port"), Some(&AttrValue::Int(9000)));
        assert_eq!(
            s.attribute("http.method"),
            Some(&AttrValue::Str("GET".into()))
        );
        assert_eq!(s.attribute("zipkin.shared"), Some(&AttrValue::Bool(true)));
        assert!(s.attribute("error").is_none());
        assert!(both(b"{}", &LimitsConfig::default()).is_err());
    }

    #[test]
    fn times_past_64_bit_nanoseconds_reject_the_span() {
        let l = LimitsConfig::default();
        for body in [
            r#"[{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010db","timestamp":18446744073709552}]"#,
            r#"[{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010db","timestamp":18446744073709551,"duration":1}]"#,
            r#"[{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010db","timestamp":1,"annotations":[{"timestamp":18446744073709552,"value":"x"}]}]"#,
        ] {
            let d = both(body.as_bytes(), &l).unwrap();
            assert_eq!((d.spans.len(), d.rejected), (0, 1), "{body}");
            assert!(
                d.error_message().contains("year 2554"),
                "{}",
                d.error_message()
            );
        }
    }

    #[test]
    fn a_span_without_timestamp_is_rejected_not_stored_in_1970() {
        let body = br#"[{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010db","name":"a"},
            {"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010dc","timestamp":0},
            {"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010dd","timestamp":1472470996199000,
             "annotations":[{"value":"no time"}]}]"#;
        let d = both(body, &LimitsConfig::default()).unwrap();
        assert_eq!(d.rejected, 2);
        assert!(
            d.error_message().contains("no timestamp"),
            "{}",
            d.error_message()
        );
        assert_eq!(d.spans.len(), 1);
        assert_eq!(d.spans[0].events[0].time_ns, d.spans[0].start_ns);
    }
}
