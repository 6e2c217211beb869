//! What decoding costs in memory, measured with a counting allocator, for
//! realistic and hostile request shapes in every receiver format:
//!
//! - the heap's growth while decoding stays within the reserve the receivers
//!   take before decoding (`receiver::decode_reserve`), which the memory
//!   limit admits against, so concurrent decodes cannot overshoot it;
//! - the memory the decoded spans hold is what is charged to the queue and
//!   tail-sampling byte budgets (`Decoded::bytes`, the sum of
//!   `Span::heap_bytes`): never less than the heap they really hold.
//!
//! One test function: the allocator's counters are process-wide.

mod ingest_util;
mod jaeger_util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ferrotrace_collector::config::LimitsConfig;
use ferrotrace_collector::receiver::jaeger::proto::pb as jpb;
use ferrotrace_collector::receiver::zipkin_proto::pb as zpb;
use ferrotrace_collector::receiver::RecordFormat;
use ferrotrace_collector::receiver::{decode, decode_reserve};
use ingest_util::*;
use jaeger_util::*;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use prost::Message;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Decodes `body`, checks both properties and returns a report line.
fn check(name: &str, format: RecordFormat, body: &[u8]) -> Result<String, String> {
    let limits = LimitsConfig::default();
    let before = CURRENT.load(Relaxed);
    PEAK.store(before, Relaxed);
    let d = decode(format, body, &limits).map_err(|e| format!("{name}: {e}"))?;
    let peak = PEAK.load(Relaxed) - before;
    let held = CURRENT.load(Relaxed) - before;
    let reserve = decode_reserve(format, body.len()) as usize;
    let line = format!(
        "{name}: body {} B, {} spans, decode peak {peak} B ({:.1}x body), reserve {reserve} B, \
         spans hold {held} B, charged {} B",
        body.len(),
        d.spans.len(),
        peak as f64 / body.len() as f64,
        d.bytes
    );
    if d.spans.is_empty() {
        return Err(format!("{line}: nothing decoded"));
    }
    if peak > reserve {
        return Err(format!("{line}: decoding took more than its reserve"));
    }
    if (d.bytes as usize) < held {
        return Err(format!(
            "{line}: the budgets are charged less than the spans hold"
        ));
    }
    Ok(line)
}

fn json_spans(n: u32, attrs: usize) -> String {
    let attrs: Vec<String> = (0..attrs)
        .map(|i| format!(r#"{{"key":"{}","value":{{"intValue":"{i}"}}}}"#, i % 10))
        .collect();
    let spans: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"{:016x}","startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{}]}}"#,
                i + 1,
                attrs.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

fn zipkin_spans(n: u32, tags: usize) -> String {
    let tags: Vec<String> = (0..tags).map(|i| format!(r#""{i}":"v""#)).collect();
    let spans: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"{:016x}","timestamp":1,"duration":1,"localEndpoint":{{"serviceName":"s"}},"tags":{{{}}}}}"#,
                i + 1,
                tags.join(",")
            )
        })
        .collect();
    format!("[{}]", spans.join(","))
}

