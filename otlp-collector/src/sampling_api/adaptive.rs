//! Adaptive sampling rates: per service and operation, the probability that
//! keeps a target number of traces per second, computed from the observed
//! *adjusted* throughput (root spans weighted by their adjusted count, so the
//! estimate is of the unsampled traffic whatever the SDKs currently sample).
//!
//! Jaeger's adaptive sampler is the reference (per-operation probabilities
//! from observed throughput toward a target, recomputed periodically, with a
//! minimum probability). Where this one differs, on purpose:
//! - **A spike is answered in one period.** The rate used is
//!   `max(rate of the last period, smoothed rate)`: a 10× spike lowers the
//!   probability at the first recomputation after a period of it, while a
//!   drop raises the probability only as the smoothed rate decays (an
//!   exponential average over `smoothing_periods`), so a brief lull does not
//!   flood the store.
//! - **Low-traffic operations are never starved.** An operation whose rate
//!   is under the target gets probability 1; one that stops sending has its
//!   smoothed rate decay, so its probability climbs back to 1 before it is
//!   forgotten; an operation never seen gets the service's probability,
//!   and the served strategy carries `defaultLowerBoundTracesPerSecond`.
//! - **A per-service ceiling** (`service_max_traces_per_second`) scales all of
//!   a service's operations down together when their kept traces would
//!   exceed it (never below `min_probability`).
//!
//! Only root spans are counted: the sampling decision of a trace is taken
//! where it starts, with the root's operation, which is what the SDK looks
//! up in `perOperationStrategies`.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::config::{SamplingApiConfigError, MAX_OPERATIONS_PER_SERVICE};

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
}

/// Adjusted root-span counts per (service, operation) since the last
/// [`take`](Self::take). Fed by the pipeline thread once per queue item,
/// read by the recomputation task; bounded by `max_operations`.
#[derive(Debug)]
pub struct ThroughputRecorder {
    max: usize,
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Service → operation → adjusted count; nested so that a known pair is
    /// found by `&str` without allocating.
    by_service: HashMap<String, HashMap<String, f64>>,
    pairs: usize,
    dropped: u64,
}

impl ThroughputRecorder {
    /// A recorder tracking at most `max_operations` pairs per period.
    pub fn new(max_operations: usize) -> ThroughputRecorder {
        ThroughputRecorder {
            max: max_operations,
            inner: Mutex::new(Counts::default()),
        }
    }

    /// Adds root spans `(service, operation, adjusted count)`.
    pub fn record<'a>(&self, roots: impl IntoIterator<Item = (&'a str, &'a str, f64)>) {
        let mut guard = self.inner.lock();
        let c = &mut *guard;
        for (service, op, w) in roots {
            if let Some(v) = c.by_service.get_mut(service).and_then(|m| m.get_mut(op)) {
                *v += w;
            } else if c.pairs < self.max {
                c.pairs += 1;
                c.by_service
                    .entry(service.to_string())
                    .or_default()
                    .insert(op.to_string(), w);
            } else {
                c.dropped += 1;
            }
        }
    }

    /// The counts since the last call, and how many roots were not counted
    /// because the table was full.
    pub fn take(&self) -> (HashMap<(String, String), f64>, u64) {
        let c = std::mem::take(&mut *self.inner.lock());
        let counts = c
            .by_service
            .into_iter()
            .flat_map(|(s, ops)| ops.into_iter().map(move |(o, n)| ((s.clone(), o), n)))
            .collect();
        (counts, c.dropped)
    }
}

#[derive(Clone, Debug)]
struct OpState {
    /// Exponentially smoothed traces per second.
    smoothed: f64,
    /// Traces per second over the last period.
    last: f64,
    /// Periods in a row without a root span.
    idle: u32,
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
#[derive(Debug)]
pub struct AdaptiveEngine {
    cfg: AdaptiveConfig,
    ops: HashMap<(String, String), OpState>,
}

impl AdaptiveEngine {
    /// An engine with no history.
    pub fn new(cfg: AdaptiveConfig) -> AdaptiveEngine {
        AdaptiveEngine {
            cfg,
            ops: HashMap::new(),
        }
    }

    /// Operations tracked now.
    pub fn tracked(&self) -> usize {
        self.ops.len()
    }

    /// Folds one period's adjusted counts (`period_secs` long) into the
    /// smoothed rates and returns every service's probabilities.
    pub fn recompute(
        &mut self,
        counts: HashMap<(String, String), f64>,
        period_secs: f64,
    ) -> BTreeMap<String, ServiceRates> {
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
                    // First sight: no history to smooth with.
                    self.ops.insert(
                        key,
                        OpState {
                            smoothed: rate,
                            last: rate,
                            idle: 0,
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
            st.smoothed += alpha * (st.last - st.smoothed);
            if st.last == 0.0 {
                st.idle += 1;
            }
            st.idle <= forget_after || !served_one
        });

        let min_p = self.cfg.min_probability;
        let mut by_service: BTreeMap<String, Vec<(String, f64, f64)>> = BTreeMap::new();
        for ((service, op), st) in &self.ops {
            // React at once to a rise, slowly to a fall.
            let rate = st.last.max(st.smoothed);
            let p = if rate <= target {
                1.0
            } else {
                (target / rate).clamp(min_p, 1.0)
            };
            by_service
                .entry(service.clone())
                .or_default()
                .push((op.clone(), rate, p));
        }
        let ceiling = self.cfg.service_max_traces_per_second;
        by_service
            .into_iter()
            .map(|(service, mut ops)| {
                let kept: f64 = ops.iter().map(|(_, r, p)| r * p).sum();
                if ceiling > 0.0 && kept > ceiling {
                    let scale = ceiling / kept;
                    for (_, _, p) in &mut ops {
                        *p = (*p * scale).clamp(min_p, 1.0);
                    }
                }
                let total: f64 = ops.iter().map(|(_, r, _)| r).sum();
                let kept: f64 = ops.iter().map(|(_, r, p)| r * p).sum();
                let probability = if total > 0.0 {
                    (kept / total).clamp(min_p, 1.0)
                } else {
                    1.0
                };
                // Jaeger's clients and the SDK keep at most 2000 operations:
                // serve the busiest.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_spike_is_answered_in_one_period_and_a_drop_slowly() {
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
        for _ in 0..40 {
            e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0);
        }
        let r = e.recompute(counts(&[("s", "op", 1_000.0)]), 10.0);
        assert!((r["s"].operations["op"] - 0.1).abs() < 1e-3);
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
        // Served 1 before being forgotten; (5/6)^k × 10000 <= 10 at k = 38.
        assert_eq!(last, 1.0);
        assert_eq!(periods, 38);
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
    fn recorder_and_engine_are_bounded() {
        let rec = ThroughputRecorder::new(2);
        rec.record([
            ("s", "a", 1.0),
            ("s", "b", 2.0),
            ("s", "c", 3.0),
            ("s", "a", 1.0),
        ]);
        let (c, dropped) = rec.take();
        assert_eq!(c.len(), 2);
        assert_eq!(c[&("s".to_string(), "a".to_string())], 2.0);
        assert_eq!(dropped, 1);
        assert!(rec.take().0.is_empty());
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
