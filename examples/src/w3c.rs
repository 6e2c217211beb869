//! The service-under-test of the W3C Trace Context test suite
//! (`test/` in w3c/trace-context): the harness POSTs a JSON list of
//! `{"url": ..., "arguments": ...}`; for each entry the service POSTs
//! `arguments` (as JSON) to `url`, propagating the context it received.
//! The server layer extracts `traceparent`/`tracestate`, the client layer
//! injects the context of a new child span into each callback.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use ferrotrace::integrations::http::HttpServerLayer;
use ferrotrace::trace::Tracer;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tower::ServiceExt;

use crate::{traced_http_client, TracedHttpClient};

/// Most callbacks one test request may ask for.
pub const MAX_ACTIONS: usize = 64;

/// One instruction from the harness.
#[derive(Debug, Deserialize)]
pub struct Action {
    /// Where to POST.
    pub url: String,
    /// The body to POST (JSON).
    #[serde(default)]
    pub arguments: serde_json::Value,
}

#[derive(Clone)]
struct W3cState {
    client: TracedHttpClient,
}

/// The router: `POST /test`.
pub fn router(tracer: Tracer) -> Router {
    Router::new()
        .route("/test", post(test_handler))
        .with_state(W3cState {
            client: traced_http_client(tracer.clone()),
        })
        .layer(HttpServerLayer::new(tracer))
}

async fn test_handler(State(st): State<W3cState>, Json(actions): Json<Vec<Action>>) -> Response {
    if actions.len() > MAX_ACTIONS {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_ACTIONS} actions per request"),
        )
            .into_response();
    }
    for action in actions {
        let body = match serde_json::to_vec(&action.arguments) {
            Ok(b) => b,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        let req = match http::Request::post(&action.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
        {
            Ok(r) => r,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("bad url {:?}: {e}", action.url),
                )
                    .into_response()
            }
        };
        // A failing callback does not stop the others (the harness checks each).
        if let Ok(resp) = st.client.clone().oneshot(req).await {
            let _ = resp.into_body().collect().await;
        }
    }
    (StatusCode::OK, "ok").into_response()
}
