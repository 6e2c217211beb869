//! `cold.policy`: which aging traces are kept in the cold tier.

use super::config::{ColdConfig, ColdPolicy};
use crate::model::{Span, TraceId};

/// True when policy `c` keeps trace `id`, whose stored spans are `spans`
/// (the whole trace as the hot store has it).
pub fn keeps(c: &ColdConfig, id: &TraceId, spans: &[Span]) -> bool {
    let slow_ns = c.slow_threshold_ms.saturating_mul(1_000_000);
    let error = || spans.iter().any(Span::is_error);
    let slow = || spans.iter().any(|s| s.duration_ns() >= slow_ns);
    match c.policy {
        ColdPolicy::All => true,
        ColdPolicy::Errors => error(),
        ColdPolicy::Slow => slow(),
        ColdPolicy::ErrorsOrSlow => error() || slow(),
        ColdPolicy::Sampled => sampled(id, c.sample_fraction),
    }
}

/// True when the policy needs each trace's spans (not only its id).
pub fn needs_spans(c: &ColdConfig) -> bool {
    !matches!(c.policy, ColdPolicy::All | ColdPolicy::Sampled)
}

/// A consistent decision on the trace id: its last 8 bytes (the random
/// part of a W3C trace id) as a fraction of the id space.
pub fn sampled(id: &TraceId, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[8..16]);
    let x = u64::from_be_bytes(b);
    // Scale in f64: exact enough at the fractions anyone configures.
    (x as f64) < fraction * (u64::MAX as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_consistent_and_near_the_fraction() {
        let mut kept = 0;
        for i in 0u64..10_000 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            let a = sampled(&id, 0.25);
            assert_eq!(a, sampled(&id, 0.25));
            kept += a as u32;
        }
        assert!((2_200..2_800).contains(&kept), "{kept}");
        assert!(sampled(&[0xff; 16], 1.0));
        assert!(!sampled(&[0x00; 16], 0.0));
    }
}
