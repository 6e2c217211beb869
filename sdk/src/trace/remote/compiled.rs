//! A strategy ready for the hot path: thresholds and root trace states
//! pre-computed, operations in a hash map, rate limiters lock-free.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::context::{SpanContext, TraceState};
use crate::ids::TraceId;
use crate::trace::consistent::{
    decide_threshold, root_state, updated_state, Randomness, ThUpdate, Threshold,
};
use crate::trace::sampler::{Sampler, SamplingDecision};

use super::fxhash::FxHasher;
use super::lower_bound::LowerBound;
use super::strategy::StrategyResponse;

/// A probability with its threshold and the `ot=th:..` state of a root it keeps.
#[derive(Debug)]
pub(crate) struct Probability {
    pub(crate) probability: f64,
    threshold: Option<Threshold>,
    root_state: TraceState,
}

impl Probability {
    pub(crate) fn new(p: f64) -> Self {
        let threshold = Threshold::from_probability(p.clamp(0.0, 1.0)).ok();
        Probability {
            probability: p,
            threshold,
            root_state: threshold.map(root_state).unwrap_or_default(),
        }
    }

    /// True when the span is dropped and the parent's trace state needs no
    /// change (no parent, or one with an empty trace state and the random flag).
    #[inline]
    fn quick_drop(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        if parent.is_some_and(|p| !p.trace_state().is_empty() || !p.trace_flags().is_random()) {
            return false;
        }
        !self
            .threshold
            .is_some_and(|t| t.keeps(Randomness::from_trace_id(trace_id)))
    }

    #[inline]
    fn decide(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
    ) -> (bool, Option<TraceState>) {
        if parent.is_none() {
            // `decide_threshold`'s root case in line, with this probability's
            // pre-built `ot=th:..`: the call cost a root span (kept or not)
            // more than the comparison.
            return match self.threshold {
                Some(t) if t.keeps(Randomness::from_trace_id(trace_id)) => {
                    (true, Some(self.root_state.clone()))
                }
                _ => (false, None),
            };
        }
        decide_threshold(parent, trace_id, self.threshold, Some(&self.root_state))
    }
}

/// A token bucket without a lock: `next_ns` is when the next token is due;
/// up to `burst` tokens accumulate while idle (Jaeger's rate limiter keeps
/// `max(rate, 1)` credits).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    pub(crate) per_second: f64,
    interval_ns: u64,
    burst_ns: u64,
    next_ns: AtomicU64,
}

impl RateLimiter {
    pub(crate) fn new(per_second: f64) -> Self {
        let interval_ns = if per_second > 0.0 {
            (1e9 / per_second).clamp(1.0, u64::MAX as f64 / 4.0) as u64
        } else {
            u64::MAX / 4
        };
        let burst = per_second.max(1.0);
        RateLimiter {
            per_second,
            interval_ns,
            burst_ns: ((burst - 1.0) * interval_ns as f64).min(u64::MAX as f64 / 4.0) as u64,
            next_ns: AtomicU64::new(0),
        }
    }

    /// Takes a token if one is due at `now_ns`.
    #[inline]
    pub(crate) fn try_acquire(&self, now_ns: u64) -> bool {
        if self.per_second <= 0.0 {
            return false;
        }
        let mut next = self.next_ns.load(Ordering::Relaxed);
        loop {
            if now_ns < next {
                return false;
            }
            let base = next.max(now_ns.saturating_sub(self.burst_ns));
            match self.next_ns.compare_exchange_weak(
                next,
                base.saturating_add(self.interval_ns),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => next = actual,
            }
        }
    }
}

type OperationMap = HashMap<String, Operation, BuildHasherDefault<FxHasher>>;

/// Monotonic time in nanoseconds from the coarse clock (a few ms of
/// resolution, about a quarter of the precise clock's cost): the limiters run
/// for every span a probability drops, and their burst bounds any unevenness.
#[cfg(target_os = "linux")]
#[inline]
pub(crate) fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we own; CLOCK_MONOTONIC_COARSE exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Elsewhere: the SDK's span clock.
#[cfg(not(target_os = "linux"))]
#[inline]
pub(crate) fn coarse_now_ns() -> u64 {
    crate::time::now_ns()
}

