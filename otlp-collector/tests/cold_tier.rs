//! The cold tier (issue 18): spans older than `cold.hot_days` move from the
//! hot store (SQLite, and PostgreSQL and ClickHouse servers started by the
//! tests) into Parquet files, in a local directory and in a real
//! S3-compatible server (moto, started by the test), and reads fall
//! through: trace by id (merged across tiers, one copy per span id), search
//! with cursors across both tiers, the collector's native and Jaeger APIs.
//! Lookups by id open only the files whose trace-id index may hold the id.

mod ingest_util;
mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrotrace_collector::model::{
    hex, now_ns, AttrValue, KeyValue, Span, SpanKind, StatusCode, TraceId,
};
use ferrotrace_collector::rollup::{RollupBatch, RollupOrigin};
use ferrotrace_collector::storage::clickhouse::{ClickHouseOptions, ClickHouseStore};
use ferrotrace_collector::storage::cold::tiering::run_once;
use ferrotrace_collector::storage::cold::{ColdConfig, ColdPolicy, ColdStore, TieredStore};
use ferrotrace_collector::storage::postgres::PostgresStore;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::{
    AnalyticsReader, AttrFilter, DependencyEdge, ExportCursor, ExportPage, LatencyPoint,
    LatencyQuery, Operation, Retention, RetentionReport, SamplingCounts, SearchPage, SpanStore,
    SpanWriter, StorageError, StorageResult, TimeRange, TraceQuery, TraceReader, TraceSpans,
};

const MS: u64 = 1_000_000;
const HOUR: u64 = 3_600_000 * MS;
const DAY: u64 = 24 * HOUR;

/// A trace id that looks random (so that the bloom filters, not the
/// row-group min/max, are what keeps a lookup to one file).
fn tid(t: u32) -> TraceId {
    let mut id = [0u8; 16];
    let a = u64::from(t).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
    let b = a.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    id[..8].copy_from_slice(&a.to_be_bytes());
    id[8..].copy_from_slice(&b.to_be_bytes());
    id
}

/// Trace `t`: a frontend root and `n - 1` backend children starting at
/// `start`; error traces (t.is_multiple_of(5)) have a failing child and status 500.
fn trace(t: u32, start: u64, n: u32) -> Vec<Span> {
    let error = t.is_multiple_of(5);
    (0..n)
        .map(|i| {
            let mut sid = [0u8; 8];
            sid[..4].copy_from_slice(&t.to_be_bytes());
            sid[4..].copy_from_slice(&(i + 1).to_be_bytes());
            let root = i == 0;
            Span {
                trace_id: tid(t),
                span_id: sid,
                parent_span_id: (!root).then(|| {
                    let mut p = [0u8; 8];
                    p[..4].copy_from_slice(&t.to_be_bytes());
                    p[4..].copy_from_slice(&1u32.to_be_bytes());
                    p
                }),
                trace_state: String::new(),
                flags: 1,
                name: if root {
                    "GET /orders".into()
                } else {
                    compact_str::format_compact!("query {i}")
                },
                kind: if root {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                },
                start_ns: start + u64::from(i) * MS,
                end_ns: start + u64::from(i) * MS + if root { 100 * MS } else { 5 * MS },
                attributes: vec![
                    KeyValue::new(
                        "http.status_code",
                        AttrValue::Int(if error && root { 500 } else { 200 }),
                    ),
                    KeyValue::new("t", AttrValue::Int(i64::from(t))),
                ],
                dropped_attributes_count: 0,
                events: Vec::new(),
                dropped_events_count: 0,
                links: Vec::new(),
                dropped_links_count: 0,
                status_code: if error && i == n - 1 {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                status_message: String::new(),
                service_name: if root {
                    "frontend".into()
                } else {
                    "backend".into()
                },
                resource_attributes: vec![KeyValue::new(
                    "service.name",
                    AttrValue::Str(if root { "frontend" } else { "backend" }.into()),
                )]
                .into(),
                scope_name: "test".into(),
                scope_version: "1".into(),
            }
        })
        .collect()
}

/// What a test writes: 40 old traces over 20 hours starting 10 days ago
/// (2 per hour), 5 recent ones, and one with a span on each side of the
/// hot cutoff (its old span 8 days ago, so also before a cutoff rounded
/// down to a UTC day, as PostgreSQL and ClickHouse move whole days).
struct Data {
    now: u64,
    old: Vec<(u32, Vec<Span>)>,
    recent: Vec<u32>,
    straddler: u32,
}

const STRADDLER: u32 = 1000;

fn data() -> Data {
    let now = now_ns();
    // Ten minutes past a UTC hour, so that each hour-file holds exactly two
    // traces (a base in an hour's last minute would split the pairs).
    let base = (now - 10 * DAY) / HOUR * HOUR + 10 * 60_000 * MS;
    let old = (0..40u32)
        .map(|t| {
            (
                t,
                trace(
                    t,
                    base + u64::from(t / 2) * HOUR + u64::from(t % 2) * 60_000 * MS,
                    5,
                ),
            )
        })
        .collect();
    Data {
        now,
        old,
        recent: (100..105).collect(),
        straddler: STRADDLER,
    }
}

async fn fill(hot: &dyn SpanStore, d: &Data) {
    for (_, spans) in &d.old {
        hot.write_spans(spans).await.expect("write old");
    }
    for &t in &d.recent {
        hot.write_spans(&trace(t, d.now - HOUR, 3))
            .await
            .expect("write recent");
    }
    let mut s = trace(d.straddler, d.now - 8 * DAY - HOUR, 2);
    s[1].start_ns = d.now - HOUR;
    s[1].end_ns = d.now - HOUR + MS;
    hot.write_spans(&s).await.expect("write straddler");
}

fn cold_config(dir: Option<&std::path::Path>) -> ColdConfig {
    ColdConfig {
        dir: dir.map(|d| d.to_path_buf()),
        hot_days: 7,
        cold_days: 30,
        max_spans_per_file: 1_000,
        ..ColdConfig::default()
    }
}

fn query(range: TimeRange, limit: usize) -> TraceQuery {
    TraceQuery {
        service: None,
        operation: None,
        attributes: Vec::new(),
        min_duration_ns: None,
        max_duration_ns: None,
        errors_only: false,
        range,
        limit,
        cursor: None,
    }
}

/// Every page of `q`, following cursors; the trace ids in order.
async fn all_pages(store: &dyn TraceReader, mut q: TraceQuery) -> Vec<(TraceId, u64)> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = store.search(&q).await.expect("search");
        assert!(page.traces.len() <= q.limit);
        out.extend(page.traces.iter().map(|t| (t.trace_id, t.cold_spans)));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
    panic!("more than 100 pages");
}

