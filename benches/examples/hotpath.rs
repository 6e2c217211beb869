//! Runs one hot-path operation N times, for instruction counts under
//! callgrind (deterministic, unlike time on a shared machine):
//!
//! ```sh
//! cargo build --release -p ferrotrace-benches --example hotpath
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='hotpath::run*' target/release/examples/hotpath unsampled 20000
//! callgrind_annotate /tmp/cg.out | head -40
//! ```
//!
//! Only the calling thread's work inside `run*` is counted (`--toggle-collect`);
//! the batch processor's threads are measured by the `overhead` bench.
//! Divide the total by N for instructions per operation.
//!
//! Whole-process instructions per sampled span through the batch processor
//! (calling, batch and exporter threads), for ferrotrace and for
//! `opentelemetry_sdk` configured alike: run without `--toggle-collect` at two
//! N and take (Ir(2N) − Ir(N)) / N, which cancels start-up and shutdown:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/hotpath sampled 40000          # and 20000; sampled_otel
//! ```
//!
//! The `tracing` bridge: `tracing` (ferrotrace's layer, `AlwaysOn`),
//! `tracing_unsampled` (`AlwaysOff`), `tracing_otel` (tracing-opentelemetry
//! over `opentelemetry_sdk`), `registry` (no layer) and `registry_noop_layer`
//! (a layer that does nothing) run the same unit —
//! a span with 2 fields, a child span, one event.
//!
//! Samplers: `sampler_<static|remote>_<p1|p001>` runs `should_sample` alone,
//! `root_<static|remote>_<p1|p001>` a root span through a discarding simple
//! processor (the `sdk_sampling` bench's cases; the remote sampler's strategy
//! comes from a loopback server, so count `(Ir(2N) − Ir(N)) / N` on the whole
//! program to leave its start-up out).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use ferrotrace::export::{ExportResult, SpanData, SpanExporter};
use ferrotrace::propagation::TextMapPropagator;
use ferrotrace::trace::{Sampler, TracerProvider};

struct Discard;
impl SpanExporter for Discard {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        drop(batch);
        Ok(())
    }
    // Leaves the spans to the processor, as the OTLP exporter leaves their
    // attribute lists (see `Counting` in benches/benches/overhead.rs).
    fn export_in_place(&self, _batch: &mut Vec<SpanData>) -> ExportResult {
        Ok(())
    }
}

fn provider(sampler: Sampler) -> TracerProvider {
    let bsp = ferrotrace::export::BatchSpanProcessor::builder(Discard)
        .with_max_queue_size(1 << 16)
        .build();
    TracerProvider::builder()
        .with_span_processor(bsp)
        .with_sampler(sampler)
        .with_service_name("hotpath")
        .build()
}

#[inline(never)]
fn run_spans(t: &ferrotrace::trace::Tracer, n: u64) {
    for _ in 0..n {
        let mut s = t.start("op");
        s.end();
        black_box(&s);
    }
}

#[inline(never)]
fn run_otel_spans(t: &opentelemetry_sdk::trace::SdkTracer, n: u64) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    for _ in 0..n {
        let mut s = t.start("op");
        s.end();
        black_box(&s);
    }
}

#[inline(never)]
fn run_extract(
    p: &ferrotrace::propagation::TraceContextPropagator,
    c: &HashMap<String, String>,
    n: u64,
) {
    for _ in 0..n {
        black_box(p.extract_with_context(&ferrotrace::Context::new(), black_box(c)));
    }
}

#[inline(never)]
fn run_inject(
    p: &ferrotrace::propagation::TraceContextPropagator,
    cx: &ferrotrace::Context,
    n: u64,
) {
    let mut out = HashMap::new();
    for _ in 0..n {
        out.clear();
        p.inject_context(cx, &mut out);
    }
    black_box(out);
}

#[inline(never)]
fn run_baggage(
    p: &ferrotrace::propagation::BaggagePropagator,
    c: &HashMap<String, String>,
    n: u64,
) {
    for _ in 0..n {
        black_box(p.extract_with_context(&ferrotrace::Context::new(), black_box(c)));
    }
}

#[inline(never)]
fn run_tracing(n: u64) {
    for i in 0..n {
        let span = tracing::info_span!("request", user.id = i, http.route = "/api/orders");
        let _e = span.enter();
        let child = tracing::info_span!("db.query");
        let _c = child.enter();
        tracing::info!("cache miss");
    }
}

#[inline(never)]
fn run_http(rt: &tokio::runtime::Runtime, router: &axum::Router, tp: Option<&'static str>, n: u64) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    rt.block_on(async {
        for _ in 0..n {
            let mut req = http::Request::builder()
                .uri("/users/42")
                .header("host", "api.example.com:8080")
                .header("user-agent", "bench/1.0");
            if let Some(tp) = tp {
                req = req.header("traceparent", tp);
            }
            let req = req.body(axum::body::Body::empty()).expect("request");
            let resp = router.clone().oneshot(req).await.expect("infallible");
            black_box(resp.into_body().collect().await.expect("body"));
        }
    });
}

