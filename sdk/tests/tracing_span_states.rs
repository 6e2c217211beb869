//! The `tracing` layer's own per-span state (keyed by `tracing` span id, not
//! in the registry's extensions) and its per-thread entered stack: spans
//! closed out of order, entered on one thread and closed on another, many
//! threads at once, states released when spans close, and the cases where
//! the entered stack cannot answer and the registry is asked instead.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use ferrotrace::context::Context;
use ferrotrace::export::{InMemorySpanExporter, SpanData};
use ferrotrace::integrations::tracing::FerrotraceLayer;
use ferrotrace::trace::{Sampler, TracerProvider};
use ferrotrace::SpanId;
use tracing_subscriber::layer::SubscriberExt;

fn setup() -> (InMemorySpanExporter, TracerProvider) {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::AlwaysOn)
        .with_unended_span_age(None)
        .build();
    (exporter, provider)
}

fn dispatch(provider: &TracerProvider) -> tracing::Dispatch {
    tracing::Dispatch::new(
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("t"))),
    )
}

fn live(d: &tracing::Dispatch) -> usize {
    d.downcast_ref::<FerrotraceLayer>()
        .expect("the layer")
        .live_spans()
}

fn by_name<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn spans_closed_out_of_order_keep_their_parents_and_release_their_state() {
    let (exporter, provider) = setup();
    let d = dispatch(&provider);
    tracing::dispatcher::with_default(&d, || {
        let a = tracing::info_span!("a");
        let b = tracing::info_span!(parent: &a, "b");
        let c = tracing::info_span!(parent: &b, "c");
        assert_eq!(live(&d), 3);
        // Closed parent first, then the grandchild, then the child.
        drop(a);
        c.in_scope(|| tracing::info!("in c"));
        drop(c);
        b.in_scope(|| tracing::info!("in b"));
        drop(b);
        assert_eq!(live(&d), 0);
    });
    let spans = exporter.finished_spans();
    let (a, b, c) = (
        by_name(&spans, "a")[0],
        by_name(&spans, "b")[0],
        by_name(&spans, "c")[0],
    );
    assert_eq!(a.parent_span_id, SpanId::INVALID);
    assert_eq!(b.parent_span_id, a.span_context.span_id());
    assert_eq!(c.parent_span_id, b.span_context.span_id());
    assert_eq!(c.events.len(), 1);
    assert_eq!(c.events[0].name, "in c");
    assert_eq!(b.events.len(), 1);
    assert_eq!(b.events[0].name, "in b");
    assert!(a.events.is_empty());
}

#[test]
fn a_span_entered_on_one_thread_is_closed_on_another() {
    let (exporter, provider) = setup();
    let d = dispatch(&provider);
    let span = tracing::dispatcher::with_default(&d, || {
        let span = tracing::info_span!("moved", step = 1);
        span.in_scope(|| {
            tracing::info!("on the first thread");
            tracing::info_span!("child.first").in_scope(|| {});
        });
        span
    });
    let d2 = d.clone();
    std::thread::spawn(move || {
        tracing::dispatcher::with_default(&d2, || {
            span.in_scope(|| {
                tracing::info!("on the second thread");
                tracing::info_span!("child.second").in_scope(|| {});
            });
            // Closed here, on the second thread.
            drop(span);
        });
    })
    .join()
    .unwrap();
    assert_eq!(live(&d), 0);
    let spans = exporter.finished_spans();
    let moved = by_name(&spans, "moved")[0];
    let names: Vec<_> = moved.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(names, ["on the first thread", "on the second thread"]);
    for child in ["child.first", "child.second"] {
        let c = by_name(&spans, child)[0];
        assert_eq!(c.parent_span_id, moved.span_context.span_id(), "{child}");
        assert_eq!(c.span_context.trace_id(), moved.span_context.trace_id());
    }
}

