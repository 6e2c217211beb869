//! The web UI in real headless Chromium, driven over the DevTools protocol,
//! against the query router serving a filled SqliteStore on 127.0.0.1:0.
//! Screenshots are written to $FERROTRACE_ARTIFACTS (or <target>/ui-artifacts).

mod query_support;

use ferrotrace_collector::model::{SpanKind, StatusCode};
use query_support::cdp::{require_chromium, Browser};
use query_support::*;
use serde_json::json;

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_search_trace_graph_and_xss_in_chromium() {
    let Some(chromium) = require_chromium("ui_search_trace_graph_and_xss_in_chromium") else {
        return;
    };
    let sv = start().await;
    let (addr, fx) = (sv.addr, &sv.fx);
    let (checkout, xss, orphaned, deep) = (
        hex(&fx.checkout),
        hex(&fx.xss),
        hex(&fx.orphaned),
        hex(&fx.deep),
    );
    tokio::task::spawn_blocking(move || {
        let base = format!("http://{addr}/");
        let mut b = Browser::launch(&chromium);

        // Search page from a deep link: the filters are in the URL.
        b.navigate(&format!("{base}#/search?service=frontend&lookback=1h&run=1"));
        b.wait_for("document.querySelectorAll('#results tbody tr').length === 1", 20, "one search result");
        assert_eq!(b.eval("document.querySelector('#f-service').value"), json!("frontend"), "form restored from the URL");
        assert_eq!(b.eval("document.querySelectorAll('#scatter circle').length"), json!(1), "scatter plot point");
        assert_eq!(b.eval("document.querySelector('#results tbody tr').dataset.traceId"), json!(checkout));
        let row_text = b.eval("document.querySelector('#results tbody tr').innerText").to_string();
        assert!(row_text.contains("GET /checkout") && row_text.contains("UTC") && row_text.contains("120"), "{row_text}");
        b.screenshot("ui-search.png");

        // Open the trace from the result list.
        b.eval("document.querySelector('#results a.trace-link').click()");
        b.wait_for(&format!("window.__ftTrace && window.__ftTrace.id === {}", js_str(&checkout)), 20, "trace page");
        let ops = b.eval("Array.from(document.querySelectorAll('#waterfall .row[data-index]')).sort((a, c) => a.dataset.index - c.dataset.index).map(r => r.querySelector('.op').textContent)");
        assert_eq!(ops, json!(["GET /checkout", "POST checkout", "PlaceOrder", "INSERT orders"]), "waterfall order");
        assert_eq!(b.eval("document.querySelectorAll('#waterfall .bar.crit').length"), json!(4), "critical path highlighted");
        assert!(b.eval("location.hash").as_str().unwrap().contains(&checkout), "deep link to the trace");
        // Bars are placed by start and sized by duration: PlaceOrder starts 12ms into 120ms.
        let left = b.eval("parseFloat(document.querySelector('#waterfall .row[data-index=\"2\"] .bar').style.left)").as_f64().unwrap();
        assert!((left - 10.0).abs() < 0.01, "left {left}%");
        b.eval("document.querySelector('#waterfall .row[data-index=\"2\"]').click()");
        b.wait_for("document.querySelector('#detail-title').textContent === 'PlaceOrder'", 10, "detail panel");
        let attrs = b.eval("document.querySelector('#detail-attributes').innerText").as_str().unwrap().to_string();
        assert!(attrs.contains("order.id") && attrs.contains("A-17"), "{attrs}");
        let detail = b.eval("document.querySelector('#detail').innerText").as_str().unwrap().to_string();
        assert!(detail.contains("checkout-host"), "resource shown: {detail}");
        // Collapse the root: only it stays visible.
        b.eval("document.querySelector('#collapse-all').click()");
        b.wait_for("document.querySelectorAll('#waterfall .row[data-index]').length === 1", 5, "collapsed");
        b.eval("document.querySelector('#expand-all').click()");
        b.wait_for("document.querySelectorAll('#waterfall .row[data-index]').length === 4", 5, "expanded");
        b.screenshot("ui-trace.png");

        // Orphans: the placeholder for the missing parent is shown.
        b.navigate(&format!("{base}#/trace/{orphaned}"));
        b.wait_for(&format!("window.__ftTrace && window.__ftTrace.id === {}", js_str(&orphaned)), 20, "orphan trace");
        let ph = b.eval("Array.from(document.querySelectorAll('#waterfall .row.placeholder')).map(r => r.textContent)");
        assert_eq!(ph.as_array().unwrap().len(), 2, "{ph}");
        assert!(ph[0].as_str().unwrap().contains(&hex(&999u64.to_be_bytes())));
        assert!(b.eval("document.querySelector('#partial').textContent").as_str().unwrap().contains("root span"));

        // The 10,000-span chain: rows are virtualised; scrolling reaches the bottom.
        b.navigate(&format!("{base}#/trace/{deep}"));
        b.wait_for(&format!("window.__ftTrace && window.__ftTrace.id === {}", js_str(&deep)), 30, "deep trace");
        let rows = b.eval("document.querySelectorAll('#waterfall .row').length").as_u64().unwrap();
        assert!(rows > 10 && rows < 200, "only on-screen rows exist: {rows}");
        b.eval("const w = document.getElementById('waterfall'); w.scrollTop = w.scrollHeight; true");
        b.wait_for("document.querySelector('#waterfall .row[data-index=\"9999\"]') !== null", 10, "last row after scrolling");
        assert_eq!(b.eval("document.querySelector('#waterfall .row[data-index=\"9999\"] .op').textContent"), json!("level-9999"));

        // XSS: the span name and attribute show as text; nothing runs.
        b.navigate(&format!("{base}#/trace/{xss}"));
        b.wait_for(&format!("window.__ftTrace && window.__ftTrace.id === {}", js_str(&xss)), 20, "xss trace");
        assert_eq!(b.eval("document.querySelector('#waterfall .row[data-index=\"0\"] .op').textContent"), json!(XSS));
        assert_eq!(b.eval("document.querySelector('#detail-title').textContent"), json!(XSS));
        assert!(b.eval("document.querySelector('#trace-title').textContent").as_str().unwrap().contains(XSS));
        assert!(b.eval("document.querySelector('#detail-attributes').innerText").as_str().unwrap().contains("<script>alert(2)</script>"));
        assert_eq!(b.eval("document.querySelectorAll('#app img, #app script').length"), json!(0), "no element was injected");
        b.screenshot("ui-xss.png");

        // Dependency graph: expected edges, labels, and the uninstrumented peer.
        b.navigate(&format!("{base}#/dependencies?lookback=1h"));
        b.wait_for("document.querySelector('#deps-graph') !== null", 20, "dependency graph");
        let label = b.eval("document.querySelector('#deps-graph g.edge[data-caller=\"frontend\"][data-callee=\"checkout\"] text').textContent");
        assert_eq!(label, json!("1 calls · 0.00% err"));
        let err_label = b.eval("document.querySelector('#deps-graph g.edge[data-caller=\"api\"][data-callee=\"payments\"] text').textContent");
        assert_eq!(err_label, json!("1 calls · 100.0% err"));
        assert_eq!(b.eval("document.querySelector('#deps-graph g.edge[data-caller=\"api\"][data-callee=\"payments\"]').classList.contains('err')"), json!(true));
        assert_eq!(b.eval("document.querySelector('#deps-graph g.node[data-service=\"orders-db\"]').classList.contains('peer')"), json!(true));
        assert_eq!(b.eval("document.querySelector('#deps-graph g.node[data-service=\"checkout\"]').classList.contains('peer')"), json!(false));
        b.screenshot("ui-dependencies.png");

        // Service page: percentiles over time and rates.
        b.navigate(&format!("{base}#/service/pager?lookback=1h&compare=true"));
        b.wait_for("document.querySelectorAll('#svc-charts .chart').length === 3", 20, "service charts");
        assert!(b.eval("document.querySelectorAll('#svc-charts path').length").as_u64().unwrap() >= 6);
        let rates = b.eval("document.querySelector('#rates').innerText").as_str().unwrap().to_string();
        assert!(rates.contains("pager") && rates.contains("33.3%"), "{rates}");
        b.wait_for("document.querySelectorAll('#svc-operations tbody tr').length === 2", 10, "per-operation table");
        let ops = b.eval("document.querySelector('#svc-operations').innerText").as_str().unwrap().to_string();
        assert!(ops.contains("even") && ops.contains("odd"), "{ops}");
        b.screenshot("ui-service.png");

        assert!(b.dialogs.is_empty(), "a JavaScript dialog opened: {:?}", b.dialogs);
        assert!(b.exceptions.is_empty(), "uncaught exceptions: {:?}", b.exceptions);
    })
    .await
    .unwrap();
}

