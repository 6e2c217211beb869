//! Slow and idle clients cannot deny service: with hundreds of connections
//! that trickle request bodies (HTTP/1.1, h2c, gRPC), trickle headers or sit
//! idle against every listener, the official OpenTelemetry exporter's exports
//! still succeed, the slow connections are closed within the configured
//! timeouts, and every closure is counted in `/metrics`. A second test runs the
//! collector binary under a small `RLIMIT_NOFILE` and checks `/healthz` still
//! answers with hundreds of idle connections open.

mod ingest_util;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferrotrace_collector::config::Config;
use futures_util::future::join_all;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingest_util::*;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many slow connections of each kind.
const SLOW: usize = 200;
/// A slow client sends one byte this often.
const TRICKLE: Duration = Duration::from_millis(300);
/// Until the attack begins, a slow-body client sends this much this often
/// (5 KiB/s, well above `min_body_rate_bytes_per_sec`), so that no body
/// connection is cut while the others are still being opened.
const BEFORE_ATTACK: (usize, Duration) = (512, Duration::from_millis(100));
/// What a body claims: large, so a collector that charged the claim would
/// be out of in-flight budget at once.
const CLAIMED: usize = 4 * 1024 * 1024;

fn short_timeouts(c: &mut Config) {
    // Two seconds, not one: opening 1,000 connections at once on a loaded
    // 2-core machine once kept an h2c request's (complete) headers unread
    // for a second, and it was cut as header_timeout instead of by the
    // body-rate check this test is about.
    c.connections.header_read_timeout_ms = 2_000;
    // Longer than opening every connection can take on a loaded machine: the
    // slow bodies must be cut by the rate check (body_too_slow), not by this.
    c.connections.body_read_timeout_ms = 10_000;
    c.connections.min_body_rate_bytes_per_sec = 1024;
    c.connections.min_body_rate_window_ms = 1_000;
    c.connections.idle_timeout_ms = 2_000;
}

/// Resolves, with the time since `t0`, once the server has closed `read`.
fn until_closed(mut read: tokio::net::tcp::OwnedReadHalf, t0: Instant) -> JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return t0.elapsed(),
                Ok(_) => {}
            }
        }
    })
}

/// A slow-body client's next write and pause: at a passing rate until
/// `attack` turns true, then one byte per [`TRICKLE`].
fn pace(attack: &watch::Receiver<bool>) -> (Bytes, Duration) {
    if *attack.borrow() {
        (Bytes::from_static(b"x"), TRICKLE)
    } else {
        (Bytes::from(vec![b'x'; BEFORE_ATTACK.0]), BEFORE_ATTACK.1)
    }
}

/// An HTTP/1.1 request whose headers arrive, then its body: at a passing
/// rate until `attack`, then one byte at a time.
async fn slow_http1_body(
    addr: SocketAddr,
    path: &str,
    ct: &str,
    attack: watch::Receiver<bool>,
    t0: Instant,
) -> JoinHandle<Duration> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = s.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\nContent-Length: {CLAIMED}\r\n\r\nx"
    );
    write.write_all(head.as_bytes()).await.expect("write");
    tokio::spawn(async move {
        loop {
            let (chunk, pause) = pace(&attack);
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
    });
    until_closed(read, t0)
}

/// An HTTP/1.1 request whose headers arrive one line at a time, never finished.
async fn slow_http1_headers(addr: SocketAddr, t0: Instant) -> JoinHandle<Duration> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = s.into_split();
    write
        .write_all(b"POST /api/v2/spans HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    tokio::spawn(async move {
        while write.write_all(b"X-Slow: 1\r\n").await.is_ok() {
            tokio::time::sleep(TRICKLE).await;
        }
    });
    until_closed(read, t0)
}

/// A connection that sends nothing at all.
async fn idle(addr: SocketAddr, t0: Instant) -> JoinHandle<Duration> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (read, write) = s.into_split();
    tokio::spawn(async move {
        let _keep_open = write;
        std::future::pending::<()>().await
    });
    until_closed(read, t0)
}

/// An HTTP/2 (prior knowledge, no TLS) request whose body starts with
/// `first`, goes on at a passing rate until `attack` and then trickles;
/// resolves when the server has closed the connection. With `grpc`, `first`
/// is a gRPC frame header declaring a 4 MiB message.
async fn slow_h2_body(
    addr: SocketAddr,
    path: &str,
    grpc: bool,
    attack: watch::Receiver<bool>,
    t0: Instant,
) -> JoinHandle<Duration> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    let conn_done = tokio::spawn(async move {
        let _ = conn.await;
        t0.elapsed()
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        },
    )));
    let mut req = http::Request::post(format!("http://{addr}{path}"));
    let first = if grpc {
        req = req
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        let mut f = vec![0u8];
        f.extend_from_slice(&(CLAIMED as u32).to_be_bytes());
        f.push(b'x');
        f
    } else {
        req = req
            .header("content-type", "application/x-protobuf")
            .header("content-length", CLAIMED.to_string());
        b"x".to_vec()
    };
    let req = req.body(body).expect("request");
    tokio::spawn(async move {
        let _ = send.send_request(req).await;
    });
    tokio::spawn(async move {
        let mut next = Bytes::from(first);
        loop {
            if tx.send(next).await.is_err() {
                break;
            }
            let pause;
            (next, pause) = pace(&attack);
            tokio::time::sleep(pause).await;
        }
    });
    conn_done
}

