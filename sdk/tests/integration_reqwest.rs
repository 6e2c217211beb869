//! The reqwest middleware against a real axum server traced by the HTTP
//! server layer: one trace across the hop, the client span's attributes and
//! status, credentials kept out of `url.full`, transport errors.

use std::time::Duration;

use axum::routing::get;
use ferrotrace::context::{Baggage, Context, FutureExt};
use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::integrations::http::HttpServerLayer;
use ferrotrace::integrations::reqwest::TracingMiddleware;
use ferrotrace::trace::{Sampler, SpanKind, Status, TracerProvider};
use ferrotrace::Value;

fn attr<'a>(s: &'a ferrotrace::export::SpanData, k: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == k)
        .map(|kv| &kv.value)
}

/// A plain reqwest client. In a workspace build, reqwest's features are
/// unified with the collector's (`rustls-no-provider`, for its S3 cold tier),
/// and such a reqwest panics at `Client::new()` unless a rustls crypto
/// provider is installed; the workspace's provider is ring.
fn client() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn wait_for(exporter: &InMemorySpanExporter, n: usize) -> Vec<ferrotrace::export::SpanData> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while exporter.finished_spans().len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exporter.finished_spans()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_client_spans_and_carry_the_context() {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::AlwaysOn)
        .build();
    let app = axum::Router::new()
        .route(
            "/items/{id}",
            get(|| async {
                let tenant = Context::current().baggage().get("tenant").map(String::from);
                tenant.unwrap_or_default()
            }),
        )
        .route(
            "/missing",
            get(|| async { (http::StatusCode::NOT_FOUND, "no") }),
        )
        .layer(HttpServerLayer::new(provider.tracer("server")));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let client = reqwest_middleware::ClientBuilder::new(client())
        .with(TracingMiddleware::new(provider.tracer("client")).with_baggage_attributes(["tenant"]))
        .build();
    let mut baggage = Baggage::new();
    baggage.insert("tenant", "acme").unwrap();
    let root = provider.tracer("app").start("checkout");
    let cx = root.context().with_baggage(baggage);
    let body = async {
        let resp = client
            .get(format!("http://user:secret@{addr}/items/7"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }
    .with_context(cx.clone())
    .await;
    assert_eq!(body, "acme", "baggage reached the server");
    let resp = client
        .get(format!("http://{addr}/missing"))
        .send()
        .with_context(cx)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    drop(root);

    let spans = wait_for(&exporter, 5).await;
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    let root = spans.iter().find(|s| s.name == "checkout").unwrap();
    assert_eq!((clients.len(), servers.len()), (2, 2), "{spans:?}");
    let ok = clients
        .iter()
        .find(|c| attr(c, "http.response.status_code") == Some(&Value::I64(200)))
        .unwrap();
    assert_eq!(ok.name, "GET");
    assert_eq!(ok.parent_span_id, root.span_context.span_id());
    assert_eq!(ok.status, Status::Unset);
    assert_eq!(
        attr(ok, "url.full"),
        Some(&Value::from(format!("http://{addr}/items/7")))
    );
    assert_eq!(
        attr(ok, "server.address"),
        Some(&Value::from("127.0.0.1".to_string()))
    );
    assert_eq!(
        attr(ok, "server.port"),
        Some(&Value::I64(i64::from(addr.port())))
    );
    assert_eq!(attr(ok, "tenant"), Some(&Value::from("acme".to_string())));
    let server = servers
        .iter()
        .find(|s| s.name == "GET /items/{id}")
        .unwrap();
    assert_eq!(
        server.parent_span_id,
        ok.span_context.span_id(),
        "traceparent injected"
    );
    assert_eq!(server.span_context.trace_id(), root.span_context.trace_id());

    let missing = clients
        .iter()
        .find(|c| attr(c, "http.response.status_code") == Some(&Value::I64(404)))
        .unwrap();
    assert_eq!(missing.status, Status::error("HTTP 404 Not Found"));
    assert_eq!(
        attr(missing, "error.type"),
        Some(&Value::from("404".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_end_the_span_as_an_error() {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(client())
        .with(TracingMiddleware::new(provider.tracer("client")))
        .build();
    assert!(client
        .post(format!("http://{dead}/x"))
        .send()
        .await
        .is_err());
    let spans = wait_for(&exporter, 1).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "POST");
    assert_eq!(
        attr(&spans[0], "error.type"),
        Some(&Value::from("transport"))
    );
    assert!(matches!(spans[0].status, Status::Error { .. }));
}
