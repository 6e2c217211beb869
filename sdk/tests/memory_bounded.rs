//! Producers that outrun the exporter: the batch processor's memory stays
//! bounded (its queue is), every span is either exported or counted as
//! dropped, and the process's resident memory stays flat.
//!
//! The quick test runs ~3 s in the normal suite; the 30-second run is
//! `#[ignore]`d:
//!
//! ```sh
//! cargo test --release -p ferrotrace --test memory_bounded -- --ignored --nocapture
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrotrace::export::batch::BatchSpanProcessor;
use ferrotrace::export::stats::ExportStats;
use ferrotrace::export::{ExportResult, SpanData, SpanExporter};
use ferrotrace::trace::TracerProvider;

/// An exporter slower than the producers: 20 ms per batch.
#[derive(Clone, Default)]
struct Slow(Arc<AtomicU64>);

impl SpanExporter for Slow {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        std::thread::sleep(Duration::from_millis(20));
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Resident set size of this process in bytes (`/proc/self/statm`).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm resident field");
    pages * 4096
}

struct Outcome {
    produced: u64,
    exported: u64,
    dropped: u64,
    rss_mib: Vec<f64>,
}

fn overload(duration: Duration, producers: usize) -> Outcome {
    let exported = Slow::default();
    let stats = ExportStats::new();
    let bsp = BatchSpanProcessor::builder(exported.clone())
        .with_max_queue_size(2048)
        .with_max_export_batch_size(512)
        .with_scheduled_delay(Duration::from_millis(100))
        .with_stats(stats.clone())
        .build();
    let provider = TracerProvider::builder()
        .with_span_processor(bsp)
        .with_service_name("overload")
        .build();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..producers)
        .map(|i| {
            let tracer = provider.tracer("overload");
            let (stop, produced) = (stop.clone(), produced.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let mut span = tracer.start("request");
                        // Spans with owned strings: a leak or an unbounded
                        // buffer would show in the resident set quickly.
                        span.set_attribute("url.path", format!("/orders/{i}/{n}"));
                        span.set_attribute("http.response.status_code", 200);
                        span.add_event("cache miss", Vec::new());
                        span.end();
                        n += 1;
                    }
                }
                produced.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    let mut rss_mib = Vec::new();
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(250));
        rss_mib.push(rss_bytes() as f64 / (1024.0 * 1024.0));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("producer");
    }
    provider
        .shutdown(Duration::from_secs(30))
        .expect("shutdown");
    let snap = stats.snapshot();
    Outcome {
        produced: produced.load(Ordering::Relaxed),
        exported: exported.0.load(Ordering::Relaxed),
        dropped: snap.dropped_queue_full + snap.dropped_shutdown + snap.dropped_export_failed,
        rss_mib,
    }
}

fn check(o: &Outcome, label: &str) {
    println!(
        "{label}: produced {}, exported {}, dropped {}; RSS MiB every 250 ms: {:?}",
        o.produced,
        o.exported,
        o.dropped,
        o.rss_mib
            .iter()
            .map(|m| (m * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    // Every span is accounted for: exported or counted as dropped.
    assert_eq!(
        o.produced,
        o.exported + o.dropped,
        "spans lost without a count"
    );
    assert!(
        o.dropped > 0,
        "the exporter was not outrun (nothing dropped)"
    );
    assert!(
        o.dropped > o.exported,
        "producers should outrun a 20 ms/batch exporter by far"
    );
    // Flat: after the first second (thread stacks, allocator arenas, the
    // queue filling once), the resident set grows by less than 16 MiB.
    let warm = o.rss_mib.len().min(4);
    let base = o.rss_mib[..warm].iter().cloned().fold(0.0, f64::max);
    let peak = o.rss_mib.iter().cloned().fold(0.0, f64::max);
    assert!(
        peak - base < 16.0,
        "RSS grew from {base:.1} MiB to {peak:.1} MiB while producers outran the exporter"
    );
}

#[test]
fn memory_stays_bounded_when_producers_outrun_the_exporter() {
    let o = overload(Duration::from_secs(3), 2);
    check(&o, "3 s overload");
}

#[test]
#[ignore = "30-second overload run; see the module docs"]
fn memory_stays_bounded_for_30_seconds() {
    let o = overload(Duration::from_secs(30), 4);
    check(&o, "30 s overload");
}
