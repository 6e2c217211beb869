//! The periodic task behind `[sampling_api.adaptive]`: it turns the
//! pipeline's adjusted root-span counts into the served strategies.
//!
//! - `source = "local"` ([`run`]): every `interval_secs` it folds this
//!   collector's counts into its [`AdaptiveEngine`].
//! - `source = "store"` ([`run_store`]): periods are aligned to the wall
//!   clock (`[k·interval, (k+1)·interval)` in Unix time). At the end of each
//!   period every collector writes its counts into the shared store, then
//!   marks the period written (a row naming it, holding the fingerprint of
//!   its settings). After [`store_delay`] it waits, bounded, until every
//!   collector that marked the previous period has marked this one
//!   (`await_writers`), then reads the store-wide sums of the last
//!   [`window_periods`](AdaptiveConfig::window_periods) periods and replays
//!   them through a fresh, deterministic engine. Collectors on one store
//!   read the same rows, so they serve bit-identical probabilities computed
//!   from the total traffic, with no election and no state of their own: a
//!   collector that starts (or restarts) serves the same rates as the
//!   others from its first recomputation. The served answers name the
//!   period they were computed from (`x-ferrotrace-sampling-period-end`).
//!   Each collector also compares the others' settings fingerprints with
//!   its own ([`settings`](super::settings)): collectors on one store with
//!   different settings are reported, not silently divergent.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::adaptive::{AdaptiveConfig, AdaptiveEngine, ServiceRates};
use super::settings::{ConflictTracker, SETTINGS_PERIOD_SECS};
use super::strategy::Strategies;
use super::throughput::ThroughputRecorder;
use crate::metrics::Metrics;
use crate::storage::{SamplingCountRow, SamplingCounts, SamplingPeriodCounts, StorageError};

/// `source = "local"`: runs until `shutdown` turns true. The period is
/// measured, not assumed, so a late tick does not inflate the rates.
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
        publish(&strategies, &metrics, &rates, engine.tracked(), dropped);
    }
}

fn publish(
    strategies: &Strategies,
    metrics: &Metrics,
    rates: &BTreeMap<String, ServiceRates>,
    tracked: usize,
    dropped: u64,
) {
    strategies.set_adaptive(rates);
    record(metrics, tracked, dropped);
}

/// The metrics of one recomputation.
fn record(metrics: &Metrics, tracked: usize, dropped: u64) {
    metrics
        .sampling_adaptive_dropped
        .fetch_add(dropped, Relaxed);
    metrics
        .sampling_adaptive_recomputations
        .fetch_add(1, Relaxed);
    metrics
        .sampling_adaptive_operations
        .store(tracked as u64, Relaxed);
}

/// How long after a period ends the collectors read the store: every
/// collector's write of that period must be in by then (so their clocks
/// must agree to well within it). Half the period, at most 5 s.
pub fn store_delay(cfg: &AdaptiveConfig) -> Duration {
    Duration::from_millis((cfg.interval_secs * 500).min(5_000))
}

/// A name for this process's rows: random, so that a restart within a
/// period never collides with the rows its previous run wrote.
fn collector_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::model::now_ns());
    h.write_u32(std::process::id());
    format!("{:016x}-{}", h.finish(), std::process::id())
}

/// Adjusted counts as the integers the store sums (thousandths, rounded;
/// saturating, never wrapping).
pub fn to_milli(counts: BTreeMap<(String, String), f64>) -> Vec<(String, String, u64)> {
    counts
        .into_iter()
        .map(|((s, o), n)| {
            let m = (n * 1000.0).round();
            let m = if m.is_finite() && m > 0.0 {
                m.min(u64::MAX as f64) as u64
            } else {
                0
            };
            (s, o, m)
        })
        .filter(|r| r.2 > 0)
        .collect()
}

