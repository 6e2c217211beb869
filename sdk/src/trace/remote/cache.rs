//! The remote sampler's per-thread strategy cache: a destructor-less hot
//! slot checked against the strategy's stamp on every span, and behind it
//! the thread's boxed entries (one per sampler used, at most
//! [`CACHE_ENTRIES`]), refilled under the lock after a strategy change.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;

use super::current::Current;
use super::Shared;

/// Runs `f` on the strategy in force. The thread's hot slot holds the
/// stamp of the strategy its cached entry was read at; while the stamp
/// is unchanged (every span between two strategy changes) no lock is
/// taken and no shared counter is touched: one atomic load, one
/// thread-local comparison and two stores.
#[inline]
pub(super) fn with_current<T>(shared: &Shared, f: impl Fn(&mut Current) -> T) -> T {
    let stamp = shared.stamp.load(Ordering::Acquire);
    // `try_with` (inlined, unlike `with`): the slot has no destructor,
    // so it never fails; if it did, the lock would serve.
    let hot = HOT.try_with(|hot| hot as *const Hot);
    let Ok(hot) = hot else {
        return uncached(shared, f);
    };
    // SAFETY: a thread-local without a destructor lives as long as the thread.
    let hot = unsafe { &*hot };
    if hot.stamp.get() != stamp {
        return refill(shared, stamp, hot, f);
    }
    hot.stamp.set(IN_USE);
    let _restore = Restore { hot, stamp };
    // SAFETY: the slot's stamp matched, so `current` points to the
    // `Current` of the thread's front cache entry, set by `refill`
    // and not moved or freed since: entries are boxed, the cache is
    // changed only by `refill` (which marks the slot first) and its
    // destructor clears the slot. `IN_USE` makes a re-entrant call
    // (a diagnostics hook starting a span) take the uncached path,
    // so this is the only reference.
    f(unsafe { &mut *hot.current.get() })
}

/// The slot's stamp while `f` runs on its entry (never a strategy's stamp).
pub(super) const IN_USE: u64 = u64::MAX;

/// The hot path's view of the thread's cache: the stamp of the strategy its
/// front entry holds, and that entry's [`Current`]. Plain `Cell`s with no
/// destructor, so reading it needs no registration check; `stamp` is 0
/// when there is nothing to use (not filled yet, or the cache destroyed)
/// and [`IN_USE`] while the entry is borrowed.
pub(super) struct Hot {
    pub(super) stamp: Cell<u64>,
    current: Cell<*mut Current>,
}

/// Puts the slot's stamp back when `f` returns (or unwinds).
struct Restore<'a> {
    hot: &'a Hot,
    stamp: u64,
}

impl Drop for Restore<'_> {
    #[inline]
    fn drop(&mut self) {
        self.hot.stamp.set(self.stamp);
    }
}

/// [`RemoteSampler::with_current`] when the hot slot does not hold `stamp`
/// (a strategy change, another sampler, the thread's first span): the
/// cache's entry for `shared` is put first (refreshed if older), the slot
/// pointed at it, and `f` run. Re-entered (the slot is in use), or with
/// the thread's cache gone, `f` runs on the strategy read under the lock.
/// Out of line: it runs after a strategy change or when a thread
/// alternates between samplers.
#[cold]
#[inline(never)]
fn refill<T>(shared: &Shared, stamp: u64, hot: &Hot, f: impl Fn(&mut Current) -> T) -> T {
    if hot.stamp.get() == IN_USE {
        return uncached(shared, f);
    }
    // Marked before the cache changes: dropping a replaced strategy may run
    // user code (a custom initial sampler's destructor) that starts a span.
    hot.stamp.set(IN_USE);
    let mut restore = Restore { hot, stamp: 0 };
    let filled = CACHE.try_with(|cache| {
        let mut cache = cache.try_borrow_mut().ok()?;
        Some(&mut cache.front(shared, stamp).current as *mut Current)
    });
    match filled {
        Ok(Some(current)) => {
            hot.current.set(current);
            restore.stamp = stamp;
            // SAFETY: `current` is in the boxed front entry, which only
            // `refill` changes (not while the slot is `IN_USE`, as now).
            f(unsafe { &mut *current })
        }
        _ => uncached(shared, f),
    }
}

/// [`RemoteSampler::with_current`] without the per-thread cache (re-entered,
/// or the thread is exiting): the strategy is read under the lock. Out of
/// line, so the closure is not inlined twice into the hot path.
#[cold]
#[inline(never)]
fn uncached<T>(shared: &Shared, f: impl Fn(&mut Current) -> T) -> T {
    f(&mut Current::new(shared.current.lock().clone()))
}

/// Samplers cached per thread (a process normally has one).
pub(super) const CACHE_ENTRIES: usize = 4;

pub(super) struct CacheEntry {
    id: u64,
    stamp: u64,
    current: Current,
}

impl CacheEntry {
    fn new(shared: &Shared, stamp: u64) -> Self {
        CacheEntry {
            id: shared.id,
            stamp,
            current: Current::new(shared.current.lock().clone()),
        }
    }
}

/// The thread's cached strategies, most recently used first; boxed so the
/// hot slot's pointer stays valid while entries move.
// Boxed on purpose (clippy's `vec_box`): `Vec` moves its elements, the slot's pointer must not move.
#[allow(clippy::vec_box)]
pub(super) struct Cache(pub(super) Vec<Box<CacheEntry>>);

impl Cache {
    /// The entry of `shared` at `stamp`, put first: refreshed if its stamp
    /// is older, added (dropping the last entry when full) if missing.
    fn front(&mut self, shared: &Shared, stamp: u64) -> &mut CacheEntry {
        let v = &mut self.0;
        match v.iter().position(|e| e.id == shared.id) {
            Some(i) => {
                if v[i].stamp != stamp {
                    *v[i] = CacheEntry::new(shared, stamp);
                }
                v.swap(0, i);
            }
            None => {
                if v.len() == CACHE_ENTRIES {
                    v.pop();
                }
                v.insert(0, Box::new(CacheEntry::new(shared, stamp)));
            }
        }
        &mut v[0]
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // The entries are about to be freed (thread exit): a span started
        // by a later thread-local destructor must not find them in the slot.
        let _ = HOT.try_with(|h| h.stamp.set(0));
    }
}

thread_local! {
    pub(super) static HOT: Hot = const {
        Hot {
            stamp: Cell::new(0),
            current: Cell::new(std::ptr::null_mut()),
        }
    };
    pub(super) static CACHE: RefCell<Cache> = const { RefCell::new(Cache(Vec::new())) };
}
