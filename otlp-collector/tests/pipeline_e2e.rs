//! Every pipeline stage at once, through a running collector: OTLP/HTTP in,
//! head sampling, tail sampling, enrichment and redaction configured, a real
//! SQLite store behind. Kept traces arrive enriched and redacted, dropped ones
//! never arrive, every WAL segment is released, and the rollups count every
//! span received, sampled or not.

mod ingest_util;

use std::time::{Duration, Instant};

use ferrotrace_collector::config::Config;
use ferrotrace_collector::model::{AttrValue, KeyValue as Kv, Span};
use ferrotrace_collector::storage::{AnalyticsReader, LatencyQuery, TimeRange, TraceReader};
use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span as PSpan, Status,
};
use prost::Message;

/// A whole minute long past, so the rollups of it are final at once.
const MINUTE_NS: u64 = 1_699_999_980_000_000_000;

const PIPELINE: &str = r#"
[sampling.head]
services = { noise = 0.0 }

[sampling.tail]
enabled = true
decision_wait_ms = 200
[[sampling.tail.policies]]
name = "errors"
rule = "status_error"
[[sampling.tail.policies]]
name = "none"
rule = { probabilistic = { rate = 0.0 } }

[enrich]
attributes = { "deployment.environment" = "e2e" }
[enrich.services.backend]
team = "payments"

[redact]
drop_keys = ["password"]
hash_keys = ["user.id"]
builtin = ["credit_card", "email"]
action = "mask"
hash_key = "e2e-key"

[rollups]
finalize_delay_secs = 0

[retention]
max_age_hours = 0
"#;

/// A `service` span of trace `t` (`i` its index), a child of span 0 unless it is span 0.
fn pspan(t: u32, i: u32, name: &str, kind: i32, error: bool, attrs: Vec<(&str, V)>) -> PSpan {
    let start = MINUTE_NS + 1_000_000_000 + i as u64 * 1_000_000;
    PSpan {
        trace_id: trace_id(t).to_vec(),
        span_id: span_id(t, i).to_vec(),
        parent_span_id: if i == 0 {
            vec![]
        } else {
            span_id(t, 0).to_vec()
        },
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 5_000_000 - i as u64 * 1_000_000,
        attributes: attrs.into_iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(Status {
            message: String::new(),
            code: if error {
                status::StatusCode::Error
            } else {
                status::StatusCode::Ok
            } as i32,
        }),
        ..Default::default()
    }
}

fn export_body(by_service: Vec<(&str, Vec<PSpan>)>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
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
            .collect(),
    }
    .encode_to_vec()
}

/// frontend `GET /checkout` (SERVER) calling backend `charge` (SERVER), with
/// sensitive attributes on the backend span.
fn checkout(t: u32, backend_error: bool) -> Vec<u8> {
    let secrets = vec![
        ("password", V::StringValue("hunter2".into())),
        ("user.id", V::IntValue(42)),
        (
            "note",
            V::StringValue("card 4111 1111 1111 1111 for bob@example.com".into()),
        ),
    ];
    export_body(vec![
        (
            "frontend",
            vec![pspan(t, 0, "GET /checkout", 2, false, vec![])],
        ),
        (
            "backend",
            vec![pspan(t, 1, "charge", 2, backend_error, secrets)],
        ),
    ])
}

fn noise(t: u32) -> Vec<u8> {
    export_body(vec![("noise", vec![pspan(t, 0, "tick", 2, false, vec![])])])
}

fn attr<'a>(kvs: &'a [Kv], key: &str) -> Option<&'a AttrValue> {
    kvs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

