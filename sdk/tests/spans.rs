//! Span API behaviour: attributes, events, links, status precedence, errors,
//! limits, end semantics, timestamps, and parent-child relations across
//! threads, `.await` and `tokio::spawn`.

use std::time::Duration;

use ferrotrace::context::{Context, FutureExt};
use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::{Sampler, SpanKind, SpanLimits, Status, Tracer, TracerProvider};
use ferrotrace::{Array, KeyValue, SpanContext, StringValue, Value};

fn setup() -> (TracerProvider, Tracer, InMemorySpanExporter) {
    setup_with(SpanLimits::default())
}

fn setup_with(limits: SpanLimits) -> (TracerProvider, Tracer, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_service_name("svc")
        .with_sampler(Sampler::AlwaysOn)
        .with_span_limits(limits)
        .build();
    let tracer = provider.versioned_tracer("lib", Some("1.2.3"), Some("https://schema"));
    (provider, tracer, exporter)
}

#[test]
fn attributes_of_all_types_events_links() {
    let (_p, tracer, exp) = setup();
    let mut span = tracer
        .span_builder("op")
        .with_kind(SpanKind::Server)
        .with_attributes([KeyValue::new("at.start", true)])
        .start();
    span.set_attribute("s", "x");
    span.set_attribute("b", false);
    span.set_attribute("i", 7i64);
    span.set_attribute("f", 1.5);
    span.set_attribute("as", vec![StringValue::from("a"), StringValue::from("b")]);
    span.set_attribute("ai", vec![1i64, 2]);
    span.set_attribute("af", vec![1.0, 2.0]);
    span.set_attribute("ab", vec![true]);
    span.set_attribute("i", 8i64); // overwrite, not a drop
    span.add_event_with_timestamp("ev", 42, vec![KeyValue::new("k", "v")]);
    let other = SpanContext::new(
        "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
        "00f067aa0ba902b7".parse().unwrap(),
        Default::default(),
        true,
        Default::default(),
    );
    span.add_link(other.clone(), vec![KeyValue::new("l", 1)]);
    span.update_name("renamed");
    span.end();

    let spans = exp.finished_spans();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.name, "renamed");
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(s.attributes.len(), 9);
    assert_eq!(s.dropped_attributes_count, 0);
    let get = |k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    };
    assert_eq!(get("i"), Some(&Value::I64(8)));
    assert_eq!(get("ai"), Some(&Value::Array(Array::I64(vec![1, 2]))));
    assert_eq!(s.events[0].name, "ev");
    assert_eq!(s.events[0].timestamp_ns, 42);
    assert_eq!(s.links[0].span_context, other);
    assert_eq!(s.resource.get("service.name"), Some(&Value::from("svc")));
    assert_eq!(s.scope.name, "lib");
    assert_eq!(s.scope.version.as_deref(), Some("1.2.3"));
    assert_eq!(s.scope.schema_url.as_deref(), Some("https://schema"));
    assert!(s.end_time_ns >= s.start_time_ns);
    assert!(s.span_context.is_sampled());
    assert!(!s.parent_span_id.is_valid());
}

#[test]
fn status_precedence() {
    let (_p, tracer, exp) = setup();
    let mut a = tracer.start("a");
    a.set_status(Status::error("first"));
    a.set_status(Status::Unset);
    a.set_status(Status::error("second"));
    a.end();
    let mut b = tracer.start("b");
    b.set_status(Status::Ok);
    b.set_status(Status::error("ignored"));
    b.end();
    let mut c = tracer.start("c");
    c.set_status(Status::error("boom"));
    c.set_status(Status::Ok);
    c.end();
    let spans = exp.finished_spans();
    assert_eq!(spans[0].status, Status::error("second"));
    assert_eq!(spans[1].status, Status::Ok);
    assert_eq!(spans[2].status, Status::Ok);
}

#[derive(Debug)]
struct MyError;
impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("disk on fire")
    }
}
impl std::error::Error for MyError {}

#[test]
fn record_error_adds_exception_event_and_error_status() {
    let (_p, tracer, exp) = setup();
    let mut s = tracer.start("op");
    s.record_error(&MyError);
    drop(s);
    let spans = exp.finished_spans();
    let ev = &spans[0].events[0];
    assert_eq!(ev.name, "exception");
    let get = |k: &str| {
        ev.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(get("exception.type"), Some(Value::from("spans::MyError")));
    assert_eq!(get("exception.message"), Some(Value::from("disk on fire")));
    match get("exception.stacktrace") {
        Some(Value::String(st)) => assert!(!st.as_str().is_empty()),
        other => panic!("no stacktrace: {other:?}"),
    }
    assert_eq!(spans[0].status, Status::error("disk on fire"));
}

#[test]
fn end_twice_is_noop_and_changes_after_end_are_ignored() {
    let (_p, tracer, exp) = setup();
    let mut s = tracer.start("op");
    s.end_with_timestamp(1); // before start: clamped, never negative
    s.end();
    s.set_attribute("late", 1);
    s.add_event("late", vec![]);
    s.set_status(Status::error("late"));
    assert!(!s.is_recording());
    drop(s);
    let spans = exp.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].end_time_ns, spans[0].start_time_ns);
    assert!(spans[0].attributes.is_empty() && spans[0].events.is_empty());
    assert_eq!(spans[0].status, Status::Unset);
}

