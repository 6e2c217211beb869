//! Tower layers for HTTP: [`HttpServerLayer`] for axum and plain hyper/tower
//! services, [`HttpClientLayer`] for hyper-util (or any tower) clients.
//!
//! The server layer extracts `traceparent`/`tracestate`/`baggage` (with the
//! global propagator), starts a `SERVER` span named `{METHOD} {route}`
//! (`{METHOD}` when no route is known), sets the HTTP semantic-convention
//! attributes, makes the span's context current while the handler runs (so
//! its spans nest under the request span), marks 5xx responses and handler
//! panics as errors, and ends the span when the response body is finished.
//!
//! ```no_run
//! # #[cfg(feature = "axum")] {
//! use axum::{routing::get, Router};
//! use ferrotrace::integrations::http::HttpServerLayer;
//!
//! let provider = ferrotrace::trace::TracerProvider::builder().build();
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|| async { "ok" }))
//!     // `Router::layer` wraps each route, so the span is named `GET /orders/{id}`.
//!     .layer(HttpServerLayer::new(provider.tracer("orders-http")));
//! # let _ = app; }
//! ```
//!
//! The code is split by concern: `server.rs` (the server layer, its service
//! and response future), `client.rs` (the client layer) and `attributes.rs`
//! (the semantic-convention attributes both build).

use std::sync::Arc;

use http::Response;

pub use super::body::TracedBody;
use super::body::{grpc_status_from, Protocol};
use super::TracerSource;
use crate::attributes::{Key, KeyValue};
use crate::context::Context;
use crate::propagation::TextMapPropagator;
use crate::trace::{Span, Status};

mod attributes;
mod client;
mod server;

#[cfg(feature = "reqwest")]
pub(crate) use attributes::push_method;
pub use client::{ClientResponseFuture, ClientTraceService, HttpClientLayer};
pub use server::{HttpServerLayer, ServerResponseFuture, ServerTraceService};

/// The instrumentation scope name used when a layer takes its tracer from
/// the global provider.
pub const SCOPE_NAME: &str = "ferrotrace.http";

/// A function that names the route of a request (e.g. `/users/{id}`), for
/// routers other than axum.
pub type RouteFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct LayerConfig {
    pub(crate) tracer: TracerSource,
    pub(crate) propagator: Option<Arc<dyn TextMapPropagator>>,
    pub(crate) catch_panics: bool,
    pub(crate) route_fn: Option<RouteFn>,
    pub(crate) protocol: Protocol,
    pub(crate) baggage_attributes: Arc<[&'static str]>,
}

impl std::fmt::Debug for LayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerConfig")
            .field("tracer", &self.tracer)
            .field("custom_propagator", &self.propagator.is_some())
            .field("catch_panics", &self.catch_panics)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl LayerConfig {
    pub(crate) fn new(tracer: TracerSource, protocol: Protocol) -> Self {
        LayerConfig {
            tracer,
            propagator: None,
            catch_panics: true,
            route_fn: None,
            protocol,
            baggage_attributes: Arc::new([]),
        }
    }

    /// Whether the span's attributes can have no key twice: the layers'
    /// own keys never repeat, baggage keys are the user's and may.
    pub(crate) fn keys_distinct(&self) -> bool {
        self.baggage_attributes.is_empty()
    }

    /// Baggage entries copied onto the span as attributes (same key).
    pub(crate) fn push_baggage(&self, attrs: &mut Vec<KeyValue>, cx: &Context) {
        for key in self.baggage_attributes.iter() {
            if let Some(v) = cx.baggage().get(key) {
                attrs.push(KeyValue::new(Key::from_static(key), v.to_string()));
            }
        }
    }

    /// Runs `f` with the layer's propagator, or the global one, without
    /// cloning an `Arc` per request (a shared reference count touched by
    /// every worker thread).
    pub(crate) fn with_propagator<T>(&self, f: impl FnOnce(&dyn TextMapPropagator) -> T) -> T {
        match &self.propagator {
            Some(p) => f(&**p),
            None => crate::propagation::global::with_text_map_propagator(f),
        }
    }
}

/// Records the response status on a server or client span.
fn record_response<B>(
    span: &mut Span,
    resp: &Response<B>,
    protocol: Protocol,
    client: bool,
) -> bool {
    let status = resp.status();
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    let error = if client {
        status.as_u16() >= 400
    } else {
        status.is_server_error()
    };
    if error {
        span.set_attribute("error.type", status.as_str().to_string());
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    match protocol {
        Protocol::Grpc => grpc_status_from(resp.headers(), span),
        Protocol::Http => true,
    }
}
