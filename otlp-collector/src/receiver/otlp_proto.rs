// Over ~800 lines and not split (issue 19): about 150 of them are unit tests of the
// one-go attribute reader against the general walk, kept beside the code they pin.
//! OTLP/protobuf `ExportTraceServiceRequest` bytes → [`Span`]s in one pass,
//! without the `opentelemetry-proto` structs in between.
//!
//! Decoding through the generated structs allocated every id, attribute list
//! and value twice (once for the struct, once for the model) and walked the
//! request twice. This reader builds the model directly from the wire, with
//! the same result as `prost` decoding followed by [`convert::from_otlp`](crate::receiver::convert::from_otlp)
//! (`tests/fuzz_decoders.rs`, `differential_otlp_protobuf*`, holds the two to the same spans and the
//! same errors, on generated, mutated and hostile bodies):
//!
//! - the same wire rules as prost 0.14: known fields must have their wire
//!   type, strings must be UTF-8 (also in fields the model does not keep),
//!   unknown fields and groups are skipped, a repeated non-repeated field
//!   replaces (scalars) or merges (messages, `AnyValue`'s oneof) as prost
//!   does, and the same recursion limit (100 nested messages) applies;
//! - the same error text: prost's own `DecodeError`s (taken from prost's
//!   encoding helpers), with the same `Message.field` trail;
//! - the same conversion rules (ids, times, limits, depth cut at
//!   [`MAX_ANY_VALUE_DEPTH`], which span problems reject a span) through
//!   the shared [`Decoded::push`] and [`convert_ids`].
//!
//! A resource or scope may follow the spans it describes on the wire, so
//! spans are kept pending until their `ResourceSpans` message ends and then
//! completed with the service name, resource attributes and scope.

pub mod route_scan;
mod wire;
pub mod wire_request;

use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, WireType};

use super::convert::{
    convert_ids, limit_attrs, service_name_of, DecodeError as RequestError, Decoded,
    MAX_ANY_VALUE_DEPTH,
};
use crate::model::{
    AttrValue, CompactString, Event, KeyValue, Link, ResourceAttrs, Span, SpanId, SpanKind,
    StatusCode, TraceId,
};
use crate::receiver::limits::LimitsConfig;
use wire::{
    at, bytes_field, compact_field, fixed32_field, fixed64_field, message, skip_field, str_field,
    string_field, varint_field, R, RECURSION_LIMIT,
};

