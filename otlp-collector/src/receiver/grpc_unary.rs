//! Serving one unary gRPC call whose request message is taken as raw bytes,
//! shared by every gRPC service on the collector's gRPC listeners (OTLP
//! `TraceService/Export`, Jaeger's `CollectorService/PostSpans`, and the
//! remote sampling API's `SamplingManager/GetSamplingStrategy`):
//! authentication, admission, the body read under the request limits and the
//! in-flight budget, gzip inflated under our own limit, then tonic with a
//! pass-through codec, so the exact bytes reach the WAL without re-encoding
//! and an undecodable message gets `INVALID_ARGUMENT` naming the problem.
//! Owned here rather than by one of those services so that each depends on
//! this module, not on another service.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use super::body::{gunzip_into, read_limited, BodyError, DecodeReserve, InflightGuard};
use super::rpc_status::{self, code};
use super::{decode_reserve, Ack, Ingest, SubmitError};
use crate::auth::AuthResult;
use crate::metrics::Source;
use crate::receiver::format::RecordFormat;

/// Decodes requests as raw bytes, encodes the response message `R`
/// (`ExportTraceServiceResponse` here; the Jaeger gRPC receiver uses it too).
#[derive(Debug)]
pub struct RawCodec<R = ExportTraceServiceResponse>(std::marker::PhantomData<fn() -> R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(std::marker::PhantomData)
    }
}

/// Encoder half of [`RawCodec`].
#[derive(Debug)]
pub struct ResponseEncoder<R>(std::marker::PhantomData<fn() -> R>);

/// Decoder half of [`RawCodec`].
#[derive(Debug, Default)]
pub struct RawDecoder;

