//! The memory guard: holds the collector's resident memory under
//! `limits.memory_limit_mib` whatever the load.
//!
//! The byte budgets (queue, request bodies in flight, tail sampling) bound
//! what the collector holds on purpose; they cannot see allocator overhead,
//! decoding, batches on their way to the sink or the sink's caches. So a
//! background thread reads the process's resident size (`/proc/self/statm`,
//! a few microseconds) every `limits.memory_check_interval_ms` into an
//! atomic, and while it is above the soft limit the receivers refuse new
//! requests before reading their bodies — 429 + `Retry-After` / gRPC
//! `RESOURCE_EXHAUSTED` + `RetryInfo`, like a full queue — so clients back
//! off and retry while the pipeline drains. Requests already being read
//! when the soft limit is crossed are refused before they are queued, so
//! nothing more enters the pipeline until memory is back under it.
//!
//! A sample alone is not enough: between two samples many concurrent
//! requests can be read and decoded, and a decoded request takes several
//! times its body's size. So every byte a request is about to hold is
//! admitted against a projection ([`MemoryGuard::admits`]): resident memory
//! at the last sample, plus every body byte and decoding reserve held by
//! requests in flight, plus the new bytes, must stay under the soft limit.
//! Memory of a request that is already resident is counted twice until its
//! response is sent; that errs on the side of refusing. What a finished
//! request held stays in the projection until the next sample
//! ([`MemoryGuard::released`]): its decoded spans are now in the queue, but
//! the last sample predates them, and a sampling thread starved of CPU on a
//! busy machine would otherwise let one stale sample admit request after
//! request (CI once saw the peak 28 KiB over a 160 MiB limit). A request is always
//! admitted when no other request holds anything, so a collector whose
//! baseline is near its limit still makes progress one request at a time.
//!
//! glibc's malloc keeps freed memory mapped (per-thread arenas), so after a
//! spike the resident size can stay above the soft limit with nothing live
//! and the collector would refuse forever. While above the soft limit the
//! guard therefore calls `malloc_trim(0)` (at most every [`TRIM_EVERY`]),
//! which returns free pages of every arena to the OS. The same retention
//! also refuses requests *below* the soft limit: resident memory that is
//! mostly free heap sits just under it, and every request's projection
//! crosses it (a release-build overload run admitted 65% of what its sink
//! could take, refusing for memory with an empty queue). So a refusal asks
//! the guard thread to trim too ([`MemoryGuard::admits`]), and
//! [`tune_allocator`] makes glibc keep less freed memory in the first place
//! when a limit is set. Built with feature `mimalloc`, the collector binary
//! allocates with mimalloc (`src/main.rs`) and registers its explicit purge ([`set_heap_purge`]:
//! `mi_collect(true)`, which decommits every free page of mimalloc's arenas
//! at once instead of after its 1 s purge delay); the guard calls it before
//! `malloc_trim`, which still matters for what C libraries (SQLite) take
//! from glibc's malloc.
//!
//! Without `/proc` (not Linux) the guard is inert and the budgets alone apply.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::config::MemoryBudgets;
use crate::metrics::Metrics;

/// Shortest time between two `malloc_trim` calls: the call walks every
/// arena under its lock, so it must not run on every sample; four times a
/// second keeps a guard that refuses from doing so on stale free memory
/// for long.
pub const TRIM_EVERY: Duration = Duration::from_millis(250);

/// glibc's `M_TRIM_THRESHOLD` under a memory limit: free memory at the top
/// of an arena beyond this is returned at once. Setting it also fixes the
/// mmap threshold at its 128 KiB default (glibc otherwise raises both up to
/// 32/64 MiB after large frees), so large request buffers are unmapped when
/// freed instead of staying resident in an arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 20;

/// glibc's `M_ARENA_MAX` under a memory limit: fewer arenas, less freed
/// memory spread over them (glibc's default is 8 per core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: libc::c_int = 2;

/// Where the process stands against its memory limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    /// Under the soft limit (or no limit, or memory unknown).
    Normal,
    /// Above the soft limit: refuse new requests.
    Soft,
    /// Above the hard limit (refused like `Soft`; reported separately so
    /// callers can tell the limit itself was crossed).
    Hard,
}

