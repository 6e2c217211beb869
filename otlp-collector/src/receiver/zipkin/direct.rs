//! Zipkin v2 JSON bytes → [`Span`]s without the intermediate `String`s and
//! `serde_json::Value` tags (issue 19): serde_json parses into structs whose
//! fields are already the model's types (ids as arrays, names, tags and
//! annotation values as `CompactString`, inline up to 24 bytes), and the
//! mapping then moves them into the span.
//!
//! Same result as [`super::decode_via_structs`] (the earlier path, which
//! the v1 JSON and protobuf receivers still share through
//! `convert_with_ids`): the structs mirror `ZSpan`, `ZEndpoint`
//! and `ZAnnotation` field for field (same names, so serde's errors read
//! the same), tags are sorted and de-duplicated as the earlier `BTreeMap`
//! did (the last of a repeated key wins), a non-string tag value becomes
//! the same JSON text, and the mapping rules are the module's (see
//! [`super`]). `tests/fuzz_decoders.rs` (`differential_zipkin_json*`) holds
//! the two to the same spans and errors.

use std::cell::Cell;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::model::{
    AttrValue, CompactString, Event, KeyValue, ResourceAttrs, Span, SpanKind, StatusCode,
};
use crate::receiver::convert::{convert_ids, DecodeError, Decoded};
use crate::receiver::limits::LimitsConfig;
use crate::receiver::otlp_json::direct::hex_into;

/// Decodes a Zipkin v2 JSON span list into validated spans.
pub fn decode(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    let spans: Vec<ZSpan> = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("invalid Zipkin v2 JSON span list: {e}")))?;
    // The scratch list is not held between requests (memory no span budget sees).
    drop(TAG_SCRATCH.take());
    DecodeError::check_span_count(spans.len(), limits)?;
    let mut out = Decoded {
        spans: Vec::with_capacity(spans.len()),
        ..Decoded::default()
    };
    let mut resource = None;
    for (i, z) in spans.into_iter().enumerate() {
        match convert(i, z, &mut resource) {
            Ok(span) => out.push(span, limits, i),
            Err(e) => out.reject(e),
        }
    }
    Ok(out)
}

/// A Zipkin v2 span (the mirror of [`super::ZSpan`]).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ZSpan {
    trace_id: Option<ZId>,
    id: Option<ZId>,
    parent_id: Option<ZId>,
    name: Option<CompactString>,
    kind: Option<ZKind>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    local_endpoint: Option<ZEndpoint>,
    remote_endpoint: Option<ZEndpoint>,
    annotations: Option<Annotations>,
    tags: Option<Tags>,
    shared: Option<bool>,
}

/// A Zipkin endpoint.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ZEndpoint {
    service_name: Option<CompactString>,
    ipv4: Option<CompactString>,
    ipv6: Option<CompactString>,
    port: Option<i64>,
}

/// A Zipkin annotation.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ZAnnotation {
    timestamp: Option<u64>,
    value: Option<CompactString>,
}

/// A hex id of any length, decoded while parsing; the text is kept only
/// when it is not hex (for the rejection message).
enum ZId {
    Empty,
    /// Up to 16 bytes (every valid id), inline.
    Short([u8; 16], usize),
    Long(Vec<u8>),
    NotHex(CompactString),
}

impl<'de> Deserialize<'de> for ZId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ZId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ZId, E> {
                let b = s.as_bytes();
                if b.is_empty() {
                    return Ok(ZId::Empty);
                }
                if b.len().is_multiple_of(2) {
                    let n = b.len() / 2;
                    if n <= 16 {
                        let mut out = [0u8; 16];
                        if hex_into(b, &mut out[..n]) {
                            return Ok(ZId::Short(out, n));
                        }
                    } else {
                        let mut out = vec![0u8; n];
                        if hex_into(b, &mut out) {
                            return Ok(ZId::Long(out));
                        }
                    }
                }
                Ok(ZId::NotHex(s.into()))
            }
        }
        d.deserialize_string(V)
    }
}

