//! B3 and Jaeger propagation against implementations nobody here wrote:
//! opentelemetry-rust's B3 propagator (`opentelemetry-zipkin`) and Jaeger
//! propagator (`opentelemetry-jaeger-propagator`), both ways (they inject, we
//! extract; we inject, they extract) in the same tests; `OTEL_PROPAGATORS`
//! composition; and property tests that no input panics and that what we
//! send they read back as we meant it.
//!
//! opentelemetry-zipkin marks its propagator deprecated along with its Zipkin
//! exporter; it is still opentelemetry-rust's B3 implementation.
#![allow(deprecated)]

use std::collections::HashMap;

use ferrotrace::context::{Context, SpanContext, TraceState};
use ferrotrace::propagation::global::propagator_from_names;
use ferrotrace::propagation::{
    sampling_state, B3Propagator, JaegerPropagator, SamplingState, TextMapPropagator,
};
use ferrotrace::{SpanId, TraceId};
use proptest::prelude::*;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_032::propagation::TextMapPropagator as _;
use opentelemetry_032::trace::TraceContextExt as _;
use opentelemetry_zipkin::{B3Encoding as OtelB3Encoding, Propagator as OtelB3};

type Headers = HashMap<String, String>;

/// opentelemetry-zipkin's flag bits beyond `sampled` (not W3C flags: its own encoding).
const OTEL_B3_DEFERRED: u8 = 0x02;
const OTEL_B3_DEBUG: u8 = 0x04;
/// opentelemetry-jaeger-propagator's debug bit.
const OTEL_JAEGER_DEBUG: u8 = 0x04;

/// What a context carries, in terms both sides can state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Carried {
    trace: [u8; 16],
    span: [u8; 8],
    sampled: bool,
    debug: bool,
    deferred: bool,
}

fn ours(cx: &Context) -> Option<Carried> {
    let sc = cx.span_context();
    sc.is_valid().then(|| Carried {
        trace: sc.trace_id().to_bytes(),
        span: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
        debug: sampling_state(cx) == Some(SamplingState::Debug),
        deferred: sampling_state(cx) == Some(SamplingState::Deferred),
    })
}

/// Our context for `c`, as a B3 or Jaeger extraction would leave it.
fn our_cx(c: Carried) -> Context {
    let h: Headers = [(
        "b3".to_string(),
        format!(
            "{}-{}{}",
            TraceId::from_bytes(c.trace),
            SpanId::from_bytes(c.span),
            match (c.debug, c.deferred, c.sampled) {
                (true, _, _) => "-d",
                (_, true, _) => "",
                (_, _, true) => "-1",
                _ => "-0",
            }
        ),
    )]
    .into();
    let cx = B3Propagator::single().extract_with_context(&Context::new(), &h);
    assert_eq!(ours(&cx), Some(c), "fixture {h:?}");
    cx
}