/// Decodes an OTLP protobuf trace request into validated spans.
pub fn decode(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, RequestError> {
    let mut req = Request::default();
    walk_request(body, |wt, buf, ctx| resource_spans(wt, buf, ctx, &mut req))?;
    RequestError::check_span_count(req.count, limits)?;
    let mut out = Decoded::default();
    for group in req.groups {
        group.finish(limits, &mut out);
    }
    out.depth_truncated = req.cut;
    Ok(out)
}

/// The top level of an `ExportTraceServiceRequest`, walked the same way by
/// [`decode`] and the router's [`route_scan::scan`]: each `resource_spans`
/// field goes to `resource_spans` (which walks it into the caller's state),
/// every other field is skipped, and a malformed body is refused with
/// prost's error and the message's field trail. Generic and inlined, so each
/// caller gets the loop it had written out before.
#[inline]
fn walk_request<'a>(
    body: &'a [u8],
    mut resource_spans: impl FnMut(WireType, &mut &'a [u8], u32) -> R<()>,
) -> Result<(), RequestError> {
    let mut buf = body;
    let ctx = RECURSION_LIMIT;
    let parsed: R<()> = (|| {
        while buf.has_remaining() {
            let (tag, wt) = decode_key(&mut buf)?;
            match tag {
                1 => resource_spans(wt, &mut buf, ctx)
                    .map_err(|e| at(e, "ExportTraceServiceRequest", "resource_spans"))?,
                _ => skip_field(wt, tag, &mut buf, ctx)?,
            }
        }
        Ok(())
    })();
    parsed.map_err(|e| {
        RequestError::Malformed(format!(
            "invalid OTLP protobuf ExportTraceServiceRequest: {e}"
        ))
    })
}

/// What the whole request has produced so far.
#[derive(Default)]
struct Request {
    /// Spans seen (valid or not), for `max_spans_per_request`.
    count: usize,
    /// One entry per `ResourceSpans`, in request order.
    groups: Vec<Group>,
    /// Attribute values cut at the depth limit, in spans kept or rejected
    /// after conversion (as `from_otlp` counts them).
    cut: u64,
    /// Where each span's attributes and events are read first.
    scratch: Scratch,
}

/// The lists a span's attributes and events are read into before the span
/// gets exactly-sized copies, reused from span to span of a request.
///
/// Sizing each span's lists up front took a walk over the span message's
/// fields before the real one (`count_repeated`: ~18 field keys per span);
/// growing them step by step would copy and leave slack that every span
/// then holds. Moving the entries once (a `memcpy` of the list) is cheaper
/// than either.
#[derive(Default)]
struct Scratch {
    attrs: Vec<KeyValue>,
    events: Vec<Event>,
}

/// Lists longer than this are handed over whole rather than copied, so a
/// hostile span with a huge list is not held twice at the decode's peak.
const COPY_AT_MOST: usize = 64;

/// The entries of `scratch`, in a list of their own: an exact-size copy,
/// or the scratch list itself when it is long (the next span starts a new
/// one).
#[inline]
fn take_exact<T>(scratch: &mut Vec<T>) -> Vec<T> {
    match scratch.len() {
        0 => Vec::new(),
        n if n > COPY_AT_MOST => std::mem::take(scratch),
        n => {
            let mut out = Vec::with_capacity(n);
            out.append(scratch);
            out
        }
    }
}

/// A `ResourceSpans` message: its resource and its spans, pending.
///
/// Converted spans are built in place in `spans` (a span is a few hundred
/// bytes; building it elsewhere and moving it through a pending entry into
/// the output cost several copies per span) and validated there at the end.
#[derive(Default)]
struct Group {
    resource_attributes: Vec<KeyValue>,
    /// Cut values in the resource's attributes.
    resource_cut: u64,
    /// Converted spans, in request order.
    spans: Vec<Span>,
    /// For each of `spans`: its index in the request and its scope.
    meta: Vec<(usize, usize)>,
    /// Spans rejected while converting: index in the request, and why.
    rejected: Vec<(usize, String)>,
}

impl Group {
    /// Completes the spans with the resource and scope, validates and keeps
    /// them; rejections are reported in request order, as one pass over
    /// the spans would.
    fn finish(mut self, limits: &LimitsConfig, out: &mut Decoded) {
        let (d, t) = limit_attrs(&mut self.resource_attributes, limits);
        out.attributes_dropped += d;
        out.values_truncated += t;
        let service_name = service_name_of(&self.resource_attributes);
        // One shared list for the group's spans (no copy per span).
        let resource = ResourceAttrs::new(self.resource_attributes);
        let mut rejected = self.rejected.into_iter().peekable();
        let mut meta = self.meta.iter();
        let mut spans = self.spans;
        spans.retain_mut(|span| {
            let Some(&(index, _)) = meta.next() else {
                unreachable!("one meta entry per span")
            };
            while let Some((_, why)) = rejected.next_if(|(i, _)| *i < index) {
                out.reject(why);
            }
            span.service_name = service_name.clone();
            span.resource_attributes = resource.clone();
            out.check(span, limits, index)
        });
        for (_, why) in rejected {
            out.reject(why);
        }
        if out.spans.is_empty() {
            out.spans = spans;
        } else {
            out.spans.append(&mut spans);
        }
    }
}

fn resource_spans(wt: WireType, buf: &mut &[u8], ctx: u32, req: &mut Request) -> R<()> {
    let mut group = Group::default();
    // Scope names/versions of this group's ScopeSpans, by position.
    let mut scopes: Vec<(CompactString, CompactString)> = Vec::new();
    let mut span_cut = 0u64;
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
            1 => key_value(
                wt,
                buf,
                ctx,
                &mut group.resource_attributes,
                &mut group.resource_cut,
            )
            .map_err(|e| at(e, "Resource", "attributes")),
            2 => varint_field(wt, buf)
                .map(drop)
                .map_err(|e| at(e, "Resource", "dropped_attributes_count")),
            3 => entity_ref(wt, buf, ctx).map_err(|e| at(e, "Resource", "entity_refs")),
            _ => skip_field(wt, tag, buf, ctx),
        })
        .map_err(|e| at(e, "ResourceSpans", "resource")),
        2 => {
            let scope = scopes.len();
            scopes.push((CompactString::default(), CompactString::default()));
            scope_spans(
                wt,
                buf,
                ctx,
                req,
                &mut group,
                &mut scopes[scope],
                scope,
                &mut span_cut,
            )
            .map_err(|e| at(e, "ResourceSpans", "scope_spans"))
        }
        3 => str_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "ResourceSpans", "schema_url")),
        _ => skip_field(wt, tag, buf, ctx),
    })?;
    // The scope of each span, now that every ScopeSpans has ended.
    for (span, &(_, scope)) in group.spans.iter_mut().zip(&group.meta) {
        let (name, version) = &scopes[scope];
        span.scope_name = name.clone();
        span.scope_version = version.clone();
    }
    req.cut += group.resource_cut + span_cut;
    req.groups.push(group);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn scope_spans(
    wt: WireType,
    buf: &mut &[u8],
    ctx: u32,
    req: &mut Request,
    group: &mut Group,
    scope_out: &mut (CompactString, CompactString),
    scope: usize,
    cut: &mut u64,
) -> R<()> {
    // The group's spans are built in place: room for this message's at once.
    let (n_spans, _) = count_fields(buf, 2, 0);
    group.spans.reserve(n_spans);
    group.meta.reserve(n_spans);
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => {
            instrumentation_scope(wt, buf, ctx, scope_out).map_err(|e| at(e, "ScopeSpans", "scope"))
        }
        2 => {
            let index = req.count;
            req.count += 1;
            let (verdict, span_cut) =
                span_into(wt, buf, ctx, index, &mut group.spans, &mut req.scratch)
                    .map_err(|e| at(e, "ScopeSpans", "spans"))?;
            *cut += span_cut;
            match verdict {
                Ok(()) => group.meta.push((index, scope)),
                Err(why) => group.rejected.push((index, why)),
            }
            Ok(())
        }
        3 => str_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "ScopeSpans", "schema_url")),
        _ => skip_field(wt, tag, buf, ctx),
    })
}