/// The id's bytes (empty when absent), or the rejection of span `i`.
fn id_bytes<'a>(i: usize, field: &str, v: &'a Option<ZId>) -> Result<&'a [u8], String> {
    match v {
        None | Some(ZId::Empty) => Ok(&[][..]),
        Some(ZId::Short(b, n)) => Ok(&b[..*n]),
        Some(ZId::Long(b)) => Ok(b.as_slice()),
        Some(ZId::NotHex(s)) => Err(format!("span {i}: {field} {:?} is not hex", s.as_str())),
    }
}

/// `kind`: only the four names map; anything else falls back to the
/// `span.kind` tag.
enum ZKind {
    Client,
    Server,
    Producer,
    Consumer,
    Other,
}

impl<'de> Deserialize<'de> for ZKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ZKind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ZKind, E> {
                Ok(match s {
                    "CLIENT" => ZKind::Client,
                    "SERVER" => ZKind::Server,
                    "PRODUCER" => ZKind::Producer,
                    "CONSUMER" => ZKind::Consumer,
                    _ => ZKind::Other,
                })
            }
        }
        d.deserialize_string(V)
    }
}

/// Annotations as events; `time_ns` holds the annotation's microseconds
/// (0 when absent) until [`convert`] knows the span's start.
#[derive(Default)]
struct Annotations(Vec<Event>);

impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Annotations;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Annotations, A::Error> {
                let mut out = Vec::new();
                while let Some(a) = seq.next_element::<ZAnnotation>()? {
                    out.push(Event {
                        time_ns: a.timestamp.unwrap_or(0),
                        name: a.value.unwrap_or_default(),
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    });
                }
                Ok(Annotations(out))
            }
        }
        d.deserialize_seq(V)
    }
}

thread_local! {
    /// The scratch list tags are collected in (see `Tags`).
    static TAG_SCRATCH: Cell<Vec<KeyValue>> = const { Cell::new(Vec::new()) };
}

/// Capacity of the scratch list kept between spans.
const MAX_SCRATCH: usize = 1024;

/// Tags as string attributes, sorted by key with one entry per key (the
/// last one sent), as the earlier `BTreeMap` held them.
#[derive(Default)]
struct Tags(Vec<KeyValue>);

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tags;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                // Collected in the thread's scratch list, then copied into
                // one list of the exact size (JSON gives no length first).
                let mut out = TAG_SCRATCH.take();
                out.clear();
                while let Some(key) = map.next_key::<CompactString>()? {
                    let TagValue(v) = map.next_value()?;
                    out.push(KeyValue {
                        key,
                        value: AttrValue::Str(v),
                    });
                }
                if !out.is_sorted_by(|a, b| a.key < b.key) {
                    // Stable, so repeated keys keep their order; the kept
                    // entry takes the last one's value.
                    out.sort_by(|a, b| a.key.cmp(&b.key));
                    out.dedup_by(|later, kept| {
                        if later.key == kept.key {
                            std::mem::swap(&mut later.value, &mut kept.value);
                            true
                        } else {
                            false
                        }
                    });
                }
                let mut tags = Vec::with_capacity(out.len());
                tags.append(&mut out);
                let tags = Tags(tags);
                // Kept for the next span unless a huge map grew it.
                if out.capacity() <= MAX_SCRATCH {
                    TAG_SCRATCH.set(out);
                }
                Ok(tags)
            }
        }
        d.deserialize_map(V)
    }
}

/// A tag's value as text: a string as it is, anything else as its compact
/// JSON (through `serde_json::Value`, as the earlier path wrote it).
struct TagValue(CompactString);