/// The shared memory guard; see the module documentation.
#[derive(Debug)]
pub struct MemoryGuard {
    limit: u64,
    soft: u64,
    metrics: Arc<Metrics>,
    last_trim: parking_lot::Mutex<Option<Instant>>,
    /// Bytes held by requests that finished since the last sample.
    unsampled: AtomicU64,
    /// A request was refused since the last sample: trim the heap (if
    /// [`TRIM_EVERY`] allows) even below the soft limit.
    trim_wanted: AtomicBool,
}

impl MemoryGuard {
    /// Starts a guard for `budgets` sampling every `interval` on its own
    /// thread (which ends when the guard is dropped). With no limit
    /// (`limit_bytes == 0`) or no `/proc`, nothing is started and
    /// [`MemoryGuard::pressure`] is always [`Pressure::Normal`].
    pub fn start(
        budgets: &MemoryBudgets,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<MemoryGuard>> {
        let m = &metrics.memory;
        m.limit_bytes.store(budgets.limit_bytes, Relaxed);
        m.soft_limit_bytes.store(budgets.soft_limit_bytes, Relaxed);
        let guard = Arc::new(MemoryGuard {
            limit: budgets.limit_bytes,
            soft: budgets.soft_limit_bytes,
            metrics,
            last_trim: parking_lot::Mutex::new(None),
            unsampled: AtomicU64::new(0),
            trim_wanted: AtomicBool::new(false),
        });
        if guard.limit > 0 && resident_bytes().is_some() {
            guard.tick();
            let weak: Weak<MemoryGuard> = Arc::downgrade(&guard);
            std::thread::Builder::new()
                .name("memory-guard".into())
                .spawn(move || loop {
                    std::thread::sleep(interval);
                    match weak.upgrade() {
                        Some(g) => g.tick(),
                        None => return,
                    }
                })?;
        }
        Ok(guard)
    }

    /// A guard that never refuses (no limit); for tests and tools.
    pub fn disabled(metrics: Arc<Metrics>) -> Arc<MemoryGuard> {
        Arc::new(MemoryGuard {
            limit: 0,
            soft: 0,
            metrics,
            last_trim: parking_lot::Mutex::new(None),
            unsampled: AtomicU64::new(0),
            trim_wanted: AtomicBool::new(false),
        })
    }

    /// The pressure as of the last sample: one atomic load.
    pub fn pressure(&self) -> Pressure {
        if self.limit == 0 {
            return Pressure::Normal;
        }
        classify(
            self.metrics.memory.resident_bytes.load(Relaxed),
            self.soft,
            self.limit,
        )
    }

    /// Whether a request may take `extra` more bytes (body or decoding
    /// reserve) while it already holds `own`: the last resident sample plus
    /// everything requests in flight hold plus `extra` must fit under the
    /// soft limit, unless no other request holds anything. Always true
    /// without a limit. A refusal asks the next sample to trim the heap
    /// first: the resident size it projects from may be mostly free heap.
    pub fn admits(&self, extra: u64, own: u64) -> bool {
        if self.limit == 0 {
            return true;
        }
        let m = &self.metrics;
        let held = m
            .inflight_bytes
            .load(Relaxed)
            .saturating_add(m.memory.reserved_bytes.load(Relaxed));
        if held <= own {
            return true;
        }
        let fits = m
            .memory
            .resident_bytes
            .load(Relaxed)
            .saturating_add(self.unsampled.load(Relaxed))
            .saturating_add(held)
            .saturating_add(extra)
            <= self.soft;
        if !fits {
            self.trim_wanted.store(true, Relaxed);
        }
        fits
    }

    /// Records that a request which held `bytes` (body and decoding reserve)
    /// has finished: until the next sample they stay in the projection, as
    /// what they became (spans in the queue) is not in the last sample yet.
    pub fn released(&self, bytes: u64) {
        if self.limit > 0 && bytes > 0 {
            self.unsampled.fetch_add(bytes, Relaxed);
        }
    }

    /// Resident bytes at the last sample (0 if never sampled).
    pub fn resident_bytes(&self) -> u64 {
        self.metrics.memory.resident_bytes.load(Relaxed)
    }

    /// Samples resident memory; above the soft limit, or after a refusal,
    /// first hands freed heap memory back to the OS (rate-limited) and
    /// samples again.
    fn tick(&self) {
        // Taken before reading: a release after this point is in the next
        // projection even if this sample already saw it (errs on refusing).
        let unsampled = self.unsampled.swap(0, Relaxed);
        let Some(mut rss) = resident_bytes() else {
            self.unsampled.fetch_add(unsampled, Relaxed);
            return;
        };
        let refused = self.trim_wanted.swap(false, Relaxed);
        if rss > self.soft || refused {
            let mut last = self.last_trim.lock();
            if last.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
                *last = Some(Instant::now());
                if trim_heap() {
                    self.metrics.memory.trims.fetch_add(1, Relaxed);
                    rss = resident_bytes().unwrap_or(rss);
                }
            }
        }
        self.metrics.memory.resident_bytes.store(rss, Relaxed);
    }
}

