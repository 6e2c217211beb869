//! Fuzzing of the Jaeger decoders: the agent's datagrams (Thrift compact and
//! binary), the HTTP body (a Thrift binary `Batch`) and gRPC's
//! `PostSpansRequest`. Well-formed inputs are built from Jaeger's IDL by
//! the strategies here and encoded by the test's own Thrift encoder
//! (`jaeger_util`) or prost; the inverse encoder below turns decoded spans
//! back into Jaeger's model, undoing the translator's mapping (special tags
//! from kind, status, trace state and scope; the parent and links as
//! references; events as logs), so every accepted input must round-trip.

use ferrotrace_collector::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode};
use ferrotrace_collector::receiver::jaeger::proto::pb as jpb;
use ferrotrace_collector::receiver::jaeger::thrift::Protocol;
use ferrotrace_collector::receiver::jaeger::{decode_agent, decode_grpc, decode_thrift_http};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use super::fuzz_util::{fuzz, mutations, variants};
use super::jaeger_util::*;
use super::{canonical, double, limits, text, word, PROTO_DICT};

const NO_SERVICE: &str = "OTLPResourceNoServiceName";

/// Tag keys the mapping treats specially, and some plain ones.
fn tag_key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => word(1, 8),
        2 => prop::sample::select(vec![
            "span.kind", "error", "otel.status_code", "otel.status_description",
            "http.status_code", "http.status_message", "w3c.tracestate", "otel.scope.name",
            "otel.scope.version", "sampler.type", "sampler.param", "event", "hostname",
            "jaeger.version", "host.name", "service.name", "opencensus.exporterversion",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// Values of every tag type, the strings and numbers the mapping looks for
/// among them.
fn tag_value() -> BoxedStrategy<TVal> {
    prop_oneof![
        3 => text().prop_map(TVal::Str),
        2 => prop::sample::select(vec![
            "client", "server", "producer", "consumer", "internal", "OK", "ERROR", "ok",
            "unset", "500", "404", "x",
        ])
        .prop_map(|s| TVal::Str(s.to_string())),
        1 => double().prop_map(TVal::Double),
        2 => any::<bool>().prop_map(TVal::Bool),
        1 => any::<i64>().prop_map(TVal::Long),
        1 => prop::sample::select(vec![200i64, 399, 404, 500, 99]).prop_map(TVal::Long),
        1 => vec(any::<u8>(), 0..6).prop_map(TVal::Binary),
    ]
    .boxed()
}

fn tags(max: usize) -> BoxedStrategy<Vec<TTag>> {
    vec(
        (tag_key(), tag_value()).prop_map(|(key, value)| TTag { key, value }),
        0..max,
    )
    .boxed()
}

/// A Jaeger Thrift batch built from the IDL: every span valid (non-zero
/// ids, times in range).
fn tbatch() -> BoxedStrategy<TBatch> {
    let nonzero = any::<i64>().prop_filter("non-zero", |v| *v != 0);
    let span = (
        (
            prop_oneof![Just(0i64), any::<i64>()],
            nonzero.clone(),
            nonzero.clone(),
            prop_oneof![Just(0i64), any::<i64>()],
            text(),
        ),
        (
            prop_oneof![
                Just(None),
                vec((0i32..3, any::<bool>(), any::<i64>(), any::<i64>()), 0..3).prop_map(Some),
            ],
            0i32..4,
            1_000_000_000_000i64..4_000_000_000_000_000,
            0i64..100_000_000,
        ),
        (
            prop_oneof![Just(None), tags(6).prop_map(Some)],
            prop_oneof![
                Just(None),
                vec((1i64..4_000_000_000_000_000, tags(3)), 0..3).prop_map(Some)
            ],
        ),
    )
        .prop_map(
            |((high, low, id, parent, name), (refs, flags, start, duration), (tags, logs))| TSpan {
                low,
                high,
                span_id: id,
                parent,
                name,
                refs: refs.map(|rs| {
                    rs.into_iter()
                        .map(|(kind, same, l, s)| TRef {
                            kind,
                            low: if same { low } else { l },
                            high: if same { high } else { l.rotate_left(7) },
                            span: s,
                        })
                        .collect()
                }),
                flags,
                start,
                duration,
                tags,
                logs: logs.map(|ls| {
                    ls.into_iter()
                        .map(|(ts, fields)| TLog { ts, fields })
                        .collect()
                }),
            },
        );
    (
        prop_oneof![
            Just(String::new()),
            Just("svc".to_string()),
            Just(NO_SERVICE.to_string()),
            text(),
        ],
        prop_oneof![Just(None), tags(4).prop_map(Some)],
        vec(span, 0..4),
        prop_oneof![Just(None), any::<i64>().prop_map(Some)],
    )
        .prop_map(|(service, ptags, spans, seq_no)| TBatch {
            process: TProcess {
                service,
                tags: ptags,
            },
            spans,
            seq_no,
        })
        .boxed()
}

/// The service name the mapping gives a process: its name unless a
/// `service.name` tag (the last one) says otherwise; `unknown_service` when
/// neither is a non-empty string or the process says it has no name.
fn expected_service(p: &TProcess) -> String {
    if p.service == NO_SERVICE {
        return "unknown_service".into();
    }
    let mut v = (!p.service.is_empty()).then(|| TVal::Str(p.service.clone()));
    for t in p.tags.iter().flatten() {
        if t.key == "service.name" {
            v = Some(t.value.clone());
        }
    }
    match v {
        Some(TVal::Str(s)) if !s.is_empty() => s,
        _ => "unknown_service".into(),
    }
}

/// Spans as Jaeger keeps them: no dropped counts (it has none).
fn without_dropped(spans: &[Span]) -> Vec<Span> {
    spans
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.dropped_attributes_count = 0;
            for e in &mut s.events {
                e.dropped_attributes_count = 0;
            }
            s
        })
        .collect()
}

