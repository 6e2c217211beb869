//! Structure-aware fuzzing of the collector's decoders of network input:
//! OTLP protobuf, OTLP/JSON, Zipkin v2 JSON and protobuf, Zipkin v1 JSON,
//! Jaeger Thrift (agent compact and binary, HTTP) and protobuf (`jaeger.rs`)
//! and the query API's parameters.
//! Each decoder gets at least 100,000 generated inputs
//! (`FERROTRACE_FUZZ_INPUTS` for more): well-formed inputs built by proptest
//! strategies that follow the format, and byte-level mutations of each (see
//! `fuzz_util`). For every input: no panic, and every accepted input
//! round-trips: what it decodes to, encoded again (by an encoder written here
//! from the format's specification, independent of the decoder) and decoded,
//! is the same. Well-formed inputs must decode to what they were built from.
//! The direct decoders (OTLP protobuf, OTLP/JSON, Zipkin v2 JSON) are also
//! held to the earlier paths they replaced, kept as oracles: the same spans,
//! counts and error text (`differential_*`).

#[path = "../../sdk/tests/fuzz_util/mod.rs"]
mod fuzz_util;
#[path = "fuzz_decoders/jaeger.rs"]
mod jaeger;
#[path = "jaeger_util/mod.rs"]
mod jaeger_util;

use std::sync::Arc;

use base64::Engine as _;
use ferrotrace_collector::config::LimitsConfig;
use ferrotrace_collector::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode};
use ferrotrace_collector::query::params::{
    format_rfc3339, infer_value, parse_attr_condition, parse_bool, parse_duration, parse_limit,
    parse_limit_clamped, parse_rfc3339, parse_time, parse_trace_id, percent_decode, Pairs,
};
use ferrotrace_collector::receiver::convert::{from_otlp, Decoded};
use ferrotrace_collector::receiver::zipkin_proto::pb as zpb;
use ferrotrace_collector::receiver::RecordFormat;
use ferrotrace_collector::receiver::{decode, zipkin, zipkin_proto, zipkin_v1};
use fuzz_util::{fuzz, mutations, variants};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value as V, AnyValue, ArrayValue, InstrumentationScope, KeyValue as PKeyValue,
    KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event as PEvent, Link as PLink};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan, Status};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use serde_json::{json, Value as J};

/// Attribute-key-like words: `min..max` of `a-z` and `.`.
fn word(min: usize, max: usize) -> BoxedStrategy<String> {
    let chars: Vec<char> = "abcdefghijklmnopqrstuvwxyz.".chars().collect();
    vec(prop::sample::select(chars), min..=max)
        .prop_map(String::from_iter)
        .boxed()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Spans compared by their OTLP protobuf encoding ([`to_otlp`]): every
/// field the model keeps, and NaN attributes equal to themselves.
fn canonical(spans: &[Span]) -> Vec<u8> {
    to_otlp(spans).encode_to_vec()
}

/// Strings: mostly plain, some arbitrary Unicode, some control and JSON
/// special characters. Built from character lists, not regexes: regex
/// strategies cost more than everything else here in a debug build.
fn text() -> BoxedStrategy<String> {
    let plain: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789._/- "
        .chars()
        .collect();
    let special: Vec<char> = "\0\u{1}\n\t\"\\\u{7f}\u{80}\u{a0}\u{2028}\u{feff}\u{10ffff}"
        .chars()
        .collect();
    prop_oneof![
        6 => vec(prop::sample::select(plain), 0..10),
        2 => vec(any::<char>(), 0..6),
        1 => vec(prop::sample::select(special), 0..3),
    ]
    .prop_map(String::from_iter)
    .boxed()
}

// ---------------------------------------------------------------- OTLP

fn double() -> BoxedStrategy<f64> {
    prop_oneof![
        6 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-0.0),
    ]
    .boxed()
}

fn any_value() -> BoxedStrategy<AnyValue> {
    let key = text();
    let leaf = prop_oneof![
        4 => text().prop_map(V::StringValue),
        1 => any::<bool>().prop_map(V::BoolValue),
        2 => any::<i64>().prop_map(V::IntValue),
        1 => double().prop_map(V::DoubleValue),
        1 => vec(any::<u8>(), 0..6).prop_map(V::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    let leaf = prop_oneof![12 => leaf, 1 => Just(AnyValue { value: None })];
    // The closure runs at every generation: it must only clone strategies.
    leaf.prop_recursive(2, 8, 3, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                value: Some(V::ArrayValue(ArrayValue { values })),
            }),
            vec((key.clone(), inner), 0..3).prop_map(|kvs| AnyValue {
                value: Some(V::KvlistValue(KeyValueList {
                    values: kvs.into_iter().map(|(k, v)| pkv(k, Some(v))).collect(),
                })),
            }),
        ]
    })
    .boxed()
}

fn pkv(key: String, value: Option<AnyValue>) -> PKeyValue {
    PKeyValue {
        key,
        value,
        ..Default::default()
    }
}

fn attrs(max: usize) -> BoxedStrategy<Vec<PKeyValue>> {
    vec(
        (
            prop_oneof![3 => word(1, 8), 1 => text()],
            prop_oneof![12 => any_value().prop_map(Some), 1 => Just(None)],
        )
            .prop_map(|(k, v)| pkv(k, v)),
        0..max,
    )
    .boxed()
}

/// Ids: mostly the right length, some all-zero, some of a wrong length
/// (unless `clean`, which keeps every id valid).
fn id(n: usize, clean: bool) -> BoxedStrategy<Vec<u8>> {
    let right = vec(any::<u8>(), n).prop_filter("non-zero", |v| v.iter().any(|b| *b != 0));
    if clean {
        return right.boxed();
    }
    prop_oneof![
        8 => right,
        1 => Just(vec![0u8; n]),
        1 => vec(any::<u8>(), 0..20),
    ]
    .boxed()
}

fn pspan(clean: bool) -> BoxedStrategy<PSpan> {
    let parent = prop_oneof![2 => Just(Vec::new()), 3 => id(8, clean)];
    let times = prop_oneof![
        4 => (0u64..4_000_000_000_000_000_000, 0u64..10_000_000_000)
            .prop_map(|(s, d)| (s, s + d)),
        1 => (any::<u64>(), any::<u64>()),
    ];
    let event = (any::<u64>(), text(), attrs(3), any::<u32>()).prop_map(|(t, name, a, d)| PEvent {
        time_unix_nano: t,
        name,
        attributes: a,
        dropped_attributes_count: d,
    });
    let link = (
        id(16, clean),
        id(8, clean),
        text(),
        attrs(2),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(t, s, ts, a, d, f)| PLink {
            trace_id: t,
            span_id: s,
            trace_state: ts,
            attributes: a,
            dropped_attributes_count: d,
            flags: f,
        });
    let status = prop_oneof![
        1 => Just(None),
        2 => (-1i32..4, text()).prop_map(|(code, message)| Some(Status { message, code })),
    ];
    (
        (
            id(16, clean),
            id(8, clean),
            parent,
            text(),
            any::<u32>(),
            text(),
        ),
        (-1i32..8, times, attrs(5), any::<u32>()),
        (
            vec(event, 0..3),
            any::<u32>(),
            vec(link, 0..2),
            any::<u32>(),
            status,
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, trace_state, flags, name),
                (kind, (start, end), attributes, dropped_attributes_count),
                (events, dropped_events_count, links, dropped_links_count, status),
            )| PSpan {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count,
                events,
                dropped_events_count,
                links,
                dropped_links_count,
                status,
            },
        )
        .boxed()
}

fn request(clean: bool) -> BoxedStrategy<ExportTraceServiceRequest> {
    let resource = prop_oneof![
        1 => Just(None),
        4 => (attrs(3), prop_oneof![Just(None), text().prop_map(Some)]).prop_map(|(mut a, svc)| {
            if let Some(s) = svc {
                a.insert(0, pkv("service.name".into(), Some(AnyValue { value: Some(V::StringValue(s)) })));
            }
            Some(Resource { attributes: a, dropped_attributes_count: 0, entity_refs: vec![] })
        }),
    ];
    let scope = prop_oneof![
        1 => Just(None),
        2 => (text(), text()).prop_map(|(name, version)| Some(InstrumentationScope {
            name,
            version,
            ..Default::default()
        })),
    ];
    // Small requests: a mutation then hits structure more often, and every
    // input is cheaper to check (what matters for 100,000 of them).
    let scope_spans = (scope, vec(pspan(clean), 0..3)).prop_map(|(scope, spans)| ScopeSpans {
        scope,
        spans,
        schema_url: String::new(),
    });
    let count = prop_oneof![3 => Just(1usize), 1 => Just(2usize)];
    let resource_spans = (resource, count.clone())
        .prop_flat_map(move |(resource, n)| (Just(resource), vec(scope_spans.clone(), n)))
        .prop_map(|(resource, scope_spans)| ResourceSpans {
            resource,
            scope_spans,
            schema_url: String::new(),
        });
    count
        .prop_flat_map(move |n| vec(resource_spans.clone(), n))
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
        .boxed()
}

fn limits() -> LimitsConfig {
    LimitsConfig::default()
}

