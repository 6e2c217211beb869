//! Structure-aware fuzzing of the SDK's decoders of network input: the
//! `traceparent`, `tracestate` and `baggage` headers, B3 (single and multiple
//! headers) and Jaeger's `uber-trace-id`. Each decoder gets at
//! least 100,000 generated inputs (`FERROTRACE_FUZZ_INPUTS` for more):
//! well-formed headers built from their grammar and byte-level mutations of
//! them (see `fuzz_util`). For every input: no panic, and whatever the
//! decoder accepts round-trips (formatted by the SDK's own injector and
//! parsed again, it decodes to the same value). Well-formed inputs must be
//! accepted with the values they were built from.

mod fuzz_util;

use std::collections::HashMap;

use ferrotrace::context::Context;
use ferrotrace::propagation::{
    format_baggage, parse_baggage, parse_traceparent, sampling_state, B3Propagator,
    BaggagePropagator, JaegerPropagator, TextMapPropagator, TraceContextPropagator,
};
use ferrotrace::{SpanContext, TraceState};
use fuzz_util::{fuzz, mutations, variants};
use proptest::prelude::*;
use proptest::string::string_regex;

/// A string strategy from a regex (compiled once, cloneable).
fn re(pattern: &str) -> BoxedStrategy<String> {
    string_regex(pattern).expect("valid regex").boxed()
}

/// `min..=max` characters drawn from `chars`: much cheaper than a regex
/// strategy in a debug build.
fn from_chars(chars: &str, min: usize, max: usize) -> BoxedStrategy<String> {
    let chars: Vec<char> = chars.chars().collect();
    proptest::collection::vec(prop::sample::select(chars), min..=max)
        .prop_map(String::from_iter)
        .boxed()
}

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
/// W3C tracestate key characters after the first (`@` handled apart).
const TS_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789_*/-";
/// W3C tracestate value characters (printable ASCII but `,` and `=`), without space.
const TS_VALUE: &str = "!\"#$%&'()*+-./0123456789:;<>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
/// RFC 7230 token characters (baggage keys).
const TOKEN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&'*+.^_`|~-";
/// W3C baggage-octets without `%`.
const BAGGAGE_OCTET: &str =
    "!#$&'()*+-./0123456789:<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~";

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Tokens worth splicing into header values.
const HEADER_DICT: &[&[u8]] = &[
    b"-",
    b",",
    b"=",
    b";",
    b" ",
    b"\t",
    b"%",
    b"%2",
    b"%zz",
    b"%20",
    b"%C3%A9",
    b"%FF",
    b"00",
    b"ff",
    b"FF",
    b"01",
    b"@",
    b"\xc3\xa9",
    b"\xe2\x80\x8b",
    b"\x00",
    b"\r\n",
];

/// `traceparent` as a string and what it must decode to if well-formed.
#[derive(Clone, Debug)]
struct Traceparent {
    text: String,
    /// `Some` when the generated value is valid per W3C: version 00 exactly
    /// or a later version (not ff) with optional `-` + extra data, non-zero
    /// ids, lowercase hex.
    expect: Option<(u128, u64, u8)>,
}

fn traceparent() -> impl Strategy<Value = Traceparent> {
    let version = prop_oneof![
        6 => Just(0u8),
        2 => 1u8..0xfe,
        1 => Just(0xffu8),
    ];
    let trace = prop_oneof![9 => any::<u128>(), 1 => Just(0u128)];
    let span = prop_oneof![9 => any::<u64>(), 1 => Just(0u64)];
    let suffix = prop_oneof![
        4 => Just(String::new()),
        1 => re("-[ -~]{0,20}"),
    ];
    (
        version,
        trace,
        span,
        any::<u8>(),
        suffix,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(v, t, s, flags, suffix, upper, pad)| {
            let mut text = format!("{v:02x}-{t:032x}-{s:016x}-{flags:02x}");
            if v != 0 {
                text.push_str(&suffix);
            }
            let valid_hex = !upper || text.bytes().all(|c| !c.is_ascii_alphabetic());
            if upper {
                text = text.to_ascii_uppercase();
            }
            if pad {
                text = format!(" {text}\t");
            }
            let expect = (valid_hex && v != 0xff && t != 0 && s != 0).then_some((t, s, flags));
            Traceparent { text, expect }
        })
}

