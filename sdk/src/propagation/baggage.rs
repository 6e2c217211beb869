//! W3C Baggage: the `baggage` header.

use percent_encoding::{AsciiSet, CONTROLS};

use super::{Extractor, Injector, TextMapPropagator};
use crate::context::baggage::{valid_key, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS};
use crate::context::{Baggage, Context};

const BAGGAGE: &str = "baggage";

/// Characters percent-encoded in values on inject: everything outside W3C's
/// `baggage-octet`, plus `%` (so decoding is unambiguous) and `=` (allowed by
/// W3C, but some implementations split values at `=`; encoding it is always valid).
const VALUE_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%')
    .add(b'=');

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// W3C `baggage-octet` (plus `%`, which introduces an escape).
fn is_value_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Percent-decodes a value. `+` stays a literal plus; a `%` not followed by two
/// hex digits and any invalid UTF-8 become U+FFFD.
fn decode_value(v: &str) -> String {
    if !v.contains('%') {
        return v.to_string();
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.extend_from_slice("\u{FFFD}".as_bytes());
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one list-member: `key OWS = OWS value *( OWS ; OWS property )`.
fn parse_member(member: &str) -> Option<(String, String, String)> {
    let (kv, props) = match member.split_once(';') {
        Some((kv, props)) => (kv, Some(props)),
        None => (member, None),
    };
    let (k, v) = kv.split_once('=')?;
    let (k, v) = (k.trim_matches(is_ows), v.trim_matches(is_ows));
    if !valid_key(k) || !v.bytes().all(is_value_octet) {
        return None;
    }
    let mut metadata = String::new();
    for p in props.into_iter().flat_map(|p| p.split(';')) {
        let (pk, pv) = split_property(p);
        // An invalid property is dropped; the member itself stays valid.
        if !valid_key(pk) || !pv.is_none_or(|v| v.bytes().all(is_value_octet)) {
            continue;
        }
        push_property(&mut metadata, pk, pv.map(str::to_string));
    }
    Some((k.to_string(), decode_value(v), metadata))
}

/// `key OWS [ "=" OWS value ]` with surrounding OWS removed.
fn split_property(p: &str) -> (&str, Option<&str>) {
    let p = p.trim_matches(is_ows);
    match p.split_once('=') {
        Some((k, v)) => (k.trim_matches(is_ows), Some(v.trim_matches(is_ows))),
        None => (p, None),
    }
}

fn push_property(out: &mut String, key: &str, value: Option<String>) {
    if !out.is_empty() {
        out.push(';');
    }
    out.push_str(key);
    if let Some(v) = value {
        out.push('=');
        out.push_str(&v);
    }
}

/// A property value made safe for the header: every byte outside
/// `baggage-octet` percent-encoded. Properties are kept in their wire form,
/// and `%` is a baggage-octet: it is sent as it is, so a property read from
/// a header (`%XX` escapes, or a `%` that starts none) goes out unchanged.
fn encode_property_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for &c in v.as_bytes() {
        if is_value_octet(c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// The properties of a member as they may be sent: each `key[=value]` with a
/// token key (others are dropped, like on extract) and an encoded value, so
/// metadata set through the API can never add members or break the header.
fn format_properties(metadata: &str) -> String {
    let mut out = String::new();
    for p in metadata.split(';') {
        let (pk, pv) = split_property(p);
        if valid_key(pk) {
            push_property(&mut out, pk, pv.map(encode_property_value));
        }
    }
    out
}

/// Parses `baggage` header values (several headers are one list). Invalid
/// members are skipped; members beyond 180, or that would take the total past
/// 8192 bytes, are dropped.
pub fn parse_baggage<'a>(headers: impl IntoIterator<Item = &'a str>) -> Baggage {
    let mut baggage = Baggage::new();
    let mut bytes = 0usize;
    for header in headers {
        for member in header.split(',') {
            let member = member.trim_matches(is_ows);
            if member.is_empty() {
                continue;
            }
            if baggage.len() >= MAX_BAGGAGE_MEMBERS {
                return baggage;
            }
            let cost = member.len() + usize::from(bytes > 0);
            if bytes + cost > MAX_BAGGAGE_BYTES {
                continue;
            }
            if let Some((k, v, m)) = parse_member(member) {
                if baggage.insert_with_metadata(k, v, m).is_ok() {
                    bytes += cost;
                }
            }
        }
    }
    baggage
}

/// Serializes baggage as a `baggage` header, dropping members that would exceed
/// 180 members or 8192 bytes. `None` when nothing is left to send.
pub fn format_baggage(baggage: &Baggage) -> Option<String> {
    let mut out = String::new();
    let mut count = 0;
    let mut member = String::new();
    for e in baggage.iter() {
        if count >= MAX_BAGGAGE_MEMBERS {
            break;
        }
        member.clear();
        member.push_str(e.key());
        member.push('=');
        member.extend(percent_encoding::utf8_percent_encode(
            e.value(),
            VALUE_ENCODE,
        ));
        if !e.metadata().is_empty() {
            let props = format_properties(e.metadata());
            if !props.is_empty() {
                member.push(';');
                member.push_str(&props);
            }
        }
        let sep = usize::from(!out.is_empty());
        if out.len() + sep + member.len() > MAX_BAGGAGE_BYTES {
            continue;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(&member);
        count += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// The W3C Baggage propagator.
#[derive(Clone, Copy, Debug, Default)]
pub struct BaggagePropagator;

impl BaggagePropagator {
    /// A new propagator.
    pub const fn new() -> Self {
        BaggagePropagator
    }
}

impl TextMapPropagator for BaggagePropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        if let Some(h) = format_baggage(cx.baggage()) {
            injector.set(BAGGAGE, h);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        if extractor.get(BAGGAGE).is_none() {
            return cx.clone();
        }
        let baggage = parse_baggage(extractor.get_all(BAGGAGE));
        if baggage.is_empty() {
            cx.clone()
        } else {
            cx.with_baggage(baggage)
        }
    }

    fn fields(&self) -> Vec<&'static str> {
        vec![BAGGAGE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_rules() {
        assert_eq!(decode_value("a+b"), "a+b");
        assert_eq!(decode_value("a%20b"), "a b");
        assert_eq!(decode_value("%zz"), "\u{FFFD}zz");
        assert_eq!(decode_value("%ff"), "\u{FFFD}");
        assert_eq!(decode_value("%E2%82%AC"), "€");
    }

    #[test]
    fn members_and_properties() {
        let b = parse_baggage(["k1=v1;p1;p2=x , k2 = a=b, bad key=1, k3=%E2%82%AC"]);
        assert_eq!(b.get("k1"), Some("v1"));
        assert_eq!(b.entry("k1").unwrap().metadata(), "p1;p2=x");
        assert_eq!(b.get("k2"), Some("a=b"));
        assert_eq!(b.get("k3"), Some("€"));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn property_values_outside_baggage_octet_are_dropped_on_extract() {
        let b = parse_baggage([r#"k=v;ok=1;bad="q";bad2=a\b;flag"#]);
        assert_eq!(b.entry("k").unwrap().metadata(), "ok=1;flag");
    }

    #[test]
    fn properties_set_through_the_api_cannot_corrupt_the_header() {
        let mut b = Baggage::new();
        b.insert_with_metadata(
            "k",
            "v",
            "ttl = 60;x=a,evil=1;bad key=2;q=\"quoted\" é;pct=100%;esc=%41;;flag",
        )
        .unwrap();
        b.insert("next", "n").unwrap();
        let h = format_baggage(&b).unwrap();
        assert_eq!(
            h,
            "k=v;ttl=60;x=a%2Cevil=1;q=%22quoted%22%20%C3%A9;pct=100%;esc=%41;flag,next=n"
        );
        assert!(h.bytes().all(|c| c.is_ascii_graphic()), "{h}");
        // Read back: the same two members, nothing injected.
        let back = parse_baggage([h.as_str()]);
        assert_eq!(back.len(), 2, "{back:?}");
        assert_eq!(back.get("k"), Some("v"));
        assert_eq!(back.get("next"), Some("n"));
        assert_eq!(back.get("evil"), None);
        assert_eq!(
            back.entry("k").unwrap().metadata(),
            "ttl=60;x=a%2Cevil=1;q=%22quoted%22%20%C3%A9;pct=100%;esc=%41;flag"
        );
        // Formatting what was extracted is stable.
        assert_eq!(format_baggage(&back).unwrap(), h);
    }

    #[test]
    fn metadata_with_only_invalid_properties_adds_no_separator() {
        let mut b = Baggage::new();
        b.insert_with_metadata("k", "v", "bad key;=x; ").unwrap();
        assert_eq!(format_baggage(&b).unwrap(), "k=v");
    }
}
