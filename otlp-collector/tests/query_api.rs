//! Native query API over a real SqliteStore filled with generated traces,
//! spoken to over a real socket.

mod query_support;

use query_support::*;
use serde_json::Value;

fn window(fx: &Fixture) -> String {
    format!(
        "start={}&end={}",
        rfc(fx.base_ns - 60_000 * MS),
        rfc(fx.base_ns + 600_000 * MS)
    )
}

fn names(v: &Value) -> Vec<String> {
    v["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_api_end_to_end() {
    let sv = start().await;
    let (a, fx) = (sv.addr, &sv.fx);

    // --- trace by id: structure, kinds, attributes, self time, critical path.
    let (st, t) = get_json(a, &format!("/api/native/traces/{}", hex(&fx.checkout))).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        names(&t),
        [
            "GET /checkout",
            "POST checkout",
            "PlaceOrder",
            "INSERT orders"
        ]
    );
    assert_eq!(t["partial"], false);
    assert_eq!(t["span_count"], 4);
    assert_eq!(t["services"], serde_json::json!(["checkout", "frontend"]));
    let s0 = &t["spans"][0];
    assert_eq!(s0["depth"], 0);
    assert_eq!(s0["kind"], "server");
    assert_eq!(
        s0["self_ns"],
        (120 - 100) * MS,
        "root self time = 120ms - child 100ms"
    );
    assert_eq!(s0["status"]["code"], "ok");
    let attrs = s0["attributes"].as_array().unwrap();
    assert!(attrs
        .iter()
        .any(|x| x["key"] == "http.status_code" && x["type"] == "int" && x["value"] == 200));
    assert_eq!(s0["events"][0]["name"], "cart.loaded");
    assert_eq!(s0["events"][0]["offset_ns"], 5 * MS);
    assert_eq!(s0["links"][0]["span_id"], hex(&77u64.to_be_bytes()));
    assert!(t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["critical"] == true));
    assert_eq!(t["spans"][3]["depth"], 3);
    assert_eq!(t["spans"][3]["parent_index"], 2);

    // --- the 10,000-deep chain is assembled (iteratively) in order.
    let (st, d) = get_json(a, &format!("/api/native/traces/{}", hex(&fx.deep))).await;
    assert_eq!(st, 200);
    let ds = d["spans"].as_array().unwrap();
    assert_eq!(ds.len(), DEEP_N as usize);
    for (i, s) in ds.iter().enumerate().step_by(997) {
        assert_eq!(s["depth"], i as u64);
        assert_eq!(s["name"], format!("level-{i}"));
    }
    assert_eq!(ds.last().unwrap()["depth"], DEEP_N - 1);
    assert_eq!(
        ds[0]["self_ns"], 2_000,
        "1µs at each end not covered by the child"
    );

    // --- wide trace: all children under the root, ordered by start.
    let (_, w) = get_json(a, &format!("/api/native/traces/{}", hex(&fx.wide))).await;
    let ws = w["spans"].as_array().unwrap();
    assert_eq!(ws.len(), WIDE_N as usize + 1);
    assert!(ws[1..]
        .iter()
        .all(|s| s["depth"] == 1 && s["parent_index"] == 0));
    assert!(ws[1..]
        .windows(2)
        .all(|p| p[0]["start_ns"].as_u64() < p[1]["start_ns"].as_u64()));

    // --- a trace whose root has not arrived: partial, orphans as marked roots.
    let (st, o) = get_json(a, &format!("/api/native/traces/{}", hex(&fx.orphaned))).await;
    assert_eq!(st, 200, "a rootless trace is partial, not 404");
    assert_eq!(o["partial"], true);
    assert_eq!(o["root_missing"], true);
    assert_eq!(names(&o), ["late-child", "grandchild", "other-orphan"]);
    assert_eq!(o["spans"][0]["orphan"], true);
    assert_eq!(
        o["spans"][0]["missing_parent_id"],
        hex(&999u64.to_be_bytes())
    );
    assert_eq!(o["spans"][1]["orphan"], false);
    assert_eq!(o["spans"][1]["depth"], 1);
    assert_eq!(o["spans"][2]["orphan"], true);

    // --- clock skew: shifted across the service boundary only; raw leaves it alone.
    let (_, k) = get_json(a, &format!("/api/native/traces/{}", hex(&fx.skewed))).await;
    let by = |v: &Value, n: &str| {
        v["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };
    let root = by(&k, "GET /skew");
    let child = by(&k, "skewed-child");
    let shift = child["skew_shift_ns"].as_i64().unwrap();
    assert!(
        shift > 0,
        "child started before its parent and must move later: {child}"
    );
    assert!(child["start_ns"].as_u64() >= root["start_ns"].as_u64());
    assert!(child["end_ns"].as_u64() <= root["end_ns"].as_u64());
    let gc = by(&k, "skewed-grandchild");
    assert_eq!(
        gc["skew_shift_ns"], 0,
        "same service as its parent: no own correction"
    );
    assert_eq!(
        gc["clock_shift_ns"].as_i64().unwrap(),
        shift,
        "but it moves with its parent"
    );
    let same = by(&k, "same-host-late");
    assert_eq!(
        same["clock_shift_ns"], 0,
        "same service as the parent is never shifted"
    );
    assert_eq!(same["end_ns"], fx.base_ns + 4_200 * MS);
    assert_eq!(k["skew_adjusted_spans"], 1);
    let (_, kr) = get_json(
        a,
        &format!("/api/native/traces/{}?raw=true", hex(&fx.skewed)),
    )
    .await;
    assert_eq!(kr["raw"], true);
    assert_eq!(by(&kr, "skewed-child")["start_ns"], fx.base_ns + 3_500 * MS);
    assert_eq!(by(&kr, "skewed-child")["skew_shift_ns"], 0);

    // --- error chain flags.
    let (_, e) = get_json(a, &format!("/api/native/traces/{}", hex(&fx.erroring))).await;
    let (r, pay, bank, audit) = (
        by(&e, "POST /pay"),
        by(&e, "Charge"),
        by(&e, "CallBank"),
        by(&e, "audit"),
    );
    assert_eq!(
        (r["error"].clone(), r["error_path"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(
        (pay["error"].clone(), pay["error_source"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(
        (bank["error_path"].clone(), bank["error_source"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(audit["error_path"], false);
    assert_eq!(pay["status"]["message"], "charge failed");
    assert_eq!(e["error_count"], 2);

    // --- ids: 16 hex when the high half is zero, stripped leading zeros, uppercase.
    let short = hex(&fx.low_half[8..]);
    assert_eq!(short, "0000000000c0ffee");
    for id in [short.clone(), "c0ffee".into(), format!("{:0>32}", "C0FFEE")] {
        let (st, v) = get_json(a, &format!("/api/native/traces/{id}")).await;
        assert_eq!(st, 200, "{id}: {v}");
        assert_eq!(v["spans"][0]["name"], "old-client");
    }
    let (st, v) = get_json(a, &format!("/api/native/traces/{}", hex(&tid(424242)))).await;
    assert_eq!(st, 404);
    assert!(v["error"].as_str().unwrap().contains("not found"));
    let (st, v) = get_json(a, "/api/native/traces/not-hex").await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("32 hex"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_search_filters_and_pages() {
    let sv = start().await;
    let (a, fx) = (sv.addr, &sv.fx);
    let w = window(fx);

    // Newest first, limit after filters, cursor pagination without overlap.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/api/native/search?{w}&service=pager&limit=7");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (st, p) = get_json(a, &q).await;
        assert_eq!(st, 200, "{p}");
        let ts = p["traces"].as_array().unwrap();
        assert!(ts.len() <= 7);
        seen.extend(
            ts.iter()
                .map(|t| t["trace_id"].as_str().unwrap().to_string()),
        );
        match p["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert_eq!(ts.len(), 7, "only the last page may be short");
    }
    let expected: Vec<String> = fx.pager.iter().rev().map(|t| hex(t)).collect();
    assert_eq!(seen, expected, "all 30 traces, newest first, each once");

    let (_, p) = get_json(a, &format!("/api/native/search?{w}&service=pager&limit=3")).await;
    let t0 = &p["traces"][0];
    assert_eq!(t0["trace_id"], hex(&fx.pager[29]));
    assert_eq!(t0["root_service"], "pager");
    assert_eq!(t0["root_operation"], "odd");
    assert_eq!(t0["span_count"], 1);
    assert_eq!(t0["duration_ns"], 30 * MS);
    assert_eq!(t0["services"], serde_json::json!(["pager"]));
    assert_eq!(t0["error_count"], 0);
    assert!(t0["start_time"].as_str().unwrap().ends_with('Z'));

    let ids = |p: &Value| -> Vec<String> {
        p["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect()
    };
    // Typed attribute: int 500 matches every third; the string "500" only the one string attribute.
    let (_, p) = get_json(
        a,
        &format!("/api/native/search?{w}&service=pager&attr=http.status_code%3D500&limit=100"),
    )
    .await;
    assert_eq!(ids(&p).len(), 10);
    let (_, p) = get_json(
        a,
        &format!(
            "/api/native/search?{w}&service=pager&attr=http.status_code%3D%22500%22&limit=100"
        ),
    )
    .await;
    assert_eq!(
        ids(&p).len(),
        0,
        "a string \"500\" does not match the int 500"
    );
    let (_, p) = get_json(
        a,
        &format!("/api/native/search?{w}&attr=http.status_text%3D%22500%22"),
    )
    .await;
    assert_eq!(ids(&p), [hex(&fx.pager[1])]);
    // Errors only + operation + durations, limit applied after them.
    let (_, p) = get_json(
        a,
        &format!("/api/native/search?{w}&service=pager&errors_only=true&limit=100"),
    )
    .await;
    assert_eq!(ids(&p).len(), 10);
    assert!(p["traces"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["error_count"] == 1));
    let (_, p) = get_json(a, &format!("/api/native/search?{w}&service=pager&operation=even&min_duration=10ms&max_duration=20ms&limit=2")).await;
    // even i with duration (i+1)ms in [10,20] → i in {10,12,14,16,18}; newest two.
    assert_eq!(ids(&p), [hex(&fx.pager[18]), hex(&fx.pager[16])]);
    assert!(p["next_cursor"].is_string());
    let (_, p) = get_json(a, &format!("/api/native/search?{w}&attr=user.tier%3Dgold")).await;
    assert_eq!(ids(&p), [hex(&fx.checkout)]);
    assert_eq!(
        p["traces"][0]["services"],
        serde_json::json!(["checkout", "frontend"])
    );
    assert_eq!(p["traces"][0]["span_count"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_parameter_validation() {
    let sv = start().await;
    let (a, fx) = (sv.addr, &sv.fx);
    let w = window(fx);
    let cases = [
        (
            "/api/native/search?service=pager".to_string(),
            "missing start",
        ),
        (
            format!("/api/native/search?start={}", rfc(fx.base_ns)),
            "missing end",
        ),
        (
            format!(
                "/api/native/search?start={}&end={}",
                rfc(fx.base_ns),
                rfc(fx.base_ns + 30 * 24 * 3600 * 1000 * MS)
            ),
            "too wide",
        ),
        (
            format!(
                "/api/native/search?start={}&end={}",
                rfc(fx.base_ns),
                rfc(fx.base_ns - MS)
            ),
            "start must be before end",
        ),
        (
            "/api/native/search?start=yesterday&end=today".to_string(),
            "RFC 3339",
        ),
        (format!("/api/native/search?{w}&limit=101"), "1 to 100"),
        (format!("/api/native/search?{w}&limit=0"), "1 to 100"),
        (
            format!("/api/native/search?{w}&min_duration=fast"),
            "min_duration",
        ),
        (
            format!("/api/native/search?{w}&min_duration=2s&max_duration=1s"),
            "min duration is greater",
        ),
        (format!("/api/native/search?{w}&attr=novalue"), "key=value"),
        (
            format!("/api/native/search?{w}&errors_only=maybe"),
            "true or false",
        ),
        (format!("/api/native/search?{w}&cursor=garbage!!"), ""),
        (format!("/api/native/latency?{w}"), "missing service"),
        (
            format!("/api/native/latency/series?{w}&service=pager&step=30s"),
            "whole number of minutes",
        ),
        (
            format!("/api/native/dependencies?start={}", rfc(fx.base_ns)),
            "missing end",
        ),
        (
            format!(
                "/api/native/latency?start={}&end={}&service=pager&exact=true",
                rfc(fx.base_ns),
                rfc(fx.base_ns + 7_200_000 * MS)
            ),
            "exact percentiles are limited",
        ),
    ];
    for (path, needle) in cases {
        let (st, v) = get_json(a, &path).await;
        assert_eq!(st, 400, "{path}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no error field: {v}"));
        assert!(msg.contains(needle), "{path}: {msg:?} lacks {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_services_dependencies_latency() {
    let sv = start().await;
    let (a, fx) = (sv.addr, &sv.fx);
    let w = window(fx);

    let (_, s) = get_json(a, &format!("/api/native/services?{w}")).await;
    let svcs: Vec<&str> = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for n in [
        "frontend",
        "checkout",
        "deep",
        "wide",
        "pager",
        "payments",
        XSS.split(' ').next().map(|_| "xss-svc").unwrap(),
    ] {
        assert!(svcs.contains(&n), "{n} in {svcs:?}");
    }
    let (_, o) = get_json(a, &format!("/api/native/services/checkout/operations?{w}")).await;
    let ops = o["operations"].as_array().unwrap();
    assert!(ops
        .iter()
        .any(|x| x["name"] == "PlaceOrder" && x["span_kind"] == "server"));
    assert!(ops
        .iter()
        .any(|x| x["name"] == "INSERT orders" && x["span_kind"] == "client"));
    let (_, o) = get_json(
        a,
        &format!("/api/native/services/checkout/operations?{w}&span_kind=client"),
    )
    .await;
    assert_eq!(o["operations"].as_array().unwrap().len(), 1);

    // Dependencies from rollups: service → service and the uninstrumented db peer.
    let (st, d) = get_json(a, &format!("/api/native/dependencies?{w}")).await;
    assert_eq!(st, 200, "{d}");
    let edges = d["edges"].as_array().unwrap();
    let edge = |c: &str, e: &str| {
        edges
            .iter()
            .find(|x| x["caller"] == c && x["callee"] == e)
            .cloned()
    };
    let fc = edge("frontend", "checkout").unwrap_or_else(|| panic!("frontend→checkout in {d}"));
    assert_eq!(fc["calls"], 1);
    assert_eq!(fc["errors"], 0);
    assert!(fc["avg_ns"].as_u64().unwrap() > 0 && fc["p95_ns"].as_u64().unwrap() > 0);
    assert!(
        edge("checkout", "orders-db").is_some(),
        "uninstrumented peer from peer.service: {d}"
    );
    let ap = edge("api", "payments").unwrap_or_else(|| panic!("api→payments in {d}"));
    assert_eq!(ap["errors"], 1);
    assert_eq!(ap["error_rate"], 1.0);
    assert!(d["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "orders-db"));

    // Latency from rollups and exactly from spans.
    let (st, l) = get_json(a, &format!("/api/native/latency?{w}&service=pager")).await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["count"], 30);
    assert_eq!(l["errors"], 10);
    let p50 = l["p50_ns"].as_u64().unwrap() as f64;
    assert!(
        (p50 - 15.0 * MS as f64).abs() / (15.0 * MS as f64) < 0.03,
        "p50 {p50}"
    );
    let narrow = format!(
        "start={}&end={}",
        rfc(fx.base_ns),
        rfc(fx.base_ns + 400_000 * MS)
    );
    let (st, l) = get_json(
        a,
        &format!("/api/native/latency?{narrow}&service=pager&exact=true"),
    )
    .await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["exact"]["p99_ns"], 30 * MS);
    assert_eq!(l["exact"]["p50_ns"], 15 * MS);

    // Series with a comparison range.
    let (st, ser) = get_json(
        a,
        &format!(
            "/api/native/latency/series?{w}&service=pager&step=1m&compare_start={}",
            rfc(fx.base_ns - 2_000_000 * MS)
        ),
    )
    .await;
    assert_eq!(st, 200, "{ser}");
    let pts = ser["points"].as_array().unwrap();
    let total: u64 = pts.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 30);
    assert!(pts
        .iter()
        .all(|p| p["start_ns"].as_u64().unwrap() % 60_000_000_000 == 0));
    let cmp: u64 = ser["compare"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(cmp, 0, "nothing happened in the comparison range");

    // Per-operation figures.
    let (st, po) = get_json(
        a,
        &format!("/api/native/latency/operations?{w}&service=pager"),
    )
    .await;
    assert_eq!(st, 200, "{po}");
    let rows = po["operations"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let odd = rows.iter().find(|r| r["operation"] == "odd").unwrap();
    assert_eq!(odd["count"], 15);
    assert_eq!(odd["span_kind"], "server");
    assert!(odd["p99_ns"].as_u64().unwrap() > odd["p50_ns"].as_u64().unwrap());

    // Rates per service.
    let (_, r) = get_json(a, &format!("/api/native/rates?{w}")).await;
    let pager = r["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["service"] == "pager")
        .unwrap()
        .clone();
    assert_eq!(pager["count"], 30);
    assert_eq!(pager["errors"], 10);
    assert!((pager["error_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert!(pager["rate_per_s"].as_f64().unwrap() > 0.0);
}

/// With a query token configured, the UI's static files load without it (a
/// browser cannot attach a token to a page load; they hold no data), while
/// every API — native, Jaeger v1 and v3, gRPC-over-HTTP — still refuses a
/// request without the right bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_guards_the_api_but_not_the_ui_assets() {
    let sv = start_collector_with_query_token("q-s3cret").await;
    let a = sv.addr;
    for path in ["/", "/ui/app.js", "/ui/app.css"] {
        let (st, body) = get(a, path).await;
        assert_eq!(st, 200, "{path} is served without a token");
        assert!(!body.contains("q-s3cret"), "{path} leaks the token");
    }
    let (_, html) = get(a, "/").await;
    assert!(html.contains("/ui/app.js"), "{html}");
    let w = format!(
        "start={}&end={}",
        rfc(sv.fx.base_ns - 60_000 * MS),
        rfc(sv.fx.base_ns + 600_000 * MS)
    );
    let trace = hex(&sv.fx.checkout);
    let api_paths = [
        format!("/api/native/services?{w}"),
        format!("/api/native/search?{w}&service=frontend"),
        format!("/api/native/traces/{trace}"),
        format!("/api/native/rates?{w}"),
        "/api/services".to_string(),
        "/api/traces?service=frontend".to_string(),
        format!("/api/traces/{trace}"),
        "/api/v3/services".to_string(),
        // Near misses of the static paths are not static.
        "/ui/app.js/../../api/services".to_string(),
        "/ui/".to_string(),
        "/index.html".to_string(),
    ];
    for path in &api_paths {
        let (st, body) = get(a, path).await;
        assert_eq!(st, 401, "{path} without a token: {body}");
        let (st, _) = get_with(a, path, &[("Authorization", "Bearer wrong")]).await;
        assert_eq!(st, 401, "{path} with a wrong token");
        let (st, _) = get_with(a, path, &[("Authorization", "q-s3cret")]).await;
        assert_eq!(st, 401, "{path} with the token but not as a bearer token");
    }
    for path in &api_paths[..8] {
        let (st, body) = get_with(a, path, &[("Authorization", "Bearer q-s3cret")]).await;
        assert_eq!(st, 200, "{path} with the token: {body}");
    }
    let (st, body) = get_with(
        a,
        &format!("/api/native/search?{w}&service=frontend"),
        &[("Authorization", "Bearer q-s3cret")],
    )
    .await;
    assert_eq!(st, 200);
    assert!(body.contains(&trace), "{body}");
    // Refusals are counted; the token never shows up in the metrics.
    let (_, metrics) = get(a, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "ferrotrace_auth_failures_total{{listener=\"query\"}} {}",
            api_paths.len() * 3
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("q-s3cret"));
    sv.collector.shutdown().await;
}

/// GET with the given `Host` header (HTTP/1.1); the status.
async fn status_for_host(addr: std::net::SocketAddr, host: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// DNS rebinding: a page whose own name resolves to the collector reaches it
/// with that name in `Host`. Only known names are served; probes and the
/// metrics scrape answer any name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_listener_answers_only_allowed_host_names() {
    let sv =
        start_collector_with(|c| c.query.allowed_hosts = vec!["traces.example.com".into()]).await;
    let a = sv.addr;
    let port = a.port();
    let trace = hex(&sv.fx.checkout);
    let data_paths = [
        "/".to_string(),
        "/ui/app.js".to_string(),
        "/api/services".to_string(),
        format!("/api/native/traces/{trace}"),
        "/api/v3/services".to_string(),
    ];
    for path in &data_paths {
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            format!("traces.example.com:{port}"),
            "TRACES.example.com".to_string(),
        ] {
            assert_eq!(status_for_host(a, &host, path).await, 200, "{host} {path}");
        }
        for host in [
            format!("attacker.example:{port}"),
            "127.0.0.1.attacker.example".to_string(),
            format!("example.com:{port}"),
        ] {
            assert_eq!(status_for_host(a, &host, path).await, 421, "{host} {path}");
        }
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            status_for_host(a, "collector.monitoring.svc:16686", path).await,
            200,
            "{path}"
        );
    }
    let (_, metrics) = get(a, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "ferrotrace_requests_failed_total{{status=\"421\"}} {}",
            data_paths.len() * 3
        )),
        "{metrics}"
    );
    sv.collector.shutdown().await;
}

/// A service's requests are its SERVER and CONSUMER spans: internal and
/// client spans do not inflate its request rate or dilute its error rate and
/// percentiles. A service without entry spans falls back to all of its spans,
/// and every answer says which basis it used. Per-operation figures count the
/// operation's spans whatever their kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_rates_count_entry_spans() {
    use ferrotrace_collector::model::{SpanKind, StatusCode};
    use ferrotrace_collector::storage::sqlite::SqliteStore;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("spans.db")).unwrap());
    let base = (now_ns() - 10 * 60 * 1_000_000_000) / 60_000_000_000 * 60_000_000_000;
    let mut spans = Vec::new();
    let mut n = 0u64;
    let mut add = |svc: &str, name: &str, kind: SpanKind, count: u64, dur: u64, errors: u64| {
        for i in 0..count {
            n += 1;
            let start = base + n * MS;
            let mut s = span(tid(7000 + n), 1, None, svc, name, kind, start, start + dur);
            if i < errors {
                s.status_code = StatusCode::Error;
            }
            spans.push(s);
        }
    };
    add("shop", "GET /cart", SpanKind::Server, 10, 100 * MS, 2);
    add("shop", "order.created", SpanKind::Consumer, 4, 100 * MS, 1);
    add("shop", "render", SpanKind::Internal, 30, MS, 0);
    add("shop", "GET inventory", SpanKind::Client, 20, 50 * MS, 10);
    add("batch", "nightly", SpanKind::Internal, 5, 10 * MS, 1);
    fill(&store, &spans).await;
    let a = serve_store(store.clone()).await;
    let (start, end) = (base - 60_000 * MS, base + 300_000 * MS);
    let w = format!("start={}&end={}", rfc(start), rfc(end));
    let secs = (end - start) as f64 / 1e9;

    let (st, r) = get_json(a, &format!("/api/native/rates?{w}")).await;
    assert_eq!(st, 200, "{r}");
    let row = |name: &str| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap_or_else(|| panic!("{name} in {r}"))
            .clone()
    };
    let shop = row("shop");
    assert_eq!(shop["basis"], "entry_spans");
    assert_eq!(
        shop["count"], 14,
        "10 server + 4 consumer, not the 64 spans: {shop}"
    );
    assert_eq!(
        shop["errors"], 3,
        "client errors are not the service's: {shop}"
    );
    assert!((shop["rate_per_s"].as_f64().unwrap() - 14.0 / secs).abs() < 1e-9);
    assert!((shop["error_rate"].as_f64().unwrap() - 3.0 / 14.0).abs() < 1e-9);
    let batch = row("batch");
    assert_eq!(batch["basis"], "all_spans", "no entry spans: falls back");
    assert_eq!(
        (batch["count"].as_u64(), batch["errors"].as_u64()),
        (Some(5), Some(1))
    );

    let (_, l) = get_json(a, &format!("/api/native/latency?{w}&service=shop")).await;
    assert_eq!(l["basis"], "entry_spans", "{l}");
    assert_eq!(l["count"], 14);
    for p in ["p50_ns", "p95_ns", "p99_ns"] {
        let v = l[p].as_u64().unwrap() as f64;
        assert!(
            (v / (100.0 * MS as f64) - 1.0).abs() < 0.05,
            "{p} ≈ 100ms (entry spans only): {l}"
        );
    }
    let (_, l) = get_json(
        a,
        &format!("/api/native/latency?{w}&service=shop&exact=true"),
    )
    .await;
    assert_eq!(
        l["exact"],
        serde_json::json!({ "p50_ns": 100 * MS, "p95_ns": 100 * MS, "p99_ns": 100 * MS }),
        "exact percentiles count the same entry spans: {l}"
    );
    let (_, l) = get_json(
        a,
        &format!("/api/native/latency?{w}&service=shop&operation=render"),
    )
    .await;
    assert_eq!(
        (l["count"].as_u64(), l["basis"].as_str()),
        (Some(30), Some("all_spans")),
        "{l}"
    );
    let (_, l) = get_json(a, &format!("/api/native/latency?{w}&service=batch")).await;
    assert_eq!(
        (l["count"].as_u64(), l["basis"].as_str()),
        (Some(5), Some("all_spans")),
        "{l}"
    );

    let (_, s) = get_json(
        a,
        &format!(
            "/api/native/latency/series?{w}&service=shop&step=1m&compare_start={}",
            rfc(start - 3_600_000 * MS)
        ),
    )
    .await;
    assert_eq!(s["basis"], "entry_spans", "{s}");
    let total: u64 = s["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 14);
    let errs: u64 = s["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["errors"].as_u64().unwrap())
        .sum();
    assert_eq!(errs, 3);
    assert!(s["compare"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["count"] == 0));
}