fn instrumentation_scope(
    wt: WireType,
    buf: &mut &[u8],
    ctx: u32,
    out: &mut (CompactString, CompactString),
) -> R<()> {
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => compact_field(wt, buf)
            .map(|s| out.0 = s)
            .map_err(|e| at(e, "InstrumentationScope", "name")),
        2 => compact_field(wt, buf)
            .map(|s| out.1 = s)
            .map_err(|e| at(e, "InstrumentationScope", "version")),
        // Decoded for the same checks, not kept (nor counted when cut: the
        // model has no scope attributes).
        3 => key_value(wt, buf, ctx, &mut Vec::new(), &mut 0)
            .map_err(|e| at(e, "InstrumentationScope", "attributes")),
        4 => varint_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "InstrumentationScope", "dropped_attributes_count")),
        _ => skip_field(wt, tag, buf, ctx),
    })
}

fn entity_ref(wt: WireType, buf: &mut &[u8], ctx: u32) -> R<()> {
    message(wt, buf, ctx, |tag, wt, buf, ctx| {
        let field = match tag {
            1 => "schema_url",
            2 => "r#type",
            3 => "id_keys",
            4 => "description_keys",
            _ => return skip_field(wt, tag, buf, ctx),
        };
        str_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "EntityRef", field))
    })
}

/// A span's fields as they arrive; ids are checked at the end.
#[derive(Default)]
struct SpanFields<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent: &'a [u8],
    kind: i32,
    status_code: i32,
    links: Vec<RawLink<'a>>,
    attrs_cut: u64,
    events_cut: u64,
}

struct RawLink<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: String,
    attributes: Vec<KeyValue>,
    cut: u64,
    dropped_attributes_count: u32,
    flags: u32,
}

/// One span: the converted span or why it is rejected, and the values cut
/// at the depth limit in what `from_otlp` converts for it.
fn span<'a>(
    wt: WireType,
    buf: &mut &'a [u8],
    ctx: u32,
    index: usize,
) -> R<(Result<Span, String>, u64)> {
    let mut f = SpanFields::<'a>::default();
    let mut s = empty_span();
    let (verdict, cut) = span_fields(wt, buf, ctx, index, &mut f, &mut s, &mut Scratch::default())?;
    Ok((verdict.map(|()| s), cut))
}

/// [`span`], converted at the end of `out` (and taken off again when it is
/// rejected), so the span is not moved once built.
fn span_into<'a>(
    wt: WireType,
    buf: &mut &'a [u8],
    ctx: u32,
    index: usize,
    out: &mut Vec<Span>,
    scratch: &mut Scratch,
) -> R<(Result<(), String>, u64)> {
    let mut f = SpanFields::<'a>::default();
    out.push(empty_span());
    let Some(s) = out.last_mut() else {
        unreachable!("a span was just pushed")
    };
    let converted = span_fields(wt, buf, ctx, index, &mut f, s, scratch);
    match converted {
        Ok((Ok(()), _)) => {}
        // Rejected (or the request is malformed): no span is kept for it.
        _ => drop(out.pop()),
    }
    converted
}

/// A span with nothing set yet.
fn empty_span() -> Span {
    Span {
        trace_id: [0; 16],
        span_id: [0; 8],
        parent_span_id: None,
        trace_state: String::new(),
        flags: 0,
        name: CompactString::default(),
        kind: SpanKind::Unspecified,
        start_ns: 0,
        end_ns: 0,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        service_name: CompactString::default(),
        resource_attributes: ResourceAttrs::default(),
        scope_name: CompactString::default(),
        scope_version: CompactString::default(),
    }
}