/// The store's rows as one map per period, oldest first: `window` periods
/// ending before `end_ns`, an empty map for a period without rows.
pub fn periods_from_rows(
    rows: Vec<SamplingCountRow>,
    end_ns: u64,
    period_ns: u64,
    window: u32,
) -> Vec<BTreeMap<(String, String), f64>> {
    let first = end_ns.saturating_sub(window as u64 * period_ns);
    let mut out = vec![BTreeMap::new(); window as usize];
    for r in rows {
        if r.period_start_ns < first || r.period_start_ns >= end_ns {
            continue;
        }
        let i = ((r.period_start_ns - first) / period_ns) as usize;
        if let Some(p) = out.get_mut(i) {
            p.insert((r.service, r.operation), r.count_milli as f64 / 1000.0);
        }
    }
    out
}

/// Sleeps until Unix time `at_ns`; false when shutdown came first.
async fn sleep_until_unix(at_ns: u64, shutdown: &mut watch::Receiver<bool>) -> bool {
    loop {
        let now = crate::model::now_ns();
        if now >= at_ns {
            return true;
        }
        // Re-read the clock at least every second: a stepped clock moves the
        // boundary, and periods follow the wall clock, not a monotonic one.
        let wait = Duration::from_nanos((at_ns - now).min(1_000_000_000));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return false;
                }
            }
        }
    }
}

/// `source = "store"`: runs until `shutdown` turns true (see the module
/// documentation). `settings` is this collector's
/// [`fingerprint`](super::settings::fingerprint).
pub async fn run_store(
    cfg: AdaptiveConfig,
    settings: String,
    recorder: Arc<ThroughputRecorder>,
    store: Arc<dyn SamplingCounts>,
    strategies: Arc<Strategies>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let collector = collector_id();
    let period_ns = cfg.interval_secs * 1_000_000_000;
    let period_secs = cfg.interval_secs as u32;
    let window = cfg.window_periods();
    let delay = store_delay(&cfg).as_nanos() as u64;
    let mut conflicts = ConflictTracker::new(settings);
    // Whether the store has answered a read yet: before its first
    // connection a write would fail (and count as an error) on every start,
    // so until then the mark is written after the read, as a plain
    // announcement.
    let mut answered = false;
    tracing::info!(
        collector = %collector,
        interval_secs = cfg.interval_secs,
        window_periods = window,
        "adaptive sampling rates computed from the store's counts of every collector"
    );
    // The boundary after the last one handled: the next to handle even when
    // it has already passed.
    let mut next: Option<u64> = None;
    loop {
        let boundary = next_boundary(next, crate::model::now_ns(), period_ns);
        next = Some(boundary + period_ns);
        if !sleep_until_unix(boundary, &mut shutdown).await {
            return;
        }
        // This collector's share of the period that just ended (what was
        // recorded since the boundary stays for the next one).
        let (counts, dropped) = recorder.take_before(boundary);
        let batch = SamplingPeriodCounts {
            period_start_ns: boundary - period_ns,
            period_secs,
            collector: collector.clone(),
            counts: to_milli(counts),
        };
        let rows = batch.counts.len();
        if rows > 0 {
            write_within(&*store, &batch, boundary + delay / 2, &metrics).await;
        }
        // The mark goes after the counts (acknowledged, or given up on):
        // a reader that sees it reads them.
        if answered {
            announce(&*store, &collector, conflicts.mine(), boundary, &metrics).await;
        }
        tracing::debug!(
            collector = %collector,
            period_end_ns = boundary,
            rows,
            after_ms = ms_after(boundary),
            "adaptive sampling counts written and marked"
        );
        // Periods older than the window (and a margin) are read by nobody.
        let keep_from = boundary.saturating_sub((window as u64 + 2) * period_ns);
        if let Err(e) = store.prune_sampling_counts(keep_from).await {
            metrics.sampling_adaptive_store_errors.add("prune", 1);
            tracing::debug!(error = %e, "pruning old adaptive sampling counts failed");
        }
        if !sleep_until_unix(boundary + delay, &mut shutdown).await {
            return;
        }
        if answered {
            await_writers(
                &*store,
                &collector,
                boundary,
                period_ns,
                boundary + delay + delay / 2,
                &metrics,
            )
            .await;
        }
        let from = boundary.saturating_sub(window as u64 * period_ns);
        match store
            .read_sampling_counts(period_secs, from, boundary)
            .await
        {
            Ok(rows) => {
                if !answered {
                    announce(&*store, &collector, conflicts.mine(), boundary, &metrics).await;
                    answered = true;
                }
                let periods = periods_from_rows(rows, boundary, period_ns, window);
                let sums: Vec<u64> = periods
                    .iter()
                    .map(|p| p.values().map(|n| (n * 1000.0) as u64).sum())
                    .collect();
                let (rates, tracked) =
                    AdaptiveEngine::replay(cfg.clone(), periods, cfg.interval_secs as f64);
                strategies.set_adaptive_from(&rates, Some(boundary));
                record(&metrics, tracked, dropped);
                tracing::debug!(
                    collector = %collector,
                    period_end_ns = boundary,
                    after_ms = ms_after(boundary),
                    milli_per_period = ?sums,
                    "adaptive sampling rates recomputed from the store and published"
                );
                // After publishing: the comparison is a read of its own, and
                // the new rates should not wait for it.
                check_settings(&*store, &mut conflicts, window as u64 * period_ns, &metrics).await;
            }
            Err(e @ StorageError::Unavailable(_)) if !answered => {
                // The store has never answered: a database still being
                // connected to at start (the sink reports its connection
                // attempts itself), not a failed read — counted as one, it
                // made collectors whose database connected after their first
                // boundary report a store error (seen under load). As with
                // the prune, the first read after connecting covers it.
                metrics
                    .sampling_adaptive_dropped
                    .fetch_add(dropped, Relaxed);
                tracing::debug!(
                    error = %e,
                    "the store is not answering yet; adaptive sampling rates are computed from the next period on"
                );
            }
            Err(e) => {
                metrics.sampling_adaptive_store_errors.add("read", 1);
                metrics
                    .sampling_adaptive_dropped
                    .fetch_add(dropped, Relaxed);
                tracing::warn!(
                    error = %e,
                    "reading adaptive sampling counts from the store failed; the last rates stay served"
                );
            }
        }
    }
}

