//! The receivers' limits (`[limits]`): request and span sizes, attribute
//! caps, and the memory guard's budget. Owned here because the receivers and
//! their decoders enforce them; `config` assembles and derives budgets
//! (`config::budgets`).

use serde::{Deserialize, Serialize};

/// Default of `limits.memory_limit_mib`: its derived budgets are the
/// collector's historical fixed defaults (256 MiB each).
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 1024;

/// Receiver limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum request body as sent (compressed) in bytes; larger → 413.
    /// Unset = 8 MiB, or a sixteenth of the in-flight budget when that is
    /// smaller ([`LimitsConfig::request_bytes`]).
    pub max_request_bytes: Option<usize>,
    /// Maximum body after decompression in bytes; larger → 413. Unset =
    /// 32 MiB, or a quarter of the in-flight budget when that is smaller
    /// ([`LimitsConfig::decompressed_bytes`]).
    pub max_decompressed_bytes: Option<usize>,
    /// Memory budget for request bodies held by all receivers at once (as
    /// received plus inflated); a request that would exceed it → 429 /
    /// RESOURCE_EXHAUSTED with a retry hint. Unset = a quarter of
    /// `memory_limit_mib` (see `Config::memory_budgets`).
    pub max_inflight_bytes: Option<usize>,
    /// Limit on the collector's resident memory in MiB; 0 turns the memory
    /// guard off. Budgets not set explicitly are derived from it.
    pub memory_limit_mib: u64,
    /// Above this percentage of `memory_limit_mib` of resident memory the
    /// receivers refuse new requests (429 / RESOURCE_EXHAUSTED with a retry hint).
    pub memory_soft_limit_percent: u64,
    /// How often the memory guard samples resident memory (ms).
    pub memory_check_interval_ms: u64,
    /// Maximum spans in one request; more → 413.
    pub max_spans_per_request: usize,
    /// Attributes kept per span (and per event/link/resource); the rest are dropped and counted.
    pub max_attributes_per_span: usize,
    /// Longest string/bytes attribute value in bytes; longer values are truncated and counted.
    pub max_attribute_value_bytes: usize,
    /// Largest span (estimated decoded size) in bytes; larger spans are rejected.
    pub max_span_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: None,
            max_decompressed_bytes: None,
            max_inflight_bytes: None,
            memory_limit_mib: DEFAULT_MEMORY_LIMIT_MIB,
            memory_soft_limit_percent: 80,
            memory_check_interval_ms: 10,
            max_spans_per_request: 50_000,
            max_attributes_per_span: 128,
            max_attribute_value_bytes: 8 * 1024,
            max_span_bytes: 64 * 1024,
        }
    }
}
