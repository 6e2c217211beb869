//! W3C Trace Context: the `traceparent` and `tracestate` headers.

use super::{Extractor, Injector, TextMapPropagator};
use crate::context::{Context, SpanContext, TraceFlags, TraceState};
use crate::ids::{hex8, parse_hex, write_hex, SpanId, TraceId};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Parses a `traceparent` value into trace id, span id and flags.
///
/// Version `00` must be exactly `00-<32 hex>-<16 hex>-<2 hex>`. A higher version
/// is read by its first four fields and may be followed by `-` and more data.
/// Version `ff`, wrong lengths, non-hex or uppercase characters, all-zero ids
/// and wrong separators are rejected (`None`). The flags Trace Context Level 2
/// defines are kept (`sampled` 0x01 and `random-trace-id` 0x02); reserved bits
/// are dropped, since they must be sent as zero.
///
/// ```
/// use ferrotrace::propagation::parse_traceparent;
/// assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
/// assert!(parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
/// assert!(parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
/// ```
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    parse_traceparent_bytes(value.as_bytes())
}

/// [`parse_traceparent`] of a header's raw bytes: what is not text is
/// rejected here (the four fields accept only hex digits and dashes; a
/// higher version's trailing data must be visible ASCII or tabs, as a text
/// header's), so the caller need not check the header is text first.
pub(crate) fn parse_traceparent_bytes(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let start = value.iter().position(|c| !blank(c)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|c| !blank(c))
        .map_or(start, |i| i + 1);
    let b = &value[start..end];
    if b.len() < 55 {
        return None;
    }
    let version = parse_hex::<1>(&b[0..2]).ok()?[0];
    if version == 0xff {
        return None;
    }
    if version == 0 {
        if b.len() != 55 {
            return None;
        }
    } else if b.len() > 55
        && (b[55] != b'-'
            || !b[56..]
                .iter()
                .all(|&c| c == b'\t' || (32..127).contains(&c)))
    {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_bytes(parse_hex::<16>(&b[3..35]).ok()?);
    let span_id = SpanId::from_bytes(parse_hex::<8>(&b[36..52]).ok()?);
    let flags = parse_hex::<1>(&b[53..55]).ok()?[0];
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    Some((
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::DEFINED.to_u8()),
    ))
}

/// Formats a `traceparent` (version `00`) without intermediate allocations.
pub(crate) fn format_traceparent(sc: &SpanContext) -> String {
    // The 55 bytes are written on the stack, then copied once into a string
    // of exactly that capacity (the header's only allocation).
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    let trace = sc.trace_id().to_bytes();
    let (hi, lo) = trace.split_at(8);
    buf[3..19].copy_from_slice(&hex8(hi.try_into().unwrap_or_default()));
    buf[19..35].copy_from_slice(&hex8(lo.try_into().unwrap_or_default()));
    buf[35] = b'-';
    buf[36..52].copy_from_slice(&hex8(sc.span_id().to_bytes()));
    buf[52] = b'-';
    write_hex(
        &[sc.trace_flags().to_u8() & TraceFlags::DEFINED.to_u8()],
        &mut buf[53..55],
    );
    debug_assert!(buf.is_ascii());
    // SAFETY: every byte of `buf` is ASCII, so the bytes are valid UTF-8:
    // `b"00-"` and `b'-'` are literals, `write_hex` takes its digits from an
    // ASCII table, and every byte `hex8` returns is a nibble (0..=15, masked)
    // plus at most `b'0' + 39`, i.e. at most 0x66. Skipping `from_utf8`'s
    // validation saves ~95 instructions per inject (a quarter of the cost
    // left besides the allocations and the carrier's hashing).
    unsafe { String::from_utf8_unchecked(buf.to_vec()) }
}

/// The W3C Trace Context propagator (`traceparent` + `tracestate`).
///
/// An invalid or absent `traceparent` (including two `traceparent` headers)
/// extracts nothing, so the next span starts a new trace; `tracestate` is then
/// ignored. An invalid `tracestate` (a malformed member, more than 32 members,
/// or a header line that is not ASCII text) is dropped as a whole while the
/// valid `traceparent` is kept; a repeated key keeps its first value.
/// The `random-trace-id` flag (Level 2) is extracted and injected unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextPropagator;

impl TraceContextPropagator {
    /// A new propagator.
    pub const fn new() -> Self {
        TraceContextPropagator
    }

    /// The span context carried by `extractor`, if valid (marked remote).
    pub fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        let tp = extractor.get_unique_bytes(TRACEPARENT)?;
        let (trace_id, span_id, flags) = parse_traceparent_bytes(tp)?;
        // A header line that is not text makes the combined list unknown:
        // invalid as a whole, like a malformed member (never the other lines alone).
        let trace_state =
            if extractor.get(TRACESTATE).is_none() || extractor.has_unreadable(TRACESTATE) {
                TraceState::NONE
            } else {
                TraceState::from_headers(extractor.get_all(TRACESTATE)).unwrap_or_default()
            };
        Some(SpanContext::new(
            trace_id,
            span_id,
            flags,
            true,
            trace_state,
        ))
    }
}

impl TextMapPropagator for TraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let sc = cx.span_context();
        if !sc.is_valid() {
            return;
        }
        let traceparent = format_traceparent(sc);
        match injector.as_header_map() {
            Some(headers) => super::insert_traceparent(headers, traceparent),
            None => injector.set(TRACEPARENT, traceparent),
        }
        if !sc.trace_state().is_empty() {
            injector.set(TRACESTATE, sc.trace_state().header());
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match self.extract_span_context(extractor) {
            Some(sc) => cx.with_span_context(sc),
            None => cx.clone(),
        }
    }

    fn extract_in_place(&self, cx: &mut Context, extractor: &dyn Extractor) {
        if let Some(sc) = self.extract_span_context(extractor) {
            cx.set_span_context(sc);
        }
    }

    fn fields(&self) -> Vec<&'static str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}
