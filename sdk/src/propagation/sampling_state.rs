//! Sampling states that B3 and Jaeger carry but W3C trace flags cannot: a
//! *debug* trace (B3 `d` / `X-B3-Flags: 1`, Jaeger flag `0x02`) and a *deferred*
//! decision (B3 without a sampling field).
//!
//! The state travels in the [`Context`] next to the span context it came with,
//! keyed by that span context's trace id: a child span started in the context
//! keeps the trace id, so the state is propagated with its requests, while a
//! context that moved on to another trace never sends a stale state.

use crate::context::Context;
use crate::ids::TraceId;

/// A sampling state received from a propagation format beyond W3C's `sampled` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplingState {
    /// Debug: sample and keep this trace whatever the sampling policy (implies sampled).
    Debug,
    /// Deferred: the sender made no decision; the receiver decides. The span
    /// context is extracted as not sampled, as in opentelemetry-java and -go, and
    /// the next hop is sent no decision either while the trace stays unsampled.
    Deferred,
}

/// The state stored in a [`Context`], with the trace it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemoteSamplingState {
    pub(crate) trace_id: TraceId,
    pub(crate) state: Option<SamplingState>,
}

/// The sampling state received with `cx`'s span context, if any. Only a state
/// that belongs to the context's current trace is returned.
///
/// ```
/// use std::collections::HashMap;
/// use ferrotrace::propagation::{sampling_state, B3Propagator, SamplingState, TextMapPropagator};
///
/// let mut headers = HashMap::new();
/// headers.insert("b3".to_string(), "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d".to_string());
/// let cx = B3Propagator::single().extract(&headers);
/// assert_eq!(sampling_state(&cx), Some(SamplingState::Debug));
/// assert!(cx.span_context().is_sampled(), "debug implies sampled");
/// ```
pub fn sampling_state(cx: &Context) -> Option<SamplingState> {
    let s = cx.get::<RemoteSamplingState>()?;
    (s.trace_id == cx.span_context().trace_id()).then_some(s.state)?
}

/// `cx` with `state` recorded for `trace_id` (replacing any earlier state, so an
/// extraction without a special state clears one left from another hop).
pub(crate) fn with_sampling_state(
    cx: &Context,
    trace_id: TraceId,
    state: Option<SamplingState>,
) -> Context {
    if state.is_none() && cx.get::<RemoteSamplingState>().is_none() {
        return cx.clone();
    }
    cx.with_value(RemoteSamplingState { trace_id, state })
}
