//! The router's reading of OTLP/protobuf trace requests (issue 13, "the
//! router must be cheap"): every span's trace id, span id and byte range,
//! and the byte ranges of the resource and scope framing around it, found
//! without building the span model; and [`reslice`], which writes a new
//! `ExportTraceServiceRequest` from any subset of those spans by copying
//! their bytes and the framing they sat in (both in [`super::wire_request`],
//! re-exported here).
//!
//! Strictness is the ingest path's: [`scan`] walks every field with the
//! same wire rules, UTF-8 checks, recursion limit and error text as
//! [`super::decode`] (the same helper functions, checking without
//! building), refuses the same bodies with the same message, enforces
//! `max_spans_per_request`, and rejects the same spans with the same
//! reasons. The cheap checks (ids, times, link ids) are made on the wire;
//! a span that fails one, or whose wire size could put its decoded size
//! over `limits.max_span_bytes`, is decoded with the full decoder and
//! judged by `Decoded::push` itself, so the verdicts cannot drift apart.
//! What it does not do is count truncations (attribute limits, depth cut):
//! nothing is truncated here, the backend decodes the same bytes with the
//! same limits and counts them. `tests/fuzz_decoders.rs`
//! (`differential_route_scan`) holds scan + reslice to the full decoder.
//!
//! Copying is exact: a span's bytes are its whole `spans` field as sent
//! (key, length and body), the framing is every other field of its
//! `ScopeSpans` and `ResourceSpans` as sent (unknown ones included, in
//! their order), so the backend decodes each span exactly as the router's
//! full decoder would have.

use std::ops::Range;

use bytes::Bytes;
use prost::encoding::{decode_varint, WireType};

pub use super::wire_request::{reslice, WireRequest, WireSpan};
use super::{
    at, bytes_field, entity_ref, fixed32_field, fixed64_field, instrumentation_scope, key_value_at,
    message, skip_field, span, status, str_field, varint_field, R, SPAN_FIELDS,
};
use crate::receiver::convert::{
    convert_ids, DecodeError as RequestError, Decoded, MAX_TIMESTAMP_NS,
};
use crate::receiver::limits::LimitsConfig;

/// The fast path of [`scan`], given up for the careful walk at the first
/// thing it does not handle.
mod fast;

/// The decoded size of a span is at most this many times its wire size
/// (plus 128): the densest shape is an empty link, 2 wire bytes counted as
/// 48 by `estimate_size`; an empty event is 2 bytes for 32, an empty
/// attribute 2 bytes for 24. Spans whose wire size could exceed
/// `max_span_bytes` this way are judged by the full decoder.
const MAX_ESTIMATE_PER_WIRE_BYTE: usize = 24;

/// Byte offset of `rest` (a tail of `body`) in `body`.
fn offset(body: &[u8], rest: &[u8]) -> usize {
    rest.as_ptr() as usize - body.as_ptr() as usize
}

/// Where the body of the length-delimited message at the front of `buf`
/// starts (after its length prefix); `None` if the prefix is bad (the
/// message walk then reports it).
fn message_start(body: &[u8], buf: &[u8]) -> Option<usize> {
    let mut b = buf;
    decode_varint(&mut b).ok()?;
    Some(offset(body, b))
}

/// Scans an OTLP protobuf trace request: the valid spans with their trace
/// ids and byte ranges (in `Decoded::wire`), the invalid ones rejected
/// with the full decoder's reasons, malformed bodies refused with its
/// error. `Decoded::spans` stays empty: nothing is built.
pub fn scan(body: Bytes, limits: &LimitsConfig) -> Result<Decoded, RequestError> {
    if let Some(wire) = scan_fast(&body, limits) {
        return Ok(Decoded {
            bytes: wire.heap_bytes(),
            wire: Some(std::sync::Arc::new(wire)),
            ..Decoded::default()
        });
    }
    scan_careful(body, limits)
}

