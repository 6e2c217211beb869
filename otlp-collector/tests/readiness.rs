//! Faults an operator must see and survive (issue 11, "Faults found by an
//! independent run"):
//!
//! - `/readyz` reports a database sink that was connected and went down, and
//!   a WAL full because of it, and turns ready again once the database is
//!   back, with every acknowledged span stored exactly once (a real
//!   PostgreSQL, stopped and restarted by the test);
//! - the real collector binary starts on a completely full data disk (a small
//!   tmpfs or loop-mounted ext4 filled to the last byte): it replays, serves
//!   queries, refuses writes with 503 / gRPC `UNAVAILABLE` and reports the
//!   disk in `/readyz`, then accepts writes again once space is freed, without
//!   a restart.

mod ingest_util;
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ingest_util::{post, request_with, test_config, trace_id};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use support::net::free_addr;
use support::postgres::PgServer;
use support::smallfs::SmallFs;

/// GET `path`, or `None` when nothing answers within 2 s.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(2), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `GET path` every 100 ms until `done(status, body)` or `timeout`;
/// returns the last answer and how long it took.
async fn poll(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    done: impl Fn(u16, &str) -> bool,
) -> ((u16, String), Duration) {
    let start = Instant::now();
    loop {
        let got = get(addr, path).await.unwrap_or((0, String::new()));
        if done(got.0, &got.1) || start.elapsed() > timeout {
            return (got, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn pg_count(url: &str) -> i64 {
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return -1;
    };
    tokio::spawn(conn);
    match client
        .query_one(
            "SELECT COUNT(*) FROM (SELECT DISTINCT trace_id, span_id FROM ft_spans) d",
            &[],
        )
        .await
    {
        Ok(r) => r.get(0),
        Err(_) => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_lost_postgres_and_a_full_wal_then_recovers() {
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.storage.kind = ferrotrace_collector::config::StorageKind::Postgres;
    cfg.storage.url = Some(url.clone());
    cfg.batcher.retry_initial_ms = 50;
    cfg.batcher.retry_max_ms = 300;
    // A WAL small enough to fill in a second while the database is away.
    cfg.wal.segment_bytes = 64 * 1024;
    cfg.wal.max_bytes = 512 * 1024;
    // The spans are from 2023: age retention's first pass, run as the sink
    // connects, would delete any of them stored before it.
    cfg.retention.max_age_hours = 0;
    let store = ferrotrace_collector::storage::connecting::open(&cfg).expect("open");
    let mut collector = ferrotrace_collector::server::Collector::start(cfg, store)
        .await
        .expect("start");
    collector.wait_ready().await;
    let http = collector.addrs.otlp_http.unwrap();
    let query = collector.addrs.http.unwrap();
    let proto = [("content-type", "application/x-protobuf")];

    let ((status, body), _) =
        poll(query, "/readyz", Duration::from_secs(30), |s, _| s == 200).await;
    assert_eq!(status, 200, "ready once connected: {body}");
    let mut acked = 0i64;
    for t in 1..=5 {
        let r = post(
            http,
            "/v1/traces",
            &proto,
            request_with(t, 10).encode_to_vec(),
        )
        .await;
        assert_eq!(r.status, 200);
        acked += 10;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg_count(&url).await < acked {
        assert!(
            Instant::now() < deadline,
            "spans not stored before the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The database goes away while the collector is idle: the health check
    // notices it without any write failing.
    pg.stop_fast();
    let ((status, body), took) =
        poll(query, "/readyz", Duration::from_secs(15), |s, _| s == 503).await;
    assert_eq!(status, 503, "a lost sink is not ready: {body}");
    assert!(
        body.contains("sink:") && body.contains("postgres"),
        "names the sink: {body}"
    );
    eprintln!("lost sink reported by /readyz after {took:?}:\n{body}");
    let (_, metrics) = get(query, "/metrics").await.expect("metrics");
    assert_eq!(metric(&metrics, "ferrotrace_ready"), Some(0), "{metrics}");

    // Acknowledgements go on into the WAL until it is full, then 429.
    let mut t = 100;
    let refused = loop {
        let r = post(
            http,
            "/v1/traces",
            &proto,
            request_with(t, 10).encode_to_vec(),
        )
        .await;
        t += 1;
        match r.status {
            200 => acked += 10,
            429 => break String::from_utf8_lossy(&r.body).into_owned(),
            other => panic!("unexpected {other} while the WAL fills"),
        }
        assert!(t < 100_000, "the WAL never filled");
    };
    eprintln!("WAL full after {acked} acknowledged spans: {refused:?}");
    let (_, body) = get(query, "/readyz").await.expect("readyz");
    assert!(
        body.contains("write-ahead log full") && body.contains("wal.max_bytes"),
        "{body}"
    );

    // The database comes back with its data: ready again, everything
    // acknowledged stored exactly once.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(query, "/readyz").await.unwrap_or_default();
        let stored = pg_count(&url).await;
        if status == 200 && stored == acked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {acked} stored; /readyz {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        post(
            http,
            "/v1/traces",
            &proto,
            request_with(t, 10).encode_to_vec()
        )
        .await
        .status,
        200
    );
    assert!(collector.shutdown().await);
    assert_eq!(pg_count(&url).await, acked + 10);
}

/// The real binary on `data` with every listener on a fresh loopback port.
struct Proc {
    child: Child,
    otlp_http: SocketAddr,
    otlp_grpc: SocketAddr,
    query: SocketAddr,
}

impl Proc {
    fn spawn(data: &std::path::Path) -> Proc {
        let (otlp_http, otlp_grpc, query) = (free_addr(), free_addr(), free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"))
            .arg("--data-dir")
            .arg(data)
            .args(["--otlp-grpc-addr", &otlp_grpc.to_string()])
            .args(["--otlp-http-addr", &otlp_http.to_string()])
            .args(["--zipkin-addr", "", "--http-addr", &query.to_string()])
            .args(["--log", "warn"])
            .env("FERROTRACE__BATCHER__MAX_DELAY_MS", "20")
            .env("FERROTRACE__BATCHER__RETRY_MAX_MS", "300")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn collector");
        Proc {
            child,
            otlp_http,
            otlp_grpc,
            query,
        }
    }

    /// Waits until `/healthz` answers, failing if the process exits first.
    async fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!("the collector exited at start with {st}");
            }
            if let Some((200, _)) = get(self.query, "/healthz").await {
                return;
            }
            assert!(Instant::now() < deadline, "the collector did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&mut self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let _ = self.child.wait();
    }

    async fn send(&self, t: u32, n: u32) -> (u16, String) {
        let r = post(
            self.otlp_http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            request_with(t, n).encode_to_vec(),
        )
        .await;
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// Spans of trace `t` the query API returns now.
    async fn stored(&self, t: u32) -> usize {
        let id: String = trace_id(t).iter().map(|b| format!("{b:02x}")).collect();
        match get(self.query, &format!("/api/traces/{id}")).await {
            Some((200, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                v["data"][0]["spans"].as_array().map_or(0, Vec::len)
            }
            _ => 0,
        }
    }

    async fn wait_stored(&self, t: u32, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.stored(t).await < n {
            assert!(Instant::now() < deadline, "trace {t} not stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts the collector refuses writes the way a full disk must be
/// refused: 503 + UNAVAILABLE over HTTP, UNAVAILABLE over gRPC.
async fn assert_writes_refused(p: &Proc, t: u32) {
    let (status, body) = p.send(t, 3).await;
    assert_eq!(status, 503, "HTTP write on a full disk: {body}");
    assert!(body.contains("No space left on device"), "{body}");
    let mut grpc = TraceServiceClient::connect(format!("http://{}", p.otlp_grpc))
        .await
        .expect("gRPC connect");
    let err = grpc
        .export(request_with(t + 1, 3))
        .await
        .expect_err("gRPC write on a full disk");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_on_a_full_disk_serves_queries_refuses_writes_and_recovers() {
    let Some(fs) = SmallFs::mount(48) else {
        return;
    };
    eprintln!("disk-full test on {} at {}", fs.kind, fs.path().display());
    let data = fs.path().join("data");

    // Some traces stored, then a clean shutdown (the SQLite -shm file must
    // survive it: a full disk leaves no room to create it again).
    let mut p = Proc::spawn(&data);
    p.wait_up().await;
    assert_eq!(p.send(1, 5).await.0, 200);
    p.wait_stored(1, 5, Duration::from_secs(20)).await;
    p.signal("-TERM");

    // Not one byte left.
    let filled = fs.fill();
    assert_eq!(fs.available(), 0, "filled {filled} bytes");

    let mut p = Proc::spawn(&data);
    p.wait_up().await;
    let ((status, body), _) = poll(p.query, "/readyz", Duration::from_secs(10), |_, b| {
        b.contains("disk full")
    })
    .await;
    assert_eq!(status, 503);
    assert!(
        body.contains("disk full") && body.contains("No space left on device"),
        "{body}"
    );
    assert_eq!(p.stored(1).await, 5, "queries are served on a full disk");
    assert_writes_refused(&p, 10).await;
    let (_, metrics) = get(p.query, "/metrics").await.expect("metrics");
    assert_eq!(metric(&metrics, "ferrotrace_wal_disk_free_bytes"), Some(0));

    // Space comes back: ready and accepting again, no restart.
    fs.unfill();
    let ((status, body), took) =
        poll(p.query, "/readyz", Duration::from_secs(15), |s, _| s == 200).await;
    assert_eq!(status, 200, "ready again once space is free: {body}");
    eprintln!("ready {took:?} after space was freed");
    assert_eq!(p.send(2, 5).await.0, 200);
    p.wait_stored(2, 5, Duration::from_secs(20)).await;

    // Acknowledged spans still in the WAL at a crash, and the disk full at
    // the restart: they are replayed, and stored once space returns.
    assert_eq!(p.send(3, 5).await.0, 200);
    p.signal("-KILL");
    fs.fill();
    assert_eq!(fs.available(), 0);
    let mut p = Proc::spawn(&data);
    p.wait_up().await;
    let ((_, body), _) = poll(p.query, "/readyz", Duration::from_secs(10), |_, b| {
        b.contains("disk full")
    })
    .await;
    assert!(body.contains("disk full"), "{body}");
    let replayed = |m: &str| {
        metric(
            m,
            "ferrotrace_receiver_spans_accepted_total{receiver=\"wal\",protocol=\"replay\"}",
        )
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = get(p.query, "/metrics").await.expect("metrics");
        if replayed(&m) >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing replayed on a full disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(p.stored(1).await, 5);
    assert_writes_refused(&p, 20).await;
    fs.unfill();
    let ((status, body), _) =
        poll(p.query, "/readyz", Duration::from_secs(20), |s, _| s == 200).await;
    assert_eq!(status, 200, "{body}");
    p.wait_stored(3, 5, Duration::from_secs(20)).await;
    assert_eq!(p.send(4, 5).await.0, 200);
    p.wait_stored(4, 5, Duration::from_secs(20)).await;
    for t in 1..=4 {
        assert_eq!(p.stored(t).await, 5, "trace {t}");
    }
    p.signal("-TERM");
}
