//! The un-ended span watchdog: reports, once, every sampled span still open
//! after a configurable age (a span leaked in a map, a future never polled to
//! completion, a missing `end()` on a manually managed span).
//!
//! Cost model: a sharded registry of start times, touched only at span start
//! and end, and scanned by one background thread a few times per age period.
//! No lock on the span path: a thread owns one of the first `OWNED_SHARDS`
//! shards while one is free (taken at its first watched span, given back when
//! it exits) and claims a free slot there with plain stores: nothing else
//! writes a free slot of an owned shard. Threads beyond that share the other
//! shards and claim with one compare-and-swap. A claim starts at the thread's
//! last claimed slot, so sequential spans reuse one warm slot instead of
//! walking the shard (a cache miss per span). Either way the span's ids are
//! published with plain stores and an end frees the slot with one plain
//! store. (Together: the watchdog's cost per sampled span on the calling
//! thread about halved, 4–12 to 3–6.5 ns, in session 14.) (A shard lock taken at start and at end cost four atomic
//! read-modify-writes per span, 17–22 ns, measured in round 4.) Nothing runs
//! per attribute or event, and unsampled spans never touch it. The registry is
//! bounded; spans started while the calling thread's shard is full (or while
//! the `MAX_PROBES` slots after its cursor all hold open spans) are not watched
//! and are counted.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::diagnostics::{report, Diagnostic};
use crate::ids::{SpanId, TraceId};

const SHARDS: usize = 16;
// Shard indices are masked with `SHARDS - 1`.
const _: () = assert!(SHARDS.is_power_of_two());
/// Shards `0..OWNED_SHARDS` are owned by one thread at a time; the rest are
/// shared by the threads that found none free.
const OWNED_SHARDS: usize = SHARDS / 2;
/// In [`LOCAL`]'s shard word: the thread owns that shard.
const OWN: u32 = 1 << 31;

/// Which owned shards a thread holds (process-wide: a thread's shard index
/// is the same in every provider's registry).
static OWNERS: [AtomicBool; OWNED_SHARDS] = [const { AtomicBool::new(false) }; OWNED_SHARDS];
/// Where an owned shard's last owner left its cursor: the next owner goes on
/// from there (slots behind it may still hold the last owner's open spans).
static OWNER_CURSORS: [AtomicU32; OWNED_SHARDS] = [const { AtomicU32::new(0) }; OWNED_SHARDS];
/// Default maximum number of open spans watched per provider.
pub const DEFAULT_WATCH_CAPACITY: usize = 65_536;

/// Most slots a start probes for a free one. A span is left unwatched when
/// this many slots in a row (from the thread's cursor) hold open spans: when
/// the shard is full, or a long run of long-lived spans fills that stretch
/// (the cursor then moves past it, so the next start probes further on).
const MAX_PROBES: usize = 64;

/// Slot state: free.
const FREE: u64 = 0;
/// Slot state: claimed by a start that is still writing the ids (not scanned).
const CLAIMED: u64 = 1;
/// Slot state bit: a live span; the low bits are its start time.
const LIVE: u64 = 1 << 63;
/// Slot state bit: the live span was reported.
const REPORTED: u64 = 1 << 62;
/// Start times are kept to 62 bits (nanoseconds: until the year 2116).
const START_MASK: u64 = REPORTED - 1;

/// One watched span. Every field is atomic because the scanning thread reads
/// the slot while other threads claim and free it; `state` orders the rest
/// (ids written before the `Release` store of `LIVE | start`, read after an
/// `Acquire` load of it, and the state re-checked after reading them).
#[derive(Default)]
struct Slot {
    state: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    span_id: AtomicU64,
    name_ptr: AtomicPtr<u8>,
    name_len: AtomicUsize,
}

/// A shard's slots, allocated on the first span the shard watches (a provider
/// used from one thread allocates one shard, not the whole capacity).
struct Shard {
    slots: OnceLock<Box<[Slot]>>,
}

/// Where a watched span is registered; given back at end: the slot's state
/// word itself, so ending a span frees it with one store (no shard and slot
/// look-up with their bounds and initialisation checks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchToken {
    state: std::ptr::NonNull<AtomicU64>,
}