/// [`span`]'s fields, read into `s`, `f` and `scratch` (attributes and
/// events), then the ids and links checked; a kept span gets its attributes
/// and events from `scratch`.
fn span_fields<'a>(
    wt: WireType,
    buf: &mut &'a [u8],
    ctx: u32,
    index: usize,
    f: &mut SpanFields<'a>,
    s: &mut Span,
    scratch: &mut Scratch,
) -> R<(Result<(), String>, u64)> {
    // Left over by a span whose message was malformed (the request fails).
    scratch.attrs.clear();
    scratch.events.clear();
    message(wt, buf, ctx, |tag, wt, buf, ctx| {
        let r = match tag {
            1 => bytes_field(wt, buf).map(|b| f.trace_id = b),
            2 => bytes_field(wt, buf).map(|b| f.span_id = b),
            3 => string_field(wt, buf).map(|v| s.trace_state = v),
            4 => bytes_field(wt, buf).map(|b| f.parent = b),
            5 => compact_field(wt, buf).map(|v| s.name = v),
            6 => varint_field(wt, buf).map(|v| f.kind = v as i32),
            7 => fixed64_field(wt, buf).map(|v| s.start_ns = v),
            8 => fixed64_field(wt, buf).map(|v| s.end_ns = v),
            9 => key_value(wt, buf, ctx, &mut scratch.attrs, &mut f.attrs_cut),
            10 => varint_field(wt, buf).map(|v| s.dropped_attributes_count = v as u32),
            11 => event(wt, buf, ctx, &mut scratch.events, &mut f.events_cut),
            12 => varint_field(wt, buf).map(|v| s.dropped_events_count = v as u32),
            13 => link(wt, buf, ctx, &mut f.links),
            14 => varint_field(wt, buf).map(|v| s.dropped_links_count = v as u32),
            15 => status(wt, buf, ctx, &mut f.status_code, &mut s.status_message),
            16 => fixed32_field(wt, buf).map(|v| s.flags = v),
            _ => return skip_field(wt, tag, buf, ctx),
        };
        r.map_err(|e| at(e, "Span", SPAN_FIELDS[tag as usize - 1]))
    })?;
    let (trace_id, span_id, parent) = match convert_ids(index, f.trace_id, f.span_id, f.parent) {
        Ok(ids) => ids,
        // Nothing of a span with bad ids is converted by `from_otlp`.
        Err(e) => return Ok((Err(e), 0)),
    };
    // Every link is converted before a bad one rejects the span; the last
    // bad one is reported.
    let mut bad_link = None;
    let mut links_cut = 0;
    let mut links = Vec::with_capacity(f.links.len());
    for l in std::mem::take(&mut f.links) {
        let t: Option<TraceId> = l.trace_id.try_into().ok();
        let sp: Option<SpanId> = l.span_id.try_into().ok();
        match (t, sp) {
            (Some(trace_id), Some(span_id)) => {
                links_cut += l.cut;
                links.push(Link {
                    trace_id,
                    span_id,
                    trace_state: l.trace_state,
                    attributes: l.attributes,
                    dropped_attributes_count: l.dropped_attributes_count,
                    flags: l.flags,
                });
            }
            _ => {
                bad_link = Some(format!(
                    "span {index}: a link has a trace_id of {} bytes / span_id of {} bytes (need 16 / 8)",
                    l.trace_id.len(),
                    l.span_id.len()
                ));
            }
        }
    }
    if let Some(e) = bad_link {
        return Ok((Err(e), links_cut));
    }
    s.attributes = take_exact(&mut scratch.attrs);
    s.events = take_exact(&mut scratch.events);
    s.trace_id = trace_id;
    s.span_id = span_id;
    s.parent_span_id = parent;
    s.kind = SpanKind::from_i32(f.kind);
    s.status_code = StatusCode::from_i32(f.status_code);
    s.links = links;
    Ok((Ok(()), links_cut + f.attrs_cut + f.events_cut))
}