#[test]
fn fuzz_traceparent() {
    let prop = TraceContextPropagator::new();
    fuzz("traceparent", (traceparent(), mutations()), |(tp, ms)| {
        let inputs = variants(tp.text.as_bytes(), &ms, HEADER_DICT);
        for (i, raw) in inputs.iter().enumerate() {
            let text = lossy(raw);
            let got = parse_traceparent(&text);
            if i == 0 {
                let want = tp.expect.map(|(t, s, _)| (t, s));
                let have = got.map(|(t, s, _)| {
                    (
                        u128::from_be_bytes(t.to_bytes()),
                        u64::from_be_bytes(s.to_bytes()),
                    )
                });
                prop_assert_eq!(have, want, "{:?}", text);
                if let (Some((_, _, f)), Some((_, _, flags))) = (got, tp.expect) {
                    prop_assert_eq!(f.is_sampled(), flags & 1 == 1);
                }
            }
            if let Some((t, s, f)) = got {
                prop_assert!(t.is_valid() && s.is_valid());
                // Injected by the SDK and parsed again: the same context.
                let sc = SpanContext::new(t, s, f, true, TraceState::NONE);
                let mut out: HashMap<String, String> = HashMap::new();
                prop.inject_context(&Context::new().with_span_context(sc), &mut out);
                let again = parse_traceparent(&out["traceparent"]);
                prop_assert_eq!(again, Some((t, s, f)), "{:?} -> {:?}", text, out);
            }
            // The whole extractor, with a tracestate beside it.
            let carrier: HashMap<String, String> = [
                ("traceparent".to_string(), text.clone()),
                ("tracestate".to_string(), text.replace('-', "=")),
            ]
            .into();
            let cx = prop.extract_with_context(&Context::new(), &carrier);
            prop_assert_eq!(cx.span_context().is_valid(), got.is_some());
        }
        Ok(inputs.len() as u64)
    });
}

/// A `tracestate` header built from its grammar, and its members when valid.
#[derive(Clone, Debug)]
struct Tracestate {
    text: String,
    members: Vec<(String, String)>,
}

fn tracestate() -> impl Strategy<Value = Tracestate> {
    // W3C's current grammar: a lowercase letter or a digit first.
    let key = (
        from_chars("abcdefghijklmnopqrstuvwxyz0123456789", 1, 1),
        from_chars(TS_KEY, 0, 12),
        prop_oneof![
            3 => Just(String::new()),
            1 => (from_chars(LOWER, 1, 1), from_chars(TS_KEY, 0, 6))
                .prop_map(|(a, b)| format!("@{a}{b}")),
        ],
    )
        .prop_map(|(a, b, c)| format!("{a}{b}{c}"));
    // Inner spaces allowed, none at the end.
    let value = (
        from_chars(TS_VALUE, 1, 1),
        from_chars(&format!("{TS_VALUE} "), 0, 16),
        from_chars(TS_VALUE, 0, 1),
    )
        .prop_map(|(a, b, c)| {
            let mut v = format!("{a}{b}{c}");
            while v.ends_with(' ') {
                v.pop();
            }
            v
        });
    let ows = from_chars(" \t", 0, 2);
    (
        proptest::collection::vec((key, value, ows.clone(), ows), 0..40),
        any::<bool>(),
    )
        .prop_map(|(raw, empty_members)| {
            let mut members: Vec<(String, String)> = Vec::new();
            let mut text = String::new();
            for (k, v, a, b) in raw {
                if members.iter().any(|(e, _)| *e == k) {
                    continue;
                }
                if !text.is_empty() {
                    text.push(',');
                    if empty_members {
                        text.push_str(" ,");
                    }
                }
                text.push_str(&format!("{a}{k}={v}{b}"));
                members.push((k, v));
            }
            Tracestate { text, members }
        })
}

#[test]
fn fuzz_tracestate() {
    fuzz("tracestate", (tracestate(), mutations()), |(ts, ms)| {
        let inputs = variants(ts.text.as_bytes(), &ms, HEADER_DICT);
        for (i, raw) in inputs.iter().enumerate() {
            let text = lossy(raw);
            let got = TraceState::from_header(&text);
            if i == 0 {
                // Well-formed: accepted with its members, unless over 32.
                if ts.members.len() <= 32 {
                    let parsed = got.clone().expect("well-formed tracestate accepted");
                    let members: Vec<(String, String)> = parsed
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    prop_assert_eq!(&members, &ts.members, "{:?}", text);
                } else {
                    prop_assert!(got.is_err(), "33+ members: {:?}", text);
                }
            }
            if let Ok(state) = got {
                let header = state.header();
                let again = TraceState::from_header(&header);
                prop_assert_eq!(again.as_ref(), Ok(&state), "{:?} -> {:?}", text, header);
            }
        }
        Ok(inputs.len() as u64)
    });
}

