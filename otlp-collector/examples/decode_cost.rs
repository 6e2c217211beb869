//! The ingest decoders' and the router's scan cost per span, for comparing
//! builds under `valgrind --tool=callgrind` (instruction counts do not depend
//! on the machine's load) or by wall time:
//!
//! ```text
//! cargo build --release -p ferrotrace-collector --example decode_cost
//! valgrind --tool=callgrind target/release/examples/decode_cost decode 200
//! target/release/examples/decode_cost scan 2000
//! target/release/examples/decode_cost scan-careful 2000
//! valgrind --tool=callgrind target/release/examples/decode_cost json 20
//! valgrind --tool=callgrind target/release/examples/decode_cost zipkin 20
//! ```
//!
//! Modes: `decode` (OTLP protobuf, the direct decoder), `scan` (the router's
//! scan), `scan-careful` (the scan without its fast path), `json` (OTLP/JSON) and `zipkin` (Zipkin v2 JSON), each through
//! `receiver::decode` as the receivers call it. The request is the load
//! generator's (`src/bin/loadgen/request.rs`): 512 spans with 10 attributes
//! each and an event on every fourth; for `json` the same request in
//! OTLP/JSON, for `zipkin` the same spans as a Zipkin v2 span list (the
//! attributes as string tags, the event as an annotation). Instructions per
//! span: run two round counts and divide the difference by the extra spans.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use ferrotrace_collector::receiver::limits::LimitsConfig;
use ferrotrace_collector::receiver::{decode, otlp_proto, RecordFormat};
use prost::Message;

#[path = "../src/bin/loadgen/request.rs"]
#[allow(dead_code)]
mod loadgen_request;

const SPANS: usize = 512;
const NOW: u64 = 1_700_000_000_000_000_000;

/// The load generator's spans as a Zipkin v2 JSON span list (the same
/// shape `tests/alloc_per_span.rs` counts).
fn zipkin_body(n: usize) -> Vec<u8> {
    let spans: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let (start, end, event) = loadgen_request::span_times(i, NOW);
            let mut s = serde_json::json!({
                "traceId": "00000000000000010000000000000000",
                "id": format!("00000000{:08x}", i + 1),
                "name": format!("GET /api/items/{}", i % 16),
                "kind": if i == 0 { "SERVER" } else { "CLIENT" },
                "timestamp": start / 1000,
                "duration": (end - start) / 1000,
                "localEndpoint": {"serviceName": "loadgen-svc-0"},
                "tags": {
                    "http.request.method": "GET",
                    "http.route": "/api/items/{id}",
                    "http.response.status_code": "200",
                    "url.path": format!("/api/items/{i}"),
                    "server.address": "items.internal",
                    "server.port": "8080",
                    "user_agent.original": "loadgen/1.0",
                    "network.protocol.version": "1.1",
                    "app.cache_hit": (i % 3 == 0).to_string(),
                    "app.items": (i as f64 * 1.5).to_string(),
                },
            });
            if i > 0 {
                s["parentId"] = "0000000000000001".into();
            }
            if i % 4 == 0 {
                s["annotations"] =
                    serde_json::json!([{"timestamp": event / 1000, "value": "cache.lookup"}]);
            }
            s
        })
        .collect();
    serde_json::to_vec(&spans).expect("serializes")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "decode".into());
    let rounds: usize = args
        .next()
        .map(|s| s.parse().expect("rounds: a whole number"))
        .unwrap_or(200);
    let req = loadgen_request::build_request(0, 0, SPANS, NOW);
    let body = Bytes::from(match mode.as_str() {
        "json" => serde_json::to_vec(&req).expect("OTLP/JSON"),
        "zipkin" => zipkin_body(SPANS),
        _ => req.encode_to_vec(),
    });
    let limits = LimitsConfig::default();
    let started = Instant::now();
    let mut kept = 0usize;
    for _ in 0..rounds {
        let decoded = match mode.as_str() {
            "decode" => otlp_proto::decode(black_box(&body), &limits),
            "scan" => otlp_proto::route_scan::scan(black_box(body.clone()), &limits),
            // The scan without its fast path (what every request took before it).
            "scan-careful" => {
                otlp_proto::route_scan::scan_careful(black_box(body.clone()), &limits)
            }
            "json" => decode(RecordFormat::OtlpJson, black_box(&body), &limits),
            "zipkin" => decode(RecordFormat::ZipkinJson, black_box(&body), &limits),
            other => panic!("mode is decode, scan, scan-careful, json or zipkin, not {other:?}"),
        }
        .expect("the load generator's request decodes");
        kept += decoded.spans.len() + decoded.wire.as_ref().map_or(0, |w| w.spans.len());
        black_box(decoded);
    }
    let elapsed = started.elapsed();
    assert_eq!(kept, SPANS * rounds, "every span kept");
    println!(
        "{mode}: {rounds} requests of {SPANS} spans ({} bytes) in {elapsed:?}: {:.1} ns/span",
        body.len(),
        elapsed.as_nanos() as f64 / (rounds * SPANS) as f64
    );
}
