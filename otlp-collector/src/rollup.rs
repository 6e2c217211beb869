//! Per-minute rollups computed at ingest from every span, before sampling:
//! per service/operation request, error and latency counts, and caller → callee
//! edges. Sinks store them and merge them at query time, so rates, percentiles
//! and the service graph stay right at any sampling rate with no batch job.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{AttrValue, Span, SpanId, SpanKind, TraceId};

/// One minute in nanoseconds.
pub const MINUTE_NS: u64 = 60_000_000_000;

/// Relative accuracy of [`LatencySketch`] quantiles (1%).
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;

/// A mergeable latency sketch with bounded relative error (DDSketch-style
/// logarithmic buckets). Values are nanoseconds. Merging is exact: the sketch
/// of two batches merged equals the sketch of both batches observed at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySketch {
    /// Bucket index → count. Index `i` holds values in `(γ^(i-1), γ^i]`.
    pub buckets: BTreeMap<i32, u64>,
    /// Count of zero values.
    pub zeros: u64,
    /// Total count.
    pub count: u64,
    /// Sum of values (ns), for averages.
    pub sum: u128,
    /// Smallest value seen.
    pub min: u64,
    /// Largest value seen.
    pub max: u64,
}

fn gamma() -> f64 {
    (1.0 + SKETCH_RELATIVE_ACCURACY) / (1.0 - SKETCH_RELATIVE_ACCURACY)
}

impl LatencySketch {
    /// Records one value (ns).
    pub fn add(&mut self, v: u64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum += v as u128;
        if v == 0 {
            self.zeros += 1;
        } else {
            let idx = ((v as f64).ln() / gamma().ln()).ceil() as i32;
            *self.buckets.entry(idx).or_insert(0) += 1;
        }
    }

    /// Merges another sketch into this one.
    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.zeros += other.zeros;
        for (i, c) in &other.buckets {
            *self.buckets.entry(*i).or_insert(0) += c;
        }
    }

    /// Average (ns); 0 when empty.
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / self.count as u128) as u64
        }
    }

    /// The `q`-quantile (nearest rank, `q` in `[0, 1]`) within the relative
    /// accuracy, clamped to the observed min/max; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        if rank <= self.zeros {
            return 0;
        }
        let mut seen = self.zeros;
        let g = gamma();
        for (i, c) in &self.buckets {
            seen += c;
            if seen >= rank {
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
    /// Spans counted.
    pub count: u64,
    /// Of which errors.
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
    /// Calls.
    pub calls: u64,
    /// Failed calls.
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
}

impl RollupBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty() && self.edges.is_empty()
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
    /// partial minutes, so nothing is lost.
    pub max_series: usize,
    /// `CLIENT`/`PRODUCER` spans to uninstrumented peers held until their
    /// minute is drained (default 100 000; the oldest is counted early when full).
    pub peer_candidates: usize,
    /// Distinct instrumented service names remembered (default 10 000).
    pub max_known_services: usize,
    /// A minute is drained once `now` is this many seconds past its end
    /// (default 10), so late spans still land in their minute's first write.
    pub finalize_delay_secs: u64,
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
    /// Observations not counted because the series limit was hit twice over
    /// (nobody drained).
    pub series_dropped: u64,
    /// Service names not remembered because `max_known_services` was reached.
    pub known_services_overflow: u64,
}

type SpanKey = (TraceId, SpanId);

#[derive(Clone, Debug, Default)]
struct Acc {
    count: u64,
    errors: u64,
    sketch: LatencySketch,
}

impl Acc {
    fn add(&mut self, duration_ns: u64, error: bool) {
        self.count += 1;
        self.errors += error as u64;
        self.sketch.add(duration_ns);
    }
}

#[derive(Debug)]
struct PendingChild {
    seq: u64,
    service: Arc<str>,
    minute_ns: u64,
    end_ns: u64,
    duration_ns: u64,
    error: bool,
}

