//! The gRPC sampling API (`jaeger.api_v2.SamplingManager/GetSamplingStrategy`)
//! on a running collector, called by a real tonic client over HTTP/2 on both
//! gRPC listeners (`jaeger.grpc_addr`, as Jaeger's port 14250, and
//! `server.otlp_grpc_addr`): for a pinned, an adaptive and a default service
//! it answers exactly what the HTTP API answers; it honours the receivers'
//! bearer token and refuses bad service names with INVALID_ARGUMENT; with
//! `source = "store"` it names the period its answer was computed from in
//! the response metadata, as the HTTP API's header does.

mod ingest_util;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace_collector::config::Config;
use ferrotrace_collector::sampling_api::adaptive::AdaptiveSource;
use ferrotrace_collector::sampling_api::config::ServiceStrategyConfig;
use ferrotrace_collector::sampling_api::grpc::GET_SAMPLING_STRATEGY_PATH;
use ferrotrace_collector::sampling_api::handler::PERIOD_HEADER;
use ferrotrace_collector::sampling_api::proto::pb;
use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
use prost::Message;
use serde_json::{json, Value};
use tonic::Code;

fn cfg(c: &mut Config) {
    c.jaeger.grpc_addr = "127.0.0.1:0".into();
    let s = &mut c.sampling_api;
    s.enabled = true;
    s.addr = "127.0.0.1:0".into();
    s.default_probability = 0.1;
    s.default_lower_bound_traces_per_second = 0.5;
    s.adaptive.enabled = true;
    s.adaptive.target_traces_per_second = 5.0;
    s.adaptive.interval_secs = 1;
    let mut checkout = ServiceStrategyConfig {
        probability: Some(0.25),
        ..Default::default()
    };
    checkout.operations.insert("always".into(), 1.0);
    s.services.insert("checkout".into(), checkout);
}

/// Calls `GetSamplingStrategy` with tonic's client and prost codec.
async fn get(
    addr: SocketAddr,
    service: &str,
    token: Option<&str>,
) -> Result<pb::SamplingStrategyResponse, tonic::Status> {
    get_with_metadata(addr, service, token)
        .await
        .map(|r| r.into_inner())
}