/// The model back to OTLP, one resource and scope per span: the inverse of
/// the decoder on everything the model keeps.
fn to_otlp(spans: &[Span]) -> ExportTraceServiceRequest {
    fn any(v: &AttrValue) -> AnyValue {
        let value = match v {
            AttrValue::Empty => return AnyValue { value: None },
            AttrValue::Str(s) => V::StringValue(s.to_string()),
            AttrValue::Bool(b) => V::BoolValue(*b),
            AttrValue::Int(i) => V::IntValue(*i),
            AttrValue::Double(d) => V::DoubleValue(*d),
            AttrValue::Bytes(b) => V::BytesValue(b.clone()),
            AttrValue::Array(a) => V::ArrayValue(ArrayValue {
                values: a.iter().map(any).collect(),
            }),
            AttrValue::KvList(kvs) => V::KvlistValue(KeyValueList { values: kv(kvs) }),
        };
        AnyValue { value: Some(value) }
    }
    fn kv(kvs: &[KeyValue]) -> Vec<PKeyValue> {
        kvs.iter()
            .map(|k| pkv(k.key.to_string(), Some(any(&k.value))))
            .collect()
    }
    let resource_spans = spans
        .iter()
        .map(|s| ResourceSpans {
            resource: Some(Resource {
                attributes: kv(&s.resource_attributes),
                dropped_attributes_count: 0,
                entity_refs: vec![],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: s.scope_name.to_string(),
                    version: s.scope_version.to_string(),
                    ..Default::default()
                }),
                spans: vec![PSpan {
                    trace_id: s.trace_id.to_vec(),
                    span_id: s.span_id.to_vec(),
                    trace_state: s.trace_state.clone(),
                    parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
                    flags: s.flags,
                    name: s.name.to_string(),
                    kind: s.kind as i32,
                    start_time_unix_nano: s.start_ns,
                    end_time_unix_nano: s.end_ns,
                    attributes: kv(&s.attributes),
                    dropped_attributes_count: s.dropped_attributes_count,
                    events: s
                        .events
                        .iter()
                        .map(|e| PEvent {
                            time_unix_nano: e.time_ns,
                            name: e.name.to_string(),
                            attributes: kv(&e.attributes),
                            dropped_attributes_count: e.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count: s.dropped_events_count,
                    links: s
                        .links
                        .iter()
                        .map(|l| PLink {
                            trace_id: l.trace_id.to_vec(),
                            span_id: l.span_id.to_vec(),
                            trace_state: l.trace_state.clone(),
                            attributes: kv(&l.attributes),
                            dropped_attributes_count: l.dropped_attributes_count,
                            flags: l.flags,
                        })
                        .collect(),
                    dropped_links_count: s.dropped_links_count,
                    status: Some(Status {
                        message: s.status_message.clone(),
                        code: s.status_code as i32,
                    }),
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// Asserts that accepted spans, encoded as OTLP protobuf and decoded again,
/// are the same spans; returns their [`canonical`] form.
fn assert_round_trip(d: &Decoded, what: &str) -> Result<Vec<u8>, TestCaseError> {
    let body = canonical(&d.spans);
    let again = decode(RecordFormat::OtlpProto, &body, &limits())
        .map_err(|e| TestCaseError::fail(format!("{what}: re-encoded spans refused: {e}")))?;
    prop_assert_eq!(again.rejected, 0, "{}: {}", what, again.error_message());
    if canonical(&again.spans) != body {
        prop_assert_eq!(
            format!("{:?}", again.spans),
            format!("{:?}", d.spans),
            "{}",
            what
        );
    }
    Ok(body)
}

/// Protobuf wire tokens: varint and length prefixes, field tags.
const PROTO_DICT: &[&[u8]] = &[
    b"\x0a",
    b"\x12",
    b"\x0a\x00",
    b"\xff\xff\xff\xff\x0f",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\x0a\x10",
    b"\x12\x08",
    b"\x39",
    b"\x00",
];

#[test]
fn fuzz_otlp_protobuf() {
    let strategy = (request(false), mutations());
    fuzz("OTLP protobuf", strategy, |(req, ms)| {
        let body = req.encode_to_vec();
        let inputs = variants(&body, &ms, PROTO_DICT);
        for (i, raw) in inputs.iter().enumerate() {
            let got = decode(RecordFormat::OtlpProto, raw, &limits());
            if i == 0 {
                // Well-formed: every span is either kept or rejected with a reason.
                let d = got
                    .as_ref()
                    .map_err(|e| TestCaseError::fail(format!("valid request refused: {e}")))?;
                let total: usize = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                prop_assert_eq!(d.spans.len() + d.rejected as usize, total);
            }
            if let Ok(d) = got {
                assert_round_trip(&d, "protobuf")?;
            }
        }
        Ok(inputs.len() as u64)
    });
}

// ------------------------------------- OTLP protobuf: direct decoder vs structs

/// The old decoding path, kept here as the oracle for the direct decoder
/// (`receiver::otlp_proto`): prost into the `opentelemetry-proto` structs,
/// then `from_otlp`, with the receiver's error text.
fn decode_via_structs(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, String> {
    let req = ExportTraceServiceRequest::decode(body)
        .map_err(|e| format!("invalid OTLP protobuf ExportTraceServiceRequest: {e}"))?;
    from_otlp(req, limits).map_err(|e| e.to_string())
}

/// Everything a decode yields except `bytes` (the queue charge follows
/// allocation capacities, which the two paths size differently; the
/// decode_memory test holds each to what it really holds). `Debug` of the
/// spans is exact, NaN and -0.0 included.
fn outcome(d: &Result<Decoded, String>) -> String {
    match d {
        Ok(d) => format!(
            "ok spans={:?} rejected={} errors={:?} dropped={} truncated={} cut={}",
            d.spans,
            d.rejected,
            d.errors,
            d.attributes_dropped,
            d.values_truncated,
            d.depth_truncated
        ),
        Err(e) => format!("err {e}"),
    }
}

/// Tight limits half of the time, so that truncation, dropping, the span
/// size limit and the span count limit are compared too.
fn differential_limits(tight: bool) -> LimitsConfig {
    if tight {
        LimitsConfig {
            max_spans_per_request: 3,
            max_attributes_per_span: 2,
            max_attribute_value_bytes: 3,
            max_span_bytes: 300,
            ..LimitsConfig::default()
        }
    } else {
        LimitsConfig::default()
    }
}

fn assert_same_decoding(body: &[u8], limits: &LimitsConfig) -> Result<(), TestCaseError> {
    let new = decode(RecordFormat::OtlpProto, body, limits).map_err(|e| e.to_string());
    let old = decode_via_structs(body, limits);
    let (a, b) = (outcome(&new), outcome(&old));
    prop_assert!(a == b, "body {}\ndirect: {a}\nstructs: {b}", hex(body));
    Ok(())
}

/// A protobuf message of arbitrary shape: field numbers 1-17 (every field
/// number OTLP's trace messages use, plus an unknown one) with any wire
/// type, nested messages, groups, repeated and conflicting fields, invalid
/// UTF-8. Where it meets OTLP's schema it exercises merging, oneof
/// replacement, wire-type checks and skipping.
#[derive(Clone, Debug)]
enum RawField {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Message(Vec<(u32, RawField)>),
    Group(Vec<(u32, RawField)>),
}

fn raw_message() -> BoxedStrategy<Vec<(u32, RawField)>> {
    let leaf = prop_oneof![
        2 => prop_oneof![Just(0u64), Just(1), Just(2), Just(5), Just(u64::MAX), any::<u64>()]
            .prop_map(RawField::Varint),
        1 => any::<u32>().prop_map(RawField::Fixed32),
        2 => prop_oneof![Just(0u64), Just(1), Just(1_700_000_000_000_000_000), any::<u64>()]
            .prop_map(RawField::Fixed64),
        3 => prop_oneof![
            vec(any::<u8>(), 0..4),
            vec(any::<u8>(), 8),
            vec(any::<u8>(), 16),
            Just(b"service.name".to_vec()),
            Just(vec![0xff, 0xfe]),
        ]
        .prop_map(RawField::Bytes),
    ];
    let field = leaf.prop_recursive(5, 48, 4, |inner| {
        let fields = vec((1u32..=17, inner), 0..4);
        prop_oneof![
            6 => fields.clone().prop_map(RawField::Message),
            1 => fields.prop_map(RawField::Group),
        ]
    });
    vec((1u32..=17, field), 0..4).boxed()
}

fn encode_raw(fields: &[(u32, RawField)], out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    for (tag, f) in fields {
        match f {
            RawField::Varint(v) => {
                encode_key(*tag, WireType::Varint, out);
                encode_varint(*v, out);
            }
            RawField::Fixed32(v) => {
                encode_key(*tag, WireType::ThirtyTwoBit, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            RawField::Fixed64(v) => {
                encode_key(*tag, WireType::SixtyFourBit, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            RawField::Bytes(b) => {
                encode_key(*tag, WireType::LengthDelimited, out);
                encode_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            RawField::Message(m) => {
                let mut inner = Vec::new();
                encode_raw(m, &mut inner);
                encode_key(*tag, WireType::LengthDelimited, out);
                encode_varint(inner.len() as u64, out);
                out.extend_from_slice(&inner);
            }
            RawField::Group(m) => {
                encode_key(*tag, WireType::StartGroup, out);
                encode_raw(m, out);
                encode_key(*tag, WireType::EndGroup, out);
            }
        }
    }
}

/// The direct protobuf decoder and the struct path agree (same spans, same
/// counts, same error text) on generated OTLP requests, their byte-level
/// mutations, and messages of arbitrary shape and their mutations.
#[test]
fn differential_otlp_protobuf() {
    let strategy = (
        prop_oneof![request(false), request(true)],
        raw_message(),
        mutations(),
        any::<bool>(),
    );
    fuzz(
        "OTLP protobuf direct vs structs",
        strategy,
        |(req, raw, ms, tight)| {
            let limits = differential_limits(tight);
            let body = req.encode_to_vec();
            let mut n = 0;
            for input in variants(&body, &ms, PROTO_DICT) {
                assert_same_decoding(&input, &limits)?;
                n += 1;
            }
            // The arbitrary message as a whole request and as a ResourceSpans,
            // a ScopeSpans and a Span inside a valid frame.
            let mut shaped = Vec::new();
            encode_raw(&raw, &mut shaped);
            let wrap =
                |tag: u32, inner: Vec<(u32, RawField)>| vec![(tag, RawField::Message(inner))];
            let frames = [
                raw.clone(),
                wrap(1, raw.clone()),
                wrap(1, wrap(2, raw.clone())),
                wrap(1, wrap(2, wrap(2, raw.clone()))),
            ];
            for (i, frame) in frames.iter().enumerate() {
                let mut b = Vec::new();
                encode_raw(frame, &mut b);
                assert_same_decoding(&b, &limits)?;
                if i == 3 {
                    for m in ms.iter().take(4) {
                        assert_same_decoding(&fuzz_util::mutate(&b, *m, PROTO_DICT), &limits)?;
                    }
                }
            }
            Ok(n + 8)
        },
    );
}

/// Hostile bodies, hand-made: nesting at and past prost's recursion limit
/// (in attribute values, groups and unknown fields), truncated and
/// overlong lengths, conflicting repeated fields, a resource after its spans.
#[test]
fn differential_otlp_protobuf_hostile() {
    use prost::encoding::{encode_key, encode_varint, WireType};
    fn msg(tag: u32, inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(tag, WireType::LengthDelimited, &mut out);
        encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    }
    fn span_with_attr(value: Vec<u8>) -> Vec<u8> {
        let mut s = msg(1, &[1; 16]);
        s.extend(msg(2, &[2; 8]));
        s.extend([0x39]);
        s.extend(1u64.to_le_bytes());
        s.extend([0x41]);
        s.extend(2u64.to_le_bytes());
        let mut kv = msg(1, b"k");
        kv.extend(msg(2, &value));
        s.extend(msg(9, &kv));
        msg(1, &msg(2, &msg(2, &s)))
    }
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    // AnyValue nested n deep through arrays, kvlists, and a mix.
    for n in [14, 15, 16, 17, 30, 31, 32, 33, 45, 46, 47, 48, 49, 60] {
        for style in 0..3 {
            let mut v = msg(1, b"leaf");
            for i in 0..n {
                let kvlist = style == 1 || (style == 2 && i % 2 == 1);
                v = if kvlist {
                    let mut kv = msg(1, b"k");
                    kv.extend(msg(2, &v));
                    msg(6, &msg(1, &kv))
                } else {
                    msg(5, &msg(1, &v))
                };
            }
            bodies.push(span_with_attr(v));
        }
    }
    // Groups and unknown messages nested around the limit, at the top and
    // inside a span.
    for n in [90, 95, 96, 97, 98, 99, 100, 101] {
        let mut g = Vec::new();
        for _ in 0..n {
            encode_key(20, WireType::StartGroup, &mut g);
        }
        for _ in 0..n {
            encode_key(20, WireType::EndGroup, &mut g);
        }
        bodies.push(g.clone());
        let mut s = msg(1, &[1; 16]);
        s.extend(g);
        bodies.push(msg(1, &msg(2, &msg(2, &s))));
    }
    // An unmatched or mismatched end group; a stray end group.
    bodies.push(vec![0xa3, 0x01, 0xac, 0x01]);
    bodies.push(vec![0xa3, 0x01]);
    bodies.push(vec![0xa4, 0x01]);
    // Lengths past the end, inside and across message boundaries.
    bodies.push(vec![0x0a, 0x05, 0x12, 0x10, 0x0a]);
    bodies.push(vec![0x0a, 0x02, 0x12, 0x05, 0x0a, 0x00, 0x00, 0x00, 0x00]);
    bodies.push(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    bodies.push(vec![
        0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ]);
    // Invalid UTF-8 in fields the model does not keep.
    bodies.push(msg(1, &msg(3, &[0xff])));
    bodies.push(msg(1, &msg(2, &msg(3, &[0xc0]))));
    bodies.push(msg(1, &msg(1, &msg(3, &msg(3, &[0xff])))));
    // A resource after the spans, and twice (merged); a scope twice.
    let good = span_with_attr(msg(1, b"v"));
    let resource = |svc: &[u8]| {
        let mut kv = msg(1, b"service.name");
        kv.extend(msg(2, &msg(1, svc)));
        msg(1, &msg(1, &kv))
    };
    let inner = &good[2..]; // the ResourceSpans content (length fits in one byte)
    let mut rs = inner.to_vec();
    rs.extend(resource(b"late"));
    bodies.push(msg(1, &rs));
    let mut rs = resource(b"");
    rs.extend(inner);
    rs.extend(resource(b"second"));
    bodies.push(msg(1, &rs));
    // Conflicting oneof members and merged arrays in one value.
    let mut v = msg(5, &msg(1, &msg(1, b"a")));
    v.extend(msg(5, &msg(1, &msg(1, b"b"))));
    bodies.push(span_with_attr(v.clone()));
    v.extend(msg(1, b"replaced"));
    bodies.push(span_with_attr(v.clone()));
    v.extend([0x40, 0x07]);
    bodies.push(span_with_attr(v));
    for body in &bodies {
        for tight in [false, true] {
            if let Err(e) = assert_same_decoding(body, &differential_limits(tight)) {
                panic!("{e}");
            }
            // The router's wire scan reads hostile bodies as the decoder does.
            if let Err(e) = assert_scan_matches(body, &differential_limits(tight)) {
                panic!("{e}");
            }
        }
    }
}

// ------------------------------------- OTLP protobuf: the router's wire scan

/// The router's scan (`otlp_proto::route_scan`) against the full decoder,
/// on one body: the same error for a refused body; the same rejections
/// and the same valid spans (by id, in order) for an accepted one; and
/// the body re-sliced for three backends (by trace id) decodes, part by
/// part, to exactly the spans of the whole that belong to that backend,
/// so every span reaches exactly one backend as the decoder would read it.
fn assert_scan_matches(body: &[u8], limits: &LimitsConfig) -> Result<(), TestCaseError> {
    use ferrotrace_collector::receiver::otlp_proto::route_scan::{reslice, scan, WireRequest};
    let full = decode(RecordFormat::OtlpProto, body, limits);
    let scanned = scan(bytes::Bytes::copy_from_slice(body), limits);
    let (full, scanned) = match (full, scanned) {
        (Err(a), Err(b)) => {
            prop_assert_eq!(a.to_string(), b.to_string(), "body {}", hex(body));
            return Ok(());
        }
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            return Err(TestCaseError::fail(format!(
                "body {}\ndecoder: {:?}\nscan: {:?}",
                hex(body),
                a.map(|d| d.spans.len()),
                b.map(|d| d.len())
            )))
        }
    };
    prop_assert_eq!(scanned.rejected, full.rejected, "body {}", hex(body));
    prop_assert_eq!(&scanned.errors, &full.errors, "body {}", hex(body));
    prop_assert!(scanned.spans.is_empty(), "the scan builds no span");
    let wire = scanned.wire.expect("a scan keeps its request");
    let ids: Vec<_> = wire.spans.iter().map(|s| (s.trace_id, s.span_id)).collect();
    let want: Vec<_> = full.spans.iter().map(|s| (s.trace_id, s.span_id)).collect();
    prop_assert_eq!(ids, want, "body {}", hex(body));
    let backend = |t: &[u8; 16]| t[15] % 3;
    for b in 0..3 {
        let picked: Vec<(&WireRequest, usize)> = (0..wire.spans.len())
            .filter(|&i| backend(&wire.spans[i].trace_id) == b)
            .map(|i| (&*wire, i))
            .collect();
        let mut out = Vec::new();
        reslice(&picked, &mut out);
        let part = decode(RecordFormat::OtlpProto, &out, limits)
            .map_err(|e| TestCaseError::fail(format!("part {b} of {}: {e}", hex(body))))?;
        prop_assert_eq!(part.rejected, 0);
        let mine: Vec<&Span> = full
            .spans
            .iter()
            .filter(|s| backend(&s.trace_id) == b)
            .collect();
        let got: Vec<&Span> = part.spans.iter().collect();
        // Debug is exact, NaN and -0.0 included.
        prop_assert_eq!(
            format!("{got:?}"),
            format!("{mine:?}"),
            "body {}",
            hex(body)
        );
    }
    Ok(())
}

/// The router's wire scan and re-slicing against the full decoder on
/// generated requests, their byte-level mutations and messages of
/// arbitrary shape in valid frames, under default and tight limits (the
/// tight span size limit sends spans through the scan's full-decoder
/// judgement).
#[test]
fn differential_route_scan() {
    let strategy = (
        prop_oneof![request(false), request(true)],
        raw_message(),
        mutations(),
        any::<bool>(),
    );
    fuzz(
        "OTLP protobuf route scan vs decoder",
        strategy,
        |(req, raw, ms, tight)| {
            let limits = differential_limits(tight);
            let body = req.encode_to_vec();
            let mut n = 0;
            for input in variants(&body, &ms, PROTO_DICT) {
                assert_scan_matches(&input, &limits)?;
                n += 1;
            }
            let wrap =
                |tag: u32, inner: Vec<(u32, RawField)>| vec![(tag, RawField::Message(inner))];
            for frame in [
                raw.clone(),
                wrap(1, raw.clone()),
                wrap(1, wrap(2, raw.clone())),
                wrap(1, wrap(2, wrap(2, raw.clone()))),
            ] {
                let mut b = Vec::new();
                encode_raw(&frame, &mut b);
                assert_scan_matches(&b, &limits)?;
                n += 1;
            }
            Ok(n)
        },
    );
}

// ---------------------------------------------------------------- OTLP/JSON

/// How a generated OTLP/JSON body spells things: the spec allows all of these.
#[derive(Clone, Copy, Debug)]
struct JsonStyle {
    snake_case: bool,
    upper_hex: bool,
    enum_names: bool,
    numbers_as_numbers: bool,
}

fn json_style() -> impl Strategy<Value = JsonStyle> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c, d)| {
        JsonStyle {
            snake_case: a,
            upper_hex: b,
            enum_names: c,
            numbers_as_numbers: d,
        }
    })
}

impl JsonStyle {
    /// The normal form: what this encoder writes for round trips.
    const CANONICAL: JsonStyle = JsonStyle {
        snake_case: false,
        upper_hex: false,
        enum_names: false,
        numbers_as_numbers: false,
    };

    fn key(&self, camel: &str) -> String {
        if !self.snake_case {
            return camel.to_string();
        }
        let mut out = String::new();
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    fn id(&self, b: &[u8]) -> J {
        let h = hex(b);
        J::String(if self.upper_hex {
            h.to_ascii_uppercase()
        } else {
            h
        })
    }

    fn u64(&self, v: u64) -> J {
        if self.numbers_as_numbers {
            json!(v)
        } else {
            J::String(v.to_string())
        }
    }

    fn any(&self, v: &AnyValue) -> J {
        let (k, val) = match &v.value {
            None => return json!({}),
            Some(V::StringValue(s)) => ("stringValue", J::String(s.clone())),
            Some(V::BoolValue(b)) => ("boolValue", J::Bool(*b)),
            Some(V::IntValue(i)) => (
                "intValue",
                if self.numbers_as_numbers {
                    json!(i)
                } else {
                    J::String(i.to_string())
                },
            ),
            Some(V::DoubleValue(d)) => (
                "doubleValue",
                if d.is_nan() {
                    json!("NaN")
                } else if d.is_infinite() {
                    json!(if *d > 0.0 { "Infinity" } else { "-Infinity" })
                } else {
                    json!(d)
                },
            ),
            Some(V::BytesValue(b)) => (
                "bytesValue",
                J::String(base64::engine::general_purpose::STANDARD.encode(b)),
            ),
            Some(V::ArrayValue(a)) => (
                "arrayValue",
                json!({"values": a.values.iter().map(|x| self.any(x)).collect::<Vec<_>>()}),
            ),
            Some(V::KvlistValue(kv)) => ("kvlistValue", json!({"values": self.kvs(&kv.values)})),
            // A profiles-dictionary reference: no OTLP/JSON trace form.
            Some(_) => return json!({}),
        };
        let mut m = serde_json::Map::new();
        m.insert(self.key(k), val);
        J::Object(m)
    }

    fn kvs(&self, kvs: &[PKeyValue]) -> J {
        J::Array(
            kvs.iter()
                .map(|kv| {
                    let mut m = serde_json::Map::new();
                    m.insert("key".into(), J::String(kv.key.clone()));
                    if let Some(v) = &kv.value {
                        m.insert("value".into(), self.any(v));
                    }
                    J::Object(m)
                })
                .collect(),
        )
    }

    fn obj(&self, pairs: Vec<(&str, J)>) -> J {
        J::Object(pairs.into_iter().map(|(k, v)| (self.key(k), v)).collect())
    }

    fn kind(&self, k: i32) -> J {
        const NAMES: [&str; 6] = [
            "SPAN_KIND_UNSPECIFIED",
            "SPAN_KIND_INTERNAL",
            "SPAN_KIND_SERVER",
            "SPAN_KIND_CLIENT",
            "SPAN_KIND_PRODUCER",
            "SPAN_KIND_CONSUMER",
        ];
        match usize::try_from(k).ok().and_then(|i| NAMES.get(i)) {
            Some(n) if self.enum_names => json!(n),
            _ => json!(k),
        }
    }

    fn status_code(&self, c: i32) -> J {
        const NAMES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
        match usize::try_from(c).ok().and_then(|i| NAMES.get(i)) {
            Some(n) if self.enum_names => json!(n),
            _ => json!(c),
        }
    }

    fn span(&self, s: &PSpan) -> J {
        let events: Vec<J> = s
            .events
            .iter()
            .map(|e| {
                self.obj(vec![
                    ("timeUnixNano", self.u64(e.time_unix_nano)),
                    ("name", json!(e.name)),
                    ("attributes", self.kvs(&e.attributes)),
                    ("droppedAttributesCount", json!(e.dropped_attributes_count)),
                ])
            })
            .collect();
        let links: Vec<J> = s
            .links
            .iter()
            .map(|l| {
                self.obj(vec![
                    ("traceId", self.id(&l.trace_id)),
                    ("spanId", self.id(&l.span_id)),
                    ("traceState", json!(l.trace_state)),
                    ("attributes", self.kvs(&l.attributes)),
                    ("droppedAttributesCount", json!(l.dropped_attributes_count)),
                    ("flags", json!(l.flags)),
                ])
            })
            .collect();
        let mut fields = vec![
            ("traceId", self.id(&s.trace_id)),
            ("spanId", self.id(&s.span_id)),
            ("parentSpanId", self.id(&s.parent_span_id)),
            ("traceState", json!(s.trace_state)),
            ("flags", json!(s.flags)),
            ("name", json!(s.name)),
            ("kind", self.kind(s.kind)),
            ("startTimeUnixNano", self.u64(s.start_time_unix_nano)),
            ("endTimeUnixNano", self.u64(s.end_time_unix_nano)),
            ("attributes", self.kvs(&s.attributes)),
            ("droppedAttributesCount", json!(s.dropped_attributes_count)),
            ("events", J::Array(events)),
            ("droppedEventsCount", json!(s.dropped_events_count)),
            ("links", J::Array(links)),
            ("droppedLinksCount", json!(s.dropped_links_count)),
        ];
        if let Some(st) = &s.status {
            fields.push((
                "status",
                self.obj(vec![
                    ("message", json!(st.message)),
                    ("code", self.status_code(st.code)),
                ]),
            ));
        }
        self.obj(fields)
    }

    fn request(&self, r: &ExportTraceServiceRequest) -> Vec<u8> {
        let rs: Vec<J> = r
            .resource_spans
            .iter()
            .map(|rs| {
                let scope_spans: Vec<J> = rs
                    .scope_spans
                    .iter()
                    .map(|ss| {
                        let mut f = vec![(
                            "spans",
                            J::Array(ss.spans.iter().map(|s| self.span(s)).collect()),
                        )];
                        if let Some(sc) = &ss.scope {
                            f.push((
                                "scope",
                                self.obj(vec![
                                    ("name", json!(sc.name)),
                                    ("version", json!(sc.version)),
                                ]),
                            ));
                        }
                        self.obj(f)
                    })
                    .collect();
                let mut f = vec![("scopeSpans", J::Array(scope_spans))];
                if let Some(res) = &rs.resource {
                    f.push(("resource", json!({"attributes": self.kvs(&res.attributes)})));
                }
                self.obj(f)
            })
            .collect();
        serde_json::to_vec(&self.obj(vec![("resourceSpans", J::Array(rs))])).expect("JSON")
    }
}

const JSON_DICT: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e400",
    b"-0.0",
    b"18446744073709551616",
    b"\"18446744073709551615\"",
    b"\"-9223372036854775809\"",
    b"\"NaN\"",
    b"\\u0000",
    b"\\ud800",
    b"\"traceId\":",
    b"\"spanId\":\"0102030405060708\"",
    b"\"kind\":\"SPAN_KIND_CLIENT\"",
    b"{\"arrayValue\":{\"values\":[",
    b"{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":",
];

#[test]
fn fuzz_otlp_json() {
    let strategy = (request(true), json_style(), mutations());
    fuzz("OTLP/JSON", strategy, |(req, style, ms)| {
        let body = style.request(&req);
        let inputs = variants(&body, &ms, JSON_DICT);
        for (i, raw) in inputs.iter().enumerate() {
            // The receiver's path, in its two steps: JSON to the OTLP
            // request, then the request to validated spans.
            let parsed = ferrotrace_collector::receiver::otlp_json::decode_to_request(raw);
            if i == 0 {
                // Well-formed, in any of the spellings the spec allows: the
                // same spans as the same request in protobuf.
                let p = parsed.as_ref().map_err(|e| {
                    TestCaseError::fail(format!(
                        "valid OTLP/JSON refused: {e}\n{}",
                        String::from_utf8_lossy(raw)
                    ))
                })?;
                let d = from_otlp(p.clone(), &limits()).expect("converts");
                let proto = decode(RecordFormat::OtlpProto, &req.encode_to_vec(), &limits())
                    .expect("the same request in protobuf");
                if canonical(&d.spans) != canonical(&proto.spans) {
                    prop_assert_eq!(format!("{:?}", d.spans), format!("{:?}", proto.spans));
                }
                prop_assert_eq!(d.rejected, proto.rejected);
            }
            // Accepted: the request, written out again in the canonical
            // spelling, decodes to the same spans.
            let Ok(parsed) = parsed else { continue };
            let again = JsonStyle::CANONICAL.request(&parsed);
            let a = from_otlp(parsed, &limits());
            let b = decode(RecordFormat::OtlpJson, &again, &limits());
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a.rejected, b.rejected);
                    let ca = assert_round_trip(&a, "OTLP/JSON")?;
                    if canonical(&b.spans) != ca {
                        prop_assert_eq!(format!("{:?}", a.spans), format!("{:?}", b.spans));
                    }
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(
                    false,
                    "{a:?} vs {b:?} for {}",
                    String::from_utf8_lossy(&again)
                ),
            }
        }
        Ok(inputs.len() as u64)
    });
}

// ------------------------------------- OTLP/JSON: direct decoder vs structs

/// The earlier OTLP/JSON path, the oracle of the direct decoder
/// (`receiver::otlp_json::direct`): serde into the mirror structs, the
/// `opentelemetry-proto` request, then `from_otlp`.
fn json_via_structs(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, String> {
    let req = ferrotrace_collector::receiver::otlp_json::decode_to_request(body)?;
    from_otlp(req, limits).map_err(|e| e.to_string())
}

fn assert_same_json_decoding(body: &[u8], limits: &LimitsConfig) -> Result<(), TestCaseError> {
    let new = decode(RecordFormat::OtlpJson, body, limits).map_err(|e| e.to_string());
    let old = json_via_structs(body, limits);
    let (a, b) = (outcome(&new), outcome(&old));
    prop_assert!(
        a == b,
        "body {}\ndirect: {a}\nstructs: {b}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

/// The direct OTLP/JSON decoder and the struct path agree (same spans, same
/// counts, same error text) on generated requests in every spelling the
/// specification allows, clean and not (bad ids, times, links), and on
/// byte-level mutations of each, with default and tight limits.
#[test]
fn differential_otlp_json() {
    let strategy = (
        prop_oneof![request(false), request(true)],
        json_style(),
        mutations(),
        any::<bool>(),
    );
    fuzz(
        "OTLP/JSON direct vs structs",
        strategy,
        |(req, style, ms, tight)| {
            let limits = differential_limits(tight);
            let body = style.request(&req);
            let inputs = variants(&body, &ms, JSON_DICT);
            for input in &inputs {
                assert_same_json_decoding(input, &limits)?;
            }
            Ok(inputs.len() as u64)
        },
    );
}

/// A span object with the given extra fields, in a valid request frame.
fn json_span(fields: &str) -> Vec<u8> {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"scope":{{"name":"lib","version":"1"}},"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"{fields}}}]}}]}}]}}"#
    )
    .into_bytes()
}