// SAFETY: the token only points to an atomic (`Sync`) inside a registry that
// outlives it (see `WatchToken::release`).
unsafe impl Send for WatchToken {}
// SAFETY: as above.
unsafe impl Sync for WatchToken {}

impl WatchToken {
    /// Frees the span's slot. Called once per token (a span ends once).
    ///
    /// # Safety
    /// The registry that issued the token is still alive: a span's record
    /// holds its provider, which owns the watchdog and its registry.
    #[inline]
    pub(crate) unsafe fn release(self) {
        // A plain store: only the span's owner frees its slot, and the
        // scanner's mark (`REPORTED`) is a compare-and-swap that fails
        // once the slot is freed.
        // SAFETY: the caller guarantees the registry (and so the slot) lives.
        unsafe { self.state.as_ref() }.store(FREE, Ordering::Release);
    }
}

pub(crate) struct WatchdogState {
    /// A fixed array: a masked index needs no bounds check per span.
    shards: [Shard; SHARDS],
    per_shard_capacity: usize,
    max_age_ns: u64,
    reported: AtomicU64,
    unwatched: AtomicU64,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    /// This thread's shard (`u32::MAX` until the first claim picks one; with
    /// [`OWN`] set when the thread owns it), and where its next claim starts
    /// looking: its last claimed slot, free again when that span has ended
    /// (one probe), else the next one is usually free (two probes). One thread-local for both: a sampled span's start reads and
    /// writes it once. (`const`, no destructor: still readable while the
    /// thread's other thread-locals are destroyed.)
    static LOCAL: Cell<(u32, u32)> = const { Cell::new((u32::MAX, 0)) };
    /// The owned shard, given back when the thread exits.
    static OWNED: Ownership = const { Ownership(Cell::new(None)) };
}

/// Holds a thread's owned shard; dropped when the thread exits.
struct Ownership(Cell<Option<usize>>);

impl Drop for Ownership {
    fn drop(&mut self) {
        if let Some(k) = self.0.take() {
            // Spans this thread starts from here on (in other thread-locals'
            // destructors) use a shared shard, before another thread may own
            // this one. The `Release` hands this thread's last slot writes to
            // the next owner's `Acquire`.
            let cursor = LOCAL
                .try_with(|c| c.replace((shared_shard() as u32, 0)).1)
                .unwrap_or(0);
            OWNER_CURSORS[k].store(cursor, Ordering::Relaxed);
            OWNERS[k].store(false, Ordering::Release);
        }
    }
}

/// [`LOCAL`]'s shard word.
#[inline]
fn word(shard: usize, own: bool) -> u32 {
    shard as u32 | if own { OWN } else { 0 }
}

/// A shared shard, round robin.
fn shared_shard() -> usize {
    OWNED_SHARDS + NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % (SHARDS - OWNED_SHARDS)
}

/// This thread's shard, cursor and whether it owns the shard (a shared
/// shard on a thread whose thread-locals are gone).
#[inline]
fn local() -> (usize, usize, bool) {
    let (shard, cursor) = LOCAL
        .try_with(Cell::get)
        .unwrap_or((OWNED_SHARDS as u32, 0));
    if shard != u32::MAX {
        return ((shard & !OWN) as usize, cursor as usize, shard & OWN != 0);
    }
    first_claim()
}

/// Picks this thread's shard: a free owned one if any (kept until the
/// thread exits), else a shared one.
#[cold]
fn first_claim() -> (usize, usize, bool) {
    let start = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
    let owned = OWNED
        .try_with(|o| {
            (0..OWNED_SHARDS)
                .map(|j| (start + j) % OWNED_SHARDS)
                .find(|&k| {
                    OWNERS[k]
                        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                })
                .inspect(|&k| o.0.set(Some(k)))
        })
        .ok()
        .flatten();
    let (shard, own, cursor) = match owned {
        Some(k) => (k, true, OWNER_CURSORS[k].load(Ordering::Relaxed)),
        None => (shared_shard(), false, 0),
    };
    let _ = LOCAL.try_with(|c| c.set((word(shard, own), cursor)));
    (shard, cursor as usize, own)
}

