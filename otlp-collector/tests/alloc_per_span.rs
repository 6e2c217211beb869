//! Allocations per span when decoding OTLP protobuf, counted with a counting
//! global allocator: the direct decoder (`receiver::otlp_proto`, what the
//! receivers use) beside the old path (prost into the `opentelemetry-proto`
//! structs, then `convert::from_otlp`), on the load generator's span shape
//! (10 attributes, an event on every fourth span, 3 resource attributes) at
//! 50, 200 and 500 spans per request.
//!
//! The quick test asserts the direct decoder allocates less than the old
//! path; the ignored one also times both (run it in release):
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
fn the_direct_decoder_allocates_less_per_span() {
    for n in [50, 200, 500] {
        let body = request(n).encode_to_vec();
        let old = allocs_per_span(&body, n, old_path);
        let new = allocs_per_span(&body, n, direct);
        println!("{n} spans/request: allocations per span: structs {old:.1}, direct {new:.1}");
        assert!(new < old, "{n} spans: direct {new} vs structs {old}");
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
