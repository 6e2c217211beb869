//! Several propagators applied in order.

use super::sampling_state::RemoteSamplingState;
use super::{Extractor, Injector, TextMapPropagator};
use crate::context::{Context, SpanContext};

/// Runs each inner propagator in order: every one injects; extraction threads
/// the context through all of them (later ones see what earlier ones extracted).
///
/// The first propagator that extracts a valid span context wins: later ones
/// still add what else they carry (baggage), but cannot replace that span
/// context. So `tracecontext,b3` follows `traceparent` when a request carries
/// both, and `b3` when it carries only B3 headers.
pub struct TextMapCompositePropagator {
    propagators: Vec<Box<dyn TextMapPropagator>>,
    /// Index of the last propagator that may extract a span context (or
    /// `usize::MAX` if none): from it on no later one can contest the
    /// winner, so the first-wins bookkeeping (a span context cloned and
    /// compared, a context value looked up, per request) is skipped.
    last_span_source: usize,
}

impl TextMapCompositePropagator {
    /// A composite of `propagators`, applied in the given order.
    pub fn new(propagators: Vec<Box<dyn TextMapPropagator>>) -> Self {
        let last_span_source = propagators
            .iter()
            .rposition(|p| p.extracts_span_context())
            .unwrap_or(usize::MAX);
        TextMapCompositePropagator {
            propagators,
            last_span_source,
        }
    }
}

impl std::fmt::Debug for TextMapCompositePropagator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextMapCompositePropagator")
            .field("fields", &self.fields())
            .finish()
    }
}

