//! A TSC clock that follows the monotonic clock (x86-64 Linux).
//!
//! Used only when the kernel keeps time with the TSC itself (clock source
//! `tsc`: the kernel found it invariant and synchronised across CPUs) and the
//! CPU reports an invariant TSC; anything else keeps [`super::now_ns`] on
//! `clock_gettime`.
//!
//! How it stays right:
//! - **Calibration.** The first read records a (TSC, monotonic) pair; reads
//!   during the next [`CALIBRATION_NS`] use the monotonic clock. The first
//!   read after that measures the rate and publishes the parameters
//!   `ns = ns0 + (tsc − tsc0) × mult / 2³²`.
//! - **Re-anchoring every [`PERIOD_NS`].** The first read past the period
//!   compares the formula with the monotonic clock and publishes new
//!   parameters that start where the old formula is (continuity: no step
//!   backwards) with a rate that closes the gap over the next period, at most
//!   [`MAX_SLEW_PPM`] faster or slower than the measured rate. A formula that
//!   is more than [`STEP_NS`] *behind* steps forward at once (forward steps
//!   keep timestamps monotonic). So the TSC clock stays within about a
//!   millisecond of the monotonic-clock timestamps (microseconds in practice,
//!   see the tests), and never goes backwards.
//! - **Giving up.** If the kernel stops using the TSC as its clock source,
//!   the measured rate moves by more than [`MAX_RATE_CHANGE_PPM`], or the
//!   formula is more than [`GIVE_UP_AHEAD_NS`] ahead (the TSC jumped), the
//!   process returns to the monotonic clock for good.
//! - **Publishing.** Two parameter slots, each behind a sequence lock: the
//!   one writer (`try_lock`; others keep the old parameters) fills the slot
//!   readers are not using and then switches them over, so a writer
//!   preempted mid-write never makes readers wait. A reader retries (with the
//!   new slot) if the switch happened while it read, so no reader computes a
//!   timestamp from parameters that were already replaced.

use std::arch::x86_64::_rdtsc;
use std::sync::atomic::{fence, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Length of the first rate measurement.
pub(crate) const CALIBRATION_NS: u64 = 20_000_000;
/// Re-anchoring period.
pub(crate) const PERIOD_NS: u64 = 1_000_000_000;
/// Largest rate correction while slewing, in parts per million.
pub(crate) const MAX_SLEW_PPM: i128 = 500;
/// A formula further behind the monotonic clock than this steps forward.
pub(crate) const STEP_NS: i128 = 1_000_000;
/// A formula further *ahead* of the monotonic clock than this (the TSC
/// jumped, e.g. a virtual machine moved to another host) is given up: slewing
/// it back would take too long, so timestamps return to the monotonic clock
/// (one step back, at most this long, once in the life of the process).
pub(crate) const GIVE_UP_AHEAD_NS: i128 = 10_000_000;
/// A measured rate this far from the current one (per million) means the TSC
/// does not tick steadily after all: given up too.
pub(crate) const MAX_RATE_CHANGE_PPM: i128 = 10_000;

const UNDECIDED: u8 = 0;
const CALIBRATING: u8 = 1;
const ACTIVE: u8 = 2;
const UNUSABLE: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNDECIDED);
/// One published set of parameters. Cache-line aligned: a slot's index
/// becomes a shift, and the two slots never share a line.
#[repr(align(64))]
struct Slot {
    /// Sequence lock: odd while the fields below are being written.
    seq: AtomicU64,
    tsc0: AtomicU64,
    ns0: AtomicU64,
    /// Nanoseconds per tick × 2³²; 0 until calibrated.
    mult: AtomicU64,
    /// TSC value from which the next re-anchor is due.
    recal_at: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            seq: AtomicU64::new(0),
            tsc0: AtomicU64::new(0),
            ns0: AtomicU64::new(0),
            mult: AtomicU64::new(0),
            recal_at: AtomicU64::new(u64::MAX),
        }
    }
}

static SLOTS: [Slot; 2] = [Slot::new(), Slot::new()];
/// Index of the slot readers use.
static CURRENT: AtomicUsize = AtomicUsize::new(0);

