//! Context propagation: W3C Trace Context and Baggage, B3 (single and multiple
//! headers) and Jaeger, alone or composed.
//!
//! The API mirrors the `opentelemetry` crate's: a [`TextMapPropagator`] writes a
//! [`Context`] into a carrier through an [`Injector`] and reads one back through
//! an [`Extractor`]. Carriers are implemented for `HashMap<String, String>` and
//! [`http::HeaderMap`].
//!
//! ```
//! use std::collections::HashMap;
//! use ferrotrace::propagation::{TextMapPropagator, TraceContextPropagator};
//!
//! let mut headers = HashMap::new();
//! headers.insert(
//!     "traceparent".to_string(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
//! );
//! let cx = TraceContextPropagator::new().extract(&headers);
//! assert!(cx.span_context().is_remote());
//! assert!(cx.span_context().is_sampled());
//! ```

mod b3;
mod baggage;
mod composite;
pub mod global;
mod jaeger;
mod sampling_state;
mod trace_context;

use std::collections::HashMap;

use crate::context::Context;
pub use crate::context::{Baggage, BaggageEntry, BaggageError, BaggageProperty};
pub use b3::{B3Encoding, B3Propagator};
pub use baggage::{format_baggage, parse_baggage, BaggagePropagator};
pub use composite::TextMapCompositePropagator;
pub use global::propagators_from_env;
pub use jaeger::JaegerPropagator;
pub use sampling_state::{sampling_state, SamplingState};
pub use trace_context::{parse_traceparent, TraceContextPropagator};

/// Writes propagation fields into a carrier (HTTP headers, message metadata).
pub trait Injector {
    /// Sets `key` to `value`, replacing any previous value.
    fn set(&mut self, key: &str, value: String);

    /// The carrier as an `http::HeaderMap`, if it is one. Lets the built-in
    /// propagators insert a `traceparent` they formatted themselves (hex
    /// digits and dashes: a valid header value by construction) without
    /// `HeaderValue` checking its bytes again. Only `HeaderMap`'s own
    /// implementation overrides it; other carriers keep the default.
    #[doc(hidden)]
    fn as_header_map(&mut self) -> Option<&mut http::HeaderMap> {
        None
    }
}

/// Reads propagation fields from a carrier. Keys are looked up
/// case-insensitively (HTTP header names are case-insensitive: `TraceParent`
/// is `traceparent`), for every carrier this crate implements.
pub trait Extractor {
    /// The first value of `key`.
    fn get(&self, key: &str) -> Option<&str>;
    /// All keys present.
    fn keys(&self) -> Vec<&str>;
    /// Every value of `key`, in order (carriers that allow repeated keys, like
    /// HTTP headers, return several).
    fn get_all(&self, key: &str) -> Vec<&str> {
        self.get(key).into_iter().collect()
    }
    /// True if `key` appears more than once. Lets a propagator reject
    /// duplicated headers without allocating; the default asks [`get_all`](Self::get_all).
    fn has_multiple(&self, key: &str) -> bool {
        self.get_all(key).len() > 1
    }
    /// The value of `key` when it appears exactly once (`traceparent`: two
    /// of them make the context invalid). The default asks
    /// [`get`](Self::get) and [`has_multiple`](Self::has_multiple); carriers
    /// that can answer with one look-up override it.
    fn get_unique(&self, key: &str) -> Option<&str> {
        let v = self.get(key)?;
        (!self.has_multiple(key)).then_some(v)
    }
    /// [`get_unique`](Self::get_unique)'s value as raw bytes, for a caller
    /// that checks every byte itself (`traceparent`: only hex digits and
    /// dashes pass), so a header carrier can skip its text check. The
    /// default is `get_unique`'s text.
    #[doc(hidden)]
    fn get_unique_bytes(&self, key: &str) -> Option<&[u8]> {
        self.get_unique(key).map(str::as_bytes)
    }
    /// True if a value of `key` is present but is not text (an HTTP header
    /// line with bytes outside visible ASCII). [`get`](Self::get) and
    /// [`get_all`](Self::get_all) leave such a value out, so a propagator that
    /// combines every value into one list (W3C `tracestate`) asks this to
    /// treat the combined value as invalid instead of using what is left.
    /// Carriers that hold only strings never have one (the default).
    fn has_unreadable(&self, _key: &str) -> bool {
        false
    }
}

