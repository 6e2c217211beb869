//! Samplers: ratio within a statistical bound, consistency across rates,
//! exact agreement with opentelemetry_sdk's TraceIdRatioBased, parent-based delegates.

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::sampler::trace_id_ratio_sampled;
use ferrotrace::trace::{ParentBased, Sampler, TracerProvider};
use ferrotrace::{Context, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::ShouldSample as _;

#[test]
fn ratio_within_statistical_bound_over_100k_ids() {
    const N: usize = 100_000;
    for ratio in [0.01, 0.1, 0.25, 0.5, 0.9] {
        let kept = (0..N)
            .filter(|_| trace_id_ratio_sampled(&ferrotrace::ids::new_trace_id().to_bytes(), ratio))
            .count();
        let expected = N as f64 * ratio;
        let sigma = (N as f64 * ratio * (1.0 - ratio)).sqrt();
        assert!(
            (kept as f64 - expected).abs() < 5.0 * sigma,
            "ratio {ratio}: kept {kept}, expected {expected} ± {}",
            5.0 * sigma
        );
    }
    assert!(trace_id_ratio_sampled(&[0xff; 16], 1.0));
    assert!(!trace_id_ratio_sampled(&[0; 16], 0.0));
    assert!(!trace_id_ratio_sampled(&[0; 16], -1.0));
    assert!(!trace_id_ratio_sampled(&[0; 16], f64::NAN));
}

#[test]
fn decisions_are_consistent_across_rates() {
    let rates = [0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.99, 1.0];
    for _ in 0..20_000 {
        let id = ferrotrace::ids::new_trace_id().to_bytes();
        let mut kept_below = false;
        for r in rates {
            let kept = trace_id_ratio_sampled(&id, r);
            assert!(
                !kept_below || kept,
                "kept at a lower rate but dropped at {r}"
            );
            kept_below |= kept;
        }
    }
}

#[test]
fn agrees_with_opentelemetry_sdk_exactly() {
    for ratio in [0.0, 0.001, 0.1, 0.3333, 0.5, 0.75, 0.999999, 1.0] {
        let otel = opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio);
        for i in 0..20_000u64 {
            let id = if i < 4 {
                // Edge ids around the threshold and the extremes.
                [[0u8; 16], [0xff; 16], [0x80; 16], [0x7f; 16]][i as usize]
            } else {
                ferrotrace::ids::new_trace_id().to_bytes()
            };
            let r = otel.should_sample(
                None,
                opentelemetry::trace::TraceId::from_bytes(id),
                "n",
                &opentelemetry::trace::SpanKind::Internal,
                &[],
                &[],
            );
            let theirs = r.decision == opentelemetry_sdk::trace::SamplingDecision::RecordAndSample;
            assert_eq!(
                trace_id_ratio_sampled(&id, ratio),
                theirs,
                "ratio {ratio} id {id:x?}"
            );
        }
    }
}

fn parent(remote: bool, sampled: bool) -> Context {
    Context::new().with_span_context(SpanContext::new(
        TraceId::from_bytes([1; 16]),
        SpanId::from_bytes([1; 8]),
        TraceFlags::default().with_sampled(sampled),
        remote,
        TraceState::NONE,
    ))
}

#[test]
fn parent_based_uses_the_right_delegate() {
    let sampler: Sampler = ParentBased::new(Sampler::AlwaysOff)
        .with_remote_parent_sampled(Sampler::AlwaysOff)
        .with_remote_parent_not_sampled(Sampler::AlwaysOn)
        .with_local_parent_sampled(Sampler::AlwaysOn)
        .with_local_parent_not_sampled(Sampler::AlwaysOn)
        .into();
    let exp = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exp.clone())
        .with_sampler(sampler)
        .with_unended_span_age(None)
        .build();
    let t = provider.tracer("t");
    assert!(!t.span_builder("root").as_root().start().is_recording());
    assert!(!t
        .start_with_context("rs", &parent(true, true))
        .is_recording());
    assert!(t
        .start_with_context("rn", &parent(true, false))
        .is_recording());
    assert!(t
        .start_with_context("ls", &parent(false, true))
        .is_recording());
    assert!(t
        .start_with_context("ln", &parent(false, false))
        .is_recording());

    let default = TracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_sampler(Sampler::default())
        .build();
    let t = default.tracer("t");
    assert!(t
        .start_with_context("a", &parent(true, true))
        .is_recording());
    assert!(!t
        .start_with_context("b", &parent(true, false))
        .is_recording());
    assert!(t.span_builder("c").as_root().start().is_recording());
}

#[test]
fn from_config_names() {
    assert!(matches!(
        Sampler::from_config("always_off", None),
        Sampler::AlwaysOff
    ));
    assert!(matches!(
        Sampler::from_config("always_on", None),
        Sampler::AlwaysOn
    ));
    assert!(matches!(
        Sampler::from_config("traceidratio", Some("0.5")),
        Sampler::TraceIdRatioBased(r) if r == 0.5
    ));
    assert!(matches!(
        Sampler::from_config("traceidratio", Some("2")),
        Sampler::TraceIdRatioBased(r) if r == 1.0
    ));
    match Sampler::from_config("parentbased_traceidratio", Some("0.1")) {
        Sampler::ParentBased(p) => {
            assert!(matches!(p.root, Sampler::TraceIdRatioBased(r) if r == 0.1))
        }
        other => panic!("{other:?}"),
    }
}
