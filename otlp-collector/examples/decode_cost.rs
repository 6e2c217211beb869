//! The ingest decoder's and the router's scan cost per span, for comparing
//! builds under `valgrind --tool=callgrind` (instruction counts do not depend
//! on the machine's load) or by wall time:
//!
//! ```text
//! cargo build --release -p ferrotrace-collector --example decode_cost
//! valgrind --tool=callgrind target/release/examples/decode_cost decode 200
//! target/release/examples/decode_cost scan 2000
//! target/release/examples/decode_cost scan-careful 2000
//! ```
//!
//! The request is the load generator's (`src/bin/loadgen/request.rs`): 512
//! spans with 10 attributes each and an event on every fourth.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use ferrotrace_collector::receiver::limits::LimitsConfig;
use ferrotrace_collector::receiver::otlp_proto;
use prost::Message;

#[path = "../src/bin/loadgen/request.rs"]
#[allow(dead_code)]
mod loadgen_request;

const SPANS: usize = 512;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "decode".into());
    let rounds: usize = args
        .next()
        .map(|s| s.parse().expect("rounds: a whole number"))
        .unwrap_or(200);
    let body = Bytes::from(
        loadgen_request::build_request(0, 0, SPANS, 1_700_000_000_000_000_000).encode_to_vec(),
    );
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
            other => panic!("mode is decode, scan or scan-careful, not {other:?}"),
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
