//! Interop with Jaeger and Zipkin clients nobody here wrote, each sending to
//! a running collector, each trace read back field by field through the
//! query APIs:
//!
//! - Python `jaeger-client` (the Jaeger project's client) → agent UDP,
//!   Thrift compact; Node's `jaeger-client` → agent UDP, Thrift binary, and
//!   → `POST /api/traces` (Thrift binary over HTTP). Read back through the
//!   Jaeger API (`/api/traces/{id}`) and compared with the Thrift spans each
//!   client built (its own conversion, printed by the scripts).
//! - The OpenTelemetry Python SDK's exporters: Jaeger Thrift over HTTP,
//!   Jaeger gRPC (`PostSpans`), Zipkin v2 JSON and Zipkin v2 protobuf. Read
//!   back through the native API and compared with the SDK's own spans.
//! - `py_zipkin` → Zipkin v1 JSON (`/api/v1/spans`), through the native API.
//!
//! The clients are old (Jaeger's are retired) and pin old libraries, so they
//! live apart from the system Python: a virtualenv
//! (`FERROTRACE_PY_LEGACY`, default `~/.cache/ferrotrace/py-legacy/bin/python`)
//! and an npm prefix (`FERROTRACE_NODE_JAEGER`, default
//! `~/.cache/ferrotrace/node-jaeger/node_modules`), both made by
//! scripts/test.sh. Under `CI=true` their absence fails the tests; otherwise
//! they are skipped with the reason printed. The scripts are in
//! `tests/interop/`.

mod ingest_util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use ferrotrace_collector::config::Config;
use ingest_util::*;
use serde_json::Value;

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn home_cache(rel: &str) -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
        .join(".cache/ferrotrace")
        .join(rel)
}

fn missing(what: &str, why: String) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {what} is missing (run scripts/test.sh): {why}");
    }
    eprintln!("SKIPPED: {what} not installed ({why}); scripts/test.sh installs it");
    false
}

/// The virtualenv's python with the legacy clients, if installed.
fn legacy_python(imports: &str) -> Option<PathBuf> {
    let py = std::env::var_os("FERROTRACE_PY_LEGACY")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_cache("py-legacy/bin/python"));
    match Command::new(&py)
        .args(["-c", &format!("import {imports}")])
        .output()
    {
        Ok(o) if o.status.success() => Some(py),
        Ok(o) => {
            missing(
                &format!("the Python clients ({imports})"),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            );
            None
        }
        Err(e) => {
            missing(&format!("{} ({imports})", py.display()), e.to_string());
            None
        }
    }
}

/// `NODE_PATH` holding Node's jaeger-client, if installed.
fn node_jaeger() -> Option<PathBuf> {
    let path = std::env::var_os("FERROTRACE_NODE_JAEGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_cache("node-jaeger/node_modules"));
    let out = Command::new("node")
        .args(["-e", "require('jaeger-client')"])
        .env("NODE_PATH", &path)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(path),
        Ok(o) => {
            missing(
                "Node's jaeger-client",
                String::from_utf8_lossy(&o.stderr).into_owned(),
            );
            None
        }
        Err(e) => {
            missing("node", e.to_string());
            None
        }
    }
}

/// Runs a client script; returns what it printed as JSON.
async fn run(program: PathBuf, args: Vec<String>, node_path: Option<PathBuf>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        let mut c = Command::new(&program);
        c.args(&args);
        if let Some(p) = node_path {
            c.env("NODE_PATH", p);
        }
        c.output().expect("run the client script")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("client printed {text:?}: {e}"))
}

fn jaeger_on(c: &mut Config) {
    c.jaeger.grpc_addr = "127.0.0.1:0".into();
    c.jaeger.thrift_http_addr = "127.0.0.1:0".into();
    c.jaeger.agent_compact_addr = "127.0.0.1:0".into();
    c.jaeger.agent_binary_addr = "127.0.0.1:0".into();
}

