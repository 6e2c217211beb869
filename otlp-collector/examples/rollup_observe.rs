//! Microbenchmark of the rollup aggregator's hot path (`RollupAggregator::observe`)
//! over realistic spans: 20 services with 5 operations each, 10 attributes per
//! span, traces of 8 spans crossing services, children exported before their
//! parents half of the time (SDKs export spans as they end), and a drain every
//! 10,000 spans as the pipeline does.
//!
//! Run: `cargo run --release -p ferrotrace-collector --example rollup_observe`
//! (prints ns per span; the median of 7 rounds over 400,000 spans). With
//! `-- --origins` each span is fed with a WAL position (`observe_at`), as the
//! pipeline does, so the crash-exactness bookkeeping is included. With
//! `-- --th` every span carries `tracestate: ot=th:fd70a` (sampled at 1% by
//! its SDK), so the adjusted-count lookup is included.

use std::time::Instant;

use ferrotrace_collector::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode};
use ferrotrace_collector::rollup::{RollupAggregator, RollupConfig, SpanOrigin, MINUTE_NS};

const SERVICES: usize = 20;
const OPS_PER_SERVICE: usize = 5;
const SPANS_PER_TRACE: usize = 8;

/// A small deterministic generator (xorshift), so every run sees the same spans.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn spans(traces: usize, t0: u64, trace_state: &str) -> Vec<Span> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let services: Vec<String> = (0..SERVICES).map(|i| format!("service-{i:02}")).collect();
    let mut out = Vec::with_capacity(traces * SPANS_PER_TRACE);
    for t in 0..traces {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&rng.next().to_be_bytes());
        trace_id[8..].copy_from_slice(&(t as u64).to_be_bytes());
        // Spread over three minutes, in arrival order.
        let start = t0 + (t as u64 * 3 * MINUTE_NS) / traces as u64;
        let mut trace = Vec::with_capacity(SPANS_PER_TRACE);
        let mut svc = (rng.next() % SERVICES as u64) as usize;
        for i in 0..SPANS_PER_TRACE {
            // Even spans are SERVER spans of a new service called by the
            // previous CLIENT span; odd spans are CLIENT spans in the same service.
            let kind = if i % 2 == 0 {
                SpanKind::Server
            } else {
                SpanKind::Client
            };
            if i % 2 == 0 && i > 0 {
                svc = (svc + 1 + (rng.next() % (SERVICES as u64 - 1)) as usize) % SERVICES;
            }
            let op = (rng.next() % OPS_PER_SERVICE as u64) as usize;
            let mut span_id = [0u8; 8];
            span_id.copy_from_slice(&(((t as u64) << 8) | (i as u64 + 1)).to_be_bytes());
            let parent = if i == 0 {
                None
            } else {
                Some((((t as u64) << 8) | i as u64).to_be_bytes())
            };
            let dur = 1_000 + rng.next() % 50_000_000;
            let attributes = vec![
                KeyValue::new("http.request.method", AttrValue::Str("GET".into())),
                KeyValue::new(
                    "http.route",
                    AttrValue::Str(compact_str::format_compact!("/api/v1/op{op}")),
                ),
                KeyValue::new("http.response.status_code", AttrValue::Int(200)),
                KeyValue::new("url.scheme", AttrValue::Str("https".into())),
                KeyValue::new("server.port", AttrValue::Int(8080)),
                KeyValue::new("network.protocol.version", AttrValue::Str("1.1".into())),
                KeyValue::new("user_agent.original", AttrValue::Str("bench/1.0".into())),
                KeyValue::new("client.address", AttrValue::Str("10.0.0.7".into())),
                KeyValue::new("retry", AttrValue::Bool(false)),
                KeyValue::new("weight", AttrValue::Double(0.5)),
            ];
            trace.push(Span {
                trace_id,
                span_id,
                parent_span_id: parent,
                trace_state: trace_state.to_string(),
                flags: 1,
                name: compact_str::format_compact!(
                    "{} /api/v1/op{op}",
                    if i % 2 == 0 { "GET" } else { "call" }
                ),
                kind,
                start_ns: start + i as u64 * 1_000,
                end_ns: start + i as u64 * 1_000 + dur,
                attributes,
                dropped_attributes_count: 0,
                events: vec![],
                dropped_events_count: 0,
                links: vec![],
                dropped_links_count: 0,
                status_code: if rng.next().is_multiple_of(50) {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                status_message: String::new(),
                service_name: services[svc].as_str().into(),
                resource_attributes: Default::default(),
                scope_name: Default::default(),
                scope_version: Default::default(),
            });
        }
        if t % 2 == 0 {
            // Children first, as an SDK exporting spans when they end sends them.
            trace.reverse();
        }
        out.extend(trace);
    }
    out
}

fn main() {
    let t0 = 1_700_000_000 * 1_000_000_000 / MINUTE_NS * MINUTE_NS;
    let th = std::env::args().any(|a| a == "--th");
    let input = spans(50_000, t0, if th { "ot=th:fd70a" } else { "" });
    let origins = std::env::args().any(|a| a == "--origins");
    let mut rounds = Vec::new();
    let mut checksum = 0u64;
    for _ in 0..7 {
        let mut agg = RollupAggregator::new(RollupConfig::default());
        let started = Instant::now();
        for (i, s) in input.iter().enumerate() {
            if origins {
                let origin = SpanOrigin {
                    segment: 1 + i as u64 / 50_000,
                    ordinal: i as u64 % 50_000,
                };
                agg.observe_at(s, Some(origin));
                // The pipeline applies hold changes once per queue item.
                if i % 100 == 99 {
                    agg.take_hold_deltas();
                }
            } else {
                agg.observe(s);
            }
            if i % 10_000 == 9_999 {
                let b = agg.drain(s.start_ns);
                checksum += b.operations.len() as u64;
            }
        }
        let b = agg.drain_all();
        let elapsed = started.elapsed();
        checksum += b.operations.iter().map(|o| o.count).sum::<u64>();
        rounds.push(elapsed.as_nanos() as f64 / input.len() as f64);
    }
    rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "observe: {:.1} ns/span (median of {} rounds over {} spans; min {:.1}, max {:.1}; checksum {checksum})",
        rounds[rounds.len() / 2],
        rounds.len(),
        input.len(),
        rounds[0],
        rounds[rounds.len() - 1]
    );
}
