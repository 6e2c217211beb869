//! Maps keyed by a span's `(trace id, span id)`, looked up with a hash the
//! caller computed once.
//!
//! Observing one span looks its own key up in three maps (the peer
//! candidates, twice: is it there, then insert; the children waiting for
//! it; the parent cache) and its parent's key in one or two. Through
//! `HashMap` every lookup hashed the 24-byte key again, as two
//! length-prefixed byte slices (issue 19: part of the rollup's per-span
//! cost). Here a key is hashed once per span, as three words, and that hash
//! serves every map and both steps of a look-then-insert, which keeps the
//! order of those steps (a peer candidate may be evicted between them; see
//! `RollupAggregator::observe_at`).
//!
//! Trace and span ids come from the network, so the hash stays keyed:
//! hashbrown's default hasher (foldhash, seeded at random per process), the
//! one every other rollup map uses. All maps of one aggregator share one
//! [`KeyHasher`], so a hash computed for one serves them all.

use std::hash::{BuildHasher, Hasher};

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::series::SpanKey;

/// Hashes span keys; clones hash alike (one random seed per original).
#[derive(Clone, Debug, Default)]
pub(super) struct KeyHasher(DefaultHashBuilder);

impl KeyHasher {
    /// The hash of `k` for every [`SpanMap`] built with this hasher.
    #[inline]
    pub(super) fn hash(&self, k: &SpanKey) -> u64 {
        let mut h = self.0.build_hasher();
        h.write_u128(u128::from_ne_bytes(k.0));
        h.write_u64(u64::from_ne_bytes(k.1));
        h.finish()
    }
}

/// A span key with its hash (see [`KeyHasher::hash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hashed {
    pub(super) key: SpanKey,
    pub(super) hash: u64,
}

/// A map from span keys to `V`, looked up with [`Hashed`] keys. The hash
/// must come from the [`KeyHasher`] the map was built with.
#[derive(Debug)]
pub(super) struct SpanMap<V> {
    table: HashTable<(SpanKey, V)>,
    hasher: KeyHasher,
}

impl<V> SpanMap<V> {
    /// An empty map hashing with `hasher`.
    pub(super) fn new(hasher: KeyHasher) -> Self {
        SpanMap {
            table: HashTable::new(),
            hasher,
        }
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The value of `k`.
    #[inline]
    pub(super) fn get(&self, k: Hashed) -> Option<&V> {
        self.table.find(k.hash, |e| e.0 == k.key).map(|(_, v)| v)
    }

    /// The value of `k`, mutably.
    #[inline]
    pub(super) fn get_mut(&mut self, k: Hashed) -> Option<&mut V> {
        self.table
            .find_mut(k.hash, |e| e.0 == k.key)
            .map(|(_, v)| v)
    }

    /// True when `k` has a value.
    #[inline]
    pub(super) fn contains_key(&self, k: Hashed) -> bool {
        self.get(k).is_some()
    }

    /// Sets `k`'s value; returns the value it replaces.
    #[inline]
    pub(super) fn insert(&mut self, k: Hashed, v: V) -> Option<V> {
        let hasher = &self.hasher;
        match self
            .table
            .entry(k.hash, |e| e.0 == k.key, |e| hasher.hash(&e.0))
        {
            Entry::Occupied(mut o) => Some(std::mem::replace(&mut o.get_mut().1, v)),
            Entry::Vacant(slot) => {
                slot.insert((k.key, v));
                None
            }
        }
    }

    /// Adds `k`, which the caller knows is not in the map (one probe fewer
    /// than [`insert`](Self::insert)).
    #[inline]
    pub(super) fn insert_new(&mut self, k: Hashed, v: V) {
        debug_assert!(!self.contains_key(k), "insert_new of a present key");
        let hasher = &self.hasher;
        self.table
            .insert_unique(k.hash, (k.key, v), |e| hasher.hash(&e.0));
    }

    /// Removes `k`; returns its value.
    #[inline]
    pub(super) fn remove(&mut self, k: Hashed) -> Option<V> {
        if self.table.is_empty() {
            return None;
        }
        match self.table.find_entry(k.hash, |e| e.0 == k.key) {
            Ok(o) => Some(o.remove().0 .1),
            Err(_) => None,
        }
    }

    /// `k`'s value, inserted as `V::default()` first if missing.
    #[inline]
    pub(super) fn entry_or_default(&mut self, k: Hashed) -> &mut V
    where
        V: Default,
    {
        let hasher = &self.hasher;
        &mut self
            .table
            .entry(k.hash, |e| e.0 == k.key, |e| hasher.hash(&e.0))
            .or_insert_with(|| (k.key, V::default()))
            .into_mut()
            .1
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&SpanKey, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    /// Keeps the entries `f` says yes to.
    pub(super) fn retain(&mut self, mut f: impl FnMut(&SpanKey, &mut V) -> bool) {
        self.table.retain(|(k, v)| f(k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: u8, s: u8) -> SpanKey {
        let mut trace = [0u8; 16];
        trace[0] = t;
        trace[15] = t.wrapping_mul(7);
        let mut span = [0u8; 8];
        span[7] = s;
        (trace, span)
    }

    /// The map behaves like `std`'s `HashMap` through inserts, replacements,
    /// removals, growth and `retain`.
    #[test]
    fn agrees_with_a_hash_map() {
        let hasher = KeyHasher::default();
        let h = |k: SpanKey| Hashed {
            key: k,
            hash: hasher.hash(&k),
        };
        let mut m = SpanMap::new(hasher.clone());
        let mut reference = std::collections::HashMap::new();
        for round in 0..3u32 {
            for t in 0..40u8 {
                for s in 0..25u8 {
                    let k = key(t, s);
                    let v = round * 10_000 + u32::from(t) * 100 + u32::from(s);
                    assert_eq!(m.insert(h(k), v), reference.insert(k, v));
                }
            }
            for t in (0..40u8).step_by(3) {
                for s in 0..25u8 {
                    let k = key(t, s);
                    assert_eq!(m.remove(h(k)), reference.remove(&k));
                    assert_eq!(m.remove(h(k)), None);
                }
            }
            *m.entry_or_default(h(key(200, 1))) += 1;
            *reference.entry(key(200, 1)).or_default() += 1;
            m.retain(|k, v| !(u32::from(k.1[7]) + *v).is_multiple_of(5));
            reference.retain(|k, v| !(u32::from(k.1[7]) + *v).is_multiple_of(5));
            assert_eq!(m.len(), reference.len());
            for (k, v) in &reference {
                assert_eq!(m.get(h(*k)), Some(v));
                assert!(m.contains_key(h(*k)));
            }
            let mut seen: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
            let mut want: Vec<_> = reference.iter().map(|(k, v)| (*k, *v)).collect();
            seen.sort_unstable();
            want.sort_unstable();
            assert_eq!(seen, want);
        }
        if let Some(v) = m.get_mut(h(key(200, 1))) {
            *v = 7;
        }
        assert_eq!(m.get(h(key(200, 1))), Some(&7));
    }

    /// Clones of a hasher hash alike; separate hashers (almost surely) do
    /// not: the seed is random per hasher, not fixed.
    #[test]
    fn clones_share_the_seed() {
        let a = KeyHasher::default();
        let b = a.clone();
        let k = key(1, 2);
        assert_eq!(a.hash(&k), b.hash(&k));
        let others: Vec<u64> = (0..4).map(|_| KeyHasher::default().hash(&k)).collect();
        assert!(others.iter().any(|&h| h != a.hash(&k)));
    }
}
