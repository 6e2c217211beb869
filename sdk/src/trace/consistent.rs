//! Consistent probability sampling (OpenTelemetry "TraceState: Probability
//! Sampling"): a 56-bit rejection threshold `th` compared with 56 bits of
//! trace randomness `R` — the explicit `rv` sub-key when present, else the
//! trace id's least-significant 7 bytes (W3C Trace Context Level 2). A span
//! is kept when `R >= th`, so a trace kept at probability `p` is kept at every
//! probability above `p`, in every service and every SDK that follows the
//! specification. The threshold a sampled span was kept with travels in the
//! `ot` entry of `tracestate` (`ot=th:fd70a` for 1%), so every later stage
//! (children, the collector) knows the span's adjusted count `1/p`.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::context::{SpanContext, TraceState};
use crate::ids::TraceId;
use crate::trace::diagnostics::{self, Diagnostic};

/// `2^56`: the number of distinct randomness values (and the adjusted count
/// of the smallest probability).
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
/// Hex digits in a full-precision `th` or `rv` value.
const HEX_DIGITS: u32 = 14;
/// Default significant hex digits of a threshold computed from a probability
/// (the specification recommends 4; more are added near 0, see
/// [`Threshold::from_probability_with_precision`]).
pub const DEFAULT_PRECISION: u32 = 4;
/// The `tracestate` key of OpenTelemetry's entry.
pub const OT_KEY: &str = "ot";
/// Longest `ot` value (W3C member values are at most 256 characters).
const MAX_OT_LEN: usize = 256;

/// A 56-bit rejection threshold: out of `2^56` equally likely randomness
/// values, how many are rejected. `0` keeps everything (probability 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

/// Why an `ot` sub-key value could not be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OtValueError {
    /// `th` is not 1 to 14 hex digits.
    #[error("invalid th value {0:?}: expected 1 to 14 hex digits")]
    Threshold(String),
    /// `rv` is not exactly 14 hex digits.
    #[error("invalid rv value {0:?}: expected exactly 14 hex digits")]
    Randomness(String),
    /// A probability outside `[2^-56, 1]` (or NaN).
    #[error("sampling probability {0} is outside [2^-56, 1]")]
    Probability(f64),
}

fn parse_hex_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

impl Threshold {
    /// Probability 1: nothing rejected (`th:0`).
    pub const ALWAYS_SAMPLE: Threshold = Threshold(0);

    /// A threshold from its 56-bit integer value (`None` if it needs more than 56 bits).
    pub const fn from_u64(value: u64) -> Option<Threshold> {
        if value < MAX_ADJUSTED_COUNT {
            Some(Threshold(value))
        } else {
            None
        }
    }

    /// The 56-bit integer value.
    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// The threshold for `probability` with [`DEFAULT_PRECISION`] hex digits.
    ///
    /// ```
    /// use ferrotrace::trace::consistent::Threshold;
    /// assert_eq!(Threshold::from_probability(0.5).unwrap().to_th(), "8");
    /// assert_eq!(Threshold::from_probability(0.25).unwrap().to_th(), "c");
    /// assert_eq!(Threshold::from_probability(0.01).unwrap().to_th(), "fd70a");
    /// assert_eq!(Threshold::from_probability(1.0).unwrap().to_th(), "0");
    /// ```
    pub fn from_probability(probability: f64) -> Result<Threshold, OtValueError> {
        Self::from_probability_with_precision(probability, DEFAULT_PRECISION)
    }

