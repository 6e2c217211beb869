//! Tracer provider, tracer, spans, samplers and span limits.

pub(crate) mod attribute_buffers;
pub mod consistent;
pub mod diagnostics;
pub mod global;
mod interned;
pub mod limits;
pub mod load_shedding;
pub mod provider;
#[cfg(feature = "jaeger-remote")]
pub mod remote;
pub mod sampler;
mod span;
pub mod span_data;
pub(crate) mod tracer;
mod watchdog;

pub use consistent::ConsistentProbability;
pub use interned::{Interned, MAX_INTERNED};
pub use limits::SpanLimits;
pub use provider::{TracerProvider, TracerProviderBuilder, DEFAULT_UNENDED_SPAN_AGE};
pub use sampler::{ParentBased, Sampler, SamplingDecision, SamplingResult, ShouldSample};
pub use span::{Span, SpanInbox};
pub use span_data::{Event, InstrumentationScope, Link, SpanData, SpanKind, Status};
pub use tracer::{SpanBuilder, Tracer};
