//! W3C conformance, one test per rule, each citing the section of the
//! specification it checks:
//!
//! - Trace Context Level 2 (<https://www.w3.org/TR/trace-context-2/>), cited
//!   as "TC2 §<section title>".
//! - Baggage (<https://www.w3.org/TR/baggage/>), cited as "Baggage §<title>".
//!
//! The official test suite's cases (w3c/trace-context `test/test.py`) are
//! reimplemented end to end against `w3c-service` in
//! `examples/tests/w3c_trace_context_suite.rs`.

use std::collections::HashMap;

use ferrotrace::context::{Baggage, BaggageProperty, Context};
use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::propagation::{
    format_baggage, parse_baggage, parse_traceparent, BaggagePropagator, Extractor,
    TextMapPropagator, TraceContextPropagator,
};
use ferrotrace::trace::TracerProvider;
use ferrotrace::{SpanContext, TraceFlags, TraceState};

const TRACE_ID: &str = "12345678901234567890123456789012";

fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn headers(pairs: &[(&str, &[u8])]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(v).unwrap(),
        );
    }
    h
}

fn inject(cx: &Context) -> HashMap<String, String> {
    let mut out = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut out);
    BaggagePropagator::new().inject_context(cx, &mut out);
    out
}

/// The `traceparent` a service sends downstream after receiving `incoming`:
/// extract, start a child span, inject the child's context.
fn forward(incoming: &dyn Extractor) -> String {
    let provider = TracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .build();
    let parent = TraceContextPropagator::new().extract_with_context(&Context::new(), incoming);
    let span = provider.tracer("w3c").start_with_context("op", &parent);
    inject(&parent.with_span_context(span.span_context().clone()))["traceparent"].clone()
}

fn flags_of(traceparent: &str) -> u8 {
    u8::from_str_radix(&traceparent[53..55], 16).unwrap()
}

// ---------------------------------------------------------------------------
// Trace Context Level 2: the random-trace-id flag
// ---------------------------------------------------------------------------

/// TC2 §"Random Trace ID Flag": "If the flag is set in the incoming
/// `traceparent` header, it MUST also be set in all outgoing `traceparent`
/// headers which use the same `trace-id`."
#[test]
fn tc2_random_flag_set_on_incoming_is_propagated() {
    for (incoming, sampled) in [("02", false), ("03", true)] {
        let tp = format!("00-{TRACE_ID}-1234567890123456-{incoming}");
        let out = forward(&carrier(&[("traceparent", &tp)]));
        assert_eq!(&out[3..35], TRACE_ID);
        assert_ne!(&out[36..52], "1234567890123456", "a new parent-id");
        assert_eq!(flags_of(&out) & 0x02, 0x02, "random flag lost: {out}");
        assert_eq!(flags_of(&out) & 0x01 == 1, sampled, "{out}");
    }
}

/// TC2 §"Random Trace ID Flag": "If the flag is unset in the incoming
/// `traceparent` header, it MUST also be unset in any outgoing `traceparent`
/// headers which use the same `trace-id`."
#[test]
fn tc2_random_flag_unset_on_incoming_stays_unset() {
    let tp = format!("00-{TRACE_ID}-1234567890123456-01");
    let out = forward(&carrier(&[("traceparent", &tp)]));
    assert_eq!(&out[3..35], TRACE_ID);
    assert_eq!(flags_of(&out), 0x01, "{out}");
}

/// TC2 §"Random Trace ID Flag": "When at least the right-most 7 bytes of the
/// `trace-id` are randomly (or pseudo-randomly) generated, the
/// `random-trace-id` flag SHOULD be set to `1`." ferrotrace draws every new
/// trace id from a CSPRNG, so a new trace (no parent, or an invalid one)
/// carries the flag, sampled or not.
#[test]
fn tc2_random_flag_is_set_on_new_random_trace_ids() {
    let out = forward(&carrier(&[]));
    assert_eq!(flags_of(&out), 0x03, "{out}");
    let invalid = carrier(&[(
        "traceparent",
        "00-00000000000000000000000000000000-1234567890123456-01",
    )]);
    assert_eq!(flags_of(&forward(&invalid)) & 0x02, 0x02);

    let off = TracerProvider::builder()
        .with_sampler(ferrotrace::trace::Sampler::AlwaysOff)
        .build();
    let span = off.tracer("t").start("unsampled root");
    assert!(span.span_context().trace_flags().is_random());
    assert!(!span.span_context().is_sampled());
    assert_eq!(
        flags_of(&inject(&span.context())["traceparent"]),
        0x02,
        "unsampled, random"
    );
}

