//! OTLP/HTTP (`POST /v1/traces`, protobuf or JSON, optionally gzip) and
//! Zipkin (`POST /api/v2/spans`, JSON or protobuf; `POST /api/v1/spans`, v1
//! JSON) endpoints. Responses come in the
//! request's encoding: an `ExportTraceServiceResponse` (with partial success
//! when spans were rejected) or a `google.rpc.Status` on error.

// Handlers return axum's `Response` as their error type: it is exactly what
// the client receives, and boxing it would only add an allocation per error.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::body::{discard_rest, gunzip_limited, read_limited, BodyError, InflightGuard};
use super::convert::DecodeError;
use super::rpc_status::{self, code};
use super::{decode, decode_reserve, Ingest, SubmitError};
use crate::auth::AuthResult;
use crate::metrics::Source;
use crate::receiver::format::RecordFormat;

/// The OTLP/HTTP router (`/v1/traces`). Other paths (`/v1/metrics`,
/// `/v1/logs`: signals this collector does not take) get 404, and other
/// methods 405, each with a `google.rpc.Status` in the request's encoding.
pub fn otlp_router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(otlp_traces))
        .method_not_allowed_fallback(otlp_method_not_allowed)
        .fallback(otlp_not_found)
        .with_state(ingest)
}

/// The encoding of a request's body (protobuf unless it says JSON), for errors.
fn request_enc(headers: &HeaderMap) -> Enc {
    match content_type(headers).as_str() {
        "application/json" => Enc::Json,
        _ => Enc::Proto,
    }
}

async fn otlp_not_found(
    State(ing): State<Arc<Ingest>>,
    uri: http::Uri,
    headers: HeaderMap,
) -> Response {
    ing.bad_request(Source::OtlpHttpProto, "404");
    let path: String = uri.path().chars().take(100).collect();
    respond(
        StatusCode::NOT_FOUND,
        request_enc(&headers),
        code::UNIMPLEMENTED,
        &format!(
            "no OTLP endpoint at {path:?}: this collector takes traces only (POST /v1/traces)"
        ),
    )
}

async fn otlp_method_not_allowed(State(ing): State<Arc<Ingest>>, headers: HeaderMap) -> Response {
    ing.bad_request(Source::OtlpHttpProto, "405");
    let mut r = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        request_enc(&headers),
        code::UNIMPLEMENTED,
        "use POST for /v1/traces",
    );
    r.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
    r
}

/// The Zipkin router: `/api/v2/spans` (JSON or protobuf) and
/// `/api/v1/spans` (v1 JSON).
pub fn zipkin_router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/api/v2/spans", post(zipkin_spans))
        .route("/api/v1/spans", post(zipkin_v1_spans))
        .with_state(ingest)
}

/// The encoding of error bodies: OTLP's `google.rpc.Status` in protobuf or
/// JSON, or plain text (Zipkin, Jaeger).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Enc {
    Proto,
    Json,
    Text,
}

