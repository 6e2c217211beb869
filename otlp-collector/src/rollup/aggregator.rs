//! The per-minute aggregator: operations, parent/child and peer edges, and
//! the WAL origins of every contribution.

use std::collections::VecDeque;
use std::sync::Arc;

use super::peer::peer_attr;
use super::series::*;
use super::spanmap::{Hashed, KeyHasher, SpanMap};
use super::{
    minute_of, weight, EdgeRollup, OperationRollup, OriginPart, RangeSet, RollupBatch,
    RollupConfig, RollupOrigin, RollupStats, SpanOrigin, WrittenOrigins, MINUTE_NS,
};
use crate::model::{CompactString, Span};

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
    /// Inline when short (a host or system name almost always is): most
    /// client spans name a peer, and a heap copy per span was an allocator
    /// call on the rollup hot path.
    peer: CompactString,
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
    /// Hashes the span keys of `recent`, `pending` and `peers` (one hash per
    /// key serves all three).
    keys: KeyHasher,
    recent: SpanMap<Arc<str>>,
    recent_order: VecDeque<Hashed>,
    pending: SpanMap<Vec<PendingChild>>,
    pending_order: VecDeque<(Hashed, u64)>,
    pub(super) pending_len: usize,
    next_seq: u64,
    peers: SpanMap<PeerCandidate>,
    peer_order: VecDeque<Hashed>,
    known: HSet<Arc<str>>,
    /// The service interned last: the spans of a request share theirs, so
    /// one comparison usually replaces a hash lookup per span.
    last_service: Option<Arc<str>>,
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
        let keys = KeyHasher::default();
        RollupAggregator {
            config,
            ops: HMap::new(),
            edges: HMap::new(),
            origins: HMap::new(),
            ready: RollupBatch::default(),
            recent: SpanMap::new(keys.clone()),
            recent_order: VecDeque::new(),
            pending: SpanMap::new(keys.clone()),
            pending_order: VecDeque::new(),
            pending_len: 0,
            next_seq: 0,
            peers: SpanMap::new(keys.clone()),
            peer_order: VecDeque::new(),
            keys,
            known: HSet::new(),
            last_service: None,
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
        if let Some(last) = &self.last_service {
            if **last == *s {
                return last.clone();
            }
        }
        if let Some(a) = self.known.get(s) {
            let a = a.clone();
            self.last_service = Some(a.clone());
            return a;
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
            let pkey = self.hashed((span.trace_id, parent));
            match self.recent.get(pkey) {
                // Same service: no edge (no reference count touched). Both
                // are usually the same interned `Arc`; the text decides
                // otherwise (a service interned past `max_known_services`).
                Some(parent_service)
                    if Arc::ptr_eq(parent_service, &service)
                        || **parent_service == *span.service_name => {}
                Some(parent_service) => {
                    let parent_service = parent_service.clone();
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

        // This span's key, hashed once for the peer candidates (look, then
        // insert), the children waiting for it and the parent cache.
        let me = self.hashed((span.trace_id, span.span_id));
        // Calls to a named peer, held until the minute is drained. Recorded
        // before waiting children are matched, so a cross-service child that
        // arrived first cancels the candidate.
        let mut peer_settled = true;
        if let Some(peer) = peer_attr(span) {
            if *peer != span.service_name && !written[PEER] && !self.peers.contains_key(me) {
                if self.peers.len() >= self.config.peer_candidates {
                    self.flush_marks(&mut marks);
                    self.evict_peer_candidate();
                }
                if let Some(o) = origin {
                    self.add_ref(o.segment);
                }
                // Not there (checked above; an eviction only removes).
                self.peers.insert_new(
                    me,
                    PeerCandidate {
                        minute_ns: minute,
                        caller: service.clone(),
                        peer: peer.clone(),
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
        if let Some(children) = self.pending.remove(me) {
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

    /// `key` with its hash for `recent`, `pending` and `peers`.
    #[inline]
    fn hashed(&self, key: SpanKey) -> Hashed {
        Hashed {
            key,
            hash: self.keys.hash(&key),
        }
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
        parent: Hashed,
        caller: &Arc<str>,
        callee: &str,
        minute: u64,
        call: (u64, bool, f64),
        count: bool,
    ) {
        if let Some(c) = self.peers.remove(parent) {
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

    fn remember(&mut self, key: Hashed, service: Arc<str>) {
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
            if self.recent.remove(old).is_some() {
                self.stats.span_cache_evictions += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hold_child(
        &mut self,
        parent: Hashed,
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
            if let Some(v) = self.pending.get_mut(key) {
                if let Some(pos) = v.iter().position(|c| c.seq == seq) {
                    evicted = Some(v.remove(pos));
                    self.pending_len -= 1;
                    self.stats.pending_evicted += 1;
                }
                if v.is_empty() {
                    self.pending.remove(key);
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
            .entry_or_default(parent)
            .push(PendingChild { seq, ..given_up });
        self.pending_len += 1;
        self.pending_order.push_back((parent, seq));
        // Matched children leave stale order entries; compact now and then so
        // the order queue stays proportional to what is pending.
        if self.pending_order.len() > 2 * self.config.pending_children + 64 {
            let pending = &self.pending;
            self.pending_order.retain(|(k, s)| {
                pending
                    .get(*k)
                    .is_some_and(|v| v.iter().any(|c| c.seq == *s))
            });
        }
    }

    fn evict_peer_candidate(&mut self) {
        while let Some(k) = self.peer_order.pop_front() {
            if let Some(c) = self.peers.remove(k) {
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

        let due: Vec<Hashed> = self
            .peers
            .iter()
            .filter(|(_, c)| finished(c.minute_ns))
            .map(|(k, _)| self.hashed(*k))
            .collect();
        for k in due {
            if let Some(c) = self.peers.remove(k) {
                self.resolve_peer(c);
            }
        }
        if self.peer_order.len() > 2 * self.peers.len() + 64 {
            let peers = &self.peers;
            self.peer_order.retain(|k| peers.contains_key(*k));
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
        let keys: Vec<Hashed> = self.peers.iter().map(|(k, _)| self.hashed(*k)).collect();
        for k in keys {
            if let Some(c) = self.peers.remove(k) {
                self.resolve_peer(c);
            }
        }
        self.peer_order.clear();
        let mut out = std::mem::take(&mut self.ready);
        self.take_into(&mut out, |_| true);
        self.hand_out(out)
    }
}
