//! Interleaved overhead benchmarks: ferrotrace beside `opentelemetry_sdk` 0.33
//! (and `tracing-opentelemetry`, fastrace, a bare `tracing` registry) in ONE
//! process, variants alternated round-robin, so a busy machine slows every
//! variant of a round alike and the per-round ratios stay meaningful.
//!
//! ```sh
//! cargo bench -p ferrotrace-benches --bench overhead                  # every group
//! cargo bench -p ferrotrace-benches --bench overhead -- bsp tracing   # some groups
//! # groups: bsp bsp_attrs unsampled sampling propagation tracing http http_client
//! cargo bench -p ferrotrace-benches --bench overhead -- --rounds 41
//! ```
//!
//! For every variant and round it measures, around a fixed number of
//! operations:
//! - **thread**: the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! - **process**: the whole process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`,
//!   every thread: the batch processor's and exporter's threads included),
//!   read after a flush that waits until every span of the round has been
//!   exported, so background work is counted in the round that caused it,
//! - **allocs**: heap allocations made by the calling thread.
//!
//! Each group prints, per variant, the median over rounds with the 10th–90th
//! percentile range, then the paired ratios (variant / reference, computed in
//! each round and summarised the same way). Both SDKs are configured alike:
//! batch span processor with default settings (batch 512, delay 5 s, export
//! timeout 30 s) except the queue, 65,536 for both so a round never drops a
//! span (checked: every round's spans must reach the exporter), an exporter
//! that counts and discards, `AlwaysOn` (or the named) sampler, and for
//! ferrotrace its default un-ended-span watchdog.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Allocation counting (calling thread only; a thread-local counter, so the
// cost is the same small constant for every variant).

struct CountingAlloc;
thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    ALLOCS.try_with(Cell::get).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; both clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn thread_cpu() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

// ---------------------------------------------------------------------------
// The harness.

/// One way of doing the operation under test.
struct Variant {
    name: &'static str,
    /// Runs the operation `n` times on the calling thread.
    run: Box<dyn FnMut(u64)>,
    /// Waits until the background work of everything run so far is done
    /// (and checks nothing was dropped).
    flush: Box<dyn FnMut()>,
}

