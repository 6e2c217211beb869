//! The un-ended span watchdog reports an old open span once, through the
//! diagnostics hook and a counter, and ignores ended spans.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::diagnostics::{self, Diagnostic};
use ferrotrace::trace::{Sampler, TracerProvider};

#[test]
fn old_open_span_is_reported_once() {
    let seen: Arc<Mutex<Vec<Diagnostic>>> = Arc::default();
    let s2 = seen.clone();
    diagnostics::set_hook(move |d| s2.lock().unwrap().push(d.clone()));

    let provider = TracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_sampler(Sampler::AlwaysOn)
        .with_unended_span_age(Some(Duration::from_millis(50)))
        .build();
    let tracer = provider.tracer("t");
    let leaked = tracer.start("leaky");
    drop(tracer.start("ended-quickly"));

    // The background thread checks every age/4; wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while provider.unended_spans_reported() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100)); // several more checks: still reported once
    assert_eq!(provider.unended_spans_reported(), 1);
    let unended: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|d| match d {
            Diagnostic::UnendedSpan {
                span_id, name, age, ..
            } => Some((*span_id, *name, *age)),
            _ => None,
        })
        .collect();
    assert_eq!(unended.len(), 1);
    assert_eq!(unended[0].0, leaked.span_context().span_id());
    assert_eq!(unended[0].1, Some("leaky"));
    assert!(unended[0].2 >= Duration::from_millis(50));
    drop(leaked);
    assert_eq!(provider.check_unended_spans(), 0);
    diagnostics::reset_hook();
}
