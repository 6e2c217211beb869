//! Microbenchmark of the SQLite sink's write path: `SqliteStore::write_spans`
//! with realistic batches, into a fresh database file.
//!
//! Spans look like the load generator's (10 attributes: 6 strings, 2 ints, a
//! bool, a double; an event on every fourth span; 4 services, 16 operations),
//! but trace ids are random, as real trace ids are, a trace has 10 spans and
//! `url.path` takes 100,000 values. `--loadgen-ids 1` makes them as the load
//! generator's instead (what `store_bench.py` stores): trace ids counting up
//! on 8 connections, 200-span traces, 200 `url.path` values.
//! The rate is reported per window of batches, so the effect of a growing
//! database (B-trees outgrowing the page cache) shows.
//!
//! Run a release build (numbers from debug builds mean nothing):
//!
//! ```sh
//! cargo run --release -p ferrotrace-collector --example sqlite_write_bench -- \
//!     --spans 400000 --batch 1000 [--dir /work/tmp]
//! ```
//!
//! It prints one JSON line per window and a summary line.

use std::time::Instant;

use ferrotrace_collector::model::{AttrValue, Event, KeyValue, Span, SpanKind, StatusCode};
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::SpanWriter;

/// xorshift64*: deterministic ids without adding a dependency to the example.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn span(rng: &mut Rng, trace_id: [u8; 16], i: usize, start: u64, loadgen: bool) -> Span {
    let s = |v: &str| AttrValue::Str(v.into());
    // The load generator: one server span per 200-span trace, no errors,
    // the service by connection (the trace id's first half).
    let root = if loadgen {
        i == 0
    } else {
        i.is_multiple_of(10)
    };
    let error = !loadgen && i % 50 == 7;
    let svc = if loadgen {
        (u64::from_be_bytes(trace_id[..8].try_into().expect("8 bytes")) - 1) % 4
    } else {
        (i as u64 / 10) % 4
    };
    let mut span_id = [0u8; 8];
    span_id.copy_from_slice(&rng.next().to_be_bytes());
    Span {
        trace_id,
        span_id,
        parent_span_id: (!root).then(|| rng.next().to_be_bytes()),
        trace_state: String::new(),
        flags: 1,
        name: compact_str::format_compact!("GET /api/items/{}", i % 16),
        kind: if root {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        start_ns: start,
        end_ns: start + 250_000 + (i as u64 % 97) * 10_000,
        attributes: vec![
            KeyValue::new("http.request.method", s("GET")),
            KeyValue::new("http.route", s("/api/items/{id}")),
            KeyValue::new("http.response.status_code", AttrValue::Int(200)),
            KeyValue::new(
                "url.path",
                AttrValue::Str(compact_str::format_compact!(
                    "/api/items/{}",
                    if loadgen {
                        i as u64 % 200
                    } else {
                        rng.next() % 100_000
                    }
                )),
            ),
            KeyValue::new("server.address", s("items.internal")),
            KeyValue::new("server.port", AttrValue::Int(8080)),
            KeyValue::new("user_agent.original", s("loadgen/1.0")),
            KeyValue::new("network.protocol.version", s("1.1")),
            KeyValue::new("app.cache_hit", AttrValue::Bool(i.is_multiple_of(3))),
            KeyValue::new("app.items", AttrValue::Double(i as f64 * 1.5)),
        ],
        dropped_attributes_count: 0,
        events: if i.is_multiple_of(4) {
            vec![Event {
                time_ns: start + 1_000,
                name: "cache.lookup".into(),
                attributes: vec![KeyValue::new(
                    "cache.key",
                    AttrValue::Str(compact_str::format_compact!("item:{i}")),
                )],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        },
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status_code: if error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        },
        status_message: String::new(),
        service_name: compact_str::format_compact!("bench-svc-{svc}"),
        resource_attributes: vec![
            KeyValue::new(
                "service.name",
                AttrValue::Str(compact_str::format_compact!("bench-svc-{svc}")),
            ),
            KeyValue::new("host.name", s("bench")),
        ]
        .into(),
        scope_name: "bench".into(),
        scope_version: "1.0".into(),
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("numeric argument"))
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total = arg(&args, "--spans", 400_000) as usize;
    let batch = arg(&args, "--batch", 1_000) as usize;
    let window = arg(&args, "--window", 100_000) as usize;
    let loadgen = arg(&args, "--loadgen-ids", 0) != 0;
    let base = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let store = SqliteStore::open(dir.path().join("bench.db")).expect("open store");

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t0_ns = 1_800_000_000_000_000_000u64;
    // Prebuild every batch so only write_spans is timed.
    let mut batches = Vec::with_capacity(total / batch);
    let mut n = 0usize;
    while n + batch <= total {
        let mut b = Vec::with_capacity(batch);
        let mut trace_id = [0u8; 16];
        for i in 0..batch {
            if loadgen {
                // Request k of connection k % 8 is its (k / 8)th trace.
                let k = ((n + i) / 200) as u64;
                trace_id[..8].copy_from_slice(&(k % 8 + 1).to_be_bytes());
                trace_id[8..].copy_from_slice(&(k / 8).to_be_bytes());
            } else if i.is_multiple_of(10) {
                trace_id[..8].copy_from_slice(&rng.next().to_be_bytes());
                trace_id[8..].copy_from_slice(&rng.next().to_be_bytes());
            }
            let pos = if loadgen { (n + i) % 200 } else { i };
            b.push(span(
                &mut rng,
                trace_id,
                pos,
                t0_ns + (n + i) as u64 * 20_000,
                loadgen,
            ));
        }
        n += batch;
        batches.push(b);
    }

    let start = Instant::now();
    let mut win_start = Instant::now();
    let mut written = 0usize;
    let mut win_written = 0usize;
    for b in &batches {
        store.write_spans(b).await.expect("write_spans");
        written += b.len();
        win_written += b.len();
        if win_written >= window {
            let secs = win_start.elapsed().as_secs_f64();
            println!(
                "{{\"spans_so_far\": {written}, \"window_spans_per_s\": {:.0}}}",
                win_written as f64 / secs
            );
            win_start = Instant::now();
            win_written = 0;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(dir.path().join("bench.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.path().join("bench.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "{{\"spans\": {written}, \"batch\": {batch}, \"seconds\": {secs:.2}, \"spans_per_s\": {:.0}, \"db_bytes\": {bytes}}}",
        written as f64 / secs
    );
}
