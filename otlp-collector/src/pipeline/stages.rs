//! The processing between the queue and the batcher, on the worker thread
//! ([`super::worker`]): the rollup aggregator sees every span, then a chain of
//! [`Stage`]s composed from configuration (head sampling, tail sampling,
//! enrichment, redaction) passes on the spans it keeps.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::enrich::{self, Enricher};
use super::redact::{self, Redactor};
use super::sampling::{self, Decided, HeadSampler, TailSampler};
use super::wal::Wal;
use crate::metrics::Metrics;
use crate::model::{now_ns, Span};
use crate::rollup::{RollupAggregator, RollupBatch, SpanOrigin};

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

/// What a stage passes on: kept spans (with their WAL segment as ticket) go
/// to the next stage, dropped ones are released from the WAL.
#[derive(Default)]
pub struct Flow {
    /// Spans passed on, each with its WAL segment.
    pub kept: Vec<(Span, u64)>,
    /// `(segment, spans)` to release from the WAL.
    pub released: Vec<(u64, u64)>,
}

/// One step between the queue and the batcher, in the shape of the
/// OpenTelemetry Collector's `consumer.Traces`: it takes spans and passes on
/// the ones it keeps. A stage runs on the worker thread only.
pub trait Stage: Send {
    /// Takes `spans`: kept ones go to `out.kept` (now, or from a later
    /// [`Stage::tick`] for a stage that holds spans), dropped ones to
    /// `out.released`.
    fn consume(&mut self, spans: Vec<(Span, u64)>, now: Instant, out: &mut Flow);
    /// Time passed: a stage that holds spans may pass some on now.
    fn tick(&mut self, _now: Instant, _out: &mut Flow) {}
    /// Adds the growth of its counters since the last call to `metrics`.
    fn publish(&mut self, _metrics: &Metrics) {}
}

/// Head sampling: a consistent per-trace keep/drop at the trace id ratio.
struct HeadStage {
    sampler: HeadSampler,
    /// Counters as of the last publish, so only the growth is added.
    published: sampling::head::HeadStats,
}

impl Stage for HeadStage {
    fn consume(&mut self, spans: Vec<(Span, u64)>, now: Instant, out: &mut Flow) {
        if self.sampler.keeps_all() {
            // Rate 1 (the default): the batch passes on as it is, without
            // moving each span into a new vector.
            self.sampler.count_all_kept(spans.len() as u64);
            append_moved(&mut out.kept, spans);
            return;
        }
        out.kept.reserve(spans.len());
        for (span, segment) in spans {
            if self.sampler.sample_at(&span, || now) {
                out.kept.push((span, segment));
            } else {
                // One release per segment run, as spans of one item share it.
                match out.released.last_mut() {
                    Some((s, n)) if *s == segment => *n += 1,
                    _ => out.released.push((segment, 1)),
                }
            }
        }
    }

    fn publish(&mut self, metrics: &Metrics) {
        let now = self.sampler.stats().clone();
        let was = std::mem::replace(&mut self.published, now.clone());
        let kept = now.spans_sampled - was.spans_sampled;
        let spared = now.spans_kept_for_error - was.spans_kept_for_error;
        let dropped = now.spans_dropped - was.spans_dropped;
        let over = now.errors_over_limit - was.errors_over_limit;
        metrics
            .sampling_decisions
            .add("head:keep:rate", kept - spared);
        metrics.sampling_decisions.add("head:keep:error", spared);
        metrics
            .sampling_decisions
            .add("head:drop:rate", dropped - over);
        metrics
            .sampling_decisions
            .add("head:drop:error_limit", over);
        metrics.dropped.add("sampled_out_head", dropped);
    }
}

/// Tail sampling: holds a trace's spans (with their WAL segment as ticket)
/// until it is decided.
struct TailStage {
    sampler: TailSampler<u64>,
    decisions: BTreeMap<String, u64>,
    /// Counters as of the last publish, so only the growth is added.
    published: sampling::tail::TailStats,
}

impl TailStage {
    fn take_decided(&mut self, decided: Vec<Decided<u64>>, out: &mut Flow) {
        for d in decided {
            let n = d.spans.len() as u64;
            let verdict = if d.decision.sampled { "keep" } else { "drop" };
            *self
                .decisions
                .entry(format!("tail:{verdict}:{}", d.decision.reason))
                .or_insert(0) += n;
            for h in d.spans {
                if d.decision.sampled {
                    out.kept.push((h.span, h.ticket));
                } else {
                    out.released.push((h.ticket, 1));
                }
            }
        }
    }
}