/// How many length-delimited fields with tag `a` and with tag `b` the
/// message at the front of `buf` (its length prefix first) holds, to size
/// vectors once: a quick walk over its field keys that stops at anything
/// unexpected (the real pass reports it). The counts are bounded by the
/// message's length.
fn count_fields(buf: &[u8], tag_a: u32, tag_b: u32) -> (usize, usize) {
    let mut b = buf;
    let Ok(len) = decode_varint(&mut b) else {
        return (0, 0);
    };
    let Some(mut m) = usize::try_from(len).ok().and_then(|l| b.get(..l)) else {
        return (0, 0);
    };
    let (mut na, mut nb) = (0, 0);
    while !m.is_empty() {
        let Ok((tag, wt)) = decode_key(&mut m) else {
            break;
        };
        let skip = match wt {
            WireType::Varint => match decode_varint(&mut m) {
                Ok(_) => 0,
                Err(_) => break,
            },
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => match decode_varint(&mut m) {
                Ok(l) => l,
                Err(_) => break,
            },
            WireType::StartGroup | WireType::EndGroup => break,
        };
        if skip > m.len() as u64 {
            break;
        }
        m.advance(skip as usize);
        if wt == WireType::LengthDelimited {
            if tag == tag_a {
                na += 1;
            } else if tag == tag_b {
                nb += 1;
            }
        }
    }
    (na, nb)
}

/// Span field names by tag, for the error trail.
const SPAN_FIELDS: [&str; 16] = [
    "trace_id",
    "span_id",
    "trace_state",
    "parent_span_id",
    "name",
    "kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "attributes",
    "dropped_attributes_count",
    "events",
    "dropped_events_count",
    "links",
    "dropped_links_count",
    "status",
    "flags",
];

fn status(wt: WireType, buf: &mut &[u8], ctx: u32, code: &mut i32, msg: &mut String) -> R<()> {
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        2 => string_field(wt, buf)
            .map(|v| *msg = v)
            .map_err(|e| at(e, "Status", "message")),
        3 => varint_field(wt, buf)
            .map(|v| *code = v as i32)
            .map_err(|e| at(e, "Status", "code")),
        _ => skip_field(wt, tag, buf, ctx),
    })
}

fn event(wt: WireType, buf: &mut &[u8], ctx: u32, out: &mut Vec<Event>, cut: &mut u64) -> R<()> {
    let mut e = Event {
        time_ns: 0,
        name: CompactString::default(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    };
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => fixed64_field(wt, buf)
            .map(|v| e.time_ns = v)
            .map_err(|err| at(err, "Event", "time_unix_nano")),
        2 => compact_field(wt, buf)
            .map(|v| e.name = v)
            .map_err(|err| at(err, "Event", "name")),
        3 => key_value(wt, buf, ctx, &mut e.attributes, cut)
            .map_err(|err| at(err, "Event", "attributes")),
        4 => varint_field(wt, buf)
            .map(|v| e.dropped_attributes_count = v as u32)
            .map_err(|err| at(err, "Event", "dropped_attributes_count")),
        _ => skip_field(wt, tag, buf, ctx),
    })?;
    out.push(e);
    Ok(())
}

fn link<'a>(wt: WireType, buf: &mut &'a [u8], ctx: u32, out: &mut Vec<RawLink<'a>>) -> R<()> {
    let mut l = RawLink {
        trace_id: &[],
        span_id: &[],
        trace_state: String::new(),
        attributes: Vec::new(),
        cut: 0,
        dropped_attributes_count: 0,
        flags: 0,
    };
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => bytes_field(wt, buf)
            .map(|b| l.trace_id = b)
            .map_err(|e| at(e, "Link", "trace_id")),
        2 => bytes_field(wt, buf)
            .map(|b| l.span_id = b)
            .map_err(|e| at(e, "Link", "span_id")),
        3 => string_field(wt, buf)
            .map(|v| l.trace_state = v)
            .map_err(|e| at(e, "Link", "trace_state")),
        4 => key_value(wt, buf, ctx, &mut l.attributes, &mut l.cut)
            .map_err(|e| at(e, "Link", "attributes")),
        5 => varint_field(wt, buf)
            .map(|v| l.dropped_attributes_count = v as u32)
            .map_err(|e| at(e, "Link", "dropped_attributes_count")),
        6 => fixed32_field(wt, buf)
            .map(|v| l.flags = v)
            .map_err(|e| at(e, "Link", "flags")),
        _ => skip_field(wt, tag, buf, ctx),
    })?;
    out.push(l);
    Ok(())
}

/// A `KeyValue` at attribute depth 1, appended to `out`.
fn key_value(
    wt: WireType,
    buf: &mut &[u8],
    ctx: u32,
    out: &mut Vec<KeyValue>,
    cut: &mut u64,
) -> R<()> {
    // Room for the KeyValue and its AnyValue under the recursion limit.
    if wt == WireType::LengthDelimited && ctx >= 2 {
        if let Some((kv, rest)) = plain_key_value(buf) {
            out.push(kv);
            *buf = rest;
            return Ok(());
        }
    }
    key_value_at(wt, buf, ctx, 1, Some(out), cut)
}

