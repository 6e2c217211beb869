//! The shared conformance suite every [`SpanStore`] passes (SQLite,
//! PostgreSQL, ClickHouse). Use it from an integration test:
//!
//! ```ignore
//! mod conformance;
//! #[tokio::test]
//! async fn conformance() { conformance::run_all(&my_store).await; }
//! ```
//!
//! Every check writes into its own day (and its own service names), so all
//! checks share one store; retention runs last and only touches days before
//! the others. Day boundaries are used so sinks that drop whole daily
//! partitions pass too.
#![allow(dead_code)]

use std::collections::BTreeSet;

use ferrotrace_collector::model::{
    AttrValue, Event, KeyValue, Link, Span, SpanKind, StatusCode, TraceId,
};
use ferrotrace_collector::rollup::{
    EdgeRollup, LatencySketch, OperationRollup, RollupAggregator, RollupBatch, RollupOrigin,
    MINUTE_NS, SKETCH_RELATIVE_ACCURACY,
};
use ferrotrace_collector::storage::{
    AttrFilter, LatencyPoint, LatencyQuery, Operation, SpanStore, StorageError, TimeRange,
    TraceQuery, TraceSpans, TraceSummary, MAX_TRACES_PER_READ,
};

/// 1 ms in ns.
pub const MS: u64 = 1_000_000;
/// One day in ns.
pub const DAY: u64 = 86_400 * 1_000_000_000;
/// 2026-01-01T00:00:00Z.
pub const BASE: u64 = 1_767_225_600 * 1_000_000_000;

/// The day given to check number `n`.
pub fn day(n: u64) -> u64 {
    BASE + n * DAY
}

/// The whole day starting at `start`.
pub fn day_range(start: u64) -> TimeRange {
    TimeRange {
        start_ns: start,
        end_ns: start + DAY,
    }
}

/// A trace id unique to (check, n).
pub fn tid(check: u8, n: u32) -> TraceId {
    let mut t = [0u8; 16];
    t[0] = 0xC0;
    t[1] = check;
    t[2..6].copy_from_slice(&n.to_be_bytes());
    // Spread the low bytes so sinks hashing on them see realistic ids.
    t[8..16].copy_from_slice(
        &((n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ check as u64).to_be_bytes(),
    );
    t
}

/// A span id unique within a trace.
pub fn sid(n: u32) -> [u8; 8] {
    let mut s = [0u8; 8];
    s[0] = 0x5A;
    s[4..].copy_from_slice(&(n + 1).to_be_bytes());
    s
}

/// A minimal span.
pub fn span(
    trace: TraceId,
    id: u32,
    parent: Option<u32>,
    service: &str,
    name: &str,
    start: u64,
    dur: u64,
) -> Span {
    Span {
        trace_id: trace,
        span_id: sid(id),
        parent_span_id: parent.map(sid),
        trace_state: String::new(),
        flags: 1,
        name: name.into(),
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Internal
        },
        start_ns: start,
        end_ns: start + dur,
        attributes: vec![],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        service_name: service.into(),
        resource_attributes: vec![KeyValue::new(
            "service.name",
            AttrValue::Str(service.into()),
        )]
        .into(),
        scope_name: "conformance".into(),
        scope_version: "1".into(),
    }
}

fn kv(k: &str, v: AttrValue) -> KeyValue {
    KeyValue::new(k, v)
}

fn query(range: TimeRange) -> TraceQuery {
    TraceQuery {
        service: None,
        operation: None,
        attributes: vec![],
        min_duration_ns: None,
        max_duration_ns: None,
        errors_only: false,
        range,
        limit: 100,
        cursor: None,
    }
}

async fn search_ids(store: &dyn SpanStore, q: &TraceQuery) -> Vec<TraceId> {
    let page = store
        .search(q)
        .await
        .unwrap_or_else(|e| panic!("search {q:?}: {e}"));
    page.traces.iter().map(|t| t.trace_id).collect()
}

/// Nearest-rank quantile of `sorted` values (the definition the trait uses).
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    sorted[(rank - 1) as usize]
}

fn assert_close(what: &str, got: u64, exact: u64) {
    let err = (got as f64 - exact as f64).abs() / (exact.max(1) as f64);
    assert!(
        err <= SKETCH_RELATIVE_ACCURACY + 1e-9,
        "{what}: got {got}, exact {exact} (relative error {err:.4} > {SKETCH_RELATIVE_ACCURACY})"
    );
}

/// Runs every check against one store.
pub async fn run_all(store: &dyn SpanStore) {
    round_trip(store).await;
    idempotent_retry(store).await;
    rollups_merge(store).await;
    weighted_rollups(store).await;
    rollup_origins(store).await;
    sampling_counts(store).await;
    search_filters(store).await;
    search_attributes(store).await;
    search_attributes_as_text(store).await;
    search_pagination(store).await;
    search_early_stop_exact(store).await;
    trace_lookup(store).await;
    batch_trace_reads(store).await;
    services_and_operations(store).await;
    dependencies(store).await;
    exact_percentiles(store).await;
    latency_from_rollups(store).await;
    latency_by_kind(store).await;
    hostile_strings(store).await;
    // Last: it deletes (only) days before every other check's.
    retention(store).await;
}

/// Adaptive sampling's shared counts: several collectors' rows of a period
/// are summed, a retried write counts once, other periods and other period
/// lengths stay apart, hostile names survive, and pruning removes old
/// periods (or leaves them to age retention).
pub async fn sampling_counts(store: &dyn SpanStore) {
    use ferrotrace_collector::storage::{SamplingCountRow, SamplingPeriodCounts};
    let p0 = day(3) + 600_000_000_000;
    let p = 10_000_000_000;
    let hostile = "op \"quoted\" \\ ' é \u{0}nul";
    let write =
        |start: u64, secs: u32, collector: &str, rows: &[(&str, &str, u64)]| SamplingPeriodCounts {
            period_start_ns: start,
            period_secs: secs,
            collector: collector.into(),
            counts: rows
                .iter()
                .map(|(s, o, n)| (s.to_string(), o.to_string(), *n))
                .collect(),
        };
    let a = write(p0, 10, "a", &[("svc", "op1", 1_500), ("svc", hostile, 10)]);
    store.write_sampling_counts(&a).await.expect("write a");
    store
        .write_sampling_counts(&write(p0, 10, "b", &[("svc", "op1", 2_500)]))
        .await
        .expect("write b");
    // A retry of a write whose first attempt was stored.
    store.write_sampling_counts(&a).await.expect("retry a");
    store
        .write_sampling_counts(&write(p0 + p, 10, "a", &[("svc", "op1", 7)]))
        .await
        .expect("write next period");
    // Another period length: never mixed in.
    store
        .write_sampling_counts(&write(p0, 1, "c", &[("svc", "op1", 99)]))
        .await
        .expect("write 1 s period");
    let row = |start: u64, op: &str, n: u64| SamplingCountRow {
        period_start_ns: start,
        service: "svc".into(),
        operation: op.into(),
        count_milli: n,
    };
    let mut want = vec![
        row(p0, "op1", 4_000),
        row(p0, hostile, 10),
        row(p0 + p, "op1", 7),
    ];
    want.sort();
    let got = store
        .read_sampling_counts(10, p0, p0 + 2 * p)
        .await
        .expect("read");
    assert_eq!(got, want);
    // The window's end is exclusive.
    let got = store
        .read_sampling_counts(10, p0, p0 + p)
        .await
        .expect("read");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        store
            .read_sampling_counts(1, p0, p0 + p)
            .await
            .expect("read"),
        vec![row(p0, "op1", 99)]
    );
    let pruned = store.prune_sampling_counts(p0 + p).await.expect("prune");
    let left = store
        .read_sampling_counts(10, p0, p0 + 2 * p)
        .await
        .expect("read after prune");
    if pruned > 0 {
        assert_eq!(left, vec![row(p0 + p, "op1", 7)]);
    } else {
        assert_eq!(left.len(), 3, "nothing pruned, nothing gone: {left:?}");
    }
}