fn span(seed: u8) -> SpanData {
    let start = SystemTime::now();
    let scope = InstrumentationScope::builder("slow-clients").build();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes([seed; 16]),
            SpanId::from_bytes([seed; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: format!("during-attack-{seed}").into(),
        start_time: start,
        end_time: start + Duration::from_millis(1),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Ok,
        instrumentation_scope: scope,
    }
}

/// The tests of this file one at a time: each opens hundreds of connections
/// against a collector, and two at once on a 2-core machine compete for the
/// set-up time the timeouts allow (a CI run, with the others beside it,
/// saw only 194 of 400 slow bodies open when the attack was to begin).
/// (tokio's mutex: held across `.await`, and it does not poison, so one
/// failing test does not fail the others.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every `ferrotrace_connections_closed_total` line, for a failing assertion.
fn closures(tc: &TestCollector) -> Vec<String> {
    tc.collector
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("ferrotrace_connections_closed_total{"))
        .map(str::to_owned)
        .collect()
}

async fn wait_open(tc: &TestCollector, listener: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tc.collector.metrics.net.open(listener) < n {
        assert!(
            Instant::now() < deadline,
            "{listener}: only {} connections open; closed so far: {:#?}",
            tc.collector.metrics.net.open(listener),
            closures(tc)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_exports_still_succeed() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Client and server ends of ~1,000 connections live in this process.
    ferrotrace_collector::listener::raise_fd_limit();
    let tc = start(short_timeouts).await;
    let a = tc.collector.addrs.clone();
    let (grpc, http, zipkin, query) = (
        a.otlp_grpc.unwrap(),
        a.otlp_http.unwrap(),
        a.zipkin.unwrap(),
        a.http.unwrap(),
    );
    let t0 = Instant::now();
    // All 1,000 connections are opened at once, and the slow bodies keep a
    // passing rate until every connection is open (`attack`): opened one
    // after another and trickling from their first byte, the first were cut
    // (their 1 s rate window) before the last were open whenever the machine
    // was busy, and `wait_open` below saw too few.
    let (start_attack, attack) = watch::channel(false);
    let grpc_path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let ct = "application/x-protobuf";
    let (body_h1, body_h2, body_grpc, headers, idles) = tokio::join!(
        join_all((0..SLOW).map(|_| slow_http1_body(http, "/v1/traces", ct, attack.clone(), t0))),
        join_all((0..SLOW).map(|_| slow_h2_body(http, "/v1/traces", false, attack.clone(), t0))),
        join_all((0..SLOW).map(|_| slow_h2_body(grpc, grpc_path, true, attack.clone(), t0))),
        join_all((0..SLOW).map(|_| slow_http1_headers(zipkin, t0))),
        join_all((0..SLOW).map(|_| idle(query, t0))),
    );
    let opened = t0.elapsed();
    // Every body is held open at once; from now on they trickle and are
    // about to be cut.
    wait_open(&tc, "otlp_http", 2 * SLOW as u64 - 50).await;
    wait_open(&tc, "otlp_grpc", SLOW as u64 - 25).await;
    start_attack.send_replace(true);

    // The official exporter, over gRPC and HTTP/protobuf, while they are open.
    let grpc_exp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{grpc}"))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let http_exp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{http}/v1/traces"))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let open_during = (
        tc.collector.metrics.net.open("otlp_http"),
        tc.collector.metrics.net.open("otlp_grpc"),
    );
    let t = Instant::now();
    grpc_exp.export(vec![span(1)]).await.expect("gRPC export");
    let grpc_latency = t.elapsed();
    let t = Instant::now();
    http_exp.export(vec![span(2)]).await.expect("HTTP export");
    let http_latency = t.elapsed();
    println!(
        "{} slow connections opened in {opened:?}; with {} (otlp_http) and {} (otlp_grpc) open, \
         export latency: gRPC {grpc_latency:?}, HTTP/protobuf {http_latency:?}",
        5 * SLOW,
        open_during.0,
        open_during.1
    );
    assert!(
        open_during.0 >= SLOW as u64 && open_during.1 >= SLOW as u64 / 2,
        "exports ran while the slow connections were open: {open_during:?}"
    );
    assert_eq!(wait_spans(tc.store.as_ref(), [1; 16], 1).await.len(), 1);
    assert_eq!(wait_spans(tc.store.as_ref(), [2; 16], 1).await.len(), 1);

    // Each kind is closed within its timeout (+ the 1 s grace for the error
    // response + the time it took to open them all + scheduling slack).
    let slack = opened + Duration::from_secs(3);
    for (kind, handles, limit) in [
        ("HTTP/1.1 slow body", body_h1, Duration::from_secs(2)),
        ("h2c slow body", body_h2, Duration::from_secs(2)),
        ("gRPC stalled message", body_grpc, Duration::from_secs(2)),
        ("slow headers", headers, Duration::from_secs(2)),
        ("idle", idles, Duration::from_secs(3)),
    ] {
        let mut worst = Duration::ZERO;
        for h in handles {
            let closed_at = tokio::time::timeout(limit + slack, h)
                .await
                .unwrap_or_else(|_| {
                    panic!("{kind}: a connection still open after {:?}", limit + slack)
                })
                .unwrap();
            worst = worst.max(closed_at);
        }
        println!("{kind}: all {SLOW} closed, the last {worst:?} after the attack began");
    }
    let m = &tc.collector.metrics.net;
    let text = tc.collector.metrics.render();
    // Every closure by listener and reason, for a failing assertion below.
    let closed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ferrotrace_connections_closed_total{"))
        .collect();
    assert!(
        m.closed_count("otlp_http", "body_too_slow") >= 2 * SLOW as u64,
        "{closed:#?}"
    );
    assert!(
        m.closed_count("otlp_grpc", "body_too_slow") >= SLOW as u64,
        "{closed:#?}"
    );
    assert!(
        m.closed_count("zipkin", "header_timeout") >= SLOW as u64,
        "{closed:#?}"
    );
    assert!(
        m.closed_count("query", "idle") >= SLOW as u64,
        "{closed:#?}"
    );
    assert!(
        text.contains(
            "ferrotrace_connections_closed_total{listener=\"otlp_grpc\",reason=\"body_too_slow\"}"
        ),
        "{text}"
    );
    // Nothing was refused for memory: the claims were never charged.
    assert_eq!(tc.collector.metrics.requests_failed.get("inflight_full"), 0);
    tc.collector.shutdown().await;
}

/// A body that claims 8 MiB and sends 10 bytes holds 10 bytes of the
/// in-flight budget, not 8 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_content_length_is_not_charged() {
    use std::sync::atomic::Ordering::Relaxed;
    let _alone = ONE_AT_A_TIME.lock().await;
    // The default budget (a quarter of the memory limit) is far below the
    // 400 MiB these bodies claim.
    let tc = start(|_| {}).await;
    let http = tc.collector.addrs.otlp_http.unwrap();
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(http).await.unwrap();
        s.write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
              Content-Length: 8388608\r\n\r\n0123456789",
        )
        .await
        .unwrap();
        held.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while tc.collector.metrics.inflight_bytes.load(Relaxed) < 500 {
        assert!(Instant::now() < deadline, "bodies not read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(tc.collector.metrics.inflight_bytes.load(Relaxed) <= 50 * 64 * 1024);
    let r = post(
        http,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        prost::Message::encode_to_vec(&request_with(3, 10)),
    )
    .await;
    assert_eq!(r.status, 200);
    drop(held);
    tc.collector.shutdown().await;
}

/// `GET path` over a fresh HTTP/1.1 connection: status and body, or `None`
/// if the connection failed.
async fn raw_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

/// The collector binary under `ulimit -n 256`: hundreds of idle connections
/// to the receivers and the query listener do not stop `/healthz` (nor an
/// export) from being served; the idle ones are closed to make room.
#[test]
fn healthz_answers_with_hundreds_of_idle_connections_under_a_low_fd_limit() {
    use std::os::unix::process::CommandExt;
    let _alone = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (grpc, http, zipkin, query) = (free(), free(), free(), free());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"));
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(["--otlp-grpc-addr", &grpc.to_string()])
        .args(["--otlp-http-addr", &http.to_string()])
        .args(["--zipkin-addr", &zipkin.to_string()])
        .args(["--http-addr", &query.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and only touches the child.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Killed however the test ends.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = KillOnDrop(cmd.spawn().expect("start the collector binary"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let get = |path: &'static str| async move {
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(5), raw_get(query, path))
                .await
                .ok()
                .flatten();
            (r, t.elapsed())
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(get("/healthz").await.0, Some((200, _))) {
            assert!(Instant::now() < deadline, "collector did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // 600 idle connections, far past what 256 descriptors allow.
        let mut conns = Vec::new();
        for i in 0..600 {
            let addr = [http, grpc, zipkin, query][i % 4];
            if let Ok(s) = TcpStream::connect(addr).await {
                conns.push(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            let (status, took) = get("/healthz").await;
            assert_eq!(status.map(|s| s.0), Some(200), "/healthz must answer");
            worst = worst.max(took);
        }
        let export = tokio::time::timeout(
            Duration::from_secs(5),
            post(
                http,
                "/v1/traces",
                &[("content-type", "application/x-protobuf")],
                prost::Message::encode_to_vec(&request_with(4, 5)),
            ),
        )
        .await
        .expect("export answered")
        .status;
        assert_eq!(export, 200);
        let (_, text) = get("/metrics").await.0.expect("/metrics answers");
        println!(
            "RLIMIT_NOFILE 256, {} idle connections opened: /healthz worst {worst:?}",
            conns.len()
        );
        assert!(
            text.contains("reason=\"evicted\""),
            "idle connections were closed to make room: {text}"
        );
        drop(conns);
    });
}