#[test]
fn decoding_stays_within_its_reserve_and_budgets_see_what_spans_hold() {
    let mut cases: Vec<(&str, RecordFormat, Vec<u8>)> = Vec::new();
    let proto = RecordFormat::OtlpProto;

    // Realistic: attributes of every type, an event and a link per span.
    cases.push(("proto typical", proto, request_with(1, 200).encode_to_vec()));
    // Large values: 1 KiB string attribute per span.
    let mut big = request_with(2, 1000);
    for s in &mut big.resource_spans[0].scope_spans[0].spans {
        s.attributes
            .push(kv("payload", V::StringValue("x".repeat(1024))));
    }
    cases.push(("proto 1 KiB values", proto, big.encode_to_vec()));
    // Hostile: the most attributes allowed, each as small as possible.
    let mut tiny = request_with(3, 200);
    for s in &mut tiny.resource_spans[0].scope_spans[0].spans {
        s.attributes = (0..128)
            .map(|i| kv(&(i % 10).to_string(), V::IntValue(i)))
            .collect();
        s.events.clear();
        s.links.clear();
    }
    cases.push(("proto tiny attributes", proto, tiny.encode_to_vec()));
    // Hostile: spans with nothing but ids and times.
    let mut bare = request_with(4, 5000);
    for s in &mut bare.resource_spans[0].scope_spans[0].spans {
        s.attributes.clear();
        s.events.clear();
        s.links.clear();
        s.name.clear();
        s.trace_state.clear();
        s.status = None;
    }
    cases.push(("proto bare spans", proto, bare.encode_to_vec()));
    // Hostile: the smallest valid span on the wire (ids and a start time,
    // without which a span is rejected).
    let mut minimal = request_with(6, 5000);
    for s in &mut minimal.resource_spans[0].scope_spans[0].spans {
        let (t, id) = (s.trace_id.clone(), s.span_id.clone());
        *s = Default::default();
        s.trace_id = t;
        s.span_id = id;
        s.start_time_unix_nano = 1;
        s.end_time_unix_nano = 1;
    }
    cases.push(("proto ids only", proto, minimal.encode_to_vec()));
    // Hostile: many empty events.
    let mut events = request_with(5, 50);
    for s in &mut events.resource_spans[0].scope_spans[0].spans {
        s.events = (0..128)
            .map(|i| Event {
                time_unix_nano: i,
                ..Default::default()
            })
            .collect();
    }
    cases.push(("proto empty events", proto, events.encode_to_vec()));

    let json = RecordFormat::OtlpJson;
    cases.push((
        "json tiny attributes",
        json,
        json_spans(200, 128).into_bytes(),
    ));
    cases.push(("json bare spans", json, json_spans(5000, 0).into_bytes()));
    let ids_only: Vec<String> = (0..5000)
        .map(|i| {
            format!(
                r#"{{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"{:016x}","startTimeUnixNano":1,"endTimeUnixNano":1}}"#,
                i + 1
            )
        })
        .collect();
    let ids_only = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        ids_only.join(",")
    );
    cases.push(("json ids only", json, ids_only.into_bytes()));
    let zipkin = RecordFormat::ZipkinJson;
    let ids_only: Vec<String> = (0..5000)
        .map(|i| {
            format!(
                r#"{{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"{:016x}","timestamp":1}}"#,
                i + 1
            )
        })
        .collect();
    cases.push((
        "zipkin ids only",
        zipkin,
        format!("[{}]", ids_only.join(",")).into_bytes(),
    ));
    cases.push((
        "zipkin many tags",
        zipkin,
        zipkin_spans(200, 128).into_bytes(),
    ));
    cases.push((
        "zipkin bare spans",
        zipkin,
        zipkin_spans(5000, 0).into_bytes(),
    ));

    // Jaeger: spans with nothing but their required fields, small ids (the
    // fewest bytes per span in the compact protocol), and spans with the
    // most tags allowed, each as small as possible.
    let bare = |n: usize, tags: usize| TBatch {
        process: TProcess {
            service: "s".into(),
            tags: None,
        },
        spans: (0..n)
            .map(|i| {
                let mut s = simple_span(0, 1, i as i64 + 1, 1, 0, "");
                s.flags = 0;
                if tags > 0 {
                    s.tags = Some(
                        (0..tags)
                            .map(|t| tag(&(t % 10).to_string(), TVal::Str(String::new())))
                            .collect(),
                    );
                }
                s
            })
            .collect(),
        seq_no: None,
    };
    cases.push((
        "jaeger thrift binary ids only",
        RecordFormat::JaegerThrift,
        encode_batch(&bare(5000, 0), Proto::Binary),
    ));
    cases.push((
        "jaeger agent compact ids only",
        RecordFormat::JaegerAgentCompact,
        encode_emit_batch(&bare(3000, 0), Proto::Compact),
    ));
    cases.push((
        "jaeger agent binary ids only",
        RecordFormat::JaegerAgentBinary,
        encode_emit_batch(&bare(800, 0), Proto::Binary),
    ));
    cases.push((
        "jaeger agent compact tiny tags",
        RecordFormat::JaegerAgentCompact,
        encode_emit_batch(&bare(60, 128), Proto::Compact),
    ));
    cases.push((
        "jaeger thrift binary tiny tags",
        RecordFormat::JaegerThrift,
        encode_batch(&bare(200, 128), Proto::Binary),
    ));
    let jspans = |n: usize, tags: usize| jpb::PostSpansRequest {
        batch: Some(jpb::Batch {
            process: Some(jpb::Process {
                service_name: "s".into(),
                tags: vec![],
            }),
            spans: (0..n)
                .map(|i| jpb::Span {
                    trace_id: vec![1; 16],
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    start_time: Some(prost_types::Timestamp {
                        seconds: 1,
                        nanos: 0,
                    }),
                    tags: (0..tags)
                        .map(|t| jpb::KeyValue {
                            key: (t % 10).to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }),
    };
    cases.push((
        "jaeger protobuf ids only",
        RecordFormat::JaegerProto,
        jspans(5000, 0).encode_to_vec(),
    ));
    cases.push((
        "jaeger protobuf tiny tags",
        RecordFormat::JaegerProto,
        jspans(200, 128).encode_to_vec(),
    ));
    let zspans = |n: usize, tags: usize| zpb::ListOfSpans {
        spans: (0..n)
            .map(|i| zpb::Span {
                trace_id: vec![1; 16],
                id: (i as u64 + 1).to_be_bytes().to_vec(),
                timestamp: 1,
                tags: (0..tags).map(|t| (t.to_string(), String::new())).collect(),
                ..Default::default()
            })
            .collect(),
    };
    cases.push((
        "zipkin protobuf ids only",
        RecordFormat::ZipkinProto,
        zspans(5000, 0).encode_to_vec(),
    ));
    cases.push((
        "zipkin protobuf many tags",
        RecordFormat::ZipkinProto,
        zspans(200, 128).encode_to_vec(),
    ));
    let v1: Vec<String> = (0..5000)
        .map(|i| {
            format!(
                r#"{{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"{:016x}","timestamp":1}}"#,
                i + 1
            )
        })
        .collect();
    cases.push((
        "zipkin v1 ids only",
        RecordFormat::ZipkinV1Json,
        format!("[{}]", v1.join(",")).into_bytes(),
    ));

    let mut failures = Vec::new();
    for (name, format, body) in &cases {
        match check(name, *format, body) {
            Ok(line) => println!("{line}"),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
