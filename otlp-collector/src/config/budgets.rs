//! One memory limit for the whole collector (`limits.memory_limit_mib`) and
//! the byte budgets of the components derived from it.
//!
//! Each of the three large in-memory buffers — the queue
//! (`queue.max_bytes`), request bodies in flight (`limits.max_inflight_bytes`)
//! and the tail-sampling buffer (`sampling.tail.max_bytes`) — gets a quarter
//! of the limit unless it is set explicitly. The last quarter is headroom for
//! what has no byte budget of its own: the runtime, batches on their way to
//! the sink, rollups, the sink's caches, decoding and allocator overhead.
//! Whatever the budgets miss, the memory guard ([`crate::memory`]) catches:
//! above the soft limit the receivers refuse new requests.
//!
//! The request size limits follow the in-flight budget unless set: a request
//! at the limits holds its body as received and inflated, twice for gRPC
//! (2 × (`max_request_bytes` + `max_decompressed_bytes`)), and that must fit
//! in the budget with room for other requests. Their defaults (8 and
//! 32 MiB) are therefore capped at a sixteenth and a quarter of the
//! budget: unchanged from 512 MiB of memory limit up, halved at 256 MiB
//! (4 and 16 MiB), so that a small limit starts without tuning.

use super::{Config, ConfigError, LimitsConfig};

/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;

pub use crate::receiver::limits::DEFAULT_MEMORY_LIMIT_MIB;

/// Each derived budget is the limit divided by this.
const SHARE_DIVISOR: u64 = 4;

/// Default of `limits.max_request_bytes` when the in-flight budget is large enough.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 << 20;
/// Default of `limits.max_decompressed_bytes` when the in-flight budget is large enough.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 32 << 20;
/// A derived `max_request_bytes` is at most the in-flight budget divided by this.
const REQUEST_SHARE_DIVISOR: u64 = 16;
/// A derived `max_decompressed_bytes` is at most the in-flight budget divided by this.
const DECOMPRESSED_SHARE_DIVISOR: u64 = 4;

impl LimitsConfig {
    /// The limit the derived budgets are shares of: `memory_limit_mib`, or
    /// its default when the guard is off (0).
    fn budget_basis(&self) -> u64 {
        match self.memory_limit_mib.saturating_mul(MIB) {
            0 => DEFAULT_MEMORY_LIMIT_MIB * MIB,
            b => b,
        }
    }

    /// The in-flight body budget in force: `max_inflight_bytes`, or a
    /// quarter of the memory limit.
    pub fn inflight_bytes(&self) -> u64 {
        self.max_inflight_bytes
            .map_or(self.budget_basis() / SHARE_DIVISOR, |v| v as u64)
    }

    /// `max_request_bytes` in force: as set, or 8 MiB capped at a
    /// sixteenth of the in-flight budget (see the module documentation).
    pub fn request_bytes(&self) -> usize {
        self.max_request_bytes.unwrap_or_else(|| {
            derived(
                DEFAULT_MAX_REQUEST_BYTES,
                self.inflight_bytes() / REQUEST_SHARE_DIVISOR,
            )
        })
    }

    /// `max_decompressed_bytes` in force: as set, or 32 MiB capped at a
    /// quarter of the in-flight budget (see the module documentation).
    pub fn decompressed_bytes(&self) -> usize {
        self.max_decompressed_bytes.unwrap_or_else(|| {
            derived(
                DEFAULT_MAX_DECOMPRESSED_BYTES,
                self.inflight_bytes() / DECOMPRESSED_SHARE_DIVISOR,
            )
        })
    }
}

/// `default`, capped at `cap` (at least 1 byte).
fn derived(default: usize, cap: u64) -> usize {
    usize::try_from(cap)
        .map_or(default, |c| default.min(c))
        .max(1)
}

/// The memory limit and the byte budgets in force, after deriving the ones
/// not set explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudgets {
    /// Hard limit on resident memory in bytes; 0 = no limit (no guard).
    pub limit_bytes: u64,
    /// Above this resident size the receivers refuse new requests.
    pub soft_limit_bytes: u64,
    /// `queue.max_bytes` in force.
    pub queue_bytes: u64,
    /// `limits.max_inflight_bytes` in force.
    pub inflight_bytes: usize,
    /// `sampling.tail.max_bytes` in force.
    pub tail_bytes: usize,
}

struct Budget {
    key: &'static str,
    bytes: u64,
    explicit: bool,
}

impl Budget {
    fn new(key: &'static str, set: Option<u64>, share: u64) -> Budget {
        Budget {
            key,
            bytes: set.unwrap_or(share),
            explicit: set.is_some(),
        }
    }