/// The span of [`round_trip`], with every field set.
pub fn full_span() -> Span {
    let t0 = day(1) + 3_600_000_000_000;
    let mut s = span(
        tid(1, 1),
        7,
        Some(3),
        "rt-service",
        "rt operation",
        t0 + 123,
        45_678_901,
    );
    s.trace_state = "vendor=abc,other=1".into();
    s.flags = 0x301;
    s.kind = SpanKind::Producer;
    s.attributes = vec![
        kv("str", AttrValue::Str("value".into())),
        kv("bool", AttrValue::Bool(false)),
        kv("int.min", AttrValue::Int(i64::MIN)),
        kv("int.max", AttrValue::Int(i64::MAX)),
        kv("double", AttrValue::Double(-2.25e-10)),
        kv("double.big", AttrValue::Double(1.7976931348623157e308)),
        kv("bytes", AttrValue::Bytes(vec![0, 1, 254, 255])),
        kv(
            "array",
            AttrValue::Array(vec![
                AttrValue::Str("a".into()),
                AttrValue::Int(2),
                AttrValue::Bool(true),
            ]),
        ),
        kv(
            "map",
            AttrValue::KvList(vec![
                kv("inner", AttrValue::Double(0.5)),
                kv(
                    "deeper",
                    AttrValue::KvList(vec![kv("x", AttrValue::Str("y".into()))]),
                ),
            ]),
        ),
        kv("empty", AttrValue::Str(Default::default())),
        // An OTLP AnyValue with no value set.
        kv("no.value", AttrValue::Empty),
        kv(
            "array.with.empty",
            AttrValue::Array(vec![AttrValue::Empty, AttrValue::Int(1)]),
        ),
    ];
    s.dropped_attributes_count = 2;
    s.events = vec![
        Event {
            time_ns: t0 + 500,
            name: "exception".into(),
            attributes: vec![kv("exception.message", AttrValue::Str("boom".into()))],
            dropped_attributes_count: 1,
        },
        Event {
            time_ns: t0 + 600,
            name: "second".into(),
            attributes: vec![],
            dropped_attributes_count: 0,
        },
    ];
    s.dropped_events_count = 3;
    s.links = vec![Link {
        trace_id: tid(1, 99),
        span_id: sid(99),
        trace_state: "k=v".into(),
        attributes: vec![kv("link.attr", AttrValue::Int(-5))],
        dropped_attributes_count: 4,
        flags: 0x101,
    }];
    s.dropped_links_count = 5;
    s.status_code = StatusCode::Error;
    s.status_message = "failed: it broke".into();
    s.resource_attributes
        .make_mut()
        .push(kv("host.name", AttrValue::Str("h1".into())));
    s.scope_name = "my.scope".into();
    s.scope_version = "9.9.9".into();
    s
}

/// Every field of a span survives a write and read.
pub async fn round_trip(store: &dyn SpanStore) {
    let s = full_span();
    let mut root = span(
        s.trace_id,
        3,
        None,
        "rt-service",
        "rt root",
        s.start_ns - 100,
        50 * MS,
    );
    root.status_code = StatusCode::Ok;
    store
        .write_spans(&[s.clone(), root.clone()])
        .await
        .expect("write_spans");
    let got = store.get_trace(s.trace_id, None).await.expect("get_trace");
    assert_eq!(
        got,
        vec![root.clone(), s.clone()],
        "round trip (ordered by start time)"
    );
    let got = store
        .get_trace(s.trace_id, Some(day_range(day(1))))
        .await
        .expect("get_trace with range");
    assert_eq!(got.len(), 2, "get_trace within range");
}

/// A retried batch never duplicates spans.
pub async fn idempotent_retry(store: &dyn SpanStore) {
    let t0 = day(2) + 1_000;
    let trace = tid(2, 1);
    let batch: Vec<Span> = (0..5)
        .map(|i| {
            let mut s = span(
                trace,
                i,
                if i == 0 { None } else { Some(0) },
                "idem-svc",
                "idem-op",
                t0 + i as u64,
                10 * MS,
            );
            s.attributes
                .push(kv("idem.key", AttrValue::Str("k".into())));
            s
        })
        .collect();
    store.write_spans(&batch).await.expect("first write");
    store.write_spans(&batch).await.expect("retried write");
    let mut overlap = batch[3..].to_vec();
    overlap.push(span(trace, 10, Some(0), "idem-svc", "idem-op", t0 + 10, MS));
    overlap.push(span(trace, 11, Some(0), "idem-svc", "idem-op", t0 + 11, MS));
    store
        .write_spans(&overlap)
        .await
        .expect("overlapping write");
    assert_eq!(
        store.get_trace(trace, None).await.expect("get").len(),
        7,
        "spans after retries"
    );
    let mut q = query(day_range(day(2)));
    q.attributes = vec![AttrFilter {
        key: "idem.key".into(),
        value: AttrValue::Str("k".into()),
        mode: Default::default(),
    }];
    let page = store.search(&q).await.expect("search");
    assert_eq!(page.traces.len(), 1, "one trace, not one per duplicate");
    assert_eq!(page.traces[0].span_count, 7);
    let p = store
        .exact_percentiles("idem-svc", None, &[], day_range(day(2)), &[1.0])
        .await
        .expect("pct");
    assert_eq!(p, vec![10 * MS]);
}

fn sketch_of(values: &[u64]) -> LatencySketch {
    let mut s = LatencySketch::default();
    for v in values {
        s.add(*v);
    }
    s
}

/// Rollup origins are stored with their batch, read back per WAL instance and
/// segment (every row, each batch's ranges intact), and pruned by segment.
pub async fn rollup_origins(store: &dyn SpanStore) {
    let m = day(3) + 20 * MINUTE_NS;
    let origin = |segment, minute_ns, ranges: [&[(u64, u64)]; 3]| {
        let mut o = RollupOrigin {
            segment,
            minute_ns,
            ..Default::default()
        };
        for (part, rs) in o.parts.iter_mut().zip(ranges) {
            for &(s, e) in rs {
                part.insert_range(s, e);
            }
        }
        o
    };
    let op = OperationRollup {
        minute_ns: m,
        service: "ro-svc".into(),
        operation: "ro-op".into(),
        kind: SpanKind::Server,
        count: 1,
        errors: 0,
        sketch: sketch_of(&[MS]),
    };
    // Two WALs share the database; the ids are as large as they get.
    let (wal_a, wal_b) = (u64::MAX - 7, 42u64);
    let first = origin(5, m, [&[(0, 100)], &[(0, 40), (41, 100)], &[(0, 100)]]);
    let second = origin(5, m, [&[(100, 150)], &[(40, 41), (100, 150)], &[]]);
    let other_segment = origin(6, m + MINUTE_NS, [&[(0, 1)], &[(0, 1)], &[(0, 1)]]);
    store
        .write_rollups(&RollupBatch {
            operations: vec![op.clone()],
            origins: vec![first.clone(), other_segment.clone()],
            wal_instance: wal_a,
            ..Default::default()
        })
        .await
        .expect("rollups with origins");
    // A batch of origins only (contributions settled with nothing to count).
    store
        .write_rollups(&RollupBatch {
            origins: vec![second.clone()],
            wal_instance: wal_a,
            ..Default::default()
        })
        .await
        .expect("origins only");
    store
        .write_rollups(&RollupBatch {
            origins: vec![origin(5, m, [&[(7, 8)], &[], &[]])],
            wal_instance: wal_b,
            ..Default::default()
        })
        .await
        .expect("other WAL");
    let sorted = |mut v: Vec<RollupOrigin>| {
        v.sort_by_key(|o| (o.segment, o.minute_ns, o.parts[0].0.first().copied()));
        v
    };
    let got = store
        .rollup_origins(wal_a, &[5, 6, 9])
        .await
        .expect("read origins");
    assert_eq!(
        sorted(got),
        vec![first.clone(), second.clone(), other_segment.clone()]
    );
    let got = store
        .rollup_origins(wal_a, &[6])
        .await
        .expect("one segment");
    assert_eq!(got, vec![other_segment.clone()]);
    let got = store.rollup_origins(wal_b, &[5]).await.expect("other WAL");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].parts[0].0, vec![(7, 8)]);
    assert!(store
        .rollup_origins(7, &[5])
        .await
        .expect("unknown WAL")
        .is_empty());
    // Pruning is by segment and WAL; a sink may instead leave it to retention
    // (it returns 0 then), but must never remove what is still needed.
    let pruned = store.prune_rollup_origins(wal_a, 6).await.expect("prune");
    let left = store
        .rollup_origins(wal_a, &[5, 6])
        .await
        .expect("after prune");
    if pruned > 0 {
        assert_eq!(pruned, 2);
        assert_eq!(left, vec![other_segment]);
    } else {
        assert_eq!(left.len(), 3);
    }
    assert_eq!(
        store
            .rollup_origins(wal_b, &[5])
            .await
            .expect("other WAL kept")
            .len(),
        1
    );
}

