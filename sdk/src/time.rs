//! Timestamps: nanoseconds since the Unix epoch from a monotonic clock anchored to wall time.
//!
//! The wall clock is read once, together with an [`Instant`]; every later timestamp
//! is that wall time plus the monotonic time elapsed since. A wall-clock step (NTP,
//! manual change) therefore never makes a span end before it started, and
//! resolution is the monotonic clock's (nanoseconds on Linux).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    wall_ns: u64,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(|| {
        let instant = Instant::now();
        // A clock set before 1970 is a broken host; 0 keeps timestamps monotonic anyway.
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Anchor { instant, wall_ns }
    })
}

/// Now, in nanoseconds since the Unix epoch (monotonic: never decreases within a process).
#[inline]
pub fn now_ns() -> u64 {
    let a = anchor();
    let elapsed = a.instant.elapsed().as_nanos();
    a.wall_ns
        .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
}

/// Converts a [`SystemTime`] to nanoseconds since the Unix epoch (0 before the epoch).
pub fn system_time_to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_close_to_wall_clock() {
        let mut prev = now_ns();
        for _ in 0..10_000 {
            let n = now_ns();
            assert!(n >= prev);
            prev = n;
        }
        let wall = system_time_to_ns(SystemTime::now());
        assert!(prev.abs_diff(wall) < 5_000_000_000);
    }
}
