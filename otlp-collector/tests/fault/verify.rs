//! The exactly-once check: every acknowledged trace read back through the
//! store API (`TraceReader::get_traces`, what the query API serves from) with
//! exactly the spans that were sent, each once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrotrace_collector::config::Config;
use ferrotrace_collector::storage::{connecting, MAX_TRACES_PER_READ};

use crate::ingest_util::{span_id, trace_id};

/// The trace number `ingest_util::trace_id` encoded in `id`.
fn trace_number(id: &[u8; 16]) -> u32 {
    u32::from_be_bytes([id[12], id[13], id[14], id[15]])
}

/// Waits (at most `within`) until every trace in `acked` is stored with its
/// `spans` spans, each exactly once and with the ids that were sent; returns
/// how long that took. Fails at once on a duplicate or a foreign span, and at
/// the deadline naming what is missing.
pub async fn exactly_once(cfg: &Config, acked: &[u32], spans: u32, within: Duration) -> Duration {
    let store = connecting::open(cfg).expect("open the collector's store");
    let start = Instant::now();
    let mut pending: BTreeSet<u32> = acked.iter().copied().collect();
    let mut partial: BTreeMap<u32, usize> = BTreeMap::new();
    loop {
        let batch: Vec<u32> = pending.iter().copied().collect();
        for chunk in batch.chunks(MAX_TRACES_PER_READ) {
            let ids: Vec<_> = chunk.iter().map(|t| trace_id(*t)).collect();
            let Ok(found) = store.get_traces(&ids, None).await else {
                // A database sink still connecting answers "unavailable".
                break;
            };
            for (id, got) in found {
                let t = trace_number(&id);
                let want: BTreeSet<[u8; 8]> = (0..spans).map(|i| span_id(t, i)).collect();
                let ids: Vec<[u8; 8]> = got.iter().map(|s| s.span_id).collect();
                let distinct: BTreeSet<[u8; 8]> = ids.iter().copied().collect();
                assert_eq!(
                    distinct.len(),
                    ids.len(),
                    "trace {t}: a span is stored more than once ({} rows, {} distinct)",
                    ids.len(),
                    distinct.len()
                );
                assert!(
                    distinct.is_subset(&want),
                    "trace {t}: spans stored that were never sent"
                );
                if distinct == want {
                    pending.remove(&t);
                    partial.remove(&t);
                } else {
                    partial.insert(t, ids.len());
                }
            }
        }
        if pending.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} of {} acknowledged traces not (wholly) stored after {within:?}; first: {:?}; \
             partially stored (trace, spans): {:?}",
            pending.len(),
            acked.len(),
            pending.iter().take(10).collect::<Vec<_>>(),
            partial.iter().take(10).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start times within this of the eviction cutoff count as before it (the
/// cutoff travels through `/metrics` as float seconds, to the microsecond).
const CUTOFF_MARGIN_NS: u64 = 1_000_000;

/// The collector's size-eviction cutoff (`ferrotrace_storage_evicted_before_seconds`)
/// in ns, or 0 when it did not answer.
pub async fn eviction_cutoff_ns(query: std::net::SocketAddr) -> u64 {
    let secs = super::metric_f64(
        query,
        "ferrotrace_storage_evicted_before_seconds{tier=\"hot\"}",
    )
    .await
    .unwrap_or(0.0);
    (secs * 1e9) as u64
}

/// The eviction cutoff once size and disk-full evictions have stopped:
/// waits (at most `within`) until neither `ferrotrace_storage_evictions_total`
/// nor the cutoff changed for `quiet`, and returns the cutoff in ns. A test
/// that kills the collector afterwards needs this as the floor of its next
/// check: evictions go on after the load stops while the disk is under its
/// free-space reserve, and a restarted collector's metric starts at 0.
pub async fn settled_eviction_cutoff_ns(
    query: std::net::SocketAddr,
    quiet: Duration,
    within: Duration,
) -> u64 {
    let start = Instant::now();
    let read = || async {
        let passes = super::metric(query, "ferrotrace_storage_evictions_total")
            .await
            .unwrap_or(0);
        (passes, eviction_cutoff_ns(query).await)
    };
    let mut last = read().await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = read().await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return last.1;
        }
        assert!(
            start.elapsed() < within,
            "evictions did not stop within {within:?} after the load stopped              (passes, cutoff ns): {last:?}"
        );
    }
}

/// What [`exactly_once_unless_evicted`] found.
#[derive(Debug, Default)]
pub struct Evicted {
    /// Traces wholly stored.
    pub whole: usize,
    /// Traces older than the cutoff that are gone or partly gone.
    pub evicted: usize,
    /// The eviction cutoff at the end (ns).
    pub cutoff_ns: u64,
}

/// [`exactly_once`] for a store with size-bounded retention: `acked` holds
/// each acknowledged trace with the earliest start time it was sent with.
/// A trace that started at or after the collector's eviction cutoff (read
/// from `query`'s `/metrics` on every round, and never below `floor_ns`)
/// must be stored wholly, exactly once; an older one may be gone or partly
/// gone (it was evicted, oldest first) but never duplicated or foreign.
pub async fn exactly_once_unless_evicted(
    cfg: &Config,
    query: std::net::SocketAddr,
    floor_ns: u64,
    acked: &[(u32, u64)],
    spans: u32,
    within: Duration,
) -> Evicted {
    let store = connecting::open(cfg).expect("open the collector's store");
    let start = Instant::now();
    let starts: BTreeMap<u32, u64> = acked.iter().copied().collect();
    let mut pending: BTreeSet<u32> = starts.keys().copied().collect();
    let mut out = Evicted {
        cutoff_ns: floor_ns,
        ..Evicted::default()
    };
    loop {
        out.cutoff_ns = out.cutoff_ns.max(eviction_cutoff_ns(query).await);
        let cutoff = out.cutoff_ns;
        let evictable = |t: &u32| starts[t] < cutoff.saturating_add(CUTOFF_MARGIN_NS);
        let batch: Vec<u32> = pending.iter().copied().collect();
        let mut found_any: BTreeSet<u32> = BTreeSet::new();
        for chunk in batch.chunks(MAX_TRACES_PER_READ) {
            let ids: Vec<_> = chunk.iter().map(|t| trace_id(*t)).collect();
            let Ok(found) = store.get_traces(&ids, None).await else {
                break;
            };
            for (id, got) in found {
                let t = trace_number(&id);
                found_any.insert(t);
                let want: BTreeSet<[u8; 8]> = (0..spans).map(|i| span_id(t, i)).collect();
                let ids: Vec<[u8; 8]> = got.iter().map(|s| s.span_id).collect();
                let distinct: BTreeSet<[u8; 8]> = ids.iter().copied().collect();
                assert_eq!(
                    distinct.len(),
                    ids.len(),
                    "trace {t}: a span is stored more than once"
                );
                assert!(
                    distinct.is_subset(&want),
                    "trace {t}: spans stored that were never sent"
                );
                if distinct == want {
                    pending.remove(&t);
                    out.whole += 1;
                }
            }
        }
        let older: Vec<u32> = pending.iter().copied().filter(|t| evictable(t)).collect();
        let newer = pending.len() - older.len();
        if newer == 0 {
            out.evicted = older.len();
            return out;
        }
        assert!(
            start.elapsed() < within,
            "{newer} of {} acknowledged traces that started after the eviction cutoff ({cutoff} ns) \
             not (wholly) stored after {within:?}; first (trace, start, partly stored): {:?}",
            acked.len(),
            pending
                .iter()
                .filter(|t| !evictable(t))
                .take(10)
                .map(|t| (t, starts[t], found_any.contains(t)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
