//! # ferrotrace
//!
//! An OpenTelemetry-compatible tracing SDK for Rust services: tracer and spans,
//! W3C Trace Context and Baggage propagation, samplers, span limits, and span
//! processors/exporters (batch processing and OTLP export live in [`export`]).
//!
//! ```
//! use ferrotrace::trace::TracerProvider;
//! use ferrotrace::export::InMemorySpanExporter;
//!
//! let exporter = InMemorySpanExporter::default();
//! let provider = TracerProvider::builder()
//!     .with_simple_exporter(exporter.clone())
//!     .with_service_name("checkout")
//!     .build();
//! let tracer = provider.tracer("checkout-http");
//! {
//!     let mut span = tracer.start("GET /cart");
//!     span.set_attribute("http.request.method", "GET");
//! } // dropping a span ends it
//! assert_eq!(exporter.finished_spans().len(), 1);
//! ```

pub mod attributes;
pub mod context;
pub mod export;
pub mod ids;
mod init;
pub mod integrations;
pub mod propagation;
pub mod resource;
pub mod time;
pub mod trace;

pub use attributes::{Array, Key, KeyValue, StringValue, Value};
pub use context::{Context, SpanContext, TraceFlags, TraceState};
pub use ids::{SpanId, TraceId};
pub use init::{
    builder, init, InitBuilder, InitError, TelemetryGuard, TracesExporter, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use resource::Resource;
