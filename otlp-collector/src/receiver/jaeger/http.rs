//! Jaeger Thrift over HTTP: `POST /api/traces` with a Thrift binary `Batch`
//! (`Content-Type: application/vnd.apache.thrift.binary`, or
//! `application/x-thrift` as older clients send), the Jaeger collector's
//! port 14268. `202 Accepted` once the spans are in the WAL; errors as plain
//! text with OTLP/HTTP's statuses (400, 401, 413, 415, 429 + `Retry-After`,
//! 503). A query string (`?format=jaeger.thrift`, sent by some clients) is
//! ignored.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use http::StatusCode;

use crate::metrics::Source;
use crate::receiver::body::discard_rest;
use crate::receiver::format::RecordFormat;
use crate::receiver::http::{
    check_auth, content_length_hint, content_type, decode_error, read_body, respond, submit_error,
    Enc,
};
use crate::receiver::{decode, Ingest};

/// The router (`/api/traces`).
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/api/traces", post(traces))
        .with_state(ingest)
}

async fn traces(State(ing): State<Arc<Ingest>>, req: Request) -> Response {
    let started = Instant::now();
    let source = Source::JaegerThriftHttp;
    let format = RecordFormat::JaegerThrift;
    let (parts, body) = req.into_parts();
    match content_type(&parts.headers).as_str() {
        "application/vnd.apache.thrift.binary" | "application/x-thrift" => {}
        other => {
            ing.bad_request(source, "415");
            return respond(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Enc::Text,
                0,
                &format!(
                    "unsupported Content-Type {other:?}; /api/traces takes a Jaeger Thrift \
                     Batch in the binary protocol (Content-Type: application/vnd.apache.thrift.binary)"
                ),
            );
        }
    }
    if let Err(r) = check_auth(&ing, source, Enc::Text, &parts.headers) {
        return r;
    }
    if let Err(e) = ing.check_admission(content_length_hint(&parts.headers)) {
        discard_rest(std::pin::pin!(body), ing.limits.request_bytes()).await;
        return submit_error(Enc::Text, e);
    }
    let mut guard = ing.inflight.guard();
    let data = match read_body(
        &ing,
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
        Err(e) => return decode_error(&ing, source, Enc::Text, e),
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
            // No partial-success answer in Jaeger: rejected spans are counted and logged.
            if ack.rejected > 0 {
                tracing::debug!(rejected = ack.rejected, message = %ack.error_message, "jaeger thrift spans rejected");
            }
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .unwrap_or_default()
        }
        Err(e) => submit_error(Enc::Text, e),
    }
}