#[test]
fn many_threads_at_once() {
    let (exporter, provider) = setup();
    let d = dispatch(&provider);
    let threads = 8;
    let per_thread = 300u64;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let d = d.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                tracing::dispatcher::with_default(&d, || {
                    for i in 0..per_thread {
                        let span = tracing::info_span!("request", thread = t as u64, i);
                        let _e = span.enter();
                        let child = tracing::info_span!("db.query", thread = t as u64, i);
                        let _c = child.enter();
                        tracing::info!(thread = t as u64, i, "cache miss");
                    }
                });
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(live(&d), 0);
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), threads * per_thread as usize * 2);
    let key = |s: &SpanData| -> (i64, i64) {
        let get = |k: &str| match s.attributes.iter().find(|kv| kv.key.as_str() == k) {
            Some(kv) => match kv.value {
                ferrotrace::Value::I64(v) => v,
                ref other => panic!("{k} = {other:?}"),
            },
            None => panic!("no {k} on {}", s.name),
        };
        (get("thread"), get("i"))
    };
    let requests: HashMap<_, _> = by_name(&spans, "request")
        .into_iter()
        .map(|s| (key(s), s))
        .collect();
    assert_eq!(requests.len(), threads * per_thread as usize);
    for child in by_name(&spans, "db.query") {
        let parent = requests[&key(child)];
        assert_eq!(child.parent_span_id, parent.span_context.span_id());
        assert_eq!(
            child.span_context.trace_id(),
            parent.span_context.trace_id()
        );
        // The event went to the innermost span of its own thread.
        assert_eq!(child.events.len(), 1);
        let ev = &child.events[0].attributes;
        let ev_thread = ev.iter().find(|kv| kv.key.as_str() == "thread").unwrap();
        assert_eq!(ev_thread.value, ferrotrace::Value::I64(key(child).0));
        assert!(parent.events.is_empty());
    }
}

#[test]
fn events_under_untracked_spans_go_to_the_nearest_recorded_ancestor() {
    let (exporter, provider) = setup();
    let d = dispatch(&provider);
    tracing::dispatcher::with_default(&d, || {
        let outer = tracing::info_span!("outer");
        let _o = outer.enter();
        // A DEBUG span is not recorded by default: its event goes to `outer`.
        let debug = tracing::debug_span!("debug.inner");
        let _d = debug.enter();
        tracing::info!("under debug");
        // An explicit parent that was never entered.
        let other = tracing::info_span!(parent: None, "other");
        tracing::info!(parent: &other, "to other");
    });
    let spans = exporter.finished_spans();
    let outer = by_name(&spans, "outer")[0];
    let other = by_name(&spans, "other")[0];
    assert_eq!(outer.events.len(), 1);
    assert_eq!(outer.events[0].name, "under debug");
    assert_eq!(other.events.len(), 1);
    assert_eq!(other.events[0].name, "to other");
    assert_eq!(other.parent_span_id, SpanId::INVALID);
}

#[test]
fn a_spanless_context_attached_inside_an_entered_span_keeps_it_as_parent() {
    let (exporter, provider) = setup();
    let d = dispatch(&provider);
    tracing::dispatcher::with_default(&d, || {
        let outer = tracing::info_span!("outer");
        let _o = outer.enter();
        let _g = Context::new().attach();
        tracing::info_span!("inner").in_scope(|| {});
    });
    let spans = exporter.finished_spans();
    let outer = by_name(&spans, "outer")[0];
    let inner = by_name(&spans, "inner")[0];
    assert_eq!(inner.parent_span_id, outer.span_context.span_id());
}

