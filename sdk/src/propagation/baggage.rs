//! W3C Baggage: the `baggage` header.

use percent_encoding::{AsciiSet, CONTROLS};

use super::{Extractor, Injector, TextMapPropagator};
use crate::context::baggage::{valid_key, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS};
use crate::context::{Baggage, BaggageProperty, Context};

const BAGGAGE: &str = "baggage";

/// Characters percent-encoded in values (and property values) on inject:
/// everything outside W3C's `baggage-octet`, plus `%` (the spec: "The percent
/// code point MUST be percent-encoded") and `=` (allowed by W3C, but some
/// implementations split values at `=`; encoding it is always valid).
const VALUE_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%')
    .add(b'=');

/// `s` without leading and trailing OWS (space, tab): a byte loop, cheaper
/// than `trim_matches` on the short pieces of a header.
#[inline]
fn trim_ows(s: &str) -> &str {
    let b = s.as_bytes();
    let mut start = 0;
    let mut end = b.len();
    while start < end && matches!(b[start], b' ' | b'\t') {
        start += 1;
    }
    while end > start && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    // Both ends are at ASCII bytes, so at character boundaries.
    &s[start..end]
}

/// The pieces of `s` between `sep` bytes (an ASCII separator), like
/// `str::split` without the general pattern machinery.
fn split_bytes(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match split_at_byte(r, sep) {
            Some((piece, tail)) => {
                rest = Some(tail);
                Some(piece)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `s` split at the first `sep` (an ASCII byte).
#[inline]
fn split_at_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = s.as_bytes().iter().position(|&c| c == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// W3C `baggage-octet` (which includes `%`, the escape character), as a table.
const VALUE_OCTET: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e);
        c += 1;
    }
    t
};

/// W3C `baggage-octet` (which includes `%`, the escape character).
fn is_value_octet(c: u8) -> bool {
    VALUE_OCTET[c as usize]
}

/// Whether every byte of `v` is a `baggage-octet` (`None` if not), and
/// whether it holds a `%` to decode: one pass over the value.
#[inline]
fn scan_value(v: &str) -> Option<bool> {
    let mut ok = true;
    let mut pct = false;
    for &c in v.as_bytes() {
        ok &= VALUE_OCTET[c as usize];
        pct |= c == b'%';
    }
    ok.then_some(pct)
}

/// The value of one hex digit of a `%XX` escape (either case).
#[inline]
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The octet a `%XX` escape at the start of `b` stands for, if it is one.
#[inline]
fn escape_at(b: &[u8]) -> Option<u8> {
    match b {
        [b'%', h, l, ..] => Some(hex_digit(*h)? << 4 | hex_digit(*l)?),
        _ => None,
    }
}

/// How many bytes percent-decoding `v` yields (each valid `%XX` is one).
fn decoded_len(v: &[u8]) -> usize {
    let mut n = v.len();
    let mut rest = v;
    while let Some(p) = rest.iter().position(|&c| c == b'%') {
        let skip = if escape_at(&rest[p..]).is_some() {
            n -= 2;
            3
        } else {
            1
        };
        rest = &rest[p + skip..];
    }
    n
}

/// Appends `v` percent-decoded to `out`, copying the text between escapes
/// as whole runs. `+` stays a literal plus; a `%` not followed by two hex
/// digits (`100%`, `%G1`) is kept literally, so a value another SDK sent
/// unencoded survives unchanged.
fn decode_bytes(v: &[u8], out: &mut Vec<u8>) {
    let mut rest = v;
    while let Some(p) = rest.iter().position(|&c| c == b'%') {
        out.extend_from_slice(&rest[..p]);
        let skip = match escape_at(&rest[p..]) {
            Some(octet) => {
                out.push(octet);
                3
            }
            None => {
                out.push(b'%');
                1
            }
        };
        rest = &rest[p + skip..];
    }
    out.extend_from_slice(rest);
}

/// `bytes` as a string without copying when they are UTF-8; otherwise each
/// invalid sequence becomes U+FFFD, as W3C Baggage ("value") requires.
fn into_string_lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// `prefix` followed by `v` percent-decoded, in one allocation of exactly
/// the final length when the result is UTF-8 (the member's text is kept as
/// a boxed `str`, so spare capacity would cost a reallocation).
fn decode_after(prefix: &str, v: &str) -> String {
    let vb = v.as_bytes();
    if !vb.contains(&b'%') {
        let mut out = String::with_capacity(prefix.len() + v.len());
        out.push_str(prefix);
        out.push_str(v);
        return out;
    }
    let mut bytes = Vec::with_capacity(prefix.len() + decoded_len(vb));
    bytes.extend_from_slice(prefix.as_bytes());
    decode_bytes(vb, &mut bytes);
    into_string_lossy(bytes)
}

/// Percent-decodes a value or property value (see [`decode_bytes`]); `%XX`
/// octets that are not valid UTF-8 become U+FFFD.
fn decode_value(v: &str) -> String {
    decode_after("", v)
}

fn encode_value(v: &str, out: &mut String) {
    out.extend(percent_encoding::utf8_percent_encode(v, VALUE_ENCODE));
}

/// Parses one list-member: `key OWS = OWS value *( OWS ; OWS property )`
/// into the key followed by the decoded value (one string), the key's length
/// and the properties. `None` when the key, the value or any property is
/// malformed: the member is dropped whole, never forwarded with a property
/// silently removed.
fn parse_member(member: &str) -> Option<(String, usize, Vec<BaggageProperty>)> {
    let (head, props) = match split_at_byte(member, b';') {
        Some((h, p)) => (h, Some(p)),
        None => (member, None),
    };
    let (k, v) = split_at_byte(head, b'=')?;
    let (k, v) = (trim_ows(k), trim_ows(v));
    if !valid_key(k) {
        return None;
    }
    let has_escape = scan_value(v)?;
    let mut properties = Vec::new();
    for p in props.into_iter().flat_map(|p| split_bytes(p, b';')) {
        let (pk, pv) = split_property(p);
        if !valid_key(pk) || !pv.is_none_or(|v| v.bytes().all(is_value_octet)) {
            return None;
        }
        properties.push(BaggageProperty::new(pk, pv.map(decode_value)).ok()?);
    }
    // The key is a token (ASCII), so a lossy conversion never touches it
    // and `k.len()` stays the key's length in the text.
    let text = if has_escape {
        decode_after(k, v)
    } else {
        let mut text = String::with_capacity(k.len() + v.len());
        text.push_str(k);
        text.push_str(v);
        text
    };
    Some((text, k.len(), properties))
}

/// `key OWS [ "=" OWS value ]` with surrounding OWS removed.
fn split_property(p: &str) -> (&str, Option<&str>) {
    let p = trim_ows(p);
    match split_at_byte(p, b'=') {
        Some((k, v)) => (trim_ows(k), Some(trim_ows(v))),
        None => (p, None),
    }
}

/// Parses `baggage` header values (several headers are one list). A
/// malformed member (bad key, a character outside `baggage-octet`, no `=`, a
/// malformed property) is dropped whole and the others are kept; members
/// beyond 180, or that would take the total past 8192 bytes, are dropped.
pub fn parse_baggage<'a>(headers: impl IntoIterator<Item = &'a str>) -> Baggage {
    let mut baggage = Baggage::new();
    let mut bytes = 0usize;
    for header in headers {
        // `u32` lanes: the compiler counts 16 bytes at a time.
        let commas = header
            .as_bytes()
            .iter()
            .map(|&c| u32::from(c == b','))
            .sum::<u32>() as usize;
        baggage.reserve(commas + 1);
        for member in split_bytes(header, b',') {
            let member = trim_ows(member);
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
            if let Some((text, key_len, p)) = parse_member(member) {
                if baggage.insert_parsed(text, key_len, p).is_ok() {
                    bytes += cost;
                }
            }
        }
    }
    baggage
}