/// Rollups written in several batches for the same keys add up.
pub async fn rollups_merge(store: &dyn SpanStore) {
    let m = day(3) + 10 * MINUTE_NS;
    let a = [MS, 2 * MS, 3 * MS];
    let b = [4 * MS, 5 * MS];
    let op = |count, errors, values: &[u64]| OperationRollup {
        minute_ns: m,
        service: "rm-svc".into(),
        operation: "rm-op".into(),
        kind: SpanKind::Server,
        count,
        errors,
        sketch: sketch_of(values),
    };
    let edge = |calls, errors, values: &[u64]| EdgeRollup {
        minute_ns: m,
        caller: "rm-a".into(),
        callee: "rm-b".into(),
        calls,
        errors,
        sketch: sketch_of(values),
    };
    store
        .write_rollups(&RollupBatch {
            operations: vec![op(3, 1, &a)],
            edges: vec![edge(3, 0, &a)],
            ..Default::default()
        })
        .await
        .expect("rollups 1");
    store
        .write_rollups(&RollupBatch {
            operations: vec![op(2, 0, &b)],
            edges: vec![edge(2, 2, &b)],
            ..Default::default()
        })
        .await
        .expect("rollups 2");
    let range = TimeRange {
        start_ns: m,
        end_ns: m + MINUTE_NS,
    };
    let pts = store
        .latency(&LatencyQuery {
            service: "rm-svc".into(),
            operation: Some("rm-op".into()),
            range,
            step_ns: None,
            kinds: vec![],
        })
        .await
        .expect("latency");
    assert_eq!(pts.len(), 1, "one total point");
    assert_eq!(
        (pts[0].count, pts[0].errors),
        (5, 1),
        "counts add across batches"
    );
    assert_close("merged p50", pts[0].p50_ns, 3 * MS);
    assert_close("merged p99", pts[0].p99_ns, 5 * MS);
    let deps = store.dependencies(range).await.expect("dependencies");
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert_eq!(
        (deps[0].caller.as_str(), deps[0].callee.as_str()),
        ("rm-a", "rm-b")
    );
    assert_eq!(
        (deps[0].calls, deps[0].errors, deps[0].avg_ns),
        (5, 2, 3 * MS)
    );
    assert_close("edge p95", deps[0].p95_ns, 5 * MS);
}

/// Sketches whose values carry fractional weights (adjusted counts of
/// sampled spans) are stored and merged faithfully: weighted mean and
/// quantiles come back as written, whatever the sink.
pub async fn weighted_rollups(store: &dyn SpanStore) {
    let m = day(3) + 40 * MINUTE_NS;
    let weighted = || {
        let mut s = LatencySketch::default();
        // 99.5 requests of 1 ms and 0.5 of 10 ms: 100 in all.
        s.add_weighted(MS, 99.5);
        s.add_weighted(10 * MS, 0.5);
        s
    };
    for _ in 0..2 {
        store
            .write_rollups(&RollupBatch {
                operations: vec![OperationRollup {
                    minute_ns: m,
                    service: "wr-svc".into(),
                    operation: "wr-op".into(),
                    kind: SpanKind::Server,
                    count: 100,
                    errors: 3,
                    sketch: weighted(),
                }],
                edges: vec![EdgeRollup {
                    minute_ns: m,
                    caller: "wr-a".into(),
                    callee: "wr-b".into(),
                    calls: 100,
                    errors: 3,
                    sketch: weighted(),
                }],
                ..Default::default()
            })
            .await
            .expect("weighted rollups");
    }
    let range = TimeRange {
        start_ns: m,
        end_ns: m + MINUTE_NS,
    };
    let pts = store
        .latency(&LatencyQuery {
            service: "wr-svc".into(),
            operation: Some("wr-op".into()),
            range,
            step_ns: None,
            kinds: vec![],
        })
        .await
        .expect("latency");
    assert_eq!((pts[0].count, pts[0].errors), (200, 6));
    // Rank 0.99 × 200 = 198 falls in the 199 weight of 1 ms; 0.999 would not.
    assert_close("weighted p99", pts[0].p99_ns, MS);
    let deps = store.dependencies(range).await.expect("dependencies");
    let e = deps
        .iter()
        .find(|e| e.caller == "wr-a")
        .expect("weighted edge");
    assert_eq!((e.calls, e.errors), (200, 6));
    // (199 × 1 ms + 1 × 10 ms) / 200, exactly.
    assert_eq!(e.avg_ns, 1_045_000);
    assert_close("weighted edge p95", e.p95_ns, MS);
}

/// Search by service, operation, duration, errors and time; one span must
/// satisfy every condition; limit; newest first; summaries over whole traces.
pub async fn search_filters(store: &dyn SpanStore) {
    let t0 = day(4) + 3_600_000_000_000;
    let (t1, t2, t3) = (tid(4, 1), tid(4, 2), tid(4, 3));
    let mut b1 = span(t1, 1, Some(0), "sf-backend", "query", t0 + 10 * MS, 50 * MS);
    b1.status_code = StatusCode::Error;
    let spans = vec![
        span(t1, 0, None, "sf-frontend", "GET /a", t0, 100 * MS),
        b1,
        span(
            t2,
            0,
            None,
            "sf-frontend",
            "GET /b",
            t0 + 1_000 * MS,
            10 * MS,
        ),
        span(t3, 0, None, "sf-backend", "query", t0 + 2_000 * MS, 5 * MS),
    ];
    store.write_spans(&spans).await.expect("write");
    let r = day_range(day(4));
    let mut q = query(r);
    assert_eq!(
        search_ids(store, &q).await,
        vec![t3, t2, t1],
        "all, newest first"
    );

    q.service = Some("sf-backend".into());
    assert_eq!(search_ids(store, &q).await, vec![t3, t1], "by service");
    q.operation = Some("query".into());
    q.min_duration_ns = Some(20 * MS);
    assert_eq!(
        search_ids(store, &q).await,
        vec![t1],
        "service+operation+min duration"
    );
    q.min_duration_ns = Some(50 * MS);
    assert_eq!(
        search_ids(store, &q).await,
        vec![t1],
        "min duration is inclusive"
    );
    q.min_duration_ns = Some(50 * MS + 1);
    assert!(search_ids(store, &q).await.is_empty(), "min duration above");

    let mut q = query(r);
    q.service = Some("sf-frontend".into());
    q.max_duration_ns = Some(10 * MS);
    assert_eq!(
        search_ids(store, &q).await,
        vec![t2],
        "max duration inclusive"
    );

    let mut q = query(r);
    q.errors_only = true;
    assert_eq!(search_ids(store, &q).await, vec![t1], "errors only");
    q.service = Some("sf-frontend".into());
    assert!(
        search_ids(store, &q).await.is_empty(),
        "conditions must hold on one span"
    );

    let mut q = query(TimeRange {
        start_ns: t0 + 500 * MS,
        end_ns: t0 + 1_500 * MS,
    });
    assert_eq!(search_ids(store, &q).await, vec![t2], "time range");
    q.range = TimeRange {
        start_ns: t0 + 1_000 * MS,
        end_ns: t0 + 1_000 * MS + 1,
    };
    assert_eq!(
        search_ids(store, &q).await,
        vec![t2],
        "range start inclusive"
    );
    q.range = TimeRange {
        start_ns: t0,
        end_ns: t0 + 1_000 * MS,
    };
    assert_eq!(search_ids(store, &q).await, vec![t1], "range end exclusive");

    let mut q = query(r);
    q.limit = 1;
    let page = store.search(&q).await.expect("search");
    assert_eq!(
        page.traces.iter().map(|t| t.trace_id).collect::<Vec<_>>(),
        vec![t3],
        "limit"
    );
    assert!(page.next_cursor.is_some(), "more pages");

    let mut q = query(r);
    q.service = Some("sf-backend".into());
    q.errors_only = true;
    let page = store.search(&q).await.expect("search");
    assert_eq!(
        page.traces,
        vec![TraceSummary {
            trace_id: t1,
            root_service: "sf-frontend".into(),
            root_operation: "GET /a".into(),
            start_ns: t0,
            duration_ns: 100 * MS,
            span_count: 2,
            services: vec!["sf-backend".into(), "sf-frontend".into()],
            error_count: 1,
            cold_spans: 0,
        }],
        "summary covers the whole trace"
    );
    assert!(page.next_cursor.is_none(), "last page has no cursor");

    // No root stored: the earliest span stands in.
    let t4 = tid(4, 4);
    store
        .write_spans(&[
            span(t4, 2, Some(1), "sf-orphan", "late", t0 + 3_000 * MS + 5, MS),
            span(t4, 3, Some(1), "sf-orphan", "early", t0 + 3_000 * MS, MS),
        ])
        .await
        .expect("write orphans");
    let mut q = query(r);
    q.service = Some("sf-orphan".into());
    let page = store.search(&q).await.expect("search");
    assert_eq!(page.traces[0].root_operation, "early");
    assert_eq!(page.traces[0].duration_ns, MS + 5);
}

