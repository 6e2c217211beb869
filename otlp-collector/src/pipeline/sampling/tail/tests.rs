//! Tests of the tail sampler: waits, policies and their combinations, the
//! bounded buffer and decision cache, and the configuration.

use super::*;
use crate::model::{AttrValue, KeyValue, StatusCode};

fn span(trace: u8, id: u8, start: u64, dur: u64) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        kind: Default::default(),
        start_ns: start,
        end_ns: start + dur,
        ..Span::test(0)
    }
}

fn cfg(policies: Vec<(&str, Rule)>) -> TailSamplingConfig {
    TailSamplingConfig {
        enabled: true,
        policies: policies
            .into_iter()
            .map(|(n, r)| PolicyConfig {
                name: n.into(),
                rule: r,
            })
            .collect(),
        ..Default::default()
    }
}

fn ids<T>(v: &[Decided<T>]) -> Vec<(u8, bool, String, usize)> {
    v.iter()
        .map(|d| {
            (
                d.trace_id[0],
                d.decision.sampled,
                d.decision.reason.to_string(),
                d.spans.len(),
            )
        })
        .collect()
}

#[test]
fn holds_until_wait_then_first_match_decides() {
    let mut t = TailSampler::<u32>::new(&cfg(vec![
        ("errors", Rule::StatusError),
        ("slow", Rule::Latency { threshold_ms: 100 }),
    ]))
    .expect("config");
    let t0 = Instant::now();
    let mut e = span(1, 1, 0, 10);
    e.status_code = StatusCode::Error;
    assert!(t.offer(span(1, 2, 0, 5), 10, t0).is_empty());
    assert!(t.offer(e, 11, t0).is_empty());
    assert!(t.offer(span(2, 1, 0, 50_000_000), 12, t0).is_empty());
    assert!(t
        .offer(span(2, 2, 200_000_000, 1), 13, t0 + Duration::from_secs(1))
        .is_empty());
    assert!(t
        .offer(span(3, 1, 0, 1_000), 14, t0 + Duration::from_secs(2))
        .is_empty());
    assert!(t.tick(t0 + Duration::from_millis(29_999)).is_empty());
    let d = t.tick(t0 + Duration::from_secs(31));
    assert_eq!(
        ids(&d),
        vec![(1, true, "errors".into(), 2), (2, true, "slow".into(), 2)]
    );
    assert_eq!(
        d[0].spans.iter().map(|h| h.ticket).collect::<Vec<_>>(),
        vec![10, 11]
    );
    let d = t.tick(t0 + Duration::from_secs(32));
    assert_eq!(ids(&d), vec![(3, false, NO_MATCH.into(), 1)]);
    // Late spans follow the decision and come straight back.
    let late = t.offer(span(3, 9, 0, 1), 99, t0 + Duration::from_secs(40));
    assert_eq!(ids(&late), vec![(3, false, NO_MATCH.into(), 1)]);
    let late = t.offer(span(1, 9, 0, 1), 98, t0 + Duration::from_secs(40));
    assert_eq!(ids(&late), vec![(1, true, "errors".into(), 1)]);
    let s = t.stats();
    assert_eq!(
        (
            s.traces_sampled,
            s.traces_dropped,
            s.spans_sampled,
            s.spans_dropped,
            s.late_spans
        ),
        (2, 1, 5, 2, 2)
    );
    assert_eq!(s.by_reason.get("errors"), Some(&1));
    assert_eq!(t.held_traces(), 0);
    assert_eq!(t.held_bytes(), 0);
}

#[test]
fn attribute_rules_and_combinations() {
    let mut t = TailSampler::<()>::new(&cfg(vec![
        (
            "vip-and-big",
            Rule::And {
                rules: vec![
                    Rule::StringAttribute {
                        key: "tier".into(),
                        values: vec!["vip".into()],
                    },
                    Rule::NumericAttribute {
                        key: "size".into(),
                        min: Some(10.0),
                        max: Some(20.0),
                    },
                ],
            },
        ),
        (
            "status",
            Rule::NumericAttribute {
                key: "http.status_code".into(),
                min: Some(500.0),
                max: None,
            },
        ),
    ]))
    .expect("config");
    let now = Instant::now();
    let mut a = span(1, 1, 0, 1);
    a.resource_attributes
        .make_mut()
        .push(KeyValue::new("tier", AttrValue::Str("vip".into())));
    a.attributes
        .push(KeyValue::new("size", AttrValue::Double(12.5)));
    let mut b = span(2, 1, 0, 1);
    b.attributes
        .push(KeyValue::new("tier", AttrValue::Str("vip".into())));
    b.attributes.push(KeyValue::new("size", AttrValue::Int(21)));
    let mut c = span(3, 1, 0, 1);
    c.attributes
        .push(KeyValue::new("http.status_code", AttrValue::Int(503)));
    let mut d = span(4, 1, 0, 1);
    d.attributes.push(KeyValue::new(
        "http.status_code",
        AttrValue::Str("503".into()),
    ));
    for s in [a, b, c, d] {
        t.offer(s, (), now);
    }
    let got = ids(&t.flush_all(now));
    assert_eq!(
        got,
        vec![
            (1, true, "vip-and-big".into(), 1),
            (2, false, NO_MATCH.into(), 1),
            (3, true, "status".into(), 1),
            (4, false, NO_MATCH.into(), 1)
        ]
    );
}

