//! The server layer: [`HttpServerLayer`], its service and response future.
//! The span's context is made current while the handler runs; the span
//! ends with the response body (see [`TracedBody`]).

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::attributes::{
    grpc_method, method_label, protocol_version, push_method, push_server_address, scheme_value,
};
use super::{record_response, LayerConfig, RouteFn, TracedBody, SCOPE_NAME};
use crate::attributes::{KeyValue, Value};
use crate::context::Context;
use crate::integrations::body::Protocol;
use crate::integrations::TracerSource;
use crate::propagation::{ScannedHeaders, TextMapPropagator};
use crate::trace::{Span, SpanKind, Status, Tracer};

/// Tower layer that traces incoming HTTP requests. See the [module docs](crate::integrations::http).
#[derive(Clone, Debug)]
pub struct HttpServerLayer {
    // Shared with every service the layer makes (and their per-request clones).
    config: Arc<LayerConfig>,
}

impl HttpServerLayer {
    /// Records spans with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        HttpServerLayer {
            config: Arc::new(LayerConfig::new(
                TracerSource::Fixed(tracer),
                Protocol::Http,
            )),
        }
    }

    /// Records spans with the global provider's tracer (scope [`SCOPE_NAME`]),
    /// looked up per request, so a provider installed after the router was
    /// built is used. Needs a global provider — `ferrotrace::init()` or
    /// [`set_tracer_provider`](crate::trace::global::set_tracer_provider):
    /// without one nothing is recorded (context still propagates) and a
    /// diagnostic says so once.
    pub fn from_global() -> Self {
        HttpServerLayer {
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

    /// Whether a panicking handler is turned into a `500` response (default
    /// `true`). Either way the span ends with an error status and a `panic`
    /// exception event; with `false` the panic continues unwinding afterwards.
    pub fn with_catch_panics(mut self, catch: bool) -> Self {
        Arc::make_mut(&mut self.config).catch_panics = catch;
        self
    }

    /// Names routes with `f` when axum's `MatchedPath` is not available.
    pub fn with_route_fn(
        mut self,
        f: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.config).route_fn = Some(Arc::new(f));
        self
    }
}

impl<S> Layer<S> for HttpServerLayer {
    type Service = ServerTraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTraceService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service produced by [`HttpServerLayer`] (and the gRPC server layer).
#[derive(Clone, Debug)]
pub struct ServerTraceService<S> {
    inner: S,
    // Shared: axum clones the service for every request.
    config: Arc<LayerConfig>,
}

impl<S> ServerTraceService<S> {
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    pub(crate) fn from_parts(inner: S, config: Arc<LayerConfig>) -> Self {
        ServerTraceService { inner, config }
    }
}

/// What the server span reads of a request, by reference: the whole
/// request (the usual path: it is not taken apart, so its head is not moved
/// out and back) or its parts (split only for a route function, which reads
/// `&Parts`).
trait RequestHead {
    fn method(&self) -> &http::Method;
    fn uri(&self) -> &http::Uri;
    fn version(&self) -> http::Version;
    fn headers(&self) -> &http::HeaderMap;
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn extensions(&self) -> &http::Extensions;
    /// The parts, when the request was split for a route function.
    fn parts(&self) -> Option<&http::request::Parts>;
}

impl RequestHead for http::request::Parts {
    fn method(&self) -> &http::Method {
        &self.method
    }
    fn uri(&self) -> &http::Uri {
        &self.uri
    }
    fn version(&self) -> http::Version {
        self.version
    }
    fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }
    fn parts(&self) -> Option<&http::request::Parts> {
        Some(self)
    }
}

impl<B> RequestHead for Request<B> {
    fn method(&self) -> &http::Method {
        self.method()
    }
    fn uri(&self) -> &http::Uri {
        self.uri()
    }
    fn version(&self) -> http::Version {
        self.version()
    }
    fn headers(&self) -> &http::HeaderMap {
        self.headers()
    }
    fn extensions(&self) -> &http::Extensions {
        self.extensions()
    }
    fn parts(&self) -> Option<&http::request::Parts> {
        None
    }
}

fn route_of<'a>(head: &'a dyn RequestHead, route_fn: Option<&RouteFn>) -> Option<Cow<'a, str>> {
    #[cfg(feature = "axum")]
    if let Some(p) = head.extensions().get::<axum::extract::MatchedPath>() {
        return Some(Cow::Borrowed(p.as_str()));
    }
    route_fn
        .zip(head.parts())
        .and_then(|(f, parts)| f(parts))
        .map(Cow::Owned)
}