/// Typed attribute search.
pub async fn search_attributes(store: &dyn SpanStore) {
    let t0 = day(5) + 1_000;
    let (a, b, c, d) = (tid(5, 1), tid(5, 2), tid(5, 3), tid(5, 4));
    let mut sa = span(a, 0, None, "sa-svc", "op", t0, MS);
    sa.attributes = vec![
        kv("http.status_code", AttrValue::Int(500)),
        kv("ok", AttrValue::Bool(true)),
        kv("ratio", AttrValue::Double(0.25)),
    ];
    let mut sb = span(b, 0, None, "sa-svc", "op", t0 + 1, MS);
    sb.attributes = vec![
        kv("http.status_code", AttrValue::Str("500".into())),
        kv("user", AttrValue::Str("alice".into())),
    ];
    // The two conditions are on different spans of trace c.
    let mut sc1 = span(c, 0, None, "sa-svc", "op", t0 + 2, MS);
    sc1.attributes = vec![kv("user", AttrValue::Str("bob".into()))];
    let mut sc2 = span(c, 1, Some(0), "sa-svc", "op", t0 + 3, MS);
    sc2.attributes = vec![kv("ok", AttrValue::Bool(true))];
    let mut sd = span(d, 0, None, "sa-svc", "op", t0 + 4, MS);
    sd.attributes = vec![
        kv("ok", AttrValue::Bool(false)),
        kv("ratio", AttrValue::Double(0.5)),
        kv("n", AttrValue::Int(1)),
    ];
    store
        .write_spans(&[sa, sb, sc1, sc2, sd])
        .await
        .expect("write");
    let r = day_range(day(5));
    let check = |filters: Vec<(&str, AttrValue)>, want: Vec<TraceId>, what: &'static str| {
        let mut q = query(r);
        q.attributes = filters
            .into_iter()
            .map(|(k, v)| AttrFilter {
                key: k.into(),
                value: v,
                mode: Default::default(),
            })
            .collect();
        async move {
            assert_eq!(search_ids(store, &q).await, want, "{what}");
        }
    };
    check(
        vec![("http.status_code", AttrValue::Int(500))],
        vec![a],
        "int matches only int",
    )
    .await;
    check(
        vec![("http.status_code", AttrValue::Str("500".into()))],
        vec![b],
        "string matches only string",
    )
    .await;
    check(vec![("ok", AttrValue::Bool(true))], vec![c, a], "bool").await;
    check(vec![("ok", AttrValue::Bool(false))], vec![d], "bool false").await;
    check(vec![("ratio", AttrValue::Double(0.25))], vec![a], "double").await;
    check(
        vec![("n", AttrValue::Double(1.0))],
        vec![],
        "double does not match int",
    )
    .await;
    check(
        vec![
            ("user", AttrValue::Str("bob".into())),
            ("ok", AttrValue::Bool(true)),
        ],
        vec![],
        "one span must hold all",
    )
    .await;
    check(
        vec![
            ("ok", AttrValue::Bool(true)),
            ("ratio", AttrValue::Double(0.25)),
        ],
        vec![a],
        "two on one span",
    )
    .await;
    check(
        vec![("missing", AttrValue::Str("x".into()))],
        vec![],
        "missing key",
    )
    .await;
    check(
        vec![("user", AttrValue::Str("ALICE".into()))],
        vec![],
        "case-sensitive",
    )
    .await;
}

/// Jaeger-style text conditions (`AttrMatch::Text`): an attribute matches
/// when its text as Jaeger renders it equals the given string, whatever its
/// stored type; typed conditions on the same data stay typed.
pub async fn search_attributes_as_text(store: &dyn SpanStore) {
    let t0 = day(13) + 1_000;
    let (a, b, c, d, e) = (tid(14, 1), tid(14, 2), tid(14, 3), tid(14, 4), tid(14, 5));
    let mut sa = span(a, 0, None, "txt-svc", "op", t0, MS);
    sa.attributes = vec![
        kv("http.status_code", AttrValue::Int(500)),
        kv("version", AttrValue::Str("1.0".into())),
        kv("cached", AttrValue::Bool(true)),
    ];
    // Zipkin sends every tag as a string.
    let mut sb = span(b, 0, None, "txt-svc", "op", t0 + 1, MS);
    sb.attributes = vec![
        kv("http.status_code", AttrValue::Str("500".into())),
        kv("cached", AttrValue::Str("true".into())),
    ];
    let mut sc = span(c, 0, None, "txt-svc", "op", t0 + 2, MS);
    sc.attributes = vec![
        kv("http.status_code", AttrValue::Double(500.0)),
        kv("version", AttrValue::Double(1.0)),
        kv("ratio", AttrValue::Double(0.25)),
    ];
    let mut sd = span(d, 0, None, "txt-svc", "op", t0 + 3, MS);
    sd.attributes = vec![
        kv("http.status_code", AttrValue::Int(200)),
        kv("version", AttrValue::Str("1".into())),
    ];
    let mut se = span(e, 0, None, "txt-svc", "op", t0 + 4, MS);
    se.attributes = vec![kv("http.status_code", AttrValue::Str("0500".into()))];
    store
        .write_spans(&[sa, sb, sc, sd, se])
        .await
        .expect("write");
    let r = day_range(day(13));
    let check = |filters: Vec<AttrFilter>, want: Vec<TraceId>, what: &'static str| {
        let mut q = query(r);
        q.attributes = filters;
        async move {
            assert_eq!(search_ids(store, &q).await, want, "{what}");
        }
    };
    check(
        vec![AttrFilter::text("http.status_code", "500")],
        vec![c, b, a],
        "500 as text: int, string and double 500, not \"0500\"",
    )
    .await;
    check(
        vec![AttrFilter::text("version", "1.0")],
        vec![a],
        "1.0 as text: only the string (Jaeger prints the double 1.0 as 1)",
    )
    .await;
    check(
        vec![AttrFilter::text("version", "1")],
        vec![d, c],
        "1 as text: the string \"1\" and the double 1.0",
    )
    .await;
    check(
        vec![AttrFilter::text("cached", "true")],
        vec![b, a],
        "true as text: bool and string",
    )
    .await;
    check(
        vec![AttrFilter::text("ratio", "0.25")],
        vec![c],
        "a double by its text",
    )
    .await;
    check(
        vec![
            AttrFilter::text("http.status_code", "500"),
            AttrFilter::text("cached", "true"),
        ],
        vec![b, a],
        "two text conditions on one span",
    )
    .await;
    check(
        vec![
            AttrFilter::text("http.status_code", "500"),
            AttrFilter::typed("version", AttrValue::Str("1.0".into())),
        ],
        vec![a],
        "text and typed together",
    )
    .await;
    check(
        vec![AttrFilter::typed("http.status_code", AttrValue::Int(500))],
        vec![a],
        "typed stays typed",
    )
    .await;
    check(
        vec![AttrFilter::text("http.status_code", "x') OR 1=1 --")],
        vec![],
        "hostile text",
    )
    .await;
}

