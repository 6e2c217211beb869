//! Zipkin v2 protobuf (`POST /api/v2/spans` with `Content-Type:
//! application/x-protobuf`, a `zipkin.proto3.ListOfSpans`) → [`Span`](crate::model::Span)s,
//! mapped exactly as Zipkin v2 JSON is ([`super::zipkin`]): the protobuf
//! span is read into the same form and converted by the same code. IP
//! addresses (4 or 16 bytes on this wire) become their text form, other
//! lengths are ignored; a timestamp or duration of 0 means absent, as in the
//! protobuf's comments.

use std::net::{Ipv4Addr, Ipv6Addr};

use prost::Message;

use super::convert::{DecodeError, Decoded};
use super::zipkin::{convert_with_ids, ZAnnotation, ZEndpoint, ZSpan};
use crate::receiver::limits::LimitsConfig;

/// Messages generated from `proto/zipkin/zipkin.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!("zipkin_gen.rs");
}

/// An address as text; bytes of another length than 4 or 16 are no
/// address and are ignored (as absent).
fn ip(b: &[u8]) -> Option<String> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        return Some(Ipv4Addr::from(a).to_string());
    }
    <[u8; 16]>::try_from(b)
        .ok()
        .map(|a| Ipv6Addr::from(a).to_string())
}

fn endpoint(e: pb::Endpoint) -> ZEndpoint {
    ZEndpoint {
        service_name: Some(e.service_name).filter(|s| !s.is_empty()),
        ipv4: ip(&e.ipv4),
        ipv6: ip(&e.ipv6),
        port: (e.port != 0).then_some(i64::from(e.port)),
    }
}

fn kind(k: i32) -> Option<String> {
    let k = match pb::span::Kind::try_from(k).ok()? {
        pb::span::Kind::Client => "CLIENT",
        pb::span::Kind::Server => "SERVER",
        pb::span::Kind::Producer => "PRODUCER",
        pb::span::Kind::Consumer => "CONSUMER",
        pb::span::Kind::SpanKindUnspecified => return None,
    };
    Some(k.to_string())
}

/// Decodes a `ListOfSpans` into validated spans.
pub fn decode(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    let list = pb::ListOfSpans::decode(body)
        .map_err(|e| DecodeError::Malformed(format!("invalid Zipkin protobuf ListOfSpans: {e}")))?;
    DecodeError::check_span_count(list.spans.len(), limits)?;
    let mut out = Decoded {
        spans: Vec::with_capacity(list.spans.len()),
        ..Decoded::default()
    };
    let mut resource = None;
    for (i, s) in list.spans.into_iter().enumerate() {
        let z = ZSpan {
            trace_id: None,
            id: None,
            parent_id: None,
            name: Some(s.name),
            kind: kind(s.kind),
            timestamp: Some(s.timestamp).filter(|t| *t > 0),
            duration: Some(s.duration).filter(|d| *d > 0),
            local_endpoint: s.local_endpoint.map(endpoint),
            remote_endpoint: s.remote_endpoint.map(endpoint),
            annotations: Some(
                s.annotations
                    .into_iter()
                    .map(|a| ZAnnotation {
                        timestamp: Some(a.timestamp),
                        value: Some(a.value),
                    })
                    .collect(),
            ),
            tags: Some(
                s.tags
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            ),
            shared: Some(s.shared),
        };
        match convert_with_ids(i, s.trace_id, &s.id, &s.parent_id, z, &mut resource) {
            Ok(span) => out.push(span, limits, i),
            Err(e) => out.reject(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, SpanKind, StatusCode};

    #[test]
    fn maps_like_zipkin_json() {
        let span = pb::Span {
            trace_id: vec![0x86, 0x15, 0x4a, 0x4b, 0xa6, 0xe9, 0x13, 0x85],
            id: vec![0x4d, 0x1e, 0, 0xc0, 0xdb, 0x90, 0x10, 0xdb],
            parent_id: vec![],
            kind: pb::span::Kind::Server as i32,
            name: "get /api".into(),
            timestamp: 1_472_470_996_199_000,
            duration: 207_000,
            local_endpoint: Some(pb::Endpoint {
                service_name: "frontend".into(),
                ipv4: vec![127, 0, 0, 1],
                ipv6: vec![],
                port: 8080,
            }),
            remote_endpoint: Some(pb::Endpoint {
                service_name: "".into(),
                ipv4: vec![],
                ipv6: Ipv6Addr::LOCALHOST.octets().to_vec(),
                port: 0,
            }),
            annotations: vec![pb::Annotation {
                timestamp: 1_472_470_996_238_000,
                value: "ws".into(),
            }],
            tags: [("error".to_string(), "boom".to_string())].into(),
            debug: false,
            shared: true,
        };
        let body = pb::ListOfSpans {
            spans: vec![
                span.clone(),
                pb::Span {
                    id: vec![1; 3],
                    ..span
                },
            ],
        }
        .encode_to_vec();
        let d = decode(&body, &LimitsConfig::default()).unwrap();
        assert_eq!(d.rejected, 1, "the span with a 3-byte id");
        let s = &d.spans[0];
        assert_eq!(&s.trace_id[..8], &[0; 8]);
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.service_name, "frontend");
        assert_eq!(s.end_ns - s.start_ns, 207_000_000);
        assert_eq!(
            (s.status_code, s.status_message.as_str()),
            (StatusCode::Error, "boom")
        );
        assert_eq!(
            s.attribute("net.host.ip"),
            Some(&AttrValue::Str("127.0.0.1".into()))
        );
        assert_eq!(
            s.attribute("net.peer.ip"),
            Some(&AttrValue::Str("::1".into()))
        );
        assert_eq!(s.attribute("zipkin.shared"), Some(&AttrValue::Bool(true)));
        assert_eq!(s.events[0].name, "ws");
        assert!(decode(b"\x0a\xff", &LimitsConfig::default()).is_err());
        // No timestamp: rejected, as in JSON.
        let none = pb::ListOfSpans {
            spans: vec![pb::Span {
                trace_id: vec![1; 16],
                id: vec![1; 8],
                ..Default::default()
            }],
        };
        let d = decode(&none.encode_to_vec(), &LimitsConfig::default()).unwrap();
        assert!(
            d.error_message().contains("no timestamp"),
            "{}",
            d.error_message()
        );
    }
}
