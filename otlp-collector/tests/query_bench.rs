//! Query latency benchmark over a store with many spans (prints numbers for
//! docs/benchmarks.md; not a pass/fail timing test). Run with
//! `FT_BENCH_SPANS=1000000 cargo test --release -p ferrotrace-collector --test query_bench -- --ignored --nocapture`.
//!
//! `FT_BENCH_SINK` picks the store: `sqlite` (default), `postgres` or
//! `clickhouse`; the last two start a throwaway server through the test
//! harness (`tests/support/`), as the sink tests do, and stop it at the end.
//! PostgreSQL's statistics are gathered (`ANALYZE`) after the load unless
//! `FT_BENCH_PG_ANALYZE=0`.
//! `FT_BENCH_SQLITE_DIR` keeps the SQLite file in that directory (for
//! `EXPLAIN QUERY PLAN` afterwards) instead of a temporary one.
//! `FT_BENCH_HOLD_S=N` keeps the loaded store (and its server) up for N
//! seconds after the measurements, printing where it is, to examine query
//! plans by hand.

mod query_support;
mod support;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use ferrotrace_collector::model::{AttrValue, KeyValue, SpanKind, StatusCode};
use ferrotrace_collector::rollup::{RollupAggregator, RollupConfig};
use ferrotrace_collector::storage::clickhouse::{ClickHouseOptions, ClickHouseStore};
use ferrotrace_collector::storage::postgres::PostgresStore;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::SpanStore;
use query_support::*;
use support::clickhouse::ChServer;
use support::postgres::PgServer;

/// The store under test and what keeps it alive (temp dir or server).
struct BenchStore {
    store: Arc<dyn SpanStore>,
    /// Where to reach the stored data from outside (file path or URL).
    location: String,
    _keep: Box<dyn Any + Send>,
}

