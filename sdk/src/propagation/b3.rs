//! B3 propagation (Zipkin, Brave, Spring Sleuth, Envoy/Istio): the single `b3`
//! header and the `X-B3-*` headers, as the B3 specification
//! (<https://github.com/openzipkin/b3-propagation>) and OpenTelemetry's B3
//! requirements define them.
//!
//! Extraction reads the single header first and falls back to the multiple
//! headers, whichever the propagator injects. Trace ids are 32 or 16 lowercase
//! hex characters (16 are left-padded with zeros), span ids 16; all-zero ids,
//! uppercase, wrong lengths, an empty or unknown sampling field and a malformed
//! parent id make the headers invalid (nothing is extracted). The debug flag
//! sets `sampled` and is kept in the context ([`SamplingState::Debug`]); a
//! missing sampling field is a deferred decision ([`SamplingState::Deferred`]),
//! extracted as not sampled. A sampling-only header (`b3: 0`, `X-B3-Sampled: 0`
//! alone) carries no ids, so it extracts nothing.
//!
//! Injection never sends `X-B3-ParentSpanId` (OpenTelemetry does not share span
//! ids between client and server), and always sends 32-character trace ids.

use super::sampling_state::{sampling_state, with_sampling_state, SamplingState};
use super::{Extractor, Injector, TextMapPropagator};
use crate::context::{Context, SpanContext, TraceFlags, TraceState};
use crate::ids::{parse_hex, write_hex, SpanId, TraceId};

const B3: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";

/// Longest valid `b3` value: 32 + 16 + 1 + 16 hex characters and three hyphens.
const MAX_SINGLE_LEN: usize = 68;

/// Which B3 encoding a [`B3Propagator`] injects (both are always extracted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum B3Encoding {
    /// The single `b3` header (`OTEL_PROPAGATORS=b3`, the default).
    #[default]
    Single,
    /// The `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` / `X-B3-Flags` headers
    /// (`OTEL_PROPAGATORS=b3multi`).
    Multi,
}

/// The B3 propagator.
///
/// ```
/// use std::collections::HashMap;
/// use ferrotrace::propagation::{B3Propagator, TextMapPropagator};
///
/// let mut headers = HashMap::new();
/// headers.insert("x-b3-traceid".to_string(), "a3ce929d0e0e4736".to_string());
/// headers.insert("x-b3-spanid".to_string(), "00f067aa0ba902b7".to_string());
/// headers.insert("x-b3-sampled".to_string(), "1".to_string());
/// let cx = B3Propagator::single().extract(&headers);
/// assert_eq!(cx.span_context().trace_id().to_string(), "0000000000000000a3ce929d0e0e4736");
///
/// let mut out = HashMap::new();
/// B3Propagator::single().inject_context(&cx, &mut out);
/// assert_eq!(out["b3"], "0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-1");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct B3Propagator {
    encoding: B3Encoding,
}

/// What a set of B3 headers says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct B3Context {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
    state: Option<SamplingState>,
}

impl B3Propagator {
    /// Injects the single `b3` header.
    pub const fn single() -> Self {
        B3Propagator {
            encoding: B3Encoding::Single,
        }
    }

    /// Injects the multiple `X-B3-*` headers.
    pub const fn multi() -> Self {
        B3Propagator {
            encoding: B3Encoding::Multi,
        }
    }

    /// Injects `encoding`.
    pub const fn with_encoding(encoding: B3Encoding) -> Self {
        B3Propagator { encoding }
    }

    /// The encoding this propagator injects.
    pub const fn encoding(&self) -> B3Encoding {
        self.encoding
    }

    /// The span context carried by `extractor` (single header first), marked remote.
    pub fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        extract(extractor).map(|b| remote(&b))
    }
}

fn remote(b: &B3Context) -> SpanContext {
    SpanContext::new(
        b.trace_id,
        b.span_id,
        TraceFlags::default().with_sampled(b.sampled),
        true,
        TraceState::NONE,
    )
}

fn trim(v: &str) -> &str {
    v.trim_matches(|c| c == ' ' || c == '\t')
}

