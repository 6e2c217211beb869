//! Microbenchmark of the self-metrics' hot-path operations and of rendering
//! `/metrics`, written against the API that both the hand-written metrics
//! (before issue 12) and the `prometheus-client` registry (after) expose, so
//! the same file builds at either commit and the two can be compared:
//!
//! - `counter`: one `fetch_add` on a plain counter reached through the
//!   `Arc<Metrics>` every component holds (after issue 12 that goes through
//!   `Deref` to the shared `Core`: one more pointer load);
//! - `source_counter`: one per-source counter (`metrics.source(s).accepted`);
//! - `histogram`: one `ack_latency.observe(d)` over a spread of latencies;
//! - `counter_vec`: one labelled increment (`dropped.add("sampled_out", n)`,
//!   a mutex and a map lookup: once per batch on the hot path);
//! - `render`: one full `/metrics` scrape with every family populated.
//!
//! Run: `cargo run --release -p ferrotrace-collector --example metrics_cost`
//! (prints ns per operation, the median of 7 rounds). For instruction counts,
//! which do not move with the machine's load:
//! `valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/metrics_cost --callgrind`
//! then `callgrind_annotate --inclusive=yes cg.out | grep metrics_cost::run_` and
//! divide each `run_*` function's inclusive count by the iterations printed.

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrotrace_collector::metrics::{Metrics, Source};

#[inline(never)]
fn run_counter(m: &Arc<Metrics>, n: u64) {
    for _ in 0..n {
        // black_box: the pointer is reloaded every time, as at a call site
        // that increments once (nothing to hoist out of a loop there).
        black_box(m).queue_spans.fetch_add(1, Relaxed);
    }
}

#[inline(never)]
fn run_source_counter(m: &Arc<Metrics>, n: u64) {
    for _ in 0..n {
        black_box(m)
            .source(black_box(Source::OtlpGrpc))
            .accepted
            .fetch_add(50, Relaxed);
    }
}

#[inline(never)]
fn run_histogram(m: &Arc<Metrics>, lat: &[Duration], n: u64) {
    for i in 0..n as usize {
        black_box(m).ack_latency.observe(lat[i % lat.len()]);
    }
}

#[inline(never)]
fn run_counter_vec(m: &Arc<Metrics>, n: u64) {
    for _ in 0..n {
        black_box(m).dropped.add(black_box("sampled_out"), 3);
    }
}

#[inline(never)]
fn run_render(m: &Arc<Metrics>, n: u64) -> usize {
    let mut bytes = 0;
    for _ in 0..n {
        bytes = black_box(m).render().len();
    }
    bytes
}

/// Latencies from 100 µs to ~2 s, log-spaced: every bucket gets some.
fn latencies() -> Vec<Duration> {
    (0..64)
        .map(|i| Duration::from_nanos((100_000.0 * 1.17f64.powi(i)) as u64))
        .collect()
}

/// A registry as a running collector has it: every source, a few labels in
/// each labelled family, histograms with observations.
fn populated() -> Arc<Metrics> {
    let m = Arc::new(Metrics::default());
    for (i, s) in [Source::OtlpGrpc, Source::OtlpHttpProto, Source::ZipkinJson]
        .into_iter()
        .enumerate()
    {
        let c = m.source(s);
        c.received.fetch_add(1_000_000 + i as u64, Relaxed);
        c.accepted.fetch_add(999_000, Relaxed);
        c.rejected.fetch_add(12, Relaxed);
    }
    for r in ["invalid", "sampled_out", "tail_sampled_out"] {
        m.dropped.add(r, 17);
    }
    for r in ["queue_full", "inflight_full", "memory_limit"] {
        m.requests_failed.add(r, 3);
    }
    for d in ["head:keep:ratio", "head:drop:ratio", "tail:keep:error"] {
        m.sampling_decisions.add(d, 1234);
    }
    m.sink_errors.add("retryable", 1);
    m.net.opened("receiver");
    m.net.closed("query", "idle");
    for d in latencies() {
        m.ack_latency.observe(d);
        m.sink_write_latency.observe(d);
    }
    m.queue_spans.store(4096, Relaxed);
    m.sink_spans_written.store(998_000, Relaxed);
    m
}

fn median_ns(mut f: impl FnMut() -> Duration, n: u64) -> f64 {
    let mut v: Vec<f64> = (0..7).map(|_| f().as_nanos() as f64 / n as f64).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[3]
}

fn main() {
    // Under callgrind one round of fewer iterations is enough: the count is exact.
    let callgrind = std::env::args().any(|a| a == "--callgrind");
    let (n_inc, n_render) = if callgrind {
        (1_000_000, 1_000)
    } else {
        (20_000_000, 20_000)
    };
    let m = populated();
    let lat = latencies();
    if callgrind {
        run_counter(&m, n_inc);
        run_source_counter(&m, n_inc);
        run_histogram(&m, &lat, n_inc);
        run_counter_vec(&m, n_inc);
        let bytes = run_render(&m, n_render);
        println!(
            "iterations: counter/source_counter/histogram/counter_vec {n_inc}, render {n_render} ({bytes} bytes each)"
        );
        return;
    }
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let counter = median_ns(|| time(&|| run_counter(&m, n_inc)), n_inc);
    let source = median_ns(|| time(&|| run_source_counter(&m, n_inc)), n_inc);
    let hist = median_ns(|| time(&|| run_histogram(&m, &lat, n_inc)), n_inc);
    let vec = median_ns(|| time(&|| run_counter_vec(&m, n_inc / 10)), n_inc / 10);
    let render = median_ns(
        || {
            time(&|| {
                run_render(&m, n_render / 10);
            })
        },
        n_render / 10,
    );
    println!("counter        {counter:8.2} ns/op");
    println!("source_counter {source:8.2} ns/op");
    println!("histogram      {hist:8.2} ns/op");
    println!("counter_vec    {vec:8.2} ns/op");
    println!(
        "render         {:8.1} µs/scrape ({} bytes)",
        render / 1000.0,
        m.render().len()
    );
}
