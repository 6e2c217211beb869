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

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{AttrValue, Span, SpanId, SpanKind, TraceId};

mod origins;
pub mod weight;
pub use origins::{OriginPart, RangeSet, RollupOrigin, SpanOrigin, WrittenOrigins};

/// One minute in nanoseconds.
pub const MINUTE_NS: u64 = 60_000_000_000;

/// Relative accuracy of [`LatencySketch`] quantiles (1%).
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;

/// A mergeable latency sketch with bounded relative error (DDSketch-style
/// logarithmic buckets). Values are nanoseconds; every value carries a weight,
/// its adjusted count (see [`weight`]), so the quantiles estimate the
/// unsampled traffic. Merging is exact up to floating-point addition: the
/// sketch of two batches merged equals the sketch of both batches observed at
/// once. Stored as JSON by every sink; sketches stored with integer counts
/// (before weights) read back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySketch {
    /// Bucket index → weight. Index `i` holds values in `(γ^(i-1), γ^i]`.
    pub buckets: BTreeMap<i32, f64>,
    /// Weight of zero values.
    pub zeros: f64,
    /// Total weight.
    pub count: f64,
    /// Weighted sum of values (ns), for averages.
    pub sum: f64,
    /// Smallest value seen.
    pub min: u64,
    /// Largest value seen.
    pub max: u64,
}

fn gamma() -> f64 {
    (1.0 + SKETCH_RELATIVE_ACCURACY) / (1.0 - SKETCH_RELATIVE_ACCURACY)
}

impl LatencySketch {
    /// Records one value (ns) with weight 1.
    pub fn add(&mut self, v: u64) {
        self.add_weighted(v, 1.0)
    }

    /// Records one value (ns) standing for `weight` values (its adjusted
    /// count). A weight that is not finite and positive is ignored.
    pub fn add_weighted(&mut self, v: u64, weight: f64) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        if self.count == 0.0 || v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        self.count += weight;
        self.sum += v as f64 * weight;
        if v == 0 {
            self.zeros += weight;
        } else {
            let idx = ((v as f64).ln() / gamma().ln()).ceil() as i32;
            *self.buckets.entry(idx).or_insert(0.0) += weight;
        }
    }

    /// Merges another sketch into this one.
    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count <= 0.0 {
            return;
        }
        if self.count <= 0.0 || other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.zeros += other.zeros;
        for (i, c) in &other.buckets {
            *self.buckets.entry(*i).or_insert(0.0) += c;
        }
    }

    /// Weighted average (ns); 0 when empty.
    pub fn mean(&self) -> u64 {
        if self.count <= 0.0 {
            0
        } else {
            (self.sum / self.count) as u64
        }
    }

    /// The weighted `q`-quantile (`q` in `[0, 1]`): the smallest value whose
    /// cumulative weight reaches `q` × the total weight (with weight 1 per
    /// value, the nearest rank), within the relative accuracy, clamped to the
    /// observed min/max; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count <= 0.0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = q * self.count;
        if self.zeros > 0.0 && rank <= self.zeros {
            return 0;
        }
        let mut seen = self.zeros;
        let g = gamma();
        for (i, c) in &self.buckets {
            seen += c;
            if seen >= rank && *c > 0.0 {
                let v = 2.0 * g.powi(*i) / (g + 1.0);
                return (v.round() as u64).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Requests, errors and latency of one service/operation/kind in one minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationRollup {
    /// Start of the minute (ns since the epoch, a multiple of [`MINUTE_NS`]).
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

// ---------------------------------------------------------------------------
// Aggregator

/// `[rollups]` configuration of the [`RollupAggregator`].
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
    /// ([`RollupAggregator::drain_for_full_wal`]).
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

type SpanKey = (TraceId, SpanId);
type HMap<K, V> = hashbrown::HashMap<K, V>;
type HSet<K> = hashbrown::HashSet<K>;

/// An operation series. Looked up with [`OpKeyRef`] (borrowed strings), so a
/// span of a known series allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OpKey {
    minute: u64,
    service: Arc<str>,
    name: Box<str>,
    kind: SpanKind,
}

struct OpKeyRef<'a> {
    minute: u64,
    service: &'a str,
    name: &'a str,
    kind: SpanKind,
}

// The two hashes must agree: same fields, same order, strings as `str`.
impl Hash for OpKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        OpKeyRef {
            minute: self.minute,
            service: &self.service,
            name: &self.name,
            kind: self.kind,
        }
        .hash(h)
    }
}

impl Hash for OpKeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.minute.hash(h);
        self.service.hash(h);
        self.name.hash(h);
        h.write_u8(self.kind as u8);
    }
}

impl hashbrown::Equivalent<OpKey> for OpKeyRef<'_> {
    fn equivalent(&self, k: &OpKey) -> bool {
        self.minute == k.minute
            && self.kind == k.kind
            && self.name == &*k.name
            && self.service == &*k.service
    }
}

/// An edge series; looked up with [`EdgeKeyRef`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct EdgeKey {
    minute: u64,
    caller: Arc<str>,
    callee: Box<str>,
}

struct EdgeKeyRef<'a> {
    minute: u64,
    caller: &'a str,
    callee: &'a str,
}

impl Hash for EdgeKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        EdgeKeyRef {
            minute: self.minute,
            caller: &self.caller,
            callee: &self.callee,
        }
        .hash(h)
    }
}

impl Hash for EdgeKeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.minute.hash(h);
        self.caller.hash(h);
        self.callee.hash(h);
    }
}

impl hashbrown::Equivalent<EdgeKey> for EdgeKeyRef<'_> {
    fn equivalent(&self, k: &EdgeKey) -> bool {
        self.minute == k.minute && self.callee == &*k.callee && self.caller == &*k.caller
    }
}

/// One series' weighted sums: every span adds its adjusted count.
#[derive(Clone, Debug, Default)]
struct Acc {
    count: f64,
    errors: f64,
    sketch: LatencySketch,
}

impl Acc {
    fn add(&mut self, duration_ns: u64, error: bool, weight: f64) {
        self.count += weight;
        if error {
            self.errors += weight;
        }
        self.sketch.add_weighted(duration_ns, weight);
    }
}

/// Unbiased integer rounding of a series' weighted `(count, errors)` for the
/// sinks' integer columns: both are rounded with the same uniform draw `u`
/// (`floor(x + u)`), so each has expectation exactly `x`, `errors <= count`
/// still holds, and integers (every span weighing 1) stay exact. A series
/// flushed in several partial rows adds at most one unit of noise per row
/// instead of a systematic bias.
fn round_counts(count: f64, errors: f64, u: f64) -> (u64, u64) {
    let r = |x: f64| {
        // Weights are >= 1, so near-integers come from float addition:
        // snap them instead of letting `u` decide.
        let n = x.round();
        if (x - n).abs() < 1e-6 {
            n as u64
        } else {
            (x + u).floor() as u64
        }
    };
    let c = r(count);
    (c, r(errors).min(c))
}

