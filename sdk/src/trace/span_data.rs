//! Plain data describing spans: kind, status, events, links, scope, and the
//! finished-span record ([`SpanData`]) that processors and exporters receive.

use std::borrow::Cow;

use crate::attributes::KeyValue;
use crate::context::SpanContext;
use crate::ids::SpanId;
use crate::resource::Resource;
use crate::trace::interned::Interned;

/// The role of a span in a trace (OTLP `SpanKind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// Internal operation (the default).
    #[default]
    Internal,
    /// Server side of a synchronous request.
    Server,
    /// Client side of a synchronous request.
    Client,
    /// Sender of an asynchronous message.
    Producer,
    /// Receiver of an asynchronous message.
    Consumer,
}

/// Span status. Precedence: `Ok` is final; `Error` overrides `Unset`; `Unset`
/// never overrides anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Status {
    /// No status set (the default).
    #[default]
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed, with a description.
    Error {
        /// What went wrong.
        description: Cow<'static, str>,
    },
}

impl Status {
    /// An error status with a description.
    pub fn error(description: impl Into<Cow<'static, str>>) -> Self {
        Status::Error {
            description: description.into(),
        }
    }
}

/// A timestamped annotation on a span.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Event name (e.g. `exception`).
    pub name: Cow<'static, str>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Event attributes (after limits).
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the per-event limit.
    pub dropped_attributes_count: u32,
}

/// A causal link to another span, possibly in another trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// The linked span.
    pub span_context: SpanContext,
    /// Link attributes (after limits).
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the per-link limit.
    pub dropped_attributes_count: u32,
}

/// The instrumentation scope (library) that produced a span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstrumentationScope {
    /// Scope name, e.g. the crate name.
    pub name: Cow<'static, str>,
    /// Scope version.
    pub version: Option<Cow<'static, str>>,
    /// Schema URL.
    pub schema_url: Option<Cow<'static, str>>,
    /// Scope attributes.
    pub attributes: Vec<KeyValue>,
}

/// A finished (or, in `on_start`, started) span as handed to processors and exporters.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanData {
    /// This span's identity.
    pub span_context: SpanContext,
    /// Parent span id; `SpanId::INVALID` for a root span.
    pub parent_span_id: SpanId,
    /// True if the parent context was remote (extracted from a carrier).
    pub parent_is_remote: bool,
    /// Span kind.
    pub span_kind: SpanKind,
    /// Span name.
    pub name: Cow<'static, str>,
    /// Start, nanoseconds since the Unix epoch.
    pub start_time_ns: u64,
    /// End, nanoseconds since the Unix epoch (>= start).
    pub end_time_ns: u64,
    /// Attributes (after limits).
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by limits.
    pub dropped_attributes_count: u32,
    /// Events (after limits).
    pub events: Vec<Event>,
    /// Events dropped by limits.
    pub dropped_events_count: u32,
    /// Links (after limits).
    pub links: Vec<Link>,
    /// Links dropped by limits.
    pub dropped_links_count: u32,
    /// Final status.
    pub status: Status,
    /// The provider's resource (interned: no reference count per span; build
    /// one by hand with `Arc::new(resource).into()`).
    pub resource: Interned<Resource>,
    /// The tracer's instrumentation scope (interned like the resource).
    pub scope: Interned<InstrumentationScope>,
}