/// The whole behaviour against one location: tiering, reads by id with the
/// files-opened count, merging, search and pagination across tiers, policy
/// bookkeeping, limits and cold retention.
async fn exercise(hot: Arc<dyn SpanStore>, cold_cfg: ColdConfig) {
    let d = data();
    fill(hot.as_ref(), &d).await;
    let cold = Arc::new(ColdStore::open(&cold_cfg).await.expect("open cold"));
    assert!(cold.files().is_empty(), "a fresh location is empty");
    let hot_dyn: Arc<dyn SpanStore> = hot.clone();
    let report = run_once(hot_dyn.as_ref(), &cold, d.now)
        .await
        .expect("tiering");
    // 40 old traces x 5 spans, and the straddler's old span.
    assert_eq!(report.spans_aged, 201, "{report:?}");
    assert_eq!(report.spans_written, 201, "{report:?}");
    assert_eq!(report.hot_deleted, 201, "{report:?}");
    // One file per hour: 20 hours of old traces and the straddler's hour.
    assert_eq!(report.files_written, 21, "{report:?}");
    assert_eq!(cold.files().len(), 21);
    assert_eq!(cold.stats.spans.load(Relaxed), 201);
    assert!(cold.stats.bytes.load(Relaxed) > 0);
    assert_eq!(cold.stats.oldest_ns.load(Relaxed), d.old[0].1[0].start_ns);

    let tiered = TieredStore::new(hot_dyn.clone(), cold.clone());
    // Reads by id: the hot store has nothing old left, the tiered store
    // returns each old trace exactly as written, opening one file.
    for (t, _) in &d.old {
        assert!(hot.get_trace(tid(*t), None).await.expect("hot").is_empty());
    }
    let mut opened = Vec::new();
    for (t, spans) in &d.old {
        let before = cold.stats.files_opened.load(Relaxed);
        let got = tiered.get_trace_tiered(tid(*t), None).await.expect("get");
        opened.push(cold.stats.files_opened.load(Relaxed) - before);
        assert_eq!(&got.spans, spans, "trace {t} reads back exactly");
        assert_eq!(got.cold_spans, 5);
    }
    let total: u64 = opened.iter().sum();
    assert!(opened.iter().all(|&n| n >= 1), "{opened:?}");
    // 21 files, 1% false positives per filter: about 0.2 extra files per lookup at most.
    assert!(total <= 40 + 12, "files opened per lookup: {opened:?}");
    assert_eq!(
        cold.stats.index_loads.load(Relaxed),
        21,
        "each index fetched once"
    );
    let before = cold.stats.files_opened.load(Relaxed);
    assert!(tiered
        .get_trace(tid(9999), None)
        .await
        .expect("get")
        .is_empty());
    assert!(cold.stats.files_opened.load(Relaxed) - before <= 2);
    // A range narrows the files looked at.
    let first_hour = TimeRange {
        start_ns: d.old[0].1[0].start_ns,
        end_ns: d.old[0].1[0].start_ns + HOUR,
    };
    assert_eq!(
        tiered
            .get_trace(tid(0), Some(first_hour))
            .await
            .expect("get")
            .len(),
        5
    );
    assert!(tiered
        .get_trace(tid(39), Some(first_hour))
        .await
        .expect("get")
        .is_empty());
    // Batch reads, in the order asked, unknown ids left out.
    let batch = tiered
        .get_traces(&[tid(7), tid(9999), tid(100), tid(7), tid(3)], None)
        .await
        .expect("batch");
    let ids: Vec<TraceId> = batch.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![tid(7), tid(100), tid(3)]);

    // The straddler: one span in each tier, merged; a span in both tiers
    // (a run that crashed before its hot delete) is returned once.
    let st = tiered
        .get_trace_tiered(tid(d.straddler), None)
        .await
        .expect("get");
    assert_eq!(st.spans.len(), 2);
    assert_eq!(st.cold_spans, 1);
    hot.write_spans(&d.old[3].1[..2]).await.expect("rewrite");
    let again = tiered.get_trace_tiered(tid(3), None).await.expect("get");
    assert_eq!(again.spans, d.old[3].1, "one copy per span id");
    assert_eq!(again.cold_spans, 5);

    // Search over the cold day: filters as the hot store applies them.
    let old_range = TimeRange {
        start_ns: d.now - 11 * DAY,
        end_ns: d.now - 9 * DAY,
    };
    let mut q = query(old_range, 100);
    q.service = Some("backend".into());
    q.errors_only = true;
    let page = tiered.search(&q).await.expect("search");
    let mut got: Vec<TraceId> = page.traces.iter().map(|t| t.trace_id).collect();
    got.sort();
    let mut want: Vec<TraceId> = (0..40u32)
        .filter(|t| t.is_multiple_of(5))
        .map(tid)
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert!(page.next_cursor.is_none());
    let s = page
        .traces
        .iter()
        .find(|t| t.trace_id == tid(0))
        .expect("t0");
    assert_eq!((s.span_count, s.error_count, s.cold_spans), (5, 1, 5));
    assert_eq!(s.root_service, "frontend");
    assert_eq!(
        s.services,
        vec!["backend".to_string(), "frontend".to_string()]
    );
    let mut q = query(old_range, 100);
    q.attributes = vec![AttrFilter::text("http.status_code", "500")];
    assert_eq!(tiered.search(&q).await.expect("search").traces.len(), 8);
    let mut q = query(old_range, 100);
    q.min_duration_ns = Some(50 * MS);
    q.operation = Some("GET /orders".into());
    assert_eq!(tiered.search(&q).await.expect("search").traces.len(), 40);
    q.min_duration_ns = Some(101 * MS);
    assert!(tiered.search(&q).await.expect("search").traces.is_empty());

    // Pagination: cold only, then across both tiers; no trace twice, newest first.
    let pages = all_pages(&tiered, query(old_range, 7)).await;
    assert_eq!(pages.len(), 40);
    assert_eq!(pages.iter().map(|p| p.0).collect::<HashSet<_>>().len(), 40);
    assert_eq!(pages[0].0, tid(39), "newest first");
    assert_eq!(pages[39].0, tid(0));
    let everything = TimeRange {
        start_ns: d.now - 11 * DAY,
        end_ns: d.now,
    };
    let pages = all_pages(&tiered, query(everything, 10)).await;
    let distinct: HashSet<TraceId> = pages.iter().map(|p| p.0).collect();
    assert_eq!(distinct.len(), pages.len(), "no trace twice: {pages:?}");
    assert_eq!(distinct.len(), 40 + 5 + 1);
    assert!(
        pages
            .iter()
            .take(6)
            .all(|p| p.1 == 0 || p.0 == tid(d.straddler)),
        "hot first"
    );
    assert!(pages.iter().skip(6).all(|p| p.1 == 5), "then cold");

    // Services and operations of a cold range: from the files' footer
    // summaries when the range covers them whole (no file opened), from
    // their columns, filtered by start, when it cuts them.
    // (The hot store holds two old spans again, rewritten above: trace 3's
    // root and its "query 1" child.)
    let hot_ops = hot.operations("backend", old_range).await.expect("hot");
    assert_eq!(hot_ops.len(), 1, "{hot_ops:?}");
    let opened = cold.stats.files_opened.load(Relaxed);
    assert_eq!(
        tiered.services(old_range).await.expect("services"),
        vec!["backend".to_string(), "frontend".to_string()]
    );
    let ops = tiered
        .operations("backend", old_range)
        .await
        .expect("operations");
    let want: Vec<Operation> = (1..5)
        .map(|i| Operation {
            name: format!("query {i}"),
            kind: SpanKind::Client,
        })
        .collect();
    assert_eq!(ops, want);
    assert_eq!(
        cold.stats.files_opened.load(Relaxed),
        opened,
        "footers only"
    );
    // Analytics over a cold range: the rollups went with the hot spans, so
    // the range is refused with the first covered instant, not answered
    // from part of the data; a range the hot store holds is answered.
    for r in [
        tiered.dependencies(old_range).await.map(|_| ()),
        tiered
            .latency(&LatencyQuery {
                service: "backend".into(),
                operation: None,
                range: old_range,
                step_ns: None,
                kinds: Vec::new(),
            })
            .await
            .map(|_| ()),
        tiered
            .exact_percentiles("backend", None, &[], old_range, &[0.5])
            .await
            .map(|_| ()),
    ] {
        match r {
            Err(StorageError::InvalidQuery(m)) => {
                assert!(
                    m.contains("not available before") && m.contains("cold.hot_days"),
                    "{m}"
                )
            }
            other => panic!("expected a clear refusal, got {other:?}"),
        }
    }
    let recent = TimeRange {
        start_ns: d.now - 2 * DAY,
        end_ns: d.now,
    };
    tiered.dependencies(recent).await.expect("hot range");
    // The first 2 ms of trace 0: its root and first child only.
    let t0 = d.old[0].1[0].start_ns;
    let cut = TimeRange {
        start_ns: t0,
        end_ns: t0 + 2 * MS,
    };
    let ops = tiered.operations("backend", cut).await.expect("operations");
    assert_eq!(ops, want[..1].to_vec());
    let ops = tiered
        .operations("frontend", cut)
        .await
        .expect("operations");
    assert_eq!(
        ops,
        vec![Operation {
            name: "GET /orders".into(),
            kind: SpanKind::Server
        }]
    );
    assert_eq!(
        cold.stats.files_opened.load(Relaxed),
        opened + 2,
        "a cut file is read"
    );
    // Recent ranges are the hot store's alone.
    let recent = TimeRange {
        start_ns: d.now - 2 * HOUR,
        end_ns: d.now,
    };
    assert_eq!(
        tiered.services(recent).await.expect("services"),
        hot.services(recent).await.expect("services")
    );

    // Early stop: files are read newest first and the search stops once its
    // page is settled. 2 traces per hour-file: a page of 3 reads the two
    // newest of the 20 files in the window, and says there is more.
    let (opened, skipped) = (
        cold.stats.files_opened.load(Relaxed),
        cold.stats.search_files_skipped.load(Relaxed),
    );
    let (keys, more) = cold
        .search(&query(old_range, 3), None, 3)
        .await
        .expect("search");
    let ids: Vec<TraceId> = keys.iter().map(|k| k.0).collect();
    assert_eq!(ids, vec![tid(39), tid(38), tid(37)]);
    assert!(more);
    assert_eq!(cold.stats.files_opened.load(Relaxed) - opened, 2);
    assert_eq!(cold.stats.search_files_skipped.load(Relaxed) - skipped, 18);
    // The next page re-reads the newer files (to leave out what page one
    // listed) and stops again: 4 files, not 20.
    let opened = cold.stats.files_opened.load(Relaxed);
    let (keys, more) = cold
        .search(&query(old_range, 3), Some((keys[2].1, keys[2].0)), 3)
        .await
        .expect("search");
    let ids: Vec<TraceId> = keys.iter().map(|k| k.0).collect();
    assert_eq!(ids, vec![tid(36), tid(35), tid(34)]);
    assert!(more);
    assert_eq!(cold.stats.files_opened.load(Relaxed) - opened, 4);

    // Limits: a search over more files than allowed, a lookup over the byte cap.
    let tight = ColdStore::open(&ColdConfig {
        max_files_per_query: 3,
        ..cold_cfg.clone()
    })
    .await
    .expect("open");
    match tight.search(&query(old_range, 10), None, 10).await {
        Err(StorageError::InvalidQuery(m)) => {
            assert!(m.contains("cold.max_files_per_query"), "{m}")
        }
        other => panic!("expected a limit error, got {other:?}"),
    }
    assert_eq!(tight.stats.limit_errors.load(Relaxed), 1);
    let tiny = ColdStore::open(&ColdConfig {
        max_bytes_per_query: 100,
        ..cold_cfg.clone()
    })
    .await
    .expect("open");
    match tiny.spans_of(&[tid(1)], None).await {
        Err(StorageError::InvalidQuery(m)) => {
            assert!(m.contains("cold.max_bytes_per_query"), "{m}")
        }
        other => panic!("expected a limit error, got {other:?}"),
    }

    // A second process sees the same files (the catalog is the listing).
    let other = ColdStore::open(&cold_cfg).await.expect("reopen");
    assert_eq!(other.files().len(), 21);

    // Cold retention: files whose spans all started before the cutoff go.
    let cutoff = d.old[0].1[0].start_ns + 10 * HOUR;
    let (files, spans) = cold.evict_before(cutoff).await.expect("evict");
    assert_eq!((files, spans), (10, 100));
    assert_eq!(cold.files().len(), 11);
    assert!(tiered
        .get_trace(tid(0), None)
        .await
        .expect("get")
        .is_empty());
    assert_eq!(tiered.get_trace(tid(25), None).await.expect("get").len(), 5);
    other.refresh().await.expect("refresh");
    assert_eq!(other.files().len(), 11);
    // The tier's families as /metrics shows them once it is registered.
    let metrics = ferrotrace_collector::metrics::Metrics::default();
    metrics.register(Box::new(cold.stats.clone()));
    let text = metrics.render();
    for m in [
        "ferrotrace_cold_files 11",
        "ferrotrace_cold_evicted_files_total 10",
        "ferrotrace_cold_files_written_total 21",
        "ferrotrace_cold_lookups_total",
        "ferrotrace_cold_files_opened_total",
    ] {
        assert!(text.contains(m), "{m} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_tier_serves_old_traces_by_id_and_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hot = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
    exercise(hot, cold_config(Some(&dir.path().join("cold")))).await;
    // Only Parquet files under spans/<day>/<hour>/.
    let mut n = 0;
    for day in std::fs::read_dir(dir.path().join("cold/spans")).expect("spans dir") {
        for hour in std::fs::read_dir(day.expect("day").path()).expect("hours") {
            for f in std::fs::read_dir(hour.expect("hour").path()).expect("files") {
                let p = f.expect("file").path();
                assert_eq!(p.extension().and_then(|e| e.to_str()), Some("parquet"));
                n += 1;
            }
        }
    }
    assert_eq!(n, 11);
    // A damaged file under a valid name fails the reads that touch it, with
    // an error naming the cold tier; nothing panics.
    let bad = dir.path().join("cold/spans/2020-01-01/00");
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(
        bad.join("00000000000000000001-00000000000000000002-1-0000000000000001.parquet"),
        b"PAR1 this is not a parquet file \x05\x00\x00\x00PAR1",
    )
    .expect("write");
    let cold = ColdStore::open(&cold_config(Some(&dir.path().join("cold"))))
        .await
        .expect("open");
    assert_eq!(cold.files().len(), 12);
    let err = cold
        .spans_of(&[tid(1)], None)
        .await
        .expect_err("corrupt file");
    assert!(err.to_string().contains("cold tier"), "{err}");
    let err = cold
        .search(
            &query(
                TimeRange {
                    start_ns: 0,
                    end_ns: 10,
                },
                10,
            ),
            None,
            10,
        )
        .await
        .expect_err("corrupt file");
    assert!(err.to_string().contains("cold tier"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_keeps_only_error_traces_or_a_consistent_sample() {
    for policy in [ColdPolicy::Errors, ColdPolicy::Sampled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let hot = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
        policy_run(hot, policy, &dir.path().join("cold")).await;
    }
}

/// One tiering pass with `policy` (`errors` or `sampled` at 0.5) over a
/// fresh hot store: whole traces are kept or not, as the policy says.
async fn policy_run(hot: Arc<dyn SpanStore>, policy: ColdPolicy, cold_dir: &std::path::Path) {
    let expect: Vec<u32> = match policy {
        ColdPolicy::Errors => (0..40u32).filter(|t| t.is_multiple_of(5)).collect(),
        ColdPolicy::Sampled => (0..40)
            .filter(|t| ferrotrace_collector::storage::cold::policy::sampled(&tid(*t), 0.5))
            .collect(),
        other => panic!("no expectation for {other:?}"),
    };
    let d = data();
    fill(hot.as_ref(), &d).await;
    let cfg = ColdConfig {
        policy,
        sample_fraction: 0.5,
        ..cold_config(Some(cold_dir))
    };
    let cold = Arc::new(ColdStore::open(&cfg).await.expect("open"));
    let r = run_once(hot.as_ref(), &cold, d.now).await.expect("tier");
    assert_eq!(r.spans_aged, 201);
    let tiered = TieredStore::new(hot, cold.clone());
    let mut kept = Vec::new();
    for t in 0..40 {
        let s = tiered.get_trace(tid(t), None).await.expect("get");
        assert!(
            s.is_empty() || s.len() == 5,
            "whole traces: {t} {}",
            s.len()
        );
        if !s.is_empty() {
            kept.push(t);
        }
    }
    assert_eq!(kept, expect, "{policy:?}");
    assert!(!kept.is_empty() && kept.len() < 40);
    let not_kept = cold.stats.spans_not_kept.load(Relaxed);
    assert_eq!(r.spans_written + not_kept, 201, "{policy:?}");
}

/// moto's S3 server on a free loopback port, stopped on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let ok = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::missing("moto (python3 -m pip install 'moto[server]')");
        return None;
    }
    let port = support::free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn moto");
    let m = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(m)
}

/// Creates `bucket` in moto (which accepts an unsigned request) and sets
/// the credentials in the standard variables, as in production; returns
/// the endpoint.
async fn moto_bucket(moto: &Moto, bucket: &str) -> String {
    let resp = ingest_util::request(
        "PUT",
        format!("127.0.0.1:{}", moto.port).parse().expect("addr"),
        &format!("/{bucket}"),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(resp.status, 200, "create bucket");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    format!("http://127.0.0.1:{}", moto.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tier_in_a_real_moto_server_serves_old_traces() {
    let Some(moto) = start_moto() else {
        return;
    };
    let endpoint = moto_bucket(&moto, "ferrotrace-cold").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hot = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
    let cfg = ColdConfig {
        bucket: Some("ferrotrace-cold".into()),
        endpoint: Some(endpoint),
        allow_http: true,
        prefix: "collector-a".into(),
        ..cold_config(None)
    };
    cfg.validate().expect("valid");
    exercise(hot, cfg.clone()).await;
    // A wrong bucket is a clear error at open.
    let err = ColdStore::open(&ColdConfig {
        bucket: Some("no-such-bucket".into()),
        ..cfg
    })
    .await
    .err()
    .expect("missing bucket");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
}

/// A SQLite hot store that, once the tiering pass's copy has read its first
/// page, receives a late span (already older than `hot_days`) through the
/// tiered store: the moment the pass's hot delete would remove it uncopied.
struct LateArrival {
    inner: Arc<dyn SpanStore>,
    tiered: std::sync::OnceLock<Arc<TieredStore>>,
    late: parking_lot::Mutex<Option<Vec<Span>>>,
}

#[async_trait::async_trait]
impl SpanWriter for LateArrival {
    fn name(&self) -> &'static str {
        "late-arrival"
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        self.inner.write_spans(spans).await
    }
    async fn write_rollups(&self, r: &RollupBatch) -> StorageResult<()> {
        self.inner.write_rollups(r).await
    }
    async fn rollup_origins(&self, i: u64, s: &[u64]) -> StorageResult<Vec<RollupOrigin>> {
        self.inner.rollup_origins(i, s).await
    }
    async fn prune_rollup_origins(&self, i: u64, below: u64) -> StorageResult<u64> {
        self.inner.prune_rollup_origins(i, below).await
    }
}

#[async_trait::async_trait]
impl TraceReader for LateArrival {
    async fn get_trace(&self, t: TraceId, r: Option<TimeRange>) -> StorageResult<Vec<Span>> {
        self.inner.get_trace(t, r).await
    }
    async fn get_traces(
        &self,
        ts: &[TraceId],
        r: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        self.inner.get_traces(ts, r).await
    }
    async fn search(&self, q: &TraceQuery) -> StorageResult<SearchPage> {
        self.inner.search(q).await
    }
    async fn services(&self, r: TimeRange) -> StorageResult<Vec<String>> {
        self.inner.services(r).await
    }
    async fn operations(&self, s: &str, r: TimeRange) -> StorageResult<Vec<Operation>> {
        self.inner.operations(s, r).await
    }
}

#[async_trait::async_trait]
impl AnalyticsReader for LateArrival {
    async fn dependencies(&self, r: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.inner.dependencies(r).await
    }
    async fn latency(&self, q: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        self.inner.latency(q).await
    }
    async fn exact_percentiles(
        &self,
        s: &str,
        o: Option<&str>,
        k: &[SpanKind],
        r: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        self.inner.exact_percentiles(s, o, k, r, qs).await
    }
}

#[async_trait::async_trait]
impl Retention for LateArrival {
    async fn apply_retention(&self, c: u64) -> StorageResult<RetentionReport> {
        self.inner.apply_retention(c).await
    }
    fn tier_cutoff(&self, c: u64) -> u64 {
        self.inner.tier_cutoff(c)
    }
    async fn export_before(
        &self,
        cutoff_ns: u64,
        after: Option<ExportCursor>,
        limit: usize,
    ) -> StorageResult<ExportPage> {
        let page = self.inner.export_before(cutoff_ns, after, limit).await?;
        let late = self.late.lock().take();
        if let Some(late) = late {
            let tiered = self.tiered.get().expect("tiered store set").clone();
            tiered.write_spans(&late).await.expect("late write");
        }
        Ok(page)
    }
}

impl SamplingCounts for LateArrival {}

/// A span that arrives already older than `hot_days` while a tiering pass
/// runs (after its copy read past the span's place, before its hot delete)
/// goes to the cold tier, not into the hot store to be deleted uncopied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_span_during_a_tiering_pass_goes_cold_not_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
    late_span(inner, &dir.path().join("cold")).await;
}

/// The late-span scenario against any hot store, cold files in `cold_dir`.
async fn late_span(inner: Arc<dyn SpanStore>, cold_dir: &std::path::Path) {
    let d = data();
    fill(inner.as_ref(), &d).await;
    // Older than every stored span (the copy reads oldest first, by start
    // or by day, so it has passed this span's place by the time it
    // arrives), and one fresh span in the same batch, which stays hot.
    let mut late = trace(7_000, d.now - 12 * DAY, 2);
    late[1].start_ns = d.now - HOUR;
    late[1].end_ns = d.now - HOUR + MS;
    let hooked = Arc::new(LateArrival {
        inner: inner.clone(),
        tiered: std::sync::OnceLock::new(),
        late: parking_lot::Mutex::new(Some(late.clone())),
    });
    let hot: Arc<dyn SpanStore> = hooked.clone();
    let cold = Arc::new(
        ColdStore::open(&cold_config(Some(cold_dir)))
            .await
            .expect("open cold"),
    );
    let tiered = Arc::new(TieredStore::new(hot.clone(), cold.clone()));
    assert!(hooked.tiered.set(tiered.clone()).is_ok());
    let report = run_once(hot.as_ref(), &cold, d.now).await.expect("tiering");
    assert!(hooked.late.lock().is_none(), "the late batch arrived");
    assert_eq!(
        report.spans_aged, 201,
        "the copy did not see it: {report:?}"
    );
    let got = tiered
        .get_trace_tiered(tid(7_000), None)
        .await
        .expect("get");
    assert_eq!(
        got.spans, late,
        "both spans, the late one from the cold tier"
    );
    assert_eq!(got.cold_spans, 1);
    assert_eq!(cold.stats.late_spans.load(Relaxed), 1);
    assert_eq!(
        inner.get_trace(tid(7_000), None).await.expect("hot"),
        vec![late[1].clone()],
        "only the fresh span went to the hot store"
    );
    // After the pass the fence is down: an old span goes to the hot store
    // (the next pass moves it).
    let after = trace(7_001, d.now - 12 * DAY, 1);
    tiered.write_spans(&after).await.expect("write");
    assert_eq!(inner.get_trace(tid(7_001), None).await.expect("hot"), after);
    assert_eq!(cold.stats.late_spans.load(Relaxed), 1);
}

/// Size-bounded eviction with a cold tier moves the oldest spans to the
/// cold tier before deleting them from the hot store; when the copy cannot
/// be made, it still deletes them ("drop oldest, keep collecting") and
/// counts the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_eviction_moves_the_oldest_spans_cold_and_still_drops_when_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hot = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
    let d = data();
    fill(hot.as_ref(), &d).await;
    let cold_dir = dir.path().join("cold");
    let cold = Arc::new(
        ColdStore::open(&cold_config(Some(&cold_dir)))
            .await
            .expect("open cold"),
    );
    let hot_dyn: Arc<dyn SpanStore> = hot.clone();
    let tiered = TieredStore::new(hot_dyn, cold.clone());
    let usage = hot.disk_usage().await.expect("usage").expect("some");
    let r = tiered
        .evict_oldest(usage.live_bytes / 4, false)
        .await
        .expect("evict");
    assert!(r.spans_deleted > 0, "{r:?}");
    assert_eq!(
        cold.stats.spans_moved_by_eviction.load(Relaxed),
        r.spans_deleted,
        "every evicted span was copied first"
    );
    assert_eq!(cold.stats.eviction_copy_failures.load(Relaxed), 0);
    let moved: Vec<&(u32, Vec<Span>)> = d
        .old
        .iter()
        .filter(|(_, s)| s[0].start_ns < r.cutoff_ns)
        .collect();
    assert!(!moved.is_empty());
    for (t, spans) in &moved {
        let left = hot.get_trace(tid(*t), None).await.expect("hot");
        assert!(left.iter().all(|s| s.start_ns >= r.cutoff_ns), "trace {t}");
        let got = tiered.get_trace_tiered(tid(*t), None).await.expect("get");
        assert_eq!(&got.spans, spans, "trace {t} whole, from both tiers");
        assert!(got.cold_spans > 0);
    }
    // The cold location breaks (a file where its directory was): the next
    // eviction deletes anyway and counts the failed copy.
    std::fs::remove_dir_all(&cold_dir).expect("rm");
    std::fs::write(&cold_dir, b"not a directory").expect("file");
    let r2 = tiered
        .evict_oldest(usage.live_bytes / 4, false)
        .await
        .expect("evicts without the copy");
    assert!(r2.spans_deleted > 0, "{r2:?}");
    assert!(r2.cutoff_ns > r.cutoff_ns);
    assert_eq!(cold.stats.eviction_copy_failures.load(Relaxed), 1);
    assert_eq!(
        cold.stats.spans_moved_by_eviction.load(Relaxed),
        r.spans_deleted
    );
    let gone = d
        .old
        .iter()
        .find(|(_, s)| s[0].start_ns >= r.cutoff_ns && s[4].start_ns < r2.cutoff_ns)
        .expect("a trace evicted by the second pass");
    assert!(tiered
        .get_trace(tid(gone.0), None)
        .await
        .expect("get")
        .is_empty());
}

/// An S3 endpoint that accepts connections and never answers: the cold
/// tier's reads fail within the configured request timeout and retries
/// (`cold.request_timeout_ms`, `cold.max_retries`, `cold.retry_timeout_ms`),
/// not after the client library's defaults (10 retries over 3 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_s3_endpoint_fails_within_the_configured_timeouts_and_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            // Held open, never answered, never closed.
            let mut held = Vec::new();
            for c in listener.incoming() {
                accepted.fetch_add(1, Relaxed);
                held.push(c);
            }
        });
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let cfg = ColdConfig {
        bucket: Some("silent".into()),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        allow_http: true,
        request_timeout_ms: 300,
        connect_timeout_ms: 300,
        max_retries: 2,
        retry_timeout_ms: 10_000,
        ..cold_config(None)
    };
    cfg.validate().expect("valid");
    let started = Instant::now();
    let err = ColdStore::open(&cfg)
        .await
        .err()
        .expect("a silent endpoint is an error");
    let took = started.elapsed();
    let attempts = accepted.load(Relaxed);
    eprintln!("silent endpoint: failed after {took:?}, {attempts} connections: {err}");
    assert!(err.to_string().contains("cold tier: listing"), "{err}");
    // 3 attempts of 300 ms and two backoffs (about 100 and 200 ms, jittered).
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    assert_eq!(attempts, 3, "the first attempt and max_retries = 2 retries");

    // retry_timeout_ms bounds the retries too: none starts past it.
    let accepted_before = accepted.load(Relaxed);
    let started = Instant::now();
    let err = ColdStore::open(&ColdConfig {
        max_retries: 20,
        retry_timeout_ms: 1_000,
        ..cfg
    })
    .await
    .err()
    .expect("still silent");
    let took = started.elapsed();
    let attempts = accepted.load(Relaxed) - accepted_before;
    eprintln!("retry_timeout_ms = 1000: failed after {took:?}, {attempts} connections: {err}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(attempts < 20, "{attempts} attempts");
}

