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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{check_rate, SamplingConfigError};
use crate::model::{AttrValue, Span, TraceId};

/// `[sampling.tail]` configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// Tail sampling on (default false).
    pub enabled: bool,
    /// How long a trace is held after its first span, in ms (default 30 000).
    pub decision_wait_ms: u64,
    /// Traces held at once (default 50 000).
    pub max_traces: usize,
    /// Approximate bytes of spans held at once. Unset: a quarter of
    /// `limits.memory_limit_mib` in the collector (see
    /// `Config::memory_budgets`), 256 MiB for a sampler built alone.
    pub max_bytes: Option<usize>,
    /// Decided traces remembered so late spans follow their decision
    /// (default 100 000).
    pub decision_cache_entries: usize,
    /// Policies, first match wins.
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            enabled: false,
            decision_wait_ms: 30_000,
            max_traces: 50_000,
            max_bytes: None,
            decision_cache_entries: 100_000,
            policies: Vec::new(),
        }
    }
}

/// One named policy.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name, reported as the decision's reason and in metrics.
    pub name: String,
    /// What the trace must satisfy to be kept.
    pub rule: Rule,
}

/// A tail-sampling rule over a whole trace.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Always matches (a catch-all at the end of the list).
    Always,
    /// Any span has status `Error`.
    StatusError,
    /// Latest end minus earliest start of the held spans is at least this.
    Latency {
        /// Threshold in ms.
        threshold_ms: u64,
    },
    /// Any span (span or resource attributes) has `key` equal to one of `values`.
    StringAttribute {
        /// Attribute key.
        key: String,
        /// Accepted values.
        values: Vec<String>,
    },
    /// Any span has a numeric (int or double) `key` within `[min, max]`.
    NumericAttribute {
        /// Attribute key.
        key: String,
        /// Inclusive lower bound (none: unbounded).
        #[serde(default)]
        min: Option<f64>,
        /// Inclusive upper bound (none: unbounded).
        #[serde(default)]
        max: Option<f64>,
    },
    /// Keeps this fraction of traces, consistently by trace id (using the
    /// upper 8 bytes, so it is independent of head sampling, which uses the
    /// lower 8).
    Probabilistic {
        /// Fraction in `[0, 1]`.
        rate: f64,
    },
    /// Keeps traces while their spans fit in a budget of spans per second
    /// (token bucket with one second of burst).
    RateLimiting {
        /// Spans per second.
        spans_per_second: u64,
    },
    /// All rules match (evaluated in order; later ones, e.g. a rate limit,
    /// are consulted only when earlier ones matched).
    And {
        /// The rules.
        rules: Vec<Rule>,
    },
    /// At least one rule matches (evaluated in order, stopping at the first
    /// that matches, so a later rate limit spends budget only on traces the
    /// earlier rules did not keep). Nests inside `and` and vice versa, e.g.
    /// "gold customers that failed or were slow". `any` is accepted as an alias.
    #[serde(alias = "any")]
    FirstMatch {
        /// The rules.
        rules: Vec<Rule>,
    },
}

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

#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

#[derive(Debug)]
enum Compiled {
    Always,
    StatusError,
    Latency(u64),
    Str(String, HashSet<String>),
    Num(String, f64, f64),
    Prob(f64),
    Rate(TokenBucket),
    And(Vec<Compiled>),
    FirstMatch(Vec<Compiled>),
}