/// A collector with a query token: the page loads without it, asks for the
/// token in the page (not a JavaScript dialog), rejects a wrong one, and once
/// given the right one every view works; the token stays out of the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_asks_for_the_query_token_in_chromium() {
    let Some(chromium) = require_chromium("ui_asks_for_the_query_token_in_chromium") else {
        return;
    };
    let sv = start_collector_with_query_token("ui-t0ken").await;
    let (addr, checkout) = (sv.addr, hex(&sv.fx.checkout));
    tokio::task::spawn_blocking(move || {
        let base = format!("http://{addr}/");
        let mut b = Browser::launch(&chromium);
        b.navigate(&format!("{base}#/search?service=frontend&lookback=1h&run=1"));
        b.wait_for("document.querySelector('#auth-prompt #auth-token') !== null", 20, "token prompt");
        assert_eq!(b.eval("document.querySelectorAll('#results tbody tr').length"), json!(0), "no data before the token");
        assert_eq!(b.eval("document.querySelector('#auth-token').type"), json!("password"));
        b.screenshot("ui-auth-prompt.png");

        // A wrong token is refused and the prompt comes back saying so.
        b.eval("document.querySelector('#auth-token').value = 'wrong'; document.querySelector('#auth-submit').click(); true");
        b.wait_for("document.querySelector('#auth-prompt #auth-rejected') !== null", 20, "rejected-token message");
        assert_eq!(b.eval("document.querySelectorAll('#results tbody tr').length"), json!(0));

        b.eval("document.querySelector('#auth-token').value = 'ui-t0ken'; document.querySelector('#auth-submit').click(); true");
        b.wait_for("document.querySelectorAll('#results tbody tr').length === 1", 20, "search result after the token");
        assert_eq!(b.eval("document.querySelector('#auth-prompt')"), json!(null), "prompt gone");
        assert_eq!(b.eval("document.querySelector('#results tbody tr').dataset.traceId"), json!(checkout));
        assert_eq!(b.eval("sessionStorage.getItem('ferrotrace.queryToken')"), json!("ui-t0ken"));
        assert!(!b.eval("location.href").as_str().unwrap().contains("ui-t0ken"), "token not in the URL");
        b.screenshot("ui-auth-search.png");

        // The trace page, and a fresh page load in the same tab, use the kept token.
        b.eval("document.querySelector('#results a.trace-link').click()");
        b.wait_for(&format!("window.__ftTrace && window.__ftTrace.id === {}", js_str(&checkout)), 20, "trace page with the token");
        b.navigate(&format!("{base}#/dependencies?lookback=1h"));
        b.wait_for("document.querySelector('#deps-graph') !== null", 20, "dependency graph with the kept token");
        assert_eq!(b.eval("document.querySelector('#auth-prompt')"), json!(null), "no second prompt");
        assert!(!b.eval("document.documentElement.outerHTML").as_str().unwrap().contains("ui-t0ken"), "token not in the DOM");

        assert!(b.dialogs.is_empty(), "a JavaScript dialog opened: {:?}", b.dialogs);
        assert!(b.exceptions.is_empty(), "uncaught exceptions: {:?}", b.exceptions);
    })
    .await
    .unwrap();
    sv.collector.shutdown().await;
}

