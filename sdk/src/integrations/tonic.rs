//! gRPC (tonic): context propagation in metadata and tower layers for tonic
//! servers and clients.
//!
//! Spans are named `{package.Service}/{Method}` with `rpc.system = "grpc"`,
//! `rpc.service`, `rpc.method` and `rpc.grpc.status_code` (read from the
//! response headers for trailers-only responses, else from the trailers, so
//! the span ends when the response stream is finished). Any non-OK code makes
//! the span an error.
//!
//! ```no_run
//! use ferrotrace::integrations::tonic::{GrpcClientLayer, GrpcServerLayer};
//! # fn demo(channel: tonic::transport::Channel) {
//! // Server: tonic::transport::Server::builder().layer(GrpcServerLayer::from_global())
//! let _server_layer = GrpcServerLayer::from_global();
//! // Client: wrap the channel and hand it to the generated client's `new`.
//! let traced = tower::ServiceBuilder::new()
//!     .layer(GrpcClientLayer::from_global())
//!     .service(channel);
//! # let _ = traced; }
//! ```

use std::sync::Arc;

use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tower_layer::Layer;

use super::body::Protocol;
use super::http::{ClientTraceService, LayerConfig, ServerTraceService};
use super::TracerSource;
use crate::context::Context;
use crate::propagation::global::text_map_propagator;
use crate::propagation::{Extractor, Injector, TextMapPropagator};
use crate::trace::Tracer;

/// Scope name used when a gRPC layer takes its tracer from the global provider.
pub const SCOPE_NAME: &str = "ferrotrace.grpc";

/// Writes propagation fields into tonic metadata (ASCII entries).
#[derive(Debug)]
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Reads propagation fields from tonic metadata.
#[derive(Debug, Clone, Copy)]
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|kv| match kv {
                KeyAndValueRef::Ascii(k, _) => Some(k.as_str()),
                KeyAndValueRef::Binary(_, _) => None,
            })
            .collect()
    }
    fn get_all(&self, key: &str) -> Vec<&str> {
        self.0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
    fn has_multiple(&self, key: &str) -> bool {
        self.0.get_all(key).iter().nth(1).is_some()
    }
    fn has_unreadable(&self, key: &str) -> bool {
        self.0.get_all(key).iter().any(|v| v.to_str().is_err())
    }
}

/// Injects the current context into a request's metadata. Usable as a tonic
/// interceptor when the client layer is not used:
/// `Client::with_interceptor(channel, ferrotrace::integrations::tonic::inject_interceptor)`.
#[allow(clippy::result_large_err)] // the signature tonic's Interceptor requires
pub fn inject_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    text_map_propagator().inject_context(
        &Context::current(),
        &mut MetadataInjector(request.metadata_mut()),
    );
    Ok(request)
}

/// The context carried by a request's metadata (remote parent and baggage).
pub fn extract_from_request<T>(request: &tonic::Request<T>) -> Context {
    text_map_propagator()
        .extract_with_context(&Context::new(), &MetadataExtractor(request.metadata()))
}

/// Traces incoming gRPC calls: `SERVER` spans, parent extracted from the
/// request metadata, context current while the handler runs.
/// `tonic::transport::Server::builder().layer(GrpcServerLayer::new(tracer))`.
#[derive(Clone, Debug)]
pub struct GrpcServerLayer {
    // Shared with every service the layer makes (and their per-request clones).
    config: Arc<LayerConfig>,
}

impl GrpcServerLayer {
    /// Records spans with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        GrpcServerLayer {
            config: Arc::new(LayerConfig::new(
                TracerSource::Fixed(tracer),
                Protocol::Grpc,
            )),
        }
    }

    /// Records spans with the global provider's tracer (scope [`SCOPE_NAME`]),
    /// looked up per call. Needs a global provider (`ferrotrace::init()`);
    /// without one nothing is recorded and a diagnostic says so once.
    pub fn from_global() -> Self {
        GrpcServerLayer {
            config: Arc::new(LayerConfig::new(
                TracerSource::Global(SCOPE_NAME),
                Protocol::Grpc,
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

    /// Whether a panicking handler is answered with status `INTERNAL` (default
    /// `true`) instead of unwinding further. The span records the panic either way.
    pub fn with_catch_panics(mut self, catch: bool) -> Self {
        Arc::make_mut(&mut self.config).catch_panics = catch;
        self
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = ServerTraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTraceService::from_parts(inner, Arc::clone(&self.config))
    }
}

/// Traces outgoing gRPC calls: `CLIENT` spans, context injected into the
/// request metadata. Wrap a `tonic::transport::Channel` with it.
#[derive(Clone, Debug)]
pub struct GrpcClientLayer {
    // Shared with every service the layer makes (and their per-request clones).
    config: Arc<LayerConfig>,
}

impl GrpcClientLayer {
    /// Records spans with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        GrpcClientLayer {
            config: Arc::new(LayerConfig::new(
                TracerSource::Fixed(tracer),
                Protocol::Grpc,
            )),
        }
    }

    /// Records spans with the global provider's tracer (scope [`SCOPE_NAME`]),
    /// looked up per call. Needs a global provider (`ferrotrace::init()`);
    /// without one nothing is recorded and a diagnostic says so once.
    pub fn from_global() -> Self {
        GrpcClientLayer {
            config: Arc::new(LayerConfig::new(
                TracerSource::Global(SCOPE_NAME),
                Protocol::Grpc,
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

impl<S> Layer<S> for GrpcClientLayer {
    type Service = ClientTraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTraceService::from_parts(inner, Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip() {
        let mut md = MetadataMap::new();
        MetadataInjector(&mut md).set("TraceParent", "00-abc".into());
        MetadataInjector(&mut md).set("bad key", "x".into());
        let ex = MetadataExtractor(&md);
        assert_eq!(ex.get("traceparent"), Some("00-abc"));
        assert_eq!(ex.keys(), vec!["traceparent"]);
    }
}