/// Opens the store `FT_BENCH_SINK` names; `None` when its server is not
/// installed (outside CI; the harness prints why).
async fn open_store() -> Option<BenchStore> {
    let sink = std::env::var("FT_BENCH_SINK").unwrap_or_else(|_| "sqlite".into());
    match sink.as_str() {
        "sqlite" => {
            let (dir, keep): (std::path::PathBuf, Box<dyn Any + Send>) =
                match std::env::var("FT_BENCH_SQLITE_DIR") {
                    Ok(d) => {
                        std::fs::create_dir_all(&d).unwrap();
                        let path = std::path::PathBuf::from(d);
                        let db = path.join("bench.db");
                        assert!(!db.exists(), "{db:?} exists: give an empty directory");
                        (path, Box::new(()))
                    }
                    Err(_) => {
                        let t = tempfile::tempdir().unwrap();
                        (t.path().to_path_buf(), Box::new(t))
                    }
                };
            let path = dir.join("bench.db");
            let store = SqliteStore::open(&path).unwrap();
            Some(BenchStore {
                store: Arc::new(store),
                location: path.display().to_string(),
                _keep: keep,
            })
        }
        "postgres" => {
            let pg = PgServer::start()?;
            let url = pg.fresh_db("query_bench").await;
            let store = PostgresStore::connect(&url).await.unwrap();
            Some(BenchStore {
                store: Arc::new(store),
                location: url,
                _keep: Box::new(pg),
            })
        }
        "clickhouse" => {
            let ch = ChServer::start()?;
            let url = ch.url("query_bench");
            let store = ClickHouseStore::connect(&url, ClickHouseOptions::default())
                .await
                .unwrap();
            Some(BenchStore {
                store: Arc::new(store),
                location: url,
                _keep: Box::new(ch),
            })
        }
        other => panic!("FT_BENCH_SINK={other}: expected sqlite, postgres or clickhouse"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --ignored --nocapture"]
async fn query_latency_bench() {
    let total: u64 = std::env::var("FT_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let per_trace = 10u64;
    let traces = total / per_trace;
    let Some(bench) = open_store().await else {
        return;
    };
    let store = bench.store.clone();
    let end = now_ns() / 1_000_000_000 * 1_000_000_000;
    let start = end - 3_600 * 1_000_000_000;
    let gap = 3_600 * 1_000_000_000 / traces;
    let svcs = [
        "gateway",
        "auth",
        "catalog",
        "cart",
        "pricing",
        "inventory",
        "search",
        "db",
        "mail",
        "ads",
    ];
    let t0 = Instant::now();
    let mut agg = RollupAggregator::new(RollupConfig::default());
    let mut batch = Vec::with_capacity(10_000);
    for t in 0..traces {
        let trace = tid(t + 1);
        let b = start + t * gap;
        for i in 0..per_trace {
            let dur = 1_000_000 + (t * 7919 + i * 104_729) % 50_000_000;
            let mut s = span(
                trace,
                i + 1,
                if i == 0 { None } else { Some(i) },
                svcs[((t + i) % 10) as usize],
                &format!("op-{}", (t + i) % 20),
                if i == 0 {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                },
                b + i * 1_000,
                b + i * 1_000 + dur,
            );
            s.attributes = vec![
                KeyValue::new(
                    "http.status_code",
                    AttrValue::Int(if t % 50 == 0 { 500 } else { 200 }),
                ),
                KeyValue::new(
                    "customer",
                    AttrValue::Str(compact_str::format_compact!("c{}", t % 1000)),
                ),
            ];
            if t % 50 == 0 && i == per_trace - 1 {
                s.status_code = StatusCode::Error;
            }
            agg.observe(&s);
            batch.push(s);
        }
        if batch.len() >= 10_000 {
            store.write_spans(&batch).await.unwrap();
            batch.clear();
        }
    }
    store.write_spans(&batch).await.unwrap();
    store.write_rollups(&agg.drain_all()).await.unwrap();
    println!(
        "BENCH {} loaded {total} spans ({traces} traces) in {:.1}s",
        store.name(),
        t0.elapsed().as_secs_f64()
    );
    if store.name() == "postgres" && std::env::var("FT_BENCH_PG_ANALYZE").as_deref() != Ok("0") {
        // Autovacuum's first ANALYZE of the new day partition comes a minute or
        // so after the load, sometimes in the middle of the measurements;
        // until then the planner has no statistics for it and reads every span
        // of a service for a broad search (docs/benchmarks.md). So that each
        // run measures one state, the statistics are gathered here, as
        // autovacuum would; FT_BENCH_PG_ANALYZE=0 measures without them.
        let t = Instant::now();
        let (client, conn) = tokio_postgres::connect(&bench.location, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute("ANALYZE").await.unwrap();
        drop(client);
        let _ = task.await;
        println!(
            "BENCH postgres ANALYZE after the load took {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let addr = serve_store(store.clone()).await;
    let (s, e) = (rfc(start), rfc(end));

    async fn measure(addr: std::net::SocketAddr, label: &str, paths: Vec<String>) {
        let mut v = Vec::new();
        for p in &paths {
            let t = Instant::now();
            let (st, body) = get(addr, p).await;
            v.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(st, 200, "{p}: {body}");
        }
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        // With n = 20, p95 and p99 are both the slowest request.
        let rank = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
        println!(
            "BENCH {label}: n={} p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
            v.len(),
            rank(50),
            rank(95),
            rank(99)
        );
    }
    let ids: Vec<String> = (0..200)
        .map(|k| hex(&tid(k * (traces / 200) + 1)))
        .collect();
    measure(
        addr,
        "trace by id (10 spans, native)",
        ids.iter()
            .map(|i| format!("/api/native/traces/{i}"))
            .collect(),
    )
    .await;
    measure(
        addr,
        "trace by id (Jaeger v1)",
        ids.iter().map(|i| format!("/api/traces/{i}")).collect(),
    )
    .await;
    measure(
        addr,
        "search service, 1h, limit 20",
        (0..50)
            .map(|k| {
                format!(
                    "/api/native/search?start={s}&end={e}&service={}&limit=20",
                    svcs[k % 10]
                )
            })
            .collect(),
    )
    .await;
    measure(addr, "search service+attr+min_duration, 1h, limit 20", (0..50).map(|k| format!("/api/native/search?start={s}&end={e}&service={}&attr=http.status_code%3D500&min_duration=10ms&limit=20", svcs[k % 10])).collect()).await;
    // The attribute index's worst cases: a value on 98% of the spans, and
    // one on 1% (a customer), each with no other condition.
    measure(
        addr,
        "search attr only, common value (98% of spans), 1h, limit 20",
        (0..20)
            .map(|_| {
                format!("/api/native/search?start={s}&end={e}&attr=http.status_code%3D200&limit=20")
            })
            .collect(),
    )
    .await;
    measure(
        addr,
        "search attr only, rare value (0.1% of spans), 1h, limit 20",
        (0..20)
            .map(|k| {
                format!(
                    "/api/native/search?start={s}&end={e}&attr=customer%3Dc{}&limit=20",
                    k * 37 % 1000
                )
            })
            .collect(),
    )
    .await;
    measure(
        addr,
        "search errors only, 1h, limit 100",
        (0..20)
            .map(|_| format!("/api/native/search?start={s}&end={e}&errors_only=true&limit=100"))
            .collect(),
    )
    .await;
    let five = rfc(end - 300 * 1_000_000_000);
    measure(
        addr,
        "exact p50/p95/p99 from spans, 5 min window",
        (0..20)
            .map(|k| {
                format!(
                    "/api/native/latency?start={five}&end={e}&service={}&exact=true",
                    svcs[k % 10]
                )
            })
            .collect(),
    )
    .await;
    measure(
        addr,
        "p50/p95/p99 from rollups, 1h",
        (0..50)
            .map(|k| {
                format!(
                    "/api/native/latency?start={s}&end={e}&service={}",
                    svcs[k % 10]
                )
            })
            .collect(),
    )
    .await;
    measure(
        addr,
        "latency series 1m steps, 1h",
        (0..20)
            .map(|k| {
                format!(
                    "/api/native/latency/series?start={s}&end={e}&service={}&step=1m",
                    svcs[k % 10]
                )
            })
            .collect(),
    )
    .await;
    measure(
        addr,
        "dependencies, 1h",
        (0..20)
            .map(|_| format!("/api/native/dependencies?start={s}&end={e}"))
            .collect(),
    )
    .await;
    if let Some(hold) = std::env::var("FT_BENCH_HOLD_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        println!("BENCH holding {} for {hold}s", bench.location);
        tokio::time::sleep(std::time::Duration::from_secs(hold)).await;
    }
}
