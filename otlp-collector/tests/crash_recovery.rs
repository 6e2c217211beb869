//! `kill -9` the real collector binary during sustained ingestion, start it
//! again on the same data dir: every acknowledged span is in the SQLite store
//! exactly once.

mod ingest_util;
mod net;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::TraceReader;
use ingest_util::*;
use net::free_addr;
use parking_lot::Mutex;
use prost::Message;

const SPANS_PER_REQUEST: u32 = 20;

fn spawn(data: &std::path::Path, otlp: SocketAddr, http: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"))
        .arg("--data-dir")
        .arg(data)
        .args(["--otlp-grpc-addr", "", "--zipkin-addr", ""])
        .args(["--otlp-http-addr", &otlp.to_string()])
        .args(["--http-addr", &http.to_string()])
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn collector")
}

async fn wait_ready(http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(http),
        )
        .await
        {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingestion_loses_no_acknowledged_span_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (otlp, http) = (free_addr(), free_addr());
    let mut child = spawn(&data, otlp, http);
    wait_ready(http).await;

    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for w in 0..4u32 {
        let (acked, stop) = (acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let mut t = w * 1_000_000;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                t += 1;
                let body = request_with(t, SPANS_PER_REQUEST).encode_to_vec();
                let req = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://{otlp}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
                    Ok(Ok(resp)) if resp.status() == 200 => acked.lock().push(t),
                    Ok(Ok(_)) => {}
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }
    // Sustained ingestion, then SIGKILL mid-stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in senders {
        let _ = s.await;
    }
    let acked: Vec<u32> = acked.lock().clone();
    assert!(
        acked.len() > 20,
        "too little was acknowledged before the kill: {}",
        acked.len()
    );

    // Restart on the same data dir: the WAL is replayed into the store.
    let (otlp2, http2) = (free_addr(), free_addr());
    let mut child = spawn(&data, otlp2, http2);
    wait_ready(http2).await;
    let store =
        SqliteStore::open(data.join("ferrotrace.db")).expect("open the collector's SQLite file");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut missing = Vec::new();
    for t in &acked {
        loop {
            let spans = store
                .get_trace(trace_id(*t), None)
                .await
                .expect("get_trace");
            if spans.len() == SPANS_PER_REQUEST as usize {
                let mut ids: Vec<_> = spans.iter().map(|s| s.span_id).collect();
                ids.sort();
                ids.dedup();
                assert_eq!(
                    ids.len(),
                    SPANS_PER_REQUEST as usize,
                    "trace {t} has duplicate spans"
                );
                break;
            }
            assert!(
                spans.len() <= SPANS_PER_REQUEST as usize,
                "trace {t}: {} spans stored (duplicates)",
                spans.len()
            );
            if Instant::now() > deadline {
                missing.push((*t, spans.len()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().expect("wait");
    assert!(
        missing.is_empty(),
        "acknowledged traces missing after restart: {missing:?}"
    );
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}
