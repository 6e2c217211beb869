//! The wire formats the receivers accept. A WAL record stores its payload as
//! received with this tag, so replay runs the same decoder
//! ([`super::decoding::decode`]) as the live path.

/// The wire format of a record's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordFormat {
    /// `ExportTraceServiceRequest` protobuf.
    OtlpProto = 1,
    /// OTLP/JSON `ExportTraceServiceRequest`.
    OtlpJson = 2,
    /// Zipkin v2 JSON span list.
    ZipkinJson = 3,
    /// Jaeger gRPC `PostSpansRequest` protobuf.
    JaegerProto = 4,
    /// Jaeger Thrift binary `Batch` (`POST /api/traces`).
    JaegerThrift = 5,
    /// Jaeger agent datagram: `emitBatch` in Thrift compact.
    JaegerAgentCompact = 6,
    /// Jaeger agent datagram: `emitBatch` in Thrift binary.
    JaegerAgentBinary = 7,
    /// Zipkin v2 protobuf `ListOfSpans`.
    ZipkinProto = 8,
    /// Zipkin v1 JSON span list.
    ZipkinV1Json = 9,
}

impl RecordFormat {
    /// The format with this tag byte (as stored in a WAL record header).
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(RecordFormat::OtlpProto),
            2 => Some(RecordFormat::OtlpJson),
            3 => Some(RecordFormat::ZipkinJson),
            4 => Some(RecordFormat::JaegerProto),
            5 => Some(RecordFormat::JaegerThrift),
            6 => Some(RecordFormat::JaegerAgentCompact),
            7 => Some(RecordFormat::JaegerAgentBinary),
            8 => Some(RecordFormat::ZipkinProto),
            9 => Some(RecordFormat::ZipkinV1Json),
            _ => None,
        }
    }
}
