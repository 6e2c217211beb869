//! Crash exactness: a run is cut at every point, some batches committed
//! and some not; the WAL keeps what the holds say, the restart replays it
//! with the stored origins, and the stored totals must equal one count
//! per span and per call.
use super::*;
use crate::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode};
use std::collections::BTreeMap;

const T0: u64 = 1_700_000_040 * 1_000_000_000 - (1_700_000_040 * 1_000_000_000) % MINUTE_NS;
const S: u64 = 1_000_000_000;

#[allow(clippy::too_many_arguments)]
fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    service: &str,
    kind: SpanKind,
    start: u64,
    attrs: &[(&str, &str)],
) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        trace_state: String::new(),
        flags: 1,
        name: compact_str::format_compact!("{service}-op{}", id % 3),
        kind,
        start_ns: start,
        end_ns: start + 1_000,
        attributes: attrs
            .iter()
            .map(|(k, v)| KeyValue::new(*k, AttrValue::Str((*v).into())))
            .collect(),
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

enum Ev {
    /// One acknowledged request: its spans go to `segment`.
    Record(u64, Vec<Span>),
    /// The pipeline drains at this wall time; the batch goes to the sink.
    Drain(u64),
    /// The sink commits every batch sent so far.
    Commit,
}

#[derive(Default)]
struct Sink {
    ops: BTreeMap<(u64, String, String), u64>,
    edges: BTreeMap<(u64, String, String), u64>,
    origins: Vec<RollupOrigin>,
}

impl Sink {
    fn write(&mut self, b: &RollupBatch) {
        for o in &b.operations {
            *self
                .ops
                .entry((o.minute_ns, o.service.clone(), o.operation.clone()))
                .or_default() += o.count;
        }
        for e in &b.edges {
            *self
                .edges
                .entry((e.minute_ns, e.caller.clone(), e.callee.clone()))
                .or_default() += e.calls;
        }
        self.origins.extend(b.origins.iter().cloned());
    }
}

/// WAL model: per segment the rollup holds, and the records in order.
#[derive(Default)]
struct WalModel {
    holds: BTreeMap<u64, i64>,
    records: BTreeMap<u64, Vec<Vec<Span>>>,
}

impl WalModel {
    fn apply(&mut self, deltas: Vec<(u64, i64)>) {
        for (seg, d) in deltas {
            let h = self.holds.entry(seg).or_default();
            *h += d;
            assert!(*h >= 0, "segment {seg} released more than held");
        }
    }
    fn append(&mut self, seg: u64, spans: &[Span]) -> u64 {
        let recs = self.records.entry(seg).or_default();
        let first: u64 = recs.iter().map(|r| r.len() as u64).sum();
        recs.push(spans.to_vec());
        first
    }
}

fn feed(a: &mut RollupAggregator, seg: u64, first: u64, spans: &[Span]) {
    for (i, s) in spans.iter().enumerate() {
        a.observe_at(
            s,
            Some(SpanOrigin {
                segment: seg,
                ordinal: first + i as u64,
            }),
        );
    }
}

fn scenario() -> Vec<Ev> {
    use SpanKind::*;
    let m0 = T0;
    let m1 = T0 + MINUTE_NS;
    vec![
        // Trace 1: the cart server span arrives before its caller's client span.
        Ev::Record(
            1,
            vec![
                span(1, 3, Some(2), "cart", Server, m0 + S, &[]),
                span(2, 1, None, "web", Server, m0 + 2 * S, &[]),
                span(
                    2,
                    2,
                    Some(1),
                    "web",
                    Client,
                    m0 + 3 * S,
                    &[("db.system", "postgresql")],
                ),
            ],
        ),
        Ev::Drain(m0 + 30 * S),
        Ev::Record(
            1,
            vec![
                span(3, 1, None, "web", Server, m0 + 40 * S, &[]),
                span(3, 2, Some(1), "cart", Server, m0 + 41 * S, &[]),
            ],
        ),
        Ev::Commit,
        // Minute m0 is finished and written without trace 1's edge.
        Ev::Drain(m1 + 11 * S),
        Ev::Record(
            2,
            vec![
                // The caller's client span, late (its minute is written).
                span(
                    1,
                    2,
                    Some(1),
                    "web",
                    Client,
                    m0 + 500_000,
                    &[("server.address", "cart.local")],
                ),
                span(1, 1, None, "web", Server, m0, &[]),
                span(4, 1, None, "api", Server, m1 + 5 * S, &[]),
                span(
                    4,
                    2,
                    Some(1),
                    "api",
                    Producer,
                    m1 + 6 * S,
                    &[("peer.service", "queue")],
                ),
            ],
        ),
        Ev::Drain(m1 + 20 * S),
        Ev::Commit,
        Ev::Record(
            3,
            vec![
                span(5, 1, None, "web", Server, m1 + 30 * S, &[]),
                span(5, 2, Some(1), "cart", Server, m1 + 31 * S, &[]),
                // A child whose parent never arrives.
                span(6, 2, Some(9), "cart", Server, m1 + 32 * S, &[]),
            ],
        ),
        Ev::Drain(m1 + 45 * S),
        Ev::Drain(m1 + 75 * S),
        Ev::Commit,
        Ev::Drain(m1 + 200 * S),
        Ev::Commit,
    ]
}