/// The status the `http.status_code` fallback gives these attributes.
fn implied_status(attrs: &[KeyValue], kind: SpanKind) -> (StatusCode, String) {
    let get = |k: &str| attrs.iter().find(|kv| kv.key == k).map(|kv| &kv.value);
    let code = match get("http.status_code") {
        Some(AttrValue::Int(i)) => Some(*i),
        Some(AttrValue::Str(s)) => s.parse::<i64>().ok(),
        _ => None,
    };
    let Some(code) = code else {
        return (StatusCode::Unset, String::new());
    };
    let c = match (code, kind) {
        (400..=499, SpanKind::Client) => StatusCode::Error,
        (400..=499, SpanKind::Server) => StatusCode::Unset,
        (100..=398, _) => StatusCode::Unset,
        _ => StatusCode::Error,
    };
    if c == StatusCode::Unset {
        return (StatusCode::Unset, String::new());
    }
    let msg = match get("http.status_message") {
        Some(AttrValue::Str(s)) => s.to_string(),
        _ => String::new(),
    };
    (c, msg)
}

/// One span in Jaeger's terms, undoing the mapping.
struct Inverse {
    tags: Vec<KeyValue>,
    logs: Vec<(u64, Vec<KeyValue>)>,
    /// (child_of, trace, span)
    refs: Vec<(bool, [u8; 16], [u8; 8])>,
    process_tags: Vec<KeyValue>,
}