/// The shape nearly every attribute has on the wire, read in one go: a
/// `KeyValue` (length prefix first) holding its `key`, then its `value`
/// with exactly one scalar (string, bool, int or double) and nothing else.
/// Anything else, malformed input included, is `None` and read by
/// [`key_value_at`], which gives the same result for these shapes (and
/// every error): the general walk cost several times as much per attribute.
#[inline]
fn plain_key_value(buf: &[u8]) -> Option<(KeyValue, &[u8])> {
    let mut b = buf;
    let len = usize::try_from(decode_varint(&mut b).ok()?).ok()?;
    if len > b.len() {
        return None;
    }
    let (mut m, rest) = b.split_at(len);
    let key = tagged_bytes(&mut m, 0x0a)?;
    let value = tagged_bytes(&mut m, 0x12)?;
    if !m.is_empty() {
        return None;
    }
    let value = plain_any_value(value)?;
    Some((
        KeyValue {
            key: attribute_key(wire::utf8(key)?),
            value,
        },
        rest,
    ))
}

/// Semantic-convention attribute keys longer than [`CompactString`]'s 24
/// inline bytes, which would otherwise cost a heap copy in every span that
/// carries them (`http.response.status_code` is on nearly every HTTP span).
const LONG_KEYS: [&str; 14] = [
    "http.response.status_code",
    "http.request.resend_count",
    "http.request.method_original",
    "messaging.destination.name",
    "messaging.kafka.message.key",
    "messaging.batch.message_count",
    "messaging.kafka.consumer.group",
    "process.runtime.description",
    "deployment.environment.name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "db.client.connection.pool.name",
    "messaging.destination.partition.id",
];

/// An attribute key: inline when short, a reference to the static text for
/// the well-known [`LONG_KEYS`] (no allocation either way), else on the heap.
#[inline]
fn attribute_key(k: &str) -> CompactString {
    if k.len() > 24 {
        if let Some(known) = LONG_KEYS.iter().find(|known| **known == k) {
            return CompactString::const_new(known);
        }
    }
    CompactString::from(k)
}

/// A length-delimited field with the key byte `key` at the front of `m`.
#[inline]
fn tagged_bytes<'a>(m: &mut &'a [u8], key: u8) -> Option<&'a [u8]> {
    let (&k, mut b) = m.split_first()?;
    if k != key {
        return None;
    }
    let len = usize::try_from(decode_varint(&mut b).ok()?).ok()?;
    if len > b.len() {
        return None;
    }
    let (v, rest) = b.split_at(len);
    *m = rest;
    Some(v)
}

/// An `AnyValue` message body holding exactly one scalar field.
#[inline]
fn plain_any_value(m: &[u8]) -> Option<AttrValue> {
    let (&key, mut v) = m.split_first()?;
    let value = match key {
        // string_value (1, length-delimited)
        0x0a => {
            let mut s = m;
            let text = wire::utf8(tagged_bytes(&mut s, 0x0a)?)?;
            v = s;
            AttrValue::Str(CompactString::from(text))
        }
        // bool_value (2, varint)
        0x10 => AttrValue::Bool(decode_varint(&mut v).ok()? != 0),
        // int_value (3, varint)
        0x18 => AttrValue::Int(decode_varint(&mut v).ok()? as i64),
        // double_value (4, fixed64)
        0x21 => {
            let (bits, r) = v.split_first_chunk::<8>()?;
            v = r;
            AttrValue::Double(f64::from_bits(u64::from_le_bytes(*bits)))
        }
        _ => return None,
    };
    v.is_empty().then_some(value)
}

/// A `KeyValue` whose value sits at attribute depth `depth`; appended to
/// `out` when the value is built (`None`: checked only, below a cut).
fn key_value_at(
    wt: WireType,
    buf: &mut &[u8],
    ctx: u32,
    depth: usize,
    out: Option<&mut Vec<KeyValue>>,
    cut: &mut u64,
) -> R<()> {
    let build = out.is_some();
    let mut key = CompactString::default();
    let mut value = Any::default();
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => str_field(wt, buf)
            .map(|k| {
                if build {
                    key = attribute_key(k);
                }
            })
            .map_err(|e| at(e, "KeyValue", "key")),
        2 => any_value(wt, buf, ctx, depth, build, &mut value)
            .map_err(|e| at(e, "KeyValue", "value")),
        3 => varint_field(wt, buf)
            .map(drop)
            .map_err(|e| at(e, "KeyValue", "key_strindex")),
        _ => skip_field(wt, tag, buf, ctx),
    })?;
    if let Some(out) = out {
        let (value, c) = value.finish(depth);
        *cut += c;
        out.push(KeyValue { key, value });
    }
    Ok(())
}

