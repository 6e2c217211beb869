//! The client codec of an OTLP/gRPC `Export` whose request is already
//! encoded: the router's forwards (`forward.rs`) and the load generator
//! (`src/bin/loadgen`) send protobuf bytes as they are and decode the
//! answer as an `ExportTraceServiceResponse`.

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The client codec of a forward: the request goes as the bytes it is, the
/// answer is decoded as an `ExportTraceServiceResponse`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardCodec;

/// Encoder half of [`ForwardCodec`].
#[derive(Debug, Default)]
pub struct BytesEncoder;

/// Decoder half of [`ForwardCodec`].
#[derive(Debug, Default)]
pub struct ResponseDecoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| {
                tonic::Status::internal(format!(
                    "the backend's answer is not an ExportTraceServiceResponse: {e}"
                ))
            })
    }
}

impl Codec for ForwardCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = BytesEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}
