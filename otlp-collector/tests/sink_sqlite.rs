//! The shared conformance suite against the embedded SQLite store, plus
//! SQLite-specific checks (durability across reopen, exact retention counts,
//! concurrent readers while writing).

mod conformance;

use ferrotrace_collector::model::AttrValue;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::{SpanStore, StorageError, TimeRange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn committed_spans_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.db");
    let s = conformance::full_span();
    {
        let store = SqliteStore::open(&path).expect("open");
        store
            .write_spans(std::slice::from_ref(&s))
            .await
            .expect("write");
    }
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        store.get_trace(s.trace_id, None).await.expect("get"),
        vec![s]
    );
}

#[tokio::test]
async fn retention_reports_exact_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    let t0 = conformance::day(0);
    let spans: Vec<_> = (0..12_000u32)
        .map(|i| {
            let mut s = conformance::span(
                conformance::tid(50, i),
                0,
                None,
                "ret",
                "op",
                t0 + i as u64,
                1,
            );
            s.attributes
                .push(ferrotrace_collector::model::KeyValue::new(
                    "i",
                    AttrValue::Int(i as i64),
                ));
            s
        })
        .collect();
    store.write_spans(&spans).await.expect("write");
    // 10 000 spans start before the cutoff; deletion runs in several chunks.
    let report = store.apply_retention(t0 + 10_000).await.expect("retention");
    assert_eq!(report.spans_deleted, 10_000);
    let range = TimeRange {
        start_ns: t0,
        end_ns: t0 + conformance::DAY,
    };
    let left = store
        .exact_percentiles("ret", None, &[], range, &[1.0])
        .await
        .expect("pct");
    assert_eq!(left, vec![1]);
    let mut q = conformance_query(range);
    q.attributes = vec![ferrotrace_collector::storage::AttrFilter {
        key: "i".into(),
        value: AttrValue::Int(5),
        mode: Default::default(),
    }];
    assert!(
        store.search(&q).await.expect("search").traces.is_empty(),
        "attributes deleted with spans"
    );
    q.attributes[0].value = AttrValue::Int(11_999);
    assert_eq!(store.search(&q).await.expect("search").traces.len(), 1);
}

fn conformance_query(range: TimeRange) -> ferrotrace_collector::storage::TraceQuery {
    ferrotrace_collector::storage::TraceQuery {
        service: None,
        operation: None,
        attributes: vec![],
        min_duration_ns: None,
        max_duration_ns: None,
        errors_only: false,
        range,
        limit: 10,
        cursor: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_run_while_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    let t0 = conformance::day(0);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for b in 0..20u32 {
                let batch: Vec<_> = (0..200u32)
                    .map(|i| {
                        conformance::span(
                            conformance::tid(51, b * 200 + i),
                            0,
                            None,
                            "rw",
                            "op",
                            t0 + (b * 200 + i) as u64,
                            1,
                        )
                    })
                    .collect();
                store.write_spans(&batch).await.expect("write");
            }
        })
    };
    let range = TimeRange {
        start_ns: t0,
        end_ns: t0 + conformance::DAY,
    };
    let mut last = 0;
    while !writer.is_finished() {
        let services = store.services(range).await.expect("services while writing");
        assert!(services.len() <= 1);
        let n = store
            .search(&conformance_query(range))
            .await
            .expect("search while writing")
            .traces
            .len();
        assert!(n >= last.min(10));
        last = n;
    }
    writer.await.expect("writer");
    assert_eq!(
        store
            .exact_percentiles("rw", None, &[], range, &[0.5])
            .await
            .expect("pct"),
        vec![1]
    );
}

#[tokio::test]
async fn invalid_queries_are_rejected_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    let range = TimeRange {
        start_ns: 0,
        end_ns: conformance::DAY,
    };
    let bad_step = ferrotrace_collector::storage::LatencyQuery {
        service: "x".into(),
        operation: None,
        range,
        step_ns: Some(1_000),
        kinds: vec![],
    };
    assert!(matches!(
        store.latency(&bad_step).await,
        Err(StorageError::InvalidQuery(_))
    ));
    assert!(matches!(
        store.exact_percentiles("x", None, &[], range, &[1.5]).await,
        Err(StorageError::InvalidQuery(_))
    ));
    let mut q = conformance_query(range);
    q.attributes = vec![ferrotrace_collector::storage::AttrFilter {
        key: "k".into(),
        value: AttrValue::Bytes(vec![1]),
        mode: Default::default(),
    }];
    assert!(matches!(
        store.search(&q).await,
        Err(StorageError::InvalidQuery(_))
    ));
    assert!(SqliteStore::open("/proc/definitely/not/writable/traces.db").is_err());
}