/// GETs a query API path until its `spans` (native) or `data[0].spans`
/// (Jaeger) count reaches `n`; returns the document.
async fn read_back(q: SocketAddr, path: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request("GET", q, path, &[], Bytes::new()).await;
        if r.status == 200 {
            let v: Value = serde_json::from_slice(&r.body).expect("JSON");
            let spans = v["spans"]
                .as_array()
                .or_else(|| v["data"][0]["spans"].as_array())
                .map_or(0, Vec::len);
            if spans >= n {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{path}: {n} spans never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------ Jaeger clients (Thrift)

/// A tag value as Jaeger's JSON shows it: (type, value), doubles as f64
/// (JSON's `-5` and `-5.0` are the same double).
fn jaeger_json_value(vtype: &str, v: &Value) -> (String, Value) {
    match (vtype, v.as_f64()) {
        ("float64", Some(f)) => (vtype.to_string(), Value::from(f)),
        _ => (vtype.to_string(), v.clone()),
    }
}

/// A Thrift tag printed by a client script (Python: vType numbers and only
/// the set value; Node: vType names and every value field) as Jaeger JSON's
/// (type, value).
fn client_tag(t: &Value) -> (String, (String, Value)) {
    let key = t["key"].as_str().unwrap().to_string();
    let vtype = match &t["vType"] {
        Value::Number(n) => {
            ["STRING", "DOUBLE", "BOOL", "LONG", "BINARY"][n.as_u64().unwrap() as usize].to_string()
        }
        Value::String(s) => s.clone(),
        other => panic!("vType {other}"),
    };
    let v = match vtype.as_str() {
        "STRING" => jaeger_json_value("string", &t["vStr"]),
        "DOUBLE" => jaeger_json_value("float64", &t["vDouble"]),
        "BOOL" => jaeger_json_value("bool", &t["vBool"]),
        "LONG" => {
            let l = match &t["vLong"] {
                Value::String(hex) => u64::from_str_radix(hex, 16).unwrap() as i64,
                other => other.as_i64().unwrap(),
            };
            ("int64".to_string(), Value::from(l))
        }
        "BINARY" => {
            let raw = hex_bytes(t["vBinary"].as_str().unwrap());
            (
                "binary".to_string(),
                Value::from(base64::engine::general_purpose::STANDARD.encode(raw)),
            )
        }
        other => panic!("tag type {other}"),
    };
    (key, v)
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// An i64 printed as a number (Python) or 8 big-endian bytes in hex (Node).
fn i64_of(v: &Value) -> u64 {
    match v {
        Value::String(hex) => u64::from_str_radix(hex, 16).unwrap(),
        other => other.as_i64().unwrap() as u64,
    }
}

/// Jaeger's trace id text: 16 hex digits when the high half is 0.
fn jaeger_trace_text(high: u64, low: u64) -> String {
    if high == 0 {
        format!("{low:016x}")
    } else {
        format!("{high:016x}{low:016x}")
    }
}

/// Tags by key: (type, value).
type Tags = BTreeMap<String, (String, Value)>;

fn json_tags(tags: &Value) -> Tags {
    tags.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                jaeger_json_value(t["type"].as_str().unwrap(), &t["value"]),
            )
        })
        .collect()
}

/// Compares what a Jaeger client sent (its Thrift spans and process) with
/// the trace the Jaeger API returns.
fn compare_jaeger(process: &Value, process_tags: Tags, spans: &[Value], trace: &Value) {
    let got: Vec<&Value> = trace["spans"].as_array().unwrap().iter().collect();
    assert_eq!(got.len(), spans.len(), "{trace}");
    for s in spans {
        let id = format!("{:016x}", i64_of(&s["spanId"]));
        let j = got
            .iter()
            .find(|j| j["spanID"] == id.as_str())
            .unwrap_or_else(|| panic!("span {id} not returned: {trace}"));
        let what = format!("span {id} ({})", s["operationName"]);
        let tid = jaeger_trace_text(i64_of(&s["traceIdHigh"]), i64_of(&s["traceIdLow"]));
        assert_eq!(j["traceID"], tid.as_str(), "{what}");
        assert_eq!(j["operationName"], s["operationName"], "{what}");
        assert_eq!(
            j["startTime"].as_u64().unwrap(),
            i64_of(&s["startTime"]),
            "{what}"
        );
        assert_eq!(
            j["duration"].as_u64().unwrap(),
            i64_of(&s["duration"]),
            "{what}"
        );
        assert_eq!(
            j["flags"].as_u64().unwrap_or(0),
            s["flags"].as_u64().unwrap(),
            "{what}"
        );
        // References: the parent first, then the client's own.
        let mut want = Vec::new();
        let parent = i64_of(&s["parentSpanId"]);
        if parent != 0 {
            want.push((
                "CHILD_OF".to_string(),
                tid.clone(),
                format!("{parent:016x}"),
            ));
        }
        for r in s["references"].as_array().into_iter().flatten() {
            let kind = match &r["refType"] {
                Value::String(k) => k.clone(),
                n => ["CHILD_OF", "FOLLOWS_FROM"][n.as_u64().unwrap() as usize].to_string(),
            };
            want.push((
                kind,
                jaeger_trace_text(i64_of(&r["traceIdHigh"]), i64_of(&r["traceIdLow"])),
                format!("{:016x}", i64_of(&r["spanId"])),
            ));
        }
        let refs: Vec<(String, String, String)> = j["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["refType"].as_str().unwrap().into(),
                    r["traceID"].as_str().unwrap().into(),
                    r["spanID"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(refs, want, "{what}: references");
        // Tags: every one the client sent, typed; `error = true` also shows
        // as otel.status_code = ERROR (the status it became).
        let mut want_tags: Tags = s["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(client_tag)
            .collect();
        if want_tags.get("error") == Some(&("bool".to_string(), Value::Bool(true))) {
            want_tags.insert(
                "otel.status_code".into(),
                ("string".into(), Value::from("ERROR")),
            );
        }
        assert_eq!(json_tags(&j["tags"]), want_tags, "{what}: tags");
        // Logs: timestamps and typed fields.
        let want_logs: Vec<(u64, Tags)> = s["logs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    i64_of(&l["timestamp"]),
                    l["fields"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(client_tag)
                        .collect(),
                )
            })
            .collect();
        let logs: Vec<(u64, Tags)> = j["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["timestamp"].as_u64().unwrap(), json_tags(&l["fields"])))
            .collect();
        assert_eq!(logs, want_logs, "{what}: logs");
        // The process: service name and tags, `hostname` as host.name and
        // `jaeger.version` as opencensus.exporterversion (the translator's renames).
        let p = &trace["processes"][j["processID"].as_str().unwrap()];
        assert_eq!(p["serviceName"], process["serviceName"], "{what}");
        assert_eq!(json_tags(&p["tags"]), process_tags, "{what}: process tags");
    }
}

/// A Thrift process's tags as Jaeger JSON shows them after the translator's renames.
fn renamed_process_tags(tags: Vec<(String, (String, Value))>) -> Tags {
    tags.into_iter()
        .map(|(k, (t, v))| match k.as_str() {
            "hostname" => ("host.name".to_string(), (t, v)),
            "jaeger.version" => (
                "opencensus.exporterversion".to_string(),
                (t, Value::from(format!("Jaeger-{}", v.as_str().unwrap()))),
            ),
            _ => (k, (t, v)),
        })
        .collect()
}

#[tokio::test]
async fn python_jaeger_client_over_agent_udp_compact() {
    let Some(py) = legacy_python("jaeger_client") else {
        return;
    };
    let t = start(jaeger_on).await;
    let a = t.collector.addrs.clone();
    let port = a.jaeger_agent_compact.unwrap().port();
    let script = scripts().join("jaeger_client_udp.py");
    let out = run(
        py,
        vec![
            script.display().to_string(),
            "127.0.0.1".into(),
            port.to_string(),
        ],
        None,
    )
    .await;
    let spans = out["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{out}");
    let tid = jaeger_trace_text(
        i64_of(&spans[0]["traceIdHigh"]),
        i64_of(&spans[0]["traceIdLow"]),
    );
    let doc = read_back(a.http.unwrap(), &format!("/api/traces/{tid}"), 2).await;
    let process_tags = renamed_process_tags(
        out["process"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(client_tag)
            .collect(),
    );
    compare_jaeger(&out["process"], process_tags, spans, &doc["data"][0]);
    // The root span carries the client's sampling decision, kept as is.
    let root = doc["data"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["operationName"] == "parent")
        .unwrap();
    let tags = json_tags(&root["tags"]);
    assert_eq!(
        tags["sampler.type"],
        ("string".into(), Value::from("const"))
    );
    assert_eq!(tags["sampler.param"], ("bool".into(), Value::Bool(true)));
    assert!(t.collector.shutdown().await);
}

/// Node's process tags are untyped in the script's dump; the sender types
/// them by their JavaScript type.
fn node_process_tags(p: &Value) -> Tags {
    renamed_process_tags(
        p["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let key = t["key"].as_str().unwrap().to_string();
                let v = &t["value"];
                let typed = match v {
                    Value::String(_) => ("string".to_string(), v.clone()),
                    Value::Bool(_) => ("bool".to_string(), v.clone()),
                    Value::Number(n) => ("float64".to_string(), Value::from(n.as_f64().unwrap())),
                    other => panic!("process tag {other}"),
                };
                (key, typed)
            })
            .collect(),
    )
}

#[tokio::test]
async fn node_jaeger_client_over_agent_udp_binary_and_http_thrift() {
    let Some(node_path) = node_jaeger() else {
        return;
    };
    let t = start(jaeger_on).await;
    let a = t.collector.addrs.clone();
    let script = scripts()
        .join("jaeger_client_node.js")
        .display()
        .to_string();
    for args in [
        vec![
            script.clone(),
            "udp".into(),
            "127.0.0.1".into(),
            a.jaeger_agent_binary.unwrap().port().to_string(),
        ],
        vec![
            script.clone(),
            "http".into(),
            format!("http://{}/api/traces", a.jaeger_thrift_http.unwrap()),
        ],
    ] {
        let out = run("node".into(), args.clone(), Some(node_path.clone())).await;
        assert_eq!(out["errors"], Value::Array(vec![]), "{args:?}: {out}");
        let spans = out["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 3, "{out}");
        let tid = jaeger_trace_text(
            i64_of(&spans[0]["traceIdHigh"]),
            i64_of(&spans[0]["traceIdLow"]),
        );
        // The child and its parent share a trace; `other` has its own.
        let mine: Vec<Value> = spans
            .iter()
            .filter(|s| {
                jaeger_trace_text(i64_of(&s["traceIdHigh"]), i64_of(&s["traceIdLow"])) == tid
            })
            .cloned()
            .collect();
        let doc = read_back(a.http.unwrap(), &format!("/api/traces/{tid}"), mine.len()).await;
        compare_jaeger(
            &out["process"],
            node_process_tags(&out["process"]),
            &mine,
            &doc["data"][0],
        );
        let child = doc["data"][0]["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["operationName"] == "child")
            .expect("child");
        assert_eq!(
            child["references"].as_array().unwrap().len(),
            2,
            "parent and follows-from"
        );
    }
    assert!(t.collector.shutdown().await);
}

// ------------------------------------------------ OpenTelemetry exporters

fn native_attrs(v: &Value) -> Tags {
    json_tags(v)
}

fn near(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_u64().unwrap(), want.as_u64().unwrap());
    assert!(
        g.abs_diff(w) <= 1_000,
        "{what}: {g} vs {w} (the exporters round to microseconds or through floats)"
    );
}

/// Runs the OpenTelemetry script in `mode` against `endpoint` and checks the
/// stored trace against the SDK's spans; `typed` says whether attribute
/// types survive (Jaeger) or become strings (Zipkin).
async fn otel_round_trip(py: &Path, q: SocketAddr, mode: &str, endpoint: String) {
    let script = scripts().join("otel_exporters.py").display().to_string();
    let out = run(py.to_path_buf(), vec![script, mode.into(), endpoint], None).await;
    assert_eq!(out["ok"], serde_json::json!([true, true]), "{mode}: {out}");
    let spans = out["spans"].as_array().unwrap();
    let tid = spans[0]["trace_id"].as_str().unwrap();
    let doc = read_back(q, &format!("/api/native/traces/{tid}?raw=true"), 2).await;
    let zipkin = mode.starts_with("zipkin");
    for s in spans {
        let id = s["span_id"].as_str().unwrap();
        let what = format!("{mode} span {}", s["name"]);
        let g = doc["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["span_id"] == id)
            .unwrap_or_else(|| panic!("{what}: not stored"));
        assert_eq!(doc["trace_id"], tid, "{what}");
        assert_eq!(g["parent_span_id"], s["parent"], "{what}");
        assert_eq!(g["name"], s["name"], "{what}");
        assert_eq!(g["kind"], s["kind"], "{what}");
        assert_eq!(g["service"], format!("py-{mode}").as_str(), "{what}");
        near(&g["start_ns"], &s["start"], &what);
        near(&g["end_ns"], &s["end"], &what);
        assert_eq!(g["status"]["code"], s["status_code"], "{what}");
        assert_eq!(g["status"]["message"], s["status_message"], "{what}");
        assert_eq!(g["scope"]["name"], s["scope"][0], "{what}");
        assert_eq!(g["scope"]["version"], s["scope"][1], "{what}");
        let attrs = native_attrs(&g["attributes"]);
        for (k, v) in s["attributes"].as_object().unwrap() {
            let want = match (zipkin, v) {
                // Zipkin tags are strings.
                (true, Value::Bool(b)) => ("string".to_string(), Value::from(b.to_string())),
                (true, Value::Number(n)) => ("string".to_string(), Value::from(n.to_string())),
                (_, Value::String(_)) => ("string".to_string(), v.clone()),
                (false, Value::Bool(_)) => ("bool".to_string(), v.clone()),
                (false, Value::Number(n)) if n.is_i64() => ("int".to_string(), v.clone()),
                (false, Value::Number(_)) => ("double".to_string(), v.clone()),
                other => panic!("attribute {other:?}"),
            };
            assert_eq!(attrs.get(k), Some(&want), "{what}: attribute {k}");
        }
        // The exporters send the scope as otel.library.* tags as well; the
        // translator keeps those as attributes.
        assert_eq!(
            attrs.get("otel.library.name"),
            Some(&("string".to_string(), s["scope"][0].clone())),
            "{what}"
        );
        let resource = native_attrs(&g["resource"]);
        assert_eq!(
            resource.get("service.name").map(|v| &v.1),
            Some(&Value::from(format!("py-{mode}"))),
            "{what}"
        );
        if mode == "jaeger-grpc" {
            // Only the gRPC exporter sends the resource as process tags.
            assert_eq!(
                resource.get("py.int"),
                Some(&("int".to_string(), Value::from(3))),
                "{what}"
            );
            assert_eq!(
                resource.get("deployment.environment").map(|v| &v.1),
                Some(&Value::from("test")),
                "{what}"
            );
        }
        let events = g["events"].as_array().unwrap();
        let want_events = s["events"].as_array().unwrap();
        assert_eq!(events.len(), want_events.len(), "{what}");
        for (e, w) in events.iter().zip(want_events) {
            near(&e["time_ns"], &w["time"], &what);
            let ea = native_attrs(&e["attributes"]);
            if zipkin {
                // The Zipkin exporters write an event as one annotation whose
                // value is {"name": {attributes}} in JSON.
                let name: Value = serde_json::from_str(e["name"].as_str().unwrap()).unwrap();
                assert_eq!(name[w["name"].as_str().unwrap()], w["attributes"], "{what}");
            } else {
                // The Jaeger exporters write the name as a `message` field,
                // which is not Jaeger's `event` key: it stays an attribute.
                assert_eq!(e["name"], "", "{what}");
                assert_eq!(ea["message"].1, w["name"], "{what}");
                for (k, v) in w["attributes"].as_object().unwrap() {
                    assert_eq!(&ea[k].1, v, "{what}: event attribute {k}");
                }
            }
        }
        let links = g["links"].as_array().unwrap();
        if zipkin {
            assert!(links.is_empty(), "Zipkin has no links");
        } else {
            let want_links = s["links"].as_array().unwrap();
            assert_eq!(links.len(), want_links.len(), "{what}");
            for (l, w) in links.iter().zip(want_links) {
                assert_eq!(l["trace_id"], w["trace_id"], "{what}");
                assert_eq!(l["span_id"], w["span_id"], "{what}");
                assert_eq!(
                    native_attrs(&l["attributes"])["opentracing.ref_type"].1,
                    "follows_from",
                    "{what}"
                );
            }
        }
    }
}

#[tokio::test]
async fn opentelemetry_python_jaeger_exporters_thrift_http_and_grpc() {
    let Some(py) = legacy_python(
        "opentelemetry.exporter.jaeger.thrift, opentelemetry.exporter.jaeger.proto.grpc",
    ) else {
        return;
    };
    let t = start(jaeger_on).await;
    let a = t.collector.addrs.clone();
    let q = a.http.unwrap();
    otel_round_trip(
        &py,
        q,
        "jaeger-thrift-http",
        format!("http://{}/api/traces", a.jaeger_thrift_http.unwrap()),
    )
    .await;
    otel_round_trip(&py, q, "jaeger-grpc", a.jaeger_grpc.unwrap().to_string()).await;
    assert!(t.collector.shutdown().await);
}

#[tokio::test]
async fn opentelemetry_python_zipkin_exporters_json_and_protobuf() {
    let Some(py) = legacy_python(
        "opentelemetry.exporter.zipkin.json, opentelemetry.exporter.zipkin.proto.http",
    ) else {
        return;
    };
    let t = start(|_| {}).await;
    let a = t.collector.addrs.clone();
    let url = format!("http://{}/api/v2/spans", a.zipkin.unwrap());
    otel_round_trip(&py, a.http.unwrap(), "zipkin-json", url.clone()).await;
    otel_round_trip(&py, a.http.unwrap(), "zipkin-proto", url).await;
    assert!(t.collector.shutdown().await);
}

#[tokio::test]
async fn py_zipkin_v1_json() {
    let Some(py) = legacy_python("py_zipkin") else {
        return;
    };
    let t = start(|_| {}).await;
    let a = t.collector.addrs.clone();
    let script = scripts().join("py_zipkin_v1.py").display().to_string();
    let out = run(
        py,
        vec![script, format!("http://{}/api/v1/spans", a.zipkin.unwrap())],
        None,
    )
    .await;
    let sent = out[0]["body"].as_array().unwrap();
    assert_eq!(out[0]["status"], 202);
    let tid = format!("{:0>32}", sent[0]["traceId"].as_str().unwrap());
    let doc = read_back(
        a.http.unwrap(),
        &format!("/api/native/traces/{tid}?raw=true"),
        2,
    )
    .await;
    for s in sent {
        let id = s["id"].as_str().unwrap();
        let g = doc["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["span_id"] == id)
            .unwrap_or_else(|| panic!("span {id} not stored: {doc}"));
        let what = format!("v1 span {}", s["name"]);
        assert_eq!(g["name"], s["name"], "{what}");
        assert_eq!(g["service"], "py-zipkin-v1", "{what}");
        assert_eq!(
            g["parent_span_id"],
            s.get("parentId").cloned().unwrap_or(Value::Null),
            "{what}"
        );
        assert_eq!(
            g["start_ns"],
            s["timestamp"].as_u64().unwrap() * 1000,
            "{what}"
        );
        assert_eq!(
            g["end_ns"].as_u64().unwrap() - g["start_ns"].as_u64().unwrap(),
            s["duration"].as_u64().unwrap() * 1000,
            "{what}"
        );
        let attrs = native_attrs(&g["attributes"]);
        let core: Vec<&str> = s["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["value"].as_str().unwrap())
            .collect();
        if core.contains(&"cs") {
            assert_eq!(g["kind"], "client", "{what}");
            // The `sa` address became the remote endpoint.
            assert_eq!(attrs["peer.service"].1, "backend", "{what}");
            assert_eq!(attrs["net.peer.ip"].1, "10.1.2.3", "{what}");
            assert_eq!(attrs["net.peer.port"].1, 9000, "{what}");
            let events: Vec<&str> = g["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            assert_eq!(events, ["retry"], "{what}: core annotations are not events");
        } else {
            assert_eq!(g["kind"], "server", "{what}");
            assert_eq!(attrs["http.path"].1, "/orders", "{what}");
            assert_eq!(attrs["tenant"].1, "acme", "{what}");
        }
        assert_eq!(attrs["net.host.ip"].1, "127.0.0.1", "{what}");
    }
    assert!(t.collector.shutdown().await);
}