#[test]
fn dropped_span_is_ended() {
    let (_p, tracer, exp) = setup();
    {
        let _s = tracer.start("scoped");
    }
    assert_eq!(exp.finished_spans()[0].name, "scoped");
}

#[test]
fn limits_are_applied_and_counted() {
    let limits = SpanLimits {
        max_attributes_per_span: 2,
        max_events_per_span: 1,
        max_links_per_span: 1,
        max_attributes_per_event: 1,
        max_attributes_per_link: 1,
        max_attribute_value_length: Some(4),
    };
    let (_p, tracer, exp) = setup_with(limits);
    let mut s = tracer.start("op");
    s.set_attribute("a", "abcéxyz");
    s.set_attribute("b", vec![StringValue::from("abcdef".to_string())]);
    s.set_attribute("c", 1);
    s.set_attribute("d", 1);
    s.add_event("e1", vec![KeyValue::new("x", 1), KeyValue::new("y", 2)]);
    s.add_event("e2", vec![]);
    s.add_link(
        SpanContext::NONE,
        vec![KeyValue::new("x", 1), KeyValue::new("y", 2)],
    );
    s.add_link(SpanContext::NONE, vec![]);
    s.end();
    let d = &exp.finished_spans()[0];
    assert_eq!(d.attributes.len(), 2);
    assert_eq!(d.dropped_attributes_count, 2);
    assert_eq!(d.attributes[0].value, Value::from("abc")); // cut at 4 falls inside é: back to 3
    assert_eq!(
        d.attributes[1].value,
        Value::Array(Array::String(vec![StringValue::from("abcd")]))
    );
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.dropped_events_count, 1);
    assert_eq!(d.events[0].dropped_attributes_count, 1);
    assert_eq!(d.links.len(), 1);
    assert_eq!(d.dropped_links_count, 1);
    assert_eq!(d.links[0].dropped_attributes_count, 1);
}

#[test]
fn unsampled_span_records_nothing_but_propagates() {
    let exp = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exp.clone())
        .with_sampler(Sampler::AlwaysOff)
        .build();
    let tracer = provider.tracer("t");
    let mut s = tracer.start("op");
    assert!(!s.is_recording());
    assert!(s.span_context().is_valid());
    assert!(!s.span_context().is_sampled());
    s.set_attribute("x", 1);
    let child = {
        let _g = s.make_current();
        tracer.start("child")
    };
    assert_eq!(child.span_context().trace_id(), s.span_context().trace_id());
    drop((s, child));
    assert!(exp.finished_spans().is_empty());
}

#[test]
fn parent_child_in_current_context_and_nesting() {
    let (_p, tracer, exp) = setup();
    let parent = tracer.start("parent");
    let g = parent.make_current();
    let child = tracer.start("child");
    let g2 = child.make_current();
    let grandchild = tracer.start("grandchild");
    drop(grandchild);
    drop(g2);
    drop(child);
    let sibling = tracer.span_builder("root").as_root().start();
    drop(sibling);
    drop(g);
    drop(parent);
    let spans = exp.finished_spans();
    let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap().clone();
    let (p, c, gc, r) = (by("parent"), by("child"), by("grandchild"), by("root"));
    assert_eq!(c.parent_span_id, p.span_context.span_id());
    assert_eq!(gc.parent_span_id, c.span_context.span_id());
    assert_eq!(gc.span_context.trace_id(), p.span_context.trace_id());
    assert!(!r.parent_span_id.is_valid());
    assert_ne!(r.span_context.trace_id(), p.span_context.trace_id());
}

#[test]
fn remote_parent_from_context() {
    let (_p, tracer, exp) = setup();
    let remote = SpanContext::new(
        "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
        "00f067aa0ba902b7".parse().unwrap(),
        ferrotrace::TraceFlags::SAMPLED,
        true,
        ferrotrace::TraceState::from_header("v=1").unwrap(),
    );
    let cx = Context::new().with_span_context(remote.clone());
    drop(tracer.start_with_context("server", &cx));
    let s = &exp.finished_spans()[0];
    assert_eq!(s.parent_span_id, remote.span_id());
    assert!(s.parent_is_remote);
    assert_eq!(s.span_context.trace_id(), remote.trace_id());
    assert_eq!(s.span_context.trace_state().get("v"), Some("1"));
}