fn inverse(s: &Span) -> Inverse {
    let mut tags = s.attributes.clone();
    let str_tag = |k: &str, v: &str| KeyValue::new(k, AttrValue::Str(v.into()));
    if s.kind != SpanKind::Unspecified {
        tags.push(str_tag("span.kind", s.kind.as_str()));
    }
    // Written only where the attributes do not already imply it (which is
    // how the decoder found it, leaving a status description among them).
    if (s.status_code, s.status_message.clone()) != implied_status(&s.attributes, s.kind) {
        let code = match s.status_code {
            StatusCode::Ok => "OK",
            StatusCode::Error => "ERROR",
            StatusCode::Unset => "UNSET",
        };
        tags.push(str_tag("otel.status_code", code));
        if !s.status_message.is_empty() {
            tags.push(str_tag("otel.status_description", &s.status_message));
        }
    }
    if !s.trace_state.is_empty() {
        tags.push(str_tag("w3c.tracestate", &s.trace_state));
    }
    if !s.scope_name.is_empty() || !s.scope_version.is_empty() {
        tags.push(str_tag("otel.scope.name", &s.scope_name));
        if !s.scope_version.is_empty() {
            tags.push(str_tag("otel.scope.version", &s.scope_version));
        }
    }
    let logs = s
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::new();
            if !e.name.is_empty() {
                fields.push(str_tag("event", &e.name));
            }
            fields.extend(e.attributes.iter().cloned());
            (e.time_ns, fields)
        })
        .collect();
    let mut refs: Vec<(bool, [u8; 16], [u8; 8])> = s
        .links
        .iter()
        .map(|l| {
            let child_of = l.attributes.iter().any(|kv| {
                kv.key == "opentracing.ref_type" && kv.value == AttrValue::Str("child_of".into())
            });
            (child_of, l.trace_id, l.span_id)
        })
        .collect();
    // No parent although a link is in the span's own trace: the parent
    // reference had span id 0 (no parent); it goes first again.
    if s.parent_span_id.is_none() && refs.iter().any(|r| r.1 == s.trace_id) {
        refs.insert(0, (true, s.trace_id, [0; 8]));
    }
    Inverse {
        tags,
        logs,
        refs,
        process_tags: s.resource_attributes.to_vec(),
    }
}

fn to_tval(v: &AttrValue) -> TVal {
    match v {
        AttrValue::Str(s) => TVal::Str(s.to_string()),
        AttrValue::Bool(b) => TVal::Bool(*b),
        AttrValue::Int(i) => TVal::Long(*i),
        AttrValue::Double(d) => TVal::Double(*d),
        AttrValue::Bytes(b) => TVal::Binary(b.clone()),
        other => panic!("the Jaeger decoder made a {other:?}"),
    }
}

fn ttags(kvs: &[KeyValue]) -> Option<Vec<TTag>> {
    Some(
        kvs.iter()
            .map(|kv| TTag {
                key: kv.key.to_string(),
                value: to_tval(&kv.value),
            })
            .collect(),
    )
}

fn hi_lo(t: &[u8; 16]) -> (i64, i64) {
    (
        i64::from_be_bytes(t[..8].try_into().unwrap()),
        i64::from_be_bytes(t[8..].try_into().unwrap()),
    )
}

/// The spans back as Thrift batches, one per span (each has its resource).
fn to_tbatches(spans: &[Span]) -> Vec<TBatch> {
    spans
        .iter()
        .map(|s| {
            let inv = inverse(s);
            let (high, low) = hi_lo(&s.trace_id);
            TBatch {
                process: TProcess {
                    service: String::new(),
                    tags: ttags(&inv.process_tags),
                },
                spans: vec![TSpan {
                    low,
                    high,
                    span_id: i64::from_be_bytes(s.span_id),
                    parent: s.parent_span_id.map_or(0, i64::from_be_bytes),
                    name: s.name.to_string(),
                    refs: Some(
                        inv.refs
                            .iter()
                            .map(|(c, t, sp)| {
                                let (high, low) = hi_lo(t);
                                TRef {
                                    kind: if *c { 0 } else { 1 },
                                    low,
                                    high,
                                    span: i64::from_be_bytes(*sp),
                                }
                            })
                            .collect(),
                    ),
                    flags: s.flags as i32,
                    start: (s.start_ns / 1000) as i64,
                    duration: ((s.end_ns - s.start_ns) / 1000) as i64,
                    tags: ttags(&inv.tags),
                    logs: Some(
                        inv.logs
                            .iter()
                            .map(|(t, f)| TLog {
                                ts: (t / 1000) as i64,
                                fields: ttags(f).unwrap(),
                            })
                            .collect(),
                    ),
                }],
                seq_no: None,
            }
        })
        .collect()
}