    /// The threshold `(1 - p) * 2^56`, rounded to `precision` significant hex
    /// digits (1 to 14). Precision is raised by one digit for every leading
    /// `0` or `f` the exact value would have (probabilities near 0 or 1), so
    /// the relative error of the adjusted count stays small, as the
    /// specification's reference algorithm does.
    pub fn from_probability_with_precision(
        probability: f64,
        precision: u32,
    ) -> Result<Threshold, OtValueError> {
        let min = 1.0 / MAX_ADJUSTED_COUNT as f64;
        if !(min..=1.0).contains(&probability) {
            return Err(OtValueError::Probability(probability));
        }
        if probability == 1.0 {
            return Ok(Threshold::ALWAYS_SAMPLE);
        }
        let precision = precision.clamp(1, HEX_DIGITS) as i32;
        let extra_f = -frexp_exp(probability) / 4;
        let extra_r = -frexp_exp(1.0 - probability) / 4;
        let precision = (precision + extra_f.max(extra_r)).min(HEX_DIGITS as i32) as u32;
        let scaled = (probability * MAX_ADJUSTED_COUNT as f64).round() as u64;
        let mut threshold = MAX_ADJUSTED_COUNT - scaled.min(MAX_ADJUSTED_COUNT);
        let shift = 4 * (HEX_DIGITS - precision);
        if shift != 0 {
            threshold = ((threshold + (1u64 << (shift - 1))) >> shift) << shift;
        }
        // Rounding up can reach 2^56 only for probabilities that round to 0;
        // keep the smallest probability instead.
        Ok(Threshold(threshold.min(MAX_ADJUSTED_COUNT - 1)))
    }

    /// Parses a `th` value: 1 to 14 hex digits, extended with trailing zeros.
    pub fn parse_th(s: &str) -> Result<Threshold, OtValueError> {
        if s.len() > HEX_DIGITS as usize {
            return Err(OtValueError::Threshold(truncate_for_error(s)));
        }
        let v = parse_hex_u64(s).ok_or_else(|| OtValueError::Threshold(truncate_for_error(s)))?;
        Ok(Threshold(v << (4 * (HEX_DIGITS - s.len() as u32))))
    }

    /// The `th` value: lowercase hex with trailing zeros removed (`0` for probability 1).
    pub fn to_th(self) -> String {
        if self.0 == 0 {
            return "0".to_string();
        }
        let full = format!("{:014x}", self.0);
        full.trim_end_matches('0').to_string()
    }

    /// The sampling probability `(2^56 - th) / 2^56`.
    pub fn probability(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    /// The adjusted count `2^56 / (2^56 - th)`: how many spans a kept span stands for.
    pub fn adjusted_count(self) -> f64 {
        MAX_ADJUSTED_COUNT as f64 / (MAX_ADJUSTED_COUNT - self.0) as f64
    }

    /// True when randomness `r` is kept by this threshold (`r >= th`).
    #[inline]
    pub fn keeps(self, r: Randomness) -> bool {
        r.0 >= self.0
    }
}

/// The base-2 exponent `e` of `frexp(x)` (`x = m * 2^e`, `0.5 <= m < 1`), for `x > 0`.
fn frexp_exp(x: f64) -> i32 {
    if x <= 0.0 || !x.is_finite() {
        return 0;
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: normalise first.
        return frexp_exp(x * (1u64 << 54) as f64) - 54;
    }
    exp - 1022
}

fn truncate_for_error(s: &str) -> String {
    s.chars().take(32).collect()
}

/// 56 bits of trace randomness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

impl Randomness {
    /// The trace id's least-significant 7 bytes (W3C Trace Context Level 2).
    #[inline]
    pub fn from_trace_id(trace_id: TraceId) -> Randomness {
        let b = trace_id.to_bytes();
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&b[9..]);
        Randomness(u64::from_be_bytes(low))
    }

    /// Parses an `rv` value: exactly 14 hex digits.
    pub fn parse_rv(s: &str) -> Result<Randomness, OtValueError> {
        if s.len() != HEX_DIGITS as usize {
            return Err(OtValueError::Randomness(truncate_for_error(s)));
        }
        parse_hex_u64(s)
            .map(Randomness)
            .ok_or_else(|| OtValueError::Randomness(truncate_for_error(s)))
    }

    /// A value from its 56-bit integer (`None` if it needs more than 56 bits).
    pub const fn from_u64(value: u64) -> Option<Randomness> {
        if value < MAX_ADJUSTED_COUNT {
            Some(Randomness(value))
        } else {
            None
        }
    }

    /// The 56-bit integer value.
    pub const fn to_u64(self) -> u64 {
        self.0
    }
}