fn compile(rule: &Rule, what: &str) -> Result<Compiled, SamplingConfigError> {
    Ok(match rule {
        Rule::Always => Compiled::Always,
        Rule::StatusError => Compiled::StatusError,
        Rule::Latency { threshold_ms } => Compiled::Latency(threshold_ms.saturating_mul(1_000_000)),
        Rule::StringAttribute { key, values } => {
            Compiled::Str(key.clone(), values.iter().cloned().collect())
        }
        Rule::NumericAttribute { key, min, max } => {
            let (lo, hi) = (
                min.unwrap_or(f64::NEG_INFINITY),
                max.unwrap_or(f64::INFINITY),
            );
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return Err(SamplingConfigError::Invalid {
                    what: what.to_string(),
                    why: format!("numeric_attribute needs min <= max, got {min:?}..{max:?}"),
                });
            }
            Compiled::Num(key.clone(), lo, hi)
        }
        Rule::Probabilistic { rate } => {
            check_rate(what, *rate)?;
            Compiled::Prob(*rate)
        }
        Rule::RateLimiting { spans_per_second } => {
            let rate = *spans_per_second as f64;
            Compiled::Rate(TokenBucket {
                rate,
                tokens: rate,
                last: None,
            })
        }
        Rule::And { rules } | Rule::FirstMatch { rules } => {
            let and = matches!(rule, Rule::And { .. });
            if rules.is_empty() {
                return Err(SamplingConfigError::Invalid {
                    what: what.to_string(),
                    why: format!(
                        "`{}` needs at least one rule",
                        if and { "and" } else { "first_match" }
                    ),
                });
            }
            let compiled = rules
                .iter()
                .map(|r| compile(r, what))
                .collect::<Result<_, _>>()?;
            if and {
                Compiled::And(compiled)
            } else {
                Compiled::FirstMatch(compiled)
            }
        }
    })
}

fn numeric(v: &AttrValue) -> Option<f64> {
    match v {
        AttrValue::Int(i) => Some(*i as f64),
        AttrValue::Double(d) => Some(*d),
        _ => None,
    }
}

fn attrs<'a>(s: &'a Span, key: &'a str) -> impl Iterator<Item = &'a AttrValue> + 'a {
    s.attributes
        .iter()
        .chain(s.resource_attributes.iter())
        .filter(move |kv| kv.key == key)
        .map(|kv| &kv.value)
}

