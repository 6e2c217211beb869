//! Rate limiting for log lines that a persisting fault would repeat on every
//! request (a full disk refuses each append with the same error).
//!
//! A fault that makes every request fail must not turn the log into a flood
//! (one line per refused request is hundreds of lines a second, which hides
//! everything else and can fill the very disk that is full). The first
//! occurrence is logged at once; later ones within [`LogLimiter::interval`]
//! are only counted, and the next line logged after the interval carries that
//! count. The metrics that count the fault are not affected: callers count
//! every occurrence and only ask the limiter whether to *log* it.

use std::time::{Duration, Instant};

/// Default shortest interval between two lines of one limited call site.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Limits one call site's log lines to one per interval and counts the rest.
///
/// One limiter per call site (per kind of error): two different faults do not
/// hide each other. Not synchronised; a call site shared between threads
/// wraps it in a mutex.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(DEFAULT_INTERVAL)
    }
}

impl LogLimiter {
    /// A limiter that logs at most one line per `interval`.
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// The shortest interval between two logged lines.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether an occurrence at `now` should be logged: `Some(n)` with the
    /// number of occurrences suppressed since the last logged line (to be
    /// mentioned in the line), or `None` if it is within the interval (then
    /// it is counted as suppressed).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// [`LogLimiter::admit`] at the current time.
    pub fn admit_now(&mut self) -> Option<u64> {
        self.admit(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_is_logged_then_one_line_per_interval_with_the_suppressed_count() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit(t0), Some(0), "the first occurrence is logged");
        // 160 refusals a second for 10 s: none of them logged, all counted.
        let mut logged = 0;
        for i in 1..1600u64 {
            if l.admit(t0 + Duration::from_micros(i * 6_250)).is_some() {
                logged += 1;
            }
        }
        assert_eq!(logged, 0, "nothing logged within the interval");
        assert_eq!(
            l.admit(t0 + Duration::from_secs(10)),
            Some(1599),
            "the line after the interval carries the suppressed count"
        );
        // The count restarts after it was reported.
        assert_eq!(l.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(20)), Some(1));
    }

    #[test]
    fn a_fault_that_returns_after_a_quiet_period_is_logged_at_once() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_secs(300)), Some(0));
    }

    #[test]
    fn a_clock_that_does_not_advance_suppresses_rather_than_panics() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now() + Duration::from_secs(5);
        assert_eq!(l.admit(t0), Some(0));
        // An earlier instant (another thread's clock read) is within the interval.
        assert_eq!(l.admit(t0 - Duration::from_secs(5)), None);
    }
}
