//! W3C Trace Context and Baggage vectors (valid, malformed, oversized) and
//! property tests: round trips, and no input panics a parser.

use std::collections::HashMap;

use ferrotrace::context::{Baggage, Context};
use ferrotrace::propagation::{
    parse_baggage, parse_traceparent, BaggagePropagator, Extractor, TextMapCompositePropagator,
    TextMapPropagator, TraceContextPropagator,
};
use ferrotrace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use proptest::prelude::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn traceparent_valid_vectors() {
    let (t, s, f) = parse_traceparent(TP).unwrap();
    assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.to_string(), "00f067aa0ba902b7");
    assert!(f.is_sampled());
    let (_, _, f) =
        parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    assert!(!f.is_sampled());
    // Higher versions: first four fields, optional extra data after '-'.
    for v in [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-",
    ] {
        assert!(parse_traceparent(v).is_some(), "{v}");
    }
}

#[test]
fn traceparent_invalid_vectors() {
    for v in [
        "",
        "00",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    ] {
        assert!(parse_traceparent(v).is_none(), "{v:?} must be invalid");
    }
}

#[test]
fn invalid_traceparent_starts_new_trace_and_ignores_tracestate() {
    let prop = TraceContextPropagator::new();
    let cx = prop.extract_with_context(
        &Context::new(),
        &carrier(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "foo=bar"),
        ]),
    );
    assert!(!cx.has_active_span());
    assert!(cx.span_context().trace_state().is_empty());
}

#[test]
fn two_traceparent_headers_are_invalid() {
    let mut h = http::HeaderMap::new();
    h.append("traceparent", TP.parse().unwrap());
    h.append(
        "traceparent",
        "00-aaf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &h);
    assert!(!cx.has_active_span());
}

#[test]
fn tracestate_vectors() {
    let k256 = format!("a{}", "b".repeat(255));
    let k257 = format!("a{}", "b".repeat(256));
    for ok in [
        "foo=bar",
        "foo@=1",
        "foo@bar@baz=1",
        "tenant@system=x",
        "a_-*/1=v",
        "foo=bar , baz=qux",
        "foo=bar,,baz=1",
        "foo=  leading space is part of the value",
        &format!("{k256}=v"),
    ] {
        assert!(
            TraceState::from_header(ok).is_ok(),
            "{ok:?} should be valid"
        );
    }
    let members33 = (0..33)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let members32 = (0..32)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(TraceState::from_header(&members32).unwrap().len(), 32);
    for bad in [
        "FOO=1",
        "foo.bar=1",
        "@foo=1",
        "foo =1",
        "foo=bar=baz",
        "foo=",
        "foo",
        "_foo=1",
        "-foo=1",
        "foo=bar ,baz=1\u{7f}",
        &format!("{k257}=v"),
        &members33,
    ] {
        assert!(
            TraceState::from_header(bad).is_err(),
            "{bad:?} should be invalid"
        );
    }
}

#[test]
fn tracestate_several_headers_are_joined_and_invalid_one_drops_all() {
    let mut h = http::HeaderMap::new();
    h.append("traceparent", TP.parse().unwrap());
    h.append("tracestate", "a=1,b=2".parse().unwrap());
    h.append("tracestate", "c=3".parse().unwrap());
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &h);
    assert_eq!(cx.span_context().trace_state().header(), "a=1,b=2,c=3");

    h.append("tracestate", "a=dup".parse().unwrap());
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &h);
    assert_eq!(
        cx.span_context().trace_state().header(),
        "a=1,b=2,c=3",
        "a repeated key keeps its first value"
    );

    h.append("tracestate", "BAD=1".parse().unwrap());
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &h);
    assert!(cx.has_active_span(), "traceparent stays valid");
    assert!(cx.span_context().trace_state().is_empty());
}

