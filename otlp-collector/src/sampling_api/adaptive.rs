//! Adaptive sampling rates: per service and operation, the probability that
//! keeps a target number of traces per second, computed from the observed
//! *adjusted* throughput (root spans weighted by their adjusted count, so the
//! estimate is of the unsampled traffic whatever the SDKs currently sample).
//!
//! Jaeger's adaptive sampler is the reference (per-operation probabilities
//! from observed throughput toward a target, recomputed periodically, with a
//! minimum probability). Where this one differs, on purpose:
//! - **A spike is answered in one period, without biasing steady rates.**
//!   A period whose rate is above the smoothed rate by more than 4 standard
//!   deviations of its sampling noise restarts the average at that rate, so
//!   a 10× spike lowers the probability at the first recomputation after a
//!   period of it; a significant fall at most halves the smoothed rate per
//!   period (a 10× drop is followed within three to four periods up to what
//!   the noise hides, and a one-period lull cannot flood the store); changes within the noise are averaged
//!   exponentially over `smoothing_periods`, so a steady operation's
//!   probability is unbiased (what the 1% accuracy goal needs).
//! - **Low-traffic operations are never starved.** An operation whose rate
//!   is under the target gets probability 1; one that stops sending has its
//!   smoothed rate decay, so its probability climbs back to 1 before it is
//!   forgotten; an operation never seen gets the service's probability,
//!   and the served strategy carries `defaultLowerBoundTracesPerSecond`.
//! - **A per-service ceiling** (`service_max_traces_per_second`) scales all of
//!   a service's operations down together when their kept traces would
//!   exceed it (never below `min_probability`).
//!
//! Only root spans are counted ([`ThroughputRecorder`](super::throughput::ThroughputRecorder)): the sampling decision of a trace is taken
//! where it starts, with the root's operation, which is what the SDK looks
//! up in `perOperationStrategies`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::limits::{SamplingApiConfigError, MAX_OPERATIONS_PER_SERVICE};

/// `[sampling_api.adaptive]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Compute and serve adaptive rates for services not pinned in
    /// `[sampling_api.services]` [default: false].
    pub enabled: bool,
    /// Traces per second to keep per operation [default: 1].
    pub target_traces_per_second: f64,
    /// Lowest probability ever served [default: 0.0001].
    pub min_probability: f64,
    /// Most traces per second a service's operations keep together; 0 for
    /// no ceiling [default: 0].
    pub service_max_traces_per_second: f64,
    /// How often rates are recomputed, in seconds [default: 10].
    pub interval_secs: u64,
    /// Periods the smoothed rate averages over (exponentially) [default: 6].
    pub smoothing_periods: u32,
    /// (service, operation) pairs tracked; more are not counted (and
    /// counted in `ferrotrace_sampling_adaptive_dropped_total`) [default: 10000].
    pub max_operations: usize,
    /// Where the counts come from: `local` (the root spans this collector
    /// receives) or `store` (every collector writes its counts per period
    /// into the shared store and computes from the sum, so all collectors
    /// on one store serve the same rates) [default: local].
    pub source: AdaptiveSource,
}

/// `[sampling_api.adaptive] source`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdaptiveSource {
    /// This collector's own root spans.
    #[default]
    Local,
    /// The sum over every collector writing to the same store, per period
    /// aligned to the wall clock.
    Store,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            enabled: false,
            target_traces_per_second: 1.0,
            min_probability: 0.0001,
            service_max_traces_per_second: 0.0,
            interval_secs: 10,
            smoothing_periods: 6,
            max_operations: 10_000,
            source: AdaptiveSource::Local,
        }
    }
}

