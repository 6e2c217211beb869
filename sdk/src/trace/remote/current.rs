//! The strategy in force as one thread sees it ([`Current`]): the compiled
//! strategy and a memo of the last span name looked up with its operation,
//! so spans under a repeated name skip the map.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::context::{SpanContext, TraceState};
use crate::ids::TraceId;
use crate::trace::consistent::{Randomness, Threshold};

use super::compiled::{lookup, Compiled, Operation};

/// Span names longer than this are not remembered by [`Current`] (looked up each time).
const MEMO_MAX_NAME: usize = 128;

/// `a == b` for span names, in line and without a `memcmp` call: the
/// remembered name is compared for every span, and names are short, where
/// the call costs more than the comparison. Equal lengths are compared with
/// two (overlapping) loads of the largest width that fits, from the front
/// and from the back, plus whole words in between for longer names.
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    #[inline(always)]
    fn w8(s: &[u8], i: usize) -> u64 {
        u64::from_ne_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]))
    }
    #[inline(always)]
    fn w4(s: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes(s[i..i + 4].try_into().unwrap_or([0; 4]))
    }
    #[inline(always)]
    fn w2(s: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes(s[i..i + 2].try_into().unwrap_or([0; 2]))
    }
    match n {
        0 => true,
        1 => a[0] == b[0],
        2..=3 => w2(a, 0) == w2(b, 0) && w2(a, n - 2) == w2(b, n - 2),
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if w8(a, i) != w8(b, i) {
                    return false;
                }
                i += 8;
            }
            w8(a, n - 8) == w8(b, n - 8)
        }
    }
}

/// The strategy in force as one thread sees it, with a memo of the last span
/// name looked up in a per-operation strategy and the operation found. Spans
/// of one thread mostly repeat a name (a handler's spans, a loop's), and a
/// sampled span is asked about twice (the quick drop, then the full
/// decision): a hit compares the name with the remembered one instead of
/// hashing it and probing the map. What a hit reads is in this struct (the
/// name inline, the operation's threshold copied): a root span's decision
/// follows no pointer past it, which is what its time went to.
pub(crate) struct Current {
    pub(crate) compiled: Arc<Compiled>,
    /// Points into `compiled`'s operations (or its default), which `compiled`
    /// keeps alive and never changes; reset whenever `compiled` is replaced.
    memo_op: Option<NonNull<Operation>>,
    /// The memo's operation has no lower bound: its threshold below is its
    /// whole decision.
    memo_plain: bool,
    /// The address of the remembered name when it was given as a `&'static
    /// str` and its operation has no lower bound; null otherwise. Text that
    /// lives for the whole program never changes, so a name at this address
    /// with the remembered length *is* the remembered name: the hit is two
    /// comparisons instead of reading and comparing the name's bytes (most
    /// span names are literals). Never set while `memo_op` is `None`.
    memo_static: *const u8,
    /// The memo's threshold as the least randomness a root must have to be
    /// kept ([`NEVER`] for probability 0).
    memo_cut: u64,
    memo_len: usize,
    memo_name: [u8; MEMO_MAX_NAME],
}

/// A cut no randomness reaches (randomness has 56 bits).
const NEVER: u64 = 1 << 56;

impl Current {
    pub(crate) fn new(compiled: Arc<Compiled>) -> Self {
        Current {
            compiled,
            memo_op: None,
            memo_plain: false,
            memo_static: std::ptr::null(),
            memo_cut: NEVER,
            memo_len: 0,
            memo_name: [0; MEMO_MAX_NAME],
        }
    }

    /// The remembered name's bytes.
    #[inline(always)]
    fn memo_name(&self) -> &[u8] {
        self.memo_name.get(..self.memo_len).unwrap_or_default()
    }

    /// The operation deciding spans named `name`; `None` unless per-operation.
    /// The memo is checked first: it is only ever set for a per-operation
    /// strategy, so a hit needs neither the strategy's kind nor the map.
    /// Always inlined: the hit is a few instructions, and as a call it made
    /// the quick drop of an unsampled root span slower despite fewer
    /// instructions.
    #[inline(always)]
    fn operation(&mut self, name: &str, is_static: bool) -> Option<&Operation> {
        if let Some(op) = self.memo_op {
            if same_name(self.memo_name(), name.as_bytes()) {
                // SAFETY: `memo_op` was taken from `self.compiled`, which is
                // immutable and still held (it is reset when replaced).
                return Some(unsafe { op.as_ref() });
            }
        }
        self.operation_miss(name, is_static)
    }

