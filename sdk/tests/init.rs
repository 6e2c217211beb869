//! `ferrotrace::init()` / `ferrotrace::builder()`: the global provider and
//! propagator are installed, the guard flushes and shuts down on drop,
//! `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` and invalid settings. The
//! global provider and the environment are process-wide, so the steps run in
//! one test, in order.

mod export_support;

use std::collections::HashMap;
use std::time::Duration;

use ferrotrace::export::{InMemorySpanExporter, SimpleSpanProcessor};
use ferrotrace::propagation::global::text_map_propagator;
use ferrotrace::trace::global;
use ferrotrace::{Context, TracesExporter};

fn set(k: &str, v: &str) {
    std::env::set_var(k, v);
}
fn unset(k: &str) {
    std::env::remove_var(k);
}

#[test]
fn init_installs_exports_and_shuts_down() {
    for k in [
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_PROPAGATORS",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
    ] {
        unset(k);
    }

    // 1. A provider with an extra in-memory processor and no exporter.
    let mem = InMemorySpanExporter::default();
    let guard = ferrotrace::builder()
        .with_service_name("init-test")
        .with_traces_exporters([])
        .with_span_processor(SimpleSpanProcessor::new(mem.clone()))
        .init()
        .unwrap();
    assert!(global::installed_tracer_provider().is_some());
    global::tracer("t").start("one").end();
    let spans = mem.finished_spans();
    assert_eq!(spans.len(), 1);
    assert!(matches!(
        spans[0].resource.get("service.name"),
        Some(ferrotrace::Value::String(s)) if s.as_str() == "init-test"
    ));
    // The W3C composite is the global propagator.
    assert_eq!(
        text_map_propagator().fields(),
        vec!["traceparent", "tracestate", "baggage"]
    );
    drop(guard);
    assert!(
        global::installed_tracer_provider().is_none(),
        "dropping the guard uninstalls the provider"
    );

    // 2. The guard's drop flushes the batch processor: the span reaches a
    //    real OTLP/HTTP server although the schedule delay (5 s) has not passed.
    #[cfg(feature = "otlp-http")]
    {
        let server = export_support::HttpServer::start();
        let guard = ferrotrace::builder()
            .with_traces_exporters([TracesExporter::Otlp])
            .with_otlp_exporter(
                ferrotrace::export::otlp::OtlpExporter::builder_from_env_vars(|_| None)
                    .with_protocol(ferrotrace::export::otlp::Protocol::HttpProtobuf)
                    .with_endpoint(server.endpoint()),
            )
            .init()
            .unwrap();
        global::tracer("t").start("flushed at exit").end();
        assert_eq!(server.state.received.lock().len(), 0);
        guard.shutdown().unwrap();
        let received = server.state.received.lock();
        assert_eq!(received.len(), 1);
        let span = &received[0].request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "flushed at exit");
    }

    // 3. OTEL_SDK_DISABLED=true: nothing recorded, the parent's context passes through.
    set("OTEL_SDK_DISABLED", "true");
    let mem = InMemorySpanExporter::default();
    let guard = ferrotrace::builder()
        .with_span_processor(SimpleSpanProcessor::new(mem.clone()))
        .init()
        .unwrap();
    assert!(guard.provider().is_disabled());
    let mut headers = HashMap::new();
    headers.insert(
        "traceparent".to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03".to_string(),
    );
    let parent = text_map_propagator().extract_with_context(&Context::new(), &headers);
    let span = global::tracer("t").start_with_context("pass-through", &parent);
    assert!(!span.is_recording());
    assert_eq!(span.span_context(), parent.span_context());
    let mut out = HashMap::new();
    text_map_propagator().inject_context(&span.context(), &mut out);
    assert_eq!(
        out["traceparent"], headers["traceparent"],
        "context passes unchanged"
    );
    drop(span);
    assert!(mem.finished_spans().is_empty());
    drop(guard);
    unset("OTEL_SDK_DISABLED");

    // 4. OTEL_TRACES_EXPORTER=none: no exporter; unknown names are ignored.
    set("OTEL_TRACES_EXPORTER", "none");
    let guard = ferrotrace::init().unwrap();
    assert!(!guard.provider().is_disabled());
    drop(guard);
    assert_eq!(
        TracesExporter::parse_list(" otlp,Console ,none,zipkin,otlp"),
        (
            vec![TracesExporter::Otlp, TracesExporter::Console],
            vec!["zipkin".to_string()]
        )
    );
    assert_eq!(
        TracesExporter::parse_list("logging").0,
        vec![TracesExporter::Console]
    );

    // 5. An invalid OTLP setting fails init, naming the variable.
    #[cfg(feature = "otlp")]
    {
        set("OTEL_TRACES_EXPORTER", "otlp");
        set("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift");
        let err = ferrotrace::init().unwrap_err().to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
        unset("OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(global::installed_tracer_provider().is_none());
    }
    unset("OTEL_TRACES_EXPORTER");
    let _ = Duration::ZERO;
}
