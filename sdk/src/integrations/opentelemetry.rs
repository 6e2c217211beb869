//! The `opentelemetry` 0.33 API on top of ferrotrace: [`OtelTracerProvider`]
//! implements [`opentelemetry::trace::TracerProvider`], so libraries and code
//! instrumented against the `opentelemetry` API record through ferrotrace's
//! samplers, processors and exporters.
//!
//! ```
//! use ferrotrace::export::InMemorySpanExporter;
//! use ferrotrace::integrations::opentelemetry::OtelTracerProvider;
//! use opentelemetry::trace::{Tracer, TracerProvider as _};
//!
//! let exporter = InMemorySpanExporter::default();
//! let provider = ferrotrace::trace::TracerProvider::builder()
//!     .with_simple_exporter(exporter.clone())
//!     .build();
//! let otel = OtelTracerProvider::new(provider);
//! // Or: opentelemetry::global::set_tracer_provider(otel.clone());
//! otel.tracer("lib").in_span("work", |_cx| {});
//! assert_eq!(exporter.finished_spans()[0].name, "work");
//! ```
//!
//! Parenting: a span's parent is the active span of the `opentelemetry`
//! context it is started in; when that context has none, the ferrotrace
//! current context's span (e.g. the request span of the HTTP server layer).
//! The reverse direction needs an explicit hop: run ferrotrace-instrumented
//! code under `ferrotrace_context(&otel_cx).attach()`.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{self as otel, TraceContextExt as _};

use crate::attributes::{Array, Key, KeyValue, StringValue, Value};
use crate::context::{Context, SpanContext, TraceFlags, TraceState};
use crate::ids::{SpanId, TraceId};
use crate::trace::{InstrumentationScope, Link, Span, SpanKind, Status, Tracer, TracerProvider};

/// A ferrotrace [`TracerProvider`] seen through the `opentelemetry` API.
#[derive(Clone, Debug)]
pub struct OtelTracerProvider {
    inner: TracerProvider,
}

impl OtelTracerProvider {
    /// Wraps `provider`.
    pub fn new(provider: TracerProvider) -> Self {
        OtelTracerProvider { inner: provider }
    }

    /// The wrapped provider (to flush or shut it down).
    pub fn provider(&self) -> &TracerProvider {
        &self.inner
    }
}

fn owned(s: &str) -> Cow<'static, str> {
    Cow::Owned(s.to_string())
}

impl otel::TracerProvider for OtelTracerProvider {
    type Tracer = OtelTracer;

    fn tracer_with_scope(&self, scope: opentelemetry::InstrumentationScope) -> OtelTracer {
        OtelTracer {
            inner: self.inner.tracer_with_scope(InstrumentationScope {
                name: owned(scope.name()),
                version: scope.version().map(owned),
                schema_url: scope.schema_url().map(owned),
                attributes: scope.attributes().map(key_value_from_otel).collect(),
            }),
        }
    }
}

/// A ferrotrace [`Tracer`] implementing [`opentelemetry::trace::Tracer`].
#[derive(Clone, Debug)]
pub struct OtelTracer {
    inner: Tracer,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kind_from_otel(kind: &otel::SpanKind) -> SpanKind {
    match kind {
        otel::SpanKind::Client => SpanKind::Client,
        otel::SpanKind::Server => SpanKind::Server,
        otel::SpanKind::Producer => SpanKind::Producer,
        otel::SpanKind::Consumer => SpanKind::Consumer,
        otel::SpanKind::Internal => SpanKind::Internal,
    }
}

fn string_from_otel(s: &opentelemetry::StringValue) -> StringValue {
    StringValue::from(s.as_str().to_string())
}

/// Converts an `opentelemetry` attribute value (types added by future
/// `opentelemetry` versions become their string form).
pub fn value_from_otel(v: &opentelemetry::Value) -> Value {
    match v {
        opentelemetry::Value::Bool(b) => Value::Bool(*b),
        opentelemetry::Value::I64(i) => Value::I64(*i),
        opentelemetry::Value::F64(f) => Value::F64(*f),
        opentelemetry::Value::String(s) => Value::String(string_from_otel(s)),
        opentelemetry::Value::Array(a) => match a {
            opentelemetry::Array::Bool(v) => Value::Array(Array::Bool(v.clone())),
            opentelemetry::Array::I64(v) => Value::Array(Array::I64(v.clone())),
            opentelemetry::Array::F64(v) => Value::Array(Array::F64(v.clone())),
            opentelemetry::Array::String(v) => {
                Value::Array(Array::String(v.iter().map(string_from_otel).collect()))
            }
            other => Value::String(other.to_string().into()),
        },
        other => Value::String(other.as_str().into_owned().into()),
    }
}

/// Converts an `opentelemetry` key/value pair.
pub fn key_value_from_otel(kv: &opentelemetry::KeyValue) -> KeyValue {
    KeyValue {
        key: Key::from(kv.key.as_str().to_string()),
        value: value_from_otel(&kv.value),
    }
}

fn key_values(kvs: Vec<opentelemetry::KeyValue>) -> Vec<KeyValue> {
    kvs.iter().map(key_value_from_otel).collect()
}

/// Converts an `opentelemetry` span context to ferrotrace's.
pub fn span_context_from_otel(sc: &otel::SpanContext) -> SpanContext {
    let trace_state = TraceState::from_key_value(
        sc.trace_state()
            .header()
            .split(',')
            .filter_map(|m| m.split_once('=')),
    )
    .unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(sc.trace_id().to_bytes()),
        SpanId::from_bytes(sc.span_id().to_bytes()),
        TraceFlags::new(sc.trace_flags().to_u8()),
        sc.is_remote(),
        trace_state,
    )
}