    /// [`operation`](Self::operation) past the memo: the map look-up, and
    /// the memo updated. Out of line, so the hit stays small enough to
    /// inline into both questions of the tracer.
    #[inline(never)]
    fn operation_miss(&mut self, name: &str, is_static: bool) -> Option<&Operation> {
        let Compiled::PerOperation {
            default,
            operations,
            unlisted,
        } = &*self.compiled
        else {
            return None;
        };
        let op = lookup(default, operations, unlisted, name);
        // Forgotten first: a memo half rewritten must never answer.
        self.memo_op = None;
        self.memo_static = std::ptr::null();
        if let Some(buf) = self.memo_name.get_mut(..name.len()) {
            buf.copy_from_slice(name.as_bytes());
            self.memo_len = name.len();
            self.memo_plain = !op.bounded;
            self.memo_cut = op.probability.threshold.map_or(NEVER, Threshold::to_u64);
            self.memo_op = Some(NonNull::from(op));
            if is_static && self.memo_plain {
                self.memo_static = name.as_ptr();
            }
        }
        Some(op)
    }

    /// [`Compiled::quick_drop`] through the memo.
    #[inline]
    pub(crate) fn quick_drop(
        &mut self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
    ) -> bool {
        match self.operation(name, false) {
            Some(op) => op.quick_drop(parent, trace_id),
            None => self.compiled.quick_drop(parent, trace_id, name),
        }
    }

    /// `name` is the remembered name, known by its `'static` address.
    #[inline(always)]
    fn is_static_hit(&self, name: &str) -> bool {
        name.as_ptr() == self.memo_static && name.len() == self.memo_len
    }

    /// True when a root span named by the `'static` `name` is dropped by
    /// the remembered operation: the memo's address hit and the cut, with
    /// no trace state to return. False says nothing (ask
    /// [`decide`](Self::decide)).
    #[inline(always)]
    pub(crate) fn static_root_drop(&self, trace_id: TraceId, name: &str) -> bool {
        self.is_static_hit(name) && Randomness::from_trace_id(trace_id).to_u64() < self.memo_cut
    }

    /// [`Compiled::decide`] through the memo; `None` before the first
    /// strategy (the initial sampler decides). `is_static`: `name` is a
    /// `&'static str` (the tracer knows it from the span name's `Cow`), so
    /// its address may be remembered. The memo hit of an operation without
    /// a lower bound (a span's common case) is always inlined into the
    /// per-thread cache's visit: as a call, its frame and the result's
    /// copies cost more than the decision itself.
    #[inline(always)]
    pub(crate) fn decide(
        &mut self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        is_static: bool,
    ) -> Option<(bool, Option<TraceState>)> {
        // (`is_static` first: callers that never have a `'static` name
        // compile the check away.)
        if is_static && self.is_static_hit(name) {
            if let Some(op) = self.memo_op {
                // SAFETY: as in `operation`.
                return Some(unsafe { op.as_ref() }.probability.decide(parent, trace_id));
            }
        }
        if let Some(op) = self.memo_op {
            if self.memo_plain && same_name(self.memo_name(), name.as_bytes()) {
                if is_static {
                    // The same text at another `'static` address (the memo
                    // was filled from another copy, or by `quick_drop`).
                    self.memo_static = name.as_ptr();
                }
                // SAFETY: as in `operation`.
                let op = unsafe { op.as_ref() };
                if parent.is_none() {
                    return Some(
                        if Randomness::from_trace_id(trace_id).to_u64() >= self.memo_cut {
                            (true, Some(op.probability.root_state.clone()))
                        } else {
                            (false, None)
                        },
                    );
                }
                return Some(op.probability.decide(parent, trace_id));
            }
        }
        self.decide_past_memo(parent, trace_id, name, is_static)
    }