impl AdaptiveConfig {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), SamplingApiConfigError> {
        let bad = |key: &str, why: &str| {
            Err(SamplingApiConfigError(format!(
                "sampling_api.adaptive.{key} {why}"
            )))
        };
        let t = self.target_traces_per_second;
        if !(t.is_finite() && t > 0.0 && t <= 1e6) {
            return bad(
                "target_traces_per_second",
                "must be above 0 and at most 1000000",
            );
        }
        let m = self.min_probability;
        if !(m.is_finite() && m > 0.0 && m <= 1.0) {
            return bad(
                "min_probability",
                "must be above 0 and at most 1 (e.g. 0.0001)",
            );
        }
        let c = self.service_max_traces_per_second;
        if !(c.is_finite() && (0.0..=1e9).contains(&c)) {
            return bad(
                "service_max_traces_per_second",
                "must be from 0 (no ceiling) to 1e9",
            );
        }
        if !(1..=3600).contains(&self.interval_secs) {
            return bad("interval_secs", "must be from 1 to 3600");
        }
        if !(1..=1000).contains(&self.smoothing_periods) {
            return bad("smoothing_periods", "must be from 1 to 1000");
        }
        if !(1..=1_000_000).contains(&self.max_operations) {
            return bad("max_operations", "must be from 1 to 1000000");
        }
        Ok(())
    }

    /// Periods a `source = "store"` recomputation replays from the store:
    /// four smoothing spans (older periods weigh under e^-4 ≈ 2% in the
    /// exponential average), at least 2, at most 240.
    pub fn window_periods(&self) -> u32 {
        (4 * self.smoothing_periods).clamp(2, 240)
    }
}

/// How many standard deviations of sampling noise a period's rate must rise
/// above the smoothed rate before it counts as a real rise (answered at
/// once). 4σ: a steady operation is taken for a spike in under 1 period in
/// 10,000, so the served probability stays unbiased.
const SPIKE_SIGMAS: f64 = 4.0;

#[derive(Clone, Debug)]
struct OpState {
    /// Exponentially smoothed traces per second.
    smoothed: f64,
    /// Traces per second over the last period.
    last: f64,
    /// Periods in a row without a root span.
    idle: u32,
    /// The probability computed for the operation at the last period (what
    /// its SDKs sampled with during this one, when they follow the served
    /// strategy): how many traces a period's estimate rests on.
    p: f64,
}

/// The probabilities of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRates {
    /// For operations not listed, and for clients without per-operation
    /// support: the service's overall kept fraction.
    pub probability: f64,
    /// Per operation.
    pub operations: BTreeMap<String, f64>,
}

/// The recomputation: smoothed rates per operation, turned into probabilities.
///
/// The rate an operation's probability answers is its smoothed rate, except
/// after a period whose rate rose significantly above it (more than
/// `SPIKE_SIGMAS` standard deviations of the sampling noise of a period's
/// estimate, which rests on about `rate × period × p` kept traces): then the
/// smoothed rate restarts at that period's rate, so a 10× spike is answered
/// at the first recomputation after one period of it. A significant fall
/// at most halves the smoothed rate per period (a 10× drop is followed in
/// three to four periods, then what is left within the noise is averaged
/// out), so a one-period lull cannot make the next period keep more than
/// twice the target. Changes within the noise are averaged
/// (exponentially, over `smoothing_periods`).
/// Taking `max(last, smoothed)` every period, as the first version did,
/// answers spikes as fast but biases every steady operation's probability
/// down by a fraction of the per-period noise (~5% at 50 kept traces per
/// period), and followed falls only as the average decayed (~37 periods to
/// come within 1% after a 10× drop); the 1% accuracy goal allows neither.
///
/// Deterministic: the same sequence of period counts gives bit-identical
/// probabilities in every process (ordered maps, so floating-point sums run
/// in the same order everywhere). `source = "store"` relies on it: each
/// collector replays the same stored periods through a fresh engine.
#[derive(Debug)]
pub struct AdaptiveEngine {
    cfg: AdaptiveConfig,
    ops: BTreeMap<(String, String), OpState>,
}

impl AdaptiveEngine {
    /// An engine with no history.
    pub fn new(cfg: AdaptiveConfig) -> AdaptiveEngine {
        AdaptiveEngine {
            cfg,
            ops: BTreeMap::new(),
        }
    }

    /// A fresh engine fed `periods` (oldest first, each `period_secs` long,
    /// an empty map for a period without roots); the rates after the last,
    /// and the operations tracked.
    pub fn replay(
        cfg: AdaptiveConfig,
        periods: impl IntoIterator<Item = BTreeMap<(String, String), f64>>,
        period_secs: f64,
    ) -> (BTreeMap<String, ServiceRates>, usize) {
        let mut e = AdaptiveEngine::new(cfg);
        for counts in periods {
            e.fold(counts, period_secs);
        }
        (e.rates(), e.tracked())
    }

