//! Size-bounded retention (issue 18) against the real collector binary: a
//! store with a small `retention.max_disk_bytes` is filled well past it
//! under load; the oldest traces go, oldest first, while new ones keep being
//! acknowledged, stored and served by the query API, nothing that started
//! after the evicted range is lost, and the store stays near its budget.
//! The full-disk case is the fault harness's disk scenario
//! (`fault_harness.rs`, docs/reliability.md).

mod fault;
mod ingest_util;
mod support;

use std::time::{Duration, Instant};

use fault::load::{acked_with_start, counts, Load, LoadShape};
use fault::proc::{Sink, Spec};
use fault::{get, metric, verify};

/// Spans per request (one trace per request).
const SPANS: u32 = 20;
/// The budget: a few seconds of this load in the debug build.
const BUDGET: u64 = 3 << 20;

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_past_its_size_budget_drops_the_oldest_traces_and_keeps_collecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(
        &dir.path().join("data"),
        dir.path(),
        Sink::Sqlite,
        &format!("[retention]\nmax_disk_bytes = {BUDGET}\nsize_check_interval_ms = 200\n"),
    );
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let q = spec.query;

    let load = Load::start(spec.otlp_http, spec.otlp_grpc, LoadShape::closed(4, SPANS));
    let started = Instant::now();
    // Load until the store has been cut back to its budget a few times.
    let mut evictions = 0;
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        evictions = metric(q, "ferrotrace_storage_evictions_total{reason=\"size\"}")
            .await
            .unwrap_or(0);
        if evictions >= 3 && started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let loaded = started.elapsed();
    let events = load.stop().await;
    let [ok, exhausted, unavailable, transport] = counts(&events);
    assert!(
        evictions >= 3,
        "only {evictions} size evictions in {loaded:?}"
    );
    assert_eq!(transport, 0, "the collector kept answering");
    assert_eq!(unavailable, 0, "no 503: the disk is not full");

    let acked = acked_with_start(&events);
    let found = verify::exactly_once_unless_evicted(
        &spec.store_config(),
        q,
        0,
        &acked,
        SPANS,
        Duration::from_secs(30),
    )
    .await;
    assert!(found.cutoff_ns > 0, "{found:?}");
    assert!(found.evicted > 0, "the oldest traces went: {found:?}");
    // The oldest acknowledged trace is gone; the newest is stored and the
    // query API serves it.
    let oldest = acked.iter().min_by_key(|(_, s)| *s).expect("acked");
    let newest = acked.iter().max_by_key(|(_, s)| *s).expect("acked");
    assert!(oldest.1 < found.cutoff_ns, "{oldest:?} {found:?}");
    let path = |t: u32| format!("/api/traces/{}", hex(&ingest_util::trace_id(t)));
    let (status, _, _) = get(q, &path(oldest.0), Duration::from_secs(5))
        .await
        .expect("query API answers");
    assert_eq!(status, 404, "the oldest trace was evicted");
    let (status, body, _) = get(q, &path(newest.0), Duration::from_secs(5))
        .await
        .expect("query API answers");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        json["data"][0]["spans"].as_array().map(Vec::len),
        Some(SPANS as usize),
        "the newest trace is served whole"
    );

    // After the next check the store is back within its budget, and its
    // files stay near it (freed pages are reused) instead of growing with
    // everything that was sent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let used = metric(q, "ferrotrace_storage_used_bytes{tier=\"hot\"}")
        .await
        .expect("used");
    let on_disk = metric(q, "ferrotrace_storage_bytes{tier=\"hot\"}")
        .await
        .expect("on disk");
    let max = metric(q, "ferrotrace_storage_max_bytes{tier=\"hot\"}")
        .await
        .expect("max");
    let oldest_ts = fault::metric_f64(
        q,
        "ferrotrace_storage_oldest_timestamp_seconds{tier=\"hot\"}",
    )
    .await
    .expect("oldest");
    let spans_evicted = metric(q, "ferrotrace_storage_evicted_spans_total{reason=\"size\"}")
        .await
        .expect("evicted spans");
    assert_eq!(max, BUDGET);
    assert!(used <= BUDGET, "{used} live bytes over the budget {BUDGET}");
    assert!(
        on_disk <= 3 * BUDGET,
        "{on_disk} bytes on disk for a {BUDGET}-byte budget"
    );
    assert!(
        (oldest_ts * 1e9) as u64 + 1_000_000 >= found.cutoff_ns,
        "oldest stored {oldest_ts} s, cutoff {} ns",
        found.cutoff_ns
    );
    let sent_bytes = ok as u64 * u64::from(SPANS);
    eprintln!(
        "size budget {BUDGET} B: {ok} requests ({sent_bytes} spans) acknowledged in {loaded:?} \
         ({:.0} spans/s), {exhausted} 429; {evictions} size evictions deleted {spans_evicted} \
         spans; {} traces stored whole, {} older than the cutoff evicted; store {used} B used, \
         {on_disk} B on disk",
        sent_bytes as f64 / loaded.as_secs_f64(),
        found.whole,
        found.evicted
    );
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success());
}

