//! From a record's wire format to its decoder, and the memory to reserve
//! for decoding it: the one dispatch shared by the receivers (live
//! requests) and the pipeline (WAL replay, the WAL-only reader), so the
//! pipeline depends on the decoders, not on the receivers' ingest path.

use super::convert::{DecodeError, Decoded};
use super::limits::LimitsConfig;
use super::{jaeger, otlp_json, otlp_proto, zipkin, zipkin_proto, zipkin_v1, RecordFormat};

/// Decodes a request body (or a WAL record) of the given format.
pub fn decode(
    format: RecordFormat,
    body: &[u8],
    limits: &LimitsConfig,
) -> Result<Decoded, DecodeError> {
    match format {
        RecordFormat::OtlpProto => otlp_proto::decode(body, limits),
        RecordFormat::OtlpJson => otlp_json::decode(body, limits),
        RecordFormat::ZipkinJson => zipkin::decode(body, limits),
        RecordFormat::ZipkinProto => zipkin_proto::decode(body, limits),
        RecordFormat::ZipkinV1Json => zipkin_v1::decode(body, limits),
        RecordFormat::JaegerProto => jaeger::decode_grpc(body, limits),
        RecordFormat::JaegerThrift => jaeger::decode_thrift_http(body, limits),
        RecordFormat::JaegerAgentCompact => {
            jaeger::decode_agent(body, jaeger::thrift::Protocol::Compact, limits)
        }
        RecordFormat::JaegerAgentBinary => {
            jaeger::decode_agent(body, jaeger::thrift::Protocol::Binary, limits)
        }
    }
}

/// Memory to reserve for decoding a body of `len` bytes: the most the heap
/// grows per body byte while decoding it (the wire structs and the spans
/// built from them are alive together). The factors are the worst shapes
/// measured in `tests/decode_memory.rs` (spans carrying nothing but their
/// ids: 28x for protobuf, 11x for OTLP/JSON, 15x for Zipkin JSON, 25x for
/// Zipkin protobuf, 29x for Jaeger protobuf, 8x for Jaeger Thrift binary,
/// 34x for Jaeger Thrift compact), rounded up;
/// that test fails if any shape it decodes exceeds its reserve. Realistic
/// requests take 2.5x to 9x, so the reserve errs on the side of refusing,
/// and only matters near the memory limit.
pub fn decode_reserve(format: RecordFormat, len: usize) -> u64 {
    let per_byte = match format {
        RecordFormat::OtlpProto => DECODE_RESERVE_PROTO,
        RecordFormat::OtlpJson => DECODE_RESERVE_JSON,
        RecordFormat::ZipkinJson | RecordFormat::ZipkinV1Json => DECODE_RESERVE_ZIPKIN,
        RecordFormat::ZipkinProto => DECODE_RESERVE_ZIPKIN_PROTO,
        RecordFormat::JaegerProto => DECODE_RESERVE_JAEGER_PROTO,
        RecordFormat::JaegerThrift | RecordFormat::JaegerAgentBinary => {
            DECODE_RESERVE_JAEGER_THRIFT
        }
        RecordFormat::JaegerAgentCompact => DECODE_RESERVE_JAEGER_COMPACT,
    };
    (len as u64).saturating_mul(per_byte)
}

/// Reserve per body byte for OTLP protobuf; see [`decode_reserve`].
pub const DECODE_RESERVE_PROTO: u64 = 32;
/// Reserve per body byte for OTLP/JSON; see [`decode_reserve`].
pub const DECODE_RESERVE_JSON: u64 = 14;
/// Reserve per body byte for Zipkin v2 and v1 JSON; see [`decode_reserve`].
pub const DECODE_RESERVE_ZIPKIN: u64 = 18;
/// Reserve per body byte for Zipkin protobuf; see [`decode_reserve`].
pub const DECODE_RESERVE_ZIPKIN_PROTO: u64 = 32;
/// Reserve per body byte for Jaeger protobuf; see [`decode_reserve`].
pub const DECODE_RESERVE_JAEGER_PROTO: u64 = 32;
/// Reserve per body byte for Jaeger Thrift binary; see [`decode_reserve`].
pub const DECODE_RESERVE_JAEGER_THRIFT: u64 = 10;
/// Reserve per body byte for Jaeger Thrift compact (a span of small ids
/// takes 18 bytes there); see [`decode_reserve`].
pub const DECODE_RESERVE_JAEGER_COMPACT: u64 = 40;
