//! OTLP exporters against real loopback servers written here: a tonic
//! `TraceService` (gRPC) and a hyper HTTP server (protobuf and JSON). Every
//! field must arrive exactly as sent, for all three protocols.
#![cfg(all(feature = "otlp-grpc", feature = "otlp-http"))]

mod export_support;

use std::time::Duration;

use export_support::{rich_batch, span_id, trace_id, GrpcServer, HttpServer};
use ferrotrace::export::batch::BatchSpanProcessor;
use ferrotrace::export::otlp::{encode_protobuf, Compression, OtlpExporter, Protocol};
use ferrotrace::export::stats::ExportStats;
use ferrotrace::export::{SpanExporter, SpanProcessor};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;

fn exporter(
    protocol: Protocol,
    endpoint: String,
    compression: Compression,
    stats: &ExportStats,
) -> OtlpExporter {
    OtlpExporter::builder_from_env_vars(|_| None)
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .with_compression(compression)
        .with_header("x-api-key", "secret-1")
        .with_timeout(Duration::from_secs(5))
        .with_stats(stats.clone())
        .build()
        .expect("valid config")
}

fn attr<'a>(attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> &'a V {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .unwrap_or_else(|| panic!("attribute {key} missing"))
}

fn array(v: &V) -> Vec<V> {
    match v {
        V::ArrayValue(a) => a
            .values
            .iter()
            .map(|AnyValue { value }| value.clone().expect("array element"))
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// Checks the received request field by field against what `rich_batch` sent
/// (independently of the encoder), then as a whole against the encoder's
/// protobuf bytes read with the official `opentelemetry-proto` types.
fn assert_exact(received: &ExportTraceServiceRequest) {
    let official = ExportTraceServiceRequest::decode(encode_protobuf(rich_batch()).as_slice())
        .expect("the SDK's protobuf decodes with opentelemetry-proto");
    assert_eq!(received, &official);

    // Grouping: resource "checkout" (spans 0, 2, 3) then "payments" (1, 4);
    // within checkout, scope "http" (0, 3) then "db" (2).
    assert_eq!(received.resource_spans.len(), 2);
    let rs = &received.resource_spans[0];
    assert_eq!(rs.schema_url, "https://opentelemetry.io/schemas/1.26.0");
    let res = rs.resource.as_ref().unwrap();
    assert_eq!(
        attr(&res.attributes, "service.name"),
        &V::StringValue("checkout".into())
    );
    assert_eq!(rs.scope_spans.len(), 2);
    let ss = &rs.scope_spans[0];
    let scope = ss.scope.as_ref().unwrap();
    assert_eq!(scope.name, "http");
    assert_eq!(scope.version, "1.2.3");
    assert_eq!(ss.schema_url, "https://example.com/scope-schema");
    assert_eq!(attr(&scope.attributes, "scope.attr"), &V::BoolValue(true));
    let names: Vec<&str> = ss.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["span-0", "span-3"]);
    assert_eq!(rs.scope_spans[1].spans[0].name, "span-2");
    let names: Vec<&str> = received.resource_spans[1]
        .scope_spans
        .iter()
        .flat_map(|s| s.spans.iter().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(names, ["span-1", "span-4"]);

    // Span 0: every field.
    let s = &ss.spans[0];
    assert_eq!(s.trace_id, trace_id(0).to_bytes().to_vec());
    assert_eq!(s.span_id, span_id(0).to_bytes().to_vec());
    assert_eq!(s.parent_span_id, span_id(500).to_bytes().to_vec());
    assert_eq!(s.trace_state, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    // sampled (0x01) + has-is-remote (0x100) + parent is remote (0x200, i even).
    assert_eq!(s.flags, 0x301);
    assert_eq!(s.kind, 1, "SPAN_KIND_INTERNAL");
    assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(s.end_time_unix_nano, 1_700_000_000_000_500_000);
    assert_eq!(s.dropped_attributes_count, 3);
    assert_eq!(s.dropped_events_count, 4);
    assert_eq!(s.dropped_links_count, 5);
    let st = s.status.as_ref().unwrap();
    assert_eq!((st.code, st.message.as_str()), (2, "it broke"));
    assert_eq!(attr(&s.attributes, "str"), &V::StringValue("value".into()));
    assert_eq!(
        attr(&s.attributes, "owned"),
        &V::StringValue("owned-0".into())
    );
    assert_eq!(attr(&s.attributes, "bool"), &V::BoolValue(true));
    assert_eq!(attr(&s.attributes, "int"), &V::IntValue(-42));
    assert_eq!(attr(&s.attributes, "big"), &V::IntValue(i64::MAX));
    assert_eq!(attr(&s.attributes, "float"), &V::DoubleValue(3.25));
    assert_eq!(
        array(attr(&s.attributes, "bools")),
        [V::BoolValue(true), V::BoolValue(false)]
    );
    assert_eq!(
        array(attr(&s.attributes, "ints")),
        [V::IntValue(1), V::IntValue(-2), V::IntValue(i64::MIN)]
    );
    assert_eq!(
        array(attr(&s.attributes, "floats")),
        [V::DoubleValue(0.5), V::DoubleValue(-1.5)]
    );
    assert_eq!(
        array(attr(&s.attributes, "strs")),
        [V::StringValue("a".into()), V::StringValue("b".into())]
    );
    let ev = &s.events[0];
    assert_eq!(ev.name, "exception");
    assert_eq!(ev.time_unix_nano, 1_700_000_000_000_100_000);
    assert_eq!(ev.dropped_attributes_count, 1);
    assert_eq!(
        attr(&ev.attributes, "exception.message"),
        &V::StringValue("boom".into())
    );
    let link = &s.links[0];
    assert_eq!(link.trace_id, trace_id(1000).to_bytes().to_vec());
    assert_eq!(link.span_id, span_id(1000).to_bytes().to_vec());
    assert_eq!(link.trace_state, "");
    // not sampled + has-is-remote + is-remote.
    assert_eq!(link.flags, 0x300);
    assert_eq!(link.dropped_attributes_count, 2);

    // Span 3 (kind producer, status error, local parent).
    let s3 = &ss.spans[1];
    assert_eq!(s3.kind, 4, "SPAN_KIND_PRODUCER");
    assert_eq!(s3.flags, 0x101);
    assert_eq!(s3.status.as_ref().unwrap().code, 2);
    // Span 2 (client, unset status); span 1 (server), span 4 (consumer).
    let s2 = &rs.scope_spans[1].spans[0];
    assert_eq!(s2.kind, 3);
    assert_eq!(s2.status.as_ref().unwrap().code, 0);
    let other = &received.resource_spans[1].scope_spans;
    let kinds: Vec<i32> = other
        .iter()
        .flat_map(|s| s.spans.iter().map(|s| s.kind))
        .collect();
    assert_eq!(kinds, [2, 5]);
    // Span 1: status ok.
    let s1 = &other[0].spans[0];
    assert_eq!(
        (
            s1.status.as_ref().unwrap().code,
            s1.status.as_ref().unwrap().message.as_str()
        ),
        (1, "")
    );
}

fn grpc_round_trip(compression: Compression) {
    let server = GrpcServer::start();
    let stats = ExportStats::new();
    let exp = exporter(Protocol::Grpc, server.endpoint(), compression, &stats);
    exp.export(rich_batch()).expect("export succeeds");
    let received = server.state.received.lock();
    assert_eq!(received.len(), 1);
    assert_exact(&received[0]);
    let md = &server.state.metadata.lock()[0];
    assert_eq!(md.get("x-api-key").unwrap(), "secret-1");
    if compression == Compression::Gzip {
        assert_eq!(md.get("grpc-encoding").unwrap(), "gzip");
    }
    let snap = stats.snapshot();
    assert_eq!((snap.export_attempts, snap.retries), (1, 0));
}

#[test]
fn grpc_every_field_arrives() {
    grpc_round_trip(Compression::None);
}

#[test]
fn grpc_gzip_every_field_arrives() {
    grpc_round_trip(Compression::Gzip);
}

fn http_round_trip(protocol: Protocol, compression: Compression) -> String {
    let server = HttpServer::start();
    let stats = ExportStats::new();
    let exp = exporter(protocol, server.endpoint(), compression, &stats);
    exp.export(rich_batch()).expect("export succeeds");
    assert!(server.state.decode_errors.lock().is_empty());
    let received = server.state.received.lock();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_exact(&r.request);
    assert_eq!(r.headers.get("x-api-key").unwrap(), "secret-1");
    let ct = if protocol == Protocol::HttpJson {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    assert_eq!(r.headers.get("content-type").unwrap(), ct);
    assert_eq!(
        r.headers
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        (compression == Compression::Gzip).then_some("gzip")
    );
    String::from_utf8_lossy(&r.raw).into_owned()
}

#[test]
fn http_protobuf_every_field_arrives() {
    http_round_trip(Protocol::HttpProtobuf, Compression::None);
}

#[test]
fn http_protobuf_gzip_every_field_arrives() {
    http_round_trip(Protocol::HttpProtobuf, Compression::Gzip);
}

#[test]
fn http_json_every_field_arrives_in_the_spec_mapping() {
    let raw = http_round_trip(Protocol::HttpJson, Compression::None);
    let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    // Hex ids (not base64), lowerCamelCase names, enums as integers.
    assert_eq!(span["traceId"], trace_id(0).to_string());
    assert_eq!(span["spanId"], span_id(0).to_string());
    assert_eq!(span["parentSpanId"], span_id(500).to_string());
    assert_eq!(span["kind"], 1);
    assert_eq!(span["status"]["code"], 2);
    assert_eq!(span["droppedAttributesCount"], 3);
    assert_eq!(span["links"][0]["traceId"], trace_id(1000).to_string());
    // 64-bit integers as strings, as the OTLP/JSON mapping allows.
    assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
    assert!(raw.contains("\"intValue\""), "{raw}");
    assert!(!raw.contains("trace_id"), "snake_case leaked: {raw}");
}

#[test]
fn http_json_gzip_every_field_arrives() {
    http_round_trip(Protocol::HttpJson, Compression::Gzip);
}

#[test]
fn partial_success_is_counted() {
    let grpc = GrpcServer::start();
    *grpc.state.partial_success.lock() = Some(ExportTracePartialSuccess {
        rejected_spans: 2,
        error_message: "2 spans had end before start".into(),
    });
    let stats = ExportStats::new();
    let exp = exporter(Protocol::Grpc, grpc.endpoint(), Compression::None, &stats);
    exp.export(rich_batch()).unwrap();

    let http = HttpServer::start();
    *http.state.partial_success.lock() = Some(ExportTracePartialSuccess {
        rejected_spans: 3,
        error_message: "bad ids".into(),
    });
    for protocol in [Protocol::HttpProtobuf, Protocol::HttpJson] {
        let exp = exporter(protocol, http.endpoint(), Compression::None, &stats);
        exp.export(rich_batch()).unwrap();
    }
    let snap = stats.snapshot();
    assert_eq!(snap.rejected_by_server, 2 + 3 + 3);
    assert!(snap.last_error.unwrap().contains("bad ids"));
}

#[test]
fn batch_processor_with_grpc_exporter_inside_a_current_thread_runtime() {
    let server = GrpcServer::start();
    let stats = ExportStats::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exp = exporter(Protocol::Grpc, server.endpoint(), Compression::None, &stats);
        let bsp = BatchSpanProcessor::builder(exp)
            .with_stats(stats.clone())
            .build();
        for s in rich_batch() {
            bsp.on_end(s);
        }
        // Called on the runtime's only thread: must neither panic nor deadlock.
        bsp.force_flush(Duration::from_secs(10)).unwrap();
        bsp.shutdown(Duration::from_secs(10)).unwrap();
    });
    let received = server.state.received.lock();
    let spans: usize = received
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(spans, 5);
    assert_eq!(stats.snapshot().exported, 5);
}

#[test]
fn invalid_configuration_is_a_clear_error() {
    let e = OtlpExporter::builder_from_env_vars(|k| {
        (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "carrier-pigeon".to_string())
    })
    .build()
    .unwrap_err();
    assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
    let e = OtlpExporter::builder_from_env_vars(|_| None)
        .with_header("bad header", "x")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("bad header"), "{e}");
}

#[test]
fn exporter_after_shutdown_refuses() {
    let server = HttpServer::start();
    let stats = ExportStats::new();
    let exp = exporter(
        Protocol::HttpProtobuf,
        server.endpoint(),
        Compression::None,
        &stats,
    );
    exp.shutdown().unwrap();
    assert_eq!(
        exp.export(rich_batch()),
        Err(ferrotrace::export::ExportError::Shutdown)
    );
}
