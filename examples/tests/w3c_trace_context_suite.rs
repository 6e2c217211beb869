//! The official W3C Trace Context test suite (github.com/w3c/trace-context,
//! `test/test.py`, run at `SPEC_LEVEL=2`, `STRICT_LEVEL=2`), reimplemented
//! case by case against `w3c-service`'s router — nothing is fetched at test
//! time and no code of the suite is copied. Each test is named after the
//! suite's test method (`TraceContextTest`, `AdvancedTest`,
//! `TraceContext2Test`) and sends the same headers, checking the same
//! assertions on the `traceparent` / `tracestate` the service sends back in
//! its callbacks.
//!
//! Like the harness, requests are written byte for byte on a TCP socket, so
//! header-name casing (`TrAcEpArEnT`), repeated header lines, empty values and
//! surrounding whitespace reach the service as the suite sends them. The
//! harness side (the callback endpoint) is a local axum server that records
//! each callback's headers; they are parsed with the suite's own rules
//! (`tracecontext/traceparent.py`, `tracecontext/tracestate.py`),
//! re-implemented below independently of ferrotrace's parsers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Path;
use axum::routing::post;
use ferrotrace_examples::telemetry::{Export, Telemetry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRACE_ID: &str = "12345678901234567890123456789012";
const PARENT_ID: &str = "1234567890123456";

type Callbacks = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

struct Suite {
    service: SocketAddr,
    harness: SocketAddr,
    callbacks: Callbacks,
    next_scope: std::sync::atomic::AtomicU64,
}

/// The suite's `Traceparent.from_string` for a version-00 header as the
/// harness validates it: four `-`-separated lowercase-hex fields of 2, 32,
/// 16 and 2 characters, version 00, non-zero ids.
#[derive(Debug)]
struct Traceparent {
    trace_id: String,
    parent_id: String,
    trace_flags: u8,
}

fn parse_traceparent(v: &str) -> Traceparent {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v:?} must have four fields");
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(hex(parts[0], 2) && parts[0] == "00", "version in {v:?}");
    assert!(
        hex(parts[1], 32) && parts[1] != "0".repeat(32),
        "trace-id in {v:?}"
    );
    assert!(
        hex(parts[2], 16) && parts[2] != "0".repeat(16),
        "parent-id in {v:?}"
    );
    assert!(hex(parts[3], 2), "trace-flags in {v:?}");
    Traceparent {
        trace_id: parts[1].to_string(),
        parent_id: parts[2].to_string(),
        trace_flags: u8::from_str_radix(parts[3], 16).unwrap(),
    }
}

/// The suite's `Tracestate`: members split at `OWS , OWS`, each matching
/// `key=value` with `key = [0-9a-z][_0-9a-z-*/@]{0,255}` and a value of up to
/// 256 printable characters not ending in a space; a repeated key keeps its
/// first value. An invalid member in a callback is a test failure.
#[derive(Debug, Default)]
struct Tracestate(Vec<(String, String)>);

