//! Jaeger's per-operation lower bound (`defaultLowerBoundTracesPerSecond`)
//! kept with a **known probability**, so the spans it keeps still carry a
//! threshold and every count downstream stays right.
//!
//! Jaeger's clients keep a span the operation's probability dropped when a
//! token bucket of `lower_bound` per second has a token; such a span's
//! probability is unknown, so a collector can only count it as 1 — for a
//! quiet operation (every span kept by the bucket) that roughly doubles its
//! estimated traffic, and nothing says by how much. Here the lower bound
//! instead *raises the probability*: over windows of
//! `W = max(1 s, 1 / lower_bound)` (capped at an hour), an operation that saw
//! `n` spans in the previous window (or more so far in this one) is sampled
//! at `max(p, lower_bound × W / n)` — the probability that keeps about
//! `lower_bound × W` spans a window (at least one) — applied with the
//! consistent rule and recorded in `ot=th:..`. The probability is fixed
//! before the span's randomness is looked at, so `1 / probability` is an
//! unbiased adjusted count (Horvitz–Thompson).
//!
//! What it costs: the clock (the coarse one) and one shared counter per span
//! of an operation with a lower bound whose own probability is below 1;
//! operations without a lower bound never touch it. After a quiet spell the
//! first window of a burst has no previous count to go by, so it keeps about
//! `lower_bound × W × (1 + ln(n / (lower_bound × W)))` spans instead of
//! `lower_bound × W` (each span's probability is `lower_bound × W` over the
//! count so far); from the next window on it keeps `lower_bound × W`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Longest window: a lower bound under one trace an hour still keeps one an hour.
const MAX_WINDOW_NS: u64 = 3_600_000_000_000;

/// A per-operation lower bound (shared by every thread's spans of the operation).
#[derive(Debug)]
pub(crate) struct LowerBound {
    /// Traces per second (`0` for none).
    pub(crate) per_second: f64,
    window_ns: u64,
    /// Spans to keep per window: `per_second × W`, at least 1.
    per_window: f64,
    /// The index of the window `current` counts (`now_ns / window_ns`).
    window: AtomicU64,
    /// Spans seen in that window.
    current: AtomicU64,
    /// Spans seen in the window before it (0 if that window was skipped).
    previous: AtomicU64,
}

impl LowerBound {
    /// A lower bound of `per_second` traces per second (none when not above 0).
    pub(crate) fn new(per_second: f64) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            0.0
        };
        let window_ns = if per_second > 0.0 {
            ((1e9 / per_second).max(1e9) as u64).min(MAX_WINDOW_NS)
        } else {
            MAX_WINDOW_NS
        };
        LowerBound {
            per_second,
            window_ns,
            per_window: (per_second * window_ns as f64 / 1e9).max(1.0),
            window: AtomicU64::new(u64::MAX),
            current: AtomicU64::new(0),
            previous: AtomicU64::new(0),
        }
    }

    /// A lower bound of `per_second` that continues `previous`'s window and
    /// counts when its windows have the same length (a new strategy with
    /// the same bound).
    pub(crate) fn continuing(per_second: f64, previous: Option<&LowerBound>) -> Self {
        let l = Self::new(per_second);
        if let Some(p) = previous.filter(|p| l.is_set() && p.window_ns == l.window_ns) {
            l.window
                .store(p.window.load(Ordering::Relaxed), Ordering::Relaxed);
            l.current
                .store(p.current.load(Ordering::Relaxed), Ordering::Relaxed);
            l.previous
                .store(p.previous.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        l
    }

    /// Spans counted in the current window (for tests).
    #[cfg(test)]
    pub(crate) fn seen(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    /// True when a lower bound is configured.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.per_second > 0.0
    }

    /// Counts one span at `now_ns` and returns the probability the lower
    /// bound asks for it: `per_window / max(previous window, this window so
    /// far)`, at most 1. Races at a window's turn (two threads rolling it)
    /// only move a few counts between adjacent windows.
    #[inline]
    pub(crate) fn probability(&self, now_ns: u64) -> f64 {
        let w = now_ns / self.window_ns;
        let seen = self.window.load(Ordering::Relaxed);
        if w != seen
            && self
                .window
                .compare_exchange(seen, w, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.current.swap(0, Ordering::Relaxed);
            // Only the window right before counts as "previous": after a gap
            // the operation restarts from nothing known.
            let previous = if seen != u64::MAX && w == seen.wrapping_add(1) {
                last
            } else {
                0
            };
            self.previous.store(previous, Ordering::Relaxed);
        }
        let now = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        let n = now.max(self.previous.load(Ordering::Relaxed));
        (self.per_window / n as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn window_and_per_window_follow_the_rate() {
        let l = LowerBound::new(2.0);
        assert_eq!((l.window_ns, l.per_window), (S, 2.0));
        let l = LowerBound::new(0.1);
        assert_eq!((l.window_ns, l.per_window), (10 * S, 1.0));
        let l = LowerBound::new(1e-9);
        assert_eq!(l.window_ns, MAX_WINDOW_NS);
        assert_eq!(l.per_window, 1.0);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(!LowerBound::new(bad).is_set(), "{bad}");
        }
    }

    #[test]
    fn the_previous_window_sets_the_probability() {
        let l = LowerBound::new(2.0);
        let t0 = 1_000 * S;
        // First window: nothing known, the probability falls as spans come.
        let ps: Vec<f64> = (0..4).map(|_| l.probability(t0)).collect();
        assert_eq!(ps, [1.0, 1.0, 2.0 / 3.0, 0.5]);
        for _ in 4..100 {
            l.probability(t0);
        }
        // Next window: 100 were seen, so 2 / 100 from the first span on.
        assert_eq!(l.probability(t0 + S), 0.02);
        // After a skipped window nothing is known again.
        assert_eq!(l.probability(t0 + 3 * S), 1.0);
    }

    #[test]
    fn a_new_strategy_continues_the_counts_of_the_same_bound() {
        let l = LowerBound::new(2.0);
        let t0 = 1_000 * S;
        for _ in 0..100 {
            l.probability(t0);
        }
        let next = LowerBound::continuing(2.0, Some(&l));
        assert_eq!(next.probability(t0 + S), 0.02, "the previous window's 100");
        // Another bound (another window length) starts afresh.
        let other = LowerBound::continuing(0.5, Some(&l));
        assert_eq!(other.probability(t0 + S), 1.0);
        assert!(!LowerBound::continuing(0.0, Some(&l)).is_set());
    }
}