impl Compiled {
    fn matches<T>(&mut self, trace_id: &TraceId, spans: &[Held<T>], now: Instant) -> bool {
        match self {
            Compiled::Always => true,
            Compiled::StatusError => spans.iter().any(|h| h.span.is_error()),
            Compiled::Latency(threshold) => {
                let start = spans.iter().map(|h| h.span.start_ns).min().unwrap_or(0);
                let end = spans.iter().map(|h| h.span.end_ns).max().unwrap_or(0);
                end.saturating_sub(start) >= *threshold
            }
            Compiled::Str(key, values) => spans.iter().any(|h| {
                attrs(&h.span, key).any(|v| matches!(v, AttrValue::Str(s) if values.contains(s)))
            }),
            Compiled::Num(key, lo, hi) => spans.iter().any(|h| {
                attrs(&h.span, key)
                    .filter_map(numeric)
                    .any(|x| x >= *lo && x <= *hi)
            }),
            Compiled::Prob(rate) => {
                let mut hi = *trace_id;
                hi.rotate_left(8);
                ferrotrace::trace::sampler::trace_id_ratio_sampled(&hi, *rate)
            }
            Compiled::Rate(b) => {
                if let Some(last) = b.last {
                    let dt = now.saturating_duration_since(last).as_secs_f64();
                    b.tokens = (b.tokens + dt * b.rate).min(b.rate);
                }
                b.last = Some(now);
                // A trace larger than one second of budget needs a full bucket.
                let need = (spans.len() as f64).min(b.rate);
                if b.rate > 0.0 && b.tokens >= need {
                    b.tokens -= need;
                    true
                } else {
                    false
                }
            }
            Compiled::And(rules) => rules.iter_mut().all(|r| r.matches(trace_id, spans, now)),
            Compiled::FirstMatch(rules) => {
                rules.iter_mut().any(|r| r.matches(trace_id, spans, now))
            }
        }
    }
}

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
        out
    }

    /// Decides every held trace now (for shutdown).
    pub fn flush_all(&mut self, now: Instant) -> Vec<Decided<T>> {
        let mut out = Vec::new();
        while let Some((id, generation, _)) = self.order.pop_front() {
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
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyValue, StatusCode};

    fn span(trace: u8, id: u8, start: u64, dur: u64) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: "op".into(),
            kind: Default::default(),
            start_ns: start,
            end_ns: start + dur,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            service_name: "svc".into(),
            resource_attributes: vec![],
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    fn cfg(policies: Vec<(&str, Rule)>) -> TailSamplingConfig {
        TailSamplingConfig {
            enabled: true,
            policies: policies
                .into_iter()
                .map(|(n, r)| PolicyConfig {
                    name: n.into(),
                    rule: r,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ids<T>(v: &[Decided<T>]) -> Vec<(u8, bool, String, usize)> {
        v.iter()
            .map(|d| {
                (
                    d.trace_id[0],
                    d.decision.sampled,
                    d.decision.reason.to_string(),
                    d.spans.len(),
                )
            })
            .collect()
    }

    #[test]
    fn holds_until_wait_then_first_match_decides() {
        let mut t = TailSampler::<u32>::new(&cfg(vec![
            ("errors", Rule::StatusError),
            ("slow", Rule::Latency { threshold_ms: 100 }),
        ]))
        .expect("config");
        let t0 = Instant::now();
        let mut e = span(1, 1, 0, 10);
        e.status_code = StatusCode::Error;
        assert!(t.offer(span(1, 2, 0, 5), 10, t0).is_empty());
        assert!(t.offer(e, 11, t0).is_empty());
        assert!(t.offer(span(2, 1, 0, 50_000_000), 12, t0).is_empty());
        assert!(t
            .offer(span(2, 2, 200_000_000, 1), 13, t0 + Duration::from_secs(1))
            .is_empty());
        assert!(t
            .offer(span(3, 1, 0, 1_000), 14, t0 + Duration::from_secs(2))
            .is_empty());
        assert!(t.tick(t0 + Duration::from_millis(29_999)).is_empty());
        let d = t.tick(t0 + Duration::from_secs(31));
        assert_eq!(
            ids(&d),
            vec![(1, true, "errors".into(), 2), (2, true, "slow".into(), 2)]
        );
        assert_eq!(
            d[0].spans.iter().map(|h| h.ticket).collect::<Vec<_>>(),
            vec![10, 11]
        );
        let d = t.tick(t0 + Duration::from_secs(32));
        assert_eq!(ids(&d), vec![(3, false, NO_MATCH.into(), 1)]);
        // Late spans follow the decision and come straight back.
        let late = t.offer(span(3, 9, 0, 1), 99, t0 + Duration::from_secs(40));
        assert_eq!(ids(&late), vec![(3, false, NO_MATCH.into(), 1)]);
        let late = t.offer(span(1, 9, 0, 1), 98, t0 + Duration::from_secs(40));
        assert_eq!(ids(&late), vec![(1, true, "errors".into(), 1)]);
        let s = t.stats();
        assert_eq!(
            (
                s.traces_sampled,
                s.traces_dropped,
                s.spans_sampled,
                s.spans_dropped,
                s.late_spans
            ),
            (2, 1, 5, 2, 2)
        );
        assert_eq!(s.by_reason.get("errors"), Some(&1));
        assert_eq!(t.held_traces(), 0);
        assert_eq!(t.held_bytes(), 0);
    }

    #[test]
    fn attribute_rules_and_combinations() {
        let mut t = TailSampler::<()>::new(&cfg(vec![
            (
                "vip-and-big",
                Rule::And {
                    rules: vec![
                        Rule::StringAttribute {
                            key: "tier".into(),
                            values: vec!["vip".into()],
                        },
                        Rule::NumericAttribute {
                            key: "size".into(),
                            min: Some(10.0),
                            max: Some(20.0),
                        },
                    ],
                },
            ),
            (
                "status",
                Rule::NumericAttribute {
                    key: "http.status_code".into(),
                    min: Some(500.0),
                    max: None,
                },
            ),
        ]))
        .expect("config");
        let now = Instant::now();
        let mut a = span(1, 1, 0, 1);
        a.resource_attributes
            .push(KeyValue::new("tier", AttrValue::Str("vip".into())));
        a.attributes
            .push(KeyValue::new("size", AttrValue::Double(12.5)));
        let mut b = span(2, 1, 0, 1);
        b.attributes
            .push(KeyValue::new("tier", AttrValue::Str("vip".into())));
        b.attributes.push(KeyValue::new("size", AttrValue::Int(21)));
        let mut c = span(3, 1, 0, 1);
        c.attributes
            .push(KeyValue::new("http.status_code", AttrValue::Int(503)));
        let mut d = span(4, 1, 0, 1);
        d.attributes.push(KeyValue::new(
            "http.status_code",
            AttrValue::Str("503".into()),
        ));
        for s in [a, b, c, d] {
            t.offer(s, (), now);
        }
        let got = ids(&t.flush_all(now));
        assert_eq!(
            got,
            vec![
                (1, true, "vip-and-big".into(), 1),
                (2, false, NO_MATCH.into(), 1),
                (3, true, "status".into(), 1),
                (4, false, NO_MATCH.into(), 1)
            ]
        );
    }

    #[test]
    fn probabilistic_is_consistent_and_near_rate() {
        let mut t = TailSampler::<()>::new(&cfg(vec![("p", Rule::Probabilistic { rate: 0.3 })]))
            .expect("config");
        let now = Instant::now();
        let mut kept = 0;
        for i in 0..4000u32 {
            let mut s = span(0, 1, 0, 1);
            s.trace_id[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
            s.trace_id[4..8].copy_from_slice(&i.to_be_bytes());
            let again = s.trace_id;
            t.offer(s, (), now);
            let d = t.flush_all(now);
            kept += d[0].decision.sampled as u32;
            // Same trace id, fresh sampler: same answer.
            let mut u =
                TailSampler::<()>::new(&cfg(vec![("p", Rule::Probabilistic { rate: 0.3 })]))
                    .expect("config");
            let mut s2 = span(0, 1, 0, 1);
            s2.trace_id = again;
            u.offer(s2, (), now);
            assert_eq!(u.flush_all(now)[0].decision.sampled, d[0].decision.sampled);
        }
        let frac = kept as f64 / 4000.0;
        assert!((frac - 0.3).abs() < 0.03, "{frac}");
    }

    #[test]
    fn rate_limit_budget_refills() {
        let mut t = TailSampler::<()>::new(&cfg(vec![(
            "rl",
            Rule::RateLimiting {
                spans_per_second: 3,
            },
        )]))
        .expect("config");
        let t0 = Instant::now();
        let mut decide = |trace: u8, n: u8, at: Instant| {
            for i in 0..n {
                t.offer(span(trace, i, 0, 1), (), at);
            }
            t.flush_all(at)[0].decision.sampled
        };
        assert!(decide(1, 2, t0)); // 3 -> 1 token
        assert!(!decide(2, 2, t0)); // needs 2, has 1
        assert!(decide(3, 1, t0)); // 1 -> 0
        assert!(decide(4, 3, t0 + Duration::from_secs(1))); // refilled to 3
        assert!(decide(5, 10, t0 + Duration::from_secs(5))); // big trace needs a full bucket
    }

    #[test]
    fn full_buffer_decides_oldest_early_never_loses() {
        let mut c = cfg(vec![("all", Rule::Always)]);
        c.max_traces = 2;
        let mut t = TailSampler::<u8>::new(&c).expect("config");
        let now = Instant::now();
        assert!(t.offer(span(1, 1, 0, 1), 1, now).is_empty());
        assert!(t.offer(span(2, 1, 0, 1), 2, now).is_empty());
        let d = t.offer(span(3, 1, 0, 1), 3, now);
        assert_eq!(ids(&d), vec![(1, true, "all".into(), 1)]);
        assert_eq!(t.stats().early_decisions, 1);
        assert_eq!(t.stats().early_decisions_max_traces, 1);
        assert_eq!(t.stats().early_decisions_max_bytes, 0);
        // Byte bound: one huge span forces its own trace out at once.
        let mut c = cfg(vec![("all", Rule::Always)]);
        c.max_bytes = Some(10_000);
        let mut t = TailSampler::<u8>::new(&c).expect("config");
        let mut big = span(7, 1, 0, 1);
        big.attributes
            .push(KeyValue::new("blob", AttrValue::Str("x".repeat(20_000))));
        let d = t.offer(big, 7, now);
        assert_eq!(ids(&d), vec![(7, true, "all".into(), 1)]);
        assert_eq!(t.held_bytes(), 0);
        assert_eq!(t.stats().early_decisions_max_bytes, 1);
        assert_eq!(t.stats().early_decisions_max_traces, 0);
    }

    #[test]
    fn decision_cache_bounded_and_config_validated() {
        let mut c = cfg(vec![("all", Rule::Always)]);
        c.decision_cache_entries = 2;
        let mut t = TailSampler::<()>::new(&c).expect("config");
        let now = Instant::now();
        for i in 0..5 {
            t.offer(span(i, 1, 0, 1), (), now);
        }
        t.flush_all(now);
        assert_eq!(t.decided.len(), 2);
        assert_eq!(t.stats().decision_cache_evictions, 3);
        // An evicted trace's late span is held again rather than lost.
        assert!(t.offer(span(0, 2, 0, 1), (), now).is_empty());
        assert_eq!(t.held_traces(), 1);

        assert!(TailSampler::<()>::new(&cfg(vec![])).is_err());
        assert!(
            TailSampler::<()>::new(&cfg(vec![("p", Rule::Probabilistic { rate: 2.0 })])).is_err()
        );
        assert!(TailSampler::<()>::new(&cfg(vec![("a", Rule::And { rules: vec![] })])).is_err());
        let bad_range = Rule::NumericAttribute {
            key: "k".into(),
            min: Some(5.0),
            max: Some(1.0),
        };
        assert!(TailSampler::<()>::new(&cfg(vec![("n", bad_range)])).is_err());
    }

    #[test]
    fn config_parses_from_json_and_rejects_unknown_fields() {
        let c: TailSamplingConfig = serde_json::from_str(
            r#"{"enabled": true, "decision_wait_ms": 1000, "policies": [
                {"name": "errors", "rule": "status_error"},
                {"name": "slow", "rule": {"latency": {"threshold_ms": 250}}},
                {"name": "combo", "rule": {"and": {"rules": ["status_error", {"probabilistic": {"rate": 0.5}}]}}}
            ]}"#,
        )
        .expect("parse");
        assert_eq!(c.policies.len(), 3);
        assert_eq!(c.max_traces, 50_000);
        assert!(serde_json::from_str::<TailSamplingConfig>(r#"{"bogus": 1}"#).is_err());
        assert!(serde_json::from_str::<PolicyConfig>(
            r#"{"name": "x", "rule": {"latency": {"threshold_ms": 1, "x": 2}}}"#
        )
        .is_err());
    }

    #[test]
    fn first_match_nests_inside_and() {
        // Gold customers whose trace failed or was slow; then any failed trace,
        // and the rest within a budget of 2 spans per second that failed
        // traces do not spend (first_match stops at status_error).
        let c: TailSamplingConfig = toml::from_str(
            r#"
            enabled = true
            [[policies]]
            name = "gold_bad"
            rule = { and = { rules = [
                { string_attribute = { key = "tier", values = ["gold"] } },
                { first_match = { rules = ["status_error", { latency = { threshold_ms = 100 } }] } },
            ] } }
            [[policies]]
            name = "budget"
            rule = { any = { rules = ["status_error", { rate_limiting = { spans_per_second = 2 } }] } }
            "#,
        )
        .expect("toml");
        let mut t = TailSampler::<()>::new(&c).expect("config");
        let now = Instant::now();
        let gold = |trace: u8, dur: u64, error: bool| {
            let mut s = span(trace, 1, 0, dur);
            s.attributes
                .push(KeyValue::new("tier", AttrValue::Str("gold".into())));
            if error {
                s.status_code = StatusCode::Error;
            }
            s
        };
        let failed = |trace: u8| {
            let mut s = span(trace, 1, 0, 1_000);
            s.status_code = StatusCode::Error;
            s
        };
        for s in [
            gold(1, 1_000, true),        // gold, failed
            gold(2, 200_000_000, false), // gold, slow
            gold(3, 1_000, false),       // gold, fine: budget
            failed(6),                   // not gold, failed: no budget spent
            span(4, 1, 0, 200_000_000),  // slow but not gold: budget
            span(5, 1, 0, 1_000),        // budget exhausted
        ] {
            t.offer(s, (), now);
        }
        let d = t.flush_all(now);
        assert_eq!(
            ids(&d),
            vec![
                (1, true, "gold_bad".into(), 1),
                (2, true, "gold_bad".into(), 1),
                (3, true, "budget".into(), 1),
                (6, true, "budget".into(), 1),
                (4, true, "budget".into(), 1),
                (5, false, NO_MATCH.into(), 1),
            ]
        );
        assert!(matches!(
            TailSampler::<()>::new(&cfg(vec![("e", Rule::FirstMatch { rules: vec![] })])),
            Err(SamplingConfigError::Invalid { why, .. }) if why.contains("first_match")
        ));
    }
}
