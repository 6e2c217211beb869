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