/// Thrift tokens: type ids, field headers, list headers, huge sizes, stops.
const THRIFT_DICT: &[&[u8]] = &[
    b"\x00",
    b"\x0c\x00\x01",
    b"\x0f\x00\x02\x0c",
    b"\x7f\xff\xff\xff",
    b"\xff\xff\xff\xff",
    b"\x19",
    b"\x1c",
    b"\xf9\xff\xff\xff\xff\x0f",
    b"\x16\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\x82\x81\x01\x09emitBatch",
    b"\x80\x01\x00\x04",
];

#[derive(Clone, Copy, Debug)]
enum Wire {
    AgentCompact,
    AgentBinary,
    Http,
}

fn encode(b: &TBatch, wire: Wire) -> Vec<u8> {
    match wire {
        Wire::AgentCompact => encode_emit_batch(b, Proto::Compact),
        Wire::AgentBinary => encode_emit_batch(b, Proto::Binary),
        Wire::Http => encode_batch(b, Proto::Binary),
    }
}

fn decode(
    raw: &[u8],
    wire: Wire,
) -> Result<ferrotrace_collector::receiver::convert::Decoded, String> {
    match wire {
        Wire::AgentCompact => decode_agent(raw, Protocol::Compact, &limits()),
        Wire::AgentBinary => decode_agent(raw, Protocol::Binary, &limits()),
        Wire::Http => decode_thrift_http(raw, &limits()),
    }
    .map_err(|e| e.to_string())
}

fn fuzz_thrift(name: &str, wire: Wire) {
    fuzz(name, (tbatch(), mutations()), |(batch, ms)| {
        let body = encode(&batch, wire);
        let inputs = variants(&body, &ms, THRIFT_DICT);
        for (i, raw) in inputs.iter().enumerate() {
            let got = decode(raw, wire);
            if i == 0 {
                let d = got
                    .as_ref()
                    .map_err(|e| TestCaseError::fail(format!("valid batch refused: {e}")))?;
                prop_assert_eq!(d.rejected, 0, "{}", d.error_message());
                prop_assert_eq!(d.spans.len(), batch.spans.len());
                let service = expected_service(&batch.process);
                for (t, s) in batch.spans.iter().zip(&d.spans) {
                    prop_assert_eq!(s.span_id, t.span_id.to_be_bytes());
                    prop_assert_eq!(hi_lo(&s.trace_id), (t.high, t.low));
                    prop_assert_eq!(&s.name, &t.name);
                    prop_assert_eq!(s.start_ns, t.start as u64 * 1000);
                    prop_assert_eq!(s.end_ns - s.start_ns, t.duration as u64 * 1000);
                    prop_assert_eq!(s.flags, (t.flags & 1) as u32);
                    prop_assert_eq!(&s.service_name, &service);
                    prop_assert_eq!(s.events.len(), t.logs.as_ref().map_or(0, Vec::len));
                    if t.parent != 0 {
                        prop_assert_eq!(s.parent_span_id, Some(t.parent.to_be_bytes()));
                    }
                }
            }
            if let Ok(d) = got {
                let mut again = Vec::new();
                for b in to_tbatches(&d.spans) {
                    let a = decode(&encode(&b, wire), wire).map_err(|e| {
                        TestCaseError::fail(format!("re-encoded spans refused: {e}"))
                    })?;
                    prop_assert_eq!(a.rejected, 0, "{}", a.error_message());
                    again.extend(a.spans);
                }
                let (a, b) = (without_dropped(&again), without_dropped(&d.spans));
                if canonical(&a) != canonical(&b) {
                    prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
                }
            }
        }
        Ok(inputs.len() as u64)
    });
}

