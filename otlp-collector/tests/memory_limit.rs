//! One memory limit under any load: the real collector binary with
//! `limits.memory_limit_mib = 160` and a sink that is blocked (a test
//! connection holds SQLite's write lock), saturated by many concurrent large
//! OTLP/HTTP and OTLP/gRPC requests. Its peak resident memory (the kernel's
//! high-water mark, `VmHWM`) stays under the limit, refusals carry retry
//! hints and are counted, and once the sink is released every acknowledged
//! span is stored, nothing else is, and the collector accepts again.

mod ingest_util;
mod net;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace_collector::receiver::rpc_status::{RetryInfo, RpcStatus};
use ingest_util::*;
use net::free_addr;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use parking_lot::Mutex;
use prost::Message;

const LIMIT_MIB: u64 = 160;
const SPANS_PER_REQUEST: u32 = 1_000;
const HTTP_CLIENTS: u32 = 12;
const GRPC_CLIENTS: u32 = 6;
const LOAD: Duration = Duration::from_secs(12);

struct Addrs {
    grpc: SocketAddr,
    http: SocketAddr,
    query: SocketAddr,
}

fn spawn(dir: &std::path::Path, a: &Addrs) -> Child {
    let config = dir.join("collector.toml");
    // The budgets are derived from the limit (40 MiB each), except the queue,
    // which is set larger on purpose (80 MiB of spans on top of everything
    // else would not fit under 160 MiB), so that the memory guard, not the
    // queue's own bound, is what must keep the process under the limit.
    // Few requests may wait in the WAL only (they hold no memory), so the
    // queue still fills and the sink's catch-up stays short.
    std::fs::write(
        &config,
        format!(
            "[limits]\nmemory_limit_mib = {LIMIT_MIB}\nmax_request_bytes = 4194304\n\
             max_decompressed_bytes = 8388608\n\
             [queue]\nmax_spans = 1000000\nmax_bytes = 83886080\nretry_after_secs = 1\n\
             wal_only_max_records = 16\n\
             [sqlite]\ncache_kib = 4096\nbusy_timeout_ms = 200\n\
             [batcher]\nretry_max_ms = 500\n"
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--zipkin-addr", ""])
        .args(["--otlp-grpc-addr", &a.grpc.to_string()])
        .args(["--otlp-http-addr", &a.http.to_string()])
        .args(["--http-addr", &a.query.to_string()])
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn collector")
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    request("GET", addr, path, &[], Bytes::new()).await
}

async fn wait_ready(query: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
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

/// A large request: `SPANS_PER_REQUEST` spans of trace `t`, each with a
/// 1 KiB attribute (about 1.3 MB encoded).
fn big_request(t: u32) -> ExportTraceServiceRequest {
    let mut req = request_with(t, SPANS_PER_REQUEST);
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        let fill = (b'a' + (s.span_id[7] % 26)) as char;
        s.attributes
            .push(kv("payload", V::StringValue(fill.to_string().repeat(1024))));
    }
    req
}

/// Kills the collector if the test fails before stopping it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Tally {
    acked: Vec<u32>,
    refused_http: u64,
    refused_grpc: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_under_the_limit_when_saturated_and_the_collector_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let a = Addrs {
        grpc: free_addr(),
        http: free_addr(),
        query: free_addr(),
    };
    let mut child = KillOnDrop(spawn(dir.path(), &a));
    let pid = child.0.id();
    wait_ready(a.query).await;

    // Block the sink: hold SQLite's write lock, so every batch write fails
    // with "database is locked" and is retried; the queue and memory fill.
    let db = dir.path().join("data").join("ferrotrace.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        c.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();

    let tally: Arc<Mutex<Tally>> = Arc::default();
    let stop_at = Instant::now() + LOAD;
    let mut clients = Vec::new();
    for w in 0..HTTP_CLIENTS + GRPC_CLIENTS {
        let tally = tally.clone();
        let (http, grpc) = (a.http, a.grpc);
        clients.push(tokio::spawn(async move {
            let mut g = if w >= HTTP_CLIENTS {
                Some(
                    TraceServiceClient::connect(format!("http://{grpc}"))
                        .await
                        .unwrap(),
                )
            } else {
                None
            };
            let mut t = (w + 1) * 1_000_000;
            while Instant::now() < stop_at {
                t += 1;
                let req = big_request(t);
                let accepted = match g.as_mut() {
                    None => {
                        let r = post(
                            http,
                            "/v1/traces",
                            &[("content-type", "application/x-protobuf")],
                            req.encode_to_vec(),
                        )
                        .await;
                        match r.status {
                            200 => true,
                            429 => {
                                assert_eq!(r.headers["retry-after"], "1");
                                let st = RpcStatus::decode(r.body.as_ref()).unwrap();
                                assert_eq!(st.code, 8, "RESOURCE_EXHAUSTED");
                                let retry = RetryInfo::decode(st.details[0].value.as_slice())
                                    .expect("RetryInfo in the 429 body");
                                assert_eq!(retry.retry_delay.unwrap().seconds, 1);
                                tally.lock().refused_http += 1;
                                false
                            }
                            s => panic!("unexpected HTTP status {s}: {:?}", r.body),
                        }
                    }
                    Some(g) => match g.export(req).await {
                        Ok(_) => true,
                        Err(e) => {
                            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
                            let st = RpcStatus::decode(e.details()).unwrap();
                            assert_eq!(
                                st.details[0].type_url,
                                "type.googleapis.com/google.rpc.RetryInfo"
                            );
                            tally.lock().refused_grpc += 1;
                            false
                        }
                    },
                };
                if accepted {
                    tally.lock().acked.push(t);
                } else {
                    // A client that honoured Retry-After would wait a second;
                    // these retry sooner to keep the pressure on.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let peak_kib = status_kib(pid, "VmHWM:");
    let refused_memory = metric(
        a.query,
        "ferrotrace_requests_failed_total{status=\"memory_limit\"}",
    )
    .await;
    let resident = metric(a.query, "ferrotrace_memory_resident_bytes").await;
    let (acked, refused_http, refused_grpc) = {
        let t = tally.lock();
        (t.acked.clone(), t.refused_http, t.refused_grpc)
    };
    eprintln!(
        "peak RSS {} MiB (limit {LIMIT_MIB} MiB), acked {} requests, refused {refused_http} \
         HTTP + {refused_grpc} gRPC, {refused_memory} for the memory limit, resident now {} MiB",
        peak_kib / 1024,
        acked.len(),
        resident >> 20
    );
    assert!(
        peak_kib <= LIMIT_MIB * 1024,
        "peak RSS {peak_kib} KiB above the {LIMIT_MIB} MiB limit"
    );
    assert!(refused_http > 0 && refused_grpc > 0);
    assert!(
        refused_memory > 0,
        "the memory guard must have refused requests"
    );
    assert!(!acked.is_empty());

    // Release the sink: the backlog is written, memory goes down, and the
    // collector accepts again.
    release_tx.send(()).unwrap();
    locker.join().unwrap();
    let recovery = 999_000_000u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = post(
            a.http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            request_with(recovery, 10).encode_to_vec(),
        )
        .await;
        if r.status == 200 {
            eprintln!(
                "accepting again after the sink was released: resident {} MiB, {} heap trims",
                metric(a.query, "ferrotrace_memory_resident_bytes").await >> 20,
                metric(a.query, "ferrotrace_memory_trims_total").await
            );
            break;
        }
        assert_eq!(r.status, 429);
        assert!(
            Instant::now() < deadline,
            "the collector still refuses a minute after the sink recovered (resident {} MiB)",
            metric(a.query, "ferrotrace_memory_resident_bytes").await >> 20
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = acked.len() as u64 * u64::from(SPANS_PER_REQUEST) + 10;
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(a.query, "ferrotrace_sink_spans_written_total").await < want {
        assert!(
            Instant::now() < deadline,
            "sink did not catch up: {} of {want}",
            metric(a.query, "ferrotrace_sink_spans_written_total").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    assert!(child.0.wait().unwrap().success());

    // Exactly the acknowledged traces are stored, each whole.
    let c = rusqlite::Connection::open(dir.path().join("data").join("ferrotrace.db")).unwrap();
    let mut stmt = c
        .prepare("SELECT trace_id, count(*) FROM spans GROUP BY trace_id")
        .unwrap();
    let stored: BTreeMap<Vec<u8>, u64> = stmt
        .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u64>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut expected: BTreeSet<Vec<u8>> = acked.iter().map(|t| trace_id(*t).to_vec()).collect();
    expected.insert(trace_id(recovery).to_vec());
    let stored_ids: BTreeSet<Vec<u8>> = stored.keys().cloned().collect();
    assert_eq!(
        stored_ids.len(),
        expected.len(),
        "stored traces vs acknowledged"
    );
    assert!(
        stored_ids == expected,
        "stored traces differ from acknowledged"
    );
    for t in &acked {
        assert_eq!(
            stored[&trace_id(*t).to_vec()],
            u64::from(SPANS_PER_REQUEST),
            "trace {t}"
        );
    }
}
