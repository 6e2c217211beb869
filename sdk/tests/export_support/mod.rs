//! Shared pieces for the export tests: span builders and real loopback OTLP
//! servers (a tonic `TraceService` and a hyper HTTP server) whose answers a
//! test scripts.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace::attributes::{Array, KeyValue, StringValue};
use ferrotrace::context::{SpanContext, TraceFlags, TraceState};
use ferrotrace::ids::{SpanId, TraceId};
use ferrotrace::resource::Resource;
use ferrotrace::trace::span_data::{Event, InstrumentationScope, Link, SpanData, SpanKind, Status};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use parking_lot::Mutex;
use prost::Message;

/// A trace state with two members.
pub fn trace_state() -> TraceState {
    TraceState::from_key_value([("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")])
        .expect("valid tracestate")
}

pub fn resource(service: &'static str) -> Arc<Resource> {
    Arc::new(
        Resource::new([
            KeyValue::new("service.name", service),
            KeyValue::new("service.instance.id", "i-1"),
        ])
        .with_schema_url("https://opentelemetry.io/schemas/1.26.0"),
    )
}

pub fn scope(name: &'static str) -> Arc<InstrumentationScope> {
    Arc::new(InstrumentationScope {
        name: Cow::Borrowed(name),
        version: Some(Cow::Borrowed("1.2.3")),
        schema_url: Some(Cow::Borrowed("https://example.com/scope-schema")),
        attributes: vec![KeyValue::new("scope.attr", true)],
    })
}

pub fn trace_id(i: u64) -> TraceId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&0x4bf9_2f35_77b3_4da6u64.to_be_bytes());
    b[8..].copy_from_slice(&(i + 1).to_be_bytes());
    TraceId::from_bytes(b)
}

pub fn span_id(i: u64) -> SpanId {
    SpanId::from_bytes((0x00f0_67aa_0000_0000u64 + i + 1).to_be_bytes())
}

/// A span using every field with a non-default value.
pub fn rich_span(i: u64, resource: &Arc<Resource>, scope: &Arc<InstrumentationScope>) -> SpanData {
    let ctx = SpanContext::new(
        trace_id(i),
        span_id(i),
        TraceFlags::SAMPLED,
        false,
        trace_state(),
    );
    let link_ctx = SpanContext::new(
        trace_id(i + 1000),
        span_id(i + 1000),
        TraceFlags::NOT_SAMPLED,
        true,
        TraceState::NONE,
    );
    SpanData {
        span_context: ctx,
        parent_span_id: span_id(i + 500),
        parent_is_remote: i.is_multiple_of(2),
        span_kind: match i % 5 {
            0 => SpanKind::Internal,
            1 => SpanKind::Server,
            2 => SpanKind::Client,
            3 => SpanKind::Producer,
            _ => SpanKind::Consumer,
        },
        name: Cow::Owned(format!("span-{i}")),
        start_time_ns: 1_700_000_000_000_000_000 + i,
        end_time_ns: 1_700_000_000_000_500_000 + i,
        attributes: vec![
            KeyValue::new("str", "value"),
            KeyValue::new("owned", format!("owned-{i}")),
            KeyValue::new("bool", true),
            KeyValue::new("int", -42i64),
            KeyValue::new("big", i64::MAX),
            KeyValue::new("float", 3.25f64),
            KeyValue::new("bools", vec![true, false]),
            KeyValue::new("ints", vec![1i64, -2, i64::MIN]),
            KeyValue::new("floats", vec![0.5f64, -1.5]),
            KeyValue::new(
                "strs",
                Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b".to_string()),
                ]),
            ),
        ],
        dropped_attributes_count: 3,
        events: vec![Event {
            name: Cow::Borrowed("exception"),
            timestamp_ns: 1_700_000_000_000_100_000,
            attributes: vec![KeyValue::new("exception.message", "boom")],
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 4,
        links: vec![Link {
            span_context: link_ctx,
            attributes: vec![KeyValue::new("link.kind", "follows")],
            dropped_attributes_count: 2,
        }],
        dropped_links_count: 5,
        status: if i.is_multiple_of(3) {
            Status::error("it broke")
        } else if i % 3 == 1 {
            Status::Ok
        } else {
            Status::Unset
        },
        resource: Arc::clone(resource).into(),
        scope: Arc::clone(scope).into(),
    }
}

/// A small span for volume tests.
pub fn small_span(i: u64) -> SpanData {
    thread_local! {
        static R: Arc<Resource> = resource("volume");
        static S: Arc<InstrumentationScope> = scope("volume");
    }
    SpanData {
        span_context: SpanContext::new(
            trace_id(i),
            span_id(i),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed("small"),
        start_time_ns: 1,
        end_time_ns: 2,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Status::Unset,
        resource: R.with(Arc::clone).into(),
        scope: S.with(Arc::clone).into(),
    }
}

/// A batch over two resources and three scopes.
pub fn rich_batch() -> Vec<SpanData> {
    let (ra, rb) = (resource("checkout"), resource("payments"));
    let (s1, s2) = (scope("http"), scope("db"));
    vec![
        rich_span(0, &ra, &s1),
        rich_span(1, &rb, &s1),
        rich_span(2, &ra, &s2),
        rich_span(3, &ra, &s1),
        rich_span(4, &rb, &s2),
    ]
}

/// Waits until `cond` holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test server runtime")
}