/// `{span_id: {critical, error}}` from the native API, the flags the waterfall must show.
async fn span_flags(addr: std::net::SocketAddr, trace: &str) -> serde_json::Value {
    let (st, t) = get_json(addr, &format!("/api/native/traces/{trace}")).await;
    assert_eq!(st, 200, "{t}");
    let mut m = serde_json::Map::new();
    for s in t["spans"].as_array().unwrap() {
        m.insert(
            s["span_id"].as_str().unwrap().to_string(),
            json!({ "critical": s["critical"], "error": s["error"] }),
        );
    }
    serde_json::Value::Object(m)
}

/// JavaScript listing every rendered row whose highlighting disagrees with `flags`.
fn row_mismatches(flags: &serde_json::Value) -> String {
    format!(
        "(() => {{ const exp = {flags}; const bad = [];
          for (const r of document.querySelectorAll('#waterfall .row[data-index]')) {{
            const e = exp[r.dataset.spanId]; const bar = r.querySelector('.bar');
            if (!e) {{ bad.push('unknown span ' + r.dataset.spanId); continue; }}
            if (bar.classList.contains('crit') !== e.critical) bad.push(r.dataset.spanId + ': critical path');
            if (bar.classList.contains('err') !== e.error) bad.push(r.dataset.spanId + ': error outline');
            if (!!r.querySelector('.mark.err') !== e.error) bad.push(r.dataset.spanId + ': error mark');
          }}
          return bad; }})()"
    )
}

