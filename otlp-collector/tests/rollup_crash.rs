//! `kill -9` the real collector binary before and after its per-minute
//! rollups were written, restart it on the same data dir each time, and check
//! that the stored per-minute operation counts and caller → callee edge counts
//! equal exactly the acknowledged spans and calls: nothing lost (rollups of
//! spans already released from the WAL), nothing counted twice (replayed
//! spans whose rollups were already stored).

mod ingest_util;
mod net;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrotrace_collector::rollup::MINUTE_NS;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::{AnalyticsReader, LatencyQuery, TimeRange};
use ingest_util::{kv, span_id, trace_id};
use net::free_addr;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
use prost::Message;

/// Small WAL segments, so sealed segments are deleted during the test; half
/// the traces sampled out, so their spans leave the WAL at once; rollups
/// written as soon as their minute is over.
const CONFIG: &str = r#"
[wal]
segment_bytes = 4096
[batcher]
max_delay_ms = 20
rollup_flush_ms = 100
[rollups]
finalize_delay_secs = 0
[sampling.head]
rate = 0.5
"#;

struct Running {
    child: Child,
    otlp: SocketAddr,
}

fn spawn(dir: &Path) -> Running {
    let (otlp, http) = (free_addr(), free_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"))
        .arg("--config")
        .arg(dir.join("collector.toml"))
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
    wait_ready(http);
    Running { child, otlp }
}

fn wait_ready(http: SocketAddr) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            if out.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "collector did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One trace: `front` (SERVER, root) calls `back` (SERVER, its child). The
/// child comes first, as an SDK that exports spans when they end sends it.
fn trace_request(t: u32, start_ns: u64) -> ExportTraceServiceRequest {
    let span = |i: u32, service: &str, name: &str| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", V::StringValue(service.into()))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: None,
            spans: vec![PSpan {
                trace_id: trace_id(t).to_vec(),
                span_id: span_id(t, i).to_vec(),
                parent_span_id: if i == 0 {
                    vec![]
                } else {
                    span_id(t, 0).to_vec()
                },
                name: name.into(),
                kind: 2,
                start_time_unix_nano: start_ns + i as u64 * 1_000,
                end_time_unix_nano: start_ns + 2_000_000,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![span(1, "back", "handle"), span(0, "front", "GET /x")],
    }
}

/// Acknowledged traces per minute.
type Acked = BTreeMap<u64, u64>;

/// Sends one trace per timestamp, one request at a time (nothing is in
/// flight when the test kills the collector); records what was acknowledged.
async fn send(c: &Running, first_trace: u32, starts: &[u64], acked: &mut Acked) {
    for (i, &start) in starts.iter().enumerate() {
        let body = trace_request(first_trace + i as u32, start).encode_to_vec();
        let resp = ingest_util::post(
            c.otlp,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            body,
        )
        .await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        *acked.entry(start - start % MINUTE_NS).or_default() += 1;
    }
}

/// Operation and edge counts stored for `minute`.
async fn stored(store: &SqliteStore, minute: u64) -> (u64, u64, u64) {
    let range = TimeRange {
        start_ns: minute,
        end_ns: minute + MINUTE_NS,
    };
    let count = |service: &str, op: &str| LatencyQuery {
        service: service.into(),
        operation: Some(op.into()),
        range,
        step_ns: None,
        kinds: vec![],
    };
    let front = store
        .latency(&count("front", "GET /x"))
        .await
        .expect("latency");
    let back = store
        .latency(&count("back", "handle"))
        .await
        .expect("latency");
    let calls = store
        .dependencies(range)
        .await
        .expect("dependencies")
        .iter()
        .filter(|e| e.caller == "front" && e.callee == "back")
        .map(|e| e.calls)
        .sum();
    let sum = |p: &[ferrotrace_collector::storage::LatencyPoint]| p.iter().map(|p| p.count).sum();
    (sum(&front), sum(&back), calls)
}

/// Waits until every minute of `want` shows at least the wanted counts.
async fn wait_written(store: &SqliteStore, want: &Acked) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for (&minute, &n) in want {
        loop {
            let (f, b, c) = stored(store, minute).await;
            if f >= n && b >= n && c >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rollups of minute {minute} not written: {f}/{b}/{c} of {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn kill_9(mut c: Running) {
    c.child.kill().expect("kill -9");
    let _ = c.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_are_exact_across_kill_9_before_and_after_they_were_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("collector.toml"), CONFIG).unwrap();
    let store = || SqliteStore::open(dir.path().join("data/ferrotrace.db")).expect("open SQLite");

    let now = now_ns();
    let this_minute = now - now % MINUTE_NS;
    // Finished minutes (written within ~100 ms) and a minute two hours ahead
    // (never finished while the test runs: only in memory until shutdown).
    let past: Vec<u64> = (0..4).map(|k| this_minute - (10 - k) * MINUTE_NS).collect();
    let future = this_minute + 120 * MINUTE_NS;
    let at = |minutes: &[u64], n: usize, salt: u64| -> Vec<u64> {
        (0..n)
            .map(|i| minutes[i % minutes.len()] + (salt * 1_000 + i as u64) * 1_000_000)
            .collect()
    };
    let mut acked = Acked::new();

    // Run 1: rollups of past minutes written, then more traces whose rollups
    // are only in memory (past minutes just sent, and the future minute).
    let c = spawn(dir.path());
    send(&c, 0, &at(&past, 60, 1), &mut acked).await;
    wait_written(&store(), &acked).await;
    send(&c, 1_000, &at(&[future], 20, 2), &mut acked).await;
    send(&c, 2_000, &at(&past, 12, 3), &mut acked).await;
    kill_9(c);

    // Run 2: replay, more traffic into the same minutes, written, then kill
    // again right after acknowledgements.
    let c = spawn(dir.path());
    let before_run2 = acked.clone();
    send(&c, 3_000, &at(&past, 40, 4), &mut acked).await;
    wait_written(
        &store(),
        &acked
            .iter()
            .filter(|(m, _)| **m != future)
            .map(|(m, n)| (*m, *n))
            .collect(),
    )
    .await;
    send(&c, 4_000, &at(&[future], 10, 5), &mut acked).await;
    kill_9(c);
    assert!(acked.values().sum::<u64>() > before_run2.values().sum::<u64>());

    // Run 3: replay again, then a clean stop writes every remaining minute.
    let mut c = spawn(dir.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.child.id().to_string())
        .status();
    let status = c.child.wait().expect("wait");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");

    let store = store();
    let mut wrong = Vec::new();
    for (&minute, &n) in &acked {
        let got = stored(&store, minute).await;
        if got != (n, n, n) {
            wrong.push((minute, got, n));
        }
    }
    assert!(
        wrong.is_empty(),
        "(minute, stored (front ops, back ops, front→back calls), acknowledged traces): {wrong:?}"
    );
}
