//! Tail sampling: spans are held per trace for a decision wait (default 30 s
//! from the trace's first span), then the policies look at the whole trace.
//!
//! Policies are evaluated in order and the first one that matches keeps the
//! trace (its name is the decision's reason); a trace no policy matches is
//! dropped with reason `no_policy_matched`. `and` combines rules that must all
//! match.
//!
//! The buffer is bounded by a number of traces and an approximate byte size.
//! When it is full the oldest trace is decided early with what has arrived so
//! far: nothing is ever silently lost. Every span comes back out exactly once,
//! in a [`Decided`], kept or dropped, together with the caller's ticket (e.g.
//! its WAL segment), so the caller can release dropped spans from its WAL and
//! forward kept ones. Spans that arrive after their trace was decided follow
//! that decision (remembered in a bounded cache) and come straight back.
//!
//! Time is passed in explicitly (`now`) so the sampler is deterministic in tests.

mod config;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{PolicyConfig, Rule, TailSamplingConfig};
use policy::{compile, Compiled};

use super::SamplingConfigError;
use crate::model::{Span, TraceId};

/// A tail-sampling decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Kept.
    pub sampled: bool,
    /// The matching policy's name, or `no_policy_matched`.
    pub reason: Arc<str>,
}

/// A span with the caller's ticket (e.g. WAL segment) riding along.
#[derive(Clone, Debug, PartialEq)]
pub struct Held<T> {
    /// The span.
    pub span: Span,
    /// The caller's ticket for it.
    pub ticket: T,
}

/// Spans of one trace, decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided<T> {
    /// Trace.
    pub trace_id: TraceId,
    /// The decision (for late spans: the remembered one).
    pub decision: Decision,
    /// The spans with their tickets; forward them if `decision.sampled`,
    /// release them otherwise.
    pub spans: Vec<Held<T>>,
}

/// Counters of the tail sampler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Traces kept.
    pub traces_sampled: u64,
    /// Traces dropped.
    pub traces_dropped: u64,
    /// Spans kept (including late ones).
    pub spans_sampled: u64,
    /// Spans dropped (including late ones).
    pub spans_dropped: u64,
    /// Traces decided before their wait because the buffer was full.
    pub early_decisions: u64,
    /// Of `early_decisions`: because `max_traces` traces were held.
    pub early_decisions_max_traces: u64,
    /// Of `early_decisions`: because `max_bytes` were held.
    pub early_decisions_max_bytes: u64,
    /// Spans that arrived after their trace was decided.
    pub late_spans: u64,
    /// Decisions forgotten to make room in the cache.
    pub decision_cache_evictions: u64,
    /// Decisions per reason.
    pub by_reason: BTreeMap<String, u64>,
}

const NO_MATCH: &str = "no_policy_matched";
struct TraceBuf<T> {
    spans: Vec<Held<T>>,
    bytes: usize,
    generation: u64,
}

/// The tail sampler. Owned by the pipeline worker; `T` is the caller's
/// per-span ticket (use `()` when there is none).
pub struct TailSampler<T> {
    wait: Duration,
    max_traces: usize,
    max_bytes: usize,
    cache_entries: usize,
    policies: Vec<(Arc<str>, Compiled)>,
    traces: HashMap<TraceId, TraceBuf<T>>,
    order: VecDeque<(TraceId, u64, Instant)>,
    bytes: usize,
    next_generation: u64,
    decided: HashMap<TraceId, Decision>,
    decided_order: VecDeque<TraceId>,
    no_match: Arc<str>,
    stats: TailStats,
}

