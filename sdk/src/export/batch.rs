//! The batch span processor: `on_end` writes the span into a bounded queue of
//! batch-sized chunks and returns; a dedicated thread hands full chunks (and,
//! after the schedule delay or on flush, partial ones) as batches to a second
//! thread that calls the exporter. A span is copied once, into its chunk: the
//! chunk's storage is the `Vec` the exporter receives (see `span_queue`).
//!
//! No async runtime is needed or used, so the processor behaves the same from
//! plain `main`, a tokio multi-thread runtime and a tokio current-thread
//! runtime; `force_flush` and `shutdown` only wait on blocking queues with a
//! timeout, so calling them from inside a runtime cannot deadlock. Batches
//! and replies travel through `handoff` queues, whose waiting side sleeps at
//! once instead of spinning; producers' wake-ups through a `crossbeam`
//! channel (see `handoff` for why).
//!
//! ```
//! use std::time::Duration;
//! use ferrotrace::export::batch::BatchSpanProcessor;
//! use ferrotrace::export::{ExportResult, SpanData, SpanExporter, SpanProcessor};
//!
//! struct Discard;
//! impl SpanExporter for Discard {
//!     fn export(&self, _batch: Vec<SpanData>) -> ExportResult { Ok(()) }
//! }
//! let bsp = BatchSpanProcessor::builder(Discard)
//!     .with_max_queue_size(4096)
//!     .with_scheduled_delay(Duration::from_millis(200))
//!     .build();
//! bsp.shutdown(Duration::from_secs(1)).unwrap();
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::handoff::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use super::span_queue::{Pushed, SpanQueue};
use super::stats::ExportStats;
use super::{ExportError, ExportResult, SpanData, SpanExporter, SpanProcessor, SpanSlot};

/// Default `OTEL_BSP_MAX_QUEUE_SIZE`.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// Default `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
/// Default `OTEL_BSP_SCHEDULE_DELAY` (5000 ms).
pub const DEFAULT_SCHEDULED_DELAY: Duration = Duration::from_millis(5000);
/// Smallest schedule delay used. A shorter one (`OTEL_BSP_SCHEDULE_DELAY=0`
/// included) is raised to this: with a zero delay the batch thread would wake
/// without pause and burn a core. Full batches go out at once regardless.
pub const MIN_SCHEDULED_DELAY: Duration = Duration::from_millis(10);
/// Default `OTEL_BSP_EXPORT_TIMEOUT` (30000 ms).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30000);
/// How long dropping an un-shut-down processor waits for its final flush.
pub const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of the control channel (flush/shutdown requests and wake-ups).
const CONTROL_CAPACITY: usize = 64;
/// How often the batch thread reports queue-full drops while it waits to hand
/// a batch to a busy exporter.
const REPORT_WHILE_WAITING: Duration = Duration::from_millis(100);

/// Batch processor settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Spans held at most; more are dropped and counted (default 2048).
    pub max_queue_size: usize,
    /// Spans per export call at most (default 512; clamped to the queue size).
    pub max_export_batch_size: usize,
    /// Longest time a span waits before its (partial) batch is exported
    /// (default 5 s; at least [`MIN_SCHEDULED_DELAY`], a shorter value is raised).
    pub scheduled_delay: Duration,
    /// Longest time one export may take before its batch is given up on (default 30 s).
    pub export_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
            scheduled_delay: DEFAULT_SCHEDULED_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

impl BatchConfig {
    /// Defaults overridden by the `OTEL_BSP_*` environment variables.
    pub fn from_env() -> Self {
        Self::from_env_vars(|k| std::env::var(k).ok())
    }

