//! Jaeger propagation: the `uber-trace-id` header and `uberctx-*` baggage
//! headers, as Jaeger's client documentation defines them
//! (<https://www.jaegertracing.io/docs/latest/client-libraries/#propagation-format>).
//!
//! `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`, also accepted
//! URL-encoded (`%3A` for the colons, as some clients send it). Ids are hex in
//! either case and may be shorter than 32 (trace) or 16 (span) characters:
//! they are left-padded with zeros; zero ids are invalid. The deprecated parent
//! id must be hex (`0` for none) and is otherwise ignored. Flags are one or two
//! hex digits: `0x01` sampled, `0x02` debug (implies sampled, kept in the
//! context as [`SamplingState::Debug`]), other bits ignored.
//!
//! Baggage: each `uberctx-{key}: {value}` header is a baggage entry with the
//! URL-decoded value (`+` and `%20` are spaces, as Jaeger clients encode them);
//! an entry the context already has (for example from the W3C `baggage`
//! header, extracted earlier) is kept. The same limits as W3C baggage apply
//! (180 entries, 8192 bytes of keys and values). Injection writes every baggage
//! entry as a `uberctx-` header with a percent-encoded value.

use std::borrow::Cow;

use super::sampling_state::{sampling_state, with_sampling_state, SamplingState};
use super::{Extractor, Injector, TextMapPropagator};
use crate::context::baggage::{valid_key, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS};
use crate::context::{Context, SpanContext, TraceFlags, TraceState};
use crate::ids::{write_hex, SpanId, TraceId};

const UBER_TRACE_ID: &str = "uber-trace-id";
const BAGGAGE_PREFIX: &str = "uberctx-";

/// Longest `uber-trace-id` value looked at: 32 + 16 + 16 + 2 hex digits and
/// three separators, each possibly written as `%3A`, with room for spaces.
const MAX_HEADER_LEN: usize = 96;

const FLAG_SAMPLED: u8 = 0x01;
const FLAG_DEBUG: u8 = 0x02;

/// The Jaeger propagator (`OTEL_PROPAGATORS=jaeger`).
///
/// ```
/// use std::collections::HashMap;
/// use ferrotrace::propagation::{JaegerPropagator, TextMapPropagator};
///
/// let mut headers = HashMap::new();
/// headers.insert("uber-trace-id".to_string(), "4d0000000000000016%3A17c29%3A0%3A1".to_string());
/// headers.insert("uberctx-tenant".to_string(), "acme%20corp".to_string());
/// let cx = JaegerPropagator::new().extract(&headers);
/// assert_eq!(cx.span_context().trace_id().to_string(), "000000000000004d0000000000000016");
/// assert_eq!(cx.span_context().span_id().to_string(), "0000000000017c29");
/// assert!(cx.span_context().is_sampled());
/// assert_eq!(cx.baggage().get("tenant"), Some("acme corp"));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JaegerPropagator;

/// What an `uber-trace-id` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct JaegerContext {
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
}

impl JaegerPropagator {
    /// A new propagator.
    pub const fn new() -> Self {
        JaegerPropagator
    }

    /// The span context carried by `uber-trace-id`, if valid (marked remote).
    pub fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        extractor
            .get(UBER_TRACE_ID)
            .and_then(parse_uber_trace_id)
            .map(|j| remote(&j))
    }
}

fn remote(j: &JaegerContext) -> SpanContext {
    let sampled = j.flags & (FLAG_SAMPLED | FLAG_DEBUG) != 0;
    SpanContext::new(
        j.trace_id,
        j.span_id,
        TraceFlags::default().with_sampled(sampled),
        true,
        TraceState::NONE,
    )
}

