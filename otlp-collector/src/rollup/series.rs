//! Series keys (looked up with borrowed strings), their weighted sums and
//! the unbiased rounding of those sums for the sinks' integer columns.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::LatencySketch;
use crate::model::{SpanId, SpanKind, TraceId};

pub(super) type SpanKey = (TraceId, SpanId);
pub(super) type HMap<K, V> = hashbrown::HashMap<K, V>;
pub(super) type HSet<K> = hashbrown::HashSet<K>;

/// An operation series. Looked up with [`OpKeyRef`] (borrowed strings), so a
/// span of a known series allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct OpKey {
    pub(super) minute: u64,
    pub(super) service: Arc<str>,
    pub(super) name: Box<str>,
    pub(super) kind: SpanKind,
}

pub(super) struct OpKeyRef<'a> {
    pub(super) minute: u64,
    pub(super) service: &'a str,
    pub(super) name: &'a str,
    pub(super) kind: SpanKind,
}

// The two hashes must agree: same fields, same order, strings as `str`.
impl Hash for OpKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        OpKeyRef {
            minute: self.minute,
            service: &self.service,
            name: &self.name,
            kind: self.kind,
        }
        .hash(h)
    }
}

impl Hash for OpKeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.minute.hash(h);
        self.service.hash(h);
        self.name.hash(h);
        h.write_u8(self.kind as u8);
    }
}

impl hashbrown::Equivalent<OpKey> for OpKeyRef<'_> {
    fn equivalent(&self, k: &OpKey) -> bool {
        self.minute == k.minute
            && self.kind == k.kind
            && self.name == &*k.name
            && self.service == &*k.service
    }
}

/// An edge series; looked up with [`EdgeKeyRef`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EdgeKey {
    pub(super) minute: u64,
    pub(super) caller: Arc<str>,
    pub(super) callee: Box<str>,
}

pub(super) struct EdgeKeyRef<'a> {
    pub(super) minute: u64,
    pub(super) caller: &'a str,
    pub(super) callee: &'a str,
}

impl Hash for EdgeKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        EdgeKeyRef {
            minute: self.minute,
            caller: &self.caller,
            callee: &self.callee,
        }
        .hash(h)
    }
}

impl Hash for EdgeKeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.minute.hash(h);
        self.caller.hash(h);
        self.callee.hash(h);
    }
}

impl hashbrown::Equivalent<EdgeKey> for EdgeKeyRef<'_> {
    fn equivalent(&self, k: &EdgeKey) -> bool {
        self.minute == k.minute && self.callee == &*k.callee && self.caller == &*k.caller
    }
}

/// One series' weighted sums: every span adds its adjusted count.
#[derive(Clone, Debug, Default)]
pub(super) struct Acc {
    pub(super) count: f64,
    pub(super) errors: f64,
    pub(super) sketch: LatencySketch,
}

impl Acc {
    pub(super) fn add(&mut self, duration_ns: u64, error: bool, weight: f64) {
        self.count += weight;
        if error {
            self.errors += weight;
        }
        self.sketch.add_weighted(duration_ns, weight);
    }
}

/// Unbiased integer rounding of a series' weighted `(count, errors)` for the
/// sinks' integer columns: both are rounded with the same uniform draw `u`
/// (`floor(x + u)`), so each has expectation exactly `x`, `errors <= count`
/// still holds, and integers (every span weighing 1) stay exact. A series
/// flushed in several partial rows adds at most one unit of noise per row
/// instead of a systematic bias.
pub(super) fn round_counts(count: f64, errors: f64, u: f64) -> (u64, u64) {
    let r = |x: f64| {
        // Weights are >= 1, so near-integers come from float addition:
        // snap them instead of letting `u` decide.
        let n = x.round();
        if (x - n).abs() < 1e-6 {
            n as u64
        } else {
            (x + u).floor() as u64
        }
    };
    let c = r(count);
    (c, r(errors).min(c))
}

/// splitmix64: the rounding draws (a deterministic sequence per aggregator,
/// no shared RNG; which series gets which draw follows the hash maps' order,
/// so totals may differ by a unit between processes, never on average).
pub(super) fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