/// splitmix64: the rounding draws (a deterministic sequence per aggregator,
/// no shared RNG; which series gets which draw follows the hash maps' order,
/// so totals may differ by a unit between processes, never on average).
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Debug)]
struct PendingChild {
    seq: u64,
    service: Arc<str>,
    minute_ns: u64,
    end_ns: u64,
    duration_ns: u64,
    error: bool,
    /// The child's adjusted count: the weight of its call.
    weight: f64,
    /// Where the child sits in the WAL (its edge is its contribution).
    origin: Option<SpanOrigin>,
    /// The edge was stored before a restart: match it (so the parent's peer
    /// candidate is suppressed) but do not count it again.
    stored: bool,
}

#[derive(Debug)]
struct PeerCandidate {
    minute_ns: u64,
    caller: Arc<str>,
    peer: String,
    duration_ns: u64,
    error: bool,
    /// The client span's adjusted count: the weight of its call.
    weight: f64,
    origin: Option<SpanOrigin>,
}

/// Computes per-minute [`OperationRollup`]s and [`EdgeRollup`]s from every
/// received span (call [`observe`](Self::observe) before sampling), and hands
/// finished minutes out with [`drain`](Self::drain).
///
/// Edges come from two sources:
/// - **parent/child across services**: a span of service B whose parent span
///   (same trace) belongs to service A counts one call A → B, with the child
///   span's duration (the callee's SERVER/CONSUMER span) as latency and its
///   error status. Parents are found in a bounded cache of recent spans; a
///   child that arrives before its parent waits in a bounded pending area and
///   is matched when the parent arrives (or given up after `pending_ttl_secs`).
/// - **uninstrumented peers**: a `CLIENT`/`PRODUCER` span naming its peer with
///   `peer.service`, else `db.system`, else `server.address` (else
///   `net.peer.name`) counts one call service → peer, with the client span's
///   duration, unless the peer turns out to be instrumented: the candidate is
///   held until its minute is drained and is dropped when a child span from
///   another service names it as parent, or when the peer's name is a service
///   seen in spans. A child that arrives after its client span's minute was
///   drained can still double count that one call.
///
/// **Crash exactness.** Fed through [`observe_at`](Self::observe_at) with each
/// span's WAL position, every batch lists the [`RollupOrigin`]s it accounts
/// for, and the aggregator reports which WAL segments it still holds
/// contributions of ([`take_hold_deltas`](Self::take_hold_deltas)), so the
/// WAL keeps them until the sink has committed those contributions. Given
/// the origins a sink stored ([`set_written`](Self::set_written)), replayed
/// spans feed the parent cache but are not counted again.
///
/// Memory is bounded by [`RollupConfig`]; everything given up is counted in
/// [`RollupStats`].
#[derive(Debug)]
pub struct RollupAggregator {
    config: RollupConfig,
    ops: HMap<OpKey, Acc>,
    edges: HMap<EdgeKey, Acc>,
    /// Origins of the contributions in `ops`/`edges`, per (minute, segment).
    origins: HMap<(u64, u64), [RangeSet; 3]>,
    ready: RollupBatch,
    recent: HMap<SpanKey, Arc<str>>,
    recent_order: VecDeque<SpanKey>,
    pending: HMap<SpanKey, Vec<PendingChild>>,
    pending_order: VecDeque<(SpanKey, u64)>,
    pending_len: usize,
    next_seq: u64,
    peers: HMap<SpanKey, PeerCandidate>,
    peer_order: VecDeque<SpanKey>,
    known: HSet<Arc<str>>,
    /// In-memory references to each WAL segment (origin entries here and in
    /// `ready`, pending children, peer candidates).
    seg_refs: HMap<u64, u64>,
    /// Changes of the WAL rollup holds not yet handed to the pipeline.
    hold_deltas: HMap<u64, i64>,
    written: WrittenOrigins,
    /// When (drain clock) origins were first seen unflushed, for `max_hold_secs`.
    unflushed_since: Option<u64>,
    /// The next drain writes everything, as when `max_hold_secs` has passed
    /// ([`RollupAggregator::drain_for_full_wal`]).
    write_held_now: bool,
    /// State of the draws that round weighted counts (see `round_counts`).
    round_state: u64,
    /// The last `tracestate` weighed (see [`weight::ThresholdMemo`]).
    weight_memo: weight::ThresholdMemo,
    stats: RollupStats,
}