impl WatchdogState {
    fn new(max_age: Duration, capacity: usize) -> Self {
        WatchdogState {
            shards: std::array::from_fn(|_| Shard {
                slots: OnceLock::new(),
            }),
            per_shard_capacity: capacity.div_ceil(SHARDS).clamp(1, u32::MAX as usize),
            max_age_ns: u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX),
            reported: AtomicU64::new(0),
            unwatched: AtomicU64::new(0),
        }
    }

    #[inline]
    fn slots_of(&self, shard: usize) -> &[Slot] {
        self.shards[shard & (SHARDS - 1)].slots.get_or_init(|| {
            (0..self.per_shard_capacity)
                .map(|_| Slot::default())
                .collect()
        })
    }

    #[inline]
    pub(crate) fn register(
        &self,
        start_ns: u64,
        trace_id: TraceId,
        span_id: SpanId,
        name: Option<&'static str>,
    ) -> Option<WatchToken> {
        let (shard_idx, cursor, own) = local();
        let slots = self.slots_of(shard_idx);
        let n = slots.len();
        // The cursor may come from another provider's (larger) shards.
        let mut i = if cursor < n { cursor } else { 0 };
        // Probe at most `MAX_PROBES` slots from the cursor: a shard filled
        // by leaked spans must not make every later span walk all of it.
        // (Wrapping by comparison, not `%`: a division per span costs tens of cycles.)
        for _ in 0..n.min(MAX_PROBES) {
            let at = i;
            let s = &slots[i];
            i += 1;
            if i == n {
                i = 0;
            }
            // An owned shard's free slot is written by its owner only (an
            // end frees a live slot; the scanner marks live slots): no
            // compare-and-swap, and the scanner skips it while it is still
            // `FREE` and the ids are being written.
            if s.state.load(Ordering::Acquire) != FREE
                || (!own
                    && s.state
                        .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                        .is_err())
            {
                continue;
            }
            let t = u128::from_be_bytes(trace_id.to_bytes());
            s.trace_hi.store((t >> 64) as u64, Ordering::Relaxed);
            s.trace_lo.store(t as u64, Ordering::Relaxed);
            s.span_id
                .store(u64::from_be_bytes(span_id.to_bytes()), Ordering::Relaxed);
            let (p, l) = name.map_or((std::ptr::null_mut(), 0), |nm| {
                (nm.as_ptr().cast_mut(), nm.len())
            });
            s.name_ptr.store(p, Ordering::Relaxed);
            s.name_len.store(l, Ordering::Relaxed);
            s.state
                .store(LIVE | (start_ns & START_MASK), Ordering::Release);
            // The next claim starts here: a span started after this one
            // ended reuses the slot (its cache line still warm; walking on
            // through the shard cost a cache miss per span), a nested one
            // probes it and takes the next.
            let _ = LOCAL.try_with(|c| c.set((word(shard_idx, own), at as u32)));
            return Some(WatchToken {
                state: std::ptr::NonNull::from(&s.state),
            });
        }
        // The next claim looks past the run of open spans just probed.
        let _ = LOCAL.try_with(|c| c.set((word(shard_idx, own), i as u32)));
        self.unwatched.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Frees the span's slot (tests; spans call [`WatchToken::release`]).
    #[cfg(test)]
    pub(crate) fn unregister(&self, t: WatchToken) {
        // SAFETY: `t` was issued by `self`, which is alive.
        unsafe { t.release() }
    }

    /// Live (claimed and published) slots; for tests.
    #[cfg(test)]
    fn live(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.slots.get())
            .flat_map(|s| s.iter())
            .filter(|s| s.state.load(Ordering::Acquire) & LIVE != 0)
            .count()
    }

    /// Reports every live span older than the age, once. Returns how many.
    pub(crate) fn scan(&self, now_ns: u64) -> usize {
        let mut found: Vec<Diagnostic> = Vec::new();
        for slots in self.shards.iter().filter_map(|s| s.slots.get()) {
            for s in slots.iter() {
                let state = s.state.load(Ordering::Acquire);
                if state & LIVE == 0 || state & REPORTED != 0 {
                    continue;
                }
                let start_ns = state & START_MASK;
                let age = now_ns.saturating_sub(start_ns);
                if age < self.max_age_ns {
                    continue;
                }
                let hi = s.trace_hi.load(Ordering::Relaxed);
                let lo = s.trace_lo.load(Ordering::Relaxed);
                let span_id = s.span_id.load(Ordering::Relaxed);
                let p = s.name_ptr.load(Ordering::Relaxed);
                let l = s.name_len.load(Ordering::Relaxed);
                // Marking succeeds only if the slot still holds the same
                // span (freed and re-claimed slots change state; a new
                // span with the very same start nanosecond in the same
                // slot is the one case this cannot tell apart).
                if s.state
                    .compare_exchange(state, state | REPORTED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                let name = if p.is_null() {
                    None
                } else {
                    // SAFETY: `p`/`l` were stored from a `&'static str` by
                    // `register` before the `Release` store of this state,
                    // which the `Acquire` load above observed, and the CAS
                    // confirmed the slot was not re-claimed since.
                    Some(unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(p, l)) })
                };
                let t = (u128::from(hi) << 64) | u128::from(lo);
                found.push(Diagnostic::UnendedSpan {
                    trace_id: TraceId::from_bytes(t.to_be_bytes()),
                    span_id: SpanId::from_bytes(span_id.to_be_bytes()),
                    name,
                    age: Duration::from_nanos(age),
                });
            }
        }
        let n = found.len();
        self.reported.fetch_add(n as u64, Ordering::Relaxed);
        // Reported after the scan: the hook may be slow.
        for d in found {
            report(d);
        }
        n
    }

    pub(crate) fn reported(&self) -> u64 {
        self.reported.load(Ordering::Relaxed)
    }

    pub(crate) fn unwatched(&self) -> u64 {
        self.unwatched.load(Ordering::Relaxed)
    }
}

