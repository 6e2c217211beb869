//! Load-based protection: a real batch processor whose exporter is slow
//! fills its queue; the shedding sampler lowers the probability (recorded in
//! `th`), keeps decisions consistent, and recovers when the exporter is fast
//! again. Children of local parents follow them; remote parents are shed
//! proportionally.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrotrace::export::stats::ExportStats;
use ferrotrace::export::{BatchSpanProcessor, ExportResult, SpanData, SpanExporter};
use ferrotrace::trace::consistent::{OtState, Randomness};
use ferrotrace::trace::load_shedding::LoadShedding;
use ferrotrace::trace::{Sampler, TracerProvider};
use ferrotrace::{Context, SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Sleeps per batch while `slow` is set.
#[derive(Clone)]
struct SlowExporter {
    slow: Arc<AtomicBool>,
}
impl SpanExporter for SlowExporter {
    fn export(&self, _batch: Vec<SpanData>) -> ExportResult {
        if self.slow.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn shedder(sampler: &Sampler) -> &LoadShedding {
    match sampler {
        Sampler::LoadShedding(l) => l,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_queue_lowers_sampling_consistently_and_recovery_follows() {
    let stats = ExportStats::new();
    let slow = Arc::new(AtomicBool::new(true));
    let bsp = BatchSpanProcessor::builder(SlowExporter { slow: slow.clone() })
        .with_max_queue_size(64)
        .with_max_export_batch_size(64)
        .with_stats(stats.clone())
        .build();
    let sampler = LoadShedding::builder(Sampler::consistent_probability(1.0))
        .with_stats(stats.clone())
        .with_tick(Duration::from_millis(20))
        .with_raise_after(2)
        // 0.5 s of calm per step down: the measurement below finishes well within it.
        .with_recover_after(25)
        .with_max_level(4)
        .build();
    let provider = TracerProvider::builder()
        .with_span_processor(bsp)
        .with_sampler(sampler.clone())
        .with_unended_span_age(None)
        .build();
    let tracer = provider.tracer("t");
    let l = shedder(&sampler);
    // Overload: far more spans than 64 per 50 ms.
    wait_until("level 4", || {
        for _ in 0..500 {
            tracer.span_builder("s").as_root().start();
        }
        l.stats().level == 4
    });
    assert!(stats.snapshot().dropped_queue_full > 0);
    // At level 4 the probability is 1/16, recorded as th:f, and decisions
    // follow the threshold rule exactly.
    const N: usize = 20_000;
    let mut kept = 0;
    for _ in 0..N {
        let span = tracer.span_builder("s").as_root().start();
        let sc = span.span_context();
        let r = Randomness::from_trace_id(sc.trace_id()).to_u64();
        assert_eq!(sc.is_sampled(), r >= 0xf0_0000_0000_0000, "level stays 4");
        if sc.is_sampled() {
            kept += 1;
            assert_eq!(sc.trace_state().header(), "ot=th:f");
        } else {
            assert!(sc.trace_state().is_empty());
        }
    }
    assert_eq!(
        l.stats().level,
        4,
        "pressure lasted through the measurement"
    );
    let (mean, sigma) = (N as f64 / 16.0, (N as f64 / 16.0 * 15.0 / 16.0).sqrt());
    assert!((kept as f64 - mean).abs() < 5.0 * sigma, "{kept}");
    let s = l.stats();
    assert_eq!(s.raised, 4);
    assert!(s.spans_shed >= (N - kept) as u64);
    // The exporter recovers: one level down per 25 calm ticks, back to 0.
    slow.store(false, Ordering::Relaxed);
    wait_until("recovery", || {
        tracer.span_builder("s").as_root().start();
        l.stats().level == 0
    });
    assert_eq!(l.stats().lowered, 4);
    let span = tracer.span_builder("s").as_root().start();
    assert!(span.span_context().is_sampled());
    assert_eq!(span.span_context().trace_state().header(), "ot=th:0");
}

fn remote(r: u64, ts: &str) -> Context {
    let mut b = [0x22u8; 16];
    b[9..].copy_from_slice(&r.to_be_bytes()[1..]);
    Context::new().with_span_context(SpanContext::new(
        TraceId::from_bytes(b),
        SpanId::from_bytes([3; 8]),
        TraceFlags::SAMPLED.with_random(true),
        true,
        TraceState::from_header(ts).unwrap(),
    ))
}

#[test]
fn local_children_follow_remote_parents_are_shed_proportionally() {
    let stats = ExportStats::new();
    let sampler =
        LoadShedding::builder(Sampler::parent_based(Sampler::consistent_probability(1.0)))
            .with_stats(stats.clone())
            .with_tick(Duration::from_millis(5))
            .with_raise_after(1)
            .with_recover_after(1_000_000)
            .with_max_level(4)
            .build();
    let l = shedder(&sampler);
    // Steady pressure: the queue-full counter grows every tick.
    wait_until("level 4", || {
        stats.add_dropped_queue_full(1);
        l.stats().level == 4
    });
    let provider = TracerProvider::builder()
        .with_simple_exporter(ferrotrace::export::InMemorySpanExporter::default())
        .with_sampler(sampler.clone())
        .with_unended_span_age(None)
        .build();
    let t = provider.tracer("t");
    // A kept root (th:f); its local child is kept with the same th (not shed again).
    let root = loop {
        let s = t.span_builder("r").as_root().start();
        if s.span_context().is_sampled() {
            break s;
        }
    };
    assert_eq!(root.span_context().trace_state().header(), "ot=th:f");
    let cx = Context::new().with_span_context(root.span_context().clone());
    for _ in 0..100 {
        let child = t.start_with_context("c", &cx);
        assert!(child.span_context().is_sampled());
        assert_eq!(child.span_context().trace_state().header(), "ot=th:f");
    }
    // A remote parent kept at 1/2 (th:8): 1/2 × 1/16 = 1/32, th:f8.
    let high = 0xfc_0000_0000_0000;
    let low = 0xf4_0000_0000_0000;
    let child = t.start_with_context("c", &remote(high, "ot=th:8,k=v"));
    assert!(child.span_context().is_sampled());
    assert_eq!(child.span_context().trace_state().header(), "ot=th:f8,k=v");
    // Below the new threshold: dropped, th erased, other members kept.
    let child = t.start_with_context("c", &remote(low, "ot=th:8,k=v"));
    assert!(!child.span_context().is_sampled());
    assert_eq!(child.span_context().trace_state().header(), "k=v");
    assert_eq!(
        OtState::of(child.span_context().trace_state()).th,
        None,
        "no th on a shed span"
    );
}