/// One operation: its probability and its lower bound.
#[derive(Debug)]
pub(crate) struct Operation {
    pub(crate) probability: Probability,
    pub(crate) lower_bound: LowerBound,
    /// A lower bound is set and the probability is below 1: the decision
    /// needs the clock and the bound (computed once, when the strategy is
    /// compiled, instead of two comparisons per span).
    bounded: bool,
}

impl Operation {
    /// [`Compiled::quick_drop`] for this operation. With a lower bound every
    /// span must be counted, so it takes the full decision.
    #[inline]
    fn quick_drop(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        !self.lower_bound.is_set() && self.probability.quick_drop(parent, trace_id)
    }

    /// An operation with probability `p` and a lower bound of `bound` per
    /// second continuing `previous`'s counts (see [`LowerBound::continuing`]).
    pub(crate) fn new(p: f64, bound: f64, previous: Option<&LowerBound>) -> Self {
        let probability = Probability::new(p);
        let lower_bound = LowerBound::continuing(bound, previous);
        Operation {
            bounded: lower_bound.is_set() && probability.probability < 1.0,
            probability,
            lower_bound,
        }
    }

    /// [`Compiled::decide`] for this operation.
    #[inline]
    fn decide(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
    ) -> (bool, Option<TraceState>) {
        // The clock is read only when a lower bound is configured and the
        // operation's own probability is below 1.
        if self.bounded {
            return self.decide_at(parent, trace_id, coarse_now_ns());
        }
        self.probability.decide(parent, trace_id)
    }

    /// The decision with a lower bound at `now_ns`: the larger of the
    /// operation's probability and the lower bound's, applied consistently
    /// and recorded (see [`LowerBound`]). Kept out of line: operations
    /// without a bound (the common case) keep a small inlined decision.
    #[cold]
    #[inline(never)]
    fn decide_at(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        now_ns: u64,
    ) -> (bool, Option<TraceState>) {
        let p = self.lower_bound.probability(now_ns);
        if p <= self.probability.probability {
            return self.probability.decide(parent, trace_id);
        }
        // A new threshold per span: its trace state is formatted only for
        // spans it keeps (about `lower_bound` a second).
        decide_threshold(parent, trace_id, Threshold::from_probability(p).ok(), None)
    }
}

/// Span names longer than this are not remembered by [`Current`] (looked up each time).
const MEMO_MAX_NAME: usize = 128;

/// `a == b` for span names, in line and without a `memcmp` call: the
/// remembered name is compared for every span, and names are short, where
/// the call costs more than the comparison. Equal lengths are compared with
/// two (overlapping) loads of the largest width that fits, from the front
/// and from the back, plus whole words in between for longer names.
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    #[inline(always)]
    fn w8(s: &[u8], i: usize) -> u64 {
        u64::from_ne_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]))
    }
    #[inline(always)]
    fn w4(s: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes(s[i..i + 4].try_into().unwrap_or([0; 4]))
    }
    #[inline(always)]
    fn w2(s: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes(s[i..i + 2].try_into().unwrap_or([0; 2]))
    }
    match n {
        0 => true,
        1 => a[0] == b[0],
        2..=3 => w2(a, 0) == w2(b, 0) && w2(a, n - 2) == w2(b, n - 2),
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if w8(a, i) != w8(b, i) {
                    return false;
                }
                i += 8;
            }
            w8(a, n - 8) == w8(b, n - 8)
        }
    }
}

/// The strategy in force as one thread sees it, with a memo of the last span
/// name looked up in a per-operation strategy and the operation found. Spans
/// of one thread mostly repeat a name (a handler's spans, a loop's), and a
/// sampled span is asked about twice (the quick drop, then the full
/// decision): a hit compares the name with the remembered one instead of
/// hashing it and probing the map. What a hit reads is in this struct (the
/// name inline, the operation's threshold copied): a root span's decision
/// follows no pointer past it, which is what its time went to.
pub(crate) struct Current {
    pub(crate) compiled: Arc<Compiled>,
    /// Points into `compiled`'s operations (or its default), which `compiled`
    /// keeps alive and never changes; reset whenever `compiled` is replaced.
    memo_op: Option<NonNull<Operation>>,
    /// The memo's operation has no lower bound: its threshold below is its
    /// whole decision.
    memo_plain: bool,
    /// The address of the remembered name when it was given as a `&'static
    /// str` and its operation has no lower bound; null otherwise. Text that
    /// lives for the whole program never changes, so a name at this address
    /// with the remembered length *is* the remembered name: the hit is two
    /// comparisons instead of reading and comparing the name's bytes (most
    /// span names are literals). Never set while `memo_op` is `None`.
    memo_static: *const u8,
    /// The memo's threshold as the least randomness a root must have to be
    /// kept ([`NEVER`] for probability 0).
    memo_cut: u64,
    memo_len: usize,
    memo_name: [u8; MEMO_MAX_NAME],
}