/// Counts minimap pixels that are painted, and those in the error red.
const MINIMAP_PIXELS: &str = "(() => { const c = document.querySelector('#minimap canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let painted = 0, red = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i + 3] > 0) { painted++; if (d[i] === 0xd3 && d[i + 1] === 0x2f && d[i + 2] === 0x2f) red++; } }
  return { w: c.width, h: c.height, painted, red }; })()";

/// The trace page's skew marker, minimap, and error and critical-path
/// highlighting, checked against the API's flags in headless Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_trace_page_skew_minimap_errors_critical_path_in_chromium() {
    let Some(chromium) =
        require_chromium("ui_trace_page_skew_minimap_errors_critical_path_in_chromium")
    else {
        return;
    };
    let sv = start().await;
    let (addr, fx) = (sv.addr, &sv.fx);
    // Every fixture trace has all its spans on the critical path; this one has
    // a failed step that ran in parallel with the slow one and so is not.
    let parallel = tid(4242);
    let p0 = fx.base_ns + 9_000 * MS;
    let mut overlapped = span(
        parallel,
        3,
        Some(1),
        "parallel",
        "overlapped-step",
        SpanKind::Internal,
        p0 + 20 * MS,
        p0 + 30 * MS,
    );
    overlapped.status_code = StatusCode::Error;
    let extra = vec![
        span(
            parallel,
            1,
            None,
            "parallel",
            "batch",
            SpanKind::Server,
            p0,
            p0 + 100 * MS,
        ),
        span(
            parallel,
            2,
            Some(1),
            "parallel",
            "slow-step",
            SpanKind::Internal,
            p0 + 10 * MS,
            p0 + 90 * MS,
        ),
        overlapped,
    ];
    fill(&sv.store, &extra).await;
    let parallel = hex(&parallel);
    let parallel_flags = span_flags(addr, &parallel).await;
    assert_eq!(
        parallel_flags[hex(&3u64.to_be_bytes())],
        json!({ "critical": false, "error": true }),
        "{parallel_flags}"
    );
    let (skewed, erroring, wide, deep) = (
        hex(&fx.skewed),
        hex(&fx.erroring),
        hex(&fx.wide),
        hex(&fx.deep),
    );
    let (erroring_flags, wide_flags) = (
        span_flags(addr, &erroring).await,
        span_flags(addr, &wide).await,
    );
    let (_, sk) = get_json(addr, &format!("/api/native/traces/{skewed}")).await;
    let child = sk["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "skewed-child")
        .unwrap()
        .clone();
    let shift_ms = child["skew_shift_ns"].as_i64().unwrap() as f64 / 1e6;
    assert!(shift_ms > 0.0, "{child}");
    let child_left =
        100.0 * child["offset_ns"].as_f64().unwrap() / sk["duration_ns"].as_f64().unwrap();
    tokio::task::spawn_blocking(move || {
        let base = format!("http://{addr}/");
        let mut b = Browser::launch(&chromium);
        let open = |b: &mut Browser, id: &str, query: &str| {
            b.navigate(&format!("{base}#/trace/{id}{query}"));
            b.wait_for(&format!("window.__ftTrace && window.__ftTrace.id === {} && location.hash.endsWith({})", js_str(id), js_str(&format!("{id}{query}"))), 20, "trace page");
        };

        // Skew: the shifted span (and only it) carries the ⇆ marker, its bar sits
        // where the API put it, the header counts it, the detail panel shows the shift.
        open(&mut b, &skewed, "");
        let marks = b.eval("Array.from(document.querySelectorAll('#waterfall .row[data-index]')).filter(r => r.querySelector('.mark.skew')).map(r => r.querySelector('.op').textContent)");
        assert_eq!(marks, json!(["skewed-child"]), "skew marker only on the shifted span");
        let title = b.eval("document.querySelector('#waterfall .mark.skew').getAttribute('title')").as_str().unwrap().to_string();
        assert!(title.starts_with("clock skew corrected by") && title.contains(&format!("{shift_ms:.1}ms")), "{title} ({shift_ms}ms)");
        assert_eq!(b.eval("document.querySelector('#waterfall .mark.skew').textContent"), json!("⇆"));
        let head = b.eval("document.querySelector('.trace-head').innerText").as_str().unwrap().to_string();
        assert!(head.contains("1 span clock-skew adjusted"), "{head}");
        let left = b.eval("parseFloat(Array.from(document.querySelectorAll('#waterfall .row[data-index]')).find(r => r.querySelector('.op').textContent === 'skewed-child').querySelector('.bar').style.left)").as_f64().unwrap();
        assert!((left - child_left).abs() < 0.01, "adjusted bar at {left}%, API says {child_left}%");
        b.eval("Array.from(document.querySelectorAll('#waterfall .row[data-index]')).find(r => r.querySelector('.op').textContent === 'skewed-child').click(); true");
        b.wait_for("document.querySelector('#detail-title').textContent === 'skewed-child'", 10, "skewed span detail");
        let detail = b.eval("document.querySelector('#detail').innerText").as_str().unwrap().to_string();
        assert!(detail.contains("Clock skew shift") && detail.contains(&format!("+{shift_ms:.1}ms")), "{detail}");
        b.screenshot("ui-trace-skew.png");
        // Raw timings: no marker, no badge, the child back before its parent.
        b.eval("document.querySelector('#raw-toggle').click(); true");
        b.wait_for(&format!("location.hash.endsWith({}) && window.__ftTrace && document.querySelector('#raw-toggle').textContent === 'show adjusted timings'", js_str("?raw=true")), 20, "raw trace page");
        assert_eq!(b.eval("document.querySelectorAll('#waterfall .mark.skew').length"), json!(0), "raw: nothing marked");
        assert!(!b.eval("document.querySelector('.trace-head').innerText").as_str().unwrap().contains("clock-skew adjusted"));
        let raw_left = b.eval("parseFloat(Array.from(document.querySelectorAll('#waterfall .row[data-index]')).find(r => r.querySelector('.op').textContent === 'skewed-child').querySelector('.bar').style.left)").as_f64().unwrap();
        assert!(raw_left.abs() < 0.01, "raw: the child starts the trace, at {raw_left}%");

        // Errors and the critical path: every rendered row agrees with the API,
        // the outlines are really drawn, and the error chain is explained.
        open(&mut b, &erroring, "");
        assert_eq!(b.eval(&row_mismatches(&erroring_flags)), json!([]), "erroring trace highlighting");
        assert_eq!(b.eval("document.querySelectorAll('#waterfall .bar.err').length"), json!(2), "Charge and CallBank failed");
        assert_eq!(b.eval("Array.from(document.querySelectorAll('#waterfall .row[data-index]')).filter(r => r.querySelector('.mark.err')).map(r => r.querySelector('.op').textContent)"), json!(["Charge", "CallBank"]));
        assert_eq!(b.eval("getComputedStyle(document.querySelector('#waterfall .bar.err')).outlineColor"), json!("rgb(211, 47, 47)"), "red outline drawn");
        assert!(b.eval("getComputedStyle(document.querySelector('#waterfall .bar.crit')).boxShadow").as_str().unwrap().contains("rgb(17, 17, 17)"), "critical path outline drawn");
        for (op, chain) in [("CallBank", "error starts here"), ("Charge", "error (propagated)"), ("POST /pay", "leads to an error")] {
            b.eval(&format!("Array.from(document.querySelectorAll('#waterfall .row[data-index]')).find(r => r.querySelector('.op').textContent === {}).click(); true", js_str(op)));
            b.wait_for(&format!("document.querySelector('#detail-title').textContent === {}", js_str(op)), 10, "error span detail");
            let detail = b.eval("document.querySelector('#detail').innerText").as_str().unwrap().to_string();
            assert!(detail.contains("Error chain") && detail.contains(chain), "{op}: {detail}");
        }
        // Minimap: painted, error spans in red, and a view box.
        let px = b.eval(MINIMAP_PIXELS);
        assert!(px["w"].as_u64().unwrap() > 100 && px["painted"].as_u64().unwrap() > 100, "minimap painted: {px}");
        assert!(px["red"].as_u64().unwrap() > 0, "error spans red on the minimap: {px}");
        b.screenshot("ui-trace-errors.png");

        // Only the spans on the critical path are outlined: the failed step that
        // ran beside the slow one is outlined red, not black.
        open(&mut b, &parallel, "");
        assert_eq!(b.eval(&row_mismatches(&parallel_flags)), json!([]), "parallel trace highlighting");
        let outlined = "Array.from(document.querySelectorAll('#waterfall .row[data-index]')).filter(r => r.querySelector('.bar').classList.contains(CLS)).map(r => r.querySelector('.op').textContent)";
        assert_eq!(b.eval(&outlined.replace("CLS", "'crit'")), json!(["batch", "slow-step"]));
        assert_eq!(b.eval(&outlined.replace("CLS", "'err'")), json!(["overlapped-step"]));
        b.screenshot("ui-trace-critical-path.png");

        // Wide fan-out: rows agree with the API on screen and after scrolling to the end.
        open(&mut b, &wide, "");
        assert_eq!(b.eval(&row_mismatches(&wide_flags)), json!([]), "wide trace, top");
        let px = b.eval(MINIMAP_PIXELS);
        assert!(px["painted"].as_u64().unwrap() > 100 && px["red"] == 0, "no errors, no red: {px}");
        b.eval("const w = document.getElementById('waterfall'); w.scrollTop = w.scrollHeight; true");
        b.wait_for(&format!("document.querySelector('#waterfall .row[data-index=\"{}\"]') !== null", WIDE_N), 10, "last child after scrolling");
        assert_eq!(b.eval(&row_mismatches(&wide_flags)), json!([]), "wide trace, bottom");
        assert_eq!(b.eval(&format!("document.querySelector('#waterfall .row[data-index=\"{}\"] .bar').classList.contains('crit')", WIDE_N)), json!(true), "the last child to finish is critical");

        // Minimap navigation on the 10,000-span chain: a click near its bottom
        // scrolls the waterfall there and moves the view box.
        open(&mut b, &deep, "");
        let top0 = b.eval("parseFloat(document.querySelector('#minimap .view').style.top)").as_f64().unwrap();
        assert!(top0 < 1.0, "view box starts at the top: {top0}%");
        b.eval("(() => { const m = document.getElementById('minimap'); const r = m.getBoundingClientRect();
            m.dispatchEvent(new MouseEvent('click', { bubbles: true, clientX: r.left + r.width / 2, clientY: r.bottom - 2 })); return true; })()");
        b.wait_for("Array.from(document.querySelectorAll('#waterfall .row[data-index]')).some(r => +r.dataset.index > 9000)", 10, "rows near the end after a minimap click");
        b.wait_for("parseFloat(document.querySelector('#minimap .view').style.top) > 80", 10, "view box moved down");
        b.screenshot("ui-trace-minimap.png");

        assert!(b.dialogs.is_empty(), "a JavaScript dialog opened: {:?}", b.dialogs);
        assert!(b.exceptions.is_empty(), "uncaught exceptions: {:?}", b.exceptions);
    })
    .await
    .unwrap();
}
