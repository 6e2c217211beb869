//! The HTTP semantic-convention attributes the server and client layers
//! share: request method, protocol version, `server.address`/`server.port`
//! (from the URI or the `Host` header, split without allocating), `url.scheme`
//! and the gRPC service/method of a path.

use std::cell::RefCell;

use http::{HeaderValue, Method, Uri, Version};

use crate::attributes::KeyValue;
use crate::integrations::recent::Recent;

/// Semantic conventions allow only the known methods as `http.request.method`;
/// anything else is `_OTHER` (with the original in `http.request.method_original`),
/// which also keeps span names low-cardinality.
fn method_name(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

/// The method as a span name says it: its standard name, or `HTTP` for
/// another (what [`push_method`] returns).
pub(crate) fn method_label(method: &Method) -> &'static str {
    method_name(method).unwrap_or("HTTP")
}

pub(crate) fn push_method(attrs: &mut Vec<KeyValue>, method: &Method) -> &'static str {
    match method_name(method) {
        Some(m) => {
            attrs.push(KeyValue::new("http.request.method", m));
            m
        }
        None => {
            attrs.push(KeyValue::new("http.request.method", "_OTHER"));
            attrs.push(KeyValue::new(
                "http.request.method_original",
                method.as_str().to_string(),
            ));
            "HTTP"
        }
    }
}

pub(super) fn protocol_version(v: Version) -> Option<&'static str> {
    Some(match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

fn default_port(scheme: Option<&str>) -> Option<u16> {
    match scheme {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    }
}

/// Bytes a host may contain: letters, digits and `.-_[]:%` (the brackets
/// and colons of an IPv6 literal, `%` of a zone id).
const HOST_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric()
            || matches!(c, b'.' | b'-' | b'_' | b'[' | b']' | b':' | b'%');
        i += 1;
    }
    t
};

/// Splits a `Host` header value (`host`, `host:port`, `[v6]`, `[v6]:port`)
/// without allocating; `None` when it is not of that shape.
fn split_host(h: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &h[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        // One pass (the usual `name:port` case): the host's bytes are
        // checked up to the first colon; a second colon is not a host.
        let b = h.as_bytes();
        let mut colon = b.len();
        for (i, &c) in b.iter().enumerate() {
            if c == b':' {
                colon = i;
                break;
            }
            if !HOST_BYTES[usize::from(c)] {
                return None;
            }
        }
        if colon == b.len() {
            return (!h.is_empty()).then_some((h, None));
        }
        let (host, port) = (&h[..colon], &h[colon + 1..]);
        if host.is_empty() || port.contains(':') {
            return None;
        }
        return Some((host, Some(port.parse::<u16>().ok()?)));
    };
    let valid_host = !host.is_empty() && host.bytes().all(|c| HOST_BYTES[usize::from(c)]);
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// `Host` header values this thread split into a shared host name and a
/// port: a service is called by a handful of names, so a repeated value
/// costs one comparison instead of a check of each byte, the port's parse
/// and the shared name's look-up (~350 instructions per request, measured).
/// Bounded: [`HOST_MEMO`] values, replaced in turn.
const HOST_MEMO: usize = 4;

/// A `Host` value's bytes, its shared host name and its port.
type SplitHost = (Box<[u8]>, &'static str, Option<u16>);

thread_local! {
    static HOSTS: RefCell<Recent<SplitHost, HOST_MEMO>> = const { RefCell::new(Recent::new()) };
}

/// The shared host name and port a `Host` value gave before on this thread.
fn remembered_host(raw: &[u8]) -> Option<(&'static str, Option<u16>)> {
    HOSTS
        .try_with(|m| {
            let m = m.try_borrow().ok()?;
            m.find(|(r, _, _)| **r == *raw)
                .map(|&(_, host, port)| (host, port))
        })
        .ok()
        .flatten()
}

fn remember_host(raw: &[u8], host: &'static str, port: Option<u16>) {
    let _ = HOSTS.try_with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.put((raw.into(), host, port));
        }
    });
}

/// The `server.address` value and the port of a `Host` header value.
fn host_from_header(v: &HeaderValue) -> Option<(crate::attributes::Value, Option<u16>)> {
    use crate::integrations::shared_values::{http_slots::SERVER_ADDRESS, shared};
    let raw = v.as_bytes();
    if let Some((host, port)) = remembered_host(raw) {
        return Some((host.into(), port));
    }
    let (host, port) = split_host(v.to_str().ok()?)?;
    // A service sees few host names: shared, not copied per request.
    Some(match shared(SERVER_ADDRESS.0, SERVER_ADDRESS.1, host) {
        Some(s) => {
            remember_host(raw, s, port);
            (s.into(), port)
        }
        None => (host.to_owned().into(), port),
    })
}