/// Hostile OTLP/JSON, hand-made: nesting at, around and far past the depth
/// cut (in arrays, kvlists, skipped branches and several fields at once),
/// repeated and aliased fields, structs written as arrays, wrong types and
/// `null` everywhere, extreme numbers, escapes, invalid UTF-8, trailing
/// bytes, enum names and numbers out of range, bad base64 and ids.
#[test]
fn differential_otlp_json_hostile() {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let deep = |depth: usize, leaf: &str, arr: bool, kv: bool| {
        let (mut open, mut close) = (String::new(), String::new());
        for i in 0..depth {
            if (i % 2 == 0 && arr) || !kv {
                open.push_str(r#"{"arrayValue":{"values":["#);
                close.insert_str(0, "]}}");
            } else {
                open.push_str(r#"{"kvlistValue":{"values":[{"key":"k","value":"#);
                close.insert_str(0, "}]}}");
            }
        }
        format!("{open}{leaf}{close}")
    };
    for depth in [0, 1, 14, 15, 16, 17, 18, 19, 33, 64, 2000] {
        for leaf in [
            r#"{"stringValue":"leaf"}"#,
            r#"{"intValue":"x"}"#,
            r#"{"bytesValue":"!!"}"#,
            "null",
            "{}",
            "5",
            r#"{"arrayValue":{"values":[]}}"#,
        ] {
            for (arr, kv) in [(true, false), (false, true), (true, true)] {
                let v = deep(depth, leaf, arr, kv);
                bodies.push(json_span(&format!(
                    r#","attributes":[{{"key":"deep","value":{v}}},{{"key":"two","value":{{"stringValue":"s","arrayValue":{{"values":[{v}]}}}}}}]"#
                )));
                bodies.push(json_span(&format!(
                    r#","events":[{{"timeUnixNano":"1544712660500000000","attributes":[{{"key":"e","value":{v}}}]}}],"links":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b170","attributes":[{{"key":"l","value":{v}}}]}},{{"traceId":"","spanId":""}}]"#
                )));
            }
            // In the resource, in the scope (checked, not kept), in a span with bad ids.
            let v = deep(depth, leaf, true, true);
            bodies.push(format!(
                r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"r","value":{v}}}]}},"scopeSpans":[{{"scope":{{"attributes":[{{"key":"s","value":{v}}}]}},"spans":[{{"traceId":"00000000000000000000000000000000","spanId":"eee19b7ec3c1b174","attributes":[{{"key":"a","value":{v}}}]}}]}}]}}]}}"#
            ).into_bytes());
        }
    }
    for fields in [
        r#","name":"a","name":"b""#,
        r#","traceId":"5b8efff798038103d269b633813fc60c""#,
        r#","trace_id":"5b8efff798038103d269b633813fc60c""#,
        r#","start_time_unix_nano":1"#,
        r#","attributes":[{"key":"k","key":"j"}]"#,
        r#","attributes":[{"key":"k","value":{"stringValue":"a","string_value":"b"}}]"#,
        r#","attributes":[{"key":"k","value":{"intValue":1,"doubleValue":2,"boolValue":false,"bytesValue":"AQID"}}]"#,
        r#","attributes":[{"key":"k","value":{"doubleValue":"NaN"}},{"key":"m","value":{"doubleValue":"-Infinity"}},{"key":"z","value":{"doubleValue":-0.0}}]"#,
        r#","attributes":[{"key":"k","value":{"doubleValue":"1e999"}},{"key":"m","value":{"doubleValue":" 2.5 "}}]"#,
        r#","attributes":[{"key":"k","value":{"intValue":1.0}},{"key":"m","value":{"intValue":"1e3"}}]"#,
        r#","attributes":[{"key":"k","value":{"intValue":1.5}}]"#,
        r#","attributes":[{"key":"k","value":{"intValue":9223372036854775807}},{"key":"m","value":{"intValue":-9223372036854775808}}]"#,
        r#","attributes":[{"key":"k","value":{"intValue":9223372036854775808}}]"#,
        r#","attributes":[{"key":"k","value":{"bytesValue":"-_8="}},{"key":"m","value":{"bytesValue":"+/8"}},{"key":"n","value":{"bytesValue":null}}]"#,
        r#","attributes":[{"key":"k","value":{"bytesValue":"A"}}]"#,
        r#","attributes":[{"key":"\u00e9\ud83d\ude00 \"q\"","value":{"stringValue":"a\nb\u0000c-a-string-longer-than-24-bytes"}}]"#,
        r#","attributes":[{"key":"k","value":{"stringValue":"\ud800"}}]"#,
        r#","attributes":[{"key":null,"value":{"arrayValue":null}},{"key":"n","value":{"kvlistValue":{"values":null}}},{"key":"m","value":{"arrayValue":{}}}]"#,
        r#","attributes":[["k",{"stringValue":"v"}]]"#,
        r#","attributes":[{"key":"k","value":[]}]"#,
        r#","attributes":[{"key":"k","value":[null,false,5,null,null,null,null]}]"#,
        r#","attributes":[{"key":"k","value":{"arrayValue":[[{"stringValue":"v"}]]}}]"#,
        r#","attributes":[{"key":"k","value":{"arrayValue":{"values":[{"stringValue":"v"}],"values":[]}}}]"#,
        r#","attributes":{}"#,
        r#","attributes":null,"events":null,"links":null,"status":null,"name":null,"traceState":null,"kind":null,"flags":null"#,
        r#","kind":"SPAN_KIND_CONSUMER","status":{"code":"STATUS_CODE_OK","message":"fine"}"#,
        r#","kind":"SPAN_KIND_NOPE""#,
        r#","kind":"7""#,
        r#","kind":-3,"status":{"code":99}"#,
        r#","kind":2147483648"#,
        r#","kind":1.0"#,
        r#","kind":{}"#,
        r#","kind":[]"#,
        r#","kind":true"#,
        r#","status":{"code":"2"}"#,
        r#","status":{"code":{}}"#,
        r#","status":[]"#,
        r#","status":["m",2]"#,
        r#","flags":-1"#,
        r#","flags":"257""#,
        r#","flags":4294967295,"droppedAttributesCount":"7","droppedEventsCount":3,"droppedLinksCount":"1""#,
        r#","startTimeUnixNano":"  5  ","endTimeUnixNano":"4""#,
        r#","startTimeUnixNano":1.5e3"#,
        r#","startTimeUnixNano":1e19"#,
        r#","startTimeUnixNano":1.9e19"#,
        r#","endTimeUnixNano":"9223372036854775808""#,
        r#","startTimeUnixNano":"+5""#,
        r#","startTimeUnixNano":true"#,
        r#","parentSpanId":"0000000000000000""#,
        r#","parentSpanId":"EEE19B7EC3C1B17"#,
        r#","parentSpanId":5"#,
        r#","parentSpanId":"7uGbfsPBsXQ=""#,
        r#","spanId":"""#,
        r#","links":[{"traceId":"5b8efff798038103d269b633813fc60c"},{"spanId":"eee19b7ec3c1b170"}]"#,
        r#","links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b170","traceState":"a=b","flags":256,"droppedAttributesCount":1}]"#,
        r#","events":[{"timeUnixNano":"1","name":"e","name":"f"}]"#,
        r#","events":[["1","e",[],0]]"#,
        r#","events":[{}, null]"#,
        r#","unknown":{"deep":[[[[{"x":1}]]]]},"another":null"#,
        r#","traceState":"k=v""#,
        r#","name":"a name that is longer than twenty-four bytes""#,
    ] {
        bodies.push(json_span(fields));
    }
    for raw in [
        &b""[..],
        b" ",
        b"{}",
        b"[]",
        b"null",
        b"{} {}",
        b"{}x",
        b"\xef\xbb\xbf{}",
        br#"{"resourceSpans":null}"#,
        br#"{"resourceSpans":{}}"#,
        br#"{"resourceSpans":[null]}"#,
        br#"{"resourceSpans":[{}],"resource_spans":[]}"#,
        br#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","start_time_unix_nano":"1"}]}]}]}"#,
        br#"{"resourceSpans":[[null,[[null,[[]],""]],""]]}"#,
        br#"{"resourceSpans":[[{"attributes":[]},[],"",5]]}"#,
        br#"{"resourceSpans":[{"schemaUrl":5}]}"#,
        br#"{"resourceSpans":[{"schemaUrl":"\ud800"}]}"#,
        br#"{"resourceSpans":[{"resource":5}]}"#,
        br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"intValue":"5"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"1"}]}]}]}"#,
        br#"{"resourceSpans":[{"scopeSpans":[{"scope":null,"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"1"}]},{"scope":{"name":"a-scope-name-longer-than-24-bytes","version":null}}]}]}"#,
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"1"}]}],"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"after"}}]}}]}"#,
        b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"name\":\"\xff\xfe\"}]}]}]}",
    ] {
        bodies.push(raw.to_vec());
    }
    // Many spans and attributes, for the span count and per-span limits.
    let many: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{:016x}","startTimeUnixNano":"{}","endTimeUnixNano":"{}","attributes":[{}]}}"#,
                i + 1,
                1000 + i,
                1000 + 2 * i,
                (0..i % 7)
                    .map(|k| format!(r#"{{"key":"k{k}","value":{{"stringValue":"{}"}}}}"#, "v".repeat(k * 9)))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    bodies.push(
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            many.join(",")
        )
        .into_bytes(),
    );
    let (mut n, mut failed) = (0, Vec::new());
    for body in &bodies {
        for tight in [false, true] {
            if let Err(e) = assert_same_json_decoding(body, &differential_limits(tight)) {
                failed.push(e.to_string());
            }
            n += 1;
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} differ:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(n > 500, "{n} hostile bodies");
}

