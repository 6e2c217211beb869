//! Timestamps: nanoseconds since the Unix epoch from a monotonic clock anchored to wall time.
//!
//! The wall clock is read once, together with the monotonic clock; every later timestamp
//! is that wall time plus the monotonic time elapsed since. A wall-clock step (NTP,
//! manual change) therefore never makes a span end before it started, and
//! resolution is the monotonic clock's (nanoseconds on Linux).
//!
//! On x86-64 Linux, when the kernel itself keeps time with the TSC (clock source
//! `tsc`, invariant TSC), timestamps come from the TSC read directly (`rdtsc`,
//! ~10 ns on the benchmark VM against ~24 ns for `clock_gettime` through the
//! vDSO, twice per span) and are kept on the monotonic clock above by
//! re-anchoring once a second (module `tsc`, private). Everywhere else, and during the
//! first few milliseconds of a process while the TSC rate is measured, the
//! monotonic clock is read as described.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) mod tsc;

struct Anchor {
    mono_ns: u64,
    wall_ns: u64,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

/// The monotonic clock in nanoseconds (arbitrary origin).
///
/// On Unix this is `clock_gettime(CLOCK_MONOTONIC)` (the clock behind
/// `std::time::Instant`, answered by the vDSO without a system call) turned
/// into nanoseconds with one multiply-add: `Instant::elapsed` costs ~90 more
/// instructions per read in `Duration` arithmetic, twice per span.
/// `quanta`/`minstant` were not adopted for the TSC path: their one-off
/// calibration leaves a rate error that accumulates against this clock, which
/// the `tsc` module corrects by re-anchoring (slewing) every second.
#[cfg(unix)]
#[inline]
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own; CLOCK_MONOTONIC
    // exists on every Unix Rust supports (std's Instant uses it).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(not(unix))]
#[inline]
fn mono_ns() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(|| {
        let mono_ns = mono_ns();
        // A clock set before 1970 is a broken host; 0 keeps timestamps monotonic anyway.
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Anchor { mono_ns, wall_ns }
    })
}

/// Now, in nanoseconds since the Unix epoch (monotonic: never decreases within a process).
#[inline]
pub fn now_ns() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Some(ns) = tsc::now_ns() {
        return ns;
    }
    mono_now_ns()
}

/// [`now_ns`] from the monotonic clock alone (the reference the TSC clock follows).
#[inline]
fn mono_now_ns() -> u64 {
    let a = anchor();
    a.wall_ns
        .saturating_add(mono_ns().saturating_sub(a.mono_ns))
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