#[derive(Debug)]
struct PeerCandidate {
    minute_ns: u64,
    caller: Arc<str>,
    peer: String,
    duration_ns: u64,
    error: bool,
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
/// Memory is bounded by [`RollupConfig`]; everything given up is counted in
/// [`RollupStats`].
#[derive(Debug)]
pub struct RollupAggregator {
    config: RollupConfig,
    ops: HashMap<(u64, Arc<str>, String, SpanKind), Acc>,
    edges: HashMap<(u64, Arc<str>, String), Acc>,
    ready: RollupBatch,
    recent: HashMap<SpanKey, Arc<str>>,
    recent_order: VecDeque<SpanKey>,
    pending: HashMap<SpanKey, Vec<PendingChild>>,
    pending_order: VecDeque<(SpanKey, u64)>,
    pending_len: usize,
    next_seq: u64,
    peers: HashMap<SpanKey, PeerCandidate>,
    peer_order: VecDeque<SpanKey>,
    known: HashSet<Arc<str>>,
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

impl RollupAggregator {
    /// A new aggregator.
    pub fn new(config: RollupConfig) -> Self {
        RollupAggregator {
            config,
            ops: HashMap::new(),
            edges: HashMap::new(),
            ready: RollupBatch::default(),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            pending_len: 0,
            next_seq: 0,
            peers: HashMap::new(),
            peer_order: VecDeque::new(),
            known: HashSet::new(),
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
        Self::take_ops(&mut self.ops, &mut batch, |_| true);
        Self::take_edges(&mut self.edges, &mut batch, |_| true);
        self.ready = batch;
        true
    }

    fn add_edge(
        &mut self,
        minute_ns: u64,
        caller: Arc<str>,
        callee: &str,
        duration_ns: u64,
        error: bool,
    ) {
        let key = (minute_ns, caller, callee.to_string());
        if !self.edges.contains_key(&key) && !self.room_for_series() {
            return;
        }
        self.edges.entry(key).or_default().add(duration_ns, error);
    }

    /// Counts one span. Call for every received span, before sampling.
    pub fn observe(&mut self, span: &Span) {
        self.stats.spans_observed += 1;
        let service = self.intern(&span.service_name);
        let minute = minute_of(span.start_ns);
        let dur = span.duration_ns();
        let err = span.is_error();

        let op_key = (minute, service.clone(), span.name.clone(), span.kind);
        if self.ops.contains_key(&op_key) || self.room_for_series() {
            self.ops.entry(op_key).or_default().add(dur, err);
        }

        // Parent/child across services.
        if let Some(parent) = span.parent_span_id {
            let pkey = (span.trace_id, parent);
            match self.recent.get(&pkey).cloned() {
                Some(parent_service) => {
                    if *parent_service != *span.service_name {
                        self.cross_service_call(
                            pkey,
                            parent_service,
                            &span.service_name,
                            minute,
                            dur,
                            err,
                        );
                    }
                }
                None => self.hold_child(pkey, service.clone(), minute, span.end_ns, dur, err),
            }
        }

        let me = (span.trace_id, span.span_id);
        // Calls to a named peer, held until the minute is drained. Recorded
        // before waiting children are matched, so a cross-service child that
        // arrived first cancels the candidate.
        if let Some(peer) = peer_name(span) {
            if peer != span.service_name && !self.peers.contains_key(&me) {
                if self.peers.len() >= self.config.peer_candidates {
                    self.evict_peer_candidate();
                }
                self.peers.insert(
                    me,
                    PeerCandidate {
                        minute_ns: minute,
                        caller: service.clone(),
                        peer: peer.to_string(),
                        duration_ns: dur,
                        error: err,
                    },
                );
                self.peer_order.push_back(me);
            }
        }

        // Children that were waiting for this span.
        if let Some(children) = self.pending.remove(&me) {
            self.pending_len -= children.len();
            for c in children {
                if *c.service != *span.service_name {
                    self.cross_service_call(
                        me,
                        service.clone(),
                        &c.service,
                        c.minute_ns,
                        c.duration_ns,
                        c.error,
                    );
                }
            }
        }

        self.remember(me, service);
    }

    fn cross_service_call(
        &mut self,
        parent: SpanKey,
        caller: Arc<str>,
        callee: &str,
        minute: u64,
        dur: u64,
        err: bool,
    ) {
        self.stats.parent_child_calls += 1;
        if self.peers.remove(&parent).is_some() {
            // The client span's peer is instrumented: count the call once, here.
            self.stats.peer_calls_suppressed += 1;
        }
        self.add_edge(minute, caller, callee, dur, err);
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

    fn hold_child(
        &mut self,
        parent: SpanKey,
        service: Arc<str>,
        minute_ns: u64,
        end_ns: u64,
        duration_ns: u64,
        error: bool,
    ) {
        if self.config.pending_children == 0 {
            self.stats.pending_evicted += 1;
            return;
        }
        while self.pending_len >= self.config.pending_children {
            let Some((key, seq)) = self.pending_order.pop_front() else {
                break;
            };
            if let Some(v) = self.pending.get_mut(&key) {
                if let Some(pos) = v.iter().position(|c| c.seq == seq) {
                    v.remove(pos);
                    self.pending_len -= 1;
                    self.stats.pending_evicted += 1;
                }
                if v.is_empty() {
                    self.pending.remove(&key);
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.entry(parent).or_default().push(PendingChild {
            seq,
            service,
            minute_ns,
            end_ns,
            duration_ns,
            error,
        });
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
            self.add_edge(c.minute_ns, c.caller, &c.peer, c.duration_ns, c.error);
        }
    }

    fn take_ops(
        ops: &mut HashMap<(u64, Arc<str>, String, SpanKind), Acc>,
        out: &mut RollupBatch,
        pick: impl Fn(u64) -> bool,
    ) {
        let keys: Vec<_> = ops.keys().filter(|k| pick(k.0)).cloned().collect();
        for k in keys {
            if let Some(a) = ops.remove(&k) {
                out.operations.push(OperationRollup {
                    minute_ns: k.0,
                    service: k.1.to_string(),
                    operation: k.2,
                    kind: k.3,
                    count: a.count,
                    errors: a.errors,
                    sketch: a.sketch,
                });
            }
        }
    }

    fn take_edges(
        edges: &mut HashMap<(u64, Arc<str>, String), Acc>,
        out: &mut RollupBatch,
        pick: impl Fn(u64) -> bool,
    ) {
        let keys: Vec<_> = edges.keys().filter(|k| pick(k.0)).cloned().collect();
        for k in keys {
            if let Some(a) = edges.remove(&k) {
                out.edges.push(EdgeRollup {
                    minute_ns: k.0,
                    caller: k.1.to_string(),
                    callee: k.2,
                    calls: a.count,
                    errors: a.errors,
                    sketch: a.sketch,
                });
            }
        }
    }

    /// Returns the rollups of every minute that ended at least
    /// `finalize_delay_secs` before `now_ns` (plus anything flushed early),
    /// and gives up children that waited too long for their parent.
    pub fn drain(&mut self, now_ns: u64) -> RollupBatch {
        let horizon = now_ns.saturating_sub(
            self.config
                .finalize_delay_secs
                .saturating_mul(1_000_000_000),
        );
        let finished = |minute: u64| minute.saturating_add(MINUTE_NS) <= horizon;

        let ttl = self.config.pending_ttl_secs.saturating_mul(1_000_000_000);
        let mut expired = 0usize;
        self.pending.retain(|_, v| {
            let before = v.len();
            v.retain(|c| c.end_ns.saturating_add(ttl) >= now_ns);
            expired += before - v.len();
            !v.is_empty()
        });
        self.pending_len -= expired;
        self.stats.pending_expired += expired as u64;

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

        let mut out = std::mem::take(&mut self.ready);
        Self::take_ops(&mut self.ops, &mut out, finished);
        Self::take_edges(&mut self.edges, &mut out, finished);
        out
    }

    /// Returns everything accumulated, finished or not (for shutdown).
    pub fn drain_all(&mut self) -> RollupBatch {
        let keys: Vec<SpanKey> = self.peers.keys().copied().collect();
        for k in keys {
            if let Some(c) = self.peers.remove(&k) {
                self.resolve_peer(c);
            }
        }
        self.peer_order.clear();
        let mut out = std::mem::take(&mut self.ready);
        Self::take_ops(&mut self.ops, &mut out, |_| true);
        Self::take_edges(&mut self.edges, &mut out, |_| true);
        out
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
            (T0, 2, 1, 2)
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
        assert_eq!((e.calls, e.errors, e.sketch.sum), (2, 1, 10_000));
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
        assert_eq!((pg.calls, pg.sketch.sum), (1, 5_000));
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
