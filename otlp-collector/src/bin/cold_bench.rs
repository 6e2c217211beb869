//! `cold_bench`: cold tier measurements for docs/benchmarks.md ("Cold
//! tier"). A binary rather than an ignored test so that a release build
//! needs none of the test-only dependencies:
//!
//! ```text
//! COLD_BENCH_SPANS=10000000 COLD_BENCH_S3=1 cargo run --release -p ferrotrace-collector --bin cold_bench
//! ```
//!
//! Files go to a directory under `$TMPDIR` (or `COLD_BENCH_DIR`), removed at the end.
//!
//! 1. Bytes per span, hot (SQLite) vs cold (Parquet, zstd), for the load
//!    generator's spans (`src/bin/loadgen/request.rs`: 200 spans per trace, 10
//!    attributes, an event on every fourth span).
//! 2. Trace by id over `COLD_BENCH_SPANS` spans of files generated directly
//!    with the cold writer (100,000 spans per file over two days, random
//!    trace ids), at each of `COLD_BENCH_CHECKPOINTS` (span counts, comma
//!    separated) and at the end: p50/p99 with the index cache cold and warm,
//!    and files opened per lookup.
//! 3. Search over one cold day: p50/p95 (at the same points).
//! 4. With `COLD_BENCH_S3=1` and moto installed: trace by id against moto's
//!    S3 server (`COLD_BENCH_S3_SPANS`, default 1M).
//! 5. With `COLD_BENCH_COMPACT=1`: a day of small files as PostgreSQL and
//!    ClickHouse write them (`COLD_BENCH_COMPACT_SPANS`, default 2M), lookups
//!    and searches before and after one compaction pass.
//! 6. With `COLD_BENCH_S3_FROM_SCALE=1`: the files of 2. copied as they are
//!    into moto's bucket, then the same lookups over S3 (the 100M-span S3
//!    figure of docs/benchmarks.md).
//!
//! `COLD_BENCH_KEEP=1` keeps the generated files (`cold-bench-kept` under
//! `COLD_BENCH_DIR`): a later run with the same `COLD_BENCH_SPANS` measures
//! them without generating them again.
//!
//! The 100M-span run of docs/benchmarks.md ("Session-7 cold tier"):
//!
//! ```text
//! COLD_BENCH_SPANS=100000000 COLD_BENCH_CHECKPOINTS=1000000,10000000,30000000 \
//!   COLD_BENCH_COMPACT=1 COLD_BENCH_S3=1 COLD_BENCH_S3_SPANS=10000000 target/release/cold_bench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrotrace_collector::model::{
    AttrValue, Event, KeyValue, Span, SpanKind, StatusCode, TraceId,
};
use ferrotrace_collector::storage::cold::{ColdConfig, ColdStore};
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::{Retention, SpanWriter, TimeRange, TraceQuery};

const HOUR: u64 = 3_600_000_000_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random-looking trace id for trace number `t` (production ids are random).
fn tid(t: u64) -> TraceId {
    let a = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5;
    let b = a.rotate_left(31).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&a.to_be_bytes());
    id[8..].copy_from_slice(&b.to_be_bytes());
    id
}

/// The load generator's trace `t` (200 spans) starting at `now`, as the
/// collector stores it (resource and scope copied onto each span).
fn loadgen_trace(t: u64, now: u64, conn: u64) -> Vec<Span> {
    let s = |v: &str| AttrValue::Str(v.into());
    (0..200usize)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(t as u32).to_be_bytes());
            span_id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            let parent = (i > 0).then(|| {
                let mut p = span_id;
                p[4..].copy_from_slice(&1u32.to_be_bytes());
                p
            });
            let start = now - 5_000_000 + i as u64 * 1_000;
            let service = format!("loadgen-svc-{}", conn % 4);
            Span {
                trace_id: tid(t),
                span_id,
                parent_span_id: parent,
                trace_state: String::new(),
                flags: 0,
                name: compact_str::format_compact!("GET /api/items/{}", i % 16),
                kind: if i == 0 {
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
                        AttrValue::Str(compact_str::format_compact!("/api/items/{i}")),
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
                status_code: StatusCode::Unset,
                status_message: String::new(),
                service_name: service.as_str().into(),
                resource_attributes: vec![
                    KeyValue::new("service.name", AttrValue::Str(service.into())),
                    KeyValue::new("service.version", s("1.0.0")),
                    KeyValue::new("host.name", s("bench")),
                ]
                .into(),
                scope_name: "loadgen".into(),
                scope_version: "1.0".into(),
            }
        })
        .collect()
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().expect("meta");
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