/// 1 to `max` hex digits (either case), left-padded to a `u128`.
fn hex_number(s: &str, max: usize) -> Option<u128> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// Decodes `%XX` escapes (a malformed escape makes the value invalid);
/// `plus_is_space` turns `+` into a space, as URL query encoding does.
fn url_decode(s: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !(s.contains('%') || plus_is_space && s.contains('+')) {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn parse_uber_trace_id(value: &str) -> Option<JaegerContext> {
    let v = value.trim_matches(|c| c == ' ' || c == '\t');
    if v.len() > MAX_HEADER_LEN {
        return None;
    }
    let v = url_decode(v, false)?;
    let mut parts = v.split(':');
    let (trace, span, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex_number(trace, 32)?.to_be_bytes());
    let span_id = SpanId::from_bytes((hex_number(span, 16)? as u64).to_be_bytes());
    hex_number(parent, 16)?;
    let flags = hex_number(flags, 2)? as u8;
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    Some(JaegerContext {
        trace_id,
        span_id,
        flags,
    })
}

/// Characters kept as they are in an injected baggage value (RFC 3986
/// unreserved); everything else is percent-encoded, spaces as `%20`, which
/// every Jaeger client decodes.
fn encode_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for &c in v.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// `cx`'s baggage plus the `uberctx-*` entries of `extractor` (entries already
/// in `cx` win), within the W3C limits.
fn extract_baggage(cx: &Context, extractor: &dyn Extractor) -> Option<crate::context::Baggage> {
    let mut keys: Vec<&str> = extractor
        .keys()
        .into_iter()
        .filter(|k| {
            k.len() > BAGGAGE_PREFIX.len()
                && k.as_bytes()[..BAGGAGE_PREFIX.len()]
                    .eq_ignore_ascii_case(BAGGAGE_PREFIX.as_bytes())
        })
        .collect();
    if keys.is_empty() {
        return None;
    }
    // Sorted, so which entries fit within the limits does not depend on the
    // carrier's iteration order.
    keys.sort_unstable();
    let mut baggage = cx.baggage().clone();
    let mut bytes: usize = baggage
        .iter()
        .map(|e| e.key().len() + e.value().len())
        .sum();
    let mut changed = false;
    for header in keys {
        if baggage.len() >= MAX_BAGGAGE_MEMBERS {
            break;
        }
        let key = header[BAGGAGE_PREFIX.len()..].to_ascii_lowercase();
        if !valid_key(&key) || baggage.get(&key).is_some() {
            continue;
        }
        let Some(raw) = extractor.get(header) else {
            continue;
        };
        let value = url_decode(raw, true).unwrap_or(Cow::Borrowed(raw));
        let cost = key.len() + value.len();
        if bytes + cost > MAX_BAGGAGE_BYTES {
            continue;
        }
        if baggage.insert(key, value.into_owned()).is_ok() {
            bytes += cost;
            changed = true;
        }
    }
    changed.then_some(baggage)
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let sc = cx.span_context();
        if sc.is_valid() {
            let flags = if sampling_state(cx) == Some(SamplingState::Debug) {
                FLAG_SAMPLED | FLAG_DEBUG
            } else if sc.is_sampled() {
                FLAG_SAMPLED
            } else {
                0
            };
            let mut buf = [0u8; 32 + 1 + 16 + 3 + 1];
            write_hex(&sc.trace_id().to_bytes(), &mut buf[..32]);
            buf[32] = b':';
            write_hex(&sc.span_id().to_bytes(), &mut buf[33..49]);
            buf[49..52].copy_from_slice(b":0:");
            buf[52] = b"0123456789abcdef"[flags as usize];
            // Every byte written above is ASCII.
            injector.set(UBER_TRACE_ID, buf.iter().map(|&c| c as char).collect());
        }
        let mut bytes = 0usize;
        for e in cx.baggage().iter().take(MAX_BAGGAGE_MEMBERS) {
            let value = encode_value(e.value());
            let cost = e.key().len() + value.len();
            if bytes + cost > MAX_BAGGAGE_BYTES {
                continue;
            }
            bytes += cost;
            injector.set(&format!("{BAGGAGE_PREFIX}{}", e.key()), value);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut out = match extractor.get(UBER_TRACE_ID).and_then(parse_uber_trace_id) {
            Some(j) => {
                let state = (j.flags & FLAG_DEBUG != 0).then_some(SamplingState::Debug);
                with_sampling_state(&cx.with_span_context(remote(&j)), j.trace_id, state)
            }
            None => cx.clone(),
        };
        if let Some(baggage) = extract_baggage(&out, extractor) {
            out = out.with_baggage(baggage);
        }
        out
    }

    /// `uber-trace-id` only: the baggage headers' names depend on the baggage.
    fn fields(&self) -> Vec<&'static str> {
        vec![UBER_TRACE_ID]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(v: &str) -> Option<(String, String, u8)> {
        parse_uber_trace_id(v).map(|j| (j.trace_id.to_string(), j.span_id.to_string(), j.flags))
    }

    fn headers(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    const T: &str = "000000000000004d0000000000000016";

    /// The forms Jaeger's documentation and its clients use.
    #[test]
    fn uber_trace_id_spec_vectors() {
        let want = |flags| Some((T.to_string(), "0000000000017c29".to_string(), flags));
        assert_eq!(parse(&format!("{T}:0000000000017c29:0:1")), want(1));
        assert_eq!(
            parse("4d0000000000000016:17c29:0:1"),
            want(1),
            "short ids are left-padded"
        );
        assert_eq!(
            parse("4D0000000000000016:17C29:0:01"),
            want(1),
            "either case"
        );
        assert_eq!(
            parse("4d0000000000000016:17c29:1a2b:3"),
            want(3),
            "parent ignored"
        );
        assert_eq!(parse("4d0000000000000016:17c29:0:0"), want(0));
        assert_eq!(
            parse("4d0000000000000016:17c29:0:9"),
            want(9),
            "firehose bit"
        );
        assert_eq!(parse("4d0000000000000016:17c29:0:ff"), want(0xff));
        assert_eq!(
            parse("4d0000000000000016%3A17c29%3A0%3A1"),
            want(1),
            "URL-encoded"
        );
        assert_eq!(parse("4d0000000000000016%3a17c29%3a0%3a1"), want(1));
        assert_eq!(parse(" 4d0000000000000016:17c29:0:1 "), want(1));
        assert_eq!(
            parse("16:1:0:1"),
            Some((format!("{:0>32}", "16"), format!("{:0>16}", "1"), 1)),
            "64-bit and shorter ids"
        );
    }

    #[test]
    fn uber_trace_id_malformed() {
        for v in [
            "",
            ":::",
            "4d:17c29:0",
            "4d:17c29:0:1:extra",
            "4d:17c29::1",
            "4d::0:1",
            ":17c29:0:1",
            "4d:17c29:0:",
            "4d:17c29:0:100",
            "4d:17c29:0:x",
            "4d:17c29:0:+1",
            "+4d:17c29:0:1",
            "4d:17c29:zz:1",
            "0:17c29:0:1",
            "00000000000000000000000000000000:17c29:0:1",
            "4d:0:0:1",
            "4d:0000000000000000:0:1",
            "14d0000000000000000000000000000016:17c29:0:1",
            "4d:117c2900000000000:0:1",
            "4d:17c29:117c2900000000000:1",
            "4d%3A17c29%3A0%3",
            "4d%3A17c29%3A0%3G1",
            "4d%2517c29:0:1",
            "4d-17c29-0-1",
            "4d:17c29:0:1\u{0}",
            "4d:17c29:0:١",
        ] {
            assert_eq!(parse(v), None, "{v:?}");
        }
        assert_eq!(
            parse(&format!("{T}:{}:0:1", "0".repeat(200))),
            None,
            "too long"
        );
    }

    #[test]
    fn debug_implies_sampled_and_is_sent_on() {
        let p = JaegerPropagator::new();
        for (flags, sampled, debug, out) in [
            ("1", true, false, "1"),
            ("3", true, true, "3"),
            ("2", true, true, "3"),
            ("0", false, false, "0"),
            ("8", false, false, "0"),
            ("9", true, false, "1"),
        ] {
            let h = headers(&[("uber-trace-id", &format!("{T}:17c29:0:{flags}"))]);
            let cx = p.extract_with_context(&Context::new(), &h);
            assert_eq!(cx.span_context().is_sampled(), sampled, "{flags}");
            assert_eq!(
                sampling_state(&cx) == Some(SamplingState::Debug),
                debug,
                "{flags}"
            );
            let mut got = HashMap::new();
            p.inject_context(&cx, &mut got);
            assert_eq!(
                got["uber-trace-id"],
                format!("{T}:0000000000017c29:0:{out}")
            );
        }
    }

    #[test]
    fn baggage_is_url_decoded_limited_and_does_not_override() {
        let p = JaegerPropagator::new();
        let h = headers(&[
            ("uber-trace-id", &format!("{T}:17c29:0:1")),
            ("uberctx-key1", "value%201%20%2F%20blah"),
            ("UberCtx-Key2", "a+b"),
            ("uberctx-pct", "100%"),
            ("uberctx-", "no key"),
            ("uberctx-bad key", "x"),
            ("uberctx-w3c", "from-jaeger"),
        ]);
        let mut start = crate::context::Baggage::new();
        start.insert("w3c", "from-w3c").unwrap();
        let cx = p.extract_with_context(&Context::new().with_baggage(start), &h);
        let b = cx.baggage();
        assert_eq!(b.get("key1"), Some("value 1 / blah"));
        assert_eq!(b.get("key2"), Some("a b"));
        assert_eq!(
            b.get("pct"),
            Some("100%"),
            "a malformed escape is kept as sent"
        );
        assert_eq!(b.get("w3c"), Some("from-w3c"), "earlier entries win");
        assert_eq!(b.len(), 4, "{b:?}");

        // Baggage alone, without a trace id, is still extracted.
        let cx = p.extract_with_context(&Context::new(), &headers(&[("uberctx-k", "v")]));
        assert!(!cx.span_context().is_valid());
        assert_eq!(cx.baggage().get("k"), Some("v"));

        // Hostile carriers: many entries and large values stay within the limits.
        let mut h = HashMap::new();
        for i in 0..1000 {
            h.insert(format!("uberctx-k{i:04}"), "v".repeat(50));
        }
        let cx = p.extract_with_context(&Context::new(), &h);
        let b = cx.baggage();
        assert!(b.len() <= MAX_BAGGAGE_MEMBERS);
        let bytes: usize = b.iter().map(|e| e.key().len() + e.value().len()).sum();
        assert!(bytes <= MAX_BAGGAGE_BYTES, "{bytes}");
        assert_eq!(
            b.get("k0000").map(str::len),
            Some(50),
            "sorted: the first keys are kept"
        );
    }

    #[test]
    fn baggage_is_injected_percent_encoded() {
        let mut b = crate::context::Baggage::new();
        b.insert("key1", "value 1 / blah").unwrap();
        b.insert("plus", "a+b=c").unwrap();
        b.insert("uni", "€").unwrap();
        let cx = Context::new().with_baggage(b);
        let mut out = HashMap::new();
        JaegerPropagator::new().inject_context(&cx, &mut out);
        assert_eq!(
            out,
            headers(&[
                ("uberctx-key1", "value%201%20%2F%20blah"),
                ("uberctx-plus", "a%2Bb%3Dc"),
                ("uberctx-uni", "%E2%82%AC"),
            ]),
            "no uber-trace-id without a span"
        );
        // And back.
        let back = JaegerPropagator::new().extract_with_context(&Context::new(), &out);
        assert_eq!(back.baggage().get("plus"), Some("a+b=c"));
        assert_eq!(back.baggage().get("uni"), Some("€"));
    }
}
