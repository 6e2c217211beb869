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

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tower_layer::Layer;
use tower_service::Service;

pub use super::body::TracedBody;
use super::body::{grpc_status_from, Protocol};
use super::TracerSource;
use crate::attributes::{Key, KeyValue};
use crate::context::Context;
use crate::propagation::{ScannedHeaders, TextMapPropagator};
use crate::trace::{Span, SpanKind, Status, Tracer};

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

/// Tower layer that traces incoming HTTP requests. See the [module docs](self).
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

/// Semantic conventions allow only the known methods as `http.request.method`;
/// anything else is `_OTHER` (with the original in `http.request.method_original`),
/// which also keeps span names low-cardinality.
fn method_name(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

pub(crate) fn push_method(attrs: &mut Vec<KeyValue>, method: &Method) -> &'static str {
    match method_name(method) {
        Some(m) => {
            attrs.push(KeyValue::new("http.request.method", m));
            m
        }
        None => {
            attrs.push(KeyValue::new("http.request.method", "_OTHER"));
            attrs.push(KeyValue::new(
                "http.request.method_original",
                method.as_str().to_string(),
            ));
            "HTTP"
        }
    }
}

fn protocol_version(v: Version) -> Option<&'static str> {
    Some(match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

fn default_port(scheme: Option<&str>) -> Option<u16> {
    match scheme {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    }
}

/// Bytes a host may contain: letters, digits and `.-_[]:%` (the brackets
/// and colons of an IPv6 literal, `%` of a zone id).
const HOST_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric()
            || matches!(c, b'.' | b'-' | b'_' | b'[' | b']' | b':' | b'%');
        i += 1;
    }
    t
};

/// Splits a `Host` header value (`host`, `host:port`, `[v6]`, `[v6]:port`)
/// without allocating; `None` when it is not of that shape.
fn split_host(h: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &h[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        // One pass (the usual `name:port` case): the host's bytes are
        // checked up to the first colon; a second colon is not a host.
        let b = h.as_bytes();
        let mut colon = b.len();
        for (i, &c) in b.iter().enumerate() {
            if c == b':' {
                colon = i;
                break;
            }
            if !HOST_BYTES[usize::from(c)] {
                return None;
            }
        }
        if colon == b.len() {
            return (!h.is_empty()).then_some((h, None));
        }
        let (host, port) = (&h[..colon], &h[colon + 1..]);
        if host.is_empty() || port.contains(':') {
            return None;
        }
        return Some((host, Some(port.parse::<u16>().ok()?)));
    };
    let valid_host = !host.is_empty() && host.bytes().all(|c| HOST_BYTES[usize::from(c)]);
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// `server.address`/`server.port` from the URI authority, else the `Host` header.
fn push_server_address(attrs: &mut Vec<KeyValue>, uri: &Uri, headers: &HeaderMap) {
    let (host, port) = if let Some(a) = uri.authority() {
        (Some(a.host()), a.port_u16())
    } else if let Some(h) = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
    {
        match split_host(h) {
            Some((host, port)) => (Some(host), port),
            None => (None, None),
        }
    } else {
        (None, None)
    };
    if let Some(host) = host {
        attrs.push(KeyValue::new("server.address", host.to_string()));
        if let Some(port) = port.or_else(|| default_port(uri.scheme_str())) {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
}

/// `url.scheme`: the two usual ones without allocating.
fn scheme_value(uri: &Uri) -> crate::attributes::Value {
    match uri.scheme_str() {
        None | Some("http") => "http".into(),
        Some("https") => "https".into(),
        Some(other) => other.to_string().into(),
    }
}

fn route_of<'a>(
    parts: &'a http::request::Parts,
    route_fn: Option<&RouteFn>,
) -> Option<Cow<'a, str>> {
    #[cfg(feature = "axum")]
    if let Some(p) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return Some(Cow::Borrowed(p.as_str()));
    }
    route_fn.and_then(|f| f(parts)).map(Cow::Owned)
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
pub(crate) fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The server span's name and attributes (built only for a span that records).
/// Never inlined: kept out of the layer's `call`, the unsampled path stays
/// short (measured: inlined here it cost an unsampled request ~30 ns through
/// code layout alone, at the same instruction count).
#[inline(never)]
fn server_details(
    config: &LayerConfig,
    parts: &http::request::Parts,
    parent: &Context,
) -> (Cow<'static, str>, Vec<KeyValue>) {
    let mut attrs = Vec::with_capacity(10);
    let name: Cow<'static, str> = match config.protocol {
        Protocol::Grpc => {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            push_server_address(&mut attrs, &parts.uri, &parts.headers);
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
            attrs.push(KeyValue::new("url.path", parts.uri.path().to_string()));
            attrs.push(KeyValue::new("url.scheme", scheme_value(&parts.uri)));
            push_server_address(&mut attrs, &parts.uri, &parts.headers);
            if let Some(v) = protocol_version(parts.version) {
                attrs.push(KeyValue::new("network.protocol.version", v));
            }
            if let Some(ua) = parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
            {
                attrs.push(KeyValue::new("user_agent.original", ua.to_string()));
            }
            match route_of(parts, config.route_fn.as_ref()) {
                Some(route) => match super::route_names::route_and_name(method, &route) {
                    // The usual case: a known route, no allocation.
                    Some((route, name)) => {
                        attrs.push(KeyValue::new("http.route", route));
                        name.into()
                    }
                    None => {
                        // Not `format!`: its machinery costs ~700 instructions here.
                        let mut name = String::with_capacity(method.len() + 1 + route.len());
                        name.push_str(method);
                        name.push(' ');
                        name.push_str(&route);
                        attrs.push(KeyValue::new("http.route", route.into_owned()));
                        name.into()
                    }
                },
                None => method.into(),
            }
        }
    };
    config.push_baggage(&mut attrs, parent);
    (name, attrs)
}

