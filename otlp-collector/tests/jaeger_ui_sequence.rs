//! The Jaeger UI's own request sequence — services → operations → search →
//! trace → dependencies — with exactly the URLs and parameters the UI builds,
//! every response checked against Jaeger's JSON model (keys, types, formats),
//! over a real SqliteStore and a real socket.
//!
//! Sources of the request shapes (read, not copied): jaeger-ui `main`
//! (August 2026) `src/api/v3/client.ts` (services, operations and trace
//! summaries on `/api/v3`, parameters set on a `URLSearchParams`, times as
//! `Date.toISOString()`), `src/api/jaeger.ts` (trace by id and dependencies on
//! the v1 API, `query-string` encoding, a one-week dependency lookback),
//! `SearchForm.tsx` (tags as logfmt turned into a JSON object of strings);
//! jaeger-ui before its v3 search (`searchTraces` on `/api/traces` with
//! `lookback` next to `start`/`end`); Grafana's Jaeger data source
//! (`lookback=custom`). Response models: Jaeger's `internal/uimodel` (v1) and
//! `api_v3` protos with proto3 JSON, as the UI's Zod schemas check them.

mod query_support;

use ferrotrace_collector::model::{AttrValue, KeyValue, SpanKind, StatusCode};
use query_support::*;
use serde_json::Value;

