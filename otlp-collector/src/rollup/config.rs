//! `[rollups]` configuration and the aggregator's counters.

use serde::{Deserialize, Serialize};

/// `[rollups]` configuration of the [`RollupAggregator`](super::RollupAggregator).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupConfig {
    /// Recently seen spans remembered to find a child's parent service
    /// (default 100 000 entries, oldest forgotten first).
    pub span_cache_entries: usize,
    /// Children whose parent has not arrived yet, held to be matched when it
    /// does (default 10 000; the oldest is given up when full).
    pub pending_children: usize,
    /// How long (seconds, by the child's end time) a child waits for its
    /// parent before it is given up (default 60; roots of traces that started
    /// in an uninstrumented caller end this way).
    pub pending_ttl_secs: u64,
    /// Accumulated (minute, service, operation, kind) and (minute, caller,
    /// callee) series held in memory (default 50 000). When full, everything
    /// accumulated is flushed early into the next drain; the sink merges
    /// partial minutes, so nothing is lost. Also bounds the (minute, WAL
    /// segment) origin entries: past it, the next drain writes everything.
    pub max_series: usize,
    /// `CLIENT`/`PRODUCER` spans to uninstrumented peers held until their
    /// minute is drained (default 100 000; the oldest is counted early when full).
    pub peer_candidates: usize,
    /// Distinct instrumented service names remembered (default 10 000).
    pub max_known_services: usize,
    /// A minute is drained once `now` is this many seconds past its end
    /// (default 10), so late spans still land in their minute's first write.
    pub finalize_delay_secs: u64,
    /// Rollups of spans that came through the WAL are written at least this
    /// often (seconds; default 5), unfinished minutes as partial rows the sink
    /// merges, so that the WAL segments holding those spans can be deleted
    /// soon. 0 writes each minute once, when finished (the WAL then keeps
    /// about `60 + finalize_delay_secs` seconds more of spans).
    pub max_hold_secs: u64,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            span_cache_entries: 100_000,
            pending_children: 10_000,
            pending_ttl_secs: 60,
            max_series: 50_000,
            peer_candidates: 100_000,
            max_known_services: 10_000,
            finalize_delay_secs: 10,
            max_hold_secs: 5,
        }
    }
}

/// Counters of the aggregator (exported as self-metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RollupStats {
    /// Spans observed.
    pub spans_observed: u64,
    /// Calls counted from a parent span in one service to a child in another.
    pub parent_child_calls: u64,
    /// Calls counted from a `CLIENT`/`PRODUCER` span to an uninstrumented peer.
    pub peer_calls: u64,
    /// Peer calls not counted because the peer is an instrumented service or a
    /// child span from another service showed up (avoids double counting).
    pub peer_calls_suppressed: u64,
    /// Peer candidates counted before their minute ended because the holding
    /// area was full.
    pub peer_candidates_evicted: u64,
    /// Children given up after waiting `pending_ttl_secs` for their parent.
    pub pending_expired: u64,
    /// Children given up because the pending area was full.
    pub pending_evicted: u64,
    /// Spans forgotten from the parent cache to make room.
    pub span_cache_evictions: u64,
    /// Times the series limit forced an early flush.
    pub early_flushes: u64,
    /// Drains that wrote unfinished minutes because the WAL was nearly full
    /// ([`RollupAggregator::drain_for_full_wal`](super::RollupAggregator::drain_for_full_wal)).
    pub wal_full_flushes: u64,
    /// Observations not counted because the series limit was hit twice over
    /// (nobody drained).
    pub series_dropped: u64,
    /// Service names not remembered because `max_known_services` was reached.
    pub known_services_overflow: u64,
    /// Contributions of replayed spans not counted again because a sink had
    /// already stored them before the restart.
    pub replayed_already_stored: u64,
    /// Spans weighted by the `th` of their `ot` tracestate member.
    pub weight_threshold: u64,
    /// Spans weighted by Jaeger `sampler.type`/`sampler.param` tags.
    pub weight_jaeger: u64,
    /// Spans with sampling information that could not be used (counted 1).
    pub weight_malformed: u64,
}