impl<'de> Deserialize<'de> for TagValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn text<E>(v: Result<serde_json::Value, E>) -> Result<TagValue, E> {
            v.map(|v| TagValue(v.to_string().into()))
        }
        impl<'de> Visitor<'de> for V {
            type Value = TagValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TagValue, E> {
                Ok(TagValue(s.into()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TagValue, E> {
                text(serde_json::Value::deserialize(v.into_deserializer()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TagValue, E> {
                text(serde_json::Value::deserialize(v.into_deserializer()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TagValue, E> {
                text(serde_json::Value::deserialize(v.into_deserializer()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TagValue, E> {
                text(serde_json::Value::deserialize(v.into_deserializer()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TagValue, E> {
                text(serde_json::Value::deserialize(().into_deserializer()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TagValue, A::Error> {
                text(serde_json::Value::deserialize(SeqAccessDeserializer::new(
                    seq,
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TagValue, A::Error> {
                text(serde_json::Value::deserialize(MapAccessDeserializer::new(
                    map,
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Removes and returns the tag `key`.
fn take(tags: &mut Vec<KeyValue>, key: &str) -> Option<CompactString> {
    let i = tags.binary_search_by(|kv| kv.key.as_str().cmp(key)).ok()?;
    match tags.remove(i).value {
        AttrValue::Str(s) => Some(s),
        _ => None,
    }
}

/// Maps one span, in the order and with the messages of
/// `convert_with_ids`.
fn convert(i: usize, z: ZSpan, resource: &mut Option<ResourceAttrs>) -> Result<Span, String> {
    let trace = id_bytes(i, "traceId", &z.trace_id)?;
    let span_id = id_bytes(i, "id", &z.id)?;
    let parent = id_bytes(i, "parentId", &z.parent_id)?;
    // A 64-bit trace id is left-padded to 128 bits.
    let mut padded = [0u8; 16];
    let trace = if trace.len() == 8 {
        padded[8..].copy_from_slice(trace);
        &padded[..]
    } else {
        trace
    };
    let (trace_id, span_id, parent_span_id) = convert_ids(i, trace, span_id, parent)?;

    let mut tags = z.tags.map(|t| t.0).unwrap_or_default();
    let kind = match z.kind {
        Some(ZKind::Client) => SpanKind::Client,
        Some(ZKind::Server) => SpanKind::Server,
        Some(ZKind::Producer) => SpanKind::Producer,
        Some(ZKind::Consumer) => SpanKind::Consumer,
        Some(ZKind::Other) | None => {
            let tag = tags
                .binary_search_by(|kv| kv.key.as_str().cmp("span.kind"))
                .ok()
                .and_then(|j| match &tags[j].value {
                    AttrValue::Str(s) => Some(s.as_str()),
                    _ => None,
                });
            let is = |name: &str| tag.is_some_and(|t| t.eq_ignore_ascii_case(name));
            if is("client") {
                SpanKind::Client
            } else if is("server") {
                SpanKind::Server
            } else if is("producer") {
                SpanKind::Producer
            } else if is("consumer") {
                SpanKind::Consumer
            } else if is("internal") {
                SpanKind::Internal
            } else {
                SpanKind::Unspecified
            }
        }
    };

    let mut status_code = StatusCode::Unset;
    let mut status_message = String::new();
    if let Some(code) = take(&mut tags, "otel.status_code") {
        status_code = if code.eq_ignore_ascii_case("OK") {
            StatusCode::Ok
        } else if code.eq_ignore_ascii_case("ERROR") {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
    }
    if let Some(desc) = take(&mut tags, "otel.status_description") {
        status_message = desc.into_string();
    }
    if let Some(err) = take(&mut tags, "error") {
        status_code = StatusCode::Error;
        if status_message.is_empty() && err != "true" {
            status_message = err.into_string();
        }
    }
    let scope_name = take(&mut tags, "otel.scope.name")
        .or_else(|| take(&mut tags, "otel.library.name"))
        .unwrap_or_default();
    let scope_version = take(&mut tags, "otel.scope.version")
        .or_else(|| take(&mut tags, "otel.library.version"))
        .unwrap_or_default();

    let mut attributes = tags;
    let local = z.local_endpoint.unwrap_or_default();
    // The attributes appended below, so the list grows once at most.
    let remote = z.remote_endpoint.as_ref();
    let extra = usize::from(local.ipv4.is_some() || local.ipv6.is_some())
        + usize::from(local.port.is_some_and(|p| p > 0))
        + remote.map_or(0, |r| {
            usize::from(r.service_name.as_ref().is_some_and(|s| !s.is_empty()))
                + usize::from(r.ipv4.is_some() || r.ipv6.is_some())
                + usize::from(r.port.is_some_and(|p| p > 0))
        })
        + usize::from(z.shared == Some(true));
    attributes.reserve_exact(extra);
    if let Some(ip) = local.ipv4.or(local.ipv6) {
        attributes.push(KeyValue::new("net.host.ip", AttrValue::Str(ip)));
    }
    if let Some(p) = local.port.filter(|p| *p > 0) {
        attributes.push(KeyValue::new("net.host.port", AttrValue::Int(p)));
    }
    if let Some(remote) = z.remote_endpoint {
        if let Some(s) = remote.service_name.filter(|s| !s.is_empty()) {
            attributes.push(KeyValue::new("peer.service", AttrValue::Str(s)));
        }
        if let Some(ip) = remote.ipv4.or(remote.ipv6) {
            attributes.push(KeyValue::new("net.peer.ip", AttrValue::Str(ip)));
        }
        if let Some(p) = remote.port.filter(|p| *p > 0) {
            attributes.push(KeyValue::new("net.peer.port", AttrValue::Int(p)));
        }
    }
    if z.shared == Some(true) {
        attributes.push(KeyValue::new("zipkin.shared", AttrValue::Bool(true)));
    }

    let service_name = local
        .service_name
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| CompactString::const_new("unknown_service"));
    // Microseconds beyond what u64 nanoseconds hold (past the year 2554)
    // reject the span: saturating would store a time that was never sent.
    let nanos = |what: &str, us: u64| {
        us.checked_mul(1000).ok_or_else(|| {
            format!("span {i}: {what} {us} µs is past the year 2554 (64-bit nanoseconds overflow)")
        })
    };
    // Rejected rather than stamped with the receive time: WAL replay decodes
    // the same bytes again and must produce the same span.
    let start_ns = match z.timestamp {
        Some(t) if t > 0 => nanos("timestamp", t)?,
        _ => {
            return Err(format!(
                "span {i}: no timestamp (Zipkin spans need their start time in epoch microseconds)"
            ))
        }
    };
    let end_ns = start_ns
        .checked_add(nanos("duration", z.duration.unwrap_or(0))?)
        .ok_or_else(|| format!("span {i}: timestamp + duration is past the year 2554"))?;
    let mut events = z.annotations.map(|a| a.0).unwrap_or_default();
    for e in &mut events {
        // An annotation without a time is placed at the span's start.
        e.time_ns = match e.time_ns {
            0 => start_ns,
            us => nanos("annotation timestamp", us)?,
        };
    }
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: String::new(),
        flags: 0,
        name: z.name.unwrap_or_default(),
        kind,
        start_ns,
        end_ns,
        attributes,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status_code,
        status_message,
        resource_attributes: service_resource(resource, &service_name),
        service_name,
        scope_name,
        scope_version,
    })
}

/// A Zipkin span's resource: `service.name` alone. Consecutive spans of
/// one service (a request nearly always holds one service's spans) share
/// the list `last` holds, so a span does not cost a list of its own.
pub(super) fn service_resource(
    last: &mut Option<ResourceAttrs>,
    service: &CompactString,
) -> ResourceAttrs {
    if let Some(r) = last {
        if matches!(r.first(), Some(kv) if matches!(&kv.value, AttrValue::Str(s) if s == service)) {
            return r.clone();
        }
    }
    let r = ResourceAttrs::new(vec![KeyValue::new(
        "service.name",
        AttrValue::Str(service.clone()),
    )]);
    *last = Some(r.clone());
    r
}