/// [`fast`]'s walk: the request's tables when nothing in it needs the
/// careful walk.
fn scan_fast(body: &Bytes, limits: &LimitsConfig) -> Option<WireRequest> {
    let mut f = fast::Fast {
        body,
        limits,
        t: fast::Tables::default(),
    };
    f.request()?;
    let t = f.t;
    Some(WireRequest {
        body: body.clone(),
        groups: t.groups,
        group_fields: t.group_fields,
        scopes: t.scopes,
        scope_fields: t.scope_fields,
        spans: t.spans,
    })
}

/// The careful walk alone: every field with the full decoder's helpers,
/// errors and rejections ([`scan`] runs it when its fast path gives up;
/// public for `examples/decode_cost.rs`, which counts both).
#[doc(hidden)]
pub fn scan_careful(body: Bytes, limits: &LimitsConfig) -> Result<Decoded, RequestError> {
    let mut s = Scanner {
        body: &body,
        limits,
        count: 0,
        out: Decoded::default(),
        groups: Vec::new(),
        group_fields: Vec::new(),
        scopes: Vec::new(),
        scope_fields: Vec::new(),
        spans: Vec::new(),
    };
    super::walk_request(&body, |wt, buf, ctx| s.resource_spans(wt, buf, ctx))?;
    RequestError::check_span_count(s.count, limits)?;
    let Scanner {
        mut out,
        groups,
        group_fields,
        scopes,
        scope_fields,
        spans,
        ..
    } = s;
    let wire = WireRequest {
        body: body.clone(),
        groups,
        group_fields,
        scopes,
        scope_fields,
        spans,
    };
    out.bytes = wire.heap_bytes();
    out.wire = Some(std::sync::Arc::new(wire));
    Ok(out)
}

struct Scanner<'a> {
    body: &'a [u8],
    limits: &'a LimitsConfig,
    /// Spans seen (valid or not), for `max_spans_per_request`.
    count: usize,
    out: Decoded,
    groups: Vec<Range<usize>>,
    group_fields: Vec<Range<usize>>,
    scopes: Vec<(usize, Range<usize>)>,
    scope_fields: Vec<Range<usize>>,
    spans: Vec<WireSpan>,
}

/// A span's fields as the scan finds them.
#[derive(Default)]
struct SpanIds<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent: &'a [u8],
    start: u64,
    end: u64,
    bad_link: bool,
}

