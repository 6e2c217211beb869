//! Configuration from OpenTelemetry environment variables (one test: the
//! process environment is global).

use ferrotrace::propagation::global as pglobal;
use ferrotrace::trace::{Sampler, SpanLimits, TracerProvider};
use ferrotrace::Value;

#[test]
fn env_vars_are_honoured_unless_set_in_code() {
    // SAFETY: this test binary has a single test, so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("OTEL_SERVICE_NAME", "from-env");
        std::env::set_var(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,team=a%20b,bad",
        );
        std::env::set_var("OTEL_TRACES_SAMPLER", "traceidratio");
        std::env::set_var("OTEL_TRACES_SAMPLER_ARG", "0.25");
        std::env::set_var("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "7");
        std::env::set_var("OTEL_SPAN_EVENT_COUNT_LIMIT", "3");
        std::env::set_var("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "16");
        std::env::set_var("OTEL_PROPAGATORS", "baggage");
    }
    let p = TracerProvider::builder().build();
    let r = p.resource();
    assert_eq!(r.get("service.name"), Some(&Value::from("from-env")));
    assert_eq!(r.get("deployment.environment"), Some(&Value::from("prod")));
    assert_eq!(r.get("team"), Some(&Value::from("a b")));
    assert_eq!(
        r.get("telemetry.sdk.name"),
        Some(&Value::from("ferrotrace"))
    );
    let l = p.span_limits();
    assert_eq!(l.max_attributes_per_span, 7);
    assert_eq!(l.max_events_per_span, 3);
    assert_eq!(l.max_links_per_span, 128);
    assert_eq!(l.max_attribute_value_length, Some(16));
    assert!(matches!(Sampler::from_env(), Sampler::TraceIdRatioBased(r) if r == 0.25));

    // Code wins over the environment.
    let p = TracerProvider::builder()
        .with_service_name("from-code")
        .with_span_limits(SpanLimits::default())
        .build();
    assert_eq!(
        p.resource().get("service.name"),
        Some(&Value::from("from-code"))
    );
    assert_eq!(p.span_limits().max_attributes_per_span, 128);

    assert_eq!(pglobal::text_map_propagator().fields(), vec!["baggage"]);
    pglobal::set_text_map_propagator(ferrotrace::propagation::TraceContextPropagator::new());
    assert_eq!(
        pglobal::text_map_propagator().fields(),
        vec!["traceparent", "tracestate"]
    );
}
