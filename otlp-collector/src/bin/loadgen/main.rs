//! `loadgen`: sends OTLP traces to a collector on loopback over gRPC or
//! HTTP/protobuf, at a fixed or maximal rate over N connections, with
//! realistic spans (10 attributes, an event on every fourth span), and reports
//! accepted spans/s, refused requests, p50/p99/p99.9 acknowledgement latency (at a
//! fixed rate measured from each request's scheduled time) and,
//! given the collector's pid, its CPU seconds and peak RSS from /proc, and its
//! own CPU seconds (it shares the machine with the collector).
//!
//! Each connection encodes its request once and rewrites only the ids and
//! timestamps per request (see [`Template`]), so that generating load costs
//! little CPU.
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
use parking_lot::Mutex;
use prost::Message;

mod request;

use ferrotrace_collector::receiver::otlp_grpc::EXPORT_PATH;
use ferrotrace_collector::route::{ForwardBody, ForwardCodec};
use request::{build_request, span_times};

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
    /// Stop after this many spans in total, counted when sent (a refused or
    /// failed request counts too, and is not resent). A multiple of --batch
    /// sends exactly that many: the fixed-count mode of
    /// benches/scripts/callgrind_ingest.py, which checks nothing was refused.
    #[arg(long, default_value_t = 100_000_000)]
    max_spans: u64,
    /// Collector pid: report its CPU seconds and peak RSS from /proc.
    #[arg(long)]
    collector_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Number of the first connection: trace ids derive from the connection
    /// number, so several loadgens sending at once need distinct ranges
    /// (e.g. 0 and 100) or they send the same traces.
    #[arg(long, default_value_t = 0)]
    first_connection: u64,
    /// Append an unknown top-level field (number 1000, a varint: 3 bytes)
    /// to every request. Receivers skip it; a router's scan leaves its fast
    /// path for the careful walk on it, so one router binary can be counted
    /// both ways (benches/scripts/callgrind_ingest.py --route).
    #[arg(long)]
    unknown_field: bool,
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

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Byte offsets, in the encoded request, of the fields of one span that differ
/// from request to request.
#[derive(Debug, Default)]
struct SpanFields {
    trace_id: usize,
    span_id: usize,
    parent_span_id: Option<usize>,
    start: usize,
    end: usize,
    event_time: Option<usize>,
}

/// One connection's request, encoded once. Requests differ only in the
/// sequence half of the ids and in the timestamps, all fixed-width fields, so
/// each request rewrites those bytes in place instead of building and encoding
/// 200+ spans: the load generator shares the machine with the collector, and
/// its CPU is CPU the collector cannot use. [`Template::new`] checks the
/// result byte for byte against [`build_request`].
struct Template {
    bytes: Vec<u8>,
    spans: Vec<SpanFields>,
}

