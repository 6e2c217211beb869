//! Zipkin v1 JSON (`POST /api/v1/spans`) → [`Span`](crate::model::Span)s. Each v1 span is first
//! rewritten as a v2 span, the way Zipkin's own v1 converter and the
//! OpenTelemetry Collector's `zipkinv1` translator read v1, then mapped by
//! the v2 code ([`super::zipkin`]):
//!
//! - The first core annotation (`cs`/`cr` client, `sr`/`ss` server, `ms`
//!   producer, `mr` consumer) gives the kind; the first core annotation
//!   whose endpoint names a service gives the local endpoint. Core
//!   annotations are not kept as events; the others are.
//! - A span without `timestamp` takes the earliest and latest annotation
//!   times as start and end.
//! - Binary annotations: `sa` / `ca` / `ma` (server, client, broker
//!   address) give the remote endpoint; `lc` (local component) is the tag
//!   `component` and, with no other service name, the service; the others
//!   are tags (non-string values as their JSON text). Without a core
//!   annotation, a binary annotation's endpoint names the service.
//! - One v1 span stays one span: a v1 span shared by client and server
//!   (both `cs` and `sr`) is kept whole, with the kind of its first core
//!   annotation (Zipkin's converter would split it in two).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::convert::{DecodeError, Decoded};
use super::otlp_json::decode_hex;
use super::zipkin::{convert_with_ids, ZAnnotation, ZEndpoint, ZSpan};
use crate::receiver::limits::LimitsConfig;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct V1Span {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    annotations: Option<Vec<V1Annotation>>,
    binary_annotations: Option<Vec<V1BinaryAnnotation>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1Annotation {
    timestamp: Option<u64>,
    value: Option<String>,
    endpoint: Option<ZEndpoint>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1BinaryAnnotation {
    key: Option<String>,
    value: Option<serde_json::Value>,
    endpoint: Option<ZEndpoint>,
}

fn named(e: &Option<ZEndpoint>) -> bool {
    e.as_ref()
        .and_then(|e| e.service_name.as_deref())
        .is_some_and(|s| !s.is_empty())
}

/// Rewrites a v1 span as a v2 one (ids are converted by the caller).
fn to_v2(v: V1Span) -> ZSpan {
    let mut kind = None;
    let mut local: Option<ZEndpoint> = None;
    let mut events = Vec::new();
    let (mut first, mut last) = (None::<u64>, None::<u64>);
    for a in v.annotations.unwrap_or_default() {
        let value = a.value.unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        if let Some(t) = a.timestamp.filter(|t| *t > 0) {
            first = Some(first.map_or(t, |f| f.min(t)));
            last = Some(last.map_or(t, |l| l.max(t)));
        }
        let core = match value.as_str() {
            "cs" | "cr" => Some("CLIENT"),
            "sr" | "ss" => Some("SERVER"),
            "ms" => Some("PRODUCER"),
            "mr" => Some("CONSUMER"),
            _ => None,
        };
        match core {
            Some(k) => {
                kind.get_or_insert(k);
                if local.is_none() && named(&a.endpoint) {
                    local = a.endpoint;
                }
            }
            None => events.push(ZAnnotation {
                timestamp: a.timestamp,
                value: Some(value),
            }),
        }
    }
    let mut tags = BTreeMap::new();
    let mut remote = None;
    let mut component = None;
    let mut fallback: Option<ZEndpoint> = None;
    for b in v.binary_annotations.unwrap_or_default() {
        let key = b.key.unwrap_or_default();
        if fallback.is_none() && named(&b.endpoint) {
            fallback = b.endpoint.clone();
        }
        match key.as_str() {
            "sa" | "ca" | "ma" if b.endpoint.is_some() => {
                remote = b.endpoint;
                continue;
            }
            _ => {}
        }
        let text = match b.value {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let key = if key == "lc" {
            component = Some(text.clone());
            "component".to_string()
        } else {
            key
        };
        tags.insert(key, serde_json::Value::String(text));
    }
    let local = local.or(fallback).or_else(|| {
        component.map(|c| ZEndpoint {
            service_name: Some(c),
            ..ZEndpoint::default()
        })
    });
    let (timestamp, duration) = match v.timestamp.filter(|t| *t > 0) {
        Some(t) => (Some(t), v.duration),
        None => match (first, last) {
            (Some(f), Some(l)) => (Some(f), Some(l - f)),
            _ => (None, None),
        },
    };
    ZSpan {
        trace_id: None,
        id: None,
        parent_id: None,
        name: v.name,
        kind: kind.map(str::to_string),
        timestamp,
        duration,
        local_endpoint: local,
        remote_endpoint: remote,
        annotations: Some(events),
        tags: Some(tags),
        shared: None,
    }
}

fn hex_id(i: usize, field: &str, v: Option<&str>) -> Result<Vec<u8>, String> {
    match v {
        None | Some("") => Ok(Vec::new()),
        Some(s) => decode_hex(s).ok_or_else(|| format!("span {i}: {field} {s:?} is not hex")),
    }
}

/// Decodes a Zipkin v1 JSON span list into validated spans.
pub fn decode(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    let spans: Vec<V1Span> = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("invalid Zipkin v1 JSON span list: {e}")))?;
    DecodeError::check_span_count(spans.len(), limits)?;
    let mut out = Decoded {
        spans: Vec::with_capacity(spans.len()),
        ..Decoded::default()
    };
    let mut resource = None;
    for (i, v) in spans.into_iter().enumerate() {
        let ids = (|| {
            Ok::<_, String>((
                hex_id(i, "traceId", v.trace_id.as_deref())?,
                hex_id(i, "id", v.id.as_deref())?,
                hex_id(i, "parentId", v.parent_id.as_deref())?,
            ))
        })();
        let converted =
            ids.and_then(|(t, s, p)| convert_with_ids(i, t, &s, &p, to_v2(v), &mut resource));
        match converted {
            Ok(span) => out.push(span, limits, i),
            Err(e) => out.reject(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, SpanKind};

    #[test]
    fn maps_core_and_binary_annotations() {
        // The shape py_zipkin's V1_JSON encoder writes.
        let body = br#"[{"traceId":"86154a4ba6e91385","name":"get","id":"4d1e00c0db9010db",
            "parentId":"86154a4ba6e91385","timestamp":1472470996199000,"duration":207000,
            "annotations":[
              {"endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1","port":8080},"timestamp":1472470996199000,"value":"cs"},
              {"endpoint":{"serviceName":"frontend"},"timestamp":1472470996238000,"value":"retry"},
              {"endpoint":{"serviceName":"frontend"},"timestamp":1472470996406000,"value":"cr"}],
            "binaryAnnotations":[
              {"key":"http.path","value":"/api","endpoint":{"serviceName":"frontend"}},
              {"key":"n","value":3},
              {"key":"lc","value":"worker"},
              {"key":"sa","value":true,"endpoint":{"serviceName":"backend","ipv4":"10.0.0.2","port":9000}}]},
            {"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010dc","name":"derived",
             "annotations":[{"timestamp":10,"value":"sr","endpoint":{"serviceName":"b"}},
                            {"timestamp":25,"value":"ss","endpoint":{"serviceName":"b"}}]},
            {"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010dd","name":"no time"}]"#;
        let d = decode(body, &LimitsConfig::default()).unwrap();
        assert_eq!(d.rejected, 1, "{}", d.error_message());
        let s = &d.spans[0];
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.service_name, "frontend");
        assert_eq!(s.start_ns, 1_472_470_996_199_000_000);
        assert_eq!(s.end_ns - s.start_ns, 207_000_000);
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "retry");
        let a = |k: &str| s.attribute(k).cloned();
        assert_eq!(a("http.path"), Some(AttrValue::Str("/api".into())));
        assert_eq!(a("n"), Some(AttrValue::Str("3".into())));
        assert_eq!(a("component"), Some(AttrValue::Str("worker".into())));
        assert_eq!(a("peer.service"), Some(AttrValue::Str("backend".into())));
        assert_eq!(a("net.peer.port"), Some(AttrValue::Int(9000)));
        assert_eq!(a("net.host.ip"), Some(AttrValue::Str("10.0.0.1".into())));
        assert!(a("sa").is_none());
        let t = &d.spans[1];
        assert_eq!((t.kind, t.service_name.as_str()), (SpanKind::Server, "b"));
        assert_eq!((t.start_ns, t.end_ns), (10_000, 25_000));
        assert!(decode(b"[{\"traceId\":5}]", &LimitsConfig::default()).is_err());
    }
}
