//! Tracer → batch processor → OTLP exporter → a real loopback server.
#![cfg(all(feature = "otlp-grpc", feature = "otlp-http"))]

mod export_support;

use std::time::Duration;

use export_support::{GrpcServer, HttpServer};
use ferrotrace::export::batch::BatchSpanProcessor;
use ferrotrace::export::otlp::{OtlpExporter, Protocol};
use ferrotrace::export::stats::ExportStats;
use ferrotrace::trace::{SpanKind, TracerProvider};
use ferrotrace::KeyValue;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;

fn run(protocol: Protocol, endpoint: String) -> ExportStats {
    let stats = ExportStats::new();
    let exporter = OtlpExporter::builder_from_env_vars(|_| None)
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .with_stats(stats.clone())
        .build()
        .unwrap();
    let provider = TracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_stats(stats.clone())
                .build(),
        )
        .with_service_name("e2e-service")
        .build();
    let tracer = provider.tracer("e2e-scope");
    {
        let mut parent = tracer
            .span_builder("parent")
            .with_kind(SpanKind::Server)
            .start();
        parent.set_attribute("http.request.method", "GET");
        let _guard = parent.make_current();
        let mut child = tracer.start("child");
        child.add_event("cache.miss", vec![KeyValue::new("key", "user:1")]);
        child.end();
    }
    provider.shutdown(Duration::from_secs(10)).unwrap();
    stats
}

fn check(requests: &[ExportTraceServiceRequest]) {
    let spans: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            assert_eq!(service, Some(V::StringValue("e2e-service".into())));
            rs.scope_spans.iter().flat_map(|ss| {
                assert_eq!(ss.scope.as_ref().unwrap().name, "e2e-scope");
                ss.spans.iter()
            })
        })
        .collect();
    assert_eq!(spans.len(), 2);
    let parent = spans.iter().find(|s| s.name == "parent").unwrap();
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    assert_eq!(parent.kind, 2);
    assert!(parent.parent_span_id.is_empty());
    assert_eq!(child.parent_span_id, parent.span_id);
    assert_eq!(child.trace_id, parent.trace_id);
    assert_eq!(child.events[0].name, "cache.miss");
    assert!(child.end_time_unix_nano >= child.start_time_unix_nano);
    // sampled (0x01) and random-trace-id (0x02, W3C Trace Context Level 2:
    // the SDK draws new trace ids at random).
    assert_eq!(parent.flags & 0xff, 0x03, "sampled | random");
}

#[test]
fn provider_to_grpc_server() {
    let server = GrpcServer::start();
    let stats = run(Protocol::Grpc, server.endpoint());
    check(&server.state.received.lock());
    assert_eq!(stats.snapshot().exported, 2);
}

#[test]
fn provider_to_http_json_server() {
    let server = HttpServer::start();
    let stats = run(Protocol::HttpJson, server.endpoint());
    let received: Vec<_> = server
        .state
        .received
        .lock()
        .iter()
        .map(|r| r.request.clone())
        .collect();
    check(&received);
    assert_eq!(stats.snapshot().exported, 2);
}