    /// Like [`BatchConfig::from_env`], reading variables through `lookup`.
    /// Values that are not non-negative integers (or are zero for sizes) are
    /// ignored, as the specification asks, and the default is kept.
    pub fn from_env_vars(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str| lookup(k).and_then(|v| v.trim().parse::<u64>().ok());
        let mut c = BatchConfig::default();
        if let Some(v) = num("OTEL_BSP_MAX_QUEUE_SIZE").filter(|v| *v > 0) {
            c.max_queue_size = v as usize;
        }
        if let Some(v) = num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").filter(|v| *v > 0) {
            c.max_export_batch_size = v as usize;
        }
        if let Some(v) = num("OTEL_BSP_SCHEDULE_DELAY") {
            c.scheduled_delay = Duration::from_millis(v);
        }
        if let Some(v) = num("OTEL_BSP_EXPORT_TIMEOUT") {
            c.export_timeout = Duration::from_millis(v);
        }
        c.normalized()
    }

    fn normalized(mut self) -> Self {
        self.max_queue_size = self.max_queue_size.max(1);
        self.max_export_batch_size = self.max_export_batch_size.clamp(1, self.max_queue_size);
        self.scheduled_delay = self.scheduled_delay.max(MIN_SCHEDULED_DELAY);
        self
    }
}

/// Builds a [`BatchSpanProcessor`]; starts from [`BatchConfig::from_env`].
pub struct BatchSpanProcessorBuilder<E> {
    exporter: E,
    config: BatchConfig,
    stats: ExportStats,
}

impl<E: SpanExporter> BatchSpanProcessorBuilder<E> {
    /// Sets the queue capacity (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub fn with_max_queue_size(mut self, n: usize) -> Self {
        self.config.max_queue_size = n;
        self
    }
    /// Sets the batch size (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub fn with_max_export_batch_size(mut self, n: usize) -> Self {
        self.config.max_export_batch_size = n;
        self
    }
    /// Sets the schedule delay (`OTEL_BSP_SCHEDULE_DELAY`); at least
    /// [`MIN_SCHEDULED_DELAY`].
    pub fn with_scheduled_delay(mut self, d: Duration) -> Self {
        self.config.scheduled_delay = d;
        self
    }
    /// Sets the export timeout (`OTEL_BSP_EXPORT_TIMEOUT`).
    pub fn with_export_timeout(mut self, d: Duration) -> Self {
        self.config.export_timeout = d;
        self
    }
    /// Replaces the whole configuration.
    pub fn with_config(mut self, config: BatchConfig) -> Self {
        self.config = config;
        self
    }
    /// Uses these counters instead of [`ExportStats::global`].
    pub fn with_stats(mut self, stats: ExportStats) -> Self {
        self.stats = stats;
        self
    }
    /// Starts the processor's threads.
    pub fn build(self) -> BatchSpanProcessor {
        BatchSpanProcessor::start(
            Box::new(self.exporter),
            self.config.normalized(),
            self.stats,
        )
    }
}

enum Control {
    /// The queue holds at least one full batch.
    BatchReady,
    Flush(Sender<ExportResult>),
    Shutdown(Sender<ExportResult>),
}

enum Job {
    Export(Vec<SpanData>),
    /// Replies once every earlier batch is done: `Err` if one failed since the
    /// previous barrier.
    Barrier(Sender<ExportResult>),
    Shutdown(Sender<ExportResult>),
}

struct Shared {
    queue: SpanQueue,
    control: crossbeam_channel::Sender<Control>,
    /// Set once a `BatchReady` is in flight, so producers send at most one
    /// wake-up per batch instead of one per span.
    wake_pending: AtomicBool,
    is_shutdown: AtomicBool,
    stats: ExportStats,
    /// Spans this processor dropped because its queue was full (the shared
    /// stats may sum several processors); the batch thread reports the
    /// growth, so the producer's drop path only adds one increment.
    dropped_full: AtomicU64,
    /// Times the batch thread woke up (tests check it does not spin).
    #[cfg(test)]
    wakeups: std::sync::atomic::AtomicU64,
}

/// A non-blocking batching [`SpanProcessor`]. See the module docs.
pub struct BatchSpanProcessor {
    shared: Arc<Shared>,
    config: BatchConfig,
}

