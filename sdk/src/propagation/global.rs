//! The process-wide propagator, configured from `OTEL_PROPAGATORS`
//! (default `tracecontext,baggage`) unless set in code.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::{
    B3Propagator, BaggagePropagator, JaegerPropagator, TextMapCompositePropagator,
    TextMapPropagator, TraceContextPropagator,
};

static GLOBAL: RwLock<Option<Arc<dyn TextMapPropagator>>> = RwLock::new(None);

/// Moves on every [`set_text_map_propagator`]. Each thread keeps its own
/// reference to the global propagator and reads `GLOBAL` again only when
/// this moved. So using the propagator takes no lock: no shared count
/// written by every worker thread on every request, and no deadlock when
/// the propagator is used, or replaced, from inside its own use (under
/// the read lock a replacement waited for itself, and a nested read could
/// wait behind a queued writer).
static GENERATION: AtomicU64 = AtomicU64::new(0);

type Cached = (u64, Option<Arc<dyn TextMapPropagator>>);

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new((0, None)) };
}

/// The `OTEL_PROPAGATORS` names this SDK implements, as the OpenTelemetry
/// specification spells them.
pub const SUPPORTED_PROPAGATORS: [&str; 6] =
    ["tracecontext", "baggage", "b3", "b3multi", "jaeger", "none"];

/// Names the specification lists that this SDK does not implement (ignored with a warning).
const KNOWN_UNSUPPORTED: [&str; 2] = ["xray", "ottrace"];

/// The propagator for one `OTEL_PROPAGATORS` name (lowercase), if implemented.
fn propagator_named(name: &str) -> Option<Box<dyn TextMapPropagator>> {
    Some(match name {
        "tracecontext" => Box::new(TraceContextPropagator::new()),
        "baggage" => Box::new(BaggagePropagator::new()),
        "b3" => Box::new(B3Propagator::single()),
        "b3multi" => Box::new(B3Propagator::multi()),
        "jaeger" => Box::new(JaegerPropagator::new()),
        _ => return None,
    })
}

/// Builds the propagator named by an `OTEL_PROPAGATORS` value: the
/// comma-separated names (case-insensitive) `tracecontext`, `baggage`, `b3`
/// (single header), `b3multi`, `jaeger` and `none`, composed in the given order
/// (duplicates count once). `none` anywhere means no propagator at all.
/// Unsupported names are skipped and returned so the caller can report them.
///
/// ```
/// use ferrotrace::propagation::{global::propagator_from_names, TextMapPropagator};
/// let (p, unknown) = propagator_from_names("tracecontext,baggage,b3multi,jaeger,xray");
/// assert_eq!(
///     p.fields(),
///     ["traceparent", "tracestate", "baggage", "x-b3-traceid", "x-b3-spanid",
///      "x-b3-sampled", "x-b3-flags", "uber-trace-id"]
/// );
/// assert_eq!(unknown, ["xray"]);
/// ```
pub fn propagator_from_names(spec: &str) -> (TextMapCompositePropagator, Vec<String>) {
    let mut list: Vec<Box<dyn TextMapPropagator>> = Vec::new();
    let mut unknown = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut none = false;
    for name in spec.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name_lc = name.to_ascii_lowercase();
        if name_lc == "none" {
            none = true;
            continue;
        }
        if seen.contains(&name_lc) {
            continue;
        }
        match propagator_named(&name_lc) {
            Some(p) => {
                list.push(p);
                seen.push(name_lc);
            }
            None => unknown.push(name.to_string()),
        }
    }
    if none {
        list.clear();
    }
    (TextMapCompositePropagator::new(list), unknown)
}