    fn describe(&self) -> String {
        let how = if self.explicit { "set" } else { "derived" };
        format!("{} = {} ({how})", self.key, mib(self.bytes))
    }
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

impl Config {
    /// The memory limit and the component budgets in force: explicit values
    /// as set, the others a quarter of `limits.memory_limit_mib` (of its
    /// default, 1024 MiB, when the limit is off). Fails when the budgets
    /// together do not fit under the soft limit, naming every key involved.
    pub fn memory_budgets(&self) -> Result<MemoryBudgets, ConfigError> {
        let l = &self.limits;
        if !(10..=100).contains(&l.memory_soft_limit_percent) {
            return Err(ConfigError::Invalid(format!(
                "limits.memory_soft_limit_percent = {} must be between 10 and 100",
                l.memory_soft_limit_percent
            )));
        }
        if l.memory_check_interval_ms == 0 || l.memory_check_interval_ms > 10_000 {
            return Err(ConfigError::Invalid(format!(
                "limits.memory_check_interval_ms = {} must be between 1 and 10000",
                l.memory_check_interval_ms
            )));
        }
        let limit_bytes = l.memory_limit_mib.saturating_mul(MIB);
        let share = l.budget_basis() / SHARE_DIVISOR;
        let soft_limit_bytes =
            (u128::from(limit_bytes) * u128::from(l.memory_soft_limit_percent) / 100) as u64;
        let queue = Budget::new("queue.max_bytes", self.queue.max_bytes, share);
        let inflight = Budget::new(
            "limits.max_inflight_bytes",
            l.max_inflight_bytes.map(|v| v as u64),
            share,
        );
        let tail = Budget::new(
            "sampling.tail.max_bytes",
            self.sampling.tail.max_bytes.map(|v| v as u64),
            share,
        );
        for b in [&queue, &inflight, &tail] {
            if b.bytes == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{} must be above 0 (leave it unset to derive it from limits.memory_limit_mib)",
                    b.key
                )));
            }
        }
        // The most one request can hold: a gRPC message as received, inflated,
        // and the uncompressed frame tonic buffers (which may carry trailing bytes).
        let largest = (l.request_bytes() as u64)
            .saturating_add(l.decompressed_bytes() as u64)
            .saturating_mul(2)
            .saturating_add(1024);
        if inflight.bytes < largest {
            let why = if inflight.explicit {
                format!("limits.max_inflight_bytes ({})", inflight.bytes)
            } else {
                format!(
                    "limits.max_inflight_bytes, derived as a quarter of limits.memory_limit_mib = {} ({}),",
                    l.memory_limit_mib,
                    mib(inflight.bytes)
                )
            };
            return Err(ConfigError::Invalid(format!(
                "{why} must be at least 2 × (limits.max_request_bytes + \
                 limits.max_decompressed_bytes) + 1024 = {largest}, or a request at the limits \
                 could never be read: lower limits.max_request_bytes / \
                 limits.max_decompressed_bytes (or leave them unset: they are then derived \
                 from the budget), or raise the budget"
            )));
        }
        if limit_bytes > 0 {
            let mut parts = vec![&queue, &inflight];
            if self.sampling.tail.enabled {
                parts.push(&tail);
            }
            let sum: u64 = parts.iter().map(|b| b.bytes).sum();
            if sum > soft_limit_bytes {
                let listed = parts
                    .iter()
                    .map(|b| b.describe())
                    .collect::<Vec<_>>()
                    .join(" + ");
                return Err(ConfigError::Invalid(format!(
                    "the memory budgets {listed} = {} do not fit under the soft memory limit \
                     {} (limits.memory_soft_limit_percent = {} of limits.memory_limit_mib = {}): \
                     lower the budgets set explicitly or raise limits.memory_limit_mib",
                    mib(sum),
                    mib(soft_limit_bytes),
                    l.memory_soft_limit_percent,
                    l.memory_limit_mib
                )));
            }
        }
        Ok(MemoryBudgets {
            limit_bytes,
            soft_limit_bytes,
            queue_bytes: queue.bytes,
            inflight_bytes: usize::try_from(inflight.bytes).unwrap_or(usize::MAX),
            tail_bytes: usize::try_from(tail.bytes).unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sampling::tail::{PolicyConfig, Rule};

    fn with(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        f(&mut c);
        c
    }

    #[test]
    fn defaults_derive_the_historical_budgets() {
        let b = Config::default().memory_budgets().unwrap();
        assert_eq!(b.limit_bytes, 1024 * MIB);
        assert_eq!(b.soft_limit_bytes, 1024 * MIB * 80 / 100);
        assert_eq!(b.queue_bytes, 256 * MIB);
        assert_eq!(b.inflight_bytes as u64, 256 * MIB);
        assert_eq!(b.tail_bytes as u64, 256 * MIB);
        Config::default().validate().unwrap();
    }

    #[test]
    fn budgets_follow_the_limit_unless_set() {
        let b = with(|c| {
            c.limits.memory_limit_mib = 400;
            c.queue.max_bytes = Some(50 * MIB);
        })
        .memory_budgets()
        .unwrap();
        assert_eq!(b.limit_bytes, 400 * MIB);
        assert_eq!(b.soft_limit_bytes, 320 * MIB);
        assert_eq!(b.queue_bytes, 50 * MIB);
        assert_eq!(b.inflight_bytes as u64, 100 * MIB);
        assert_eq!(b.tail_bytes as u64, 100 * MIB);
    }

    #[test]
    fn off_keeps_fixed_budgets_and_no_limit() {
        let b = with(|c| c.limits.memory_limit_mib = 0)
            .memory_budgets()
            .unwrap();
        assert_eq!(b.limit_bytes, 0);
        assert_eq!(b.soft_limit_bytes, 0);
        assert_eq!(b.queue_bytes, 256 * MIB);
        // Off means no sum check: huge explicit budgets are allowed.
        with(|c| {
            c.limits.memory_limit_mib = 0;
            c.queue.max_bytes = Some(64 << 30);
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn explicit_budgets_too_big_name_every_key() {
        let err = with(|c| {
            c.limits.memory_limit_mib = 512;
            c.queue.max_bytes = Some(300 * MIB);
        })
        .validate()
        .unwrap_err()
        .to_string();
        for want in [
            "queue.max_bytes = 300 MiB (set)",
            "limits.max_inflight_bytes = 128 MiB (derived)",
            "= 428 MiB",
            "soft memory limit 409.6 MiB",
            "limits.memory_soft_limit_percent = 80",
            "limits.memory_limit_mib = 512",
        ] {
            assert!(err.contains(want), "{want:?} not in {err}");
        }
        assert!(!err.contains("sampling.tail"), "tail is off: {err}");
        // With tail sampling on, its buffer counts too.
        let err = with(|c| {
            c.limits.memory_limit_mib = 1024;
            c.sampling.tail.enabled = true;
            c.sampling.tail.policies = vec![PolicyConfig {
                name: "all".into(),
                rule: Rule::Always,
            }];
            c.sampling.tail.max_bytes = Some(400 << 20);
        })
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sampling.tail.max_bytes = 400 MiB (set)"),
            "{err}"
        );
    }

    #[test]
    fn request_limits_follow_a_small_memory_limit() {
        // The defaults up from 512 MiB: 8 and 32 MiB.
        for limit in [512, 1024, 4096, 0] {
            let c = with(|c| c.limits.memory_limit_mib = limit);
            assert_eq!(c.limits.request_bytes(), 8 * MIB as usize, "{limit}");
            assert_eq!(c.limits.decompressed_bytes(), 32 * MIB as usize, "{limit}");
            c.validate().unwrap();
        }
        // 256 MiB with every other setting at its default starts: 4 and 16 MiB
        // (a request at the limits holds 40 of the 64 MiB in-flight budget).
        let c = with(|c| c.limits.memory_limit_mib = 256);
        c.validate().unwrap();
        assert_eq!(c.limits.request_bytes(), 4 * MIB as usize);
        assert_eq!(c.limits.decompressed_bytes(), 16 * MIB as usize);
        let b = c.memory_budgets().unwrap();
        assert_eq!(b.inflight_bytes as u64, 64 * MIB);
        // So do smaller limits; an explicit in-flight budget is the basis when set.
        for limit in [160, 64, 16] {
            with(|c| c.limits.memory_limit_mib = limit)
                .validate()
                .unwrap_or_else(|e| panic!("{limit}: {e}"));
        }
        let c = with(|c| {
            c.limits.memory_limit_mib = 1024;
            c.limits.max_inflight_bytes = Some(32 << 20);
        });
        assert_eq!(c.limits.request_bytes(), 2 << 20);
        assert_eq!(c.limits.decompressed_bytes(), 8 << 20);
        c.validate().unwrap();
        // Explicit request limits are kept as set, also when one alone is set.
        let c = with(|c| {
            c.limits.memory_limit_mib = 256;
            c.limits.max_request_bytes = Some(1 << 20);
        });
        assert_eq!(c.limits.request_bytes(), 1 << 20);
        assert_eq!(c.limits.decompressed_bytes(), 16 << 20);
    }

    #[test]
    fn explicit_request_limits_too_big_for_the_budget_are_refused() {
        // 160 MiB leaves 40 MiB for request bodies, less than one request at
        // 8 + 32 MiB (twice) needs.
        let err = with(|c| {
            c.limits.memory_limit_mib = 160;
            c.limits.max_request_bytes = Some(8 << 20);
            c.limits.max_decompressed_bytes = Some(32 << 20);
        })
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("derived as a quarter of limits.memory_limit_mib = 160")
                && err.contains("limits.max_request_bytes")
                && err.contains("leave them unset"),
            "{err}"
        );
        let b = with(|c| {
            c.limits.memory_limit_mib = 160;
            c.limits.max_request_bytes = Some(4 << 20);
            c.limits.max_decompressed_bytes = Some(8 << 20);
        })
        .memory_budgets()
        .unwrap();
        assert_eq!(b.inflight_bytes as u64, 40 * MIB);
        assert_eq!(b.soft_limit_bytes, 128 * MIB);
    }

    #[test]
    fn bad_guard_settings_are_rejected() {
        for (f, key) in [
            (
                with(|c| c.limits.memory_soft_limit_percent = 5),
                "memory_soft_limit_percent",
            ),
            (
                with(|c| c.limits.memory_check_interval_ms = 0),
                "memory_check_interval_ms",
            ),
            (with(|c| c.queue.max_bytes = Some(0)), "queue.max_bytes"),
        ] {
            let err = f.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