impl Tracestate {
    fn add_header(&mut self, header: &str) {
        for member in header.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (k, v) = member
                .split_once('=')
                .unwrap_or_else(|| panic!("tracestate member {member:?} has no '='"));
            let kb = k.as_bytes();
            let key_ok = !kb.is_empty()
                && kb.len() <= 256
                && (kb[0].is_ascii_lowercase() || kb[0].is_ascii_digit())
                && kb[1..].iter().all(|&c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
                });
            let vb = v.as_bytes();
            let value_ok = !vb.is_empty()
                && vb.len() <= 256
                && vb[vb.len() - 1] != b' '
                && vb
                    .iter()
                    .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=');
            assert!(key_ok && value_ok, "illegal tracestate member {member:?}");
            if !self.0.iter().any(|(e, _)| e == k) {
                self.0.push((k.to_string(), v.to_string()));
            }
        }
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn to_header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Suite {
    async fn start() -> Suite {
        let callbacks: Callbacks = Arc::default();
        let seen = callbacks.clone();
        let harness = axum::Router::new().route(
            "/{id}",
            post(move |Path(id): Path<String>, headers: http::HeaderMap| {
                let seen = seen.clone();
                async move {
                    let list = headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    seen.lock().unwrap().insert(id, list);
                    "[]"
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let harness_addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, harness).await.unwrap() });

        let t = Telemetry::new("w3c-service", &Export::None).unwrap();
        let app = ferrotrace_examples::w3c::router(t.provider.tracer("w3c-service"));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Suite {
            service,
            harness: harness_addr,
            callbacks,
            next_scope: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The suite's `make_request`: POSTs to the service with `headers`
    /// exactly as given, asking for `count` callbacks; returns each
    /// callback's headers (failing when one is missing, as the suite does).
    async fn make_request(
        &self,
        headers: &[(&str, &str)],
        count: usize,
    ) -> Vec<Vec<(String, String)>> {
        let scope = format!(
            "s{}",
            self.next_scope
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let actions: Vec<serde_json::Value> = (0..count)
            .map(|i| {
                serde_json::json!({
                    "url": format!("http://{}/{scope}.{i}", self.harness),
                    "arguments": [],
                })
            })
            .collect();
        let body = serde_json::Value::Array(actions).to_string();
        let mut req = format!(
            "POST /test HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.service,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let mut s = tokio::net::TcpStream::connect(self.service).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut resp))
            .await
            .expect("the service answers within 10 s")
            .unwrap();
        let resp = String::from_utf8_lossy(&resp);
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "service answered {resp:?}"
        );
        let mut seen = self.callbacks.lock().unwrap();
        (0..count)
            .map(|i| {
                seen.remove(&format!("{scope}.{i}"))
                    .unwrap_or_else(|| panic!("the service made no callback {i} for {headers:?}"))
            })
            .collect()
    }

    /// `make_single_request_and_get_tracecontext`: exactly one `traceparent`
    /// in the callback, and the combined `tracestate`.
    async fn single(&self, headers: &[(&str, &str)]) -> (Traceparent, Tracestate) {
        let h = self.make_request(headers, 1).await.remove(0);
        let tps: Vec<&str> = h
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(tps.len(), 1, "expect one traceparent header, got {tps:?}");
        let mut ts = Tracestate::default();
        for (_, v) in h
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("tracestate"))
        {
            ts.add_header(v);
        }
        (parse_traceparent(tps[0]), ts)
    }

    /// Sends `traceparent: value` alone and returns the trace id seen downstream.
    async fn trace_id_for(&self, traceparent: &str) -> String {
        self.single(&[("traceparent", traceparent)])
            .await
            .0
            .trace_id
    }
}

fn tp(flags: &str) -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-{flags}")
}

/// A new trace: the callback's trace id is not `not`.
async fn assert_restarts(s: &Suite, traceparent: &str, not: &str) {
    let got = s.trace_id_for(traceparent).await;
    assert_ne!(got, not, "{traceparent:?} must start a new trace");
}

async fn assert_continues(s: &Suite, traceparent: &str) {
    let got = s.trace_id_for(traceparent).await;
    assert_eq!(got, TRACE_ID, "{traceparent:?} must be continued");
}

// ----------------------------------------------------------------------------
// TraceContextTest (Level 1)
// ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_both_traceparent_and_tracestate_missing() {
    let s = Suite::start().await;
    s.single(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_included_tracestate_missing() {
    let s = Suite::start().await;
    let (t, _) = s.single(&[("traceparent", &tp("01"))]).await;
    assert_eq!(t.trace_id, TRACE_ID);
    assert_ne!(t.parent_id, PARENT_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_duplicated() {
    let s = Suite::start().await;
    let (t, _) = s
        .single(&[
            (
                "traceparent",
                "00-12345678901234567890123456789011-1234567890123456-01",
            ),
            ("traceparent", &tp("01")),
        ])
        .await;
    assert_ne!(t.trace_id, "12345678901234567890123456789011");
    assert_ne!(t.trace_id, TRACE_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_header_name() {
    let s = Suite::start().await;
    for name in ["trace-parent", "trace.parent"] {
        let (t, _) = s.single(&[(name, &tp("01"))]).await;
        assert_ne!(t.trace_id, TRACE_ID, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_header_name_valid_casing() {
    let s = Suite::start().await;
    for name in ["TraceParent", "TrAcEpArEnT", "TRACEPARENT"] {
        let (t, _) = s.single(&[(name, &tp("01"))]).await;
        assert_eq!(t.trace_id, TRACE_ID, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_version_0x00() {
    let s = Suite::start().await;
    assert_restarts(&s, &format!("{}.", tp("01")), TRACE_ID).await;
    assert_restarts(
        &s,
        &format!("{}-what-the-future-will-be-like", tp("01")),
        TRACE_ID,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_version_0xcc() {
    let s = Suite::start().await;
    let cc = format!("cc-{TRACE_ID}-{PARENT_ID}-01");
    assert_continues(&s, &cc).await;
    assert_continues(&s, &format!("{cc}-what-the-future-will-be-like")).await;
    assert_restarts(&s, &format!("{cc}.what-the-future-will-be-like"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_version_0xff() {
    let s = Suite::start().await;
    assert_restarts(&s, &format!("ff-{TRACE_ID}-{PARENT_ID}-01"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_version_illegal_characters() {
    let s = Suite::start().await;
    for v in [".0", "0."] {
        assert_restarts(&s, &format!("{v}-{TRACE_ID}-{PARENT_ID}-01"), TRACE_ID).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_version_too_long() {
    let s = Suite::start().await;
    for v in ["000", "0000"] {
        assert_restarts(&s, &format!("{v}-{TRACE_ID}-{PARENT_ID}-01"), TRACE_ID).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_version_too_short() {
    let s = Suite::start().await;
    assert_restarts(&s, &format!("0-{TRACE_ID}-{PARENT_ID}-01"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_trace_id_all_zero() {
    let s = Suite::start().await;
    let zero = "0".repeat(32);
    assert_restarts(&s, &format!("00-{zero}-{PARENT_ID}-01"), &zero).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_trace_id_illegal_characters() {
    let s = Suite::start().await;
    for id in [
        ".2345678901234567890123456789012",
        "1234567890123456789012345678901.",
    ] {
        assert_restarts(&s, &format!("00-{id}-{PARENT_ID}-01"), id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_trace_id_too_long() {
    let s = Suite::start().await;
    let got = s
        .trace_id_for(&format!("00-{TRACE_ID}3-{PARENT_ID}-01"))
        .await;
    for not in [
        "123456789012345678901234567890123",
        TRACE_ID,
        "23456789012345678901234567890123",
    ] {
        assert_ne!(got, not);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_trace_id_too_short() {
    let s = Suite::start().await;
    let short = "1234567890123456789012345678901";
    assert_restarts(&s, &format!("00-{short}-{PARENT_ID}-01"), short).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_parent_id_all_zero() {
    let s = Suite::start().await;
    assert_restarts(&s, &format!("00-{TRACE_ID}-0000000000000000-01"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_parent_id_illegal_characters() {
    let s = Suite::start().await;
    for p in [".234567890123456", "123456789012345."] {
        assert_restarts(&s, &format!("00-{TRACE_ID}-{p}-01"), TRACE_ID).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_parent_id_too_long() {
    let s = Suite::start().await;
    assert_restarts(&s, &format!("00-{TRACE_ID}-{PARENT_ID}7-01"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_parent_id_too_short() {
    let s = Suite::start().await;
    assert_restarts(&s, &format!("00-{TRACE_ID}-123456789012345-01"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_trace_flags_illegal_characters() {
    let s = Suite::start().await;
    for f in [".0", "0."] {
        assert_restarts(&s, &tp(f), TRACE_ID).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_trace_flags_too_long() {
    let s = Suite::start().await;
    assert_restarts(&s, &tp("001"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_trace_flags_too_short() {
    let s = Suite::start().await;
    assert_restarts(&s, &tp("1"), TRACE_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traceparent_ows_handling() {
    let s = Suite::start().await;
    let v = tp("01");
    for padded in [
        format!(" {v}"),
        format!("\t{v}"),
        format!("{v} "),
        format!("{v}\t"),
        format!("\t {v} \t"),
    ] {
        assert_continues(&s, &padded).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_included_traceparent_missing() {
    let s = Suite::start().await;
    let (_, ts1) = s.single(&[("tracestate", "foo=1")]).await;
    let (_, ts2) = s.single(&[("tracestate", "foo=1,bar=2")]).await;
    assert_eq!(ts1.len(), ts2.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_included_traceparent_included() {
    let s = Suite::start().await;
    let (t, ts) = s
        .single(&[("traceparent", &tp("00")), ("tracestate", "foo=1,bar=2")])
        .await;
    assert_eq!(t.trace_id, TRACE_ID);
    assert_eq!(ts.get("foo"), Some("1"));
    assert_eq!(ts.get("bar"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_header_name() {
    let s = Suite::start().await;
    for name in ["trace-state", "trace.state"] {
        let (_, ts) = s
            .single(&[("traceparent", &tp("00")), (name, "foo=1")])
            .await;
        assert_eq!(ts.get("foo"), None, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_header_name_valid_casing() {
    let s = Suite::start().await;
    for name in ["TraceState", "TrAcEsTaTe", "TRACESTATE"] {
        let (_, ts) = s
            .single(&[("traceparent", &tp("00")), (name, "foo=1")])
            .await;
        assert_eq!(ts.get("foo"), Some("1"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_empty_header() {
    let s = Suite::start().await;
    let (t, ts) = s
        .single(&[("traceparent", &tp("00")), ("tracestate", "")])
        .await;
    assert_eq!(t.trace_id, TRACE_ID);
    assert_eq!(ts.len(), 0);
    for lines in [["foo=1", ""], ["", "foo=1"]] {
        let (t, ts) = s
            .single(&[
                ("traceparent", &tp("00")),
                ("tracestate", lines[0]),
                ("tracestate", lines[1]),
            ])
            .await;
        assert_eq!(t.trace_id, TRACE_ID);
        assert_eq!(ts.get("foo"), Some("1"), "{lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_multiple_headers_different_keys() {
    let s = Suite::start().await;
    let (t, ts) = s
        .single(&[
            ("traceparent", &tp("00")),
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", "rojo=1,congo=2"),
            ("tracestate", "baz=3"),
        ])
        .await;
    assert_eq!(t.trace_id, TRACE_ID);
    let h = ts.to_header();
    let pos = |m: &str| h.find(m).unwrap_or_else(|| panic!("{m} missing in {h}"));
    assert!(pos("foo=1") < pos("bar=2"));
    assert!(pos("bar=2") < pos("rojo=1"));
    assert!(pos("rojo=1") < pos("congo=2"));
    assert!(pos("congo=2") < pos("baz=3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_duplicated_keys() {
    let s = Suite::start().await;
    for (lines, either) in [
        (&["foo=1,foo=1"][..], &["foo=1"][..]),
        (&["foo=1,foo=2"][..], &["foo=1", "foo=2"][..]),
        (&["foo=1", "foo=1"][..], &["foo=1"][..]),
        (&["foo=1", "foo=2"][..], &["foo=1", "foo=2"][..]),
    ] {
        let mut headers = vec![("traceparent", tp("00"))];
        headers.extend(lines.iter().map(|l| ("tracestate", l.to_string())));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (t, ts) = s.single(&headers).await;
        assert_eq!(t.trace_id, TRACE_ID);
        let h = ts.to_header();
        assert!(either.iter().any(|m| h.contains(m)), "{lines:?} → {h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_all_allowed_characters() {
    let s = Suite::start().await;
    let key_without_vendor = format!("{}0123456789_-*/", ('a'..='z').collect::<String>());
    let key_with_vendor = format!("{key_without_vendor}@a-z0-9_-*/");
    let value: String = (0x20u8..=0x2b)
        .chain(0x2d..=0x3c)
        .chain(0x3e..=0x7e)
        .map(char::from)
        .collect();
    for key in [&key_without_vendor, &key_with_vendor] {
        let member = format!("{key}={value}");
        let (_, ts) = s
            .single(&[("traceparent", &tp("00")), ("tracestate", &member)])
            .await;
        assert_eq!(ts.get(key), Some(value.as_str()), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_ows_handling() {
    let s = Suite::start().await;
    for header in [
        "foo=1 \t , \t bar=2, \t baz=3",
        "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
    ] {
        let (_, ts) = s
            .single(&[("traceparent", &tp("00")), ("tracestate", header)])
            .await;
        assert_eq!(ts.get("foo"), Some("1"));
        assert_eq!(ts.get("bar"), Some("2"));
        assert_eq!(ts.get("baz"), Some("3"));
    }
    for header in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
        let (t, ts) = s
            .single(&[("traceparent", &tp("00")), ("tracestate", header)])
            .await;
        assert_eq!(t.trace_id, TRACE_ID);
        assert_eq!(ts.get("foo"), Some("1"), "{header:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_key_illegal_characters() {
    let s = Suite::start().await;
    for (header, key) in [
        ("foo =1", "foo "),
        ("FOO=1", "FOO"),
        ("foo.bar=1", "foo.bar"),
    ] {
        let (_, ts) = s
            .single(&[("traceparent", &tp("00")), ("tracestate", header)])
            .await;
        assert_eq!(ts.get(key), None, "{header:?}");
        assert_eq!(ts.len(), 0, "{header:?}: the whole tracestate is discarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_key_illegal_vendor_format() {
    let s = Suite::start().await;
    for key in ["foo@", "foo@@bar", "foo@bar@baz"] {
        let header = format!("{key}=1,bar=2");
        let (_, ts) = s
            .single(&[("traceparent", &tp("00")), ("tracestate", &header)])
            .await;
        assert_eq!(ts.get(key), Some("1"), "{header}");
        assert_eq!(ts.get("bar"), Some("2"), "{header}");
    }
    let (_, ts) = s
        .single(&[("traceparent", &tp("00")), ("tracestate", "@foo=1,bar=2")])
        .await;
    assert_eq!(ts.get("bar"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_member_count_limit() {
    let s = Suite::start().await;
    let lines = |last: &str| {
        let mut v = Vec::new();
        for start in [1, 11, 21] {
            v.push(
                (start..start + 10)
                    .map(|i| format!("bar{i:02}={i:02}"))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        v.push(last.to_string());
        v
    };
    let send = |lines: Vec<String>| {
        let mut h = vec![("traceparent".to_string(), tp("00"))];
        h.extend(lines.into_iter().map(|l| ("tracestate".to_string(), l)));
        h
    };
    let h = send(lines("bar31=31,bar32=32"));
    let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (_, ts) = s.single(&refs).await;
    assert_eq!(ts.get("bar01"), Some("01"));
    assert_eq!(ts.len(), 32);

    let h = send(lines("bar31=31,bar32=32,bar33=33"));
    let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (_, ts) = s.single(&refs).await;
    assert_eq!(ts.get("bar01"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_key_length_limit() {
    let s = Suite::start().await;
    let z256 = "z".repeat(256);
    let valid = [
        z256.clone(),
        format!("{}@{}", "t".repeat(241), "v".repeat(14)),
        format!("{}@v", "t".repeat(242)),
        format!("t@{}", "v".repeat(15)),
    ];
    for key in &valid {
        let member = format!("{key}=1");
        let (_, ts) = s
            .single(&[
                ("traceparent", &tp("00")),
                ("tracestate", "foo=1"),
                ("tracestate", &member),
            ])
            .await;
        assert_eq!(ts.get("foo"), Some("1"));
        assert_eq!(ts.get(key), Some("1"), "key of {} characters", key.len());
    }
    let member = format!("{}=1", "z".repeat(257));
    let (_, ts) = s
        .single(&[
            ("traceparent", &tp("00")),
            ("tracestate", "foo=1"),
            ("tracestate", &member),
        ])
        .await;
    assert_eq!(ts.get("foo"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tracestate_value_illegal_characters() {
    let s = Suite::start().await;
    let (_, ts) = s
        .single(&[("traceparent", &tp("00")), ("tracestate", "foo=bar=baz")])
        .await;
    assert_eq!(ts.get("foo"), None);
    let (_, ts) = s
        .single(&[("traceparent", &tp("00")), ("tracestate", "foo=,bar=3")])
        .await;
    assert_eq!(ts.get("foo"), None);
    assert_eq!(ts.get("bar"), None);
}

// ----------------------------------------------------------------------------
// AdvancedTest (Level 1)
// ----------------------------------------------------------------------------

fn ids(callbacks: &[Vec<(String, String)>]) -> (Vec<String>, Vec<String>) {
    callbacks
        .iter()
        .map(|h| {
            let tps: Vec<&String> = h
                .iter()
                .filter(|(k, _)| k == "traceparent")
                .map(|(_, v)| v)
                .collect();
            assert_eq!(tps.len(), 1);
            let t = parse_traceparent(tps[0]);
            (t.trace_id, t.parent_id)
        })
        .unzip()
}

fn distinct(v: &[String]) -> usize {
    v.iter().collect::<std::collections::HashSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_multiple_requests_with_valid_traceparent() {
    let s = Suite::start().await;
    let (traces, parents) = ids(&s.make_request(&[("traceparent", &tp("01"))], 3).await);
    assert_eq!(distinct(&traces), 1);
    assert_eq!(traces[0], TRACE_ID);
    assert_eq!(distinct(&parents), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_multiple_requests_without_traceparent() {
    let s = Suite::start().await;
    let (_, parents) = ids(&s.make_request(&[], 3).await);
    assert_eq!(distinct(&parents), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_multiple_requests_with_illegal_traceparent() {
    let s = Suite::start().await;
    let zero = format!("00-{}-{PARENT_ID}-01", "0".repeat(32));
    let (traces, parents) = ids(&s.make_request(&[("traceparent", &zero)], 3).await);
    assert!(!traces.contains(&"0".repeat(32)));
    assert_eq!(distinct(&parents), 3);
}

// ----------------------------------------------------------------------------
// TraceContext2Test (Level 2)
// ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_propagates_random_flag() {
    let s = Suite::start().await;
    let (t, _) = s.single(&[("traceparent", &tp("02"))]).await;
    assert_eq!(t.trace_id, TRACE_ID);
    assert_ne!(t.parent_id, PARENT_ID);
    assert_eq!(t.trace_flags & 0x02, 0x02, "random flag not set");
}
