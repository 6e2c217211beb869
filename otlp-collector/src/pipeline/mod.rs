//! The processing pipeline behind the receivers:
//!
//! ```text
//! queue ─► worker thread: rollups (every span) ─► sampling ─► enrich/redact ─► batcher
//!       ─► bounded channel ─► sink task: write with retry ─► release WAL segments
//! ```
//!
//! Spans dropped by sampling are released from the WAL at once; kept spans are
//! released only after the sink committed their batch. A slow or failed sink
//! blocks the worker (the channel is bounded), the queue fills, and receivers
//! answer 429 / RESOURCE_EXHAUSTED: backpressure instead of memory growth.

pub mod batcher;
pub mod enrich;
pub mod queue;
pub mod redact;
pub mod sampling;
pub mod wal;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use std::collections::BTreeMap;

use crate::config::{BatcherConfig, LimitsConfig};
use crate::metrics::{Metrics, Source};
use crate::model::{Span, SpanKind, TraceId};
use crate::rollup::{RollupAggregator, RollupBatch};
use crate::storage::{
    DependencyEdge, LatencyPoint, LatencyQuery, Operation, RetentionReport, SearchPage, SpanStore,
    StorageError, StorageResult, TimeRange, TraceQuery,
};
use batcher::{Batcher, SinkBatch};
use enrich::Enricher;
use queue::Queue;
use redact::Redactor;
use sampling::{Decided, HeadSampler, TailSampler};
use wal::Wal;

/// What travels from the worker to the sink task.
enum SinkMsg {
    Spans(SinkBatch),
    Rollups(RollupBatch),
}

