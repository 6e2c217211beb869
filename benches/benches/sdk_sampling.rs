//! Span creation cost by sampler: the Jaeger `RemoteSampler` (strategy
//! polled from a loopback HTTP server started here) beside the static
//! consistent probability sampler at the same probability, and the legacy
//! ratio rule. Root span start + end through a simple processor whose
//! exporter discards.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, via
//! `iter_custom`): the machine is shared, and wall time would mostly measure
//! waiting for a core.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
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

/// Serves one strategy to every request: operations `op` at 1% and `keep` at 100%.
fn strategy_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let body = r#"{"operationSampling":{"defaultSamplingProbability":0.01,
            "perOperationStrategies":[
              {"operation":"op","probabilisticSampling":{"samplingRate":0.01}},
              {"operation":"keep","probabilisticSampling":{"samplingRate":1}}]}}"#;
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn provider(sampler: Sampler) -> TracerProvider {
    TracerProvider::builder()
        .with_simple_exporter(Discard)
        .with_sampler(sampler)
        .with_unended_span_age(None)
        .build()
}

fn bench(c: &mut Criterion) {
    let remote = RemoteSampler::builder("bench")
        .with_endpoint(strategy_server())
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
    g.finish();

    // The sampler alone (no span): where the difference above comes from.
    use ferrotrace::trace::ShouldSample;
    let mut g = c.benchmark_group("sampler_decide");
    let ids: Vec<_> = (0..1024).map(|_| ferrotrace::ids::new_trace_id()).collect();
    for (id, sampler) in [
        (
            "p0.01/consistent_static",
            Sampler::consistent_probability(0.01),
        ),
        ("p0.01/remote", Sampler::JaegerRemote(remote.clone())),
    ] {
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for i in 0..iters {
                    let r = sampler.should_sample(
                        None,
                        ids[(i & 1023) as usize],
                        "op",
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
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
