//! Ground truth for adjusted counts: a generator that knows every request it
//! made sends only what SDKs sampling at 1%, 10%, 25% (Jaeger-style tags) and
//! 100% would export, to a running collector (real listeners, real SQLite
//! store) that itself head-samples at 10%. The rollups' estimates, read back
//! through the query API, must match the truth within a bound derived from
//! the sampling distribution.
//!
//! Sampling follows OpenTelemetry consistent probability sampling with the
//! SDK's own types: threshold `th = Threshold::from_probability(p)`, trace
//! randomness = the trace id's low 56 bits, kept when `R >= th`, and the kept
//! span carries `ot=th:…` in its `tracestate` (children too, as `ParentBased`
//! propagates it). Trace ids are uniformly random, so each request is kept
//! independently with probability `p_th = 1 - th/2^56`.
//!
//! Bounds (why they are right, and how loose):
//! - Counts. With `K ~ Binomial(N, p)` kept and each counted `1/p`, the
//!   estimate `K/p` is unbiased with standard deviation
//!   `σ = sqrt(N (1-p) / p)`. We allow `5σ` (a false failure about once in
//!   1.7 million runs) plus the unbiased integer rounding of the stored rows
//!   (less than 1 per stored row; a series here is written in fewer than 30 rows).
//!   Errors (5% of requests) are estimated the same way.
//! - Percentiles. The weighted sample quantile of `n = N p` kept values is
//!   at a true rank within `sqrt(q (1-q) (1-p) / n)` (1σ, with the
//!   finite-population factor `1-p`, which makes 100% exact) of `q`; the
//!   sketch moves the value by at most its 1% relative accuracy. We check that
//!   the true rank of `est / 1.0101` is at most `q + 5σ + 1/N` and that of
//!   `est * 1.0101` at least `q - 5σ - 1/N`.
//!
//! `cargo test -p ferrotrace-collector --test adjusted_counts -- --nocapture`
//! prints the measured errors (recorded in docs/benchmarks.md).

mod ingest_util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace::trace::consistent::{Randomness, Threshold};
use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span as PSpan, Status,
};
use prost::Message;

const MINUTE: u64 = 60_000_000_000;
/// Requests are spread over this many minutes.
const MINUTES: u64 = 5;
const ERROR_RATE: f64 = 0.05;
const SIGMAS: f64 = 5.0;
/// Integer rounding of stored rows (see the bounds above).
const ROUNDING_SLACK: f64 = 30.0;

/// How a service's SDK samples.
#[derive(Clone, Copy)]
enum Rule {
    /// Consistent probability sampling, `ot=th:` in `tracestate`.
    Consistent(f64),
    /// A Jaeger client's probabilistic sampler: `sampler.type`/`sampler.param`
    /// tags on the root span.
    JaegerTags(f64),
}

struct Service {
    name: &'static str,
    rule: Rule,
    requests: usize,
    /// Median latency (ns) of the lognormal durations.
    median_ns: f64,
    /// Each request also calls `backend` (a SERVER span there, same trace).
    calls_backend: bool,
}

fn services() -> Vec<Service> {
    vec![
        Service {
            name: "edge-1pct",
            rule: Rule::Consistent(0.01),
            requests: 400_000,
            median_ns: 20e6,
            calls_backend: true,
        },
        Service {
            name: "api-10pct",
            rule: Rule::Consistent(0.10),
            requests: 100_000,
            median_ns: 5e6,
            calls_backend: false,
        },
        Service {
            name: "legacy-25pct",
            rule: Rule::JaegerTags(0.25),
            requests: 20_000,
            median_ns: 50e6,
            calls_backend: false,
        },
        Service {
            name: "admin-100pct",
            rule: Rule::Consistent(1.0),
            requests: 10_000,
            median_ns: 2e6,
            calls_backend: false,
        },
    ]
}

/// splitmix64: reproducible traffic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for c in b.chunks_mut(8) {
            let x = self.next().to_be_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
        if b.iter().all(|x| *x == 0) {
            b[0] = 1;
        }
        b
    }
}

/// What really happened to one service (and its calls to backend).
#[derive(Default)]
struct Truth {
    requests: u64,
    errors: u64,
    durations: Vec<u64>,
    backend_calls: u64,
}