/// Why a pipeline stage could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Bad `[sampling]`.
    #[error(transparent)]
    Sampling(#[from] sampling::SamplingConfigError),
    /// Bad `[enrich]`.
    #[error(transparent)]
    Enrich(#[from] enrich::EnrichConfigError),
    /// Bad `[redact]`.
    #[error(transparent)]
    Redact(#[from] redact::RedactConfigError),
}

/// The processing stages between the queue and the batcher: rollups (every
/// span, before sampling), head sampling, tail sampling (holds spans with
/// their WAL segment as ticket), enrichment and redaction.
pub struct Stages {
    rollups: RollupAggregator,
    head: HeadSampler,
    tail: Option<TailSampler<u64>>,
    enricher: Enricher,
    redactor: Redactor,
    decisions: BTreeMap<String, u64>,
}

impl Stages {
    /// Builds every stage from the configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Stages, StageError> {
        Ok(Stages {
            rollups: RollupAggregator::new(cfg.rollups.clone()),
            head: HeadSampler::new(cfg.sampling.head.clone())?,
            tail: if cfg.sampling.tail.enabled {
                Some(TailSampler::new(&cfg.sampling.tail)?)
            } else {
                None
            },
            enricher: Enricher::new(&cfg.enrich)?,
            redactor: Redactor::new(&cfg.redact)?,
            decisions: BTreeMap::new(),
        })
    }

    fn finish(&mut self, span: &mut Span) {
        if !self.enricher.is_noop() {
            self.enricher.apply(span);
        }
        if !self.redactor.is_noop() {
            self.redactor.apply(span);
        }
    }

    fn take_decided(
        &mut self,
        decided: Vec<Decided<u64>>,
        kept: &mut Vec<(Span, u64)>,
        released: &mut Vec<(u64, u64)>,
    ) {
        for d in decided {
            let n = d.spans.len() as u64;
            let verdict = if d.decision.sampled { "keep" } else { "drop" };
            *self
                .decisions
                .entry(format!("tail:{verdict}:{}", d.decision.reason))
                .or_insert(0) += n;
            for h in d.spans {
                if d.decision.sampled {
                    let mut span = h.span;
                    self.finish(&mut span);
                    kept.push((span, h.ticket));
                } else {
                    released.push((h.ticket, 1));
                }
            }
        }
    }

    /// Runs a queue item through the stages: kept spans with their segment
    /// go to `kept`, dropped ones to `released`; held spans (tail sampling)
    /// appear later from [`Stages::tick`].
    fn process(
        &mut self,
        segment: u64,
        spans: Vec<Span>,
        kept: &mut Vec<(Span, u64)>,
        released: &mut Vec<(u64, u64)>,
    ) {
        let now = Instant::now();
        let (mut head_keep, mut head_drop) = (0u64, 0u64);
        for mut span in spans {
            self.rollups.observe(&span);
            if !self.head.sample(&span) {
                head_drop += 1;
                continue;
            }
            head_keep += 1;
            match self.tail.as_mut() {
                Some(tail) => {
                    let decided = tail.offer(span, segment, now);
                    self.take_decided(decided, kept, released);
                }
                None => {
                    self.finish(&mut span);
                    kept.push((span, segment));
                }
            }
        }
        if head_drop > 0 {
            released.push((segment, head_drop));
            *self.decisions.entry("head:drop:rate".into()).or_insert(0) += head_drop;
        }
        *self.decisions.entry("head:keep:rate".into()).or_insert(0) += head_keep;
    }

    /// Decides tail-sampled traces whose wait has elapsed.
    fn tick(&mut self, kept: &mut Vec<(Span, u64)>, released: &mut Vec<(u64, u64)>) {
        if let Some(tail) = self.tail.as_mut() {
            let decided = tail.tick(Instant::now());
            self.take_decided(decided, kept, released);
        }
    }

    /// Moves decision counts into the metrics.
    fn publish(&mut self, metrics: &Metrics) {
        for (k, v) in std::mem::take(&mut self.decisions) {
            metrics.sampling_decisions.add(&k, v);
            if k.contains(":drop:") {
                metrics.dropped.add(
                    if k.starts_with("head") {
                        "sampled_out_head"
                    } else {
                        "sampled_out_tail"
                    },
                    v,
                );
            }
        }
    }

    /// Rollups of minutes that are complete (`all`: everything, at shutdown).
    fn take_rollups(&mut self, all: bool) -> RollupBatch {
        if all {
            self.rollups.drain_all()
        } else {
            self.rollups.drain(now_ns())
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A running pipeline.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
    sink: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the worker thread and the sink task (on the current tokio runtime).
    pub fn start(
        queue: Arc<Queue>,
        wal: Wal,
        store: Arc<dyn SpanStore>,
        metrics: Arc<Metrics>,
        cfg: BatcherConfig,
        mut stages: Stages,
    ) -> std::io::Result<Pipeline> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::mpsc::channel::<SinkMsg>(cfg.max_pending_batches);
        let sink = tokio::spawn(sink_task(
            rx,
            store,
            wal.clone(),
            metrics.clone(),
            cfg.clone(),
        ));
        let stop2 = stop.clone();
        let worker = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                let mut batcher =
                    Batcher::new(cfg.max_spans, Duration::from_millis(cfg.max_delay_ms));
                let rollup_every = Duration::from_millis(cfg.rollup_flush_ms.max(1));
                let mut last_rollup = Instant::now();
                let mut last_tick = Instant::now();
                let mut kept: Vec<(Span, u64)> = Vec::new();
                let mut released: Vec<(u64, u64)> = Vec::new();
                loop {
                    let wait = batcher
                        .time_left()
                        .unwrap_or(Duration::from_millis(50))
                        .min(Duration::from_millis(50));
                    let mut stopping = false;
                    match queue.pop(wait) {
                        Some(item) => {
                            stages.process(item.segment, item.spans, &mut kept, &mut released)
                        }
                        None if stop2.load(Relaxed) && queue.is_empty() => stopping = true,
                        None => {}
                    }
                    if last_tick.elapsed() >= Duration::from_millis(100) {
                        last_tick = Instant::now();
                        stages.tick(&mut kept, &mut released);
                        stages.publish(&metrics);
                    }
                    for (seg, n) in released.drain(..) {
                        wal.release(seg, n);
                    }
                    for (span, seg) in kept.drain(..) {
                        batcher.add(span, seg);
                        if batcher.ready()
                            && tx.blocking_send(SinkMsg::Spans(batcher.take())).is_err()
                        {
                            return;
                        }
                    }
                    if (stopping || batcher.ready())
                        && !batcher.is_empty()
                        && tx.blocking_send(SinkMsg::Spans(batcher.take())).is_err()
                    {
                        return;
                    }
                    if stopping || last_rollup.elapsed() >= rollup_every {
                        last_rollup = Instant::now();
                        let r = stages.take_rollups(stopping);
                        if !r.is_empty() && tx.blocking_send(SinkMsg::Rollups(r)).is_err() {
                            return;
                        }
                    }
                    if stopping {
                        // Spans still held by tail sampling stay in the WAL and are replayed at next start.
                        stages.publish(&metrics);
                        return;
                    }
                }
            })?;
        Ok(Pipeline {
            stop,
            worker: Some(worker),
            sink: Some(sink),
        })
    }

    /// Drains the queue into the sink, waiting at most `timeout`. Whatever is
    /// not committed by then stays in the WAL and is replayed at next start.
    /// Returns true if everything drained.
    pub async fn drain(&mut self, timeout: Duration) -> bool {
        self.stop.store(true, Relaxed);
        let deadline = tokio::time::Instant::now() + timeout;
        let worker = self.worker.take();
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(w) = worker {
                let _ = w.join();
            }
        });
        if tokio::time::timeout_at(deadline, joined).await.is_err() {
            return false;
        }
        match self.sink.take() {
            Some(s) => tokio::time::timeout_at(deadline, s).await.is_ok(),
            None => true,
        }
    }
}