    /// [`decide`](Self::decide) past the memo's unbounded hit: the map
    /// look-up, a lower bound, or a strategy that is not per-operation.
    #[inline(never)]
    fn decide_past_memo(
        &mut self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        is_static: bool,
    ) -> Option<(bool, Option<TraceState>)> {
        if let Some(op) = self.operation(name, is_static) {
            return Some(op.decide(parent, trace_id));
        }
        self.compiled.decide(parent, trace_id, name).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::remote::strategy::{OperationStrategy, PerOperation, StrategyResponse};

    /// The per-thread memo answers exactly as the map: alternating names,
    /// a name longer than the memo keeps, an unknown name (the default),
    /// and a new strategy (a new `Current`) never sees the old operation.
    #[test]
    fn operation_memo_answers_as_the_map() {
        let per_op = |keep: f64| {
            Arc::new(Compiled::from_response(&StrategyResponse::PerOperation(
                PerOperation {
                    default_probability: 0.0,
                    default_lower_bound_per_second: 0.0,
                    operations: vec![
                        OperationStrategy {
                            operation: "keep".into(),
                            probability: keep,
                        },
                        OperationStrategy {
                            operation: "drop".into(),
                            probability: 0.0,
                        },
                        OperationStrategy {
                            operation: "k".repeat(MEMO_MAX_NAME + 1),
                            probability: 1.0,
                        },
                    ],
                    operations_dropped: 0,
                },
            )))
        };
        let long = "k".repeat(MEMO_MAX_NAME + 1);
        let owned_keep = String::from("keep");
        // Literals sharing an address: "keepx"'s first four bytes are a
        // `'static` "keep" at the same address as the unlisted "keepx".
        let keepx: &'static str = "keepx";
        let keep_prefix: &'static str = &keepx[..4];
        let keep_suffix: &'static str = &"dropkeep"[4..];
        // (name, is it a `&'static str`, kept at probability 1)
        let names: [(&str, bool, bool); 9] = [
            ("keep", true, true),
            ("drop", true, false),
            (long.as_str(), false, true),
            ("unknown", true, false),
            (owned_keep.as_str(), false, true),
            (keep_prefix, true, true),
            (keepx, true, false),
            (keep_suffix, true, true),
            ("keep", true, true),
        ];
        let parent = SpanContext::new(
            TraceId::from_bytes([3; 16]),
            crate::ids::SpanId::from_bytes([4; 8]),
            crate::context::TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut cur = Current::new(per_op(1.0));
        let mut quick_drops = 0;
        for i in 0..400u32 {
            let trace_id = TraceId::from_bytes([(i % 251) as u8 + 1; 16]);
            // Runs of one name (the static hit) and changes between them.
            let (name, is_static, expect) = names[(i / 3) as usize % names.len()];
            // `decide` first: the tracer asks it alone, and `quick_drop`
            // re-fills the memo when the name changed.
            let quick = is_static && cur.static_root_drop(trace_id, name);
            let (keep, state) = cur.decide(None, trace_id, name, is_static).unwrap();
            assert_eq!(keep, expect, "{name}");
            if quick {
                assert!(!keep && state.is_none(), "{name}");
                quick_drops += 1;
            }
            // The same answers as the map-only path, with and without a parent.
            assert_eq!(
                cur.compiled.decide(None, trace_id, name).unwrap(),
                (keep, state),
                "{name}"
            );
            let p = Some(&parent);
            assert_eq!(
                cur.decide(p, parent.trace_id(), name, is_static),
                cur.compiled.decide(p, parent.trace_id(), name).ok(),
                "{name}"
            );
            assert_eq!(cur.quick_drop(None, trace_id, name), !expect, "{name}");
        }
        // The literal names dropped after the first of each run.
        assert!(quick_drops >= 40, "{quick_drops}");
        // A new strategy: "keep" is now dropped.
        let mut cur = Current::new(per_op(0.0));
        let t = TraceId::from_bytes([7; 16]);
        assert!(cur.quick_drop(None, t, "keep"));
        assert!(!cur.decide(None, t, "keep", true).unwrap().0);
        assert!(!cur.decide(None, t, "keep", true).unwrap().0);
    }

    #[test]
    fn same_name_is_string_equality() {
        let names = [
            "",
            "a",
            "b",
            "keep",
            "kept",
            "GET /api",
            "GET /apj",
            "GET /api/orders/{id}",
            "GET /api/orders/{ie}",
            "GET /api/orders/{id}x",
            "12345678",
            "12345679",
            "123456781234567",
            "123456781234568",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_name(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }
}
