//! `[sampling.tail]` configuration: the buffer bounds and the policies with
//! their rules.

use serde::Deserialize;

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