/// An error response with `msg` in the encoding `enc`.
pub(crate) fn respond(status: StatusCode, enc: Enc, grpc_code: i32, msg: &str) -> Response {
    let (ct, body) = match enc {
        Enc::Proto => ("application/x-protobuf", rpc_status::status(grpc_code, msg)),
        Enc::Json => (
            "application/json",
            super::otlp_json::encode_status(grpc_code, msg),
        ),
        Enc::Text => ("text/plain; charset=utf-8", msg.as_bytes().to_vec()),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .unwrap_or_default()
}

fn refused(enc: Enc, msg: &str, secs: u64) -> Response {
    let (ct, body) = match enc {
        Enc::Proto => (
            "application/x-protobuf",
            rpc_status::status_with_retry(code::RESOURCE_EXHAUSTED, msg, secs),
        ),
        Enc::Json => (
            "application/json",
            super::otlp_json::encode_status(code::RESOURCE_EXHAUSTED, msg),
        ),
        Enc::Text => ("text/plain; charset=utf-8", msg.as_bytes().to_vec()),
    };
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header(header::RETRY_AFTER, secs.to_string())
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .unwrap_or_default()
}

/// The body's `Content-Length`, when given: a lower bound of what a
/// request will append to the WAL ([`Ingest::check_admission`]).
pub(crate) fn content_length_hint(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The media type of the request body, lowercase, without parameters.
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads, size-checks and inflates a body, and reserves memory for decoding
/// it as `format`; on failure, the response to send.
pub(crate) async fn read_body(
    ing: &Ingest,
    source: Source,
    enc: Enc,
    format: RecordFormat,
    headers: &HeaderMap,
    body: Body,
    guard: &mut InflightGuard,
) -> Result<Bytes, Response> {
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if v.is_empty() || v == "identity" => false,
        Some(v) if v == "gzip" || v == "x-gzip" => true,
        Some(v) => {
            ing.bad_request(source, "415");
            return Err(respond(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                enc,
                code::INVALID_ARGUMENT,
                &format!("unsupported Content-Encoding {v:?}; use gzip or none"),
            ));
        }
    };
    let content_length = content_length_hint(headers);
    let raw = read_limited(body, content_length, ing.limits.request_bytes(), guard).await;
    let data = match raw {
        Ok(d) if gzip => gunzip_limited(&d, ing.limits.decompressed_bytes(), guard),
        Ok(d) if d.len() > ing.limits.decompressed_bytes() => {
            Err(BodyError::InflatedTooLarge(ing.limits.decompressed_bytes()))
        }
        other => other,
    };
    let data = data.and_then(|d| {
        guard.reserve(decode_reserve(format, d.len()))?;
        Ok(d)
    });
    data.map_err(|e| {
        if let BodyError::OverBudget(_) | BodyError::MemoryLimit = e {
            ing.count_refusal(&e);
            return refused(enc, &e.to_string(), ing.retry_after_secs);
        }
        let status = match e {
            BodyError::TooLarge(_) | BodyError::InflatedTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::BadGzip(_)
            | BodyError::Read(_)
            | BodyError::OverBudget(_)
            | BodyError::MemoryLimit => StatusCode::BAD_REQUEST,
        };
        ing.bad_request(source, status.as_str());
        respond(status, enc, code::INVALID_ARGUMENT, &e.to_string())
    })
}

/// Checks the bearer token; on failure, the 401 response to send.
pub(crate) fn check_auth(
    ing: &Ingest,
    source: Source,
    enc: Enc,
    headers: &HeaderMap,
) -> Result<(), Response> {
    match ing.tokens.check(headers) {
        AuthResult::Allowed => Ok(()),
        r => {
            ing.auth_failed(source);
            let msg = if r == AuthResult::Missing {
                "missing bearer token (Authorization: Bearer <token>)"
            } else {
                "bearer token not accepted"
            };
            let mut resp = respond(StatusCode::UNAUTHORIZED, enc, code::UNAUTHENTICATED, msg);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            Err(resp)
        }
    }
}

/// The 400/413 response for a body that could not be decoded (counted).
pub(crate) fn decode_error(ing: &Ingest, source: Source, enc: Enc, e: DecodeError) -> Response {
    let status = match e {
        DecodeError::Malformed(_) => StatusCode::BAD_REQUEST,
        DecodeError::TooManySpans { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    };
    ing.bad_request(source, status.as_str());
    respond(status, enc, code::INVALID_ARGUMENT, &e.to_string())
}

/// The 429/503 response for a batch the ingest path did not accept.
pub(crate) fn submit_error(enc: Enc, e: SubmitError) -> Response {
    match e {
        SubmitError::Refused(why, secs) => refused(enc, &format!("{why}; retry later"), secs),
        SubmitError::Unavailable(m) => {
            let mut r = respond(
                StatusCode::SERVICE_UNAVAILABLE,
                enc,
                code::UNAVAILABLE,
                &format!("collector unavailable: {m}"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
            r
        }
    }
}

async fn otlp_traces(State(ing): State<Arc<Ingest>>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let (enc, format, source) = match content_type(&parts.headers).as_str() {
        "application/x-protobuf" | "application/protobuf" => {
            (Enc::Proto, RecordFormat::OtlpProto, Source::OtlpHttpProto)
        }
        "application/json" => (Enc::Json, RecordFormat::OtlpJson, Source::OtlpHttpJson),
        other => {
            ing.bad_request(Source::OtlpHttpProto, "415");
            return respond(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Enc::Json,
                code::INVALID_ARGUMENT,
                &format!(
                    "unsupported Content-Type {other:?}; use application/x-protobuf or application/json"
                ),
            );
        }
    };
    if let Err(r) = check_auth(&ing, source, enc, &parts.headers) {
        return r;
    }
    if let Err(e) = ing.check_admission(content_length_hint(&parts.headers)) {
        discard_rest(std::pin::pin!(body), ing.limits.request_bytes()).await;
        return submit_error(enc, e);
    }
    // Holds the body's share of the in-flight budget until the response is built.
    let mut guard = ing.inflight.guard();
    let data = match read_body(&ing, source, enc, format, &parts.headers, body, &mut guard).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let decoded = match decode(format, &data, &ing.limits) {
        Ok(d) => d,
        Err(e) => return decode_error(&ing, source, enc, e),
    };
    match ing
        .submit(
            source,
            format,
            data,
            decoded,
            started,
            Some(&guard.decode_reserve()),
        )
        .await
    {
        Ok(ack) => {
            let body = match enc {
                Enc::Json => super::otlp_json::encode_response(ack.rejected, &ack.error_message),
                _ => ExportTraceServiceResponse {
                    partial_success: (ack.rejected > 0).then(|| ExportTracePartialSuccess {
                        rejected_spans: ack.rejected as i64,
                        error_message: ack.error_message.clone(),
                    }),
                }
                .encode_to_vec(),
            };
            let ct = if enc == Enc::Json {
                "application/json"
            } else {
                "application/x-protobuf"
            };
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(body))
                .unwrap_or_default()
        }
        Err(e) => submit_error(enc, e),
    }
}

async fn zipkin_spans(State(ing): State<Arc<Ingest>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (source, format) = match content_type(&parts.headers).as_str() {
        // Required, as the Zipkin reporters send it: a browser can send a
        // cross-origin POST without a type (or with text/plain) and no CORS
        // preflight, but not with application/json or protobuf.
        "application/json" => (Source::ZipkinJson, RecordFormat::ZipkinJson),
        "application/x-protobuf" | "application/protobuf" => {
            (Source::ZipkinProto, RecordFormat::ZipkinProto)
        }
        other => {
            ing.bad_request(Source::ZipkinJson, "415");
            return respond(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Enc::Text,
                0,
                &format!("unsupported Content-Type {other:?}; this receiver takes Zipkin v2 JSON (Content-Type: application/json) or protobuf (application/x-protobuf)"),
            );
        }
    };
    accept_text(&ing, source, format, parts, body, Instant::now(), "zipkin").await
}

async fn zipkin_v1_spans(State(ing): State<Arc<Ingest>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match content_type(&parts.headers).as_str() {
        "application/json" => {}
        other => {
            ing.bad_request(Source::ZipkinV1Json, "415");
            return respond(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Enc::Text,
                0,
                &format!("unsupported Content-Type {other:?}; /api/v1/spans takes Zipkin v1 JSON (Content-Type: application/json); Zipkin v1 Thrift is not supported"),
            );
        }
    }
    accept_text(
        &ing,
        Source::ZipkinV1Json,
        RecordFormat::ZipkinV1Json,
        parts,
        body,
        Instant::now(),
        "zipkin",
    )
    .await
}

/// The shared tail of the Zipkin and Jaeger Thrift HTTP endpoints, once the
/// content type is checked: token, body, decode, WAL, `202 Accepted` with an
/// empty body; errors as plain text. `started` is when the request's latency
/// starts; `what` names the protocol in the log line for rejected spans.
pub(crate) async fn accept_text(
    ing: &Ingest,
    source: Source,
    format: RecordFormat,
    parts: http::request::Parts,
    body: Body,
    started: Instant,
    what: &str,
) -> Response {
    if let Err(r) = check_auth(ing, source, Enc::Text, &parts.headers) {
        return r;
    }
    if let Err(e) = ing.check_admission(content_length_hint(&parts.headers)) {
        discard_rest(std::pin::pin!(body), ing.limits.request_bytes()).await;
        return submit_error(Enc::Text, e);
    }
    let mut guard = ing.inflight.guard();
    let data = match read_body(
        ing,
        source,
        Enc::Text,
        format,
        &parts.headers,
        body,
        &mut guard,
    )
    .await
    {
        Ok(d) => d,
        Err(r) => return r,
    };
    let decoded = match decode(format, &data, &ing.limits) {
        Ok(d) => d,
        Err(e) => return decode_error(ing, source, Enc::Text, e),
    };
    match ing
        .submit(
            source,
            format,
            data,
            decoded,
            started,
            Some(&guard.decode_reserve()),
        )
        .await
    {
        Ok(ack) => {
            // Zipkin and Jaeger have no partial-success answer; rejected
            // spans are counted and logged.
            if ack.rejected > 0 {
                tracing::debug!(rejected = ack.rejected, message = %ack.error_message, "{what} spans rejected");
            }
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .unwrap_or_default()
        }
        Err(e) => submit_error(Enc::Text, e),
    }
}