fn expected() -> Sink {
    // Every span once, every call once; computed from the scenario by hand.
    let m0 = T0;
    let m1 = T0 + MINUTE_NS;
    let mut want = Sink::default();
    for ev in scenario() {
        if let Ev::Record(_, spans) = ev {
            for s in spans {
                *want
                    .ops
                    .entry((
                        minute_of(s.start_ns),
                        s.service_name.to_string(),
                        s.name.to_string(),
                    ))
                    .or_default() += 1;
            }
        }
    }
    for (minute, caller, callee) in [
        (m0, "web", "cart"),       // trace 1 (late parent) — one call, not two
        (m0, "web", "postgresql"), // trace 2 peer
        (m0, "web", "cart"),       // trace 3
        (m1, "api", "queue"),      // trace 4 peer
        (m1, "web", "cart"),       // trace 5
    ] {
        *want
            .edges
            .entry((minute, caller.into(), callee.into()))
            .or_default() += 1;
    }
    want
}

fn config() -> RollupConfig {
    RollupConfig {
        max_hold_secs: 0,
        pending_ttl_secs: 120,
        ..Default::default()
    }
}

/// Runs the scenario up to `cut` events, crashes, restarts (replaying
/// the held segments, or all of them), and returns the sink's totals.
fn run(cut: usize, replay_all: bool) -> Sink {
    let evs = scenario();
    let mut sink = Sink::default();
    let mut wal = WalModel::default();
    let mut sent: Vec<RollupBatch> = Vec::new();
    let mut a = RollupAggregator::new(config());
    for ev in &evs[..cut] {
        match ev {
            Ev::Record(seg, spans) => {
                let first = wal.append(*seg, spans);
                feed(&mut a, *seg, first, spans);
                wal.apply(a.take_hold_deltas());
            }
            Ev::Drain(now) => {
                let b = a.drain(*now);
                wal.apply(a.take_hold_deltas());
                sent.push(b);
            }
            Ev::Commit => {
                for b in sent.drain(..) {
                    sink.write(&b);
                    wal.apply(b.origin_segments().into_iter().map(|s| (s, -1)).collect());
                }
            }
        }
    }
    // Crash: uncommitted batches and the aggregator are gone. A segment
    // whose holds are all released may have been deleted.
    let replay: Vec<u64> = wal
        .records
        .keys()
        .copied()
        .filter(|s| replay_all || wal.holds.get(s).copied().unwrap_or(0) > 0)
        .collect();
    let mut b = RollupAggregator::new(config());
    b.set_written(WrittenOrigins::from_stored(
        sink.origins
            .iter()
            .filter(|o| replay.contains(&o.segment))
            .cloned(),
    ));
    for seg in &replay {
        let mut first = 0;
        for rec in &wal.records[seg] {
            feed(&mut b, *seg, first, rec);
            first += rec.len() as u64;
        }
    }
    // Requests not acknowledged before the crash are sent again.
    for ev in &evs[cut..] {
        if let Ev::Record(seg, spans) = ev {
            feed(&mut b, seg + 100, 0, spans);
        }
    }
    sink.write(&b.drain(T0 + 10 * MINUTE_NS));
    sink.write(&b.drain_all());
    sink
}

#[test]
fn uninterrupted_run_counts_each_span_and_call_once() {
    let got = run(scenario().len(), false);
    let want = expected();
    assert_eq!(got.ops, want.ops);
    assert_eq!(got.edges, want.edges);
}

#[test]
fn crash_at_every_point_neither_loses_nor_double_counts() {
    let want = expected();
    for cut in 0..=scenario().len() {
        for replay_all in [false, true] {
            let got = run(cut, replay_all);
            assert_eq!(got.ops, want.ops, "cut {cut}, replay_all {replay_all}");
            assert_eq!(got.edges, want.edges, "cut {cut}, replay_all {replay_all}");
        }
    }
}

