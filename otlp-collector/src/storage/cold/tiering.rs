//! The tiering task: every `cold.interval_secs`, copies the spans that aged
//! past `cold.hot_days` (and that `cold.policy` keeps) from the hot store
//! into new cold files, then deletes them from the hot store (the age
//! retention of a collector with a cold tier), then deletes cold files past
//! `cold.cold_days`.
//!
//! The copy finishes before the hot delete starts: a crash in between
//! leaves the spans in both tiers, the next run copies them again, and
//! reads keep one copy of each span id.
//!
//! Late spans: the hot delete removes every span before the run's cutoff,
//! also one that arrived (already older than `hot_days`) after the copy
//! read past its place. So a run raises a [`Fence`](super::fence::Fence) first: from then until
//! its delete is done, [`TieredStore`](super::TieredStore) writes spans
//! older than the run's cutoff straight to the cold tier (the policy
//! applied) instead of the hot store. The fence waits for the writes
//! already under way (they may not have seen it) before the copy starts
//! reading, so every span older than the cutoff is either read by the copy
//! or written cold: none is deleted uncopied.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::policy;
use super::store::ColdStore;
use crate::model::{now_ns, Span, TraceId};
use crate::storage::{SpanStore, StorageResult, MAX_TRACES_PER_READ};

/// Spans asked of the hot store per page.
const EXPORT_PAGE: usize = 10_000;

/// What one tiering run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierReport {
    /// Spans read from the hot store (older than the hot cutoff).
    pub spans_aged: u64,
    /// Of which written to cold files.
    pub spans_written: u64,
    /// Cold files written.
    pub files_written: u64,
    /// Spans deleted from the hot store.
    pub hot_deleted: u64,
    /// Cold files deleted by age.
    pub cold_files_deleted: u64,
    /// Small cold files merged into larger ones (`cold.compaction`).
    pub files_compacted: u64,
}

/// Runs one tiering pass as of `now_ns`.
pub async fn run_once(
    hot: &dyn SpanStore,
    cold: &ColdStore,
    now_ns: u64,
) -> StorageResult<TierReport> {
    let config = cold.config().clone();
    // Rounded down to a partition boundary where the hot store deletes
    // whole partitions only (PostgreSQL and ClickHouse: UTC days).
    let cutoff = hot.tier_cutoff(config.hot_cutoff(now_ns));
    let pass = cold.pass.lock().await;
    let fence = cold.fence.raise(cutoff).await;
    let mut report = copy_before(hot, cold, cutoff).await?;
    report.hot_deleted = hot.apply_retention(cutoff).await?.spans_deleted;
    drop(fence);
    report.cold_files_deleted = cold.evict_before(config.cold_cutoff(now_ns)).await?.0;
    cold.stats.runs.fetch_add(1, Relaxed);
    // Compaction never removes a file it did not pick, so it needs no pass
    // lock: evictions waiting for one are not held up by it.
    drop(pass);
    if config.compaction {
        // The move is done: a failed compaction is counted and retried
        // after the next run, not reported as a failed run.
        match cold.compact().await {
            Ok(c) => report.files_compacted = c.files_replaced,
            Err(e) => {
                cold.stats.compaction_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "cold tier compaction failed; retrying after the next run");
            }
        }
    }
    Ok(report)
}

