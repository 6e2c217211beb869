//! The processing pipeline behind the receivers:
//!
//! ```text
//! queue ─► worker thread: rollups (every span) ─► sampling ─► enrich/redact ─► batcher
//!       ─► bounded channel ─► sink task: write with retry ─► release WAL segments
//! ```
//!
//! Spans dropped by sampling are released from the WAL at once; kept spans are
//! released only after the sink committed their batch. Independently, a
//! segment stays while rollup contributions of its spans are only in memory
//! (the aggregator's rollup holds, handed to each rollup batch and released
//! once the sink committed it), and each rollup batch carries the WAL
//! positions it accounts for, which the sink stores with it: at replay those
//! are not counted again (see `rollup::origins`). A slow or failed sink
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

use std::collections::BTreeMap;

use crate::metrics::{Metrics, Source};
use crate::model::{now_ns, Span};
use crate::receiver::limits::LimitsConfig;
use crate::rollup::{RollupAggregator, RollupBatch, SpanOrigin, WrittenOrigins};
use crate::storage::{SpanStore, StorageResult};
use batcher::BatcherConfig;
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
    /// Tail and rollup counters as of the last [`Stages::publish`], so that
    /// only the growth since then is added to the metrics.
    published_tail: sampling::tail::TailStats,
    published_rollups: crate::rollup::RollupStats,
}