/// Reads a protobuf varint at `pos`, advancing it.
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of the message in `buf[range]`: (field number, value range);
/// `None` if it is not well-formed protobuf.
fn fields(buf: &[u8], range: std::ops::Range<usize>) -> Option<Vec<(u64, std::ops::Range<usize>)>> {
    let mut pos = range.start;
    let mut out = Vec::new();
    while pos < range.end {
        let key = read_varint(buf, &mut pos)?;
        let start = pos;
        match key & 7 {
            0 => {
                read_varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            2 => {
                let len = usize::try_from(read_varint(buf, &mut pos)?).ok()?;
                let value = pos;
                pos = pos.checked_add(len)?;
                out.push((key >> 3, value..pos));
                continue;
            }
            5 => pos += 4,
            _ => return None,
        }
        out.push((key >> 3, start..pos));
    }
    (pos == range.end).then_some(out)
}

/// Sub-ranges of the fields numbered `num` within `range`.
fn nested(
    buf: &[u8],
    range: std::ops::Range<usize>,
    num: u64,
) -> anyhow::Result<Vec<std::ops::Range<usize>>> {
    Ok(fields(buf, range)
        .context("template request is not valid protobuf")?
        .into_iter()
        .filter(|(n, _)| *n == num)
        .map(|(_, r)| r)
        .collect())
}

impl Template {
    /// Encodes connection `conn`'s request of `n` spans and locates the
    /// per-request fields (OTLP field numbers: request.resource_spans = 1,
    /// resource_spans.scope_spans = 2, scope_spans.spans = 2; span trace_id = 1,
    /// span_id = 2, parent_span_id = 4, start = 7, end = 8, events = 11;
    /// event time = 1).
    fn new(conn: u64, n: usize) -> anyhow::Result<Template> {
        let bytes = build_request(conn, 0, n, now_ns()).encode_to_vec();
        let mut spans = Vec::with_capacity(n);
        for rs in nested(&bytes, 0..bytes.len(), 1)? {
            for ss in nested(&bytes, rs, 2)? {
                for sp in nested(&bytes, ss, 2)? {
                    let mut f = SpanFields::default();
                    for (num, r) in fields(&bytes, sp).context("template span")? {
                        match num {
                            1 => f.trace_id = r.start,
                            2 => f.span_id = r.start,
                            4 => f.parent_span_id = Some(r.start),
                            7 => f.start = r.start,
                            8 => f.end = r.start,
                            11 => f.event_time = nested(&bytes, r, 1)?.first().map(|t| t.start),
                            _ => {}
                        }
                    }
                    spans.push(f);
                }
            }
        }
        let mut t = Template { bytes, spans };
        // Any mismatch (a field the walk missed, a changed build_request) fails here.
        for seq in [1, 0x0102_0304_0506_0708] {
            let now = now_ns();
            let want = build_request(conn, seq, n, now).encode_to_vec();
            if t.fill(seq, now) != want.as_slice() {
                bail!("pre-encoded request template differs from build_request (seq {seq})");
            }
        }
        Ok(t)
    }

    /// The encoded `build_request(conn, seq, n, now)`.
    fn fill(&mut self, seq: u64, now: u64) -> &[u8] {
        let b = &mut self.bytes;
        for (i, f) in self.spans.iter().enumerate() {
            b[f.trace_id + 8..f.trace_id + 16].copy_from_slice(&seq.to_be_bytes());
            let seq32 = (seq as u32).to_be_bytes();
            b[f.span_id..f.span_id + 4].copy_from_slice(&seq32);
            if let Some(p) = f.parent_span_id {
                b[p..p + 4].copy_from_slice(&seq32);
            }
            let (start, end, event_time) = span_times(i, now);
            b[f.start..f.start + 8].copy_from_slice(&start.to_le_bytes());
            b[f.end..f.end + 8].copy_from_slice(&end.to_le_bytes());
            if let Some(e) = f.event_time {
                b[e..e + 8].copy_from_slice(&event_time.to_le_bytes());
            }
        }
        &self.bytes
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
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
                .connect()
                .await
                .context("gRPC connect")?;
            grpc = Some(tonic::client::Grpc::new(channel))
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
    let mut template = Template::new(conn, args.batch)?;
    let export = http::uri::PathAndQuery::from_static(EXPORT_PATH);
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
        let body = if args.unknown_field {
            // Field 1000, wire type varint (key 8000 = 0xc0 0x3e), value 1.
            Bytes::from([template.fill(seq, now_ns()), &[0xc0, 0x3e, 0x01][..]].concat())
        } else {
            Bytes::copy_from_slice(template.fill(seq, now_ns()))
        };
        // At a fixed rate the latency counts from when the request was due, not
        // from when it went out: a slow acknowledgement delays the next send, and
        // that wait is part of what a client at this rate sees (no coordinated
        // omission). At the maximal rate there is no schedule.
        let sent = due.unwrap_or_else(Instant::now);
        let outcome = if let Some(c) = grpc.as_mut() {
            let sent = match c.ready().await {
                Ok(()) => {
                    c.unary(
                        tonic::Request::new(ForwardBody::from(body)),
                        export.clone(),
                        ForwardCodec,
                    )
                    .await
                }
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            };
            match sent {
                Ok(_) => Outcome::Ok,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => Outcome::Refused,
                Err(_) => Outcome::Failed,
            }
        } else if let Some(h) = http.as_mut() {
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
    let own_before = proc_usage(std::process::id());
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..args.connections {
            tasks.push(tokio::spawn(run_conn(
                args.clone(),
                endpoint,
                args.first_connection + c as u64,
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
    let own_cpu = match (own_before, proc_usage(std::process::id())) {
        (Some(b), Some(a)) => Some(a.0 - b.0),
        _ => None,
    };
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock());
    lat.sort_unstable();
    let accepted = stats.accepted_spans.load(Relaxed);
    let rate = accepted as f64 / elapsed;
    let cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a.0 - b.0),
        _ => None,
    };
    let rss_mib = after.map(|a| a.1 as f64 / 1024.0);
    let per_m = |c: f64| {
        if accepted > 0 {
            c / (accepted as f64 / 1e6)
        } else {
            0.0
        }
    };
    let cpu_per_m = cpu.map(per_m);
    let own_cpu_per_m = own_cpu.map(per_m);
    if args.json {
        let v = serde_json::json!({
            "protocol": format!("{:?}", args.protocol).to_lowercase(),
            "connections": args.connections, "batch": args.batch, "target_rate": args.rate,
            "seconds": elapsed, "accepted_spans": accepted, "accepted_spans_per_sec": rate,
            "ok_requests": stats.ok_requests.load(Relaxed),
            "refused_requests": stats.refused_requests.load(Relaxed),
            "failed_requests": stats.failed_requests.load(Relaxed),
            "ack_p50_ms": pct(&lat, 0.5), "ack_p99_ms": pct(&lat, 0.99),
            "ack_p999_ms": pct(&lat, 0.999), "ack_max_ms": pct(&lat, 1.0),
            "collector_cpu_seconds": cpu, "collector_cpu_seconds_per_million_spans": cpu_per_m,
            "collector_peak_rss_mib": rss_mib,
            "loadgen_cpu_seconds": own_cpu, "loadgen_cpu_seconds_per_million_spans": own_cpu_per_m,
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
            "ack latency: p50={:.2} ms p99={:.2} ms p99.9={:.2} ms max={:.2} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 0.999),
            pct(&lat, 1.0)
        );
        if let (Some(c), Some(r), Some(cm)) = (cpu, rss_mib, cpu_per_m) {
            println!("collector: cpu={c:.2} s ({cm:.2} s per million spans), peak RSS={r:.1} MiB");
        }
        if let (Some(c), Some(cm)) = (own_cpu, own_cpu_per_m) {
            println!("loadgen: cpu={c:.2} s ({cm:.2} s per million spans)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn template_matches_built_requests() {
        for n in [1, 4, 200] {
            let mut t = Template::new(3, n).expect("template");
            for seq in [2, 77, u64::from(u32::MAX) + 9] {
                let now = now_ns();
                let got = ExportTraceServiceRequest::decode(t.fill(seq, now)).expect("decodes");
                assert_eq!(got, build_request(3, seq, n, now));
            }
        }
    }
}