#[test]
fn tracestate_mutation_moves_key_to_front() {
    let ts = TraceState::from_header("a=1,b=2,c=3").unwrap();
    let ts2 = ts.insert("c", "9").unwrap();
    assert_eq!(ts2.header(), "c=9,a=1,b=2");
    let ts3 = ts2.insert("new", "x").unwrap();
    assert_eq!(ts3.header(), "new=x,c=9,a=1,b=2");
    assert_eq!(ts3.delete("a").header(), "new=x,c=9,b=2");
    assert!(ts.insert("BAD", "x").is_err());
    assert!(ts.insert("ok", "a,b").is_err());
    let full = TraceState::from_header(
        &(0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(","),
    )
    .unwrap();
    let more = full.insert("z", "1").unwrap();
    assert_eq!(more.len(), 32);
    assert_eq!(more.iter().next(), Some(("z", "1")));
}

#[test]
fn traceparent_inject_format() {
    let sc = SpanContext::new(
        "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
        "00f067aa0ba902b7".parse().unwrap(),
        TraceFlags::SAMPLED,
        false,
        TraceState::from_header("b=2,a=1").unwrap(),
    );
    let mut out = HashMap::new();
    TraceContextPropagator::new().inject_context(&Context::new().with_span_context(sc), &mut out);
    assert_eq!(out["traceparent"], TP);
    assert_eq!(out["tracestate"], "b=2,a=1");
    let mut none = HashMap::new();
    TraceContextPropagator::new().inject_context(&Context::new(), &mut none);
    assert!(none.is_empty());
}

#[test]
fn baggage_vectors() {
    let b = parse_baggage(["key1=value1;property1;property2, key2 = value2, key3=val%20ue3"]);
    assert_eq!(b.get("key1"), Some("value1"));
    let props = b.entry("key1").unwrap().properties();
    assert_eq!(props[0].key(), "property1");
    assert_eq!(props[1].key(), "property2");
    assert_eq!(b.get("key2"), Some("value2"));
    assert_eq!(b.get("key3"), Some("val ue3"));

    // '=' inside values, '+' literal, a '%' without two hex digits kept
    // literally, escaped octets that are not UTF-8 become U+FFFD.
    let b = parse_baggage(["a=b=c,plus=1+1,bad=%zz,badutf=%ff%fe"]);
    assert_eq!(b.get("a"), Some("b=c"));
    assert_eq!(b.get("plus"), Some("1+1"));
    assert_eq!(b.get("bad"), Some("%zz"));
    assert_eq!(b.get("badutf"), Some("\u{FFFD}\u{FFFD}"));

    // Invalid members are skipped, valid ones kept.
    let b = parse_baggage(["good=1,no-equals,bad key=2,=novalue,quote=\"x\",ok2=2"]);
    assert_eq!(b.len(), 2);
    assert_eq!(b.get("good"), Some("1"));
    assert_eq!(b.get("ok2"), Some("2"));
}

#[test]
fn baggage_limits_apply_across_headers() {
    let h1 = (0..100)
        .map(|i| format!("a{i}=1"))
        .collect::<Vec<_>>()
        .join(",");
    let h2 = (0..100)
        .map(|i| format!("b{i}=1"))
        .collect::<Vec<_>>()
        .join(",");
    let mut h = http::HeaderMap::new();
    h.append("baggage", h1.parse().unwrap());
    h.append("baggage", h2.parse().unwrap());
    let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &h);
    assert_eq!(cx.baggage().len(), 180);
    assert_eq!(cx.baggage().get("b79"), Some("1"));
    assert_eq!(cx.baggage().get("b80"), None);

    // Bytes: 3 members of ~3000 bytes each, across two headers: the third does not fit.
    let big = |k: &str| format!("{k}={}", "x".repeat(3000));
    let mut h = http::HeaderMap::new();
    h.append(
        "baggage",
        format!("{},{}", big("a"), big("b")).parse().unwrap(),
    );
    h.append("baggage", format!("{},small=1", big("c")).parse().unwrap());
    let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &h);
    assert!(cx.baggage().get("a").is_some() && cx.baggage().get("b").is_some());
    assert!(cx.baggage().get("c").is_none());
    assert_eq!(cx.baggage().get("small"), Some("1"));
}

#[test]
fn baggage_inject_encodes_and_respects_limits() {
    let mut b = Baggage::new();
    b.insert("user", "Jöhn Doe, 50%;x").unwrap();
    b.insert_with_properties(
        "k",
        "v",
        [ferrotrace::context::BaggageProperty::new("ttl", Some("60")).unwrap()],
    )
    .unwrap();
    let cx = Context::new().with_baggage(b);
    let mut out = HashMap::new();
    BaggagePropagator::new().inject_context(&cx, &mut out);
    assert_eq!(
        out["baggage"],
        "user=J%C3%B6hn%20Doe%2C%2050%25%3Bx,k=v;ttl=60"
    );
    let back = BaggagePropagator::new().extract_with_context(&Context::new(), &out);
    assert_eq!(back.baggage().get("user"), Some("Jöhn Doe, 50%;x"));

    let mut big = Baggage::new();
    for i in 0..10 {
        big.insert(format!("k{i}"), "y".repeat(1000)).unwrap();
    }
    let mut out = HashMap::new();
    BaggagePropagator::new().inject_context(&Context::new().with_baggage(big), &mut out);
    assert!(out["baggage"].len() <= 8192);
    assert_eq!(out["baggage"].split(',').count(), 8);

    let mut full = Baggage::new();
    for i in 0..180 {
        full.insert(format!("k{i}"), "v").unwrap();
    }
    assert!(full.insert("one-more", "v").is_err());
    assert!(Baggage::new().insert("bad key", "v").is_err());
}

