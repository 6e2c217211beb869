//! Sampling: a consistent head sampler (decides per trace from the trace id,
//! exactly like the SDK's `TraceIdRatioBased`) and a tail sampler (holds each
//! trace for a decision wait, then applies policies to the whole trace).
//!
//! Rollups are computed before either runs, so rates, latencies and the
//! service graph stay right at any sampling rate.

pub mod head;
pub mod tail;

use serde::Deserialize;

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