/// The OpenTelemetry `ot` entry of a `tracestate`, parsed:
/// `th` and `rv` interpreted, other sub-keys kept in order.
///
/// Malformed input never fails the whole entry: a sub-key that does not
/// follow the grammar (`key = lcalpha *(lcalpha / DIGIT)`, value characters
/// `A-Z a-z 0-9 . _ -`) is dropped, a `th` or `rv` with a bad value is
/// treated as absent (and dropped when the entry is rewritten), and a repeated
/// key keeps its first value — the same rule the SDK uses for `tracestate`
/// keys. A threshold that cannot be trusted is erased rather than guessed,
/// which the specification requires of every sampling stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtState {
    /// The rejection threshold, if present and valid.
    pub th: Option<Threshold>,
    /// The explicit randomness, if present and valid.
    pub rv: Option<Randomness>,
    /// Other well-formed sub-keys, in order.
    pub rest: Vec<(String, String)>,
    /// How many sub-keys were malformed (dropped), including bad `th`/`rv` values.
    pub malformed: usize,
}

fn valid_ot_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn valid_ot_value(v: &str) -> bool {
    v.bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

impl OtState {
    /// Parses an `ot` value (`th:8;rv:...;k:v`). Never fails; see the type docs.
    pub fn parse(value: &str) -> OtState {
        let mut out = OtState::default();
        let mut seen_th = false;
        let mut seen_rv = false;
        for member in value.split(';') {
            if member.is_empty() {
                continue;
            }
            let Some((k, v)) = member.split_once(':') else {
                out.malformed += 1;
                continue;
            };
            if !valid_ot_key(k) || !valid_ot_value(v) {
                out.malformed += 1;
                continue;
            }
            match k {
                "th" => {
                    if std::mem::replace(&mut seen_th, true) {
                        continue;
                    }
                    match Threshold::parse_th(v) {
                        Ok(t) => out.th = Some(t),
                        Err(_) => out.malformed += 1,
                    }
                }
                "rv" => {
                    if std::mem::replace(&mut seen_rv, true) {
                        continue;
                    }
                    match Randomness::parse_rv(v) {
                        Ok(r) => out.rv = Some(r),
                        Err(_) => out.malformed += 1,
                    }
                }
                _ => {
                    if !out.rest.iter().any(|(e, _)| e == k) {
                        out.rest.push((k.to_string(), v.to_string()));
                    }
                }
            }
        }
        out
    }

    /// The `ot` of a trace state (empty when there is none).
    pub fn of(ts: &TraceState) -> OtState {
        ts.get(OT_KEY).map(OtState::parse).unwrap_or_default()
    }

    /// Encodes the value (`th` first, then `rv`, then the rest); `None` when
    /// nothing is left. If the other sub-keys would push the value past 256
    /// characters they are left out, so `th` and `rv` always fit.
    pub fn encode(&self) -> Option<String> {
        let mut out = String::new();
        let push = |out: &mut String, k: &str, v: &str| {
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(k);
            out.push(':');
            out.push_str(v);
        };
        if let Some(th) = self.th {
            push(&mut out, "th", &th.to_th());
        }
        if let Some(rv) = self.rv {
            push(&mut out, "rv", &format!("{:014x}", rv.0));
        }
        for (k, v) in &self.rest {
            if out.len() + k.len() + v.len() + 2 > MAX_OT_LEN {
                break;
            }
            push(&mut out, k, v);
        }
        (!out.is_empty()).then_some(out)
    }

    /// `ts` with its `ot` entry replaced by this one (moved to the front, as
    /// W3C asks of an updated member), or removed when this one is empty.
    pub fn apply_to(&self, ts: &TraceState) -> TraceState {
        match self.encode() {
            // Every character encode() emits is valid in a tracestate value.
            Some(v) => ts.insert(OT_KEY, v).unwrap_or_else(|_| ts.delete(OT_KEY)),
            None => ts.delete(OT_KEY),
        }
    }
}

/// The trace randomness for a span: the parent's explicit `rv` when valid,
/// else the trace id's low 56 bits. The specification lets samplers presume
/// the trace id is random; when a parent says it is not (random flag clear)
/// and carries no `rv`, a warning is reported once per process, as the
/// specification asks, to help finding services not yet on Level 2.
#[inline]
pub(crate) fn randomness(
    parent: Option<&SpanContext>,
    ot: &OtState,
    trace_id: TraceId,
) -> Randomness {
    if let Some(rv) = ot.rv {
        return rv;
    }
    if let Some(p) = parent {
        if !p.trace_flags().is_random() {
            warn_presumed_randomness(trace_id);
        }
    }
    Randomness::from_trace_id(trace_id)
}

static WARNED_PRESUMED: AtomicBool = AtomicBool::new(false);

fn warn_presumed_randomness(trace_id: TraceId) {
    if !WARNED_PRESUMED.swap(true, Ordering::Relaxed) {
        diagnostics::report(Diagnostic::Config(format!(
            "consistent probability sampling presumes the trace id is random for trace {trace_id}, whose parent's traceparent does not set the W3C Level 2 random flag (0x02) and whose tracestate has no ot=rv: upgrade the calling service's SDK so sampling stays consistent across services (reported once)"
        )));
    }
}

/// What a decision does to the `th` sub-key of the parent's trace state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThUpdate {
    /// Keep the parent's trace state as it is.
    Keep,
    /// Remove `th` (unknown or no probability).
    Erase,
    /// Record this threshold.
    Set(Threshold),
}

