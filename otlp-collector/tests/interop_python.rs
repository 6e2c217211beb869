//! Interop with the official Python OpenTelemetry SDK (gRPC and HTTP/protobuf
//! exporters): a `python3 -c` script creates spans with every attribute type,
//! events, links, status, resource and scope, records them in memory and
//! exports them to the collector; the stored spans must match field for field.
//!
//! Needs `opentelemetry-sdk`, `opentelemetry-exporter-otlp-proto-grpc` and
//! `opentelemetry-exporter-otlp-proto-http` (scripts/test.sh installs them).
//! Under `CI=true` their absence fails the test; otherwise it is skipped with
//! the reason printed.

mod ingest_util;

use std::process::Command;

use ferrotrace_collector::model::{AttrValue, KeyValue, SpanKind, StatusCode};
use ingest_util::*;
use serde_json::Value;

const SCRIPT: &str = r#"
import json, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

mode, endpoint = sys.argv[1], sys.argv[2]
if mode == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    exp = OTLPSpanExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exp = OTLPSpanExporter(endpoint=endpoint)

results = []
class Recording:
    def export(self, spans):
        r = exp.export(spans)
        results.append(r == SpanExportResult.SUCCESS)
        return r
    def shutdown(self):
        exp.shutdown()
    def force_flush(self, timeout_millis=30000):
        return True

mem = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "py-interop-" + mode, "deployment.environment": "test", "py.int": 3}))
provider.add_span_processor(SimpleSpanProcessor(mem))
provider.add_span_processor(SimpleSpanProcessor(Recording()))
tracer = provider.get_tracer("py-scope", "1.2.3")
with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
    attrs = {"s": "text", "b": True, "i": -5, "f": 2.5, "ls": ["a", "b"], "lb": [True, False], "li": [1, 2], "lf": [0.5, 1.5]}
    with tracer.start_as_current_span("child", kind=SpanKind.CLIENT, attributes=attrs,
                                      links=[Link(parent.get_span_context(), {"l": "x"})]) as child:
        child.add_event("evt", {"e": 1, "msg": "hi"})
        child.set_status(Status(StatusCode.ERROR, "bad thing"))
provider.shutdown()

def val(v):
    return list(v) if isinstance(v, (list, tuple)) else v

out = []
for s in mem.get_finished_spans():
    out.append({
        "trace_id": format(s.context.trace_id, "032x"),
        "span_id": format(s.context.span_id, "016x"),
        "parent": format(s.parent.span_id, "016x") if s.parent else None,
        "name": s.name,
        "kind": s.kind.value,
        "start": s.start_time,
        "end": s.end_time,
        "attributes": {k: val(v) for k, v in s.attributes.items()},
        "events": [{"name": e.name, "time": e.timestamp, "attributes": {k: val(v) for k, v in e.attributes.items()}} for e in s.events],
        "links": [{"trace_id": format(l.context.trace_id, "032x"), "span_id": format(l.context.span_id, "016x"),
                   "attributes": {k: val(v) for k, v in l.attributes.items()}} for l in s.links],
        "status_code": s.status.status_code.value,
        "status_message": s.status.description or "",
        "resource": {k: val(v) for k, v in s.resource.attributes.items()},
        "scope": [s.instrumentation_scope.name, s.instrumentation_scope.version],
    })
print(json.dumps({"ok": results, "spans": out}))
"#;

fn python_available() -> bool {
    let check = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
        ])
        .output();
    match check {
        Ok(o) if o.status.success() => true,
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and the Python OpenTelemetry SDK is missing (run scripts/test.sh): {why}");
            }
            eprintln!("SKIPPED interop_python: Python OpenTelemetry SDK not installed ({why}); pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc opentelemetry-exporter-otlp-proto-http");
            false
        }
    }
}

fn hex_bytes<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn json_to_attr(v: &Value) -> AttrValue {
    match v {
        Value::String(s) => AttrValue::Str(s.as_str().into()),
        Value::Bool(b) => AttrValue::Bool(*b),
        Value::Number(n) if n.is_i64() => AttrValue::Int(n.as_i64().unwrap()),
        Value::Number(n) => AttrValue::Double(n.as_f64().unwrap()),
        Value::Array(a) => AttrValue::Array(a.iter().map(json_to_attr).collect()),
        other => panic!("unexpected attribute value {other}"),
    }
}