/// TC2 §"trace-flags" / §"Other Flags": "The behavior of other flags ... is
/// not defined and is reserved for future use. Vendors MUST set those to
/// zero." Received reserved bits are not forwarded; the defined ones are.
#[test]
fn tc2_reserved_flags_are_not_forwarded() {
    let (_, _, f) = parse_traceparent(&format!("00-{TRACE_ID}-1234567890123456-ff")).unwrap();
    assert_eq!(f, TraceFlags::new(0x03));
    let tp = format!("00-{TRACE_ID}-1234567890123456-fd");
    assert_eq!(flags_of(&forward(&carrier(&[("traceparent", &tp)]))), 0x01);
    // Injecting a span context with reserved bits set sends only the defined ones.
    let sc = SpanContext::new(
        TRACE_ID.parse().unwrap(),
        "1234567890123456".parse().unwrap(),
        TraceFlags::new(0xfe),
        false,
        TraceState::NONE,
    );
    let out = inject(&Context::new().with_span_context(sc));
    assert!(
        out["traceparent"].ends_with("-02"),
        "{}",
        out["traceparent"]
    );
}

// ---------------------------------------------------------------------------
// Trace Context Level 2: tracestate
// ---------------------------------------------------------------------------

/// TC2 §"Key": `key = ( lcalpha / DIGIT ) 0*255 ( keychar )` — "A key MUST
/// begin with a lowercase letter or a digit".
#[test]
fn tc2_tracestate_keys_may_begin_with_a_digit() {
    let ts = TraceState::from_header("1vendor=a,0=b,9a@b=c,foo=d").unwrap();
    assert_eq!(ts.get("1vendor"), Some("a"));
    assert_eq!(ts.get("0"), Some("b"));
    assert_eq!(ts.get("9a@b"), Some("c"));
    let key256 = format!("7{}", "z".repeat(255));
    assert!(TraceState::from_header(&format!("{key256}=1")).is_ok());
    let key257 = format!("7{}", "z".repeat(256));
    assert!(TraceState::from_header(&format!("{key257}=1")).is_err());
    // Still invalid first characters.
    for bad in ["@foo=1", "_foo=1", "Foo=1", "*a=1"] {
        assert!(TraceState::from_header(bad).is_err(), "{bad}");
    }
    // Through the API as well.
    assert_eq!(
        TraceState::NONE.insert("2fa", "x").unwrap().header(),
        "2fa=x"
    );
}

/// TC2 §"Mutating the tracestate Field": "Vendors MAY also discard duplicate
/// keys that were not generated by them." A duplicated key keeps its first
/// occurrence; the other vendors' entries are kept, within one header line
/// and across several (§"Combined Header Value").
#[test]
fn tc2_tracestate_duplicate_key_keeps_the_first_occurrence() {
    let ts = TraceState::from_header("foo=1,bar=2,foo=3,baz=4").unwrap();
    assert_eq!(ts.header(), "foo=1,bar=2,baz=4");
    let h = headers(&[
        (
            "traceparent",
            format!("00-{TRACE_ID}-1234567890123456-01").as_bytes(),
        ),
        ("tracestate", b"rojo=1,congo=2"),
        ("tracestate", b"congo=9,baz=3"),
    ]);
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &h);
    assert_eq!(
        cx.span_context().trace_state().header(),
        "rojo=1,congo=2,baz=3"
    );
    // The API refuses to build a list with a repeated key: "Adding a
    // key/value pair MUST NOT result in the same key being present multiple times."
    assert!(TraceState::from_key_value([("a", "1"), ("a", "2")]).is_err());
}

