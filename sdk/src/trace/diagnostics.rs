//! Internal diagnostics: problems the SDK itself notices (a span never ended,
//! a bad environment variable, an exporter error). They go to one process-wide
//! hook — never through spans or `tracing`, so diagnostics cannot feed back
//! into the telemetry pipeline.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::ids::{SpanId, TraceId};

/// Something the SDK wants an operator to know.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Diagnostic {
    /// A sampled span has been open longer than the configured age (reported once per span).
    UnendedSpan {
        /// Trace id of the span.
        trace_id: TraceId,
        /// Span id of the span.
        span_id: SpanId,
        /// Span name when it was a static string (dynamic names are not copied, to keep start cheap).
        name: Option<&'static str>,
        /// How long the span had been open when noticed.
        age: Duration,
    },
    /// A configuration value (environment variable or builder input) was invalid and a default was used.
    Config(String),
    /// A processor or exporter failed.
    Export(String),
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diagnostic::UnendedSpan {
                trace_id,
                span_id,
                name,
                age,
            } => write!(
                f,
                "span {} (trace {trace_id}, span {span_id}) not ended after {age:?}: check that every started span is ended or dropped",
                name.unwrap_or("<dynamic name>")
            ),
            Diagnostic::Config(m) => write!(f, "configuration: {m}"),
            Diagnostic::Export(m) => write!(f, "export: {m}"),
        }
    }
}

/// A diagnostics sink.
pub type DiagnosticsHook = Arc<dyn Fn(&Diagnostic) + Send + Sync>;

static HOOK: RwLock<Option<DiagnosticsHook>> = RwLock::new(None);

/// Installs the process-wide diagnostics hook (replacing the default, which
/// writes one line to stderr).
pub fn set_hook(hook: impl Fn(&Diagnostic) + Send + Sync + 'static) {
    *HOOK.write() = Some(Arc::new(hook));
}

/// Restores the default hook (stderr).
pub fn reset_hook() {
    *HOOK.write() = None;
}

/// Reports a diagnostic through the hook.
pub fn report(d: Diagnostic) {
    let hook = HOOK.read().clone();
    match hook {
        Some(h) => h(&d),
        None => eprintln!("ferrotrace: {d}"),
    }
}
