//! The ClickHouse sink against a throwaway `clickhouse-server` started by the
//! test (generated config, free loopback ports): the shared conformance suite,
//! then ClickHouse-specific behaviour (duplicates before merges, partition
//! drops, the trace-id lookup table, unreachable servers).

mod conformance;
mod support;

use ferrotrace_collector::model::{AttrValue, KeyValue};
use ferrotrace_collector::storage::clickhouse::{ClickHouseOptions, ClickHouseStore, Compression};
use ferrotrace_collector::storage::{
    AnalyticsReader, AttrFilter, Retention, SpanWriter, StorageError, TimeRange, TraceQuery,
    TraceReader,
};
use support::clickhouse::ChServer;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_passes_conformance_suite() {
    let Some(ch) = ChServer::start() else { return };
    let store = ClickHouseStore::connect(&ch.url("conformance"), ClickHouseOptions::default())
        .await
        .expect("connect");
    conformance::run_all(&store).await;
    // Connecting again to the migrated database applies nothing twice (three
    // migrations: the schema, the rollup origins table, the sampling counts).
    ClickHouseStore::connect(&ch.url("conformance"), ClickHouseOptions::default())
        .await
        .expect("reconnect");
    assert_eq!(
        ch.sql("SELECT count() FROM conformance.ft_schema_migrations")
            .trim(),
        "3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_passes_conformance_suite_with_lz4() {
    let Some(ch) = ChServer::start() else { return };
    let opts = ClickHouseOptions {
        compression: Compression::Lz4,
        ..ClickHouseOptions::default()
    };
    let store = ClickHouseStore::connect(&ch.url("conformance_lz4"), opts)
        .await
        .expect("connect");
    conformance::run_all(&store).await;
}

/// A batch whose rows are several send chunks long arrives whole, with and
/// without compression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_arrive_whole() {
    let Some(ch) = ChServer::start() else { return };
    for (db, compression) in [
        ("big_none", Compression::None),
        ("big_lz4", Compression::Lz4),
    ] {
        let opts = ClickHouseOptions {
            compression,
            ..ClickHouseOptions::default()
        };
        let store = ClickHouseStore::connect(&ch.url(db), opts)
            .await
            .expect("connect");
        let t0 = conformance::day(50);
        // 4,000 spans of ~1 KiB: both tables get several MiB in one insert.
        let spans: Vec<_> = (0..4_000u32)
            .map(|i| {
                let trace = conformance::tid(92, i / 100);
                let mut s = conformance::span(
                    trace,
                    i % 100,
                    (i % 100 != 0).then_some(0),
                    "big",
                    "op",
                    t0 + i as u64,
                    1_000,
                );
                s.attributes.push(KeyValue::new(
                    "blob",
                    AttrValue::Str(compact_str::format_compact!("{i:04}").repeat(250)),
                ));
                s.attributes
                    .push(KeyValue::new("n", AttrValue::Int(i as i64)));
                s
            })
            .collect();
        store.write_spans(&spans).await.expect("write");
        for table in ["ft_traces", "ft_spans"] {
            assert_eq!(
                ch.sql(&format!("SELECT count() FROM {db}.{table}")).trim(),
                "4000",
                "{db}.{table}"
            );
        }
        let trace = conformance::tid(92, 39);
        assert_eq!(
            store.get_trace(trace, None).await.expect("get"),
            spans[3_900..].to_vec()
        );
        let mut q = query(conformance::day_range(t0));
        q.attributes = vec![AttrFilter {
            key: "n".into(),
            value: AttrValue::Int(3_999),
            mode: Default::default(),
        }];
        let page = store.search(&q).await.expect("search");
        assert_eq!(page.traces.len(), 1, "{db}");
        assert_eq!(page.traces[0].trace_id, trace);
    }
}