/// The boundary to handle next, given the one after the last handled
/// (`None` at start) and the time now. Normally the coming boundary. When
/// the last recomputation ended after that boundary had passed (a loaded
/// machine), that boundary still: taking the coming one instead, as the first
/// version did, skipped a period — no counts written for it (its traffic
/// added to the next period's), no mark (the others waited for it until
/// their deadline, and ran late in turn), and the previous period's rates
/// served for two periods, different from the others'. Only when more than
/// a whole period was missed does it move on to the last boundary passed.
pub fn next_boundary(next: Option<u64>, now_ns: u64, period_ns: u64) -> u64 {
    let coming = (now_ns / period_ns + 1) * period_ns;
    match next {
        Some(b) if b + period_ns > now_ns => b.min(coming),
        Some(b) => {
            let last = coming - period_ns;
            tracing::warn!(
                skipped = (last - b) / period_ns,
                "adaptive sampling fell more than a period behind; periods skipped"
            );
            last
        }
        None => coming,
    }
}

/// Milliseconds from `boundary_ns` to now (for the debug log).
fn ms_after(boundary_ns: u64) -> f64 {
    crate::model::now_ns().saturating_sub(boundary_ns) as f64 / 1e6
}

/// How often a waiting reader looks for the marks again.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// Waits until every other collector that marked the previous period
/// (stamped `boundary − period`) has marked the one ending at `boundary`
/// too — its counts of the period are then in the store — or until
/// `deadline_ns`. Reading before a slow collector's counts land (a loaded
/// machine, a slow insert) is what made collectors replay different inputs
/// for the same period and serve different strategies. A collector seen in
/// the previous period that does not mark this one by the deadline (gone,
/// or too slow) is counted in `sampling_adaptive_late_writers` and logged;
/// the read goes ahead without it. A collector that has just started is
/// not waited for (it marked no previous period).
async fn await_writers(
    store: &dyn SamplingCounts,
    collector: &str,
    boundary: u64,
    period_ns: u64,
    deadline_ns: u64,
    metrics: &Metrics,
) {
    let previous = boundary.saturating_sub(period_ns);
    let mut waited_for: Vec<String> = Vec::new();
    loop {
        let missing = match store
            .read_sampling_counts(SETTINGS_PERIOD_SECS, previous, boundary + 1)
            .await
        {
            Ok(rows) => missing_marks(&rows, collector, previous, boundary),
            Err(e) => {
                metrics.sampling_adaptive_store_errors.add("read", 1);
                tracing::warn!(error = %e, "reading which collectors wrote their adaptive sampling counts failed");
                return;
            }
        };
        if missing.is_empty() {
            if !waited_for.is_empty() {
                tracing::debug!(
                    collector = %collector,
                    period_end_ns = boundary,
                    after_ms = ms_after(boundary),
                    waited_for = ?waited_for,
                    "waited for other collectors' adaptive sampling counts"
                );
            }
            return;
        }
        if waited_for.is_empty() {
            waited_for = missing.clone();
        }
        if crate::model::now_ns() + WAIT_POLL.as_nanos() as u64 >= deadline_ns {
            metrics
                .sampling_adaptive_late_writers
                .fetch_add(missing.len() as u64, Relaxed);
            tracing::warn!(
                collector = %collector,
                period_end_ns = boundary,
                missing = ?missing,
                "collectors seen in the previous period had not written their adaptive sampling \
                 counts when the wait ended; rates computed without them (other collectors may \
                 serve different ones for this period)"
            );
            return;
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// The collectors (other than `me`) whose mark stamped `previous` is among
/// `rows` but whose mark stamped `boundary` is not. Marks written before
/// collectors were named in them (an empty service) are ignored.
pub fn missing_marks(
    rows: &[SamplingCountRow],
    me: &str,
    previous: u64,
    boundary: u64,
) -> Vec<String> {
    let at = |t: u64| -> std::collections::BTreeSet<&str> {
        rows.iter()
            .filter(|r| r.period_start_ns == t && !r.service.is_empty() && r.service != me)
            .map(|r| r.service.as_str())
            .collect()
    };
    let done = at(boundary);
    at(previous)
        .difference(&done)
        .map(|c| c.to_string())
        .collect()
}

/// Writes this collector's mark for the period ending at `at_ns`: a row
/// under its own id (as the service) holding its settings fingerprint,
/// stamped `at_ns` (the period's boundary, so that readers with other
/// period lengths see it within their look-back), every period: an idle
/// collector serves strategies too. Written once this collector's counts of
/// the period are in, so it also tells the readers waiting in
/// [`await_writers`] that they are. One attempt: the next period writes it
/// again.
async fn announce(
    store: &dyn SamplingCounts,
    collector: &str,
    settings: &str,
    at_ns: u64,
    metrics: &Metrics,
) {
    let row = SamplingPeriodCounts {
        period_start_ns: at_ns,
        period_secs: SETTINGS_PERIOD_SECS,
        collector: collector.to_string(),
        counts: vec![(collector.to_string(), settings.to_string(), 1)],
    };
    if let Err(e) = store.write_sampling_counts(&row).await {
        metrics.sampling_adaptive_store_errors.add("write", 1);
        tracing::warn!(error = %e, "announcing this collector's adaptive sampling settings in the store failed");
    }
}

/// Reads the settings announced in the last `lookback_ns` and compares them
/// with this collector's: the distinct others go to the gauge, and a change
/// is logged as an error naming the differing settings. A failed read is a
/// store error and leaves the gauge as it was.
async fn check_settings(
    store: &dyn SamplingCounts,
    conflicts: &mut ConflictTracker,
    lookback_ns: u64,
    metrics: &Metrics,
) {
    let now = crate::model::now_ns();
    match store
        .read_sampling_counts(
            SETTINGS_PERIOD_SECS,
            now.saturating_sub(lookback_ns),
            now + 1,
        )
        .await
    {
        Ok(rows) => {
            let (n, errors) = conflicts.observe(rows.iter().map(|r| r.operation.as_str()), now);
            metrics
                .sampling_adaptive_settings_conflicts
                .store(n as u64, Relaxed);
            for e in errors {
                tracing::error!("{e}");
            }
        }
        Err(e) => {
            metrics.sampling_adaptive_store_errors.add("read", 1);
            tracing::warn!(error = %e, "reading the adaptive sampling settings of the other collectors failed");
        }
    }
}

/// Writes `batch`, retrying a failed write until `deadline_ns` (the others
/// read at the period's end plus the delay; a later write would only be
/// seen from the next period on).
async fn write_within(
    store: &dyn SamplingCounts,
    batch: &SamplingPeriodCounts,
    deadline_ns: u64,
    metrics: &Metrics,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        match store.write_sampling_counts(batch).await {
            Ok(()) => return,
            Err(e) => {
                metrics.sampling_adaptive_store_errors.add("write", 1);
                if crate::model::now_ns() + backoff.as_nanos() as u64 >= deadline_ns {
                    tracing::warn!(
                        error = %e,
                        "writing this collector's adaptive sampling counts failed; its share of \
                         the period is missing from every collector's rates"
                    );
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: u64, s: &str, o: &str, n: u64) -> SamplingCountRow {
        SamplingCountRow {
            period_start_ns: p,
            service: s.into(),
            operation: o.into(),
            count_milli: n,
        }
    }

    #[test]
    fn rows_become_periods_oldest_first_with_gaps_empty() {
        let p = 10;
        let rows = vec![
            row(70, "s", "a", 1_000),
            row(90, "s", "a", 2_500),
            row(90, "s", "b", 500),
            row(100, "s", "late", 1), // at the end: not in the window
            row(10, "s", "old", 1),   // before the window
        ];
        let periods = periods_from_rows(rows, 100, p, 4);
        assert_eq!(periods.len(), 4);
        assert!(periods[0].is_empty()); // 60
        assert_eq!(periods[1][&("s".into(), "a".into())], 1.0); // 70
        assert!(periods[2].is_empty()); // 80
        assert_eq!(periods[3].len(), 2); // 90
        assert_eq!(periods[3][&("s".into(), "a".into())], 2.5);
    }

    #[test]
    fn a_collector_that_marked_the_previous_period_but_not_this_one_is_missing() {
        let mark = |p: u64, c: &str| row(p, c, "format=1;x=1", 1);
        let rows = vec![
            mark(90, "a"),
            mark(90, "b"),
            mark(90, "me"),
            mark(90, ""), // an old-format mark: names no collector
            mark(100, "a"),
            mark(100, "new"), // started this period: not waited for
        ];
        assert_eq!(missing_marks(&rows, "me", 90, 100), vec!["b".to_string()]);
        let mut all = rows.clone();
        all.push(mark(100, "b"));
        assert!(missing_marks(&all, "me", 90, 100).is_empty());
        // This collector never waits for itself.
        assert!(missing_marks(&[mark(90, "me")], "me", 90, 100).is_empty());
    }

    #[test]
    fn a_late_recomputation_handles_the_boundary_it_missed_instead_of_skipping_it() {
        let p = 1_000;
        // At start: the coming boundary.
        assert_eq!(next_boundary(None, 10_300, p), 11_000);
        // On time: the coming boundary.
        assert_eq!(next_boundary(Some(11_000), 10_900, p), 11_000);
        // The last recomputation ended 70 ms after 11_000: handle 11_000 now.
        assert_eq!(next_boundary(Some(11_000), 11_070, p), 11_000);
        assert_eq!(next_boundary(Some(11_000), 11_999, p), 11_000);
        // More than a whole period behind: the last boundary passed.
        assert_eq!(next_boundary(Some(11_000), 12_000, p), 12_000);
        assert_eq!(next_boundary(Some(11_000), 13_500, p), 13_000);
        // A clock stepped back: never a boundary further than the coming one.
        assert_eq!(next_boundary(Some(11_000), 5_500, p), 6_000);
    }

    #[test]
    fn milli_counts_round_and_saturate() {
        let c: BTreeMap<(String, String), f64> = [
            (("s".to_string(), "a".to_string()), 1.2345),
            (("s".to_string(), "z".to_string()), 0.0),
            (("s".to_string(), "h".to_string()), 1e300),
            (("s".to_string(), "n".to_string()), f64::NAN),
        ]
        .into_iter()
        .collect();
        let m = to_milli(c);
        assert_eq!(
            m,
            vec![
                ("s".into(), "a".into(), 1_235),
                ("s".into(), "h".into(), u64::MAX)
            ]
        );
    }

    #[test]
    fn replaying_the_same_rows_gives_identical_rates_whatever_the_row_order() {
        let cfg = AdaptiveConfig {
            enabled: true,
            target_traces_per_second: 3.0,
            smoothing_periods: 3,
            ..Default::default()
        };
        let mut rows = Vec::new();
        for k in 0..12u64 {
            for op in 0..50u64 {
                let n = (k * 7919 + op * 104_729) % 100_000 + 1;
                rows.push(row(
                    k * 10,
                    &format!("svc{}", op % 7),
                    &format!("op{op}"),
                    n,
                ));
            }
        }
        let a = periods_from_rows(rows.clone(), 120, 10, cfg.window_periods());
        rows.reverse();
        let b = periods_from_rows(rows, 120, 10, cfg.window_periods());
        let (ra, _) = AdaptiveEngine::replay(cfg.clone(), a, 1.0);
        let (rb, _) = AdaptiveEngine::replay(cfg, b, 1.0);
        assert_eq!(ra, rb);
        for (s, r) in &ra {
            for (o, p) in &r.operations {
                assert_eq!(p.to_bits(), rb[s].operations[o].to_bits());
            }
        }
    }

    /// Collectors sharing one SQLite file (each with its own connection, as
    /// separate processes would have): two with the same settings see no
    /// conflict; a third with another target is seen by all three, each
    /// counting one other set of settings.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collectors_sharing_a_sqlite_file_detect_different_settings() {
        use crate::sampling_api::config::SamplingApiConfig;
        use crate::sampling_api::settings::fingerprint;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let (stop, shutdown) = watch::channel(false);
        let api = |target: f64| {
            let mut c = SamplingApiConfig::default();
            c.adaptive.enabled = true;
            c.adaptive.source = super::super::adaptive::AdaptiveSource::Store;
            c.adaptive.interval_secs = 1;
            c.adaptive.target_traces_per_second = target;
            c
        };
        let start = |target: f64| {
            let api = api(target);
            let store: Arc<dyn SamplingCounts> =
                Arc::new(crate::storage::sqlite::SqliteStore::open(&path).expect("open"));
            let metrics = Arc::new(Metrics::default());
            tokio::spawn(run_store(
                api.adaptive.clone(),
                fingerprint(&api),
                Arc::new(ThroughputRecorder::per_period(100, 1_000_000_000)),
                store,
                Arc::new(Strategies::new(&api)),
                metrics.clone(),
                shutdown.clone(),
            ));
            metrics
        };
        let conflicts = |m: &Metrics| m.sampling_adaptive_settings_conflicts.load(Relaxed);
        let recomputed = |m: &Metrics| m.sampling_adaptive_recomputations.load(Relaxed);
        let (a, c) = (start(20.0), start(20.0));
        let deadline = Instant::now() + Duration::from_secs(20);
        while recomputed(&a) < 2 || recomputed(&c) < 2 {
            assert!(Instant::now() < deadline, "no recomputation");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            (conflicts(&a), conflicts(&c)),
            (0, 0),
            "same settings agree"
        );
        let b = start(5.0);
        while [&a, &b, &c].iter().any(|m| conflicts(m) != 1) {
            assert!(
                Instant::now() < deadline,
                "conflicts a {} b {} c {}",
                conflicts(&a),
                conflicts(&b),
                conflicts(&c)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for m in [&a, &b, &c] {
            assert_eq!(m.sampling_adaptive_store_errors.get("read"), 0);
            assert_eq!(m.sampling_adaptive_store_errors.get("write"), 0);
        }
        stop.send(true).unwrap();
    }

    #[test]
    fn the_delay_is_half_the_period_at_most_five_seconds() {
        let mut c = AdaptiveConfig {
            interval_secs: 1,
            ..Default::default()
        };
        assert_eq!(store_delay(&c), Duration::from_millis(500));
        c.interval_secs = 60;
        assert_eq!(store_delay(&c), Duration::from_secs(5));
    }
}