/// The watchdog of one provider: registry + scanning thread. Dropping it stops the thread.
pub(crate) struct Watchdog {
    pub(crate) state: Arc<WatchdogState>,
    _stop: crossbeam_channel::Sender<()>,
}

impl Watchdog {
    pub(crate) fn start(max_age: Duration, capacity: usize) -> Self {
        let state = Arc::new(WatchdogState::new(max_age, capacity));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        // Several checks per period bound the reporting delay to ~1.25x the age.
        let interval = (max_age / 4).clamp(Duration::from_millis(5), Duration::from_secs(30));
        let st = state.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrotrace-watchdog".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(interval) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        st.scan(crate::time::now_ns());
                    }
                    _ => return,
                }
            });
        if let Err(e) = spawned {
            report(Diagnostic::Config(format!(
                "could not start the un-ended span watchdog thread ({e}); old spans will not be reported"
            )));
        }
        Watchdog {
            state,
            _stop: stop_tx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_and_forgets_ended() {
        let st = WatchdogState::new(Duration::from_secs(1), 64);
        let a = st
            .register(
                0,
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([1; 8]),
                Some("a"),
            )
            .unwrap();
        let b = st
            .register(
                0,
                TraceId::from_bytes([2; 16]),
                SpanId::from_bytes([2; 8]),
                None,
            )
            .unwrap();
        st.unregister(b);
        assert_eq!(st.scan(500_000_000), 0);
        assert_eq!(st.scan(1_000_000_000), 1);
        assert_eq!(st.scan(2_000_000_000), 0);
        assert_eq!(st.reported(), 1);
        st.unregister(a);
        st.unregister(a);
        assert_eq!(st.live(), 0);
    }

    #[test]
    fn bounded() {
        let st = WatchdogState::new(Duration::from_secs(1), 16);
        let toks: Vec<_> = (0..3)
            .map(|_| {
                st.register(
                    0,
                    TraceId::from_bytes([1; 16]),
                    SpanId::from_bytes([1; 8]),
                    None,
                )
            })
            .collect();
        assert!(toks[0].is_some());
        assert!(toks[1].is_none());
        assert_eq!(st.unwatched(), 2);
    }

    /// More threads than shards claim slots at once (shards shared), and
    /// spans end on other threads than the one that started them: every
    /// slot is claimed by one span only, and exactly the spans not ended
    /// are reported, with their own ids.
    #[test]
    fn concurrent_claims_and_cross_thread_ends() {
        let _serial = SERIAL.lock();
        let st = Arc::new(WatchdogState::new(Duration::from_secs(1), 1 << 16));
        let threads: Vec<_> = (0..(SHARDS as u64 * 2 + 3))
            .map(|t| {
                let st = st.clone();
                std::thread::spawn(move || {
                    (0..20u64)
                        .map(|i| {
                            let id = (t << 32) | (i + 1);
                            let tok = st
                                .register(
                                    10,
                                    TraceId::from_bytes(u128::from(id).to_be_bytes()),
                                    SpanId::from_bytes(id.to_be_bytes()),
                                    Some("x"),
                                )
                                .unwrap();
                            (id, tok)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<(u64, WatchToken)> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(st.live(), all.len());
        // End the even ids on another thread.
        let ended: Vec<WatchToken> = all
            .iter()
            .filter(|(id, _)| id % 2 == 0)
            .map(|(_, t)| *t)
            .collect();
        let st2 = st.clone();
        std::thread::spawn(move || ended.into_iter().for_each(|t| st2.unregister(t)))
            .join()
            .unwrap();
        let open = all.iter().filter(|(id, _)| id % 2 == 1).count();
        assert_eq!(st.live(), open);
        // The live slots hold exactly the odd ids, each slot one span's own ids.
        let mut seen: Vec<u64> = st
            .shards
            .iter()
            .filter_map(|s| s.slots.get())
            .flat_map(|s| s.iter())
            .filter(|s| s.state.load(Ordering::Acquire) & LIVE != 0)
            .map(|s| {
                let id = s.span_id.load(Ordering::Relaxed);
                assert_eq!(s.trace_hi.load(Ordering::Relaxed), 0);
                assert_eq!(s.trace_lo.load(Ordering::Relaxed), id);
                assert_eq!(id % 2, 1);
                id
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), open);
        assert_eq!(st.scan(2_000_000_000), open);
        assert_eq!(st.scan(3_000_000_000), 0);
        assert_eq!(st.reported(), open as u64);
    }

    /// Threads alive at once never own the same shard; beyond the owned
    /// shards they share the others; an exiting thread gives its shard
    /// back (more threads in turn own one than there are owned shards).
    #[test]
    fn owned_shards_are_exclusive_and_given_back() {
        let _serial = SERIAL.lock();
        let n = OWNED_SHARDS + 3;
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let live: Vec<(usize, bool)> = (0..n)
            .map(|_| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    let (shard, _, own) = local();
                    b.wait(); // all alive at once
                    (shard, own)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let mut owned: Vec<usize> = live.iter().filter(|(_, o)| *o).map(|(s, _)| *s).collect();
        assert!(owned.iter().all(|&s| s < OWNED_SHARDS));
        let before = owned.len();
        owned.sort_unstable();
        owned.dedup();
        assert_eq!(
            owned.len(),
            before,
            "two live threads own one shard: {live:?}"
        );
        assert!(before <= OWNED_SHARDS);
        assert!(live
            .iter()
            .filter(|(_, o)| !o)
            .all(|(s, _)| (OWNED_SHARDS..SHARDS).contains(s)));
        // One after another: each finds the shards the previous ones gave back.
        let in_turn = (0..3 * OWNED_SHARDS)
            .filter(|_| std::thread::spawn(|| local().2).join().unwrap())
            .count();
        assert!(
            in_turn > OWNED_SHARDS,
            "{in_turn} threads in turn owned a shard"
        );
    }

    /// Serialises the tests that start many threads (owned shards are
    /// process-wide).
    static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    /// A full shard costs a bounded probe per start, and a slot freed
    /// anywhere in it is found again within a few starts.
    #[test]
    fn full_shard_probes_are_bounded_and_freed_slots_found() {
        let per_shard = 200;
        let st = WatchdogState::new(Duration::from_secs(1), SHARDS * per_shard);
        let reg = || {
            st.register(
                0,
                TraceId::from_bytes([3; 16]),
                SpanId::from_bytes([3; 8]),
                None,
            )
        };
        let (shard, _, own) = local();
        let _ = LOCAL.try_with(|c| c.set((word(shard, own), 0)));
        let toks: Vec<_> = (0..per_shard).map(|_| reg().unwrap()).collect();
        assert!(reg().is_none());
        assert_eq!(st.unwatched(), 1);
        st.unregister(toks[150]);
        let tries = (0..per_shard.div_ceil(MAX_PROBES) + 1)
            .position(|_| reg().is_some())
            .expect("the freed slot is found");
        assert!(tries <= per_shard.div_ceil(MAX_PROBES));
        assert_eq!(st.live(), per_shard);
    }
}
