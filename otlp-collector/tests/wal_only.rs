//! The WAL, not the in-memory queue, is the outage budget: the real collector
//! binary over SQLite, its sink blocked (a test connection holds SQLite's
//! write lock), a 1 MiB queue and a 256 MiB WAL. Requests go on being
//! acknowledged far beyond what the queue holds (the spans wait in the WAL
//! only), memory stays bounded, and once the sink is back every acknowledged
//! span is stored exactly once and every WAL segment is released. A second
//! test kills the collector (`kill -9`) while spans wait in the WAL only: the
//! restart's replay stores them, none lost.

mod ingest_util;
mod net;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ingest_util::*;
use net::free_addr;
use parking_lot::Mutex;
use prost::Message;

const QUEUE_BYTES: u64 = 1 << 20;
const SPANS_PER_REQUEST: u32 = 50;
const CLIENTS: u32 = 4;
/// Batch size and waiting batches of the sink path, set explicitly: spans the
/// pipeline has taken out of the queue are held there, at most one batch being
/// written, `PENDING_BATCHES` waiting and one being filled (a batch closes
/// once it reaches `BATCH_SPANS`, so it may exceed it by one request less a
/// span), plus the request in the worker's hands.
const BATCH_SPANS: u64 = 500;
const PENDING_BATCHES: u64 = 4;
const TAKEN_FROM_QUEUE_MAX: u64 =
    (PENDING_BATCHES + 2) * (BATCH_SPANS + SPANS_PER_REQUEST as u64) + SPANS_PER_REQUEST as u64;

struct Addrs {
    http: SocketAddr,
    query: SocketAddr,
}