/// The server span's name and attributes in one call (a span the sampler
/// kept before naming it). Never inlined: kept out of the layer's `call`,
/// the unsampled path stays short (measured: inlined here it cost an
/// unsampled request ~30 ns through code layout alone, at the same
/// instruction count).
#[inline(never)]
fn server_details(
    config: &LayerConfig,
    head: &dyn RequestHead,
    headers: &ScannedHeaders<'_>,
    parent: &Context,
) -> (Cow<'static, str>, Vec<KeyValue>) {
    let (name, route) = server_name(config, head);
    (
        name,
        server_attributes(config, head, headers, parent, route),
    )
}

/// The server span's name, and the `http.route` value when the name came
/// from a route (found once for both). Built before the attributes: a
/// sampler that decides by name (the remote sampler's per-operation rates)
/// decides from it alone. A known route's name is a shared `'static` text.
#[inline(always)]
fn server_name(config: &LayerConfig, head: &dyn RequestHead) -> (Cow<'static, str>, Option<Value>) {
    match config.protocol {
        Protocol::Grpc => {
            let name = match grpc_method(head.uri().path()) {
                Some((service, method)) => format!("{service}/{method}").into(),
                None => "grpc".into(),
            };
            (name, None)
        }
        Protocol::Http => {
            let method = method_label(head.method());
            match route_of(head, config.route_fn.as_ref()) {
                Some(route) => {
                    match crate::integrations::route_names::route_and_name(method, &route) {
                        // The usual case: a known route, no allocation.
                        Some((route, name)) => (name.into(), Some(route.into())),
                        None => {
                            // Not `format!`: its machinery costs ~700 instructions here.
                            let mut name = String::with_capacity(method.len() + 1 + route.len());
                            name.push_str(method);
                            name.push(' ');
                            name.push_str(&route);
                            (name.into(), Some(route.into_owned().into()))
                        }
                    }
                }
                None => (method.into(), None),
            }
        }
    }
}

/// The server span's attributes (built only for a span that records), with
/// the route [`server_name`] found.
#[inline(always)]
fn server_attributes(
    config: &LayerConfig,
    head: &dyn RequestHead,
    headers: &ScannedHeaders<'_>,
    parent: &Context,
    route: Option<Value>,
) -> Vec<KeyValue> {
    let mut attrs = crate::trace::attribute_buffers::take(10);
    match config.protocol {
        Protocol::Grpc => {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            push_server_address(&mut attrs, head.uri(), || headers.host());
            if let Some((service, method)) = grpc_method(head.uri().path()) {
                attrs.push(KeyValue::new("rpc.service", service.to_string()));
                attrs.push(KeyValue::new("rpc.method", method.to_string()));
            }
        }
        Protocol::Http => {
            push_method(&mut attrs, head.method());
            attrs.push(KeyValue::new("url.path", head.uri().path().to_string()));
            attrs.push(KeyValue::new("url.scheme", scheme_value(head.uri())));
            push_server_address(&mut attrs, head.uri(), || headers.host());
            if let Some(v) = protocol_version(head.version()) {
                attrs.push(KeyValue::new("network.protocol.version", v));
            }
            if let Some(ua) = headers.user_agent().and_then(|v| v.to_str().ok()) {
                // The same few clients call again and again: shared when
                // repeated (bounded per thread), else copied.
                attrs.push(KeyValue::new(
                    "user_agent.original",
                    crate::integrations::shared_values::string_value(
                        crate::integrations::shared_values::http_slots::USER_AGENT,
                        ua,
                    ),
                ));
            }
            if let Some(route) = route {
                attrs.push(KeyValue::new("http.route", route));
            }
        }
    }
    config.push_baggage(&mut attrs, parent);
    attrs
}

/// Starts the server span. The sampler decides first; the name, the
/// attributes and their strings are built only when the span records.
fn server_span(
    config: &LayerConfig,
    head: &dyn RequestHead,
    headers: &ScannedHeaders<'_>,
    parent: &Context,
) -> Span {
    let parent_sc = parent
        .has_active_span()
        .then(|| parent.span_context().clone());
    config.tracer.tracer().start_lazy_named(
        SpanKind::Server,
        parent_sc,
        config.keys_distinct(),
        || server_details(config, head, headers, parent),
        || server_name(config, head),
        |route| server_attributes(config, head, headers, parent, route),
    )
}

/// The request's span (`None` when it does not record: a span that does not
/// record needs no status and no end, so the response future and the body
/// carry none) and the context the handler runs in.
fn start_request(config: &LayerConfig, head: &dyn RequestHead) -> (Option<Span>, Context) {
    // One pass over the headers finds the W3C ones (and `Host` and
    // `User-Agent` for the span's attributes); the propagators' look-ups
    // then read fields instead of hashing names.
    let headers = ScannedHeaders::new(head.headers());
    let mut parent = Context::current();
    config.with_propagator(|p| p.extract_in_place(&mut parent, &headers));
    let mut span = server_span(config, head, &headers, &parent);
    let mut cx = parent.into_with_span_context(span.span_context().clone());
    // Lets code that only sees the context (the `tracing` bridge, for
    // events outside any `tracing` span) add events to the request span.
    if let Some(inbox) = span.inbox() {
        cx.set_inbox(inbox);
    }
    // Only the context of a span that does not record travels, made current
    // around the handler so its outgoing calls continue the trace.
    (span.is_recording().then_some(span), cx)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn record_panic(span: &mut Span, message: &str) {
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", "panic"),
            KeyValue::new("exception.message", message.to_string()),
        ],
    );
    span.set_attribute("error.type", "panic");
    span.set_status(Status::error(format!("handler panicked: {message}")));
}

