//! The layer's per-span state, kept by the layer and keyed by the `tracing`
//! span id, instead of in `tracing-subscriber`'s span extensions.
//!
//! An extension costs a `Box` per span (a malloc on the creating thread, a
//! free on the closing one) and every access a registry look-up (the slab
//! slot's reference count, up and down) plus the extensions' lock and type
//! map. Here the state lives inline in one of [`SHARDS`] hash maps, chosen by
//! the id, each behind its own lock: an access is a hash, an uncontended
//! lock and a probe, and a shard's table is reused as spans come and go
//! (no allocation per span once it has grown).
//!
//! Spans are closed on any thread, in any order: an entry is removed by its
//! id, wherever it was inserted. Bounded: at most [`MAX_LIVE_SPANS`] live
//! entries per layer (split evenly over the shards); a span that finds its
//! shard full is not recorded and is counted ([`SpanStates::refused`]).
//!
//! Callers must not re-enter `tracing` inside [`SpanStates::with`]'s closure
//! (a field's `Debug` may log): a shard's lock is not re-entrant.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Shards per layer: enough that threads closing and creating spans at
/// once rarely meet on one lock.
pub(super) const SHARDS: usize = 64;

/// Most spans one layer tracks at once (live `tracing` spans that it
/// records or whose context it keeps for their children).
pub const MAX_LIVE_SPANS: usize = 1 << 18;

const PER_SHARD: usize = MAX_LIVE_SPANS / SHARDS;

/// Odd constants (from the golden ratio and from splitmix64): the shard is
/// picked from one product's top bits and the map hashes with the other,
/// so the map's tag bits do not repeat within a shard.
const SHARD_MUL: u64 = 0x9E37_79B9_7F4A_7C15;
const MAP_MUL: u64 = 0xBF58_476D_1CE4_E5B9;

/// `tracing` ids are `u64`s handed out by the registry (a slab index and a
/// generation): one multiplication spreads them; no need for a keyed hash.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(MAP_MUL);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(MAP_MUL);
    }
}

type Map<T> = HashMap<u64, T, BuildHasherDefault<IdHasher>>;

/// One lock and its map, on a cache line pair of its own (no false sharing
/// between threads working on different shards).
#[repr(align(128))]
struct Shard<T> {
    map: Mutex<Map<T>>,
    /// The map's length, readable without the lock (the room check before
    /// a span is started; written under the lock).
    len: AtomicUsize,
}

/// Per-span states of one layer, keyed by `tracing` span id. See the
/// [module docs](self).
pub(super) struct SpanStates<T> {
    shards: Box<[Shard<T>]>,
    refused: AtomicU64,
}