#[test]
fn fuzz_jaeger_agent_compact() {
    fuzz_thrift("Jaeger agent (Thrift compact)", Wire::AgentCompact);
}

#[test]
fn fuzz_jaeger_agent_binary() {
    fuzz_thrift("Jaeger agent (Thrift binary)", Wire::AgentBinary);
}

#[test]
fn fuzz_jaeger_thrift_http() {
    fuzz_thrift("Jaeger Thrift over HTTP", Wire::Http);
}

// ---------------------------------------------------------------- protobuf

fn pkv(t: &TTag) -> jpb::KeyValue {
    let mut kv = jpb::KeyValue {
        key: t.key.clone(),
        ..Default::default()
    };
    match &t.value {
        TVal::Str(s) => {
            kv.v_type = jpb::ValueType::String as i32;
            kv.v_str = s.clone();
        }
        TVal::Bool(b) => {
            kv.v_type = jpb::ValueType::Bool as i32;
            kv.v_bool = *b;
        }
        TVal::Long(l) => {
            kv.v_type = jpb::ValueType::Int64 as i32;
            kv.v_int64 = *l;
        }
        TVal::Double(d) => {
            kv.v_type = jpb::ValueType::Float64 as i32;
            kv.v_float64 = *d;
        }
        TVal::Binary(b) => {
            kv.v_type = jpb::ValueType::Binary as i32;
            kv.v_binary = b.clone();
        }
    }
    kv
}

fn pkvs(tags: &Option<Vec<TTag>>) -> Vec<jpb::KeyValue> {
    tags.iter().flatten().map(pkv).collect()
}

fn ts(ns: u64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    })
}

fn id16(high: i64, low: i64) -> Vec<u8> {
    [high.to_be_bytes(), low.to_be_bytes()].concat()
}

/// A Thrift batch carried into protobuf: microseconds plus some nanoseconds,
/// the parent as the first `CHILD_OF` reference, and (every other span) the
/// process on the span itself.
fn to_post_spans(b: &TBatch, extra_ns: u32) -> jpb::PostSpansRequest {
    let process = jpb::Process {
        service_name: b.process.service.clone(),
        tags: pkvs(&b.process.tags),
    };
    let spans = b
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let trace = id16(s.high, s.low);
            let mut references = Vec::new();
            if s.parent != 0 {
                references.push(jpb::SpanRef {
                    trace_id: trace.clone(),
                    span_id: s.parent.to_be_bytes().to_vec(),
                    ref_type: jpb::SpanRefType::ChildOf as i32,
                });
            }
            for r in s.refs.iter().flatten() {
                references.push(jpb::SpanRef {
                    trace_id: id16(r.high, r.low),
                    span_id: r.span.to_be_bytes().to_vec(),
                    ref_type: r.kind,
                });
            }
            let start = s.start as u64 * 1000 + u64::from(extra_ns);
            jpb::Span {
                trace_id: trace,
                span_id: s.span_id.to_be_bytes().to_vec(),
                operation_name: s.name.clone(),
                references,
                flags: s.flags as u32,
                start_time: ts(start),
                duration: Some(prost_types::Duration {
                    seconds: s.duration / 1_000_000,
                    nanos: (s.duration % 1_000_000) as i32 * 1000,
                }),
                tags: pkvs(&s.tags),
                logs: s
                    .logs
                    .iter()
                    .flatten()
                    .map(|l| jpb::Log {
                        timestamp: ts(l.ts as u64 * 1000),
                        fields: l.fields.iter().map(pkv).collect(),
                    })
                    .collect(),
                process: (i % 2 == 1).then(|| process.clone()),
                ..Default::default()
            }
        })
        .collect();
    jpb::PostSpansRequest {
        batch: Some(jpb::Batch {
            spans,
            process: Some(process),
        }),
    }
}

