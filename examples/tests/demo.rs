//! The demo services end to end on loopback ports, spans kept in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferrotrace::export::{InMemorySpanExporter, SpanData};
use ferrotrace::trace::{SpanKind, Status};
use ferrotrace::Value;
use ferrotrace_examples::faults::Faults;
use ferrotrace_examples::services::{self, DemoConfig, ServiceConfig};
use ferrotrace_examples::telemetry::{Export, Telemetry};
use ferrotrace_examples::traffic::{self, TrafficConfig};

fn service_of(s: &SpanData) -> String {
    match s.resource.get("service.name") {
        Some(Value::String(v)) => v.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

async fn wait_quiet(exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    // Server spans end when response bodies finish: wait until the count settles.
    let mut last = usize::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = exporter.finished_spans().len();
        if n == last {
            break;
        }
        last = n;
    }
    exporter.finished_spans()
}

fn config(exporter: &InMemorySpanExporter, payments_error_rate: f64) -> DemoConfig {
    let mut payments = ServiceConfig::loopback(0);
    payments.faults = Faults::new(0, payments_error_rate);
    DemoConfig {
        gateway: ServiceConfig::loopback(0),
        orders: ServiceConfig::loopback(0),
        inventory: ServiceConfig::loopback(0),
        payments,
        export: Export::InMemory(exporter.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_produces_whole_traces_with_tenant_everywhere() {
    let exporter = InMemorySpanExporter::default();
    let demo = services::start(config(&exporter, 0.0)).await.unwrap();
    let loadgen = Telemetry::new("loadgen", &Export::InMemory(exporter.clone())).unwrap();
    let report = traffic::run(
        demo.gateway,
        TrafficConfig {
            requests: 12,
            duration: Duration::from_secs(20),
            concurrency: 3,
            rate_per_sec: 0.0,
            tenants: vec!["acme".into(), "globex".into()],
            items: vec!["widget".into()],
        },
        loadgen.provider.tracer("loadgen"),
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 12);
    assert_eq!(report.by_status, BTreeMap::from([(200, 12)]), "{report:?}");

    let spans = wait_quiet(&exporter).await;
    let mut traces: BTreeMap<String, Vec<&SpanData>> = BTreeMap::new();
    for s in &spans {
        traces
            .entry(s.span_context.trace_id().to_string())
            .or_default()
            .push(s);
    }
    assert_eq!(traces.len(), 12, "one trace per generated request");
    for spans in traces.values() {
        let services: BTreeSet<String> = spans.iter().map(|s| service_of(s)).collect();
        assert_eq!(
            services,
            ["gateway", "inventory", "loadgen", "orders", "payments"]
                .map(String::from)
                .into(),
        );
        let root = spans
            .iter()
            .find(|s| s.parent_span_id == ferrotrace::SpanId::INVALID)
            .expect("root span");
        assert_eq!(root.span_kind, SpanKind::Client);
        assert_eq!(service_of(root), "loadgen");
        let url = match attr(root, "url.full") {
            Some(Value::String(s)) => s.as_str().to_string(),
            other => panic!("url.full {other:?}"),
        };
        let tenant = if url.contains("tenant=acme") {
            "acme"
        } else {
            "globex"
        };
        // The tenant set as baggage at the gateway is on the server spans of every downstream service.
        for service in ["orders", "inventory", "payments"] {
            let server = spans
                .iter()
                .find(|s| s.span_kind == SpanKind::Server && service_of(s) == service)
                .unwrap_or_else(|| panic!("no server span in {service}"));
            assert_eq!(
                attr(server, "tenant"),
                Some(&Value::from(tenant.to_string())),
                "{service}"
            );
        }
        // Every span's parent is in the same trace (no broken links).
        let ids: BTreeSet<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
        for s in spans
            .iter()
            .filter(|s| s.parent_span_id != ferrotrace::SpanId::INVALID)
        {
            assert!(
                ids.contains(&s.parent_span_id),
                "{} has a missing parent",
                s.name
            );
        }
        assert!(spans
            .iter()
            .all(|s| s.status == Status::Unset || s.name == "checkout"));
    }
    demo.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failures_show_as_errors_along_the_path() {
    let exporter = InMemorySpanExporter::default();
    let demo = services::start(config(&exporter, 1.0)).await.unwrap();
    let loadgen = Telemetry::new("loadgen", &Export::InMemory(exporter.clone())).unwrap();
    let report = traffic::run(
        demo.gateway,
        TrafficConfig {
            requests: 3,
            concurrency: 1,
            rate_per_sec: 0.0,
            // Only in-stock items: a sold-out item is refused by inventory
            // before payments is ever called.
            items: vec!["widget".into()],
            ..TrafficConfig::default()
        },
        loadgen.provider.tracer("loadgen"),
    )
    .await
    .unwrap();
    assert_eq!(report.by_status, BTreeMap::from([(502, 3)]), "{report:?}");
    let spans = wait_quiet(&exporter).await;
    let errors = |service: &str, kind: SpanKind| {
        spans
            .iter()
            .filter(|s| {
                service_of(s) == service
                    && s.span_kind == kind
                    && matches!(s.status, Status::Error { .. })
            })
            .count()
    };
    assert_eq!(
        errors("payments", SpanKind::Server),
        3,
        "gRPC UNAVAILABLE on the payments server span"
    );
    assert_eq!(
        errors("orders", SpanKind::Client),
        3,
        "orders' gRPC client span"
    );
    assert_eq!(errors("orders", SpanKind::Server), 3, "orders answered 502");
    assert_eq!(errors("loadgen", SpanKind::Client), 3);
    demo.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn traffic_refuses_non_loopback_targets() {
    let exporter = InMemorySpanExporter::default();
    let t = Telemetry::new("loadgen", &Export::InMemory(exporter)).unwrap();
    let target = "192.0.2.1:80".parse().unwrap();
    assert!(
        traffic::run(target, TrafficConfig::default(), t.provider.tracer("x"))
            .await
            .is_err()
    );
}
