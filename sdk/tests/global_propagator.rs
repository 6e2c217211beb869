//! The global propagator as each thread sees it: a thread that used it keeps
//! its own reference, and still sees a replacement on its next use (own
//! process: the test sets the global propagator).

use std::sync::mpsc;

use ferrotrace::propagation::global::{set_text_map_propagator, with_text_map_propagator};
use ferrotrace::propagation::{B3Propagator, JaegerPropagator, TraceContextPropagator};

fn fields() -> Vec<&'static str> {
    with_text_map_propagator(|p| p.fields())
}

/// One test: the steps set the process's global propagator in turn.
#[test]
fn the_global_propagator_as_threads_see_it() {
    every_thread_sees_a_replaced_propagator_on_its_next_use();
    the_propagator_can_be_used_and_replaced_from_inside_its_own_use();
}

fn every_thread_sees_a_replaced_propagator_on_its_next_use() {
    // The default (`OTEL_PROPAGATORS` unset): W3C trace context and baggage.
    assert_eq!(fields(), ["traceparent", "tracestate", "baggage"]);

    // A worker that has used (and so kept) the default propagator.
    let (ask, asked) = mpsc::channel::<()>();
    let (answer, answers) = mpsc::channel::<Vec<&'static str>>();
    let worker = std::thread::spawn(move || {
        while asked.recv().is_ok() {
            answer.send(fields()).expect("answer");
        }
    });
    ask.send(()).expect("ask");
    assert_eq!(
        answers.recv().expect("fields"),
        ["traceparent", "tracestate", "baggage"]
    );

    set_text_map_propagator(B3Propagator::single());
    assert_eq!(fields(), ["b3"], "the setting thread");
    ask.send(()).expect("ask");
    assert_eq!(
        answers.recv().expect("fields"),
        ["b3"],
        "a thread that kept the old one"
    );

    set_text_map_propagator(JaegerPropagator::new());
    ask.send(()).expect("ask");
    assert_eq!(answers.recv().expect("fields"), ["uber-trace-id"]);
    assert_eq!(fields(), ["uber-trace-id"]);

    // A new thread starts from the current one.
    let fresh = std::thread::spawn(fields).join().expect("thread");
    assert_eq!(fresh, ["uber-trace-id"]);

    drop(ask);
    worker.join().expect("worker");
}

fn the_propagator_can_be_used_and_replaced_from_inside_its_own_use() {
    // Nested use reads the same propagator; a replacement made inside is
    // seen by the next use (the outer call keeps the one it started with).
    let outer = with_text_map_propagator(|p| {
        let inner = with_text_map_propagator(|q| q.fields());
        assert_eq!(p.fields(), inner);
        set_text_map_propagator(TraceContextPropagator::new());
        let after = with_text_map_propagator(|q| q.fields());
        assert_eq!(after, ["traceparent", "tracestate"]);
        p.fields()
    });
    assert!(!outer.is_empty());
    assert_eq!(fields(), ["traceparent", "tracestate"]);
}
