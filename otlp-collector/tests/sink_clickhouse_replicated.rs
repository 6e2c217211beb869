//! ClickHouse replicated cluster mode: a throwaway ZooKeeper and a 2-shard ×
//! 2-replica cluster of `clickhouse-server`s on loopback ports. Spans written
//! through the sink and through a real collector binary land on both shards
//! and on both replicas of each shard; with one replica of each shard killed
//! (among them the entry server the sink and the collector were configured
//! with) ingest and reads continue; restarted, the replicas catch up. Misconfigured clusters fail
//! with a message naming the problem.

mod conformance;
mod ingest_util;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrotrace_collector::storage::clickhouse::{
    ClickHouseOptions, ClickHouseStore, ClusterOptions,
};
use ferrotrace_collector::storage::{SpanWriter, TraceReader};
use support::clickhouse::{local_spans, ChServer, ZooKeeper, CLUSTER};

fn cluster_of(servers: &[Vec<ChServer>]) -> ClusterOptions {
    support::clickhouse::cluster_options(servers)
}

fn opts(cluster: ClusterOptions) -> ClickHouseOptions {
    ClickHouseOptions {
        cluster: Some(cluster),
        ..ClickHouseOptions::default()
    }
}

/// Waits until both replicas of every shard hold the same spans in both span
/// tables, `total` in all, and returns the per-shard counts.
fn wait_replicated(servers: &[Vec<ChServer>], total: u64) -> Vec<u64> {
    support::clickhouse::wait_replicas_agree(servers, Some(total))
}

fn spans_for(
    traces: &[ferrotrace_collector::model::TraceId],
    t0: u64,
) -> Vec<ferrotrace_collector::model::Span> {
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
    spans
}

/// The collector binary with the cluster in its config file.
fn spawn_collector(
    dir: &std::path::Path,
    url: &str,
    cluster: &ClusterOptions,
) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    let (otlp, http) = (support::net::free_addr(), support::net::free_addr());
    // The spans are from 2023 (`request_with`): age retention is off, or
    // its first pass, which runs as soon as the sink connects, deletes them.
    let config = format!(
        "{}\n[retention]\nmax_age_hours = 0\n",
        support::clickhouse::collector_toml(url, cluster)
    );
    let path = dir.join("collector.toml");
    std::fs::write(&path, config).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"))
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--otlp-grpc-addr", "", "--zipkin-addr", ""])
        .args(["--otlp-http-addr", &otlp.to_string()])
        .args(["--http-addr", &http.to_string()])
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn collector");
    (child, otlp, http)
}