#[test]
fn holds_follow_contributions_until_committed() {
    let mut a = RollupAggregator::new(config());
    let child = span(1, 2, Some(1), "cart", SpanKind::Server, T0, &[]);
    feed(&mut a, 7, 0, std::slice::from_ref(&child));
    // The op series and the pending child both reference segment 7: one hold.
    assert_eq!(a.take_hold_deltas(), vec![(7, 1)]);
    // Minute written: the batch takes a hold, the pending child keeps one.
    let b = a.drain(T0 + 2 * MINUTE_NS);
    assert_eq!(b.origin_segments(), vec![7]);
    assert_eq!(
        b.origins[0].parts[OriginPart::Main as usize].0,
        vec![(0, 1)]
    );
    assert!(b.origins[0].parts[OriginPart::Child as usize].is_empty());
    assert_eq!(a.take_hold_deltas(), vec![(7, 1)]);
    // The parent arrives from segment 8: the child's edge settles into a
    // new origin of segment 7, and the pending hold becomes the series'.
    let parent = span(1, 1, None, "web", SpanKind::Server, T0, &[]);
    feed(&mut a, 8, 0, std::slice::from_ref(&parent));
    assert_eq!(a.take_hold_deltas(), vec![(8, 1)]);
    let b2 = a.drain_all();
    assert_eq!(b2.origin_segments(), vec![7, 8]);
    let mut d = a.take_hold_deltas();
    d.sort();
    // Handed to the batch: +1 each for the batch, -1 each for the aggregator.
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(b2.edges.len(), 1);
    let seven = b2.origins.iter().find(|o| o.segment == 7).expect("7");
    assert_eq!(seven.parts[OriginPart::Child as usize].0, vec![(0, 1)]);
}

#[test]
fn a_full_wal_writes_unfinished_minutes_at_once() {
    let mut a = RollupAggregator::new(RollupConfig {
        max_hold_secs: 20,
        ..Default::default()
    });
    let root = span(1, 1, None, "svc", SpanKind::Server, T0 + S, &[]);
    feed(&mut a, 4, 0, std::slice::from_ref(&root));
    assert_eq!(a.take_hold_deltas(), vec![(4, 1)]);
    // Minute not finished, held 0 of 20 s: nothing is written yet.
    assert!(a.drain(T0 + 2 * S).is_empty());
    // The WAL is nearly full: written now, the segment's hold handed to
    // the batch (released when the sink commits it).
    let b = a.drain_for_full_wal(T0 + 2 * S);
    assert_eq!(b.operations.iter().map(|o| o.count).sum::<u64>(), 1);
    assert_eq!(b.origin_segments(), vec![4]);
    assert!(a.take_hold_deltas().is_empty(), "+1 batch, -1 aggregator");
    assert_eq!(a.stats().wal_full_flushes, 1);
    // Nothing held: no flush counted, and the next drain is an ordinary one.
    assert!(a.drain_for_full_wal(T0 + 3 * S).is_empty());
    assert_eq!(a.stats().wal_full_flushes, 1);
}

#[test]
fn max_hold_writes_unfinished_minutes_and_early_flush_keeps_origins() {
    let mut a = RollupAggregator::new(RollupConfig {
        max_hold_secs: 20,
        max_series: 2,
        ..Default::default()
    });
    let spans: Vec<Span> = (0..3u8)
        .map(|i| {
            let mut s = span(1, i + 1, None, "svc", SpanKind::Server, T0 + S, &[]);
            s.name = compact_str::format_compact!("op{i}");
            s
        })
        .collect();
    feed(&mut a, 1, 0, &spans);
    assert_eq!(a.stats().early_flushes, 1);
    // Not finished, held 0 s: only the early-flushed part goes out; its
    // origins name exactly the spans it counted.
    let b = a.drain(T0 + 2 * S);
    let counted: u64 = b.operations.iter().map(|o| o.count).sum();
    assert_eq!(counted, 2);
    let main: u64 = b
        .origins
        .iter()
        .flat_map(|o| o.parts[OriginPart::Main as usize].0.iter())
        .map(|(s, e)| e - s)
        .sum();
    assert_eq!(main, 2);
    // 20 s later the unfinished minute is written anyway.
    assert!(a.drain(T0 + 10 * S).operations.is_empty());
    let b = a.drain(T0 + 23 * S);
    assert_eq!(b.operations.len(), 1);
    assert_eq!(b.origins.len(), 1);
    assert_eq!(
        b.origins[0].parts[OriginPart::Main as usize].0,
        vec![(2, 3)]
    );
}

#[test]
fn replayed_span_already_stored_still_finds_its_children() {
    // Stored before the crash: the parent's op. Not stored: the child.
    let mut stored = RollupOrigin {
        segment: 1,
        minute_ns: T0,
        ..Default::default()
    };
    for p in &mut stored.parts {
        p.insert(0);
    }
    let mut a = RollupAggregator::new(config());
    a.set_written(WrittenOrigins::from_stored([stored]));
    let parent = span(1, 1, None, "web", SpanKind::Client, T0, &[]);
    let child = span(1, 2, Some(1), "cart", SpanKind::Server, T0, &[]);
    feed(&mut a, 1, 0, &[parent, child]);
    let b = a.drain_all();
    assert_eq!(b.operations.len(), 1, "only the child's op");
    assert_eq!(b.operations[0].service, "cart");
    assert_eq!(
        b.edges.len(),
        1,
        "the child's edge, found through the cached parent"
    );
    assert_eq!(a.stats().replayed_already_stored, 1);
}
