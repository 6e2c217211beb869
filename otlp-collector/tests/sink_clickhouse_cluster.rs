//! ClickHouse cluster mode: two throwaway `clickhouse-server`s form the
//! cluster `ft_test` with one shard each. The sink creates `*_local` tables on
//! both shards and `Distributed` tables over them; spans written through the
//! sink spread over both shards and are found through the distributed tables.
//! The second test sends OTLP to a running collector configured for the
//! cluster and reads the traces back through the other server.

mod conformance;
mod ingest_util;
mod support;

use ferrotrace_collector::storage::clickhouse::{
    ClickHouseOptions, ClickHouseStore, ClusterOptions,
};
use ferrotrace_collector::storage::{
    AnalyticsReader, Retention, SpanWriter, TraceQuery, TraceReader,
};
use support::clickhouse::{ChServer, CLUSTER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_written_through_the_sink_are_found_through_the_distributed_tables() {
    let Some(servers) = ChServer::start_cluster(2) else {
        return;
    };
    let opts = ClickHouseOptions {
        cluster: Some(ClusterOptions {
            name: CLUSTER.into(),
            shard_urls: servers.iter().map(|s| s.url("traces")).collect(),
            ..ClusterOptions::default()
        }),
        ..ClickHouseOptions::default()
    };
    let store = ClickHouseStore::connect(&servers[0].url("traces"), opts.clone())
        .await
        .expect("connect in cluster mode");

    let t0 = conformance::day(50);
    let traces: Vec<_> = (0..40u32).map(|n| conformance::tid(92, n)).collect();
    let mut spans = Vec::new();
    for (n, t) in traces.iter().enumerate() {
        spans.push(conformance::span(
            *t,
            0,
            None,
            "edge",
            "GET /",
            t0 + n as u64 * 1_000,
            5_000,
        ));
        spans.push(conformance::span(
            *t,
            1,
            Some(0),
            "db",
            "SELECT",
            t0 + n as u64 * 1_000 + 10,
            1_000,
        ));
    }
    store
        .write_spans(&spans)
        .await
        .expect("write through Distributed");
    // Retried batch: still one copy of each span in every answer.
    store.write_spans(&spans).await.expect("retry");

    // Both shards hold part of the data, and each trace lives on one shard.
    let per_shard: Vec<u64> = servers
        .iter()
        .map(|s| {
            s.sql("SELECT uniqExact(trace_id, span_id) FROM traces.ft_traces_local")
                .trim()
                .parse()
                .expect("count")
        })
        .collect();
    assert!(
        per_shard.iter().all(|n| *n > 0),
        "spans spread over both shards: {per_shard:?}"
    );
    assert_eq!(per_shard.iter().sum::<u64>(), 80);
    for t in &traces {
        let hex = ferrotrace_collector::model::hex(t);
        let holders = servers
            .iter()
            .filter(|s| {
                s.sql(&format!("SELECT count() FROM traces.ft_traces_local WHERE hex(trace_id) = upper('{hex}')"))
                    .trim()
                    != "0"
            })
            .count();
        assert_eq!(holders, 1, "trace {hex} is on exactly one shard");
    }

    // Found through the distributed tables, from either server as entry point.
    let second = ClickHouseStore::connect(&servers[1].url("traces"), opts)
        .await
        .expect("connect via shard 2");
    for store in [&store, &second] {
        for (n, t) in traces.iter().enumerate() {
            let got = store.get_trace(*t, None).await.expect("get_trace");
            assert_eq!(got, spans[2 * n..2 * n + 2].to_vec(), "trace {n}");
        }
        // All 40 traces (on both shards) in one read, in the order asked.
        let mut asked = traces.clone();
        asked.reverse();
        let got = store.get_traces(&asked, None).await.expect("get_traces");
        assert_eq!(got.len(), traces.len(), "every trace, from both shards");
        for (i, (id, got)) in got.iter().enumerate() {
            let n = traces.len() - 1 - i;
            assert_eq!(*id, traces[n]);
            assert_eq!(
                *got,
                spans[2 * n..2 * n + 2].to_vec(),
                "trace {n} in the batch"
            );
        }
        let r = conformance::day_range(t0);
        let q = TraceQuery {
            service: Some("db".into()),
            operation: Some("SELECT".into()),
            attributes: vec![],
            min_duration_ns: None,
            max_duration_ns: None,
            errors_only: false,
            range: r,
            limit: 15,
            cursor: None,
        };
        let mut seen = Vec::new();
        let mut q = q;
        loop {
            let page = store.search(&q).await.expect("search");
            for s in &page.traces {
                assert_eq!(s.span_count, 2);
                assert_eq!(s.root_service, "edge");
                assert_eq!(s.services, vec!["db".to_string(), "edge".to_string()]);
            }
            seen.extend(page.traces.iter().map(|s| s.trace_id));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let mut expected = traces.clone();
        expected.reverse();
        assert_eq!(
            seen, expected,
            "all traces, newest first, across shards and pages"
        );
        assert_eq!(
            store.services(r).await.expect("services"),
            vec!["db".to_string(), "edge".to_string()]
        );
        let p = store
            .exact_percentiles("edge", None, &[], r, &[0.5, 1.0])
            .await
            .expect("pct");
        assert_eq!(p, vec![5_000, 5_000]);
    }

    // Retention runs on every shard.
    let report = store
        .apply_retention(t0 + 20 * 1_000)
        .await
        .expect("retention");
    assert!(report.spans_deleted >= 40, "{report:?}");
    assert!(store
        .get_trace(traces[0], None)
        .await
        .expect("get")
        .is_empty());
    assert_eq!(
        store.get_trace(traces[39], None).await.expect("get").len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_sent_to_the_collector_are_found_through_the_distributed_tables() {
    use ferrotrace_collector::config::StorageKind;
    use ingest_util::{post, request_with, test_config, trace_id};
    use prost::Message;

    let Some(servers) = ChServer::start_cluster(2) else {
        return;
    };
    let cluster = ClusterOptions {
        name: CLUSTER.into(),
        shard_urls: servers.iter().map(|s| s.url("traces")).collect(),
        ..ClusterOptions::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.storage.kind = StorageKind::Clickhouse;
    cfg.storage.url = Some(servers[0].url("traces"));
    cfg.clickhouse.cluster = Some(cluster.clone());
    // The spans are from 2023: age retention, whose first pass now runs as
    // soon as the sink connects, would delete them.
    cfg.retention.max_age_hours = 0;
    let store = ferrotrace_collector::storage::connecting::open(&cfg).expect("open");
    let mut collector = ferrotrace_collector::server::Collector::start(cfg, store)
        .await
        .expect("collector starts");
    collector.wait_ready().await;
    let http = collector.addrs.otlp_http.expect("otlp http");

    let proto = [("content-type", "application/x-protobuf")];
    for t in 1..=30u32 {
        let r = post(
            http,
            "/v1/traces",
            &proto,
            request_with(1_000 + t, 5).encode_to_vec(),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    }

    // Read back through the second server's distributed tables.
    let reader = ClickHouseStore::connect(
        &servers[1].url("traces"),
        ClickHouseOptions {
            cluster: Some(cluster),
            ..ClickHouseOptions::default()
        },
    )
    .await
    .expect("connect via shard 2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for t in 1..=30u32 {
        loop {
            let got = reader
                .get_trace(trace_id(1_000 + t), None)
                .await
                .expect("get_trace");
            if got.len() == 5 {
                assert!(got.iter().all(|s| s.service_name == "svc-test"));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "trace {t}: {} of 5 spans visible through the distributed tables",
                got.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let per_shard: Vec<u64> = servers
        .iter()
        .map(|s| {
            s.sql("SELECT uniqExact(trace_id, span_id) FROM traces.ft_traces_local")
                .trim()
                .parse()
                .expect("count")
        })
        .collect();
    assert_eq!(per_shard.iter().sum::<u64>(), 150, "{per_shard:?}");
    assert!(
        per_shard.iter().all(|n| *n > 0),
        "spans spread over both shards: {per_shard:?}"
    );
    assert!(collector.shutdown().await, "clean shutdown");
}