/// The value of `key` in a string map, case-insensitively: the exact key
/// first (the usual lowercase case costs one hash look-up), then a scan.
pub(crate) fn map_get<'a>(
    exact: Option<&'a String>,
    mut entries: impl Iterator<Item = (&'a String, &'a String)>,
    key: &str,
) -> Option<&'a str> {
    if let Some(v) = exact {
        return Some(v.as_str());
    }
    entries
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Every value whose key equals `key` case-insensitively, the exact-case key first.
pub(crate) fn map_get_all<'a>(
    exact: Option<&'a String>,
    entries: impl Iterator<Item = (&'a String, &'a String)>,
    key: &str,
) -> Vec<&'a str> {
    let mut out: Vec<&str> = exact.map(String::as_str).into_iter().collect();
    out.extend(
        entries
            .filter(|(k, _)| k.as_str() != key && k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str()),
    );
    out
}

impl<S: std::hash::BuildHasher> Injector for HashMap<String, String, S> {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_ascii_lowercase(), value);
    }
}

/// Up to this many entries, a string map is searched by a scan instead of a
/// hash look-up: comparing a few keys (most differ in length) is cheaper than
/// hashing the key with `SipHash`, and a case-insensitive match needs the
/// scan anyway when the exact key is absent.
const SCAN_MAX: usize = 8;

/// A small map's value of `key`: the exact-case key first, else the first
/// key that matches case-insensitively (as [`map_get`]).
fn scan_get<'a>(
    entries: impl Iterator<Item = (&'a String, &'a String)>,
    key: &str,
) -> Option<&'a str> {
    let mut other = None;
    for (k, v) in entries {
        if k.len() != key.len() {
            continue;
        }
        // The exact key (the usual lowercase case) is one `memcmp`; the
        // byte-by-byte case-insensitive compare only runs when it is not.
        if k == key {
            return Some(v.as_str());
        }
        if k.eq_ignore_ascii_case(key) {
            other.get_or_insert(v.as_str());
        }
    }
    other
}

impl<S: std::hash::BuildHasher> Extractor for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        if self.len() <= SCAN_MAX {
            return scan_get(self.iter(), key);
        }
        map_get(HashMap::get(self, key), self.iter(), key)
    }
    fn get_unique(&self, key: &str) -> Option<&str> {
        // One scan: the value when exactly one key matches case-insensitively.
        let mut found = None;
        for (k, v) in self.iter() {
            if k.len() == key.len() && (k == key || k.eq_ignore_ascii_case(key)) {
                if found.is_some() {
                    return None;
                }
                found = Some(v.as_str());
            }
        }
        found
    }
    fn keys(&self) -> Vec<&str> {
        HashMap::keys(self).map(String::as_str).collect()
    }
    fn get_all(&self, key: &str) -> Vec<&str> {
        map_get_all(HashMap::get(self, key), self.iter(), key)
    }
    fn has_multiple(&self, key: &str) -> bool {
        // Two keys that differ only in case are two headers of one name.
        HashMap::keys(self)
            .filter(|k| k.len() == key.len() && (*k == key || k.eq_ignore_ascii_case(key)))
            .nth(1)
            .is_some()
    }
}

impl Injector for http::HeaderMap {
    fn set(&mut self, key: &str, value: String) {
        // A value or name that is not a valid header is skipped: propagation must never fail the request.
        let name = match known_header(key) {
            Some(name) => Ok(name.clone()),
            None => http::header::HeaderName::from_bytes(key.as_bytes()),
        };
        // `try_from(String)` keeps the string's buffer (no copy).
        if let (Ok(name), Ok(value)) = (name, http::header::HeaderValue::try_from(value)) {
            self.insert(name, value);
        }
    }

    fn as_header_map(&mut self) -> Option<&mut http::HeaderMap> {
        Some(self)
    }
}

/// Inserts `traceparent` as formatted by
/// [`format_traceparent`](trace_context::format_traceparent), skipping
/// `HeaderValue`'s byte check (~55 bytes, one at a time) and reusing the
/// string's buffer.
pub(crate) fn insert_traceparent(headers: &mut http::HeaderMap, value: String) {
    static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    debug_assert!(value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    // SAFETY (a validity, not a memory-safety, requirement of `http`): the
    // value is `format_traceparent`'s output, only ASCII hex digits and `-`,
    // all of them bytes a header value may hold. Debug builds of `http`
    // check it anyway.
    let value =
        unsafe { http::HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::from(value)) };
    headers.insert(TRACEPARENT.clone(), value);
}