impl<'a> Scanner<'a> {
    /// A `ResourceSpans`, walked as `super::resource_spans` walks it.
    fn resource_spans(&mut self, wt: WireType, buf: &mut &'a [u8], ctx: u32) -> R<()> {
        let body = self.body;
        let group = self.groups.len();
        let first_field = self.group_fields.len();
        let mut field_start = message_start(body, buf).unwrap_or(0);
        message(wt, buf, ctx, |tag, wt, buf, ctx| {
            let r = match tag {
                1 => message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
                    1 => key_value_at(wt, buf, ctx, 1, None, &mut 0)
                        .map_err(|e| at(e, "Resource", "attributes")),
                    2 => varint_field(wt, buf)
                        .map(drop)
                        .map_err(|e| at(e, "Resource", "dropped_attributes_count")),
                    3 => entity_ref(wt, buf, ctx).map_err(|e| at(e, "Resource", "entity_refs")),
                    _ => skip_field(wt, tag, buf, ctx),
                })
                .map_err(|e| at(e, "ResourceSpans", "resource")),
                2 => self
                    .scope_spans(wt, buf, ctx, group)
                    .map_err(|e| at(e, "ResourceSpans", "scope_spans")),
                3 => str_field(wt, buf)
                    .map(drop)
                    .map_err(|e| at(e, "ResourceSpans", "schema_url")),
                _ => skip_field(wt, tag, buf, ctx),
            };
            r?;
            let end = offset(body, buf);
            if tag != 2 {
                self.group_fields.push(field_start..end);
            }
            field_start = end;
            Ok(())
        })?;
        self.groups.push(first_field..self.group_fields.len());
        Ok(())
    }

    /// A `ScopeSpans`, walked as `super::scope_spans` walks it.
    fn scope_spans(&mut self, wt: WireType, buf: &mut &'a [u8], ctx: u32, group: usize) -> R<()> {
        let body = self.body;
        let scope = self.scopes.len();
        // Pushed first so that spans can name it; its field range is set at the end.
        self.scopes.push((group, 0..0));
        let first_field = self.scope_fields.len();
        let mut field_start = message_start(body, buf).unwrap_or(0);
        message(wt, buf, ctx, |tag, wt, buf, ctx| {
            match tag {
                1 => instrumentation_scope(wt, buf, ctx, &mut Default::default())
                    .map_err(|e| at(e, "ScopeSpans", "scope"))?,
                2 => {
                    let index = self.count;
                    self.count += 1;
                    self.span(wt, buf, ctx, index, scope, field_start)
                        .map_err(|e| at(e, "ScopeSpans", "spans"))?;
                }
                3 => str_field(wt, buf)
                    .map(drop)
                    .map_err(|e| at(e, "ScopeSpans", "schema_url"))?,
                _ => skip_field(wt, tag, buf, ctx)?,
            }
            let end = offset(body, buf);
            if tag != 2 {
                self.scope_fields.push(field_start..end);
            }
            field_start = end;
            Ok(())
        })?;
        self.scopes[scope].1 = first_field..self.scope_fields.len();
        Ok(())
    }

    /// One span: checked on the wire, kept (its ids and range) or rejected.
    fn span(
        &mut self,
        wt: WireType,
        buf: &mut &'a [u8],
        ctx: u32,
        index: usize,
        scope: usize,
        field_start: usize,
    ) -> R<()> {
        let before: &'a [u8] = buf;
        let mut f = SpanIds::default();
        message(wt, buf, ctx, |tag, wt, buf, ctx| {
            let r = match tag {
                1 => bytes_field(wt, buf).map(|b| f.trace_id = b),
                2 => bytes_field(wt, buf).map(|b| f.span_id = b),
                3 | 5 => str_field(wt, buf).map(drop),
                4 => bytes_field(wt, buf).map(|b| f.parent = b),
                6 | 10 | 12 | 14 => varint_field(wt, buf).map(drop),
                7 => fixed64_field(wt, buf).map(|v| f.start = v),
                8 => fixed64_field(wt, buf).map(|v| f.end = v),
                9 => key_value_at(wt, buf, ctx, 1, None, &mut 0),
                11 => event(wt, buf, ctx),
                13 => link(wt, buf, ctx, &mut f.bad_link),
                15 => status(wt, buf, ctx, &mut 0, &mut String::new()),
                16 => fixed32_field(wt, buf).map(drop),
                _ => return skip_field(wt, tag, buf, ctx),
            };
            r.map_err(|e| at(e, "Span", SPAN_FIELDS[tag as usize - 1]))
        })?;
        let end = offset(self.body, buf);
        let ids = convert_ids(index, f.trace_id, f.span_id, f.parent);
        let wire_len = end - offset(self.body, before);
        let plain = ids.is_ok()
            && !f.bad_link
            && f.start != 0
            && f.end <= MAX_TIMESTAMP_NS
            && f.end >= f.start
            && 128 + wire_len.saturating_mul(MAX_ESTIMATE_PER_WIRE_BYTE)
                <= self.limits.max_span_bytes;
        if !plain && !self.judge(wt, before, ctx, index)? {
            return Ok(());
        }
        let (trace_id, span_id) = match ids {
            Ok((t, s, _)) => (t, s),
            // The full decoder rejects bad ids first, so this is not reached.
            Err(why) => {
                self.out.reject(why);
                return Ok(());
            }
        };
        self.spans.push(WireSpan {
            trace_id,
            span_id,
            scope,
            range: field_start..end,
        });
        Ok(())
    }

    /// A span the wire checks cannot pass: decoded in full and validated
    /// by `Decoded::push`, as the ingest path would. True if it is valid.
    fn judge(&mut self, wt: WireType, mut at_span: &'a [u8], ctx: u32, index: usize) -> R<bool> {
        let (converted, _) = span(wt, &mut at_span, ctx, index)?;
        let mut verdict = Decoded::default();
        match converted {
            Err(why) => verdict.reject(why),
            Ok(s) => verdict.push(s, self.limits, index),
        }
        match verdict.errors.pop() {
            Some(why) => {
                self.out.reject(why);
                Ok(false)
            }
            None => Ok(true),
        }
    }
}

