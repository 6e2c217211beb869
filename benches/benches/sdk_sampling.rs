//! Span creation cost by sampler: the Jaeger `RemoteSampler` (strategy
//! polled from a loopback HTTP server started here) beside the static
//! consistent probability sampler at the same probability, the legacy
//! ratio rule, and opentelemetry_sdk 0.33's samplers in the same run — its
//! `TraceIdRatioBased` and its Jaeger remote sampler (`jaeger_remote_sampler`
//! feature) polling the same server. Root span start + end through a simple
//! processor whose exporter discards.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, via
//! `iter_custom`): the machine is shared, and wall time would mostly measure
//! waiting for a core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ferrotrace::export::{ExportResult, SpanData, SpanExporter};
use ferrotrace::trace::remote::RemoteSampler;
use ferrotrace::trace::{Sampler, TracerProvider};

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Discard;
impl SpanExporter for Discard {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        black_box(batch);
        Ok(())
    }
}

fn provider(sampler: Sampler) -> TracerProvider {
    TracerProvider::builder()
        .with_simple_exporter(Discard)
        .with_sampler(sampler)
        .with_unended_span_age(None)
        .build()
}

/// opentelemetry_sdk's side: a provider, and an HTTP client for its Jaeger
/// remote sampler (a blocking request on a runtime worker: it runs once a
/// second, off the measured thread).
mod ot {
    use std::io::{Read, Write};

    pub use opentelemetry::trace::{Span, Tracer, TracerProvider};
    pub use opentelemetry_sdk::error::OTelSdkResult;
    pub use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};

    #[derive(Debug)]
    pub struct Discard;
    impl SpanExporter for Discard {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            drop(batch);
            Ok(())
        }
    }

    pub fn provider(sampler: Sampler) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_simple_exporter(Discard)
            .with_sampler(sampler)
            .build()
    }

    #[derive(Debug)]
    pub struct Client;

    #[async_trait::async_trait]
    impl opentelemetry_http::HttpClient for Client {
        async fn send_bytes(
            &self,
            request: http::Request<bytes::Bytes>,
        ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
            let uri = request.uri();
            let authority = uri.authority().ok_or("no authority")?.as_str().to_string();
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let mut conn = std::net::TcpStream::connect(&authority)?;
            write!(
                conn,
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
            )?;
            let mut raw = Vec::new();
            conn.read_to_end(&mut raw)?;
            let text = String::from_utf8_lossy(&raw);
            let (_, body) = text.split_once("\r\n\r\n").ok_or("no body")?;
            Ok(http::Response::builder()
                .status(200)
                .body(bytes::Bytes::from(body.to_string()))?)
        }
    }
}