/// The header names the built-in propagators read, parsed once: looking a
/// `HeaderName` up skips validating and lower-casing the `&str` each time.
fn known_header(key: &str) -> Option<&'static http::HeaderName> {
    static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
    static BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");
    match key {
        "traceparent" => Some(&TRACEPARENT),
        "tracestate" => Some(&TRACESTATE),
        "baggage" => Some(&BAGGAGE),
        _ => None,
    }
}

/// Every value of `key` in a header map (a known name without re-parsing it).
fn header_values<'a>(
    map: &'a http::HeaderMap,
    key: &str,
) -> http::header::ValueIter<'a, http::HeaderValue> {
    match known_header(key) {
        Some(name) => map.get_all(name).iter(),
        None => map.get_all(key).iter(),
    }
}

impl Extractor for http::HeaderMap {
    fn get(&self, key: &str) -> Option<&str> {
        match known_header(key) {
            Some(name) => http::HeaderMap::get(self, name),
            None => http::HeaderMap::get(self, key),
        }
        .and_then(|v| v.to_str().ok())
    }
    fn get_unique(&self, key: &str) -> Option<&str> {
        let mut values = header_values(self, key);
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }
    fn keys(&self) -> Vec<&str> {
        http::HeaderMap::keys(self).map(|k| k.as_str()).collect()
    }
    fn get_all(&self, key: &str) -> Vec<&str> {
        header_values(self, key)
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
    fn has_multiple(&self, key: &str) -> bool {
        header_values(self, key).nth(1).is_some()
    }
    fn has_unreadable(&self, key: &str) -> bool {
        header_values(self, key).any(|v| v.to_str().is_err())
    }
}

/// An [`Extractor`] over an [`http::HeaderMap`] that has found the values of
/// the W3C headers (`traceparent`, `tracestate`, `baggage`) in one pass over
/// the map, so the default propagators' look-ups (five per request) cost a
/// field read each instead of hashing the name and probing the map every
/// time. Any other key (B3, Jaeger, custom propagators) and repeated W3C
/// headers are answered by the map itself, so the results are the same as
/// the map's own [`Extractor`] implementation.
#[cfg(feature = "http")]
pub(crate) struct ScannedHeaders<'a> {
    map: &'a http::HeaderMap,
    /// First value and number of values (saturating at 2) of
    /// `traceparent`, `tracestate` and `baggage`.
    known: [(Option<&'a http::HeaderValue>, u8); 3],
    /// First `Host` and `User-Agent` values, found by the same pass for the
    /// HTTP server span (what `HeaderMap::get` answers, without hashing).
    host: Option<&'a http::HeaderValue>,
    user_agent: Option<&'a http::HeaderValue>,
}

#[cfg(feature = "http")]
impl<'a> ScannedHeaders<'a> {
    /// Scans `map` once. A request usually carries a handful of headers:
    /// comparing each name's length, then its bytes, is cheaper than three
    /// hash look-ups of names that are mostly absent.
    pub(crate) fn new(map: &'a http::HeaderMap) -> Self {
        let mut known = [(None, 0u8); 3];
        let (mut host, mut user_agent) = (None, None);
        for (name, value) in map.iter() {
            let n = name.as_str();
            let slot = match n.len() {
                11 if n == "traceparent" => 0,
                10 if n == "tracestate" => 1,
                7 if n == "baggage" => 2,
                4 if n == "host" => {
                    host = host.or(Some(value));
                    continue;
                }
                10 if n == "user-agent" => {
                    user_agent = user_agent.or(Some(value));
                    continue;
                }
                _ => continue,
            };
            let (first, count): &mut (Option<&http::HeaderValue>, u8) = &mut known[slot];
            if first.is_none() {
                *first = Some(value);
            }
            *count = count.saturating_add(1).min(2);
        }
        ScannedHeaders {
            map,
            known,
            host,
            user_agent,
        }
    }

    /// The first `Host` value (as `HeaderMap::get(HOST)`).
    pub(crate) fn host(&self) -> Option<&'a http::HeaderValue> {
        self.host
    }

    /// The first `User-Agent` value (as `HeaderMap::get(USER_AGENT)`).
    pub(crate) fn user_agent(&self) -> Option<&'a http::HeaderValue> {
        self.user_agent
    }

    /// The scanned slot of `key`, when it is one of the three names.
    fn slot(&self, key: &str) -> Option<(Option<&'a http::HeaderValue>, u8)> {
        let i = match key {
            "traceparent" => 0,
            "tracestate" => 1,
            "baggage" => 2,
            _ => return None,
        };
        Some(self.known[i])
    }
}