// ---------------------------------------------------------------- gRPC server

/// What the gRPC test server saw.
#[derive(Default)]
pub struct GrpcState {
    pub calls: AtomicUsize,
    pub received: Mutex<Vec<ExportTraceServiceRequest>>,
    pub metadata: Mutex<Vec<tonic::metadata::MetadataMap>>,
    /// Answers to give before succeeding, first to last.
    pub script: Mutex<VecDeque<tonic::Status>>,
    pub partial_success: Mutex<Option<ExportTracePartialSuccess>>,
}

#[derive(Clone)]
struct GrpcSvc(Arc<GrpcState>);

#[tonic::async_trait]
impl TraceService for GrpcSvc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(st) = self.0.script.lock().pop_front() {
            return Err(st);
        }
        self.0.metadata.lock().push(request.metadata().clone());
        self.0.received.lock().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: self.0.partial_success.lock().clone(),
        }))
    }
}

/// A real OTLP/gRPC server on 127.0.0.1 with its own runtime.
pub struct GrpcServer {
    pub addr: SocketAddr,
    pub state: Arc<GrpcState>,
    _rt: tokio::runtime::Runtime,
}

impl GrpcServer {
    pub fn start() -> Self {
        let rt = server_runtime();
        let state = Arc::new(GrpcState::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = TraceServiceServer::new(GrpcSvc(Arc::clone(&state)))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        GrpcServer {
            addr,
            state,
            _rt: rt,
        }
    }
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

// ---------------------------------------------------------------- HTTP server

/// One scripted HTTP answer.
#[derive(Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// One request the HTTP test server received and decoded.
pub struct HttpReceived {
    pub headers: http::HeaderMap,
    /// Body after gzip decoding.
    pub raw: Vec<u8>,
    pub request: ExportTraceServiceRequest,
}

#[derive(Default)]
pub struct HttpState {
    pub calls: AtomicUsize,
    pub received: Mutex<Vec<HttpReceived>>,
    pub script: Mutex<VecDeque<HttpAnswer>>,
    /// Sent with every 200 answer (JSON or protobuf to match the request).
    pub partial_success: Mutex<Option<ExportTracePartialSuccess>>,
    pub decode_errors: Mutex<Vec<String>>,
}

/// A real OTLP/HTTP server (protobuf and JSON) on 127.0.0.1.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub state: Arc<HttpState>,
    _rt: tokio::runtime::Runtime,
}

async fn handle_http(
    state: Arc<HttpState>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            state.decode_errors.lock().push(e.to_string());
            return Ok(response(400, &[], b"unreadable body".to_vec()));
        }
    };
    if let Some(a) = state.script.lock().pop_front() {
        return Ok(response(a.status, &a.headers, a.body));
    }
    let raw = if parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut out) {
            state.decode_errors.lock().push(e.to_string());
            return Ok(response(400, &[], b"bad gzip".to_vec()));
        }
        out
    } else {
        body
    };
    let json = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    let decoded: Result<ExportTraceServiceRequest, String> = if json {
        serde_json::from_slice(&raw).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(raw.as_slice()).map_err(|e| e.to_string())
    };
    let request = match decoded {
        Ok(r) => r,
        Err(e) => {
            state.decode_errors.lock().push(e);
            return Ok(response(400, &[], b"undecodable".to_vec()));
        }
    };
    state.received.lock().push(HttpReceived {
        headers: parts.headers,
        raw,
        request,
    });
    let resp = ExportTraceServiceResponse {
        partial_success: state.partial_success.lock().clone(),
    };
    let (ct, body) = if json {
        (
            "application/json",
            serde_json::to_vec(&resp).unwrap_or_default(),
        )
    } else {
        ("application/x-protobuf", resp.encode_to_vec())
    };
    Ok(response(200, &[("content-type", ct.to_string())], body))
}

fn response(
    status: u16,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new())))
}

impl HttpServer {
    pub fn start() -> Self {
        let rt = server_runtime();
        let state = Arc::new(HttpState::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let st = Arc::clone(&state);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| handle_http(Arc::clone(&st), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        HttpServer {
            addr,
            state,
            _rt: rt,
        }
    }
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }
}

/// A TCP server that accepts connections and never answers.
pub struct HangingServer {
    pub addr: SocketAddr,
}

impl HangingServer {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                // Keep the connection open and silent, but bounded.
                if held.len() < 64 {
                    held.push(s);
                }
            }
        });
        HangingServer { addr }
    }
}

/// A loopback address nothing listens on.
pub fn dead_endpoint() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}