fn minute_of(ns: u64) -> u64 {
    ns - ns % MINUTE_NS
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match span.attribute(key) {
        Some(AttrValue::Str(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

/// The uninstrumented peer a `CLIENT`/`PRODUCER` span calls, if it names one.
pub fn peer_name(span: &Span) -> Option<&str> {
    if !matches!(span.kind, SpanKind::Client | SpanKind::Producer) {
        return None;
    }
    [
        "peer.service",
        "db.system",
        "server.address",
        "net.peer.name",
    ]
    .iter()
    .find_map(|k| str_attr(span, k))
}

impl Default for RollupAggregator {
    fn default() -> Self {
        Self::new(RollupConfig::default())
    }
}

/// Parts of one span waiting to be marked (see `observe_at`).
struct Marks {
    minute: u64,
    origin: Option<SpanOrigin>,
    mask: u8,
}

impl Marks {
    fn add(&mut self, part: usize) {
        self.mask |= 1 << part;
    }
}

const MAIN: usize = OriginPart::Main as usize;
const CHILD: usize = OriginPart::Child as usize;
const PEER: usize = OriginPart::Peer as usize;

impl RollupAggregator {
    /// A new aggregator.
    pub fn new(config: RollupConfig) -> Self {
        RollupAggregator {
            config,
            ops: HMap::new(),
            edges: HMap::new(),
            origins: HMap::new(),
            ready: RollupBatch::default(),
            recent: HMap::new(),
            recent_order: VecDeque::new(),
            pending: HMap::new(),
            pending_order: VecDeque::new(),
            pending_len: 0,
            next_seq: 0,
            peers: HMap::new(),
            peer_order: VecDeque::new(),
            known: HSet::new(),
            seg_refs: HMap::new(),
            hold_deltas: HMap::new(),
            written: WrittenOrigins::default(),
            unflushed_since: None,
            write_held_now: false,
            round_state: 0x005E_ED0F_AD1C_0DE5_u64,
            weight_memo: Default::default(),
            stats: RollupStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &RollupStats {
        &self.stats
    }

    /// Series currently accumulated (for a gauge).
    pub fn series(&self) -> usize {
        self.ops.len() + self.edges.len()
    }

    /// The origins a sink already stored for the segments about to be
    /// replayed: those contributions are not counted again.
    pub fn set_written(&mut self, written: WrittenOrigins) {
        self.written = written;
    }

    /// Changes of the per-segment WAL rollup holds since the last call
    /// (segment, +n to hold / −n to release). Apply every positive change
    /// before releasing anything else of the same round.
    pub fn take_hold_deltas(&mut self) -> Vec<(u64, i64)> {
        let mut v: Vec<(u64, i64)> = self.hold_deltas.drain().filter(|d| d.1 != 0).collect();
        v.sort_unstable_by_key(|d| std::cmp::Reverse(d.1));
        v
    }

    fn add_ref(&mut self, seg: u64) {
        let r = self.seg_refs.entry(seg).or_insert(0);
        *r += 1;
        if *r == 1 {
            *self.hold_deltas.entry(seg).or_insert(0) += 1;
        }
    }

    fn drop_ref(&mut self, seg: u64) {
        if let Some(r) = self.seg_refs.get_mut(&seg) {
            *r -= 1;
            if *r == 0 {
                self.seg_refs.remove(&seg);
                *self.hold_deltas.entry(seg).or_insert(0) -= 1;
            }
        }
    }

    /// Records that `part` of the span at `o` is accounted for in the
    /// contributions accumulated now. Called right after the contribution is
    /// added (nothing can flush in between), so both travel in one batch.
    fn mark(&mut self, minute: u64, o: SpanOrigin, part: usize) {
        let entry = self.origins.entry((minute, o.segment));
        let new = matches!(entry, hashbrown::hash_map::Entry::Vacant(_));
        entry.or_default()[part].insert(o.ordinal);
        if new {
            self.add_ref(o.segment);
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.known.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        if self.known.len() < self.config.max_known_services {
            self.known.insert(a.clone());
        } else {
            self.stats.known_services_overflow += 1;
        }
        a
    }

    /// Makes room for one new series; false when the observation must be dropped.
    fn room_for_series(&mut self) -> bool {
        if self.ops.len() + self.edges.len() < self.config.max_series {
            return true;
        }
        let ready_len = self.ready.operations.len() + self.ready.edges.len();
        if ready_len >= self.config.max_series {
            self.stats.series_dropped += 1;
            return false;
        }
        self.stats.early_flushes += 1;
        let mut batch = std::mem::take(&mut self.ready);
        self.take_into(&mut batch, |_| true);
        self.ready = batch;
        true
    }

    fn add_edge(
        &mut self,
        minute: u64,
        caller: &Arc<str>,
        callee: &str,
        (dur, err, w): (u64, bool, f64),
    ) {
        let key = EdgeKeyRef {
            minute,
            caller,
            callee,
        };
        if let Some(acc) = self.edges.get_mut(&key) {
            acc.add(dur, err, w);
            return;
        }
        if !self.room_for_series() {
            return;
        }
        let mut acc = Acc::default();
        acc.add(dur, err, w);
        self.edges.insert(
            EdgeKey {
                minute,
                caller: caller.clone(),
                callee: callee.into(),
            },
            acc,
        );
    }

    fn add_op(
        &mut self,
        minute: u64,
        service: &Arc<str>,
        span: &Span,
        (dur, err, w): (u64, bool, f64),
    ) {
        let key = OpKeyRef {
            minute,
            service,
            name: &span.name,
            kind: span.kind,
        };
        if let Some(acc) = self.ops.get_mut(&key) {
            acc.add(dur, err, w);
            return;
        }
        if !self.room_for_series() {
            return;
        }
        let mut acc = Acc::default();
        acc.add(dur, err, w);
        self.ops.insert(
            OpKey {
                minute,
                service: service.clone(),
                name: span.name.as_str().into(),
                kind: span.kind,
            },
            acc,
        );
    }

    /// Counts one span. Call for every received span, before sampling.
    pub fn observe(&mut self, span: &Span) {
        self.observe_at(span, None);
    }

    /// Counts one span that sits at `origin` in the WAL (see the type's
    /// documentation on crash exactness). Returns the span's adjusted count
    /// (its weight in the rollups).
    pub fn observe_at(&mut self, span: &Span, origin: Option<SpanOrigin>) -> f64 {
        self.stats.spans_observed += 1;
        let written = match origin {
            Some(o) if !self.written.is_empty() => self.written.written(o),
            _ => [false; 3],
        };
        let service = self.intern(&span.service_name);
        let minute = minute_of(span.start_ns);
        let dur = span.duration_ns();
        let err = span.is_error();
        let (w, source) = weight::adjusted_count_memo(span, &mut self.weight_memo);
        match source {
            weight::WeightSource::Threshold => self.stats.weight_threshold += 1,
            weight::WeightSource::JaegerTags => self.stats.weight_jaeger += 1,
            weight::WeightSource::Malformed => self.stats.weight_malformed += 1,
            weight::WeightSource::None => {}
        }
        // Parts of this span accounted for but not marked yet. They are
        // marked together (one origin lookup), always before anything that
        // can add a series (and so flush early), so a part and its
        // contribution never end up in different batches.
        let mut marks = Marks {
            minute,
            origin,
            mask: 0,
        };

        if written[MAIN] {
            self.stats.replayed_already_stored += 1;
        } else {
            self.add_op(minute, &service, span, (dur, err, w));
            marks.add(MAIN);
        }

        // Parent/child across services.
        let mut child_settled = true;
        if let Some(parent) = span.parent_span_id {
            let pkey = (span.trace_id, parent);
            match self.recent.get(&pkey).cloned() {
                Some(parent_service) => {
                    if *parent_service != *span.service_name {
                        self.flush_marks(&mut marks);
                        self.cross_service_call(
                            pkey,
                            &parent_service,
                            &service,
                            minute,
                            (dur, err, w),
                            !written[CHILD],
                        );
                    }
                }
                None => {
                    child_settled = false;
                    let o = origin.filter(|_| !written[CHILD]);
                    self.hold_child(
                        pkey,
                        service.clone(),
                        minute,
                        span.end_ns,
                        (dur, err, w),
                        o,
                        written[CHILD],
                    );
                }
            }
        }
        if child_settled && !written[CHILD] {
            marks.add(CHILD);
        }

        let me = (span.trace_id, span.span_id);
        // Calls to a named peer, held until the minute is drained. Recorded
        // before waiting children are matched, so a cross-service child that
        // arrived first cancels the candidate.
        let mut peer_settled = true;
        if let Some(peer) = peer_name(span) {
            if peer != span.service_name && !written[PEER] && !self.peers.contains_key(&me) {
                if self.peers.len() >= self.config.peer_candidates {
                    self.flush_marks(&mut marks);
                    self.evict_peer_candidate();
                }
                if let Some(o) = origin {
                    self.add_ref(o.segment);
                }
                self.peers.insert(
                    me,
                    PeerCandidate {
                        minute_ns: minute,
                        caller: service.clone(),
                        peer: peer.to_string(),
                        duration_ns: dur,
                        error: err,
                        weight: w,
                        origin,
                    },
                );
                self.peer_order.push_back(me);
                peer_settled = false;
            }
        }
        if peer_settled && !written[PEER] {
            marks.add(PEER);
        }
        self.flush_marks(&mut marks);

        // Children that were waiting for this span.
        if let Some(children) = self.pending.remove(&me) {
            self.pending_len -= children.len();
            for c in children {
                if *c.service != *span.service_name {
                    self.cross_service_call(
                        me,
                        &service,
                        &c.service,
                        c.minute_ns,
                        (c.duration_ns, c.error, c.weight),
                        !c.stored,
                    );
                }
                self.settle_child(&c);
            }
        }

        self.remember(me, service);
        w
    }

    fn flush_marks(&mut self, m: &mut Marks) {
        if let (Some(o), true) = (m.origin, m.mask != 0) {
            let entry = self.origins.entry((m.minute, o.segment));
            let new = matches!(entry, hashbrown::hash_map::Entry::Vacant(_));
            let parts = entry.or_default();
            for (i, p) in parts.iter_mut().enumerate() {
                if m.mask & (1 << i) != 0 {
                    p.insert(o.ordinal);
                }
            }
            if new {
                self.add_ref(o.segment);
            }
        }
        m.mask = 0;
    }

    /// Marks a pending child's edge as accounted for (counted, or given up).
    fn settle_child(&mut self, c: &PendingChild) {
        if let Some(o) = c.origin {
            self.mark(c.minute_ns, o, CHILD);
            self.drop_ref(o.segment);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn cross_service_call(
        &mut self,
        parent: SpanKey,
        caller: &Arc<str>,
        callee: &str,
        minute: u64,
        call: (u64, bool, f64),
        count: bool,
    ) {
        if let Some(c) = self.peers.remove(&parent) {
            // The client span's peer is instrumented: count the call once, here.
            self.stats.peer_calls_suppressed += 1;
            self.settle_peer(&c);
        }
        if count {
            self.stats.parent_child_calls += 1;
            self.add_edge(minute, caller, callee, call);
        } else {
            self.stats.replayed_already_stored += 1;
        }
    }

    fn remember(&mut self, key: SpanKey, service: Arc<str>) {
        if self.config.span_cache_entries == 0 {
            return;
        }
        if self.recent.insert(key, service).is_none() {
            self.recent_order.push_back(key);
        }
        while self.recent.len() > self.config.span_cache_entries {
            let Some(old) = self.recent_order.pop_front() else {
                break;
            };
            if self.recent.remove(&old).is_some() {
                self.stats.span_cache_evictions += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hold_child(
        &mut self,
        parent: SpanKey,
        service: Arc<str>,
        minute_ns: u64,
        end_ns: u64,
        (duration_ns, error, weight): (u64, bool, f64),
        origin: Option<SpanOrigin>,
        stored: bool,
    ) {
        let given_up = PendingChild {
            seq: 0,
            service,
            minute_ns,
            end_ns,
            duration_ns,
            error,
            weight,
            origin,
            stored,
        };
        if self.config.pending_children == 0 {
            self.stats.pending_evicted += 1;
            // Given up at once: its edge is settled (not counted) now.
            if let Some(o) = origin {
                self.mark(minute_ns, o, CHILD);
            }
            return;
        }
        while self.pending_len >= self.config.pending_children {
            let Some((key, seq)) = self.pending_order.pop_front() else {
                break;
            };
            let mut evicted = None;
            if let Some(v) = self.pending.get_mut(&key) {
                if let Some(pos) = v.iter().position(|c| c.seq == seq) {
                    evicted = Some(v.remove(pos));
                    self.pending_len -= 1;
                    self.stats.pending_evicted += 1;
                }
                if v.is_empty() {
                    self.pending.remove(&key);
                }
            }
            if let Some(c) = evicted {
                self.settle_child(&c);
            }
        }
        if let Some(o) = origin {
            self.add_ref(o.segment);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending
            .entry(parent)
            .or_default()
            .push(PendingChild { seq, ..given_up });
        self.pending_len += 1;
        self.pending_order.push_back((parent, seq));
        // Matched children leave stale order entries; compact now and then so
        // the order queue stays proportional to what is pending.
        if self.pending_order.len() > 2 * self.config.pending_children + 64 {
            let pending = &self.pending;
            self.pending_order.retain(|(k, s)| {
                pending
                    .get(k)
                    .is_some_and(|v| v.iter().any(|c| c.seq == *s))
            });
        }
    }

    fn evict_peer_candidate(&mut self) {
        while let Some(k) = self.peer_order.pop_front() {
            if let Some(c) = self.peers.remove(&k) {
                self.stats.peer_candidates_evicted += 1;
                self.resolve_peer(c);
                return;
            }
        }
    }

    fn resolve_peer(&mut self, c: PeerCandidate) {
        if self.known.contains(c.peer.as_str()) {
            self.stats.peer_calls_suppressed += 1;
        } else {
            self.stats.peer_calls += 1;
            self.add_edge(
                c.minute_ns,
                &c.caller,
                &c.peer,
                (c.duration_ns, c.error, c.weight),
            );
        }
        self.settle_peer(&c);
    }

    fn settle_peer(&mut self, c: &PeerCandidate) {
        if let Some(o) = c.origin {
            self.mark(c.minute_ns, o, PEER);
            self.drop_ref(o.segment);
        }
    }

    /// Moves the series and origins of the minutes `pick` selects into `out`.
    fn take_into(&mut self, out: &mut RollupBatch, pick: impl Fn(u64) -> bool) {
        let state = &mut self.round_state;
        for (k, a) in self.ops.extract_if(|k, _| pick(k.minute)) {
            let (count, errors) = round_counts(a.count, a.errors, next_unit(state));
            out.operations.push(OperationRollup {
                minute_ns: k.minute,
                service: k.service.to_string(),
                operation: k.name.into(),
                kind: k.kind,
                count,
                errors,
                sketch: a.sketch,
            });
        }
        for (k, a) in self.edges.extract_if(|k, _| pick(k.minute)) {
            let (calls, errors) = round_counts(a.count, a.errors, next_unit(state));
            out.edges.push(EdgeRollup {
                minute_ns: k.minute,
                caller: k.caller.to_string(),
                callee: k.callee.into(),
                calls,
                errors,
                sketch: a.sketch,
            });
        }
        for ((minute, segment), parts) in self.origins.extract_if(|k, _| pick(k.0)) {
            out.origins.push(RollupOrigin {
                segment,
                minute_ns: minute,
                parts,
            });
        }
    }

    /// Hands a batch out: its origins' segments become held by the batch
    /// (released by the sink once committed) instead of by the aggregator.
    fn hand_out(&mut self, out: RollupBatch) -> RollupBatch {
        for seg in out.origin_segments() {
            *self.hold_deltas.entry(seg).or_insert(0) += 1;
        }
        for i in 0..out.origins.len() {
            self.drop_ref(out.origins[i].segment);
        }
        if self.origins.is_empty() && self.ready.origins.is_empty() {
            self.unflushed_since = None;
        }
        out
    }

    /// Returns the rollups of every minute that ended at least
    /// `finalize_delay_secs` before `now_ns` (plus anything flushed early, and
    /// everything when WAL-tracked contributions were held `max_hold_secs`),
    /// and gives up children that waited too long for their parent.
    pub fn drain(&mut self, now_ns: u64) -> RollupBatch {
        let horizon = now_ns.saturating_sub(
            self.config
                .finalize_delay_secs
                .saturating_mul(1_000_000_000),
        );
        let finished = |minute: u64| minute.saturating_add(MINUTE_NS) <= horizon;

        let ttl = self.config.pending_ttl_secs.saturating_mul(1_000_000_000);
        let mut expired = Vec::new();
        self.pending.retain(|_, v| {
            let mut i = 0;
            while i < v.len() {
                if v[i].end_ns.saturating_add(ttl) < now_ns {
                    expired.push(v.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !v.is_empty()
        });
        self.pending_len -= expired.len();
        self.stats.pending_expired += expired.len() as u64;
        for c in &expired {
            self.settle_child(c);
        }

        let due: Vec<SpanKey> = self
            .peers
            .iter()
            .filter(|(_, c)| finished(c.minute_ns))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(c) = self.peers.remove(&k) {
                self.resolve_peer(c);
            }
        }
        if self.peer_order.len() > 2 * self.peers.len() + 64 {
            let peers = &self.peers;
            self.peer_order.retain(|k| peers.contains_key(k));
        }

        let hold_ns = self.config.max_hold_secs.saturating_mul(1_000_000_000);
        let mut all = std::mem::take(&mut self.write_held_now);
        if hold_ns > 0 && !(self.origins.is_empty() && self.ready.origins.is_empty()) {
            let since = *self.unflushed_since.get_or_insert(now_ns);
            all |= now_ns.saturating_sub(since) >= hold_ns;
        }
        // Origins of spans with scattered timestamps (many minutes) are
        // bounded like series: past the limit everything is written now.
        all |= self.origins.len() >= self.config.max_series;
        let mut out = std::mem::take(&mut self.ready);
        if all {
            self.take_into(&mut out, |_| true);
        } else {
            self.take_into(&mut out, finished);
        }
        self.hand_out(out)
    }

    /// Like [`RollupAggregator::drain`], but writes every contribution of spans
    /// that came through the WAL now, as if `max_hold_secs` had passed: the
    /// WAL is nearly full, and segments whose spans the sink has already
    /// stored, kept only until their rollups are written, would otherwise
    /// make the collector refuse requests the sink could take (seen under
    /// overload with a small WAL: `write-ahead log full` while the queue was
    /// empty). Peer resolution and pending children are left as `drain`
    /// leaves them.
    pub fn drain_for_full_wal(&mut self, now_ns: u64) -> RollupBatch {
        if self.origins.is_empty() && self.ready.origins.is_empty() {
            return self.drain(now_ns);
        }
        self.stats.wal_full_flushes += 1;
        self.write_held_now = true;
        self.drain(now_ns)
    }

    /// Returns everything accumulated, finished or not (for shutdown).
    /// Children still waiting for their parent keep their WAL segments held,
    /// so they are replayed at the next start.
    pub fn drain_all(&mut self) -> RollupBatch {
        let keys: Vec<SpanKey> = self.peers.keys().copied().collect();
        for k in keys {
            if let Some(c) = self.peers.remove(&k) {
                self.resolve_peer(c);
            }
        }
        self.peer_order.clear();
        let mut out = std::mem::take(&mut self.ready);
        self.take_into(&mut out, |_| true);
        self.hand_out(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_quantiles_within_relative_accuracy() {
        let mut s = LatencySketch::default();
        for v in 1..=10_000u64 {
            s.add(v * 1000);
        }
        for q in [0.5, 0.95, 0.99] {
            let exact = (q * 10_000.0_f64).ceil() * 1000.0;
            let got = s.quantile(q) as f64;
            assert!(
                (got - exact).abs() / exact <= SKETCH_RELATIVE_ACCURACY + 1e-9,
                "q={q} got={got} exact={exact}"
            );
        }
        assert_eq!(s.mean(), 5_000_500);
    }

    #[test]
    fn merge_equals_single_sketch() {
        let (mut a, mut b, mut all) = (
            LatencySketch::default(),
            LatencySketch::default(),
            LatencySketch::default(),
        );
        for v in 0..500u64 {
            a.add(v * 7);
            all.add(v * 7);
        }
        for v in 0..300u64 {
            b.add(v * 13 + 5);
            all.add(v * 13 + 5);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }
}

#[cfg(test)]
mod weighted_tests;

#[cfg(test)]
mod aggregator_tests {
    use super::*;
    use crate::model::{KeyValue, StatusCode};

    const T0: u64 = 1_700_000_040 * 1_000_000_000 - (1_700_000_040 * 1_000_000_000) % MINUTE_NS;

    fn span(
        trace: u8,
        id: u8,
        parent: Option<u8>,
        service: &str,
        kind: SpanKind,
        start: u64,
        dur: u64,
    ) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 1,
            name: format!("{service}-op"),
            kind,
            start_ns: start,
            end_ns: start + dur,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            service_name: service.into(),
            resource_attributes: vec![],
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    fn edge<'a>(b: &'a RollupBatch, caller: &str, callee: &str) -> Option<&'a EdgeRollup> {
        b.edges
            .iter()
            .find(|e| e.caller == caller && e.callee == callee)
    }

    #[test]
    fn operations_counted_per_minute_and_drained_only_when_finished() {
        let mut a = RollupAggregator::default();
        let mut s1 = span(1, 1, None, "api", SpanKind::Server, T0 + 1, 1_000);
        s1.status_code = StatusCode::Error;
        a.observe(&s1);
        a.observe(&span(1, 2, None, "api", SpanKind::Server, T0 + 2, 3_000));
        a.observe(&span(
            1,
            3,
            None,
            "api",
            SpanKind::Server,
            T0 + MINUTE_NS + 5,
            2_000,
        ));
        // Minute T0 ended at T0+60s; with the 10 s delay it is due at T0+70s.
        assert!(a.drain(T0 + MINUTE_NS + 9_000_000_000).is_empty());
        let b = a.drain(T0 + MINUTE_NS + 10_000_000_000);
        assert_eq!(b.operations.len(), 1);
        let r = &b.operations[0];
        assert_eq!(
            (r.minute_ns, r.count, r.errors, r.sketch.count),
            (T0, 2, 1, 2.0)
        );
        let rest = a.drain_all();
        assert_eq!(rest.operations.len(), 1);
        assert_eq!(rest.operations[0].minute_ns, T0 + MINUTE_NS);
        assert_eq!(a.series(), 0);
    }

    #[test]
    fn parent_child_edge_in_either_arrival_order() {
        let mut a = RollupAggregator::default();
        // Parent first.
        a.observe(&span(1, 1, None, "web", SpanKind::Client, T0, 10_000));
        let mut child = span(1, 2, Some(1), "db-svc", SpanKind::Server, T0 + 10, 4_000);
        child.status_code = StatusCode::Error;
        a.observe(&child);
        // Child first.
        a.observe(&span(
            2,
            2,
            Some(1),
            "db-svc",
            SpanKind::Server,
            T0 + 10,
            6_000,
        ));
        a.observe(&span(2, 1, None, "web", SpanKind::Client, T0, 10_000));
        // Same-service child: no edge.
        a.observe(&span(
            2,
            3,
            Some(1),
            "web",
            SpanKind::Internal,
            T0 + 20,
            1_000,
        ));
        let b = a.drain_all();
        let e = edge(&b, "web", "db-svc").expect("edge");
        assert_eq!((e.calls, e.errors, e.sketch.sum), (2, 1, 10_000.0));
        assert_eq!(b.edges.len(), 1);
        assert_eq!(a.stats().parent_child_calls, 2);
    }

    #[test]
    fn client_peer_edges_counted_only_for_uninstrumented_peers() {
        let mut a = RollupAggregator::default();
        let mut db = span(1, 1, None, "web", SpanKind::Client, T0, 5_000);
        db.attributes.push(KeyValue::new(
            "db.system",
            AttrValue::Str("postgresql".into()),
        ));
        a.observe(&db);
        // Client span naming an instrumented service, whose server span shows up.
        let mut call = span(1, 2, None, "web", SpanKind::Client, T0, 8_000);
        call.attributes.push(KeyValue::new(
            "server.address",
            AttrValue::Str("cart.internal".into()),
        ));
        a.observe(&call);
        a.observe(&span(
            1,
            3,
            Some(2),
            "cart",
            SpanKind::Server,
            T0 + 1,
            6_000,
        ));
        // peer.service wins over db.system and names a known service: suppressed.
        let mut named = span(1, 4, None, "web", SpanKind::Client, T0, 8_000);
        named
            .attributes
            .push(KeyValue::new("db.system", AttrValue::Str("redis".into())));
        named
            .attributes
            .push(KeyValue::new("peer.service", AttrValue::Str("cart".into())));
        a.observe(&named);
        // Server spans never name peers.
        let mut srv = span(1, 5, None, "web", SpanKind::Server, T0, 1);
        srv.attributes
            .push(KeyValue::new("peer.service", AttrValue::Str("x".into())));
        a.observe(&srv);
        let b = a.drain(T0 + 10 * MINUTE_NS);
        let pg = edge(&b, "web", "postgresql").expect("db edge");
        assert_eq!((pg.calls, pg.sketch.sum), (1, 5_000.0));
        assert_eq!(edge(&b, "web", "cart").expect("cart edge").calls, 1);
        assert!(edge(&b, "web", "cart.internal").is_none());
        assert!(edge(&b, "web", "x").is_none());
        assert_eq!(b.edges.len(), 2);
        assert_eq!(a.stats().peer_calls, 1);
        assert_eq!(a.stats().peer_calls_suppressed, 2);
    }

    #[test]
    fn peer_candidate_cancelled_by_child_that_arrived_first() {
        let mut a = RollupAggregator::default();
        a.observe(&span(
            3,
            2,
            Some(1),
            "cart",
            SpanKind::Server,
            T0 + 1,
            6_000,
        ));
        let mut call = span(3, 1, None, "web", SpanKind::Client, T0, 8_000);
        call.attributes.push(KeyValue::new(
            "server.address",
            AttrValue::Str("cart.local".into()),
        ));
        a.observe(&call);
        let b = a.drain_all();
        assert_eq!(b.edges.len(), 1, "{:?}", b.edges);
        assert_eq!(edge(&b, "web", "cart").expect("edge").calls, 1);
        assert_eq!(a.stats().peer_calls_suppressed, 1);
    }

    #[test]
    fn bounded_pending_and_cache_are_counted() {
        let cfg = RollupConfig {
            pending_children: 2,
            span_cache_entries: 2,
            pending_ttl_secs: 1,
            ..Default::default()
        };
        let mut a = RollupAggregator::new(cfg);
        for i in 0..5u8 {
            a.observe(&span(
                9,
                10 + i,
                Some(i + 1),
                "orphan",
                SpanKind::Server,
                T0,
                10,
            ));
        }
        assert_eq!(a.stats().pending_evicted, 3);
        assert_eq!(a.stats().span_cache_evictions, 3);
        a.drain(T0 + 5_000_000_000);
        assert_eq!(a.stats().pending_expired, 2);
        assert_eq!(a.pending_len, 0);
    }

    #[test]
    fn series_limit_flushes_early_then_drops_counted() {
        let cfg = RollupConfig {
            max_series: 2,
            ..Default::default()
        };
        let mut a = RollupAggregator::new(cfg);
        for i in 0..5u8 {
            let mut s = span(1, i, None, "svc", SpanKind::Server, T0, 10);
            s.name = format!("op{i}");
            a.observe(&s);
        }
        // 2 accumulate, flush to ready (2), 2 more accumulate, 5th dropped.
        assert_eq!(a.stats().early_flushes, 1);
        assert_eq!(a.stats().series_dropped, 1);
        let b = a.drain_all();
        assert_eq!(b.operations.iter().map(|o| o.count).sum::<u64>(), 4);
    }
}

#[cfg(test)]
mod origin_tests {
    //! Crash exactness: a run is cut at every point, some batches committed
    //! and some not; the WAL keeps what the holds say, the restart replays it
    //! with the stored origins, and the stored totals must equal one count
    //! per span and per call.
    use super::*;
    use crate::model::{KeyValue, StatusCode};
    use std::collections::BTreeMap;

    const T0: u64 = 1_700_000_040 * 1_000_000_000 - (1_700_000_040 * 1_000_000_000) % MINUTE_NS;
    const S: u64 = 1_000_000_000;

    #[allow(clippy::too_many_arguments)]
    fn span(
        trace: u8,
        id: u8,
        parent: Option<u8>,
        service: &str,
        kind: SpanKind,
        start: u64,
        attrs: &[(&str, &str)],
    ) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 1,
            name: format!("{service}-op{}", id % 3),
            kind,
            start_ns: start,
            end_ns: start + 1_000,
            attributes: attrs
                .iter()
                .map(|(k, v)| KeyValue::new(*k, AttrValue::Str((*v).into())))
                .collect(),
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            service_name: service.into(),
            resource_attributes: vec![],
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    enum Ev {
        /// One acknowledged request: its spans go to `segment`.
        Record(u64, Vec<Span>),
        /// The pipeline drains at this wall time; the batch goes to the sink.
        Drain(u64),
        /// The sink commits every batch sent so far.
        Commit,
    }

    #[derive(Default)]
    struct Sink {
        ops: BTreeMap<(u64, String, String), u64>,
        edges: BTreeMap<(u64, String, String), u64>,
        origins: Vec<RollupOrigin>,
    }

    impl Sink {
        fn write(&mut self, b: &RollupBatch) {
            for o in &b.operations {
                *self
                    .ops
                    .entry((o.minute_ns, o.service.clone(), o.operation.clone()))
                    .or_default() += o.count;
            }
            for e in &b.edges {
                *self
                    .edges
                    .entry((e.minute_ns, e.caller.clone(), e.callee.clone()))
                    .or_default() += e.calls;
            }
            self.origins.extend(b.origins.iter().cloned());
        }
    }

    /// WAL model: per segment the rollup holds, and the records in order.
    #[derive(Default)]
    struct WalModel {
        holds: BTreeMap<u64, i64>,
        records: BTreeMap<u64, Vec<Vec<Span>>>,
    }

    impl WalModel {
        fn apply(&mut self, deltas: Vec<(u64, i64)>) {
            for (seg, d) in deltas {
                let h = self.holds.entry(seg).or_default();
                *h += d;
                assert!(*h >= 0, "segment {seg} released more than held");
            }
        }
        fn append(&mut self, seg: u64, spans: &[Span]) -> u64 {
            let recs = self.records.entry(seg).or_default();
            let first: u64 = recs.iter().map(|r| r.len() as u64).sum();
            recs.push(spans.to_vec());
            first
        }
    }

    fn feed(a: &mut RollupAggregator, seg: u64, first: u64, spans: &[Span]) {
        for (i, s) in spans.iter().enumerate() {
            a.observe_at(
                s,
                Some(SpanOrigin {
                    segment: seg,
                    ordinal: first + i as u64,
                }),
            );
        }
    }

    fn scenario() -> Vec<Ev> {
        use SpanKind::*;
        let m0 = T0;
        let m1 = T0 + MINUTE_NS;
        vec![
            // Trace 1: the cart server span arrives before its caller's client span.
            Ev::Record(
                1,
                vec![
                    span(1, 3, Some(2), "cart", Server, m0 + S, &[]),
                    span(2, 1, None, "web", Server, m0 + 2 * S, &[]),
                    span(
                        2,
                        2,
                        Some(1),
                        "web",
                        Client,
                        m0 + 3 * S,
                        &[("db.system", "postgresql")],
                    ),
                ],
            ),
            Ev::Drain(m0 + 30 * S),
            Ev::Record(
                1,
                vec![
                    span(3, 1, None, "web", Server, m0 + 40 * S, &[]),
                    span(3, 2, Some(1), "cart", Server, m0 + 41 * S, &[]),
                ],
            ),
            Ev::Commit,
            // Minute m0 is finished and written without trace 1's edge.
            Ev::Drain(m1 + 11 * S),
            Ev::Record(
                2,
                vec![
                    // The caller's client span, late (its minute is written).
                    span(
                        1,
                        2,
                        Some(1),
                        "web",
                        Client,
                        m0 + 500_000,
                        &[("server.address", "cart.local")],
                    ),
                    span(1, 1, None, "web", Server, m0, &[]),
                    span(4, 1, None, "api", Server, m1 + 5 * S, &[]),
                    span(
                        4,
                        2,
                        Some(1),
                        "api",
                        Producer,
                        m1 + 6 * S,
                        &[("peer.service", "queue")],
                    ),
                ],
            ),
            Ev::Drain(m1 + 20 * S),
            Ev::Commit,
            Ev::Record(
                3,
                vec![
                    span(5, 1, None, "web", Server, m1 + 30 * S, &[]),
                    span(5, 2, Some(1), "cart", Server, m1 + 31 * S, &[]),
                    // A child whose parent never arrives.
                    span(6, 2, Some(9), "cart", Server, m1 + 32 * S, &[]),
                ],
            ),
            Ev::Drain(m1 + 45 * S),
            Ev::Drain(m1 + 75 * S),
            Ev::Commit,
            Ev::Drain(m1 + 200 * S),
            Ev::Commit,
        ]
    }

    fn expected() -> Sink {
        // Every span once, every call once; computed from the scenario by hand.
        let m0 = T0;
        let m1 = T0 + MINUTE_NS;
        let mut want = Sink::default();
        for ev in scenario() {
            if let Ev::Record(_, spans) = ev {
                for s in spans {
                    *want
                        .ops
                        .entry((
                            minute_of(s.start_ns),
                            s.service_name.clone(),
                            s.name.clone(),
                        ))
                        .or_default() += 1;
                }
            }
        }
        for (minute, caller, callee) in [
            (m0, "web", "cart"),       // trace 1 (late parent) — one call, not two
            (m0, "web", "postgresql"), // trace 2 peer
            (m0, "web", "cart"),       // trace 3
            (m1, "api", "queue"),      // trace 4 peer
            (m1, "web", "cart"),       // trace 5
        ] {
            *want
                .edges
                .entry((minute, caller.into(), callee.into()))
                .or_default() += 1;
        }
        want
    }

    fn config() -> RollupConfig {
        RollupConfig {
            max_hold_secs: 0,
            pending_ttl_secs: 120,
            ..Default::default()
        }
    }

    /// Runs the scenario up to `cut` events, crashes, restarts (replaying
    /// the held segments, or all of them), and returns the sink's totals.
    fn run(cut: usize, replay_all: bool) -> Sink {
        let evs = scenario();
        let mut sink = Sink::default();
        let mut wal = WalModel::default();
        let mut sent: Vec<RollupBatch> = Vec::new();
        let mut a = RollupAggregator::new(config());
        for ev in &evs[..cut] {
            match ev {
                Ev::Record(seg, spans) => {
                    let first = wal.append(*seg, spans);
                    feed(&mut a, *seg, first, spans);
                    wal.apply(a.take_hold_deltas());
                }
                Ev::Drain(now) => {
                    let b = a.drain(*now);
                    wal.apply(a.take_hold_deltas());
                    sent.push(b);
                }
                Ev::Commit => {
                    for b in sent.drain(..) {
                        sink.write(&b);
                        wal.apply(b.origin_segments().into_iter().map(|s| (s, -1)).collect());
                    }
                }
            }
        }
        // Crash: uncommitted batches and the aggregator are gone. A segment
        // whose holds are all released may have been deleted.
        let replay: Vec<u64> = wal
            .records
            .keys()
            .copied()
            .filter(|s| replay_all || wal.holds.get(s).copied().unwrap_or(0) > 0)
            .collect();
        let mut b = RollupAggregator::new(config());
        b.set_written(WrittenOrigins::from_stored(
            sink.origins
                .iter()
                .filter(|o| replay.contains(&o.segment))
                .cloned(),
        ));
        for seg in &replay {
            let mut first = 0;
            for rec in &wal.records[seg] {
                feed(&mut b, *seg, first, rec);
                first += rec.len() as u64;
            }
        }
        // Requests not acknowledged before the crash are sent again.
        for ev in &evs[cut..] {
            if let Ev::Record(seg, spans) = ev {
                feed(&mut b, seg + 100, 0, spans);
            }
        }
        sink.write(&b.drain(T0 + 10 * MINUTE_NS));
        sink.write(&b.drain_all());
        sink
    }

    #[test]
    fn uninterrupted_run_counts_each_span_and_call_once() {
        let got = run(scenario().len(), false);
        let want = expected();
        assert_eq!(got.ops, want.ops);
        assert_eq!(got.edges, want.edges);
    }

    #[test]
    fn crash_at_every_point_neither_loses_nor_double_counts() {
        let want = expected();
        for cut in 0..=scenario().len() {
            for replay_all in [false, true] {
                let got = run(cut, replay_all);
                assert_eq!(got.ops, want.ops, "cut {cut}, replay_all {replay_all}");
                assert_eq!(got.edges, want.edges, "cut {cut}, replay_all {replay_all}");
            }
        }
    }

    #[test]
    fn holds_follow_contributions_until_committed() {
        let mut a = RollupAggregator::new(config());
        let child = span(1, 2, Some(1), "cart", SpanKind::Server, T0, &[]);
        feed(&mut a, 7, 0, std::slice::from_ref(&child));
        // The op series and the pending child both reference segment 7: one hold.
        assert_eq!(a.take_hold_deltas(), vec![(7, 1)]);
        // Minute written: the batch takes a hold, the pending child keeps one.
        let b = a.drain(T0 + 2 * MINUTE_NS);
        assert_eq!(b.origin_segments(), vec![7]);
        assert_eq!(
            b.origins[0].parts[OriginPart::Main as usize].0,
            vec![(0, 1)]
        );
        assert!(b.origins[0].parts[OriginPart::Child as usize].is_empty());
        assert_eq!(a.take_hold_deltas(), vec![(7, 1)]);
        // The parent arrives from segment 8: the child's edge settles into a
        // new origin of segment 7, and the pending hold becomes the series'.
        let parent = span(1, 1, None, "web", SpanKind::Server, T0, &[]);
        feed(&mut a, 8, 0, std::slice::from_ref(&parent));
        assert_eq!(a.take_hold_deltas(), vec![(8, 1)]);
        let b2 = a.drain_all();
        assert_eq!(b2.origin_segments(), vec![7, 8]);
        let mut d = a.take_hold_deltas();
        d.sort();
        // Handed to the batch: +1 each for the batch, -1 each for the aggregator.
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(b2.edges.len(), 1);
        let seven = b2.origins.iter().find(|o| o.segment == 7).expect("7");
        assert_eq!(seven.parts[OriginPart::Child as usize].0, vec![(0, 1)]);
    }

    #[test]
    fn a_full_wal_writes_unfinished_minutes_at_once() {
        let mut a = RollupAggregator::new(RollupConfig {
            max_hold_secs: 20,
            ..Default::default()
        });
        let root = span(1, 1, None, "svc", SpanKind::Server, T0 + S, &[]);
        feed(&mut a, 4, 0, std::slice::from_ref(&root));
        assert_eq!(a.take_hold_deltas(), vec![(4, 1)]);
        // Minute not finished, held 0 of 20 s: nothing is written yet.
        assert!(a.drain(T0 + 2 * S).is_empty());
        // The WAL is nearly full: written now, the segment's hold handed to
        // the batch (released when the sink commits it).
        let b = a.drain_for_full_wal(T0 + 2 * S);
        assert_eq!(b.operations.iter().map(|o| o.count).sum::<u64>(), 1);
        assert_eq!(b.origin_segments(), vec![4]);
        assert!(a.take_hold_deltas().is_empty(), "+1 batch, -1 aggregator");
        assert_eq!(a.stats().wal_full_flushes, 1);
        // Nothing held: no flush counted, and the next drain is an ordinary one.
        assert!(a.drain_for_full_wal(T0 + 3 * S).is_empty());
        assert_eq!(a.stats().wal_full_flushes, 1);
    }

    #[test]
    fn max_hold_writes_unfinished_minutes_and_early_flush_keeps_origins() {
        let mut a = RollupAggregator::new(RollupConfig {
            max_hold_secs: 20,
            max_series: 2,
            ..Default::default()
        });
        let spans: Vec<Span> = (0..3u8)
            .map(|i| {
                let mut s = span(1, i + 1, None, "svc", SpanKind::Server, T0 + S, &[]);
                s.name = format!("op{i}");
                s
            })
            .collect();
        feed(&mut a, 1, 0, &spans);
        assert_eq!(a.stats().early_flushes, 1);
        // Not finished, held 0 s: only the early-flushed part goes out; its
        // origins name exactly the spans it counted.
        let b = a.drain(T0 + 2 * S);
        let counted: u64 = b.operations.iter().map(|o| o.count).sum();
        assert_eq!(counted, 2);
        let main: u64 = b
            .origins
            .iter()
            .flat_map(|o| o.parts[OriginPart::Main as usize].0.iter())
            .map(|(s, e)| e - s)
            .sum();
        assert_eq!(main, 2);
        // 20 s later the unfinished minute is written anyway.
        assert!(a.drain(T0 + 10 * S).operations.is_empty());
        let b = a.drain(T0 + 23 * S);
        assert_eq!(b.operations.len(), 1);
        assert_eq!(b.origins.len(), 1);
        assert_eq!(
            b.origins[0].parts[OriginPart::Main as usize].0,
            vec![(2, 3)]
        );
    }

    #[test]
    fn replayed_span_already_stored_still_finds_its_children() {
        // Stored before the crash: the parent's op. Not stored: the child.
        let mut stored = RollupOrigin {
            segment: 1,
            minute_ns: T0,
            ..Default::default()
        };
        for p in &mut stored.parts {
            p.insert(0);
        }
        let mut a = RollupAggregator::new(config());
        a.set_written(WrittenOrigins::from_stored([stored]));
        let parent = span(1, 1, None, "web", SpanKind::Client, T0, &[]);
        let child = span(1, 2, Some(1), "cart", SpanKind::Server, T0, &[]);
        feed(&mut a, 1, 0, &[parent, child]);
        let b = a.drain_all();
        assert_eq!(b.operations.len(), 1, "only the child's op");
        assert_eq!(b.operations[0].service, "cart");
        assert_eq!(
            b.edges.len(),
            1,
            "the child's edge, found through the cached parent"
        );
        assert_eq!(a.stats().replayed_already_stored, 1);
    }
}
