//! Size-bounded retention: the embedded store's size budget
//! (`retention.max_disk_bytes`) and what happens when its disk fills.
//!
//! A task checks, every `retention.size_check_interval_ms`, the store's size
//! ([`Retention::disk_usage`]) and the free space of the file system holding
//! it, and asks the store to delete its oldest data
//! ([`Retention::evict_oldest`]: every span before a cutoff time, as age
//! retention deletes) when either limit is crossed ([`plan`]):
//!
//! - **size**: the store's live bytes exceed the budget: it is brought down
//!   to [`LOW_WATER_PERCENT`] of the budget (so evictions come in steps,
//!   not with every batch). The freed pages stay in the file and later
//!   writes reuse them, so the file stays about the budget's size; when the
//!   files have grown past twice the budget anyway (a burst between checks,
//!   or readers that kept the journal from being reset), that eviction also
//!   hands the free pages and the journal back to the file system.
//! - **disk full**: less than the free-space reserve (`wal.min_free_bytes`)
//!   is free. The write-ahead log refuses appends below that reserve (503 /
//!   `UNAVAILABLE`), so the only thing that can take the disk below it is
//!   the store growing (or another program). The store then evicts enough
//!   to bring the free space back above the reserve, and hands the pages
//!   back to the file system. The WAL accepts again, the sink can commit
//!   (its writes reuse the store's space), the WAL's segments are deleted:
//!   the collector resumes by itself, having dropped the oldest data, as the
//!   specification asks ("if storage is full, drop oldest traces but
//!   continue collecting").
//!
//! With a cold tier the store is a `TieredStore`, whose eviction copies the
//! spans before the cutoff to the cold tier first (`cold::tiering::evict_moving`)
//! and deletes them anyway when it cannot.
//!
//! A database server's disk is not the collector's: PostgreSQL and
//! ClickHouse report their tables' size without a directory, so only an
//! explicit budget applies to them (dropping whole day partitions) and
//! never the full-disk rule.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::retention::{Reason, RetentionConfig, RetentionStats};
use super::{DiskUsage, EvictionReport, Retention};

/// After a size eviction the store holds at most this share of its budget.
pub const LOW_WATER_PERCENT: u64 = 90;

/// The budget when `max_disk_bytes` is 0 and the file system's size cannot
/// be read.
pub const FALLBACK_BUDGET_BYTES: u64 = 10 << 30;

/// Free bytes below which the disk counts as full even when the reserve is
/// smaller (or unknown).
pub const MIN_FREE_BYTES: u64 = 1 << 20;

/// The budget: `configured`, or with 0 half of the file system (`fs_size`),
/// or [`FALLBACK_BUDGET_BYTES`] when that is unknown.
pub fn resolve_budget(configured: u64, fs_size: Option<u64>) -> u64 {
    if configured > 0 {
        return configured;
    }
    fs_size.map_or(FALLBACK_BUDGET_BYTES, |s| (s / 2).max(MIN_FREE_BYTES))
}

/// One eviction to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// Why.
    pub reason: Reason,
    /// Live bytes to delete (0: only give free space back).
    pub bytes: u64,
    /// Return the freed space to the file system.
    pub give_back: bool,
}