#[test]
fn composite_round_trip() {
    let prop = TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]);
    let c = carrier(&[
        ("traceparent", TP),
        ("tracestate", "x=1"),
        ("baggage", "a=1"),
    ]);
    let cx = prop.extract_with_context(&Context::new(), &c);
    assert!(cx.span_context().is_remote());
    assert_eq!(cx.baggage().get("a"), Some("1"));
    let mut out = HashMap::new();
    prop.inject_context(&cx, &mut out);
    assert_eq!(out, c);
    assert_eq!(prop.fields(), vec!["traceparent", "tracestate", "baggage"]);
}

#[test]
fn header_map_extractor_keys() {
    let mut h = http::HeaderMap::new();
    h.insert("traceparent", TP.parse().unwrap());
    assert_eq!(Extractor::keys(&h), vec!["traceparent"]);
}

fn tracestate_key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_*/@-]{0,20}"
}
fn tracestate_value() -> impl Strategy<Value = String> {
    "[!-+\\--<>-~]([ -+\\--<>-~]{0,20}[!-+\\--<>-~])?"
}

proptest! {
    #[test]
    fn trace_context_round_trip(
        t in any::<u128>().prop_filter("nonzero", |v| *v != 0),
        s in any::<u64>().prop_filter("nonzero", |v| *v != 0),
        sampled in any::<bool>(),
        members in proptest::collection::btree_map(tracestate_key(), tracestate_value(), 0..8),
    ) {
        let ts = TraceState::from_key_value(members.clone()).unwrap();
        let sc = SpanContext::new(
            TraceId::from_bytes(t.to_be_bytes()),
            SpanId::from_bytes(s.to_be_bytes()),
            TraceFlags::default().with_sampled(sampled),
            false,
            ts.clone(),
        );
        let prop = TraceContextPropagator::new();
        let mut out: HashMap<String, String> = HashMap::new();
        prop.inject_context(&Context::new().with_span_context(sc.clone()), &mut out);
        let back = prop.extract_with_context(&Context::new(), &out);
        let got = back.span_context();
        prop_assert_eq!(got.trace_id(), sc.trace_id());
        prop_assert_eq!(got.span_id(), sc.span_id());
        prop_assert_eq!(got.is_sampled(), sampled);
        prop_assert!(got.is_remote());
        prop_assert_eq!(got.trace_state(), &ts);
    }

    #[test]
    fn baggage_round_trip(
        entries in proptest::collection::btree_map("[A-Za-z0-9!#$&'*+.^_`|~-]{1,12}", "(?s).{0,40}", 0..10)
    ) {
        let mut b = Baggage::new();
        for (k, v) in &entries {
            b.insert(k.clone(), v.clone()).unwrap();
        }
        let mut out: HashMap<String, String> = HashMap::new();
        BaggagePropagator::new().inject_context(&Context::new().with_baggage(b), &mut out);
        let back = BaggagePropagator::new().extract_with_context(&Context::new(), &out);
        // Values are trimmed of optional whitespace only when unencoded; spaces are always encoded.
        for (k, v) in &entries {
            prop_assert_eq!(back.baggage().get(k), Some(v.as_str()));
        }
        prop_assert_eq!(back.baggage().len(), entries.len());
    }

    #[test]
    fn no_input_panics_the_parsers(tp in any::<String>(), ts in any::<String>(), bg in any::<String>()) {
        let _ = parse_traceparent(&tp);
        let _ = TraceState::from_header(&ts);
        let _ = parse_baggage([bg.as_str()]);
        let c = carrier(&[("traceparent", &tp), ("tracestate", &ts), ("baggage", &bg)]);
        let _ = TraceContextPropagator::new().extract_with_context(&Context::new(), &c);
        let _ = BaggagePropagator::new().extract_with_context(&Context::new(), &c);
    }

    #[test]
    fn near_valid_traceparents_never_panic(
        v in "[0-9a-fA-F-]{0,2}-[0-9a-fA-F]{0,33}-[0-9a-fA-F]{0,17}-[0-9a-fA-F-]{0,4}.{0,4}"
    ) {
        let _ = parse_traceparent(&v);
    }
}
