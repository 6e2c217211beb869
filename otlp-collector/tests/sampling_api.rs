//! The remote sampling API on a running collector: the SDK's
//! `RemoteSampler` fetches the served strategy and samples at its rates;
//! hostile query parameters get 400s and are counted; Python's
//! `jaeger-client` (a client nobody here wrote, polling the agent path
//! `/sampling`) applies the served probability.

mod ingest_util;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::remote::RemoteSampler;
use ferrotrace::trace::{Sampler, TracerProvider};
use ferrotrace_collector::config::Config;
use ferrotrace_collector::sampling_api::config::ServiceStrategyConfig;
use ingest_util::*;

fn pinned(c: &mut Config) {
    let s = &mut c.sampling_api;
    s.enabled = true;
    s.addr = "127.0.0.1:0".into();
    s.default_probability = 0.1;
    let mut checkout = ServiceStrategyConfig {
        probability: Some(0.25),
        ..Default::default()
    };
    checkout.operations.insert("always".into(), 1.0);
    checkout.operations.insert("never".into(), 0.0);
    s.services.insert("checkout".into(), checkout);
    s.services.insert(
        "py-svc".into(),
        ServiceStrategyConfig {
            probability: Some(0.3),
            ..Default::default()
        },
    );
}

fn within_5_sigma(kept: usize, n: usize, p: f64) -> bool {
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (kept as f64 - n as f64 * p).abs() < 5.0 * sigma
}

fn kept(p: &TracerProvider, name: &'static str, n: usize) -> usize {
    let t = p.tracer("t");
    (0..n)
        .filter(|_| {
            t.span_builder(name)
                .as_root()
                .start()
                .span_context()
                .is_sampled()
        })
        .count()
}

async fn fetched(s: &RemoteSampler) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.stats().fetches == 0 {
        assert!(Instant::now() < deadline, "no fetch: {:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn remote(service: &str, addr: std::net::SocketAddr) -> RemoteSampler {
    RemoteSampler::builder(service)
        .with_endpoint(format!("http://{addr}"))
        .with_polling_interval(Duration::from_secs(60))
        .with_initial_sampler(Sampler::AlwaysOff)
        .build()
        .unwrap()
}

fn provider(s: &RemoteSampler) -> TracerProvider {
    TracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_sampler(Sampler::JaegerRemote(s.clone()))
        .with_unended_span_age(None)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_remote_sampler_samples_at_the_served_rates() {
    let tc = start(pinned).await;
    let addr = tc.collector.addrs.sampling.expect("sampling listener");

    // A pinned service with pinned operations.
    let s = remote("checkout", addr);
    fetched(&s).await;
    assert_eq!(s.stats().fetch_failures, 0, "{:?}", s.stats());
    let p = provider(&s);
    let n = 20_000;
    let k = kept(&p, "other-op", n);
    assert!(
        within_5_sigma(k, n, 0.25),
        "checkout default op kept {k}/{n}"
    );
    assert_eq!(kept(&p, "always", 1_000), 1_000);
    assert_eq!(kept(&p, "never", 1_000), 0);

    // An unknown service gets the default strategy.
    let s = remote("unknown-svc", addr);
    fetched(&s).await;
    let k = kept(&provider(&s), "op", n);
    assert!(within_5_sigma(k, n, 0.1), "unknown service kept {k}/{n}");

    let m = tc.collector.metrics.sampling_api_requests.get("pinned");
    assert!(m >= 1, "pinned requests counted: {m}");
    assert!(tc.collector.metrics.sampling_api_requests.get("default") >= 1);
    tc.collector.shutdown().await;
}

#[tokio::test]
async fn hostile_query_parameters_get_400_and_are_counted() {
    let tc = start(pinned).await;
    let addr = tc.collector.addrs.sampling.expect("sampling listener");
    let long = "x".repeat(300);
    let huge = "y".repeat(5_000);
    let bad = [
        "/api/sampling".to_string(),
        "/api/sampling?".to_string(),
        "/api/sampling?service=".to_string(),
        "/api/sampling?service=a&service=b".to_string(),
        format!("/api/sampling?service={long}"),
        format!("/api/sampling?service=a&pad={huge}"),
        "/sampling?svc=checkout".to_string(),
    ];
    for path in &bad {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = raw_http(addr, raw.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
        assert!(
            resp.contains("'service' parameter") || resp.contains("4096"),
            "{resp}"
        );
    }
    assert_eq!(
        tc.collector
            .metrics
            .sampling_api_requests
            .get("bad_request"),
        bad.len() as u64
    );
    // Odd but well-formed values are just unknown services: the default strategy.
    for q in [
        "service=%FF%FE",
        "service=%G1%",
        "service=a%00b",
        "service=%3Cscript%3E",
    ] {
        let raw = format!("GET /api/sampling?{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = raw_http(addr, raw.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{q}: {resp}");
        assert!(resp.contains(r#""samplingRate":0.1"#), "{resp}");
    }
    // Only GET; other paths are not served.
    let resp = raw_http(
        addr,
        b"POST /api/sampling?service=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    let resp = raw_http(
        addr,
        b"GET /api/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    // The counters are in /metrics.
    let http = tc.collector.addrs.http.unwrap();
    let m = raw_http(
        http,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        m.contains("ferrotrace_sampling_api_requests_total{outcome=\"bad_request\"} 7"),
        "{m}"
    );
    tc.collector.shutdown().await;
}

fn missing(what: &str, why: String) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {what} is missing (run scripts/test.sh): {why}");
    }
    eprintln!("SKIPPED: {what} not installed ({why}); scripts/test.sh installs it");
}

fn legacy_python() -> Option<PathBuf> {
    let py = std::env::var_os("FERROTRACE_PY_LEGACY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/ferrotrace/py-legacy/bin/python")
        });
    match Command::new(&py)
        .args(["-c", "import jaeger_client"])
        .output()
    {
        Ok(o) if o.status.success() => Some(py),
        Ok(o) => {
            missing(
                "Python jaeger-client",
                String::from_utf8_lossy(&o.stderr).into(),
            );
            None
        }
        Err(e) => {
            missing(&py.display().to_string(), e.to_string());
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jaeger_client_samples_at_the_served_probability() {
    let Some(py) = legacy_python() else { return };
    let tc = start(pinned).await;
    let addr = tc.collector.addrs.sampling.expect("sampling listener");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/jaeger_remote_sampler.py");
    let n = 20_000usize;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .args([&addr.port().to_string(), "py-svc", &n.to_string(), "0.3"])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from the script");
    assert_eq!(v["sampler"], "ProbabilisticSampler", "{v}");
    assert_eq!(v["rate"], 0.3, "the client applied the served rate: {v}");
    let k = v["kept"].as_u64().unwrap() as usize;
    assert!(within_5_sigma(k, n, 0.3), "python kept {k}/{n}");
    // The client asked for its own service on the agent path.
    assert!(tc.collector.metrics.sampling_api_requests.get("pinned") >= 1);
    tc.collector.shutdown().await;
}