/// What to evict, if anything, for a store of `usage` with `budget` bytes,
/// `free` bytes free on its file system (`None`: unknown) and a free-space
/// `reserve`.
///
/// A full disk (less than the reserve free) comes first: the store deletes
/// enough to bring the free space a quarter of the reserve (at least
/// [`MIN_FREE_BYTES`]) above it, counting as already available the bytes
/// its files hold beyond its live data (free pages and the journal, which
/// giving back returns), and gives the space back. Otherwise a store over
/// budget deletes down to [`LOW_WATER_PERCENT`] of it.
pub fn plan(usage: &DiskUsage, budget: u64, free: Option<u64>, reserve: u64) -> Option<Eviction> {
    let floor = reserve.max(MIN_FREE_BYTES);
    let over_budget = usage
        .live_bytes
        .saturating_sub(budget / 100 * LOW_WATER_PERCENT);
    if let Some(free) = free.filter(|f| *f < floor) {
        let need = (floor - free).saturating_add((reserve / 4).max(MIN_FREE_BYTES));
        let reclaimable = usage.file_bytes.saturating_sub(usage.live_bytes);
        let bytes = need
            .saturating_sub(reclaimable)
            .max(if usage.live_bytes > budget {
                over_budget
            } else {
                0
            })
            .min(usage.live_bytes);
        if bytes == 0 && reclaimable == 0 {
            // Nothing of the store's to give: someone else filled the disk.
            return None;
        }
        return Some(Eviction {
            reason: Reason::DiskFull,
            bytes,
            give_back: true,
        });
    }
    // Files more than BLOATED_FACTOR times the budget: a burst overshot it
    // between checks (the file keeps its high-water mark) or readers kept
    // the journal from being reset. This eviction hands the free pages and
    // the journal back too, so the files come back near the budget instead
    // of keeping the peak (seen in CI: 10 MB of files for a 3 MB budget).
    let bloated = usage.file_bytes > budget.saturating_mul(BLOATED_FACTOR);
    (usage.live_bytes > budget).then_some(Eviction {
        reason: Reason::Size,
        bytes: over_budget,
        give_back: bloated,
    })
}

/// A size eviction also gives space back when the store's files are more
/// than this many times its budget (see [`plan`]).
pub const BLOATED_FACTOR: u64 = 2;

/// The budget and the free-space reserve of one store, resolved against
/// the file system holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `retention.max_disk_bytes`, resolved ([`resolve_budget`]).
    pub budget: u64,
    /// `wal.min_free_bytes`, resolved for the store's file system.
    pub reserve: u64,
}

/// The budget the store sizes its journal from: the size budget, but at
/// most four times the free-space reserve (the journal gets a sixteenth of
/// it, so at most a quarter of the reserve). On a large disk (a 256 MiB
/// reserve) that changes nothing.
pub fn journal_budget(l: Limits) -> u64 {
    if l.reserve == 0 {
        return l.budget;
    }
    l.budget.min(l.reserve.saturating_mul(4))
}

/// One check: measures the store, publishes the gauges, and runs the
/// eviction [`plan`] asks for. `limits` are resolved from `config` and
/// `min_free_bytes` (the configured `wal.min_free_bytes`), and the budget
/// handed to the store, on the first check that can measure the store.
/// Returns the eviction that ran, if any.
pub async fn check_once(
    store: &dyn Retention,
    sink: &str,
    config: &RetentionConfig,
    min_free_bytes: u64,
    limits: &mut Option<Limits>,
    stats: &RetentionStats,
) -> Option<(Reason, EvictionReport)> {
    let usage = match store.disk_usage().await {
        Ok(Some(u)) => u,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(sink, error = %e, "cannot measure the store's size now");
            return None;
        }
    };
    let s = &stats.size;
    let Limits {
        budget: max,
        reserve,
    } = *limits.get_or_insert_with(|| {
        let l = match &usage.dir {
            Some(dir) => {
                let fs_size = crate::disk::fs_size_bytes(dir).ok();
                Limits {
                    budget: resolve_budget(config.max_disk_bytes, fs_size),
                    reserve: crate::disk::free_space_reserve(min_free_bytes, fs_size),
                }
            }
            // A database server: only an explicit budget; its disk is not ours.
            None => Limits {
                budget: if config.max_disk_bytes > 0 {
                    config.max_disk_bytes
                } else {
                    u64::MAX
                },
                reserve: 0,
            },
        };
        // The store sizes its journal from this: within the reserve too, or
        // on a disk smaller than the budget the journal alone (written in
        // full before a checkpoint copies it back) could take the reserve.
        store.set_disk_budget(journal_budget(l));
        tracing::info!(
            sink,
            max_disk_bytes = l.budget,
            min_free_bytes = l.reserve,
            "store size budget"
        );
        l
    });
    s.max_bytes
        .store(if max == u64::MAX { 0 } else { max }, Relaxed);
    s.file_bytes.store(usage.file_bytes, Relaxed);
    s.live_bytes.store(usage.live_bytes, Relaxed);
    s.oldest_ns.store(usage.oldest_ns.unwrap_or(0), Relaxed);
    let free = usage
        .dir
        .as_deref()
        .and_then(|d| crate::disk::free_bytes(d).ok());
    let ev = plan(&usage, max, free, reserve)?;
    let started = std::time::Instant::now();
    match store.evict_oldest(ev.bytes, ev.give_back).await {
        Ok(report) => {
            s.count(ev.reason, report.spans_deleted);
            s.evicted_before_ns.fetch_max(report.cutoff_ns, Relaxed);
            let took_ms = started.elapsed().as_millis() as u64;
            stats.spans_deleted.fetch_add(report.spans_deleted, Relaxed);
            stats
                .rollups_deleted
                .fetch_add(report.rollups_deleted, Relaxed);
            if ev.reason == Reason::DiskFull {
                tracing::warn!(
                    sink,
                    free_bytes = free.unwrap_or(0),
                    reserve_bytes = reserve,
                    spans = report.spans_deleted,
                    cutoff_ns = report.cutoff_ns,
                    took_ms,
                    "disk full: deleted the oldest stored spans and gave the space back"
                );
            } else {
                tracing::info!(
                    sink,
                    live_bytes = usage.live_bytes,
                    max_disk_bytes = max,
                    spans = report.spans_deleted,
                    cutoff_ns = report.cutoff_ns,
                    file_bytes = usage.file_bytes,
                    gave_back = ev.give_back,
                    took_ms,
                    "store over its size budget: deleted the oldest spans"
                );
            }
            if let Ok(Some(after)) = store.disk_usage().await {
                s.file_bytes.store(after.file_bytes, Relaxed);
                s.live_bytes.store(after.live_bytes, Relaxed);
                s.oldest_ns.store(after.oldest_ns.unwrap_or(0), Relaxed);
            }
            Some((ev.reason, report))
        }
        Err(e) => {
            stats.failures.fetch_add(1, Relaxed);
            tracing::warn!(sink, error = %e, reason = ev.reason.as_str(), "eviction failed; retrying at the next check");
            None
        }
    }
}

