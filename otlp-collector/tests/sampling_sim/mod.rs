//! A simulated fleet of SDK clients for the adaptive sampling tests: each
//! knows the true number of traces it starts (the ground truth), samples
//! them consistently at the probability the collector serves (the
//! randomness is the trace id's low 56 bits, the decision the SDK's
//! `Threshold::keeps`, `ot=th:` recorded as the SDK does), and sends the
//! kept root spans over OTLP/HTTP.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use ferrotrace::trace::consistent::{Randomness, Threshold};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
use prost::Message;

use crate::ingest_util::{kv, request};

/// SplitMix64: a small deterministic generator (seeded per test).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The served strategy of one service, as a client reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    pub default: f64,
    pub ops: BTreeMap<String, f64>,
}

impl Served {
    /// The probability for `op`: its own, else the service's default.
    pub fn p(&self, op: &str) -> f64 {
        self.ops.get(op).copied().unwrap_or(self.default)
    }
}

/// GET the strategy of `service` (the raw JSON body and its parsed form).
pub async fn fetch(sampling: SocketAddr, service: &str) -> (Bytes, Served) {
    let (body, served, _) = fetch_with_period(sampling, service).await;
    (body, served)
}

/// [`fetch`], and the end (Unix ns) of the last store period the strategy
/// was computed from (the `x-ferrotrace-sampling-period-end` header; `None`
/// without one).
pub async fn fetch_with_period(
    sampling: SocketAddr,
    service: &str,
) -> (Bytes, Served, Option<u64>) {
    let r = request(
        "GET",
        sampling,
        &format!("/api/sampling?service={service}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let default = v["operationSampling"]["defaultSamplingProbability"]
        .as_f64()
        .or_else(|| v["probabilisticSampling"]["samplingRate"].as_f64())
        .expect("a probability");
    let ops = v["operationSampling"]["perOperationStrategies"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    (
                        o["operation"].as_str().expect("operation").to_string(),
                        o["probabilisticSampling"]["samplingRate"]
                            .as_f64()
                            .expect("rate"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let period = r
        .headers
        .get("x-ferrotrace-sampling-period-end")
        .map(|v| v.to_str().expect("ascii").parse().expect("a number"));
    (r.body, Served { default, ops }, period)
}

/// One client population: `service`/`op` root traces at a true rate.
pub struct Source {
    pub service: &'static str,
    pub op: &'static str,
    /// Fractional traces carried to the next tick (deterministic arrivals).
    carry: f64,
    /// True traces started so far.
    pub true_count: u64,
    /// Kept (sent) traces so far.
    pub kept: u64,
    /// Variance of the Horvitz–Thompson estimate of `true_count` from the
    /// kept traces: the sum of `(1 - p) / p` over true traces.
    pub estimate_var: f64,
}

impl Source {
    pub fn new(service: &'static str, op: &'static str) -> Source {
        Source {
            service,
            op,
            carry: 0.0,
            true_count: 0,
            kept: 0,
            estimate_var: 0.0,
        }
    }

    /// Starts `rate × dt` true traces (the fraction carried), samples each at
    /// `p` and returns the kept root spans.
    pub fn tick(&mut self, rng: &mut Rng, rate: f64, dt: f64, p: f64, now_ns: u64) -> Vec<PSpan> {
        self.carry += rate * dt;
        let n = self.carry.floor() as u64;
        self.carry -= n as f64;
        self.true_count += n;
        let th = Threshold::from_probability(p).expect("a probability");
        // The estimate's weight is the threshold's own probability.
        let q = th.probability();
        self.estimate_var += n as f64 * (1.0 - q) / q;
        let tracestate = format!("ot=th:{}", th.to_th());
        let mut out = Vec::new();
        for _ in 0..n {
            let hi = rng.next_u64();
            let r56 = rng.next_u64() >> 8;
            if !th.keeps(Randomness::from_u64(r56).expect("56 bits")) {
                continue;
            }
            let mut trace = [0u8; 16];
            trace[..8].copy_from_slice(&hi.to_be_bytes());
            trace[8] = 0x42;
            trace[9..].copy_from_slice(&r56.to_be_bytes()[1..]);
            out.push(PSpan {
                trace_id: trace.to_vec(),
                span_id: hi.to_be_bytes().to_vec(),
                trace_state: tracestate.clone(),
                flags: 0x301, // sampled, W3C Level 2 random
                name: self.op.into(),
                kind: 2,
                start_time_unix_nano: now_ns - 1_000_000,
                end_time_unix_nano: now_ns,
                ..Default::default()
            });
        }
        self.kept += out.len() as u64;
        out
    }
}

/// One OTLP/HTTP protobuf body of root spans per service.
pub fn body(by_service: BTreeMap<&'static str, Vec<PSpan>>) -> Vec<u8> {
    let resource_spans = by_service
        .into_iter()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", V::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// POSTs an OTLP body; panics unless it is acknowledged.
pub async fn send(otlp: SocketAddr, body: Vec<u8>) {
    let r = crate::ingest_util::post(
        otlp,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