impl Stages {
    /// Builds every stage from the configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Stages, StageError> {
        Ok(Stages {
            rollups: RollupAggregator::new(cfg.rollups.clone()),
            head: HeadSampler::new(cfg.sampling.head.clone())?,
            tail: if cfg.sampling.tail.enabled {
                // The buffer's byte bound, derived from limits.memory_limit_mib
                // unless set (an invalid configuration is reported by validate()).
                let mut tail = cfg.sampling.tail.clone();
                if let Ok(b) = cfg.memory_budgets() {
                    tail.max_bytes = Some(b.tail_bytes);
                }
                Some(TailSampler::new(&tail)?)
            } else {
                None
            },
            enricher: Enricher::new(&cfg.enrich)?,
            redactor: Redactor::new(&cfg.redact)?,
            decisions: BTreeMap::new(),
            published_tail: Default::default(),
            published_rollups: Default::default(),
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
        first_span: u64,
        spans: Vec<Span>,
        kept: &mut Vec<(Span, u64)>,
        released: &mut Vec<(u64, u64)>,
    ) {
        let now = Instant::now();
        let (mut head_keep, mut head_drop) = (0u64, 0u64);
        for (i, mut span) in spans.into_iter().enumerate() {
            let origin = SpanOrigin {
                segment,
                ordinal: first_span + i as u64,
            };
            self.rollups.observe_at(&span, Some(origin));
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

    /// Moves decision, tail-sampling, redaction and rollup counts into the
    /// metrics.
    pub fn publish(&mut self, metrics: &Metrics) {
        if let Some(tail) = &self.tail {
            let (now, was) = (tail.stats(), &self.published_tail);
            metrics.tail_early_decisions.add(
                "max_traces",
                now.early_decisions_max_traces - was.early_decisions_max_traces,
            );
            metrics.tail_early_decisions.add(
                "max_bytes",
                now.early_decisions_max_bytes - was.early_decisions_max_bytes,
            );
            metrics
                .tail_late_spans
                .fetch_add(now.late_spans - was.late_spans, Relaxed);
            metrics.tail_decision_cache_evictions.fetch_add(
                now.decision_cache_evictions - was.decision_cache_evictions,
                Relaxed,
            );
            metrics
                .tail_held_traces
                .store(tail.held_traces() as u64, Relaxed);
            metrics
                .tail_held_bytes
                .store(tail.held_bytes() as u64, Relaxed);
            self.published_tail = now.clone();
        }
        let r = &mut self.redactor;
        metrics
            .redact_values
            .add("mask", std::mem::take(&mut r.values_masked));
        metrics
            .redact_values
            .add("hash", std::mem::take(&mut r.values_hashed));
        metrics
            .redact_attributes_dropped
            .fetch_add(std::mem::take(&mut r.attributes_dropped), Relaxed);
        let (now, was) = (self.rollups.stats(), &self.published_rollups);
        metrics
            .rollup_spans_observed
            .fetch_add(now.spans_observed - was.spans_observed, Relaxed);
        metrics
            .rollup_dropped
            .add("series_limit", now.series_dropped - was.series_dropped);
        metrics
            .rollup_dropped
            .add("parent_timeout", now.pending_expired - was.pending_expired);
        metrics
            .rollup_dropped
            .add("pending_full", now.pending_evicted - was.pending_evicted);
        metrics
            .rollup_early_flushes
            .fetch_add(now.early_flushes - was.early_flushes, Relaxed);
        metrics.rollup_replayed_already_stored.fetch_add(
            now.replayed_already_stored - was.replayed_already_stored,
            Relaxed,
        );
        self.published_rollups = now.clone();

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

    /// Applies the aggregator's rollup-hold changes to the WAL: holds first,
    /// then releases, so a segment is never deleted in between. Call before
    /// releasing the spans of the same round.
    fn apply_rollup_holds(&mut self, wal: &Wal) {
        for (seg, d) in self.rollups.take_hold_deltas() {
            if d > 0 {
                wal.hold_rollups(seg, d as u64);
            } else {
                wal.release_rollups(seg, d.unsigned_abs());
            }
        }
    }
}

/// Hands stored rollup origins to the pipeline's aggregator (see
/// [`Pipeline::written_origins_sender`]).
#[derive(Debug, Clone)]
pub struct WrittenOriginsSender(crossbeam_channel::Sender<WrittenOrigins>);

impl WrittenOriginsSender {
    /// Sends them; the aggregator takes them before the next queue item.
    pub fn send(&self, written: WrittenOrigins) {
        let _ = self.0.send(written);
    }
}

/// A running pipeline.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    written_tx: crossbeam_channel::Sender<WrittenOrigins>,
    worker: Option<std::thread::JoinHandle<()>>,
    sink: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the worker thread and the sink task (on the current tokio
    /// runtime). Sink write results are reported to `health` (`/readyz`).
    pub fn start(
        queue: Arc<Queue>,
        wal: Wal,
        store: Arc<dyn SpanStore>,
        metrics: Arc<Metrics>,
        health: Arc<crate::health::Health>,
        cfg: BatcherConfig,
        mut stages: Stages,
    ) -> std::io::Result<Pipeline> {
        let stop = Arc::new(AtomicBool::new(false));
        let (written_tx, written_rx) = crossbeam_channel::bounded::<WrittenOrigins>(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<SinkMsg>(cfg.max_pending_batches);
        let sink = tokio::spawn(sink_task(
            rx,
            store,
            wal.clone(),
            metrics.clone(),
            health,
            cfg.clone(),
        ));
        let stop2 = stop.clone();
        let worker = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                let mut batcher = Batcher::new(
                    cfg.max_spans.unwrap_or(8_192),
                    Duration::from_millis(cfg.max_delay_ms),
                );
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
                            // Sent before replay pushes anything, so it is here
                            // before the first replayed item.
                            if let Ok(w) = written_rx.try_recv() {
                                stages.rollups.set_written(w);
                            }
                            stages.process(
                                item.segment,
                                item.first_span,
                                item.spans,
                                &mut kept,
                                &mut released,
                            )
                        }
                        None if stop2.load(Relaxed) && queue.is_empty() => stopping = true,
                        None => {}
                    }
                    if last_tick.elapsed() >= Duration::from_millis(100) {
                        last_tick = Instant::now();
                        stages.tick(&mut kept, &mut released);
                        stages.publish(&metrics);
                    }
                    stages.apply_rollup_holds(&wal);
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
                        let mut r = stages.take_rollups(stopping);
                        r.wal_instance = wal.instance();
                        // The batch's holds are taken before the aggregator's are let go.
                        stages.apply_rollup_holds(&wal);
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
            written_tx,
            worker: Some(worker),
            sink: Some(sink),
        })
    }

    /// Where to hand the rollup origins a sink already stored for the
    /// segments about to be replayed. Send before replay pushes anything.
    pub fn written_origins_sender(&self) -> WrittenOriginsSender {
        WrittenOriginsSender(self.written_tx.clone())
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
    health: Arc<crate::health::Health>,
    cfg: BatcherConfig,
) {
    let mut prune = OriginPruner {
        last_run: None,
        pruned_below: 0,
    };
    // Span batches in flight: each is committed (or dropped) on its own and
    // releases its own WAL spans, so their order does not matter. A slot is
    // free before the next message is taken, so at most this many batches
    // are held beyond the channel's `max_pending_batches`.
    let max_writes = cfg.max_concurrent_writes.unwrap_or(1).max(1);
    let mut writing = tokio::task::JoinSet::new();
    loop {
        while writing.len() >= max_writes {
            reap(writing.join_next().await);
        }
        let Some(msg) = rx.recv().await else { break };
        match msg {
            SinkMsg::Spans(batch) => {
                let (store, wal, metrics, health, cfg) = (
                    store.clone(),
                    wal.clone(),
                    metrics.clone(),
                    health.clone(),
                    cfg.clone(),
                );
                writing.spawn(async move {
                    write_span_batch(&*store, &wal, &metrics, &health, &cfg, batch).await
                });
            }
            SinkMsg::Rollups(r) => {
                if write_with_retry(&cfg, &metrics, &health, "rollups", || {
                    store.write_rollups(&r)
                })
                .await
                {
                    metrics.rollups_written.fetch_add(1, Relaxed);
                    prune.after_write(&*store, &wal).await;
                }
                // Committed (or given up for good, and counted): the WAL need
                // not keep these segments for the batch any more.
                for seg in r.origin_segments() {
                    wal.release_rollups(seg, 1);
                }
            }
        }
    }
    while let Some(done) = writing.join_next().await {
        reap(Some(done));
    }
}

/// A finished span-batch write: a panic in it goes on as before (it ends
/// the sink task), it is not swallowed.
fn reap(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Writes one span batch (retrying as [`write_with_retry`] does), counts it,
/// and releases its spans from the WAL once committed or given up on.
async fn write_span_batch(
    store: &dyn SpanStore,
    wal: &Wal,
    metrics: &Metrics,
    health: &crate::health::Health,
    cfg: &BatcherConfig,
    batch: SinkBatch,
) {
    let n = batch.spans.len() as u64;
    let ok = write_with_retry(cfg, metrics, health, "spans", || {
        store.write_spans(&batch.spans)
    })
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

/// Deletes stored rollup origins of this WAL's deleted segments now and then
/// (segment ids are never reused, so they are never needed again).
struct OriginPruner {
    last_run: Option<Instant>,
    pruned_below: u64,
}

impl OriginPruner {
    const EVERY: Duration = Duration::from_secs(60);

    async fn after_write(&mut self, store: &dyn SpanStore, wal: &Wal) {
        if self.last_run.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last_run = Some(Instant::now());
        let Some(oldest) = wal.oldest_segment() else {
            return;
        };
        if oldest <= self.pruned_below {
            return;
        }
        match store.prune_rollup_origins(wal.instance(), oldest).await {
            Ok(_) => self.pruned_below = oldest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune stored rollup origins; retrying later")
            }
        }
    }
}

/// Loads the rollup origins the sink stored for the WAL segments about to be
/// replayed, retrying while the sink is unavailable. A sink that refuses the
/// query for good is logged and replay counts everything (which may count
/// some spans twice) rather than not starting.
pub async fn load_written_origins(
    store: &dyn SpanStore,
    instance: u64,
    segments: &[u64],
) -> WrittenOrigins {
    if segments.is_empty() {
        return WrittenOrigins::default();
    }
    let mut delay = Duration::from_millis(100);
    loop {
        match store.rollup_origins(instance, segments).await {
            Ok(rows) => return WrittenOrigins::from_stored(rows),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "cannot load stored rollup origins before replay; retrying");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load stored rollup origins; replayed spans are counted in rollups again");
                return WrittenOrigins::default();
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Writes with exponential backoff: retryable errors are retried until they
/// succeed (the WAL holds the data meanwhile); other errors are tried
/// `max_attempts_non_retryable` times. Returns true on success. Outcomes are
/// reported to `health`: a retryable failure makes `/readyz` report the sink
/// until a write succeeds.
async fn write_with_retry<F, Fut>(
    cfg: &BatcherConfig,
    metrics: &Metrics,
    health: &crate::health::Health,
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
                health.sink_write_ok();
                return true;
            }
            Err(e) if e.is_retryable() => {
                metrics.sink_errors.add("retryable", 1);
                health.sink_write_failed(&e);
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
        // Span ordinals follow the records' span counts, as when they were written.
        let mut first_span = 0u64;
        for rec in records {
            let pos = wal::WalPos {
                segment: seg,
                first_span,
            };
            first_span += rec.spans as u64;
            match crate::receiver::decode(rec.format, &rec.payload, limits) {
                Ok(d) if !d.spans.is_empty() => {
                    let n = d.spans.len() as u64;
                    // Count before pushing so that a release can never precede the add.
                    wal.add_outstanding(seg, n);
                    queue.reserve_blocking(n, d.bytes).push(pos, d.spans);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, KeyValue, SpanKind};

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, attrs: Vec<KeyValue>) -> Span {
        let start_ns = now_ns() - 1_000_000;
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: SpanKind::Server,
            start_ns,
            end_ns: start_ns + 1_000,
            attributes: attrs,
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: Default::default(),
            status_message: String::new(),
            service_name: "svc".into(),
            resource_attributes: vec![],
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    /// Scrapes one sample line, e.g. `name{label="x"}`, from the rendered text.
    fn sample(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    }

    #[test]
    fn internal_counters_reach_metrics() {
        let cfg: crate::config::Config = toml::from_str(
            r#"
            [sampling.tail]
            enabled = true
            max_traces = 1
            decision_cache_entries = 1
            policies = [{ name = "all", rule = "always" }]
            [redact]
            drop_keys = ["password"]
            hash_keys = ["user.id"]
            builtin = ["email"]
            action = "mask"
            hash_key = "k"
            [rollups]
            max_series = 1
            pending_children = 0
            "#,
        )
        .expect("config");
        let mut stages = Stages::from_config(&cfg).expect("stages");
        let metrics = Metrics::default();
        let (mut kept, mut released) = (Vec::new(), Vec::new());
        let attrs = || {
            vec![
                KeyValue::new("password", AttrValue::Str("pw".into())),
                KeyValue::new("user.id", AttrValue::Int(7)),
                KeyValue::new("note", AttrValue::Str("a@b.io and c@d.io".into())),
            ]
        };
        // Trace 1 is held; trace 2 overflows max_traces = 1, deciding 1 early.
        stages.process(
            1,
            0,
            vec![span(1, 1, None, "a", attrs())],
            &mut kept,
            &mut released,
        );
        stages.process(
            1,
            0,
            vec![span(2, 1, None, "b", vec![])],
            &mut kept,
            &mut released,
        );
        // Trace 3 decides 2 early and evicts 1's decision from the 1-entry cache.
        stages.process(
            1,
            0,
            vec![span(3, 1, None, "c", vec![])],
            &mut kept,
            &mut released,
        );
        // A late span of trace 2 follows its cached decision; its parent is
        // unknown to the rollups and pending_children = 0 gives it up.
        stages.process(
            1,
            0,
            vec![span(2, 2, Some(9), "b", vec![])],
            &mut kept,
            &mut released,
        );
        assert_eq!(kept.len(), 3, "traces 1, 2 and the late span of 2");
        stages.publish(&metrics);
        let t = metrics.render();
        assert_eq!(
            sample(
                &t,
                "ferrotrace_tail_sampling_early_decisions_total{bound=\"max_traces\"}"
            ),
            2
        );
        assert_eq!(sample(&t, "ferrotrace_tail_sampling_late_spans_total"), 1);
        assert_eq!(
            sample(
                &t,
                "ferrotrace_tail_sampling_decision_cache_evictions_total"
            ),
            1
        );
        assert_eq!(sample(&t, "ferrotrace_tail_sampling_held_traces"), 1);
        assert!(sample(&t, "ferrotrace_tail_sampling_held_bytes") > 0);
        assert_eq!(
            sample(&t, "ferrotrace_redact_values_total{action=\"mask\"}"),
            2
        );
        assert_eq!(
            sample(&t, "ferrotrace_redact_values_total{action=\"hash\"}"),
            1
        );
        assert_eq!(sample(&t, "ferrotrace_redact_attributes_dropped_total"), 1);
        assert_eq!(sample(&t, "ferrotrace_rollup_spans_observed_total"), 4);
        // Operations a, b, c with max_series = 1: b flushes a early, c is dropped.
        assert_eq!(sample(&t, "ferrotrace_rollup_early_flushes_total"), 1);
        assert!(
            sample(
                &t,
                "ferrotrace_rollup_observations_dropped_total{reason=\"series_limit\"}"
            ) >= 1
        );
        assert_eq!(
            sample(
                &t,
                "ferrotrace_rollup_observations_dropped_total{reason=\"pending_full\"}"
            ),
            1
        );
        assert!(
            t.contains("# HELP ferrotrace_tail_sampling_late_spans_total Spans that arrived after")
        );
        assert!(t.contains("# TYPE ferrotrace_redact_values_total counter"));

        // Publishing again adds only what happened since: trace 4 (redacted
        // once kept) is decided early by trace 5.
        for trace in [4, 5] {
            stages.process(
                1,
                0,
                vec![span(trace, 1, None, "c", attrs())],
                &mut kept,
                &mut released,
            );
        }
        stages.publish(&metrics);
        let t = metrics.render();
        assert_eq!(
            sample(
                &t,
                "ferrotrace_tail_sampling_early_decisions_total{bound=\"max_traces\"}"
            ),
            4
        );
        assert_eq!(sample(&t, "ferrotrace_tail_sampling_late_spans_total"), 1);
        assert_eq!(
            sample(&t, "ferrotrace_redact_values_total{action=\"mask\"}"),
            4
        );
        assert_eq!(sample(&t, "ferrotrace_redact_attributes_dropped_total"), 2);
        assert_eq!(sample(&t, "ferrotrace_rollup_spans_observed_total"), 6);
    }
}