/// `server.address`/`server.port` from the URI authority, else the `Host`
/// header (`host_header`, asked for only then).
pub(super) fn push_server_address<'h>(
    attrs: &mut Vec<KeyValue>,
    uri: &Uri,
    host_header: impl FnOnce() -> Option<&'h HeaderValue>,
) {
    let Some(authority) = uri.authority() else {
        if let Some((host, port)) = host_header().and_then(host_from_header) {
            attrs.push(KeyValue::new("server.address", host));
            if let Some(port) = port.or_else(|| default_port(uri.scheme_str())) {
                attrs.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        return;
    };
    // A service sees few host names: shared, not copied per request.
    attrs.push(KeyValue::new(
        "server.address",
        crate::integrations::shared_values::string_value(
            crate::integrations::shared_values::http_slots::SERVER_ADDRESS,
            authority.host(),
        ),
    ));
    if let Some(port) = authority
        .port_u16()
        .or_else(|| default_port(uri.scheme_str()))
    {
        attrs.push(KeyValue::new("server.port", i64::from(port)));
    }
}

/// `url.scheme`: the two usual ones without allocating.
pub(super) fn scheme_value(uri: &Uri) -> crate::attributes::Value {
    match uri.scheme_str() {
        None | Some("http") => "http".into(),
        Some("https") => "https".into(),
        Some(other) => other.to_string().into(),
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
pub(crate) fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous `split_host`, kept as the reference for the one-pass version.
    fn split_host_reference(h: &str) -> Option<(&str, Option<u16>)> {
        let (host, port) = if let Some(rest) = h.strip_prefix('[') {
            let end = rest.find(']')?;
            let host = &h[..end + 2];
            match &rest[end + 1..] {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':')?)),
            }
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return None,
                None => (h, None),
            }
        };
        let valid_host = !host.is_empty()
            && host.bytes().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, b'.' | b'-' | b'_' | b'[' | b']' | b':' | b'%')
            });
        if !valid_host {
            return None;
        }
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok()?),
        };
        Some((host, port))
    }

    /// What `push_server_address` records for a `Host` value, worked out
    /// from `split_host` alone (no memo).
    fn expected(h: &[u8]) -> Vec<KeyValue> {
        let mut out = Vec::new();
        let text = std::str::from_utf8(h)
            .ok()
            .filter(|t| HeaderValue::from_bytes(t.as_bytes()).is_ok_and(|v| v.to_str().is_ok()));
        if let Some((host, port)) = text.and_then(split_host) {
            out.push(KeyValue::new("server.address", host.to_string()));
            // No scheme in the URI: no default port.
            if let Some(port) = port {
                out.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        out
    }

    /// A repeated `Host` value (remembered by the thread) gives what its
    /// first use gave, through more distinct values than the memo holds,
    /// values that differ only in the port, and values that are refused.
    #[test]
    fn remembered_host_values_give_what_splitting_gives() {
        let uri: Uri = "/users/42".parse().unwrap();
        let values: Vec<&[u8]> = vec![
            b"api.example.com:8080",
            b"api.example.com:8081",
            b"api.example.com",
            b"[::1]:443",
            b"a b:80",
            b"a:65536",
            b"other.example:1",
            b"x",
            b"",
        ];
        for round in 0..4 {
            for i in 0..values.len() {
                // Different orders each round: hits, misses and replacements.
                let raw = values[(i * (round + 1) + round) % values.len()];
                let Ok(v) = HeaderValue::from_bytes(raw) else {
                    continue;
                };
                let mut attrs = Vec::new();
                push_server_address(&mut attrs, &uri, || Some(&v));
                assert_eq!(attrs, expected(raw), "{:?}", String::from_utf8_lossy(raw));
            }
        }
        // An authority in the URI wins over the header.
        let mut attrs = Vec::new();
        let v = HeaderValue::from_static("api.example.com:8080");
        push_server_address(&mut attrs, &"https://b.example/x".parse().unwrap(), || {
            Some(&v)
        });
        assert_eq!(
            attrs,
            vec![
                KeyValue::new("server.address", "b.example"),
                KeyValue::new("server.port", 443_i64)
            ]
        );
    }

    #[test]
    fn split_host_matches_the_reference() {
        let fixed = [
            "",
            ":",
            "a:",
            ":80",
            "a:80",
            "a:+80",
            "a:65536",
            "a:8:0",
            "a::80",
            "a b:80",
            "api.example.com:8080",
            "[::1]",
            "[::1]:443",
            "[::1]x",
            "[",
            "a]b:1",
            "a[b",
            "h%25:1",
            "é:80",
            "a:٣",
            "localhost",
            "a_b-c.d:0",
        ];
        for h in fixed {
            assert_eq!(split_host(h), split_host_reference(h), "{h:?}");
        }
        // Generated: short strings over an alphabet rich in the bytes that matter.
        let alphabet: Vec<char> = "a.-_[]:%0189 +é".chars().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 9) as usize;
            let h: String = (0..len)
                .map(|i| alphabet[((x >> (i * 5 + 3)) % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(split_host(&h), split_host_reference(&h), "{h:?}");
        }
    }

    #[test]
    fn grpc_paths() {
        assert_eq!(
            grpc_method("/pay.Payments/Charge"),
            Some(("pay.Payments", "Charge"))
        );
        assert_eq!(grpc_method("/nope"), None);
        assert_eq!(grpc_method("//x"), None);
        assert_eq!(grpc_method("/a/b/c"), None);
    }

    #[test]
    fn unknown_method_is_other() {
        let mut attrs = Vec::new();
        let m = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(push_method(&mut attrs, &m), "HTTP");
        assert_eq!(attrs[0], KeyValue::new("http.request.method", "_OTHER"));
    }
}
