//! The web UI in real headless Chromium, driven over the DevTools protocol,
//! against the query router serving a filled SqliteStore on 127.0.0.1:0.
//! Screenshots are written to $FERROTRACE_ARTIFACTS (or <target>/ui-artifacts).

mod query_support;

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
