//! Consistent probability sampling (OpenTelemetry tracestate `th`/`rv`): the
//! specification's threshold vectors, the sampled fraction within a
//! statistical bound, parent-based propagation of `th`, `rv`, hostile `ot`
//! entries, and the W3C Level 2 random flag through `traceparent`.

use std::collections::HashMap;

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::propagation::{TextMapPropagator, TraceContextPropagator};
use ferrotrace::trace::consistent::{OtState, Randomness, Threshold};
use ferrotrace::trace::{ConsistentProbability, Sampler, TracerProvider};
use ferrotrace::{Context, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use proptest::prelude::*;

/// The table of the specification ("Converting floating-point probability
/// to threshold value"), precisions 3, 4 and 5.
#[test]
fn threshold_encoding_matches_the_specification_table() {
    let table: &[(f64, [&str; 3])] = &[
        (1.0, ["0", "0", "0"]),
        (0.5, ["8", "8", "8"]),
        (1.0 / 3.0, ["aab", "aaab", "aaaab"]),
        (0.25, ["c", "c", "c"]),
        (0.2, ["ccd", "cccd", "ccccd"]),
        (0.125, ["e", "e", "e"]),
        (0.1, ["e66", "e666", "e6666"]),
        (0.0625, ["f", "f", "f"]),
        (0.01, ["fd71", "fd70a", "fd70a4"]),
        (0.001, ["ffbe7", "ffbe77", "ffbe76d"]),
        (0.0001, ["fff972", "fff9724", "fff97247"]),
        (0.00001, ["ffff584", "ffff583a", "ffff583a5"]),
        (0.000001, ["ffffef4", "ffffef39", "ffffef391"]),
    ];
    for (p, want) in table {
        for (i, precision) in [3, 4, 5].into_iter().enumerate() {
            let t = Threshold::from_probability_with_precision(*p, precision).unwrap();
            assert_eq!(t.to_th(), want[i], "p={p} precision={precision}");
            // Round trip through the th encoding.
            assert_eq!(Threshold::parse_th(&t.to_th()).unwrap(), t);
        }
    }
    // Default precision is 4.
    assert_eq!(Threshold::from_probability(0.01).unwrap().to_th(), "fd70a");
    // Decoding: extend with trailing zeros to 14 digits.
    let half = Threshold::parse_th("8").unwrap();
    assert_eq!(half.to_u64(), 0x80_0000_0000_0000);
    assert_eq!(half.probability(), 0.5);
    assert_eq!(half.adjusted_count(), 2.0);
    assert_eq!(Threshold::parse_th("0").unwrap().adjusted_count(), 1.0);
    assert_eq!(Threshold::parse_th("c").unwrap().adjusted_count(), 4.0);
    // Extremes: the smallest probability, and out-of-range inputs.
    let min = Threshold::from_probability(1.0 / (1u64 << 56) as f64).unwrap();
    assert_eq!(min.to_th(), "ffffffffffffff");
    for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY, 1e-20] {
        assert!(Threshold::from_probability(bad).is_err(), "{bad}");
    }
    for bad in ["", "g", "123456789012345", " 8", "8 ", "-1", "+8", "0x8"] {
        assert!(Threshold::parse_th(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn randomness_is_the_low_56_bits_or_rv() {
    let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    assert_eq!(
        Randomness::from_trace_id(id).to_u64(),
        0xce929d0e0e4736,
        "the right-most 7 bytes"
    );
    assert_eq!(
        Randomness::parse_rv("7479cfb506891d").unwrap().to_u64(),
        0x7479cfb506891d
    );
    for bad in ["7479cfb506891", "7479cfb506891dd", "7479cfb50689zz", ""] {
        assert!(Randomness::parse_rv(bad).is_err(), "{bad:?}");
    }
}

fn provider(sampler: Sampler) -> (TracerProvider, InMemorySpanExporter) {
    let exp = InMemorySpanExporter::default();
    let p = TracerProvider::builder()
        .with_simple_exporter(exp.clone())
        .with_sampler(sampler)
        .with_unended_span_age(None)
        .build();
    (p, exp)
}

/// Over N new roots the kept count is Binomial(N, p) where p is the
/// threshold's exact probability; |kept - Np| < 5σ fails by chance with
/// probability below 10^-6 per rate.
#[test]
fn sampled_fraction_is_within_five_sigma_and_th_is_recorded() {
    const N: usize = 100_000;
    for p in [0.01, 0.1, 0.25, 1.0 / 3.0, 0.5, 0.9] {
        let sampler = ConsistentProbability::new(p);
        let t = sampler.threshold().unwrap();
        let exact = t.probability();
        let (provider, exp) = provider(Sampler::ConsistentProbability(sampler));
        let tracer = provider.tracer("t");
        let mut kept = 0usize;
        for _ in 0..N {
            let span = tracer.span_builder("s").as_root().start();
            let sc = span.span_context().clone();
            assert!(sc.trace_flags().is_random());
            // The decision is exactly the threshold rule on the trace id.
            let expected = Randomness::from_trace_id(sc.trace_id()).to_u64() >= t.to_u64();
            assert_eq!(sc.is_sampled(), expected);
            if sc.is_sampled() {
                kept += 1;
                assert_eq!(sc.trace_state().header(), format!("ot=th:{}", t.to_th()));
            } else {
                assert!(sc.trace_state().is_empty(), "no th on a dropped span");
            }
        }
        let mean = N as f64 * exact;
        let sigma = (N as f64 * exact * (1.0 - exact)).sqrt();
        assert!(
            (kept as f64 - mean).abs() < 5.0 * sigma,
            "p={p}: kept {kept}, expected {mean:.0} ± {:.0}",
            5.0 * sigma
        );
        assert_eq!(exp.finished_spans().len(), kept);
    }
}

#[test]
fn consistent_across_rates_for_the_same_trace() {
    let rates = [0.001, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0];
    for _ in 0..20_000 {
        let r = Randomness::from_trace_id(ferrotrace::ids::new_trace_id());
        let mut kept_below = false;
        for p in rates {
            let kept = Threshold::from_probability(p).unwrap().keeps(r);
            assert!(
                !kept_below || kept,
                "kept at a lower rate but dropped at {p}"
            );
            kept_below |= kept;
        }
    }
}

/// A trace id whose randomness is `r` (56 bits).
fn trace_with_randomness(r: u64) -> TraceId {
    let mut b = [0x11u8; 16];
    b[9..].copy_from_slice(&r.to_be_bytes()[1..]);
    TraceId::from_bytes(b)
}

fn remote_parent(trace_id: TraceId, sampled: bool, random: bool, ts: &str) -> Context {
    Context::new().with_span_context(SpanContext::new(
        trace_id,
        SpanId::from_bytes([2; 8]),
        TraceFlags::default()
            .with_sampled(sampled)
            .with_random(random),
        true,
        TraceState::from_header(ts).unwrap(),
    ))
}

fn child_state(sampler: Sampler, parent: &Context) -> (bool, String) {
    let (provider, _exp) = provider(sampler);
    let span = provider.tracer("t").start_with_context("child", parent);
    let sc = span.span_context();
    (sc.is_sampled(), sc.trace_state().header())
}

#[test]
fn parent_based_children_keep_a_consistent_parent_threshold() {
    let high = trace_with_randomness(0xc0_0000_0000_0000);
    let low = trace_with_randomness(0x10_0000_0000_0000);
    let pb = || Sampler::parent_based(Sampler::consistent_probability(0.01));
    // Sampled at 50%, randomness above the threshold: the child keeps th:8
    // (not its own root rate) and the other members.
    assert_eq!(
        child_state(
            pb(),
            &remote_parent(high, true, true, "ot=th:8;foo:bar,congo=x")
        ),
        (true, "ot=th:8;foo:bar,congo=x".into())
    );
    // Inconsistent (randomness below th): sampled, threshold erased, other sub-keys kept.
    assert_eq!(
        child_state(
            pb(),
            &remote_parent(low, true, true, "ot=th:8;foo:bar,congo=x")
        ),
        (true, "ot=foo:bar,congo=x".into())
    );
    // Only th in the entry: the entry goes.
    assert_eq!(
        child_state(pb(), &remote_parent(low, true, true, "congo=x,ot=th:8")),
        (true, "congo=x".into())
    );
    // An unsampled parent with a threshold: not sampled, threshold erased.
    assert_eq!(
        child_state(pb(), &remote_parent(high, false, true, "ot=th:8")),
        (false, "".into())
    );
    // A sampled parent without th: no threshold appears.
    assert_eq!(
        child_state(pb(), &remote_parent(high, true, true, "congo=x")),
        (true, "congo=x".into())
    );
    // A malformed th is erased, the rest kept.
    assert_eq!(
        child_state(pb(), &remote_parent(high, true, true, "ot=th:xyz;k:v")),
        (true, "ot=k:v".into())
    );
    // explicit rv wins over the trace id: low trace-id randomness, rv high.
    assert_eq!(
        child_state(
            pb(),
            &remote_parent(low, true, true, "ot=th:8;rv:f0000000000000")
        ),
        (true, "ot=th:8;rv:f0000000000000".into())
    );
}

#[test]
fn independent_samplers_state_or_erase_their_threshold() {
    let high = trace_with_randomness(0xc0_0000_0000_0000);
    let low = trace_with_randomness(0x10_0000_0000_0000);
    // The consistent sampler replaces the parent's th with its own and moves ot first.
    assert_eq!(
        child_state(
            Sampler::consistent_probability(0.5),
            &remote_parent(high, true, true, "congo=x,ot=th:c;k:v")
        ),
        (true, "ot=th:8;k:v,congo=x".into())
    );
    // ... and erases it when it drops.
    assert_eq!(
        child_state(
            Sampler::consistent_probability(0.5),
            &remote_parent(low, true, true, "congo=x,ot=th:0;k:v")
        ),
        (false, "ot=k:v,congo=x".into())
    );
    // A drop with no th to erase leaves the parent's tracestate untouched (order included).
    assert_eq!(
        child_state(
            Sampler::consistent_probability(0.5),
            &remote_parent(low, true, true, "congo=x,ot=k:v")
        ),
        (false, "congo=x,ot=k:v".into())
    );
    // rv is used and propagated unchanged.
    assert_eq!(
        child_state(
            Sampler::consistent_probability(0.5),
            &remote_parent(low, true, true, "ot=rv:ffffffffffffff")
        ),
        (true, "ot=th:8;rv:ffffffffffffff".into())
    );
    // A malformed rv is ignored (the trace id decides) and dropped.
    assert_eq!(
        child_state(
            Sampler::consistent_probability(0.5),
            &remote_parent(high, true, true, "ot=rv:fff")
        ),
        (true, "ot=th:8".into())
    );
    // Without the random flag the trace id is presumed random (a warning is reported once).
    assert_eq!(
        child_state(
            Sampler::consistent_probability(0.5),
            &remote_parent(high, true, false, "")
        ),
        (true, "ot=th:8".into())
    );
    // AlwaysOn states probability 1 instead of the parent's threshold.
    assert_eq!(
        child_state(
            Sampler::AlwaysOn,
            &remote_parent(low, true, true, "ot=th:8")
        ),
        (true, "ot=th:0".into())
    );
    // The legacy ratio rule cannot state a threshold: it erases it.
    assert_eq!(
        child_state(
            Sampler::TraceIdRatioBased(1.0),
            &remote_parent(high, true, true, "ot=th:8,congo=x")
        ),
        (true, "congo=x".into())
    );
    assert_eq!(
        child_state(
            Sampler::AlwaysOff,
            &remote_parent(high, true, true, "ot=th:8")
        ),
        (false, "".into())
    );
    // Probability 1 records th:0 on a root; 0 keeps nothing.
    let (p, _) = provider(Sampler::consistent_probability(1.0));
    let root = p.tracer("t").span_builder("r").as_root().start();
    assert_eq!(root.span_context().trace_state().header(), "ot=th:0");
    let (p, _) = provider(Sampler::consistent_probability(0.0));
    assert!(!p.tracer("t").start("r").span_context().is_sampled());
}

#[test]
fn random_flag_round_trips_through_traceparent() {
    let prop = TraceContextPropagator::new();
    let (provider, _exp) = provider(Sampler::parent_based(Sampler::consistent_probability(1.0)));
    let tracer = provider.tracer("t");
    // A root the SDK generates sets sampled | random and records th:0.
    let root = tracer.span_builder("root").as_root().start();
    let mut out = HashMap::new();
    prop.inject_context(
        &Context::new().with_span_context(root.span_context().clone()),
        &mut out,
    );
    assert!(
        out["traceparent"].ends_with("-03"),
        "{}",
        out["traceparent"]
    );
    assert_eq!(out["tracestate"], "ot=th:0");
    // Incoming flags 03 / 01 come out unchanged on the child.
    for flags in ["03", "01"] {
        let mut inc = HashMap::new();
        inc.insert(
            "traceparent".to_string(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"),
        );
        inc.insert("tracestate".to_string(), "ot=th:0".to_string());
        let cx = prop.extract(&inc);
        let child = tracer.start_with_context("child", &cx);
        let mut out = HashMap::new();
        prop.inject_context(
            &Context::new().with_span_context(child.span_context().clone()),
            &mut out,
        );
        assert!(
            out["traceparent"].ends_with(&format!("-{flags}")),
            "{out:?}"
        );
        assert_eq!(out["tracestate"], "ot=th:0");
    }
}

#[test]
fn hostile_ot_values_are_handled() {
    let cases = [
        ("th:8;th:c", Some("8")),     // first occurrence wins
        ("th:8;;;", Some("8")),       // empty members skipped
        ("TH:8", None),               // uppercase key: malformed
        ("th:8:9", None),             // ':' in a value: malformed
        ("th:fffffffffffffff", None), // 15 digits
        ("th:", None),                // empty value
        (":8", None),                 // empty key
        ("th", None),                 // no ':'
        ("th:-8", None),              // sign
        ("th:8 ", None),              // space
        ("1th:8", None),              // key must start with a letter
    ];
    for (v, want) in cases {
        let ot = OtState::parse(v);
        assert_eq!(ot.th.map(|t| t.to_th()).as_deref(), want, "{v:?}");
    }
    let ot = OtState::parse("th:8;a:1;b:2;a:3;bad;rv:zz");
    assert_eq!(ot.malformed, 2);
    assert_eq!(ot.encode().as_deref(), Some("th:8;a:1;b:2"));
    // A long rest is cut so the value stays within 256 characters.
    let long: String = (0..60).map(|i| format!("k{i}:vvvv;")).collect();
    let mut ot = OtState::parse(&long);
    ot.th = Some(Threshold::parse_th("8").unwrap());
    let enc = ot.encode().unwrap();
    assert!(enc.len() <= 256 && enc.starts_with("th:8;"), "{enc}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any `ot` value: parsing never panics, the re-encoded value is valid
    /// W3C and within 256 characters, and parsing it again is stable.
    #[test]
    fn arbitrary_ot_values_never_panic(v in "[ -~]{0,300}") {
        let ot = OtState::parse(&v);
        if let Some(enc) = ot.encode() {
            prop_assert!(enc.len() <= 256);
            prop_assert!(ferrotrace::context::trace_state::valid_value(&enc), "{enc:?}");
            let again = OtState::parse(&enc);
            prop_assert_eq!(again.th, ot.th);
            prop_assert_eq!(again.rv, ot.rv);
            prop_assert_eq!(again.malformed, 0);
        }
    }

    /// Any tracestate header and flags on a remote parent: starting spans
    /// with every sampler never panics, a sampled span's th (if any) is
    /// consistent with its randomness, and a dropped span carries no th.
    #[test]
    fn arbitrary_parent_tracestate_never_panics(
        ts in "(ot=[a-z0-9:;._-]{0,40},)?[a-z]{1,3}=[a-z0-9]{1,4}(,ot=[ -+--~]{0,30})?",
        flags in 0u8..4,
        low in any::<u64>(),
    ) {
        let prop = TraceContextPropagator::new();
        let trace_id = trace_with_randomness(low & 0xff_ffff_ffff_ffff);
        let mut inc = HashMap::new();
        inc.insert("traceparent".to_string(), format!("00-{trace_id}-00f067aa0ba902b7-{flags:02x}"));
        inc.insert("tracestate".to_string(), ts);
        let cx = prop.extract(&inc);
        for sampler in [
            Sampler::parent_based(Sampler::consistent_probability(0.3)),
            Sampler::consistent_probability(0.3),
            Sampler::AlwaysOn,
            Sampler::AlwaysOff,
            Sampler::TraceIdRatioBased(0.5),
            Sampler::default(),
        ] {
            let (provider, _exp) = provider(sampler);
            let span = provider.tracer("t").start_with_context("s", &cx);
            let sc = span.span_context();
            let ot = OtState::of(sc.trace_state());
            if let Some(th) = ot.th {
                prop_assert!(sc.is_sampled(), "th on a dropped span");
                let r = ot.rv.unwrap_or_else(|| Randomness::from_trace_id(sc.trace_id()));
                prop_assert!(th.keeps(r), "inconsistent th kept");
            }
        }
    }
}
