//! Rendezvous (highest-random-weight) hashing of trace ids over backends:
//! each backend scores a trace id with a fixed hash seeded by the backend's
//! name, and the highest score owns the trace. Removing a backend moves only
//! the traces it owned (to their second-best backend); adding one takes
//! about `1/n` of every other backend's traces and moves nothing else.
//!
//! The hash is XXH3-64, a fixed published function: two routers with the
//! same backend names send a trace to the same backend, across restarts and
//! builds.

use twox_hash::XxHash3_64;

use crate::model::TraceId;

/// The seed a backend scores with: the hash of its name (its `host:port`).
pub fn seed(name: &str) -> u64 {
    XxHash3_64::oneshot(name.as_bytes())
}

/// The score of `trace` on the backend with `seed`.
fn score(seed: u64, trace: &TraceId) -> u64 {
    XxHash3_64::oneshot_with_seed(seed, trace)
}

/// The index (into `seeds`) of the backend that owns `trace`, or `None` when
/// `seeds` is empty. Ties (a 2^-64 event) go to the lower index, so the
/// answer depends only on the set of backends and their order of listing
/// for that tie.
pub fn owner(seeds: &[u64], trace: &TraceId) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, s) in seeds.iter().enumerate() {
        let sc = score(*s, trace);
        if best.is_none_or(|(b, _)| sc > b) {
            best = Some((sc, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(i: u64) -> TraceId {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        t[8..].copy_from_slice(&i.to_le_bytes());
        t
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:4317")).collect()
    }

    #[test]
    fn an_empty_ring_owns_nothing() {
        assert_eq!(owner(&[], &trace(1)), None);
    }

    #[test]
    fn traces_spread_evenly_over_backends() {
        const N: u64 = 60_000;
        for n in [2usize, 3, 5, 8] {
            let seeds: Vec<u64> = names(n).iter().map(|s| seed(s)).collect();
            let mut counts = vec![0u64; n];
            for i in 0..N {
                counts[owner(&seeds, &trace(i)).unwrap()] += 1;
            }
            let fair = N as f64 / n as f64;
            for c in &counts {
                // Binomial sd at N = 60 000 is under 1% of the share; 5% is far outside chance.
                assert!(
                    (*c as f64 - fair).abs() < 0.05 * fair,
                    "{n} backends: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_traces_and_adding_one_takes_a_fair_share() {
        const N: u64 = 30_000;
        let all = names(4);
        let seeds: Vec<u64> = all.iter().map(|s| seed(s)).collect();
        let before: Vec<usize> = (0..N).map(|i| owner(&seeds, &trace(i)).unwrap()).collect();
        // Remove backend 2: the remaining keep their names, so map indices back.
        let kept = [0usize, 1, 3];
        let kept_seeds: Vec<u64> = kept.iter().map(|&k| seeds[k]).collect();
        let mut moved = 0u64;
        for i in 0..N {
            let after = kept[owner(&kept_seeds, &trace(i)).unwrap()];
            if before[i as usize] == 2 {
                moved += 1;
                assert_ne!(after, 2);
            } else {
                assert_eq!(
                    after, before[i as usize],
                    "a trace of a staying backend moved"
                );
            }
        }
        let share = moved as f64 / N as f64;
        assert!((share - 0.25).abs() < 0.02, "moved {share}");
        // Adding a fifth: only traces now owned by it moved, about 1/5.
        let mut five = seeds.clone();
        five.push(seed("10.0.0.9:4317"));
        let mut to_new = 0u64;
        for i in 0..N {
            let after = owner(&five, &trace(i)).unwrap();
            if after == 4 {
                to_new += 1;
            } else {
                assert_eq!(
                    after, before[i as usize],
                    "a trace moved between old backends"
                );
            }
        }
        let share = to_new as f64 / N as f64;
        assert!((share - 0.20).abs() < 0.02, "took {share}");
    }

    #[test]
    fn the_owner_does_not_depend_on_listing_order() {
        let a: Vec<u64> = names(3).iter().map(|s| seed(s)).collect();
        let b = vec![a[2], a[0], a[1]];
        for i in 0..1_000 {
            let oa = a[owner(&a, &trace(i)).unwrap()];
            let ob = b[owner(&b, &trace(i)).unwrap()];
            assert_eq!(oa, ob);
        }
    }
}
