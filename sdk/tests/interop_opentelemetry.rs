//! Headers injected by ferrotrace are extracted identically by opentelemetry_sdk's
//! propagators, and the reverse.

use std::collections::HashMap;

use ferrotrace::context::Baggage;
use ferrotrace::propagation::{BaggagePropagator, TextMapPropagator, TraceContextPropagator};
use ferrotrace::{Context, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt;
use proptest::prelude::*;

fn ft_to_otel(sc: &SpanContext) -> opentelemetry::trace::SpanContext {
    let mut h = HashMap::new();
    TraceContextPropagator::new()
        .inject_context(&Context::new().with_span_context(sc.clone()), &mut h);
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &h);
    cx.span().span_context().clone()
}

fn otel_to_ft(sc: opentelemetry::trace::SpanContext) -> SpanContext {
    let mut h = HashMap::new();
    let cx = opentelemetry::Context::new().with_remote_span_context(sc);
    opentelemetry_sdk::propagation::TraceContextPropagator::new().inject_context(&cx, &mut h);
    TraceContextPropagator::new()
        .extract_with_context(&Context::new(), &h)
        .span_context()
        .clone()
}

proptest! {
    #[test]
    fn trace_context_both_ways(
        t in any::<u128>().prop_filter("nonzero", |v| *v != 0),
        s in any::<u64>().prop_filter("nonzero", |v| *v != 0),
        sampled in any::<bool>(),
        members in proptest::collection::btree_map("[a-z][a-z0-9_*/-]{0,10}", "[!-+\\--<>-~]{1,10}", 0..5),
    ) {
        let ts = TraceState::from_key_value(members.clone()).unwrap();
        let sc = SpanContext::new(
            TraceId::from_bytes(t.to_be_bytes()),
            SpanId::from_bytes(s.to_be_bytes()),
            TraceFlags::default().with_sampled(sampled),
            false,
            ts.clone(),
        );
        let o = ft_to_otel(&sc);
        prop_assert_eq!(o.trace_id().to_bytes(), t.to_be_bytes());
        prop_assert_eq!(o.span_id().to_bytes(), s.to_be_bytes());
        prop_assert_eq!(o.is_sampled(), sampled);
        prop_assert!(o.is_remote());
        prop_assert_eq!(o.trace_state().header(), ts.header());

        let back = otel_to_ft(o);
        prop_assert_eq!(back.trace_id(), sc.trace_id());
        prop_assert_eq!(back.span_id(), sc.span_id());
        prop_assert_eq!(back.is_sampled(), sampled);
        prop_assert_eq!(back.trace_state(), &ts);
    }

    #[test]
    fn baggage_both_ways(
        entries in proptest::collection::btree_map("[a-zA-Z0-9_.-]{1,10}", "[a-zA-Z0-9 äöü€+/:@!]{0,20}", 1..6),
    ) {
        // ferrotrace -> opentelemetry_sdk
        let mut b = Baggage::new();
        for (k, v) in &entries {
            b.insert(k.clone(), v.clone()).unwrap();
        }
        let mut h = HashMap::new();
        BaggagePropagator::new().inject_context(&Context::new().with_baggage(b), &mut h);
        let ocx = opentelemetry_sdk::propagation::BaggagePropagator::new()
            .extract_with_context(&opentelemetry::Context::new(), &h);
        for (k, v) in &entries {
            // opentelemetry_sdk trims values; ferrotrace encodes spaces, so only edge spaces differ.
            let got = ocx.baggage().get(k.as_str()).map(|v| v.as_str().to_owned());
            prop_assert_eq!(got.as_deref(), Some(v.trim()));
        }

        // opentelemetry_sdk -> ferrotrace
        let kvs: Vec<opentelemetry::KeyValue> = entries
            .iter()
            .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone()))
            .collect();
        let ocx = opentelemetry::Context::new().with_baggage(kvs);
        let mut h = HashMap::new();
        opentelemetry_sdk::propagation::BaggagePropagator::new().inject_context(&ocx, &mut h);
        let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &h);
        for (k, v) in &entries {
            prop_assert_eq!(cx.baggage().get(k), Some(v.trim()));
        }
    }
}

#[test]
fn otel_rejects_what_we_reject_for_common_invalid_traceparents() {
    for v in [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ] {
        let h: HashMap<String, String> = [("traceparent".to_string(), v.to_string())].into();
        let o = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract_with_context(&opentelemetry::Context::new(), &h);
        let f = TraceContextPropagator::new().extract_with_context(&Context::new(), &h);
        assert!(!o.span().span_context().is_valid(), "{v}");
        assert!(!f.has_active_span(), "{v}");
    }
}