#[inline(never)]
fn run_client<S>(rt: &tokio::runtime::Runtime, svc: &S, n: u64)
where
    S: tower::Service<http::Request<String>> + Clone,
    S::Response: std::fmt::Debug,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    rt.block_on(async {
        for _ in 0..n {
            let req = http::Request::get("http://api.example.com:8080/users/42?x=1")
                .header("user-agent", "bench/1.0")
                .body(String::new())
                .expect("request");
            black_box(svc.clone().oneshot(req).await.expect("ok"));
        }
    });
}

/// The sampler of a `sampler_*` / `root_*` mode: `static` (consistent
/// probability) or `remote` (the Jaeger remote sampler, strategy fetched
/// once from `ferrotrace_benches::strategy_server`), at `p1` (span `keep`, probability 1) or
/// `p001` (span `op`, 1%).
fn sampler_for(kind: &str, p: &str) -> (Sampler, &'static str) {
    let (name, prob) = match p {
        "p1" => ("keep", 1.0),
        "p001" => ("op", 0.01),
        other => panic!("unknown probability {other}"),
    };
    let sampler = match kind {
        "static" => Sampler::consistent_probability(prob),
        "remote" => Sampler::JaegerRemote(ferrotrace_benches::remote_sampler("hotpath")),
        other => panic!("unknown sampler {other}"),
    };
    (sampler, name)
}

#[inline(never)]
fn run_sampler(s: &Sampler, name: &str, ids: &[ferrotrace::ids::TraceId], n: u64) {
    use ferrotrace::trace::ShouldSample;
    for i in 0..n {
        let r = s.should_sample(
            None,
            ids[(i & 1023) as usize],
            name,
            ferrotrace::trace::SpanKind::Internal,
            &[],
            &[],
        );
        black_box(r);
    }
}

#[inline(never)]
fn run_root_spans(t: &ferrotrace::trace::Tracer, name: &'static str, n: u64) {
    for _ in 0..n {
        let span = t.span_builder(name).as_root().start();
        black_box(&span);
    }
}

