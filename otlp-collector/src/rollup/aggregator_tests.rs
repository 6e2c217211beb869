//! The aggregator's edges, limits and drains.

use super::*;
use crate::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode};

const T0: u64 = 1_700_000_040 * 1_000_000_000 - (1_700_000_040 * 1_000_000_000) % MINUTE_NS;

fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    service: &str,
    kind: SpanKind,
    start: u64,
    dur: u64,
) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        trace_state: String::new(),
        flags: 1,
        name: compact_str::format_compact!("{service}-op"),
        kind,
        start_ns: start,
        end_ns: start + dur,
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

fn edge<'a>(b: &'a RollupBatch, caller: &str, callee: &str) -> Option<&'a EdgeRollup> {
    b.edges
        .iter()
        .find(|e| e.caller == caller && e.callee == callee)
}

#[test]
fn operations_counted_per_minute_and_drained_only_when_finished() {
    let mut a = RollupAggregator::default();
    let mut s1 = span(1, 1, None, "api", SpanKind::Server, T0 + 1, 1_000);
    s1.status_code = StatusCode::Error;
    a.observe(&s1);
    a.observe(&span(1, 2, None, "api", SpanKind::Server, T0 + 2, 3_000));
    a.observe(&span(
        1,
        3,
        None,
        "api",
        SpanKind::Server,
        T0 + MINUTE_NS + 5,
        2_000,
    ));
    // Minute T0 ended at T0+60s; with the 10 s delay it is due at T0+70s.
    assert!(a.drain(T0 + MINUTE_NS + 9_000_000_000).is_empty());
    let b = a.drain(T0 + MINUTE_NS + 10_000_000_000);
    assert_eq!(b.operations.len(), 1);
    let r = &b.operations[0];
    assert_eq!(
        (r.minute_ns, r.count, r.errors, r.sketch.count),
        (T0, 2, 1, 2.0)
    );
    let rest = a.drain_all();
    assert_eq!(rest.operations.len(), 1);
    assert_eq!(rest.operations[0].minute_ns, T0 + MINUTE_NS);
    assert_eq!(a.series(), 0);
}

#[test]
fn parent_child_edge_in_either_arrival_order() {
    let mut a = RollupAggregator::default();
    // Parent first.
    a.observe(&span(1, 1, None, "web", SpanKind::Client, T0, 10_000));
    let mut child = span(1, 2, Some(1), "db-svc", SpanKind::Server, T0 + 10, 4_000);
    child.status_code = StatusCode::Error;
    a.observe(&child);
    // Child first.
    a.observe(&span(
        2,
        2,
        Some(1),
        "db-svc",
        SpanKind::Server,
        T0 + 10,
        6_000,
    ));
    a.observe(&span(2, 1, None, "web", SpanKind::Client, T0, 10_000));
    // Same-service child: no edge.
    a.observe(&span(
        2,
        3,
        Some(1),
        "web",
        SpanKind::Internal,
        T0 + 20,
        1_000,
    ));
    let b = a.drain_all();
    let e = edge(&b, "web", "db-svc").expect("edge");
    assert_eq!((e.calls, e.errors, e.sketch.sum), (2, 1, 10_000.0));
    assert_eq!(b.edges.len(), 1);
    assert_eq!(a.stats().parent_child_calls, 2);
}

#[test]
fn client_peer_edges_counted_only_for_uninstrumented_peers() {
    let mut a = RollupAggregator::default();
    let mut db = span(1, 1, None, "web", SpanKind::Client, T0, 5_000);
    db.attributes.push(KeyValue::new(
        "db.system",
        AttrValue::Str("postgresql".into()),
    ));
    a.observe(&db);
    // Client span naming an instrumented service, whose server span shows up.
    let mut call = span(1, 2, None, "web", SpanKind::Client, T0, 8_000);
    call.attributes.push(KeyValue::new(
        "server.address",
        AttrValue::Str("cart.internal".into()),
    ));
    a.observe(&call);
    a.observe(&span(
        1,
        3,
        Some(2),
        "cart",
        SpanKind::Server,
        T0 + 1,
        6_000,
    ));
    // peer.service wins over db.system and names a known service: suppressed.
    let mut named = span(1, 4, None, "web", SpanKind::Client, T0, 8_000);
    named
        .attributes
        .push(KeyValue::new("db.system", AttrValue::Str("redis".into())));
    named
        .attributes
        .push(KeyValue::new("peer.service", AttrValue::Str("cart".into())));
    a.observe(&named);
    // Server spans never name peers.
    let mut srv = span(1, 5, None, "web", SpanKind::Server, T0, 1);
    srv.attributes
        .push(KeyValue::new("peer.service", AttrValue::Str("x".into())));
    a.observe(&srv);
    let b = a.drain(T0 + 10 * MINUTE_NS);
    let pg = edge(&b, "web", "postgresql").expect("db edge");
    assert_eq!((pg.calls, pg.sketch.sum), (1, 5_000.0));
    assert_eq!(edge(&b, "web", "cart").expect("cart edge").calls, 1);
    assert!(edge(&b, "web", "cart.internal").is_none());
    assert!(edge(&b, "web", "x").is_none());
    assert_eq!(b.edges.len(), 2);
    assert_eq!(a.stats().peer_calls, 1);
    assert_eq!(a.stats().peer_calls_suppressed, 2);
}

#[test]
fn peer_candidate_cancelled_by_child_that_arrived_first() {
    let mut a = RollupAggregator::default();
    a.observe(&span(
        3,
        2,
        Some(1),
        "cart",
        SpanKind::Server,
        T0 + 1,
        6_000,
    ));
    let mut call = span(3, 1, None, "web", SpanKind::Client, T0, 8_000);
    call.attributes.push(KeyValue::new(
        "server.address",
        AttrValue::Str("cart.local".into()),
    ));
    a.observe(&call);
    let b = a.drain_all();
    assert_eq!(b.edges.len(), 1, "{:?}", b.edges);
    assert_eq!(edge(&b, "web", "cart").expect("edge").calls, 1);
    assert_eq!(a.stats().peer_calls_suppressed, 1);
}

#[test]
fn bounded_pending_and_cache_are_counted() {
    let cfg = RollupConfig {
        pending_children: 2,
        span_cache_entries: 2,
        pending_ttl_secs: 1,
        ..Default::default()
    };
    let mut a = RollupAggregator::new(cfg);
    for i in 0..5u8 {
        a.observe(&span(
            9,
            10 + i,
            Some(i + 1),
            "orphan",
            SpanKind::Server,
            T0,
            10,
        ));
    }
    assert_eq!(a.stats().pending_evicted, 3);
    assert_eq!(a.stats().span_cache_evictions, 3);
    a.drain(T0 + 5_000_000_000);
    assert_eq!(a.stats().pending_expired, 2);
    assert_eq!(a.pending_len, 0);
}

#[test]
fn series_limit_flushes_early_then_drops_counted() {
    let cfg = RollupConfig {
        max_series: 2,
        ..Default::default()
    };
    let mut a = RollupAggregator::new(cfg);
    for i in 0..5u8 {
        let mut s = span(1, i, None, "svc", SpanKind::Server, T0, 10);
        s.name = compact_str::format_compact!("op{i}");
        a.observe(&s);
    }
    // 2 accumulate, flush to ready (2), 2 more accumulate, 5th dropped.
    assert_eq!(a.stats().early_flushes, 1);
    assert_eq!(a.stats().series_dropped, 1);
    let b = a.drain_all();
    assert_eq!(b.operations.iter().map(|o| o.count).sum::<u64>(), 4);
}
