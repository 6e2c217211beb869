//! The process-wide tracer provider.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::RwLock;

use crate::export::ExportResult;
use crate::trace::provider::TracerProvider;
use crate::trace::tracer::Tracer;

static GLOBAL: RwLock<Option<TracerProvider>> = RwLock::new(None);
static NOOP: OnceLock<TracerProvider> = OnceLock::new();

fn noop() -> TracerProvider {
    // No processors: every span is non-recording (it still propagates context).
    NOOP.get_or_init(|| {
        TracerProvider::builder()
            .with_unended_span_age(None)
            .build()
    })
    .clone()
}

/// Installs `provider` as the global provider; returns the previous one.
pub fn set_tracer_provider(provider: TracerProvider) -> Option<TracerProvider> {
    GLOBAL.write().replace(provider)
}

/// The global provider (a no-op provider that records nothing until one is set).
pub fn tracer_provider() -> TracerProvider {
    GLOBAL.read().clone().unwrap_or_else(noop)
}

/// A tracer from the global provider.
pub fn tracer(name: impl Into<Cow<'static, str>>) -> Tracer {
    tracer_provider().tracer(name)
}

/// The global provider if one was installed (`None` while only the no-op
/// default is there).
pub fn installed_tracer_provider() -> Option<TracerProvider> {
    GLOBAL.read().clone()
}

/// Removes `provider` from the global slot if it is the one installed
/// (another provider installed since is left alone). Returns whether it was.
pub(crate) fn uninstall(provider: &TracerProvider) -> bool {
    let mut g = GLOBAL.write();
    if g.as_ref()
        .is_some_and(|p| std::sync::Arc::ptr_eq(&p.inner, &provider.inner))
    {
        *g = None;
        return true;
    }
    false
}

/// Removes the global provider and shuts it down (flushing its processors).
pub fn shutdown_tracer_provider(timeout: Duration) -> ExportResult {
    let p = GLOBAL.write().take();
    match p {
        Some(p) => p.shutdown(timeout),
        None => Ok(()),
    }
}
