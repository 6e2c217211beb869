//! `loadgen`: sends OTLP traces to a collector on loopback over gRPC or
//! HTTP/protobuf, at a fixed or maximal rate over N connections, with
//! realistic spans (10 attributes, an event on every fourth span), and reports
//! accepted spans/s, refused requests, p50/p99 acknowledgement latency (at a
//! fixed rate measured from each request's scheduled time) and,
//! given the collector's pid, its CPU seconds and peak RSS from /proc.
//!
//! Bounded in time (`--duration`, at most 600 s) and count (`--max-spans`);
//! refuses non-loopback targets.
//!
//! ```text
//! loadgen --protocol grpc --endpoint 127.0.0.1:4317 --connections 8 --duration 20 --collector-pid $PID
//! loadgen --protocol http --endpoint 127.0.0.1:4318 --rate 25000
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use parking_lot::Mutex;
use prost::Message;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Proto {
    Grpc,
    Http,
}

/// OTLP load generator (loopback only).
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// grpc or http (protobuf).
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Proto,
    /// Collector address (host:port on loopback); default 127.0.0.1:4317 (grpc) / :4318 (http).
    #[arg(long)]
    endpoint: Option<SocketAddr>,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Target spans per second in total; 0 sends as fast as acknowledgements allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Spans per request.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Run time in seconds (at most 600).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Stop after this many spans in total.
    #[arg(long, default_value_t = 100_000_000)]
    max_spans: u64,
    /// Collector pid: report its CPU seconds and peak RSS from /proc.
    #[arg(long)]
    collector_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Stats {
    accepted_spans: AtomicU64,
    ok_requests: AtomicU64,
    refused_requests: AtomicU64,
    failed_requests: AtomicU64,
    sent_spans: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// A request of `n` realistic spans; ids derive from `conn` and `seq` so every span is unique.
fn build_request(conn: u64, seq: u64, n: usize) -> ExportTraceServiceRequest {
    use any_value::Value as V;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(conn + 1).to_be_bytes());
    trace_id[8..].copy_from_slice(&seq.to_be_bytes());
    let spans = (0..n)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(seq as u32).to_be_bytes());
            span_id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            let parent = if i == 0 {
                Vec::new()
            } else {
                let mut p = span_id;
                p[4..].copy_from_slice(&1u32.to_be_bytes());
                p.to_vec()
            };
            let start = now - 5_000_000 + i as u64 * 1_000;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent,
                name: format!("GET /api/items/{}", i % 16),
                kind: if i == 0 { 2 } else { 3 },
                start_time_unix_nano: start,
                end_time_unix_nano: start + 250_000 + (i as u64 % 97) * 10_000,
                attributes: vec![
                    kv("http.request.method", V::StringValue("GET".into())),
                    kv("http.route", V::StringValue("/api/items/{id}".into())),
                    kv("http.response.status_code", V::IntValue(200)),
                    kv("url.path", V::StringValue(format!("/api/items/{i}"))),
                    kv("server.address", V::StringValue("items.internal".into())),
                    kv("server.port", V::IntValue(8080)),
                    kv("user_agent.original", V::StringValue("loadgen/1.0".into())),
                    kv("network.protocol.version", V::StringValue("1.1".into())),
                    kv("app.cache_hit", V::BoolValue(i % 3 == 0)),
                    kv("app.items", V::DoubleValue(i as f64 * 1.5)),
                ],
                events: if i % 4 == 0 {
                    vec![span::Event {
                        time_unix_nano: start + 1_000,
                        name: "cache.lookup".into(),
                        attributes: vec![kv("cache.key", V::StringValue(format!("item:{i}")))],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    Vec::new()
                },
                status: Some(Status {
                    message: String::new(),
                    code: 0,
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        V::StringValue(format!("loadgen-svc-{}", conn % 4)),
                    ),
                    kv("service.version", V::StringValue("1.0.0".into())),
                    kv("host.name", V::StringValue("bench".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "loadgen".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

enum Outcome {
    Ok,
    Refused,
    Failed,
}

async fn run_conn(
    args: Arc<Args>,
    endpoint: SocketAddr,
    conn: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let per_conn_rate = if args.rate > 0 {
        args.rate as f64 / args.connections as f64
    } else {
        0.0
    };
    let interval = if per_conn_rate > 0.0 {
        Some(Duration::from_secs_f64(args.batch as f64 / per_conn_rate))
    } else {
        None
    };
    let mut grpc = None;
    let mut http = None;
    match args.protocol {
        Proto::Grpc => {
            grpc = Some(
                TraceServiceClient::connect(format!("http://{endpoint}"))
                    .await
                    .context("gRPC connect")?,
            )
        }
        Proto::Http => {
            let tcp = tokio::net::TcpStream::connect(endpoint)
                .await
                .context("HTTP connect")?;
            tcp.set_nodelay(true)?;
            let (sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await?;
            tokio::spawn(connection);
            http = Some(sender);
        }
    }
    let start = Instant::now();
    let mut seq = 0u64;
    let mut local_lat = Vec::with_capacity(4096);
    while !stop.load(Relaxed) {
        if stats.sent_spans.fetch_add(args.batch as u64, Relaxed) >= args.max_spans {
            break;
        }
        let due = interval.map(|iv| start + iv.mul_f64(seq as f64));
        if let Some(due) = due {
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        seq += 1;
        let req = build_request(conn, seq, args.batch);
        // At a fixed rate the latency counts from when the request was due, not
        // from when it went out: a slow acknowledgement delays the next send, and
        // that wait is part of what a client at this rate sees (no coordinated
        // omission). At the maximal rate there is no schedule.
        let sent = due.unwrap_or_else(Instant::now);
        let outcome = if let Some(c) = grpc.as_mut() {
            match c.export(req).await {
                Ok(_) => Outcome::Ok,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => Outcome::Refused,
                Err(_) => Outcome::Failed,
            }
        } else if let Some(h) = http.as_mut() {
            let body = Bytes::from(req.encode_to_vec());
            let r = http::Request::builder()
                .method("POST")
                .uri("/v1/traces")
                .header("host", endpoint.to_string())
                .header("content-type", "application/x-protobuf")
                .body(Full::new(body))?;
            h.ready().await?;
            match h.send_request(r).await {
                Ok(resp) => {
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    match status.as_u16() {
                        200 => Outcome::Ok,
                        429 | 503 => Outcome::Refused,
                        _ => Outcome::Failed,
                    }
                }
                Err(_) => Outcome::Failed,
            }
        } else {
            Outcome::Failed
        };
        let lat = sent.elapsed();
        match outcome {
            Outcome::Ok => {
                stats.ok_requests.fetch_add(1, Relaxed);
                stats.accepted_spans.fetch_add(args.batch as u64, Relaxed);
                local_lat.push(lat.as_micros().min(u32::MAX as u128) as u32);
            }
            Outcome::Refused => {
                stats.refused_requests.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Outcome::Failed => {
                stats.failed_requests.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if local_lat.len() >= 4096 {
            stats.latencies_us.lock().append(&mut local_lat);
        }
    }
    stats.latencies_us.lock().append(&mut local_lat);
    Ok(())
}

/// (utime + stime in seconds, VmHWM in KiB) of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Linux reports CPU time in USER_HZ ticks, 100 per second on every common configuration.
    Some((ticks / 100.0, hwm))
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.duration == 0 || args.duration > 600 {
        bail!("--duration must be between 1 and 600 seconds");
    }
    if args.connections == 0 || args.connections > 256 || args.batch == 0 {
        bail!("--connections must be 1..=256 and --batch above 0");
    }
    let endpoint = args.endpoint.unwrap_or(match args.protocol {
        Proto::Grpc => SocketAddr::from(([127, 0, 0, 1], 4317)),
        Proto::Http => SocketAddr::from(([127, 0, 0, 1], 4318)),
    });
    if !endpoint.ip().is_loopback() {
        bail!("loadgen only targets loopback addresses (got {endpoint})");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args = Arc::new(args);
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let before = args.collector_pid.and_then(proc_usage);
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..args.connections {
            tasks.push(tokio::spawn(run_conn(
                args.clone(),
                endpoint,
                c as u64,
                stats.clone(),
                stop.clone(),
            )));
        }
        let stopper = {
            let stop = stop.clone();
            let d = Duration::from_secs(args.duration);
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                stop.store(true, Relaxed);
            })
        };
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("connection failed: {e:#}"),
                Err(e) => eprintln!("connection task failed: {e}"),
            }
        }
        stopper.abort();
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = args.collector_pid.and_then(proc_usage);
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock());
    lat.sort_unstable();
    let accepted = stats.accepted_spans.load(Relaxed);
    let rate = accepted as f64 / elapsed;
    let cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a.0 - b.0),
        _ => None,
    };
    let rss_mib = after.map(|a| a.1 as f64 / 1024.0);
    let cpu_per_m = cpu.map(|c| {
        if accepted > 0 {
            c / (accepted as f64 / 1e6)
        } else {
            0.0
        }
    });
    if args.json {
        let v = serde_json::json!({
            "protocol": format!("{:?}", args.protocol).to_lowercase(),
            "connections": args.connections, "batch": args.batch, "target_rate": args.rate,
            "seconds": elapsed, "accepted_spans": accepted, "accepted_spans_per_sec": rate,
            "ok_requests": stats.ok_requests.load(Relaxed),
            "refused_requests": stats.refused_requests.load(Relaxed),
            "failed_requests": stats.failed_requests.load(Relaxed),
            "ack_p50_ms": pct(&lat, 0.5), "ack_p99_ms": pct(&lat, 0.99), "ack_max_ms": pct(&lat, 1.0),
            "collector_cpu_seconds": cpu, "collector_cpu_seconds_per_million_spans": cpu_per_m,
            "collector_peak_rss_mib": rss_mib,
        });
        println!("{v}");
    } else {
        println!(
            "protocol={:?} connections={} batch={} target_rate={} duration={:.1}s",
            args.protocol, args.connections, args.batch, args.rate, elapsed
        );
        println!(
            "accepted: {accepted} spans ({rate:.0} spans/s), requests ok={} refused={} failed={}",
            stats.ok_requests.load(Relaxed),
            stats.refused_requests.load(Relaxed),
            stats.failed_requests.load(Relaxed)
        );
        println!(
            "ack latency: p50={:.2} ms p99={:.2} ms max={:.2} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
        if let (Some(c), Some(r), Some(cm)) = (cpu, rss_mib, cpu_per_m) {
            println!("collector: cpu={c:.2} s ({cm:.2} s per million spans), peak RSS={r:.1} MiB");
        }
    }
    Ok(())
}