/// Starts the server span. The sampler decides first; the name, the
/// attributes and their strings are built only when the span records.
fn server_span(config: &LayerConfig, parts: &http::request::Parts, parent: &Context) -> Span {
    let parent_sc = parent
        .has_active_span()
        .then(|| parent.span_context().clone());
    config
        .tracer
        .tracer()
        .start_lazy(SpanKind::Server, parent_sc, || {
            server_details(config, parts, parent)
        })
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

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if super::is_suppressed() {
            return ServerResponseFuture {
                inner: catch_unwind(AssertUnwindSafe(|| self.inner.call(req))).ok(),
                span: None,
                cx: Context::current(),
                catch_panics: self.config.catch_panics,
                protocol: self.config.protocol,
            };
        }
        let (parts, body) = req.into_parts();
        // One pass over the headers finds the W3C ones; the propagators'
        // look-ups then read fields instead of hashing names.
        let parent = self.config.with_propagator(|p| {
            p.extract_with_context(&Context::current(), &ScannedHeaders::new(&parts.headers))
        });
        let mut span = server_span(&self.config, &parts, &parent);
        let mut cx = parent.into_with_span_context(span.span_context().clone());
        // Lets code that only sees the context (the `tracing` bridge, for
        // events outside any `tracing` span) add events to the request span.
        if let Some(inbox) = span.inbox() {
            cx = cx.with_inbox(inbox);
        }
        // A span that does not record needs no status and no end, so the
        // response future and the body carry none (the body passes through):
        // only its context travels, made current below so the handler's
        // outgoing calls continue the trace.
        let mut span = span.is_recording().then_some(span);
        let req = Request::from_parts(parts, body);
        let inner = cx.run_attached(|| catch_unwind(AssertUnwindSafe(|| self.inner.call(req))));
        let inner = match inner {
            Ok(f) => Some(f),
            Err(payload) => {
                if let Some(span) = span.as_mut() {
                    record_panic(span, &panic_message(&*payload));
                }
                if !self.config.catch_panics {
                    if let Some(mut span) = span {
                        span.end();
                    }
                    std::panic::resume_unwind(payload);
                }
                None
            }
        };
        ServerResponseFuture {
            inner,
            span,
            cx,
            catch_panics: self.config.catch_panics,
            protocol: self.config.protocol,
        }
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
/// never inlined, as [`server_details`]).
#[inline(never)]
fn client_details(
    config: &LayerConfig,
    parts: &http::request::Parts,
) -> (Cow<'static, str>, Vec<KeyValue>) {
    let mut attrs = Vec::with_capacity(8);
    let name: Cow<'static, str> = match config.protocol {
        Protocol::Grpc => {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            push_server_address(&mut attrs, &parts.uri, &parts.headers);
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
            push_server_address(&mut attrs, &parts.uri, &parts.headers);
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
    config
        .tracer
        .tracer()
        .start_lazy(SpanKind::Client, Context::current_span_context(), || {
            client_details(config, parts)
        })
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
        if super::is_suppressed() {
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
            cx = cx.with_inbox(inbox);
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

    /// The previous `split_host`, kept as the reference for the one-pass version.
    fn split_host_reference(h: &str) -> Option<(&str, Option<u16>)> {
        let (host, port) = if let Some(rest) = h.strip_prefix('[') {
            let end = rest.find(']')?;
            let host = &h[..end + 2];
            match &rest[end + 1..] {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':')?)),
            }
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return None,
                None => (h, None),
            }
        };
        let valid_host = !host.is_empty()
            && host.bytes().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, b'.' | b'-' | b'_' | b'[' | b']' | b':' | b'%')
            });
        if !valid_host {
            return None;
        }
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok()?),
        };
        Some((host, port))
    }

    #[test]
    fn split_host_matches_the_reference() {
        let fixed = [
            "",
            ":",
            "a:",
            ":80",
            "a:80",
            "a:+80",
            "a:65536",
            "a:8:0",
            "a::80",
            "a b:80",
            "api.example.com:8080",
            "[::1]",
            "[::1]:443",
            "[::1]x",
            "[",
            "a]b:1",
            "a[b",
            "h%25:1",
            "é:80",
            "a:٣",
            "localhost",
            "a_b-c.d:0",
        ];
        for h in fixed {
            assert_eq!(split_host(h), split_host_reference(h), "{h:?}");
        }
        // Generated: short strings over an alphabet rich in the bytes that matter.
        let alphabet: Vec<char> = "a.-_[]:%0189 +é".chars().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 9) as usize;
            let h: String = (0..len)
                .map(|i| alphabet[((x >> (i * 5 + 3)) % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(split_host(&h), split_host_reference(&h), "{h:?}");
        }
    }

    #[test]
    fn grpc_paths() {
        assert_eq!(
            grpc_method("/pay.Payments/Charge"),
            Some(("pay.Payments", "Charge"))
        );
        assert_eq!(grpc_method("/nope"), None);
        assert_eq!(grpc_method("//x"), None);
        assert_eq!(grpc_method("/a/b/c"), None);
    }

    #[test]
    fn url_full_strips_credentials() {
        let uri: Uri = "http://user:secret@example.com:8080/a?b=1".parse().unwrap();
        assert_eq!(full_url(&uri), "http://example.com:8080/a?b=1");
        let uri: Uri = "http://example.com/a".parse().unwrap();
        assert_eq!(full_url(&uri), "http://example.com/a");
    }

    #[test]
    fn unknown_method_is_other() {
        let mut attrs = Vec::new();
        let m = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(push_method(&mut attrs, &m), "HTTP");
        assert_eq!(attrs[0], KeyValue::new("http.request.method", "_OTHER"));
    }
}
