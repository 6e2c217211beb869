//! Head sampling: keeps a fixed fraction of traces, decided from the trace id
//! alone with OpenTelemetry's `TraceIdRatioBased` rule (the SDK's
//! [`ferrotrace::trace::sampler::trace_id_ratio_sampled`]): the lower 8 bytes
//! of the trace id, big-endian, shifted right by one, compared with
//! `rate * 2^63`. SDKs and this collector therefore agree: a trace the SDK kept
//! at rate r is kept here at every rate >= r.
//!
//! With per-service rates, spans of one trace may come from services with
//! different rates. To keep traces whole, the first span seen of a trace fixes
//! the rate for the whole trace (remembered in a bounded cache); spans of a
//! trace that fell out of the cache use their own service's rate, which gives
//! the same answer whenever the rates agree.
//!
//! **Errors are spared** (`keep_errors`, on by default): a span whose status
//! is `ERROR` is kept whatever the rate, and its trace's decision turns to
//! "keep", so the spans of that trace that arrive after it are kept too. A
//! span is exported when it ends, so those are mostly the failed span's
//! ancestors up to the root: the path from the failure to the entry point.
//! The trace's spans that arrived (and were dropped) *before* the error are
//! lost: the head decides each span as it comes and holds nothing. Keeping
//! whole failed traces needs tail sampling (`[sampling.tail]` with a
//! `status_error` policy), which holds every trace until it is decided.
//! Counts are not biased by sparing: rollups are computed from every span
//! before the head sampler runs. New spared traces are bounded by
//! `max_error_traces_per_second` (a token bucket; past it, failed traces get
//! the rate's answer and are counted), so an outage in which every request
//! fails cannot turn a 1% head sampler into a 100% one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use serde::Deserialize;

use super::{check_rate, SamplingConfigError};
use crate::model::{Span, StatusCode, TraceId};

/// `[sampling.head]` configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadSamplingConfig {
    /// Fraction of traces kept, in `[0, 1]` (default 1.0: keep everything).
    pub rate: f64,
    /// Per-service rates, overriding `rate` for traces whose first seen span
    /// belongs to that service.
    pub services: BTreeMap<String, f64>,
    /// Traces whose decision is remembered so all their spans follow it
    /// (default 100 000).
    pub decision_cache_entries: usize,
    /// Keep spans with `ERROR` status whatever the rate, and the spans of
    /// their trace that arrive after them (default true).
    pub keep_errors: bool,
    /// Most traces per second spared because of an error (a token bucket
    /// with a burst of one second's worth); beyond it a failed trace gets
    /// the rate's answer. `0` for no limit (default 100).
    pub max_error_traces_per_second: f64,
}

impl Default for HeadSamplingConfig {
    fn default() -> Self {
        HeadSamplingConfig {
            rate: 1.0,
            services: BTreeMap::new(),
            decision_cache_entries: 100_000,
            keep_errors: true,
            max_error_traces_per_second: DEFAULT_MAX_ERROR_TRACES_PER_SECOND,
        }
    }
}

/// Default of `max_error_traces_per_second`.
pub const DEFAULT_MAX_ERROR_TRACES_PER_SECOND: f64 = 100.0;

/// Counters of the head sampler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Spans kept.
    pub spans_sampled: u64,
    /// Spans dropped.
    pub spans_dropped: u64,
    /// Decisions forgotten to make room in the cache.
    pub cache_evictions: u64,
    /// Spans kept that the rate dropped, because their trace had an error
    /// (the error span itself, or a later span of its trace); included in
    /// `spans_sampled`.
    pub spans_kept_for_error: u64,
    /// Error spans whose trace the rate dropped and that were not spared,
    /// `max_error_traces_per_second` being reached; included in `spans_dropped`.
    pub errors_over_limit: u64,
}

/// The consistent ratio rule, shared with the SDK.
pub fn trace_id_ratio_sampled(trace_id: &TraceId, rate: f64) -> bool {
    ferrotrace::trace::sampler::trace_id_ratio_sampled(trace_id, rate)
}

