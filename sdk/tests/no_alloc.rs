//! An unsampled span allocates nothing (checked with a counting allocator that
//! only counts allocations made by the test thread while armed).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::{Sampler, TracerProvider};

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