fn wal_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal"))
        })
        .count()
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_enriched_redacted_released_and_rolled_up() {
    let tc = start(|c| {
        let p: Config = toml::from_str(PIPELINE).expect("pipeline config");
        c.sampling = p.sampling;
        c.enrich = p.enrich;
        c.redact = p.redact;
        c.rollups = p.rollups;
        c.retention = p.retention;
        // One request per WAL segment, so each segment's release is visible.
        c.wal.segment_bytes = 1;
        // Segments created when needed: the test counts segment files, and a
        // prepared spare would be one more.
        c.wal.preallocate = false;
        c.batcher.rollup_flush_ms = 50;
    })
    .await;
    let http = tc.collector.addrs.otlp_http.expect("otlp http");
    let proto = [("content-type", "application/x-protobuf")];
    // 1: backend fails -> kept by `errors`; 2: no error -> dropped by tail
    // sampling; 3 and 4: service `noise` -> dropped by head sampling. Request
    // 4 also seals the segment of request 3.
    for body in [checkout(1, true), checkout(2, false), noise(3), noise(4)] {
        let r = post(http, "/v1/traces", &proto, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    let kept: Vec<Span> = wait_spans(tc.store.as_ref(), trace_id(1), 2).await;
    assert_eq!(kept.len(), 2, "trace 1 kept whole: {kept:?}");
    for s in &kept {
        assert_eq!(
            attr(&s.resource_attributes, "deployment.environment"),
            Some(&AttrValue::Str("e2e".into())),
            "{}",
            s.service_name
        );
    }
    let backend = kept
        .iter()
        .find(|s| s.service_name == "backend")
        .expect("backend span");
    let frontend = kept
        .iter()
        .find(|s| s.service_name == "frontend")
        .expect("frontend span");
    assert_eq!(
        attr(&backend.resource_attributes, "team"),
        Some(&AttrValue::Str("payments".into()))
    );
    assert_eq!(attr(&frontend.resource_attributes, "team"), None);
    assert_eq!(attr(&backend.attributes, "password"), None, "dropped");
    assert_eq!(
        attr(&backend.attributes, "note"),
        Some(&AttrValue::Str("card **** for ****".into()))
    );
    match attr(&backend.attributes, "user.id") {
        Some(AttrValue::Str(h)) => {
            assert!(h.starts_with("redacted:") && h.len() == 9 + 64, "{h}")
        }
        other => panic!("user.id not hashed: {other:?}"),
    }

    // The WAL lets go of everything: segments 1-3 (kept and committed, dropped
    // by tail sampling, dropped by head sampling) are deleted; only the open
    // segment of request 4 remains.
    let m = tc.collector.metrics.clone();
    until("WAL segments released", async || {
        m.wal_segments_deleted
            .load(std::sync::atomic::Ordering::Relaxed)
            == 3
            && wal_files(tc.dir.path()) == 1
    })
    .await;
    // Dropped traces never reach the store (their WAL segments are gone, so
    // they were decided already).
    for t in [2, 3, 4] {
        let spans = tc.store.get_trace(trace_id(t), None).await.unwrap();
        assert!(spans.is_empty(), "dropped trace {t} stored: {spans:?}");
    }

    // Rollups count all 6 spans, sampled or not.
    let range = TimeRange {
        start_ns: MINUTE_NS,
        end_ns: MINUTE_NS + 60_000_000_000,
    };
    let store = tc.store.clone();
    until("rollups written", async || {
        store
            .dependencies(range)
            .await
            .expect("dependencies")
            .iter()
            .any(|e| e.caller == "frontend" && e.callee == "backend")
            && store
                .latency(&LatencyQuery {
                    service: "noise".into(),
                    operation: None,
                    range,
                    step_ns: None,
                    kinds: vec![],
                })
                .await
                .expect("latency")
                .first()
                .is_some_and(|p| p.count == 2)
    })
    .await;
    let edges = tc.store.dependencies(range).await.unwrap();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!((edges[0].calls, edges[0].errors), (2, 1), "{edges:?}");
    for (service, count, errors) in [("frontend", 2, 0), ("backend", 2, 1), ("noise", 2, 0)] {
        let points = tc
            .store
            .latency(&LatencyQuery {
                service: service.into(),
                operation: None,
                range,
                step_ns: None,
                kinds: vec![],
            })
            .await
            .unwrap();
        assert_eq!(points.len(), 1, "{service}: {points:?}");
        assert_eq!(
            (points[0].count, points[0].errors),
            (count, errors),
            "{service}"
        );
    }

    // What /metrics says about it.
    let metrics_addr = tc.collector.addrs.http.expect("http");
    let scrape = request("GET", metrics_addr, "/metrics", &[], Default::default()).await;
    assert_eq!(scrape.status, 200);
    let text = String::from_utf8(scrape.body.to_vec()).expect("utf-8");
    for line in [
        "ferrotrace_sampling_decisions_total{decision=\"head:drop:rate\"} 2",
        "ferrotrace_sampling_decisions_total{decision=\"tail:keep:errors\"} 2",
        "ferrotrace_sampling_decisions_total{decision=\"tail:drop:no_policy_matched\"} 2",
        "ferrotrace_spans_dropped_total{reason=\"sampled_out_head\"} 2",
        "ferrotrace_spans_dropped_total{reason=\"sampled_out_tail\"} 2",
        "ferrotrace_redact_values_total{action=\"mask\"} 2",
        "ferrotrace_redact_values_total{action=\"hash\"} 1",
        "ferrotrace_redact_attributes_dropped_total 1",
        "ferrotrace_rollup_spans_observed_total 6",
        "ferrotrace_sink_spans_written_total 2",
        "ferrotrace_tail_sampling_held_traces 0",
        "ferrotrace_wal_segments 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(tc.collector.shutdown().await, "drained");
}