/// The case a free-space reserve alone failed (docs/reliability.md, "Disk
/// full under load"): the stored data itself fills a small disk. With a
/// budget larger than the disk, only the full-disk rule bounds the store:
/// below the reserve (a quarter of the 32 MiB disk) the WAL refuses with 503
/// and the store evicts its oldest data and gives the space back, so the
/// collector keeps acknowledging without anyone freeing space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_data_filling_the_disk_evicts_the_oldest_and_keeps_collecting() {
    let Some(fs) = support::smallfs::SmallFs::mount(32) else {
        return;
    };
    let conf = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(
        &fs.path().join("data"),
        conf.path(),
        Sink::Sqlite,
        "[wal]\nsegment_bytes = 4194304\n[retention]\nmax_disk_bytes = 1073741824\n\
         size_check_interval_ms = 200\n",
    );
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let q = spec.query;
    let load = Load::start(spec.otlp_http, spec.otlp_grpc, LoadShape::closed(4, SPANS));
    let started = Instant::now();
    let mut evicted_at = None;
    while started.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = metric(
            q,
            "ferrotrace_storage_evictions_total{reason=\"disk_full\"}",
        )
        .await
        .unwrap_or(0);
        if n > 0 && evicted_at.is_none() {
            evicted_at = Some((started.elapsed(), load.acked()));
        }
        // Keep loading a while after the first eviction: collection goes on.
        if let Some((at, _)) = evicted_at {
            if started.elapsed() > at + Duration::from_secs(3) {
                break;
            }
        }
    }
    let Some((at, acked_then)) = evicted_at else {
        let m = |s: &'static str| metric(q, s);
        panic!(
            "no eviction for the full disk within 40 s: {} bytes free, store {:?} B, WAL {:?} B, \
             sink wrote {:?} spans, {} acknowledged",
            fs.available(),
            m("ferrotrace_storage_bytes{tier=\"hot\"}").await,
            m("ferrotrace_storage_bytes{tier=\"wal\"}").await,
            m("ferrotrace_sink_spans_written_total").await,
            load.acked()
        );
    };
    let acked_after = load.acked() - acked_then;
    let events = load.stop().await;
    let [ok, exhausted, unavailable, transport] = counts(&events);
    assert_eq!(transport, 0, "the collector kept answering");
    assert!(
        acked_after > 0,
        "requests are acknowledged after the store evicted for the full disk"
    );
    let acked = acked_with_start(&events);
    let found = verify::exactly_once_unless_evicted(
        &spec.store_config(),
        q,
        0,
        &acked,
        SPANS,
        Duration::from_secs(30),
    )
    .await;
    assert!(found.evicted > 0 && found.whole > 0, "{found:?}");
    let free = fs.available();
    // Read after the check: the sink drained the WAL meanwhile, and the
    // store went on evicting.
    let disk_full_spans = metric(
        q,
        "ferrotrace_storage_evicted_spans_total{reason=\"disk_full\"}",
    )
    .await
    .unwrap_or(0);
    eprintln!(
        "stored data filled a 32 MiB {}: first disk-full eviction after {at:?}; {acked_after} \
         requests acknowledged in the 3 s after it; overall {ok} acknowledged, {exhausted} 429, \
         {unavailable} 503; {disk_full_spans} spans evicted for the full disk; {} traces stored \
         whole, {} older than the cutoff evicted; {free} bytes free at the end",
        fs.kind, found.whole, found.evicted
    );
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success());
}