    /// Operations tracked now.
    pub fn tracked(&self) -> usize {
        self.ops.len()
    }

    /// Folds one period's adjusted counts (`period_secs` long) into the
    /// smoothed rates and returns every service's probabilities.
    pub fn recompute(
        &mut self,
        counts: impl IntoIterator<Item = ((String, String), f64)>,
        period_secs: f64,
    ) -> BTreeMap<String, ServiceRates> {
        self.fold(counts, period_secs);
        self.rates()
    }

    /// Folds one period's counts into the smoothed rates and recomputes each
    /// operation's probability. Counts should come in a deterministic order
    /// (a `BTreeMap`) where several processes must agree: when
    /// `max_operations` is reached, the first ones win.
    pub fn fold(
        &mut self,
        counts: impl IntoIterator<Item = ((String, String), f64)>,
        period_secs: f64,
    ) {
        let alpha = 1.0 / self.cfg.smoothing_periods as f64;
        let period = period_secs.max(1e-3);
        for st in self.ops.values_mut() {
            st.last = 0.0;
        }
        for (key, n) in counts {
            let rate = n / period;
            let full = self.ops.len() >= self.cfg.max_operations;
            match self.ops.get_mut(&key) {
                Some(st) => {
                    st.last = rate;
                    st.idle = 0;
                }
                None if !full => {
                    // First sight: no history to smooth with; `smoothed`
                    // starts at this rate below (a rise from zero).
                    self.ops.insert(
                        key,
                        OpState {
                            smoothed: 0.0,
                            last: rate,
                            idle: 0,
                            p: 1.0,
                        },
                    );
                }
                None => {}
            }
        }
        // Smooth; forget operations idle for a while whose rate has decayed
        // under the target (so the last probability served for them was 1).
        let forget_after = 4 * self.cfg.smoothing_periods;
        let target = self.cfg.target_traces_per_second;
        self.ops.retain(|_, st| {
            // Under the target before this period: probability 1 was served.
            let served_one = st.smoothed <= target;
            match significant_change(st, period) {
                Change::Rise => st.smoothed = st.last,
                Change::Fall => st.smoothed = st.last.max(st.smoothed / 2.0),
                Change::Noise => st.smoothed += alpha * (st.last - st.smoothed),
            }
            if st.last == 0.0 {
                st.idle += 1;
            }
            st.idle <= forget_after || !served_one
        });
        // The probabilities served from now on (the next period's noise
        // rests on them).
        for (key, p) in self.per_operation() {
            if let Some(st) = self.ops.get_mut(&key) {
                st.p = p;
            }
        }
    }

    /// Every operation's probability from the smoothed rates, after the
    /// per-service ceiling, in key order.
    fn per_operation(&self) -> Vec<((String, String), f64)> {
        let target = self.cfg.target_traces_per_second;
        let min_p = self.cfg.min_probability;
        let ceiling = self.cfg.service_max_traces_per_second;
        let mut out = Vec::with_capacity(self.ops.len());
        let mut i = 0;
        let ops: Vec<(&(String, String), &OpState)> = self.ops.iter().collect();
        while i < ops.len() {
            // One service's operations are adjacent in key order.
            let service = &ops[i].0 .0;
            let mut j = i;
            while j < ops.len() && &ops[j].0 .0 == service {
                j += 1;
            }
            let mut ps: Vec<f64> = ops[i..j]
                .iter()
                .map(|(_, st)| {
                    let rate = st.smoothed;
                    if rate <= target {
                        1.0
                    } else {
                        (target / rate).clamp(min_p, 1.0)
                    }
                })
                .collect();
            if ceiling > 0.0 {
                let kept: f64 = ops[i..j]
                    .iter()
                    .zip(&ps)
                    .map(|((_, st), p)| st.smoothed * p)
                    .sum();
                if kept > ceiling {
                    let scale = ceiling / kept;
                    for p in &mut ps {
                        *p = (*p * scale).clamp(min_p, 1.0);
                    }
                }
            }
            out.extend(
                ops[i..j]
                    .iter()
                    .zip(ps)
                    .map(|((k, _), p)| ((*k).clone(), p)),
            );
            i = j;
        }
        out
    }

