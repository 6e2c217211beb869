//! The pipeline stages this crate provides, chained the way the collector
//! runs them — rollups over every span, head sampling, tail sampling,
//! enrichment, redaction — writing into a real SQLite store.

mod conformance;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use conformance::{day, day_range, span, tid, MS};
use ferrotrace_collector::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode, TraceId};
use ferrotrace_collector::pipeline::enrich::{EnrichConfig, Enricher};
use ferrotrace_collector::pipeline::redact::{RedactConfig, Redactor};
use ferrotrace_collector::pipeline::sampling::head::trace_id_ratio_sampled;
use ferrotrace_collector::pipeline::sampling::tail::{PolicyConfig, Rule};
use ferrotrace_collector::pipeline::sampling::{
    HeadSampler, HeadSamplingConfig, TailSampler, TailSamplingConfig,
};
use ferrotrace_collector::rollup::RollupAggregator;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::{
    AnalyticsReader, AttrFilter, LatencyQuery, SpanWriter, TraceQuery, TraceReader,
};

const TRACES: u32 = 300;

fn trace(i: u32, t0: u64) -> Vec<Span> {
    let t = tid(60, i);
    let start = t0 + i as u64 * 100 * MS;
    let mut root = span(
        t,
        0,
        None,
        "shop-web",
        "GET /cart",
        start,
        (60 + i as u64 % 40) * MS,
    );
    root.attributes.push(KeyValue::new(
        "user.email",
        AttrValue::Str(compact_str::format_compact!("user{}@example.com", i % 7)),
    ));
    let mut call = span(t, 1, Some(0), "shop-web", "call cart", start + MS, 60 * MS);
    call.kind = SpanKind::Client;
    call.attributes.push(KeyValue::new(
        "server.address",
        AttrValue::Str("cart.svc.local".into()),
    ));
    let mut server = span(
        t,
        2,
        Some(1),
        "shop-cart",
        "cart",
        start + 2 * MS,
        (20 + i as u64 % 30) * MS,
    );
    server.kind = SpanKind::Server;
    if i.is_multiple_of(10) {
        server.status_code = StatusCode::Error;
    }
    let mut db = span(
        t,
        3,
        Some(2),
        "shop-cart",
        "SELECT cart",
        start + 3 * MS,
        5 * MS,
    );
    db.kind = SpanKind::Client;
    db.attributes.push(KeyValue::new(
        "db.system",
        AttrValue::Str("postgresql".into()),
    ));
    // Children before parents in odd traces.
    if i % 2 == 1 {
        vec![db, server, call, root]
    } else {
        vec![root, call, server, db]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_chain_into_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    let t0 = day(20) + 3_600_000_000_000;

    let mut rollups = RollupAggregator::default();
    // The pure ratio rule: this test pins how the stages compose (a head
    // sampler's sparing of error spans, on by default, keeps failed traces
    // from the failed span on and is tested in pipeline/sampling/head.rs).
    let mut head = HeadSampler::new(HeadSamplingConfig {
        rate: 0.5,
        keep_errors: false,
        ..Default::default()
    })
    .expect("head");
    let mut tail = TailSampler::<u32>::new(&TailSamplingConfig {
        enabled: true,
        decision_wait_ms: 1_000,
        policies: vec![
            PolicyConfig {
                name: "errors".into(),
                rule: Rule::StatusError,
            },
            PolicyConfig {
                name: "slow-cart".into(),
                rule: Rule::Latency { threshold_ms: 95 },
            },
        ],
        ..Default::default()
    })
    .expect("tail");
    let mut enricher = Enricher::new(&EnrichConfig {
        attributes: [("deployment.environment".to_string(), "prod".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    })
    .expect("enrich");
    let mut redactor = Redactor::new(&RedactConfig {
        builtin: vec!["email".into()],
        hash_key: Some("test-key".into()),
        ..Default::default()
    })
    .expect("redact");

    let now = Instant::now();
    let mut kept: Vec<Span> = Vec::new();
    let mut released = 0usize;
    let handle = |decided: Vec<ferrotrace_collector::pipeline::sampling::Decided<u32>>,
                  kept: &mut Vec<Span>,
                  released: &mut usize| {
        for d in decided {
            if d.decision.sampled {
                kept.extend(d.spans.into_iter().map(|h| h.span));
            } else {
                *released += d.spans.len();
            }
        }
    };
    for i in 0..TRACES {
        let mut spans = trace(i, t0);
        for s in &spans {
            rollups.observe(s);
        }
        released += head.retain(&mut spans);
        for (n, s) in spans.into_iter().enumerate() {
            let d = tail.offer(s, n as u32, now);
            handle(d, &mut kept, &mut released);
        }
    }
    handle(
        tail.tick(now + Duration::from_secs(2)),
        &mut kept,
        &mut released,
    );
    assert_eq!(tail.held_traces(), 0);
    assert_eq!(
        kept.len() + released,
        TRACES as usize * 4,
        "every span comes out exactly once"
    );
    for s in &mut kept {
        enricher.apply(s);
        redactor.apply(s);
    }
    for chunk in kept.chunks(100) {
        store.write_spans(chunk).await.expect("write");
    }
    store
        .write_rollups(&rollups.drain_all())
        .await
        .expect("rollups");

    // Stored: exactly the head-sampled traces that the error or latency policy kept, whole.
    let expected: BTreeSet<TraceId> = (0..TRACES)
        .filter(|i| trace_id_ratio_sampled(&tid(60, *i), 0.5))
        .filter(|i| i % 10 == 0 || 60 + *i as u64 % 40 >= 95)
        .map(|i| tid(60, i))
        .collect();
    let stored: BTreeSet<TraceId> = kept.iter().map(|s| s.trace_id).collect();
    assert_eq!(stored, expected);
    assert!(!expected.is_empty() && expected.len() < TRACES as usize);
    for t in &expected {
        let spans = store.get_trace(*t, None).await.expect("get");
        assert_eq!(spans.len(), 4, "whole trace stored");
        for s in &spans {
            assert!(s
                .resource_attributes
                .iter()
                .any(|kv| kv.key == "deployment.environment"));
            for kv in &s.attributes {
                if let AttrValue::Str(v) = &kv.value {
                    assert!(!v.contains("@example.com"), "email leaked: {v}");
                }
            }
        }
    }

    // Rollups saw every span, before sampling.
    let r = day_range(day(20));
    let web = store
        .latency(&LatencyQuery {
            service: "shop-web".into(),
            operation: Some("GET /cart".into()),
            range: r,
            step_ns: None,
            kinds: vec![],
        })
        .await
        .expect("latency");
    assert_eq!(web[0].count, TRACES as u64);
    let cart = store
        .latency(&LatencyQuery {
            service: "shop-cart".into(),
            operation: Some("cart".into()),
            range: r,
            step_ns: None,
            kinds: vec![],
        })
        .await
        .expect("latency");
    assert_eq!(
        (cart[0].count, cart[0].errors),
        (TRACES as u64, TRACES as u64 / 10)
    );
    let deps = store.dependencies(r).await.expect("deps");
    let edges: Vec<(String, String, u64)> = deps
        .iter()
        .map(|e| (e.caller.clone(), e.callee.clone(), e.calls))
        .collect();
    assert_eq!(
        edges,
        vec![
            ("shop-cart".into(), "postgresql".into(), TRACES as u64),
            ("shop-web".into(), "shop-cart".into(), TRACES as u64),
        ],
        "instrumented callee counted once, not again via server.address"
    );

    // Redacted values stay joinable: search by the keyed hash of an address.
    let hashed = redactor.hash("user0@example.com");
    let q = TraceQuery {
        service: Some("shop-web".into()),
        operation: None,
        attributes: vec![AttrFilter {
            key: "user.email".into(),
            value: AttrValue::Str(hashed.into()),
            mode: Default::default(),
        }],
        min_duration_ns: None,
        max_duration_ns: None,
        errors_only: false,
        range: r,
        limit: 100,
        cursor: None,
    };
    let found = store.search(&q).await.expect("search");
    let want = expected
        .iter()
        .filter(|t| (0..TRACES).any(|i| tid(60, i) == **t && i % 7 == 0))
        .count();
    assert_eq!(found.traces.len(), want);
    assert!(want > 0);
}
