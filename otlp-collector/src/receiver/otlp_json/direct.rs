//! OTLP/JSON bytes → [`Span`]s without the `opentelemetry-proto` structs in
//! between (issue 19): the request is parsed by serde_json into structs
//! whose fields are already the model's types (`CompactString` names, keys
//! and short values inline, ids as arrays, attribute values as
//! [`AttrValue`]), and each span is then moved, not copied, into the model.
//!
//! Same result as [`super::decode_to_request`] followed by
//! [`super::super::convert::from_otlp`], by construction and by test
//! (`tests/fuzz_decoders.rs`, `differential_otlp_json*`):
//! - the structs mirror the earlier ones field for field, with the same
//!   names, aliases, defaults and `null` handling and the same scalar types
//!   (the parent module's), so serde accepts and refuses the same bodies
//!   with the same error text and position;
//! - conversion follows `from_otlp`: ids checked by [`convert_ids`], a bad
//!   link rejects its span, values nested past [`MAX_ANY_VALUE_DEPTH`] are
//!   cut and counted only where `from_otlp` would convert them, limits and
//!   validation through the shared [`Decoded::push`].

use std::cell::Cell;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{null_default, Float, KindEnum, StatusEnum, B64, I64, U32, U64};
use crate::model::{
    AttrValue, CompactString, Event, KeyValue, Link, ResourceAttrs, Span, SpanKind, StatusCode,
};
use crate::receiver::convert::{
    convert_ids, limit_attrs, service_name_of, DecodeError, Decoded, MAX_ANY_VALUE_DEPTH,
};
use crate::receiver::limits::LimitsConfig;

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` into validated spans.
pub fn decode(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    let req: JRequest = serde_json::from_slice(body).map_err(|e| {
        DecodeError::Malformed(format!("invalid OTLP/JSON ExportTraceServiceRequest: {e}"))
    })?;
    // The scratch list is not held between requests (memory no span budget sees).
    drop(KV_SCRATCH.take());
    let count: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .map(|s| s.spans.len())
        .sum();
    DecodeError::check_span_count(count, limits)?;
    let mut out = Decoded {
        spans: Vec::with_capacity(count),
        ..Decoded::default()
    };
    let mut index = 0usize;
    let mut cut = 0u64;
    for rs in req.resource_spans {
        let mut resource_attributes = match rs.resource {
            Some(r) => {
                cut += r.attributes.cut;
                r.attributes.list
            }
            None => Vec::new(),
        };
        let (d, t) = limit_attrs(&mut resource_attributes, limits);
        out.attributes_dropped += d;
        out.values_truncated += t;
        let service_name = service_name_of(&resource_attributes);
        let resource_attributes = ResourceAttrs::new(resource_attributes);
        for ss in rs.scope_spans {
            let (scope_name, scope_version) = match ss.scope {
                Some(s) => (s.name, s.version),
                None => Default::default(),
            };
            for js in ss.spans {
                let i = index;
                index += 1;
                match js.into_span(i, &mut cut) {
                    Ok(mut span) => {
                        span.service_name = service_name.clone();
                        span.resource_attributes = resource_attributes.clone();
                        span.scope_name = scope_name.clone();
                        span.scope_version = scope_version.clone();
                        out.push(span, limits, i);
                    }
                    Err(why) => out.reject(why),
                }
            }
        }
    }
    out.depth_truncated = cut;
    Ok(out)
}

// The structs below mirror the parent module's, one for one: same names
// (serde's error messages name them), same attributes.

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JRequest {
    #[serde(alias = "resource_spans", deserialize_with = "null_default")]
    resource_spans: Vec<JResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JResourceSpans {
    resource: Option<JResource>,
    #[serde(alias = "scope_spans", deserialize_with = "null_default")]
    scope_spans: Vec<JScopeSpans>,
    #[serde(alias = "schema_url", deserialize_with = "null_default")]
    #[allow(dead_code)] // checked, not kept
    schema_url: AnyStr,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JResource {
    #[serde(deserialize_with = "null_default")]
    attributes: Attrs,
    #[serde(alias = "dropped_attributes_count")]
    #[allow(dead_code)] // checked, not kept (as in the earlier path)
    dropped_attributes_count: U32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JScopeSpans {
    scope: Option<JScope>,
    #[serde(deserialize_with = "null_default")]
    spans: Vec<JSpan>,
    #[serde(alias = "schema_url", deserialize_with = "null_default")]
    #[allow(dead_code)] // checked, not kept
    schema_url: AnyStr,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JScope {
    #[serde(deserialize_with = "null_default")]
    name: CompactString,
    #[serde(deserialize_with = "null_default")]
    version: CompactString,
    /// Checked, not kept (the model has no scope attributes).
    #[serde(deserialize_with = "null_default")]
    #[allow(dead_code)]
    attributes: Attrs,
    #[serde(alias = "dropped_attributes_count")]
    #[allow(dead_code)]
    dropped_attributes_count: U32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JSpan {
    #[serde(alias = "trace_id")]
    trace_id: HexId<16>,
    #[serde(alias = "span_id")]
    span_id: HexId<8>,
    #[serde(alias = "trace_state", deserialize_with = "null_default")]
    trace_state: String,
    #[serde(alias = "parent_span_id")]
    parent_span_id: HexId<8>,
    flags: U32,
    #[serde(deserialize_with = "null_default")]
    name: CompactString,
    kind: KindEnum,
    #[serde(alias = "start_time_unix_nano")]
    start_time_unix_nano: U64,
    #[serde(alias = "end_time_unix_nano")]
    end_time_unix_nano: U64,
    #[serde(deserialize_with = "null_default")]
    attributes: Attrs,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: U32,
    #[serde(deserialize_with = "null_default")]
    events: Events,
    #[serde(alias = "dropped_events_count")]
    dropped_events_count: U32,
    #[serde(deserialize_with = "null_default")]
    links: Vec<JLink>,
    #[serde(alias = "dropped_links_count")]
    dropped_links_count: U32,
    status: Option<JStatus>,
}

impl JSpan {
    /// The span without its resource and scope (the caller adds them), or
    /// why it is rejected; adds to `cut` the values cut at the depth limit
    /// in what `from_otlp` converts for it (nothing of a span with bad ids,
    /// only the good links of a span with a bad link).
    fn into_span(self, i: usize, cut: &mut u64) -> Result<Span, String> {
        let (trace_id, span_id, parent_span_id) = convert_ids(
            i,
            self.trace_id.bytes(),
            self.span_id.bytes(),
            self.parent_span_id.bytes(),
        )?;
        // Every link is converted before a bad one rejects the span; the
        // last bad one is reported.
        let mut bad_link = None;
        let mut links = Vec::with_capacity(self.links.len());
        for l in self.links {
            match (l.trace_id.0, l.span_id.0) {
                (Some(trace_id), Some(span_id)) => {
                    *cut += l.attributes.cut;
                    links.push(Link {
                        trace_id,
                        span_id,
                        trace_state: l.trace_state,
                        attributes: l.attributes.list,
                        dropped_attributes_count: l.dropped_attributes_count.0,
                        flags: l.flags.0,
                    });
                }
                (t, s) => {
                    bad_link = Some(format!(
                        "span {i}: a link has a trace_id of {} bytes / span_id of {} bytes (need 16 / 8)",
                        if t.is_some() { 16 } else { 0 },
                        if s.is_some() { 8 } else { 0 },
                    ));
                }
            }
        }
        if let Some(e) = bad_link {
            return Err(e);
        }
        *cut += self.attributes.cut + self.events.cut;
        let (status_code, status_message) = match self.status {
            Some(s) => (StatusCode::from_i32(s.code.0), s.message),
            None => (StatusCode::Unset, String::new()),
        };
        Ok(Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state: self.trace_state,
            flags: self.flags.0,
            name: self.name,
            kind: SpanKind::from_i32(self.kind.0),
            start_ns: self.start_time_unix_nano.0,
            end_ns: self.end_time_unix_nano.0,
            attributes: self.attributes.list,
            dropped_attributes_count: self.dropped_attributes_count.0,
            events: self.events.list,
            dropped_events_count: self.dropped_events_count.0,
            links,
            dropped_links_count: self.dropped_links_count.0,
            status_code,
            status_message,
            service_name: CompactString::default(),
            resource_attributes: ResourceAttrs::default(),
            scope_name: CompactString::default(),
            scope_version: CompactString::default(),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JEvent {
    #[serde(alias = "time_unix_nano")]
    time_unix_nano: U64,
    #[serde(deserialize_with = "null_default")]
    name: CompactString,
    #[serde(deserialize_with = "null_default")]
    attributes: Attrs,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: U32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JLink {
    #[serde(alias = "trace_id")]
    trace_id: HexId<16>,
    #[serde(alias = "span_id")]
    span_id: HexId<8>,
    #[serde(alias = "trace_state", deserialize_with = "null_default")]
    trace_state: String,
    #[serde(deserialize_with = "null_default")]
    attributes: Attrs,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: U32,
    flags: U32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JStatus {
    #[serde(deserialize_with = "null_default")]
    message: String,
    code: StatusEnum,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JKeyValue {
    #[serde(deserialize_with = "null_default")]
    key: CompactString,
    value: Option<JAnyValue>,
}

/// Capacity of the scratch list kept between attribute lists.
const MAX_SCRATCH: usize = 1024;

/// An attribute list as the model holds it, and how many values in it were
/// cut at [`MAX_ANY_VALUE_DEPTH`] (counted where it is converted).
#[derive(Default)]
struct Attrs {
    list: Vec<KeyValue>,
    cut: u64,
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Attrs;
            // serde's text for a `Vec`, which the earlier structs had here.
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Attrs, A::Error> {
                // JSON says nothing of an array's length: collect into the
                // thread's scratch list, then copy into one list of the
                // exact size (one allocation instead of a growing list's
                // three or four, and no spare capacity held in the queue).
                // A nested list finds the scratch taken and uses its own.
                let mut buf = KV_SCRATCH.take();
                buf.clear();
                let mut cut = 0;
                while let Some(kv) = seq.next_element::<JKeyValue>()? {
                    let (value, c) = kv.value.map_or((AttrValue::Empty, 0), |v| (v.value, v.cut));
                    cut += c;
                    buf.push(KeyValue { key: kv.key, value });
                }
                let mut list = Vec::with_capacity(buf.len());
                list.append(&mut buf);
                // Kept for the next list unless a huge one grew it (memory
                // a thread would otherwise hold for good).
                if buf.capacity() <= MAX_SCRATCH {
                    KV_SCRATCH.set(buf);
                }
                Ok(Attrs { list, cut })
            }
        }
        d.deserialize_seq(V)
    }
}

/// A span's events as the model holds them, and their values cut.
#[derive(Default)]
struct Events {
    list: Vec<Event>,
    cut: u64,
}

impl<'de> Deserialize<'de> for Events {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Events;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Events, A::Error> {
                let mut out = Events::default();
                while let Some(e) = seq.next_element::<JEvent>()? {
                    out.cut += e.attributes.cut;
                    out.list.push(Event {
                        time_ns: e.time_unix_nano.0,
                        name: e.name,
                        attributes: e.attributes.list,
                        dropped_attributes_count: e.dropped_attributes_count.0,
                    });
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// The elements of an `arrayValue`, and their values cut.
#[derive(Default)]
struct AnyList {
    list: Vec<AttrValue>,
    cut: u64,
}

impl<'de> Deserialize<'de> for AnyList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyList, A::Error> {
                let mut out = AnyList::default();
                while let Some(v) = seq.next_element::<JAnyValue>()? {
                    out.cut += v.cut;
                    out.list.push(v.value);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// An `AnyValue` as the model holds it, and how many values in it were cut.
struct JAnyValue {
    value: AttrValue,
    cut: u64,
}

thread_local! {
    /// How many `AnyValue`s the current thread is decoding inside each other.
    static ANY_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The scratch list attribute lists are collected in (see `Attrs`);
    /// at most [`MAX_SCRATCH`] entries are kept between lists.
    static KV_SCRATCH: Cell<Vec<KeyValue>> = const { Cell::new(Vec::new()) };
}

impl<'de> Deserialize<'de> for JAnyValue {
    /// Values below the level that conversion cuts at are skipped unread,
    /// as the earlier path does (serde_json skips without recursing, so no
    /// nesting depth makes the request fail); the level just below the cut
    /// is read (and so checked) but not kept.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let depth = ANY_DEPTH.get();
        if depth > MAX_ANY_VALUE_DEPTH {
            de::IgnoredAny::deserialize(d)?;
            return Ok(JAnyValue {
                value: AttrValue::Empty,
                cut: 0,
            });
        }
        ANY_DEPTH.set(depth + 1);
        let r = JAnyFields::deserialize(d);
        ANY_DEPTH.set(depth);
        Ok(r?.into_value(depth + 1))
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JAnyFields {
    #[serde(alias = "string_value")]
    string_value: Option<CompactString>,
    #[serde(alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(alias = "int_value")]
    int_value: Option<I64>,
    #[serde(alias = "double_value")]
    double_value: Option<Float>,
    #[serde(alias = "array_value")]
    array_value: Option<JValues<AnyList>>,
    #[serde(alias = "kvlist_value")]
    kvlist_value: Option<JValues<Attrs>>,
    #[serde(alias = "bytes_value")]
    bytes_value: Option<B64>,
}

impl JAnyFields {
    /// The value at nesting `level` (1 for an attribute's own value), with
    /// the earlier path's precedence when several fields are set, and its
    /// cut as `convert::convert_value` makes it: an array or kvlist at
    /// [`MAX_ANY_VALUE_DEPTH`] is kept empty and counted if it had values;
    /// deeper ones are never converted (their parent was cut).
    fn into_value(self, level: usize) -> JAnyValue {
        let (value, cut) = if let Some(s) = self.string_value {
            (AttrValue::Str(s), 0)
        } else if let Some(b) = self.bool_value {
            (AttrValue::Bool(b), 0)
        } else if let Some(i) = self.int_value {
            (AttrValue::Int(i.0), 0)
        } else if let Some(d) = self.double_value {
            (AttrValue::Double(d.0), 0)
        } else if let Some(a) = self.array_value {
            if level >= MAX_ANY_VALUE_DEPTH {
                let cut = u64::from(level == MAX_ANY_VALUE_DEPTH && !a.values.list.is_empty());
                (AttrValue::Array(Vec::new()), cut)
            } else {
                (AttrValue::Array(a.values.list), a.values.cut)
            }
        } else if let Some(kv) = self.kvlist_value {
            if level >= MAX_ANY_VALUE_DEPTH {
                let cut = u64::from(level == MAX_ANY_VALUE_DEPTH && !kv.values.list.is_empty());
                (AttrValue::KvList(Vec::new()), cut)
            } else {
                (AttrValue::KvList(kv.values.list), kv.values.cut)
            }
        } else if let Some(b) = self.bytes_value {
            (AttrValue::Bytes(b.0), 0)
        } else {
            (AttrValue::Empty, 0)
        };
        JAnyValue { value, cut }
    }
}

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de> + Default")]
struct JValues<T> {
    #[serde(default, deserialize_with = "null_default")]
    values: T,
}

/// A string that is checked (a string or `null`) and not kept.
#[derive(Default)]
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AnyStr;
            // serde's text for a `String`, which the earlier structs had here.
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_string(V)
    }
}

/// A trace (`N` = 16) or span (`N` = 8) id in hex, any case; `None` when
/// empty or `null`. The rules and the error of the parent module's `HexId`,
/// without allocating: anything but `2 * N` hex digits makes the request
/// invalid.
#[derive(Default)]
struct HexId<const N: usize>(Option<[u8; N]>);

impl<const N: usize> HexId<N> {
    fn bytes(&self) -> &[u8] {
        match &self.0 {
            Some(b) => b,
            None => &[],
        }
    }
}

impl<'de, const N: usize> Deserialize<'de> for HexId<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The id, or the error's text: the error is raised once the
        /// string has been read, as the earlier `HexId` raised it, so that
        /// serde_json gives it the same position.
        struct Id<const N: usize>(Result<HexId<N>, String>);
        struct V<const N: usize>;
        impl<const N: usize> Visitor<'_> for V<N> {
            type Value = Id<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id<N>, E> {
                if s.is_empty() {
                    return Ok(Id(Ok(HexId(None))));
                }
                let mut out = [0u8; N];
                if s.len() == 2 * N && hex_into(s.as_bytes(), &mut out) {
                    return Ok(Id(Ok(HexId(Some(out)))));
                }
                let shown: String = s.chars().take(64).collect();
                Ok(Id(Err(format!(
                    "id {shown:?} is not {} hex digits (OTLP/JSON ids are hex, not base64)",
                    2 * N
                ))))
            }
        }
        impl<'de, const N: usize> Deserialize<'de> for Id<N> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_string(V::<N>)
            }
        }
        match Option::<Id<N>>::deserialize(d)? {
            None => Ok(HexId(None)),
            Some(Id(id)) => id.map_err(de::Error::custom),
        }
    }
}

/// Decodes hex digits (either case) into `out` (`s` is twice its length);
/// false if one is not a hex digit.
pub(crate) fn hex_into(s: &[u8], out: &mut [u8]) -> bool {
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (o, p) in out.iter_mut().zip(s.chunks_exact(2)) {
        match (nib(p[0]), nib(p[1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(body: &[u8], limits: &LimitsConfig) -> String {
        outcome(
            super::super::decode_to_request(body)
                .map_err(DecodeError::Malformed)
                .and_then(|r| crate::receiver::convert::from_otlp(r, limits)),
        )
    }

    fn outcome(d: Result<Decoded, DecodeError>) -> String {
        match d {
            Ok(d) => format!(
                "ok {:?} {} {:?} {} {} {}",
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

    #[test]
    fn same_as_the_struct_path_on_hand_made_bodies() {
        let l = LimitsConfig::default();
        for body in [
            &br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"s"}}]},"scopeSpans":[{"scope":{"name":"l","version":"1"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"n","startTimeUnixNano":"1","endTimeUnixNano":2,"kind":"SPAN_KIND_SERVER","status":{"code":2,"message":"m"},"attributes":[{"key":"a","value":{"arrayValue":{"values":[{"intValue":"3"},{}]}}}],"events":[{"timeUnixNano":"1","name":"e"}],"links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b170"}]}]}]}]}"#[..],
            br#"{}"#,
            br#"[]"#,
            br#"{"resourceSpans":[[null,[[[]]]]]}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a","name":"b"}]}]}]}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00","spanId":"x"}]}]}]}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":null},{"value":{"arrayValue":{"values":[null]}}}]}]}]}]}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"links":[{"traceId":"5b8efff798038103d269b633813fc60c"}],"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b170","startTimeUnixNano":1}]}]}]}"#,
            br#"{"resourceSpans":[{"schemaUrl":5}]}"#,
            br#"{"resourceSpans":[{"resource":5}]}"#,
        ] {
            assert_eq!(outcome(decode(body, &l)), old(body, &l), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn deep_values_cut_and_counted_as_the_struct_path_does() {
        let l = LimitsConfig::default();
        for depth in [14, 15, 16, 17, 18, 40, 3000] {
            for leaf in [
                r#"{"stringValue":"x"}"#,
                r#"{"intValue":"bad"}"#,
                "null",
                "{}",
            ] {
                let v = format!(
                    r#"{}{leaf}{}"#,
                    r#"{"kvlistValue":{"values":[{"key":"k","value":{"arrayValue":{"values":["#
                        .repeat(depth / 2),
                    "]}}}]}}".repeat(depth / 2)
                );
                let body = format!(
                    r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"r","value":{v}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b170","startTimeUnixNano":1,"attributes":[{{"key":"deep","value":{v}}},{{"key":"both","value":{{"stringValue":"s","arrayValue":{{"values":[{v}]}}}}}}]}}]}}]}}]}}"#
                );
                assert_eq!(
                    outcome(decode(body.as_bytes(), &l)),
                    old(body.as_bytes(), &l),
                    "depth {depth} leaf {leaf}"
                );
            }
        }
    }
}
