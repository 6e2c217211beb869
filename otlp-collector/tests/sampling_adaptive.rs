//! Adaptive sampling on a running collector: root spans sent over OTLP/HTTP
//! (already sampled by their SDK, `ot=th:` in `tracestate`) are counted at
//! their adjusted count; every second the collector recomputes per-operation
//! probabilities toward the target and serves them on the Jaeger remote
//! sampling API. A busy operation gets `target / rate`, a quiet one 1 (never
//! starved), a pinned service keeps its pinned rate, a 10× spike is answered
//! within about one period, and the SDK's `RemoteSampler` samples at the
//! served rate.

mod ingest_util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::consistent::Threshold;
use ferrotrace::trace::remote::RemoteSampler;
use ferrotrace::trace::{Sampler, TracerProvider};
use ferrotrace_collector::config::Config;
use ferrotrace_collector::sampling_api::config::ServiceStrategyConfig;
use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
use prost::Message;

const TARGET: f64 = 5.0;
const TICK: Duration = Duration::from_millis(100);

fn adaptive(c: &mut Config) {
    let s = &mut c.sampling_api;
    s.enabled = true;
    s.addr = "127.0.0.1:0".into();
    s.default_probability = 0.001;
    s.adaptive.enabled = true;
    s.adaptive.target_traces_per_second = TARGET;
    s.adaptive.interval_secs = 1;
    s.adaptive.smoothing_periods = 4;
    s.adaptive.min_probability = 0.0001;
    s.services.insert(
        "pinned".into(),
        ServiceStrategyConfig {
            probability: Some(0.5),
            ..Default::default()
        },
    );
}

