//! Shared helpers for the ingest, interop, backpressure and crash tests: a
//! collector on loopback port 0 over a real SQLite store in a temp dir, an
//! HTTP/1 client, and OTLP request builders.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace_collector::config::Config;
use ferrotrace_collector::model::{Span, TraceId};
use ferrotrace_collector::server::Collector;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::SpanStore;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span as PSpan, Status,
};

/// A config for tests: every listener on 127.0.0.1:0, data in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.server.otlp_grpc_addr = "127.0.0.1:0".into();
    c.server.otlp_http_addr = "127.0.0.1:0".into();
    c.server.zipkin_addr = "127.0.0.1:0".into();
    c.server.http_addr = "127.0.0.1:0".into();
    c.batcher.max_delay_ms = 20;
    c.shutdown.drain_timeout_ms = 5_000;
    c
}

/// A running collector over SQLite in a temp dir.
pub struct TestCollector {
    pub collector: Collector,
    pub store: Arc<SqliteStore>,
    pub dir: tempfile::TempDir,
}

/// Starts a collector; `tweak` adjusts the config first.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestCollector {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    tweak(&mut cfg);
    let store = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
    let mut collector = Collector::start(cfg, store.clone() as Arc<dyn SpanStore>)
        .await
        .expect("collector starts");
    collector.wait_ready().await;
    TestCollector {
        collector,
        store,
        dir,
    }
}

/// Response of [`post`].
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// POSTs `body` to `http://addr{path}` with `headers` over HTTP/1.1.
pub async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    request("POST", addr, path, headers, body.into()).await
}

/// Sends any request.
pub async fn request(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Resp {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("http request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends a raw HTTP/1.1 request (for chunked bodies without Content-Length).
pub async fn raw_http(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A string attribute.
pub fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// Deterministic ids for span `i` of trace `t`.
pub fn trace_id(t: u32) -> TraceId {
    let mut id = [0xabu8; 16];
    id[12..].copy_from_slice(&t.to_be_bytes());
    id
}

/// Span id for span `i` (never zero).
pub fn span_id(t: u32, i: u32) -> [u8; 8] {
    let mut id = [0u8; 8];
    id[..4].copy_from_slice(&t.to_be_bytes());
    id[4..].copy_from_slice(&(i + 1).to_be_bytes());
    id
}

/// A request with `n` spans in trace `t`, with attributes, an event and a link.
pub fn request_with(t: u32, n: u32) -> ExportTraceServiceRequest {
    use any_value::Value as V;
    let spans = (0..n)
        .map(|i| PSpan {
            trace_id: trace_id(t).to_vec(),
            span_id: span_id(t, i).to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                span_id(t, 0).to_vec()
            },
            trace_state: "k=v".into(),
            flags: 0x101,
            name: format!("op-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
            end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64 * 1000,
            attributes: vec![
                kv("http.method", V::StringValue("GET".into())),
                kv("http.status_code", V::IntValue(200)),
                kv("ratio", V::DoubleValue(0.5)),
                kv("ok", V::BoolValue(true)),
            ],
            dropped_attributes_count: 0,
            events: vec![span::Event {
                time_unix_nano: 1_700_000_000_000_100_000,
                name: "evt".into(),
                attributes: vec![kv("e", V::IntValue(1))],
                dropped_attributes_count: 0,
            }],
            dropped_events_count: 0,
            links: vec![span::Link {
                trace_id: trace_id(t + 1).to_vec(),
                span_id: span_id(t + 1, 0).to_vec(),
                trace_state: String::new(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 0,
            }],
            dropped_links_count: 0,
            status: Some(Status {
                message: "fine".into(),
                code: status::StatusCode::Ok as i32,
            }),
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", V::StringValue("svc-test".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "scope".into(),
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

/// Waits until the store has `n` spans of `trace`; returns them.
pub async fn wait_spans(store: &dyn SpanStore, trace: TraceId, n: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = store.get_trace(trace, None).await.expect("get_trace");
        if spans.len() >= n || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gzips bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// One request holding span `i` of each trace in `traces` (span 0 is the
/// root, the others its children), service `svc-<i>`, started just now;
/// spans for which `error(trace, i)` is true have status ERROR. For tests
/// that send the spans of a trace in separate requests.
pub fn span_i_of_each(
    traces: &[u32],
    i: u32,
    error: impl Fn(u32, u32) -> bool,
) -> ExportTraceServiceRequest {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        - 5_000_000;
    span_i_of_each_at(traces, i, error, start)
}

/// [`span_i_of_each`] with every span starting at `start` (ns since the
/// epoch): a resend of the same span is then byte-for-byte the same span,
/// as a client's retry is.
pub fn span_i_of_each_at(
    traces: &[u32],
    i: u32,
    error: impl Fn(u32, u32) -> bool,
    start: u64,
) -> ExportTraceServiceRequest {
    let spans = traces
        .iter()
        .map(|&t| PSpan {
            trace_id: trace_id(t).to_vec(),
            span_id: span_id(t, i).to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                span_id(t, 0).to_vec()
            },
            name: format!("op-{i}"),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            status: error(t, i).then(|| Status {
                message: "failed".into(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue(format!("svc-{i}")),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "route-test".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
