//! The client layer: [`HttpClientLayer`], its service and response future.
//! The context is injected into the request headers even when the span does
//! not record, so the callee continues the trace.

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response, Uri};
use tower_layer::Layer;
use tower_service::Service;

use super::attributes::{grpc_method, protocol_version, push_method, push_server_address};
use super::{record_response, LayerConfig, TracedBody, SCOPE_NAME};
use crate::attributes::KeyValue;
use crate::context::Context;
use crate::integrations::body::Protocol;
use crate::integrations::TracerSource;
use crate::propagation::TextMapPropagator;
use crate::trace::{Span, SpanKind, Status, Tracer};

/// Tower layer that traces outgoing HTTP requests: a `CLIENT` span per
/// request, the context injected into the request headers, the response
/// status recorded (4xx and 5xx are errors). The span ends when the response
/// body is finished or dropped. While the request is in flight the client
/// span is the current context (with a [`SpanInbox`](crate::trace::SpanInbox)),
/// so events the client stack logs through the `tracing` bridge, and spans
/// it starts, belong to the client span.
///
/// ```no_run
/// use ferrotrace::integrations::http::HttpClientLayer;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
///
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
/// let traced = ServiceBuilder::new()
///     .layer(HttpClientLayer::from_global())
///     .service(client);
/// # let _ = traced;
/// ```
#[derive(Clone, Debug)]
pub struct HttpClientLayer {
    // Shared with every service the layer makes (and their per-request clones).
    config: Arc<LayerConfig>,
}

impl HttpClientLayer {
    /// Records spans with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        HttpClientLayer {
            config: Arc::new(LayerConfig::new(
                TracerSource::Fixed(tracer),
                Protocol::Http,
            )),
        }
    }

    /// Records spans with the global provider's tracer (scope [`SCOPE_NAME`]),
    /// looked up per request. Needs a global provider (`ferrotrace::init()`);
    /// without one nothing is recorded and a diagnostic says so once.
    pub fn from_global() -> Self {
        HttpClientLayer {
            config: Arc::new(LayerConfig::new(
                TracerSource::Global(SCOPE_NAME),
                Protocol::Http,
            )),
        }
    }

    /// Uses `propagator` instead of the global one.
    pub fn with_propagator(mut self, propagator: impl TextMapPropagator + 'static) -> Self {
        Arc::make_mut(&mut self.config).propagator = Some(Arc::new(propagator));
        self
    }

    /// Copies these baggage entries (when present) onto each span as
    /// attributes with the same key, e.g. `["tenant"]`.
    pub fn with_baggage_attributes(mut self, keys: impl IntoIterator<Item = &'static str>) -> Self {
        Arc::make_mut(&mut self.config).baggage_attributes = keys.into_iter().collect();
        self
    }
}

impl<S> Layer<S> for HttpClientLayer {
    type Service = ClientTraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTraceService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service produced by [`HttpClientLayer`] (and the gRPC client layer).
#[derive(Clone, Debug)]
pub struct ClientTraceService<S> {
    inner: S,
    // Shared: axum clones the service for every request.
    config: Arc<LayerConfig>,
}

impl<S> ClientTraceService<S> {
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    pub(crate) fn from_parts(inner: S, config: Arc<LayerConfig>) -> Self {
        ClientTraceService { inner, config }
    }
}

/// `url.full` without user info (credentials never go into telemetry).
fn full_url(uri: &Uri) -> String {
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => {
            let host_port = a.as_str().rsplit('@').next().unwrap_or_default();
            let scheme = uri.scheme_str().unwrap_or("http");
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            format!("{scheme}://{host_port}{pq}")
        }
        _ => uri.to_string(),
    }
}

