//! What one drain of the aggregator hands to the sinks.

use serde::{Deserialize, Serialize};

use super::{LatencySketch, RollupOrigin};
use crate::model::SpanKind;

/// Requests, errors and latency of one service/operation/kind in one minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationRollup {
    /// Start of the minute (ns since the epoch, a multiple of [`MINUTE_NS`](super::MINUTE_NS)).
    pub minute_ns: u64,
    /// Service.
    pub service: String,
    /// Span name.
    pub operation: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Requests this minute's spans stand for: the sum of their adjusted
    /// counts (1 per span the sender did not sample), rounded to an integer
    /// without bias (see `round_counts`).
    pub count: u64,
    /// Of which errors (weighted and rounded the same way).
    pub errors: u64,
    /// Latency sketch of the spans' durations.
    pub sketch: LatencySketch,
}

/// Calls from one service to another (or to an uninstrumented peer) in one minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeRollup {
    /// Start of the minute (ns since the epoch).
    pub minute_ns: u64,
    /// Calling service.
    pub caller: String,
    /// Called service or peer.
    pub callee: String,
    /// Calls: the adjusted counts of the spans that show them, rounded
    /// without bias.
    pub calls: u64,
    /// Failed calls (weighted and rounded the same way).
    pub errors: u64,
    /// Latency sketch of the calls.
    pub sketch: LatencySketch,
}

/// Rollups produced by one flush of the aggregator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RollupBatch {
    /// Per service/operation figures.
    pub operations: Vec<OperationRollup>,
    /// Service-graph edges.
    pub edges: Vec<EdgeRollup>,
    /// The WAL spans whose contributions this batch holds, all of them
    /// (empty when the aggregator was fed without WAL positions). Sinks store
    /// them with the rows, atomically where the database allows it.
    #[serde(default)]
    pub origins: Vec<RollupOrigin>,
    /// Identity of the WAL the origins' segment ids belong to (one per data
    /// directory; several collectors may share a database).
    #[serde(default)]
    pub wal_instance: u64,
}

impl RollupBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty() && self.edges.is_empty() && self.origins.is_empty()
    }

    /// The distinct WAL segments the origins name, ascending. The batch keeps
    /// one rollup hold on each until it is committed.
    pub fn origin_segments(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.origins.iter().map(|o| o.segment).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}