impl std::fmt::Debug for BatchSpanProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSpanProcessor")
            .field("config", &self.config)
            .field("queued", &self.shared.queue.len())
            .finish()
    }
}

impl BatchSpanProcessor {
    /// A builder starting from the defaults and `OTEL_BSP_*` variables.
    pub fn builder<E: SpanExporter>(exporter: E) -> BatchSpanProcessorBuilder<E> {
        BatchSpanProcessorBuilder {
            exporter,
            config: BatchConfig::from_env(),
            stats: ExportStats::global().clone(),
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> BatchConfig {
        self.config
    }

    /// The counters this processor writes to.
    pub fn stats(&self) -> &ExportStats {
        &self.shared.stats
    }

    /// Spans currently queued (a snapshot).
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    fn start(exporter: Box<dyn SpanExporter>, config: BatchConfig, stats: ExportStats) -> Self {
        let (ctrl_tx, ctrl_rx) = crossbeam_channel::bounded(CONTROL_CAPACITY);
        // Capacity 1: one batch exporting, one waiting; pipelining batching
        // with exporting without letting batches pile up.
        let (job_tx, job_rx) = bounded::<Job>(1);
        let shared = Arc::new(Shared {
            queue: SpanQueue::new(config.max_queue_size, config.max_export_batch_size),
            control: ctrl_tx,
            wake_pending: AtomicBool::new(false),
            is_shutdown: AtomicBool::new(false),
            stats: stats.clone(),
            dropped_full: AtomicU64::new(0),
            #[cfg(test)]
            wakeups: std::sync::atomic::AtomicU64::new(0),
        });

        let export_stats = stats.clone();
        let exporter_thread = thread::Builder::new()
            .name("ferrotrace-bsp-export".into())
            .spawn(move || export_loop(exporter, job_rx, export_stats));
        let batch_shared = Arc::clone(&shared);
        let spawned = exporter_thread.and_then(|_| {
            thread::Builder::new()
                .name("ferrotrace-bsp".into())
                .spawn(move || batch_loop(batch_shared, ctrl_rx, job_tx, config))
        });
        if spawned.is_err() {
            // Without threads nothing can be exported: behave as shut down so
            // spans are dropped and counted instead of piling up.
            shared.is_shutdown.store(true, Ordering::Release);
        }
        BatchSpanProcessor { shared, config }
    }

    fn request(
        &self,
        make: fn(Sender<ExportResult>) -> Control,
        timeout: Duration,
    ) -> ExportResult {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = bounded(1);
        match self.shared.control.send_timeout(make(tx), timeout) {
            Ok(()) => {}
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                return Err(ExportError::Timeout(timeout))
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                return Err(ExportError::Shutdown)
            }
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(ExportError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(ExportError::Shutdown),
        }
    }
}

impl SpanProcessor for BatchSpanProcessor {
    #[inline]
    fn on_end(&self, span: SpanData) {
        // SAFETY: `span` is a live local the slot owns from here; it is not
        // used or dropped again (`ManuallyDrop`).
        let mut span = std::mem::ManuallyDrop::new(span);
        self.on_end_in_place(unsafe { SpanSlot::new(&mut *span) });
    }

    /// Copies the span from where it was recorded straight into its queue
    /// slot: the only copy of a finished span on the calling thread.
    #[inline]
    fn on_end_in_place(&self, span: SpanSlot<'_>) {
        let s = &*self.shared;
        if s.is_shutdown.load(Ordering::Relaxed) {
            s.stats.add_dropped_shutdown(1);
            return;
        }
        match s.queue.push(&span) {
            Pushed::Queued(filled) => {
                // The queue owns the span now (copied into its slot).
                span.forget();
                if filled {
                    s.wake();
                }
            }
            Pushed::Full => {
                if s.is_shutdown.load(Ordering::Relaxed) {
                    // Raced with shutdown: the queue was retired.
                    s.stats.add_dropped_shutdown(1);
                } else {
                    s.stats.add_dropped_queue_full(1);
                    s.dropped_full.fetch_add(1, Ordering::Relaxed);
                    s.wake();
                }
                drop(span);
            }
        }
    }

    fn observes_start(&self) -> bool {
        false
    }

    fn force_flush(&self, timeout: Duration) -> ExportResult {
        if self.shared.is_shutdown.load(Ordering::Acquire) {
            return Err(ExportError::Shutdown);
        }
        self.request(Control::Flush, timeout)
    }

    fn shutdown(&self, timeout: Duration) -> ExportResult {
        if self.shared.is_shutdown.swap(true, Ordering::AcqRel) {
            return Err(ExportError::Shutdown);
        }
        self.request(Control::Shutdown, timeout)
    }
}

impl Drop for BatchSpanProcessor {
    fn drop(&mut self) {
        if !self.shared.is_shutdown.load(Ordering::Acquire) {
            let _ = self.shutdown(DROP_SHUTDOWN_TIMEOUT);
        }
    }
}

impl Shared {
    /// Wakes the batch thread (a chunk is full, or the queue is): at most
    /// one wake-up in flight.
    #[inline]
    fn wake(&self) {
        // SeqCst: pairs with the batch thread's reset of the flag before it
        // reads the queue's position (see `span_queue`).
        if !self.wake_pending.load(Ordering::SeqCst)
            && !self.wake_pending.swap(true, Ordering::SeqCst)
        {
            // A full control channel already holds a wake-up.
            let _ = self.control.try_send(Control::BatchReady);
        }
    }
}

/// Sends one batch to the export thread, waiting at most the export timeout
/// for the previous one to finish; a batch that cannot be handed over in time
/// is dropped and counted.
///
/// While it waits (a slow or hung exporter), `report` runs every
/// [`REPORT_WHILE_WAITING`], so that spans dropped on the full queue meanwhile
/// are reported then and not only once the exporter returns.
fn hand_over(
    job_tx: &Sender<Job>,
    batch: Vec<SpanData>,
    config: &BatchConfig,
    stats: &ExportStats,
    report: &mut dyn FnMut(),
) {
    let n = batch.len() as u64;
    if n == 0 {
        return;
    }
    let deadline = Instant::now() + config.export_timeout;
    let mut job = Job::Export(batch);
    let sent = loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(REPORT_WHILE_WAITING);
        match job_tx.send_timeout(job, wait) {
            Err(SendTimeoutError::Timeout(back)) if Instant::now() < deadline => {
                report();
                job = back;
            }
            other => break other,
        }
    };
    match sent {
        Ok(()) => {}
        Err(SendTimeoutError::Timeout(_)) => {
            stats.add_dropped_export_failed(n);
            stats.set_last_error(format!(
                "batch of {n} spans dropped: the exporter did not finish the previous batch within the export timeout of {:?}",
                config.export_timeout
            ));
        }
        Err(SendTimeoutError::Disconnected(_)) => stats.add_dropped_export_failed(n),
    }
}

/// Hands every full chunk to the export thread, in order; without
/// `only_full` the chunk being filled is sealed and handed over too.
/// `next` is the sequence number of the oldest chunk not yet handed over.
fn drain(
    queue: &SpanQueue,
    next: &mut u64,
    job_tx: &Sender<Job>,
    config: &BatchConfig,
    stats: &ExportStats,
    only_full: bool,
    report: &mut dyn FnMut(),
) {
    let sealed = if only_full {
        None
    } else {
        queue.seal_current()
    };
    // Re-reads the position: chunks filled while a slow hand-over waited go
    // out in the same pass.
    while *next < queue.current() {
        let len = sealed.filter(|(s, _)| s == next).map(|(_, n)| n);
        let batch = queue.take(*next, len);
        *next += 1;
        hand_over(job_tx, batch, config, stats, report);
    }
}

/// Queues a barrier or shutdown behind the batches already handed over; if the
/// exporter is too busy to take it within the export timeout, the waiting
/// caller is told so at once.
fn send_control_job(job_tx: &Sender<Job>, job: Job, config: &BatchConfig) {
    if let Err(e) = job_tx.send_timeout(job, config.export_timeout) {
        let result = match &e {
            SendTimeoutError::Timeout(_) => Err(ExportError::Timeout(config.export_timeout)),
            SendTimeoutError::Disconnected(_) => Err(ExportError::Shutdown),
        };
        if let Job::Barrier(reply) | Job::Shutdown(reply) = e.into_inner() {
            let _ = reply.try_send(result);
        }
    }
}

fn batch_loop(
    shared: Arc<Shared>,
    ctrl: crossbeam_channel::Receiver<Control>,
    job_tx: Sender<Job>,
    config: BatchConfig,
) {
    let stats = shared.stats.clone();
    let mut next_export = Instant::now() + config.scheduled_delay;
    let mut dropped_reported = 0u64;
    let capacity = config.max_queue_size;
    let shared_for_report = shared.clone();
    let mut report = move || report_queue_full(&shared_for_report, &mut dropped_reported, capacity);
    let queue = &shared.queue;
    let mut next = 0u64;
    loop {
        report();
        let wait = next_export.saturating_duration_since(Instant::now());
        let woke = ctrl.recv_timeout(wait);
        #[cfg(test)]
        shared.wakeups.fetch_add(1, Ordering::Relaxed);
        match woke {
            Ok(Control::BatchReady) => {
                shared.wake_pending.store(false, Ordering::SeqCst);
                drain(
                    queue,
                    &mut next,
                    &job_tx,
                    &config,
                    &stats,
                    true,
                    &mut report,
                );
            }
            Ok(Control::Flush(reply)) => {
                drain(
                    queue,
                    &mut next,
                    &job_tx,
                    &config,
                    &stats,
                    false,
                    &mut report,
                );
                next_export = Instant::now() + config.scheduled_delay;
                // The caller waits on `reply` with its own timeout; if the
                // export thread is stuck, this send times out and the caller
                // has already given up.
                send_control_job(&job_tx, Job::Barrier(reply), &config);
            }
            Ok(Control::Shutdown(reply)) => {
                drain(
                    queue,
                    &mut next,
                    &job_tx,
                    &config,
                    &stats,
                    false,
                    &mut report,
                );
                send_control_job(&job_tx, Job::Shutdown(reply), &config);
                break;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                shared.wake_pending.store(false, Ordering::SeqCst);
                drain(
                    queue,
                    &mut next,
                    &job_tx,
                    &config,
                    &stats,
                    false,
                    &mut report,
                );
                next_export = Instant::now() + config.scheduled_delay;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    report();
    // Spans that slipped in between the final drain and now are counted, not
    // lost silently; later ones find the queue retired.
    let late = queue.retire();
    if late > 0 {
        stats.add_dropped_shutdown(late);
    }
}

/// Reports spans dropped on a full queue since the last report (one
/// diagnostic per batch-thread wake-up at most, never one per span).
fn report_queue_full(shared: &Shared, reported: &mut u64, capacity: usize) {
    let now = shared.dropped_full.load(Ordering::Relaxed);
    if now > *reported {
        crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::SpansDropped {
            reason: crate::trace::diagnostics::DropReason::QueueFull,
            count: now - *reported,
            capacity,
        });
        *reported = now;
    }
}

fn export_loop(exporter: Box<dyn SpanExporter>, jobs: Receiver<Job>, stats: ExportStats) {
    let mut failed_since_barrier: Option<ExportError> = None;
    let reports = exporter.reports_failures();
    while let Some(job) = jobs.recv() {
        match job {
            Job::Export(mut batch) => {
                let n = batch.len() as u64;
                let exported = exporter.export_in_place(&mut batch);
                crate::trace::attribute_buffers::give_back(&mut batch);
                drop(batch);
                match exported {
                    Ok(()) => stats.add_exported(n),
                    Err(e) => {
                        stats.add_dropped_export_failed(n);
                        stats.set_last_error(e.to_string());
                        if !reports {
                            crate::trace::diagnostics::report(
                                crate::trace::diagnostics::Diagnostic::Export(format!(
                                    "batch span processor: {e}; {n} spans dropped"
                                )),
                            );
                        }
                        failed_since_barrier = Some(e);
                    }
                }
            }
            Job::Barrier(reply) => {
                let flushed = exporter.force_flush();
                let result = match failed_since_barrier.take() {
                    Some(e) => Err(e),
                    None => flushed,
                };
                let _ = reply.try_send(result);
            }
            Job::Shutdown(reply) => {
                let shut = exporter.shutdown();
                let result = match failed_since_barrier.take() {
                    Some(e) => Err(e),
                    None => shut,
                };
                let _ = reply.try_send(result);
                return;
            }
        }
    }
    let _ = exporter.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_invalid_values_are_ignored() {
        let c = BatchConfig::from_env_vars(|k| match k {
            "OTEL_BSP_MAX_QUEUE_SIZE" => Some("100".into()),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => Some("500".into()),
            "OTEL_BSP_SCHEDULE_DELAY" => Some("250".into()),
            "OTEL_BSP_EXPORT_TIMEOUT" => Some("nope".into()),
            _ => None,
        });
        assert_eq!(c.max_queue_size, 100);
        // Batch larger than the queue is clamped.
        assert_eq!(c.max_export_batch_size, 100);
        assert_eq!(c.scheduled_delay, Duration::from_millis(250));
        assert_eq!(c.export_timeout, DEFAULT_EXPORT_TIMEOUT);
        let d = BatchConfig::from_env_vars(|_| None);
        assert_eq!(d, BatchConfig::default());
        assert_eq!(d.max_queue_size, 2048);
        assert_eq!(d.max_export_batch_size, 512);
    }

    struct Discard;
    impl SpanExporter for Discard {
        fn export(&self, _batch: Vec<SpanData>) -> ExportResult {
            Ok(())
        }
    }

    #[test]
    fn a_zero_schedule_delay_is_raised_to_the_minimum() {
        let c = BatchConfig::from_env_vars(|k| {
            (k == "OTEL_BSP_SCHEDULE_DELAY").then(|| "0".to_string())
        });
        assert_eq!(c.scheduled_delay, MIN_SCHEDULED_DELAY);
        let bsp = BatchSpanProcessor::builder(Discard)
            .with_scheduled_delay(Duration::ZERO)
            .build();
        assert_eq!(bsp.config().scheduled_delay, MIN_SCHEDULED_DELAY);
        bsp.shutdown(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn the_batch_thread_does_not_spin_with_a_zero_schedule_delay() {
        let config = BatchConfig::from_env_vars(|k| {
            (k == "OTEL_BSP_SCHEDULE_DELAY").then(|| "0".to_string())
        });
        let bsp = BatchSpanProcessor::builder(Discard)
            .with_config(config)
            .with_stats(ExportStats::new())
            .build();
        let before = bsp.shared.wakeups.load(Ordering::Relaxed);
        let t = Instant::now();
        thread::sleep(Duration::from_millis(200));
        let woke = bsp.shared.wakeups.load(Ordering::Relaxed) - before;
        let elapsed = t.elapsed();
        // One wake-up per MIN_SCHEDULED_DELAY at most (+1 for the one in
        // progress); a spinning loop wakes hundreds of thousands of times.
        let bound = elapsed.as_millis() as u64 / MIN_SCHEDULED_DELAY.as_millis() as u64 + 2;
        assert!(
            woke <= bound,
            "{woke} wake-ups in {elapsed:?} (at most {bound})"
        );
        bsp.shutdown(Duration::from_secs(5)).unwrap();
    }
}