/// A cut no randomness reaches (randomness has 56 bits).
const NEVER: u64 = 1 << 56;

impl Current {
    pub(crate) fn new(compiled: Arc<Compiled>) -> Self {
        Current {
            compiled,
            memo_op: None,
            memo_plain: false,
            memo_static: std::ptr::null(),
            memo_cut: NEVER,
            memo_len: 0,
            memo_name: [0; MEMO_MAX_NAME],
        }
    }

    /// The remembered name's bytes.
    #[inline(always)]
    fn memo_name(&self) -> &[u8] {
        self.memo_name.get(..self.memo_len).unwrap_or_default()
    }

    /// The operation deciding spans named `name`; `None` unless per-operation.
    /// The memo is checked first: it is only ever set for a per-operation
    /// strategy, so a hit needs neither the strategy's kind nor the map.
    /// Always inlined: the hit is a few instructions, and as a call it made
    /// the quick drop of an unsampled root span slower despite fewer
    /// instructions.
    #[inline(always)]
    fn operation(&mut self, name: &str, is_static: bool) -> Option<&Operation> {
        if let Some(op) = self.memo_op {
            if same_name(self.memo_name(), name.as_bytes()) {
                // SAFETY: `memo_op` was taken from `self.compiled`, which is
                // immutable and still held (it is reset when replaced).
                return Some(unsafe { op.as_ref() });
            }
        }
        self.operation_miss(name, is_static)
    }

    /// [`operation`](Self::operation) past the memo: the map look-up, and
    /// the memo updated. Out of line, so the hit stays small enough to
    /// inline into both questions of the tracer.
    #[inline(never)]
    fn operation_miss(&mut self, name: &str, is_static: bool) -> Option<&Operation> {
        let Compiled::PerOperation {
            default,
            operations,
            unlisted,
        } = &*self.compiled
        else {
            return None;
        };
        let op = lookup(default, operations, unlisted, name);
        // Forgotten first: a memo half rewritten must never answer.
        self.memo_op = None;
        self.memo_static = std::ptr::null();
        if let Some(buf) = self.memo_name.get_mut(..name.len()) {
            buf.copy_from_slice(name.as_bytes());
            self.memo_len = name.len();
            self.memo_plain = !op.bounded;
            self.memo_cut = op.probability.threshold.map_or(NEVER, Threshold::to_u64);
            self.memo_op = Some(NonNull::from(op));
            if is_static && self.memo_plain {
                self.memo_static = name.as_ptr();
            }
        }
        Some(op)
    }

    /// [`Compiled::quick_drop`] through the memo.
    #[inline]
    pub(crate) fn quick_drop(
        &mut self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
    ) -> bool {
        match self.operation(name, false) {
            Some(op) => op.quick_drop(parent, trace_id),
            None => self.compiled.quick_drop(parent, trace_id, name),
        }
    }

    /// `name` is the remembered name, known by its `'static` address.
    #[inline(always)]
    fn is_static_hit(&self, name: &str) -> bool {
        name.as_ptr() == self.memo_static && name.len() == self.memo_len
    }

    /// True when a root span named by the `'static` `name` is dropped by
    /// the remembered operation: the memo's address hit and the cut, with
    /// no trace state to return. False says nothing (ask
    /// [`decide`](Self::decide)).
    #[inline(always)]
    pub(crate) fn static_root_drop(&self, trace_id: TraceId, name: &str) -> bool {
        self.is_static_hit(name) && Randomness::from_trace_id(trace_id).to_u64() < self.memo_cut
    }

