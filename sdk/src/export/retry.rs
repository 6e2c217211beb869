//! Retry policy for exporters: exponential backoff with jitter, a bounded
//! number of attempts, and server-requested delays (`Retry-After` in either
//! form, gRPC `RetryInfo`) replacing the computed backoff. A server's delay
//! is honoured in full; the exporter gives the batch up instead when the wait
//! would run past its export timeout.
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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

/// How often and how long to wait between attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (default 3; 1 means no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry (default 100 ms).
    pub initial_backoff: Duration,
    /// Upper bound of one computed backoff (default 5 s). Server-requested
    /// delays are not capped by it: they are bounded by the export timeout.
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
    /// `requested` (if any): the server's delay as given (retrying earlier
    /// than asked only earns another refusal), else the computed backoff.
    /// The caller bounds it by its deadline.
    pub fn delay(&self, retry: u32, requested: Option<Duration>) -> Duration {
        match requested {
            Some(d) => d,
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

/// Parses an HTTP `Retry-After` value (RFC 9110 §10.2.3): delay-seconds
/// (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, also the obsolete
/// RFC 850 and asctime forms), measured from the system clock now. A date in
/// the past means "retry now" (zero). `None` for anything else, so the caller
/// falls back to its computed backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// Like [`parse_retry_after`], with an HTTP-date measured from `now`.
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // A delay too large for u64 seconds is still "not before then".
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an HTTP-date in the three forms RFC 9110 §5.6.7 requires
/// recipients to accept: IMF-fixdate, RFC 850 and asctime.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (day, month, year, time) = if let Some((wkday, rest)) = s.split_once(", ") {
        if !wkday.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        let parts: Vec<&str> = rest.split(' ').collect();
        match parts.as_slice() {
            // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
            [d, m, y, t, "GMT"] if d.len() == 2 && y.len() == 4 => {
                (num(d)?, month_number(m)?, num(y)?, *t)
            }
            // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
            [date, t, "GMT"] => {
                let mut it = date.split('-');
                let (d, m, y) = (it.next()?, it.next()?, it.next()?);
                if it.next().is_some() || d.len() != 2 || y.len() != 2 {
                    return None;
                }
                // Two-digit years: RFC 9110 reads one more than 50 years in
                // the future as the past century; 70..99 → 19xx, 00..69 → 20xx.
                let yy = num(y)?;
                let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
                (num(d)?, month_number(m)?, year, *t)
            }
            _ => return None,
        }
    } else {
        // asctime: `Sun Nov  6 08:49:37 1994`
        let parts: Vec<&str> = s.split_whitespace().collect();
        match parts.as_slice() {
            [wkday, m, d, t, y]
                if wkday.len() == 3 && (1..=2).contains(&d.len()) && y.len() == 4 =>
            {
                (num(d)?, month_number(m)?, num(y)?, *t)
            }
            _ => return None,
        }
    };
    let mut hms = time.split(':');
    let (h, mi, se) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || h.len() != 2 || mi.len() != 2 || se.len() != 2 {
        return None;
    }
    let (h, mi, se) = (num(h)?, num(mi)?, num(se)?);
    // 60 allows a leap second, as the grammar does.
    if h > 23 || mi > 59 || se > 60 || year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(m: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|x| *x == m).map(|i| i as u64 + 1)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), for years from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> i64 {
    let y = year as i64 - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn server_delay_wins_and_is_not_capped_by_max_backoff() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        // The deadline, not max_backoff, bounds a server's delay.
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "+3", "1.5", "3s", "soon"] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_date_in_all_three_forms() {
        // 1994-11-06T08:49:37Z
        let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(form), Some(at), "{form}");
        }
        let now = at - Duration::from_secs(30);
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date already past: retry now.
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", at + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_251_199))
        );
        for bad in [
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Wed, 21 Foo 2015 07:28:00 GMT",
            "Wed, 30 Feb 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 24:00:00 GMT",
            "Wed, 21 Oct 2015 07:28 GMT",
            "Wed, 21 Oct 1969 07:28:00 GMT",
            "Wed, 1 Oct 2015 07:28:00 GMT",
            "2015-10-21T07:28:00Z",
            "Wed,",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn statuses() {
        for c in [429, 502, 503, 504] {
            assert!(is_retryable_http_status(c));
        }
        for c in [400, 401, 403, 404, 413, 500] {
            assert!(!is_retryable_http_status(c));
        }
    }
}