/// `AnyValue`'s oneof as decoded so far (a later field replaces it, or
/// merges into it when both are arrays or both key/value lists, as prost
/// does). Arrays and lists below the depth cut only count their elements.
#[derive(Default)]
enum Any {
    #[default]
    Unset,
    Str(CompactString),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    /// A oneof member the model has no value for (`string_value_strindex`).
    Other,
    /// Elements, values cut inside them, and the element count.
    Array(Vec<AttrValue>, u64, usize),
    KvList(Vec<KeyValue>, u64, usize),
}

impl Any {
    /// The model value and the values cut at [`MAX_ANY_VALUE_DEPTH`].
    fn finish(self, depth: usize) -> (AttrValue, u64) {
        match self {
            Any::Unset | Any::Other => (AttrValue::Empty, 0),
            Any::Str(s) => (AttrValue::Str(s), 0),
            Any::Bool(b) => (AttrValue::Bool(b), 0),
            Any::Int(i) => (AttrValue::Int(i), 0),
            Any::Double(d) => (AttrValue::Double(d), 0),
            Any::Bytes(b) => (AttrValue::Bytes(b), 0),
            Any::Array(_, _, n) if depth >= MAX_ANY_VALUE_DEPTH => {
                (AttrValue::Array(Vec::new()), u64::from(n > 0))
            }
            Any::KvList(_, _, n) if depth >= MAX_ANY_VALUE_DEPTH => {
                (AttrValue::KvList(Vec::new()), u64::from(n > 0))
            }
            Any::Array(mut v, c, _) => {
                v.shrink_to_fit();
                (AttrValue::Array(v), c)
            }
            Any::KvList(mut v, c, _) => {
                v.shrink_to_fit();
                (AttrValue::KvList(v), c)
            }
        }
    }
}

/// Merges an `AnyValue` message at attribute depth `depth` into `v`.
/// `build` false: only checked (it sits below a cut).
fn any_value(
    wt: WireType,
    buf: &mut &[u8],
    ctx: u32,
    depth: usize,
    build: bool,
    v: &mut Any,
) -> R<()> {
    // Elements of an array or list at or past the cut are not converted.
    let inner_build = build && depth < MAX_ANY_VALUE_DEPTH;
    message(wt, buf, ctx, |tag, wt, buf, ctx| {
        let r = match tag {
            1 => str_field(wt, buf).map(|s| {
                *v = Any::Str(if build {
                    CompactString::from(s)
                } else {
                    CompactString::default()
                })
            }),
            2 => varint_field(wt, buf).map(|b| *v = Any::Bool(b != 0)),
            3 => varint_field(wt, buf).map(|i| *v = Any::Int(i as i64)),
            4 => fixed64_field(wt, buf).map(|d| *v = Any::Double(f64::from_bits(d))),
            5 => {
                if !matches!(v, Any::Array(..)) {
                    *v = Any::Array(Vec::new(), 0, 0);
                }
                let Any::Array(items, cut, n) = v else {
                    unreachable!()
                };
                array_value(wt, buf, ctx, depth + 1, inner_build, items, cut, n)
            }
            6 => {
                if !matches!(v, Any::KvList(..)) {
                    *v = Any::KvList(Vec::new(), 0, 0);
                }
                let Any::KvList(items, cut, n) = v else {
                    unreachable!()
                };
                kvlist_value(wt, buf, ctx, depth + 1, inner_build, items, cut, n)
            }
            7 => bytes_field(wt, buf)
                .map(|b| *v = Any::Bytes(if build { b.to_vec() } else { Vec::new() })),
            8 => varint_field(wt, buf).map(|_| *v = Any::Other),
            _ => return skip_field(wt, tag, buf, ctx),
        };
        r.map_err(|e| at(e, "AnyValue", "value"))
    })
}

#[allow(clippy::too_many_arguments)]
fn array_value(
    wt: WireType,
    buf: &mut &[u8],
    ctx: u32,
    depth: usize,
    build: bool,
    items: &mut Vec<AttrValue>,
    cut: &mut u64,
    n: &mut usize,
) -> R<()> {
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => {
            let mut item = Any::default();
            any_value(wt, buf, ctx, depth, build, &mut item)
                .map_err(|e| at(e, "ArrayValue", "values"))?;
            *n += 1;
            if build {
                let (value, c) = item.finish(depth);
                *cut += c;
                items.push(value);
            }
            Ok(())
        }
        _ => skip_field(wt, tag, buf, ctx),
    })
}