/// The client span's name and attributes (built only for a span that records;
/// never inlined, as the server layer's).
#[inline(never)]
fn client_details(
    config: &LayerConfig,
    parts: &http::request::Parts,
) -> (Cow<'static, str>, Vec<KeyValue>) {
    let mut attrs = crate::trace::attribute_buffers::take(8);
    let name: Cow<'static, str> = match config.protocol {
        Protocol::Grpc => {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            push_server_address(&mut attrs, &parts.uri, || {
                parts.headers.get(http::header::HOST)
            });
            match grpc_method(parts.uri.path()) {
                Some((service, method)) => {
                    attrs.push(KeyValue::new("rpc.service", service.to_string()));
                    attrs.push(KeyValue::new("rpc.method", method.to_string()));
                    format!("{service}/{method}").into()
                }
                None => "grpc".into(),
            }
        }
        Protocol::Http => {
            let method = push_method(&mut attrs, &parts.method);
            attrs.push(KeyValue::new("url.full", full_url(&parts.uri)));
            push_server_address(&mut attrs, &parts.uri, || {
                parts.headers.get(http::header::HOST)
            });
            if let Some(v) = protocol_version(parts.version) {
                attrs.push(KeyValue::new("network.protocol.version", v));
            }
            method.into()
        }
    };
    if !config.baggage_attributes.is_empty() {
        Context::map_current(|cx| config.push_baggage(&mut attrs, cx));
    }
    (name, attrs)
}

/// Starts the client span, child of the current context's span. Like the
/// server span, the sampler decides first: an unsampled request builds no
/// name, no attribute and no `url.full` string.
fn client_span(config: &LayerConfig, parts: &http::request::Parts) -> Span {
    config.tracer.tracer().start_lazy(
        SpanKind::Client,
        Context::current_span_context(),
        config.keys_distinct(),
        || client_details(config, parts),
    )
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ClientTraceService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Display,
{
    type Response = Response<TracedBody<ResB>>;
    type Error = S::Error;
    type Future = ClientResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if crate::integrations::is_suppressed() {
            return ClientResponseFuture {
                inner: self.inner.call(req),
                span: None,
                protocol: self.config.protocol,
                cx: None,
            };
        }
        let (mut parts, body) = req.into_parts();
        let mut span = client_span(&self.config, &parts);
        // Inject even when unsampled: the callee must continue this trace.
        let mut cx = Context::current().into_with_span_context(span.span_context().clone());
        self.config
            .with_propagator(|p| p.inject_context(&cx, &mut parts.headers));
        // While the request is in flight the client span is current, with an
        // inbox: what the client stack logs (`tracing` events outside any
        // `tracing` span) and the spans it starts belong to it, not to the
        // caller's (e.g. the server request's) span.
        if let Some(inbox) = span.inbox() {
            cx.set_inbox(inbox);
        }
        let req = Request::from_parts(parts, body);
        let inner = cx.run_attached(|| self.inner.call(req));
        ClientResponseFuture {
            inner,
            // A span that does not record needs no response status and no end.
            span: span.is_recording().then_some(span),
            protocol: self.config.protocol,
            cx: Some(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`ClientTraceService`].
    pub struct ClientResponseFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        protocol: Protocol,
        // The client span's context, current while `inner` is polled.
        cx: Option<Context>,
    }
}

impl<F> std::fmt::Debug for ClientResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientResponseFuture")
            .field("span", &self.span)
            .finish()
    }
}

impl<F, ResB, E> Future for ClientResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Display,
{
    type Output = Result<Response<TracedBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The context is moved onto the thread's stack and back, not cloned.
        let inner = this.inner;
        let polled = match this.cx.as_mut() {
            Some(cx) => cx.run_attached(|| inner.poll(task)),
            None => inner.poll(task),
        };
        match std::task::ready!(polled) {
            Ok(resp) => {
                let Some(mut span) = this.span.take() else {
                    return Poll::Ready(Ok(resp.map(TracedBody::passthrough)));
                };
                let status_seen = record_response(&mut span, &resp, *this.protocol, true);
                let protocol = *this.protocol;
                Poll::Ready(Ok(
                    resp.map(|b| TracedBody::new(b, span, protocol, status_seen))
                ))
            }
            Err(e) => {
                if let Some(mut span) = this.span.take() {
                    span.set_attribute("error.type", "transport");
                    span.set_status(Status::error(e.to_string()));
                    span.end();
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_full_strips_credentials() {
        let uri: Uri = "http://user:secret@example.com:8080/a?b=1".parse().unwrap();
        assert_eq!(full_url(&uri), "http://example.com:8080/a?b=1");
        let uri: Uri = "http://example.com/a".parse().unwrap();
        assert_eq!(full_url(&uri), "http://example.com/a");
    }
}
