//! The processing stages between the queue and the batcher, built from
//! configuration: rollups (every span, before sampling), head sampling, tail
//! sampling, enrichment and redaction. They run in this fixed order on the
//! worker thread ([`super::worker`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
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

/// The processing stages between the queue and the batcher: rollups (every
/// span, before sampling), head sampling, tail sampling (holds spans with
/// their WAL segment as ticket), enrichment and redaction.
pub struct Stages {
    pub(super) rollups: RollupAggregator,
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
    pub(super) fn process(
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
    pub(super) fn tick(&mut self, kept: &mut Vec<(Span, u64)>, released: &mut Vec<(u64, u64)>) {
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
    pub(super) fn take_rollups(&mut self, all: bool) -> RollupBatch {
        if all {
            self.rollups.drain_all()
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