// ---------------------------------------------------------------- Zipkin

/// A Zipkin v2 span list built from its schema.
fn zipkin_spans() -> BoxedStrategy<J> {
    let hex_id = |n: usize| {
        prop_oneof![
            8 => vec(any::<u8>(), n)
                .prop_filter("non-zero", |v| v.iter().any(|b| *b != 0))
                .prop_map(|b| hex(&b)),
            1 => vec(any::<u8>(), n)
                .prop_filter("non-zero", |v| v.iter().any(|b| *b != 0))
                .prop_map(|b| hex(&b).to_ascii_uppercase()),
        ]
    };
    let trace = prop_oneof![3 => hex_id(16), 1 => hex_id(8)];
    let endpoint = (
        prop_oneof![Just(None), text().prop_map(Some)],
        prop_oneof![
            Just(None),
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
                .prop_map(|(a, b, c, d)| Some(format!("{a}.{b}.{c}.{d}")))
        ],
        prop_oneof![Just(None), Just(Some("::1".to_string()))],
        prop_oneof![Just(None), (-5i64..70000).prop_map(Some)],
    )
        .prop_map(|(svc, v4, v6, port)| {
            let mut m = serde_json::Map::new();
            if let Some(s) = svc {
                m.insert("serviceName".into(), json!(s));
            }
            if let Some(ip) = v4 {
                m.insert("ipv4".into(), json!(ip));
            }
            if let Some(ip) = v6 {
                m.insert("ipv6".into(), json!(ip));
            }
            if let Some(p) = port {
                m.insert("port".into(), json!(p));
            }
            J::Object(m)
        });
    let tag_value = prop_oneof![
        4 => text().prop_map(J::String),
        1 => any::<i64>().prop_map(|i| json!(i)),
        1 => any::<bool>().prop_map(J::Bool),
    ];
    let tag_key = prop_oneof![
        4 => word(1, 10),
        1 => prop::sample::select(vec![
            "error", "otel.status_code", "otel.status_description", "otel.scope.name",
            "otel.library.name", "otel.scope.version", "span.kind", "peer.service",
            "net.host.ip", "zipkin.shared",
        ])
        .prop_map(str::to_string),
    ];
    let span = (
        (
            trace,
            hex_id(8),
            prop_oneof![Just(None), hex_id(8).prop_map(Some)],
            text(),
        ),
        (
            prop_oneof![
                Just(None),
                prop::sample::select(vec![
                    "CLIENT", "SERVER", "PRODUCER", "CONSUMER", "client", "X"
                ])
                .prop_map(Some),
            ],
            1_000_000_000_000u64..4_000_000_000_000_000,
            0u64..100_000_000,
        ),
        (
            prop_oneof![Just(None), endpoint.clone().prop_map(Some)],
            prop_oneof![Just(None), endpoint.prop_map(Some)],
            vec((0u64..4_000_000_000_000_000, text()), 0..3),
            proptest::collection::btree_map(tag_key, tag_value, 0..5),
            prop_oneof![Just(None), any::<bool>().prop_map(Some)],
        ),
    )
        .prop_map(
            |((t, id, parent, name), (kind, ts, dur), (local, remote, anns, tags, shared))| {
                let mut m = serde_json::Map::new();
                m.insert("traceId".into(), json!(t));
                m.insert("id".into(), json!(id));
                if let Some(p) = parent {
                    m.insert("parentId".into(), json!(p));
                }
                m.insert("name".into(), json!(name));
                if let Some(k) = kind {
                    m.insert("kind".into(), json!(k));
                }
                m.insert("timestamp".into(), json!(ts));
                m.insert("duration".into(), json!(dur));
                if let Some(l) = local {
                    m.insert("localEndpoint".into(), l);
                }
                if let Some(r) = remote {
                    m.insert("remoteEndpoint".into(), r);
                }
                m.insert(
                    "annotations".into(),
                    J::Array(
                        anns.into_iter()
                            .map(|(t, v)| json!({"timestamp": t, "value": v}))
                            .collect(),
                    ),
                );
                m.insert("tags".into(), J::Object(tags.into_iter().collect()));
                if let Some(s) = shared {
                    m.insert("shared".into(), json!(s));
                }
                J::Object(m)
            },
        );
    vec(span, 0..5).prop_map(J::Array).boxed()
}