/// Latency/rate rollups narrowed to span kinds (`LatencyQuery::kinds`): what
/// a service's request rate counts (its SERVER and CONSUMER spans).
pub async fn latency_by_kind(store: &dyn SpanStore) {
    let m0 = day(14) + 60 * MINUTE_NS;
    let mut agg = RollupAggregator::default();
    let mut n = 0u32;
    // (kind, operation, spans, errors, duration)
    let plan = [
        (SpanKind::Server, "GET /a", 10u64, 2u64, 100 * MS),
        (SpanKind::Consumer, "msg", 4, 1, 100 * MS),
        (SpanKind::Internal, "GET /a", 30, 0, MS),
        (SpanKind::Client, "call", 20, 10, 50 * MS),
    ];
    for (kind, op, count, errors, dur) in plan {
        for i in 0..count {
            n += 1;
            let minute = (i % 2) * MINUTE_NS;
            let mut s = span(
                tid(15, n),
                0,
                None,
                "lk-svc",
                op,
                m0 + minute + n as u64 * MS,
                dur,
            );
            s.kind = kind;
            if i < errors {
                s.status_code = StatusCode::Error;
            }
            agg.observe(&s);
        }
    }
    store
        .write_rollups(&agg.drain_all())
        .await
        .expect("rollups");
    let range = TimeRange {
        start_ns: m0,
        end_ns: m0 + 2 * MINUTE_NS,
    };
    let lat = |operation: Option<&str>, kinds: Vec<SpanKind>, step_ns: Option<u64>| {
        let q = LatencyQuery {
            service: "lk-svc".into(),
            operation: operation.map(str::to_string),
            range,
            step_ns,
            kinds,
        };
        async move { store.latency(&q).await.expect("latency") }
    };
    let total = |pts: Vec<LatencyPoint>| {
        pts.iter()
            .fold((0, 0), |(c, e), p| (c + p.count, e + p.errors))
    };
    let entry = vec![SpanKind::Server, SpanKind::Consumer];
    let pts = lat(None, entry.clone(), None).await;
    assert_eq!(pts.len(), 1);
    assert_eq!((pts[0].count, pts[0].errors), (14, 3), "server + consumer");
    assert_close("entry p50", pts[0].p50_ns, 100 * MS);
    assert_close("entry p99", pts[0].p99_ns, 100 * MS);
    assert_eq!(total(lat(None, vec![], None).await), (64, 13), "every kind");
    assert_eq!(
        total(lat(None, vec![SpanKind::Client], None).await),
        (20, 10),
        "client only"
    );
    assert_eq!(
        total(lat(None, vec![SpanKind::Producer], None).await),
        (0, 0),
        "a kind with no spans"
    );
    assert_eq!(
        total(lat(Some("GET /a"), entry.clone(), None).await),
        (10, 2),
        "operation and kinds together"
    );
    assert_eq!(
        total(lat(Some("GET /a"), vec![], None).await),
        (40, 2),
        "operation, every kind"
    );
    let series = lat(None, entry, Some(MINUTE_NS)).await;
    assert_eq!(series.len(), 2, "one point per minute");
    assert_eq!(series[0].count + series[1].count, 14);
    assert_eq!(
        (series[0].count, series[1].count),
        (7, 7),
        "split by minute"
    );
}

/// Cursor pagination walks every match once, newest first.
pub async fn search_pagination(store: &dyn SpanStore) {
    let t0 = day(6) + 1_000_000;
    let mut spans = Vec::new();
    let mut want = Vec::new();
    for i in 0..25u32 {
        // Traces 10 and 11 start at the same instant: the cursor must break the tie.
        let start = if i == 11 {
            t0 + 10 * 1_000 * MS
        } else {
            t0 + i as u64 * 1_000 * MS
        };
        spans.push(span(tid(6, i), 0, None, "pg-svc", "op", start, MS));
        want.push(tid(6, i));
    }
    store.write_spans(&spans).await.expect("write");
    let mut q = query(day_range(day(6)));
    q.limit = 10;
    let mut seen: Vec<TraceSummary> = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = store.search(&q).await.expect("search page");
        sizes.push(page.traces.len());
        seen.extend(page.traces);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![10, 10, 5], "page sizes");
    let got: BTreeSet<TraceId> = seen.iter().map(|t| t.trace_id).collect();
    assert_eq!(got.len(), 25, "no trace twice");
    assert_eq!(
        got,
        want.into_iter().collect::<BTreeSet<_>>(),
        "every trace once"
    );
    assert!(
        seen.windows(2).all(|w| w[0].start_ns >= w[1].start_ns),
        "newest first across pages"
    );
    let mut q = query(day_range(day(6)));
    q.limit = 25;
    assert!(
        store
            .search(&q)
            .await
            .expect("search")
            .next_cursor
            .is_none(),
        "exact fit has no next page"
    );
    q.cursor = Some("not a cursor".into());
    assert!(
        store.search(&q).await.is_err(),
        "garbage cursor is an error"
    );
}

/// One condition set of [`search_early_stop_exact`], checked against a model.
struct ModelQuery {
    what: &'static str,
    range: TimeRange,
    service: Option<&'static str>,
    operation: Option<&'static str>,
    attr: Option<(&'static str, &'static str)>,
    min_duration_ns: Option<u64>,
    max_duration_ns: Option<u64>,
    errors_only: bool,
}

impl ModelQuery {
    fn matches(&self, s: &Span) -> bool {
        s.start_ns >= self.range.start_ns
            && s.start_ns < self.range.end_ns
            && self.service.is_none_or(|v| s.service_name == v)
            && self.operation.is_none_or(|v| s.name == v)
            && self.min_duration_ns.is_none_or(|v| s.duration_ns() >= v)
            && self.max_duration_ns.is_none_or(|v| s.duration_ns() <= v)
            && (!self.errors_only || s.status_code == StatusCode::Error)
            && self.attr.is_none_or(|(k, v)| {
                s.attributes
                    .iter()
                    .any(|a| a.key == k && a.value == AttrValue::Str(v.into()))
            })
    }

    fn query(&self, limit: usize) -> TraceQuery {
        TraceQuery {
            service: self.service.map(Into::into),
            operation: self.operation.map(Into::into),
            attributes: self
                .attr
                .map(|(k, v)| vec![AttrFilter::typed(k, AttrValue::Str(v.into()))])
                .unwrap_or_default(),
            min_duration_ns: self.min_duration_ns,
            max_duration_ns: self.max_duration_ns,
            errors_only: self.errors_only,
            range: self.range,
            limit,
            cursor: None,
        }
    }
}