    /// Every tracked service's probabilities now.
    pub fn rates(&self) -> BTreeMap<String, ServiceRates> {
        let min_p = self.cfg.min_probability;
        let mut by_service: BTreeMap<String, Vec<(String, f64, f64)>> = BTreeMap::new();
        for ((service, op), st) in &self.ops {
            by_service
                .entry(service.clone())
                .or_default()
                .push((op.clone(), st.smoothed, st.p));
        }
        by_service
            .into_iter()
            .map(|(service, mut ops)| {
                let total: f64 = ops.iter().map(|(_, r, _)| r).sum();
                let kept: f64 = ops.iter().map(|(_, r, p)| r * p).sum();
                let probability = if total > 0.0 {
                    (kept / total).clamp(min_p, 1.0)
                } else {
                    1.0
                };
                // Jaeger's clients and the SDK keep at most 2000 operations:
                // serve the busiest (ties in name order).
                ops.sort_by(|a, b| b.1.total_cmp(&a.1));
                ops.truncate(MAX_OPERATIONS_PER_SERVICE);
                let operations = ops.into_iter().map(|(op, _, p)| (op, p)).collect();
                (
                    service,
                    ServiceRates {
                        probability,
                        operations,
                    },
                )
            })
            .collect()
    }
}

/// How a period's rate compares with the smoothed one.
enum Change {
    /// Above it by more than `SPIKE_SIGMAS` standard deviations.
    Rise,
    /// Below it by more than `SPIKE_SIGMAS` standard deviations.
    Fall,
    /// Within the sampling noise.
    Noise,
}

