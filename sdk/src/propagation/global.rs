//! The process-wide propagator, configured from `OTEL_PROPAGATORS`
//! (default `tracecontext,baggage`) unless set in code.

use std::sync::Arc;

use parking_lot::RwLock;

use super::{
    BaggagePropagator, TextMapCompositePropagator, TextMapPropagator, TraceContextPropagator,
};

static GLOBAL: RwLock<Option<Arc<dyn TextMapPropagator>>> = RwLock::new(None);

/// Builds the propagator named by an `OTEL_PROPAGATORS` value. Known names:
/// `tracecontext`, `baggage`, `none`; unknown names are skipped and returned
/// so the caller can report them.
pub fn propagator_from_names(spec: &str) -> (TextMapCompositePropagator, Vec<String>) {
    let mut list: Vec<Box<dyn TextMapPropagator>> = Vec::new();
    let mut unknown = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name_lc = name.to_ascii_lowercase();
        match name_lc.as_str() {
            "none" => return (TextMapCompositePropagator::new(Vec::new()), unknown),
            "tracecontext" if !seen.contains(&"tracecontext") => {
                seen.push("tracecontext");
                list.push(Box::new(TraceContextPropagator::new()));
            }
            "baggage" if !seen.contains(&"baggage") => {
                seen.push("baggage");
                list.push(Box::new(BaggagePropagator::new()));
            }
            "tracecontext" | "baggage" => {}
            _ => unknown.push(name.to_string()),
        }
    }
    (TextMapCompositePropagator::new(list), unknown)
}

fn from_env() -> Arc<dyn TextMapPropagator> {
    let spec = std::env::var("OTEL_PROPAGATORS").unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "tracecontext,baggage".to_string()
    } else {
        spec
    };
    let (p, unknown) = propagator_from_names(&spec);
    if !unknown.is_empty() {
        crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::Config(format!(
            "OTEL_PROPAGATORS: unsupported propagator(s) {unknown:?} ignored; supported: tracecontext, baggage, none"
        )));
    }
    Arc::new(p)
}

/// Replaces the global propagator.
pub fn set_text_map_propagator(p: impl TextMapPropagator + 'static) {
    *GLOBAL.write() = Some(Arc::new(p));
}

/// The global propagator (built from `OTEL_PROPAGATORS` on first use).
pub fn text_map_propagator() -> Arc<dyn TextMapPropagator> {
    if let Some(p) = GLOBAL.read().as_ref() {
        return p.clone();
    }
    let mut w = GLOBAL.write();
    w.get_or_insert_with(from_env).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let (p, unknown) = propagator_from_names("tracecontext, baggage,b3");
        assert_eq!(p.fields(), vec!["traceparent", "tracestate", "baggage"]);
        assert_eq!(unknown, vec!["b3".to_string()]);
        let (p, _) = propagator_from_names("none,tracecontext");
        assert!(p.fields().is_empty());
    }
}