/// Makes glibc's malloc return freed memory sooner (`M_TRIM_THRESHOLD`
/// 1 MiB, `M_ARENA_MAX` 2) when the collector runs under a memory limit. Call before
/// any thread is started (the arena limit only applies to arenas created
/// afterwards). Settings given through glibc's own environment variables
/// (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_ARENA_MAX`) are left as they are.
/// Measured: the same release binary with these two settings from the
/// environment admitted 56% more under overload at the same peak
/// (docs/reliability.md).
pub fn tune_allocator(memory_limited: bool) {
    if !memory_limited {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tunables; both values are
        // in range for their parameters.
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
        }
    }
}

fn classify(rss: u64, soft: u64, hard: u64) -> Pressure {
    if rss > hard {
        Pressure::Hard
    } else if rss > soft {
        Pressure::Soft
    } else {
        Pressure::Normal
    }
}

/// The process's resident set size in bytes, from `/proc/self/statm`
/// (second field, in pages).
#[cfg(target_os = "linux")]
pub fn resident_bytes() -> Option<u64> {
    use std::sync::OnceLock;
    static PAGE: OnceLock<u64> = OnceLock::new();
    let page = *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as u64
        } else {
            4096
        }
    });
    // The guard samples every `limits.memory_check_interval_ms` (10 ms by
    // default) for the life of the process: opening, sizing (`statx`) and
    // closing the file each time were three of the five system calls of a
    // sample, and the guard thread was ~7% of a router's CPU under load
    // (docs/benchmarks.md, "Session-11 router CPU"). The file stays open and
    // is read at offset 0, which makes the kernel generate it afresh.
    static STATM: OnceLock<Option<std::fs::File>> = OnceLock::new();
    let file = STATM
        .get_or_init(|| std::fs::File::open("/proc/self/statm").ok())
        .as_ref()?;
    // Seven decimal fields: far below 128 bytes.
    let mut buf = [0u8; 128];
    let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, 0).ok()?;
    let statm = std::str::from_utf8(&buf[..n]).ok()?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// The process's resident set size: unknown without `/proc`.
#[cfg(not(target_os = "linux"))]
pub fn resident_bytes() -> Option<u64> {
    None
}

/// The global allocator's own "return free memory now" call, if the binary
/// installed one (see [`set_heap_purge`]).
static HEAP_PURGE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers the global allocator's explicit purge, called by the guard
/// whenever it trims (above the soft limit or after a refusal, at most every
/// [`TRIM_EVERY`]). A binary that replaces glibc's malloc (the collector uses
/// mimalloc) calls this once at start; the first registration wins.
pub fn set_heap_purge(purge: fn()) {
    let _ = HEAP_PURGE.set(purge);
}

