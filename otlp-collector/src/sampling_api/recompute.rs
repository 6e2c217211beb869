//! The periodic task behind `[sampling_api.adaptive]`: every `interval_secs`
//! it takes the pipeline's adjusted root-span counts, folds them into the
//! [`AdaptiveEngine`] and replaces the served strategies.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::adaptive::{AdaptiveConfig, AdaptiveEngine, ThroughputRecorder};
use super::strategy::Strategies;
use crate::metrics::Metrics;

/// Runs until `shutdown` turns true. The period is measured, not assumed,
/// so a late tick does not inflate the rates.
pub async fn run(
    cfg: AdaptiveConfig,
    recorder: Arc<ThroughputRecorder>,
    strategies: Arc<Strategies>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut engine = AdaptiveEngine::new(cfg.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    let mut since = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        let (counts, dropped) = recorder.take();
        let period = since.elapsed().as_secs_f64();
        since = Instant::now();
        let rates = engine.recompute(counts, period);
        strategies.set_adaptive(&rates);
        metrics
            .sampling_adaptive_dropped
            .fetch_add(dropped, Relaxed);
        metrics
            .sampling_adaptive_recomputations
            .fetch_add(1, Relaxed);
        metrics
            .sampling_adaptive_operations
            .store(engine.tracked() as u64, Relaxed);
    }
}