/// TC2 §"list": at most 32 list-members — counted as received, repeats
/// included (the grammar bounds the list, not the distinct keys).
#[test]
fn tc2_tracestate_member_limit_counts_repeats() {
    let mut members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
    assert_eq!(
        TraceState::from_header(&members.join(",")).unwrap().len(),
        32
    );
    members.push("k0=again".into());
    assert!(TraceState::from_header(&members.join(",")).is_err());
}

/// TC2 §"tracestate Header Field Values": "When receiving multiple
/// `tracestate` header fields, they MUST be combined into a single header";
/// §"Value" allows only printable ASCII. A header line with non-ASCII bytes
/// makes the combined value invalid as a whole — it is not skipped while the
/// other lines are used. The valid `traceparent` is kept (§"Tracestate
/// Header": "failure to parse `tracestate` MUST NOT affect the parsing of
/// `traceparent`").
#[test]
fn tc2_non_ascii_tracestate_line_invalidates_the_combined_value() {
    let tp = format!("00-{TRACE_ID}-1234567890123456-01");
    for bad_line in [&b"caf\xc3\xa9=1"[..], b"x=\xff", b"\x80"] {
        let h = headers(&[
            ("traceparent", tp.as_bytes()),
            ("tracestate", b"foo=1"),
            ("tracestate", bad_line),
            ("tracestate", b"bar=2"),
        ]);
        let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &h);
        assert!(cx.has_active_span(), "traceparent stays valid");
        assert!(
            cx.span_context().trace_state().is_empty(),
            "{bad_line:?}: {:?}",
            cx.span_context().trace_state()
        );
    }
    // Non-ASCII inside a string carrier is rejected by the grammar as well.
    let c = carrier(&[("traceparent", &tp), ("tracestate", "foo=1,bär=2")]);
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &c);
    assert!(cx.has_active_span());
    assert!(cx.span_context().trace_state().is_empty());
}

// ---------------------------------------------------------------------------
// Baggage
// ---------------------------------------------------------------------------

/// Baggage §"Definition": `list-member = key OWS "=" OWS value *( OWS ";" OWS
/// property )`, `property = key OWS "=" OWS value / key OWS`. A member whose
/// property is malformed is not a `list-member`; it is dropped whole (never
/// forwarded with the property removed), the other members are kept
/// (§"Mutating baggage": an implementation "MAY remove an offending list-member
/// before propagating the rest").
#[test]
fn baggage_member_with_malformed_property_is_dropped_whole() {
    for bad in [
        "k=v;bad key=1",
        "k=v;p=\"quoted\"",
        "k=v;p=a\\b",
        "k=v;=novalue",
        "k=v;",
        "k=v;ok;(paren)",
    ] {
        let b = parse_baggage([format!("first=1,{bad},last=2").as_str()]);
        assert_eq!(b.get("k"), None, "{bad:?} must drop the member");
        assert_eq!(b.get("first"), Some("1"));
        assert_eq!(b.get("last"), Some("2"));
        let out = format_baggage(&b).unwrap();
        assert_eq!(out, "first=1,last=2", "{bad:?}");
    }
    let b = parse_baggage(["k=v; ok ; p = x"]);
    let e = b.entry("k").unwrap();
    assert_eq!(e.property("ok"), Some(None));
    assert_eq!(e.property("p"), Some(Some("x")));
}