/// A `baggage` header built from its grammar: tokens as keys, values of
/// baggage-octets and percent-escapes (of any byte, UTF-8 or not),
/// properties, optional whitespace; sometimes long enough to reach the
/// 180-member / 8192-byte limits.
fn baggage() -> impl Strategy<Value = String> {
    let key = from_chars(TOKEN, 1, 12);
    let part = prop_oneof![
        4 => from_chars(BAGGAGE_OCTET, 1, 8),
        2 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
        1 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
        1 => re("%[G-Zg-z0-9]?"),
    ];
    let value = proptest::collection::vec(part, 0..6).prop_map(|p| p.concat());
    let property = prop_oneof![
        Just(String::new()),
        (from_chars(" ", 0, 1), from_chars(LOWER, 1, 6)).prop_map(|(a, b)| format!(";{a}{b}")),
        (from_chars(LOWER, 1, 6), from_chars(BAGGAGE_OCTET, 0, 6))
            .prop_map(|(k, v)| format!(";{k}={v}")),
    ];
    let member = (key, value, property, from_chars(" \t", 0, 1))
        .prop_map(|(k, v, p, ows)| format!("{ows}{k}{ows}={ows}{v}{p}{ows}"));
    prop_oneof![
        40 => proptest::collection::vec(member.clone(), 0..12),
        1 => proptest::collection::vec(member, 170..200),
    ]
    .prop_map(|m| m.join(","))
}

#[test]
fn fuzz_baggage() {
    let prop = BaggagePropagator::new();
    fuzz("baggage", (baggage(), mutations()), |(text, ms)| {
        let inputs = variants(text.as_bytes(), &ms, HEADER_DICT);
        for raw in &inputs {
            let text = lossy(raw);
            let got = parse_baggage([text.as_str()]);
            // Formatted by the SDK and parsed again: the same baggage.
            match format_baggage(&got) {
                Some(header) => {
                    let again = parse_baggage([header.as_str()]);
                    prop_assert_eq!(&again, &got, "{:?} -> {:?}", text, header);
                }
                None => prop_assert!(got.is_empty(), "{:?}", text),
            }
            // Through the propagator, split over two headers.
            let mid = text.len() / 2;
            let cut = (0..=mid)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            let carrier: HashMap<String, String> =
                [("baggage".to_string(), text[..cut].to_string())].into();
            let _ = prop.extract_with_context(&Context::new(), &carrier);
        }
        Ok(inputs.len() as u64)
    });
}

/// Extracted by `prop`, injected again by it and extracted again: the same
/// span context and sampling state.
fn assert_reinjects(
    prop: &dyn TextMapPropagator,
    carrier: &HashMap<String, String>,
) -> Result<bool, TestCaseError> {
    let cx = prop.extract_with_context(&Context::new(), carrier);
    let sc = cx.span_context();
    if !sc.is_valid() {
        return Ok(false);
    }
    prop_assert!(sc.is_remote());
    let mut out: HashMap<String, String> = HashMap::new();
    prop.inject_context(&cx, &mut out);
    let again = prop.extract_with_context(&Context::new(), &out);
    let sc2 = again.span_context();
    prop_assert_eq!(
        (sc2.trace_id(), sc2.span_id(), sc2.is_sampled()),
        (sc.trace_id(), sc.span_id(), sc.is_sampled()),
        "{:?} -> {:?}",
        carrier,
        out
    );
    prop_assert_eq!(sampling_state(&again), sampling_state(&cx), "{:?}", out);
    Ok(true)
}

/// B3 headers from the specification: the single `b3` header, or the
/// `X-B3-*` ones, with 128- or 64-bit trace ids and every sampling form.
/// Headers, and the trace and span id they carry.
type Headers = (Vec<(String, String)>, Option<(u128, u64)>);

fn b3() -> impl Strategy<Value = Headers> {
    let trace = prop_oneof![
        3 => any::<u128>().prop_filter("non-zero", |t| *t != 0).prop_map(|t| (t, format!("{t:032x}"))),
        1 => any::<u64>().prop_filter("non-zero", |t| *t != 0).prop_map(|t| (u128::from(t), format!("{t:016x}"))),
    ];
    let span = any::<u64>().prop_filter("non-zero", |s| *s != 0);
    let parent = prop_oneof![
        Just(None),
        any::<u64>()
            .prop_filter("non-zero", |s| *s != 0)
            .prop_map(Some)
    ];
    let sampling = prop::sample::select(vec!["", "1", "0", "d", "true", "false"]);
    (trace, span, parent, sampling, any::<bool>()).prop_map(
        |((t, t_hex), s, parent, sampling, single)| {
            if single {
                let sampling = match sampling {
                    "true" => "1",
                    "false" => "0",
                    other => other,
                };
                let mut v = format!("{t_hex}-{s:016x}");
                if !sampling.is_empty() || parent.is_some() {
                    v.push('-');
                    v.push_str(if sampling.is_empty() { "1" } else { sampling });
                }
                if let Some(p) = parent {
                    v.push_str(&format!("-{p:016x}"));
                }
                (vec![("b3".to_string(), v)], Some((t, s)))
            } else {
                let mut h = vec![
                    ("x-b3-traceid".to_string(), t_hex),
                    ("x-b3-spanid".to_string(), format!("{s:016x}")),
                ];
                match sampling {
                    "" => {}
                    "d" => h.push(("x-b3-flags".to_string(), "1".to_string())),
                    other => h.push(("x-b3-sampled".to_string(), other.to_string())),
                }
                if let Some(p) = parent {
                    h.push(("x-b3-parentspanid".to_string(), format!("{p:016x}")));
                }
                (h, Some((t, s)))
            }
        },
    )
}