fn cfg(dir: Option<&std::path::Path>) -> ColdConfig {
    ColdConfig {
        dir: dir.map(|d| d.to_path_buf()),
        max_files_per_query: 100_000,
        max_bytes_per_query: u64::MAX / 2,
        ..ColdConfig::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `COLD_BENCH_KEEP=1`: the files stay (in `cold-bench-kept`) and a later
    // run with the same `COLD_BENCH_SPANS` measures them without generating
    // them again, so a long generation can run at low priority and the
    // latencies be taken later on a quiet machine.
    let keep = std::env::var("COLD_BENCH_KEEP").is_ok_and(|v| v == "1");
    let root_dir = std::env::var_os("COLD_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(if keep {
            "cold-bench-kept".to_string()
        } else {
            format!("cold-bench-{}", std::process::id())
        });
    std::fs::create_dir_all(&root_dir).expect("bench dir");
    run(&root_dir, keep).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&root_dir);
    }
}

struct Root<'a>(&'a std::path::Path);

impl Root<'_> {
    fn path(&self) -> &std::path::Path {
        self.0
    }
}

async fn run(root_dir: &std::path::Path, keep: bool) {
    let root = Root(root_dir);
    // Kept files were generated relative to the first run's clock; the
    // searches over "the first day" need the same origin.
    let now_file = root_dir.join("now");
    let now = match std::fs::read_to_string(&now_file) {
        Ok(v) if keep => v.trim().parse().expect("cold-bench-kept/now"),
        _ => {
            let now = ferrotrace_collector::model::now_ns();
            if keep {
                std::fs::write(&now_file, now.to_string()).expect("write now");
            }
            now
        }
    };

    // 1. Bytes per span.
    let n_traces = env("COLD_BENCH_SIZE_TRACES", 1_000);
    let spans: Vec<Span> = (0..n_traces)
        .flat_map(|t| loadgen_trace(t, now - 10 * 24 * HOUR + t * 1_000_000, t % 8))
        .collect();
    let n = spans.len() as u64;
    let hot = SqliteStore::open(root.path().join("hot.db")).expect("sqlite");
    for chunk in spans.chunks(1_000) {
        hot.write_spans(chunk).await.expect("write");
    }
    let usage = hot
        .disk_usage()
        .await
        .expect("usage")
        .expect("sqlite has usage");
    let cold_dir = root.path().join("size");
    let cold = ColdStore::open(&cfg(Some(&cold_dir))).await.expect("cold");
    let t = Instant::now();
    cold.write(spans).await.expect("write cold");
    let write_s = t.elapsed().as_secs_f64();
    let cold_bytes = dir_bytes(&cold_dir);
    println!(
        "BYTES spans={n} hot_live={:.0} B/span hot_files={:.0} B/span cold={:.1} B/span ratio_live={:.1}x ratio_files={:.1}x cold_write={:.0} spans/s",
        usage.live_bytes as f64 / n as f64,
        usage.file_bytes as f64 / n as f64,
        cold_bytes as f64 / n as f64,
        usage.live_bytes as f64 / cold_bytes as f64,
        usage.file_bytes as f64 / cold_bytes as f64,
        n as f64 / write_s
    );
    drop(hot);

    // The short parts first, so that a long scale run cut short still
    // leaves them measured.
    // 5. Compaction of small files.
    if std::env::var("COLD_BENCH_COMPACT").is_ok_and(|v| v == "1") {
        compaction(root.path(), now).await;
    }

    // 4. S3 (moto).
    if std::env::var("COLD_BENCH_S3").is_ok_and(|v| v == "1") {
        s3_lookups(now).await;
    }

    // 2. and 3. Trace by id and search over generated files, at each checkpoint.
    let spans = lookups_at_scale(root.path(), now, keep).await;

    // 4b. The same files behind moto's S3 API.
    if std::env::var("COLD_BENCH_S3_FROM_SCALE").is_ok_and(|v| v == "1") {
        s3_from_scale(&root.path().join("big"), spans).await;
    }
}

/// The spans of file `f` of the scale run: traces `f * 500 ..` (200 spans
/// each), one every `200 * span_gap` ns from `base`.
fn scale_file(f: u64, base: u64, span_gap: u64) -> Vec<Span> {
    let per_file_traces = 100_000 / 200;
    (0..per_file_traces)
        .flat_map(|k| {
            let tr = f * per_file_traces + k;
            loadgen_trace(tr, base + tr * 200 * span_gap, tr % 8)
        })
        .collect()
}