impl TextMapPropagator for TextMapCompositePropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        for p in &self.propagators {
            p.inject_context(cx, injector);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut out = cx.clone();
        self.extract_in_place(&mut out, extractor);
        out
    }

    /// The context is updated in place by each propagator in turn (each
    /// sets what it extracts), not cloned nor moved once per propagator.
    fn extract_in_place(&self, cx: &mut Context, extractor: &dyn Extractor) {
        // The winning span context and the sampling state that came with it.
        let mut first: Option<(SpanContext, Option<RemoteSamplingState>)> = None;
        for (i, p) in self.propagators.iter().enumerate() {
            // Baggage-only propagators cannot touch the span context or the
            // sampling state; and once the last propagator that could has
            // run with no winner before it, its result stands as it is.
            if !p.extracts_span_context() || (first.is_none() && i == self.last_span_source) {
                p.extract_in_place(cx, extractor);
                continue;
            }
            match &first {
                None => {
                    let before = cx.span_context().clone();
                    p.extract_in_place(cx, extractor);
                    let sc = cx.span_context();
                    if sc.is_valid() && sc.is_remote() && *sc != before {
                        first = Some((sc.clone(), cx.get::<RemoteSamplingState>().copied()));
                    }
                }
                Some((sc, state)) => {
                    p.extract_in_place(cx, extractor);
                    let later = cx.get::<RemoteSamplingState>().copied();
                    cx.set_span_context(sc.clone());
                    if later != *state {
                        *cx = cx.with_value(state.unwrap_or(RemoteSamplingState {
                            trace_id: sc.trace_id(),
                            state: None,
                        }));
                    }
                }
            }
        }
    }

    fn extracts_span_context(&self) -> bool {
        self.last_span_source != usize::MAX
    }

    fn fields(&self) -> Vec<&'static str> {
        let mut f: Vec<&'static str> = Vec::new();
        for p in &self.propagators {
            for k in p.fields() {
                if !f.contains(&k) {
                    f.push(k);
                }
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{
        sampling_state, B3Propagator, BaggagePropagator, JaegerPropagator, SamplingState,
        TraceContextPropagator,
    };
    use std::collections::HashMap;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const B3: &str = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d";
    const UBER: &str = "80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:0:1";

    fn all() -> TextMapCompositePropagator {
        TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
            Box::new(B3Propagator::single()),
            Box::new(JaegerPropagator::new()),
        ])
    }

    fn headers(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The by-value path the HTTP server layer takes gives what the
    /// by-reference one gives, for each built-in propagator and the
    /// composite, starting from a context that already carries baggage,
    /// a value and a span.
    #[test]
    fn extract_in_place_equals_extract_with_context() {
        #[derive(Debug, PartialEq)]
        struct Tag(u8);
        let mut b = crate::context::Baggage::new();
        b.insert("outer", "1").unwrap();
        let start = Context::new()
            .with_baggage(b)
            .with_value(Tag(7))
            .with_span_context(SpanContext::new(
                crate::ids::TraceId::from_bytes([1; 16]),
                crate::ids::SpanId::from_bytes([2; 8]),
                crate::context::TraceFlags::SAMPLED,
                false,
                Default::default(),
            ));
        let props: Vec<Box<dyn TextMapPropagator>> = vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
            Box::new(all()),
        ];
        let carriers = [
            headers(&[]),
            headers(&[("traceparent", TP), ("baggage", "a=1,b=2")]),
            headers(&[("traceparent", "00-garbage"), ("baggage", "=")]),
            headers(&[("b3", B3), ("uber-trace-id", UBER), ("tracestate", "k=v")]),
        ];
        for p in &props {
            for h in &carriers {
                for cx in [Context::new(), start.clone()] {
                    let by_ref = p.extract_with_context(&cx, h);
                    let mut by_val = cx.clone();
                    p.extract_in_place(&mut by_val, h);
                    assert_eq!(by_ref.span_context(), by_val.span_context(), "{h:?}");
                    assert_eq!(
                        by_ref.baggage().iter().collect::<Vec<_>>(),
                        by_val.baggage().iter().collect::<Vec<_>>(),
                        "{h:?}"
                    );
                    assert_eq!(by_ref.get::<Tag>(), by_val.get::<Tag>());
                    assert_eq!(
                        by_ref.get::<RemoteSamplingState>(),
                        by_val.get::<RemoteSamplingState>()
                    );
                }
            }
        }
    }

    #[test]
    fn first_valid_span_context_wins_and_baggage_is_merged() {
        let p = all();
        let h = headers(&[
            ("traceparent", TP),
            ("b3", B3),
            ("uber-trace-id", UBER),
            ("baggage", "a=1"),
            ("uberctx-b", "2"),
        ]);
        let cx = p.extract_with_context(&Context::new(), &h);
        assert_eq!(
            cx.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            sampling_state(&cx),
            None,
            "b3's debug belongs to another trace"
        );
        assert_eq!(cx.baggage().get("a"), Some("1"));
        assert_eq!(cx.baggage().get("b"), Some("2"));

        // No traceparent: b3 is next; jaeger's (same trace, not debug) does not
        // clear b3's debug state.
        let h = headers(&[("b3", B3), ("uber-trace-id", UBER)]);
        let cx = p.extract_with_context(&Context::new(), &h);
        assert_eq!(cx.span_context().span_id().to_string(), "e457b5a2e4d86bd1");
        assert_eq!(sampling_state(&cx), Some(SamplingState::Debug));

        // An invalid traceparent does not count: the next valid one wins.
        let h = headers(&[("traceparent", "00-garbage"), ("uber-trace-id", UBER)]);
        let cx = p.extract_with_context(&Context::new(), &h);
        assert_eq!(
            cx.span_context().trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(sampling_state(&cx), None);
    }

    /// The shortcuts (no bookkeeping around baggage-only propagators, none
    /// at the last span-context source) keep first-wins in every order.
    #[test]
    fn first_wins_in_any_order_around_baggage() {
        let boxed = |names: &[&str]| -> Vec<Box<dyn TextMapPropagator>> {
            names
                .iter()
                .map(|n| -> Box<dyn TextMapPropagator> {
                    match *n {
                        "tc" => Box::new(TraceContextPropagator::new()),
                        "bg" => Box::new(BaggagePropagator::new()),
                        _ => Box::new(B3Propagator::single()),
                    }
                })
                .collect()
        };
        let h = headers(&[("traceparent", TP), ("b3", B3), ("baggage", "a=1")]);
        for (order, trace) in [
            (&["tc", "bg"][..], "4bf92f3577b34da6a3ce929d0e0e4736"),
            (&["bg", "tc"][..], "4bf92f3577b34da6a3ce929d0e0e4736"),
            (&["tc", "bg", "b3"][..], "4bf92f3577b34da6a3ce929d0e0e4736"),
            (&["b3", "bg", "tc"][..], "80f198ee56343ba864fe8b2a57d3eff7"),
            (
                &["bg", "b3", "bg", "tc", "bg"][..],
                "80f198ee56343ba864fe8b2a57d3eff7",
            ),
        ] {
            let p = TextMapCompositePropagator::new(boxed(order));
            for cx in [p.extract_with_context(&Context::new(), &h), {
                let mut cx = Context::new();
                p.extract_in_place(&mut cx, &h);
                cx
            }] {
                assert_eq!(cx.span_context().trace_id().to_string(), trace, "{order:?}");
                assert_eq!(cx.baggage().get("a"), Some("1"), "{order:?}");
                let at = |name: &str| order.iter().position(|n| *n == name);
                let debug = matches!((at("b3"), at("tc")), (Some(b), Some(t)) if b < t)
                    .then_some(SamplingState::Debug);
                assert_eq!(sampling_state(&cx), debug, "{order:?}");
            }
        }
        assert!(!TextMapCompositePropagator::new(boxed(&["bg"])).extracts_span_context());
        assert!(TextMapCompositePropagator::new(boxed(&["bg", "tc"])).extracts_span_context());
        let nested: Vec<Box<dyn TextMapPropagator>> = vec![
            Box::new(TextMapCompositePropagator::new(boxed(&["bg"]))),
            Box::new(TextMapCompositePropagator::new(boxed(&["b3"]))),
            Box::new(TraceContextPropagator::new()),
        ];
        let mut cx = Context::new();
        TextMapCompositePropagator::new(nested).extract_in_place(&mut cx, &h);
        assert_eq!(
            cx.span_context().trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
    }

    #[test]
    fn inject_writes_every_format() {
        let h = headers(&[("traceparent", TP), ("baggage", "a=1")]);
        let p = all();
        let cx = p.extract_with_context(&Context::new(), &h);
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        let mut keys: Vec<&str> = out.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["b3", "baggage", "traceparent", "uber-trace-id", "uberctx-a"]
        );
        assert_eq!(
            out["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
        );
        assert_eq!(
            out["uber-trace-id"],
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
        );
    }
}