impl Stage for TailStage {
    fn consume(&mut self, spans: Vec<(Span, u64)>, now: Instant, out: &mut Flow) {
        for (span, segment) in spans {
            let decided = self.sampler.offer(span, segment, now);
            self.take_decided(decided, out);
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Flow) {
        let decided = self.sampler.tick(now);
        self.take_decided(decided, out);
    }

    fn publish(&mut self, metrics: &Metrics) {
        let tail = &self.sampler;
        let (now, was) = (tail.stats(), &self.published);
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
        self.published = now.clone();
        for (k, v) in std::mem::take(&mut self.decisions) {
            metrics.sampling_decisions.add(&k, v);
            if k.contains(":drop:") {
                metrics.dropped.add("sampled_out_tail", v);
            }
        }
    }
}

/// Enrichment: adds or overwrites resource attributes.
struct EnrichStage(Enricher);

/// Appends `spans` to `to`; when `to` is empty the vector itself is moved
/// (a span is a few hundred bytes: copying every one at each stage, and
/// again as the receiving vector grows, was a measurable part of the
/// per-span cost).
fn append_moved(to: &mut Vec<(Span, u64)>, mut spans: Vec<(Span, u64)>) {
    if to.is_empty() {
        *to = spans;
    } else {
        to.append(&mut spans);
    }
}

/// Rewrites every span with `f` and passes them all on.
fn rewrite_all(mut spans: Vec<(Span, u64)>, out: &mut Flow, mut f: impl FnMut(&mut Span)) {
    spans.iter_mut().for_each(|(span, _)| f(span));
    append_moved(&mut out.kept, spans);
}

impl Stage for EnrichStage {
    fn consume(&mut self, spans: Vec<(Span, u64)>, _now: Instant, out: &mut Flow) {
        rewrite_all(spans, out, |s| self.0.apply(s));
    }
}

/// Redaction: masks, hashes or drops attribute values.
struct RedactStage(Redactor);

impl Stage for RedactStage {
    fn consume(&mut self, spans: Vec<(Span, u64)>, _now: Instant, out: &mut Flow) {
        rewrite_all(spans, out, |s| self.0.apply(s));
    }

    fn publish(&mut self, metrics: &Metrics) {
        let r = &mut self.0;
        metrics
            .redact_values
            .add("mask", std::mem::take(&mut r.values_masked));
        metrics
            .redact_values
            .add("hash", std::mem::take(&mut r.values_hashed));
        metrics
            .redact_attributes_dropped
            .fetch_add(std::mem::take(&mut r.attributes_dropped), Relaxed);
    }
}

/// The processing between the queue and the batcher: the rollup aggregator,
/// which sees every span with its WAL position before any stage (it is not a
/// stage: it drops nothing and must count what sampling drops), then the
/// `Stage`s configuration enables, in order: head sampling, tail sampling,
/// enrichment, redaction.
pub struct Stages {
    pub(super) rollups: RollupAggregator,
    /// Adaptive sampling's root-span counts, when `[sampling_api.adaptive]`
    /// is on.
    throughput: Option<Arc<crate::sampling_api::throughput::ThroughputRecorder>>,
    chain: Vec<Box<dyn Stage>>,
    /// False on a router: its backends compute the rollups from every span
    /// they receive; counting here too would count every span twice.
    observe_rollups: bool,
    /// Rollup counters as of the last [`Stages::publish`].
    published_rollups: crate::rollup::RollupStats,
}

impl Stages {
    /// Builds every stage from the configuration; a stage whose section
    /// configures nothing (no tail sampling, no enrich or redact rules) is
    /// left out of the chain.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Stages, StageError> {
        let mut chain: Vec<Box<dyn Stage>> = vec![Box::new(HeadStage {
            sampler: HeadSampler::new(cfg.sampling.head.clone())?,
            published: Default::default(),
        })];
        if cfg.sampling.tail.enabled {
            // The buffer's byte bound, derived from limits.memory_limit_mib
            // unless set (an invalid configuration is reported by validate()).
            let mut tail = cfg.sampling.tail.clone();
            if let Ok(b) = cfg.memory_budgets() {
                tail.max_bytes = Some(b.tail_bytes);
            }
            chain.push(Box::new(TailStage {
                sampler: TailSampler::new(&tail)?,
                decisions: BTreeMap::new(),
                published: Default::default(),
            }));
        }
        let enricher = Enricher::new(&cfg.enrich)?;
        if !enricher.is_noop() {
            chain.push(Box::new(EnrichStage(enricher)));
        }
        let redactor = Redactor::new(&cfg.redact)?;
        if !redactor.is_noop() {
            chain.push(Box::new(RedactStage(redactor)));
        }
        Ok(Stages {
            rollups: RollupAggregator::new(cfg.rollups.clone()),
            throughput: None,
            chain,
            observe_rollups: true,
            published_rollups: Default::default(),
        })
    }

    /// Counts root spans' adjusted throughput into `recorder` (adaptive sampling).
    pub fn set_throughput(
        &mut self,
        recorder: Arc<crate::sampling_api::throughput::ThroughputRecorder>,
    ) {
        self.throughput = Some(recorder);
    }