#[test]
fn parent_child_across_threads() {
    let (_p, tracer, exp) = setup();
    let parent = tracer.start("parent");
    let cx = parent.context();
    let t2 = tracer.clone();
    std::thread::spawn(move || {
        let _g = cx.attach();
        drop(t2.start("on-thread"));
    })
    .join()
    .unwrap();
    let pid = parent.span_context().span_id();
    drop(parent);
    let spans = exp.finished_spans();
    let child = spans.iter().find(|s| s.name == "on-thread").unwrap();
    assert_eq!(child.parent_span_id, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_child_across_await_and_spawn() {
    let (_p, tracer, exp) = setup();
    let parent = tracer.start("parent");
    let pid = parent.span_context().span_id();
    let cx = parent.context();

    let t = tracer.clone();
    let fut = async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(t.start("after-await"));
        let t2 = t.clone();
        // with_current_context captures the context current inside this future.
        tokio::spawn(async move { drop(t2.start("spawned")) }.with_current_context())
            .await
            .unwrap();
        tokio::task::yield_now().await;
        drop(t.start("after-yield"));
    };
    tokio::spawn(fut.with_context(cx)).await.unwrap();
    // Outside the wrapper the context is not current.
    drop(tracer.start("outside"));
    drop(parent);
    let spans = exp.finished_spans();
    for name in ["after-await", "spawned", "after-yield"] {
        let s = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.parent_span_id, pid, "{name}");
    }
    let outside = spans.iter().find(|s| s.name == "outside").unwrap();
    assert!(!outside.parent_span_id.is_valid());
}

#[test]
fn in_span_and_shutdown() {
    let (p, tracer, exp) = setup();
    tracer.in_span("outer", |_| drop(tracer.start("inner")));
    let spans = exp.finished_spans();
    assert_eq!(spans[0].name, "inner");
    assert_eq!(spans[0].parent_span_id, spans[1].span_context.span_id());
    p.shutdown(Duration::from_secs(1)).unwrap();
    assert!(p.shutdown(Duration::from_secs(1)).is_err());
    let s = tracer.start("after-shutdown");
    assert!(!s.is_recording());
}

#[test]
fn baggage_through_context() {
    let mut b = ferrotrace::context::Baggage::new();
    b.insert("tenant", "acme").unwrap();
    let _g = Context::current().with_baggage(b).attach();
    assert_eq!(Context::current().baggage().get("tenant"), Some("acme"));
}

#[test]
fn global_provider_helpers() {
    use ferrotrace::trace::global;
    // Before one is set: no-op, spans do not record.
    assert!(!global::tracer("x").start("op").is_recording());
    let (p, _t, exp) = setup();
    global::set_tracer_provider(p);
    drop(global::tracer("x").start("op"));
    assert_eq!(exp.finished_spans().len(), 1);
    global::shutdown_tracer_provider(Duration::from_secs(1)).unwrap();
    assert!(!global::tracer("x").start("op").is_recording());
}

#[test]
fn without_processors_a_sampled_decision_still_propagates() {
    // Nothing records, but the context says what the sampler decided, so a
    // downstream service continues a sampled trace.
    let provider = TracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .build();
    let tracer = provider.tracer("t");
    let span = tracer.start("op");
    assert!(!span.is_recording());
    assert!(span.span_context().is_sampled());
    assert!(span.span_context().trace_flags().is_random());
    let off = TracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .build();
    assert!(!off.tracer("t").start("op").span_context().is_sampled());
}

#[test]
fn resource_and_scope_are_shared_between_spans_and_providers_not_copied() {
    use ferrotrace::trace::Interned;
    // Two providers with the same resource and tracers with the same scope
    // (as a process that rebuilds its provider does): their spans refer to
    // one stored resource and one stored scope, and still read correctly.
    let (p1, t1, e1) = setup();
    let (_p2, t2, e2) = setup();
    t1.start("a").end();
    t1.start("b").end();
    t2.start("c").end();
    let (s1, s2) = (e1.finished_spans(), e2.finished_spans());
    assert!(Interned::ptr_eq(&s1[0].resource, &s1[1].resource));
    assert!(Interned::ptr_eq(&s1[0].resource, &s2[0].resource));
    assert!(Interned::ptr_eq(&s1[0].scope, &s2[0].scope));
    assert_eq!(
        s2[0].resource.get("service.name"),
        Some(&Value::from("svc"))
    );
    assert_eq!(s2[0].scope.version.as_deref(), Some("1.2.3"));
    // A different scope is a different value.
    let t3 = p1.tracer("other");
    t3.start("d").end();
    let s3 = e1.finished_spans();
    assert_eq!(s3[2].scope.name, "other");
    assert!(!Interned::ptr_eq(&s3[2].scope, &s1[0].scope));
}