/// Baggage §"property": "the rules for baggage values also apply to the value
/// part of a property": percent-decoded on read, percent-encoded on write.
/// The structured API takes and gives decoded `(key, optional value)` pairs.
#[test]
fn baggage_property_values_are_percent_decoded_and_encoded() {
    let b = parse_baggage(["k=v;note=caf%C3%A9%20au%20lait;pct=50%25;flag"]);
    let e = b.entry("k").unwrap();
    assert_eq!(e.property("note"), Some(Some("café au lait")));
    assert_eq!(e.property("pct"), Some(Some("50%")));
    assert_eq!(e.property("flag"), Some(None));
    assert_eq!(
        format_baggage(&b).unwrap(),
        "k=v;note=caf%C3%A9%20au%20lait;pct=50%25;flag"
    );

    let mut b = Baggage::new();
    b.insert_with_properties(
        "user",
        "Amélie",
        [
            BaggageProperty::new("team", Some("a;b,c d")).unwrap(),
            BaggageProperty::new("pii", None::<&str>).unwrap(),
        ],
    )
    .unwrap();
    let h = format_baggage(&b).unwrap();
    assert_eq!(h, "user=Am%C3%A9lie;team=a%3Bb%2Cc%20d;pii");
    assert_eq!(parse_baggage([h.as_str()]), b);
    assert!(BaggageProperty::new("bad key", Some("x")).is_err());
}

/// Baggage §"value": percent-decoding as RFC 3986 §2.1 defines it; octets that
/// are not UTF-8 become U+FFFD. A `%` not followed by two hex digits is no
/// percent-encoding at all: it is kept literally (`100%`, `%G1`), not turned
/// into U+FFFD, and the value forwarded decodes to the same text at the next
/// hop ("The percent code point MUST be percent-encoded": it is sent as `%25`).
#[test]
fn baggage_invalid_percent_sequences_are_kept_literally_and_round_trip() {
    let b = parse_baggage(["a=100%,b=%G1,c=50%2,d=%%41,e=%ff,f=a%2Fb"]);
    assert_eq!(b.get("a"), Some("100%"));
    assert_eq!(b.get("b"), Some("%G1"));
    assert_eq!(b.get("c"), Some("50%2"));
    assert_eq!(b.get("d"), Some("%A"));
    assert_eq!(b.get("e"), Some("\u{FFFD}"));
    assert_eq!(b.get("f"), Some("a/b"));
    let sent = format_baggage(&b).unwrap();
    assert_eq!(sent, "a=100%25,b=%25G1,c=50%252,d=%25A,e=%EF%BF%BD,f=a/b");
    // The next hop reads the same values.
    assert_eq!(parse_baggage([sent.as_str()]), b);
    // Property values follow the same rule.
    let b = parse_baggage(["k=v;p=100%"]);
    assert_eq!(b.entry("k").unwrap().property("p"), Some(Some("100%")));
}

/// Baggage §"Header Name" / RFC 9110 §5.1: field names are case-insensitive,
/// so `HashMap` carriers (message headers copied from HTTP) find `Baggage`,
/// `TraceParent` and `TRACESTATE` too.
#[test]
fn hashmap_carrier_lookups_are_case_insensitive() {
    let c = carrier(&[
        ("TraceParent", &format!("00-{TRACE_ID}-1234567890123456-01")),
        ("TRACESTATE", "foo=1"),
        ("Baggage", "user=alice"),
    ]);
    assert!(Extractor::get(&c, "traceparent").is_some());
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &c);
    let cx = BaggagePropagator::new().extract_with_context(&cx, &c);
    assert_eq!(cx.span_context().trace_id().to_string(), TRACE_ID);
    assert_eq!(cx.span_context().trace_state().get("foo"), Some("1"));
    assert_eq!(cx.baggage().get("user"), Some("alice"));

    // Two keys differing only in case are two `traceparent` headers: invalid
    // (TC2 §"traceparent Header Field Values"; w3c test_traceparent_duplicated).
    let dup = carrier(&[
        ("traceparent", &format!("00-{TRACE_ID}-1234567890123456-01")),
        (
            "TraceParent",
            "00-12345678901234567890123456789011-1234567890123456-01",
        ),
    ]);
    assert!(dup.has_multiple("traceparent"));
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &dup);
    assert!(!cx.has_active_span());

    let mut b = std::collections::BTreeMap::new();
    b.insert("BAGGAGE".to_string(), "k=v".to_string());
    assert_eq!(Extractor::get(&b, "baggage"), Some("k=v"));
}
