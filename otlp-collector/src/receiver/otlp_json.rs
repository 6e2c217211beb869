//! OTLP/JSON decoding per the OTLP specification's JSON rules, which differ
//! from a plain serde mapping: trace and span ids are hex (any case), other
//! `bytes` are base64, 64-bit integers arrive as strings or numbers, enums as
//! integers (names are accepted too), unknown fields are ignored, keys may be
//! lowerCamelCase or the proto field names, `null` is the default.
//!
//! Two decoders share these rules (the scalar types below):
//! - [`decode`] ([`direct`]), what the receivers and WAL replay use: builds
//!   [`crate::model::Span`]s straight from the JSON (issue 19);
//! - [`decode_to_request`], the earlier path: serde into mirror structs, then
//!   the `opentelemetry-proto` request, then [`super::convert::from_otlp`].
//!   Kept as the oracle of the differential tests (`tests/fuzz_decoders.rs`,
//!   `differential_otlp_json*`: the same spans, counts and error text on
//!   generated, mutated and hostile bodies) and for the fuzz test's round trips.

pub mod direct;

pub use direct::decode;

use std::cell::Cell;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue as PKeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, ResourceSpans, ScopeSpans, Span as PSpan, Status,
};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::convert::MAX_ANY_VALUE_DEPTH;

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` into the
/// `opentelemetry-proto` request (the earlier path, see the module docs).
pub fn decode_to_request(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let req: JRequest = serde_json::from_slice(body)
        .map_err(|e| format!("invalid OTLP/JSON ExportTraceServiceRequest: {e}"))?;
    Ok(ExportTraceServiceRequest {
        resource_spans: req
            .resource_spans
            .into_iter()
            .map(JResourceSpans::into_proto)
            .collect(),
    })
}

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
    schema_url: String,
}

impl JResourceSpans {
    fn into_proto(self) -> ResourceSpans {
        ResourceSpans {
            resource: self.resource.map(|r| Resource {
                attributes: kvs(r.attributes),
                dropped_attributes_count: r.dropped_attributes_count.0,
                entity_refs: Vec::new(),
            }),
            scope_spans: self
                .scope_spans
                .into_iter()
                .map(JScopeSpans::into_proto)
                .collect(),
            schema_url: self.schema_url,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JResource {
    #[serde(deserialize_with = "null_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: U32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JScopeSpans {
    scope: Option<JScope>,
    #[serde(deserialize_with = "null_default")]
    spans: Vec<JSpan>,
    #[serde(alias = "schema_url", deserialize_with = "null_default")]
    schema_url: String,
}

impl JScopeSpans {
    fn into_proto(self) -> ScopeSpans {
        ScopeSpans {
            scope: self.scope.map(|s| InstrumentationScope {
                name: s.name,
                version: s.version,
                attributes: kvs(s.attributes),
                dropped_attributes_count: s.dropped_attributes_count.0,
            }),
            spans: self.spans.into_iter().map(JSpan::into_proto).collect(),
            schema_url: self.schema_url,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JScope {
    #[serde(deserialize_with = "null_default")]
    name: String,
    #[serde(deserialize_with = "null_default")]
    version: String,
    #[serde(deserialize_with = "null_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count")]
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
    name: String,
    kind: KindEnum,
    #[serde(alias = "start_time_unix_nano")]
    start_time_unix_nano: U64,
    #[serde(alias = "end_time_unix_nano")]
    end_time_unix_nano: U64,
    #[serde(deserialize_with = "null_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: U32,
    #[serde(deserialize_with = "null_default")]
    events: Vec<JEvent>,
    #[serde(alias = "dropped_events_count")]
    dropped_events_count: U32,
    #[serde(deserialize_with = "null_default")]
    links: Vec<JLink>,
    #[serde(alias = "dropped_links_count")]
    dropped_links_count: U32,
    status: Option<JStatus>,
}

impl JSpan {
    fn into_proto(self) -> PSpan {
        PSpan {
            trace_id: self.trace_id.0,
            span_id: self.span_id.0,
            trace_state: self.trace_state,
            parent_span_id: self.parent_span_id.0,
            flags: self.flags.0,
            name: self.name,
            kind: self.kind.0,
            start_time_unix_nano: self.start_time_unix_nano.0,
            end_time_unix_nano: self.end_time_unix_nano.0,
            attributes: kvs(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count.0,
            events: self
                .events
                .into_iter()
                .map(|e| span::Event {
                    time_unix_nano: e.time_unix_nano.0,
                    name: e.name,
                    attributes: kvs(e.attributes),
                    dropped_attributes_count: e.dropped_attributes_count.0,
                })
                .collect(),
            dropped_events_count: self.dropped_events_count.0,
            links: self
                .links
                .into_iter()
                .map(|l| span::Link {
                    trace_id: l.trace_id.0,
                    span_id: l.span_id.0,
                    trace_state: l.trace_state,
                    attributes: kvs(l.attributes),
                    dropped_attributes_count: l.dropped_attributes_count.0,
                    flags: l.flags.0,
                })
                .collect(),
            dropped_links_count: self.dropped_links_count.0,
            status: self.status.map(|s| Status {
                message: s.message,
                code: s.code.0,
            }),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JEvent {
    #[serde(alias = "time_unix_nano")]
    time_unix_nano: U64,
    #[serde(deserialize_with = "null_default")]
    name: String,
    #[serde(deserialize_with = "null_default")]
    attributes: Vec<JKeyValue>,
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
    attributes: Vec<JKeyValue>,
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
    key: String,
    value: Option<JAnyValue>,
}

/// An `AnyValue`, or a placeholder for one nested too deeply to matter:
/// conversion cuts at [`MAX_ANY_VALUE_DEPTH`], so values below the next level
/// are skipped unread (serde_json skips without recursing, so no nesting
/// depth makes the request fail).
enum JAnyValue {
    Fields(JAnyFields),
    Skipped,
}

thread_local! {
    /// How many `AnyValue`s the current thread is decoding inside each other.
    static ANY_DEPTH: Cell<usize> = const { Cell::new(0) };
}

impl<'de> Deserialize<'de> for JAnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let depth = ANY_DEPTH.get();
        if depth > MAX_ANY_VALUE_DEPTH {
            de::IgnoredAny::deserialize(d)?;
            return Ok(JAnyValue::Skipped);
        }
        ANY_DEPTH.set(depth + 1);
        let r = JAnyFields::deserialize(d);
        ANY_DEPTH.set(depth);
        r.map(JAnyValue::Fields)
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JAnyFields {
    #[serde(alias = "string_value")]
    string_value: Option<String>,
    #[serde(alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(alias = "int_value")]
    int_value: Option<I64>,
    #[serde(alias = "double_value")]
    double_value: Option<Float>,
    #[serde(alias = "array_value")]
    array_value: Option<JValues<JAnyValue>>,
    #[serde(alias = "kvlist_value")]
    kvlist_value: Option<JValues<JKeyValue>>,
    #[serde(alias = "bytes_value")]
    bytes_value: Option<B64>,
}

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct JValues<T> {
    #[serde(default, deserialize_with = "null_default")]
    values: Vec<T>,
}

fn kvs(v: Vec<JKeyValue>) -> Vec<PKeyValue> {
    v.into_iter()
        .map(|kv| PKeyValue {
            key: kv.key,
            value: kv.value.map(any),
            ..Default::default()
        })
        .collect()
}

fn any(v: JAnyValue) -> AnyValue {
    use any_value::Value as V;
    let v = match v {
        JAnyValue::Fields(f) => f,
        JAnyValue::Skipped => return AnyValue { value: None },
    };
    let value = if let Some(s) = v.string_value {
        Some(V::StringValue(s))
    } else if let Some(b) = v.bool_value {
        Some(V::BoolValue(b))
    } else if let Some(i) = v.int_value {
        Some(V::IntValue(i.0))
    } else if let Some(d) = v.double_value {
        Some(V::DoubleValue(d.0))
    } else if let Some(a) = v.array_value {
        Some(V::ArrayValue(ArrayValue {
            values: a.values.into_iter().map(any).collect(),
        }))
    } else if let Some(kv) = v.kvlist_value {
        Some(V::KvlistValue(KeyValueList {
            values: kvs(kv.values),
        }))
    } else {
        v.bytes_value.map(|b| V::BytesValue(b.0))
    };
    AnyValue { value }
}

/// `null` means the default value, as protobuf JSON says.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer given as a JSON number or a decimal string (64-bit values are
/// strings in proto3 JSON), parsed wide and then checked against the field's
/// type: a value out of range (`"18446744073709551616"`, `"-1"` for a
/// `fixed64`) makes the request invalid instead of wrapping.
fn wide_int<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = i128;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer as a number or a string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(v as i128)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(v as i128)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
            if v.fract() == 0.0 && v.abs() < 1.9e19 {
                Ok(v as i128)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
            v.trim()
                .parse::<i128>()
                .map_err(|_| E::custom(format!("{v:?} is not an integer")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<i128, E> {
            Ok(0)
        }
    }
    d.deserialize_any(V)
}

/// An integer field of a fixed width; see [`wide_int`].
macro_rules! json_int {
    ($name:ident, $t:ty, $what:literal) => {
        #[derive(Default, Clone, Copy)]
        struct $name($t);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = wide_int(d)?;
                <$t>::try_from(n)
                    .map($name)
                    .map_err(|_| de::Error::custom(format!("{n} is out of range for {}", $what)))
            }
        }
    };
}

json_int!(U64, u64, "a fixed64 (0 to 18446744073709551615)");
json_int!(I64, i64, "an int64");
json_int!(U32, u32, "a uint32");

/// A double as a number or a string (including "NaN", "Infinity", "-Infinity").
struct Float(f64);

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Float;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a numeric string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Float, E> {
                Ok(Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Float, E> {
                match v {
                    "NaN" => Ok(Float(f64::NAN)),
                    "Infinity" => Ok(Float(f64::INFINITY)),
                    "-Infinity" => Ok(Float(f64::NEG_INFINITY)),
                    _ => v
                        .trim()
                        .parse::<f64>()
                        .map(Float)
                        .map_err(|_| E::custom(format!("{v:?} is not a number"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A trace (`N` = 16) or span (`N` = 8) id in hex, any case, as the OTLP
/// specification says (not base64). Empty or `null` is the proto default
/// (no parent; a missing trace or span id is rejected for that span only);
/// anything else that is not exactly `2 * N` hex digits makes the request
/// invalid, so a malformed parent id never turns a child into a root.
#[derive(Default)]
struct HexId<const N: usize>(Vec<u8>);

impl<'de, const N: usize> Deserialize<'de> for HexId<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        if s.is_empty() {
            return Ok(HexId(Vec::new()));
        }
        match decode_hex(&s) {
            Some(b) if b.len() == N => Ok(HexId(b)),
            _ => {
                let shown: String = s.chars().take(64).collect();
                Err(de::Error::custom(format!(
                    "id {shown:?} is not {} hex digits (OTLP/JSON ids are hex, not base64)",
                    2 * N
                )))
            }
        }
    }
}

/// Decodes hex (either case); `None` if not valid hex.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    b.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// Base64 bytes (standard or URL-safe alphabet, padding optional).
struct B64(Vec<u8>);

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        let trimmed = s.trim_end_matches('=');
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
            .map(B64)
            .map_err(|e| de::Error::custom(format!("bytesValue is not base64: {e}")))
    }
}

/// An enum given as its number or its name.
macro_rules! json_enum {
    ($name:ident, $($s:literal => $v:literal),*) => {
        #[derive(Default)]
        struct $name(i32);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw { N(i64), S(String), Null(()) }
                match Raw::deserialize(d)? {
                    Raw::N(n) => i32::try_from(n).map($name).map_err(|_| {
                        de::Error::custom(format!("enum value {n} is out of range"))
                    }),
                    Raw::Null(()) => Ok($name(0)),
                    Raw::S(s) => match s.as_str() {
                        $($s => Ok($name($v)),)*
                        other => other.parse::<i32>().map($name).map_err(|_| {
                            de::Error::custom(format!("unknown enum value {other:?}"))
                        }),
                    },
                }
            }
        }
    };
}

json_enum!(KindEnum,
    "SPAN_KIND_UNSPECIFIED" => 0, "SPAN_KIND_INTERNAL" => 1, "SPAN_KIND_SERVER" => 2,
    "SPAN_KIND_CLIENT" => 3, "SPAN_KIND_PRODUCER" => 4, "SPAN_KIND_CONSUMER" => 5);
json_enum!(StatusEnum,
    "STATUS_CODE_UNSET" => 0, "STATUS_CODE_OK" => 1, "STATUS_CODE_ERROR" => 2);

/// The OTLP/JSON `ExportTraceServiceResponse`.
pub fn encode_response(rejected: u64, error_message: &str) -> Vec<u8> {
    let v = if rejected == 0 && error_message.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({
            "partialSuccess": {"rejectedSpans": rejected.to_string(), "errorMessage": error_message}
        })
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A `google.rpc.Status` in JSON.
pub fn encode_status(code: i32, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"code": code, "message": message})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_shapes_decode() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
          "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","unknownField":1},
            "spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
              "parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span","startTimeUnixNano":"1544712660000000000",
              "endTimeUnixNano":1544712661000000000,"kind":2,"flags":257,
              "attributes":[{"key":"i","value":{"intValue":"-42"}},{"key":"d","value":{"doubleValue":"1.5"}},
                {"key":"b","value":{"bytesValue":"AQID"}},{"key":"a","value":{"arrayValue":{"values":[{"boolValue":true}]}}},
                {"key":"m","value":{"kvlistValue":{"values":[{"key":"x","value":{"stringValue":"y"}}]}}}],
              "status":{"code":"STATUS_CODE_ERROR","message":"boom"},
              "events":[{"timeUnixNano":"1544712660500000000","name":"e"}],
              "links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b170"}]}]}]}]}"#;
        let req = decode_to_request(body).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.trace_id[0], 0x5b);
        assert_eq!(s.span_id.len(), 8);
        assert_eq!(s.kind, 2);
        assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(s.attributes.len(), 5);
        match &s.attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::IntValue(-42)) => {}
            other => panic!("{other:?}"),
        }
        match &s.attributes[2].value.as_ref().unwrap().value {
            Some(any_value::Value::BytesValue(b)) => assert_eq!(b, &vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.links[0].span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x70]
        );
    }

    #[test]
    fn empty_and_snake_case_and_errors() {
        assert!(decode_to_request(b"{}").unwrap().resource_spans.is_empty());
        let r = decode_to_request(br#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"","span_id":"0102030405060708","parent_span_id":null}]}]}]}"#).unwrap();
        let s = &r.resource_spans[0].scope_spans[0].spans[0];
        assert!(
            s.trace_id.is_empty() && s.parent_span_id.is_empty(),
            "an empty id is the proto default (the span is then rejected alone)"
        );
        assert_eq!(s.span_id.len(), 8);
        let err = decode_to_request(b"{\"resourceSpans\":[").unwrap_err();
        assert!(err.contains("invalid OTLP/JSON"), "{err}");
        assert!(decode_to_request(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#
        )
        .is_err());
    }

    fn one_span(fields: &str) -> Result<ExportTraceServiceRequest, String> {
        decode_to_request(
            format!(
                r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"{fields}}}]}}]}}]}}"#
            )
            .as_bytes(),
        )
    }

    #[test]
    fn ids_must_be_hex_of_the_right_length() {
        // Base64 (what a generic protobuf-JSON encoder writes), wrong length,
        // non-hex: the whole request is refused, never a silent root span.
        for bad in [
            r#","parentSpanId":"7uGbfsPBsXQ=""#,
            r#","parentSpanId":"eee19b7ec3c1b1""#,
            r#","parentSpanId":"eee19b7ec3c1b17400""#,
            r#","parentSpanId":"zze19b7ec3c1b174""#,
            r#","links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"abc"}]"#,
            r#","links":[{"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"eee19b7ec3c1b174"}]"#,
        ] {
            let e = one_span(bad)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(e.contains("hex digits"), "{e}");
        }
        let e = decode_to_request(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103","spanId":"eee19b7ec3c1b174"}]}]}]}"#).unwrap_err();
        assert!(e.contains("32 hex digits"), "{e}");
        let ok = one_span(r#","parentSpanId":"EEE19B7EC3C1B173""#).unwrap();
        assert_eq!(
            ok.resource_spans[0].scope_spans[0].spans[0].parent_span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73]
        );
    }

    #[test]
    fn integers_out_of_range_are_refused_not_wrapped() {
        for bad in [
            r#","startTimeUnixNano":"18446744073709551616""#,
            r#","startTimeUnixNano":"-1""#,
            r#","endTimeUnixNano":-5"#,
            r#","events":[{"timeUnixNano":"-1"}]"#,
            r#","attributes":[{"key":"k","value":{"intValue":"9223372036854775808"}}]"#,
            r#","attributes":[{"key":"k","value":{"intValue":"-9223372036854775809"}}]"#,
            r#","flags":4294967296"#,
            r#","droppedAttributesCount":-1"#,
            r#","kind":4294967298"#,
        ] {
            let e = one_span(bad)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(e.contains("out of range"), "{bad}: {e}");
        }
        let r = one_span(
            r#","startTimeUnixNano":"18446744073709551615","attributes":[{"key":"k","value":{"intValue":"-9223372036854775808"}}]"#,
        )
        .unwrap();
        let s = &r.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.start_time_unix_nano, u64::MAX);
        match &s.attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::IntValue(i)) => assert_eq!(*i, i64::MIN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_nesting_depth_decodes_and_is_cut_below_the_limit() {
        // 5,000 arrays deep: far past serde_json's own recursion limit (128).
        let depth = 5000;
        let v = format!(
            r#"{}{{"stringValue":"leaf"}}{}"#,
            r#"{"arrayValue":{"values":["#.repeat(depth),
            "]}}".repeat(depth)
        );
        let r = one_span(&format!(r#","attributes":[{{"key":"deep","value":{v}}},{{"key":"ok","value":{{"boolValue":true}}}}]"#))
            .unwrap();
        let s = &r.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.attributes.len(), 2);
        // Kept down to one level below the cut.
        let mut cur = s.attributes[0].value.clone().unwrap();
        let mut levels = 0;
        while let Some(any_value::Value::ArrayValue(a)) = cur.value {
            levels += 1;
            cur = a.values[0].clone();
        }
        assert_eq!(levels, MAX_ANY_VALUE_DEPTH + 1);
        assert!(cur.value.is_none(), "skipped below the cut");
    }

    #[test]
    fn response_shapes() {
        assert_eq!(encode_response(0, ""), b"{}");
        let v: serde_json::Value = serde_json::from_slice(&encode_response(2, "bad")).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedSpans"], "2");
    }
}