/// The writer's state: the last (TSC, monotonic timestamp) reference pair.
static WRITER: Mutex<Reference> = Mutex::new(Reference { tsc: 0, ns: 0 });

/// A TSC reading and the monotonic-clock timestamp taken with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    pub(crate) tsc: u64,
    pub(crate) ns: u64,
}

/// The published formula `ns0 + (tsc − tsc0) × mult / 2³²`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) tsc0: u64,
    pub(crate) ns0: u64,
    pub(crate) mult: u64,
}

impl Params {
    #[inline]
    pub(crate) fn at(&self, tsc: u64) -> u64 {
        let ticks = tsc.saturating_sub(self.tsc0) as u128;
        self.ns0
            .saturating_add(((ticks * self.mult as u128) >> 32) as u64)
    }

    /// Ticks in `ns` nanoseconds at this rate.
    fn ticks_in(&self, ns: u64) -> u64 {
        u64::try_from(((ns as u128) << 32) / (self.mult.max(1) as u128)).unwrap_or(u64::MAX)
    }
}

/// `mult` for the rate between two references; `None` if either clock did not advance.
pub(crate) fn rate(from: Reference, to: Reference) -> Option<u64> {
    let ticks = to.tsc.checked_sub(from.tsc).filter(|t| *t > 0)?;
    let ns = to.ns.checked_sub(from.ns).filter(|n| *n > 0)?;
    u64::try_from(((ns as u128) << 32) / ticks as u128)
        .ok()
        .filter(|m| *m > 0)
}

/// The parameters that replace `cur` at reference `now`, given the previous
/// reference `prev`: continuous with `cur` at `now.tsc` unless `cur` is more
/// than [`STEP_NS`] behind (then it steps forward to `now.ns`), with the
/// measured rate corrected to close the remaining gap over [`PERIOD_NS`].
/// `None` means the TSC is not to be trusted any more: it went backwards or
/// stood still, its rate changed by more than [`MAX_RATE_CHANGE_PPM`], or the
/// formula got more than [`GIVE_UP_AHEAD_NS`] ahead.
pub(crate) fn reanchor(cur: Params, prev: Reference, now: Reference) -> Option<Params> {
    let measured = rate(prev, now)?;
    let change = (measured as i128 - cur.mult as i128).abs() * 1_000_000 / cur.mult.max(1) as i128;
    if change > MAX_RATE_CHANGE_PPM {
        return None;
    }
    let formula = cur.at(now.tsc);
    let gap = now.ns as i128 - formula as i128;
    if gap < -GIVE_UP_AHEAD_NS {
        return None;
    }
    if gap > STEP_NS {
        return Some(Params {
            tsc0: now.tsc,
            ns0: now.ns,
            mult: measured,
        });
    }
    // Close `gap` over one period: rate × (PERIOD + gap) / PERIOD, the
    // correction bounded so the clock never runs much faster or slower than
    // real time (and never stops).
    let max = PERIOD_NS as i128 * MAX_SLEW_PPM / 1_000_000;
    let gap = gap.clamp(-max, max);
    let mult = measured as i128 * (PERIOD_NS as i128 + gap) / PERIOD_NS as i128;
    Some(Params {
        tsc0: now.tsc,
        ns0: formula,
        mult: u64::try_from(mult).ok().filter(|m| *m > 0)?,
    })
}

#[inline]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86-64 CPU and has no side effects.
    unsafe { _rdtsc() }
}

/// A reference pair whose timestamp is an upper bound of the true time at its
/// TSC value: TSC, monotonic clock, TSC again, and the clock reading advanced
/// by the ticks between the two TSC reads at rate `mult` (0: not advanced).
/// Being an upper bound is what keeps a switch from the monotonic clock to the
/// formula from stepping backwards.
///
/// A pair whose two TSC reads are far apart (the thread was preempted in
/// between) would skew the measured rate, so up to [`SAMPLE_TRIES`] pairs are
/// taken and the tightest one is kept.
fn sample(mult: u64) -> Reference {
    let mut best: Option<(u64, Reference)> = None;
    for _ in 0..SAMPLE_TRIES {
        let a = rdtsc();
        let ns = super::mono_now_ns();
        let b = rdtsc();
        let gap = b.saturating_sub(a);
        let slack = ((gap as u128 * mult as u128) >> 32) as u64;
        let r = Reference {
            tsc: b,
            ns: ns.saturating_add(slack),
        };
        if best.is_none_or(|(g, _)| gap < g) {
            best = Some((gap, r));
        }
        if gap <= TIGHT_TICKS {
            break;
        }
    }
    best.map_or(Reference { tsc: 0, ns: 0 }, |(_, r)| r)
}

