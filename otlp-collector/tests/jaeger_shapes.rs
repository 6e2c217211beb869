//! Jaeger v1 and v3 HTTP APIs: shapes checked field by field against Jaeger's
//! documented JSON (model/json for v1, the api_v3 OTLP JSON for v3), over a
//! real SqliteStore and a real socket.

mod query_support;

use query_support::*;
use serde_json::Value;

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn assert_envelope(v: &Value) {
    assert_eq!(
        keys(v),
        ["data", "errors", "limit", "offset", "total"],
        "{v}"
    );
    assert!(v["errors"].is_null());
    assert_eq!(v["limit"], 0);
    assert_eq!(v["offset"], 0);
}

fn tag<'a>(tags: &'a Value, key: &str) -> &'a Value {
    tags.as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("tag {key} in {tags}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_v1_shapes() {
    let sv = start().await;
    let (a, fx) = (sv.addr, &sv.fx);
    let us = |ns: u64| ns / 1000;

    let (st, v) = get_json(a, "/api/services").await;
    assert_eq!(st, 200);
    assert_envelope(&v);
    let svcs = v["data"].as_array().unwrap();
    assert!(svcs.iter().any(|s| s == "frontend"));
    assert_eq!(v["total"], svcs.len());

    let (_, v) = get_json(a, "/api/services/checkout/operations").await;
    assert_envelope(&v);
    assert_eq!(
        v["data"],
        serde_json::json!(["INSERT orders", "PlaceOrder"])
    );
    let (_, v) = get_json(a, "/api/operations?service=checkout&spanKind=server").await;
    assert_envelope(&v);
    assert_eq!(
        v["data"],
        serde_json::json!([{ "name": "PlaceOrder", "spanKind": "server" }])
    );
    let (st, v) = get_json(a, "/api/operations").await;
    assert_eq!(st, 400);
    assert!(v["data"].is_null());
    assert_eq!(v["errors"][0]["code"], 400);
    assert!(v["errors"][0]["msg"].as_str().unwrap().contains("service"));

    // Trace by id: the whole Jaeger model.
    let (st, v) = get_json(a, &format!("/api/traces/{}", hex(&fx.checkout))).await;
    assert_eq!(st, 200, "{v}");
    assert_envelope(&v);
    assert_eq!(v["total"], 0, "Jaeger leaves total at 0 for traces");
    let t = &v["data"][0];
    assert_eq!(keys(t), ["processes", "spans", "traceID", "warnings"]);
    assert_eq!(t["traceID"], hex(&fx.checkout));
    assert!(t["warnings"].is_null());
    let procs = t["processes"].as_object().unwrap();
    assert_eq!(procs.len(), 2);
    assert_eq!(procs["p1"]["serviceName"], "frontend");
    assert_eq!(procs["p2"]["serviceName"], "checkout");
    assert_eq!(keys(&procs["p1"]), ["serviceName", "tags"]);
    assert_eq!(
        procs["p1"]["tags"],
        serde_json::json!([{ "key": "host.name", "type": "string", "value": "frontend-host" }])
    );
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 4);
    let root = &spans[0];
    assert_eq!(
        keys(root),
        [
            "duration",
            "flags",
            "logs",
            "operationName",
            "processID",
            "references",
            "spanID",
            "startTime",
            "tags",
            "traceID",
            "warnings"
        ]
    );
    assert_eq!(root["traceID"], hex(&fx.checkout));
    assert_eq!(root["spanID"], "0000000000000001");
    assert_eq!(root["operationName"], "GET /checkout");
    assert_eq!(root["startTime"], us(fx.base_ns));
    assert_eq!(root["duration"], us(120 * MS));
    assert_eq!(root["flags"], 1);
    assert_eq!(root["processID"], "p1");
    assert!(root["warnings"].is_null());
    // The link is a FOLLOWS_FROM reference; a root has no CHILD_OF.
    assert_eq!(
        root["references"],
        serde_json::json!([{ "refType": "FOLLOWS_FROM", "traceID": hex(&tid(99)), "spanID": hex(&77u64.to_be_bytes()) }])
    );
    let tags = &root["tags"];
    assert_eq!(
        *tag(tags, "http.method"),
        serde_json::json!({ "key": "http.method", "type": "string", "value": "GET" })
    );
    assert_eq!(
        *tag(tags, "http.status_code"),
        serde_json::json!({ "key": "http.status_code", "type": "int64", "value": 200 })
    );
    assert_eq!(
        *tag(tags, "ratio"),
        serde_json::json!({ "key": "ratio", "type": "float64", "value": 0.5 })
    );
    assert_eq!(
        *tag(tags, "cached"),
        serde_json::json!({ "key": "cached", "type": "bool", "value": false })
    );
    assert_eq!(
        *tag(tags, "blob"),
        serde_json::json!({ "key": "blob", "type": "binary", "value": "AQID" })
    );
    assert_eq!(tag(tags, "span.kind")["value"], "server");
    assert_eq!(tag(tags, "otel.status_code")["value"], "OK");
    assert_eq!(tag(tags, "otel.scope.name")["value"], "fixture");
    assert_eq!(
        root["logs"],
        serde_json::json!([{ "timestamp": us(fx.base_ns + 5 * MS), "fields": [
        { "key": "event", "type": "string", "value": "cart.loaded" },
        { "key": "items", "type": "int64", "value": 3 },
    ] }])
    );
    let client = &spans[1];
    assert_eq!(
        client["references"][0],
        serde_json::json!({ "refType": "CHILD_OF", "traceID": hex(&fx.checkout), "spanID": "0000000000000001" })
    );
    assert_eq!(spans[2]["processID"], "p2");
    assert_eq!(tag(&spans[3]["tags"], "span.kind")["value"], "client");

    // Errors appear as error=true and otel.status_code=ERROR.
    let (_, v) = get_json(a, &format!("/api/traces/{}", hex(&fx.erroring))).await;
    let pay = v["data"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["operationName"] == "Charge")
        .unwrap()
        .clone();
    assert_eq!(
        *tag(&pay["tags"], "error"),
        serde_json::json!({ "key": "error", "type": "bool", "value": true })
    );
    assert_eq!(
        tag(&pay["tags"], "otel.status_description")["value"],
        "charge failed"
    );

    // Skew adjustment, with a warning, unless raw=true.
    let (_, v) = get_json(a, &format!("/api/traces/{}", hex(&fx.skewed))).await;
    let child = v["data"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["operationName"] == "skewed-child")
        .unwrap()
        .clone();
    assert!(child["startTime"].as_u64().unwrap() >= us(fx.base_ns + 4_000 * MS));
    assert!(child["warnings"][0].as_str().unwrap().contains("adjusted"));
    let (_, v) = get_json(a, &format!("/api/traces/{}?raw=true", hex(&fx.skewed))).await;
    let child = v["data"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["operationName"] == "skewed-child")
        .unwrap()
        .clone();
    assert_eq!(child["startTime"], us(fx.base_ns + 3_500 * MS));
    assert!(child["warnings"].is_null());

    // Trace ids: 16 hex digits when the high half is zero, in and out.
    let (st, v) = get_json(a, "/api/traces/0000000000c0ffee").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"][0]["traceID"], "0000000000c0ffee");
    assert_eq!(v["data"][0]["spans"][0]["traceID"], "0000000000c0ffee");
    let (st, _) = get_json(a, &format!("/api/traces/{:0>32}", "c0ffee")).await;
    assert_eq!(st, 200);
    let (st, v) = get_json(a, &format!("/api/traces/{}", hex(&tid(31337)))).await;
    assert_eq!(st, 404);
    assert_eq!(v["errors"][0]["code"], 404);
    assert!(v["data"].is_null());

    // Search as Grafana sends it: start/end in µs, Go durations, tags JSON and tag=k:v.
    let (s_us, e_us) = (us(fx.base_ns), us(fx.base_ns + 600_000 * MS));
    let base = format!("/api/traces?service=pager&start={s_us}&end={e_us}");
    let (st, v) = get_json(a, &format!("{base}&limit=5")).await;
    assert_eq!(st, 200, "{v}");
    assert_envelope(&v);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 5);
    assert_eq!(data[0]["traceID"], hex(&fx.pager[29]), "newest first");
    let (_, v) = get_json(
        a,
        &format!("{base}&minDuration=1.2ms&maxDuration=3ms&limit=20"),
    )
    .await;
    let got: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [hex(&fx.pager[2]), hex(&fx.pager[1])],
        "durations 2ms and 3ms"
    );
    let (_, v) = get_json(
        a,
        &format!("{base}&tags=%7B%22http.status_code%22%3A%22500%22%7D&limit=100"),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 10);
    let (_, v) = get_json(
        a,
        &format!("{base}&tag=http.status_code:500&operation=odd&limit=100"),
    )
    .await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        5,
        "i in {{3,9,15,21,27}}"
    );
    let (_, v) = get_json(
        a,
        &format!("{base}&tags=%7B%22error%22%3A%22true%22%7D&limit=100"),
    )
    .await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        10,
        "error=true means status error"
    );
    // No service: every service is searched (Jaeger allows it where the
    // storage can); `lookback` is ignored when `start` is given, in any form
    // the Jaeger UI sends.
    let all = format!("/api/traces?start={s_us}&end={e_us}&limit=100&operation=odd");
    let (st, v) = get_json(a, &all).await;
    assert_eq!(st, 200, "{v}");
    let every = trace_ids(&v);
    assert_eq!(
        every.len(),
        15,
        "the odd pager traces, found without a service"
    );
    for lookback in ["2d", "7d", "2w", "1h", "custom", "nonsense"] {
        let (st, v) = get_json(a, &format!("{all}&lookback={lookback}")).await;
        assert_eq!(st, 200, "lookback={lookback}: {v}");
        assert_eq!(trace_ids(&v), every, "lookback={lookback}");
    }
    for (q, needle) in [
        ("/api/traces?start=yesterday".to_string(), "start"),
        (format!("{base}&minDuration=fast"), "minDuration"),
        (format!("{base}&tags=notjson"), "tags"),
        (format!("{base}&tag=nocolon"), "key:value"),
        // Above the maximum is clamped (see jaeger_tags_match_by_text_and_limits_clamp);
        // text that is not a number is still refused.
        (format!("{base}&limit=ten"), "invalid limit"),
    ] {
        let (st, v) = get_json(a, &q).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert!(
            v["errors"][0]["msg"].as_str().unwrap().contains(needle),
            "{q}: {v}"
        );
    }

    // Dependencies (endTs/lookback in ms).
    let end_ms = (fx.base_ns + 600_000 * MS) / MS;
    let (st, v) = get_json(
        a,
        &format!("/api/dependencies?endTs={end_ms}&lookback=3600000"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_envelope(&v);
    let deps = v["data"].as_array().unwrap();
    assert!(deps
        .iter()
        .all(|d| keys(d) == ["callCount", "child", "parent"]));
    assert!(
        deps.contains(
            &serde_json::json!({ "parent": "frontend", "child": "checkout", "callCount": 1 })
        ),
        "{v}"
    );
    assert!(deps
        .iter()
        .any(|d| d["parent"] == "checkout" && d["child"] == "orders-db"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_v3_shapes() {
    let sv = start().await;
    let (a, fx) = (sv.addr, &sv.fx);

    let (_, v) = get_json(a, "/api/v3/services").await;
    assert_eq!(keys(&v), ["services"]);
    assert!(v["services"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "checkout"));
    let (_, v) = get_json(a, "/api/v3/operations?service=checkout&span_kind=client").await;
    assert_eq!(
        v,
        serde_json::json!({ "operations": [{ "name": "INSERT orders", "spanKind": "client" }] })
    );
    let (st, v) = get_json(a, "/api/v3/operations").await;
    assert_eq!(st, 400);
    assert_eq!(v["error"]["httpCode"], 400);

    let (st, v) = get_json(a, &format!("/api/v3/traces/{}", hex(&fx.checkout))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(keys(&v), ["result"]);
    let rs = v["result"]["resourceSpans"].as_array().unwrap();
    assert_eq!(rs.len(), 2);
    let res_attrs = rs[0]["resource"]["attributes"].as_array().unwrap();
    assert!(res_attrs.contains(
        &serde_json::json!({ "key": "service.name", "value": { "stringValue": "frontend" } })
    ));
    let ss = &rs[0]["scopeSpans"][0];
    assert_eq!(
        ss["scope"],
        serde_json::json!({ "name": "fixture", "version": "1.0" })
    );
    let sp = &ss["spans"][0];
    assert_eq!(sp["traceId"], hex(&fx.checkout));
    assert_eq!(sp["spanId"], "0000000000000001");
    assert_eq!(sp["parentSpanId"], "");
    assert_eq!(sp["name"], "GET /checkout");
    assert_eq!(sp["kind"], 2);
    assert_eq!(sp["startTimeUnixNano"], fx.base_ns.to_string());
    assert_eq!(sp["endTimeUnixNano"], (fx.base_ns + 120 * MS).to_string());
    assert_eq!(
        sp["status"],
        serde_json::json!({ "code": 1, "message": "" })
    );
    let attrs = sp["attributes"].as_array().unwrap();
    assert!(attrs.contains(
        &serde_json::json!({ "key": "http.status_code", "value": { "intValue": "200" } })
    ));
    assert!(attrs.contains(&serde_json::json!({ "key": "ratio", "value": { "doubleValue": 0.5 } })));
    assert!(
        attrs.contains(&serde_json::json!({ "key": "cached", "value": { "boolValue": false } }))
    );
    assert!(
        attrs.contains(&serde_json::json!({ "key": "blob", "value": { "bytesValue": "AQID" } }))
    );
    assert_eq!(sp["events"][0]["name"], "cart.loaded");
    assert_eq!(
        sp["events"][0]["timeUnixNano"],
        (fx.base_ns + 5 * MS).to_string()
    );
    assert_eq!(sp["links"][0]["spanId"], hex(&77u64.to_be_bytes()));
    assert_eq!(ss["spans"][1]["parentSpanId"], "0000000000000001");

    let (st, v) = get_json(a, &format!("/api/v3/traces/{}", hex(&tid(4242)))).await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["httpCode"], 404);
    let (st, _) = get_json(a, "/api/v3/traces/0000000000c0ffee").await;
    assert_eq!(st, 200);

    // Search, snake_case and camelCase parameters.
    let (s, e) = (rfc(fx.base_ns), rfc(fx.base_ns + 600_000 * MS));
    let (st, v) = get_json(a, &format!("/api/v3/traces?query.service_name=pager&query.start_time_min={s}&query.start_time_max={e}&query.search_depth=3")).await;
    assert_eq!(st, 200, "{v}");
    let spans: Vec<Value> = v["result"]["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["scopeSpans"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["spans"].as_array().unwrap().clone())
        })
        .collect();
    assert_eq!(spans.len(), 3);
    let (st, v) = get_json(a, &format!("/api/v3/traces?query.serviceName=pager&query.startTimeMin={s}&query.startTimeMax={e}&query.durationMin=29ms&query.operationName=odd")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"],
        hex(&fx.pager[29])
    );
    let (st, v) = get_json(a, &format!("/api/v3/traces?query.service_name=pager&query.start_time_min={s}&query.start_time_max={e}&query.attributes=%7B%22http.status_code%22%3A%22404%22%7D")).await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = get_json(a, "/api/v3/traces?query.service_name=pager").await;
    assert_eq!(st, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("startTimeMin"));

    let (st, v) = get_json(a, &format!("/api/v3/trace-summaries?query.service_name=pager&query.start_time_min={s}&query.start_time_max={e}&query.search_depth=2")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(keys(&v), ["summaries"]);
    let sm = v["summaries"].as_array().unwrap();
    assert_eq!(sm.len(), 2);
    assert_eq!(sm[0]["traceId"], hex(&fx.pager[29]));
    assert_eq!(sm[0]["rootServiceName"], "pager");
    assert_eq!(sm[0]["rootOperationName"], "odd");
    assert_eq!(sm[0]["spanCount"], 1);
    let (start, end) = (
        sm[0]["minStartTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        sm[0]["maxEndTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
    );
    assert_eq!(end - start, 30 * MS);
    assert_eq!(sm[0]["errorSpanCount"], 0);
    assert_eq!(sm[0]["orphanSpanCount"], 0);
    assert_eq!(
        sm[0]["services"],
        serde_json::json!([{ "name": "pager", "spanCount": 1, "errorSpanCount": 0 }])
    );
}

fn trace_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {v}"))
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Jaeger matches tags by their text (`tag=version:1.0` finds the string
/// "1.0"; `http.status_code:500` finds the OTLP int and Zipkin's string), on v1
/// and v3, while the native API stays typed; and a Jaeger limit above 100 is
/// clamped to 100 with the usual envelope, while the native API refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_tags_match_by_text_and_limits_clamp() {
    use ferrotrace_collector::model::{AttrValue, KeyValue, SpanKind};
    use ferrotrace_collector::storage::sqlite::SqliteStore;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("spans.db")).unwrap());
    let base = (now_ns() - 10 * 60 * 1_000_000_000) / 1_000_000_000 * 1_000_000_000;
    let attrs = |kvs: Vec<(&str, AttrValue)>| -> Vec<KeyValue> {
        kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()
    };
    let (otlp, zipkin, double, ok) = (tid(5001), tid(5002), tid(5003), tid(5004));
    let mut spans = Vec::new();
    let mut s = span(
        otlp,
        1,
        None,
        "shop",
        "GET /",
        SpanKind::Server,
        base,
        base + MS,
    );
    s.attributes = attrs(vec![
        ("http.status_code", AttrValue::Int(500)),
        ("version", AttrValue::Str("1.0".into())),
    ]);
    spans.push(s);
    let mut s = span(
        zipkin,
        1,
        None,
        "shop",
        "GET /",
        SpanKind::Server,
        base + MS,
        base + 2 * MS,
    );
    s.attributes = attrs(vec![
        ("http.status_code", AttrValue::Str("500".into())),
        ("cached", AttrValue::Str("true".into())),
    ]);
    spans.push(s);
    let mut s = span(
        double,
        1,
        None,
        "shop",
        "GET /",
        SpanKind::Server,
        base + 2 * MS,
        base + 3 * MS,
    );
    s.attributes = attrs(vec![
        ("version", AttrValue::Double(1.0)),
        ("cached", AttrValue::Bool(true)),
    ]);
    spans.push(s);
    let mut s = span(
        ok,
        1,
        None,
        "shop",
        "GET /",
        SpanKind::Server,
        base + 3 * MS,
        base + 4 * MS,
    );
    s.attributes = attrs(vec![("http.status_code", AttrValue::Int(200))]);
    spans.push(s);
    for i in 0..120u64 {
        spans.push(span(
            tid(6000 + i),
            1,
            None,
            "bulk",
            "op",
            SpanKind::Server,
            base + i * MS,
            base + i * MS + 1_000,
        ));
    }
    fill(&store, &spans).await;
    let a = serve_store(store.clone()).await;
    let sorted = |ids: &[[u8; 16]]| {
        let mut v: Vec<String> = ids.iter().map(|t| hex(t)).collect();
        v.sort();
        v
    };

    // v1, repeated tag=k:v and the tags JSON (string or number values).
    for (q, want, what) in [
        (
            "tag=http.status_code:500",
            sorted(&[otlp, zipkin]),
            "int and Zipkin string",
        ),
        (
            "tag=version:1.0",
            sorted(&[otlp]),
            "string 1.0, not the double (Jaeger prints it as 1)",
        ),
        (
            "tag=version:1",
            sorted(&[double]),
            "the double 1.0 by its Jaeger text",
        ),
        (
            "tag=cached:true",
            sorted(&[zipkin, double]),
            "bool and string",
        ),
        (
            "tag=http.status_code:500&tag=version:1.0",
            sorted(&[otlp]),
            "both on one span",
        ),
        (
            "tags=%7B%22version%22%3A%221.0%22%7D",
            sorted(&[otlp]),
            "tags JSON string",
        ),
        (
            "tags=%7B%22http.status_code%22%3A500%7D",
            sorted(&[otlp, zipkin]),
            "tags JSON number",
        ),
        (
            "tag=http.status_code:0500",
            vec![],
            "no loose numeric match",
        ),
    ] {
        let (st, v) = get_json(a, &format!("/api/traces?service=shop&{q}")).await;
        assert_eq!(st, 200, "{q}: {v}");
        assert_envelope(&v);
        assert_eq!(trace_ids(&v), want, "{what} ({q})");
    }

    // v3 query.attributes is matched the same way.
    let (s3, e3) = (rfc(base - 60_000 * MS), rfc(base + 600_000 * MS));
    let (st, v) = get_json(a, &format!("/api/v3/trace-summaries?query.service_name=shop&query.start_time_min={s3}&query.start_time_max={e3}&query.attributes=%7B%22http.status_code%22%3A%22500%22%7D")).await;
    assert_eq!(st, 200, "{v}");
    let summaries = v["summaries"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(summaries.len(), 2, "{v}");

    // The native API stays typed: 500 is the int, "500" the string.
    let w = format!(
        "start={}&end={}",
        rfc(base - 60_000 * MS),
        rfc(base + 600_000 * MS)
    );
    let (_, v) = get_json(
        a,
        &format!("/api/native/search?{w}&service=shop&attr=http.status_code=500"),
    )
    .await;
    assert_eq!(v["traces"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["traces"][0]["trace_id"], hex(&otlp));
    let (_, v) = get_json(
        a,
        &format!("/api/native/search?{w}&service=shop&attr=version=%221.0%22"),
    )
    .await;
    assert_eq!(v["traces"][0]["trace_id"], hex(&otlp), "{v}");
    assert_eq!(v["traces"].as_array().unwrap().len(), 1, "{v}");

    // Limits: Jaeger clamps to 100 and keeps its envelope; 0 means the default.
    let (st, v) = get_json(a, "/api/traces?service=bulk&limit=1000").await;
    assert_eq!(st, 200, "{v}");
    assert_envelope(&v);
    assert_eq!(v["data"].as_array().unwrap().len(), 100);
    assert_eq!(v["total"], 0, "Jaeger leaves total at 0 for traces");
    assert_eq!(v["data"][0]["traceID"], hex(&tid(6119)), "newest first");
    let (_, v) = get_json(a, "/api/traces?service=bulk&limit=0").await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        100,
        "Jaeger's default limit (100)"
    );
    let (_, v) = get_json(a, "/api/traces?service=bulk").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 100, "no limit: 100");
    let (st, v) = get_json(a, "/api/traces?service=bulk&limit=-5").await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("invalid limit"),
        "{v}"
    );
    let (st, v) = get_json(a, &format!("/api/v3/trace-summaries?query.service_name=bulk&query.start_time_min={s3}&query.start_time_max={e3}&query.search_depth=500")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["summaries"].as_array().unwrap().len(),
        100,
        "v3 clamps too"
    );
    let (st, v) = get_json(
        a,
        &format!("/api/native/search?{w}&service=bulk&limit=1000"),
    )
    .await;
    assert_eq!(st, 400, "native keeps its clear 400: {v}");
    assert!(v["error"].as_str().unwrap().contains("1 to 100"), "{v}");
}