#[allow(clippy::too_many_arguments)]
fn pspan(
    trace: [u8; 16],
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    trace_state: &str,
    name: &str,
    start: u64,
    dur: u64,
    error: bool,
    attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> PSpan {
    PSpan {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        trace_state: trace_state.into(),
        flags: 0x101,
        name: name.into(),
        kind: 2, // SERVER: the services' entry spans
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        attributes: attrs,
        status: Some(Status {
            message: String::new(),
            code: if error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
        }),
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<PSpan>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", V::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// Generates every service's traffic; returns the truth and the requests an
/// SDK would have exported (batches of spans per service).
fn generate(base: u64) -> (BTreeMap<String, Truth>, Vec<ExportTraceServiceRequest>) {
    // FERROTRACE_GROUND_TRUTH_SEED=N draws other traffic (for measuring the
    // spread of the errors); the default is fixed so CI is reproducible.
    let seed = std::env::var("FERROTRACE_GROUND_TRUTH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x00AD_1057_ED00_C0DE);
    let mut rng = Rng(seed);
    let mut truth: BTreeMap<String, Truth> = BTreeMap::new();
    let mut out = Vec::new();
    for svc in services() {
        let (p, consistent) = match svc.rule {
            Rule::Consistent(p) => (p, true),
            Rule::JaegerTags(p) => (p, false),
        };
        let th = Threshold::from_probability(p).expect("probability");
        let trace_state = format!("ot=th:{}", th.to_th());
        let mut kept: Vec<PSpan> = Vec::new();
        let mut backend: Vec<PSpan> = Vec::new();
        let mut t = Truth::default();
        let mut backend_truth = Truth::default();
        for i in 0..svc.requests {
            let trace: [u8; 16] = rng.id();
            let root: [u8; 8] = rng.id();
            let start = base + (i as u64 * MINUTES * MINUTE) / svc.requests as u64;
            let dur = (svc.median_ns * (0.8 * rng.normal()).exp()).max(1.0) as u64;
            let error = rng.unit() < ERROR_RATE;
            t.requests += 1;
            t.errors += error as u64;
            t.durations.push(dur);
            let backend_dur = dur / 2 + 1;
            if svc.calls_backend {
                t.backend_calls += 1;
                backend_truth.requests += 1;
                backend_truth.durations.push(backend_dur);
            }
            let keep = if consistent {
                th.keeps(Randomness::from_trace_id(ferrotrace::TraceId::from_bytes(
                    trace,
                )))
            } else {
                // Jaeger's probabilistic sampler is also a trace-id rule; any
                // independent draw at probability p is the same in law.
                rng.unit() < p
            };
            if !keep {
                continue;
            }
            let (ts, attrs) = if consistent {
                (trace_state.as_str(), vec![])
            } else {
                (
                    "",
                    vec![
                        kv("sampler.type", V::StringValue("probabilistic".into())),
                        kv("sampler.param", V::DoubleValue(p)),
                    ],
                )
            };
            kept.push(pspan(
                trace, root, None, ts, "GET /", start, dur, error, attrs,
            ));
            if svc.calls_backend {
                // The child inherits the parent's `th` (ParentBased).
                let child: [u8; 8] = rng.id();
                backend.push(pspan(
                    trace,
                    child,
                    Some(root),
                    ts,
                    "query",
                    start + 1,
                    backend_dur,
                    false,
                    vec![],
                ));
            }
        }
        // Parents before children, as an SDK ends them in the other order
        // but the collector's rollups handle either; batches of 2000.
        for chunk in kept.chunks(2000) {
            out.push(request(svc.name, chunk.to_vec()));
        }
        for chunk in backend.chunks(2000) {
            out.push(request("backend", chunk.to_vec()));
        }
        truth.insert(svc.name.to_string(), t);
        if svc.calls_backend {
            truth.insert("backend".into(), backend_truth);
        }
    }
    (truth, out)
}

fn probability_of(service: &str) -> f64 {
    let th_p = |p: f64| Threshold::from_probability(p).expect("p").probability();
    match service {
        "backend" => th_p(0.01),
        s => match services()
            .iter()
            .find(|x| x.name == s)
            .expect("service")
            .rule
        {
            Rule::Consistent(p) => th_p(p),
            Rule::JaegerTags(p) => p,
        },
    }
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let r = ingest_util::request("GET", addr, path, &[], Bytes::new()).await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).expect("json")
}

/// Fraction of `sorted` at or below `x`.
fn true_rank(sorted: &[u64], x: f64) -> f64 {
    sorted.partition_point(|v| (*v as f64) <= x) as f64 / sorted.len() as f64
}

fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimated_counts_and_percentiles_match_the_unsampled_truth() {
    let now = ferrotrace_collector::model::now_ns();
    let base = now - now % MINUTE - 20 * MINUTE;
    let (truth, requests) = generate(base);
    let sent: usize = requests
        .iter()
        .map(|r| r.resource_spans[0].scope_spans[0].spans.len())
        .sum();

    let tc = start(|c| {
        // The collector's own head sampling must not change the rollups:
        // they are computed before it, from every span received.
        c.sampling.head.rate = 0.1;
        c.batcher.rollup_flush_ms = 50;
    })
    .await;
    let otlp = tc.collector.addrs.otlp_http.expect("otlp http");
    let api = tc.collector.addrs.http.expect("query http");
    let proto = [("content-type", "application/x-protobuf")];
    let started = Instant::now();
    for body in &requests {
        let body = body.encode_to_vec();
        loop {
            let r = post(otlp, "/v1/traces", &proto, body.clone()).await;
            if r.status == 429 || r.status == 503 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            break;
        }
    }
    let w = format!(
        "start={}&end={}",
        ferrotrace_collector::query::params::format_rfc3339(base - MINUTE),
        ferrotrace_collector::query::params::format_rfc3339(base + (MINUTES + 1) * MINUTE),
    );

    // Wait until the rollups hold every span: the 100% service is exact,
    // and two reads a little apart agree.
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut last = serde_json::Value::Null;
    loop {
        let r = get_json(api, &format!("/api/native/rates?{w}")).await;
        let admin = r["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["service"] == "admin-100pct")
            .map(|s| s["count"].as_u64().unwrap_or(0));
        if admin == Some(truth["admin-100pct"].requests) && r == last {
            break;
        }
        assert!(Instant::now() < deadline, "rollups never settled: {r}");
        last = r;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "sent {sent} sampled spans for {} true requests in {:.1?}",
        truth.values().map(|t| t.requests).sum::<u64>(),
        started.elapsed()
    );

    let rates = get_json(api, &format!("/api/native/rates?{w}")).await;
    let deps = get_json(api, &format!("/api/native/dependencies?{w}")).await;
    eprintln!(
        "{:<14} {:>6} {:>8} {:>9} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7}",
        "service", "p", "true", "estimate", "err %", "bound %", "errs %", "p50 %", "p95 %", "p99 %"
    );
    for (name, t) in &truth {
        let p = probability_of(name);
        let n = t.requests as f64;
        let row = rates["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["service"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from {rates}"));
        let est = row["count"].as_f64().expect("count");
        let sigma = (n * (1.0 - p) / p).sqrt();
        let bound = SIGMAS * sigma + ROUNDING_SLACK;
        assert!(
            (est - n).abs() <= bound,
            "{name}: estimated {est} requests, truth {n}, bound {bound}"
        );
        let est_err = row["errors"].as_f64().expect("errors");
        let e = t.errors as f64;
        let err_bound = SIGMAS * (e * (1.0 - p) / p).sqrt() + ROUNDING_SLACK;
        assert!(
            (est_err - e).abs() <= err_bound,
            "{name}: estimated {est_err} errors, truth {e}, bound {err_bound}"
        );

        let lat = get_json(api, &format!("/api/native/latency?service={name}&{w}")).await;
        let mut sorted = t.durations.clone();
        sorted.sort_unstable();
        let mut rel = Vec::new();
        for (q, key) in [(0.5, "p50_ns"), (0.95, "p95_ns"), (0.99, "p99_ns")] {
            let v = lat[key].as_f64().expect(key);
            let kept = n * p;
            let qb = SIGMAS * (q * (1.0 - q) * (1.0 - p) / kept).sqrt() + 1.0 / n;
            let (lo, hi) = (
                true_rank(&sorted, v / 1.0101),
                true_rank(&sorted, v * 1.0101),
            );
            assert!(
                lo <= q + qb && hi >= q - qb,
                "{name} {key} = {v}: true ranks [{lo}, {hi}] vs q {q} ± {qb}"
            );
            let exact = nearest_rank(&sorted, q) as f64;
            rel.push(100.0 * (v - exact) / exact);
        }
        eprintln!(
            "{:<14} {:>6.4} {:>8} {:>9} {:>+7.2} {:>7.2} {:>+7.2} | {:>+7.2} {:>+7.2} {:>+7.2}",
            name,
            p,
            t.requests,
            est,
            100.0 * (est - n) / n,
            100.0 * bound / n,
            100.0 * (est_err - e) / e.max(1.0),
            rel[0],
            rel[1],
            rel[2]
        );
    }

    // The edge edge-1pct → backend: every call is weighted by the child's count.
    let edge = deps["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["caller"] == "edge-1pct" && e["callee"] == "backend")
        .unwrap_or_else(|| panic!("no edge in {deps}"))
        .clone();
    let calls = edge["calls"].as_f64().expect("calls");
    let n = truth["edge-1pct"].backend_calls as f64;
    let p = probability_of("backend");
    let bound = SIGMAS * (n * (1.0 - p) / p).sqrt() + ROUNDING_SLACK;
    assert!(
        (calls - n).abs() <= bound,
        "edge calls {calls}, truth {n}, bound {bound}"
    );
    eprintln!(
        "edge edge-1pct -> backend: true {n}, estimate {calls} ({:+.2}%, bound {:.2}%)",
        100.0 * (calls - n) / n,
        100.0 * bound / n
    );

    // Weight sources are counted.
    let m = ingest_util::request("GET", api, "/metrics", &[], Bytes::new()).await;
    let m = String::from_utf8_lossy(&m.body).into_owned();
    let metric = |line: &str| {
        m.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let jaeger_sent = sent as u64
        - requests
            .iter()
            .flat_map(|r| r.resource_spans[0].scope_spans[0].spans.iter())
            .filter(|s| !s.trace_state.is_empty())
            .count() as u64;
    assert_eq!(
        metric("ferrotrace_rollup_weighted_spans_total{source=\"jaeger\"}"),
        jaeger_sent
    );
    assert_eq!(
        metric("ferrotrace_rollup_weighted_spans_total{source=\"threshold\"}"),
        sent as u64 - jaeger_sent
    );
    tc.collector.shutdown().await;
}