impl<T> SpanStates<T> {
    pub(super) fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard {
                map: Mutex::new(HashMap::with_hasher(BuildHasherDefault::default())),
                len: AtomicUsize::new(0),
            })
            .collect();
        SpanStates {
            shards,
            refused: AtomicU64::new(0),
        }
    }

    #[inline(always)]
    fn shard(&self, id: u64) -> &Shard<T> {
        let i = (id.wrapping_mul(SHARD_MUL) >> (64 - SHARDS.trailing_zeros())) as usize;
        // `i < SHARDS` by construction (the product's top bits).
        &self.shards[i & (SHARDS - 1)]
    }

    /// An identity for this set of states (stable while it lives): tells one
    /// layer's entries from another's in per-thread bookkeeping.
    pub(super) fn key(&self) -> usize {
        self.shards.as_ptr() as usize
    }

    /// Whether `id`'s shard can take one more entry; when not, the refusal
    /// is counted (the caller then records nothing for the span).
    #[inline]
    pub(super) fn has_room(&self, id: u64) -> bool {
        if self.shard(id).len.load(Ordering::Relaxed) < PER_SHARD {
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Inserts (or replaces) `id`'s state. Callers check
    /// [`has_room`](Self::has_room) first; threads racing past that check
    /// overshoot a shard's bound by at most one entry each.
    #[inline(always)]
    pub(super) fn insert(&self, id: u64, value: T) {
        let shard = self.shard(id);
        let old = {
            let mut map = shard.map.lock();
            let old = map.insert(id, value);
            shard.len.store(map.len(), Ordering::Relaxed);
            old
        };
        // Dropped outside the lock: a state's drop may end a span.
        drop(old);
    }

    /// Runs `f` on `id`'s state under its shard's lock; `None` when the
    /// layer keeps no state for `id`. `f` must not re-enter `tracing`.
    #[inline]
    pub(super) fn with<R>(&self, id: u64, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut map = self.shard(id).map.lock();
        map.get_mut(&id).map(f)
    }

    /// Removes `id`'s state (the span closed), from whichever thread.
    #[inline(always)]
    pub(super) fn remove(&self, id: u64) -> Option<T> {
        let shard = self.shard(id);
        let mut map = shard.map.lock();
        let old = map.remove(&id);
        shard.len.store(map.len(), Ordering::Relaxed);
        old
    }

    /// Live entries (a sum over the shards; exact only when quiet).
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.len.load(Ordering::Relaxed))
            .sum()
    }

    /// Spans not recorded because their shard was full.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl<T> std::fmt::Debug for SpanStates<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanStates")
            .field("live", &self.len())
            .field("refused", &self.refused())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn insert_access_remove_and_reuse() {
        let s = SpanStates::<String>::new();
        s.insert(1, "a".into());
        s.insert(2, "b".into());
        assert_eq!(s.with(1, |v| v.clone()).as_deref(), Some("a"));
        assert_eq!(s.with(3, |v| v.clone()), None);
        s.with(2, |v| v.push('!'));
        assert_eq!(s.remove(2).as_deref(), Some("b!"));
        assert_eq!(s.remove(2), None);
        assert_eq!(s.len(), 1);
        // An id closed and handed out again gets a fresh entry.
        s.insert(2, "c".into());
        assert_eq!(s.with(2, |v| v.clone()).as_deref(), Some("c"));
        // A shard's table is reused: churn through many ids, the live count
        // stays what is live.
        for id in 10..10_010u64 {
            s.insert(id, id.to_string());
            if id >= 11 {
                assert_eq!(s.remove(id - 1), Some((id - 1).to_string()));
            }
        }
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn closed_out_of_order() {
        let s = SpanStates::<u64>::new();
        for id in 1..=100 {
            s.insert(id, id * 10);
        }
        for id in (1..=100).rev().step_by(2).chain((1..=100).step_by(2)) {
            assert_eq!(s.remove(id), Some(id * 10), "id {id}");
        }
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn bounded_per_shard_and_counted() {
        let s = SpanStates::<()>::new();
        // Fill the shard of id 1 to its bound with ids of the same shard.
        let shard_of = |id: u64| (id.wrapping_mul(SHARD_MUL) >> 58) as usize;
        let target = shard_of(1);
        let mut filled = 0;
        let mut id = 1u64;
        while filled < PER_SHARD {
            if shard_of(id) == target {
                assert!(s.has_room(id));
                s.insert(id, ());
                filled += 1;
            }
            id += 1;
        }
        assert!(!s.has_room(1));
        assert_eq!(s.refused(), 1);
        // Other shards still have room; closing one frees a place.
        let other = (1..).find(|i| shard_of(*i) != target).unwrap();
        assert!(s.has_room(other));
        assert!(s.remove(1).is_some());
        assert!(s.has_room(1));
        assert_eq!(s.refused(), 1);
    }

    #[test]
    fn many_threads_insert_and_remove_each_others_entries() {
        // Each thread inserts its ids; another thread removes them (a span
        // created on one thread and closed on another).
        let s = Arc::new(SpanStates::<(u64, u64)>::new());
        let threads = 8u64;
        let per = 5_000u64;
        let inserters: Vec<_> = (0..threads)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let id = t * per + i + 1;
                        s.insert(id, (t, i));
                    }
                })
            })
            .collect();
        for h in inserters {
            h.join().unwrap();
        }
        assert_eq!(s.len(), (threads * per) as usize);
        let removers: Vec<_> = (0..threads)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    // Thread t removes thread (t + 1)'s ids, newest first.
                    let owner = (t + 1) % threads;
                    for i in (0..per).rev() {
                        let id = owner * per + i + 1;
                        assert_eq!(s.with(id, |v| *v), Some((owner, i)));
                        assert_eq!(s.remove(id), Some((owner, i)));
                    }
                })
            })
            .collect();
        for h in removers {
            h.join().unwrap();
        }
        assert_eq!(s.len(), 0);
    }
}