/// Size-bounded retention on ClickHouse (issue 18): the tables' size from
/// `system.parts`, and evicting drops whole day partitions, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_eviction_drops_the_oldest_day_partitions() {
    let Some(ch) = ChServer::start() else {
        return;
    };
    let store = ClickHouseStore::connect(&ch.url("size"), ClickHouseOptions::default())
        .await
        .expect("connect");
    for day in 1..=4u64 {
        let spans: Vec<_> = (0..200u32)
            .map(|i| {
                conformance::span(
                    conformance::tid(70 + day as u8, i),
                    0,
                    None,
                    "size",
                    "op",
                    conformance::day(day) + u64::from(i) * 1_000,
                    7,
                )
            })
            .collect();
        store.write_spans(&spans).await.expect("write");
    }
    let before = store.disk_usage().await.expect("usage").expect("measured");
    assert_eq!(before.dir, None);
    assert_eq!(before.oldest_ns, Some(conformance::day(1)));
    assert!(before.live_bytes > 0);
    let r = store.evict_oldest(1, false).await.expect("evict");
    assert_eq!(r.cutoff_ns, conformance::day(2), "{r:?}");
    assert_eq!(r.spans_deleted, 200, "{r:?}");
    let after = store.disk_usage().await.expect("usage").expect("measured");
    assert_eq!(after.oldest_ns, Some(conformance::day(2)));
    assert!(after.live_bytes < before.live_bytes, "{before:?} {after:?}");
    let kept = store
        .get_trace(conformance::tid(74, 5), None)
        .await
        .expect("get");
    assert_eq!(kept.len(), 1, "the newest day is kept");
    let gone = store
        .get_trace(conformance::tid(71, 5), None)
        .await
        .expect("get");
    assert!(gone.is_empty(), "the oldest day is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_partitions_and_outage() {
    let Some(mut ch) = ChServer::start() else {
        return;
    };
    let store = ClickHouseStore::connect(&ch.url("specific"), ClickHouseOptions::default())
        .await
        .expect("connect");
    let t0 = conformance::day(40);
    let trace = conformance::tid(91, 1);
    let mut spans: Vec<_> = (0..4u32)
        .map(|i| {
            let mut s = conformance::span(
                trace,
                i,
                if i == 0 { None } else { Some(0) },
                "dup",
                "op",
                t0 + i as u64,
                (i as u64 + 1) * 1_000,
            );
            s.attributes
                .push(KeyValue::new("nul\0k", AttrValue::Str("a\0b".into())));
            s.attributes
                .push(KeyValue::new("code", AttrValue::Int(200)));
            s
        })
        .collect();
    // The same batch three times: physically three copies until merges run,
    // never visible as duplicates.
    for _ in 0..3 {
        store.write_spans(&spans).await.expect("write");
    }
    let physical: u64 = ch
        .sql("SELECT count() FROM specific.ft_traces")
        .trim()
        .parse()
        .expect("count");
    assert!((4..=12).contains(&physical), "{physical} physical rows");
    assert_eq!(store.get_trace(trace, None).await.expect("get"), spans);
    let r = conformance::day_range(t0);
    let mut q = query(r);
    q.attributes = vec![AttrFilter {
        key: "nul\0k".into(),
        value: AttrValue::Str("a\0b".into()),
        mode: Default::default(),
    }];
    let page = store.search(&q).await.expect("search");
    assert_eq!(page.traces.len(), 1);
    assert_eq!(page.traces[0].span_count, 4);
    q.attributes = vec![AttrFilter {
        key: "code".into(),
        value: AttrValue::Str("200".into()),
        mode: Default::default(),
    }];
    assert!(
        store.search(&q).await.expect("search").traces.is_empty(),
        "typed: \"200\" is not 200"
    );
    q.attributes[0].value = AttrValue::Double(200.0);
    assert!(
        store.search(&q).await.expect("search").traces.is_empty(),
        "typed: 200.0 is not 200"
    );
    assert_eq!(
        store
            .exact_percentiles("dup", None, &[], r, &[0.0, 0.5, 0.75, 1.0])
            .await
            .expect("pct"),
        vec![1_000, 2_000, 3_000, 4_000],
        "duplicates do not shift ranks"
    );

    // Retention: the day before t0 is dropped as a partition; t0's day is cut
    // by a mutation at t0 + 2.
    let mut old = conformance::span(conformance::tid(91, 2), 0, None, "dup", "op", t0 - 5, 1);
    old.events.clear();
    store
        .write_spans(std::slice::from_ref(&old))
        .await
        .expect("write old");
    let parts_before = ch.sql(
        "SELECT count(DISTINCT partition) FROM system.parts WHERE database = 'specific' AND table = 'ft_traces' AND active",
    );
    assert_eq!(parts_before.trim(), "2");
    let report = store.apply_retention(t0 + 2).await.expect("retention");
    // Counted physically: the old span, plus spans 0 and 1 once per not-yet-merged copy.
    assert!((3..=7).contains(&report.spans_deleted), "{report:?}");
    let parts_after = ch.sql(
        "SELECT count(DISTINCT partition) FROM system.parts WHERE database = 'specific' AND table = 'ft_traces' AND active",
    );
    assert_eq!(
        parts_after.trim(),
        "1",
        "the old day's partition was dropped"
    );
    assert!(store
        .get_trace(old.trace_id, None)
        .await
        .expect("get")
        .is_empty());
    spans.drain(..2);
    assert_eq!(
        store.get_trace(trace, None).await.expect("get"),
        spans,
        "only spans before the cutoff went"
    );

    // An unreachable server is a retryable error.
    ch.stop();
    let err = store.services(r).await.expect_err("server is down");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    let err = ClickHouseStore::connect(&ch.url("x"), ClickHouseOptions::default())
        .await
        .expect_err("connect to a stopped server");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn bad_urls_are_rejected_clearly() {
    for url in [
        "https://127.0.0.1:1/db",
        "127.0.0.1:8123",
        "http://127.0.0.1:1/bad;name",
    ] {
        let err = ClickHouseStore::connect(url, ClickHouseOptions::default())
            .await
            .expect_err(url);
        assert!(!err.is_retryable(), "{url}: {err}");
    }
}