/// `n` root spans of `service`/`op` kept by an SDK at probability `p`.
fn roots(seq: &mut u64, service: &str, op: &str, n: usize, p: f64) -> ResourceSpans {
    let th = Threshold::from_probability(p).expect("p").to_th();
    let now = ferrotrace_collector::model::now_ns();
    let spans = (0..n)
        .map(|_| {
            *seq += 1;
            let mut trace = [0x5au8; 16];
            trace[8..].copy_from_slice(&seq.to_be_bytes());
            PSpan {
                trace_id: trace.to_vec(),
                span_id: seq.to_be_bytes().to_vec(),
                trace_state: format!("ot=th:{th}"),
                flags: 0x101,
                name: op.into(),
                kind: 2,
                start_time_unix_nano: now - 1_000_000,
                end_time_unix_nano: now,
                ..Default::default()
            }
        })
        .collect();
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", V::StringValue(service.into()))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

async fn strategy(addr: std::net::SocketAddr, service: &str) -> serde_json::Value {
    let r = request(
        "GET",
        addr,
        &format!("/api/sampling?service={service}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("json")
}

fn op_rate(v: &serde_json::Value, op: &str) -> Option<f64> {
    v["operationSampling"]["perOperationStrategies"]
        .as_array()?
        .iter()
        .find(|o| o["operation"] == op)?["probabilisticSampling"]["samplingRate"]
        .as_f64()
}

/// Sends one tick of traffic: `hot` at `hot_rate` true traces/s (sampled at
/// 10% by the SDK), `cold` at 1 trace every 10 ticks, `pinned` 10 a tick.
/// Returns the true hot traces the tick stands for.
async fn send_tick(otlp: std::net::SocketAddr, seq: &mut u64, tick: u64, hot_rate: f64) -> f64 {
    let kept = (hot_rate * TICK.as_secs_f64() * 0.1).round() as usize;
    let mut rs = vec![
        roots(seq, "shop", "hot", kept, 0.1),
        roots(seq, "pinned", "op", 10, 1.0),
    ];
    if tick.is_multiple_of(10) {
        rs.push(roots(seq, "shop", "cold", 1, 1.0));
    }
    let body = ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec();
    let r = post(
        otlp,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    kept as f64 * 10.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_follow_adjusted_throughput_spikes_and_pins() {
    let tc = start(adaptive).await;
    let otlp = tc.collector.addrs.otlp_http.expect("otlp http");
    let sampling = tc.collector.addrs.sampling.expect("sampling listener");
    let mut seq = 0u64;
    let mut tick = 0u64;

    // Phase 1: hot at about 200 true traces/s (2 spans a tick, each
    // counting 10; a busy machine stretches the ticks, so the rate the
    // probability must answer is measured from what was sent).
    let started = Instant::now();
    let mut sent = 0.0;
    let mut settled = None;
    while started.elapsed() < Duration::from_secs(10) {
        sent += send_tick(otlp, &mut seq, tick, 200.0).await;
        tick += 1;
        tokio::time::sleep(TICK).await;
        let v = strategy(sampling, "shop").await;
        let want = TARGET / (sent / started.elapsed().as_secs_f64());
        if let Some(p) = op_rate(&v, "hot") {
            // A period's count varies by a tick or so.
            if (p - want).abs() < 0.3 * want && started.elapsed().as_secs() >= 3 {
                settled = Some((v, want));
                break;
            }
        }
    }
    let (v, want) = settled.expect("hot operation never settled near target/rate");
    eprintln!(
        "settled after {:.1?}: hot {:?} (target/rate = {want:.4}), cold {:?}",
        started.elapsed(),
        op_rate(&v, "hot"),
        op_rate(&v, "cold")
    );
    assert_eq!(
        op_rate(&v, "cold"),
        Some(1.0),
        "a quiet operation keeps everything: {v}"
    );
    let pinned = strategy(sampling, "pinned").await;
    assert_eq!(
        pinned["probabilisticSampling"]["samplingRate"], 0.5,
        "{pinned}"
    );
    assert!(pinned["operationSampling"].is_null(), "{pinned}");
    // A service never seen gets the default.
    let other = strategy(sampling, "nobody").await;
    assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.001);

    // Phase 2: a 10× spike. The first recomputation after one full period
    // of it serves target / rate: at most two periods (the one the spike
    // started in, then a full one), plus the pipeline's lag on a busy machine.
    let spike = Instant::now();
    let mut sent = 0.0;
    let reacted = loop {
        sent += send_tick(otlp, &mut seq, tick, 2_000.0).await;
        tick += 1;
        tokio::time::sleep(TICK).await;
        let v = strategy(sampling, "shop").await;
        let p = op_rate(&v, "hot").expect("hot");
        let want = TARGET / (sent / spike.elapsed().as_secs_f64());
        if p <= 1.3 * want {
            break spike.elapsed();
        }
        assert!(spike.elapsed() < Duration::from_secs(6), "no reaction: {v}");
    };
    assert!(
        reacted <= Duration::from_millis(3_000),
        "took {reacted:?} to react to the spike"
    );
    eprintln!("10x spike answered after {reacted:.1?} (interval 1 s)");
    let v = strategy(sampling, "shop").await;
    assert_eq!(
        op_rate(&v, "cold"),
        Some(1.0),
        "cold not starved by the spike: {v}"
    );

    // The SDK's RemoteSampler follows the served per-operation rate.
    let served = op_rate(&v, "hot").expect("hot");
    let s = RemoteSampler::builder("shop")
        .with_endpoint(format!("http://{sampling}"))
        .with_polling_interval(Duration::from_secs(60))
        .with_initial_sampler(Sampler::AlwaysOff)
        .build()
        .expect("remote sampler");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.stats().fetches == 0 {
        assert!(Instant::now() < deadline, "no fetch: {:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = TracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_sampler(Sampler::JaegerRemote(s.clone()))
        .with_unended_span_age(None)
        .build();
    let t = p.tracer("t");
    let n = 200_000usize;
    let kept = (0..n)
        .filter(|_| {
            t.span_builder("hot")
                .as_root()
                .start()
                .span_context()
                .is_sampled()
        })
        .count();
    // The strategy may have been recomputed between our read and the
    // sampler's fetch; either way it is near target / 2000. Binomial 5σ
    // around the sampler's own probability is checked against both reads.
    let sigma = (n as f64 * served * (1.0 - served)).sqrt();
    assert!(
        (kept as f64 - n as f64 * served).abs() < 5.0 * sigma + 0.3 * n as f64 * served,
        "kept {kept} of {n} at served {served}"
    );
    assert!(kept > 0 && cold_ok(&t));

    let m = &tc.collector.metrics;
    assert!(m.sampling_api_requests.get("adaptive") >= 1);
    assert!(m.sampling_api_requests.get("pinned") >= 1);
    assert!(
        m.sampling_adaptive_recomputations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    tc.collector.shutdown().await;
}

/// The quiet operation is served 1: every root span of it is sampled.
fn cold_ok(t: &ferrotrace::trace::Tracer) -> bool {
    (0..1_000).all(|_| {
        t.span_builder("cold")
            .as_root()
            .start()
            .span_context()
            .is_sampled()
    })
}