    /// [`Compiled::decide`] through the memo; `None` before the first
    /// strategy (the initial sampler decides). `is_static`: `name` is a
    /// `&'static str` (the tracer knows it from the span name's `Cow`), so
    /// its address may be remembered. The memo hit of an operation without
    /// a lower bound (a span's common case) is always inlined into the
    /// per-thread cache's visit: as a call, its frame and the result's
    /// copies cost more than the decision itself.
    #[inline(always)]
    pub(crate) fn decide(
        &mut self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        is_static: bool,
    ) -> Option<(bool, Option<TraceState>)> {
        // (`is_static` first: callers that never have a `'static` name
        // compile the check away.)
        if is_static && self.is_static_hit(name) {
            if let Some(op) = self.memo_op {
                // SAFETY: as in `operation`.
                return Some(unsafe { op.as_ref() }.probability.decide(parent, trace_id));
            }
        }
        if let Some(op) = self.memo_op {
            if self.memo_plain && same_name(self.memo_name(), name.as_bytes()) {
                if is_static {
                    // The same text at another `'static` address (the memo
                    // was filled from another copy, or by `quick_drop`).
                    self.memo_static = name.as_ptr();
                }
                // SAFETY: as in `operation`.
                let op = unsafe { op.as_ref() };
                if parent.is_none() {
                    return Some(
                        if Randomness::from_trace_id(trace_id).to_u64() >= self.memo_cut {
                            (true, Some(op.probability.root_state.clone()))
                        } else {
                            (false, None)
                        },
                    );
                }
                return Some(op.probability.decide(parent, trace_id));
            }
        }
        self.decide_past_memo(parent, trace_id, name, is_static)
    }

    /// [`decide`](Self::decide) past the memo's unbounded hit: the map
    /// look-up, a lower bound, or a strategy that is not per-operation.
    #[inline(never)]
    fn decide_past_memo(
        &mut self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        is_static: bool,
    ) -> Option<(bool, Option<TraceState>)> {
        if let Some(op) = self.operation(name, is_static) {
            return Some(op.decide(parent, trace_id));
        }
        self.compiled.decide(parent, trace_id, name).ok()
    }
}

/// What decides, by kind.
#[derive(Debug)]
pub(crate) enum Compiled {
    /// Before the first strategy arrived: the initial sampler.
    Initial(Sampler),
    /// One probability.
    Probabilistic(Probability),
    /// At most N traces per second.
    RateLimiting(RateLimiter),
    /// Per-operation probabilities with lower bounds.
    PerOperation {
        default: Operation,
        operations: OperationMap,
        /// With a lower bound: [`UNLISTED_SLOTS`] copies of `default`, each
        /// with its own lower bound, for operations not listed (chosen by a
        /// hash of the name), so a quiet operation the server does not list
        /// yet is not starved by a busy one it does not list either.
        /// Empty without a lower bound.
        unlisted: Box<[Operation]>,
    },
}

/// Lower-bound slots shared by operations the strategy does not list: a
/// quiet one shares its slot with another one in 256 (then it gets its share
/// of the bound). Jaeger's clients create a limiter per operation seen
/// instead; fixed slots keep memory bounded without a lock on the hot path.
pub(crate) const UNLISTED_SLOTS: usize = 256;

/// The operation deciding spans named `name`.
#[inline]
pub(crate) fn lookup<'a>(
    default: &'a Operation,
    operations: &'a OperationMap,
    unlisted: &'a [Operation],
    name: &str,
) -> &'a Operation {
    if let Some(op) = operations.get(name) {
        return op;
    }
    if unlisted.is_empty() {
        return default;
    }
    let mut h = FxHasher::default();
    h.write(name.as_bytes());
    // FxHash's high bits are its well-mixed ones.
    &unlisted[(h.finish() >> 56) as usize % unlisted.len()]
}

impl Compiled {
    #[cfg(test)]
    pub(crate) fn from_response(r: &StrategyResponse) -> Compiled {
        Self::following(r, None)
    }

