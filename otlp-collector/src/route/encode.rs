//! [`Span`]s back to an OTLP export request, for forwarding to a backend.
//!
//! The inverse of `receiver::convert::from_otlp` for spans that passed it:
//! the backend decodes the request into the same spans the router held
//! (checked by the round-trip test below). Consecutive spans that share a
//! resource and scope (the spans of one client request do) share one
//! `ResourceSpans` / `ScopeSpans`, so the request stays about the size the
//! client sent.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue as PKeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, ResourceSpans, ScopeSpans, Span as PSpan, Status,
};

use crate::model::{AttrValue, KeyValue, Span};

fn value(v: &AttrValue) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        AttrValue::Str(s) => Some(V::StringValue(s.to_string())),
        AttrValue::Bool(b) => Some(V::BoolValue(*b)),
        AttrValue::Int(i) => Some(V::IntValue(*i)),
        AttrValue::Double(d) => Some(V::DoubleValue(*d)),
        AttrValue::Bytes(b) => Some(V::BytesValue(b.clone())),
        AttrValue::Array(a) => Some(V::ArrayValue(ArrayValue {
            values: a.iter().map(value).collect(),
        })),
        AttrValue::KvList(kvs) => Some(V::KvlistValue(KeyValueList { values: attrs(kvs) })),
        AttrValue::Empty => None,
    };
    AnyValue { value }
}

fn attrs(kvs: &[KeyValue]) -> Vec<PKeyValue> {
    kvs.iter()
        .map(|kv| PKeyValue {
            key: kv.key.to_string(),
            value: Some(value(&kv.value)),
            ..Default::default()
        })
        .collect()
}

/// The resource of `s`: its attributes, with `service.name` added when the
/// receiver took the service name from elsewhere (Zipkin's endpoint, Jaeger's
/// process), so the backend derives the same `service_name`.
fn resource(s: &Span) -> Resource {
    let mut attributes = attrs(&s.resource_attributes);
    let named = s.resource_attributes.iter().any(|kv| {
        kv.key == "service.name" && matches!(&kv.value, AttrValue::Str(v) if !v.is_empty())
    });
    if !named && s.service_name != "unknown_service" {
        attributes.push(PKeyValue {
            key: "service.name".into(),
            value: Some(value(&AttrValue::Str(s.service_name.clone()))),
            ..Default::default()
        });
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn span(s: &Span) -> PSpan {
    PSpan {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: s.flags,
        name: s.name.to_string(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes: attrs(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.time_ns,
                name: e.name.to_string(),
                attributes: attrs(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: attrs(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: Some(Status {
            message: s.status_message.clone(),
            code: s.status_code as i32,
        }),
    }
}

/// One export request holding `spans` (references into a batch).
pub fn request(spans: &[&Span]) -> ExportTraceServiceRequest {
    let mut out: Vec<ResourceSpans> = Vec::new();
    // The span whose resource/scope the last ResourceSpans/ScopeSpans carry.
    let mut last: Option<&Span> = None;
    for s in spans {
        let same_resource = last.is_some_and(|l| {
            l.resource_attributes == s.resource_attributes && l.service_name == s.service_name
        });
        if !same_resource {
            out.push(ResourceSpans {
                resource: Some(resource(s)),
                scope_spans: Vec::new(),
                schema_url: String::new(),
            });
        }
        let rs = out.last_mut().expect("pushed above");
        let same_scope = same_resource
            && last.is_some_and(|l| {
                l.scope_name == s.scope_name && l.scope_version == s.scope_version
            });
        if !same_scope {
            rs.scope_spans.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: s.scope_name.to_string(),
                    version: s.scope_version.to_string(),
                    ..Default::default()
                }),
                spans: Vec::new(),
                schema_url: String::new(),
            });
        }
        rs.scope_spans
            .last_mut()
            .expect("pushed above")
            .spans
            .push(span(s));
        last = Some(s);
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Link, SpanKind, StatusCode};
    use crate::receiver::convert::from_otlp;
    use crate::receiver::limits::LimitsConfig;

    fn sample(i: u8, service: &str, with_name_attr: bool) -> Span {
        let mut resource_attributes = vec![KeyValue::new("host.name", AttrValue::Str("h".into()))];
        if with_name_attr {
            resource_attributes.push(KeyValue::new(
                "service.name",
                AttrValue::Str(service.into()),
            ));
        }
        Span {
            trace_id: [i; 16],
            span_id: [i; 8],
            parent_span_id: (i > 1).then_some([1; 8]),
            trace_state: "ot=th:8".into(),
            flags: 257,
            name: compact_str::format_compact!("op{i}"),
            kind: SpanKind::Client,
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_000_001_000,
            attributes: vec![
                KeyValue::new("s", AttrValue::Str("x".into())),
                KeyValue::new("b", AttrValue::Bool(true)),
                KeyValue::new("i", AttrValue::Int(-3)),
                KeyValue::new("d", AttrValue::Double(0.5)),
                KeyValue::new("y", AttrValue::Bytes(vec![0, 255])),
                KeyValue::new(
                    "a",
                    AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Empty]),
                ),
                KeyValue::new(
                    "m",
                    AttrValue::KvList(vec![KeyValue::new("k", AttrValue::Str("v".into()))]),
                ),
                KeyValue::new("e", AttrValue::Empty),
            ],
            dropped_attributes_count: 2,
            events: vec![Event {
                time_ns: 1_700_000_000_000_000_500,
                name: "ev".into(),
                attributes: vec![KeyValue::new("k", AttrValue::Int(1))],
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: [9; 16],
                span_id: [8; 8],
                trace_state: "a=b".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 4,
            status_code: StatusCode::Error,
            status_message: "boom".into(),
            service_name: service.into(),
            resource_attributes: resource_attributes.into(),
            scope_name: "lib".into(),
            scope_version: "1.0".into(),
        }
    }

    #[test]
    fn spans_round_trip_through_the_backend_decoder() {
        let spans = vec![
            sample(1, "a", true),
            sample(2, "a", true),
            sample(3, "b", true),
        ];
        let refs: Vec<&Span> = spans.iter().collect();
        let req = request(&refs);
        assert_eq!(req.resource_spans.len(), 2, "same resource shared");
        let back = from_otlp(req, &LimitsConfig::default()).expect("decodes");
        assert_eq!(back.rejected, 0);
        assert_eq!(back.spans, spans);
    }

    #[test]
    fn a_service_name_from_outside_the_resource_survives() {
        // Zipkin and Jaeger receivers set service_name without a resource attribute.
        let s = sample(1, "zipkin-svc", false);
        let back = from_otlp(request(&[&s]), &LimitsConfig::default()).expect("decodes");
        assert_eq!(back.spans[0].service_name, "zipkin-svc");
    }
}
