//! Every receiver carries what the rollups need to weight a span: OTLP/JSON's
//! `traceState`, Jaeger Thrift's `w3c.tracestate` tag and its
//! `sampler.type`/`sampler.param` root tags, and Zipkin (nothing: weight 1).
//! Checked on a running collector through the rates it answers.

mod ingest_util;
mod jaeger_util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace_collector::query::params::format_rfc3339;
use ingest_util::*;
use jaeger_util::*;

const MINUTE: u64 = 60_000_000_000;

async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let r = request("GET", addr, path, &[], Bytes::new()).await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).expect("json")
}

fn jaeger_root(service: &str, low: i64, start_us: i64, tags: Vec<TTag>) -> TBatch {
    let mut tags = tags;
    tags.push(tag("span.kind", TVal::Str("server".into())));
    TBatch {
        process: TProcess {
            service: service.into(),
            tags: None,
        },
        spans: vec![TSpan {
            low,
            high: 7,
            span_id: low,
            parent: 0,
            name: "op".into(),
            flags: 1,
            start: start_us,
            duration: 1_000,
            tags: Some(tags),
            ..Default::default()
        }],
        seq_no: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receiver_carries_the_adjusted_count() {
    let tc = start(|c| {
        c.jaeger.thrift_http_addr = "127.0.0.1:0".into();
        c.batcher.rollup_flush_ms = 50;
    })
    .await;
    let a = tc.collector.addrs.clone();
    let now = ferrotrace_collector::model::now_ns();
    let t0 = now - now % MINUTE - 3 * MINUTE;
    let us = (t0 / 1_000) as i64;

    // OTLP/JSON, 25% (th:c): counts 4.
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
        "scopeSpans":[{{"spans":[{{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
        "traceState":"ot=th:c","name":"GET","kind":2,"startTimeUnixNano":"{t0}","endTimeUnixNano":"{}"}}]}}]}}]}}"#,
        t0 + 1_000_000
    );
    let r = post(
        a.otlp_http.expect("otlp http"),
        "/v1/traces",
        &[("content-type", "application/json")],
        json,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Jaeger Thrift over HTTP: sampler tags at 50%, and a w3c.tracestate at 50%.
    let thrift = a.jaeger_thrift_http.expect("jaeger thrift http");
    for batch in [
        jaeger_root(
            "jaeger-tags",
            11,
            us,
            vec![
                tag("sampler.type", TVal::Str("probabilistic".into())),
                tag("sampler.param", TVal::Double(0.5)),
            ],
        ),
        jaeger_root(
            "jaeger-th",
            12,
            us,
            vec![tag("w3c.tracestate", TVal::Str("ot=th:8".into()))],
        ),
    ] {
        let r = post(
            thrift,
            "/api/traces",
            &[("content-type", "application/vnd.apache.thrift.binary")],
            encode_batch(&batch, Proto::Binary),
        )
        .await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }

    // Zipkin v2 JSON: no sampling information, counts 1.
    let zipkin = format!(
        r#"[{{"traceId":"00000000000000000000000000000abc","id":"0000000000000abc","name":"get","kind":"SERVER",
        "timestamp":{us},"duration":1000,"localEndpoint":{{"serviceName":"zipkin-svc"}}}}]"#
    );
    let r = post(
        a.zipkin.expect("zipkin"),
        "/api/v2/spans",
        &[("content-type", "application/json")],
        zipkin,
    )
    .await;
    assert!(r.status == 202 || r.status == 200, "{}", r.status);

    let w = format!(
        "start={}&end={}",
        format_rfc3339(t0 - MINUTE),
        format_rfc3339(t0 + 2 * MINUTE)
    );
    let http = a.http.expect("query http");
    let want = [
        ("json-svc", 4),
        ("jaeger-tags", 2),
        ("jaeger-th", 2),
        ("zipkin-svc", 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rates = get_json(http, &format!("/api/native/rates?{w}")).await;
        let got: Vec<(String, u64)> = rates["services"]
            .as_array()
            .expect("services")
            .iter()
            .map(|s| {
                (
                    s["service"].as_str().unwrap_or("").to_string(),
                    s["count"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let all = want
            .iter()
            .all(|(svc, n)| got.iter().any(|(g, c)| g == svc && c == n));
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "rates {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = &tc.collector.metrics;
    // Published by the pipeline thread a moment after the rollups.
    while m.rollup_weight_sources.get("threshold") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.rollup_weight_sources.get("threshold"), 2);
    assert_eq!(m.rollup_weight_sources.get("jaeger"), 1);
    assert_eq!(m.rollup_weight_sources.get("malformed"), 0);
    tc.collector.shutdown().await;
}