/// [`get`], with the response metadata.
async fn get_with_metadata(
    addr: SocketAddr,
    service: &str,
    token: Option<&str>,
) -> Result<tonic::Response<pb::SamplingStrategyResponse>, tonic::Status> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut client = tonic::client::Grpc::new(ch);
    client.ready().await.expect("ready");
    let mut req = tonic::Request::new(pb::SamplingStrategyParameters {
        service_name: service.into(),
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<
        pb::SamplingStrategyParameters,
        pb::SamplingStrategyResponse,
    >::default();
    client
        .unary(
            req,
            http::uri::PathAndQuery::from_static(GET_SAMPLING_STRATEGY_PATH),
            codec,
        )
        .await
}

/// The protobuf answer in Jaeger's JSON shape, to compare with the HTTP API.
fn as_json(r: &pb::SamplingStrategyResponse) -> Value {
    assert_eq!(
        r.strategy_type,
        pb::SamplingStrategyType::Probabilistic as i32
    );
    assert!(r.rate_limiting_sampling.is_none());
    let mut v = json!({
        "strategyType": "PROBABILISTIC",
        "probabilisticSampling": {"samplingRate": r.probabilistic_sampling.unwrap().sampling_rate},
    });
    if let Some(o) = &r.operation_sampling {
        v["operationSampling"] = json!({
            "defaultSamplingProbability": o.default_sampling_probability,
            "defaultLowerBoundTracesPerSecond": o.default_lower_bound_traces_per_second,
            "perOperationStrategies": o.per_operation_strategies.iter().map(|s| json!({
                "operation": s.operation,
                "probabilisticSampling": {"samplingRate": s.probabilistic_sampling.unwrap().sampling_rate},
            })).collect::<Vec<_>>(),
        });
    }
    v
}

async fn http_strategy(addr: SocketAddr, service: &str) -> Value {
    http_strategy_with_period(addr, service).await.0
}

/// [`http_strategy`], and the period its `x-ferrotrace-sampling-period-end`
/// header names.
async fn http_strategy_with_period(addr: SocketAddr, service: &str) -> (Value, Option<u64>) {
    let r = request(
        "GET",
        addr,
        &format!("/api/sampling?service={service}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let period = r
        .headers
        .get(PERIOD_HEADER)
        .map(|v| v.to_str().expect("ascii").parse().expect("a number"));
    (serde_json::from_slice(&r.body).expect("json"), period)
}

/// The period a gRPC answer's metadata names.
fn grpc_period(r: &tonic::Response<pb::SamplingStrategyResponse>) -> Option<u64> {
    r.metadata()
        .get(PERIOD_HEADER)
        .map(|v| v.to_str().expect("ascii").parse().expect("a number"))
}

/// `n` root spans of `shop`/`hot`, sampled at 100%.
fn roots(seq: &mut u64, n: usize) -> ExportTraceServiceRequest {
    let now = ferrotrace_collector::model::now_ns();
    let spans = (0..n)
        .map(|_| {
            *seq += 1;
            let mut trace = [0x6bu8; 16];
            trace[8..].copy_from_slice(&seq.to_be_bytes());
            PSpan {
                trace_id: trace.to_vec(),
                span_id: seq.to_be_bytes().to_vec(),
                flags: 0x101,
                name: "hot".into(),
                kind: 2,
                start_time_unix_nano: now - 1_000_000,
                end_time_unix_nano: now,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", V::StringValue("shop".into()))],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_exactly_what_http_answers_on_both_grpc_listeners() {
    let tc = start(cfg).await;
    let a = &tc.collector.addrs;
    let (jaeger, otlp_grpc, otlp_http, http) = (
        a.jaeger_grpc.expect("jaeger grpc"),
        a.otlp_grpc.expect("otlp grpc"),
        a.otlp_http.expect("otlp http"),
        a.sampling.expect("sampling"),
    );
    // Traffic for `shop` until the adaptive strategy is served: 100 roots
    // a 100 ms tick is ~1000 traces/s against a target of 5.
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = roots(&mut seq, 100).encode_to_vec();
        let r = post(
            otlp_http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            body,
        )
        .await;
        assert_eq!(r.status, 200);
        if tc
            .collector
            .metrics
            .sampling_adaptive_recomputations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "no recomputation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shop = http_strategy(http, "shop").await;
    let hot = shop["operationSampling"]["perOperationStrategies"][0]["probabilisticSampling"]
        ["samplingRate"]
        .as_f64()
        .expect("adaptive rate for shop/hot");
    assert!(hot < 0.5, "adaptive rate {hot}");

    for service in ["checkout", "shop", "unknown"] {
        let via_http = http_strategy(http, service).await;
        for addr in [jaeger, otlp_grpc] {
            let via_grpc = get(addr, service, None).await.expect("grpc answer");
            // The adaptive rate may be recomputed between the two calls;
            // retry once then if they differ.
            let mut g = as_json(&via_grpc);
            if g != via_http && service == "shop" {
                let h = http_strategy(http, service).await;
                g = as_json(&get(addr, service, None).await.unwrap());
                assert_eq!(g, h, "{service} on {addr}");
                continue;
            }
            assert_eq!(g, via_http, "{service} on {addr}");
        }
    }
    let m = &tc.collector.metrics.sampling_api_requests;
    assert!(m.get("pinned") >= 3 && m.get("adaptive") >= 3 && m.get("default") >= 3);

    // Bad names: INVALID_ARGUMENT, counted.
    let before = m.get("bad_request");
    for name in [String::new(), "x".repeat(257)] {
        let e = get(jaeger, &name, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    assert_eq!(m.get("bad_request"), before + 2);
    tc.collector.shutdown().await;
}

/// With `source = "store"` (the SQLite store here) every gRPC answer —
/// pinned, adaptive and default — names the period it was computed from in
/// its metadata `x-ferrotrace-sampling-period-end`, on both gRPC listeners,
/// the same period the HTTP API's header names at the same moment and with
/// the same strategy; without the store (`source = "local"`) neither names one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_name_the_store_period_like_the_http_header() {
    let tc = start(|c| {
        cfg(c);
        c.sampling_api.adaptive.source = AdaptiveSource::Store;
    })
    .await;
    let a = &tc.collector.addrs;
    let (jaeger, otlp_grpc, otlp_http, http) = (
        a.jaeger_grpc.expect("jaeger grpc"),
        a.otlp_grpc.expect("otlp grpc"),
        a.otlp_http.expect("otlp http"),
        a.sampling.expect("sampling"),
    );
    // Traffic for `shop` until two recomputations from the store's counts.
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = roots(&mut seq, 100).encode_to_vec();
        let r = post(
            otlp_http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            body,
        )
        .await;
        assert_eq!(r.status, 200);
        if tc
            .collector
            .metrics
            .sampling_adaptive_recomputations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "no recomputation from the store");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for service in ["checkout", "shop", "unknown"] {
        // A recomputation (every second) may fall between the calls: then
        // the periods differ and all are asked again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (via_http, http_period) = http_strategy_with_period(http, service).await;
            let http_period = http_period.expect("the HTTP answer names its period");
            let mut same = true;
            for addr in [jaeger, otlp_grpc] {
                let r = get_with_metadata(addr, service, None)
                    .await
                    .expect("grpc answer");
                let period = grpc_period(&r).unwrap_or_else(|| {
                    panic!("{service} on {addr}: the gRPC answer names no period")
                });
                // A period is a second-aligned wall-clock boundary.
                assert_eq!(period % 1_000_000_000, 0, "{period}");
                if period != http_period {
                    same = false;
                    break;
                }
                assert_eq!(as_json(r.get_ref()), via_http, "{service} on {addr}");
            }
            if same {
                break;
            }
            assert!(
                attempts < 10,
                "{service}: gRPC and HTTP named different periods 10 times in a row"
            );
        }
    }
    tc.collector.shutdown().await;

    // `source = "local"`: no store period, so no metadata (as no header).
    let tc = start(cfg).await;
    let jaeger = tc.collector.addrs.jaeger_grpc.expect("jaeger grpc");
    let http = tc.collector.addrs.sampling.expect("sampling");
    let r = get_with_metadata(jaeger, "checkout", None)
        .await
        .expect("grpc answer");
    assert_eq!(grpc_period(&r), None);
    assert_eq!(http_strategy_with_period(http, "checkout").await.1, None);
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sampling_requires_the_receivers_bearer_token() {
    let tc = start(|c| {
        cfg(c);
        c.auth.receiver_tokens = vec!["t0k".into()];
    })
    .await;
    let jaeger = tc.collector.addrs.jaeger_grpc.expect("jaeger grpc");
    let e = get(jaeger, "checkout", None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = get(jaeger, "checkout", Some("wrong")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let r = get(jaeger, "checkout", Some("t0k"))
        .await
        .expect("with token");
    assert_eq!(r.probabilistic_sampling.unwrap().sampling_rate, 0.25);
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sampling_is_not_served_when_the_api_is_off() {
    let tc = start(|c| c.jaeger.grpc_addr = "127.0.0.1:0".into()).await;
    let jaeger = tc.collector.addrs.jaeger_grpc.expect("jaeger grpc");
    let e = get(jaeger, "checkout", None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    tc.collector.shutdown().await;
}