/// Search returns exactly the traces a complete scan would, in order, on every
/// page, however a sink stops early: long traces whose root starts hours before
/// their only matching span, traces starting before the range, many traces
/// with the same start (ties broken by trace id across page boundaries), a
/// service that matches only in the oldest part of the range, `limit + 1`
/// exactness of the next-page cursor, and every filter kind. Expected pages come
/// from a model over the written spans.
pub async fn search_early_stop_exact(store: &dyn SpanStore) {
    const HOUR: u64 = 3_600_000 * MS;
    let d = day(16);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut spans = Vec::new();
    for i in 0..150u32 {
        let t = tid(16, i);
        // Every seventh trace starts on a 10-minute mark: many equal starts.
        let root_start = if i % 7 == 0 {
            d + HOUR + rnd(120) * 10 * 60_000 * MS
        } else {
            d + HOUR + rnd(20 * HOUR)
        };
        // One trace in ten is long: children up to 20 hours after the root.
        let spread = if i % 10 == 3 { 20 * HOUR } else { 50 * MS };
        let mut root = span(t, 0, None, "sw-a", "root", root_start, 200 * MS);
        root.attributes.push(kv(
            "sw.k",
            AttrValue::Str(compact_str::format_compact!("v{}", rnd(3))),
        ));
        spans.push(root);
        for c in 1..=rnd(5) as u32 {
            let start = (root_start + 1 + rnd(spread)).min(d + DAY - 1);
            let svc = ["sw-a", "sw-b", "sw-c"][rnd(3) as usize];
            let op = ["op1", "op2"][rnd(2) as usize];
            let mut s = span(t, c, Some(0), svc, op, start, (1 + rnd(100)) * MS);
            if rnd(5) == 0 {
                s.status_code = StatusCode::Error;
            }
            s.attributes.push(kv(
                "sw.k",
                AttrValue::Str(compact_str::format_compact!("v{}", rnd(3))),
            ));
            spans.push(s);
        }
        // A service seen only in the oldest two hours of the day.
        if root_start < d + 3 * HOUR {
            spans.push(span(t, 9, Some(0), "sw-old", "op1", root_start + MS, MS));
        }
    }
    // Traces starting in the day before, with a matching span in this day.
    for i in 0..3u32 {
        let t = tid(16, 1000 + i);
        spans.push(span(
            t,
            0,
            None,
            "sw-a",
            "root",
            d - HOUR + i as u64,
            2 * HOUR,
        ));
        spans.push(span(
            t,
            1,
            Some(0),
            "sw-b",
            "op1",
            d + 10 * HOUR + i as u64,
            MS,
        ));
        spans.push(span(
            t,
            2,
            Some(0),
            "sw-old",
            "op1",
            d + HOUR + i as u64,
            MS,
        ));
    }
    for chunk in spans.chunks(100) {
        store.write_spans(chunk).await.expect("write");
    }
    let mut tstart: std::collections::BTreeMap<TraceId, u64> = Default::default();
    for s in &spans {
        let e = tstart.entry(s.trace_id).or_insert(s.start_ns);
        *e = (*e).min(s.start_ns);
    }
    let whole = day_range(d);
    let base = ModelQuery {
        what: "",
        range: whole,
        service: None,
        operation: None,
        attr: None,
        min_duration_ns: None,
        max_duration_ns: None,
        errors_only: false,
    };
    let queries = vec![
        ModelQuery {
            what: "service",
            service: Some("sw-b"),
            ..base
        },
        ModelQuery {
            what: "service + operation",
            service: Some("sw-c"),
            operation: Some("op1"),
            ..base
        },
        ModelQuery {
            what: "attribute",
            attr: Some(("sw.k", "v1")),
            ..base
        },
        ModelQuery {
            what: "service + duration",
            service: Some("sw-a"),
            min_duration_ns: Some(40 * MS),
            max_duration_ns: Some(90 * MS),
            ..base
        },
        ModelQuery {
            what: "errors",
            errors_only: true,
            ..base
        },
        ModelQuery {
            what: "only old matches",
            service: Some("sw-old"),
            ..base
        },
        ModelQuery {
            what: "no filter",
            ..base
        },
        ModelQuery {
            what: "sub-range",
            range: TimeRange {
                start_ns: d + 5 * HOUR,
                end_ns: d + 15 * HOUR,
            },
            service: Some("sw-b"),
            ..base
        },
    ];
    for mq in &queries {
        let mut want: Vec<(u64, TraceId)> = spans
            .iter()
            .filter(|s| mq.matches(s))
            .map(|s| (tstart[&s.trace_id], s.trace_id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(want.len() > 3, "{}: the data set gives matches", mq.what);
        want.dedup();
        for limit in [3, 10, want.len() - 1, want.len()] {
            let mut q = mq.query(limit);
            let mut got: Vec<(u64, TraceId)> = Vec::new();
            for page_no in 0.. {
                let page = store
                    .search(&q)
                    .await
                    .unwrap_or_else(|e| panic!("{} limit {limit}: {e}", mq.what));
                let offset = page_no * limit;
                let expect = &want[offset.min(want.len())..(offset + limit).min(want.len())];
                let keys: Vec<(u64, TraceId)> = page
                    .traces
                    .iter()
                    .map(|t| (t.start_ns, t.trace_id))
                    .collect();
                assert_eq!(keys, expect, "{} limit {limit} page {page_no}", mq.what);
                got.extend(keys);
                let more = offset + limit < want.len();
                assert_eq!(
                    page.next_cursor.is_some(),
                    more,
                    "{} limit {limit} page {page_no}: next cursor iff more traces",
                    mq.what
                );
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(got, want, "{} limit {limit}: every trace once", mq.what);
        }
    }
}

/// Trace lookup by id, optionally narrowed by time.
pub async fn trace_lookup(store: &dyn SpanStore) {
    let t0 = day(7) + 5_000;
    let t = tid(7, 1);
    let spans = vec![
        span(t, 2, Some(0), "tl-svc", "c", t0 + 2 * 3_600_000_000_000, MS),
        span(t, 0, None, "tl-svc", "a", t0, 10 * MS),
        span(t, 1, Some(0), "tl-svc", "b", t0 + 1, MS),
    ];
    store.write_spans(&spans).await.expect("write");
    let got = store.get_trace(t, None).await.expect("get");
    assert_eq!(
        got.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["a", "b", "c"],
        "ordered by start"
    );
    let got = store
        .get_trace(
            t,
            Some(TimeRange {
                start_ns: t0,
                end_ns: t0 + 3_600_000_000_000,
            }),
        )
        .await
        .expect("get in range");
    assert_eq!(got.len(), 2, "range narrows");
    assert!(
        store
            .get_trace(tid(7, 2), None)
            .await
            .expect("unknown")
            .is_empty(),
        "unknown trace"
    );
}

/// What `get_traces(ids, range)` must return: `get_trace` of each distinct id
/// (first appearance order) that has spans.
async fn one_by_one(
    store: &dyn SpanStore,
    ids: &[TraceId],
    range: Option<TimeRange>,
) -> Vec<TraceSpans> {
    let mut out: Vec<TraceSpans> = Vec::new();
    for id in ids {
        if out.iter().any(|(t, _)| t == id) {
            continue;
        }
        let spans = store.get_trace(*id, range).await.expect("get_trace");
        if !spans.is_empty() {
            out.push((*id, spans));
        }
    }
    out
}

/// Many traces read at once (`get_traces`) equal the single-trace reads:
/// order of the request, duplicates read once, missing ids absent, a trace
/// written in several batches (one of them retried) over two days, the time
/// range, more ids than SQLite binds in one statement, and the id limit.
pub async fn batch_trace_reads(store: &dyn SpanStore) {
    let d1 = day(17);
    let d2 = day(18);
    let svc = "batch-svc";
    // Trace 1: every field set, on day 1.
    let mut full = full_span();
    full.trace_id = tid(17, 1);
    let shift = d1 + 3_600_000_000_000 - full.start_ns;
    full.start_ns += shift;
    full.end_ns += shift;
    for e in &mut full.events {
        e.time_ns += shift;
    }
    full.service_name = svc.into();
    let t1 = vec![
        span(
            full.trace_id,
            3,
            None,
            svc,
            "root",
            full.start_ns - 10,
            90 * MS,
        ),
        full,
    ];
    // Trace 2: root late on day 1, children on day 2 in a second batch that
    // is then retried (a duplicate until the database merges it).
    let t2id = tid(17, 2);
    let t2_first = vec![span(t2id, 0, None, svc, "root", d2 - 5 * MS, 60 * MS)];
    let t2_second = vec![
        span(t2id, 2, Some(0), svc, "child-b", d2 + 2 * MS, MS),
        span(t2id, 1, Some(0), svc, "child-a", d2 + MS, 2 * MS),
    ];
    // Trace 3: one span on day 2; traces 10..50: two spans each, on day 2, with
    // the same span ids in every trace.
    let t3 = vec![span(tid(17, 3), 0, None, svc, "single", d2 + 10 * MS, MS)];
    let mut many = Vec::new();
    for n in 10..50u32 {
        let t = tid(17, n);
        let at = d2 + 3_600_000_000_000 + n as u64 * MS;
        many.push(span(t, 0, None, svc, "many-root", at, 5 * MS));
        many.push(span(t, 1, Some(0), svc, "many-child", at + 1, MS));
    }
    let mut first = t1.clone();
    first.extend(t2_first.clone());
    store.write_spans(&first).await.expect("write day 1");
    store.write_spans(&t2_second).await.expect("write day 2");
    store.write_spans(&t2_second).await.expect("retry day 2");
    store.write_spans(&t3).await.expect("write trace 3");
    store.write_spans(&many).await.expect("write many");

    let missing = tid(17, 9_999);
    let (a, b, c) = (tid(17, 1), t2id, tid(17, 3));
    let ids = [c, a, missing, b, a, c, missing];
    let got = store.get_traces(&ids, None).await.expect("get_traces");
    let mut t1_sorted = t1.clone();
    t1_sorted.sort_by_key(|s| s.start_ns);
    let mut t2_sorted = t2_first.clone();
    t2_sorted.extend(t2_second.iter().cloned());
    t2_sorted.sort_by_key(|s| s.start_ns);
    assert_eq!(
        got,
        vec![(c, t3.clone()), (a, t1_sorted), (b, t2_sorted)],
        "request order, each trace once, missing ids absent, spans ordered by start"
    );
    assert_eq!(
        got,
        one_by_one(store, &ids, None).await,
        "same as get_trace"
    );

    let many_ids: Vec<TraceId> = (10..50u32).rev().map(|n| tid(17, n)).collect();
    let got = store.get_traces(&many_ids, None).await.expect("many");
    assert_eq!(got.len(), 40, "every trace of the page");
    assert!(got.iter().all(|(_, s)| s.len() == 2));
    assert_eq!(
        got,
        one_by_one(store, &many_ids, None).await,
        "many: same as get_trace"
    );

    // The range applies to spans, as in get_trace: day 2 only.
    let r = Some(day_range(d2));
    let ids = [a, b, c];
    let got = store.get_traces(&ids, r).await.expect("with range");
    assert_eq!(
        got.iter().map(|(id, s)| (*id, s.len())).collect::<Vec<_>>(),
        vec![(b, 2), (c, 1)],
        "trace 1 (day 1 only) absent, trace 2 without its day-1 root"
    );
    assert_eq!(
        got,
        one_by_one(store, &ids, r).await,
        "range: same as get_trace"
    );

    // Empty and all-missing requests.
    assert!(store.get_traces(&[], None).await.expect("empty").is_empty());
    assert!(store
        .get_traces(&[missing, tid(17, 9_998)], None)
        .await
        .expect("all missing")
        .is_empty());

    // More distinct ids than one SQLite statement binds: found ids at both
    // ends and in the middle, the rest unknown.
    let mut big: Vec<TraceId> = (0..900u32).map(|n| tid(17, 10_000 + n)).collect();
    big[0] = tid(17, 10);
    big[450] = b;
    big[899] = c;
    big.push(b);
    let got = store.get_traces(&big, None).await.expect("900 ids");
    assert_eq!(
        got.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![tid(17, 10), b, c]
    );
    assert_eq!(
        got,
        one_by_one(store, &big, None).await,
        "900 ids: same as get_trace"
    );

    // The documented limit, counted with duplicates.
    let too_many = vec![a; MAX_TRACES_PER_READ + 1];
    match store.get_traces(&too_many, None).await {
        Err(StorageError::InvalidQuery(msg)) => {
            assert!(msg.contains(&MAX_TRACES_PER_READ.to_string()), "{msg}")
        }
        other => panic!("more than MAX_TRACES_PER_READ ids: {other:?}"),
    }
    let at_limit = vec![a; MAX_TRACES_PER_READ];
    assert_eq!(
        store
            .get_traces(&at_limit, None)
            .await
            .expect("at the limit")
            .len(),
        1
    );
}

/// Services and operations over a window.
pub async fn services_and_operations(store: &dyn SpanStore) {
    let t0 = day(8) + 1_000;
    let mut c = span(tid(8, 1), 1, Some(0), "so-a", "call", t0 + 1, MS);
    c.kind = SpanKind::Client;
    let mut c2 = span(tid(8, 1), 2, Some(0), "so-a", "call", t0 + 2, MS);
    c2.kind = SpanKind::Server;
    let spans = vec![
        span(tid(8, 1), 0, None, "so-a", "zeta", t0, MS),
        c,
        c2,
        span(tid(8, 2), 0, None, "so-b", "alpha", t0 + DAY / 2, MS),
    ];
    store.write_spans(&spans).await.expect("write");
    let r = day_range(day(8));
    assert_eq!(
        store.services(r).await.expect("services"),
        vec!["so-a".to_string(), "so-b".to_string()]
    );
    assert_eq!(
        store
            .services(TimeRange {
                start_ns: t0,
                end_ns: t0 + DAY / 4
            })
            .await
            .expect("services"),
        vec!["so-a".to_string()],
        "window"
    );
    assert_eq!(
        store.operations("so-a", r).await.expect("operations"),
        vec![
            Operation {
                name: "call".into(),
                kind: SpanKind::Server
            },
            Operation {
                name: "call".into(),
                kind: SpanKind::Client
            },
            Operation {
                name: "zeta".into(),
                kind: SpanKind::Server
            },
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "sorted (name, kind)"
    );
    assert!(store
        .operations("so-missing", r)
        .await
        .expect("operations")
        .is_empty());
}

/// Dependency edges from rollups the aggregator computed.
pub async fn dependencies(store: &dyn SpanStore) {
    let t0 = day(9) + 30 * MINUTE_NS;
    let mut agg = RollupAggregator::default();
    let mut lat = Vec::new();
    let mut db_lat = Vec::new();
    for i in 0..20u32 {
        let t = tid(9, i);
        let start = t0 + i as u64 * 1_000 * MS;
        let mut client = span(t, 1, Some(0), "dp-web", "call cart", start + MS, 40 * MS);
        client.kind = SpanKind::Client;
        let mut server = span(
            t,
            2,
            Some(1),
            "dp-cart",
            "cart",
            start + 2 * MS,
            (10 + i as u64) * MS,
        );
        server.kind = SpanKind::Server;
        if i % 5 == 0 {
            server.status_code = StatusCode::Error;
        }
        lat.push(server.duration_ns());
        let mut db = span(
            t,
            3,
            Some(2),
            "dp-cart",
            "SELECT",
            start + 3 * MS,
            (1 + i as u64) * MS,
        );
        db.kind = SpanKind::Client;
        db.attributes
            .push(kv("db.system", AttrValue::Str("postgresql".into())));
        db_lat.push(db.duration_ns());
        // Child before parent for half the traces.
        let order = if i % 2 == 0 {
            vec![
                span(t, 0, None, "dp-web", "GET /", start, 50 * MS),
                client,
                server,
                db,
            ]
        } else {
            vec![
                db,
                server,
                client,
                span(t, 0, None, "dp-web", "GET /", start, 50 * MS),
            ]
        };
        for s in &order {
            agg.observe(s);
        }
    }
    store
        .write_rollups(&agg.drain_all())
        .await
        .expect("write rollups");
    let deps = store
        .dependencies(day_range(day(9)))
        .await
        .expect("dependencies");
    let pairs: Vec<(&str, &str)> = deps
        .iter()
        .map(|e| (e.caller.as_str(), e.callee.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![("dp-cart", "postgresql"), ("dp-web", "dp-cart")],
        "edges (sorted)"
    );
    let cart = &deps[1];
    assert_eq!((cart.calls, cart.errors), (20, 4));
    assert_eq!(cart.avg_ns, lat.iter().sum::<u64>() / 20, "average latency");
    lat.sort();
    assert_close("edge p95", cart.p95_ns, nearest_rank(&lat, 0.95));
    let pg = &deps[0];
    assert_eq!(
        (pg.calls, pg.errors, pg.avg_ns),
        (20, 0, db_lat.iter().sum::<u64>() / 20)
    );
    assert!(store
        .dependencies(day_range(day(10) + DAY * 100))
        .await
        .expect("empty")
        .is_empty());
}

/// Exact percentiles equal the nearest-rank values computed here.
pub async fn exact_percentiles(store: &dyn SpanStore) {
    let t0 = day(10) + 1_000;
    let mut spans = Vec::new();
    let mut all = Vec::new();
    let mut op_a = Vec::new();
    for i in 0..101u32 {
        let dur = ((i as u64 * 37) % 101 + 1) * MS + i as u64;
        let name = if i % 3 == 0 { "ep-a" } else { "ep-b" };
        if i % 3 == 0 {
            op_a.push(dur);
        }
        all.push(dur);
        spans.push(span(
            tid(10, i),
            0,
            None,
            "ep-svc",
            name,
            t0 + i as u64 * MS,
            dur,
        ));
    }
    store.write_spans(&spans).await.expect("write");
    all.sort();
    op_a.sort();
    let qs = [0.5, 0.95, 0.99, 0.0, 1.0];
    let r = day_range(day(10));
    let got = store
        .exact_percentiles("ep-svc", None, &[], r, &qs)
        .await
        .expect("pct");
    assert_eq!(
        got,
        qs.iter()
            .map(|q| nearest_rank(&all, *q))
            .collect::<Vec<_>>(),
        "service percentiles"
    );
    let got = store
        .exact_percentiles("ep-svc", Some("ep-a"), &[], r, &qs)
        .await
        .expect("pct op");
    assert_eq!(
        got,
        qs.iter()
            .map(|q| nearest_rank(&op_a, *q))
            .collect::<Vec<_>>(),
        "operation percentiles"
    );
    let none = store
        .exact_percentiles("ep-nothing", None, &[], r, &qs)
        .await
        .expect("pct none");
    assert!(none.is_empty(), "no spans: empty");
}

/// Latency and rates from rollups, within the sketch's accuracy.
pub async fn latency_from_rollups(store: &dyn SpanStore) {
    let m0 = day(11) + 60 * MINUTE_NS;
    let mut agg = RollupAggregator::default();
    let mut per_minute: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let mut errors = [0u64; 3];
    let mut n = 0u32;
    for (minute, bucket) in per_minute.iter_mut().enumerate() {
        for i in 0..400u64 {
            let dur = (i * i % 997 + 1) * 10_000 + minute as u64 * 7;
            let mut s = span(
                tid(11, n),
                0,
                None,
                "lt-svc",
                "lt-op",
                m0 + minute as u64 * MINUTE_NS + i * MS,
                dur,
            );
            if i % 10 == 0 {
                s.status_code = StatusCode::Error;
                errors[minute] += 1;
            }
            bucket.push(dur);
            agg.observe(&s);
            n += 1;
            if n == 600 {
                // Two drains: the middle minute is written in two batches.
                store
                    .write_rollups(&agg.drain_all())
                    .await
                    .expect("rollups 1");
            }
        }
    }
    store
        .write_rollups(&agg.drain_all())
        .await
        .expect("rollups 2");
    let range = TimeRange {
        start_ns: m0,
        end_ns: m0 + 3 * MINUTE_NS,
    };
    let lq = |step_ns| LatencyQuery {
        service: "lt-svc".into(),
        operation: Some("lt-op".into()),
        range,
        step_ns,
        kinds: vec![],
    };
    let pts = store
        .latency(&lq(Some(MINUTE_NS)))
        .await
        .expect("latency series");
    assert_eq!(pts.len(), 3, "one point per minute");
    for (i, p) in pts.iter().enumerate() {
        let mut v = per_minute[i].clone();
        v.sort();
        assert_eq!(p.start_ns, m0 + i as u64 * MINUTE_NS);
        assert_eq!((p.count, p.errors), (400, errors[i]), "minute {i}");
        assert_close("p50", p.p50_ns, nearest_rank(&v, 0.5));
        assert_close("p95", p.p95_ns, nearest_rank(&v, 0.95));
        assert_close("p99", p.p99_ns, nearest_rank(&v, 0.99));
    }
    let total = store.latency(&lq(None)).await.expect("latency total");
    assert_eq!(total.len(), 1);
    let mut all: Vec<u64> = per_minute.concat();
    all.sort();
    assert_eq!(total[0].count, 1200);
    assert_close("total p99", total[0].p99_ns, nearest_rank(&all, 0.99));
    let svc = store
        .latency(&LatencyQuery {
            service: "lt-svc".into(),
            operation: None,
            range,
            step_ns: None,
            kinds: vec![],
        })
        .await
        .expect("service latency");
    assert_eq!(svc[0].count, 1200, "whole service");
    let empty = store
        .latency(&LatencyQuery {
            service: "lt-none".into(),
            operation: None,
            range,
            step_ns: None,
            kinds: vec![],
        })
        .await
        .expect("empty latency");
    assert!(
        empty.iter().all(|p| p.count == 0),
        "nothing counted for an unknown service"
    );
}

/// Hostile strings are stored and returned exactly, and searchable.
pub async fn hostile_strings(store: &dyn SpanStore) {
    let t0 = day(12) + 1_000;
    let svc = "h'svc\"; DROP TABLE spans; --";
    let op = "名前 \"x\" \\ 'y' %_ \u{1F680} \t\r\n end";
    let big: String = "ab'\"\\%_😀é\n".chars().cycle().take(100 * 1024).collect();
    let mut s = span(tid(12, 1), 0, None, svc, op, t0, MS);
    s.attributes = vec![
        kv("k'\"\\", AttrValue::Str("v') OR 1=1 --".into())),
        kv("big", AttrValue::Str(big.as_str().into())),
        kv(
            "sql",
            AttrValue::Str("'; DELETE FROM spans WHERE '1'='1".into()),
        ),
    ];
    s.status_message = big.clone();
    s.events.push(Event {
        time_ns: t0,
        name: big.as_str().into(),
        attributes: vec![kv(&big, AttrValue::Str(big.as_str().into()))],
        dropped_attributes_count: 0,
    });
    let wild = span(tid(12, 2), 0, None, "h%", "h_", t0 + 1, MS);
    store.write_spans(&[s.clone(), wild]).await.expect("write");
    assert_eq!(
        store.get_trace(s.trace_id, None).await.expect("get"),
        vec![s.clone()],
        "exact round trip"
    );
    let r = day_range(day(12));
    let services = store.services(r).await.expect("services");
    assert_eq!(
        services,
        vec!["h%".to_string(), svc.to_string()],
        "hostile service names listed"
    );
    assert_eq!(store.operations(svc, r).await.expect("ops")[0].name, op);
    let mut q = query(r);
    q.service = Some(svc.into());
    q.operation = Some(op.into());
    q.attributes = vec![
        AttrFilter {
            key: "k'\"\\".into(),
            value: AttrValue::Str("v') OR 1=1 --".into()),
            mode: Default::default(),
        },
        AttrFilter {
            key: "big".into(),
            value: AttrValue::Str(big.as_str().into()),
            mode: Default::default(),
        },
    ];
    assert_eq!(
        search_ids(store, &q).await,
        vec![s.trace_id],
        "search by hostile values"
    );
    let mut q = query(r);
    q.service = Some("h_".into());
    assert!(
        search_ids(store, &q).await.is_empty(),
        "no wildcard matching"
    );
    q.service = Some("%".into());
    assert!(
        search_ids(store, &q).await.is_empty(),
        "no wildcard matching"
    );
    let mut q = query(r);
    q.attributes = vec![AttrFilter {
        key: "sql".into(),
        value: AttrValue::Str("x' OR '1'='1".into()),
        mode: Default::default(),
    }];
    assert!(
        search_ids(store, &q).await.is_empty(),
        "injection attempt matches nothing"
    );
    assert_eq!(
        store
            .get_trace(s.trace_id, None)
            .await
            .expect("still there")
            .len(),
        1
    );
}

/// Retention removes spans and rollups older than the cutoff and nothing else.
pub async fn retention(store: &dyn SpanStore) {
    let old_day = BASE - 30 * DAY;
    let new_day = BASE - 27 * DAY;
    let cutoff = BASE - 28 * DAY;
    let old = span(tid(13, 1), 0, None, "rt-old", "op", old_day + 1_000, MS);
    let new = span(tid(13, 2), 0, None, "rt-new", "op", new_day + 1_000, MS);
    store
        .write_spans(&[old.clone(), new.clone()])
        .await
        .expect("write");
    let mut agg = RollupAggregator::default();
    agg.observe(&old);
    agg.observe(&new);
    store
        .write_rollups(&agg.drain_all())
        .await
        .expect("rollups");
    let report = store.apply_retention(cutoff).await.expect("retention");
    assert!(
        report.rollups_deleted >= 1 || report.spans_deleted >= 1,
        "something reported deleted: {report:?}"
    );
    assert!(
        store
            .get_trace(old.trace_id, None)
            .await
            .expect("get old")
            .is_empty(),
        "old span deleted"
    );
    assert_eq!(
        store.get_trace(new.trace_id, None).await.expect("get new"),
        vec![new.clone()],
        "new span kept"
    );
    let lat = |svc: &str, d: u64| LatencyQuery {
        service: svc.into(),
        operation: None,
        range: day_range(d),
        step_ns: None,
        kinds: vec![],
    };
    let old_pts = store
        .latency(&lat("rt-old", old_day))
        .await
        .expect("old latency");
    assert!(old_pts.iter().all(|p| p.count == 0), "old rollups deleted");
    let new_pts = store
        .latency(&lat("rt-new", new_day))
        .await
        .expect("new latency");
    assert_eq!(
        new_pts.iter().map(|p| p.count).sum::<u64>(),
        1,
        "new rollups kept"
    );
    assert!(store
        .services(day_range(old_day))
        .await
        .expect("services")
        .is_empty());
    // Every other check's data is newer and still there.
    assert_eq!(
        store
            .get_trace(full_span().trace_id, None)
            .await
            .expect("round trip data")
            .len(),
        2
    );
    let deps = store.dependencies(day_range(day(9))).await.expect("deps");
    assert_eq!(deps.len(), 2, "other rollups kept");
}