/// A JSON shape, as strict as Jaeger's Go structs: objects have exactly the
/// listed keys (optional ones may be absent), values the listed types.
enum S {
    Str,
    /// Lowercase hex of one of these lengths.
    Hex(&'static [usize]),
    /// A decimal unsigned integer in a string (proto3 JSON 64-bit integers).
    DecStr,
    UInt,
    Int,
    /// An RFC 4648 base64 string.
    Base64,
    OneOf(&'static [&'static str]),
    Nullable(Box<S>),
    Arr(Box<S>),
    /// Object with (key, shape, required).
    Obj(Vec<(&'static str, S, bool)>),
    /// Object with any keys, values of one shape.
    Map(Box<S>),
    /// A Jaeger v1 `KeyValue` (`value` typed by `type`).
    JaegerTag,
    /// Anything (checked separately).
    Any,
}

fn arr(s: S) -> S {
    S::Arr(Box::new(s))
}
fn nullable(s: S) -> S {
    S::Nullable(Box::new(s))
}
fn obj(fields: Vec<(&'static str, S, bool)>) -> S {
    S::Obj(fields)
}

const JS_MAX_SAFE: i64 = (1 << 53) - 1;

fn check(path: &str, v: &Value, s: &S) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{path}: expected {what}, got {v}"));
    match s {
        S::Str => v
            .is_string()
            .then_some(())
            .map_or_else(|| fail("a string"), Ok),
        S::Hex(lens) => match v.as_str() {
            Some(h)
                if lens.contains(&h.len())
                    && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(())
            }
            _ => fail(&format!("lowercase hex of length {lens:?}")),
        },
        S::DecStr => match v.as_str() {
            Some(d)
                if !d.is_empty()
                    && d.bytes().all(|c| c.is_ascii_digit())
                    && d.parse::<u64>().is_ok() =>
            {
                Ok(())
            }
            _ => fail("a decimal uint64 string"),
        },
        S::UInt => v
            .is_u64()
            .then_some(())
            .map_or_else(|| fail("an unsigned integer"), Ok),
        S::Int => v
            .is_i64()
            .then_some(())
            .map_or_else(|| fail("an integer"), Ok),
        S::Base64 => match v.as_str() {
            Some(b)
                if b.len() % 4 == 0
                    && b.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')) =>
            {
                Ok(())
            }
            _ => fail("base64"),
        },
        S::OneOf(opts) => match v.as_str() {
            Some(x) if opts.contains(&x) => Ok(()),
            _ => fail(&format!("one of {opts:?}")),
        },
        S::Nullable(inner) => {
            if v.is_null() {
                Ok(())
            } else {
                check(path, v, inner)
            }
        }
        S::Arr(inner) => {
            let Some(a) = v.as_array() else {
                return fail("an array");
            };
            for (i, x) in a.iter().enumerate() {
                check(&format!("{path}[{i}]"), x, inner)?;
            }
            Ok(())
        }
        S::Obj(fields) => {
            let Some(o) = v.as_object() else {
                return fail("an object");
            };
            for k in o.keys() {
                if !fields.iter().any(|(f, _, _)| f == k) {
                    return Err(format!("{path}: unexpected key {k:?} in {v}"));
                }
            }
            for (f, shape, required) in fields {
                match o.get(*f) {
                    Some(x) => check(&format!("{path}.{f}"), x, shape)?,
                    None if *required => return Err(format!("{path}: missing {f:?} in {v}")),
                    None => {}
                }
            }
            Ok(())
        }
        S::Map(inner) => {
            let Some(o) = v.as_object() else {
                return fail("an object");
            };
            for (k, x) in o {
                check(&format!("{path}.{k}"), x, inner)?;
            }
            Ok(())
        }
        S::Any => Ok(()),
        S::JaegerTag => {
            check(
                path,
                v,
                &obj(vec![
                    ("key", S::Str, true),
                    (
                        "type",
                        S::OneOf(&["string", "bool", "int64", "float64", "binary"]),
                        true,
                    ),
                    ("value", S::Any, true),
                ]),
            )?;
            let val = &v["value"];
            let ok = match v["type"].as_str().unwrap_or_default() {
                "string" => val.is_string(),
                "bool" => val.is_boolean(),
                // Numbers JavaScript holds exactly; beyond, decimal text (as Jaeger does).
                "int64" => {
                    val.as_i64()
                        .is_some_and(|i| (-JS_MAX_SAFE..=JS_MAX_SAFE).contains(&i))
                        || val.as_str().is_some_and(|s| {
                            s.parse::<i64>()
                                .is_ok_and(|i| !(-JS_MAX_SAFE..=JS_MAX_SAFE).contains(&i))
                        })
                }
                // Jaeger cannot render NaN/±Infinity at all; ferrotrace sends their names.
                "float64" => {
                    val.is_number()
                        || matches!(val.as_str(), Some("NaN" | "Infinity" | "-Infinity"))
                }
                "binary" => check(path, val, &S::Base64).is_ok(),
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                fail("a value matching its type")
            }
        }
    }
}

/// Jaeger v1 (`internal/uimodel`): the response envelope around `data`.
fn v1_envelope(data: S) -> S {
    obj(vec![
        ("data", data, true),
        ("total", S::Int, true),
        ("limit", S::Int, true),
        ("offset", S::Int, true),
        (
            "errors",
            nullable(arr(obj(vec![
                ("code", S::Int, false),
                ("msg", S::Str, true),
                ("traceID", S::Hex(&[16, 32]), false),
            ]))),
            true,
        ),
    ])
}

/// Jaeger v1 `Trace` (`parentSpanID` and an embedded `process` are not sent).
fn v1_trace() -> S {
    let id = || S::Hex(&[16, 32]);
    obj(vec![
        ("traceID", id(), true),
        (
            "spans",
            arr(obj(vec![
                ("traceID", id(), true),
                ("spanID", S::Hex(&[16]), true),
                ("flags", S::UInt, false),
                ("operationName", S::Str, true),
                (
                    "references",
                    arr(obj(vec![
                        ("refType", S::OneOf(&["CHILD_OF", "FOLLOWS_FROM"]), true),
                        ("traceID", id(), true),
                        ("spanID", S::Hex(&[16]), true),
                    ])),
                    true,
                ),
                ("startTime", S::UInt, true),
                ("duration", S::UInt, true),
                ("tags", arr(S::JaegerTag), true),
                (
                    "logs",
                    arr(obj(vec![
                        ("timestamp", S::UInt, true),
                        ("fields", arr(S::JaegerTag), true),
                    ])),
                    true,
                ),
                ("processID", S::Str, true),
                ("warnings", nullable(arr(S::Str)), true),
            ])),
            true,
        ),
        (
            "processes",
            S::Map(Box::new(obj(vec![
                ("serviceName", S::Str, true),
                ("tags", arr(S::JaegerTag), true),
            ]))),
            true,
        ),
        ("warnings", nullable(arr(S::Str)), true),
    ])
}

fn v1_dependencies() -> S {
    arr(obj(vec![
        ("parent", S::Str, true),
        ("child", S::Str, true),
        ("callCount", S::UInt, true),
    ]))
}

const KINDS: &[&str] = &["server", "client", "producer", "consumer", "internal"];

/// `api_v3` `TraceSummary` (proto3 JSON; `traceId` 32 hex as the UI's schema demands).
fn v3_summaries() -> S {
    obj(vec![(
        "summaries",
        arr(obj(vec![
            ("traceId", S::Hex(&[32]), true),
            ("rootServiceName", S::Str, false),
            ("rootOperationName", S::Str, false),
            ("minStartTimeUnixNano", S::DecStr, false),
            ("maxEndTimeUnixNano", S::DecStr, false),
            ("spanCount", S::UInt, false),
            ("errorSpanCount", S::UInt, false),
            ("orphanSpanCount", S::UInt, false),
            (
                "services",
                arr(obj(vec![
                    ("name", S::Str, true),
                    ("spanCount", S::UInt, false),
                    ("errorSpanCount", S::UInt, false),
                ])),
                false,
            ),
        ])),
        false,
    )])
}

#[track_caller]
fn assert_shape(what: &str, v: &Value, s: &S) {
    if let Err(e) = check("$", v, s) {
        panic!("{what}: {e}");
    }
}

/// `encodeURIComponent`.
fn encode_uri_component(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `query-string`'s `stringify` (strict RFC 3986: `!'()*` encoded too; keys sorted).
fn query_string_stringify(pairs: &[(&str, &str)]) -> String {
    let strict = |s: &str| {
        encode_uri_component(s)
            .replace('!', "%21")
            .replace('\'', "%27")
            .replace('(', "%28")
            .replace(')', "%29")
            .replace('*', "%2A")
    };
    let mut sorted = pairs.to_vec();
    sorted.sort_by_key(|(k, _)| *k);
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", strict(k), strict(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `URLSearchParams.toString()` (application/x-www-form-urlencoded), in insertion order.
fn url_search_params(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for &b in s.as_bytes() {
            match b {
                b' ' => out.push('+'),
                b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => out.push(b as char),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `new Date(ms).toISOString()`: UTC, millisecond precision.
fn iso_ms(ns: u64) -> String {
    let s = rfc(ns / 1_000_000 * 1_000_000);
    // rfc() writes nine fractional digits; toISOString writes three.
    let (head, frac) = s.trim_end_matches('Z').split_once('.').unwrap();
    format!("{head}.{}Z", &frac[..3])
}

/// Edge values the JSON model must carry: integers beyond JavaScript's safe
/// range, non-finite doubles, an empty value, bytes, an operation without a
/// kind, a span with zero flags; under service `edge-values`.
async fn add_edge_value_trace(sv: &Served) -> [u8; 16] {
    let t = tid(777);
    let b = sv.fx.base_ns + 9_000 * MS;
    let mut root = span(
        t,
        1,
        None,
        "edge-values",
        "GET /values",
        SpanKind::Server,
        b,
        b + 7_654_321,
    );
    root.attributes = vec![
        KeyValue::new("big", AttrValue::Int(1 << 60)),
        KeyValue::new("safe", AttrValue::Int(JS_MAX_SAFE)),
        KeyValue::new("unsafe", AttrValue::Int(-JS_MAX_SAFE - 1)),
        KeyValue::new("nan", AttrValue::Double(f64::NAN)),
        KeyValue::new("inf", AttrValue::Double(f64::INFINITY)),
        KeyValue::new("-inf", AttrValue::Double(f64::NEG_INFINITY)),
        KeyValue::new("empty", AttrValue::Empty),
        KeyValue::new("raw", AttrValue::Bytes(vec![0xfb, 0xff])),
        KeyValue::new(
            "list",
            AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Empty]),
        ),
    ];
    root.status_code = StatusCode::Error;
    let mut child = span(
        t,
        2,
        Some(1),
        "edge-values",
        "unkinded",
        SpanKind::Unspecified,
        b + 1_000,
        b + 2_001_999,
    );
    child.flags = 0;
    let orphan = span(
        t,
        3,
        Some(404),
        "edge-db",
        "late",
        SpanKind::Client,
        b + 3_000,
        b + 4_000,
    );
    fill(&sv.store, &[root, child, orphan]).await;
    t
}

/// The current Jaeger UI: metadata and search on `/api/v3`, the trace and the
/// dependency graph on the v1 API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_jaeger_ui_request_sequence() {
    let sv = start().await;
    let edge = add_edge_value_trace(&sv).await;
    let a = sv.addr;

    // 1. Services (useServices → jaegerClient.fetchServices).
    let (st, v) = get_json(a, "/api/v3/services").await;
    assert_eq!(st, 200);
    assert_shape("services", &v, &obj(vec![("services", arr(S::Str), true)]));
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in ["frontend", "checkout", "payments", "edge-values"] {
        assert!(services.contains(&s), "{s} in {services:?}");
    }

    // 2. Span names of the chosen service (fetchSpanNames: no span kind).
    for svc in ["frontend", "edge-values"] {
        let (st, v) = get_json(
            a,
            &format!("/api/v3/operations?service={}", encode_uri_component(svc)),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        assert_shape(
            "operations",
            &v,
            &obj(vec![(
                "operations",
                arr(obj(vec![
                    ("name", S::Str, true),
                    ("spanKind", S::OneOf(KINDS), true),
                ])),
                true,
            )]),
        );
        if svc == "edge-values" {
            assert!(
                v["operations"]
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::json!({ "name": "unkinded", "spanKind": "internal" })),
                "Jaeger reports an unspecified kind as internal: {v}"
            );
        }
    }

    // 3. Search (fetchTraceSummaries), as buildSearchQuery + client.ts build
    // it: the default lookback (1h) and limit (20), µs start/end turned into
    // ISO strings; logfmt tags → a JSON object of strings.
    let end_us = now_ns() / 1000;
    let start_us = end_us - 3_600_000_000;
    let window = [
        ("query.startTimeMin", iso_ms(start_us * 1000)),
        ("query.startTimeMax", iso_ms(end_us * 1000)),
    ];
    let search = |svc: Option<&str>, op: Option<&str>, min: Option<&str>, tags: Option<&str>| {
        let mut p: Vec<(&str, String)> = Vec::new();
        if let Some(s) = svc {
            p.push(("query.serviceName", s.into()));
        }
        if let Some(o) = op {
            p.push(("query.operationName", o.into()));
        }
        p.extend(window.iter().cloned());
        p.push(("query.searchDepth", "20".into()));
        if let Some(m) = min {
            p.push(("query.durationMin", m.into()));
        }
        if let Some(t) = tags {
            p.push(("query.attributes", t.into()));
        }
        let pairs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        format!("/api/v3/trace-summaries?{}", url_search_params(&pairs))
    };
    let summaries = |v: &Value| v["summaries"].as_array().cloned().unwrap_or_default();

    let (st, v) = get_json(a, &search(Some("frontend"), None, None, None)).await;
    assert_eq!(st, 200, "{v}");
    assert_shape("trace-summaries", &v, &v3_summaries());
    let found = summaries(&v);
    let checkout = found
        .iter()
        .find(|s| s["traceId"] == hex(&sv.fx.checkout))
        .unwrap_or_else(|| panic!("checkout trace in {v}"))
        .clone();
    assert_eq!(checkout["rootServiceName"], "frontend");
    assert_eq!(checkout["rootOperationName"], "GET /checkout");
    assert_eq!(checkout["spanCount"], 4);
    assert_eq!(
        checkout["services"],
        serde_json::json!([
            { "name": "checkout", "spanCount": 2, "errorSpanCount": 0 },
            { "name": "frontend", "spanCount": 2, "errorSpanCount": 0 },
        ])
    );

    // Tags and a minimum duration, on one operation.
    let (st, v) = get_json(
        a,
        &search(
            Some("payments"),
            Some("Charge"),
            Some("100ms"),
            Some(r#"{"error":"true"}"#),
        ),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_shape("trace-summaries (tags)", &v, &v3_summaries());
    let found = summaries(&v);
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["traceId"], hex(&sv.fx.erroring));
    assert_eq!(found[0]["errorSpanCount"], 2);
    assert_eq!(
        found[0]["rootServiceName"], "api",
        "the trace's root, not the match"
    );

    // All services: the UI leaves query.serviceName out.
    let (st, v) = get_json(a, &search(None, Some("late"), None, None)).await;
    assert_eq!(st, 200, "{v}");
    assert_shape("trace-summaries (all services)", &v, &v3_summaries());
    let found = summaries(&v);
    assert_eq!(found.len(), 1, "{v}");
    let edge_summary = found[0].clone();
    assert_eq!(edge_summary["traceId"], hex(&edge));
    assert_eq!(edge_summary["orphanSpanCount"], 1);
    assert_eq!(edge_summary["errorSpanCount"], 1);

    // Nothing found: an empty list, not an error.
    let (st, v) = get_json(a, &search(Some("no-such-service"), None, None, None)).await;
    assert_eq!(st, 200, "{v}");
    assert_shape("trace-summaries (none)", &v, &v3_summaries());
    assert!(summaries(&v).is_empty());

    // 4. The trace the user clicks (useTrace → JaegerAPI.fetchTrace, v1).
    for (summary, id) in [(&checkout, sv.fx.checkout), (&edge_summary, edge)] {
        let path = format!(
            "/api/traces/{}",
            encode_uri_component(summary["traceId"].as_str().unwrap())
        );
        let (st, v) = get_json(a, &path).await;
        assert_eq!(st, 200, "{path}: {v}");
        assert_shape(&path, &v, &v1_envelope(arr(v1_trace())));
        let t = &v["data"][0];
        assert_eq!(t["traceID"], hex(&id));
        let spans = t["spans"].as_array().unwrap();
        assert_eq!(Some(spans.len() as u64), summary["spanCount"].as_u64());
        for s in spans {
            let pid = s["processID"].as_str().unwrap();
            assert!(t["processes"].get(pid).is_some(), "{pid} in processes");
        }
        // The UI's duration of the summary, (maxEnd − minStart) / 1000 in µs,
        // matches the trace's extent (µs, each span rounded down once).
        let ns = |k: &str| summary[k].as_str().unwrap().parse::<u64>().unwrap();
        let summary_us = (ns("maxEndTimeUnixNano") - ns("minStartTimeUnixNano")) / 1000;
        let first = spans
            .iter()
            .map(|s| s["startTime"].as_u64().unwrap())
            .min()
            .unwrap();
        let last = spans
            .iter()
            .map(|s| s["startTime"].as_u64().unwrap() + s["duration"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(
            (last - first).abs_diff(summary_us) <= 1,
            "{summary_us} vs {}",
            last - first
        );
    }
    // The edge values, as Jaeger renders them.
    let (_, v) = get_json(a, &format!("/api/traces/{}", hex(&edge))).await;
    let spans = v["data"][0]["spans"].as_array().unwrap().clone();
    let root = spans
        .iter()
        .find(|s| s["operationName"] == "GET /values")
        .unwrap();
    let tag = |k: &str| {
        root["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == k)
            .unwrap_or_else(|| panic!("{k}"))
            .clone()
    };
    assert_eq!(tag("big")["value"], "1152921504606846976");
    assert_eq!(tag("safe")["value"], JS_MAX_SAFE);
    assert_eq!(tag("unsafe")["value"], "-9007199254740992");
    assert_eq!(tag("nan")["value"], "NaN");
    assert_eq!(tag("inf")["value"], "Infinity");
    assert_eq!(tag("-inf")["value"], "-Infinity");
    assert_eq!(
        tag("empty"),
        serde_json::json!({"key": "empty", "type": "string", "value": ""})
    );
    assert_eq!(
        tag("raw"),
        serde_json::json!({"key": "raw", "type": "binary", "value": "+/8="})
    );
    assert_eq!(root["duration"], 7_654, "(end − start) / 1000");
    let child = spans
        .iter()
        .find(|s| s["operationName"] == "unkinded")
        .unwrap();
    assert_eq!(child["duration"], 2_000, "2,000,999 ns is 2,000 µs");
    assert!(
        child.get("flags").is_none(),
        "zero flags are omitted: {child}"
    );
    // The same values on v3, in proto3 JSON.
    let (st, v) = get_json(a, &format!("/api/v3/traces/{}", hex(&edge))).await;
    assert_eq!(st, 200, "{v}");
    let attrs = v["result"]["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["scopeSpans"].as_array().unwrap().clone())
        .flat_map(|s| s["spans"].as_array().unwrap().clone())
        .find(|s| s["name"] == "GET /values")
        .unwrap()["attributes"]
        .clone();
    let attr = |k: &str| {
        attrs
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == k)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(
        attr("big"),
        serde_json::json!({ "intValue": "1152921504606846976" })
    );
    assert_eq!(attr("nan"), serde_json::json!({ "doubleValue": "NaN" }));
    assert_eq!(
        attr("inf"),
        serde_json::json!({ "doubleValue": "Infinity" })
    );
    assert_eq!(
        attr("-inf"),
        serde_json::json!({ "doubleValue": "-Infinity" })
    );
    assert_eq!(attr("empty"), serde_json::json!({}));
    assert_eq!(
        attr("list"),
        serde_json::json!({ "arrayValue": { "values": [{ "intValue": "1" }, {}] } })
    );
    // Trace ids in base64 as well (Jaeger accepts them on both APIs).
    use base64::Engine as _;
    for b64 in [
        base64::engine::general_purpose::STANDARD.encode(edge),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(edge),
    ] {
        for api in ["/api/v3/traces/", "/api/traces/"] {
            let (st, _) = get(a, &format!("{api}{}", encode_uri_component(&b64))).await;
            assert_eq!(st, 200, "{api}{b64}");
        }
    }

    // 5. The dependency graph (useDependenciesQuery: endTs now, one week back).
    let path = format!(
        "/api/dependencies?{}",
        query_string_stringify(&[
            ("endTs", &(now_ns() / 1_000_000).to_string()),
            ("lookback", "604800000"),
        ])
    );
    let (st, v) = get_json(a, &path).await;
    assert_eq!(st, 200, "{v}");
    assert_shape("dependencies", &v, &v1_envelope(v1_dependencies()));
    assert!(
        v["data"].as_array().unwrap().contains(
            &serde_json::json!({ "parent": "frontend", "child": "checkout", "callCount": 1 })
        ),
        "{v}"
    );
}

/// The Jaeger UI before its v3 search, and Grafana's Jaeger data source: all
/// on the v1 API, search with `lookback` next to `start`/`end`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_ui_v1_and_grafana_request_sequence() {
    let sv = start().await;
    let a = sv.addr;

    let (st, v) = get_json(a, "/api/services").await;
    assert_eq!(st, 200);
    assert_shape("services", &v, &v1_envelope(arr(S::Str)));
    assert_eq!(
        Some(v["total"].as_u64().unwrap() as usize),
        v["data"].as_array().map(Vec::len)
    );

    let (st, v) = get_json(
        a,
        &format!(
            "/api/services/{}/operations",
            encode_uri_component("checkout")
        ),
    )
    .await;
    assert_eq!(st, 200);
    assert_shape("operations", &v, &v1_envelope(arr(S::Str)));

    // Jaeger UI 1.x searchTraces: query-string of the search form, with the
    // lookback it offers (2 weeks is wider than this server's window: the
    // newest part is searched, as the UI's results are newest first).
    let now_us = now_ns() / 1000;
    for (lookback, back_us) in [
        ("1h", 3_600_000_000u64),
        ("2d", 172_800_000_000),
        ("2w", 1_209_600_000_000),
    ] {
        let (start, end) = ((now_us - back_us).to_string(), now_us.to_string());
        let q = query_string_stringify(&[
            ("service", "frontend"),
            ("limit", "20"),
            ("lookback", lookback),
            ("start", &start),
            ("end", &end),
            ("tags", r#"{"http.method":"GET"}"#),
            ("minDuration", "100ms"),
        ]);
        let (st, v) = get_json(a, &format!("/api/traces?{q}")).await;
        assert_eq!(st, 200, "lookback={lookback}: {v}");
        assert_shape("search", &v, &v1_envelope(arr(v1_trace())));
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [hex(&sv.fx.checkout)], "lookback={lookback}");
    }

    // Grafana: its own parameter order, `lookback=custom`, µs range.
    let (start, end) = ((now_us - 3_600_000_000).to_string(), now_us.to_string());
    let q: Vec<String> = [
        ("service", "pager"),
        ("operation", "odd"),
        ("limit", "20"),
        ("start", start.as_str()),
        ("end", end.as_str()),
        ("lookback", "custom"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", encode_uri_component(v)))
    .collect();
    let (st, v) = get_json(a, &format!("/api/traces?{}", q.join("&"))).await;
    assert_eq!(st, 200, "{v}");
    assert_shape("grafana search", &v, &v1_envelope(arr(v1_trace())));
    assert_eq!(v["data"].as_array().unwrap().len(), 15);

    // Trace by id, and several ids at once with the missing one reported.
    let (st, v) = get_json(a, &format!("/api/traces/{}", hex(&sv.fx.erroring))).await;
    assert_eq!(st, 200);
    assert_shape("trace", &v, &v1_envelope(arr(v1_trace())));
    let missing = hex(&tid(123_456));
    let (st, v) = get_json(
        a,
        &format!(
            "/api/traces?traceID={}&traceID={missing}&traceID={}",
            hex(&sv.fx.erroring),
            hex(&sv.fx.low_half[8..])
        ),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_shape("traces by id", &v, &v1_envelope(arr(v1_trace())));
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["errors"],
        serde_json::json!([{ "msg": "trace not found", "traceID": missing }])
    );

    let (st, v) = get_json(
        a,
        &format!(
            "/api/dependencies?endTs={}&lookback=604800000",
            now_ns() / 1_000_000
        ),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_shape("dependencies", &v, &v1_envelope(v1_dependencies()));
    // Jaeger's `service` filter: only the edges that touch it.
    let (_, v) = get_json(
        a,
        &format!(
            "/api/dependencies?endTs={}&lookback=604800000&service=checkout",
            now_ns() / 1_000_000
        ),
    )
    .await;
    let deps = v["data"].as_array().unwrap();
    assert!(!deps.is_empty());
    assert!(
        deps.iter()
            .all(|d| d["parent"] == "checkout" || d["child"] == "checkout"),
        "{v}"
    );

    // Errors keep the envelope.
    let (st, v) = get_json(a, "/api/traces/not-a-trace-id!").await;
    assert_eq!(st, 400, "{v}");
    assert_shape("error", &v, &v1_envelope(nullable(S::Str)));
    let (st, v) = get_json(a, &format!("/api/traces/{missing}")).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(
        v["errors"][0],
        serde_json::json!({ "code": 404, "msg": "trace not found" })
    );
}

/// The shape checker itself refuses what Jaeger's clients would trip on.
#[test]
fn shape_checker_refuses_mismatches() {
    use serde_json::json;
    let tag = |v: Value| check("$", &v, &S::JaegerTag);
    assert!(tag(json!({"key": "k", "type": "int64", "value": 5})).is_ok());
    assert!(
        tag(json!({"key": "k", "type": "int64", "value": 9_007_199_254_740_992i64})).is_err(),
        "unsafe number"
    );
    assert!(
        tag(json!({"key": "k", "type": "int64", "value": "5"})).is_err(),
        "safe value as text"
    );
    assert!(tag(json!({"key": "k", "type": "float64", "value": null})).is_err());
    assert!(tag(json!({"key": "k", "type": "binary", "value": "AQ"})).is_err());
    assert!(tag(json!({"key": "k", "type": "map", "value": "{}"})).is_err());
    assert!(
        tag(json!({"key": "k", "type": "string"})).is_err(),
        "missing value"
    );
    let t = v1_trace();
    let ok = json!({"traceID": "0123456789abcdef", "spans": [], "processes": {}, "warnings": null});
    assert!(check("$", &ok, &t).is_ok());
    let mut extra = ok.clone();
    extra["total"] = json!(1);
    assert!(check("$", &extra, &t).is_err(), "unknown key");
    let mut upper = ok.clone();
    upper["traceID"] = json!("0123456789ABCDEF");
    assert!(check("$", &upper, &t).is_err(), "uppercase id");
    let mut missing = ok;
    missing.as_object_mut().unwrap().remove("warnings");
    assert!(check("$", &missing, &t).is_err(), "missing key");
    let summary = |s: Value| check("$", &json!({"summaries": [s]}), &v3_summaries());
    assert!(summary(json!({"traceId": "0".repeat(32), "minStartTimeUnixNano": "1"})).is_ok());
    assert!(
        summary(json!({"traceId": "0".repeat(32), "minStartTimeUnixNano": 1})).is_err(),
        "number, not string"
    );
    assert!(
        summary(json!({"traceId": "0".repeat(16)})).is_err(),
        "16-character id"
    );
    assert!(check("$", &json!({"result": {"summaries": []}}), &v3_summaries()).is_err());
    assert_eq!(
        url_search_params(&[("a b", "{\"x\":\"1 2\"}")]),
        "a+b=%7B%22x%22%3A%221+2%22%7D"
    );
    assert_eq!(
        query_string_stringify(&[("z", "1"), ("a", "it's (x)*")]),
        "a=it%27s%20%28x%29%2A&z=1"
    );
    assert_eq!(
        iso_ms(1_714_557_600_123_456_789),
        "2024-05-01T10:00:00.123Z"
    );
}
