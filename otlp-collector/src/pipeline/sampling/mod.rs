//! Sampling: a consistent head sampler (decides per trace from the trace id,
//! exactly like the SDK's `TraceIdRatioBased`) and a tail sampler (holds each
//! trace for a decision wait, then applies policies to the whole trace).
//!
//! Rollups are computed before either runs, so rates, latencies and the
//! service graph stay right at any sampling rate.

pub mod head;
pub mod tail;

use serde::Deserialize;

use crate::model::{AttrValue, KeyValue, Span};

pub use head::{HeadSampler, HeadSamplingConfig};
pub use tail::{Decided, Decision, TailSampler, TailSamplingConfig};

/// `[sampling]` configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// `[sampling.head]`.
    pub head: HeadSamplingConfig,
    /// `[sampling.tail]`.
    pub tail: TailSamplingConfig,
}

/// A sampling configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingConfigError {
    /// A rate outside `[0, 1]`.
    #[error(
        "sampling rate {value} for {what} must be between 0 and 1 (e.g. 0.1 keeps 10% of traces)"
    )]
    BadRate {
        /// Which setting.
        what: String,
        /// The value given.
        value: f64,
    },
    /// Some other setting is out of range.
    #[error("invalid sampling setting {what}: {why}")]
    Invalid {
        /// Which setting.
        what: String,
        /// What is wrong and how to fix it.
        why: String,
    },
}

pub(crate) fn check_rate(what: &str, value: f64) -> Result<(), SamplingConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SamplingConfigError::BadRate {
            what: what.to_string(),
            value,
        })
    }
}

fn value_bytes(v: &AttrValue) -> usize {
    16 + match v {
        AttrValue::Str(s) => s.len(),
        AttrValue::Bytes(b) => b.len(),
        AttrValue::Array(a) => a.iter().map(value_bytes).sum(),
        AttrValue::KvList(kvs) => kvs_bytes(kvs),
        _ => 8,
    }
}

fn kvs_bytes(kvs: &[KeyValue]) -> usize {
    kvs.iter()
        .map(|kv| 24 + kv.key.len() + value_bytes(&kv.value))
        .sum()
}

/// Approximate heap + inline size of a span, for memory limits. Counts every
/// string and collection so the estimate grows with what the span holds.
pub fn approx_span_bytes(s: &Span) -> usize {
    std::mem::size_of::<Span>()
        + s.trace_state.len()
        + s.name.len()
        + s.status_message.len()
        + s.service_name.len()
        + s.scope_name.len()
        + s.scope_version.len()
        + kvs_bytes(&s.attributes)
        + kvs_bytes(&s.resource_attributes)
        + s.events
            .iter()
            .map(|e| 64 + e.name.len() + kvs_bytes(&e.attributes))
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| 64 + l.trace_state.len() + kvs_bytes(&l.attributes))
            .sum::<usize>()
}