/// Returns free heap pages to the OS; true if an allocator supports it.
fn trim_heap() -> bool {
    let purged = HEAP_PURGE.get().map(|purge| purge()).is_some();
    trim_glibc() || purged
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_glibc() -> bool {
    // SAFETY: malloc_trim only releases memory glibc's malloc holds free.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_glibc() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_heap_purge_runs_with_every_trim() {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        set_heap_purge(|| {
            CALLS.fetch_add(1, Relaxed);
        });
        let before = CALLS.load(Relaxed);
        assert!(trim_heap());
        assert!(trim_heap());
        assert_eq!(CALLS.load(Relaxed), before + 2);
    }

    #[test]
    fn pressure_levels() {
        assert_eq!(classify(10, 80, 100), Pressure::Normal);
        assert_eq!(classify(80, 80, 100), Pressure::Normal);
        assert_eq!(classify(81, 80, 100), Pressure::Soft);
        assert_eq!(classify(101, 80, 100), Pressure::Hard);
    }

    /// The kept-open `/proc/self/statm` is generated afresh by every read:
    /// a sample after touching 64 MiB more sees them.
    #[cfg(target_os = "linux")]
    #[test]
    fn every_sample_reads_the_current_resident_size() {
        let before = resident_bytes().unwrap();
        let mut grown = vec![0u8; 64 << 20];
        for page in grown.chunks_mut(4096) {
            page[0] = 1;
        }
        let after = resident_bytes().unwrap();
        std::hint::black_box(&grown);
        // Margin for other tests of this process freeing memory meanwhile.
        assert!(after >= before + (32 << 20), "{before} -> {after}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn samples_resident_memory_and_refuses_above_the_soft_limit() {
        let rss = resident_bytes().unwrap();
        assert!(rss > 1 << 20, "{rss}");
        let metrics = Arc::new(Metrics::default());
        // A limit far below what this process already uses: refused at once.
        let tiny = MemoryBudgets {
            limit_bytes: 1 << 20,
            soft_limit_bytes: 1 << 19,
            queue_bytes: 1,
            inflight_bytes: 1,
            tail_bytes: 1,
        };
        let g = MemoryGuard::start(&tiny, Duration::from_millis(5), metrics.clone()).unwrap();
        assert_eq!(g.pressure(), Pressure::Hard);
        assert!(g.resident_bytes() > 0);
        assert!(metrics
            .render()
            .contains("ferrotrace_memory_limit_bytes 1048576"));
        // A generous limit: accepted.
        let big = MemoryBudgets {
            limit_bytes: 1 << 40,
            soft_limit_bytes: 1 << 39,
            ..tiny
        };
        let g = MemoryGuard::start(&big, Duration::from_millis(5), metrics).unwrap();
        assert_eq!(g.pressure(), Pressure::Normal);
        assert_eq!(
            MemoryGuard::disabled(Arc::new(Metrics::default())).pressure(),
            Pressure::Normal
        );
    }

    #[test]
    fn admission_projects_what_requests_in_flight_hold() {
        let metrics = Arc::new(Metrics::default());
        let g = MemoryGuard {
            limit: 1000,
            soft: 800,
            metrics: metrics.clone(),
            last_trim: parking_lot::Mutex::new(None),
            unsampled: AtomicU64::new(0),
            trim_wanted: AtomicBool::new(false),
        };
        let m = &metrics.memory;
        m.resident_bytes.store(500, Relaxed);
        // Alone: admitted even beyond the soft limit, so there is progress.
        assert!(g.admits(10_000, 0));
        // Others hold 200 (bodies) + 50 (reserves): 500 + 250 + 50 fits, 51 not.
        metrics.inflight_bytes.store(200, Relaxed);
        m.reserved_bytes.store(50, Relaxed);
        assert!(g.admits(50, 0));
        assert!(!g.admits(51, 0));
        // What the asking request holds itself counts once, not as "others".
        assert!(g.admits(50, 100));
        assert!(g.admits(10_000, 250));
        // A request that finished since the sample still counts: 50 more
        // would now overshoot; the next sample takes it out again.
        assert!(
            g.trim_wanted.swap(false, Relaxed),
            "a refusal asked for a trim"
        );
        g.released(1);
        assert!(!g.trim_wanted.load(Relaxed), "nothing refused since");
        assert!(!g.admits(50, 0));
        assert!(g.trim_wanted.load(Relaxed), "a refusal asks for a trim");
        assert!(g.admits(49, 0));
        g.tick();
        assert!(!g.trim_wanted.load(Relaxed), "the sample trimmed");
        assert_eq!(
            metrics.memory.trims.load(Relaxed),
            u64::from(cfg!(all(target_os = "linux", target_env = "gnu")))
        );
        assert_eq!(g.unsampled.load(Relaxed), 0);
        // No limit: always admitted.
        assert!(MemoryGuard::disabled(metrics).admits(u64::MAX, 0));
    }
}
