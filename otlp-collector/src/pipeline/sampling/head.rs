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

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Deserialize;

use super::{check_rate, SamplingConfigError};
use crate::model::{Span, TraceId};

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
}

impl Default for HeadSamplingConfig {
    fn default() -> Self {
        HeadSamplingConfig {
            rate: 1.0,
            services: BTreeMap::new(),
            decision_cache_entries: 100_000,
        }
    }
}

/// Counters of the head sampler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Spans kept.
    pub spans_sampled: u64,
    /// Spans dropped.
    pub spans_dropped: u64,
    /// Decisions forgotten to make room in the cache.
    pub cache_evictions: u64,
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
    decisions: HashMap<TraceId, bool>,
    order: VecDeque<TraceId>,
    stats: HeadStats,
}

impl HeadSampler {
    /// Validates the configuration and builds the sampler.
    pub fn new(config: HeadSamplingConfig) -> Result<Self, SamplingConfigError> {
        check_rate("sampling.head.rate", config.rate)?;
        for (svc, r) in &config.services {
            check_rate(&format!("sampling.head.services.{svc}"), *r)?;
        }
        let all = config.rate >= 1.0 && config.services.values().all(|r| *r >= 1.0);
        Ok(HeadSampler {
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

    /// True when `span` is kept.
    pub fn sample(&mut self, span: &Span) -> bool {
        let keep = if self.all {
            true
        } else if let Some(d) = self.decisions.get(&span.trace_id) {
            *d
        } else {
            let d = trace_id_ratio_sampled(&span.trace_id, self.rate_for(&span.service_name));
            if self.config.decision_cache_entries > 0 {
                if self.decisions.len() >= self.config.decision_cache_entries {
                    if let Some(old) = self.order.pop_front() {
                        self.decisions.remove(&old);
                        self.stats.cache_evictions += 1;
                    }
                }
                self.decisions.insert(span.trace_id, d);
                self.order.push_back(span.trace_id);
            }
            d
        };
        if keep {
            self.stats.spans_sampled += 1;
        } else {
            self.stats.spans_dropped += 1;
        }
        keep
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
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: "op".into(),
            kind: Default::default(),
            start_ns: 0,
            end_ns: 0,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: Default::default(),
            status_message: String::new(),
            service_name: service.into(),
            resource_attributes: vec![],
            scope_name: Default::default(),
            scope_version: Default::default(),
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