/// Pairs taken at most by [`sample`].
const SAMPLE_TRIES: usize = 8;
/// A pair this tight (about 3 µs at 3 GHz; the usual gap is ~30 ns) is kept at once.
const TIGHT_TICKS: u64 = 10_000;

/// Whether this machine's TSC may be used: the kernel's clock source is the
/// TSC and the CPU says its TSC is invariant (CPUID 0x8000_0007, EDX bit 8).
fn usable() -> bool {
    if !kernel_uses_tsc() {
        return false;
    }
    // Leaf 0x8000_0000 says which extended leaves exist before 0x8000_0007 is read.
    let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    max_ext >= 0x8000_0007 && std::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
}

/// The kernel's current clock source is the TSC (read once per period: a few
/// microseconds a second).
fn kernel_uses_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|s| s.trim() == "tsc")
        .unwrap_or(false)
}

/// The parameters readers use now (only the writer, holding `WRITER`, calls this).
fn current() -> (Params, u64) {
    let slot = &SLOTS[CURRENT.load(Ordering::Relaxed) & 1];
    (
        Params {
            tsc0: slot.tsc0.load(Ordering::Relaxed),
            ns0: slot.ns0.load(Ordering::Relaxed),
            mult: slot.mult.load(Ordering::Relaxed),
        },
        slot.recal_at.load(Ordering::Relaxed),
    )
}