/// A B3 trace id: 32 or 16 lowercase hex characters (16 are left-padded), not zero.
fn parse_trace_id(s: &str) -> Option<TraceId> {
    let b = s.as_bytes();
    let bytes = match b.len() {
        32 => parse_hex::<16>(b).ok()?,
        16 => {
            let low = parse_hex::<8>(b).ok()?;
            let mut full = [0u8; 16];
            full[8..].copy_from_slice(&low);
            full
        }
        _ => return None,
    };
    let id = TraceId::from_bytes(bytes);
    id.is_valid().then_some(id)
}

/// A B3 span id: 16 lowercase hex characters, not zero.
fn parse_span_id(s: &str) -> Option<SpanId> {
    let id = SpanId::from_bytes(parse_hex::<8>(s.as_bytes()).ok()?);
    id.is_valid().then_some(id)
}

fn parse_single(value: &str) -> Option<B3Context> {
    let v = trim(value);
    if v.len() > MAX_SINGLE_LEN {
        return None;
    }
    let mut parts = v.split('-');
    let trace = parts.next()?;
    // A sampling-only value (`b3: 0`) has one part and no ids: nothing to extract.
    let span = parts.next()?;
    let sampling = parts.next();
    let parent = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let trace_id = parse_trace_id(trace)?;
    let span_id = parse_span_id(span)?;
    let (sampled, state) = match sampling {
        None => (false, Some(SamplingState::Deferred)),
        Some("1") => (true, None),
        Some("0") => (false, None),
        Some("d") => (true, Some(SamplingState::Debug)),
        Some(_) => return None,
    };
    // The parent is not used (OpenTelemetry gives the server its own span id),
    // but a malformed one makes the header malformed.
    if let Some(p) = parent {
        parse_span_id(p)?;
    }
    Some(B3Context {
        trace_id,
        span_id,
        sampled,
        state,
    })
}

fn parse_multi(extractor: &dyn Extractor) -> Option<B3Context> {
    let trace_id = parse_trace_id(trim(extractor.get(TRACE_ID)?))?;
    let span_id = parse_span_id(trim(extractor.get(SPAN_ID)?))?;
    if let Some(p) = extractor.get(PARENT_SPAN_ID) {
        parse_span_id(trim(p))?;
    }
    // `X-B3-Flags: 1` is debug; "absent or any other value can be ignored".
    let debug = extractor.get(FLAGS).map(trim) == Some("1");
    // `true`/`false` predate the specification, which allows accepting them.
    let sampled = match extractor.get(SAMPLED).map(trim) {
        None => None,
        Some("1") | Some("true") => Some(true),
        Some("0") | Some("false") => Some(false),
        Some(_) => return None,
    };
    let (sampled, state) = match (debug, sampled) {
        (true, _) => (true, Some(SamplingState::Debug)),
        (false, Some(s)) => (s, None),
        (false, None) => (false, Some(SamplingState::Deferred)),
    };
    Some(B3Context {
        trace_id,
        span_id,
        sampled,
        state,
    })
}

fn extract(extractor: &dyn Extractor) -> Option<B3Context> {
    extractor
        .get(B3)
        .and_then(parse_single)
        .or_else(|| parse_multi(extractor))
}

/// 32 lowercase hex characters, as an owned string.
fn hex_string(bytes: &[u8]) -> String {
    let mut buf = [0u8; 32];
    let out = &mut buf[..bytes.len() * 2];
    write_hex(bytes, out);
    // write_hex only writes ASCII hex digits.
    out.iter().map(|&c| c as char).collect()
}