/// An `Event`, checked as `super::event` decodes it.
fn event(wt: WireType, buf: &mut &[u8], ctx: u32) -> R<()> {
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => fixed64_field(wt, buf)
            .map(drop)
            .map_err(|err| at(err, "Event", "time_unix_nano")),
        2 => str_field(wt, buf)
            .map(drop)
            .map_err(|err| at(err, "Event", "name")),
        3 => key_value_at(wt, buf, ctx, 1, None, &mut 0)
            .map_err(|err| at(err, "Event", "attributes")),
        4 => varint_field(wt, buf)
            .map(drop)
            .map_err(|err| at(err, "Event", "dropped_attributes_count")),
        _ => skip_field(wt, tag, buf, ctx),
    })
}

/// A `Link`, checked as `super::link` decodes it; `bad` is set when its
/// ids have the wrong lengths (the span is then rejected).
fn link(wt: WireType, buf: &mut &[u8], ctx: u32, bad: &mut bool) -> R<()> {
    let (mut trace_len, mut span_len) = (0, 0);
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => bytes_field(wt, buf)
            .map(|b| trace_len = b.len())
            .map_err(|e| at(e, "Link", "trace_id")),
        2 => bytes_field(wt, buf)
            .map(|b| span_len = b.len())
            .map_err(|e| at(e, "Link", "span_id")),
        3 => str_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "Link", "trace_state")),
        4 => key_value_at(wt, buf, ctx, 1, None, &mut 0).map_err(|e| at(e, "Link", "attributes")),
        5 => varint_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "Link", "dropped_attributes_count")),
        6 => fixed32_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "Link", "flags")),
        _ => skip_field(wt, tag, buf, ctx),
    })?;
    if trace_len != 16 || span_len != 8 {
        *bad = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::otlp_proto::decode;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue as PKeyValue;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
    use prost::Message;

    fn kv(k: &str, v: &str) -> PKeyValue {
        PKeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn pspan(t: u8, s: u8, start: u64) -> PSpan {
        PSpan {
            trace_id: vec![t; 16],
            span_id: vec![s; 8],
            name: format!("op{s}"),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 10,
            attributes: vec![kv("a", "b")],
            ..Default::default()
        }
    }

    fn request() -> Vec<u8> {
        let scope = |name: &str, spans| ScopeSpans {
            scope: Some(InstrumentationScope {
                name: name.into(),
                ..Default::default()
            }),
            spans,
            schema_url: "s".into(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", "a")],
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        scope("x", vec![pspan(1, 1, 5), pspan(2, 2, 5), pspan(1, 3, 0)]),
                        scope("y", vec![pspan(3, 4, 5)]),
                    ],
                    schema_url: "r".into(),
                },
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", "b")],
                        ..Default::default()
                    }),
                    scope_spans: vec![scope("z", vec![pspan(2, 5, 7), pspan(0, 6, 7)])],
                    schema_url: String::new(),
                },
            ],
        }
        .encode_to_vec()
    }

    /// A request whose every span passes the wire checks, with everything
    /// the fast path walks: two resources, scopes with attributes and
    /// schema URLs, events, links, a status, flags and nested values.
    fn clean_request() -> Vec<u8> {
        use any_value::Value as V;
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
        use opentelemetry_proto::tonic::trace::v1::{span, Status};
        let any = |v| AnyValue { value: Some(v) };
        let rich = |t: u8, s: u8| {
            let mut p = pspan(t, s, 5);
            p.parent_span_id = vec![9; 8];
            p.kind = 2;
            p.flags = 0x301;
            p.trace_state = "a=b".into();
            p.attributes.extend([
                PKeyValue {
                    key: "n".into(),
                    value: Some(any(V::ArrayValue(ArrayValue {
                        values: vec![
                            any(V::IntValue(-1)),
                            any(V::DoubleValue(0.5)),
                            any(V::BoolValue(true)),
                            any(V::BytesValue(vec![0, 255])),
                            any(V::KvlistValue(KeyValueList {
                                values: vec![kv("é", "ü")],
                            })),
                        ],
                    }))),
                    ..Default::default()
                },
                PKeyValue {
                    key: "unset".into(),
                    value: Some(AnyValue { value: None }),
                    ..Default::default()
                },
            ]);
            p.events = vec![span::Event {
                time_unix_nano: 6,
                name: "ev".into(),
                attributes: vec![kv("k", "v")],
                dropped_attributes_count: 1,
            }];
            p.links = vec![span::Link {
                trace_id: vec![7; 16],
                span_id: vec![7; 8],
                trace_state: "x=y".into(),
                attributes: vec![kv("l", "m")],
                dropped_attributes_count: 2,
                flags: 1,
            }];
            p.status = Some(Status {
                message: "fine".into(),
                code: 1,
            });
            p.dropped_attributes_count = 1;
            p.dropped_events_count = 2;
            p.dropped_links_count = 3;
            p
        };
        let scope = |name: &str, spans| ScopeSpans {
            scope: Some(InstrumentationScope {
                name: name.into(),
                version: "1".into(),
                attributes: vec![kv("s", "t")],
                dropped_attributes_count: 1,
            }),
            spans,
            schema_url: "s".into(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", "a")],
                        dropped_attributes_count: 1,
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        scope("x", vec![rich(1, 1), pspan(2, 2, 5), rich(1, 3)]),
                        scope("y", vec![pspan(3, 4, 5)]),
                    ],
                    schema_url: "r".into(),
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![scope("z", vec![rich(2, 5)])],
                    schema_url: String::new(),
                },
            ],
        }
        .encode_to_vec()
    }

    #[test]
    fn the_fast_path_records_what_the_careful_walk_records() {
        let limits = LimitsConfig::default();
        let body = Bytes::from(clean_request());
        let fast = scan_fast(&body, &limits).expect("a clean request takes the fast path");
        let careful = scan_careful(body.clone(), &limits).expect("scans");
        assert_eq!(careful.rejected, 0);
        assert_eq!(Some(&fast), careful.wire.as_deref());
        assert_eq!(fast.spans.len(), 5);
        // And what `scan` returns re-slices to the full decoder's spans.
        let wire = scan(body.clone(), &limits).unwrap().wire.unwrap();
        let all: Vec<(&WireRequest, usize)> = (0..wire.spans.len()).map(|i| (&*wire, i)).collect();
        let mut out = Vec::new();
        reslice(&all, &mut out);
        assert_eq!(
            decode(&out, &limits).unwrap().spans,
            decode(&body, &limits).unwrap().spans
        );
    }

    #[test]
    fn the_fast_path_gives_up_on_what_it_does_not_handle() {
        let limits = LimitsConfig::default();
        let clean = clean_request();
        // An unknown group (tag 31): prost skips it field by field; the fast path does not.
        let group_top_level = [&clean[..], &[0xfbu8, 0x01, 0x08, 0x01, 0xfc, 0x01][..]].concat();
        let deep = {
            // An attribute value nested past FAST_MAX_NESTING (within prost's limit).
            let mut v = AnyValue {
                value: Some(any_value::Value::StringValue("leaf".into())),
            };
            for _ in 0..=fast::FAST_MAX_NESTING {
                v = AnyValue {
                    value: Some(any_value::Value::ArrayValue(
                        opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![v] },
                    )),
                };
            }
            let mut p = pspan(1, 1, 5);
            p.attributes = vec![PKeyValue {
                key: "deep".into(),
                value: Some(v),
                ..Default::default()
            }];
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![p],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        };
        for (what, body, spans) in [
            ("a span to reject", request(), 4),
            ("an unknown group", group_top_level, 5),
            ("a deep value", deep, 1),
            ("a cut body", clean[..clean.len() - 1].to_vec(), 0),
        ] {
            let body = Bytes::from(body);
            assert!(scan_fast(&body, &limits).is_none(), "{what}");
            // The careful walk then gives the full decoder's answer.
            match (decode(&body, &limits), scan(body.clone(), &limits)) {
                (Ok(full), Ok(scanned)) => {
                    assert_eq!(full.spans.len(), spans, "{what}");
                    assert_eq!(scanned.wire.unwrap().spans.len(), spans, "{what}");
                    assert_eq!(scanned.errors, full.errors, "{what}");
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what}"),
                (a, b) => panic!("{what}: decoder {:?} vs scan {:?}", a.is_ok(), b.is_ok()),
            }
        }
        // More spans than allowed: the careful walk's error.
        let few = LimitsConfig {
            max_spans_per_request: 4,
            ..LimitsConfig::default()
        };
        assert!(scan_fast(&Bytes::from(clean.clone()), &few).is_none());
        assert!(scan(Bytes::from(clean), &few).is_err());
    }

    /// `msg` (a message of `kind`) re-encoded with unknown fields of every
    /// plain wire type appended to it and to every message nested in it, as
    /// a sender on a newer OTLP version would send them.
    fn with_unknown_fields(msg: &[u8], kind: &str) -> Vec<u8> {
        use prost::encoding::{decode_key, encode_key, encode_varint};
        // message.field tag=the nested message's kind
        const SCHEMA: &str = "request.1=resource_spans resource_spans.1=resource \
            resource_spans.2=scope_spans resource.1=key_value scope_spans.1=scope \
            scope_spans.2=span scope.3=key_value span.9=key_value span.11=event span.13=link \
            span.15=status event.3=key_value link.4=key_value key_value.2=any_value \
            any_value.5=array any_value.6=kv_list array.1=any_value kv_list.1=key_value";
        let mut out = Vec::new();
        let mut b = msg;
        while !b.is_empty() {
            let (tag, wt) = decode_key(&mut b).unwrap();
            encode_key(tag, wt, &mut out);
            let start = b;
            match wt {
                WireType::Varint => drop(decode_varint(&mut b).unwrap()),
                WireType::SixtyFourBit => b = &b[8..],
                WireType::ThirtyTwoBit => b = &b[4..],
                WireType::LengthDelimited => {
                    let n = decode_varint(&mut b).unwrap() as usize;
                    let (inner, rest) = b.split_at(n);
                    b = rest;
                    let nested = format!("{kind}.{tag}=");
                    if let Some(sub) = SCHEMA.split(' ').find_map(|e| e.strip_prefix(&*nested)) {
                        let inner = with_unknown_fields(inner, sub);
                        encode_varint(inner.len() as u64, &mut out);
                        out.extend_from_slice(&inner);
                        continue;
                    }
                }
                _ => unreachable!("no groups in these requests"),
            }
            out.extend_from_slice(&start[..start.len() - b.len()]);
        }
        // Tags 40-43: above every tag of every OTLP trace message.
        encode_key(40, WireType::Varint, &mut out);
        encode_varint(300, &mut out);
        encode_key(41, WireType::LengthDelimited, &mut out);
        out.extend_from_slice(&[3, 0xff, 0x00, 0x80]); // not UTF-8: not a string to anyone
        encode_key(42, WireType::ThirtyTwoBit, &mut out);
        out.extend_from_slice(&[1, 2, 3, 4]);
        encode_key(43, WireType::SixtyFourBit, &mut out);
        out.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        out
    }

    #[test]
    fn the_fast_path_skips_unknown_fields_as_the_careful_walk_does() {
        let limits = LimitsConfig::default();
        let body = Bytes::from(with_unknown_fields(&clean_request(), "request"));
        assert!(
            body.len() > clean_request().len() + 50 * 16,
            "4 fields in every message"
        );
        let fast = scan_fast(&body, &limits).expect("unknown fields stay on the fast path");
        let careful = scan_careful(body.clone(), &limits).expect("scans");
        assert_eq!(careful.rejected, 0);
        assert_eq!(Some(&fast), careful.wire.as_deref());
        assert_eq!(fast.spans.len(), 5);
        // Re-sliced, the spans (their unknown fields and framing kept) decode
        // to what the whole request decodes to.
        let all: Vec<(&WireRequest, usize)> = (0..fast.spans.len()).map(|i| (&fast, i)).collect();
        let mut out = Vec::new();
        reslice(&all, &mut out);
        let full = decode(&body, &limits).unwrap();
        assert_eq!(full.spans.len(), 5);
        assert_eq!(decode(&out, &limits).unwrap().spans, full.spans);
        // A known tag with another wire type still gives up (prost refuses it).
        let mut wrong = body.to_vec();
        wrong.extend_from_slice(&[0x08, 0x01]); // resource_spans as a varint
        assert!(scan_fast(&Bytes::from(wrong.clone()), &limits).is_none());
        assert!(scan(Bytes::from(wrong), &limits).is_err());
    }

    #[test]
    fn resliced_parts_decode_to_the_spans_of_the_whole() {
        let body = request();
        let limits = LimitsConfig::default();
        let full = decode(&body, &limits).expect("decodes");
        let scanned = scan(Bytes::from(body), &limits).expect("scans");
        assert_eq!(scanned.rejected, full.rejected);
        assert_eq!(scanned.errors, full.errors);
        assert!(scanned.spans.is_empty(), "nothing built");
        let wire = scanned.wire.expect("wire");
        assert_eq!(wire.spans.len(), full.spans.len());
        // Two parts by trace id parity; each decodes to its share, in order.
        for part in [0, 1] {
            let picked: Vec<(&WireRequest, usize)> = (0..wire.spans.len())
                .filter(|&i| wire.spans[i].trace_id[0] % 2 == part)
                .map(|i| (&*wire, i))
                .collect();
            let mut out = Vec::new();
            reslice(&picked, &mut out);
            let got = decode(&out, &limits).expect("re-sliced part decodes");
            let want: Vec<_> = full
                .spans
                .iter()
                .filter(|s| s.trace_id[0] % 2 == part)
                .cloned()
                .collect();
            assert_eq!(got.spans, want);
            assert_eq!(got.rejected, 0);
        }
    }

    #[test]
    fn spans_from_two_requests_share_one_output() {
        let limits = LimitsConfig::default();
        let a = scan(Bytes::from(request()), &limits).unwrap().wire.unwrap();
        let b = scan(Bytes::from(request()), &limits).unwrap().wire.unwrap();
        let picked: Vec<(&WireRequest, usize)> = (0..a.spans.len())
            .map(|i| (&*a, i))
            .chain((0..b.spans.len()).map(|i| (&*b, i)))
            .collect();
        let mut out = Vec::new();
        reslice(&picked, &mut out);
        let got = decode(&out, &limits).unwrap();
        let one = decode(&request(), &limits).unwrap();
        let mut want = one.spans.clone();
        want.extend(one.spans);
        assert_eq!(got.spans, want);
    }

    #[test]
    fn malformed_and_oversized_requests_get_the_decoders_error() {
        let limits = LimitsConfig {
            max_spans_per_request: 5,
            ..LimitsConfig::default()
        };
        let body = request();
        for bad in [
            body[..body.len() - 3].to_vec(),
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![0x0a, 0x02, 0x12, 0x05],
            body.clone(), // 6 spans > 5
        ] {
            let want = decode(&bad, &limits).map(drop).unwrap_err().to_string();
            let got = scan(Bytes::from(bad), &limits)
                .map(drop)
                .unwrap_err()
                .to_string();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_span_over_the_size_limit_is_judged_by_the_full_decoder() {
        let limits = LimitsConfig {
            max_span_bytes: 400,
            max_attribute_value_bytes: 100,
            ..LimitsConfig::default()
        };
        let mut big = pspan(1, 1, 5);
        // Long values are truncated to 100 bytes first: this one fits then.
        big.attributes = vec![kv("k", &"v".repeat(5_000))];
        let mut too_big = pspan(2, 2, 5);
        too_big.attributes = (0..20).map(|i| kv(&format!("k{i}"), "v")).collect();
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![big, too_big],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let full = decode(&body, &limits).unwrap();
        let scanned = scan(Bytes::from(body), &limits).unwrap();
        assert_eq!(full.spans.len(), 1);
        assert_eq!(scanned.wire.unwrap().spans.len(), 1);
        assert_eq!(scanned.errors, full.errors);
    }
}
