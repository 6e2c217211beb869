//! Allocations per span when decoding OTLP protobuf, counted with a counting
//! global allocator: the direct decoder (`receiver::otlp_proto`, what the
//! receivers use) beside the old path (prost into the `opentelemetry-proto`
//! structs, then `convert::from_otlp`), on the load generator's span shape
//! (10 attributes, an event on every fourth span, 3 resource attributes) at
//! 50, 200 and 500 spans per request. OTLP/JSON and Zipkin v2 JSON of the
//! same shape are counted and printed too.
//!
//! The quick test asserts the direct decoder's ceiling: at most half of the
//! 29.5 allocator calls per span it made before the model's strings became
//! inline-when-short (`model::CompactString`, issue 19). A count, not a time.
//! The ignored one times both paths (run it in release):
//! `cargo test --release -p ferrotrace-collector --test alloc_per_span -- --ignored --nocapture`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use ferrotrace_collector::config::LimitsConfig;
use ferrotrace_collector::receiver::convert::{from_otlp, Decoded};
use ferrotrace_collector::receiver::{decode, RecordFormat};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // A reallocation is an allocator call too (and usually a copy).
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[path = "../src/bin/loadgen/request.rs"]
mod loadgen_request;

/// The load generator's request of `n` spans (`src/bin/loadgen/request.rs`).
fn request(n: usize) -> ExportTraceServiceRequest {
    loadgen_request::build_request(0, 0, n, 1_700_000_000_000_000_000)
}

fn old_path(body: &[u8]) -> Decoded {
    let req = ExportTraceServiceRequest::decode(body).expect("valid");
    from_otlp(req, &LimitsConfig::default()).expect("converts")
}

fn direct(body: &[u8]) -> Decoded {
    decode(RecordFormat::OtlpProto, body, &LimitsConfig::default()).expect("valid")
}

fn otlp_json(body: &[u8]) -> Decoded {
    decode(RecordFormat::OtlpJson, body, &LimitsConfig::default()).expect("valid")
}

fn zipkin(body: &[u8]) -> Decoded {
    decode(RecordFormat::ZipkinJson, body, &LimitsConfig::default()).expect("valid")
}

/// The load generator's request as a Zipkin v2 JSON span list: the same
/// names, ids and times, the 10 attributes as tags (Zipkin tags are strings),
/// the event as an annotation, `service.name` as the local endpoint.
fn zipkin_request(n: usize) -> Vec<u8> {
    let now = 1_700_000_000_000_000_000u64;
    let spans: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let (start, end, event) = loadgen_request::span_times(i, now);
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

/// Ceiling on the direct decoder's allocator calls per span: half of the
/// 29.5 it made with `String` keys, values and names (29.3-29.7 over the
/// three request sizes, docs/benchmarks.md, issue 19).
const MAX_ALLOCS_PER_SPAN: f64 = 29.5 / 2.0;

/// Allocator calls per span of one decode of `body` (spans dropped after).
fn allocs_per_span(body: &[u8], n: usize, f: fn(&[u8]) -> Decoded) -> f64 {
    let before = ALLOCS.load(Relaxed);
    let d = f(body);
    let after = ALLOCS.load(Relaxed);
    assert_eq!(d.spans.len(), n);
    drop(d);
    (after - before) as f64 / n as f64
}

#[test]
fn the_direct_decoder_allocates_at_most_half_as_often_per_span() {
    for n in [50, 200, 500] {
        let req = request(n);
        let body = req.encode_to_vec();
        let old = allocs_per_span(&body, n, old_path);
        let new = allocs_per_span(&body, n, direct);
        let json = allocs_per_span(&serde_json::to_vec(&req).expect("json"), n, otlp_json);
        let zip = allocs_per_span(&zipkin_request(n), n, zipkin);
        println!(
            "{n} spans/request: allocations per span: structs {old:.1}, direct {new:.1}, \
             OTLP/JSON {json:.1}, Zipkin v2 JSON {zip:.1}"
        );
        assert!(new < old, "{n} spans: direct {new} vs structs {old}");
        assert!(
            new <= MAX_ALLOCS_PER_SPAN,
            "{n} spans: direct decoder {new:.2} allocations per span, ceiling {MAX_ALLOCS_PER_SPAN}"
        );
        // Same spans from both.
        assert_eq!(
            format!("{:?}", direct(&body).spans),
            format!("{:?}", old_path(&body).spans)
        );
    }
}

/// Decode time per span of both paths (release build; interleaved rounds).
#[test]
#[ignore = "timing: run in release with --nocapture"]
fn decode_time_per_span() {
    for n in [50, 200, 500] {
        let body = request(n).encode_to_vec();
        let rounds = 2_000_000 / n;
        let (mut old_ns, mut new_ns) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            for (f, out) in [
                (old_path as fn(&[u8]) -> Decoded, &mut old_ns),
                (direct as fn(&[u8]) -> Decoded, &mut new_ns),
            ] {
                let t = Instant::now();
                for _ in 0..rounds / 5 {
                    std::hint::black_box(f(std::hint::black_box(&body)));
                }
                out.push(t.elapsed().as_nanos() as f64 / (rounds / 5 * n) as f64);
            }
        }
        let span = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::MAX, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.0}-{hi:.0}")
        };
        println!(
            "{n} spans/request: ns per span (5 rounds, min-max): structs {}, direct {}",
            span(&old_ns),
            span(&new_ns)
        );
    }
}

/// A fixed amount of decoding for `valgrind --tool=callgrind` (release):
/// `FT_DECODE_ROUNDS` decodes of one `FT_DECODE_SPANS`-span request with the
/// direct decoder. Instructions per span = the difference between two round
/// counts divided by the extra spans, which cancels the process's set-up.
#[test]
#[ignore = "for callgrind: FT_DECODE_ROUNDS=R FT_DECODE_SPANS=N"]
fn decode_rounds_for_callgrind() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, n) = (env("FT_DECODE_ROUNDS", 10), env("FT_DECODE_SPANS", 500));
    let body = request(n).encode_to_vec();
    for _ in 0..rounds {
        std::hint::black_box(direct(std::hint::black_box(&body)));
    }
}