    /// The strategy `r`, replacing `previous`: each operation's lower bound
    /// continues the counts its name had (so the bound's windows are not
    /// restarted by every new strategy — an adaptive server changes the
    /// probabilities every period, and a restarted window would keep
    /// `bound × W × (1 + ln(n / (bound × W)))` instead of `bound × W`).
    pub(crate) fn following(r: &StrategyResponse, previous: Option<&Compiled>) -> Compiled {
        match r {
            StrategyResponse::Probabilistic(p) => Compiled::Probabilistic(Probability::new(*p)),
            StrategyResponse::RateLimiting(r) => Compiled::RateLimiting(RateLimiter::new(*r)),
            StrategyResponse::PerOperation(p) => {
                let before = |name: Option<&str>, slot: usize| match previous {
                    Some(Compiled::PerOperation {
                        default,
                        operations,
                        unlisted,
                    }) => Some(match name {
                        Some(n) => &lookup(default, operations, unlisted, n).lower_bound,
                        None => &unlisted.get(slot).unwrap_or(default).lower_bound,
                    }),
                    _ => None,
                };
                let op = |prob: f64, prev: Option<&LowerBound>| {
                    Operation::new(prob, p.default_lower_bound_per_second, prev)
                };
                let default = op(p.default_probability, None);
                let unlisted = if default.lower_bound.is_set() {
                    (0..UNLISTED_SLOTS)
                        .map(|i| op(p.default_probability, before(None, i)))
                        .collect()
                } else {
                    Box::default()
                };
                Compiled::PerOperation {
                    default,
                    unlisted,
                    operations: p
                        .operations
                        .iter()
                        .map(|o| {
                            let prev = before(Some(&o.operation), 0);
                            (o.operation.clone(), op(o.probability, prev))
                        })
                        .collect(),
                }
            }
        }
    }

    /// True when [`decide`](Self::decide) would drop the span without
    /// changing the trace state and without consulting a limiter (which must
    /// be asked once per span, so such cases take the full path).
    #[inline]
    pub(crate) fn quick_drop(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
    ) -> bool {
        match self {
            Compiled::Initial(s) => {
                s.builtin_decision(parent, trace_id, Some(name)) == Some(SamplingDecision::Drop)
            }
            Compiled::Probabilistic(p) => p.quick_drop(parent, trace_id),
            Compiled::RateLimiting(_) => false,
            Compiled::PerOperation {
                default,
                operations,
                unlisted,
            } => lookup(default, operations, unlisted, name).quick_drop(parent, trace_id),
        }
    }