/// The collector itself: tiering runs on its timer, the native API marks a
/// cold trace, the Jaeger API serves it, search finds it, /metrics counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_moves_old_spans_and_serves_them_from_the_cold_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ingest_util::test_config(dir.path());
    cfg.cold = ColdConfig {
        interval_secs: 1,
        ..cold_config(Some(&dir.path().join("cold")))
    };
    let store = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
    let d = data();
    fill(store.as_ref(), &d).await;
    let collector = ferrotrace_collector::server::Collector::start(cfg, store.clone())
        .await
        .expect("collector starts");
    let q = collector.addrs.http.expect("query addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = ingest_util::request("GET", q, "/metrics", &[], bytes::Bytes::new()).await;
        let text = String::from_utf8_lossy(&m.body).into_owned();
        if text.contains("ferrotrace_cold_files 21")
            && text.contains("ferrotrace_cold_tiering_runs_total 1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no tiering run:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(store.get_trace(tid(4), None).await.expect("hot").is_empty());
    let get = |path: String| async move {
        let r = ingest_util::request("GET", q, &path, &[], bytes::Bytes::new()).await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        (r.status, v)
    };
    let (status, v) = get(format!("/api/native/traces/{}", hex(&tid(4)))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tier"], "cold");
    assert_eq!(v["cold_spans"], 5);
    assert_eq!(v["span_count"], 5);
    let (status, v) = get(format!("/api/native/traces/{}", hex(&tid(STRADDLER)))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tier"], "mixed");
    let (status, v) = get(format!("/api/native/traces/{}", hex(&tid(100)))).await;
    assert_eq!((status, &v["tier"]), (200, &serde_json::json!("hot")));
    let (status, v) = get(format!("/api/traces/{}", hex(&tid(4)))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["spans"].as_array().map(Vec::len), Some(5));
    let (status, v) = get(format!(
        "/api/native/search?service=backend&errors_only=true&start={}&end={}&limit=50",
        d.now - 11 * DAY,
        d.now - 9 * DAY
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    let traces = v["traces"].as_array().expect("traces");
    assert_eq!(traces.len(), 8, "{v}");
    assert!(traces.iter().all(|t| t["tier"] == "cold"), "{v}");
    collector.shutdown().await;
}

/// Every span before the cutoff comes out of `export_before` exactly once
/// over pages of `limit` (short and empty pages allowed while `next` is
/// set), whatever the sink's slicing; nothing after the cutoff does.
async fn export_pages_every_span_once(hot: &dyn SpanStore, d: &Data, cutoff: u64, limit: usize) {
    let mut want: Vec<(TraceId, [u8; 8])> = d
        .old
        .iter()
        .flat_map(|(_, spans)| spans.iter())
        .chain(std::iter::once(
            &trace(d.straddler, d.now - 8 * DAY - HOUR, 1)[0],
        ))
        .filter(|s| s.start_ns < cutoff)
        .map(|s| (s.trace_id, s.span_id))
        .collect();
    want.sort();
    let mut got = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = hot
            .export_before(cutoff, after, limit)
            .await
            .expect("export");
        assert!(page.spans.len() <= limit, "a page holds at most its limit");
        got.extend(page.spans.iter().map(|s| (s.trace_id, s.span_id)));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    got.sort();
    assert_eq!(got.len(), want.len(), "each span once");
    assert_eq!(got, want);
}

/// Size eviction on a server hot store (PostgreSQL, ClickHouse): the oldest
/// whole day goes, copied cold first; with the cold location broken the
/// next day goes uncopied and the failure is counted.
async fn size_eviction_on_a_server(hot: Arc<dyn SpanStore>, cold_dir: &std::path::Path) {
    let now = now_ns();
    // Three old UTC days, 4 traces each (at 01:00, 02:00, ...), and a recent one.
    let first_day = now / DAY * DAY - 12 * DAY;
    let days: Vec<Vec<u32>> = (0..3u32).map(|k| (k * 10..k * 10 + 4).collect()).collect();
    for (k, ts) in days.iter().enumerate() {
        for (i, &t) in ts.iter().enumerate() {
            let start = first_day + k as u64 * DAY + (i as u64 + 1) * HOUR;
            hot.write_spans(&trace(t, start, 5)).await.expect("write");
        }
    }
    hot.write_spans(&trace(500, now - HOUR, 3))
        .await
        .expect("write");
    let cold = Arc::new(
        ColdStore::open(&cold_config(Some(cold_dir)))
            .await
            .expect("open cold"),
    );
    let tiered = TieredStore::new(hot.clone(), cold.clone());
    let r = tiered.evict_oldest(1, false).await.expect("evict");
    assert_eq!(r.cutoff_ns, first_day + DAY, "the oldest whole day: {r:?}");
    assert_eq!(r.spans_deleted, 20, "{r:?}");
    assert_eq!(cold.stats.spans_moved_by_eviction.load(Relaxed), 20);
    assert_eq!(cold.stats.eviction_copy_failures.load(Relaxed), 0);
    for &t in &days[0] {
        assert!(hot.get_trace(tid(t), None).await.expect("hot").is_empty());
        let got = tiered.get_trace_tiered(tid(t), None).await.expect("get");
        assert_eq!(got.spans.len(), 5, "trace {t} from the cold tier");
        assert_eq!(got.cold_spans, 5);
    }
    for &t in &days[1] {
        let got = tiered.get_trace_tiered(tid(t), None).await.expect("get");
        assert_eq!(
            (got.spans.len(), got.cold_spans),
            (5, 0),
            "trace {t} still hot"
        );
    }
    // Search over the evicted day finds its traces in the cold tier.
    let q = query(
        TimeRange {
            start_ns: first_day,
            end_ns: first_day + 2 * DAY,
        },
        100,
    );
    let found = all_pages(&tiered, q).await;
    assert_eq!(found.len(), 8, "{found:?}");
    assert_eq!(found.iter().filter(|p| p.1 == 5).count(), 4, "{found:?}");
    // The cold location breaks: the next day goes anyway, counted.
    std::fs::remove_dir_all(cold_dir).expect("rm");
    std::fs::write(cold_dir, b"not a directory").expect("file");
    let r2 = tiered
        .evict_oldest(1, false)
        .await
        .expect("evicts without the copy");
    assert_eq!(r2.cutoff_ns, first_day + 2 * DAY, "{r2:?}");
    assert_eq!(r2.spans_deleted, 20, "{r2:?}");
    assert_eq!(cold.stats.eviction_copy_failures.load(Relaxed), 1);
    assert_eq!(cold.stats.spans_moved_by_eviction.load(Relaxed), 20);
    for &t in &days[1] {
        assert!(tiered
            .get_trace(tid(t), None)
            .await
            .expect("get")
            .is_empty());
    }
    for &t in days[2].iter().chain(&[500]) {
        assert!(!hot.get_trace(tid(t), None).await.expect("hot").is_empty());
    }
}

/// The tiering pass on a server hot store moves whole UTC days: the cutoff
/// is rounded down to midnight, so a span a little older than `hot_days`
/// but on the cutoff's day stays hot until the next day's pass.
async fn tier_cutoff_is_a_day_boundary(hot: Arc<dyn SpanStore>, cold_dir: &std::path::Path) {
    let now = now_ns();
    let cutoff = now - 7 * DAY;
    let midnight = cutoff / DAY * DAY;
    assert_eq!(hot.tier_cutoff(cutoff), midnight);
    let before = trace(600, midnight - HOUR, 2);
    // Between midnight and the exact cutoff (empty when the test runs in
    // the first millisecond of a UTC day).
    let same_day = trace(601, midnight + (cutoff - midnight) / 2, 1);
    hot.write_spans(&before).await.expect("write");
    hot.write_spans(&same_day).await.expect("write");
    let cold = Arc::new(
        ColdStore::open(&cold_config(Some(cold_dir)))
            .await
            .expect("open cold"),
    );
    let report = run_once(hot.as_ref(), &cold, now).await.expect("tier");
    assert_eq!(
        (report.spans_aged, report.hot_deleted),
        (2, 2),
        "{report:?}"
    );
    assert!(hot.get_trace(tid(600), None).await.expect("hot").is_empty());
    assert_eq!(hot.get_trace(tid(601), None).await.expect("hot"), same_day);
    let tiered = TieredStore::new(hot.clone(), cold.clone());
    assert_eq!(tiered.get_trace(tid(600), None).await.expect("get"), before);
}

/// A pass that crashed between its copy and its hot delete: the next pass
/// copies the same spans again (new files), and reads and search still
/// return each span and trace once.
async fn recopy_after_a_crash_keeps_one_copy(hot: Arc<dyn SpanStore>, cold_dir: &std::path::Path) {
    let d = data();
    fill(hot.as_ref(), &d).await;
    // Compaction off: it would merge the two copies (checked at the end).
    let cold = Arc::new(
        ColdStore::open(&ColdConfig {
            compaction: false,
            ..cold_config(Some(cold_dir))
        })
        .await
        .expect("open cold"),
    );
    let first = run_once(hot.as_ref(), &cold, d.now).await.expect("tier");
    assert_eq!(first.spans_written, 201, "{first:?}");
    // The crash: the hot delete never happened.
    for (_, spans) in &d.old {
        hot.write_spans(spans).await.expect("write old again");
    }
    let second = run_once(hot.as_ref(), &cold, d.now).await.expect("tier");
    assert_eq!(second.spans_written, 200, "{second:?}");
    assert_eq!(
        cold.stats.spans.load(Relaxed),
        401,
        "two copies in the files"
    );
    let tiered = TieredStore::new(hot.clone(), cold.clone());
    for (t, spans) in &d.old {
        let got = tiered.get_trace_tiered(tid(*t), None).await.expect("get");
        assert_eq!(&got.spans, spans, "trace {t} once");
    }
    let old_range = TimeRange {
        start_ns: d.now - 11 * DAY,
        end_ns: d.now - 9 * DAY,
    };
    let pages = all_pages(&tiered, query(old_range, 7)).await;
    assert_eq!(pages.len(), 40);
    assert_eq!(pages.iter().map(|p| p.0).collect::<HashSet<_>>().len(), 40);
    // Compaction merges each hour's two copies into one file of one copy.
    let c = cold.compact().await.expect("compact");
    assert_eq!((c.files_written, c.files_replaced), (20, 40), "{c:?}");
    assert_eq!(c.duplicates_dropped, 200, "{c:?}");
    assert_eq!(cold.stats.spans.load(Relaxed), 201);
    for (t, spans) in &d.old {
        let (raw, _) = cold.spans_of(&[tid(*t)], None).await.expect("cold");
        assert_eq!(raw.len(), spans.len(), "trace {t}: one copy in the files");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_copy_and_delete_is_copied_again_and_read_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hot = Arc::new(SqliteStore::open(dir.path().join("spans.db")).expect("sqlite"));
    recopy_after_a_crash_keeps_one_copy(hot, &dir.path().join("cold")).await;
}

/// The whole cold-tier behaviour with PostgreSQL as the hot store, against
/// a throwaway server (one database per scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hot_store_moves_old_days_to_the_cold_tier() {
    let Some(pg) = support::postgres::PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |db: &'static str| {
        let pg = &pg;
        async move {
            let url = pg.fresh_db(db).await;
            let store: Arc<dyn SpanStore> =
                Arc::new(PostgresStore::connect(&url).await.expect("connect"));
            store
        }
    };
    let hot = open("cold_export").await;
    let d = data();
    fill(hot.as_ref(), &d).await;
    for limit in [10_000, 7, 1] {
        export_pages_every_span_once(hot.as_ref(), &d, hot.tier_cutoff(d.now - 7 * DAY), limit)
            .await;
    }
    exercise(
        open("cold_exercise").await,
        cold_config(Some(&dir.path().join("c1"))),
    )
    .await;
    late_span(open("cold_late").await, &dir.path().join("c2")).await;
    size_eviction_on_a_server(open("cold_size").await, &dir.path().join("c3")).await;
    tier_cutoff_is_a_day_boundary(open("cold_cutoff").await, &dir.path().join("c4")).await;
    recopy_after_a_crash_keeps_one_copy(open("cold_recopy").await, &dir.path().join("c5")).await;
    // The errors policy judges whole traces as the hot store has them (a
    // batched read by trace id on the server).
    policy_run(
        open("cold_policy").await,
        ColdPolicy::Errors,
        &dir.path().join("c6"),
    )
    .await;
}

/// The whole cold-tier behaviour with ClickHouse as the hot store, against
/// a throwaway server (one database per scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_hot_store_moves_old_days_to_the_cold_tier() {
    let Some(ch) = support::clickhouse::ChServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |db: &'static str| {
        let url = ch.url(db);
        async move {
            let store: Arc<dyn SpanStore> = Arc::new(
                ClickHouseStore::connect(&url, ClickHouseOptions::default())
                    .await
                    .expect("connect"),
            );
            store
        }
    };
    let hot = open("cold_export").await;
    let d = data();
    fill(hot.as_ref(), &d).await;
    // Copies of a span not merged yet (a retried batch) come out once.
    hot.write_spans(&d.old[0].1).await.expect("write again");
    hot.write_spans(&d.old[1].1).await.expect("write again");
    for limit in [10_000, 7, 1] {
        export_pages_every_span_once(hot.as_ref(), &d, hot.tier_cutoff(d.now - 7 * DAY), limit)
            .await;
    }
    exercise(
        open("cold_exercise").await,
        cold_config(Some(&dir.path().join("c1"))),
    )
    .await;
    late_span(open("cold_late").await, &dir.path().join("c2")).await;
    size_eviction_on_a_server(open("cold_size").await, &dir.path().join("c3")).await;
    tier_cutoff_is_a_day_boundary(open("cold_cutoff").await, &dir.path().join("c4")).await;
    recopy_after_a_crash_keeps_one_copy(open("cold_recopy").await, &dir.path().join("c5")).await;
    // The errors policy judges whole traces as the hot store has them (a
    // batched read by trace id on the server).
    policy_run(
        open("cold_policy").await,
        ColdPolicy::Errors,
        &dir.path().join("c6"),
    )
    .await;
}

/// Measurement, not a check (`-- --ignored --nocapture move_rate`): how
/// fast a tiering pass moves one old day of `FT_COLD_MOVE_SPANS` spans
/// (default 200,000; 5-span traces, random ids) out of each hot store
/// (SQLite as the baseline) into a local directory. The figures are in
/// docs/storage.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn move_rate() {
    let n: u32 = std::env::var("FT_COLD_MOVE_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let pg = support::postgres::PgServer::start();
    let ch = support::clickhouse::ChServer::start();
    let sqlite_dir = tempfile::tempdir().expect("tempdir");
    let mut stores: Vec<(&str, Arc<dyn SpanStore>)> = vec![(
        "sqlite",
        Arc::new(SqliteStore::open(sqlite_dir.path().join("spans.db")).expect("sqlite")),
    )];
    if let Some(pg) = &pg {
        let url = pg.fresh_db("cold_rate").await;
        stores.push((
            "postgres",
            Arc::new(PostgresStore::connect(&url).await.expect("connect")),
        ));
    }
    if let Some(ch) = &ch {
        stores.push((
            "clickhouse",
            Arc::new(
                ClickHouseStore::connect(&ch.url("cold_rate"), ClickHouseOptions::default())
                    .await
                    .expect("connect"),
            ),
        ));
    }
    let now = now_ns();
    let day = now / DAY * DAY - 10 * DAY;
    for (name, hot) in stores {
        let traces = n / 5;
        let mut batch = Vec::new();
        for t in 0..traces {
            // Spread over the day, 10 minutes to 23:50.
            let start = day + 10 * 60_000 * MS + u64::from(t) * (23 * HOUR) / u64::from(traces);
            batch.extend(trace(t, start, 5));
            if batch.len() >= 20_000 {
                hot.write_spans(&batch).await.expect("write");
                batch.clear();
            }
        }
        hot.write_spans(&batch).await.expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let cold = Arc::new(
            ColdStore::open(&ColdConfig {
                max_spans_per_file: 100_000,
                ..cold_config(Some(dir.path()))
            })
            .await
            .expect("open cold"),
        );
        let t0 = Instant::now();
        let r = run_once(hot.as_ref(), &cold, now).await.expect("tier");
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(r.spans_written, u64::from(traces) * 5, "{r:?}");
        println!(
            "{name}: moved {} spans in {secs:.2} s ({:.0} spans/s), {} files, hot deleted {}",
            r.spans_written,
            r.spans_written as f64 / secs,
            r.files_written,
            r.hot_deleted
        );
    }
}

/// The collector with a PostgreSQL or ClickHouse store opened from its
/// configuration (`storage.kind`, `storage.url`, connecting in the
/// background) and `[cold]`: the configuration is accepted, tiering runs on
/// its timer once the store is connected, and the APIs serve the moved
/// traces from the cold tier.
async fn collector_with_a_server_store(
    kind: ferrotrace_collector::config::StorageKind,
    url: String,
    direct: Arc<dyn SpanStore>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = data();
    fill(direct.as_ref(), &d).await;
    let mut cfg = ingest_util::test_config(dir.path());
    cfg.storage.kind = kind;
    cfg.storage.url = Some(url);
    cfg.cold = ColdConfig {
        interval_secs: 1,
        ..cold_config(Some(&dir.path().join("cold")))
    };
    let store = ferrotrace_collector::storage::connecting::open(&cfg).expect("open");
    let collector = ferrotrace_collector::server::Collector::start(cfg, store)
        .await
        .expect("collector starts with [cold] over a database sink");
    let q = collector.addrs.http.expect("query addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = ingest_util::request("GET", q, "/metrics", &[], bytes::Bytes::new()).await;
        let text = String::from_utf8_lossy(&m.body).into_owned();
        if text.contains("ferrotrace_cold_files 21") {
            assert!(
                text.contains("ferrotrace_cold_tiering_failures_total 0"),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no tiering run:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(direct
        .get_trace(tid(4), None)
        .await
        .expect("hot")
        .is_empty());
    let r = ingest_util::request(
        "GET",
        q,
        &format!("/api/native/traces/{}", hex(&tid(4))),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        (&v["tier"], &v["cold_spans"]),
        (&serde_json::json!("cold"), &serde_json::json!(5))
    );
    let r = ingest_util::request(
        "GET",
        q,
        &format!("/api/native/traces/{}", hex(&tid(STRADDLER))),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["tier"], "mixed", "{v}");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_with_postgres_and_clickhouse_moves_old_days_cold() {
    use ferrotrace_collector::config::StorageKind;
    if let Some(pg) = support::postgres::PgServer::start() {
        let url = pg.fresh_db("cold_collector").await;
        let direct: Arc<dyn SpanStore> =
            Arc::new(PostgresStore::connect(&url).await.expect("connect"));
        collector_with_a_server_store(StorageKind::Postgres, url, direct).await;
    }
    if let Some(ch) = support::clickhouse::ChServer::start() {
        let url = ch.url("cold_collector");
        let direct: Arc<dyn SpanStore> = Arc::new(
            ClickHouseStore::connect(&url, ClickHouseOptions::default())
                .await
                .expect("connect"),
        );
        collector_with_a_server_store(StorageKind::Clickhouse, url, direct).await;
    }
}

/// `count` small cold files in UTC hour `hour` (ten days ago), five 5-span
/// traces each, trace numbers from `first`.
async fn small_files(cold: &ColdStore, base: u64, hour: u64, first: u32, count: u32) -> Vec<u32> {
    let mut traces = Vec::new();
    for f in 0..count {
        let mut batch = Vec::new();
        for k in 0..5 {
            let t = first + f * 5 + k;
            batch.extend(trace(
                t,
                base + hour * HOUR + u64::from(t % 1_000) * 1_000 * MS,
                5,
            ));
            traces.push(t);
        }
        assert_eq!(cold.write(batch).await.expect("write").len(), 1);
    }
    traces
}

/// Every trace's spans straight from the cold files (no dedup: a gap or a
/// duplicate file shows), exactly 5 each.
async fn five_spans_each(cold: &ColdStore, traces: &[u32]) {
    for &t in traces {
        let (spans, _) = cold.spans_of(&[tid(t)], None).await.expect("lookup");
        assert_eq!(spans.len(), 5, "trace {t}");
    }
}

/// Compaction against one location: each hour's small files become one,
/// lookups and searches running meanwhile see every span exactly once,
/// and a crash at either step leaves a state that reads right and that
/// the next pass finishes.
async fn compaction_run(cfg: ColdConfig) {
    let cfg = ColdConfig {
        max_spans_per_file: 1_000,
        ..cfg
    };
    let cold = Arc::new(ColdStore::open(&cfg).await.expect("open"));
    let base = (now_ns() - 10 * DAY) / HOUR * HOUR;
    let mut traces = Vec::new();
    for h in 0..4 {
        traces.extend(small_files(&cold, base, h, 1_000 * h as u32, 10).await);
    }
    // A file of 600 spans (over half of max_spans_per_file): left alone.
    let big: Vec<Span> = (0..120u32)
        .flat_map(|k| trace(5_000 + k, base + 4 * HOUR + u64::from(k) * MS, 5))
        .collect();
    cold.write(big).await.expect("write big");
    assert_eq!(cold.files().len(), 41);
    five_spans_each(&cold, &traces).await;

    // Readers race the compaction: every lookup sees each span once.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (cold, traces, stop) = (cold.clone(), traces.clone(), stop.clone());
        tokio::spawn(async move {
            let range = TimeRange {
                start_ns: base,
                end_ns: base + 4 * HOUR,
            };
            let mut rounds = 0;
            while !stop.load(Relaxed) || rounds == 0 {
                five_spans_each(&cold, &traces).await;
                let (found, _) = cold
                    .search(&query(range, 1_000), None, 1_000)
                    .await
                    .expect("search");
                assert_eq!(found.len(), traces.len(), "search sees every trace once");
                rounds += 1;
            }
            rounds
        })
    };
    let r = cold.compact().await.expect("compact");
    stop.store(true, Relaxed);
    assert!(reader.await.expect("reader") >= 1);
    assert_eq!(
        (r.files_written, r.files_replaced, r.spans),
        (4, 40, 1_000),
        "{r:?}"
    );
    assert_eq!(cold.files().len(), 5);
    let before = cold.stats.files_opened.load(Relaxed);
    five_spans_each(&cold, &traces).await;
    let opened = cold.stats.files_opened.load(Relaxed) - before;
    // About one file per lookup; a bloom filter's false positive (0.1% per
    // row group) may add one now and then.
    assert!(
        opened >= traces.len() as u64 && opened <= traces.len() as u64 + 3,
        "{opened} files opened for {} lookups",
        traces.len()
    );
    assert_eq!(
        cold.compact().await.expect("again").files_written,
        0,
        "nothing left to merge"
    );
    let other = ColdStore::open(&cfg).await.expect("reopen");
    assert_eq!(
        other.files().len(),
        5,
        "the location holds the merged files only"
    );
    five_spans_each(&other, &traces).await;

    // A crash after the merged file was written, before the deletes: a
    // restart lists each span once; the next pass deletes the inputs.
    let late = small_files(&cold, base, 6, 20_000, 3).await;
    let r = cold
        .compact_until(ferrotrace_collector::storage::cold::compact::StopAfter::Output)
        .await
        .expect("crash after output");
    assert_eq!(r.files_written, 1);
    let restarted = ColdStore::open(&cfg).await.expect("restart");
    assert_eq!(restarted.files().len(), 6, "inputs hidden by the manifest");
    five_spans_each(&restarted, &late).await;
    let r = restarted.compact().await.expect("recover");
    assert_eq!((r.recovered, r.files_written), (1, 0), "{r:?}");
    let after = ColdStore::open(&cfg).await.expect("reopen");
    assert_eq!(after.files().len(), 6, "inputs deleted, manifest gone");
    five_spans_each(&after, &late).await;

    // A crash after the manifest, before the merged file: nothing
    // committed; the next pass drops the manifest and merges again.
    let late2 = small_files(&after, base, 7, 30_000, 2).await;
    after
        .compact_until(ferrotrace_collector::storage::cold::compact::StopAfter::Manifest)
        .await
        .expect("crash after manifest");
    let restarted = ColdStore::open(&cfg).await.expect("restart");
    assert_eq!(restarted.files().len(), 8, "inputs still listed");
    five_spans_each(&restarted, &late2).await;
    let r = restarted.compact().await.expect("recover");
    assert_eq!(
        (r.recovered, r.files_written, r.files_replaced),
        (1, 1, 2),
        "{r:?}"
    );
    assert_eq!(
        ColdStore::open(&cfg).await.expect("reopen").files().len(),
        7
    );
    five_spans_each(&restarted, &late2).await;

    // The same file written twice (a retried run): merged to one copy.
    let dup: Vec<Span> = (0..5u32)
        .flat_map(|k| trace(40_000 + k, base + 8 * HOUR + u64::from(k) * MS, 5))
        .collect();
    restarted.write(dup.clone()).await.expect("write");
    restarted.write(dup).await.expect("write again");
    let r = restarted.compact().await.expect("compact");
    assert_eq!((r.files_written, r.duplicates_dropped), (1, 25), "{r:?}");
    five_spans_each(&restarted, &(40_000..40_005).collect::<Vec<_>>()).await;

    let metrics = ferrotrace_collector::metrics::Metrics::default();
    metrics.register(Box::new(restarted.stats.clone()));
    let text = metrics.render();
    for m in [
        "ferrotrace_cold_compaction_files_written_total 2",
        "ferrotrace_cold_compaction_files_replaced_total 4",
        "ferrotrace_cold_compaction_recoveries_total 1",
        "ferrotrace_cold_compaction_failures_total 0",
    ] {
        assert!(text.contains(m), "{m} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_in_a_local_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    compaction_run(cold_config(Some(dir.path()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_in_a_moto_s3_server() {
    let Some(moto) = start_moto() else {
        return;
    };
    let endpoint = moto_bucket(&moto, "ferrotrace-cold").await;
    compaction_run(ColdConfig {
        bucket: Some("ferrotrace-cold".into()),
        endpoint: Some(endpoint),
        allow_http: true,
        prefix: "compact".into(),
        ..cold_config(None)
    })
    .await;
}