#[cfg(feature = "http")]
impl Extractor for ScannedHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.slot(key) {
            Some((first, _)) => first.and_then(|v| v.to_str().ok()),
            None => Extractor::get(self.map, key),
        }
    }
    fn get_unique(&self, key: &str) -> Option<&str> {
        match self.slot(key) {
            Some((Some(v), 1)) => v.to_str().ok(),
            Some(_) => None,
            None => Extractor::get_unique(self.map, key),
        }
    }
    fn get_unique_bytes(&self, key: &str) -> Option<&[u8]> {
        match self.slot(key) {
            Some((Some(v), 1)) => Some(v.as_bytes()),
            Some(_) => None,
            None => Extractor::get_unique_bytes(self.map, key),
        }
    }
    fn keys(&self) -> Vec<&str> {
        Extractor::keys(self.map)
    }
    fn get_all(&self, key: &str) -> Vec<&str> {
        match self.slot(key) {
            Some((None, _)) => Vec::new(),
            Some((Some(v), 1)) => v.to_str().ok().into_iter().collect(),
            _ => Extractor::get_all(self.map, key),
        }
    }
    fn has_multiple(&self, key: &str) -> bool {
        match self.slot(key) {
            Some((_, count)) => count > 1,
            None => Extractor::has_multiple(self.map, key),
        }
    }
    fn has_unreadable(&self, key: &str) -> bool {
        match self.slot(key) {
            Some((None, _)) => false,
            Some((Some(v), 1)) => v.to_str().is_err(),
            _ => Extractor::has_unreadable(self.map, key),
        }
    }
}