fn bench(c: &mut Criterion) {
    let server = ferrotrace_benches::strategy_server();
    let remote = RemoteSampler::builder("bench")
        .with_endpoint(server.clone())
        .with_polling_interval(Duration::from_secs(3600))
        .with_initial_sampler(Sampler::AlwaysOff)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while remote.stats().fetches == 0 {
        assert!(
            Instant::now() < deadline,
            "no strategy: {:?}",
            remote.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // opentelemetry_sdk's Jaeger remote sampler: its poller runs on a Tokio
    // runtime, first after one interval.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ot_remote = {
        let _guard = rt.enter();
        ot::Sampler::jaeger_remote(
            opentelemetry_sdk::runtime::Tokio,
            ot::Client,
            ot::Sampler::AlwaysOff,
            "bench",
        )
        .with_endpoint(format!("{server}/api/sampling"))
        .with_update_interval(Duration::from_secs(1))
        .build()
        .unwrap()
    };
    {
        use opentelemetry::trace::{SpanKind, TraceId};
        use opentelemetry_sdk::trace::SamplingDecision;
        use opentelemetry_sdk::trace::ShouldSample;
        let deadline = Instant::now() + Duration::from_secs(20);
        while ot_remote
            .should_sample(
                None,
                TraceId::from(7u128),
                "keep",
                &SpanKind::Internal,
                &[],
                &[],
            )
            .decision
            != SamplingDecision::RecordAndSample
        {
            assert!(Instant::now() < deadline, "opentelemetry_sdk: no strategy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let cases: [(&str, &'static str, Sampler); 5] = [
        (
            "p0.01/consistent_static",
            "op",
            Sampler::consistent_probability(0.01),
        ),
        ("p0.01/remote", "op", Sampler::JaegerRemote(remote.clone())),
        (
            "p0.01/legacy_traceidratio",
            "op",
            Sampler::TraceIdRatioBased(0.01),
        ),
        (
            "p1/consistent_static",
            "keep",
            Sampler::consistent_probability(1.0),
        ),
        ("p1/remote", "keep", Sampler::JaegerRemote(remote.clone())),
    ];
    let mut g = c.benchmark_group("sampling_root_span");
    for (id, name, sampler) in cases {
        let p = provider(sampler);
        let tracer = p.tracer("bench");
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for _ in 0..iters {
                    let span = tracer.span_builder(name).as_root().start();
                    black_box(&span);
                }
                Duration::from_nanos(thread_cpu_ns() - t0)
            })
        });
    }
    let ot_cases: [(&str, &'static str, ot::Sampler); 4] = [
        (
            "p0.01/opentelemetry_sdk_traceidratio",
            "op",
            ot::Sampler::TraceIdRatioBased(0.01),
        ),
        (
            "p0.01/opentelemetry_sdk_jaeger_remote",
            "op",
            ot_remote.clone(),
        ),
        (
            "p1/opentelemetry_sdk_traceidratio",
            "keep",
            ot::Sampler::TraceIdRatioBased(1.0),
        ),
        (
            "p1/opentelemetry_sdk_jaeger_remote",
            "keep",
            ot_remote.clone(),
        ),
    ];
    for (id, name, sampler) in ot_cases {
        use ot::{Span, Tracer, TracerProvider};
        let p = ot::provider(sampler);
        let tracer = p.tracer("bench");
        let root = opentelemetry::Context::new();
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for _ in 0..iters {
                    let mut span = tracer.start_with_context(name, &root);
                    black_box(&span);
                    span.end();
                }
                Duration::from_nanos(thread_cpu_ns() - t0)
            })
        });
    }
    g.finish();

    // The sampler alone (no span): where the difference above comes from.
    use ferrotrace::trace::ShouldSample;
    let mut g = c.benchmark_group("sampler_decide");
    let ids: Vec<_> = (0..1024).map(|_| ferrotrace::ids::new_trace_id()).collect();
    for (id, name, sampler) in [
        (
            "p0.01/consistent_static",
            "op",
            Sampler::consistent_probability(0.01),
        ),
        ("p0.01/remote", "op", Sampler::JaegerRemote(remote.clone())),
        (
            "p1/consistent_static",
            "keep",
            Sampler::consistent_probability(1.0),
        ),
        ("p1/remote", "keep", Sampler::JaegerRemote(remote.clone())),
    ] {
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for i in 0..iters {
                    let r = sampler.should_sample(
                        None,
                        ids[(i & 1023) as usize],
                        name,
                        ferrotrace::trace::SpanKind::Internal,
                        &[],
                        &[],
                    );
                    black_box(r);
                }
                Duration::from_nanos(thread_cpu_ns() - t0)
            })
        });
    }
    let ot_ids: Vec<opentelemetry::trace::TraceId> = ids
        .iter()
        .map(|t| opentelemetry::trace::TraceId::from_bytes(t.to_bytes()))
        .collect();
    for (id, name, sampler) in [
        (
            "p0.01/opentelemetry_sdk_traceidratio",
            "op",
            ot::Sampler::TraceIdRatioBased(0.01),
        ),
        (
            "p0.01/opentelemetry_sdk_jaeger_remote",
            "op",
            ot_remote.clone(),
        ),
        (
            "p1/opentelemetry_sdk_traceidratio",
            "keep",
            ot::Sampler::TraceIdRatioBased(1.0),
        ),
        (
            "p1/opentelemetry_sdk_jaeger_remote",
            "keep",
            ot_remote.clone(),
        ),
    ] {
        use opentelemetry_sdk::trace::ShouldSample;
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for i in 0..iters {
                    let r = sampler.should_sample(
                        None,
                        ot_ids[(i & 1023) as usize],
                        name,
                        &opentelemetry::trace::SpanKind::Internal,
                        &[],
                        &[],
                    );
                    black_box(r);
                }
                Duration::from_nanos(thread_cpu_ns() - t0)
            })
        });
    }
    g.finish();
    drop(rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
