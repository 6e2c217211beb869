//! Code instrumented only against the `opentelemetry` 0.33 API records
//! through ferrotrace once the bridge is installed as the global provider.

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::integrations::opentelemetry::OtelTracerProvider;
use ferrotrace::trace::{Sampler, SpanKind, Status};
use ferrotrace::Value;

/// Instrumented library code: nothing but `opentelemetry` API calls.
mod library {
    use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
    use opentelemetry::{global, Context, KeyValue};

    pub fn handle_request(order: i64) -> Result<(), String> {
        let tracer = global::tracer("checkout-lib");
        let span = tracer
            .span_builder("POST /checkout")
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("order.id", order)])
            .start(&tracer);
        let cx = Context::current_with_span(span);
        let _guard = cx.clone().attach();
        cx.span()
            .add_event("validated", vec![KeyValue::new("items", 3)]);
        tracer.in_span("load cart", |cx| {
            cx.span().set_attribute(KeyValue::new("cache.hit", true));
            cx.span().set_attribute(KeyValue::new(
                "weights",
                opentelemetry::Value::Array(vec![1.5, 2.5].into()),
            ));
        });
        let mut charge = tracer.start("charge card");
        charge.set_attribute(KeyValue::new("amount.cents", 1299));
        charge.set_status(Status::error("card declined"));
        charge.end();
        cx.span().update_name("POST /checkout/{order}");
        cx.span().set_status(Status::Ok);
        Err("declined".into())
    }
}

#[test]
fn opentelemetry_api_records_through_ferrotrace() {
    let exporter = InMemorySpanExporter::default();
    let provider = ferrotrace::trace::TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::AlwaysOn)
        .with_service_name("otel-bridge-test")
        .with_unended_span_age(None)
        .build();
    opentelemetry::global::set_tracer_provider(OtelTracerProvider::new(provider));

    assert!(library::handle_request(42).is_err());

    let spans = exporter.finished_spans();
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(
        names,
        ["load cart", "charge card", "POST /checkout/{order}"]
    );
    let (load, charge, root) = (&spans[0], &spans[1], &spans[2]);

    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(root.status, Status::Ok);
    assert_eq!(root.scope.name, "checkout-lib");
    assert_eq!(
        root.resource.get("service.name"),
        Some(&Value::from("otel-bridge-test"))
    );
    assert!(root
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "order.id" && kv.value == Value::I64(42)));
    assert_eq!(root.events.len(), 1);
    assert_eq!(root.events[0].name, "validated");

    for child in [load, charge] {
        assert_eq!(
            child.parent_span_id,
            root.span_context.span_id(),
            "{}",
            child.name
        );
        assert_eq!(child.span_context.trace_id(), root.span_context.trace_id());
        assert_eq!(child.span_kind, SpanKind::Internal);
    }
    assert!(load
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "cache.hit" && kv.value == Value::Bool(true)));
    assert!(load
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "weights" && kv.value == Value::from(vec![1.5, 2.5])));
    assert_eq!(charge.status, Status::error("card declined"));
    assert!(charge
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "amount.cents" && kv.value == Value::I64(1299)));
}
