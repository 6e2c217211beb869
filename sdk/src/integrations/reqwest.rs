//! A [`reqwest_middleware`] middleware for [`reqwest`] clients: a `CLIENT`
//! span per request, the context (span and baggage) injected into the
//! request headers, the response status recorded. Beside the tower client
//! layer ([`HttpClientLayer`](super::http::HttpClientLayer)) for hyper-util
//! clients.
//!
//! ```no_run
//! use ferrotrace::integrations::reqwest::TracingMiddleware;
//!
//! # async fn demo() -> Result<(), reqwest_middleware::Error> {
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(TracingMiddleware::from_global())
//!     .build();
//! let resp = client.get("http://inventory:8080/items/7").send().await?;
//! # let _ = resp; Ok(()) }
//! ```
//!
//! The span is named `{METHOD}` with `http.request.method`, `url.full`
//! (without user info), `server.address`, `server.port` and
//! `http.response.status_code`; 4xx, 5xx and transport errors make it an
//! error (`error.type` = the status code or `transport`). It ends when the
//! response headers arrive (reading the body is the caller's). While the
//! request is in flight the client span is current, with an inbox, so
//! middleware further down and `tracing` events there belong to it.

use std::borrow::Cow;
use std::sync::Arc;

use reqwest_middleware::{Middleware, Next};

use super::http::{push_method, LayerConfig};
use super::TracerSource;
use crate::attributes::KeyValue;
use crate::context::{Context, FutureExt};
use crate::propagation::TextMapPropagator;
use crate::trace::{SpanKind, Status, Tracer};

/// The instrumentation scope name used with [`TracingMiddleware::from_global`].
pub const SCOPE_NAME: &str = "ferrotrace.reqwest";

/// Traces each request sent through a `reqwest_middleware` client. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct TracingMiddleware {
    config: LayerConfig,
}

impl TracingMiddleware {
    /// Records spans with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        TracingMiddleware {
            config: LayerConfig::new(TracerSource::Fixed(tracer), super::body::Protocol::Http),
        }
    }

    /// Records spans with the global provider's tracer (scope [`SCOPE_NAME`]),
    /// looked up per request. Needs a global provider (`ferrotrace::init()`);
    /// without one nothing is recorded and a diagnostic says so once.
    pub fn from_global() -> Self {
        TracingMiddleware {
            config: LayerConfig::new(
                TracerSource::Global(SCOPE_NAME),
                super::body::Protocol::Http,
            ),
        }
    }

    /// Uses `propagator` instead of the global one.
    pub fn with_propagator(mut self, propagator: impl TextMapPropagator + 'static) -> Self {
        self.config.propagator = Some(Arc::new(propagator));
        self
    }

    /// Copies these baggage entries (when present) onto each span as
    /// attributes with the same key, e.g. `["tenant"]`.
    pub fn with_baggage_attributes(mut self, keys: impl IntoIterator<Item = &'static str>) -> Self {
        self.config.baggage_attributes = keys.into_iter().collect();
        self
    }
}

/// `url.full` without user info: credentials never go into telemetry.
fn full_url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

#[async_trait::async_trait]
impl Middleware for TracingMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if super::is_suppressed() {
            return next.run(req, extensions).await;
        }
        let current = Context::current();
        // The sampler decides first: an unsampled request builds no
        // attribute and no `url.full` string.
        let mut span = self.config.tracer.tracer().start_lazy(
            SpanKind::Client,
            current
                .has_active_span()
                .then(|| current.span_context().clone()),
            self.config.keys_distinct(),
            || {
                let mut attrs = crate::trace::attribute_buffers::take(6);
                let method = push_method(&mut attrs, req.method());
                attrs.push(KeyValue::new("url.full", full_url(req.url())));
                if let Some(host) = req.url().host_str() {
                    attrs.push(KeyValue::new("server.address", host.to_string()));
                }
                if let Some(port) = req.url().port_or_known_default() {
                    attrs.push(KeyValue::new("server.port", i64::from(port)));
                }
                self.config.push_baggage(&mut attrs, &current);
                (Cow::Borrowed(method), attrs)
            },
        );
        // Inject even when unsampled: the callee must continue this trace.
        let mut cx = current.with_span_context(span.span_context().clone());
        self.config
            .with_propagator(|p| p.inject_context(&cx, req.headers_mut()));
        if let Some(inbox) = span.inbox() {
            cx.set_inbox(inbox);
        }
        let result = next.run(req, extensions).with_context(cx).await;
        match &result {
            Ok(resp) => {
                let status = resp.status();
                span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
                if status.as_u16() >= 400 {
                    span.set_attribute("error.type", status.as_str().to_string());
                    span.set_status(Status::error(format!("HTTP {status}")));
                }
            }
            Err(e) => {
                span.set_attribute("error.type", "transport");
                span.set_status(Status::error(e.to_string()));
            }
        }
        span.end();
        result
    }
}