#[allow(clippy::too_many_arguments)]
fn kvlist_value(
    wt: WireType,
    buf: &mut &[u8],
    ctx: u32,
    depth: usize,
    build: bool,
    items: &mut Vec<KeyValue>,
    cut: &mut u64,
    n: &mut usize,
) -> R<()> {
    message(wt, buf, ctx, |tag, wt, buf, ctx| match tag {
        1 => {
            *n += 1;
            key_value_at(wt, buf, ctx, depth, build.then_some(&mut *items), cut)
                .map_err(|e| at(e, "KeyValueList", "values"))
        }
        _ => skip_field(wt, tag, buf, ctx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue as PKeyValue;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
    use prost::Message;

    fn kv(key: &str, value: Option<any_value::Value>) -> PKeyValue {
        PKeyValue {
            key: key.into(),
            value: Some(AnyValue { value }),
            ..Default::default()
        }
    }

    fn request(attributes: Vec<PKeyValue>) -> Vec<u8> {
        let span = PSpan {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "op".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes,
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        Some(any_value::Value::StringValue("svc".into())),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone(), span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// Every attribute shape, whether the one-go reader takes it (scalars)
    /// or leaves it to the general walk (no value, arrays, bytes, long and
    /// non-ASCII text), decodes to what the `opentelemetry-proto` structs
    /// and `from_otlp` give.
    #[test]
    fn plain_attributes_decode_as_the_general_walk_does() {
        use any_value::Value as V;
        let attributes = vec![
            kv("s", Some(V::StringValue("text".into()))),
            kv("empty", Some(V::StringValue(String::new()))),
            kv("long", Some(V::StringValue("x".repeat(300)))),
            kv("ünï", Some(V::StringValue("çødé ✓".into()))),
            kv("b", Some(V::BoolValue(true))),
            kv("f", Some(V::BoolValue(false))),
            kv("i", Some(V::IntValue(-7))),
            kv("big", Some(V::IntValue(i64::MAX))),
            kv("d", Some(V::DoubleValue(-1.5))),
            kv("nan", Some(V::DoubleValue(f64::NAN))),
            kv("bytes", Some(V::BytesValue(vec![0, 255]))),
            kv(
                "arr",
                Some(V::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(V::IntValue(1)),
                    }],
                })),
            ),
            kv("none", None),
            kv("http.response.status_code", Some(V::IntValue(200))),
            kv("a.key.longer.than.twenty.four", Some(V::IntValue(1))),
        ];
        let body = request(attributes);
        let limits = LimitsConfig::default();
        let direct = decode(&body, &limits).expect("decodes");
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("prost decodes");
        let via_structs = super::super::convert::from_otlp(req, &limits).expect("converts");
        assert_eq!(direct.spans.len(), 2);
        // NaN != NaN: compare the debug text, which spells every value.
        assert_eq!(
            format!("{:?}", direct.spans),
            format!("{:?}", via_structs.spans)
        );
        // The memory charge is what the spans hold: exact for each decoder,
        // smaller for the direct one (exact-size lists, well-known long keys
        // point to static text), so it is checked against the spans
        // themselves rather than against the other decoder's capacities.
        let held: u64 = direct.spans.iter().map(|s| s.heap_bytes() as u64).sum();
        assert_eq!(direct.bytes, held);
        assert!(
            direct.bytes <= via_structs.bytes,
            "{} > {}",
            direct.bytes,
            via_structs.bytes
        );
        assert_eq!(direct.values_truncated, via_structs.values_truncated);
    }

    /// A well-known key longer than the inline 24 bytes costs no allocation
    /// (a reference to the static text); an unknown one is on the heap.
    #[test]
    fn well_known_long_keys_are_not_copied_to_the_heap() {
        let known = attribute_key("http.response.status_code");
        assert_eq!(known, "http.response.status_code");
        assert!(!known.is_heap_allocated());
        let other = attribute_key("a.key.longer.than.twenty.four");
        assert_eq!(other, "a.key.longer.than.twenty.four");
        assert!(other.is_heap_allocated());
        for k in LONG_KEYS {
            assert!(k.len() > 24, "{k} fits inline anyway");
        }
    }

    /// A value that does not end its `KeyValue` (a field after it) and a key
    /// after the value are left to the general walk, with the same result.
    #[test]
    fn unusual_field_orders_fall_back_to_the_general_walk() {
        let mut kv = Vec::new();
        // value first, then key, then an unknown varint field 9.
        let mut value = Vec::new();
        value.extend([0x18, 0x05]); // int_value = 5
        kv.extend([0x12, value.len() as u8]);
        kv.extend(&value);
        kv.extend([0x0a, 0x01, b'k']);
        kv.extend([0x48, 0x01]);
        let framed = [&[kv.len() as u8][..], &kv].concat();
        assert!(plain_key_value(&framed).is_none());
        let mut out = Vec::new();
        let mut buf = &framed[..];
        key_value(WireType::LengthDelimited, &mut buf, 10, &mut out, &mut 0).expect("valid");
        assert!(buf.is_empty());
        assert_eq!(out, vec![KeyValue::new("k", AttrValue::Int(5))]);
    }
}