/// The head sampler. Cheap; owned by the pipeline worker.
#[derive(Debug)]
pub struct HeadSampler {
    config: HeadSamplingConfig,
    all: bool,
    /// `Rate` or `Error` for traces kept, `Drop` for the rest.
    decisions: HashMap<TraceId, Verdict>,
    order: VecDeque<TraceId>,
    stats: HeadStats,
    errors: ErrorBudget,
}

/// A trace's remembered decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Kept by the rate.
    Rate,
    /// Dropped by the rate, kept from its first error span on.
    Error,
    /// Dropped.
    Drop,
}

/// The token bucket of `max_error_traces_per_second`: tokens accrue at the
/// rate up to one second's worth (at least 1). The clock is read only for
/// error spans of traces the rate drops.
#[derive(Debug)]
struct ErrorBudget {
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl ErrorBudget {
    fn take(&mut self, now: Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let burst = self.per_second.max(1.0);
        self.tokens = match self.last {
            None => burst,
            Some(t) => (self.tokens
                + now.saturating_duration_since(t).as_secs_f64() * self.per_second)
                .min(burst),
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl HeadSampler {
    /// Validates the configuration and builds the sampler.
    pub fn new(config: HeadSamplingConfig) -> Result<Self, SamplingConfigError> {
        check_rate("sampling.head.rate", config.rate)?;
        for (svc, r) in &config.services {
            check_rate(&format!("sampling.head.services.{svc}"), *r)?;
        }
        let m = config.max_error_traces_per_second;
        if !(m.is_finite() && (0.0..=1e9).contains(&m)) {
            return Err(SamplingConfigError::Invalid {
                what: "sampling.head.max_error_traces_per_second".into(),
                why: format!("{m} must be from 0 (no limit) to 1e9 traces per second"),
            });
        }
        let all = config.rate >= 1.0 && config.services.values().all(|r| *r >= 1.0);
        Ok(HeadSampler {
            errors: ErrorBudget {
                per_second: m,
                tokens: 0.0,
                last: None,
            },
            config,
            all,
            decisions: HashMap::new(),
            order: VecDeque::new(),
            stats: HeadStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> &HeadStats {
        &self.stats
    }

    fn rate_for(&self, service: &str) -> f64 {
        self.config
            .services
            .get(service)
            .copied()
            .unwrap_or(self.config.rate)
    }

    /// True when every span is kept (rate 1 for every service): each span
    /// would only be counted, so a caller may pass a whole batch on at once
    /// and count it with [`HeadSampler::count_all_kept`].
    pub fn keeps_all(&self) -> bool {
        self.all
    }

    /// Counts `n` spans kept by a sampler that [`keeps_all`](Self::keeps_all),
    /// as `n` calls of [`sample_at`](Self::sample_at) would.
    pub fn count_all_kept(&mut self, n: u64) {
        debug_assert!(self.all);
        self.stats.spans_sampled += n;
    }

    /// True when `span` is kept.
    pub fn sample(&mut self, span: &Span) -> bool {
        self.sample_at(span, Instant::now)
    }

    /// [`sample`](Self::sample) with the clock given (read only for an error
    /// span of a trace the rate drops).
    pub fn sample_at(&mut self, span: &Span, now: impl FnOnce() -> Instant) -> bool {
        if self.all {
            self.stats.spans_sampled += 1;
            return true;
        }
        let remembered = self.decisions.get(&span.trace_id).copied();
        let verdict = match remembered {
            Some(v) => v,
            None => {
                if trace_id_ratio_sampled(&span.trace_id, self.rate_for(&span.service_name)) {
                    Verdict::Rate
                } else {
                    Verdict::Drop
                }
            }
        };
        let verdict = if verdict == Verdict::Drop
            && self.config.keep_errors
            && span.status_code == StatusCode::Error
        {
            if self.errors.take(now()) {
                Verdict::Error
            } else {
                self.stats.errors_over_limit += 1;
                Verdict::Drop
            }
        } else {
            verdict
        };
        if remembered != Some(verdict) {
            self.remember(span.trace_id, verdict, remembered.is_some());
        }
        match verdict {
            Verdict::Rate => self.stats.spans_sampled += 1,
            Verdict::Error => {
                self.stats.spans_sampled += 1;
                self.stats.spans_kept_for_error += 1;
            }
            Verdict::Drop => self.stats.spans_dropped += 1,
        }
        verdict != Verdict::Drop
    }

    /// Remembers `verdict` for `trace` (replacing its entry when `known`),
    /// forgetting the oldest decision when the cache is full.
    fn remember(&mut self, trace: TraceId, verdict: Verdict, known: bool) {
        if self.config.decision_cache_entries == 0 {
            return;
        }
        if known {
            self.decisions.insert(trace, verdict);
            return;
        }
        if self.decisions.len() >= self.config.decision_cache_entries {
            if let Some(old) = self.order.pop_front() {
                self.decisions.remove(&old);
                self.stats.cache_evictions += 1;
            }
        }
        self.decisions.insert(trace, verdict);
        self.order.push_back(trace);
    }

    /// Keeps the sampled spans of `spans` in place; returns how many were dropped.
    pub fn retain(&mut self, spans: &mut Vec<Span>) -> usize {
        let before = spans.len();
        spans.retain(|s| self.sample(s));
        before - spans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule of opentelemetry_sdk 0.33 `sample_based_on_probability`,
    /// restated independently to pin the behaviour.
    fn otel_rule(id: &TraceId, prob: f64) -> bool {
        if prob >= 1.0 {
            return true;
        }
        let upper = (prob.max(0.0) * (1u64 << 63) as f64) as u64;
        let low =
            u64::from_be_bytes([id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]]);
        (low >> 1) < upper
    }

    fn id(i: u64) -> TraceId {
        // Spread ids over the whole range with a multiplicative hash.
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&i.to_be_bytes());
        t[8..].copy_from_slice(&x.to_be_bytes());
        t
    }

    #[test]
    fn matches_opentelemetry_rule_and_rate() {
        for rate in [0.0, 0.01, 0.25, 0.5, 0.999, 1.0] {
            let mut kept = 0;
            for i in 0..20_000 {
                let t = id(i);
                assert_eq!(
                    trace_id_ratio_sampled(&t, rate),
                    otel_rule(&t, rate),
                    "rate {rate}"
                );
                kept += trace_id_ratio_sampled(&t, rate) as u32;
            }
            let got = kept as f64 / 20_000.0;
            assert!((got - rate).abs() < 0.02, "rate {rate} kept {got}");
        }
    }

    fn span(trace: TraceId, service: &str) -> Span {
        Span {
            trace_id: trace,
            span_id: [1; 8],
            kind: Default::default(),
            start_ns: 0,
            end_ns: 0,
            service_name: service.into(),
            ..Span::test(0)
        }
    }

    #[test]
    fn per_service_rate_and_whole_trace_decision() {
        let cfg = HeadSamplingConfig {
            rate: 0.0,
            services: [("keep".to_string(), 1.0)].into_iter().collect(),
            ..Default::default()
        };
        let mut h = HeadSampler::new(cfg).expect("config");
        let t = id(42);
        // First span from "keep" decides for the trace; "other" follows it.
        assert!(h.sample(&span(t, "keep")));
        assert!(h.sample(&span(t, "other")));
        assert!(!h.sample(&span(id(43), "other")));
        let mut v = vec![span(id(44), "other"), span(id(45), "keep")];
        assert_eq!(h.retain(&mut v), 1);
        assert_eq!(v[0].service_name, "keep");
        assert_eq!(h.stats().spans_sampled, 3);
    }

    fn error_span(trace: TraceId, service: &str) -> Span {
        let mut s = span(trace, service);
        s.status_code = StatusCode::Error;
        s
    }

    /// An error span is kept at rate 0, and so are its trace's later spans;
    /// the spans that came before it stay dropped; other traces are not
    /// affected; `keep_errors = false` drops it like any span.
    #[test]
    fn error_spans_are_kept_with_the_rest_of_their_trace() {
        let mut h = HeadSampler::new(HeadSamplingConfig {
            rate: 0.0,
            ..Default::default()
        })
        .expect("config");
        let (t, other) = (id(7), id(8));
        assert!(
            !h.sample(&span(t, "db")),
            "before the error: the rate's drop"
        );
        assert!(h.sample(&error_span(t, "db")), "the error span");
        assert!(h.sample(&span(t, "api")), "its parent, ending later");
        assert!(h.sample(&span(t, "gateway")), "the root");
        assert!(!h.sample(&span(other, "api")), "another trace");
        let st = h.stats().clone();
        assert_eq!((st.spans_sampled, st.spans_dropped), (3, 2));
        assert_eq!((st.spans_kept_for_error, st.errors_over_limit), (3, 0));
        // A trace the rate keeps is not counted as spared.
        let mut h = HeadSampler::new(HeadSamplingConfig::default()).expect("config");
        assert!(h.sample(&error_span(t, "db")));
        assert_eq!(h.stats().spans_kept_for_error, 0);
        let mut h = HeadSampler::new(HeadSamplingConfig {
            rate: 0.0,
            keep_errors: false,
            ..Default::default()
        })
        .expect("config");
        assert!(!h.sample(&error_span(t, "db")));
        assert!(!h.sample(&span(t, "api")));
        // Without a decision cache only the error spans themselves are kept.
        let mut h = HeadSampler::new(HeadSamplingConfig {
            rate: 0.0,
            decision_cache_entries: 0,
            ..Default::default()
        })
        .expect("config");
        assert!(h.sample(&error_span(t, "db")));
        assert!(!h.sample(&span(t, "api")));
    }

    /// Spared traces are bounded per second: past the budget a failed trace
    /// gets the rate's answer and is counted; later spans of a spared trace
    /// cost nothing; the budget refills with time.
    #[test]
    fn spared_error_traces_are_rate_limited() {
        let mut h = HeadSampler::new(HeadSamplingConfig {
            rate: 0.0,
            max_error_traces_per_second: 2.0,
            ..Default::default()
        })
        .expect("config");
        let t0 = Instant::now();
        let at = |ms: u64| move || t0 + std::time::Duration::from_millis(ms);
        assert!(h.sample_at(&error_span(id(1), "s"), at(0)));
        assert!(h.sample_at(&error_span(id(2), "s"), at(0)));
        assert!(
            h.sample_at(&error_span(id(1), "s"), at(0)),
            "already spared"
        );
        assert!(
            !h.sample_at(&error_span(id(3), "s"), at(10)),
            "over the limit"
        );
        assert_eq!(h.stats().errors_over_limit, 1);
        // Half a second later: one more token.
        assert!(h.sample_at(&error_span(id(3), "s"), at(510)));
        assert!(!h.sample_at(&error_span(id(4), "s"), at(510)));
        assert_eq!(h.stats().errors_over_limit, 2);
        // No limit.
        let mut h = HeadSampler::new(HeadSamplingConfig {
            rate: 0.0,
            max_error_traces_per_second: 0.0,
            ..Default::default()
        })
        .expect("config");
        assert!((0..1000).all(|i| h.sample_at(&error_span(id(i), "s"), at(0))));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = HeadSampler::new(HeadSamplingConfig {
                max_error_traces_per_second: bad,
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains("max_error_traces_per_second"), "{e}");
        }
    }

    #[test]
    fn bad_rates_rejected_and_cache_bounded() {
        assert!(HeadSampler::new(HeadSamplingConfig {
            rate: 1.5,
            ..Default::default()
        })
        .is_err());
        let bad = HeadSamplingConfig {
            services: [("a".into(), -0.1)].into_iter().collect(),
            ..Default::default()
        };
        assert!(matches!(
            HeadSampler::new(bad),
            Err(SamplingConfigError::BadRate { .. })
        ));
        let mut h = HeadSampler::new(HeadSamplingConfig {
            rate: 0.5,
            decision_cache_entries: 3,
            ..Default::default()
        })
        .expect("config");
        for i in 0..10 {
            h.sample(&span(id(i), "s"));
        }
        assert_eq!(h.decisions.len(), 3);
        assert_eq!(h.stats().cache_evictions, 7);
    }
}
