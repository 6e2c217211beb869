//! Jaeger Thrift over HTTP: `POST /api/traces` with a Thrift binary `Batch`
//! (`Content-Type: application/vnd.apache.thrift.binary`, or
//! `application/x-thrift` as older clients send), the Jaeger collector's
//! port 14268. `202 Accepted` once the spans are in the WAL; errors as plain
//! text with OTLP/HTTP's statuses (400, 401, 413, 415, 429 + `Retry-After`,
//! 503). A query string (`?format=jaeger.thrift`, sent by some clients) is
//! ignored.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use http::StatusCode;

use crate::metrics::Source;
use crate::receiver::format::RecordFormat;
use crate::receiver::http::{accept_text, content_type, respond, Enc};
use crate::receiver::Ingest;

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
    accept_text(&ing, source, format, parts, body, started, "jaeger thrift").await
}