/// The trace state after `update`, or `None` when the parent's is kept as is
/// (no allocation). `root_state` is the pre-built `ot=th:..` for a `Set` on
/// an empty parent trace state.
pub(crate) fn updated_state(
    parent: Option<&SpanContext>,
    update: ThUpdate,
    root_state: Option<&TraceState>,
) -> Option<TraceState> {
    let ts = parent.map(SpanContext::trace_state);
    let empty = ts.is_none_or(TraceState::is_empty);
    match update {
        ThUpdate::Keep => None,
        ThUpdate::Erase if empty => None,
        ThUpdate::Erase => {
            let ts = ts?;
            let ot_raw = ts.get(OT_KEY)?;
            if !has_th_member(ot_raw) {
                // Nothing to erase: the parent's state is kept as it is.
                return None;
            }
            let mut ot = OtState::parse(ot_raw);
            ot.th = None;
            Some(ot.apply_to(ts))
        }
        ThUpdate::Set(t) => {
            if empty {
                if let Some(rs) = root_state {
                    return Some(rs.clone());
                }
                return Some(
                    OtState {
                        th: Some(t),
                        ..Default::default()
                    }
                    .apply_to(&TraceState::NONE),
                );
            }
            let ts = ts?;
            let mut ot = OtState::of(ts);
            ot.th = Some(t);
            Some(ot.apply_to(ts))
        }
    }
}

/// The pre-built trace state `ot=th:<t>` for root spans.
pub(crate) fn root_state(t: Threshold) -> TraceState {
    OtState {
        th: Some(t),
        ..Default::default()
    }
    .apply_to(&TraceState::NONE)
}

/// A consistent probability sampler: keeps a span when the trace randomness
/// is at least the threshold for `probability`, and records that threshold
/// as `ot=th:..` on the spans it keeps (erasing any `th` on those it drops).
/// Independent of the parent's decision: use it as the root of
/// [`Sampler::ParentBased`](super::Sampler::ParentBased) to follow the
/// parent instead.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsistentProbability {
    probability: f64,
    /// `None` for probabilities below `2^-56` (or NaN): never sampled.
    threshold: Option<Threshold>,
    root_state: TraceState,
}

impl ConsistentProbability {
    /// A sampler keeping `probability` of traces (clamped to `[0, 1]`; below
    /// `2^-56` nothing is kept), threshold rounded to [`DEFAULT_PRECISION`].
    pub fn new(probability: f64) -> Self {
        Self::with_precision(probability, DEFAULT_PRECISION)
    }

    /// Like [`new`](Self::new) with `precision` significant hex digits (1-14).
    pub fn with_precision(probability: f64, precision: u32) -> Self {
        let p = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        let threshold = Threshold::from_probability_with_precision(p, precision).ok();
        ConsistentProbability {
            probability: p,
            threshold,
            root_state: threshold.map(root_state).unwrap_or_default(),
        }
    }