fn otel_b3_cx(c: Carried) -> opentelemetry::Context {
    use opentelemetry::trace as t;
    let mut flags = if c.sampled { 1 } else { 0 };
    if c.debug {
        flags |= OTEL_B3_DEBUG;
    }
    if c.deferred {
        flags |= OTEL_B3_DEFERRED;
    }
    let sc = t::SpanContext::new(
        t::TraceId::from_bytes(c.trace),
        t::SpanId::from_bytes(c.span),
        t::TraceFlags::new(flags),
        true,
        t::TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

fn otel_b3_read(cx: &opentelemetry::Context) -> Option<Carried> {
    let sc = cx.span().span_context().clone();
    let f = sc.trace_flags().to_u8();
    let debug = f & OTEL_B3_DEBUG != 0;
    sc.is_valid().then(|| Carried {
        trace: sc.trace_id().to_bytes(),
        span: sc.span_id().to_bytes(),
        // opentelemetry-zipkin leaves `sampled` clear for a single-header `d`
        // (OpenTelemetry's B3 requirements say debug sets it); debug implies sampled.
        sampled: sc.is_sampled() || debug,
        debug,
        deferred: f & OTEL_B3_DEFERRED != 0,
    })
}

fn otel_jaeger_cx(c: Carried) -> opentelemetry_032::Context {
    use opentelemetry_032::trace as t;
    let mut flags = if c.sampled { 1 } else { 0 };
    if c.debug {
        flags |= OTEL_JAEGER_DEBUG;
    }
    let sc = t::SpanContext::new(
        t::TraceId::from_bytes(c.trace),
        t::SpanId::from_bytes(c.span),
        t::TraceFlags::new(flags),
        true,
        t::TraceState::default(),
    );
    opentelemetry_032::Context::new().with_remote_span_context(sc)
}

fn otel_jaeger_read(cx: &opentelemetry_032::Context) -> Option<Carried> {
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| Carried {
        trace: sc.trace_id().to_bytes(),
        span: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
        debug: sc.trace_flags().to_u8() & OTEL_JAEGER_DEBUG != 0,
        deferred: false,
    })
}

fn carried(trace: u128, span: u64, sampled: bool, debug: bool, deferred: bool) -> Carried {
    Carried {
        trace: trace.to_be_bytes(),
        span: span.to_be_bytes(),
        sampled: sampled || debug,
        debug,
        deferred: deferred && !debug && !sampled,
    }
}

fn cases() -> Vec<Carried> {
    let t = 0x80f1_98ee_5634_3ba8_64fe_8b2a_57d3_eff7u128;
    let s = 0xe457_b5a2_e4d8_6bd1u64;
    vec![
        carried(t, s, true, false, false),
        carried(t, s, false, false, false),
        carried(t, s, true, true, false),
        carried(t, s, false, false, true),
        // A 64-bit trace id (high half zero) and small ids with leading zeros.
        carried(0x64fe_8b2a_57d3_eff7, 1, true, false, false),
        carried(1, 0x17c29, false, false, false),
    ]
}

/// B3, single and multiple headers: opentelemetry-zipkin injects and we
/// extract, we inject and it extracts, and a request passes through us
/// (their headers in, ours out) unchanged.
#[test]
fn b3_interop_with_opentelemetry_zipkin() {
    for (theirs, our) in [
        (
            OtelB3::with_encoding(OtelB3Encoding::SingleHeader),
            B3Propagator::single(),
        ),
        (
            OtelB3::with_encoding(OtelB3Encoding::MultipleHeader),
            B3Propagator::multi(),
        ),
    ] {
        for c in cases() {
            // Theirs → ours.
            let mut h = Headers::new();
            theirs.inject_context(&otel_b3_cx(c), &mut h);
            let cx = our.extract_with_context(&Context::new(), &h);
            assert_eq!(ours(&cx), Some(c), "we read {h:?}");

            // Ours → theirs, and the headers are the same text both ways
            // (opentelemetry-zipkin's single-header mode adds the multiple
            // headers too: only the configured encoding's are compared).
            let mut mine = Headers::new();
            our.inject_context(&our_cx(c), &mut mine);
            h.retain(|k, _| our.fields().contains(&k.as_str()));
            assert_eq!(mine, h, "same headers as opentelemetry-zipkin for {c:?}");
            let back = theirs.extract_with_context(&opentelemetry::Context::new(), &mine);
            assert_eq!(otel_b3_read(&back), Some(c), "they read {mine:?}");

            // Through a service: extracted by us, the server span's context
            // (same trace, new span id) injected by us, extracted by them.
            let child = SpanContext::new(
                cx.span_context().trace_id(),
                SpanId::from_bytes([0x42; 8]),
                cx.span_context().trace_flags(),
                false,
                TraceState::NONE,
            );
            let mut out = Headers::new();
            our.inject_context(&cx.with_span_context(child), &mut out);
            let back = theirs.extract_with_context(&opentelemetry::Context::new(), &out);
            assert_eq!(
                otel_b3_read(&back),
                Some(Carried {
                    span: [0x42; 8],
                    ..c
                }),
                "debug and deferred survive a hop: {out:?}"
            );
        }
    }
    // Either of their encodings is read by either of ours (extraction tries both).
    let mut h = Headers::new();
    OtelB3::with_encoding(OtelB3Encoding::SingleAndMultiHeader)
        .inject_context(&otel_b3_cx(cases()[0]), &mut h);
    h.remove("b3");
    let cx = B3Propagator::single().extract_with_context(&Context::new(), &h);
    assert_eq!(ours(&cx), Some(cases()[0]));
}

/// Jaeger: opentelemetry-jaeger-propagator injects and we extract, we inject
/// and it extracts (with our `uberctx-` baggage headers visible to it).
#[test]
fn jaeger_interop_with_opentelemetry_jaeger_propagator() {
    let theirs = opentelemetry_jaeger_propagator::Propagator::new();
    let our = JaegerPropagator::new();
    // Jaeger has no deferred state.
    for c in cases().into_iter().filter(|c| !c.deferred) {
        let mut h = Headers::new();
        theirs.inject_context(&otel_jaeger_cx(c), &mut h);
        let cx = our.extract_with_context(&Context::new(), &h);
        assert_eq!(ours(&cx), Some(c), "we read {h:?}");

        let mut mine = Headers::new();
        our.inject_context(&our_cx(c), &mut mine);
        assert_eq!(mine, h, "same header as opentelemetry-jaeger-propagator");
        let back = theirs.extract_with_context(&opentelemetry_032::Context::new(), &mine);
        assert_eq!(otel_jaeger_read(&back), Some(c), "they read {mine:?}");
    }

    // The shortened and URL-encoded forms other Jaeger clients send.
    let want = carried(0x4d_0000_0000_0000_0016, 0x17c29, true, false, false);
    for v in [
        "4d0000000000000016:17c29:0:1",
        "4d0000000000000016%3A17c29%3A0%3A1",
    ] {
        let h: Headers = [("uber-trace-id".to_string(), v.to_string())].into();
        let cx = our.extract_with_context(&Context::new(), &h);
        assert_eq!(ours(&cx), Some(want), "{v}");
        let them = theirs.extract_with_context(&opentelemetry_032::Context::new(), &h);
        assert_eq!(otel_jaeger_read(&them), Some(want), "they agree on {v}");
    }

    // Baggage: our uberctx- headers are the ones their propagator reads (it
    // keeps them in the trace state, under the header name).
    let mut b = ferrotrace::context::Baggage::new();
    b.insert("tenant", "acme").unwrap();
    let cx = our_cx(cases()[0]).with_baggage(b);
    let mut mine = Headers::new();
    our.inject_context(&cx, &mut mine);
    assert_eq!(mine["uberctx-tenant"], "acme");
    let back = theirs.extract_with_context(&opentelemetry_032::Context::new(), &mine);
    assert_eq!(
        back.span()
            .span_context()
            .trace_state()
            .get("uberctx-tenant"),
        Some("acme")
    );
}

/// `OTEL_PROPAGATORS=tracecontext,baggage,b3multi,jaeger`: every format is
/// injected, and a request in any one of them is continued.
#[test]
fn composed_from_otel_propagators_names() {
    let (p, unknown) = propagator_from_names("tracecontext,baggage,b3multi,jaeger");
    assert!(unknown.is_empty());
    let c = cases()[0];
    let mut h = Headers::new();
    OtelB3::with_encoding(OtelB3Encoding::MultipleHeader).inject_context(&otel_b3_cx(c), &mut h);
    let cx = p.extract_with_context(&Context::new(), &h);
    assert_eq!(ours(&cx), Some(c));
    let mut out = Headers::new();
    p.inject_context(&cx, &mut out);
    let mut keys: Vec<&str> = out.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "traceparent",
            "uber-trace-id",
            "x-b3-sampled",
            "x-b3-spanid",
            "x-b3-traceid"
        ]
    );
    let them = opentelemetry_jaeger_propagator::Propagator::new()
        .extract_with_context(&opentelemetry_032::Context::new(), &out);
    assert_eq!(otel_jaeger_read(&them), Some(c));
}

