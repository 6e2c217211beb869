//! A strategy ready for the hot path: thresholds and root trace states
//! pre-computed, operations in a hash map, rate limiters lock-free.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub(super) threshold: Option<Threshold>,
    pub(super) root_state: TraceState,
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
    pub(super) fn decide(
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
    pub(super) bounded: bool,
}

impl Operation {
    /// [`Compiled::quick_drop`] for this operation. With a lower bound every
    /// span must be counted, so it takes the full decision.
    #[inline]
    pub(super) fn quick_drop(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
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
    pub(super) fn decide(
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
    use crate::trace::remote::strategy::PerOperation;

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
