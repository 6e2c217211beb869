//! Batch span processor behaviour: batching triggers, bounded queue with
//! counted drops, flush/shutdown within their timeouts whatever the exporter
//! does, and use from plain threads and from inside tokio runtimes.

mod export_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use export_support::{small_span, wait_until};
use ferrotrace::export::batch::BatchSpanProcessor;
use ferrotrace::export::stats::ExportStats;
use ferrotrace::export::{ExportError, ExportResult, SpanData, SpanExporter, SpanProcessor};
use parking_lot::Mutex;

/// Records every batch it gets.
#[derive(Clone, Default)]
struct Recording {
    batches: Arc<Mutex<Vec<Vec<SpanData>>>>,
    shutdowns: Arc<AtomicUsize>,
}

impl Recording {
    fn spans(&self) -> usize {
        self.batches.lock().iter().map(Vec::len).sum()
    }
    fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().iter().map(Vec::len).collect()
    }
}

impl SpanExporter for Recording {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        self.batches.lock().push(batch);
        Ok(())
    }
    fn shutdown(&self) -> ExportResult {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Blocks in `export` until released (or forever if never released).
struct Gated {
    gate: Receiver<()>,
    exported: Arc<AtomicUsize>,
}

impl SpanExporter for Gated {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        let _ = self.gate.recv();
        self.exported.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(())
    }
}

fn gated() -> (Gated, Sender<()>, Arc<AtomicUsize>) {
    let (tx, rx) = bounded(0);
    let exported = Arc::new(AtomicUsize::new(0));
    (
        Gated {
            gate: rx,
            exported: Arc::clone(&exported),
        },
        tx,
        exported,
    )
}

struct Failing;
impl SpanExporter for Failing {
    fn export(&self, _batch: Vec<SpanData>) -> ExportResult {
        Err(ExportError::Failed("collector said no".into()))
    }
}

#[test]
fn full_batches_go_out_without_waiting_for_the_delay() {
    let rec = Recording::default();
    let stats = ExportStats::new();
    let bsp = BatchSpanProcessor::builder(rec.clone())
        .with_max_export_batch_size(10)
        .with_scheduled_delay(Duration::from_secs(3600))
        .with_stats(stats.clone())
        .build();
    for i in 0..25 {
        bsp.on_end(small_span(i));
    }
    assert!(wait_until(Duration::from_secs(5), || rec.spans() == 20));
    assert_eq!(rec.batch_sizes(), vec![10, 10]);
    bsp.force_flush(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.batch_sizes(), vec![10, 10, 5]);
    assert_eq!(stats.snapshot().exported, 25);
    bsp.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.shutdowns.load(Ordering::SeqCst), 1);
}

#[test]
fn partial_batch_goes_out_after_the_schedule_delay() {
    let rec = Recording::default();
    let bsp = BatchSpanProcessor::builder(rec.clone())
        .with_scheduled_delay(Duration::from_millis(50))
        .with_stats(ExportStats::new())
        .build();
    for i in 0..3 {
        bsp.on_end(small_span(i));
    }
    assert!(wait_until(Duration::from_secs(5), || rec.spans() == 3));
    bsp.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn defaults_match_opentelemetry() {
    let bsp = BatchSpanProcessor::builder(Recording::default())
        .with_stats(ExportStats::new())
        .build();
    let c = bsp.config();
    // (Unless OTEL_BSP_* are set in the test environment.)
    if std::env::vars().all(|(k, _)| !k.starts_with("OTEL_BSP_")) {
        assert_eq!(c.max_queue_size, 2048);
        assert_eq!(c.max_export_batch_size, 512);
        assert_eq!(c.scheduled_delay, Duration::from_secs(5));
        assert_eq!(c.export_timeout, Duration::from_secs(30));
    }
}

#[test]
fn full_queue_drops_and_counts_and_every_span_is_accounted_for() {
    let (exp, release, exported) = gated();
    let stats = ExportStats::new();
    let bsp = BatchSpanProcessor::builder(exp)
        .with_max_queue_size(8)
        .with_max_export_batch_size(4)
        .with_scheduled_delay(Duration::from_secs(3600))
        .with_stats(stats.clone())
        .build();
    let total = 1000u64;
    let start = Instant::now();
    for i in 0..total {
        bsp.on_end(small_span(i));
    }
    // The exporter is blocked, yet on_end returned for every span.
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "on_end blocked: {elapsed:?}"
    );
    let dropped = stats.snapshot().dropped_queue_full;
    assert!(dropped > 0);
    // Release the exporter for as long as it wants.
    std::thread::spawn(move || while release.send(()).is_ok() {});
    bsp.shutdown(Duration::from_secs(5)).unwrap();
    let snap = stats.snapshot();
    assert_eq!(snap.exported, exported.load(Ordering::SeqCst) as u64);
    assert_eq!(
        snap.exported + snap.dropped_queue_full + snap.dropped_export_failed,
        total,
        "{snap}"
    );
}