/// Header values: anything, or text built from the characters the formats use.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F:%3A+ -]{0,80}",
        "[0-9a-f]{0,33}-[0-9a-f]{0,17}(-[01dD]{0,2}(-[0-9a-f]{0,17})?)?",
        "[0-9a-fA-F]{0,33}(:|%3A|%3a)[0-9a-fA-F]{0,17}(:|%3A)[0-9a-f]{0,17}(:|%3A)[0-9a-fA-F%]{0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// No input makes extraction panic, and whatever is extracted is valid and remote.
    #[test]
    fn extraction_never_panics(
        b3 in value(),
        trace in value(),
        span in value(),
        parent in value(),
        sampled in value(),
        flags in value(),
        uber in value(),
        baggage in proptest::collection::vec(("[a-zA-Z0-9 _-]{0,12}", value()), 0..8),
        present in any::<u8>(),
    ) {
        let mut h = Headers::new();
        for (i, (k, v)) in [
            ("b3", b3),
            ("x-b3-traceid", trace),
            ("x-b3-spanid", span),
            ("x-b3-parentspanid", parent),
            ("x-b3-sampled", sampled),
            ("x-b3-flags", flags),
            ("uber-trace-id", uber),
        ]
        .into_iter()
        .enumerate()
        {
            if present & (1 << (i % 8)) != 0 || i == 6 {
                h.insert(k.to_string(), v);
            }
        }
        for (k, v) in baggage {
            h.insert(format!("uberctx-{k}"), v);
        }
        // The same headers as an HTTP server receives them (those that are valid headers).
        let mut hm = http::HeaderMap::new();
        for (k, v) in &h {
            if let (Ok(k), Ok(v)) = (
                http::header::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                hm.append(k, v);
            }
        }
        let (all, _) = propagator_from_names("tracecontext,baggage,b3,b3multi,jaeger");
        for (p, carrier) in [
            &B3Propagator::single() as &dyn TextMapPropagator,
            &B3Propagator::multi(),
            &JaegerPropagator::new(),
            &all,
        ]
        .into_iter()
        .flat_map(|p| [(p, &h as &dyn ferrotrace::propagation::Extractor), (p, &hm)])
        {
            let cx = p.extract_with_context(&Context::new(), carrier);
            let sc = cx.span_context();
            if sc.trace_id().is_valid() || sc.span_id().is_valid() {
                prop_assert!(sc.is_valid() && sc.is_remote());
            }
            // Whatever was extracted can be injected again.
            let mut out = Headers::new();
            p.inject_context(&cx, &mut out);
            let mut hm = http::HeaderMap::new();
            p.inject_context(&cx, &mut hm);
        }
    }

    /// What we inject, opentelemetry-rust reads as we meant it, and so do we.
    #[test]
    fn injected_headers_read_back_everywhere(
        trace in 1u128..,
        span in 1u64..,
        sampled in any::<bool>(),
        debug in any::<bool>(),
        deferred in any::<bool>(),
    ) {
        let c = carried(trace, span, sampled, debug, deferred);
        let cx = our_cx(c);
        for (our, theirs) in [
            (B3Propagator::single(), OtelB3::with_encoding(OtelB3Encoding::SingleHeader)),
            (B3Propagator::multi(), OtelB3::with_encoding(OtelB3Encoding::MultipleHeader)),
        ] {
            let mut h = Headers::new();
            our.inject_context(&cx, &mut h);
            prop_assert_eq!(ours(&our.extract_with_context(&Context::new(), &h)), Some(c));
            let back = theirs.extract_with_context(&opentelemetry::Context::new(), &h);
            prop_assert_eq!(otel_b3_read(&back), Some(c));
        }
        let mut h = Headers::new();
        JaegerPropagator::new().inject_context(&cx, &mut h);
        let back = opentelemetry_jaeger_propagator::Propagator::new()
            .extract_with_context(&opentelemetry_032::Context::new(), &h);
        prop_assert_eq!(otel_jaeger_read(&back), Some(Carried { deferred: false, ..c }));
    }
}