/// What replaces the response of a panicked handler.
fn panic_response<B>(protocol: Protocol) -> Response<TracedBody<B>> {
    let mut resp = Response::new(TracedBody::empty());
    match protocol {
        Protocol::Http => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
        Protocol::Grpc => {
            // A trailers-only gRPC response: status INTERNAL.
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", http::HeaderValue::from_static("13"));
            h.insert(
                "grpc-message",
                http::HeaderValue::from_static("handler%20panicked"),
            );
        }
    }
    resp
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ServerTraceService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Display,
{
    type Response = Response<TracedBody<ResB>>;
    type Error = S::Error;
    type Future = ServerResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        if crate::integrations::is_suppressed() {
            return ServerResponseFuture {
                inner: catch_unwind(AssertUnwindSafe(|| self.inner.call(req))).ok(),
                span: None,
                cx: Context::current(),
                catch_panics: self.config.catch_panics,
                protocol: self.config.protocol,
            };
        }
        let (span, cx) = if self.config.route_fn.is_some() {
            // A route function reads `&Parts`: the request is split for it.
            let (parts, body) = req.into_parts();
            let started = start_request(&self.config, &parts);
            req = Request::from_parts(parts, body);
            started
        } else {
            start_request(&self.config, &req)
        };
        // The handler's future is written straight into the response
        // future's slot: returned through the unwinding guard and moved on
        // from there, it was copied three times more (it holds the whole
        // handler state).
        let mut fut = ServerResponseFuture {
            inner: None,
            span,
            cx,
            catch_panics: self.config.catch_panics,
            protocol: self.config.protocol,
        };
        let inner = &mut fut.inner;
        let called = fut.cx.run_attached(|| {
            catch_unwind(AssertUnwindSafe(|| *inner = Some(self.inner.call(req))))
        });
        if let Err(payload) = called {
            if let Some(span) = fut.span.as_mut() {
                record_panic(span, &panic_message(&*payload));
            }
            if !self.config.catch_panics {
                if let Some(mut span) = fut.span.take() {
                    span.end();
                }
                std::panic::resume_unwind(payload);
            }
        }
        fut
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`ServerTraceService`]: polls the handler with the
    /// request's context current and hands the span to the response body.
    pub struct ServerResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        span: Option<Span>,
        cx: Context,
        catch_panics: bool,
        protocol: Protocol,
    }
}

impl<F> std::fmt::Debug for ServerResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerResponseFuture")
            .field("span", &self.span)
            .finish()
    }
}

impl<F, ResB, E> Future for ServerResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Display,
{
    type Output = Result<Response<TracedBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            // The handler panicked in `call`.
            if let Some(mut span) = this.span.take() {
                span.set_attribute("http.response.status_code", 500_i64);
                span.end();
            }
            return Poll::Ready(Ok(panic_response(*this.protocol)));
        };
        // The context is moved onto the thread's stack and back, not cloned.
        let polled = this
            .cx
            .run_attached(|| catch_unwind(AssertUnwindSafe(|| inner.poll(task))));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(resp))) => {
                let Some(mut span) = this.span.take() else {
                    return Poll::Ready(Ok(resp.map(TracedBody::passthrough)));
                };
                let status_seen = record_response(&mut span, &resp, *this.protocol, false);
                let protocol = *this.protocol;
                Poll::Ready(Ok(
                    resp.map(|b| TracedBody::new(b, span, protocol, status_seen))
                ))
            }
            Ok(Poll::Ready(Err(e))) => {
                if let Some(mut span) = this.span.take() {
                    span.set_attribute("error.type", "service");
                    span.set_status(Status::error(e.to_string()));
                    span.end();
                }
                Poll::Ready(Err(e))
            }
            Err(payload) => {
                let mut span = this.span.take();
                if let Some(span) = span.as_mut() {
                    record_panic(span, &panic_message(&*payload));
                    if *this.protocol == Protocol::Http {
                        span.set_attribute("http.response.status_code", 500_i64);
                    } else {
                        span.set_attribute("rpc.grpc.status_code", 13_i64);
                    }
                }
                drop(span);
                if !*this.catch_panics {
                    std::panic::resume_unwind(payload);
                }
                Poll::Ready(Ok(panic_response(*this.protocol)))
            }
        }
    }
}
