//! The immutable, propagatable part of a span: ids, flags, trace state.

use crate::ids::{SpanId, TraceId};

/// W3C trace flags (8 bits). Trace Context Level 2 defines two: `sampled`
/// (`0x01`) and `random-trace-id` (`0x02`, the trace id's right-most 7 bytes
/// are random); the others are reserved and sent as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// No flags set.
    pub const NOT_SAMPLED: TraceFlags = TraceFlags(0);
    /// The `sampled` flag.
    pub const SAMPLED: TraceFlags = TraceFlags(1);
    /// The `random-trace-id` flag (W3C Trace Context Level 2).
    pub const RANDOM: TraceFlags = TraceFlags(2);
    /// The flags W3C Trace Context Level 2 defines (`sampled | random`); a
    /// `traceparent` carries only these, the reserved bits are sent as zero.
    pub const DEFINED: TraceFlags = TraceFlags(3);

    /// Flags from the raw byte.
    pub const fn new(bits: u8) -> Self {
        TraceFlags(bits)
    }
    /// The raw byte.
    pub const fn to_u8(self) -> u8 {
        self.0
    }
    /// True if the `sampled` bit is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & 1 == 1
    }
    /// A copy with the `sampled` bit set or cleared.
    pub const fn with_sampled(self, sampled: bool) -> Self {
        if sampled {
            TraceFlags(self.0 | 1)
        } else {
            TraceFlags(self.0 & !1)
        }
    }
    /// True if the `random-trace-id` bit is set: at least the right-most 7
    /// bytes of the trace id were drawn at random.
    pub const fn is_random(self) -> bool {
        self.0 & 2 == 2
    }
    /// A copy with the `random-trace-id` bit set or cleared.
    pub const fn with_random(self, random: bool) -> Self {
        if random {
            TraceFlags(self.0 | 2)
        } else {
            TraceFlags(self.0 & !2)
        }
    }
}

pub use super::trace_state::TraceState;

/// The identity of a span, as propagated across process boundaries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct SpanContext {
    trace_id: TraceId,
    span_id: SpanId,
    trace_flags: TraceFlags,
    is_remote: bool,
    trace_state: TraceState,
}

impl SpanContext {
    /// The invalid (empty) span context.
    pub const NONE: SpanContext = SpanContext {
        trace_id: TraceId::INVALID,
        span_id: SpanId::INVALID,
        trace_flags: TraceFlags::NOT_SAMPLED,
        is_remote: false,
        trace_state: TraceState::NONE,
    };

    /// Builds a span context.
    pub fn new(
        trace_id: TraceId,
        span_id: SpanId,
        trace_flags: TraceFlags,
        is_remote: bool,
        trace_state: TraceState,
    ) -> Self {
        SpanContext {
            trace_id,
            span_id,
            trace_flags,
            is_remote,
            trace_state,
        }
    }
    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }
    /// The span id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }
    /// The trace flags.
    pub fn trace_flags(&self) -> TraceFlags {
        self.trace_flags
    }
    /// True if the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.trace_flags.is_sampled()
    }
    /// True if this context was extracted from a remote parent.
    pub fn is_remote(&self) -> bool {
        self.is_remote
    }
    /// The W3C trace state.
    pub fn trace_state(&self) -> &TraceState {
        &self.trace_state
    }
    /// The trace state, moved out (no reference-count traffic).
    pub(crate) fn into_trace_state(self) -> TraceState {
        self.trace_state
    }
    /// True when both ids are valid (non-zero).
    pub fn is_valid(&self) -> bool {
        self.trace_id.is_valid() && self.span_id.is_valid()
    }
}