    /// The decision for a span named `name`, and the trace state to record:
    /// a probabilistic keep records its threshold; a keep by a rate limiter
    /// (Jaeger's lower bound, or a rate-limiting strategy) has no known
    /// probability, so any threshold is erased.
    #[inline]
    pub(crate) fn decide(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
    ) -> Result<(bool, Option<TraceState>), &Sampler> {
        match self {
            Compiled::Initial(s) => Err(s),
            Compiled::Probabilistic(p) => Ok(p.decide(parent, trace_id)),
            Compiled::RateLimiting(l) => {
                let keep = l.try_acquire(coarse_now_ns());
                Ok((keep, updated_state(parent, ThUpdate::Erase, None)))
            }
            Compiled::PerOperation {
                default,
                operations,
                unlisted,
            } => Ok(lookup(default, operations, unlisted, name).decide(parent, trace_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::remote::strategy::{OperationStrategy, PerOperation};

    /// The per-thread memo answers exactly as the map: alternating names,
    /// a name longer than the memo keeps, an unknown name (the default),
    /// and a new strategy (a new `Current`) never sees the old operation.
    #[test]
    fn operation_memo_answers_as_the_map() {
        let per_op = |keep: f64| {
            Arc::new(Compiled::from_response(&StrategyResponse::PerOperation(
                PerOperation {
                    default_probability: 0.0,
                    default_lower_bound_per_second: 0.0,
                    operations: vec![
                        OperationStrategy {
                            operation: "keep".into(),
                            probability: keep,
                        },
                        OperationStrategy {
                            operation: "drop".into(),
                            probability: 0.0,
                        },
                        OperationStrategy {
                            operation: "k".repeat(MEMO_MAX_NAME + 1),
                            probability: 1.0,
                        },
                    ],
                    operations_dropped: 0,
                },
            )))
        };
        let long = "k".repeat(MEMO_MAX_NAME + 1);
        let owned_keep = String::from("keep");
        // Literals sharing an address: "keepx"'s first four bytes are a
        // `'static` "keep" at the same address as the unlisted "keepx".
        let keepx: &'static str = "keepx";
        let keep_prefix: &'static str = &keepx[..4];
        let keep_suffix: &'static str = &"dropkeep"[4..];
        // (name, is it a `&'static str`, kept at probability 1)
        let names: [(&str, bool, bool); 9] = [
            ("keep", true, true),
            ("drop", true, false),
            (long.as_str(), false, true),
            ("unknown", true, false),
            (owned_keep.as_str(), false, true),
            (keep_prefix, true, true),
            (keepx, true, false),
            (keep_suffix, true, true),
            ("keep", true, true),
        ];
        let parent = SpanContext::new(
            TraceId::from_bytes([3; 16]),
            crate::ids::SpanId::from_bytes([4; 8]),
            crate::context::TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut cur = Current::new(per_op(1.0));
        let mut quick_drops = 0;
        for i in 0..400u32 {
            let trace_id = TraceId::from_bytes([(i % 251) as u8 + 1; 16]);
            // Runs of one name (the static hit) and changes between them.
            let (name, is_static, expect) = names[(i / 3) as usize % names.len()];
            // `decide` first: the tracer asks it alone, and `quick_drop`
            // re-fills the memo when the name changed.
            let quick = is_static && cur.static_root_drop(trace_id, name);
            let (keep, state) = cur.decide(None, trace_id, name, is_static).unwrap();
            assert_eq!(keep, expect, "{name}");
            if quick {
                assert!(!keep && state.is_none(), "{name}");
                quick_drops += 1;
            }
            // The same answers as the map-only path, with and without a parent.
            assert_eq!(
                cur.compiled.decide(None, trace_id, name).unwrap(),
                (keep, state),
                "{name}"
            );
            let p = Some(&parent);
            assert_eq!(
                cur.decide(p, parent.trace_id(), name, is_static),
                cur.compiled.decide(p, parent.trace_id(), name).ok(),
                "{name}"
            );
            assert_eq!(cur.quick_drop(None, trace_id, name), !expect, "{name}");
        }
        // The literal names dropped after the first of each run.
        assert!(quick_drops >= 40, "{quick_drops}");
        // A new strategy: "keep" is now dropped.
        let mut cur = Current::new(per_op(0.0));
        let t = TraceId::from_bytes([7; 16]);
        assert!(cur.quick_drop(None, t, "keep"));
        assert!(!cur.decide(None, t, "keep", true).unwrap().0);
        assert!(!cur.decide(None, t, "keep", true).unwrap().0);
    }

    #[test]
    fn same_name_is_string_equality() {
        let names = [
            "",
            "a",
            "b",
            "keep",
            "kept",
            "GET /api",
            "GET /apj",
            "GET /api/orders/{id}",
            "GET /api/orders/{ie}",
            "GET /api/orders/{id}x",
            "12345678",
            "12345679",
            "123456781234567",
            "123456781234568",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_name(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    /// The lower bound keeps a quiet operation's traces with probabilities
    /// that are recorded: the operation served 0.001 gets about the lower
    /// bound's traces per second (or all of them when it is quieter than
    /// that), every kept span carries `th`, and the sum of adjusted counts
    /// (1 / the recorded probability) estimates the true number of spans
    /// within 5 standard deviations (Horvitz–Thompson; the variance
    /// estimated from the kept spans, sum of (1 - p) / p^2).
    #[test]
    fn lower_bound_keeps_quiet_operations_with_recorded_probabilities() {
        use crate::trace::consistent::OtState;
        const S: f64 = 1e9;
        // (served probability, lower bound /s, rate /s, seconds, kept per second expected)
        let cases = [
            (0.001, 0.5, 0.2, 4000.0, 0.2),  // quieter than the bound: all kept
            (0.001, 0.5, 3.0, 2000.0, 0.5),  // one per 2-second window
            (0.001, 0.5, 200.0, 300.0, 0.5), // busy, the bound still wins
            (0.0, 2.0, 50.0, 300.0, 2.0),    // probability 0
            (0.1, 0.5, 200.0, 60.0, 20.0),   // the probability keeps more: the bound is idle
        ];
        for (p, lb, rate, secs, per_sec) in cases {
            let op = Operation::new(p, lb, None);
            let n = (rate * secs) as u64;
            let t0 = 1_000_000.0 * S;
            let (mut kept, mut estimate, mut variance) = (0u64, 0.0f64, 0.0f64);
            for i in 0..n {
                let now = (t0 + i as f64 * S / rate) as u64;
                let (keep, ts) = op.decide_at(None, crate::ids::new_trace_id(), now);
                if keep {
                    let th = OtState::of(&ts.expect("a kept span records its threshold"))
                        .th
                        .expect("th");
                    let (c, q) = (th.adjusted_count(), th.probability());
                    kept += 1;
                    estimate += c;
                    variance += (1.0 - q) / (q * q);
                } else {
                    assert!(ts.is_none(), "a dropped root has no trace state");
                }
            }
            let case = format!("p {p}, bound {lb}/s, {rate}/s for {secs} s: {kept} kept, estimate {estimate:.0} of {n}");
            let expect = per_sec * secs;
            assert!(
                (kept as f64 - expect).abs() <= 5.0 * expect.sqrt() + 0.1 * expect,
                "{case}: expected about {expect:.0} kept"
            );
            assert!(
                (estimate - n as f64).abs() <= 5.0 * variance.sqrt() + 1.0,
                "{case}: sigma {:.0}",
                variance.sqrt()
            );
        }
    }

    /// Operations the strategy does not list get lower-bound slots of their
    /// own (by name): a quiet one is not starved by a busy one that is not
    /// listed either; without a lower bound they share the default.
    #[test]
    fn unlisted_operations_do_not_share_one_lower_bound() {
        let compile = |lb: f64| {
            Compiled::from_response(&StrategyResponse::PerOperation(PerOperation {
                default_probability: 0.001,
                default_lower_bound_per_second: lb,
                operations: vec![],
                operations_dropped: 0,
            }))
        };
        let c = compile(1.0);
        let Compiled::PerOperation {
            default,
            operations,
            unlisted,
        } = &c
        else {
            panic!("per-operation")
        };
        assert_eq!(unlisted.len(), UNLISTED_SLOTS);
        let busy = lookup(default, operations, unlisted, "GET /busy");
        let quiet = lookup(default, operations, unlisted, "nightly-report");
        assert!(!std::ptr::eq(busy, quiet), "pick names in different slots");
        assert!(std::ptr::eq(
            quiet,
            lookup(default, operations, unlisted, "nightly-report")
        ));
        let t0 = 1_000_000_000_000_000u64;
        let (mut busy_kept, mut quiet_kept) = (0, 0);
        // 100 s: the busy operation at 1000/s, the quiet one every 5 s.
        for ms in 0..100_000u64 {
            let now = t0 + ms * 1_000_000;
            if busy.decide_at(None, crate::ids::new_trace_id(), now).0 {
                busy_kept += 1;
            }
            if ms % 5000 == 0 && quiet.decide_at(None, crate::ids::new_trace_id(), now).0 {
                quiet_kept += 1;
            }
        }
        assert_eq!(quiet_kept, 20, "every quiet span is kept");
        // About 1 a second (both rules ask 1/1000), plus the first window's few: 4σ.
        assert!((65..=150).contains(&busy_kept), "{busy_kept}");
        let Compiled::PerOperation { unlisted, .. } = compile(0.0) else {
            panic!("per-operation")
        };
        assert!(unlisted.is_empty());
    }

    #[test]
    fn rate_limiter_allows_the_burst_then_the_rate() {
        let l = RateLimiter::new(10.0);
        let t0 = 1_000_000_000_000;
        // Idle long enough: a burst of max(rate, 1) = 10.
        let burst = (0..100).filter(|_| l.try_acquire(t0)).count();
        assert_eq!(burst, 10);
        // Then one per 100 ms.
        assert!(!l.try_acquire(t0 + 50_000_000));
        assert!(l.try_acquire(t0 + 100_000_000));
        assert!(!l.try_acquire(t0 + 150_000_000));
        // Over 10 s of steady demand: 100 tokens (plus nothing more).
        let l = RateLimiter::new(10.0);
        let mut n = 0;
        for ms in 0..10_000u64 {
            if l.try_acquire(t0 + ms * 1_000_000) {
                n += 1;
            }
        }
        assert!((100..=110).contains(&n), "{n}");
        assert!(!RateLimiter::new(0.0).try_acquire(t0));
        // A rate below 1/s still allows one.
        assert!(RateLimiter::new(0.01).try_acquire(t0));
    }
}