/// Runs [`check_once`] every `retention.size_check_interval_ms` until
/// `shutdown` turns true (or its sender is dropped). `min_free_bytes` is
/// the configured free-space reserve the write-ahead log keeps
/// (`wal.min_free_bytes`, 0 = automatic), resolved for the store's disk.
pub async fn run(
    store: Arc<dyn Retention>,
    sink: &'static str,
    config: RetentionConfig,
    min_free_bytes: u64,
    stats: Arc<RetentionStats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_millis(config.size_check_interval_ms.max(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut limits = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // One eviction may not be enough (a burst, an estimate that
                // came out low): check again at once while it deletes.
                while check_once(store.as_ref(), sink, &config, min_free_bytes, &mut limits, &stats)
                    .await
                    .is_some_and(|(_, r)| r.spans_deleted > 0)
                {
                    if *shutdown.borrow() {
                        return;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn usage(file: u64, live: u64) -> DiskUsage {
        DiskUsage {
            dir: Some(".".into()),
            file_bytes: file,
            live_bytes: live,
            oldest_ns: Some(1),
        }
    }

    #[test]
    fn under_budget_with_free_space_nothing_happens() {
        assert_eq!(
            plan(
                &usage(50 * MIB, 50 * MIB),
                100 * MIB,
                Some(1 << 30),
                16 * MIB
            ),
            None
        );
        // Free space unknown: only the budget counts.
        assert_eq!(
            plan(&usage(50 * MIB, 50 * MIB), 100 * MIB, None, 16 * MIB),
            None
        );
    }

    #[test]
    fn over_budget_evicts_down_to_the_low_water_mark_and_keeps_the_space() {
        let ev = plan(
            &usage(120 * MIB, 110 * MIB),
            100 * MIB,
            Some(1 << 30),
            16 * MIB,
        )
        .expect("evict");
        assert_eq!(ev.reason, Reason::Size);
        assert_eq!(ev.bytes, 110 * MIB - 100 * MIB / 100 * LOW_WATER_PERCENT);
        assert!(!ev.give_back, "freed pages are reused inside the store");
        // Exactly at the budget is within it.
        assert_eq!(plan(&usage(100 * MIB, 100 * MIB), 100 * MIB, None, 0), None);
    }

    #[test]
    fn over_budget_with_files_past_twice_the_budget_also_gives_space_back() {
        let ev = plan(
            &usage(201 * MIB, 110 * MIB),
            100 * MIB,
            Some(1 << 30),
            16 * MIB,
        )
        .expect("evict");
        assert_eq!(
            (ev.reason, ev.bytes, ev.give_back),
            (
                Reason::Size,
                110 * MIB - 100 * MIB / 100 * LOW_WATER_PERCENT,
                true
            )
        );
        // Exactly twice the budget keeps its pages for reuse.
        let ev = plan(
            &usage(200 * MIB, 110 * MIB),
            100 * MIB,
            Some(1 << 30),
            16 * MIB,
        )
        .expect("evict");
        assert!(!ev.give_back);
        // Within the budget nothing runs, however large the files.
        assert_eq!(plan(&usage(300 * MIB, 90 * MIB), 100 * MIB, None, 0), None);
    }

    #[test]
    fn a_full_disk_evicts_what_brings_free_space_back_above_the_reserve() {
        // 2 MiB free, 16 MiB reserve: 14 MiB short, plus a quarter of the
        // reserve of headroom; the files hold 3 MiB beyond the live data
        // (free pages, journal), which giving back returns without deleting.
        let ev = plan(
            &usage(33 * MIB, 30 * MIB),
            100 * MIB,
            Some(2 * MIB),
            16 * MIB,
        )
        .expect("evict");
        assert_eq!(ev.reason, Reason::DiskFull);
        assert!(ev.give_back);
        assert_eq!(ev.bytes, 14 * MIB + 4 * MIB - 3 * MIB);
    }

    #[test]
    fn a_full_disk_gives_back_free_pages_before_deleting() {
        let ev = plan(&usage(40 * MIB, 10 * MIB), 100 * MIB, Some(0), 16 * MIB).expect("evict");
        assert_eq!(
            (ev.reason, ev.bytes, ev.give_back),
            (Reason::DiskFull, 0, true)
        );
    }

    #[test]
    fn a_full_disk_never_asks_for_more_than_the_store_holds() {
        let ev = plan(&usage(5 * MIB, 5 * MIB), 100 * MIB, Some(0), 64 * MIB).expect("evict");
        assert_eq!(ev.bytes, 5 * MIB);
        // An empty store has nothing to give: someone else filled the disk.
        assert_eq!(plan(&usage(0, 0), 100 * MIB, Some(0), 64 * MIB), None);
    }

    #[test]
    fn a_full_disk_over_budget_deletes_at_least_the_size_excess() {
        let ev = plan(
            &usage(200 * MIB, 200 * MIB),
            100 * MIB,
            Some(15 * MIB),
            16 * MIB,
        )
        .expect("evict");
        assert_eq!(ev.reason, Reason::DiskFull);
        assert_eq!(ev.bytes, 200 * MIB - 90 * MIB);
    }

    #[test]
    fn the_reserve_has_a_floor() {
        // Reserve 0 (unknown file system): a disk with under 1 MiB free is full.
        let ev = plan(&usage(10 * MIB, 10 * MIB), 100 * MIB, Some(1000), 0).expect("evict");
        assert_eq!(ev.reason, Reason::DiskFull);
        assert_eq!(
            plan(&usage(10 * MIB, 10 * MIB), 100 * MIB, Some(2 * MIB), 0),
            None
        );
    }

    #[test]
    fn the_journal_stays_within_the_reserve() {
        let l = |budget, reserve| Limits { budget, reserve };
        // A 1 GiB budget on a 64 MiB disk (16 MiB reserve): sized as 64 MiB.
        assert_eq!(journal_budget(l(1 << 30, 16 * MIB)), 64 * MIB);
        assert_eq!(journal_budget(l(32 * MIB, 16 * MIB)), 32 * MIB);
        assert_eq!(journal_budget(l(100 << 30, 256 * MIB)), 1 << 30);
        assert_eq!(journal_budget(l(5 * MIB, 0)), 5 * MIB);
    }

    #[test]
    fn the_budget_defaults_to_half_the_file_system() {
        assert_eq!(resolve_budget(0, Some(64 * MIB)), 32 * MIB);
        assert_eq!(resolve_budget(5 * MIB, Some(64 * MIB)), 5 * MIB);
        assert_eq!(resolve_budget(0, None), FALLBACK_BUDGET_BYTES);
    }
}