impl<R: Message> Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding response: {e}")))
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl<R: Message + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ResponseEncoder<R>;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> ResponseEncoder<R> {
        ResponseEncoder(std::marker::PhantomData)
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A status with a `google.rpc.Status` (and RetryInfo when `retry` is set) in its details.
pub(crate) fn status_with_details(
    code_: Code,
    grpc: i32,
    msg: String,
    retry: Option<u64>,
) -> Status {
    let details = match retry {
        Some(secs) => rpc_status::status_with_retry(grpc, &msg, secs),
        None => rpc_status::status(grpc, &msg),
    };
    Status::with_details(code_, msg, Bytes::from(details))
}

/// `INVALID_ARGUMENT` naming the problem, counted as a bad request of `source`.
fn invalid_argument(ing: &Ingest, source: Source, message: String) -> Status {
    ing.bad_request(source, "invalid_argument");
    status_with_details(Code::InvalidArgument, code::INVALID_ARGUMENT, message, None)
}

/// A saturated collector's answer: `RESOURCE_EXHAUSTED` with RetryInfo.
fn retry_later(why: &str, secs: u64) -> Status {
    status_with_details(
        Code::ResourceExhausted,
        code::RESOURCE_EXHAUSTED,
        format!("{why}; retry later"),
        Some(secs),
    )
}

/// Reads the unary request body under the compressed-size limit
/// (`limits.max_request_bytes`, counted on the gRPC frame as received) and
/// inflates a gzip message under the decompressed-size limit
/// (`limits.max_decompressed_bytes`) in chunks, so a "gzip bomb" is refused
/// after inflating at most the limit. Returns the body to hand to tonic (an
/// uncompressed frame) or the error response to send.
///
/// Everything held is charged to `guard` (the shared in-flight budget),
/// including the copy tonic makes of a frame it decodes itself (one that is
/// not exactly one uncompressed message: see [`WholeMessage`]); over budget →
/// RESOURCE_EXHAUSTED with RetryInfo. `source` and `format` say which
/// receiver this is (for metrics and the decoding memory reserve).
async fn read_limited_frame<B>(
    ing: &Ingest,
    req: http::Request<B>,
    guard: &mut InflightGuard,
    source: Source,
    format: RecordFormat,
) -> Result<http::Request<http_body_util::Full<Bytes>>, Status>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + 'static,
{
    // Checked before reading the body, so an unauthenticated client cannot
    // make the collector buffer a message.
    let auth = ing
        .tokens
        .check_value(req.headers().get("authorization").map(|v| v.as_bytes()));
    if auth != AuthResult::Allowed {
        ing.auth_failed(source);
        return Err(Status::unauthenticated(if auth == AuthResult::Missing {
            "missing bearer token (authorization: Bearer <token>)"
        } else {
            "bearer token not accepted"
        }));
    }
    if let Err(SubmitError::Refused(why, secs)) = ing.check_admission(None) {
        return Err(retry_later(why, secs));
    }
    let max_req = ing.limits.request_bytes();
    let max_inflated = ing.limits.decompressed_bytes();
    let too_large = |what: String| {
        ing.bad_request(source, "resource_exhausted");
        // No RetryInfo: the same request will never fit, so per the OTLP
        // specification the client must not retry it.
        status_with_details(
            Code::ResourceExhausted,
            code::RESOURCE_EXHAUSTED,
            format!("{what}; send smaller batches (lower the exporter's batch size)"),
            None,
        )
    };
    let over_budget = |e: BodyError| {
        ing.count_refusal(&e);
        status_with_details(
            Code::ResourceExhausted,
            code::RESOURCE_EXHAUSTED,
            e.to_string(),
            Some(ing.retry_after_secs),
        )
    };
    let (mut parts, body) = req.into_parts();
    // The gRPC frame adds a 5-byte prefix to the message.
    let data = match read_limited(body, None, max_req.saturating_add(5), guard).await {
        Ok(d) => d,
        Err(e @ (BodyError::OverBudget(_) | BodyError::MemoryLimit)) => return Err(over_budget(e)),
        Err(BodyError::TooLarge(_)) => {
            return Err(too_large(format!(
                "request message exceeds the {max_req}-byte limit (limits.max_request_bytes)"
            )))
        }
        Err(e @ BodyError::TimedOut(_)) => {
            ing.bad_request(source, "deadline_exceeded");
            return Err(Status::deadline_exceeded(e.to_string()));
        }
        Err(e) => {
            return Err(invalid_argument(ing, source, e.to_string()));
        }
    };
    let mut body = data.clone();
    if data.len() >= 5 {
        let compressed = data[0] == 1;
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let end = 5usize.saturating_add(len).min(data.len());
        let gzip = parts
            .headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if compressed && gzip {
            // Inflate behind a frame header, so tonic gets an uncompressed
            // frame without a second copy.
            let mut framed = match gunzip_into(&data[5..end], max_inflated, guard, vec![0u8; 5]) {
                Ok(d) => d,
                Err(BodyError::InflatedTooLarge(_)) => {
                    return Err(too_large(format!(
                        "decompressed request message exceeds the {max_inflated}-byte limit \
                         (limits.max_decompressed_bytes)"
                    )))
                }
                Err(e @ (BodyError::OverBudget(_) | BodyError::MemoryLimit)) => {
                    return Err(over_budget(e))
                }
                Err(e) => {
                    return Err(invalid_argument(
                        ing,
                        source,
                        format!("gzip-compressed gRPC message: {e}"),
                    ));
                }
            };
            let inflated_len = (framed.len() - 5) as u32;
            framed[1..5].copy_from_slice(&inflated_len.to_be_bytes());
            framed.extend_from_slice(&data[end..]);
            body = Bytes::from(framed);
            parts.headers.remove("grpc-encoding");
        } else if !compressed && len > max_inflated {
            return Err(too_large(format!(
                "request message exceeds the {max_inflated}-byte limit (limits.max_decompressed_bytes)"
            )));
        }
        // Another encoding is left to tonic, which answers UNIMPLEMENTED.
    }
    guard
        .reserve(decode_reserve(format, body.len().saturating_sub(5)))
        .map_err(over_budget)?;
    // The service lowers the reserve once it has decoded the message.
    parts.extensions.insert(guard.decode_reserve());
    let body = match WholeMessage::of(&body) {
        // tonic would copy the message into its own buffer to decode it
        // (once more per request, the body's size in copying and a
        // growing buffer); the service takes it from here instead and tonic
        // decodes an empty frame in its place. Its own checks still run:
        // the message is uncompressed (its flag), within
        // `max_decoding_message_size` (the decompressed limit, checked
        // above) and alone in the body.
        Some(message) => {
            parts.extensions.insert(message);
            Bytes::from_static(&[0; 5])
        }
        None => {
            // tonic buffers the frame once more while decoding it.
            guard.charge(body.len()).map_err(over_budget)?;
            body
        }
    };
    Ok(http::Request::from_parts(
        parts,
        http_body_util::Full::new(body),
    ))
}

/// A request message handed to the service beside tonic (see
/// [`read_limited_frame`]): the body of a frame that is exactly one
/// uncompressed message.
#[derive(Clone, Debug)]
struct WholeMessage(Bytes);

impl WholeMessage {
    /// The message of `frame` if the frame is one uncompressed gRPC message
    /// and nothing else.
    fn of(frame: &Bytes) -> Option<WholeMessage> {
        let (&[flag, a, b, c, d], _) = frame.split_first_chunk::<5>()?;
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        (flag == 0 && frame.len() - 5 == len).then(|| WholeMessage(frame.slice(5..)))
    }
}

/// `S` given the request's message from [`WholeMessage`] when
/// [`read_limited_frame`] set it aside (tonic then decoded an empty one).
struct WithMessage<S>(S);

impl<S: tonic::server::UnaryService<Bytes>> tonic::server::UnaryService<Bytes> for WithMessage<S> {
    type Response = S::Response;
    type Future = S::Future;
    fn call(&mut self, mut req: tonic::Request<Bytes>) -> S::Future {
        if let Some(WholeMessage(m)) = req.extensions_mut().remove::<WholeMessage>() {
            *req.get_mut() = m;
        }
        self.0.call(req)
    }
}

/// The request of an ingest call (OTLP `Export`, Jaeger `PostSpans`), once
/// [`serve_unary`] has authenticated, admitted and read it: decoded
/// (`INVALID_ARGUMENT` naming the problem if it cannot be) and submitted; a
/// refusal is `RESOURCE_EXHAUSTED` with RetryInfo, a stopping collector
/// `UNAVAILABLE`. Each service turns the [`Ack`] into its own response.
pub(crate) async fn decode_and_submit(
    ing: &Ingest,
    source: Source,
    format: RecordFormat,
    req: tonic::Request<Bytes>,
) -> Result<Ack, Status> {
    let started = Instant::now();
    let reserve = req.extensions().get::<DecodeReserve>().cloned();
    let body = req.into_inner();
    let decoded = match ing.decode(format, &body) {
        Ok(d) => d,
        Err(e) => {
            return Err(invalid_argument(ing, source, e.to_string()));
        }
    };
    ing.submit(source, format, body, decoded, started, reserve.as_ref())
        .await
        .map_err(|e| match e {
            SubmitError::Refused(why, secs) => retry_later(why, secs),
            SubmitError::Unavailable(m) => {
                Status::unavailable(format!("collector unavailable: {m}"))
            }
        })
}

/// Serves one unary call whose request message is taken as raw bytes:
/// authentication, the body read under the limits and the in-flight budget
/// ([`read_limited_frame`]), then `svc`. Shared by the OTLP and Jaeger gRPC
/// receivers.
pub(crate) async fn serve_unary<B, S, R>(
    ingest: Arc<Ingest>,
    req: http::Request<B>,
    source: Source,
    format: RecordFormat,
    svc: S,
) -> Result<http::Response<tonic::body::Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + 'static,
    S: tonic::server::UnaryService<Bytes, Response = R>,
    R: Message + Send + 'static,
{
    // Held until the response is ready, so the budget covers the
    // request's bytes for as long as they are in memory.
    let mut guard = ingest.inflight.guard();
    let req = match read_limited_frame(&ingest, req, &mut guard, source, format).await {
        Ok(r) => r,
        Err(status) => return Ok(status.into_http()),
    };
    // Decompression is done above under our limits; the decoded
    // message can be at most the decompressed limit.
    let max = ingest.limits.decompressed_bytes();
    let mut grpc = tonic::server::Grpc::new(RawCodec::<R>::default())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let resp = grpc.unary(WithMessage(svc), req).await;
    drop(guard);
    Ok(resp)
}

/// The answer to a method this server does not have: `UNIMPLEMENTED`.
pub(crate) fn unimplemented() -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::default());
    let h = response.headers_mut();
    h.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
    h.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}
