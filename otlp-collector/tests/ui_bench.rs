//! Render benchmark of the trace page in headless Chromium (not a pass/fail
//! timing test: it prints numbers for docs/benchmarks.md). Run with
//! `cargo test --release -p ferrotrace-collector --test ui_bench -- --ignored --nocapture`.

mod query_support;

use std::sync::Arc;

use ferrotrace_collector::model::SpanKind;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use query_support::cdp::{require_chromium, Browser};
use query_support::*;

/// A trace of `n` spans over 8 services: a root, 50 "request" subtrees, each a
/// mix of fan-out and nesting, so depth and width both occur.
fn big_trace(trace: [u8; 16], n: u64, base: u64) -> Vec<ferrotrace_collector::model::Span> {
    let svcs = [
        "gateway",
        "auth",
        "catalog",
        "cart",
        "pricing",
        "inventory",
        "search",
        "db",
    ];
    let mut out = vec![span(
        trace,
        1,
        None,
        "gateway",
        "GET /bulk",
        SpanKind::Server,
        base,
        base + n * 10_000 + 1_000,
    )];
    for i in 1..n {
        // Parent: a nearby earlier span, giving chains of up to ~8 with fan-out.
        let parent = if i % 8 == 1 { 1 } else { i };
        let start = base + i * 10_000;
        // Each span of an 8-long chain covers the rest of its chain.
        let pos = (i - 1) % 8;
        let dur = (8 - pos) * 10_000 - pos * 100 - (i % 7) * 50;
        let svc = svcs[(i / 8 % 8) as usize];
        let mut s = span(
            trace,
            i + 1,
            Some(parent),
            svc,
            &format!("op-{}", i % 50),
            SpanKind::Internal,
            start,
            start + dur,
        );
        if i % 97 == 0 {
            s.status_code = ferrotrace_collector::model::StatusCode::Error;
        }
        out.push(s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --ignored --nocapture"]
async fn ui_render_bench() {
    let Some(chromium) = require_chromium("ui_render_bench") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("bench.db")).unwrap());
    let base = now_ns() - 10 * 60 * 1_000_000_000;
    let (t10, t50) = (tid(10_000), tid(50_000));
    let mut spans = big_trace(t10, 10_000, base);
    spans.extend(big_trace(t50, 50_000, base + 1_000_000));
    fill(&store, &spans).await;
    let addr = serve_store(store.clone()).await;
    tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(&chromium);
        for (id, n) in [(t10, 10_000u64), (t50, 50_000)] {
            let mut loads = Vec::new();
            let mut renders = Vec::new();
            let mut frames = Vec::new();
            for _ in 0..3 {
                b.navigate("about:blank");
                b.wait_for("location.href === 'about:blank'", 10, "blank page");
                b.navigate(&format!("http://{addr}/#/trace/{}", hex(&id)));
                b.wait_for(&format!("window.__ftTrace && window.__ftTrace.spans === {n}"), 60, "trace rendered");
                loads.push(b.eval("window.__ftTrace.sinceNavigationMs").as_f64().unwrap());
                renders.push(b.eval("window.__ftTrace.renderMs").as_f64().unwrap());
                // 60 animation frames, each scrolling 100 rows further.
                let ms = b.eval(
                    "new Promise((res) => { const w = document.getElementById('waterfall'); let k = 0; const t0 = performance.now(); \
                     const step = () => { w.scrollTop += 2400; if (++k < 60) requestAnimationFrame(step); else requestAnimationFrame(() => res((performance.now() - t0) / 60)); }; \
                     requestAnimationFrame(step); })",
                );
                frames.push(ms.as_f64().unwrap());
            }
            let med = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                v[v.len() / 2]
            };
            println!(
                "BENCH trace page {n} spans: navigation→rendered median {:.0} ms (fetch+parse+render {:.0} ms), scroll frame median {:.1} ms",
                med(&mut loads),
                med(&mut renders),
                med(&mut frames)
            );
        }
        b.screenshot("ui-bench-50k.png");
    })
    .await
    .unwrap();
}