/// The model back to Zipkin v2 JSON, inverting the decoder's mapping: the
/// endpoint attributes it appends after the tags (in a fixed order, with
/// their fixed types) go back to the endpoints, status and scope to their
/// tags, the remaining attributes to tags.
fn to_zipkin(spans: &[Span]) -> Vec<u8> {
    let list: Vec<J> = spans
        .iter()
        .map(|s| {
            let mut attrs: Vec<&KeyValue> = s.attributes.iter().collect();
            // Each endpoint attribute has one type: ports Int, the shared
            // flag Bool(true), the others Str; a tag of the same name is a Str.
            let mut take = |key: &str, int: bool| -> Option<J> {
                let last = attrs.last()?;
                let v = match (&last.value, int) {
                    (AttrValue::Bool(true), _) if key == "zipkin.shared" => json!(true),
                    _ if key == "zipkin.shared" => return None,
                    (AttrValue::Int(i), true) => json!(i),
                    // The decoder drops an empty remote service name.
                    (AttrValue::Str(v), false) if key == "peer.service" && v.is_empty() => {
                        return None
                    }
                    (AttrValue::Str(v), false) => json!(v),
                    _ => return None,
                };
                if last.key != key {
                    return None;
                }
                attrs.pop();
                Some(v)
            };
            let shared = take("zipkin.shared", false);
            let peer_port = take("net.peer.port", true);
            let peer_ip = take("net.peer.ip", false);
            let peer_service = take("peer.service", false);
            let host_port = take("net.host.port", true);
            let host_ip = take("net.host.ip", false);
            let mut tags = serde_json::Map::new();
            for kv in attrs {
                match &kv.value {
                    AttrValue::Str(v) => {
                        tags.insert(kv.key.to_string(), json!(v));
                    }
                    other => panic!("the Zipkin decoder made a non-string tag: {other:?}"),
                }
            }
            match s.status_code {
                StatusCode::Ok => {
                    tags.insert("otel.status_code".into(), json!("OK"));
                }
                StatusCode::Error => {
                    tags.insert("otel.status_code".into(), json!("ERROR"));
                }
                StatusCode::Unset => {}
            }
            if !s.status_message.is_empty() {
                tags.insert("otel.status_description".into(), json!(s.status_message));
            }
            // The decoder reads the scope from otel.scope.* first and keeps an
            // otel.library.* tag beside it as an attribute: write otel.scope.*
            // whenever such an attribute must stay one.
            if !s.scope_name.is_empty() || tags.contains_key("otel.library.name") {
                tags.insert("otel.scope.name".into(), json!(s.scope_name));
            }
            if !s.scope_version.is_empty() || tags.contains_key("otel.library.version") {
                tags.insert("otel.scope.version".into(), json!(s.scope_version));
            }
            let mut local = serde_json::Map::new();
            local.insert("serviceName".into(), json!(s.service_name));
            if let Some(ip) = host_ip {
                local.insert("ipv4".into(), ip);
            }
            if let Some(p) = host_port {
                local.insert("port".into(), p);
            }
            let mut m = serde_json::Map::new();
            m.insert("traceId".into(), json!(hex(&s.trace_id)));
            m.insert("id".into(), json!(hex(&s.span_id)));
            if let Some(p) = s.parent_span_id {
                m.insert("parentId".into(), json!(hex(&p)));
            }
            m.insert("name".into(), json!(s.name));
            let kind = match s.kind {
                SpanKind::Client => Some("CLIENT"),
                SpanKind::Server => Some("SERVER"),
                SpanKind::Producer => Some("PRODUCER"),
                SpanKind::Consumer => Some("CONSUMER"),
                _ => None,
            };
            if let Some(k) = kind {
                m.insert("kind".into(), json!(k));
            }
            m.insert("timestamp".into(), json!(s.start_ns / 1000));
            m.insert("duration".into(), json!((s.end_ns - s.start_ns) / 1000));
            m.insert("localEndpoint".into(), J::Object(local));
            if peer_service.is_some() || peer_ip.is_some() || peer_port.is_some() {
                let mut r = serde_json::Map::new();
                if let Some(v) = peer_service {
                    r.insert("serviceName".into(), v);
                }
                if let Some(v) = peer_ip {
                    r.insert("ipv4".into(), v);
                }
                if let Some(v) = peer_port {
                    r.insert("port".into(), v);
                }
                m.insert("remoteEndpoint".into(), J::Object(r));
            }
            m.insert(
                "annotations".into(),
                J::Array(
                    s.events
                        .iter()
                        .map(|e| json!({"timestamp": e.time_ns / 1000, "value": e.name}))
                        .collect(),
                ),
            );
            m.insert("tags".into(), J::Object(tags));
            if shared.is_some() {
                m.insert("shared".into(), json!(true));
            }
            J::Object(m)
        })
        .collect();
    serde_json::to_vec(&list).expect("JSON")
}

