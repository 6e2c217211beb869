//! Per-minute rollups computed at ingest from every span, before the
//! collector's own sampling: per service/operation request, error and latency
//! counts, and caller → callee edges. Sinks store them and merge them at query
//! time, so rates, percentiles and the service graph stay right at any
//! collector sampling rate with no batch job.
//!
//! Spans the sender sampled stand for more than one request: every count, error,
//! latency weight and edge adds the span's adjusted count ([`weight`]: `1/p`
//! from the `ot=th:` tracestate value or Jaeger's `sampler.param`, else 1), so
//! the rollups estimate the unsampled traffic. The collector's head and tail
//! samplers run after this and so never weight a rollup: composing them
//! would count the collector's drops twice.

mod aggregator;
mod batch;
mod config;
mod origins;
mod peer;
mod series;
mod sketch;
mod spanmap;
pub mod weight;

pub use aggregator::RollupAggregator;
pub use batch::{EdgeRollup, OperationRollup, RollupBatch};
pub use config::{RollupConfig, RollupStats};
pub use origins::{OriginPart, RangeSet, RollupOrigin, SpanOrigin, WrittenOrigins};
pub use peer::{peer_name, PEER_KEYS};
pub use sketch::{LatencySketch, SKETCH_RELATIVE_ACCURACY};

/// One minute in nanoseconds.
pub const MINUTE_NS: u64 = 60_000_000_000;

fn minute_of(ns: u64) -> u64 {
    ns - ns % MINUTE_NS
}

#[cfg(test)]
mod aggregator_tests;
#[cfg(test)]
mod origin_tests;
#[cfg(test)]
mod weighted_tests;
