//! The client codec of an OTLP/gRPC `Export` whose request is already
//! encoded, or re-sliced from scanned requests: the router's forwards
//! (`forward.rs`) and the load generator (`src/bin/loadgen`) send protobuf
//! bytes as they are and decode the answer as an
//! `ExportTraceServiceResponse`.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::receiver::otlp_proto::wire_request::{Reslice, WireRequest};

/// The client codec of a forward: the request goes as the bytes it is, the
/// answer is decoded as an `ExportTraceServiceResponse`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardCodec;

/// The request of one forward: encoded bytes, then spans of scanned
/// requests, re-sliced by the encoder straight into tonic's buffer (at its
/// exact size, reserved first) instead of into a vector tonic would copy
/// once more. Two encoded requests one after the other are one request
/// with both lists of `resource_spans` (protobuf merges repeated fields).
#[derive(Debug, Default)]
pub struct ForwardBody {
    /// An encoded `ExportTraceServiceRequest` (or nothing), sent first.
    head: Bytes,
    /// The scanned requests the spans below are in.
    requests: Vec<Arc<WireRequest>>,
    /// The spans to re-slice: (index in `requests`, index of the span in it).
    spans: Vec<(u32, u32)>,
}

impl From<Bytes> for ForwardBody {
    fn from(head: Bytes) -> Self {
        ForwardBody {
            head,
            ..ForwardBody::default()
        }
    }
}

impl ForwardBody {
    /// Appends span `span` of `req` (kept alive by the body until it is sent).
    pub fn push_wire(&mut self, req: &Arc<WireRequest>, span: usize) {
        // A batch's spans come request after request: one clone per request.
        if !self.requests.last().is_some_and(|l| Arc::ptr_eq(l, req)) {
            self.requests.push(Arc::clone(req));
        }
        let r = u32::try_from(self.requests.len() - 1).expect("fewer than 2^32 requests");
        let s = u32::try_from(span).expect("fewer than 2^32 spans in a request");
        self.spans.push((r, s));
    }

    /// Writes the whole request to `out`, reserving its size first.
    pub fn write_to(&self, out: &mut impl ReserveBufMut) {
        let picked: Vec<(&WireRequest, usize)> = self
            .spans
            .iter()
            .map(|&(r, s)| (&*self.requests[r as usize], s as usize))
            .collect();
        let plan = Reslice::new(&picked);
        out.reserve_bytes(self.head.len() + plan.len());
        out.put_slice(&self.head);
        plan.write(out);
    }
}

/// A buffer that can grow to a known size in one step before it is written.
pub trait ReserveBufMut: BufMut {
    /// Makes room for `n` more bytes.
    fn reserve_bytes(&mut self, n: usize);
}

impl ReserveBufMut for EncodeBuf<'_> {
    fn reserve_bytes(&mut self, n: usize) {
        self.reserve(n);
    }
}

impl ReserveBufMut for Vec<u8> {
    fn reserve_bytes(&mut self, n: usize) {
        self.reserve(n);
    }
}

/// Encoder half of [`ForwardCodec`].
#[derive(Debug, Default)]
pub struct BytesEncoder;

/// Decoder half of [`ForwardCodec`].
#[derive(Debug, Default)]
pub struct ResponseDecoder;

impl Encoder for BytesEncoder {
    type Item = ForwardBody;
    type Error = tonic::Status;
    fn encode(&mut self, item: ForwardBody, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        item.write_to(dst);
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
    type Encode = ForwardBody;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::limits::LimitsConfig;
    use crate::receiver::otlp_proto::{decode, route_scan::scan};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request(service: &str, first: u8) -> Vec<u8> {
        let span = |t: u8| Span {
            trace_id: vec![t; 16],
            span_id: vec![t; 8],
            name: format!("op{t}"),
            start_time_unix_nano: 5,
            end_time_unix_nano: 9,
            ..Default::default()
        };
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![
                    ScopeSpans {
                        spans: (first..first + 4).map(span).collect(),
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![span(first + 4)],
                        schema_url: "s".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_forward_body_is_its_head_then_the_picked_spans() {
        let limits = LimitsConfig::default();
        let head = request("built", 100);
        let a = scan(Bytes::from(request("a", 1)), &limits)
            .unwrap()
            .wire
            .unwrap();
        let b = scan(Bytes::from(request("b", 20)), &limits)
            .unwrap()
            .wire
            .unwrap();
        let mut body = ForwardBody::from(Bytes::from(head.clone()));
        // Span 2 of `a` goes elsewhere: the run around it is copied in two pieces.
        for s in [0, 1, 3, 4] {
            body.push_wire(&a, s);
        }
        for s in 0..5 {
            body.push_wire(&b, s);
        }
        assert_eq!(body.requests.len(), 2, "one clone per request");
        let mut out = Vec::new();
        body.write_to(&mut out);
        assert_eq!(out.capacity(), out.len(), "reserved at its exact size");
        let got = decode(&out, &limits).unwrap().spans;
        let full = |r: &[u8]| decode(r, &limits).unwrap().spans;
        let mut want = full(&head);
        let of_a = full(&request("a", 1));
        want.extend(
            of_a.iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .map(|(_, s)| s.clone()),
        );
        want.extend(full(&request("b", 20)));
        assert_eq!(got, want);
        // Without a head, it is what `reslice` writes.
        let mut only = ForwardBody::default();
        (0..5).for_each(|s| only.push_wire(&b, s));
        let mut out = Vec::new();
        only.write_to(&mut out);
        let mut want = Vec::new();
        let picked: Vec<_> = (0..5).map(|s| (&*b, s)).collect();
        crate::receiver::otlp_proto::wire_request::reslice(&picked, &mut want);
        assert_eq!(out, want);
    }
}