/// What Zipkin cannot carry: the count of attributes dropped by the limit.
fn without_dropped_counts(spans: &[Span]) -> Vec<Span> {
    spans
        .iter()
        .map(|s| Span {
            dropped_attributes_count: 0,
            ..s.clone()
        })
        .collect()
}

#[test]
fn fuzz_zipkin_json() {
    fuzz(
        "Zipkin JSON",
        (zipkin_spans(), mutations()),
        |(list, ms)| {
            let body = serde_json::to_vec(&list).expect("JSON");
            let inputs = variants(&body, &ms, JSON_DICT);
            for (i, raw) in inputs.iter().enumerate() {
                let got = zipkin::decode(raw, &limits());
                if i == 0 {
                    let d = got
                        .as_ref()
                        .map_err(|e| TestCaseError::fail(format!("valid Zipkin refused: {e}")))?;
                    // Every generated span is valid: all kept, in order.
                    let given = list.as_array().expect("array");
                    prop_assert_eq!(d.rejected, 0, "{}", d.error_message());
                    prop_assert_eq!(d.spans.len(), given.len());
                    for (z, s) in given.iter().zip(&d.spans) {
                        let id = z["id"].as_str().unwrap().to_ascii_lowercase();
                        prop_assert_eq!(hex(&s.span_id), id);
                        prop_assert_eq!(s.start_ns, z["timestamp"].as_u64().unwrap() * 1000);
                        prop_assert_eq!(
                            s.end_ns - s.start_ns,
                            z["duration"].as_u64().unwrap() * 1000
                        );
                        prop_assert_eq!(&s.name, z["name"].as_str().unwrap());
                        let svc = z["localEndpoint"]["serviceName"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .unwrap_or("unknown_service");
                        prop_assert_eq!(&s.service_name, svc);
                    }
                }
                if let Ok(d) = got {
                    let again = zipkin::decode(&to_zipkin(&d.spans), &limits()).map_err(|e| {
                        TestCaseError::fail(format!("re-encoded Zipkin spans refused: {e}"))
                    })?;
                    prop_assert_eq!(again.rejected, 0, "{}", again.error_message());
                    let (a, b) = (
                        without_dropped_counts(&again.spans),
                        without_dropped_counts(&d.spans),
                    );
                    if canonical(&a) != canonical(&b) {
                        prop_assert_eq!(
                            format!("{a:?}"),
                            format!("{b:?}"),
                            "{}",
                            String::from_utf8_lossy(raw)
                        );
                    }
                }
            }
            Ok(inputs.len() as u64)
        },
    );
}

// ------------------------------------- Zipkin v2 JSON: direct decoder vs structs

fn assert_same_zipkin_decoding(body: &[u8], limits: &LimitsConfig) -> Result<(), TestCaseError> {
    let new = zipkin::decode(body, limits).map_err(|e| e.to_string());
    let old = zipkin::decode_via_structs(body, limits).map_err(|e| e.to_string());
    let (a, b) = (outcome(&new), outcome(&old));
    prop_assert!(
        a == b,
        "body {}\ndirect: {a}\nstructs: {b}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

/// The direct Zipkin v2 JSON decoder and the struct path
/// (`zipkin::decode_via_structs`, `ZSpan` with `String`s and
/// `serde_json::Value` tags) agree on generated span lists and their
/// byte-level mutations, with default and tight limits.
#[test]
fn differential_zipkin_json() {
    fuzz(
        "Zipkin JSON direct vs structs",
        (zipkin_spans(), mutations(), any::<bool>()),
        |(list, ms, tight)| {
            let limits = differential_limits(tight);
            let body = serde_json::to_vec(&list).expect("JSON");
            let inputs = variants(&body, &ms, JSON_DICT);
            for input in &inputs {
                assert_same_zipkin_decoding(input, &limits)?;
            }
            Ok(inputs.len() as u64)
        },
    );
}

/// Hostile Zipkin v2 JSON, hand-made: tags out of order and repeated, tag
/// values of every JSON type, the status/scope tags in every combination,
/// ids of every length and case, times at the 64-bit nanosecond edge,
/// wrong types, repeated fields, spans written as arrays.
#[test]
fn differential_zipkin_json_hostile() {
    let span = |fields: &str| {
        format!(
            r#"[{{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010db","timestamp":1472470996199000{fields}}}]"#
        )
        .into_bytes()
    };
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for fields in [
        r#","tags":{"b":"1","a":"2","c":"3","a":"4"}"#,
        r#","tags":{"z":"1","z":"2","z":"3"}"#,
        r#","tags":{"n":1.5,"i":-7,"u":18446744073709551615,"t":true,"nul":null,"arr":[1,"x",{"b":1,"a":[2]}],"obj":{"k":"v","a":null},"f":1e300,"e":-0.0}"#,
        r#","tags":{"error":"true"}"#,
        r#","tags":{"error":"boom","otel.status_description":"desc","otel.status_code":"ok"}"#,
        r#","tags":{"error":"","otel.status_code":"Error"}"#,
        r#","tags":{"error":false}"#,
        r#","tags":{"otel.status_code":"UNSET","otel.status_description":"a-description-longer-than-24-bytes"}"#,
        r#","tags":{"otel.scope.name":"s","otel.library.name":"l","otel.library.version":"lv"}"#,
        r#","tags":{"otel.library.name":"l","otel.scope.version":"sv","otel.library.version":"lv"}"#,
        r#","tags":{"span.kind":"SeRvEr"}"#,
        r#","tags":{"span.kind":"internal"},"kind":"X""#,
        r#","tags":{"span.kind":"client"},"kind":"PRODUCER""#,
        r#","tags":{"span.kind":5}"#,
        r#","tags":{"\u00e9":"\ud83d\ude00","a-key-longer-than-twenty-four-bytes":"a-value-longer-than-twenty-four-bytes"}"#,
        r#","tags":null"#,
        r#","tags":[]"#,
        r#","tags":{"k":"v"},"tags":{}"#,
        r#","kind":5"#,
        r#","kind":null,"name":null,"parentId":null,"localEndpoint":null,"annotations":null,"shared":null"#,
        r#","name":"a","name":"b""#,
        r#","parentId":"""#,
        r#","parentId":"0000000000000000""#,
        r#","parentId":"4D1E00C0DB9010DA""#,
        r#","parentId":"4d1e00c0db9010""#,
        r#","parentId":"xyz""#,
        r#","parentId":5"#,
        r#","id":"4d1e00c0db9010db00""#,
        r#","id":"0000000000000000""#,
        r#","traceId":"86154a4ba6e9138586154a4ba6e91385""#,
        r#","traceId":"86154a4ba6e9138586154a4ba6e9138586""#,
        r#","traceId":"00000000000000000000000000000000""#,
        r#","traceId":"0""#,
        r#","traceId":"not hex at all, and longer than 24 bytes""#,
        r#","timestamp":0"#,
        r#","timestamp":null"#,
        r#","timestamp":-1"#,
        r#","timestamp":1.5"#,
        r#","timestamp":"1""#,
        r#","timestamp":18446744073709551,"duration":1000"#,
        r#","timestamp":18446744073709551,"duration":1"#,
        r#","timestamp":18446744073709552"#,
        r#","duration":18446744073709551615"#,
        r#","annotations":[{"timestamp":0,"value":"zero"},{"value":null},{"timestamp":18446744073709552,"value":"x"}]"#,
        r#","annotations":[{"timestamp":1472470996199001},{"value":"a value longer than twenty-four bytes"}]"#,
        r#","annotations":[[1,"v"]]"#,
        r#","annotations":[null]"#,
        r#","annotations":{}"#,
        r#","localEndpoint":{"serviceName":"","ipv4":"","ipv6":"::1","port":0}"#,
        r#","localEndpoint":{"serviceName":"svc","ipv6":"::1","port":-1},"remoteEndpoint":{"serviceName":"","ipv4":"1.2.3.4","port":65536}"#,
        r#","remoteEndpoint":{"serviceName":"peer","ipv6":"fe80::1"},"shared":true"#,
        r#","localEndpoint":["svc","1.2.3.4",null,80]"#,
        r#","localEndpoint":{"port":"80"}"#,
        r#","localEndpoint":{"port":1.0}"#,
        r#","shared":false"#,
        r#","shared":"true""#,
        r#","debug":true,"unknown":{"a":[1,2,{"b":null}]}"#,
    ] {
        bodies.push(span(fields));
    }
    for raw in [
        &b""[..],
        b"{}",
        b"[]",
        b"null",
        b"[null]",
        b"[[]]",
        b"[5]",
        b"[] []",
        b"[{}]",
        br#"[["86154a4ba6e91385","4d1e00c0db9010db",null,"n","CLIENT",1472470996199000,5]]"#,
        br#"[{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010db","timestamp":1472470996199000},{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010dc","timestamp":1472470996199000,"tags":{"http.method":"GET"}},{"traceId":"xyz"},{"traceId":"86154a4ba6e91385","id":"4d1e00c0db9010dd","timestamp":1,"duration":1}]"#,
        b"[{\"name\":\"\xff\"}]",
    ] {
        bodies.push(raw.to_vec());
    }
    let (mut n, mut failed) = (0, Vec::new());
    for body in &bodies {
        for tight in [false, true] {
            if let Err(e) = assert_same_zipkin_decoding(body, &differential_limits(tight)) {
                failed.push(e.to_string());
            }
            n += 1;
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} differ:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(n > 100, "{n} hostile bodies");
}

// ---------------------------------------------------------------- Zipkin protobuf

fn unhex(s: &str) -> Vec<u8> {
    ferrotrace_collector::receiver::otlp_json::decode_hex(s).unwrap_or_default()
}

/// An endpoint in protobuf, and an address text that is no IP address (the
/// protobuf field holds bytes: the decoder can only have read such a text
/// from a tag of the same name, so it goes back to the tags).
fn zpb_endpoint(e: &J) -> (Option<zpb::Endpoint>, Option<String>) {
    let Some(e) = e.as_object() else {
        return (None, None);
    };
    let (mut ipv4, mut ipv6, mut text) = (Vec::new(), Vec::new(), None);
    for k in ["ipv4", "ipv6"] {
        let Some(s) = e.get(k).and_then(J::as_str) else {
            continue;
        };
        // An address goes to the field of its family, whichever key named it.
        match s.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) if ipv4.is_empty() => ipv4 = a.octets().to_vec(),
            Ok(std::net::IpAddr::V6(a)) if ipv6.is_empty() => ipv6 = a.octets().to_vec(),
            Ok(_) => {}
            Err(_) => text = Some(s.to_string()),
        }
    }
    let ep = zpb::Endpoint {
        service_name: e
            .get("serviceName")
            .and_then(J::as_str)
            .unwrap_or_default()
            .to_string(),
        ipv4,
        ipv6,
        port: e
            .get("port")
            .and_then(J::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0),
    };
    (Some(ep), text)
}

/// A Zipkin v2 JSON span list as the protobuf `ListOfSpans` carrying the
/// same span (the JSON's kind spellings the enum lacks become "unspecified").
fn json_to_zpb(list: &J) -> zpb::ListOfSpans {
    let spans = list
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            let id = |k: &str| z.get(k).and_then(J::as_str).map(unhex).unwrap_or_default();
            let kind = match z.get("kind").and_then(J::as_str) {
                Some("CLIENT") => zpb::span::Kind::Client,
                Some("SERVER") => zpb::span::Kind::Server,
                Some("PRODUCER") => zpb::span::Kind::Producer,
                Some("CONSUMER") => zpb::span::Kind::Consumer,
                _ => zpb::span::Kind::SpanKindUnspecified,
            };
            let (local_endpoint, host_text) =
                z.get("localEndpoint").map_or((None, None), zpb_endpoint);
            let (remote_endpoint, peer_text) =
                z.get("remoteEndpoint").map_or((None, None), zpb_endpoint);
            let mut tags: std::collections::HashMap<String, String> = z
                .get("tags")
                .and_then(J::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let v = match v {
                        J::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect();
            if let Some(t) = host_text {
                tags.insert("net.host.ip".into(), t);
            }
            if let Some(t) = peer_text {
                tags.insert("net.peer.ip".into(), t);
            }
            zpb::Span {
                trace_id: id("traceId"),
                parent_id: id("parentId"),
                id: id("id"),
                kind: kind as i32,
                name: z.get("name").and_then(J::as_str).unwrap_or_default().into(),
                timestamp: z.get("timestamp").and_then(J::as_u64).unwrap_or(0),
                duration: z.get("duration").and_then(J::as_u64).unwrap_or(0),
                local_endpoint,
                remote_endpoint,
                annotations: z
                    .get("annotations")
                    .and_then(J::as_array)
                    .into_iter()
                    .flatten()
                    .map(|a| zpb::Annotation {
                        timestamp: a["timestamp"].as_u64().unwrap_or(0),
                        value: a["value"].as_str().unwrap_or_default().into(),
                    })
                    .collect(),
                tags,
                debug: false,
                shared: z.get("shared").and_then(J::as_bool).unwrap_or(false),
            }
        })
        .collect();
    zpb::ListOfSpans { spans }
}

#[test]
fn fuzz_zipkin_protobuf() {
    fuzz(
        "Zipkin protobuf",
        (zipkin_spans(), mutations()),
        |(list, ms)| {
            let body = json_to_zpb(&list).encode_to_vec();
            let inputs = variants(&body, &ms, PROTO_DICT);
            for (i, raw) in inputs.iter().enumerate() {
                let got = zipkin_proto::decode(raw, &limits());
                if i == 0 {
                    // Well-formed: the same spans as the same list in JSON.
                    let d = got
                        .as_ref()
                        .map_err(|e| TestCaseError::fail(format!("valid protobuf refused: {e}")))?;
                    let json = serde_json::to_vec(&list).expect("JSON");
                    let j = zipkin::decode(&json, &limits()).expect("the JSON twin");
                    prop_assert_eq!(d.rejected, j.rejected);
                    if canonical(&d.spans) != canonical(&j.spans) {
                        prop_assert_eq!(format!("{:?}", d.spans), format!("{:?}", j.spans));
                    }
                }
                if let Ok(d) = got {
                    // Round trip: the model back to Zipkin (the JSON inverse
                    // above, carried into protobuf) and decoded again.
                    let back: J = serde_json::from_slice(&to_zipkin(&d.spans)).expect("JSON");
                    let again =
                        zipkin_proto::decode(&json_to_zpb(&back).encode_to_vec(), &limits())
                            .map_err(|e| {
                                TestCaseError::fail(format!("re-encoded spans refused: {e}"))
                            })?;
                    prop_assert_eq!(again.rejected, 0, "{}", again.error_message());
                    let (a, b) = (
                        without_dropped_counts(&again.spans),
                        without_dropped_counts(&d.spans),
                    );
                    if canonical(&a) != canonical(&b) {
                        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
                    }
                }
            }
            Ok(inputs.len() as u64)
        },
    );
}

// ---------------------------------------------------------------- Zipkin v1 JSON

/// A Zipkin v1 JSON span list built from its schema: core and other
/// annotations with endpoints, binary annotations of every value type
/// (including the `lc`, `sa`, `ca` keys), with and without span timestamps.
fn zipkin_v1_spans() -> BoxedStrategy<J> {
    let hex_id = |n: usize| {
        vec(any::<u8>(), n)
            .prop_filter("non-zero", |v| v.iter().any(|b| *b != 0))
            .prop_map(|b| hex(&b))
    };
    let endpoint = (
        prop::sample::select(vec!["", "svc", "other", "db"]),
        prop_oneof![
            Just(None),
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Some(format!("10.0.{a}.{b}")))
        ],
        prop_oneof![Just(None), (1i64..65536).prop_map(Some)],
    )
        .prop_map(|(svc, ip, port)| {
            let mut m = serde_json::Map::new();
            m.insert("serviceName".into(), json!(svc));
            if let Some(ip) = ip {
                m.insert("ipv4".into(), json!(ip));
            }
            if let Some(p) = port {
                m.insert("port".into(), json!(p));
            }
            J::Object(m)
        });
    let annotation = (
        prop::sample::select(vec![
            "cs", "cr", "sr", "ss", "ms", "mr", "ws", "wr", "retry", "",
        ]),
        0u64..4_000_000_000_000_000,
        prop_oneof![Just(None), endpoint.clone().prop_map(Some)],
    )
        .prop_map(|(v, t, e)| {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), json!(v));
            m.insert("timestamp".into(), json!(t));
            if let Some(e) = e {
                m.insert("endpoint".into(), e);
            }
            J::Object(m)
        });
    let binary = (
        prop_oneof![
            3 => word(1, 8),
            1 => prop::sample::select(vec!["lc", "sa", "ca", "ma", "error", "http.path", "span.kind"])
                .prop_map(str::to_string),
        ],
        prop_oneof![
            3 => text().prop_map(J::String),
            1 => any::<bool>().prop_map(J::Bool),
            1 => any::<i64>().prop_map(|i| json!(i)),
        ],
        prop_oneof![Just(None), endpoint.prop_map(Some)],
    )
        .prop_map(|(k, v, e)| {
            let mut m = serde_json::Map::new();
            m.insert("key".into(), json!(k));
            m.insert("value".into(), v);
            if let Some(e) = e {
                m.insert("endpoint".into(), e);
            }
            J::Object(m)
        });
    let span = (
        (
            prop_oneof![hex_id(16), hex_id(8)],
            hex_id(8),
            prop_oneof![Just(None), hex_id(8).prop_map(Some)],
            text(),
        ),
        prop_oneof![
            Just(None),
            (
                1_000_000_000_000u64..4_000_000_000_000_000,
                0u64..100_000_000
            )
                .prop_map(Some)
        ],
        vec(annotation, 0..4),
        vec(binary, 0..4),
    )
        .prop_map(|((t, id, parent, name), times, anns, bins)| {
            let mut m = serde_json::Map::new();
            m.insert("traceId".into(), json!(t));
            m.insert("id".into(), json!(id));
            if let Some(p) = parent {
                m.insert("parentId".into(), json!(p));
            }
            m.insert("name".into(), json!(name));
            if let Some((ts, d)) = times {
                m.insert("timestamp".into(), json!(ts));
                m.insert("duration".into(), json!(d));
            }
            m.insert("annotations".into(), J::Array(anns));
            m.insert("binaryAnnotations".into(), J::Array(bins));
            J::Object(m)
        });
    vec(span, 0..5).prop_map(J::Array).boxed()
}

