//! Quiet operations are not starved, and their counts stay right: the SDK's
//! real `RemoteSampler` polls a running collector whose adaptive rates keep
//! only 1 trace/s per operation and whose strategy carries a lower bound of
//! 3 traces/s per operation (`default_lower_bound_traces_per_second`).
//!
//! Traffic of one service: `hot` at 300 traces/s, `warm` at 10/s and
//! `quiet` at 0.5/s (a new operation the collector has never seen, so it is
//! first sampled at the service's default probability, under 1%). Without
//! the lower bound `quiet` would keep about one trace in this run. With it:
//!
//! - every `quiet` trace is kept (fewer spans a window than the bound asks
//!   for) and the collector starts serving `quiet` its own probability, 1;
//! - `warm` and `hot` keep about 3 a second (more than the adaptive rate)
//!   with the probability the bound raised them to recorded in `ot=th`, so
//!   the request counts the collector estimates from the kept spans
//!   (rollups weighted by adjusted count) match the true counts within 5
//!   standard deviations of the Horvitz–Thompson estimate (a lower bound
//!   keeping spans without a known probability, as Jaeger's clients do,
//!   counts each as 1 and overestimates `warm` by ~20%).

mod ingest_util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::consistent::OtState;
use ferrotrace::trace::remote::RemoteSampler;
use ferrotrace::trace::{Sampler, TracerProvider};
use ferrotrace_collector::config::Config;
use prost::Message;

const TARGET: f64 = 1.0;
const LOWER_BOUND: f64 = 3.0;
const OPS: [(&str, f64); 3] = [("hot", 300.0), ("warm", 10.0), ("quiet", 0.5)];
const SECS: f64 = 16.0;

fn config(c: &mut Config) {
    let s = &mut c.sampling_api;
    s.enabled = true;
    s.addr = "127.0.0.1:0".into();
    s.default_probability = 0.01;
    s.default_lower_bound_traces_per_second = LOWER_BOUND;
    s.adaptive.enabled = true;
    s.adaptive.target_traces_per_second = TARGET;
    s.adaptive.interval_secs = 1;
    s.adaptive.smoothing_periods = 4;
    s.adaptive.min_probability = 0.0001;
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

/// Per operation: true traces started, kept, and the Horvitz–Thompson
/// variance estimated from the kept ones (sum of (1 - q) / q^2).
#[derive(Default, Debug)]
struct Tally {
    truth: u64,
    kept: u64,
    var: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_operations_get_traces_and_counts_stay_right() {
    let tc = ingest_util::start(config).await;
    let otlp = tc.collector.addrs.otlp_http.expect("otlp http");
    let sampling = tc.collector.addrs.sampling.expect("sampling");
    let api = tc.collector.addrs.http.expect("query api");

    let remote = RemoteSampler::builder("shop")
        .with_endpoint(format!("http://{sampling}"))
        .with_polling_interval(Duration::from_millis(250))
        .with_jitter(0.0)
        .with_initial_sampler(Sampler::AlwaysOff)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while remote.stats().fetches == 0 {
        assert!(
            Instant::now() < deadline,
            "no strategy: {:?}",
            remote.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_service_name("shop")
        .with_sampler(Sampler::JaegerRemote(remote.clone()))
        .with_unended_span_age(None)
        .build();
    let tracer = provider.tracer("quiet-test");

    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut carry = [0.0f64; 3];
    let start_ns = ferrotrace_collector::model::now_ns();
    let t0 = Instant::now();
    let mut last = t0;
    let mut quiet_served = None;
    let mut last_check = t0;
    while t0.elapsed().as_secs_f64() < SECS {
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        for (i, (op, rate)) in OPS.iter().enumerate() {
            carry[i] += rate * dt;
            let n = carry[i].floor() as u64;
            carry[i] -= n as f64;
            tally.entry(op).or_default().truth += n;
            for _ in 0..n {
                tracer.span_builder(*op).as_root().start().end();
            }
        }
        let spans = exporter.take_spans();
        for s in &spans {
            let th = OtState::of(s.span_context.trace_state())
                .th
                .unwrap_or_else(|| panic!("{}: a kept span without th", s.name));
            let q = th.probability();
            let t = tally.get_mut(&*s.name).expect("known operation");
            t.kept += 1;
            t.var += (1.0 - q) / (q * q);
        }
        if !spans.is_empty() {
            let body = ferrotrace::export::otlp::encode_request(spans).encode_to_vec();
            let r = ingest_util::post(
                otlp,
                "/v1/traces",
                &[("content-type", "application/x-protobuf")],
                body,
            )
            .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
        if quiet_served.is_none() && last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            let v = get_json(sampling, "/api/sampling?service=shop").await;
            let served = v["operationSampling"]["perOperationStrategies"]
                .as_array()
                .and_then(|a| a.iter().find(|o| o["operation"] == "quiet"))
                .and_then(|o| o["probabilisticSampling"]["samplingRate"].as_f64());
            if served == Some(1.0) {
                quiet_served = Some(t0.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end_ns = ferrotrace_collector::model::now_ns();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("{tally:?} over {secs:.1} s; quiet served 1 after {quiet_served:?} s");

    let quiet = &tally["quiet"];
    assert!(quiet.truth >= 6, "{quiet:?}");
    assert_eq!(quiet.kept, quiet.truth, "every quiet trace is kept");
    assert!(
        quiet_served.is_some(),
        "the collector never served the quiet operation its own probability"
    );
    for op in ["hot", "warm"] {
        // About LOWER_BOUND a second (the first window of the run keeps a few more).
        let per_sec = tally[op].kept as f64 / secs;
        assert!(
            (0.6 * LOWER_BOUND..=2.0 * LOWER_BOUND).contains(&per_sec),
            "{op}: {per_sec:.2} kept/s, lower bound {LOWER_BOUND}/s"
        );
    }

    // The collector's estimated request counts (rollups weighted by the
    // adjusted count each span's th gives) against the truth.
    let w = format!(
        "start={}&end={}",
        ferrotrace_collector::query::params::format_rfc3339(start_ns - 120_000_000_000),
        ferrotrace_collector::query::params::format_rfc3339(end_ns + 120_000_000_000),
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (op, t) in &tally {
        let path = format!("/api/native/latency?service=shop&operation={op}&{w}");
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut last = f64::NAN;
        let est = loop {
            let est = get_json(api, &path).await["count"].as_f64().expect("count");
            if est == last || Instant::now() > deadline {
                break est;
            }
            last = est;
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let truth = t.truth as f64;
        // 5σ, plus the rollups' random rounding of weights.
        let bound = 5.0 * t.var.sqrt() + 10.0;
        eprintln!(
            "{op}: true {truth}, estimated {est} ({:+.1}%), kept {}, 5σ bound {bound:.0}",
            100.0 * (est / truth - 1.0),
            t.kept
        );
        assert!(
            (est - truth).abs() <= bound,
            "{op}: estimated {est}, truth {truth}, bound {bound}"
        );
    }
}