/// Waits for the collector's `/readyz` (its sink connected).
async fn wait_ready(http: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(http).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "collector did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(otlp: std::net::SocketAddr, t: u32) {
    use prost::Message;
    let r = ingest_util::post(
        otlp,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        ingest_util::request_with(t, 5).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
}

/// Waits until every trace `ts` has its 5 spans through `store`.
async fn wait_traces(store: &ClickHouseStore, ts: impl Iterator<Item = u32>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in ts {
        loop {
            let got = store
                .get_trace(ingest_util::trace_id(t), None)
                .await
                .expect("get_trace");
            if got.len() == 5 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "trace {t}: {} of 5 spans",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_cluster_keeps_ingest_and_reads_with_a_replica_down_and_catches_up() {
    let Some(zk) = ZooKeeper::start() else {
        return;
    };
    let Some(mut servers) = ChServer::start_replicated(2, 2, &zk) else {
        return;
    };
    let cluster = cluster_of(&servers);
    let entry = servers[0][0].url("traces");
    let store = ClickHouseStore::connect(&entry, opts(cluster.clone()))
        .await
        .expect("connect in replicated cluster mode");

    // Replicated engines on every replica.
    for s in servers.iter().flatten() {
        let engines = s.sql(
            "SELECT engine FROM system.tables WHERE database = 'traces' AND name LIKE '%_local' ORDER BY name",
        );
        assert_eq!(
            engines.lines().collect::<Vec<_>>(),
            [
                "ReplicatedMergeTree",
                "ReplicatedMergeTree",
                "ReplicatedMergeTree",
                "ReplicatedMergeTree",
                "ReplicatedReplacingMergeTree",
                "ReplicatedReplacingMergeTree"
            ],
            "edge, op rollups, rollup origins, sampling counts, spans, traces"
        );
    }

    // 1. Through the sink: both shards, both replicas of each.
    let t0 = conformance::day(60);
    let traces: Vec<_> = (0..40u32).map(|n| conformance::tid(93, n)).collect();
    let spans = spans_for(&traces, t0);
    store.write_spans(&spans).await.expect("write");
    store.write_spans(&spans).await.expect("retried batch");
    let per_shard = wait_replicated(&servers, 80);
    assert!(
        per_shard.iter().all(|n| *n > 0),
        "both shards: {per_shard:?}"
    );

    // A real collector, configured with the same entry server.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut collector, otlp, http) = spawn_collector(dir.path(), &entry, &cluster);
    wait_ready(http).await;
    for t in 1..=10u32 {
        send(otlp, 5_000 + t).await;
    }
    wait_traces(&store, 5_001..=5_010).await;

    // 2. Kill one replica of each shard, among them the entry server
    // (replica 1 of shard 1) and the replica reads of shard 2 go to first
    // (replica 1): ingest continues through the sink and the collector, and
    // every trace is readable.
    servers[0][0].kill();
    servers[1][0].kill();
    let more: Vec<_> = (0..40u32).map(|n| conformance::tid(94, n)).collect();
    let more_spans = spans_for(&more, t0 + 100_000);
    store
        .write_spans(&more_spans)
        .await
        .expect("write with a replica down");
    for t in 11..=20u32 {
        send(otlp, 5_000 + t).await;
    }
    // A sink started while the replica is down, through another entry.
    let reader = ClickHouseStore::connect(&servers[0][1].url("traces"), opts(cluster.clone()))
        .await
        .expect("connect with a replica down");
    for s in [&store, &reader] {
        for (n, t) in traces.iter().chain(&more).enumerate() {
            let want = if n < 40 {
                spans[2 * n..2 * n + 2].to_vec()
            } else {
                more_spans[2 * (n - 40)..2 * (n - 40) + 2].to_vec()
            };
            assert_eq!(
                s.get_trace(*t, None).await.expect("get_trace"),
                want,
                "trace {n}"
            );
        }
        wait_traces(s, 5_001..=5_020).await;
    }
    // Every span on the live replica of each shard.
    let live =
        || local_spans(&servers[0][1], "ft_traces") + local_spans(&servers[1][1], "ft_traces");
    let deadline = Instant::now() + Duration::from_secs(30);
    while live() != 80 + 80 + 100 {
        assert!(
            Instant::now() < deadline,
            "live replicas hold {} of 260 spans",
            live()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 3. Restart them: they catch up with what was written while they were down.
    servers[0][0].restart();
    servers[1][0].restart();
    wait_replicated(&servers, 260);
    for t in 21..=25u32 {
        send(otlp, 5_000 + t).await;
    }
    wait_traces(&store, 5_021..=5_025).await;
    wait_replicated(&servers, 285);

    let _ = collector.kill();
    let _ = collector.wait();
    drop(zk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_replicated_clusters_fail_with_a_clear_message() {
    use ferrotrace_collector::config::StorageKind;

    // Shape errors fail the collector's start, before any connection.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ingest_util::test_config(dir.path());
    cfg.storage.kind = StorageKind::Clickhouse;
    cfg.storage.url = Some("http://127.0.0.1:1/traces".into());
    for (shards, want) in [
        (
            vec![
                vec!["http://127.0.0.1:1", "http://127.0.0.1:2"],
                vec!["http://127.0.0.1:3"],
            ],
            "shard 1 has 2, shard 2 has 1",
        ),
        (
            vec![vec!["http://127.0.0.1:1"], vec![]],
            "shard 2 has no replica URL",
        ),
        (
            vec![vec!["http://127.0.0.1:1", "http://127.0.0.1:1"]],
            "listed twice",
        ),
    ] {
        cfg.clickhouse.cluster = Some(ClusterOptions {
            name: CLUSTER.into(),
            shards: shards
                .iter()
                .map(|r| r.iter().map(|u| u.to_string()).collect())
                .collect(),
            ..ClusterOptions::default()
        });
        let e = ferrotrace_collector::storage::connecting::open(&cfg)
            .err()
            .expect("refused at start")
            .to_string();
        assert!(e.contains(want), "{e}");
    }

    // Servers without ZooKeeper.
    let Some(no_zk) = ChServer::start_replicated_with(1, 2, |s, r| {
        format!("<macros><shard>0{s}</shard><replica>r{r}</replica></macros>")
    }) else {
        return;
    };
    let e = ClickHouseStore::connect(&no_zk[0][0].url("traces"), opts(cluster_of(&no_zk)))
        .await
        .expect_err("no ZooKeeper")
        .to_string();
    assert!(e.contains("need ZooKeeper"), "{e}");
    drop(no_zk);

    // Two replicas of one shard with the same replica name.
    let Some(zk) = ZooKeeper::start() else {
        return;
    };
    let port = zk.port;
    let Some(same) = ChServer::start_replicated_with(1, 2, |s, _| {
        format!(
            "<zookeeper><node><host>127.0.0.1</host><port>{port}</port></node></zookeeper>\
             <macros><shard>0{s}</shard><replica>r1</replica></macros>"
        )
    }) else {
        return;
    };
    let e = ClickHouseStore::connect(&same[0][0].url("traces"), opts(cluster_of(&same)))
        .await
        .expect_err("duplicate replica macro")
        .to_string();
    assert!(e.contains("replicas of a shard need distinct names"), "{e}");
    // The cluster of the config lists 1 shard; the sink is told 2.
    let mut two = cluster_of(&same);
    two.shards = vec![
        vec![same[0][0].url("traces")],
        vec![same[0][1].url("traces")],
    ];
    let e = ClickHouseStore::connect(&same[0][0].url("traces"), opts(two))
        .await
        .expect_err("shard count")
        .to_string();
    assert!(e.contains("has 1 shards"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_cluster_passes_the_storage_conformance_suite() {
    let Some(zk) = ZooKeeper::start() else {
        return;
    };
    let Some(servers) = ChServer::start_replicated(2, 2, &zk) else {
        return;
    };
    let store = ClickHouseStore::connect(&servers[1][1].url("traces"), opts(cluster_of(&servers)))
        .await
        .expect("connect");
    conformance::run_all(&store).await;
}

/// Ingest rate through the sink into an unreplicated 2-shard cluster and a
/// replicated 2-shard × 2-replica cluster, side by side in one run. Run with
/// `cargo test -p ferrotrace-collector --test sink_clickhouse_replicated
/// -- --ignored --nocapture ingest_rate`; prints spans/s for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ingest_rate_replicated_vs_unreplicated() {
    const BATCH: u32 = 10_000;
    const BATCHES: u32 = 20;
    let Some(zk) = ZooKeeper::start() else {
        return;
    };
    let Some(plain) = ChServer::start_cluster(2) else {
        return;
    };
    let Some(replicated) = ChServer::start_replicated(2, 2, &zk) else {
        return;
    };
    let plain_opts = opts(ClusterOptions {
        name: CLUSTER.into(),
        shard_urls: plain.iter().map(|s| s.url("traces")).collect(),
        ..ClusterOptions::default()
    });
    let stores = [
        (
            "unreplicated 2 shards",
            ClickHouseStore::connect(&plain[0].url("traces"), plain_opts)
                .await
                .expect("connect"),
        ),
        (
            "replicated 2 shards x 2 replicas",
            ClickHouseStore::connect(
                &replicated[0][0].url("traces"),
                opts(cluster_of(&replicated)),
            )
            .await
            .expect("connect"),
        ),
    ];
    let t0 = conformance::day(70);
    let batches: Vec<Vec<_>> = (0..BATCHES)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    let n = b * BATCH + i;
                    conformance::span(
                        conformance::tid(95, n / 10),
                        n % 10,
                        (!n.is_multiple_of(10)).then_some(0),
                        "svc",
                        "op",
                        t0 + u64::from(n) * 1_000,
                        5_000,
                    )
                })
                .collect()
        })
        .collect();
    for (name, store) in &stores {
        let started = Instant::now();
        for b in &batches {
            store.write_spans(b).await.expect("write");
        }
        let took = started.elapsed();
        let total = u64::from(BATCH * BATCHES);
        println!(
            "{name}: {total} spans acknowledged in {:.2} s = {:.0} spans/s",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        );
    }
    let started = Instant::now();
    wait_replicated(&replicated, u64::from(BATCH * BATCHES));
    println!(
        "replicas converged {:.2} s after the last acknowledgement",
        started.elapsed().as_secs_f64()
    );
}
