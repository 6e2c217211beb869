//! OTLP/JSON decoding per the OTLP specification's JSON rules, which differ
//! from a plain serde mapping: trace and span ids are hex (any case), other
//! `bytes` are base64, 64-bit integers arrive as strings or numbers, enums as
//! integers (names are accepted too), unknown fields are ignored, keys may be
//! lowerCamelCase or the proto field names. Decodes into the protobuf types so
//! that one conversion path ([`super::convert`]) serves every encoding.

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

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
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
                dropped_attributes_count: r.dropped_attributes_count.0 as u32,
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
    dropped_attributes_count: Num,
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
                dropped_attributes_count: s.dropped_attributes_count.0 as u32,
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
    dropped_attributes_count: Num,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JSpan {
    #[serde(alias = "trace_id")]
    trace_id: HexId,
    #[serde(alias = "span_id")]
    span_id: HexId,
    #[serde(alias = "trace_state", deserialize_with = "null_default")]
    trace_state: String,
    #[serde(alias = "parent_span_id")]
    parent_span_id: HexId,
    flags: Num,
    #[serde(deserialize_with = "null_default")]
    name: String,
    kind: KindEnum,
    #[serde(alias = "start_time_unix_nano")]
    start_time_unix_nano: Num,
    #[serde(alias = "end_time_unix_nano")]
    end_time_unix_nano: Num,
    #[serde(deserialize_with = "null_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: Num,
    #[serde(deserialize_with = "null_default")]
    events: Vec<JEvent>,
    #[serde(alias = "dropped_events_count")]
    dropped_events_count: Num,
    #[serde(deserialize_with = "null_default")]
    links: Vec<JLink>,
    #[serde(alias = "dropped_links_count")]
    dropped_links_count: Num,
    status: Option<JStatus>,
}

impl JSpan {
    fn into_proto(self) -> PSpan {
        PSpan {
            trace_id: self.trace_id.0,
            span_id: self.span_id.0,
            trace_state: self.trace_state,
            parent_span_id: self.parent_span_id.0,
            flags: self.flags.0 as u32,
            name: self.name,
            kind: self.kind.0,
            start_time_unix_nano: self.start_time_unix_nano.0 as u64,
            end_time_unix_nano: self.end_time_unix_nano.0 as u64,
            attributes: kvs(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count.0 as u32,
            events: self
                .events
                .into_iter()
                .map(|e| span::Event {
                    time_unix_nano: e.time_unix_nano.0 as u64,
                    name: e.name,
                    attributes: kvs(e.attributes),
                    dropped_attributes_count: e.dropped_attributes_count.0 as u32,
                })
                .collect(),
            dropped_events_count: self.dropped_events_count.0 as u32,
            links: self
                .links
                .into_iter()
                .map(|l| span::Link {
                    trace_id: l.trace_id.0,
                    span_id: l.span_id.0,
                    trace_state: l.trace_state,
                    attributes: kvs(l.attributes),
                    dropped_attributes_count: l.dropped_attributes_count.0 as u32,
                    flags: l.flags.0 as u32,
                })
                .collect(),
            dropped_links_count: self.dropped_links_count.0 as u32,
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
    time_unix_nano: Num,
    #[serde(deserialize_with = "null_default")]
    name: String,
    #[serde(deserialize_with = "null_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: Num,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JLink {
    #[serde(alias = "trace_id")]
    trace_id: HexId,
    #[serde(alias = "span_id")]
    span_id: HexId,
    #[serde(alias = "trace_state", deserialize_with = "null_default")]
    trace_state: String,
    #[serde(deserialize_with = "null_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: Num,
    flags: Num,
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

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JAnyValue {
    #[serde(alias = "string_value")]
    string_value: Option<String>,
    #[serde(alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(alias = "int_value")]
    int_value: Option<Num>,
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
    let value = if let Some(s) = v.string_value {
        Some(V::StringValue(s))
    } else if let Some(b) = v.bool_value {
        Some(V::BoolValue(b))
    } else if let Some(i) = v.int_value {
        Some(V::IntValue(i.0 as i64))
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
/// strings in proto3 JSON). Stored as i128 so that u64 and i64 both fit.
#[derive(Default, Clone, Copy)]
struct Num(i128);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer as a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as i128))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as i128))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                if v.fract() == 0.0 && v.abs() < 1.9e19 {
                    Ok(Num(v as i128))
                } else {
                    Err(E::custom(format!("{v} is not an integer")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                v.trim()
                    .parse::<i128>()
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v:?} is not an integer")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num(0))
            }
        }
        d.deserialize_any(V)
    }
}

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

/// A trace or span id in hex, any case. Invalid hex yields an empty id, which
/// validation then rejects for that span only (the rest of the batch is kept).
#[derive(Default)]
struct HexId(Vec<u8>);

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(HexId(decode_hex(&s).unwrap_or_default()))
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
                    Raw::N(n) => Ok($name(n as i32)),
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
        let req = decode(body).unwrap();
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
        assert!(decode(b"{}").unwrap().resource_spans.is_empty());
        let r = decode(br#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"zz","span_id":"0102030405060708"}]}]}]}"#).unwrap();
        let s = &r.resource_spans[0].scope_spans[0].spans[0];
        assert!(
            s.trace_id.is_empty(),
            "bad hex becomes an invalid (rejected) id"
        );
        assert_eq!(s.span_id.len(), 8);
        let err = decode(b"{\"resourceSpans\":[").unwrap_err();
        assert!(err.contains("invalid OTLP/JSON"), "{err}");
        assert!(decode(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#
        )
        .is_err());
    }

    #[test]
    fn response_shapes() {
        assert_eq!(encode_response(0, ""), b"{}");
        let v: serde_json::Value = serde_json::from_slice(&encode_response(2, "bad")).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedSpans"], "2");
    }
}