#[test]
fn fuzz_zipkin_v1_json() {
    fuzz(
        "Zipkin v1 JSON",
        (zipkin_v1_spans(), mutations()),
        |(list, ms)| {
            let body = serde_json::to_vec(&list).expect("JSON");
            let inputs = variants(&body, &ms, JSON_DICT);
            for (i, raw) in inputs.iter().enumerate() {
                let got = zipkin_v1::decode(raw, &limits());
                if i == 0 {
                    let d = got
                        .as_ref()
                        .map_err(|e| TestCaseError::fail(format!("valid v1 JSON refused: {e}")))?;
                    let given = list.as_array().expect("array");
                    prop_assert_eq!(d.spans.len() + d.rejected as usize, given.len());
                    // A span is rejected only for having no time at all.
                    for (z, s) in
                        given
                            .iter()
                            .filter(|z| {
                                z.get("timestamp").is_some()
                                    || z["annotations"].as_array().unwrap().iter().any(|a| {
                                        a["timestamp"].as_u64() > Some(0) && a["value"] != ""
                                    })
                            })
                            .zip(&d.spans)
                    {
                        prop_assert_eq!(hex(&s.span_id), z["id"].as_str().unwrap());
                        prop_assert_eq!(&s.name, z["name"].as_str().unwrap());
                        let first_core =
                            z["annotations"].as_array().unwrap().iter().find_map(|a| {
                                match a["value"].as_str().unwrap() {
                                    "cs" | "cr" => Some(SpanKind::Client),
                                    "sr" | "ss" => Some(SpanKind::Server),
                                    "ms" => Some(SpanKind::Producer),
                                    "mr" => Some(SpanKind::Consumer),
                                    _ => None,
                                }
                            });
                        if let Some(k) = first_core {
                            prop_assert_eq!(s.kind, k);
                        }
                    }
                }
                if let Ok(d) = got {
                    // v1 is read as v2 (see receiver/zipkin_v1.rs): what it
                    // decodes to, written as Zipkin v2 JSON and decoded, is the same.
                    let again = zipkin::decode(&to_zipkin(&d.spans), &limits()).map_err(|e| {
                        TestCaseError::fail(format!("re-encoded v1 spans refused: {e}"))
                    })?;
                    prop_assert_eq!(again.rejected, 0, "{}", again.error_message());
                    let (a, b) = (
                        without_dropped_counts(&again.spans),
                        without_dropped_counts(&d.spans),
                    );
                    if canonical(&a) != canonical(&b) {
                        prop_assert_eq!(
                            format!("{a:?}"),
                            format!("{b:?}"),
                            "{}",
                            String::from_utf8_lossy(raw)
                        );
                    }
                }
            }
            Ok(inputs.len() as u64)
        },
    );
}