impl Variant {
    fn new(name: &'static str, run: impl FnMut(u64) + 'static) -> Self {
        Variant {
            name,
            run: Box::new(run),
            flush: Box::new(|| {}),
        }
    }
    fn with_flush(mut self, flush: impl FnMut() + 'static) -> Self {
        self.flush = Box::new(flush);
        self
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    thread_ns: f64,
    process_ns: f64,
    allocs: f64,
}

struct Group {
    name: &'static str,
    /// Operations per measurement.
    ops: u64,
    variants: Vec<Variant>,
    /// (variant, reference) pairs whose per-round ratio is reported.
    ratios: Vec<(&'static str, &'static str)>,
    /// Differences (variant − baseline) reported per operation, e.g. the
    /// extra CPU of a traced request over an untraced one.
    deltas: Vec<(&'static str, &'static str)>,
}

fn measure(v: &mut Variant, n: u64) -> Sample {
    (v.flush)();
    let a0 = allocs();
    let p0 = process_cpu();
    let t0 = thread_cpu();
    (v.run)(n);
    let t1 = thread_cpu();
    let a1 = allocs();
    (v.flush)();
    let p1 = process_cpu();
    Sample {
        thread_ns: (t1 - t0) as f64 / n as f64,
        process_ns: (p1 - p0) as f64 / n as f64,
        allocs: (a1 - a0) as f64 / n as f64,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn summary(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (
        percentile(&xs, 0.5),
        percentile(&xs, 0.1),
        percentile(&xs, 0.9),
    )
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else if ns >= 1000.0 {
        format!("{:.3} µs", ns / 1000.0)
    } else if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}

fn run_group(g: &mut Group, rounds: usize) {
    // Warm up: thread-locals, pools, caches, lazy statics.
    for v in g.variants.iter_mut() {
        measure(v, (g.ops / 4).max(1));
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); g.variants.len()];
    let k = g.variants.len();
    for r in 0..rounds {
        // Rotate the starting variant so none always runs first.
        for j in 0..k {
            let i = (r + j) % k;
            let s = measure(&mut g.variants[i], g.ops);
            samples[i].push(s);
        }
    }
    let idx = |name: &str| {
        g.variants
            .iter()
            .position(|v| v.name == name)
            .unwrap_or_else(|| panic!("no variant {name}"))
    };
    println!(
        "\n## {} ({} rounds × {} ops; median [p10 – p90])",
        g.name, rounds, g.ops
    );
    println!("| variant | calling thread CPU/op | process CPU/op | allocs/op |");
    println!("|---|---|---|---|");
    for (i, v) in g.variants.iter().enumerate() {
        let t = summary(samples[i].iter().map(|s| s.thread_ns).collect());
        let p = summary(samples[i].iter().map(|s| s.process_ns).collect());
        let a = summary(samples[i].iter().map(|s| s.allocs).collect());
        println!(
            "| {} | {} [{} – {}] | {} [{} – {}] | {:.2} |",
            v.name,
            fmt_ns(t.0),
            fmt_ns(t.1),
            fmt_ns(t.2),
            fmt_ns(p.0),
            fmt_ns(p.1),
            fmt_ns(p.2),
            a.0
        );
    }
    if !g.ratios.is_empty() {
        println!("\n| ratio (paired per round) | calling thread | process |");
        println!("|---|---|---|");
        for (a, b) in &g.ratios {
            let (ia, ib) = (idx(a), idx(b));
            let rt = summary(
                (0..rounds)
                    .map(|r| samples[ia][r].thread_ns / samples[ib][r].thread_ns)
                    .collect(),
            );
            let rp = summary(
                (0..rounds)
                    .map(|r| samples[ia][r].process_ns / samples[ib][r].process_ns)
                    .collect(),
            );
            println!(
                "| {a} / {b} | {:.3} [{:.3} – {:.3}] | {:.3} [{:.3} – {:.3}] |",
                rt.0, rt.1, rt.2, rp.0, rp.1, rp.2
            );
        }
    }
    if !g.deltas.is_empty() {
        println!("\n| extra CPU per op (paired per round) | calling thread | process |");
        println!("|---|---|---|");
        for (a, b) in &g.deltas {
            let (ia, ib) = (idx(a), idx(b));
            let dt = summary(
                (0..rounds)
                    .map(|r| samples[ia][r].thread_ns - samples[ib][r].thread_ns)
                    .collect(),
            );
            let dp = summary(
                (0..rounds)
                    .map(|r| samples[ia][r].process_ns - samples[ib][r].process_ns)
                    .collect(),
            );
            println!(
                "| {a} − {b} | {} [{} – {}] | {} [{} – {}] |",
                fmt_ns(dt.0),
                fmt_ns(dt.1),
                fmt_ns(dt.2),
                fmt_ns(dp.0),
                fmt_ns(dp.1),
                fmt_ns(dp.2)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The two SDKs, configured alike.

/// Queue size for both batch processors (see the module docs).
const QUEUE: usize = 65_536;

mod ft {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    pub use ferrotrace::export::batch::BatchSpanProcessor;
    use ferrotrace::export::stats::ExportStats;
    pub use ferrotrace::export::{ExportResult, SpanData, SpanExporter};
    pub use ferrotrace::trace::{Sampler, TracerProvider};

    /// Discards batches, counting spans.
    #[derive(Clone, Default)]
    pub struct Counting(pub Arc<AtomicU64>);
    impl SpanExporter for Counting {
        fn export(&self, batch: Vec<SpanData>) -> ExportResult {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        // Reads the spans and leaves them to the processor, as the OTLP
        // exporter does with their attribute lists (which go back to the
        // recording threads either way).
        fn export_in_place(&self, batch: &mut Vec<SpanData>) -> ExportResult {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    /// A provider with the default batch processor (queue raised to
    /// [`super::QUEUE`]) and, unless `watchdog` is false, the default
    /// un-ended span watchdog. Returns the provider, the exported-span
    /// counter and the processor's stats.
    pub fn provider(sampler: Sampler, watchdog: bool) -> (TracerProvider, Counting, ExportStats) {
        let exporter = Counting::default();
        let stats = ExportStats::new();
        let bsp = BatchSpanProcessor::builder(exporter.clone())
            .with_max_queue_size(super::QUEUE)
            .with_stats(stats.clone())
            .build();
        let mut b = TracerProvider::builder()
            .with_span_processor(bsp)
            .with_sampler(sampler)
            .with_service_name("bench");
        if !watchdog {
            b = b.with_unended_span_age(None);
        }
        (b.build(), exporter, stats)
    }

    /// Flushes and checks that every span produced so far was exported.
    pub fn flusher(
        provider: TracerProvider,
        counter: Counting,
        stats: ExportStats,
        produced: Arc<AtomicU64>,
    ) -> impl FnMut() {
        move || {
            provider
                .force_flush(Duration::from_secs(60))
                .expect("flush");
            let snap = stats.snapshot();
            assert_eq!(snap.dropped_queue_full, 0, "ferrotrace dropped spans");
            assert_eq!(
                counter.0.load(Ordering::Relaxed),
                produced.load(Ordering::Relaxed),
                "every span exported"
            );
        }
    }
}

mod ot {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    pub use opentelemetry::trace::{Span, TraceContextExt, Tracer, TracerProvider};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData};
    pub use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
    use opentelemetry_sdk::Resource;

    #[derive(Clone, Debug, Default)]
    pub struct Counting(pub Arc<AtomicU64>);
    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    pub fn provider(sampler: Sampler) -> (SdkTracerProvider, Counting) {
        let exporter = Counting::default();
        let bsp = BatchSpanProcessor::builder(exporter.clone())
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(super::QUEUE)
                    .build(),
            )
            .build();
        let p = SdkTracerProvider::builder()
            .with_span_processor(bsp)
            .with_sampler(sampler)
            .with_resource(Resource::builder().with_service_name("bench").build())
            .build();
        (p, exporter)
    }

    pub fn flusher(
        provider: SdkTracerProvider,
        counter: Counting,
        produced: Arc<AtomicU64>,
    ) -> impl FnMut() {
        move || {
            provider.force_flush().expect("flush");
            assert_eq!(
                counter.0.load(Ordering::Relaxed),
                produced.load(Ordering::Relaxed),
                "every span exported (opentelemetry_sdk)"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Groups.

/// A sampled span started and ended through the batch processor.
fn group_bsp() -> Group {
    let mut variants = Vec::new();
    for (name, watchdog) in [("ferrotrace", true), ("ferrotrace_no_watchdog", false)] {
        let (p, c, s) = ft::provider(ft::Sampler::AlwaysOn, watchdog);
        let tracer = p.tracer("bench");
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        variants.push(
            Variant::new(name, move |n| {
                for _ in 0..n {
                    let mut s = tracer.start("op");
                    s.end();
                    black_box(&s);
                }
                pr.fetch_add(n, Ordering::Relaxed);
            })
            .with_flush(ft::flusher(p, c, s, produced)),
        );
    }
    {
        use ot::{Span, Tracer, TracerProvider};
        let (p, c) = ot::provider(ot::Sampler::AlwaysOn);
        let tracer = p.tracer("bench");
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        variants.push(
            Variant::new("opentelemetry_sdk", move |n| {
                for _ in 0..n {
                    let mut s = tracer.start("op");
                    s.end();
                    black_box(&s);
                }
                pr.fetch_add(n, Ordering::Relaxed);
            })
            .with_flush(ot::flusher(p, c, produced)),
        );
    }
    Group {
        name: "sampled span start + end, batch processor",
        ops: 16_384,
        variants,
        ratios: vec![
            ("ferrotrace", "opentelemetry_sdk"),
            ("ferrotrace", "ferrotrace_no_watchdog"),
        ],
        deltas: vec![("ferrotrace", "ferrotrace_no_watchdog")],
    }
}

/// A sampled span with 4 attributes and an event, through the batch processor.
fn group_bsp_attrs() -> Group {
    let mut variants = Vec::new();
    {
        let (p, c, s) = ft::provider(ft::Sampler::AlwaysOn, true);
        let tracer = p.tracer("bench");
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        variants.push(
            Variant::new("ferrotrace", move |n| {
                for _ in 0..n {
                    let mut s = tracer.start("op");
                    s.set_attribute("key1", false);
                    s.set_attribute("key2", "hello");
                    s.set_attribute("key3", 123i64);
                    s.set_attribute("key4", 123.456);
                    s.add_event("cache miss", Vec::new());
                    s.end();
                }
                pr.fetch_add(n, Ordering::Relaxed);
            })
            .with_flush(ft::flusher(p, c, s, produced)),
        );
    }
    {
        use opentelemetry::KeyValue;
        use ot::{Span, Tracer, TracerProvider};
        let (p, c) = ot::provider(ot::Sampler::AlwaysOn);
        let tracer = p.tracer("bench");
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        variants.push(
            Variant::new("opentelemetry_sdk", move |n| {
                for _ in 0..n {
                    let mut s = tracer.start("op");
                    s.set_attribute(KeyValue::new("key1", false));
                    s.set_attribute(KeyValue::new("key2", "hello"));
                    s.set_attribute(KeyValue::new("key3", 123i64));
                    s.set_attribute(KeyValue::new("key4", 123.456));
                    s.add_event("cache miss", Vec::new());
                    s.end();
                }
                pr.fetch_add(n, Ordering::Relaxed);
            })
            .with_flush(ot::flusher(p, c, produced)),
        );
    }
    Group {
        name: "sampled span with 4 attributes and 1 event, batch processor",
        ops: 16_384,
        variants,
        ratios: vec![("ferrotrace", "opentelemetry_sdk")],
        deltas: vec![],
    }
}

/// Unsampled spans: `AlwaysOff`, and `ParentBased` under an unsampled parent.
fn group_unsampled() -> Group {
    let mut variants = Vec::new();
    {
        let (p, _, _) = ft::provider(ft::Sampler::AlwaysOff, true);
        let tracer = p.tracer("bench");
        variants.push(Variant::new("ferrotrace_always_off", move |n| {
            for _ in 0..n {
                let mut s = tracer.start("op");
                s.end();
                black_box(&s);
            }
        }));
    }
    {
        let (p, _, _) = ft::provider(ft::Sampler::AlwaysOff, true);
        let tracer = p.tracer("bench");
        variants.push(Variant::new("ferrotrace_always_off_1_attr", move |n| {
            for _ in 0..n {
                let mut s = tracer.start("op");
                s.set_attribute("key1", false);
                s.end();
                black_box(&s);
            }
        }));
    }
    {
        let (p, _, _) = ft::provider(ft::Sampler::default(), true);
        let tracer = p.tracer("bench");
        let parent = ferrotrace::SpanContext::new(
            ferrotrace::TraceId::from_bytes([7; 16]),
            ferrotrace::SpanId::from_bytes([7; 8]),
            ferrotrace::TraceFlags::NOT_SAMPLED,
            true,
            ferrotrace::TraceState::NONE,
        );
        let cx = ferrotrace::Context::new().with_span_context(parent);
        variants.push(Variant::new("ferrotrace_unsampled_parent", move |n| {
            let _g = cx.clone().attach();
            for _ in 0..n {
                let mut s = tracer.start("op");
                s.end();
                black_box(&s);
            }
        }));
    }
    {
        use ot::{Span, Tracer, TracerProvider};
        let (p, _) = ot::provider(ot::Sampler::AlwaysOff);
        let tracer = p.tracer("bench");
        variants.push(Variant::new("opentelemetry_sdk_always_off", move |n| {
            for _ in 0..n {
                let mut s = tracer.start("op");
                s.end();
                black_box(&s);
            }
        }));
    }
    {
        use ot::{Span, TraceContextExt, Tracer, TracerProvider};
        let (p, _) = ot::provider(ot::Sampler::ParentBased(Box::new(ot::Sampler::AlwaysOn)));
        let tracer = p.tracer("bench");
        let parent = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from(7u128),
            opentelemetry::trace::SpanId::from(7u64),
            opentelemetry::trace::TraceFlags::NOT_SAMPLED,
            true,
            Default::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(parent);
        variants.push(Variant::new(
            "opentelemetry_sdk_unsampled_parent",
            move |n| {
                let _g = cx.clone().attach();
                for _ in 0..n {
                    let mut s = tracer.start("op");
                    s.end();
                    black_box(&s);
                }
            },
        ));
    }
    Group {
        name: "unsampled span start + end",
        ops: 200_000,
        variants,
        ratios: vec![
            ("ferrotrace_always_off", "opentelemetry_sdk_always_off"),
            (
                "ferrotrace_unsampled_parent",
                "opentelemetry_sdk_unsampled_parent",
            ),
        ],
        deltas: vec![],
    }
}

/// Root spans through the Jaeger remote sampler beside the static consistent
/// sampler at the same probability (issue 14: "the remote sampler adds no
/// measurable cost to span creation"): `op` at 1% (99% unsampled) and
/// `keep` at 100%, the strategy of `ferrotrace_benches::strategy_server`.
fn group_sampling() -> Group {
    let mut variants = Vec::new();
    let remote = ferrotrace_benches::remote_sampler("bench");
    for (label, name, p) in [("1pct", "op", 0.01), ("kept", "keep", 1.0)] {
        for (kind, sampler) in [
            ("static", ft::Sampler::consistent_probability(p)),
            ("remote", ft::Sampler::JaegerRemote(remote.clone())),
        ] {
            let (provider, _, _) = ft::provider(sampler, true);
            let tracer = provider.tracer("bench");
            let variant_name: &'static str = match (kind, label) {
                ("static", "1pct") => "static_root_1pct",
                ("remote", "1pct") => "remote_root_1pct",
                ("static", _) => "static_root_kept",
                _ => "remote_root_kept",
            };
            variants.push(
                Variant::new(variant_name, move |n| {
                    for _ in 0..n {
                        let mut s = tracer.span_builder(name).as_root().start();
                        s.end();
                        black_box(&s);
                    }
                })
                // Kept spans: exported before the round's process CPU is read.
                .with_flush(move || {
                    provider
                        .force_flush(Duration::from_secs(60))
                        .expect("flush");
                }),
            );
        }
    }
    Group {
        name: "root span start + end, remote sampler beside the static one",
        // Below the queue's 65,536: a round of kept spans is never dropped.
        ops: 20_000,
        variants,
        ratios: vec![
            ("remote_root_1pct", "static_root_1pct"),
            ("remote_root_kept", "static_root_kept"),
        ],
        deltas: vec![
            ("remote_root_1pct", "static_root_1pct"),
            ("remote_root_kept", "static_root_kept"),
        ],
    }
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const BAGGAGE5: &str =
    "user.id=42,tenant=acme,region=eu-west-1,feature.flag=checkout%20v2,session=7f3a9c21";

fn group_propagation() -> Group {
    use ferrotrace::propagation::TextMapPropagator as _;
    let mut variants = Vec::new();
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), TRACEPARENT.into());
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
    headers.insert("host", http::HeaderValue::from_static("example.com"));
    headers.insert("accept", http::HeaderValue::from_static("*/*"));
    let mut bag: HashMap<String, String> = HashMap::new();
    bag.insert("baggage".into(), BAGGAGE5.into());

    {
        let c = carrier.clone();
        let prop = ferrotrace::propagation::TraceContextPropagator::new();
        let cx = ferrotrace::Context::new();
        variants.push(Variant::new("ft_traceparent_extract", move |n| {
            for _ in 0..n {
                black_box(prop.extract_with_context(&cx, black_box(&c)));
            }
        }));
    }
    {
        let h = headers.clone();
        let prop = ferrotrace::propagation::TraceContextPropagator::new();
        let cx = ferrotrace::Context::new();
        variants.push(Variant::new("ft_traceparent_extract_headermap", move |n| {
            for _ in 0..n {
                black_box(prop.extract_with_context(&cx, black_box(&h)));
            }
        }));
    }
    {
        let prop = ferrotrace::propagation::TraceContextPropagator::new();
        let cx = prop.extract_with_context(&ferrotrace::Context::new(), &carrier);
        let mut out: HashMap<String, String> = HashMap::new();
        variants.push(Variant::new("ft_traceparent_inject", move |n| {
            for _ in 0..n {
                out.clear();
                prop.inject_context(black_box(&cx), &mut out);
            }
            black_box(&out);
        }));
    }
    {
        let prop = ferrotrace::propagation::TraceContextPropagator::new();
        let cx = prop.extract_with_context(&ferrotrace::Context::new(), &carrier);
        let mut out = http::HeaderMap::new();
        variants.push(Variant::new("ft_traceparent_inject_headermap", move |n| {
            for _ in 0..n {
                out.clear();
                prop.inject_context(black_box(&cx), &mut out);
            }
            black_box(&out);
        }));
    }
    {
        let b = bag.clone();
        let prop = ferrotrace::propagation::BaggagePropagator::new();
        let cx = ferrotrace::Context::new();
        variants.push(Variant::new("ft_baggage_extract_5", move |n| {
            for _ in 0..n {
                black_box(prop.extract_with_context(&cx, black_box(&b)));
            }
        }));
    }
    {
        use opentelemetry::propagation::TextMapPropagator as _;
        let c = carrier.clone();
        let prop = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let cx = opentelemetry::Context::new();
        variants.push(Variant::new("ot_traceparent_extract", move |n| {
            for _ in 0..n {
                black_box(prop.extract_with_context(&cx, black_box(&c)));
            }
        }));
    }
    {
        use opentelemetry::propagation::TextMapPropagator as _;
        let prop = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let cx = prop.extract_with_context(&opentelemetry::Context::new(), &carrier);
        let mut out: HashMap<String, String> = HashMap::new();
        variants.push(Variant::new("ot_traceparent_inject", move |n| {
            for _ in 0..n {
                out.clear();
                prop.inject_context(black_box(&cx), &mut out);
            }
            black_box(&out);
        }));
    }
    {
        use opentelemetry::propagation::TextMapPropagator as _;
        let b = bag.clone();
        let prop = opentelemetry_sdk::propagation::BaggagePropagator::new();
        let cx = opentelemetry::Context::new();
        variants.push(Variant::new("ot_baggage_extract_5", move |n| {
            for _ in 0..n {
                black_box(prop.extract_with_context(&cx, black_box(&b)));
            }
        }));
    }
    Group {
        name: "propagation (HashMap<String, String> carrier unless named)",
        ops: 100_000,
        variants,
        ratios: vec![
            ("ft_traceparent_extract", "ot_traceparent_extract"),
            ("ft_traceparent_inject", "ot_traceparent_inject"),
            ("ft_baggage_extract_5", "ot_baggage_extract_5"),
        ],
        deltas: vec![],
    }
}

// ---------------------------------------------------------------------------
// The `tracing` bridge: a request-shaped unit of work.

/// A span with 2 fields, a child span, one event in the child.
#[inline(never)]
fn tracing_unit(i: u64) {
    let span = tracing::info_span!("request", user.id = i, http.route = "/api/orders");
    let _e = span.enter();
    let child = tracing::info_span!("db.query");
    let _c = child.enter();
    tracing::info!("cache miss");
}

fn group_tracing() -> Group {
    use tracing_subscriber::layer::SubscriberExt;
    let mut variants = Vec::new();
    {
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
        variants.push(Variant::new("bare_registry", move |n| {
            tracing::dispatcher::with_default(&dispatch, || {
                for i in 0..n {
                    tracing_unit(i);
                }
            })
        }));
    }
    {
        // A registry alone never frees a closed span's slot
        // (tokio-rs/tracing#900: its slab grows by every span, ~100 bytes
        // each, and the close work is never done); with any layer on it,
        // even one that does nothing, it clears the slot on close, as in
        // every real subscriber. Both baselines are reported.
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry().with(tracing_subscriber::layer::Identity::new()),
        );
        variants.push(Variant::new("registry_noop_layer", move |n| {
            tracing::dispatcher::with_default(&dispatch, || {
                for i in 0..n {
                    tracing_unit(i);
                }
            })
        }));
    }
    {
        let (p, c, s) = ft::provider(ft::Sampler::AlwaysOn, true);
        let layer = ferrotrace::integrations::tracing::FerrotraceLayer::new(p.tracer("bench"));
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        variants.push(
            Variant::new("ferrotrace_layer", move |n| {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..n {
                        tracing_unit(i);
                    }
                });
                pr.fetch_add(2 * n, Ordering::Relaxed);
            })
            .with_flush(ft::flusher(p, c, s, produced)),
        );
    }
    {
        // The same unit when the sampler says no (AlwaysOff): what the
        // bridge costs a service that samples a fraction of its traffic.
        let (p, _, _) = ft::provider(ft::Sampler::AlwaysOff, true);
        let layer = ferrotrace::integrations::tracing::FerrotraceLayer::new(p.tracer("bench"));
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        variants.push(Variant::new("ferrotrace_layer_unsampled", move |n| {
            tracing::dispatcher::with_default(&dispatch, || {
                for i in 0..n {
                    tracing_unit(i);
                }
            });
        }));
    }
    {
        use ot::TracerProvider;
        let (p, c) = ot::provider(ot::Sampler::AlwaysOn);
        // Configured like ferrotrace's layer: code location on, no thread
        // ids, no busy/idle tracking, no target attribute on spans.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(p.tracer("bench"))
            .with_location(true)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false);
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        variants.push(
            Variant::new("tracing_opentelemetry", move |n| {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..n {
                        tracing_unit(i);
                    }
                });
                pr.fetch_add(2 * n, Ordering::Relaxed);
            })
            .with_flush(ot::flusher(p, c, produced)),
        );
    }
    {
        let counter = Arc::new(AtomicU64::new(0));
        fastrace::set_reporter(
            FastraceCounting(counter.clone()),
            fastrace::collector::Config::default().report_interval(Duration::from_millis(10)),
        );
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        variants.push(
            Variant::new("fastrace", move |n| {
                use fastrace::prelude::*;
                for i in 0..n {
                    let root = Span::root("request", SpanContext::random()).with_properties(|| {
                        [
                            ("user.id", std::borrow::Cow::Owned(i.to_string())),
                            ("http.route", std::borrow::Cow::Borrowed("/api/orders")),
                        ]
                    });
                    let _g = root.set_local_parent();
                    let _child = LocalSpan::enter_with_local_parent("db.query");
                    LocalSpan::add_event(Event::new("cache miss"));
                }
                pr.fetch_add(2 * n, Ordering::Relaxed);
            })
            .with_flush(move || {
                // fastrace keeps what its ring is too full to take in an
                // unbounded per-thread queue until the next span is sent, so
                // a round may be reported in the next one; no exact check.
                fastrace::flush();
                let _ = (&counter, &produced);
            }),
        );
    }
    Group {
        name: "`tracing` bridge: span with 2 fields + child span + 1 event",
        ops: 8_192,
        variants,
        ratios: vec![
            ("ferrotrace_layer", "bare_registry"),
            ("ferrotrace_layer", "registry_noop_layer"),
            ("ferrotrace_layer", "tracing_opentelemetry"),
            ("ferrotrace_layer", "fastrace"),
            ("tracing_opentelemetry", "bare_registry"),
            ("ferrotrace_layer_unsampled", "bare_registry"),
            ("ferrotrace_layer_unsampled", "registry_noop_layer"),
            ("registry_noop_layer", "bare_registry"),
        ],
        deltas: vec![],
    }
}

struct FastraceCounting(Arc<AtomicU64>);
impl fastrace::collector::Reporter for FastraceCounting {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        self.0.fetch_add(spans.len() as u64, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The HTTP server layer, in process: `oneshot` through an axum router.

fn request(traceparent: Option<&'static str>) -> http::Request<axum::body::Body> {
    let mut b = http::Request::builder()
        .method("GET")
        .uri("/users/42")
        .header("host", "api.example.com:8080")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*");
    if let Some(tp) = traceparent {
        b = b.header("traceparent", tp);
    }
    b.body(axum::body::Body::empty()).expect("request")
}

const TP_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TP_UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

/// The router as `axum::serve` runs it: `into_make_service` calls
/// `with_state(())`, which turns each handler (and each layer around it) into
/// a route once. An unserved `Router`'s `oneshot` does that per request,
/// boxing the handler and every layer again: a cost servers never pay, and
/// one that grows with the size of a layer (a zero-sized `Identity` boxes
/// for free, a layer holding an `Arc` allocates).
fn served(router: axum::Router) -> axum::Router {
    router.with_state(())
}

fn hello_router() -> axum::Router {
    axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(|| async { "hello, world" }),
    )
}

/// Runs `n` requests through `router` on a current-thread runtime, reading each body.
fn drive(rt: &tokio::runtime::Runtime, router: &axum::Router, tp: Option<&'static str>, n: u64) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    rt.block_on(async {
        for _ in 0..n {
            let resp = router
                .clone()
                .oneshot(request(tp))
                .await
                .expect("infallible");
            let body = resp.into_body().collect().await.expect("body");
            black_box(body);
        }
    });
}

fn group_http() -> Group {
    let mut variants = Vec::new();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    for (name, tp) in [
        ("no_layer", Some(TP_SAMPLED)),
        ("no_layer_unsampled_tp", Some(TP_UNSAMPLED)),
    ] {
        let router = served(hello_router());
        let rt = rt();
        variants.push(Variant::new(name, move |n| drive(&rt, &router, tp, n)));
    }
    {
        // A layer that does nothing: what axum's `Router::layer` costs any
        // middleware (boxing the service, its future and the body).
        let router = served(hello_router().layer(tower::layer::util::Identity::new()));
        let rt = rt();
        variants.push(Variant::new("noop_layer", move |n| {
            drive(&rt, &router, Some(TP_UNSAMPLED), n)
        }));
    }
    for (name, tp) in [
        ("ferrotrace_sampled", Some(TP_SAMPLED)),
        ("ferrotrace_unsampled", Some(TP_UNSAMPLED)),
    ] {
        let (p, c, s) = ft::provider(ft::Sampler::default(), true);
        let router = served(hello_router().layer(
            ferrotrace::integrations::http::HttpServerLayer::new(p.tracer("bench")),
        ));
        let rt = rt();
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        let sampled = name == "ferrotrace_sampled";
        variants.push(
            Variant::new(name, move |n| {
                drive(&rt, &router, tp, n);
                if sampled {
                    pr.fetch_add(n, Ordering::Relaxed);
                }
            })
            .with_flush(ft::flusher(p, c, s, produced)),
        );
    }
    {
        use ot::TracerProvider;
        use tracing_subscriber::layer::SubscriberExt;
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        for (name, tp) in [
            ("tracing_opentelemetry_sampled", Some(TP_SAMPLED)),
            ("tracing_opentelemetry_unsampled", Some(TP_UNSAMPLED)),
        ] {
            let (p, c) = ot::provider(ot::Sampler::ParentBased(Box::new(ot::Sampler::AlwaysOn)));
            let layer = tracing_opentelemetry::layer()
                .with_tracer(p.tracer("bench"))
                .with_location(true)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false);
            let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
            let router = served(
                hello_router()
                    .layer(axum_tracing_opentelemetry::middleware::OtelAxumLayer::default()),
            );
            let rt = rt();
            let produced = Arc::new(AtomicU64::new(0));
            let pr = produced.clone();
            let sampled = name.ends_with("_sampled");
            variants.push(
                Variant::new(name, move |n| {
                    tracing::dispatcher::with_default(&dispatch, || drive(&rt, &router, tp, n));
                    if sampled {
                        pr.fetch_add(n, Ordering::Relaxed);
                    }
                })
                .with_flush(ot::flusher(p, c, produced)),
            );
        }
    }
    Group {
        name: "HTTP server layer: axum `oneshot` GET /users/{id}, body read",
        ops: 4_096,
        variants,
        ratios: vec![],
        deltas: vec![
            ("noop_layer", "no_layer_unsampled_tp"),
            ("ferrotrace_sampled", "noop_layer"),
            ("ferrotrace_unsampled", "noop_layer"),
            ("ferrotrace_sampled", "no_layer"),
            ("ferrotrace_unsampled", "no_layer_unsampled_tp"),
            ("tracing_opentelemetry_sampled", "no_layer"),
            ("tracing_opentelemetry_unsampled", "no_layer_unsampled_tp"),
        ],
    }
}

/// The HTTP client layer in process: a request through
/// `HttpClientLayer` into a service that answers at once, inside a sampled
/// or an unsampled parent context (what a handler's outgoing call costs).
fn group_http_client() -> Group {
    use tower::{Layer, Service, ServiceExt};
    type Answer = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;
    fn answer(_req: http::Request<String>) -> Answer {
        std::future::ready(Ok(http::Response::new(String::new())))
    }
    fn client_request() -> http::Request<String> {
        http::Request::get("http://api.example.com:8080/users/42?x=1")
            .header("user-agent", "bench/1.0")
            .body(String::new())
            .expect("request")
    }
    fn drive<S>(rt: &tokio::runtime::Runtime, svc: &S, parent: &ferrotrace::Context, n: u64)
    where
        S: Service<http::Request<String>> + Clone,
        S::Response: std::fmt::Debug,
        S::Error: std::fmt::Debug,
    {
        let _g = parent.clone().attach();
        rt.block_on(async {
            for _ in 0..n {
                let resp = svc.clone().oneshot(client_request()).await.expect("ok");
                black_box(resp);
            }
        });
    }
    let parent = ferrotrace_benches::remote_parent;
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    };
    let mut variants = Vec::new();
    {
        let svc = tower::service_fn(answer);
        let rt = rt();
        let cx = parent(ferrotrace::TraceFlags::SAMPLED);
        variants.push(Variant::new("no_layer", move |n| drive(&rt, &svc, &cx, n)));
    }
    for (name, flags) in [
        ("ferrotrace_sampled", ferrotrace::TraceFlags::SAMPLED),
        ("ferrotrace_unsampled", ferrotrace::TraceFlags::NOT_SAMPLED),
    ] {
        let (p, c, s) = ft::provider(ft::Sampler::default(), true);
        let svc = ferrotrace::integrations::http::HttpClientLayer::new(p.tracer("bench"))
            .layer(tower::service_fn(answer));
        let rt = rt();
        let cx = parent(flags);
        let produced = Arc::new(AtomicU64::new(0));
        let pr = produced.clone();
        let sampled = name == "ferrotrace_sampled";
        variants.push(
            Variant::new(name, move |n| {
                drive(&rt, &svc, &cx, n);
                if sampled {
                    pr.fetch_add(n, Ordering::Relaxed);
                }
            })
            .with_flush(ft::flusher(p, c, s, produced)),
        );
    }
    Group {
        name: "HTTP client layer: GET through HttpClientLayer into an immediate answer",
        ops: 8_192,
        variants,
        ratios: vec![],
        deltas: vec![
            ("ferrotrace_sampled", "no_layer"),
            ("ferrotrace_unsampled", "no_layer"),
        ],
    }
}

// ---------------------------------------------------------------------------

/// Builds a group's variants.
type MakeGroup = fn() -> Group;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 21usize;
    let mut wanted: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N");
            }
            // Flags cargo bench passes through.
            s if s.starts_with("--") => {}
            s => wanted.push(s.to_string()),
        }
    }
    let all: [(&str, MakeGroup); 8] = [
        ("bsp", group_bsp),
        ("bsp_attrs", group_bsp_attrs),
        ("unsampled", group_unsampled),
        ("sampling", group_sampling),
        ("propagation", group_propagation),
        ("tracing", group_tracing),
        ("http", group_http),
        ("http_client", group_http_client),
    ];
    println!(
        "# overhead (ferrotrace {}, {} CPUs, started {:?})",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::time::SystemTime::now()
    );
    let t = Instant::now();
    for (key, make) in all {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == key) {
            continue;
        }
        let mut g = make();
        run_group(&mut g, rounds);
        drop(g);
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("total {:.1} s", t.elapsed().as_secs_f64());
}