#[test]
fn probabilistic_is_consistent_and_near_rate() {
    let mut t = TailSampler::<()>::new(&cfg(vec![("p", Rule::Probabilistic { rate: 0.3 })]))
        .expect("config");
    let now = Instant::now();
    let mut kept = 0;
    for i in 0..4000u32 {
        let mut s = span(0, 1, 0, 1);
        s.trace_id[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        s.trace_id[4..8].copy_from_slice(&i.to_be_bytes());
        let again = s.trace_id;
        t.offer(s, (), now);
        let d = t.flush_all(now);
        kept += d[0].decision.sampled as u32;
        // Same trace id, fresh sampler: same answer.
        let mut u = TailSampler::<()>::new(&cfg(vec![("p", Rule::Probabilistic { rate: 0.3 })]))
            .expect("config");
        let mut s2 = span(0, 1, 0, 1);
        s2.trace_id = again;
        u.offer(s2, (), now);
        assert_eq!(u.flush_all(now)[0].decision.sampled, d[0].decision.sampled);
    }
    let frac = kept as f64 / 4000.0;
    assert!((frac - 0.3).abs() < 0.03, "{frac}");
}

#[test]
fn rate_limit_budget_refills() {
    let mut t = TailSampler::<()>::new(&cfg(vec![(
        "rl",
        Rule::RateLimiting {
            spans_per_second: 3,
        },
    )]))
    .expect("config");
    let t0 = Instant::now();
    let mut decide = |trace: u8, n: u8, at: Instant| {
        for i in 0..n {
            t.offer(span(trace, i, 0, 1), (), at);
        }
        t.flush_all(at)[0].decision.sampled
    };
    assert!(decide(1, 2, t0)); // 3 -> 1 token
    assert!(!decide(2, 2, t0)); // needs 2, has 1
    assert!(decide(3, 1, t0)); // 1 -> 0
    assert!(decide(4, 3, t0 + Duration::from_secs(1))); // refilled to 3
    assert!(decide(5, 10, t0 + Duration::from_secs(5))); // big trace needs a full bucket
}

#[test]
fn full_buffer_decides_oldest_early_never_loses() {
    let mut c = cfg(vec![("all", Rule::Always)]);
    c.max_traces = 2;
    let mut t = TailSampler::<u8>::new(&c).expect("config");
    let now = Instant::now();
    assert!(t.offer(span(1, 1, 0, 1), 1, now).is_empty());
    assert!(t.offer(span(2, 1, 0, 1), 2, now).is_empty());
    let d = t.offer(span(3, 1, 0, 1), 3, now);
    assert_eq!(ids(&d), vec![(1, true, "all".into(), 1)]);
    assert_eq!(t.stats().early_decisions, 1);
    assert_eq!(t.stats().early_decisions_max_traces, 1);
    assert_eq!(t.stats().early_decisions_max_bytes, 0);
    // Byte bound: one huge span forces its own trace out at once.
    let mut c = cfg(vec![("all", Rule::Always)]);
    c.max_bytes = Some(10_000);
    let mut t = TailSampler::<u8>::new(&c).expect("config");
    let mut big = span(7, 1, 0, 1);
    big.attributes.push(KeyValue::new(
        "blob",
        AttrValue::Str("x".repeat(20_000).into()),
    ));
    let d = t.offer(big, 7, now);
    assert_eq!(ids(&d), vec![(7, true, "all".into(), 1)]);
    assert_eq!(t.held_bytes(), 0);
    assert_eq!(t.stats().early_decisions_max_bytes, 1);
    assert_eq!(t.stats().early_decisions_max_traces, 0);
}

#[test]
fn decision_cache_bounded_and_config_validated() {
    let mut c = cfg(vec![("all", Rule::Always)]);
    c.decision_cache_entries = 2;
    let mut t = TailSampler::<()>::new(&c).expect("config");
    let now = Instant::now();
    for i in 0..5 {
        t.offer(span(i, 1, 0, 1), (), now);
    }
    t.flush_all(now);
    assert_eq!(t.decided.len(), 2);
    assert_eq!(t.stats().decision_cache_evictions, 3);
    // An evicted trace's late span is held again rather than lost.
    assert!(t.offer(span(0, 2, 0, 1), (), now).is_empty());
    assert_eq!(t.held_traces(), 1);

    assert!(TailSampler::<()>::new(&cfg(vec![])).is_err());
    assert!(TailSampler::<()>::new(&cfg(vec![("p", Rule::Probabilistic { rate: 2.0 })])).is_err());
    assert!(TailSampler::<()>::new(&cfg(vec![("a", Rule::And { rules: vec![] })])).is_err());
    let bad_range = Rule::NumericAttribute {
        key: "k".into(),
        min: Some(5.0),
        max: Some(1.0),
    };
    assert!(TailSampler::<()>::new(&cfg(vec![("n", bad_range)])).is_err());
}

#[test]
fn config_parses_from_json_and_rejects_unknown_fields() {
    let c: TailSamplingConfig = serde_json::from_str(
        r#"{"enabled": true, "decision_wait_ms": 1000, "policies": [
            {"name": "errors", "rule": "status_error"},
            {"name": "slow", "rule": {"latency": {"threshold_ms": 250}}},
            {"name": "combo", "rule": {"and": {"rules": ["status_error", {"probabilistic": {"rate": 0.5}}]}}}
        ]}"#,
    )
    .expect("parse");
    assert_eq!(c.policies.len(), 3);
    assert_eq!(c.max_traces, 50_000);
    assert!(serde_json::from_str::<TailSamplingConfig>(r#"{"bogus": 1}"#).is_err());
    assert!(serde_json::from_str::<PolicyConfig>(
        r#"{"name": "x", "rule": {"latency": {"threshold_ms": 1, "x": 2}}}"#
    )
    .is_err());
}

#[test]
fn first_match_nests_inside_and() {
    // Gold customers whose trace failed or was slow; then any failed trace,
    // and the rest within a budget of 2 spans per second that failed
    // traces do not spend (first_match stops at status_error).
    let c: TailSamplingConfig = toml::from_str(
        r#"
        enabled = true
        [[policies]]
        name = "gold_bad"
        rule = { and = { rules = [
            { string_attribute = { key = "tier", values = ["gold"] } },
            { first_match = { rules = ["status_error", { latency = { threshold_ms = 100 } }] } },
        ] } }
        [[policies]]
        name = "budget"
        rule = { any = { rules = ["status_error", { rate_limiting = { spans_per_second = 2 } }] } }
        "#,
    )
    .expect("toml");
    let mut t = TailSampler::<()>::new(&c).expect("config");
    let now = Instant::now();
    let gold = |trace: u8, dur: u64, error: bool| {
        let mut s = span(trace, 1, 0, dur);
        s.attributes
            .push(KeyValue::new("tier", AttrValue::Str("gold".into())));
        if error {
            s.status_code = StatusCode::Error;
        }
        s
    };
    let failed = |trace: u8| {
        let mut s = span(trace, 1, 0, 1_000);
        s.status_code = StatusCode::Error;
        s
    };
    for s in [
        gold(1, 1_000, true),        // gold, failed
        gold(2, 200_000_000, false), // gold, slow
        gold(3, 1_000, false),       // gold, fine: budget
        failed(6),                   // not gold, failed: no budget spent
        span(4, 1, 0, 200_000_000),  // slow but not gold: budget
        span(5, 1, 0, 1_000),        // budget exhausted
    ] {
        t.offer(s, (), now);
    }
    let d = t.flush_all(now);
    assert_eq!(
        ids(&d),
        vec![
            (1, true, "gold_bad".into(), 1),
            (2, true, "gold_bad".into(), 1),
            (3, true, "budget".into(), 1),
            (6, true, "budget".into(), 1),
            (4, true, "budget".into(), 1),
            (5, false, NO_MATCH.into(), 1),
        ]
    );
    assert!(matches!(
        TailSampler::<()>::new(&cfg(vec![("e", Rule::FirstMatch { rules: vec![] })])),
        Err(SamplingConfigError::Invalid { why, .. }) if why.contains("first_match")
    ));
}