/// The propagator configured by `OTEL_PROPAGATORS` (default
/// `tracecontext,baggage`), as the global setup installs it. Unsupported
/// names, and `none` combined with other names, are reported through the SDK
/// diagnostics hook and otherwise ignored, as the specification requires.
pub fn propagators_from_env() -> TextMapCompositePropagator {
    let spec = std::env::var("OTEL_PROPAGATORS").unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "tracecontext,baggage".to_string()
    } else {
        spec
    };
    let (p, unknown) = propagator_from_names(&spec);
    let report = |msg: String| {
        crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::Config(msg))
    };
    if !unknown.is_empty() {
        let (listed, other): (Vec<&String>, Vec<&String>) = unknown
            .iter()
            .partition(|n| KNOWN_UNSUPPORTED.contains(&n.to_ascii_lowercase().as_str()));
        report(format!(
            "OTEL_PROPAGATORS: {}ignored; supported: {}",
            match (listed.is_empty(), other.is_empty()) {
                (true, _) => format!("unknown propagator(s) {other:?} "),
                (false, true) => format!("propagator(s) {listed:?} not implemented by ferrotrace "),
                (false, false) => format!(
                    "unknown propagator(s) {other:?} and propagator(s) {listed:?} not implemented by ferrotrace "
                ),
            },
            SUPPORTED_PROPAGATORS.join(", ")
        ));
    }
    let names: Vec<String> = spec
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.iter().any(|n| n == "none") && names.iter().any(|n| n != "none") {
        report(format!(
            "OTEL_PROPAGATORS={spec:?}: \"none\" disables propagation; the other names are ignored"
        ));
    }
    p
}

fn from_env() -> Arc<dyn TextMapPropagator> {
    Arc::new(propagators_from_env())
}

/// Replaces the global propagator (for every thread's next use of it).
pub fn set_text_map_propagator(p: impl TextMapPropagator + 'static) {
    *GLOBAL.write() = Some(Arc::new(p));
    GENERATION.fetch_add(1, Ordering::Release);
}

/// Runs `f` with the global propagator (built from `OTEL_PROPAGATORS` on
/// first use), without cloning it or taking a lock: the calling thread's
/// reference is used while no [`set_text_map_propagator`] happened since it
/// was taken. `f` may use or replace the global propagator itself.
pub fn with_text_map_propagator<T>(f: impl FnOnce(&dyn TextMapPropagator) -> T) -> T {
    // Read before `GLOBAL` is: a change in between is seen on the next call.
    let generation = GENERATION.load(Ordering::Acquire);
    let mut f = Some(f);
    let out = CACHED
        .try_with(|cell| {
            // A shared borrow, held while `f` runs: nested uses share it,
            // and no replacement of the cached reference can free `p`.
            let cached = cell.try_borrow().ok()?;
            let (g, p) = &*cached;
            let p = p.as_deref().filter(|_| *g == generation)?;
            f.take().map(|f| f(p))
        })
        .ok()
        .flatten();
    if let Some(v) = out {
        return v;
    }
    let p = text_map_propagator();
    // Not cached while a use of it on this thread holds the cell, or during
    // the thread's teardown: then this call alone uses `p`.
    let _ = CACHED.try_with(|cell| {
        if let Ok(mut c) = cell.try_borrow_mut() {
            *c = (generation, Some(Arc::clone(&p)));
        }
    });
    match f {
        Some(f) => f(&*p),
        // `f` is taken only where it runs and returns its result.
        None => unreachable!("the propagator closure ran without a result"),
    }
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
        let (p, unknown) = propagator_from_names("tracecontext, baggage,B3,fancy,ottrace");
        assert_eq!(
            p.fields(),
            vec!["traceparent", "tracestate", "baggage", "b3"]
        );
        assert_eq!(unknown, vec!["fancy".to_string(), "ottrace".to_string()]);
        let (p, _) = propagator_from_names("none,tracecontext");
        assert!(p.fields().is_empty());
        let (p, _) = propagator_from_names("tracecontext,none");
        assert!(p.fields().is_empty());
        let (p, unknown) = propagator_from_names("jaeger,b3multi,jaeger,JAEGER, b3multi ");
        assert_eq!(
            p.fields(),
            vec![
                "uber-trace-id",
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-sampled",
                "x-b3-flags"
            ]
        );
        assert!(unknown.is_empty());
    }
}