/// Serializes baggage as a `baggage` header, dropping members that would exceed
/// 180 members or 8192 bytes (whole members only). Values and property values
/// are percent-encoded. `None` when nothing is left to send.
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
        encode_value(e.value(), &mut member);
        for p in e.properties() {
            member.push(';');
            member.push_str(p.key());
            if let Some(v) = p.value() {
                member.push('=');
                encode_value(v, &mut member);
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
        let mut out = cx.clone();
        self.extract_in_place(&mut out, extractor);
        out
    }

    fn extract_in_place(&self, cx: &mut Context, extractor: &dyn Extractor) {
        let Some(first) = extractor.get(BAGGAGE) else {
            return;
        };
        // Collecting every header line allocates; one line is the usual case.
        let baggage = if extractor.has_multiple(BAGGAGE) {
            parse_baggage(extractor.get_all(BAGGAGE))
        } else {
            parse_baggage([first])
        };
        if !baggage.is_empty() {
            cx.set_baggage(baggage);
        }
    }

    fn fields(&self) -> Vec<&'static str> {
        vec![BAGGAGE]
    }

    fn extracts_span_context(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_rules() {
        assert_eq!(decode_value("a+b"), "a+b");
        assert_eq!(decode_value("a%20b"), "a b");
        assert_eq!(decode_value("%zz"), "%zz");
        assert_eq!(decode_value("100%"), "100%");
        assert_eq!(decode_value("%G1"), "%G1");
        assert_eq!(decode_value("%4"), "%4");
        assert_eq!(decode_value("%%41"), "%A");
        assert_eq!(decode_value("%ff"), "\u{FFFD}");
        assert_eq!(decode_value("%E2%82%AC"), "€");
        assert_eq!(decode_value("%E2%82x%AC"), "\u{FFFD}x\u{FFFD}");
        assert_eq!(decode_value("a%2"), "a%2");
        assert_eq!(decode_value("%4a%4A"), "JJ");
    }

    /// The decoder against a straightforward reference (decode every valid
    /// `%XX`, then one lossy UTF-8 conversion of the whole) on every string
    /// of up to four symbols drawn from escapes, partial escapes and text.
    #[test]
    fn decoding_matches_a_reference_on_generated_values() {
        fn reference(v: &str) -> String {
            let b = v.as_bytes();
            let hex = |c: u8| (c as char).to_digit(16);
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                let esc = (b[i] == b'%')
                    .then(|| Some((hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?)))
                    .flatten();
                match esc {
                    Some((h, l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    None => {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        let symbols = [
            "a", "%", "%4", "%41", "%e2", "%82", "%AC", "%ff", "%C3", "%a9", "%%", "+", "%G1",
        ];
        let mut stack = vec![(String::new(), 0)];
        let mut checked = 0;
        while let Some((v, depth)) = stack.pop() {
            let got = decode_value(&v);
            assert_eq!(got, reference(&v), "{v:?}");
            // The member text's length is exact: prefix + decoded value.
            let text = decode_after("key", &v);
            assert_eq!(&text[..3], "key");
            assert_eq!(&text[3..], got);
            checked += 1;
            if depth < 4 {
                for s in symbols {
                    stack.push((format!("{v}{s}"), depth + 1));
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn members_and_properties() {
        let b = parse_baggage(["k1=v1;p1;p2=x , k2 = a=b, bad key=1, k3=%E2%82%AC"]);
        assert_eq!(b.get("k1"), Some("v1"));
        let props = b.entry("k1").unwrap().properties();
        assert_eq!(props.len(), 2);
        assert_eq!((props[0].key(), props[0].value()), ("p1", None));
        assert_eq!((props[1].key(), props[1].value()), ("p2", Some("x")));
        assert_eq!(b.get("k2"), Some("a=b"));
        assert_eq!(b.get("k3"), Some("€"));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn properties_set_through_the_api_cannot_corrupt_the_header() {
        let mut b = Baggage::new();
        let props = [
            BaggageProperty::new("ttl", Some("60")).unwrap(),
            BaggageProperty::new("x", Some("a,evil=1")).unwrap(),
            BaggageProperty::new("q", Some("\"quoted\" é;next")).unwrap(),
            BaggageProperty::new("pct", Some("100%")).unwrap(),
            BaggageProperty::new("flag", None::<String>).unwrap(),
        ];
        b.insert_with_properties("k", "v", props.clone()).unwrap();
        b.insert("next", "n").unwrap();
        let h = format_baggage(&b).unwrap();
        assert_eq!(
            h,
            "k=v;ttl=60;x=a%2Cevil%3D1;q=%22quoted%22%20%C3%A9%3Bnext;pct=100%25;flag,next=n"
        );
        assert!(h.bytes().all(|c| c.is_ascii_graphic()), "{h}");
        // Read back: the same two members and the same decoded properties.
        let back = parse_baggage([h.as_str()]);
        assert_eq!(back.len(), 2, "{back:?}");
        assert_eq!(back.get("evil"), None);
        assert_eq!(back.entry("k").unwrap().properties(), &props[..]);
        assert_eq!(format_baggage(&back).unwrap(), h);
    }
}
