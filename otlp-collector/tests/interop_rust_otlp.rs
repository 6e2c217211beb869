//! Interop with the official Rust OpenTelemetry OTLP exporter (`opentelemetry-otlp`),
//! over gRPC (tonic, plain and gzip), HTTP/protobuf and HTTP/JSON: what is stored
//! matches what was exported, field for field.

mod ingest_util;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrotrace_collector::model::{
    AttrValue, KeyValue as MKv, SpanKind as MKind, StatusCode as MStatus,
};
use ingest_util::*;
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;

fn ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn span_data(seed: u8) -> SpanData {
    let trace_id = TraceId::from_bytes([seed; 16]);
    let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    let ctx = SpanContext::new(
        trace_id,
        SpanId::from_bytes([seed, 1, 2, 3, 4, 5, 6, 7]),
        TraceFlags::SAMPLED,
        false,
        "vendor=abc".parse::<TraceState>().unwrap(),
    );
    let linked = SpanContext::new(
        TraceId::from_bytes([seed.wrapping_add(1); 16]),
        SpanId::from_bytes([9; 8]),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // SpanEvents/SpanLinks are non-exhaustive: fill defaults, then set fields.
    let mut events = SpanEvents::default();
    events.events.push(Event::new(
        "exception",
        start + Duration::from_nanos(1000),
        vec![
            KeyValue::new("exception.message", "boom"),
            KeyValue::new("n", 7i64),
        ],
        1,
    ));
    events.dropped_count = 3;
    let mut links = SpanLinks::default();
    links
        .links
        .push(Link::new(linked, vec![KeyValue::new("link.attr", "x")], 0));
    SpanData {
        span_context: ctx,
        parent_span_id: SpanId::from_bytes([seed, 8, 8, 8, 8, 8, 8, 8]),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: format!("interop-{seed}").into(),
        start_time: start,
        end_time: start + Duration::from_nanos(1_234_567),
        attributes: vec![
            KeyValue::new("str", "hello"),
            KeyValue::new("int", -42i64),
            KeyValue::new("float", 2.5f64),
            KeyValue::new("bool", true),
            KeyValue::new(
                "strs",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b"),
                ])),
            ),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, 2, 3]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, 1.5]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
        ],
        dropped_attributes_count: 2,
        events,
        links,
        status: Status::error("it failed"),
        instrumentation_scope: InstrumentationScope::builder("interop-scope")
            .with_version("9.9.9")
            .build(),
    }
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("rust-interop")
        .with_attributes([
            KeyValue::new("deployment.environment", "test"),
            KeyValue::new("host.cpus", 2i64),
        ])
        .build()
}

fn attr<'a>(kvs: &'a [MKv], key: &str) -> &'a AttrValue {
    &kvs.iter()
        .find(|k| k.key == key)
        .unwrap_or_else(|| panic!("attribute {key} missing in {kvs:?}"))
        .value
}

async fn check_stored(store: &dyn ferrotrace_collector::storage::SpanStore, seed: u8) {
    let sent = span_data(seed);
    let spans = wait_spans(store, [seed; 16], 1).await;
    assert_eq!(spans.len(), 1, "seed {seed}");
    let s = &spans[0];
    assert_eq!(s.span_id, [seed, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(s.parent_span_id, Some([seed, 8, 8, 8, 8, 8, 8, 8]));
    assert_eq!(s.name, format!("interop-{seed}"));
    assert_eq!(s.kind, MKind::Client);
    assert_eq!(s.trace_state, "vendor=abc");
    assert_eq!(s.flags & 0xff, 1);
    assert_eq!(s.start_ns, ns(sent.start_time));
    assert_eq!(s.end_ns, ns(sent.end_time));
    let a = &s.attributes;
    assert_eq!(a.len(), 8);
    assert_eq!(attr(a, "str"), &AttrValue::Str("hello".into()));
    assert_eq!(attr(a, "int"), &AttrValue::Int(-42));
    assert_eq!(attr(a, "float"), &AttrValue::Double(2.5));
    assert_eq!(attr(a, "bool"), &AttrValue::Bool(true));
    assert_eq!(
        attr(a, "strs"),
        &AttrValue::Array(vec![AttrValue::Str("a".into()), AttrValue::Str("b".into())])
    );
    assert_eq!(
        attr(a, "ints"),
        &AttrValue::Array(vec![
            AttrValue::Int(1),
            AttrValue::Int(2),
            AttrValue::Int(3)
        ])
    );
    assert_eq!(
        attr(a, "floats"),
        &AttrValue::Array(vec![AttrValue::Double(0.5), AttrValue::Double(1.5)])
    );
    assert_eq!(
        attr(a, "bools"),
        &AttrValue::Array(vec![AttrValue::Bool(true), AttrValue::Bool(false)])
    );
    assert_eq!(s.dropped_attributes_count, 2);
    assert_eq!(s.events.len(), 1);
    assert_eq!(s.events[0].name, "exception");
    assert_eq!(s.events[0].time_ns, ns(sent.start_time) + 1000);
    assert_eq!(attr(&s.events[0].attributes, "n"), &AttrValue::Int(7));
    assert_eq!(s.events[0].dropped_attributes_count, 1);
    assert_eq!(s.dropped_events_count, 3);
    assert_eq!(s.links.len(), 1);
    assert_eq!(s.links[0].trace_id, [seed.wrapping_add(1); 16]);
    assert_eq!(s.links[0].span_id, [9; 8]);
    assert_eq!(
        attr(&s.links[0].attributes, "link.attr"),
        &AttrValue::Str("x".into())
    );
    assert_eq!(s.status_code, MStatus::Error);
    assert_eq!(s.status_message, "it failed");
    assert_eq!(s.service_name, "rust-interop");
    assert_eq!(
        attr(&s.resource_attributes, "deployment.environment"),
        &AttrValue::Str("test".into())
    );
    assert_eq!(
        attr(&s.resource_attributes, "host.cpus"),
        &AttrValue::Int(2)
    );
    assert_eq!(s.scope_name, "interop-scope");
    assert_eq!(s.scope_version, "9.9.9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_exporter_grpc_http_proto_and_http_json() {
    let tc = start(|_| {}).await;
    let grpc = tc.collector.addrs.otlp_grpc.unwrap();
    let http = tc.collector.addrs.otlp_http.unwrap();

    let mut exporters = [
        (
            1u8,
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{grpc}"))
                .build()
                .unwrap(),
        ),
        (
            2,
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{grpc}"))
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .build()
                .unwrap(),
        ),
        (
            3,
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("http://{http}/v1/traces"))
                .build()
                .unwrap(),
        ),
        (
            4,
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(format!("http://{http}/v1/traces"))
                .build()
                .unwrap(),
        ),
    ];
    for (seed, exp) in exporters.iter_mut() {
        exp.set_resource(&resource());
        exp.export(vec![span_data(*seed)])
            .await
            .unwrap_or_else(|e| panic!("exporter {seed} failed: {e:?}"));
    }
    for seed in 1..=4u8 {
        check_stored(tc.store.as_ref(), seed).await;
    }
    let m = tc.collector.metrics.render();
    for proto in ["grpc", "http/protobuf", "http/json"] {
        assert!(
            !m.contains(&format!("ferrotrace_receiver_spans_accepted_total{{receiver=\"otlp\",protocol=\"{proto}\"}} 0")),
            "{proto}: {m}"
        );
    }
    tc.collector.shutdown().await;
}