/// Lookup latencies of `ids` (sorted) and the files each opened.
async fn lookups(store: &ColdStore, ids: &[TraceId]) -> (Vec<Duration>, Vec<usize>) {
    let mut lat = Vec::new();
    let mut opened = Vec::new();
    for id in ids {
        let t = Instant::now();
        let (spans, o) = store.spans_of(&[*id], None).await.expect("lookup");
        lat.push(t.elapsed());
        opened.push(o);
        std::hint::black_box(spans);
    }
    lat.sort();
    (lat, opened)
}

fn mean(v: &[usize]) -> f64 {
    v.iter().sum::<usize>() as f64 / v.len().max(1) as f64
}

/// Trace by id over `COLD_BENCH_SPANS` spans of files generated directly
/// with the cold writer (100,000 spans per file over two days, random
/// trace ids; `COLD_BENCH_WRITERS` files encoded at once), measured at each
/// of `COLD_BENCH_CHECKPOINTS` (comma-separated span counts) and at the end:
/// the first lookup with an empty index cache, then three rounds of 1,000
/// present and 200 absent ids, then searches over the first day.
async fn lookups_at_scale(root: &std::path::Path, now: u64, keep: bool) -> u64 {
    use futures_util::StreamExt;
    let total = env("COLD_BENCH_SPANS", 10_000_000);
    let per_file = 100_000u64;
    let mut checkpoints: Vec<u64> = std::env::var("COLD_BENCH_CHECKPOINTS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&v| v < total)
        .collect();
    checkpoints.push(total);
    let writers = env("COLD_BENCH_WRITERS", 2).max(1) as usize;
    let big = root.join("big");
    let store = Arc::new(ColdStore::open(&cfg(Some(&big))).await.expect("cold"));
    let base = now - 20 * 24 * HOUR;
    let span_gap = 2 * 24 * HOUR / total.max(1); // two days of spans

    // Kept files: every file holds `per_file` spans (a file is written
    // whole or not at all), so the count says where generation stopped;
    // checkpoints already passed cannot be measured again.
    let mut done = if keep { store.files().len() as u64 } else { 0 };
    if done > 0 {
        println!(
            "KEPT {done} files ({} spans) in {}",
            done * per_file,
            big.display()
        );
        checkpoints.retain(|&cp| cp == total || cp.div_ceil(per_file) > done);
    }
    let t_all = Instant::now();
    for cp in checkpoints {
        let files = cp.div_ceil(per_file);
        let t = Instant::now();
        futures_util::stream::iter(done..files)
            .map(|f| {
                let store = store.clone();
                async move {
                    let batch = tokio::task::spawn_blocking(move || scale_file(f, base, span_gap))
                        .await
                        .expect("generate");
                    store.write(batch).await.expect("write");
                }
            })
            .buffer_unordered(writers)
            .collect::<Vec<()>>()
            .await;
        let gen_s = t.elapsed().as_secs_f64();
        let new_spans = (files - done) * per_file;
        done = files;
        let spans = done * per_file;
        let bytes = dir_bytes(&big);
        println!(
            "GENERATED spans={spans} files={} bytes={bytes} ({:.1} B/span) last step {new_spans} spans in {gen_s:.0}s ({:.0} spans/s), total {:.0}s",
            store.files().len(),
            bytes as f64 / spans as f64,
            new_spans as f64 / gen_s,
            t_all.elapsed().as_secs_f64()
        );
        measure_lookups(&big, spans, base).await;
    }
    done * per_file
}

/// The first lookup on `store` (index cache empty), then three rounds of
/// 1,000 present ids spread over `spans` and 200 absent ones; lines
/// prefixed with `label` (the local run's and the S3 run's are the same
/// measurement).
async fn lookup_rounds(fresh: &ColdStore, spans: u64, label: &str) {
    let traces = spans / 200;
    let step = (traces / 1_000).max(1);
    let present: Vec<TraceId> = (0..traces)
        .step_by(step as usize)
        .take(1_000)
        .map(tid)
        .collect();
    let t = Instant::now();
    let (s, _) = fresh.spans_of(&[present[1]], None).await.expect("first");
    println!(
        "{label}FIRST_LOOKUP spans={spans} (index cache empty, {} files) {:.1} ms, {} spans",
        fresh.files().len(),
        t.elapsed().as_secs_f64() * 1e3,
        s.len()
    );
    for round in 0..3 {
        let (lat, opened) = lookups(fresh, &present).await;
        let absent: Vec<TraceId> = (0..200).map(|i| tid(u64::MAX / 2 + i)).collect();
        let (alat, aopened) = lookups(fresh, &absent).await;
        println!(
            "{label}LOOKUP spans={spans} round={round} present n={} p50={:.2} ms p99={:.2} ms opened mean={:.3} max={} | absent n={} p50={:.2} ms p99={:.2} ms opened mean={:.3} max={}",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            mean(&opened),
            opened.iter().max().unwrap_or(&0),
            alat.len(),
            pct(&alat, 0.5),
            pct(&alat, 0.99),
            mean(&aopened),
            aopened.iter().max().unwrap_or(&0),
        );
    }
}

async fn measure_lookups(big: &std::path::Path, spans: u64, base: u64) {
    // Cold cache: a fresh store fetches every file's index on its first lookup.
    let fresh = Arc::new(ColdStore::open(&cfg(Some(big))).await.expect("cold"));
    lookup_rounds(&fresh, spans, "").await;
    search_day(&fresh, base, &format!("spans={spans}")).await;
}

/// Searches over the day from `base`: the 20 newest traces of a service,
/// and with a minimum duration; 20 each.
async fn search_day(store: &ColdStore, base: u64, label: &str) {
    let day = TimeRange {
        start_ns: base,
        end_ns: base + 24 * HOUR,
    };
    for (what, service, min_dur) in [
        ("service", Some("loadgen-svc-1"), None),
        (
            "service+min_duration",
            Some("loadgen-svc-1"),
            Some(1_200_000u64),
        ),
    ] {
        let mut lat = Vec::new();
        let mut found = 0;
        let n = 20;
        let opened_before = store
            .stats
            .files_opened
            .load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..n {
            let q = TraceQuery {
                service: service.map(str::to_string),
                operation: None,
                attributes: Vec::new(),
                min_duration_ns: min_dur,
                max_duration_ns: None,
                errors_only: false,
                range: day,
                limit: 20,
                cursor: None,
            };
            let t = Instant::now();
            let (keys, _) = store.search(&q, None, 20).await.expect("search");
            lat.push(t.elapsed());
            found = keys.len();
        }
        lat.sort();
        let opened = store
            .stats
            .files_opened
            .load(std::sync::atomic::Ordering::Relaxed)
            - opened_before;
        println!(
            "SEARCH {label} day ({what}) n={n} p50={:.1} ms p95={:.1} ms results={found} files_opened_per_search={:.1} files_in_day={}",
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            opened as f64 / n as f64,
            store
                .files()
                .iter()
                .filter(|e| e.max_ns >= day.start_ns && e.min_ns < day.end_ns)
                .count()
        );
    }
}

/// Compaction: one day written as PostgreSQL and ClickHouse hand a day
/// over (trace-id order, so each 100,000-span flush writes one small file
/// per hour: `COLD_BENCH_COMPACT_SPANS` spans, default 2M, in about 24 ×
/// spans / 100,000 files), lookups and searches before and after one
/// compaction pass, and the pass's time.
async fn compaction(root: &std::path::Path, now: u64) {
    let total = env("COLD_BENCH_COMPACT_SPANS", 2_000_000);
    let dir = root.join("compact");
    let c = ColdConfig {
        compaction_max_files: 100_000,
        ..cfg(Some(&dir))
    };
    let store = ColdStore::open(&c).await.expect("cold");
    let base = (now - 30 * 24 * HOUR) / (24 * HOUR) * (24 * HOUR);
    let traces = total / 200;
    let gap = 24 * HOUR / traces.max(1);
    // Trace-id order: trace t's place in the day is a hash of its id.
    let mut order: Vec<u64> = (0..traces).collect();
    order.sort_by_key(|&t| tid(t));
    for chunk in order.chunks(500) {
        let batch: Vec<Span> = chunk
            .iter()
            .flat_map(|&t| {
                // The trace's place in the day: its index, scattered.
                let slot = t.wrapping_mul(0x9E37_79B9) % traces;
                loadgen_trace(t, base + 5_000_000 + slot * gap, t % 8)
            })
            .collect();
        store.write(batch).await.expect("write");
    }
    let files_before = store.files().len();
    println!(
        "COMPACT generated spans={total} files={files_before} bytes={}",
        dir_bytes(&dir)
    );
    let ids: Vec<TraceId> = (0..traces)
        .step_by((traces / 1_000).max(1) as usize)
        .take(1_000)
        .map(tid)
        .collect();
    for phase in ["before", "after"] {
        if phase == "after" {
            let t = Instant::now();
            let r = store.compact().await.expect("compact");
            println!(
                "COMPACT pass {:.1} s: {} files merged into {} ({} spans, {:.0} spans/s), files now {}",
                t.elapsed().as_secs_f64(),
                r.files_replaced,
                r.files_written,
                r.spans,
                r.spans as f64 / t.elapsed().as_secs_f64(),
                store.files().len()
            );
        }
        let fresh = ColdStore::open(&c).await.expect("cold");
        let t = Instant::now();
        fresh.spans_of(&[ids[0]], None).await.expect("first");
        println!(
            "COMPACT {phase} FIRST_LOOKUP ({} files) {:.1} ms",
            fresh.files().len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        for round in 0..3 {
            let (lat, opened) = lookups(&fresh, &ids).await;
            println!(
                "COMPACT {phase} LOOKUP round={round} n={} p50={:.2} ms p99={:.2} ms opened mean={:.3} max={}",
                lat.len(),
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                mean(&opened),
                opened.iter().max().unwrap_or(&0)
            );
        }
        search_day(&fresh, base, &format!("COMPACT {phase}")).await;
    }
}

/// Starts moto's S3 server on a free loopback port with a `bench` bucket;
/// the cold tier configuration that points at it.
fn start_moto() -> (std::process::Child, ColdConfig) {
    use std::process::{Command, Stdio};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(100));
    }
    {
        // Create the bucket (moto takes an unsigned request).
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("moto");
        c.write_all(b"PUT /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("put");
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let c = ColdConfig {
        bucket: Some("bench".into()),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        allow_http: true,
        ..cfg(None)
    };
    (child, c)
}

async fn s3_lookups(now: u64) {
    let (mut child, c) = start_moto();
    let store = Arc::new(ColdStore::open(&c).await.expect("s3"));
    let total = env("COLD_BENCH_S3_SPANS", 1_000_000);
    let base = now - 20 * 24 * HOUR;
    let mut present = Vec::new();
    for f in 0..total / 100_000 {
        let mut batch = Vec::new();
        for k in 0..500 {
            let tr = f * 500 + k;
            batch.extend(loadgen_trace(tr, base + tr * 1_000_000_000, tr % 8));
            if k.is_multiple_of(25) {
                present.push(tr);
            }
        }
        store.write(batch).await.expect("put");
    }
    let fresh = Arc::new(ColdStore::open(&c).await.expect("s3"));
    let t = Instant::now();
    fresh
        .spans_of(&[tid(present[0])], None)
        .await
        .expect("first");
    println!(
        "S3 FIRST_LOOKUP ({} files) {:.1} ms",
        fresh.files().len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    for round in 0..3 {
        let mut lat = Vec::new();
        let mut opened = 0;
        for &tr in &present {
            let t = Instant::now();
            let (_, o) = fresh.spans_of(&[tid(tr)], None).await.expect("lookup");
            lat.push(t.elapsed());
            opened += o;
        }
        lat.sort();
        println!(
            "S3 LOOKUP round={round} n={} p50={:.2} ms p99={:.2} ms opened mean={:.3}",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            opened as f64 / lat.len() as f64
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The scale run's files copied as they are into moto's bucket (the
/// catalog is the listing, so the S3 store sees the same files), then the
/// local run's lookups against S3: the first with an empty index cache,
/// three rounds of 1,000 present and 200 absent ids.
async fn s3_from_scale(big: &std::path::Path, spans: u64) {
    use futures_util::{StreamExt, TryStreamExt};
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    let (mut child, c) = start_moto();
    let s3 = ColdStore::open(&c).await.expect("s3");
    let local: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(big).expect("local store"));
    let (s3_raw, _) = ferrotrace_collector::storage::cold::location::open(&c).expect("s3 location");
    let objects: Vec<_> = local.list(None).try_collect().await.expect("list local");
    let bytes: u64 = objects.iter().map(|m| m.size).sum();
    let t = Instant::now();
    futures_util::stream::iter(objects.iter().map(|m| m.location.clone()))
        .map(|path| {
            let (local, s3_raw) = (local.clone(), s3_raw.clone());
            async move {
                let data = local
                    .get(&path)
                    .await
                    .expect("read")
                    .bytes()
                    .await
                    .expect("bytes");
                s3_raw
                    .put(&path, PutPayload::from(data))
                    .await
                    .expect("put to moto");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    println!(
        "S3_SCALE uploaded {} objects, {bytes} bytes, in {:.0} s",
        objects.len(),
        t.elapsed().as_secs_f64()
    );
    drop(s3);
    let fresh = ColdStore::open(&c).await.expect("s3");
    lookup_rounds(&fresh, spans, "S3_SCALE ").await;
    let _ = child.kill();
    let _ = child.wait();
}
