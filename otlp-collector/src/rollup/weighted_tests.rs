//! Rollups weighted by adjusted counts: operations, errors, latency and both
//! kinds of edges count each span `1/p` times.

use super::series::{next_unit, round_counts};
use super::*;
use crate::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode};

const T0: u64 = 1_700_000_040 * 1_000_000_000 - (1_700_000_040 * 1_000_000_000) % MINUTE_NS;

fn span(trace: u8, id: u8, parent: Option<u8>, service: &str, kind: SpanKind, ts: &str) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        trace_state: ts.into(),
        flags: 1,
        name: compact_str::format_compact!("{service}-op"),
        kind,
        start_ns: T0 + 1_000,
        end_ns: T0 + 1_000 + 1_000_000 * id as u64,
        attributes: vec![],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        service_name: service.into(),
        resource_attributes: Default::default(),
        scope_name: Default::default(),
        scope_version: Default::default(),
    }
}

#[test]
fn operations_errors_and_latency_are_weighted() {
    let mut a = RollupAggregator::default();
    // Two spans at 50% (th:8) and one error at 25% (th:c): 2 + 2 + 4 = 8.
    a.observe(&span(1, 1, None, "api", SpanKind::Server, "ot=th:8"));
    a.observe(&span(2, 1, None, "api", SpanKind::Server, "ot=th:8"));
    let mut e = span(3, 9, None, "api", SpanKind::Server, "x=y,ot=th:c");
    e.status_code = StatusCode::Error;
    a.observe(&e);
    let b = a.drain_all();
    let op = &b.operations[0];
    assert_eq!((op.count, op.errors), (8, 4));
    assert_eq!(op.sketch.count, 8.0);
    // Half the weight is the 9 ms error: p50 is 1 ms, p75 9 ms.
    assert!((op.sketch.quantile(0.5) as f64 / 1e6 - 1.0).abs() < 0.02);
    assert!((op.sketch.quantile(0.75) as f64 / 9e6 - 1.0).abs() < 0.02);
    assert_eq!(op.sketch.mean(), (4 * 1_000_000 + 4 * 9_000_000) / 8);
    assert_eq!(a.stats().weight_threshold, 3);
}

#[test]
fn parent_child_edges_take_the_childs_weight_in_either_order() {
    for child_first in [false, true] {
        let mut a = RollupAggregator::default();
        let parent = span(1, 1, None, "web", SpanKind::Client, "ot=th:c");
        let mut child = span(1, 2, Some(1), "db", SpanKind::Server, "ot=th:c");
        child.status_code = StatusCode::Error;
        if child_first {
            a.observe(&child);
            a.observe(&parent);
        } else {
            a.observe(&parent);
            a.observe(&child);
        }
        let b = a.drain_all();
        let e = b.edges.iter().find(|e| e.callee == "db").expect("edge");
        assert_eq!((e.calls, e.errors, e.sketch.count), (4, 4, 4.0));
    }
}

#[test]
fn peer_edges_take_the_client_span_weight() {
    let mut a = RollupAggregator::default();
    let mut client = span(1, 1, None, "web", SpanKind::Client, "");
    client.attributes = vec![
        KeyValue::new("db.system", AttrValue::Str("postgresql".into())),
        KeyValue::new("sampler.type", AttrValue::Str("probabilistic".into())),
        KeyValue::new("sampler.param", AttrValue::Double(0.1)),
    ];
    a.observe(&client);
    let b = a.drain_all();
    let e = b
        .edges
        .iter()
        .find(|e| e.callee == "postgresql")
        .expect("peer edge");
    assert_eq!(e.calls, 10);
    assert_eq!(a.stats().weight_jaeger, 1);
}

#[test]
fn malformed_sampling_information_counts_one_and_is_counted() {
    let mut a = RollupAggregator::default();
    a.observe(&span(1, 1, None, "api", SpanKind::Server, "ot=th:zz"));
    a.observe(&span(2, 1, None, "api", SpanKind::Server, "BAD=1,ot=th:8"));
    let b = a.drain_all();
    assert_eq!(b.operations[0].count, 2);
    assert_eq!(a.stats().weight_malformed, 2);
}

#[test]
fn integer_rounding_is_unbiased_and_keeps_errors_within_calls() {
    let mut state = 1u64;
    for (count, errors) in [(3.3, 3.3), (10.000_07, 0.4), (0.5, 0.25), (1e6 + 0.9, 7.5)] {
        let (mut c_sum, mut e_sum) = (0u64, 0u64);
        let n = 200_000;
        for _ in 0..n {
            let (c, e) = round_counts(count, errors, next_unit(&mut state));
            assert!(e <= c);
            assert!(c as f64 >= count.floor() && c as f64 <= count.ceil());
            c_sum += c;
            e_sum += e;
        }
        // Bernoulli(frac) noise: 5 standard errors of the mean at most 0.0056.
        let (cm, em) = (c_sum as f64 / n as f64, e_sum as f64 / n as f64);
        assert!((cm - count).abs() < 0.006, "{count}: mean {cm}");
        assert!((em - errors).abs() < 0.006, "{errors}: mean {em}");
    }
    // Whole numbers, and float noise around them, stay exact.
    assert_eq!(round_counts(7.0, 2.0, 0.999), (7, 2));
    assert_eq!(round_counts(0.1 * 3.0 * 10.0, 0.0, 0.999), (3, 0));
}

#[test]
fn a_weighted_value_is_that_many_values() {
    let (mut w, mut n) = (LatencySketch::default(), LatencySketch::default());
    for (v, k) in [(1_000u64, 3u32), (50_000, 5), (0, 2), (7_000_000, 1)] {
        w.add_weighted(v, k as f64);
        for _ in 0..k {
            n.add(v);
        }
    }
    assert_eq!((w.count, w.sum, w.zeros), (n.count, n.sum, n.zeros));
    for q in [0.0, 0.1, 0.2, 0.3, 0.5, 0.9, 0.95, 1.0] {
        assert_eq!(w.quantile(q), n.quantile(q), "q {q}");
    }
    assert_eq!(w.mean(), n.mean());
    // Weights that are not positive and finite are ignored.
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let before = w.clone();
        w.add_weighted(5, bad);
        assert_eq!(w, before);
    }
}

#[test]
fn sketches_stored_before_weights_read_back() {
    let old = r#"{"buckets":{"348":2,"-3":1},"zeros":1,"count":4,"sum":3000,"min":0,"max":1500}"#;
    let s: LatencySketch = serde_json::from_str(old).expect("old sketch");
    assert_eq!((s.count, s.zeros, s.sum), (4.0, 1.0, 3000.0));
    assert_eq!(s.buckets[&348], 2.0);
    assert_eq!(s.quantile(0.0), 0);
}
