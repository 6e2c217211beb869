//! An axum hello-world server for the HTTP overhead load test
//! (`scripts/http_overhead.sh`): `GET /users/{id}` answers `hello, world`,
//! traced by the layer the first argument names:
//!
//! - `none`: no layer; `noop`: a layer that does nothing (axum's cost of any layer),
//! - `ferrotrace`: ferrotrace's `HttpServerLayer`, parent-based sampler,
//! - `otel`: `tracing-opentelemetry` + `axum-tracing-opentelemetry`'s
//!   `OtelAxumLayer` on `opentelemetry_sdk`, parent-based sampler.
//!
//! Both SDKs export through their batch processor (default settings) into an
//! exporter that discards. Whether a request is sampled is decided by the
//! `traceparent` the load generator sends (flags `01` or `00`).
//!
//! ```sh
//! hello_server ferrotrace 127.0.0.1:18080
//! ```
//! Runs on one thread (a current-thread runtime) until killed.

use axum::routing::get;
use axum::Router;

struct Discard;
impl ferrotrace::export::SpanExporter for Discard {
    fn export(
        &self,
        _batch: Vec<ferrotrace::export::SpanData>,
    ) -> ferrotrace::export::ExportResult {
        Ok(())
    }
}

#[derive(Debug)]
struct OtelDiscard;
impl opentelemetry_sdk::trace::SpanExporter for OtelDiscard {
    async fn export(
        &self,
        _batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let app = Router::new().route("/users/{id}", get(|| async { "hello, world" }));
    // Kept alive for the whole run (dropping a provider shuts it down).
    let mut _ft_provider = None;
    let mut _ot_provider = None;
    let mut _dispatch_guard = None;
    let app = match mode.as_str() {
        "none" => app,
        "noop" => app.layer(tower::layer::util::Identity::new()),
        "ferrotrace" => {
            let provider = ferrotrace::trace::TracerProvider::builder()
                .with_span_processor(
                    ferrotrace::export::BatchSpanProcessor::builder(Discard).build(),
                )
                .with_service_name("hello")
                .build();
            let layer =
                ferrotrace::integrations::http::HttpServerLayer::new(provider.tracer("hello"));
            _ft_provider = Some(provider);
            app.layer(layer)
        }
        "otel" => {
            use opentelemetry::trace::TracerProvider as _;
            use tracing_subscriber::layer::SubscriberExt;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(OtelDiscard)
                .build();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("hello"))
                .with_location(true)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false);
            let subscriber = tracing_subscriber::registry().with(layer);
            _dispatch_guard = Some(tracing::subscriber::set_default(subscriber));
            _ot_provider = Some(provider);
            app.layer(axum_tracing_opentelemetry::middleware::OtelAxumLayer::default())
        }
        other => panic!("unknown mode {other:?}: none, noop, ferrotrace or otel"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}
