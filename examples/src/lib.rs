//! Shared code for the runnable examples in `examples/src/bin/`:
//!
//! - `demo`: gateway (axum) → orders (axum) → payments (tonic gRPC) and
//!   inventory (axum), all in one process on separate loopback ports, each
//!   with its own tracer provider exporting OTLP, plus a bounded traffic
//!   generator.
//! - `w3c-service`: the service-under-test of the W3C Trace Context test suite.

pub mod faults;
pub mod payments;
pub mod services;
pub mod telemetry;
pub mod traffic;
pub mod w3c;

use bytes::Bytes;
use ferrotrace::integrations::http::{ClientTraceService, HttpClientLayer};
use ferrotrace::trace::Tracer;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A hyper-util HTTP client wrapped in ferrotrace's client layer.
pub type TracedHttpClient = ClientTraceService<Client<HttpConnector, Full<Bytes>>>;

/// A traced HTTP/1.1 client whose spans are recorded with `tracer`.
pub fn traced_http_client(tracer: Tracer) -> TracedHttpClient {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tower::ServiceBuilder::new()
        .layer(HttpClientLayer::new(tracer))
        .service(client)
}