impl<T> std::fmt::Debug for TailSampler<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailSampler")
            .field("traces", &self.traces.len())
            .field("bytes", &self.bytes)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T> TailSampler<T> {
    /// Validates the configuration and builds the sampler.
    pub fn new(config: &TailSamplingConfig) -> Result<Self, SamplingConfigError> {
        if config.policies.is_empty() {
            return Err(SamplingConfigError::Invalid {
                what: "sampling.tail.policies".into(),
                why: "tail sampling needs at least one policy (add `rule = \"always\"` to keep everything)".into(),
            });
        }
        let max_bytes = config.max_bytes.unwrap_or(256 << 20);
        if config.max_traces == 0 || max_bytes == 0 {
            return Err(SamplingConfigError::Invalid {
                what: "sampling.tail.max_traces / max_bytes".into(),
                why: "must be greater than 0".into(),
            });
        }
        let mut policies = Vec::new();
        for p in &config.policies {
            let what = format!("sampling.tail.policies[{}]", p.name);
            policies.push((Arc::from(p.name.as_str()), compile(&p.rule, &what)?));
        }
        Ok(TailSampler {
            wait: Duration::from_millis(config.decision_wait_ms),
            max_traces: config.max_traces,
            max_bytes,
            cache_entries: config.decision_cache_entries,
            policies,
            traces: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_generation: 0,
            decided: HashMap::new(),
            decided_order: VecDeque::new(),
            no_match: Arc::from(NO_MATCH),
            stats: TailStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> &TailStats {
        &self.stats
    }

    /// Traces currently held.
    pub fn held_traces(&self) -> usize {
        self.traces.len()
    }

    /// Approximate bytes currently held.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    fn count(&mut self, d: &Decision, spans: usize) {
        if d.sampled {
            self.stats.spans_sampled += spans as u64;
        } else {
            self.stats.spans_dropped += spans as u64;
        }
    }

    /// Takes a span. Returns what got decided because of it: the span itself
    /// when its trace was already decided, or the oldest traces when the
    /// buffer overflowed.
    pub fn offer(&mut self, span: Span, ticket: T, now: Instant) -> Vec<Decided<T>> {
        let tid = span.trace_id;
        if let Some(d) = self.decided.get(&tid).cloned() {
            self.stats.late_spans += 1;
            self.count(&d, 1);
            return vec![Decided {
                trace_id: tid,
                decision: d,
                spans: vec![Held { span, ticket }],
            }];
        }
        let size = span.heap_bytes();
        self.bytes += size;
        match self.traces.get_mut(&tid) {
            Some(buf) => {
                buf.bytes += size;
                buf.spans.push(Held { span, ticket });
            }
            None => {
                let generation = self.next_generation;
                self.next_generation += 1;
                self.traces.insert(
                    tid,
                    TraceBuf {
                        spans: vec![Held { span, ticket }],
                        bytes: size,
                        generation,
                    },
                );
                self.order.push_back((tid, generation, now));
            }
        }
        let mut out = Vec::new();
        while self.traces.len() > self.max_traces || self.bytes > self.max_bytes {
            let Some((id, generation, _)) = self.order.pop_front() else {
                break;
            };
            if self
                .traces
                .get(&id)
                .is_some_and(|b| b.generation == generation)
            {
                self.stats.early_decisions += 1;
                if self.traces.len() > self.max_traces {
                    self.stats.early_decisions_max_traces += 1;
                } else {
                    self.stats.early_decisions_max_bytes += 1;
                }
                if let Some(d) = self.decide(id, now) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Decides every trace whose wait has elapsed at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Decided<T>> {
        let mut out = Vec::new();
        while let Some(&(id, generation, first)) = self.order.front() {
            if now.saturating_duration_since(first) < self.wait {
                break;
            }
            self.order.pop_front();
            self.decide_if_current(id, generation, now, &mut out);
        }
        out
    }

    /// Decides every held trace now (for shutdown).
    pub fn flush_all(&mut self, now: Instant) -> Vec<Decided<T>> {
        let mut out = Vec::new();
        while let Some((id, generation, _)) = self.order.pop_front() {
            self.decide_if_current(id, generation, now, &mut out);
        }
        out
    }

    /// Decides `id` if the order entry (`generation`) is still the trace's
    /// current one; an older entry is left over from a trace decided and
    /// seen again since.
    fn decide_if_current(
        &mut self,
        id: TraceId,
        generation: u64,
        now: Instant,
        out: &mut Vec<Decided<T>>,
    ) {
        if self
            .traces
            .get(&id)
            .is_some_and(|b| b.generation == generation)
        {
            if let Some(d) = self.decide(id, now) {
                out.push(d);
            }
        }
    }

    fn decide(&mut self, id: TraceId, now: Instant) -> Option<Decided<T>> {
        let buf = self.traces.remove(&id)?;
        self.bytes -= buf.bytes;
        let mut decision = Decision {
            sampled: false,
            reason: self.no_match.clone(),
        };
        for (name, rule) in &mut self.policies {
            if rule.matches(&id, &buf.spans, now) {
                decision = Decision {
                    sampled: true,
                    reason: name.clone(),
                };
                break;
            }
        }
        if decision.sampled {
            self.stats.traces_sampled += 1;
        } else {
            self.stats.traces_dropped += 1;
        }
        *self
            .stats
            .by_reason
            .entry(decision.reason.to_string())
            .or_insert(0) += 1;
        self.count(&decision, buf.spans.len());
        if self.cache_entries > 0 {
            while self.decided.len() >= self.cache_entries {
                let Some(old) = self.decided_order.pop_front() else {
                    break;
                };
                if self.decided.remove(&old).is_some() {
                    self.stats.decision_cache_evictions += 1;
                }
            }
            self.decided.insert(id, decision.clone());
            self.decided_order.push_back(id);
        }
        Some(Decided {
            trace_id: id,
            decision,
            spans: buf.spans,
        })
    }
}