    /// The configured probability (after clamping).
    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// The threshold in force (`None`: nothing is sampled).
    pub fn threshold(&self) -> Option<Threshold> {
        self.threshold
    }

    /// The cheap decision when the parent's trace state is empty: a drop
    /// needs no trace state change. `None` when the full decision is needed.
    #[inline]
    pub(crate) fn quick_drop(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> Option<()> {
        if parent.is_some_and(|p| !p.trace_state().is_empty() || !p.trace_flags().is_random()) {
            return None;
        }
        match self.threshold {
            Some(t) if t.keeps(Randomness::from_trace_id(trace_id)) => None,
            _ => Some(()),
        }
    }

    /// The decision and the trace state to record.
    pub(crate) fn decide(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
    ) -> (bool, Option<TraceState>) {
        decide_threshold(parent, trace_id, self.threshold, Some(&self.root_state))
    }
}

/// The consistent decision for `threshold` (`None`: never) and the trace
/// state to record: `th` set on a kept span, erased on a dropped one.
pub(crate) fn decide_threshold(
    parent: Option<&SpanContext>,
    trace_id: TraceId,
    threshold: Option<Threshold>,
    root_state: Option<&TraceState>,
) -> (bool, Option<TraceState>) {
    let Some(p) = parent else {
        // A root: no trace state to read or keep, and the randomness is the
        // trace id's; what the general path below computes for it, without
        // building (and dropping) an empty `OtState` and without
        // `updated_state`'s parent checks. Every kept root span passes here.
        return match threshold {
            Some(t) if t.keeps(Randomness::from_trace_id(trace_id)) => (
                true,
                Some(root_state.map_or_else(|| self::root_state(t), TraceState::clone)),
            ),
            _ => (false, None),
        };
    };
    let parent = Some(p);
    let ot = OtState::of(p.trace_state());
    let r = randomness(parent, &ot, trace_id);
    match threshold {
        Some(t) if t.keeps(r) => (true, updated_state(parent, ThUpdate::Set(t), root_state)),
        _ => (false, updated_state(parent, ThUpdate::Erase, None)),
    }
}

/// What a parent-based decision (a sampled parent followed by `AlwaysOn`, an
/// unsampled one by `AlwaysOff`, or any other fixed answer) does to the
/// parent's `th`: kept when the span is sampled, the parent was sampled and
/// the threshold is consistent with the trace randomness (`R >= th`);
/// erased otherwise (an inconsistent threshold, a threshold on an unsampled
/// parent, or a span whose probability the parent's threshold does not describe).
#[inline]
pub(crate) fn parent_based_update(
    parent: &SpanContext,
    sampled: bool,
    trace_id: TraceId,
) -> ThUpdate {
    let ts = parent.trace_state();
    if ts.is_empty() {
        return ThUpdate::Keep;
    }
    let Some(raw) = ts.get(OT_KEY) else {
        return ThUpdate::Keep;
    };
    let ot = OtState::parse(raw);
    let Some(th) = ot.th else {
        // Nothing to check; a malformed th is erased by rewriting the entry.
        return if has_th_member(raw) {
            ThUpdate::Erase
        } else {
            ThUpdate::Keep
        };
    };
    if sampled && parent.is_sampled() && th.keeps(randomness(Some(parent), &ot, trace_id)) {
        ThUpdate::Keep
    } else {
        ThUpdate::Erase
    }
}

/// True if the parent's trace state carries an `ot` entry with a `th`
/// sub-key (valid or not): a decision that does not state a probability must
/// then rewrite the trace state.
#[inline]
pub(crate) fn parent_has_th(parent: Option<&SpanContext>) -> bool {
    parent.is_some_and(|p| {
        let ts = p.trace_state();
        !ts.is_empty() && ts.get(OT_KEY).is_some_and(has_th_member)
    })
}

/// True if an `ot` value has a `th` sub-key, valid or not.
fn has_th_member(ot: &str) -> bool {
    ot.split(';').any(|m| m.starts_with("th:"))
}