#[test]
fn two_layers_on_one_registry_each_record_everything() {
    let (exp1, p1) = setup();
    let (exp2, p2) = setup();
    let d = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(FerrotraceLayer::new(p1.tracer("one")))
            .with(FerrotraceLayer::new(p2.tracer("two"))),
    );
    tracing::dispatcher::with_default(&d, || {
        let span = tracing::info_span!("request");
        let _e = span.enter();
        let child = tracing::info_span!("child");
        let _c = child.enter();
        tracing::info!("event");
    });
    // Each layer finds the event's span although the other layer's entry
    // is on top of the thread's entered stack (that case asks the registry).
    for exp in [&exp1, &exp2] {
        let spans = exp.finished_spans();
        assert_eq!(spans.len(), 2);
        let (request, child) = (by_name(&spans, "request")[0], by_name(&spans, "child")[0]);
        assert_eq!(child.events.len(), 1);
        assert!(request.events.is_empty());
    }
    // The outer layer's spans nest. (The inner layer's child takes its
    // parent from the current context, which the outer layer attached
    // last: two ferrotrace layers on one registry share one current
    // context, as before this state moved out of the extensions.)
    let spans = exp2.finished_spans();
    let (request, child) = (by_name(&spans, "request")[0], by_name(&spans, "child")[0]);
    assert_eq!(child.parent_span_id, request.span_context.span_id());
}

#[test]
fn an_inner_dispatcher_does_not_see_the_outer_ones_spans() {
    let (exp_outer, p_outer) = setup();
    let (exp_inner, p_inner) = setup();
    let outer = dispatch(&p_outer);
    let inner = dispatch(&p_inner);
    tracing::dispatcher::with_default(&outer, || {
        let span = tracing::info_span!("outer.request");
        let _e = span.enter();
        tracing::dispatcher::with_default(&inner, || {
            // No span of the inner subscriber is entered: not recorded.
            tracing::info!("inner event");
            tracing::info_span!("inner.root").in_scope(|| tracing::info!("in inner root"));
        });
    });
    let outer_spans = exp_outer.finished_spans();
    assert_eq!(outer_spans.len(), 1);
    assert!(outer_spans[0].events.is_empty());
    let inner_spans = exp_inner.finished_spans();
    assert_eq!(inner_spans.len(), 1);
    assert_eq!(inner_spans[0].events.len(), 1);
    assert_eq!(inner_spans[0].events[0].name, "in inner root");
}

#[test]
fn deep_nesting_past_the_entered_bound_is_still_traced() {
    let (exporter, provider) = setup();
    let d = dispatch(&provider);
    let depth = 1100;
    tracing::dispatcher::with_default(&d, || {
        let mut guards = Vec::new();
        for i in 0..depth {
            guards.push(tracing::info_span!("level", i).entered());
        }
        tracing::info!("deepest");
        while let Some(g) = guards.pop() {
            drop(g);
        }
        // Back within the bound: the fast path answers again.
        tracing::info_span!("after").in_scope(|| tracing::info!("after event"));
    });
    assert_eq!(live(&d), 0);
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), depth + 1);
    let levels = by_name(&spans, "level");
    let deepest = levels
        .iter()
        .find(|s| {
            s.attributes.iter().any(|kv| {
                kv.key.as_str() == "i" && kv.value == ferrotrace::Value::I64(depth as i64 - 1)
            })
        })
        .unwrap();
    assert_eq!(deepest.events.len(), 1);
    let after = by_name(&spans, "after")[0];
    assert_eq!(after.parent_span_id, SpanId::INVALID);
    assert_eq!(after.events.len(), 1);
}

#[test]
fn an_event_in_a_span_entered_again_goes_where_the_registry_says() {
    // The registry's current span skips a span entered again further in:
    // A, B, A again -> the event belongs to B, on the fast path as on the
    // registry's.
    let (exporter, provider) = setup();
    let d = dispatch(&provider);
    tracing::dispatcher::with_default(&d, || {
        let a = tracing::info_span!("a");
        let _a = a.enter();
        let b = tracing::info_span!("b");
        let _b = b.enter();
        let _a2 = a.enter();
        tracing::info!("which");
    });
    let spans = exporter.finished_spans();
    assert_eq!(by_name(&spans, "b")[0].events.len(), 1);
    assert!(by_name(&spans, "a")[0].events.is_empty());
}