/// Injects a [`Context`] into, and extracts one from, a text carrier.
pub trait TextMapPropagator: Send + Sync {
    /// Writes the fields for `cx` into `injector`.
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector);

    /// Returns `cx` enriched with what `extractor` carries. Invalid or absent
    /// fields leave `cx` unchanged (never an error, never a panic).
    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context;

    /// The carrier keys this propagator reads and writes.
    fn fields(&self) -> Vec<&'static str>;

    /// [`extract_with_context`](Self::extract_with_context) in place: `*cx`
    /// becomes what it would return. The built-in propagators change only
    /// the fields they extract, so nothing is cloned nor moved (the HTTP
    /// server layer's path, once per request; a context is ~80 bytes, and
    /// passed by value through a composite it was copied at every step).
    /// The default calls `extract_with_context`.
    #[doc(hidden)]
    fn extract_in_place(&self, cx: &mut Context, extractor: &dyn Extractor) {
        *cx = self.extract_with_context(cx, extractor);
    }

    /// False when extraction never changes the span context nor the remote
    /// sampling state (only baggage or other values): a composite then needs
    /// no first-wins bookkeeping around this propagator. The default, `true`,
    /// is always correct.
    #[doc(hidden)]
    fn extracts_span_context(&self) -> bool {
        true
    }

    /// Injects the thread's current context.
    fn inject(&self, injector: &mut dyn Injector) {
        self.inject_context(&Context::current(), injector)
    }

    /// Extracts into the thread's current context.
    fn extract(&self, extractor: &dyn Extractor) -> Context {
        self.extract_with_context(&Context::current(), extractor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ScannedHeaders` answers every question exactly as the header map
    /// itself, for the W3C names it scans and for any other name.
    #[cfg(feature = "http")]
    #[test]
    fn scanned_headers_answer_like_the_map() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cases: Vec<Vec<(&str, &[u8])>> = vec![
            vec![],
            vec![("traceparent", tp.as_bytes())],
            vec![
                ("traceparent", tp.as_bytes()),
                ("traceparent", tp.as_bytes()),
            ],
            vec![
                ("traceparent", tp.as_bytes()),
                ("tracestate", b"a=1"),
                ("tracestate", b"b=2"),
            ],
            vec![("traceparent", tp.as_bytes()), ("tracestate", b"a=\xff")],
            vec![("tracestate", b"a=1"), ("tracestate", b"\xff")],
            vec![("baggage", b"k=v"), ("baggage", b"x=y"), ("host", b"h")],
            vec![
                ("baggage", b"\xfe"),
                ("x-b3-traceid", b"80f198ee56343ba864fe8b2a57d3eff7"),
            ],
            vec![("b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
            // The scan hands `traceparent` over as bytes: what is not text
            // must still be refused as the map's text look-up refuses it.
            vec![(
                "traceparent",
                b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\xff",
            )],
            vec![(
                "traceparent",
                b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x\ty",
            )],
            vec![(
                "traceparent",
                b"\t 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 \t",
            )],
            vec![(
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\xe9",
            )],
        ];
        let keys = [
            "traceparent",
            "tracestate",
            "baggage",
            "Traceparent",
            "BAGGAGE",
            "b3",
            "x-b3-traceid",
            "host",
            "absent",
        ];
        for case in cases {
            let mut map = http::HeaderMap::new();
            for (k, v) in &case {
                map.append(
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_bytes(v).unwrap(),
                );
            }
            let scan = ScannedHeaders::new(&map);
            for key in keys {
                assert_eq!(
                    Extractor::get(&scan, key),
                    Extractor::get(&map, key),
                    "{key} {case:?}"
                );
                assert_eq!(scan.get_unique(key), map.get_unique(key), "{key} {case:?}");
                // Raw where the scan holds the value, else the text.
                let raw = match scan.slot(key) {
                    Some((Some(v), 1)) => Some(v.as_bytes()),
                    Some(_) => None,
                    None => map.get_unique(key).map(str::as_bytes),
                };
                assert_eq!(scan.get_unique_bytes(key), raw, "{key} {case:?}");
                assert_eq!(
                    scan.get_all(key),
                    Extractor::get_all(&map, key),
                    "{key} {case:?}"
                );
                assert_eq!(
                    scan.has_multiple(key),
                    map.has_multiple(key),
                    "{key} {case:?}"
                );
                assert_eq!(
                    scan.has_unreadable(key),
                    map.has_unreadable(key),
                    "{key} {case:?}"
                );
            }
            let mut a = scan.keys();
            let mut b = Extractor::keys(&map);
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
            // And the default propagators extract the same context through either.
            let (prop, _) = global::propagator_from_names("tracecontext,baggage,b3");
            let x = prop.extract_with_context(&Context::new(), &scan);
            let y = prop.extract_with_context(&Context::new(), &map);
            assert_eq!(x.span_context(), y.span_context(), "{case:?}");
            assert_eq!(x.baggage(), y.baggage(), "{case:?}");
            // And the bytes parser answers as the text one on text.
            if let Some(v) = map.get("traceparent") {
                assert_eq!(
                    trace_context::parse_traceparent_bytes(v.as_bytes()),
                    v.to_str().ok().and_then(parse_traceparent),
                    "{case:?}"
                );
            }
        }
    }

    #[test]
    fn header_map_inject_fast_path_equals_the_generic_one() {
        use crate::context::{SpanContext, TraceFlags, TraceState};
        use crate::ids::{SpanId, TraceId};
        let prop = TraceContextPropagator::new();
        for (flags, state) in [(0x01, ""), (0x00, "a=1,b=2"), (0x03, "")] {
            let sc = SpanContext::new(
                TraceId::from_bytes([0xab; 16]),
                SpanId::from_bytes([0x0f; 8]),
                TraceFlags::new(flags),
                false,
                TraceState::from_header(state).unwrap_or_default(),
            );
            let cx = Context::new().with_span_context(sc);
            // Through `as_header_map` (unchecked value) ...
            let mut fast = http::HeaderMap::new();
            fast.insert("traceparent", http::HeaderValue::from_static("stale"));
            prop.inject_context(&cx, &mut fast);
            // ... and through `set` with a carrier that hides the map.
            struct Generic(http::HeaderMap);
            impl Injector for Generic {
                fn set(&mut self, key: &str, value: String) {
                    self.0.set(key, value);
                }
            }
            let mut slow = Generic(http::HeaderMap::new());
            prop.inject_context(&cx, &mut slow);
            assert_eq!(fast, slow.0, "flags {flags:#x}, state {state:?}");
            assert_eq!(fast.get_all("traceparent").iter().count(), 1, "replaced");
            let tp = fast["traceparent"].to_str().unwrap();
            assert_eq!(
                parse_traceparent(tp).map(|p| p.0),
                Some(TraceId::from_bytes([0xab; 16]))
            );
        }
    }

    #[test]
    fn header_map_get_all_and_multiple() {
        let mut h = http::HeaderMap::new();
        h.append("baggage", "a=1".parse().unwrap());
        h.append("baggage", "b=2".parse().unwrap());
        assert_eq!(Extractor::get_all(&h, "baggage"), vec!["a=1", "b=2"]);
        assert!(h.has_multiple("baggage"));
        assert!(!h.has_multiple("traceparent"));
        assert_eq!(Extractor::get(&h, "Baggage"), Some("a=1"));
    }
}
