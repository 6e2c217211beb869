//! The W3C test-suite service against a local stand-in for the harness's
//! callback endpoint: the context received is propagated to every callback.

use std::sync::{Arc, Mutex};

use axum::routing::post;
use ferrotrace_examples::telemetry::{Export, Telemetry};

type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;

async fn start() -> (std::net::SocketAddr, std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let harness = axum::Router::new().route(
        "/callback/{id}",
        post(move |headers: http::HeaderMap| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(headers);
                "null"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let harness_addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, harness).await.unwrap() });

    // No exporter: spans are non-recording but the context still propagates.
    let t = Telemetry::new("w3c-service", &Export::None).unwrap();
    let app = ferrotrace_examples::w3c::router(t.provider.tracer("w3c"));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (service_addr, harness_addr, seen)
}

async fn post_test(
    service: std::net::SocketAddr,
    harness: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> u16 {
    let body = serde_json::json!([
        {"url": format!("http://{harness}/callback/s.0"), "arguments": []},
        {"url": format!("http://{harness}/callback/s.1"), "arguments": [{"url": "x", "arguments": []}]},
    ]);
    let mut req = http::Request::post(format!("http://{service}/test"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap(),
        )
        .await
        .unwrap();
    resp.status().as_u16()
}

fn header(h: &http::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagates_traceparent_and_tracestate_to_each_callback() {
    let (service, harness, seen) = start().await;
    let status = post_test(
        service,
        harness,
        &[
            (
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-01",
            ),
            ("tracestate", "foo=1,bar=2"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let mut parents = Vec::new();
    for h in &seen {
        let tp = header(h, "traceparent");
        let parts: Vec<_> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[1], "12345678901234567890123456789012");
        assert_ne!(
            parts[2], "1234567890123456",
            "the service must use its own span id"
        );
        assert_eq!(parts[3], "01");
        assert_eq!(header(h, "tracestate"), "foo=1,bar=2");
        parents.push(parts[2].to_string());
    }
    assert_ne!(parents[0], parents[1], "one client span per callback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_traceparent_restarts_the_trace() {
    let (service, harness, seen) = start().await;
    let status = post_test(
        service,
        harness,
        &[(
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-.y",
        )],
    )
    .await;
    assert_eq!(status, 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for h in &seen {
        let tp = header(h, "traceparent");
        assert!(tp.starts_with("00-"), "{tp}");
        assert!(!tp.contains("12345678901234567890123456789012"), "{tp}");
    }
}