/// Copies the spans that started before `cutoff` (and that the policy
/// keeps) from the hot store into new cold files; the caller holds the
/// pass lock and the fence raised at `cutoff`, and deletes them hot after.
async fn copy_before(
    hot: &dyn SpanStore,
    cold: &ColdStore,
    cutoff: u64,
) -> StorageResult<TierReport> {
    let config = cold.config().clone();
    let mut report = TierReport::default();
    let mut pending: Vec<Span> = Vec::new();
    let mut after = None;
    loop {
        let page = hot.export_before(cutoff, after, EXPORT_PAGE).await?;
        report.spans_aged += page.spans.len() as u64;
        let kept = keep(hot, &config, page.spans).await?;
        pending.extend(kept);
        if pending.len() >= config.max_spans_per_file {
            report.spans_written += pending.len() as u64;
            report.files_written += cold.write(std::mem::take(&mut pending)).await?.len() as u64;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if !pending.is_empty() {
        report.spans_written += pending.len() as u64;
        report.files_written += cold.write(pending).await?.len() as u64;
    }
    cold.stats
        .spans_not_kept
        .fetch_add(report.spans_aged - report.spans_written, Relaxed);
    Ok(report)
}

/// A size or disk-full eviction with a cold tier: the spans before the
/// cutoff the hot store picks for `bytes` are copied cold (policy applied)
/// before the hot store deletes them. "Drop oldest, keep collecting" comes
/// first: when the copy fails (the cold location is down, or on the same
/// full disk) or, on a full disk, a tiering pass holds the cold tier, the
/// spans are deleted uncopied and counted
/// (`ferrotrace_cold_eviction_copy_failures_total`).
pub async fn evict_moving(
    hot: &dyn SpanStore,
    cold: &ColdStore,
    bytes: u64,
    give_back: bool,
) -> StorageResult<crate::storage::EvictionReport> {
    let Some(cutoff) = hot.eviction_cutoff(bytes, give_back).await? else {
        return hot.evict_oldest(bytes, give_back).await;
    };
    // Over budget, waiting for a tiering pass is fine; on a full disk the
    // space is needed now.
    let pass = if give_back {
        cold.pass.try_lock().ok()
    } else {
        Some(cold.pass.lock().await)
    };
    let failure = match pass {
        None => "a tiering pass holds the cold tier".to_string(),
        Some(_pass) => {
            let _fence = cold.fence.raise(cutoff).await;
            match copy_before(hot, cold, cutoff).await {
                Ok(r) => {
                    cold.stats
                        .spans_moved_by_eviction
                        .fetch_add(r.spans_written, Relaxed);
                    // Under the fence: a late span meanwhile goes cold.
                    return hot.evict_before(cutoff, give_back).await;
                }
                Err(e) => e.to_string(),
            }
        }
    };
    cold.stats.eviction_copy_failures.fetch_add(1, Relaxed);
    tracing::warn!(error = %failure, cutoff_ns = cutoff, "size eviction could not copy the oldest spans to the cold tier; deleting them anyway (drop oldest, keep collecting)");
    hot.evict_before(cutoff, give_back).await
}

/// The spans of `spans` whose trace the policy keeps; for a policy that
/// looks at the whole trace, the trace as the hot store has it (spans not
/// yet aged included) with `spans` themselves.
pub(crate) async fn keep(
    hot: &dyn SpanStore,
    config: &super::ColdConfig,
    spans: Vec<Span>,
) -> StorageResult<Vec<Span>> {
    if !policy::needs_spans(config) {
        return Ok(spans
            .into_iter()
            .filter(|s| policy::keeps(config, &s.trace_id, &[]))
            .collect());
    }
    let ids: Vec<TraceId> = {
        let mut seen = HashSet::new();
        spans
            .iter()
            .map(|s| s.trace_id)
            .filter(|id| seen.insert(*id))
            .collect()
    };
    let mut whole: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    for chunk in ids.chunks(MAX_TRACES_PER_READ) {
        for (id, t) in hot.get_traces(chunk, None).await? {
            whole.insert(id, t);
        }
    }
    // A late span (written straight to the cold tier) is not in the hot
    // store: its own status and duration count too. Duplicates do not
    // change the policy's "any span" answers.
    for s in &spans {
        whole.entry(s.trace_id).or_default().push(s.clone());
    }
    Ok(spans
        .into_iter()
        .filter(|s| {
            let t = whole.get(&s.trace_id).map_or(&[][..], Vec::as_slice);
            policy::keeps(config, &s.trace_id, t)
        })
        .collect())
}

/// Runs tiering every `cold.interval_secs` until `shutdown` turns true.
pub async fn run(
    hot: Arc<dyn SpanStore>,
    cold: Arc<ColdStore>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_secs(cold.config().interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A database sink still connecting at start: not a failed
                // pass (the next tick tries again).
                if let Err(why) = hot.ready() {
                    tracing::debug!(reason = %why, "tiering pass skipped: the hot store is not ready");
                    continue;
                }
                match run_once(hot.as_ref(), &cold, now_ns()).await {
                    Ok(r) => tracing::debug!(
                        aged = r.spans_aged,
                        written = r.spans_written,
                        files = r.files_written,
                        hot_deleted = r.hot_deleted,
                        cold_files_deleted = r.cold_files_deleted,
                        "tiering pass done"
                    ),
                    Err(e) => {
                        cold.stats.failures.fetch_add(1, Relaxed);
                        tracing::warn!(error = %e, "tiering pass failed; retrying at the next interval");
                    }
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