#[test]
fn two_producers_lose_nothing_uncounted() {
    let rec = Recording::default();
    let stats = ExportStats::new();
    let bsp = Arc::new(
        BatchSpanProcessor::builder(rec.clone())
            .with_max_queue_size(256)
            .with_max_export_batch_size(64)
            .with_scheduled_delay(Duration::from_millis(10))
            .with_stats(stats.clone())
            .build(),
    );
    let per_thread = 20_000u64;
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let bsp = Arc::clone(&bsp);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    bsp.on_end(small_span(t * per_thread + i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    bsp.shutdown(Duration::from_secs(10)).unwrap();
    let snap = stats.snapshot();
    assert_eq!(snap.exported as usize, rec.spans());
    assert_eq!(
        snap.exported + snap.dropped_queue_full,
        2 * per_thread,
        "{snap}"
    );
    assert!(rec.batch_sizes().iter().all(|n| *n <= 64));
}

#[test]
fn spans_after_shutdown_are_dropped_and_counted() {
    let rec = Recording::default();
    let stats = ExportStats::new();
    let bsp = BatchSpanProcessor::builder(rec.clone())
        .with_stats(stats.clone())
        .build();
    bsp.on_end(small_span(1));
    bsp.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.spans(), 1, "shutdown exports what was queued");
    bsp.on_end(small_span(2));
    bsp.on_end(small_span(3));
    assert_eq!(stats.snapshot().dropped_shutdown, 2);
    assert_eq!(
        bsp.shutdown(Duration::from_secs(1)),
        Err(ExportError::Shutdown)
    );
    assert_eq!(
        bsp.force_flush(Duration::from_secs(1)),
        Err(ExportError::Shutdown)
    );
}

#[test]
fn hanging_exporter_does_not_hang_flush_or_shutdown() {
    let (exp, _release_never, _) = gated();
    let stats = ExportStats::new();
    let bsp = BatchSpanProcessor::builder(exp)
        .with_stats(stats.clone())
        .with_export_timeout(Duration::from_millis(200))
        .build();
    for i in 0..10 {
        bsp.on_end(small_span(i));
    }
    let t = Instant::now();
    let r = bsp.force_flush(Duration::from_millis(300));
    assert!(matches!(r, Err(ExportError::Timeout(_))), "{r:?}");
    let r = bsp.shutdown(Duration::from_millis(300));
    assert!(matches!(r, Err(ExportError::Timeout(_))), "{r:?}");
    // Generous bound: two 300 ms timeouts, far below "hangs".
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    bsp.on_end(small_span(99));
    assert_eq!(stats.snapshot().dropped_shutdown, 1);
}

#[test]
fn failed_exports_are_counted_and_reported_by_flush() {
    let stats = ExportStats::new();
    let bsp = BatchSpanProcessor::builder(Failing)
        .with_stats(stats.clone())
        .build();
    for i in 0..7 {
        bsp.on_end(small_span(i));
    }
    let r = bsp.force_flush(Duration::from_secs(5));
    assert!(
        matches!(r, Err(ExportError::Failed(ref m)) if m.contains("collector said no")),
        "{r:?}"
    );
    let snap = stats.snapshot();
    assert_eq!(snap.dropped_export_failed, 7);
    assert_eq!(snap.exported, 0);
    assert!(snap.last_error.unwrap().contains("collector said no"));
    // A later clean flush succeeds again.
    assert_eq!(bsp.force_flush(Duration::from_secs(5)), Ok(()));
}

fn exercise(bsp: &BatchSpanProcessor, rec: &Recording) {
    for i in 0..5 {
        bsp.on_end(small_span(i));
    }
    bsp.force_flush(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.spans(), 5);
    bsp.on_end(small_span(5));
    bsp.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.spans(), 6);
}

#[test]
fn works_from_inside_a_current_thread_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rec = Recording::default();
        let bsp = BatchSpanProcessor::builder(rec.clone())
            .with_stats(ExportStats::new())
            .build();
        exercise(&bsp, &rec);
    });
}

#[test]
fn works_from_inside_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rec = Recording::default();
        let bsp = BatchSpanProcessor::builder(rec.clone())
            .with_stats(ExportStats::new())
            .build();
        let handle = tokio::spawn(async move {
            exercise(&bsp, &rec);
        });
        handle.await.unwrap();
    });
}

#[test]
fn dropping_the_processor_flushes() {
    let rec = Recording::default();
    {
        let bsp = BatchSpanProcessor::builder(rec.clone())
            .with_stats(ExportStats::new())
            .build();
        bsp.on_end(small_span(1));
    }
    assert_eq!(rec.spans(), 1);
    assert_eq!(rec.shutdowns.load(Ordering::SeqCst), 1);
}