fn spawn(dir: &std::path::Path, a: &Addrs) -> Child {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\nmax_bytes = {QUEUE_BYTES}\nretry_after_secs = 1\n\
             [wal]\nmax_bytes = 268435456\nsegment_bytes = 4194304\n\
             [sqlite]\nbusy_timeout_ms = 100\n\
             [batcher]\nretry_max_ms = 300\nmax_delay_ms = 20\n\
             max_spans = {BATCH_SPANS}\nmax_pending_batches = {PENDING_BATCHES}\n"
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--zipkin-addr", ""])
        .args(["--otlp-grpc-addr", ""])
        .args(["--otlp-http-addr", &a.http.to_string()])
        .args(["--http-addr", &a.query.to_string()])
        .args(["--log", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn collector")
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    request("GET", addr, path, &[], Bytes::new()).await
}

async fn wait_ready(query: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(1), async {
            tokio::net::TcpStream::connect(query).await.is_ok()
                && get(query, "/readyz").await.status == 200
        })
        .await
        .unwrap_or(false);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "collector did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sum of a metric's series in the collector's `/metrics`.
async fn metric(query: SocketAddr, series: &str) -> u64 {
    let text = String::from_utf8(get(query, "/metrics").await.body.to_vec()).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with(series)
                && matches!(l.as_bytes().get(series.len()), Some(b' ') | Some(b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Kills the collector if the test fails before stopping it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Holds SQLite's write lock from another connection until released: every
/// sink write fails with "database is locked" and is retried.
struct SinkBlock {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl SinkBlock {
    fn hold(db: std::path::PathBuf) -> SinkBlock {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
            c.execute_batch("ROLLBACK").unwrap();
        });
        locked_rx.recv().unwrap();
        SinkBlock { release, thread }
    }

    fn release(self) {
        self.release.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

/// `CLIENTS` closed-loop senders for `load`; returns the acknowledged traces.
/// Every answer is 200 (the WAL is far from full and nothing else refuses).
async fn send(http: SocketAddr, load: Duration) -> Vec<u32> {
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let stop_at = Instant::now() + load;
    let mut clients = Vec::new();
    for w in 0..CLIENTS {
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let mut t = (w + 1) * 10_000_000;
            while Instant::now() < stop_at {
                t += 2; // request_with links to trace t + 1
                let r = post(
                    http,
                    "/v1/traces",
                    &[("content-type", "application/x-protobuf")],
                    request_with(t, SPANS_PER_REQUEST).encode_to_vec(),
                )
                .await;
                assert_eq!(
                    r.status,
                    200,
                    "refused while the WAL has room: {}",
                    String::from_utf8_lossy(&r.body)
                );
                acked.lock().push(t);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let v = acked.lock().clone();
    v
}

/// Span count per stored trace.
fn stored(dir: &std::path::Path) -> BTreeMap<Vec<u8>, u64> {
    let c = rusqlite::Connection::open(dir.join("data").join("ferrotrace.db")).unwrap();
    let mut stmt = c
        .prepare("SELECT trace_id, count(*) FROM spans GROUP BY trace_id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u64>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

fn assert_stored_exactly(dir: &std::path::Path, acked: &[u32]) {
    let stored = stored(dir);
    let expected: BTreeSet<Vec<u8>> = acked.iter().map(|t| trace_id(*t).to_vec()).collect();
    let stored_ids: BTreeSet<Vec<u8>> = stored.keys().cloned().collect();
    assert_eq!(
        stored_ids.len(),
        expected.len(),
        "stored vs acknowledged traces"
    );
    assert!(
        stored_ids == expected,
        "stored traces differ from acknowledged"
    );
    for t in acked {
        assert_eq!(
            stored[&trace_id(*t).to_vec()],
            u64::from(SPANS_PER_REQUEST),
            "trace {t}"
        );
    }
}

async fn wait_written(query: SocketAddr, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let written = metric(query, "ferrotrace_sink_spans_written_total").await;
        if written >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sink did not catch up: {written} of {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_go_on_beyond_the_queue_and_each_span_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = Addrs {
        http: free_addr(),
        query: free_addr(),
    };
    let mut child = KillOnDrop(spawn(dir.path(), &a));
    let pid = child.0.id();
    wait_ready(a.query, Duration::from_secs(30)).await;
    let block = SinkBlock::hold(dir.path().join("data").join("ferrotrace.db"));

    let acked = send(a.http, Duration::from_secs(5)).await;
    let acked_spans = acked.len() as u64 * u64::from(SPANS_PER_REQUEST);
    // The queue is full now (the sink has taken nothing): what it holds is
    // what its byte budget allows.
    let queue_spans = metric(a.query, "ferrotrace_queue_spans").await;
    let queue_bytes = metric(a.query, "ferrotrace_queue_bytes").await;
    let wal_only = metric(a.query, "ferrotrace_queue_wal_only_spans").await;
    let wal_bytes = metric(a.query, "ferrotrace_wal_bytes").await;
    let peak_kib = status_kib(pid, "VmHWM:");
    eprintln!(
        "sink blocked: acknowledged {acked_spans} spans ({} requests); queue holds {queue_spans} \
         spans / {queue_bytes} bytes (budget {QUEUE_BYTES}); {wal_only} spans in the WAL only; \
         WAL {wal_bytes} bytes ({} bytes per span); peak RSS {} MiB",
        acked.len(),
        wal_bytes / acked_spans.max(1),
        peak_kib / 1024
    );
    assert!(queue_spans > 0 && queue_bytes <= QUEUE_BYTES + 200_000);
    assert!(
        acked_spans > 5 * queue_spans,
        "acknowledged {acked_spans} spans, not well beyond the queue's {queue_spans}"
    );
    assert!(
        wal_only + queue_spans + TAKEN_FROM_QUEUE_MAX >= acked_spans,
        "the spans not in the queue wait in the WAL only: {wal_only} + {queue_spans} \
         (+ at most {TAKEN_FROM_QUEUE_MAX} taken by the blocked sink path) of {acked_spans}"
    );
    assert!(
        peak_kib < 256 * 1024,
        "memory grew with the backlog: peak RSS {peak_kib} KiB"
    );

    // The sink is back: the WAL-only spans are read back and stored.
    block.release();
    wait_written(a.query, acked_spans, Duration::from_secs(90)).await;
    // Nothing is written twice (a span both queued and read back would be).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        metric(a.query, "ferrotrace_sink_spans_written_total").await,
        acked_spans
    );
    assert_eq!(metric(a.query, "ferrotrace_queue_wal_only_spans").await, 0);
    assert!(metric(a.query, "ferrotrace_queue_wal_only_read_back_total").await > 0);
    assert_eq!(
        metric(a.query, "ferrotrace_queue_wal_only_read_errors_total").await,
        0
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    assert!(child.0.wait().unwrap().success());
    assert_stored_exactly(dir.path(), &acked);
    // Every span was committed, so every segment was released.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("data").join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("wal".as_ref()))
        .collect();
    assert!(left.is_empty(), "WAL segments left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_spans_wait_in_the_wal_only_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let a = Addrs {
        http: free_addr(),
        query: free_addr(),
    };
    let mut child = KillOnDrop(spawn(dir.path(), &a));
    wait_ready(a.query, Duration::from_secs(30)).await;
    let block = SinkBlock::hold(dir.path().join("data").join("ferrotrace.db"));
    let acked = send(a.http, Duration::from_secs(3)).await;
    let wal_only = metric(a.query, "ferrotrace_queue_wal_only_spans").await;
    assert!(wal_only > 0, "spans must be waiting in the WAL only");
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    eprintln!(
        "killed with {wal_only} spans in the WAL only, {} acknowledged",
        acked.len() as u64 * u64::from(SPANS_PER_REQUEST)
    );

    // Restart on the same data; the replay needs the sink to make room.
    let mut child = KillOnDrop(spawn(dir.path(), &a));
    block.release();
    wait_ready(a.query, Duration::from_secs(90)).await;
    let want = acked.len() as u64 * u64::from(SPANS_PER_REQUEST);
    wait_written(a.query, want, Duration::from_secs(90)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status();
    assert!(child.0.wait().unwrap().success());
    assert_stored_exactly(dir.path(), &acked);
}
