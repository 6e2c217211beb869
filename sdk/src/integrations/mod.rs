//! Integrations with frameworks and other instrumentation APIs.
//!
//! - [`propagate`] (always available): carry a [`Context`](crate::Context)
//!   through message queues (any string map) and into spawned threads/tasks.
//! - `http` feature: `http`, tower layers for HTTP servers (axum, hyper) and
//!   clients (hyper-util); with the `axum` feature the server layer names spans
//!   after axum's matched route.
//! - `tonic` feature: `tonic`, metadata carriers and gRPC server/client layers.
//! - `reqwest` feature: `reqwest`, a `reqwest-middleware` middleware for
//!   reqwest clients.
//! - `tracing` feature: `tracing`, a `tracing_subscriber::Layer` that records
//!   `tracing` spans and events as ferrotrace spans.
//! - `opentelemetry` feature: `opentelemetry`, which implements the `opentelemetry`
//!   0.33 API traits, so code written against that API records through ferrotrace.
//!
//! (Modules of features that are off are not built, so they are named here,
//! not linked.) See `docs/integrations.md` for a walkthrough and the attributes each layer sets.

use std::cell::Cell;
use std::marker::PhantomData;

#[cfg(feature = "http")]
mod body;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "opentelemetry")]
pub mod opentelemetry;
pub mod propagate;
#[cfg(feature = "http")]
mod recent;
#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "http")]
mod route_names;
#[cfg(any(feature = "http", feature = "tracing"))]
pub(crate) mod shared_values;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "tracing")]
pub mod tracing;

#[cfg(any(feature = "http", feature = "tracing"))]
use crate::trace::Tracer;

thread_local! {
    static SUPPRESSED: Cell<u32> = const { Cell::new(0) };
    // The SDK's own threads (batch processor, OTLP exporter runtime, watchdog)
    // are all named `ferrotrace-*`. Whatever the libraries they run (tonic,
    // hyper, h2) emit there must never become spans: that would be a feedback
    // loop where every export produces more spans to export.
    static SDK_THREAD: bool = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("ferrotrace-"));
}

/// True when instrumentation on this thread must not create spans: on the
/// SDK's own threads and inside a [`suppress_instrumentation`] scope.
pub fn is_suppressed() -> bool {
    SUPPRESSED.try_with(|s| s.get() > 0).unwrap_or(true)
        || SDK_THREAD.try_with(|b| *b).unwrap_or(true)
}

/// Suppresses span creation by the integrations (the `tracing` bridge, the
/// HTTP and gRPC layers) on this thread until the guard is dropped. Use it
/// around code that exports telemetry from your own threads.
pub fn suppress_instrumentation() -> SuppressGuard {
    let _ = SUPPRESSED.try_with(|s| s.set(s.get().saturating_add(1)));
    SuppressGuard {
        _not_send: PhantomData,
    }
}

/// Ends a [`suppress_instrumentation`] scope when dropped (on the same thread).
#[must_use = "suppression ends as soon as the guard is dropped"]
#[derive(Debug)]
pub struct SuppressGuard {
    _not_send: PhantomData<*const ()>,
}

impl Drop for SuppressGuard {
    fn drop(&mut self) {
        let _ = SUPPRESSED.try_with(|s| s.set(s.get().saturating_sub(1)));
    }
}

/// Where an integration gets its [`Tracer`]: a fixed one, or the global
/// provider's tracer looked up per use (so a layer built before
/// [`set_tracer_provider`](crate::trace::global::set_tracer_provider) still
/// records through the provider installed later).
#[cfg(any(feature = "http", feature = "tracing"))]
#[derive(Clone, Debug)]
pub(crate) enum TracerSource {
    Fixed(Tracer),
    Global(&'static str),
}

#[cfg(any(feature = "http", feature = "tracing"))]
impl TracerSource {
    /// Inline: with a fixed tracer (the usual case) the `Cow` folds away
    /// (out of line it was ~20 instructions per span to build and drop).
    #[inline]
    pub(crate) fn tracer(&self) -> std::borrow::Cow<'_, Tracer> {
        match self {
            TracerSource::Fixed(t) => std::borrow::Cow::Borrowed(t),
            TracerSource::Global(name) => std::borrow::Cow::Owned(global_tracer(name)),
        }
    }
}

/// The global provider's tracer for `name` (warning once when none is installed).
#[cfg(any(feature = "http", feature = "tracing"))]
fn global_tracer(name: &'static str) -> Tracer {
    let provider = crate::trace::global::installed_tracer_provider();
    if provider.is_none() {
        warn_no_global_provider(name);
    }
    provider
        .unwrap_or_else(crate::trace::global::tracer_provider)
        .tracer(name)
}

/// Reports, once per scope and process, that a `from_global()` integration
/// traced something before any provider was installed.
#[cfg(any(feature = "http", feature = "tracing"))]
fn warn_no_global_provider(scope: &'static str) {
    use parking_lot::Mutex;
    static WARNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    {
        let mut w = WARNED.lock();
        if w.contains(&scope) {
            return;
        }
        w.push(scope);
    }
    crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::NoGlobalProvider {
        scope,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppression_nests_and_sdk_threads_are_suppressed() {
        assert!(!is_suppressed());
        let a = suppress_instrumentation();
        let b = suppress_instrumentation();
        drop(a);
        assert!(is_suppressed());
        drop(b);
        assert!(!is_suppressed());
        let on_sdk_thread = std::thread::Builder::new()
            .name("ferrotrace-test".into())
            .spawn(is_suppressed)
            .unwrap()
            .join()
            .unwrap();
        assert!(on_sdk_thread);
    }
}