/// Decoded spans back as one `PostSpansRequest` per span.
fn to_protos(spans: &[Span]) -> Vec<jpb::PostSpansRequest> {
    spans
        .iter()
        .map(|s| {
            let inv = inverse(s);
            let kvs = |k: &[KeyValue]| pkvs(&ttags(k));
            let mut references = Vec::new();
            if let Some(p) = s.parent_span_id {
                references.push(jpb::SpanRef {
                    trace_id: s.trace_id.to_vec(),
                    span_id: p.to_vec(),
                    ref_type: jpb::SpanRefType::ChildOf as i32,
                });
            }
            for (c, t, sp) in &inv.refs {
                references.push(jpb::SpanRef {
                    trace_id: t.to_vec(),
                    span_id: sp.to_vec(),
                    ref_type: if *c { 0 } else { 1 },
                });
            }
            let d = s.end_ns - s.start_ns;
            jpb::PostSpansRequest {
                batch: Some(jpb::Batch {
                    process: Some(jpb::Process {
                        service_name: String::new(),
                        tags: kvs(&inv.process_tags),
                    }),
                    spans: vec![jpb::Span {
                        trace_id: s.trace_id.to_vec(),
                        span_id: s.span_id.to_vec(),
                        operation_name: s.name.to_string(),
                        references,
                        flags: s.flags,
                        start_time: ts(s.start_ns),
                        duration: Some(prost_types::Duration {
                            seconds: (d / 1_000_000_000) as i64,
                            nanos: (d % 1_000_000_000) as i32,
                        }),
                        tags: kvs(&inv.tags),
                        logs: inv
                            .logs
                            .iter()
                            .map(|(t, f)| jpb::Log {
                                timestamp: ts(*t),
                                fields: kvs(f),
                            })
                            .collect(),
                        ..Default::default()
                    }],
                }),
            }
        })
        .collect()
}

#[test]
fn fuzz_jaeger_protobuf() {
    fuzz(
        "Jaeger protobuf",
        (tbatch(), 0u32..1000, mutations()),
        |(batch, extra_ns, ms)| {
            let req = to_post_spans(&batch, extra_ns);
            let body = req.encode_to_vec();
            let inputs = variants(&body, &ms, PROTO_DICT);
            for (i, raw) in inputs.iter().enumerate() {
                let got = decode_grpc(raw, &limits());
                if i == 0 {
                    let d = got
                        .as_ref()
                        .map_err(|e| TestCaseError::fail(format!("valid request refused: {e}")))?;
                    prop_assert_eq!(d.rejected, 0, "{}", d.error_message());
                    prop_assert_eq!(d.spans.len(), batch.spans.len());
                    let service = expected_service(&batch.process);
                    for (t, s) in batch.spans.iter().zip(&d.spans) {
                        prop_assert_eq!(s.span_id, t.span_id.to_be_bytes());
                        prop_assert_eq!(&s.name, &t.name);
                        prop_assert_eq!(s.start_ns, t.start as u64 * 1000 + u64::from(extra_ns));
                        prop_assert_eq!(s.end_ns - s.start_ns, t.duration as u64 * 1000);
                        prop_assert_eq!(&s.service_name, &service);
                        if t.parent != 0 {
                            prop_assert_eq!(s.parent_span_id, Some(t.parent.to_be_bytes()));
                        }
                    }
                }
                if let Ok(d) = got {
                    let mut again = Vec::new();
                    for r in to_protos(&d.spans) {
                        let a = decode_grpc(&r.encode_to_vec(), &limits()).map_err(|e| {
                            TestCaseError::fail(format!("re-encoded spans refused: {e}"))
                        })?;
                        prop_assert_eq!(a.rejected, 0, "{}", a.error_message());
                        again.extend(a.spans);
                    }
                    let (a, b) = (without_dropped(&again), without_dropped(&d.spans));
                    if canonical(&a) != canonical(&b) {
                        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
                    }
                }
            }
            Ok(inputs.len() as u64)
        },
    );
}