/// Writes `p` into the slot readers are not using, then switches them to it.
/// Called with `WRITER` held (one writer at a time).
fn publish(p: Params, period_ticks: u64) {
    let next = (CURRENT.load(Ordering::Relaxed) + 1) & 1;
    let slot = &SLOTS[next];
    let s = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(s.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    slot.tsc0.store(p.tsc0, Ordering::Relaxed);
    slot.ns0.store(p.ns0, Ordering::Relaxed);
    slot.mult.store(p.mult, Ordering::Relaxed);
    slot.recal_at
        .store(p.tsc0.saturating_add(period_ticks), Ordering::Relaxed);
    slot.seq.store(s.wrapping_add(2), Ordering::Release);
    CURRENT.store(next, Ordering::Release);
}

/// Now from the TSC, or `None` when the caller must read the monotonic clock
/// (no usable TSC, or still calibrating).
#[inline]
pub(crate) fn now_ns() -> Option<u64> {
    loop {
        let i = CURRENT.load(Ordering::Acquire);
        let slot = &SLOTS[i & 1];
        let s1 = slot.seq.load(Ordering::Acquire);
        let tsc0 = slot.tsc0.load(Ordering::Relaxed);
        let ns0 = slot.ns0.load(Ordering::Relaxed);
        let mult = slot.mult.load(Ordering::Relaxed);
        let recal_at = slot.recal_at.load(Ordering::Relaxed);
        let tsc = rdtsc();
        fence(Ordering::Acquire);
        // Retry if these parameters were replaced meanwhile (then the other
        // slot is complete), or, only for a reader stalled through two
        // re-anchors, are being rewritten.
        if s1 & 1 != 0
            || slot.seq.load(Ordering::Relaxed) != s1
            || CURRENT.load(Ordering::Relaxed) != i
        {
            std::hint::spin_loop();
            continue;
        }
        if mult == 0 {
            return slow_path();
        }
        let ns = Params { tsc0, ns0, mult }.at(tsc);
        if tsc >= recal_at {
            recalibrate();
        }
        return Some(ns);
    }
}

#[cold]
fn slow_path() -> Option<u64> {
    match STATE.load(Ordering::Acquire) {
        UNDECIDED => {
            let mut w = WRITER.lock();
            if STATE.load(Ordering::Acquire) == UNDECIDED {
                if usable() {
                    *w = sample(0);
                    STATE.store(CALIBRATING, Ordering::Release);
                } else {
                    STATE.store(UNUSABLE, Ordering::Release);
                }
            }
            None
        }
        CALIBRATING => {
            if let Some(mut w) = WRITER.try_lock() {
                let now = sample(0);
                if STATE.load(Ordering::Acquire) == CALIBRATING
                    && now.ns.saturating_sub(w.ns) >= CALIBRATION_NS
                {
                    match rate(*w, now) {
                        Some(mult) => {
                            // Re-sample with the rate known, so the anchor is an
                            // upper bound of the time at its TSC value (see `sample`).
                            let now = sample(mult);
                            let p = Params {
                                tsc0: now.tsc,
                                ns0: now.ns,
                                mult,
                            };
                            *w = now;
                            publish(p, p.ticks_in(PERIOD_NS));
                            STATE.store(ACTIVE, Ordering::Release);
                        }
                        // The TSC did not advance: not a usable clock.
                        None => STATE.store(UNUSABLE, Ordering::Release),
                    }
                }
            }
            None
        }
        // ACTIVE is only seen in the instant before the parameters are read
        // again; the monotonic clock is right in that instant too.
        _ => None,
    }
}

#[cold]
fn recalibrate() {
    let Some(mut w) = WRITER.try_lock() else {
        return;
    };
    // We are the only writer: the published parameters are stable here.
    let (cur, recal_at) = current();
    if cur.mult == 0 {
        return; // given up already
    }
    let now = sample(cur.mult);
    if now.tsc < recal_at {
        return; // another thread re-anchored already
    }
    // The kernel gives up on the TSC when it finds it unstable; so do we.
    let next = if kernel_uses_tsc() {
        reanchor(cur, *w, now)
    } else {
        None
    };
    match next {
        Some(p) => {
            *w = now;
            publish(p, p.ticks_in(PERIOD_NS));
        }
        None => {
            // Stop trusting the TSC. The formula's last values may be ahead
            // of the monotonic clock (by GIVE_UP_AHEAD_NS at most): the one
            // place where a later timestamp can be earlier, once.
            STATE.store(UNUSABLE, Ordering::Release);
            publish(
                Params {
                    tsc0: 0,
                    ns0: 0,
                    mult: 0,
                },
                u64::MAX,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GHZ3: u64 = (1u64 << 32) / 3; // 1/3 ns per tick (a 3 GHz TSC)

    #[test]
    fn the_formula_converts_ticks_to_nanoseconds() {
        let p = Params {
            tsc0: 1_000,
            ns0: 5_000,
            mult: GHZ3,
        };
        assert_eq!(p.at(1_000), 5_000);
        assert!(p.at(4_000).abs_diff(6_000) <= 1);
        // A TSC value before tsc0 (read on another core a hair earlier) clamps.
        assert_eq!(p.at(10), 5_000);
        assert!(p.ticks_in(1_000).abs_diff(3_000) <= 1);
    }

    #[test]
    fn rate_needs_both_clocks_to_advance() {
        let a = Reference { tsc: 100, ns: 100 };
        assert!(rate(a, Reference { tsc: 100, ns: 200 }).is_none());
        assert!(rate(a, Reference { tsc: 50, ns: 200 }).is_none());
        assert!(rate(a, Reference { tsc: 200, ns: 100 }).is_none());
        assert_eq!(rate(a, Reference { tsc: 400, ns: 200 }), Some(GHZ3));
    }

    #[test]
    fn reanchoring_is_continuous_and_slews_toward_the_monotonic_clock() {
        // The formula runs 100 µs ahead of the monotonic clock after a period.
        let cur = Params {
            tsc0: 0,
            ns0: 0,
            mult: GHZ3,
        };
        let prev = Reference { tsc: 0, ns: 0 };
        let now = Reference {
            tsc: 3_000_000_000,
            ns: cur.at(3_000_000_000) - 100_000,
        };
        let p = reanchor(cur, prev, now).unwrap();
        // Continuous: starts exactly where the old formula was.
        assert_eq!(p.at(now.tsc), cur.at(now.tsc));
        // Slower than the measured rate by the gap over one period: one
        // period later it meets the monotonic clock (to rounding).
        let later = now.tsc + 3_000_000_000;
        let measured = Params {
            tsc0: 0,
            ns0: 0,
            mult: rate(prev, now).unwrap(),
        };
        let real_later = now.ns + measured.at(3_000_000_000);
        assert!(p.at(later).abs_diff(real_later) < 1_000, "{}", p.at(later));
        // Still increasing.
        assert!(p.at(later) > p.at(now.tsc));
    }

    #[test]
    fn a_large_gap_is_slewed_at_the_bound_and_a_lag_steps_forward() {
        let cur = Params {
            tsc0: 0,
            ns0: 0,
            mult: GHZ3,
        };
        let prev = Reference { tsc: 0, ns: 0 };
        // 5 ms ahead: corrected at MAX_SLEW_PPM only, never stepped back.
        let ahead = Reference {
            tsc: 3_000_000_000,
            ns: cur.at(3_000_000_000) - 5_000_000,
        };
        let p = reanchor(cur, prev, ahead).unwrap();
        assert_eq!(p.at(ahead.tsc), cur.at(ahead.tsc));
        let measured = rate(prev, ahead).unwrap() as i128;
        let ppm = (measured - p.mult as i128) * 1_000_000 / measured;
        assert!((MAX_SLEW_PPM - 1..=MAX_SLEW_PPM).contains(&ppm), "{ppm}");
        // 5 ms behind: steps forward to the monotonic clock.
        let behind = Reference {
            tsc: 3_000_000_000,
            ns: cur.at(3_000_000_000) + 5_000_000,
        };
        let q = reanchor(cur, prev, behind).unwrap();
        assert_eq!(q.at(behind.tsc), behind.ns);
        // A TSC that went backwards is refused.
        assert!(reanchor(
            cur,
            Reference { tsc: 10, ns: 0 },
            Reference { tsc: 5, ns: 9 }
        )
        .is_none());
        // So is a rate that changed by more than MAX_RATE_CHANGE_PPM (here 5%).
        let faster = Reference {
            tsc: 3_000_000_000,
            ns: 1_050_000_000,
        };
        assert!(reanchor(cur, prev, faster).is_none());
        // And a formula more than GIVE_UP_AHEAD_NS ahead (a TSC that jumped)
        // at an unchanged rate.
        let jumped = Params {
            ns0: 2 * GIVE_UP_AHEAD_NS as u64,
            ..cur
        };
        let now = Reference {
            tsc: 3_000_000_000,
            ns: cur.at(3_000_000_000),
        };
        assert!(reanchor(jumped, prev, now).is_none());
        assert!(reanchor(cur, prev, now).is_some());
    }

    #[test]
    fn the_live_clock_is_monotonic_per_thread_and_close_to_the_monotonic_clock() {
        // Runs through calibration and, on a TSC machine, into the TSC path
        // and through one re-anchor (PERIOD_NS).
        let threads: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut prev = super::super::now_ns();
                    let mut worst = 0u64;
                    let t = std::time::Instant::now();
                    while t.elapsed() < std::time::Duration::from_millis(1_100) {
                        for _ in 0..1_000 {
                            let n = super::super::now_ns();
                            assert!(n >= prev, "went back {} ns", prev - n);
                            prev = n;
                        }
                        // Bracket the read between two monotonic reads: a thread
                        // preempted in between (common on a loaded CI machine)
                        // says nothing about the clock, so that sample is skipped.
                        let before = super::super::mono_now_ns();
                        let n = super::super::now_ns();
                        let after = super::super::mono_now_ns();
                        if after - before < 100_000 {
                            let off = if n < before {
                                before - n
                            } else {
                                n.saturating_sub(after)
                            };
                            worst = worst.max(off);
                        }
                    }
                    worst
                })
            })
            .collect();
        for t in threads {
            let worst = t.join().unwrap();
            // Outside the bracket of two monotonic reads; generous all the same.
            assert!(worst < 5_000_000, "{worst} ns from the monotonic clock");
        }
        if usable() {
            assert_eq!(STATE.load(Ordering::Acquire), ACTIVE);
            // Re-anchored at least once: the current slot is not the first one
            // published (that one's period started at calibration).
            let (p, _) = current();
            assert!(p.mult > 0);
            assert!(SLOTS.iter().all(|s| s.mult.load(Ordering::Relaxed) > 0));
        }
    }
}