    /// A router's stages: none, and no rollups. Every span is forwarded as
    /// received; the backend that owns its trace samples, enriches, redacts
    /// and counts it, seeing the whole trace.
    pub fn for_router(cfg: &crate::config::Config) -> Stages {
        Stages {
            rollups: RollupAggregator::new(cfg.rollups.clone()),
            throughput: None,
            chain: Vec::new(),
            observe_rollups: false,
            published_rollups: Default::default(),
        }
    }

    /// Runs `spans` through the chain from stage `from` on.
    fn run(
        &mut self,
        from: usize,
        mut spans: Vec<(Span, u64)>,
        now: Instant,
        kept: &mut Vec<(Span, u64)>,
        released: &mut Vec<(u64, u64)>,
    ) {
        for stage in &mut self.chain[from..] {
            if spans.is_empty() {
                return;
            }
            let mut flow = Flow::default();
            stage.consume(spans, now, &mut flow);
            released.append(&mut flow.released);
            spans = flow.kept;
        }
        append_moved(kept, spans);
    }

    /// Runs a queue item through the stages: kept spans with their segment
    /// go to `kept`, dropped ones to `released`; held spans (tail sampling)
    /// appear later from [`Stages::tick`].
    pub(super) fn process(
        &mut self,
        segment: u64,
        first_span: u64,
        spans: Vec<Span>,
        kept: &mut Vec<(Span, u64)>,
        released: &mut Vec<(u64, u64)>,
    ) {
        let now = Instant::now();
        if self.observe_rollups {
            // Root spans with their adjusted counts, for adaptive sampling.
            let mut roots = Vec::new();
            for (i, span) in spans.iter().enumerate() {
                let origin = SpanOrigin {
                    segment,
                    ordinal: first_span + i as u64,
                };
                let w = self.rollups.observe_at(span, Some(origin));
                if self.throughput.is_some() && span.parent_span_id.is_none() {
                    roots.push((span.service_name.as_str(), span.name.as_str(), w));
                }
            }
            if let (Some(t), false) = (&self.throughput, roots.is_empty()) {
                t.record(roots);
            }
        }
        let spans = spans.into_iter().map(|s| (s, segment)).collect();
        self.run(0, spans, now, kept, released);
    }

    /// Lets stages that hold spans pass on what is due (tail sampling:
    /// traces whose wait has elapsed); what they pass on runs through the
    /// stages after them.
    pub(super) fn tick(&mut self, kept: &mut Vec<(Span, u64)>, released: &mut Vec<(u64, u64)>) {
        let now = Instant::now();
        for i in 0..self.chain.len() {
            let mut flow = Flow::default();
            self.chain[i].tick(now, &mut flow);
            released.append(&mut flow.released);
            if !flow.kept.is_empty() {
                self.run(i + 1, flow.kept, now, kept, released);
            }
        }
    }

    /// Moves decision, tail-sampling, redaction and rollup counts into the
    /// metrics.
    pub fn publish(&mut self, metrics: &Metrics) {
        for stage in &mut self.chain {
            stage.publish(metrics);
        }
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
        for (source, now, was) in [
            ("threshold", now.weight_threshold, was.weight_threshold),
            ("jaeger", now.weight_jaeger, was.weight_jaeger),
            ("malformed", now.weight_malformed, was.weight_malformed),
        ] {
            metrics.rollup_weight_sources.add(source, now - was);
        }
        metrics
            .rollup_early_flushes
            .fetch_add(now.early_flushes - was.early_flushes, Relaxed);
        metrics
            .rollup_wal_full_flushes
            .fetch_add(now.wal_full_flushes - was.wal_full_flushes, Relaxed);
        metrics.rollup_replayed_already_stored.fetch_add(
            now.replayed_already_stored - was.replayed_already_stored,
            Relaxed,
        );
        self.published_rollups = now.clone();
    }

    /// Rollups of minutes that are complete (`all`: everything, at shutdown;
    /// `wal_full`: also every unfinished minute of spans that came through
    /// the WAL, so that their segments can go).
    pub(super) fn take_rollups(&mut self, all: bool, wal_full: bool) -> RollupBatch {
        if all {
            self.rollups.drain_all()
        } else if wal_full {
            self.rollups.drain_for_full_wal(now_ns())
        } else {
            self.rollups.drain(now_ns())
        }
    }

    /// Applies the aggregator's rollup-hold changes to the WAL: holds first,
    /// then releases, so a segment is never deleted in between. Call before
    /// releasing the spans of the same round.
    pub(super) fn apply_rollup_holds(&mut self, wal: &Wal) {
        for (seg, d) in self.rollups.take_hold_deltas() {
            if d > 0 {
                wal.hold_rollups(seg, d as u64);
            } else {
                wal.release_rollups(seg, d.unsigned_abs());
            }
        }
    }
}