// ---------------------------------------------------------------- query parameters

/// A query string as the UI and Jaeger clients send one: known parameters
/// with values of their types, some percent-encoded, some repeated.
fn query_string() -> BoxedStrategy<(String, Vec<(String, String)>)> {
    let value = prop_oneof![
        // Durations.
        (
            0u64..100_000,
            prop::sample::select(vec!["ns", "us", "µs", "ms", "s", "m", "h", ""])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        (0u32..1000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}s")),
        // Times.
        any::<u64>().prop_map(format_rfc3339),
        (0u64..4_102_444_800_000_000_000).prop_map(|ns| ns.to_string()),
        (
            1970i64..2100,
            1u32..13,
            1u32..29,
            0u32..24,
            0u32..60,
            prop::sample::select(vec!["Z", "+02:00", "-11:30", ".5Z", ".123456789Z"])
        )
            .prop_map(|(y, mo, d, h, mi, z)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00{z}")),
        // Trace ids, limits, flags.
        any::<u128>().prop_map(|t| format!("{t:032x}")),
        any::<u64>().prop_map(|t| format!("{t:x}")),
        (0u64..5000).prop_map(|n| n.to_string()),
        prop::sample::select(vec!["true", "false", "1", "0", "yes", "no", ""])
            .prop_map(str::to_string),
        // Attribute conditions and free text.
        (
            word(1, 8),
            prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                Just("true".to_string()),
                (-1000i32..1000, 0u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
                text().prop_map(|t| format!("\"{t}\"")),
                text(),
            ]
        )
            .prop_map(|(k, v)| format!("{k}={v}")),
        text(),
    ];
    let key = prop::sample::select(vec![
        "service",
        "operation",
        "attr",
        "tags",
        "min_duration",
        "max_duration",
        "minDuration",
        "start",
        "end",
        "limit",
        "errors_only",
        "cursor",
        "raw",
        "lookback",
        "traceID",
    ]);
    vec((key, value, any::<bool>()), 0..8)
        .prop_map(|pairs| {
            let raw = pairs
                .iter()
                .map(|(k, v, encode)| {
                    if *encode {
                        format!("{k}={}", form_encode(v))
                    } else {
                        format!("{k}={}", v.replace(['&', '#', '%', '+'], ""))
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            let decoded = pairs
                .iter()
                .map(|(k, v, encode)| {
                    let v = if *encode {
                        v.clone()
                    } else {
                        v.replace(['&', '#', '%', '+'], "")
                    };
                    (k.to_string(), v)
                })
                .collect();
            (raw, decoded)
        })
        .boxed()
}

/// `application/x-www-form-urlencoded`, as a browser writes it.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An attribute condition's value written back as query text.
fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => {
            // Quoted when bare text would read as another type (or lose its
            // surrounding quotes or spaces).
            if infer_value(s.trim()) == AttrValue::Str(s.clone()) && s.trim() == s {
                s.to_string()
            } else {
                format!("\"{s}\"")
            }
        }
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Double(d) => {
            let t = format!("{d:?}");
            if t.contains('.') {
                t
            } else {
                // 1e300 -> 1.0e300: a double must contain a dot to read as one.
                t.replacen('e', ".0e", 1)
            }
        }
        other => panic!("a query condition cannot hold {other:?}"),
    }
}

fn check_param_value(v: &str) -> Result<(), TestCaseError> {
    if let Ok(id) = parse_trace_id(v) {
        prop_assert_eq!(parse_trace_id(&hex(&id)), Ok(id), "{:?}", v);
    }
    for unit in [1u64, 1000] {
        if let Ok(ns) = parse_duration("d", v, unit) {
            prop_assert_eq!(
                parse_duration("d", &format!("{ns}ns"), unit),
                Ok(ns),
                "{:?}",
                v
            );
        }
        if let Ok(ns) = parse_time("t", v, unit) {
            prop_assert_eq!(
                parse_time("t", &format_rfc3339(ns), unit),
                Ok(ns),
                "{:?}",
                v
            );
        }
    }
    if let Some(ns) = parse_rfc3339(v) {
        let canonical = format_rfc3339(ns);
        prop_assert_eq!(parse_rfc3339(&canonical), Some(ns), "{:?}", v);
        // An accepted date is a real one: its fields are those of the
        // canonical form, up to the time zone offset.
        if v.ends_with('Z') && v.as_bytes()[10] == b'T' && &v[17..19] != "60" {
            prop_assert_eq!(&canonical[..19], &v[..19], "{:?} read as {}", v, canonical);
        }
    }
    if let Ok(f) = parse_attr_condition(v, '=') {
        let again = format!("{}={}", f.key, attr_text(&f.value));
        let g = parse_attr_condition(&again, '=');
        prop_assert_eq!(
            g.as_ref().map(|g| (&g.key, &g.value)).ok(),
            Some((&f.key, &f.value)),
            "{:?} -> {:?}",
            v,
            again
        );
    }
    for max in [100usize, 1500] {
        if let Ok(n) = parse_limit(Some(v), 20, max) {
            prop_assert_eq!(parse_limit(Some(&n.to_string()), 20, max), Ok(n));
        }
        if let Ok(n) = parse_limit_clamped(Some(v), 20, max) {
            prop_assert_eq!(parse_limit_clamped(Some(&n.to_string()), 20, max), Ok(n));
        }
    }
    if let Ok(b) = parse_bool("b", v) {
        prop_assert_eq!(parse_bool("b", &b.to_string()), Ok(b));
    }
    let d = percent_decode(v);
    prop_assert_eq!(percent_decode(&form_encode(&d)), d);
    Ok(())
}

const QUERY_DICT: &[&[u8]] = &[
    b"&",
    b"=",
    b"%",
    b"%2",
    b"%zz",
    b"%FF",
    b"%C3%A9",
    b"+",
    b"..",
    b"-",
    b":60",
    b"T",
    b"Z",
    b"+99:99",
    b"e308",
    b"9999999999999999999999",
    b"\"",
    b"\xc3\xa9",
    b"\xe2\x80",
];

#[test]
fn fuzz_query_parameters() {
    let state = ferrotrace_collector::query::QueryState::new(Arc::new(
        ferrotrace_collector::storage::null::NullStore,
    ));
    fuzz(
        "query parameters",
        (query_string(), mutations()),
        |((raw, pairs), ms)| {
            let inputs = variants(raw.as_bytes(), &ms, QUERY_DICT);
            for (i, bytes) in inputs.iter().enumerate() {
                let text = String::from_utf8_lossy(bytes);
                let p = Pairs::parse(Some(&text));
                if i == 0 {
                    prop_assert_eq!(&p.0, &pairs, "{:?}", text);
                }
                // The pairs, encoded again, parse to the same pairs.
                let again =
                    p.0.iter()
                        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                        .collect::<Vec<_>>()
                        .join("&");
                prop_assert_eq!(&Pairs::parse(Some(&again)).0, &p.0, "{:?}", text);
                for (_, v) in &p.0 {
                    check_param_value(v)?;
                }
                let _ = ferrotrace_collector::query::api::parse_search(&state, &p);
            }
            Ok(inputs.len() as u64)
        },
    );
}
