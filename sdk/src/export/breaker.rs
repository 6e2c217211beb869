//! A circuit breaker for exporters: after `failure_threshold` consecutive
//! failed exports it opens for `cooldown`, during which batches are dropped
//! (and counted) without touching the network; then a single probe export
//! decides whether it closes again or re-opens for another cool-down.
//!
//! ```
//! use std::time::Duration;
//! use ferrotrace::export::breaker::{BreakerConfig, CircuitBreaker, Permit};
//! use ferrotrace::export::stats::ExportStats;
//!
//! let b = CircuitBreaker::new(
//!     BreakerConfig { failure_threshold: 2, cooldown: Duration::from_secs(30) },
//!     ExportStats::new(),
//! );
//! assert_eq!(b.acquire(), Permit::Allowed);
//! b.record_failure();
//! b.record_failure();
//! assert_eq!(b.acquire(), Permit::Rejected);
//! ```

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::stats::{BreakerState, ExportStats};

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed exports that open the breaker (default 5; 0 disables
    /// the breaker).
    pub failure_threshold: u32,
    /// How long the breaker stays open before a probe is allowed (default 30 s).
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// What the breaker allows for the next export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Closed: export normally.
    Allowed,
    /// The cool-down ended: this export is the probe.
    Probe,
    /// Open: drop the batch without a network attempt.
    Rejected,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    state: BreakerState,
    opened_at: Option<Instant>,
}

/// Thread-safe circuit breaker; state changes are mirrored into [`ExportStats`].
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    stats: ExportStats,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, stats: ExportStats) -> Self {
        stats.set_breaker_state(BreakerState::Closed);
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                state: BreakerState::Closed,
                opened_at: None,
            }),
            stats,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// Asks whether the next export may go to the network.
    pub fn acquire(&self) -> Permit {
        let mut g = self.inner.lock();
        match g.state {
            BreakerState::Closed => Permit::Allowed,
            // Only one probe at a time: while it runs, others are rejected.
            BreakerState::HalfOpen => Permit::Rejected,
            BreakerState::Open => {
                let cooled = g
                    .opened_at
                    .is_none_or(|t| t.elapsed() >= self.config.cooldown);
                if cooled {
                    g.state = BreakerState::HalfOpen;
                    self.stats.set_breaker_state(BreakerState::HalfOpen);
                    Permit::Probe
                } else {
                    Permit::Rejected
                }
            }
        }
    }

    /// Records a successful export: the breaker closes. Returns `true` if it
    /// was not closed before (a transition worth reporting).
    pub fn record_success(&self) -> bool {
        let mut g = self.inner.lock();
        g.consecutive_failures = 0;
        if g.state != BreakerState::Closed {
            g.state = BreakerState::Closed;
            g.opened_at = None;
            self.stats.set_breaker_state(BreakerState::Closed);
            return true;
        }
        false
    }

    /// The configured cool-down.
    pub fn cooldown(&self) -> Duration {
        self.config.cooldown
    }

    /// Records a failed export: a failed probe, or reaching the threshold, opens
    /// the breaker. Returns `true` if this failure opened it.
    pub fn record_failure(&self) -> bool {
        let mut g = self.inner.lock();
        g.consecutive_failures = g.consecutive_failures.saturating_add(1);
        let open = match g.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => {
                self.config.failure_threshold > 0
                    && g.consecutive_failures >= self.config.failure_threshold
            }
            BreakerState::Open => false,
        };
        if open {
            g.state = BreakerState::Open;
            g.opened_at = Some(Instant::now());
            self.stats.set_breaker_state(BreakerState::Open);
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cooldown_ms: u64) -> (CircuitBreaker, ExportStats) {
        let stats = ExportStats::new();
        let b = CircuitBreaker::new(
            BreakerConfig {
                failure_threshold: threshold,
                cooldown: Duration::from_millis(cooldown_ms),
            },
            stats.clone(),
        );
        (b, stats)
    }

    #[test]
    fn opens_after_threshold_and_probe_closes_it() {
        let (b, stats) = breaker(3, 50);
        for _ in 0..2 {
            assert_eq!(b.acquire(), Permit::Allowed);
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(stats.snapshot().breaker_state, BreakerState::Open);
        assert_eq!(b.acquire(), Permit::Rejected);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(b.acquire(), Permit::Probe);
        // A second caller during the probe is rejected.
        assert_eq!(b.acquire(), Permit::Rejected);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.acquire(), Permit::Allowed);
        assert_eq!(stats.snapshot().breaker_opened, 1);
    }

    #[test]
    fn failed_probe_reopens() {
        let (b, stats) = breaker(1, 20);
        b.record_failure();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.acquire(), Permit::Probe);
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire(), Permit::Rejected);
        assert_eq!(stats.snapshot().breaker_opened, 2);
    }

    #[test]
    fn success_resets_the_failure_count() {
        let (b, _) = breaker(2, 1000);
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn zero_threshold_disables() {
        let (b, _) = breaker(0, 1000);
        for _ in 0..100 {
            b.record_failure();
        }
        assert_eq!(b.acquire(), Permit::Allowed);
    }
}
