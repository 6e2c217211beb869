//! The mergeable latency sketch every rollup row carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Relative accuracy of [`LatencySketch`] quantiles (1%).
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;

/// A mergeable latency sketch with bounded relative error (DDSketch-style
/// logarithmic buckets). Values are nanoseconds; every value carries a weight,
/// its adjusted count (see [`weight`](super::weight)), so the quantiles estimate the
/// unsampled traffic. Merging is exact up to floating-point addition: the
/// sketch of two batches merged equals the sketch of both batches observed at
/// once. Stored as JSON by every sink; sketches stored with integer counts
/// (before weights) read back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySketch {
    /// Bucket index → weight. Index `i` holds values in `(γ^(i-1), γ^i]`.
    pub buckets: BTreeMap<i32, f64>,
    /// Weight of zero values.
    pub zeros: f64,
    /// Total weight.
    pub count: f64,
    /// Weighted sum of values (ns), for averages.
    pub sum: f64,
    /// Smallest value seen.
    pub min: u64,
    /// Largest value seen.
    pub max: u64,
}

fn gamma() -> f64 {
    (1.0 + SKETCH_RELATIVE_ACCURACY) / (1.0 - SKETCH_RELATIVE_ACCURACY)
}

impl LatencySketch {
    /// Records one value (ns) with weight 1.
    pub fn add(&mut self, v: u64) {
        self.add_weighted(v, 1.0)
    }

    /// Records one value (ns) standing for `weight` values (its adjusted
    /// count). A weight that is not finite and positive is ignored.
    pub fn add_weighted(&mut self, v: u64, weight: f64) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        if self.count == 0.0 || v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        self.count += weight;
        self.sum += v as f64 * weight;
        if v == 0 {
            self.zeros += weight;
        } else {
            let idx = ((v as f64).ln() / gamma().ln()).ceil() as i32;
            *self.buckets.entry(idx).or_insert(0.0) += weight;
        }
    }

    /// Merges another sketch into this one.
    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count <= 0.0 {
            return;
        }
        if self.count <= 0.0 || other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.zeros += other.zeros;
        for (i, c) in &other.buckets {
            *self.buckets.entry(*i).or_insert(0.0) += c;
        }
    }

    /// Weighted average (ns); 0 when empty.
    pub fn mean(&self) -> u64 {
        if self.count <= 0.0 {
            0
        } else {
            (self.sum / self.count) as u64
        }
    }

    /// The weighted `q`-quantile (`q` in `[0, 1]`): the smallest value whose
    /// cumulative weight reaches `q` × the total weight (with weight 1 per
    /// value, the nearest rank), within the relative accuracy, clamped to the
    /// observed min/max; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count <= 0.0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = q * self.count;
        if self.zeros > 0.0 && rank <= self.zeros {
            return 0;
        }
        let mut seen = self.zeros;
        let g = gamma();
        for (i, c) in &self.buckets {
            seen += c;
            if seen >= rank && *c > 0.0 {
                let v = 2.0 * g.powi(*i) / (g + 1.0);
                return (v.round() as u64).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_quantiles_within_relative_accuracy() {
        let mut s = LatencySketch::default();
        for v in 1..=10_000u64 {
            s.add(v * 1000);
        }
        for q in [0.5, 0.95, 0.99] {
            let exact = (q * 10_000.0_f64).ceil() * 1000.0;
            let got = s.quantile(q) as f64;
            assert!(
                (got - exact).abs() / exact <= SKETCH_RELATIVE_ACCURACY + 1e-9,
                "q={q} got={got} exact={exact}"
            );
        }
        assert_eq!(s.mean(), 5_000_500);
    }

    #[test]
    fn merge_equals_single_sketch() {
        let (mut a, mut b, mut all) = (
            LatencySketch::default(),
            LatencySketch::default(),
            LatencySketch::default(),
        );
        for v in 0..500u64 {
            a.add(v * 7);
            all.add(v * 7);
        }
        for v in 0..300u64 {
            b.add(v * 13 + 5);
            all.add(v * 13 + 5);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }
}
