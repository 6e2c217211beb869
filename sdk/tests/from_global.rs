//! `from_global()` integrations need the global provider: without one they
//! record nothing and say so once (per integration), and they use a provider
//! installed later. Own test binary: the global provider is process-wide.
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::integrations::tracing::FerrotraceLayer;
use ferrotrace::trace::diagnostics::{self, Diagnostic};
use ferrotrace::trace::{global, TracerProvider};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn warns_once_without_a_provider_and_records_once_one_is_installed() {
    let seen: Arc<Mutex<Vec<Diagnostic>>> = Arc::default();
    let s = seen.clone();
    diagnostics::set_hook(move |d| s.lock().unwrap().push(d.clone()));
    let subscriber = tracing_subscriber::registry().with(FerrotraceLayer::from_global());
    let exporter = InMemorySpanExporter::default();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3 {
            let _s = tracing::info_span!("before init").entered();
        }
        let warnings = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    Diagnostic::NoGlobalProvider {
                        scope: "ferrotrace.tracing"
                    }
                )
            })
            .count();
        assert_eq!(warnings, 1, "{:?}", seen.lock().unwrap());
        let line = seen.lock().unwrap()[0].to_string();
        assert!(line.contains("ferrotrace::init()"), "{line}");

        global::set_tracer_provider(
            TracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build(),
        );
        let _s = tracing::info_span!("after init").entered();
    });
    let names: Vec<_> = exporter
        .finished_spans()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["after init"]);
    assert_eq!(seen.lock().unwrap().len(), 1, "no further warnings");
    diagnostics::reset_hook();
    let _ = global::shutdown_tracer_provider(std::time::Duration::from_secs(1));
}
