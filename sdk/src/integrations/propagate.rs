//! Carrying a context where no framework layer does it for you: through a
//! message queue (any string map of message headers) and into spawned
//! threads and tasks.
//!
//! ```
//! use std::collections::HashMap;
//! use ferrotrace::export::InMemorySpanExporter;
//! use ferrotrace::integrations::propagate;
//! use ferrotrace::trace::{SpanKind, TracerProvider};
//!
//! let exporter = InMemorySpanExporter::default();
//! let provider = TracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! let tracer = provider.tracer("queue");
//!
//! // Producer: a PRODUCER span, its context written into the message headers.
//! let mut headers: HashMap<String, String> = HashMap::new();
//! let producer = propagate::start_producer_span(&tracer, "orders publish", &mut headers);
//! drop(producer);
//!
//! // Consumer (possibly another process): a CONSUMER span continuing the trace.
//! let (consumer, cx) = propagate::start_consumer_span(&tracer, "orders process", &headers);
//! let _guard = cx.attach(); // spans started here are children of the consumer span
//! drop(consumer);
//!
//! let spans = exporter.finished_spans();
//! assert_eq!(spans[1].span_kind, SpanKind::Consumer);
//! assert_eq!(spans[1].parent_span_id, spans[0].span_context.span_id());
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::context::Context;
use crate::propagation::global::text_map_propagator;
use crate::propagation::{Extractor, Injector};
use crate::trace::{Span, SpanKind, Tracer};

/// Writes `cx` (span context and baggage) into `carrier` with the global
/// propagator (W3C `traceparent`, `tracestate`, `baggage` by default).
pub fn inject_context(cx: &Context, carrier: &mut dyn Injector) {
    text_map_propagator().inject_context(cx, carrier);
}

/// Writes the current context into `carrier`.
pub fn inject(carrier: &mut dyn Injector) {
    inject_context(&Context::current(), carrier);
}

/// Reads a context from `carrier` with the global propagator. The result's
/// span context (if any) is remote; use it as a parent or attach it.
/// A malformed carrier yields a context without a span (a new trace starts).
pub fn extract(carrier: &dyn Extractor) -> Context {
    text_map_propagator().extract_with_context(&Context::new(), carrier)
}

/// Starts a `PRODUCER` span (child of the current context) and injects its
/// context into `carrier`, the headers of the message being published.
pub fn start_producer_span(
    tracer: &Tracer,
    name: impl Into<Cow<'static, str>>,
    carrier: &mut dyn Injector,
) -> Span {
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Producer)
        .start();
    inject_context(&span.context(), carrier);
    span
}

/// Starts a `CONSUMER` span whose parent is the context extracted from
/// `carrier`, the headers of a received message. Also returns the context to
/// attach while processing the message (the extracted baggage plus the new span).
pub fn start_consumer_span(
    tracer: &Tracer,
    name: impl Into<Cow<'static, str>>,
    carrier: &dyn Extractor,
) -> (Span, Context) {
    let parent = extract(carrier);
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Consumer)
        .with_parent_context(&parent)
        .start();
    let cx = parent.with_span_context(span.span_context().clone());
    (span, cx)
}

/// Spawns an OS thread that runs `f` with the caller's current context
/// attached, so spans it starts are children of the caller's span.
/// For async tasks use [`FutureExt::with_current_context`](crate::context::FutureExt::with_current_context):
/// `tokio::spawn(fut.with_current_context())`.
pub fn spawn_thread_with_context<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let cx = Context::current();
    std::thread::spawn(move || {
        let _guard = cx.attach();
        f()
    })
}

impl Injector for BTreeMap<String, String> {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_ascii_lowercase(), value);
    }
}

/// Keys match case-insensitively, as for `HashMap`.
impl Extractor for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        crate::propagation::map_get(BTreeMap::get(self, key), self.iter(), key)
    }
    fn keys(&self) -> Vec<&str> {
        BTreeMap::keys(self).map(String::as_str).collect()
    }
    fn get_all(&self, key: &str) -> Vec<&str> {
        crate::propagation::map_get_all(BTreeMap::get(self, key), self.iter(), key)
    }
    fn has_multiple(&self, key: &str) -> bool {
        BTreeMap::keys(self)
            .filter(|k| k.eq_ignore_ascii_case(key))
            .nth(1)
            .is_some()
    }
}

/// A header list as many queue clients expose it: ordered `(name, value)`
/// pairs where a name may repeat (Kafka, AMQP, NATS headers).
#[derive(Debug)]
pub struct HeaderList<'a>(pub &'a mut Vec<(String, String)>);

impl Injector for HeaderList<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Replace, never duplicate: a second `traceparent` makes the context invalid.
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.0.push((key.to_ascii_lowercase(), value));
    }
}

/// Read-only view of a `(name, value)` header list; names match case-insensitively.
#[derive(Debug, Clone, Copy)]
pub struct HeaderListRef<'a>(pub &'a [(String, String)]);

impl Extractor for HeaderListRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
    fn get_all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Baggage;
    use crate::export::InMemorySpanExporter;
    use crate::trace::TracerProvider;

    #[test]
    fn header_list_round_trip_with_baggage_and_threads() {
        let exporter = InMemorySpanExporter::default();
        let provider = TracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("t");
        let mut baggage = Baggage::new();
        baggage.insert("tenant", "acme").unwrap();
        let root = tracer.start("root");
        let _g = root.context().with_baggage(baggage).attach();
        let mut headers = vec![("TraceParent".to_string(), "stale".to_string())];
        let producer = start_producer_span(&tracer, "publish", &mut HeaderList(&mut headers));
        assert_eq!(
            headers.iter().filter(|(k, _)| k == "traceparent").count(),
            1
        );
        let (consumer, cx) = start_consumer_span(&tracer, "process", &HeaderListRef(&headers));
        assert_eq!(cx.baggage().get("tenant"), Some("acme"));
        assert_eq!(
            consumer.span_context().trace_id(),
            root.span_context().trace_id()
        );
        let inner = {
            let _g = cx.attach();
            spawn_thread_with_context(|| {
                Context::current().baggage().get("tenant").map(String::from)
            })
            .join()
            .unwrap()
        };
        assert_eq!(inner.as_deref(), Some("acme"));
        drop((producer, consumer));
    }

    #[test]
    fn btreemap_carrier_and_malformed_input() {
        let mut map = BTreeMap::new();
        map.insert("traceparent".to_string(), "00-garbage".to_string());
        let cx = extract(&map);
        assert!(!cx.has_active_span());
    }
}