/// `opentelemetry_sdk` with the batch processor configured like
/// [`provider`]'s (queue 65,536) and an exporter that discards.
fn otel_provider() -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
    #[derive(Debug)]
    struct OtDiscard;
    impl opentelemetry_sdk::trace::SpanExporter for OtDiscard {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            drop(batch);
            Ok(())
        }
    }
    let bsp = BatchSpanProcessor::builder(OtDiscard)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(1 << 16)
                .build(),
        )
        .build();
    opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(bsp)
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("hotpath")
                .build(),
        )
        .build()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "sampled".into());
    let n: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    match mode.as_str() {
        "sampled" => {
            let p = provider(Sampler::AlwaysOn);
            run_spans(&p.tracer("hotpath"), n);
            p.shutdown(Duration::from_secs(10)).expect("shutdown");
            // For CPU-time runs with N above the queue's capacity: spans
            // dropped on a full queue cost less and would flatter the figure.
            if std::env::var_os("HOTPATH_STATS").is_some() {
                let s = ferrotrace::export::ExportStats::global().snapshot();
                eprintln!("{s:?}");
            }
        }
        "sampled_otel" => {
            use opentelemetry::trace::TracerProvider as _;
            let p = otel_provider();
            let t = p.tracer("hotpath");
            run_otel_spans(&t, n);
            p.shutdown().expect("shutdown");
        }
        "unsampled" => {
            let p = provider(Sampler::AlwaysOff);
            run_spans(&p.tracer("hotpath"), n);
        }
        "extract" | "inject" => {
            let mut c = HashMap::new();
            c.insert(
                "traceparent".to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            );
            let prop = ferrotrace::propagation::TraceContextPropagator::new();
            if mode == "extract" {
                run_extract(&prop, &c, n);
            } else {
                let cx = prop.extract_with_context(&ferrotrace::Context::new(), &c);
                run_inject(&prop, &cx, n);
            }
        }
        "baggage" => {
            let mut c = HashMap::new();
            c.insert(
                "baggage".to_string(),
                "user.id=42,tenant=acme,region=eu-west-1,feature.flag=checkout%20v2,session=7f3a9c21"
                    .to_string(),
            );
            run_baggage(&ferrotrace::propagation::BaggagePropagator::new(), &c, n);
        }
        "tracing" => {
            use tracing_subscriber::layer::SubscriberExt;
            let p = provider(Sampler::AlwaysOn);
            let layer =
                ferrotrace::integrations::tracing::FerrotraceLayer::new(p.tracer("hotpath"));
            let sub = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(sub, || run_tracing(n));
            p.shutdown(Duration::from_secs(10)).expect("shutdown");
        }
        "tracing_unsampled" => {
            use tracing_subscriber::layer::SubscriberExt;
            let p = provider(Sampler::AlwaysOff);
            let layer =
                ferrotrace::integrations::tracing::FerrotraceLayer::new(p.tracer("hotpath"));
            let sub = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(sub, || run_tracing(n));
        }
        "tracing_otel" => {
            // tracing-opentelemetry over opentelemetry_sdk's batch processor,
            // configured like the `overhead` bench's `tracing` group.
            use opentelemetry::trace::TracerProvider as _;
            use tracing_subscriber::layer::SubscriberExt;
            let p = otel_provider();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(p.tracer("hotpath"))
                .with_location(true)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false);
            let sub = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(sub, || run_tracing(n));
            p.shutdown().expect("shutdown");
        }
        "registry" => {
            let sub = tracing_subscriber::registry();
            tracing::subscriber::with_default(sub, || run_tracing(n));
        }
        "registry_noop_layer" => {
            // A registry alone never frees a closed span's slot
            // (tokio-rs/tracing#900): any layer on it, even one that does
            // nothing, makes it clear the slot on close.
            use tracing_subscriber::layer::SubscriberExt;
            let sub =
                tracing_subscriber::registry().with(tracing_subscriber::layer::Identity::new());
            tracing::subscriber::with_default(sub, || run_tracing(n));
        }
        // `http_root_<static|remote>`: requests with no `traceparent`, so
        // every one starts a trace, under `ParentBased` of the static 1%
        // sampler or of the remote sampler (its default, 1%, applies to
        // `GET /users/{id}`).
        "http_unsampled" | "http_sampled" | "http_noop" | "http_root_static"
        | "http_root_remote" => {
            let flags = if mode == "http_sampled" { "01" } else { "00" };
            let tp: Option<&'static str> = (!mode.starts_with("http_root")).then(|| {
                &*Box::leak(
                    format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}")
                        .into_boxed_str(),
                )
            });
            let p = provider(match mode.as_str() {
                "http_root_static" => Sampler::parent_based(Sampler::consistent_probability(0.01)),
                "http_root_remote" => Sampler::parent_based(Sampler::JaegerRemote(
                    ferrotrace_benches::remote_sampler("hotpath"),
                )),
                _ => Sampler::default(),
            });
            let router = axum::Router::new().route(
                "/users/{id}",
                axum::routing::get(|| async { "hello, world" }),
            );
            let router = if mode == "http_noop" {
                router.layer(tower::layer::util::Identity::new())
            } else {
                router.layer(ferrotrace::integrations::http::HttpServerLayer::new(
                    p.tracer("hotpath"),
                ))
            };
            // As `axum::serve` runs it (`into_make_service` calls
            // `with_state`): handlers and layers made into routes once, not
            // per request (see `served` in benches/benches/overhead.rs).
            let router = router.with_state(());
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            run_http(&rt, &router, tp, n);
            p.shutdown(Duration::from_secs(10)).expect("shutdown");
        }
        // The HTTP client layer into a service that answers at once, inside
        // a sampled or an unsampled parent (the `overhead` bench's
        // `http_client` group); `http_client_none` without the layer.
        "http_client_sampled" | "http_client_unsampled" | "http_client_none" => {
            use tower::Layer;
            let flags = if mode == "http_client_unsampled" {
                ferrotrace::TraceFlags::NOT_SAMPLED
            } else {
                ferrotrace::TraceFlags::SAMPLED
            };
            let parent = ferrotrace_benches::remote_parent(flags);
            let p = provider(Sampler::default());
            let answer = |_req: http::Request<String>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                    String::new(),
                )))
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let _g = parent.attach();
            if mode == "http_client_none" {
                run_client(&rt, &tower::service_fn(answer), n);
            } else {
                let svc = ferrotrace::integrations::http::HttpClientLayer::new(p.tracer("hotpath"))
                    .layer(tower::service_fn(answer));
                run_client(&rt, &svc, n);
            }
            p.shutdown(Duration::from_secs(10)).expect("shutdown");
        }
        // `sampler_<static|remote>_<p1|p001>`: `should_sample` alone, as
        // the `sampler_decide` group of the sdk_sampling bench;
        // `root_<static|remote>_<p1|p001>`: a root span started and ended
        // through a simple processor whose exporter discards, as its
        // `sampling_root_span` group.
        m if m.starts_with("sampler_") || m.starts_with("root_") => {
            let mut parts = m.splitn(3, '_');
            let (what, kind, p) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let (sampler, name) = sampler_for(kind, p);
            if what == "sampler" {
                let ids: Vec<_> = (0..1024).map(|_| ferrotrace::ids::new_trace_id()).collect();
                run_sampler(&sampler, name, &ids, n);
            } else {
                let p = TracerProvider::builder()
                    .with_simple_exporter(Discard)
                    .with_sampler(sampler)
                    .with_unended_span_age(None)
                    .build();
                run_root_spans(&p.tracer("hotpath"), name, n);
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