#[test]
fn fuzz_b3() {
    let strategy = (b3(), any::<prop::sample::Index>(), mutations());
    fuzz("B3", strategy, |((headers, expect), which, ms)| {
        // One header per case is mutated; which one is part of the case.
        let idx = which.index(headers.len());
        let inputs = variants(headers[idx].1.as_bytes(), &ms, HEADER_DICT);
        for (i, raw) in inputs.iter().enumerate() {
            let mut carrier: HashMap<String, String> = headers.iter().cloned().collect();
            carrier.insert(headers[idx].0.clone(), lossy(raw));
            let single = assert_reinjects(&B3Propagator::single(), &carrier)?;
            let multi = assert_reinjects(&B3Propagator::multi(), &carrier)?;
            prop_assert_eq!(single, multi, "both encodings extract alike: {:?}", carrier);
            if i == 0 {
                let sc = B3Propagator::single()
                    .extract_span_context(&carrier)
                    .map(|sc| {
                        (
                            u128::from_be_bytes(sc.trace_id().to_bytes()),
                            u64::from_be_bytes(sc.span_id().to_bytes()),
                        )
                    });
                prop_assert_eq!(sc, expect, "{:?}", carrier);
            }
        }
        Ok(inputs.len() as u64)
    });
}

/// `uber-trace-id: {trace}:{span}:{parent}:{flags}` as Jaeger clients send
/// it: hex numbers without leading zeros (or with), `:` or `%3A`, and
/// `uberctx-*` baggage beside it.
fn uber_trace_id() -> impl Strategy<Value = (String, Vec<(String, String)>, (u128, u64))> {
    (
        any::<u128>().prop_filter("non-zero", |t| *t != 0),
        any::<u64>().prop_filter("non-zero", |s| *s != 0),
        any::<u64>(),
        0u8..4,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(
            (from_chars(LOWER, 1, 8), from_chars(BAGGAGE_OCTET, 0, 8)),
            0..3,
        ),
    )
        .prop_map(|(t, s, p, flags, padded, escaped, baggage)| {
            let (t_hex, s_hex, p_hex) = if padded {
                (
                    format!("{t:032x}"),
                    format!("{s:016x}"),
                    format!("{p:016x}"),
                )
            } else {
                (format!("{t:x}"), format!("{s:x}"), format!("{p:x}"))
            };
            let sep = if escaped { "%3A" } else { ":" };
            let v = [t_hex, s_hex, p_hex, format!("{flags:x}")].join(sep);
            let baggage = baggage
                .into_iter()
                .map(|(k, v)| (format!("uberctx-{k}"), v))
                .collect();
            (v, baggage, (t, s))
        })
}

#[test]
fn fuzz_jaeger() {
    let prop = JaegerPropagator::new();
    fuzz(
        "Jaeger uber-trace-id",
        (uber_trace_id(), mutations()),
        |((v, baggage, (t, s)), ms)| {
            let inputs = variants(v.as_bytes(), &ms, HEADER_DICT);
            for (i, raw) in inputs.iter().enumerate() {
                let mut carrier: HashMap<String, String> = baggage.iter().cloned().collect();
                carrier.insert("uber-trace-id".to_string(), lossy(raw));
                let valid = assert_reinjects(&prop, &carrier)?;
                if i == 0 {
                    prop_assert!(valid, "{:?}", carrier);
                    let sc = prop.extract_span_context(&carrier).expect("valid");
                    prop_assert_eq!(u128::from_be_bytes(sc.trace_id().to_bytes()), t);
                    prop_assert_eq!(u64::from_be_bytes(sc.span_id().to_bytes()), s);
                }
            }
            Ok(inputs.len() as u64)
        },
    );
}