/// Whether the last period's rate moved away from the smoothed one by more
/// than `SPIKE_SIGMAS` standard deviations of its sampling noise. The
/// estimate of a period rests on about `smoothed × period × p` kept traces
/// if the rate did not change (relative noise `1/sqrt(kept)`); an operation
/// first seen (smoothed 0) always rises.
fn significant_change(st: &OpState, period: f64) -> Change {
    let kept = st.smoothed * period * st.p;
    if st.last > st.smoothed {
        if kept < 1.0 || st.last > st.smoothed * (1.0 + SPIKE_SIGMAS / kept.sqrt()) {
            return Change::Rise;
        }
    } else if kept >= 1.0 && st.last < st.smoothed * (1.0 - SPIKE_SIGMAS / kept.sqrt()) {
        return Change::Fall;
    }
    Change::Noise
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg() -> AdaptiveConfig {
        AdaptiveConfig {
            enabled: true,
            target_traces_per_second: 10.0,
            min_probability: 0.001,
            ..Default::default()
        }
    }

    fn counts(v: &[(&str, &str, f64)]) -> HashMap<(String, String), f64> {
        v.iter()
            .map(|(s, o, n)| ((s.to_string(), o.to_string()), *n))
            .collect()
    }

    #[test]
    fn probability_keeps_the_target_and_low_traffic_keeps_everything() {
        let mut e = AdaptiveEngine::new(cfg());
        // 10 s periods: hot at 1000/s, cold at 0.5/s.
        let r = e.recompute(counts(&[("s", "hot", 10_000.0), ("s", "cold", 5.0)]), 10.0);
        assert!((r["s"].operations["hot"] - 0.01).abs() < 1e-12);
        assert_eq!(r["s"].operations["cold"], 1.0);
        // Kept: 10/s + 0.5/s out of 1000.5/s.
        assert!((r["s"].probability - 10.5 / 1000.5).abs() < 1e-9);
    }

    #[test]
    fn a_spike_is_answered_in_one_period_and_a_drop_within_a_few() {
        let mut e = AdaptiveEngine::new(cfg());
        for _ in 0..10 {
            e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0); // 100/s
        }
        let r = e.recompute(counts(&[("s", "op", 10_000.0)]), 10.0); // 1000/s
        assert!((r["s"].operations["op"] - 0.01).abs() < 1e-12, "{r:?}");
        // Back to 100/s: the smoothed rate still remembers the spike.
        let r = e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0);
        let p = r["s"].operations["op"];
        assert!(p > 0.01 && p < 0.1, "{p}");
        assert!((p - 0.02).abs() < 1e-12, "halved: {p}");
        // Halving while the fall is beyond the noise (250, 125), then the
        // remaining 25% (under 4σ of ~100 kept traces) is averaged out.
        for _ in 0..2 {
            e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0);
        }
        let r = e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0);
        let p = r["s"].operations["op"];
        assert!(p > 0.08 && p < 0.09, "{p}");
        for _ in 0..20 {
            e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0);
        }
        let r = e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0);
        assert!((r["s"].operations["op"] - 0.1).abs() < 1e-3, "{r:?}");
    }

    #[test]
    fn noise_within_the_sampling_error_is_averaged_not_chased() {
        // 100/s ± 20% (about 100 kept traces a period at p = 0.1, so 4σ is
        // 40%): the average is never restarted, so the served probability
        // stays near target / mean and its mean is unbiased, where chasing
        // the larger of the last period and the average was ~8% low.
        let mut e = AdaptiveEngine::new(cfg());
        let mut sum = 0.0;
        for i in 0..200 {
            let n = if i % 2 == 0 { 800.0 } else { 1_200.0 };
            let r = e.recompute(counts(&[("s", "op", n)]), 10.0);
            if i >= 50 {
                let p = r["s"].operations["op"];
                assert!((p - 0.1).abs() < 0.01, "period {i}: {p}");
                sum += p;
            }
        }
        let mean = sum / 150.0;
        assert!((mean - 0.1).abs() < 0.001, "{mean}");
    }

    #[test]
    fn silent_operations_recover_then_are_forgotten() {
        let mut e = AdaptiveEngine::new(cfg());
        e.recompute(counts(&[("s", "op", 100_000.0)]), 10.0); // 10000/s
        let mut last = 0.0;
        let mut periods = 0;
        loop {
            let r = e.recompute(HashMap::new(), 10.0);
            let Some(p) = r.get("s").map(|s| s.operations["op"]) else {
                break;
            };
            assert!(p >= last, "period {periods}: {p} < {last}");
            last = p;
            periods += 1;
            assert!(periods < 200, "never forgotten");
        }
        // Served 1 before being forgotten: the smoothed rate halves each
        // period (10000 / 2^10 <= 10: probability 1 from the 10th), and the
        // operation goes once idle for more than 4 × 6 periods.
        assert_eq!(last, 1.0);
        assert_eq!(periods, 24);
        assert_eq!(e.tracked(), 0);
    }

    #[test]
    fn service_ceiling_and_minimum_probability() {
        let mut e = AdaptiveEngine::new(AdaptiveConfig {
            service_max_traces_per_second: 5.0,
            ..cfg()
        });
        // Two ops at 100/s each would keep 10/s each: 20/s > 5/s.
        let r = e.recompute(counts(&[("s", "a", 1_000.0), ("s", "b", 1_000.0)]), 10.0);
        for op in ["a", "b"] {
            assert!((r["s"].operations[op] - 0.025).abs() < 1e-12);
        }
        let mut e = AdaptiveEngine::new(cfg());
        let r = e.recompute(counts(&[("s", "flood", 1e12)]), 1.0);
        assert_eq!(r["s"].operations["flood"], 0.001);
    }

    #[test]
    fn engine_is_bounded() {
        let mut e = AdaptiveEngine::new(AdaptiveConfig {
            max_operations: 1,
            ..cfg()
        });
        e.recompute(counts(&[("s", "a", 1.0), ("s", "b", 1.0)]), 1.0);
        assert_eq!(e.tracked(), 1);
    }

    #[test]
    fn config_ranges_name_the_key() {
        AdaptiveConfig::default().validate().unwrap();
        for (c, key) in [
            (
                AdaptiveConfig {
                    target_traces_per_second: 0.0,
                    ..Default::default()
                },
                "target_traces_per_second",
            ),
            (
                AdaptiveConfig {
                    min_probability: f64::NAN,
                    ..Default::default()
                },
                "min_probability",
            ),
            (
                AdaptiveConfig {
                    interval_secs: 0,
                    ..Default::default()
                },
                "interval_secs",
            ),
            (
                AdaptiveConfig {
                    smoothing_periods: 0,
                    ..Default::default()
                },
                "smoothing_periods",
            ),
            (
                AdaptiveConfig {
                    service_max_traces_per_second: -1.0,
                    ..Default::default()
                },
                "service_max_traces_per_second",
            ),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