async fn sink_task(
    mut rx: tokio::sync::mpsc::Receiver<SinkMsg>,
    store: Arc<dyn SpanStore>,
    wal: Wal,
    metrics: Arc<Metrics>,
    cfg: BatcherConfig,
) {
    while let Some(msg) = rx.recv().await {
        match msg {
            SinkMsg::Spans(batch) => {
                let n = batch.spans.len() as u64;
                let ok =
                    write_with_retry(&cfg, &metrics, "spans", || store.write_spans(&batch.spans))
                        .await;
                if ok {
                    metrics.sink_spans_written.fetch_add(n, Relaxed);
                } else {
                    metrics.dropped.add("sink_rejected", n);
                }
                for (seg, c) in batch.segments {
                    wal.release(seg, c);
                }
            }
            SinkMsg::Rollups(r) => {
                if write_with_retry(&cfg, &metrics, "rollups", || store.write_rollups(&r)).await {
                    metrics.rollups_written.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// Writes with exponential backoff: retryable errors are retried until they
/// succeed (the WAL holds the data meanwhile); other errors are tried
/// `max_attempts_non_retryable` times. Returns true on success.
async fn write_with_retry<F, Fut>(
    cfg: &BatcherConfig,
    metrics: &Metrics,
    what: &str,
    mut op: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StorageResult<()>>,
{
    let mut delay = Duration::from_millis(cfg.retry_initial_ms.max(1));
    let mut fatal_attempts = 0u32;
    loop {
        let started = Instant::now();
        match op().await {
            Ok(()) => {
                metrics.sink_write_latency.observe(started.elapsed());
                return true;
            }
            Err(e) if e.is_retryable() => {
                metrics.sink_errors.add("retryable", 1);
                tracing::warn!(error = %e, what, retry_in_ms = delay.as_millis() as u64, "sink write failed; retrying");
            }
            Err(e) => {
                metrics.sink_errors.add("fatal", 1);
                fatal_attempts += 1;
                if fatal_attempts >= cfg.max_attempts_non_retryable {
                    tracing::error!(error = %e, what, attempts = fatal_attempts, "sink rejected the batch; dropping it");
                    return false;
                }
                tracing::warn!(error = %e, what, "sink rejected the batch; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(cfg.retry_max_ms.max(1)));
    }
}

/// Replays WAL segments into the queue (waiting for room, never dropping), then
/// seals them so they are deleted once committed. Returns the spans replayed.
pub fn replay(
    wal: &Wal,
    queue: &Arc<Queue>,
    segments: &[u64],
    limits: &LimitsConfig,
    metrics: &Metrics,
) -> u64 {
    let mut total = 0u64;
    for &seg in segments {
        let records = match wal.read_segment(seg) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(segment = seg, error = %e, "cannot read WAL segment; leaving it in place");
                continue;
            }
        };
        for rec in records {
            match crate::receiver::decode(rec.format, &rec.payload, limits) {
                Ok(d) if !d.spans.is_empty() => {
                    let n = d.spans.len() as u64;
                    // Count before pushing so that a release can never precede the add.
                    wal.add_outstanding(seg, n);
                    queue.reserve_blocking(n, d.bytes).push(seg, d.spans);
                    metrics
                        .source(Source::WalReplay)
                        .accepted
                        .fetch_add(n, Relaxed);
                    total += n;
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.wal_corrupt_records.fetch_add(1, Relaxed);
                    tracing::warn!(segment = seg, error = %e, "undecodable WAL record skipped");
                }
            }
        }
        wal.finish_replay(seg);
    }
    total
}

/// A sink that discards everything: for benchmarking the ingest path only
/// (`--storage null`). Queries return nothing.
#[derive(Debug, Default)]
pub struct NullStore;

#[async_trait]
impl SpanStore for NullStore {
    fn name(&self) -> &'static str {
        "null"
    }
    async fn write_spans(&self, _spans: &[Span]) -> StorageResult<()> {
        Ok(())
    }
    async fn write_rollups(&self, _rollups: &RollupBatch) -> StorageResult<()> {
        Ok(())
    }
    async fn get_trace(
        &self,
        _trace_id: TraceId,
        _range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        Ok(Vec::new())
    }
    async fn search(&self, _query: &TraceQuery) -> StorageResult<SearchPage> {
        Ok(SearchPage::default())
    }
    async fn services(&self, _range: TimeRange) -> StorageResult<Vec<String>> {
        Ok(Vec::new())
    }
    async fn operations(&self, _service: &str, _range: TimeRange) -> StorageResult<Vec<Operation>> {
        Ok(Vec::new())
    }
    async fn dependencies(&self, _range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        Ok(Vec::new())
    }
    async fn latency(&self, _query: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        Ok(Vec::new())
    }
    async fn exact_percentiles(
        &self,
        _service: &str,
        _operation: Option<&str>,
        _kinds: &[SpanKind],
        _range: TimeRange,
        _qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        Ok(Vec::new())
    }
    async fn apply_retention(&self, _cutoff_ns: u64) -> StorageResult<RetentionReport> {
        Err(StorageError::Backend("the null sink stores nothing".into()))
    }
}