fn assert_attrs(stored: &[KeyValue], expected: &Value, what: &str) {
    let exp = expected.as_object().unwrap();
    assert_eq!(stored.len(), exp.len(), "{what}: {stored:?} vs {expected}");
    for (k, v) in exp {
        let got = stored
            .iter()
            .find(|kv| kv.key == *k)
            .unwrap_or_else(|| panic!("{what}: {k} missing"));
        assert_eq!(got.value, json_to_attr(v), "{what}: attribute {k}");
    }
}

async fn run_python(mode: &'static str, endpoint: String) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", SCRIPT, mode, &endpoint])
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad python output {e}: {stdout}"))
}

async fn check(tc: &TestCollector, mode: &'static str, endpoint: String) {
    let v = run_python(mode, endpoint).await;
    let oks = v["ok"].as_array().unwrap();
    assert_eq!(oks.len(), 2, "{v}");
    assert!(
        oks.iter().all(|b| b == &Value::Bool(true)),
        "python exporter reported failure: {v}"
    );
    for sent in v["spans"].as_array().unwrap() {
        let tid: [u8; 16] = hex_bytes(sent["trace_id"].as_str().unwrap());
        let sid: [u8; 8] = hex_bytes(sent["span_id"].as_str().unwrap());
        let stored = wait_spans(tc.store.as_ref(), tid, 2).await;
        let s = stored
            .iter()
            .find(|s| s.span_id == sid)
            .unwrap_or_else(|| panic!("{mode}: span {sid:?} not stored"));
        assert_eq!(s.name, sent["name"].as_str().unwrap());
        assert_eq!(
            s.parent_span_id,
            sent["parent"].as_str().map(hex_bytes::<8>)
        );
        // Python's SpanKind enum: INTERNAL=0, SERVER=1, CLIENT=2, PRODUCER=3, CONSUMER=4.
        let kind = [
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ][sent["kind"].as_u64().unwrap() as usize];
        assert_eq!(s.kind, kind);
        assert_eq!(s.start_ns, sent["start"].as_u64().unwrap());
        assert_eq!(s.end_ns, sent["end"].as_u64().unwrap());
        assert_attrs(&s.attributes, &sent["attributes"], "span attributes");
        let events = sent["events"].as_array().unwrap();
        assert_eq!(s.events.len(), events.len());
        for (e, x) in s.events.iter().zip(events) {
            assert_eq!(e.name, x["name"].as_str().unwrap());
            assert_eq!(e.time_ns, x["time"].as_u64().unwrap());
            assert_attrs(&e.attributes, &x["attributes"], "event attributes");
        }
        let links = sent["links"].as_array().unwrap();
        assert_eq!(s.links.len(), links.len());
        for (l, x) in s.links.iter().zip(links) {
            assert_eq!(l.trace_id, hex_bytes::<16>(x["trace_id"].as_str().unwrap()));
            assert_eq!(l.span_id, hex_bytes::<8>(x["span_id"].as_str().unwrap()));
            assert_attrs(&l.attributes, &x["attributes"], "link attributes");
        }
        // Python's StatusCode enum: UNSET=0, OK=1, ERROR=2 (same as OTLP).
        assert_eq!(
            s.status_code,
            StatusCode::from_i32(sent["status_code"].as_i64().unwrap() as i32)
        );
        assert_eq!(s.status_message, sent["status_message"].as_str().unwrap());
        assert_attrs(&s.resource_attributes, &sent["resource"], "resource");
        assert_eq!(s.service_name, format!("py-interop-{mode}"));
        assert_eq!(s.scope_name, sent["scope"][0].as_str().unwrap());
        assert_eq!(s.scope_version, sent["scope"][1].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_grpc_and_http() {
    if !python_available() {
        return;
    }
    let tc = start(|_| {}).await;
    let grpc = tc.collector.addrs.otlp_grpc.unwrap();
    let http = tc.collector.addrs.otlp_http.unwrap();
    check(&tc, "grpc", format!("http://{grpc}")).await;
    check(&tc, "http", format!("http://{http}/v1/traces")).await;
    tc.collector.shutdown().await;
}
