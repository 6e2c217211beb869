//! An unsampled span allocates nothing (checked with a counting allocator that
//! only counts allocations made by the test thread while armed).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::propagation::{TextMapPropagator, TraceContextPropagator};
use ferrotrace::trace::{Sampler, SpanKind, TracerProvider};
use ferrotrace::{Context, SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Allocations made by this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCS.load(Ordering::Relaxed) - before
}

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.try_with(Cell::get).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn unsampled_span_allocates_nothing() {
    let provider = TracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_sampler(Sampler::AlwaysOff)
        .build();
    let tracer = provider.tracer("t");
    // Warm up thread-locals (RNG, context stack) once.
    drop(tracer.start("warm"));
    let parent = tracer.start("parent");
    let guard = parent.make_current();
    drop(tracer.start("warm-child"));

    let before = ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    for _ in 0..10_000 {
        let mut s = tracer.start("op");
        s.set_attribute("key", "value");
        s.set_attribute("n", 1);
        s.add_event("ev", Vec::new());
        s.end();
    }
    ARMED.with(|a| a.set(false));
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "unsampled spans allocated");
    drop(guard);
}

#[test]
fn parent_based_span_under_an_unsampled_parent_allocates_nothing() {
    let provider = TracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_sampler(Sampler::default())
        .build();
    let tracer = provider.tracer("t");
    // A remote parent that was not sampled upstream.
    let parent = SpanContext::new(
        TraceId::from_bytes([3; 16]),
        SpanId::from_bytes([4; 8]),
        TraceFlags::NOT_SAMPLED,
        true,
        TraceState::NONE,
    );
    let cx = Context::new().with_span_context(parent);
    let _g = cx.clone().attach();
    drop(tracer.start("warm"));
    let n = allocations(|| {
        for _ in 0..10_000 {
            let mut s = tracer.start("op");
            assert!(!s.is_recording());
            s.set_attribute("key", "value");
            s.end();
            let s = tracer
                .span_builder("server")
                .with_kind(SpanKind::Server)
                .with_parent_context(&cx)
                .start();
            assert_eq!(s.span_context().trace_id(), TraceId::from_bytes([3; 16]));
            drop(s);
        }
    });
    assert_eq!(n, 0, "spans under an unsampled parent allocated");
}

#[test]
fn traceparent_extract_allocates_nothing() {
    let prop = TraceContextPropagator::new();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let mut map = std::collections::HashMap::new();
    map.insert(
        "traceparent".to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
    );
    let base = Context::new();
    let n = allocations(|| {
        for _ in 0..1_000 {
            let a = prop.extract_with_context(&base, &headers);
            let b = prop.extract_with_context(&base, &map);
            assert!(a.span_context().is_sampled() && b.span_context().is_remote());
        }
    });
    assert_eq!(n, 0, "extracting a traceparent allocated");
}
