//! The demo's telemetry set-up against a real OTLP/HTTP receiver on loopback:
//! a collector given as a base address receives the spans on `/v1/traces`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use ferrotrace::export::otlp::Protocol;
use ferrotrace_examples::telemetry::{Export, Telemetry};

type Seen = Arc<Mutex<Vec<(String, usize)>>>;

async fn record(State(seen): State<Seen>, uri: Uri, body: Bytes) -> StatusCode {
    if let Ok(mut s) = seen.lock() {
        s.push((uri.path().to_string(), body.len()));
    }
    // An empty body is a valid, empty `ExportTraceServiceResponse`.
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_to_a_base_address_posts_to_v1_traces() {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    for protocol in [Protocol::HttpProtobuf, Protocol::HttpJson] {
        seen.lock().unwrap().clear();
        let telemetry = Telemetry::new(
            "orders",
            &Export::Otlp {
                endpoint: Some(format!("http://{addr}")),
                protocol,
            },
        )
        .unwrap();
        let tracer = telemetry.provider.tracer("test");
        tracer.start("checkout").end();
        let stats = tokio::task::spawn_blocking(move || {
            telemetry
                .provider
                .shutdown(Duration::from_secs(10))
                .unwrap();
            telemetry.stats.snapshot()
        })
        .await
        .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{protocol:?}: {seen:?}");
        assert_eq!(seen[0].0, "/v1/traces", "{protocol:?}");
        assert!(seen[0].1 > 0, "{protocol:?}: empty request body");
        assert_eq!(stats.exported, 1, "{protocol:?}: {stats}");
    }
}