/// Converts a ferrotrace span context to `opentelemetry`'s.
pub fn span_context_to_otel(sc: &SpanContext) -> otel::SpanContext {
    let trace_state = otel::TraceState::from_key_value(sc.trace_state().iter()).unwrap_or_default();
    otel::SpanContext::new(
        otel::TraceId::from_bytes(sc.trace_id().to_bytes()),
        otel::SpanId::from_bytes(sc.span_id().to_bytes()),
        otel::TraceFlags::new(sc.trace_flags().to_u8()),
        sc.is_remote(),
        trace_state,
    )
}

/// The ferrotrace context for an `opentelemetry` context: its active span
/// (if any) on top of the current ferrotrace context. Attach it to run
/// ferrotrace-instrumented code (e.g. the HTTP client layer) under an
/// `opentelemetry` span.
pub fn ferrotrace_context(cx: &opentelemetry::Context) -> Context {
    let current = Context::current();
    if cx.has_active_span() {
        current.with_span_context(span_context_from_otel(cx.span().span_context()))
    } else {
        current
    }
}

impl otel::Tracer for OtelTracer {
    type Span = OtelSpan;

    fn build_with_context(
        &self,
        builder: otel::SpanBuilder,
        parent_cx: &opentelemetry::Context,
    ) -> OtelSpan {
        let otel::SpanBuilder {
            span_kind,
            name,
            start_time,
            attributes,
            events,
            links,
        } = builder;
        let mut b = self.inner.span_builder(name).with_kind(
            span_kind
                .as_ref()
                .map_or(SpanKind::Internal, kind_from_otel),
        );
        if parent_cx.has_active_span() {
            b = b.with_parent_span_context(span_context_from_otel(parent_cx.span().span_context()));
        }
        if let Some(t) = start_time {
            b = b.with_start_time_ns(nanos(t));
        }
        if let Some(attrs) = attributes {
            b = b.with_attributes(key_values(attrs));
        }
        if let Some(links) = links {
            b = b.with_links(links.into_iter().map(|l| Link {
                span_context: span_context_from_otel(&l.span_context),
                attributes: key_values(l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
            }));
        }
        let mut span = b.start();
        for e in events.unwrap_or_default() {
            span.add_event_with_timestamp(e.name, nanos(e.timestamp), key_values(e.attributes));
        }
        let otel_context = span_context_to_otel(span.span_context());
        OtelSpan {
            inner: span,
            otel_context,
        }
    }
}

/// A ferrotrace [`Span`] implementing [`opentelemetry::trace::Span`].
#[derive(Debug)]
pub struct OtelSpan {
    inner: Span,
    otel_context: otel::SpanContext,
}

impl OtelSpan {
    /// The underlying ferrotrace span.
    pub fn ferrotrace_span(&mut self) -> &mut Span {
        &mut self.inner
    }
}

impl otel::Span for OtelSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<opentelemetry::KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        self.inner
            .add_event_with_timestamp(name, nanos(timestamp), key_values(attributes));
    }

    fn span_context(&self) -> &otel::SpanContext {
        &self.otel_context
    }

    fn is_recording(&self) -> bool {
        self.inner.is_recording()
    }

    fn set_attribute(&mut self, attribute: opentelemetry::KeyValue) {
        if self.inner.is_recording() {
            let kv = key_value_from_otel(&attribute);
            self.inner.set_attribute(kv.key, kv.value);
        }
    }

    fn set_status(&mut self, status: otel::Status) {
        self.inner.set_status(match status {
            otel::Status::Unset => Status::Unset,
            otel::Status::Ok => Status::Ok,
            otel::Status::Error { description } => Status::Error { description },
        });
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        self.inner.update_name(new_name);
    }

    fn add_link(
        &mut self,
        span_context: otel::SpanContext,
        attributes: Vec<opentelemetry::KeyValue>,
    ) {
        self.inner.add_link(
            span_context_from_otel(&span_context),
            key_values(attributes),
        );
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        self.inner.end_with_timestamp(nanos(timestamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_context_round_trip() {
        let sc = SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([3; 8]),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "v1"), ("other", "x")]).unwrap(),
        );
        let o = span_context_to_otel(&sc);
        assert_eq!(o.trace_state().get("vendor"), Some("v1"));
        assert_eq!(span_context_from_otel(&o), sc);
    }
}