/// The sampling field to send: `Some("d" | "1" | "0")`, or `None` to defer.
fn sampling_field(cx: &Context) -> Option<&'static str> {
    let sc = cx.span_context();
    match sampling_state(cx) {
        Some(SamplingState::Debug) => Some("d"),
        Some(SamplingState::Deferred) if !sc.is_sampled() => None,
        _ if sc.is_sampled() => Some("1"),
        _ => Some("0"),
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let sc = cx.span_context();
        if !sc.is_valid() {
            return;
        }
        let trace_id = hex_string(&sc.trace_id().to_bytes());
        let span_id = hex_string(&sc.span_id().to_bytes());
        let sampling = sampling_field(cx);
        match self.encoding {
            B3Encoding::Single => {
                let mut v = String::with_capacity(51);
                v.push_str(&trace_id);
                v.push('-');
                v.push_str(&span_id);
                if let Some(s) = sampling {
                    v.push('-');
                    v.push_str(s);
                }
                injector.set(B3, v);
            }
            B3Encoding::Multi => {
                injector.set(TRACE_ID, trace_id);
                injector.set(SPAN_ID, span_id);
                match sampling {
                    // Debug implies sampled: X-B3-Sampled is not sent with it.
                    Some("d") => injector.set(FLAGS, "1".to_string()),
                    Some(s) => injector.set(SAMPLED, s.to_string()),
                    None => {}
                }
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extract(extractor) {
            Some(b) => {
                let out = cx.with_span_context(remote(&b));
                with_sampling_state(&out, b.trace_id, b.state)
            }
            None => cx.clone(),
        }
    }

    fn fields(&self) -> Vec<&'static str> {
        match self.encoding {
            B3Encoding::Single => vec![B3],
            B3Encoding::Multi => vec![TRACE_ID, SPAN_ID, SAMPLED, FLAGS],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const T32: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const T16: &str = "64fe8b2a57d3eff7";
    const S: &str = "e457b5a2e4d86bd1";
    const P: &str = "05e3ac9a4f6e3b90";

    fn single(v: &str) -> Option<B3Context> {
        parse_single(v)
    }

    fn headers(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    fn ctx(trace: &str, sampled: bool, state: Option<SamplingState>) -> Option<B3Context> {
        Some(B3Context {
            trace_id: TraceId::from_hex(&format!("{trace:0>32}")).unwrap(),
            span_id: SpanId::from_hex(S).unwrap(),
            sampled,
            state,
        })
    }

    /// The examples of the B3 specification's "Single Header" section.
    #[test]
    fn single_header_spec_vectors() {
        assert_eq!(single(&format!("{T32}-{S}-1-{P}")), ctx(T32, true, None));
        assert_eq!(single(&format!("{T32}-{S}-1")), ctx(T32, true, None));
        assert_eq!(
            single(&format!("{T32}-{S}-d")),
            ctx(T32, true, Some(SamplingState::Debug)),
            "debug implies sampled"
        );
        assert_eq!(single(&format!("{T32}-{S}-0")), ctx(T32, false, None));
        assert_eq!(
            single(&format!("{T32}-{S}")),
            ctx(T32, false, Some(SamplingState::Deferred)),
            "no sampling field: deferred"
        );
        assert_eq!(
            single(&format!("{T16}-{S}-1")),
            ctx(T16, true, None),
            "64-bit trace id, left-padded"
        );
        assert_eq!(single(&format!(" {T32}-{S}-1\t")), ctx(T32, true, None));
        // Deny (or accept, or debug) without ids: a decision, but no context.
        for v in ["0", "1", "d"] {
            assert_eq!(single(v), None, "{v}");
        }
    }

    #[test]
    fn single_header_malformed() {
        for v in [
            "",
            "-",
            "--",
            &format!("{T32}-"),
            &format!("{T32}-{S}-"),
            &format!("{T32}-{S}-1-"),
            &format!("{T32}-{S}-1-{P}-"),
            &format!("{T32}-{S}-1-{P}-x"),
            &format!("{T32}-{S}-true"),
            &format!("{T32}-{S}-2"),
            &format!("{T32}-{S}-D"),
            &format!("{T32}-{S}-01"),
            &format!("{T32}-{S}-1-{}", &P[1..]),
            &format!("{T32}-{S}-1-{}", P.to_uppercase()),
            &format!("{}-{S}-1", T32.to_uppercase()),
            &format!("{T32}-{}-1", S.to_uppercase()),
            &format!("{}-{S}-1", &T32[1..]),
            &format!("a{T32}-{S}-1"),
            &format!("{}-{S}-1", &T16[1..]),
            &format!("{T32}-{}-1", &S[1..]),
            &format!("{T32}-0{S}-1"),
            &format!("{}-{S}-1", "0".repeat(32)),
            &format!("{}-{S}-1", "0".repeat(16)),
            &format!("{T32}-{}-1", "0".repeat(16)),
            &format!("{T32}-{S}-1-{}", "x".repeat(16)),
            &format!("00-{T32}-{S}-01"),
            &format!("{T32}:{S}:0:1"),
            &format!("{T32}-{S}-1-{P}{}", "0".repeat(1000)),
        ] {
            assert_eq!(single(v), None, "{v:?}");
        }
    }

    /// The B3 specification's "Multiple Headers" section.
    #[test]
    fn multi_header_spec_vectors() {
        let p = |kv: &[(&str, &str)]| parse_multi(&headers(kv));
        assert_eq!(
            p(&[
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-ParentSpanId", P),
                ("X-B3-Sampled", "1"),
            ]),
            ctx(T32, true, None)
        );
        assert_eq!(
            p(&[
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", "0")
            ]),
            ctx(T32, false, None)
        );
        assert_eq!(
            p(&[
                ("X-B3-TraceId", T16),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", "1")
            ]),
            ctx(T16, true, None),
            "64-bit trace id, left-padded"
        );
        assert_eq!(
            p(&[("X-B3-TraceId", T32), ("X-B3-SpanId", S)]),
            ctx(T32, false, Some(SamplingState::Deferred))
        );
        assert_eq!(
            p(&[
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Flags", "1")
            ]),
            ctx(T32, true, Some(SamplingState::Debug)),
            "debug implies sampled"
        );
        assert_eq!(
            p(&[
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", "0"),
                ("X-B3-Flags", "1"),
            ]),
            ctx(T32, true, Some(SamplingState::Debug)),
            "debug wins over a deny"
        );
        assert_eq!(
            p(&[
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", "1"),
                ("X-B3-Flags", "2"),
            ]),
            ctx(T32, true, None),
            "other flag values are ignored"
        );
        for (v, want) in [("true", true), ("false", false)] {
            assert_eq!(
                p(&[
                    ("X-B3-TraceId", T32),
                    ("X-B3-SpanId", S),
                    ("X-B3-Sampled", v)
                ]),
                ctx(T32, want, None),
                "lenient {v}"
            );
        }
    }

    #[test]
    fn multi_header_malformed() {
        let p = |kv: &[(&str, &str)]| parse_multi(&headers(kv));
        let bad: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("X-B3-Sampled", "0")],
            vec![("X-B3-Flags", "1")],
            vec![("X-B3-SpanId", S), ("X-B3-Sampled", "1")],
            vec![("X-B3-TraceId", T32), ("X-B3-Sampled", "1")],
            vec![
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", ""),
            ],
            vec![
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", "d"),
            ],
            vec![
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", "10"),
            ],
            vec![
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-ParentSpanId", "-"),
            ],
            vec![
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-ParentSpanId", ""),
            ],
            vec![("X-B3-TraceId", &T32[2..]), ("X-B3-SpanId", S)],
            vec![("X-B3-TraceId", "0000000000000000"), ("X-B3-SpanId", S)],
            vec![("X-B3-TraceId", T32), ("X-B3-SpanId", "0000000000000000")],
            vec![
                ("X-B3-TraceId", "4BF92F3577B34DA6A3CE929D0E0E4736"),
                ("X-B3-SpanId", S),
            ],
            vec![("X-B3-TraceId", T32), ("X-B3-SpanId", "00F067AA0BA902B7")],
            vec![
                ("X-B3-TraceId", "4bf92f3577b34da6a3ce929d0e0e4hhh"),
                ("X-B3-SpanId", S),
            ],
        ];
        for kv in bad {
            assert_eq!(p(&kv), None, "{kv:?}");
        }
    }

    #[test]
    fn single_header_wins_and_falls_back_to_multi() {
        let other = "a3ce929d0e0e4736a3ce929d0e0e4736";
        let h = headers(&[
            ("b3", &format!("{T32}-{S}-1")),
            ("X-B3-TraceId", other),
            ("X-B3-SpanId", S),
        ]);
        let cx = B3Propagator::multi().extract_with_context(&Context::new(), &h);
        assert_eq!(cx.span_context().trace_id().to_string(), T32);
        // A malformed single header does not hide valid multiple headers.
        let h = headers(&[
            ("b3", "garbage"),
            ("X-B3-TraceId", other),
            ("X-B3-SpanId", S),
        ]);
        let cx = B3Propagator::single().extract_with_context(&Context::new(), &h);
        assert_eq!(cx.span_context().trace_id().to_string(), other);
        assert!(cx.span_context().is_remote());
    }

    fn round_trip(p: B3Propagator, h: &HashMap<String, String>) -> HashMap<String, String> {
        let cx = p.extract_with_context(&Context::new(), h);
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        out
    }

    #[test]
    fn inject_keeps_debug_and_deferred_and_never_sends_the_parent() {
        let single = B3Propagator::single();
        for (inp, want) in [
            (format!("{T32}-{S}-1-{P}"), format!("{T32}-{S}-1")),
            (format!("{T32}-{S}-0"), format!("{T32}-{S}-0")),
            (format!("{T32}-{S}-d"), format!("{T32}-{S}-d")),
            (format!("{T32}-{S}"), format!("{T32}-{S}")),
            (format!("{T16}-{S}-1"), format!("{T16:0>32}-{S}-1")),
        ] {
            let out = round_trip(single, &headers(&[("b3", &inp)]));
            assert_eq!(out, headers(&[("b3", &want)]), "{inp}");
        }
        let multi = B3Propagator::multi();
        let out = round_trip(multi, &headers(&[("b3", &format!("{T32}-{S}-d-{P}"))]));
        assert_eq!(
            out,
            headers(&[
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Flags", "1")
            ])
        );
        let out = round_trip(multi, &headers(&[("b3", &format!("{T32}-{S}"))]));
        assert_eq!(out, headers(&[("X-B3-TraceId", T32), ("X-B3-SpanId", S)]));
        let out = round_trip(multi, &headers(&[("b3", &format!("{T32}-{S}-0"))]));
        assert_eq!(
            out,
            headers(&[
                ("X-B3-TraceId", T32),
                ("X-B3-SpanId", S),
                ("X-B3-Sampled", "0")
            ])
        );
    }

    #[test]
    fn a_sampled_local_span_overrides_a_deferred_decision() {
        let h = headers(&[("b3", &format!("{T32}-{S}"))]);
        let p = B3Propagator::single();
        let cx = p.extract_with_context(&Context::new(), &h);
        assert_eq!(sampling_state(&cx), Some(SamplingState::Deferred));
        // The local sampler decided to sample: that decision is sent on.
        let child = SpanContext::new(
            cx.span_context().trace_id(),
            SpanId::from_bytes([7; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        let mut out = HashMap::new();
        p.inject_context(&cx.with_span_context(child), &mut out);
        assert_eq!(out["b3"], format!("{T32}-0707070707070707-1"));
        // A context that moved to another trace does not inherit the state.
        let other = SpanContext::new(
            TraceId::from_bytes([9; 16]),
            SpanId::from_bytes([7; 8]),
            TraceFlags::NOT_SAMPLED,
            false,
            TraceState::NONE,
        );
        let mut out = HashMap::new();
        p.inject_context(&cx.with_span_context(other), &mut out);
        assert!(out["b3"].ends_with("-0"), "{out:?}");
    }

    #[test]
    fn nothing_is_injected_without_a_valid_span_context() {
        let mut out = HashMap::new();
        B3Propagator::single().inject_context(&Context::new(), &mut out);
        B3Propagator::multi().inject_context(&Context::new(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn fields_follow_the_configured_encoding() {
        assert_eq!(B3Propagator::single().fields(), vec!["b3"]);
        assert_eq!(
            B3Propagator::multi().fields(),
            vec!["x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"]
        );
    }
}
