//! Retry policy for exporters: exponential backoff with jitter, a bounded
//! number of attempts, and server-requested delays (`Retry-After`, gRPC
//! `RetryInfo`) taking precedence over the computed backoff.
//!
//! Which outcomes are retryable follows the OTLP specification; the
//! transport-specific classification lives next to each transport.
//!
//! ```
//! use std::time::Duration;
//! use ferrotrace::export::retry::RetryPolicy;
//! let p = RetryPolicy::default();
//! assert_eq!(p.max_attempts, 3);
//! // The n-th backoff never exceeds the cap.
//! assert!(p.backoff(10) <= p.max_backoff);
//! ```

use std::time::Duration;

use rand::Rng;

/// How often and how long to wait between attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (default 3; 1 means no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry (default 100 ms).
    pub initial_backoff: Duration,
    /// Upper bound of one backoff, including server-requested delays (default 5 s).
    pub max_backoff: Duration,
    /// Growth factor per retry (default 2.0).
    pub multiplier: f64,
    /// Fraction of each backoff that is randomised, 0.0..=1.0 (default 0.2):
    /// the wait is uniformly drawn from `[b * (1 - jitter), b * (1 + jitter)]`
    /// so that many clients do not retry in lockstep.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The wait before retry number `retry` (0 = the first retry), with jitter,
    /// capped at `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64()
            * self.multiplier.max(1.0).powi(retry.min(64) as i32);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter))
        } else {
            1.0
        };
        let secs = (base * factor).min(self.max_backoff.as_secs_f64());
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max_backoff)
    }

    /// The wait before retry number `retry` when the server asked for
    /// `requested` (if any): the server's delay wins, capped at `max_backoff`.
    pub fn delay(&self, retry: u32, requested: Option<Duration>) -> Duration {
        match requested {
            Some(d) => d.min(self.max_backoff),
            None => self.backoff(retry),
        }
    }
}

/// The outcome of one failed attempt, as classified by a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptError {
    /// Worth retrying, after `retry_after` if the server said so.
    Retryable {
        /// What went wrong.
        message: String,
        /// The server's requested delay (`Retry-After`, `RetryInfo`).
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (e.g. HTTP 400, gRPC `INVALID_ARGUMENT`): the batch
    /// is dropped at once.
    Permanent(String),
}

impl AttemptError {
    /// The error message.
    pub fn message(&self) -> &str {
        match self {
            AttemptError::Retryable { message, .. } => message,
            AttemptError::Permanent(m) => m,
        }
    }
}

/// Parses an HTTP `Retry-After` value given in delay-seconds. (The HTTP-date
/// form is not honoured: the computed backoff is used instead.)
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// HTTP status codes the OTLP specification lists as retryable.
pub fn is_retryable_http_status(code: u16) -> bool {
    matches!(code, 429 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..Default::default()
        };
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(400));
        assert_eq!(p.backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_in_range() {
        let p = RetryPolicy::default();
        for _ in 0..1000 {
            let d = p.backoff(1).as_secs_f64();
            assert!((0.16..=0.24).contains(&d), "{d}");
        }
    }

    #[test]
    fn server_delay_wins_but_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(600))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_and_statuses() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        for c in [429, 502, 503, 504] {
            assert!(is_retryable_http_status(c));
        }
        for c in [400, 401, 403, 404, 413, 500] {
            assert!(!is_retryable_http_status(c));
        }
    }
}
