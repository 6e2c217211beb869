//! The load generator's request: `n` spans of one trace with realistic
//! attributes (10 per span, an event on every fourth span, 3 resource
//! attributes). Its own file so that `tests/alloc_per_span.rs` measures this
//! very shape (it includes the file with `#[path]`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

pub(crate) fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// Start, end and event time of span `i` of a request built at `now`.
pub(crate) fn span_times(i: usize, now: u64) -> (u64, u64, u64) {
    let start = now - 5_000_000 + i as u64 * 1_000;
    (
        start,
        start + 250_000 + (i as u64 % 97) * 10_000,
        start + 1_000,
    )
}

/// A request of `n` realistic spans; ids derive from `conn` and `seq` so every
/// span is unique, timestamps from `now` (ns since the Unix epoch).
pub(crate) fn build_request(conn: u64, seq: u64, n: usize, now: u64) -> ExportTraceServiceRequest {
    use any_value::Value as V;
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(conn + 1).to_be_bytes());
    trace_id[8..].copy_from_slice(&seq.to_be_bytes());
    let spans = (0..n)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(seq as u32).to_be_bytes());
            span_id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            let parent = if i == 0 {
                Vec::new()
            } else {
                let mut p = span_id;
                p[4..].copy_from_slice(&1u32.to_be_bytes());
                p.to_vec()
            };
            let (start, end, event_time) = span_times(i, now);
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent,
                name: format!("GET /api/items/{}", i % 16),
                kind: if i == 0 { 2 } else { 3 },
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: vec![
                    kv("http.request.method", V::StringValue("GET".into())),
                    kv("http.route", V::StringValue("/api/items/{id}".into())),
                    kv("http.response.status_code", V::IntValue(200)),
                    kv("url.path", V::StringValue(format!("/api/items/{i}"))),
                    kv("server.address", V::StringValue("items.internal".into())),
                    kv("server.port", V::IntValue(8080)),
                    kv("user_agent.original", V::StringValue("loadgen/1.0".into())),
                    kv("network.protocol.version", V::StringValue("1.1".into())),
                    kv("app.cache_hit", V::BoolValue(i % 3 == 0)),
                    kv("app.items", V::DoubleValue(i as f64 * 1.5)),
                ],
                events: if i % 4 == 0 {
                    vec![span::Event {
                        time_unix_nano: event_time,
                        name: "cache.lookup".into(),
                        attributes: vec![kv("cache.key", V::StringValue(format!("item:{i}")))],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    Vec::new()
                },
                status: Some(Status {
                    message: String::new(),
                    code: 0,
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        V::StringValue(format!("loadgen-svc-{}", conn % 4)),
                    ),
                    kv("service.version", V::StringValue("1.0.0".into())),
                    kv("host.name", V::StringValue("bench".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "loadgen".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
