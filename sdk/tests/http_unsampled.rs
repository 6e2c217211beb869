//! Unsampled requests through the HTTP layers, over real loopback servers:
//! the layers decide sampling before building anything (issue 16), and an
//! unsampled request must still carry its trace on: the handler sees a valid
//! unsampled context with a span id of its own, outgoing calls inject it
//! (with the baggage), and nothing is exported. A custom sampler still sees
//! the span's name and attributes before it decides.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use ferrotrace::context::{Context, FutureExt};
use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::integrations::http::{ClientTraceService, HttpClientLayer, HttpServerLayer};
use ferrotrace::trace::{
    Link, Sampler, SamplingDecision, SamplingResult, ShouldSample, SpanKind, Tracer, TracerProvider,
};
use ferrotrace::{KeyValue, SpanContext, TraceId};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

type HttpClient = ClientTraceService<Client<HttpConnector, Full<Bytes>>>;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn http_client(tracer: Tracer) -> HttpClient {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    ServiceBuilder::new()
        .layer(HttpClientLayer::new(tracer))
        .service(client)
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

async fn get_text(client: HttpClient, url: String, headers: &[(&str, &str)]) -> String {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .oneshot(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request failed");
    assert_eq!(resp.status(), http::StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// `trace_id span_id sampled` of a span context.
fn describe(sc: &SpanContext) -> String {
    format!("{} {} {}", sc.trace_id(), sc.span_id(), sc.is_sampled())
}

/// Front (server layer + client layer) → back (plain axum, echoes what it got).
/// Returns the front's address.
async fn front_and_back(provider: &TracerProvider) -> SocketAddr {
    let back = Router::new().route(
        "/echo",
        get(|headers: HeaderMap| async move {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            format!("{}|{}", h("traceparent"), h("baggage"))
        }),
    );
    let back = serve(back).await;
    let client = http_client(provider.tracer("front-client"));
    let front = Router::new()
        .route(
            "/call",
            get(move || {
                let client = client.clone();
                async move {
                    let seen = describe(Context::current().span_context());
                    let cx = Context::current();
                    let echoed = get_text(client, format!("http://{back}/echo"), &[])
                        .with_context(cx)
                        .await;
                    format!("{seen}|{echoed}")
                }
            }),
        )
        .layer(HttpServerLayer::new(provider.tracer("front")));
    serve(front).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_request_still_propagates_its_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::default()) // parent-based, always on for roots
        .with_unended_span_age(None)
        .build();
    let front = front_and_back(&provider).await;
    // A plain client: the request's traceparent says "not sampled".
    let raw = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("http://{front}/call"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-00"))
        .header("baggage", "tenant=acme")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw.request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let parts: Vec<&str> = body.split('|').collect();
    assert_eq!(parts.len(), 3, "{body}");

    // The handler ran in the request's trace, unsampled, in a span of its own.
    let seen: Vec<&str> = parts[0].split(' ').collect();
    assert_eq!(seen[0], TRACE);
    assert_ne!(seen[1], PARENT, "the server span has a span id of its own");
    assert_ne!(seen[1], "0000000000000000");
    assert_eq!(seen[2], "false");

    // The outgoing call carried the trace on: same trace, not sampled, the
    // client span (a child of the server span, with its own id) as parent.
    let tp: Vec<&str> = parts[1].split('-').collect();
    assert_eq!(tp.len(), 4, "traceparent {}", parts[1]);
    assert_eq!(tp[1], TRACE);
    assert_ne!(tp[2], PARENT);
    assert_ne!(
        tp[2], seen[1],
        "the client span's id, not the server span's"
    );
    assert_eq!(u8::from_str_radix(tp[3], 16).unwrap() & 1, 0, "not sampled");
    assert_eq!(
        parts[2], "tenant=acme",
        "baggage travels with unsampled requests"
    );

    // Nothing was recorded.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(exporter.finished_spans().is_empty());

    // The same request, sampled: both spans are recorded with their attributes.
    let req = http::Request::get(format!("http://{front}/call"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw.request(req).await.unwrap();
    let _ = resp.into_body().collect().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while exporter.finished_spans().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let spans = exporter.finished_spans();
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(server.name, "GET /call");
    assert_eq!(client.name, "GET");
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    let has = |s: &ferrotrace::export::SpanData, k: &str| {
        s.attributes.iter().any(|a| a.key.as_str() == k)
    };
    assert!(has(server, "url.path") && has(server, "http.route") && has(server, "server.address"));
    assert!(has(client, "url.full") && has(client, "server.port"));
}

/// Records what it was asked about, and drops everything.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, Vec<String>)>>);

impl ShouldSample for Recorder {
    fn should_sample(
        &self,
        _parent: Option<&SpanContext>,
        _trace_id: TraceId,
        name: &str,
        _kind: SpanKind,
        attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        self.0.lock().unwrap().push((
            name.to_string(),
            attributes
                .iter()
                .map(|a| a.key.as_str().to_string())
                .collect(),
        ));
        SamplingResult {
            decision: SamplingDecision::Drop,
            attributes: Vec::new(),
            trace_state: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_sampler_sees_name_and_attributes_before_deciding() {
    let recorder = Arc::new(Recorder::default());
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::Custom(recorder.clone()))
        .with_unended_span_age(None)
        .build();
    let front = front_and_back(&provider).await;
    let text = get_text(
        http_client(provider.tracer("test")),
        format!("http://{front}/call"),
        &[],
    )
    .await;
    assert!(
        text.ends_with("false|") || text.contains("false|00-"),
        "{text}"
    );
    let asked = recorder.0.lock().unwrap().clone();
    // test client, front server, front's client: each asked with its details.
    let server = asked
        .iter()
        .find(|(n, _)| n == "GET /call")
        .expect("server span asked");
    for k in [
        "http.request.method",
        "url.path",
        "http.route",
        "server.address",
    ] {
        assert!(server.1.iter().any(|a| a == k), "{k} in {:?}", server.1);
    }
    let clients: Vec<_> = asked.iter().filter(|(n, _)| n == "GET").collect();
    assert_eq!(clients.len(), 2, "{asked:?}");
    for c in clients {
        assert!(c.1.iter().any(|a| a == "url.full"), "{:?}", c.1);
    }
    assert!(exporter.finished_spans().is_empty());
}
