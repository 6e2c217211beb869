//! Policy rules compiled for evaluation (attribute sets, thresholds in
//! nanoseconds, token buckets), and how each matches a held trace.

use std::collections::HashSet;
use std::time::Instant;

use super::config::Rule;
use super::Held;
use crate::model::{AttrValue, Span, TraceId};
use crate::pipeline::sampling::{check_rate, SamplingConfigError};

#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

#[derive(Debug)]
pub(super) enum Compiled {
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

pub(super) fn compile(rule: &Rule, what: &str) -> Result<Compiled, SamplingConfigError> {
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
    pub(super) fn matches<T>(
        &mut self,
        trace_id: &TraceId,
        spans: &[Held<T>],
        now: Instant,
    ) -> bool {
        match self {
            Compiled::Always => true,
            Compiled::StatusError => spans.iter().any(|h| h.span.is_error()),
            Compiled::Latency(threshold) => {
                let start = spans.iter().map(|h| h.span.start_ns).min().unwrap_or(0);
                let end = spans.iter().map(|h| h.span.end_ns).max().unwrap_or(0);
                end.saturating_sub(start) >= *threshold
            }
            Compiled::Str(key, values) => spans.iter().any(|h| {
                attrs(&h.span, key)
                    .any(|v| matches!(v, AttrValue::Str(s) if values.contains(s.as_str())))
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
