//! The Jaeger remote sampler against a real HTTP server started by the test
//! on a loopback port: strategies applied (probabilistic through the
//! consistent rule, per-operation with the lower bound, rate limiting),
//! malformed, oversized, endless, hung and failing responses counted while
//! the last strategy stays, an unreachable endpoint, and the environment
//! configuration (`OTEL_TRACES_SAMPLER=jaeger_remote`).
#![cfg(feature = "jaeger-remote")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::trace::consistent::OtState;
use ferrotrace::trace::diagnostics::{self, Diagnostic};
use ferrotrace::trace::remote::RemoteSampler;
use ferrotrace::trace::{Sampler, TracerProvider};

#[derive(Clone)]
enum Reply {
    Json(u16, String),
    /// Headers for a chunked body, then chunks until the client goes away.
    Endless,
    /// Accept, read the request, never answer.
    Hang,
}

struct Server {
    port: u16,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<Mutex<Vec<String>>>,
    hanging: Arc<AtomicUsize>,
}

impl Server {
    fn start(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let reply = Arc::new(Mutex::new(reply));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hanging = Arc::new(AtomicUsize::new(0));
        let (r, q, h) = (reply.clone(), requests.clone(), hanging.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, q, h) = (r.clone(), q.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &r, &q, &h));
            }
        });
        Server {
            port,
            reply,
            requests,
            hanging,
        }
    }
    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(
    conn: TcpStream,
    reply: &Mutex<Reply>,
    requests: &Mutex<Vec<String>>,
    hanging: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    requests.lock().unwrap().push(line.trim_end().to_string());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let reply = reply.lock().unwrap().clone();
    let mut conn = conn;
    match reply {
        Reply::Json(status, body) => {
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Reply::Endless => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let chunk = format!("{:x}\r\n{}\r\n", 65536, "[".repeat(65536));
            while conn.write_all(chunk.as_bytes()).is_ok() {}
        }
        Reply::Hang => {
            hanging.fetch_add(1, Ordering::SeqCst);
            // Hold the connection until the client gives up.
            let mut buf = [0u8; 64];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = conn.read(&mut buf);
            hanging.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sampler(server: &Server, initial: Sampler) -> RemoteSampler {
    RemoteSampler::builder("checkout")
        .with_endpoint(server.endpoint())
        .with_polling_interval(Duration::from_millis(30))
        .with_jitter(0.0)
        .with_initial_sampler(initial)
        .with_request_timeout(Duration::from_millis(500))
        .with_max_response_bytes(4096)
        .with_max_operations(3)
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

/// (kept, the `th` values seen on kept spans) over `n` roots named `name`.
fn run(p: &TracerProvider, name: &'static str, n: usize) -> (usize, Vec<Option<String>>) {
    let t = p.tracer("t");
    let mut kept = 0;
    let mut ths = Vec::new();
    for _ in 0..n {
        let span = t.span_builder(name).as_root().start();
        let sc = span.span_context();
        let th = OtState::of(sc.trace_state()).th.map(|t| t.to_th());
        if sc.is_sampled() {
            kept += 1;
            if !ths.contains(&th) {
                ths.push(th);
            }
        } else {
            assert_eq!(th, None, "th on a dropped span");
        }
    }
    (kept, ths)
}

fn within_5_sigma(kept: usize, n: usize, p: f64) -> bool {
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (kept as f64 - n as f64 * p).abs() < 5.0 * sigma
}

#[test]
fn probabilistic_strategy_is_fetched_and_applied_consistently() {
    let server = Server::start(Reply::Json(
        200,
        r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.5}}"#.into(),
    ));
    let s = sampler(&server, Sampler::AlwaysOff);
    wait_until("a fetch", || s.stats().fetches >= 1);
    assert_eq!(
        server.requests.lock().unwrap()[0],
        "GET /api/sampling?service=checkout HTTP/1.1"
    );
    assert!(
        s.description().contains("probabilistic: 0.5"),
        "{}",
        s.description()
    );
    let p = provider(&s);
    let (kept, ths) = run(&p, "op", 20_000);
    assert!(within_5_sigma(kept, 20_000, 0.5), "{kept}");
    assert_eq!(ths, [Some("8".to_string())]);
}

#[test]
fn per_operation_probabilities_and_lower_bound() {
    let server = Server::start(Reply::Json(
        200,
        r#"{"strategyType":"PROBABILISTIC","operationSampling":{
            "defaultSamplingProbability":0.25,
            "perOperationStrategies":[
              {"operation":"always","probabilisticSampling":{"samplingRate":1}},
              {"operation":"never","probabilisticSampling":{}}]}}"#
            .into(),
    ));
    let s = sampler(&server, Sampler::AlwaysOff);
    wait_until("a fetch", || s.stats().fetches >= 1);
    let p = provider(&s);
    assert_eq!(run(&p, "always", 2000), (2000, vec![Some("0".into())]));
    assert_eq!(run(&p, "never", 2000).0, 0);
    let (kept, ths) = run(&p, "other", 20_000);
    assert!(within_5_sigma(kept, 20_000, 0.25), "{kept}");
    assert_eq!(ths, [Some("c".to_string())]);

    // A lower bound of 2 traces/s: an operation at probability 0 still gets
    // traces, kept at a probability the bound raises (2 / the spans seen in
    // the window) and recorded in `th`, so their adjusted counts are known.
    server.set(Reply::Json(
        200,
        r#"{"operationSampling":{"defaultSamplingProbability":0,
            "defaultLowerBoundTracesPerSecond":2,
            "perOperationStrategies":[{"operation":"never","probabilisticSampling":{"samplingRate":0}}]}}"#
            .into(),
    ));
    let before = s.stats().fetches;
    wait_until("the new strategy", || s.stats().fetches >= before + 2);
    let started = Instant::now();
    // Strategy changes reach spans started on other threads too.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || run(&p, "never", 1000))
        })
        .collect();
    let mut total = 0;
    for h in handles {
        let (kept, ths) = h.join().unwrap();
        assert!(ths.iter().all(Option::is_some), "{ths:?}");
        for th in ths.iter().flatten() {
            let t = ferrotrace::trace::consistent::Threshold::parse_th(th).unwrap();
            assert!(t.probability() > 0.0 && t.probability() <= 1.0, "{th}");
        }
        total += kept;
    }
    // Each one-second window keeps about 2: the first window of a burst,
    // with nothing seen before, 2 × (1 + ln(n / 2)) at most in expectation
    // (n = 4000 here: under 18), later ones 2.
    let windows = 1 + started.elapsed().as_secs_f64().ceil() as usize;
    let allowed = windows * 30;
    assert!((1..=allowed).contains(&total), "{total} > {allowed}");
}

#[test]
fn rate_limiting_strategy() {
    let server = Server::start(Reply::Json(
        200,
        r#"{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":5}}"#
            .into(),
    ));
    let s = RemoteSampler::builder("checkout")
        .with_endpoint(server.endpoint())
        .with_polling_interval(Duration::from_secs(3600))
        .with_initial_sampler(Sampler::AlwaysOff)
        .build()
        .unwrap();
    wait_until("a fetch", || s.stats().fetches >= 1);
    let p = provider(&s);
    let started = Instant::now();
    let (kept, ths) = run(&p, "op", 5000);
    let allowed = 5 + (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!((5..=allowed).contains(&kept), "{kept} > {allowed}");
    assert_eq!(ths, [None]);
}

fn reported(url: &str) -> Vec<String> {
    static_seen()
        .lock()
        .unwrap()
        .iter()
        .filter(|(u, _)| u == url)
        .map(|(_, e)| e.clone())
        .collect()
}

/// Remote sampling failures the diagnostics hook received, as (url, error).
fn static_seen() -> &'static Mutex<Vec<(String, String)>> {
    static SEEN: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        diagnostics::set_hook(|d: &Diagnostic| {
            if let Diagnostic::RemoteSamplingFailed { url, error, .. } = d {
                static_seen()
                    .lock()
                    .unwrap()
                    .push((url.clone(), error.clone()));
            }
        });
        Mutex::new(Vec::new())
    })
}

#[test]
fn bad_responses_are_counted_and_keep_the_last_strategy() {
    let _ = static_seen();
    let good = r#"{"probabilisticSampling":{"samplingRate":1}}"#;
    let server = Server::start(Reply::Json(200, good.into()));
    let s = sampler(&server, Sampler::AlwaysOff);
    wait_until("a fetch", || s.stats().fetches >= 1);
    let p = provider(&s);
    let padded = format!(
        r#"{{"probabilisticSampling":{{"samplingRate":0}},"pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let too_many_ops = r#"{"operationSampling":{"defaultSamplingProbability":1,"perOperationStrategies":[
        {"operation":"a"},{"operation":"b"},{"operation":"c"},{"operation":"d"},{"operation":"e"}]}}"#;
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::Json(200, "{not json".into()), "not valid JSON"),
        (
            Reply::Json(
                200,
                r#"{"probabilisticSampling":{"samplingRate":2}}"#.into(),
            ),
            "probabilisticSampling.samplingRate: expected a probability in [0, 1], got 2.0",
        ),
        (Reply::Json(200, "[".repeat(3000)), "not valid JSON"),
        (
            Reply::Json(200, "{}".into()),
            "none of probabilisticSampling",
        ),
        (Reply::Json(500, "boom".into()), "HTTP 500"),
        (Reply::Json(404, "".into()), "HTTP 404"),
        (Reply::Json(200, padded), "larger than 4096 bytes"),
        (Reply::Endless, "larger than 4096 bytes"),
        (Reply::Hang, "no complete response within 500ms"),
    ];
    for (reply, want) in cases {
        let failures = s.stats().fetch_failures;
        let hang = matches!(reply, Reply::Hang);
        server.set(reply);
        if hang {
            // The poller is stuck in a request: span creation goes on.
            wait_until("a hanging request", || {
                server.hanging.load(Ordering::SeqCst) > 0
            });
            assert_eq!(run(&p, "op", 1000).0, 1000);
            assert!(server.hanging.load(Ordering::SeqCst) > 0);
        }
        wait_until(want, || s.stats().fetch_failures > failures);
        let err = s.stats().last_error.unwrap_or_default();
        assert!(err.contains(want), "want {want:?}, got {err:?}");
        // The last good strategy (probability 1, th:0) is still in force.
        assert_eq!(run(&p, "op", 200), (200, vec![Some("0".to_string())]));
    }
    assert!(
        reported(s.url()).iter().any(|e| e.contains("HTTP 500")),
        "failures reach the diagnostics hook"
    );
    // Recovery, and the operations cap (3) counted.
    server.set(Reply::Json(200, too_many_ops.into()));
    let fetches = s.stats().fetches;
    wait_until("recovery", || s.stats().fetches > fetches);
    assert!(s.stats().operations_dropped >= 2);
    assert_eq!(s.stats().last_error, None);
}

#[test]
fn unreachable_endpoint_keeps_the_initial_sampler() {
    let _ = static_seen();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = RemoteSampler::builder("checkout")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_polling_interval(Duration::from_millis(20))
        .with_initial_sampler(Sampler::consistent_probability(1.0))
        .build()
        .unwrap();
    wait_until("failures", || s.stats().fetch_failures >= 2);
    assert!(s.stats().last_error.unwrap().contains("request failed"));
    assert_eq!(s.stats().fetches, 0);
    let p = provider(&s);
    assert_eq!(run(&p, "op", 100), (100, vec![Some("0".to_string())]));
    assert!(!reported(s.url()).is_empty());
}

#[test]
fn invalid_endpoints_are_rejected_with_a_reason() {
    for (e, want) in [
        ("https://collector:5778", "https is not supported"),
        ("collector:5778", "expected http://host:port"),
    ] {
        let err = RemoteSampler::builder("s")
            .with_endpoint(e)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{e}: {err}");
    }
}

#[test]
fn environment_selects_the_remote_sampler_for_the_providers_service() {
    let server = Server::start(Reply::Json(
        200,
        r#"{"probabilisticSampling":{"samplingRate":1}}"#.into(),
    ));
    // Only this test reads these variables (the others pass their sampler in code).
    std::env::set_var("OTEL_TRACES_SAMPLER", "parentbased_jaeger_remote");
    std::env::set_var(
        "OTEL_TRACES_SAMPLER_ARG",
        format!(
            "endpoint={},pollingIntervalMs=40,initialSamplingRate=0",
            server.endpoint()
        ),
    );
    let p = TracerProvider::builder()
        .with_service_name("cart service")
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_unended_span_age(None)
        .build();
    std::env::remove_var("OTEL_TRACES_SAMPLER");
    std::env::remove_var("OTEL_TRACES_SAMPLER_ARG");
    wait_until("a request", || !server.requests.lock().unwrap().is_empty());
    assert_eq!(
        server.requests.lock().unwrap()[0],
        "GET /api/sampling?service=cart%20service HTTP/1.1"
    );
    // Once the strategy (probability 1) is in force, roots are kept with th:0.
    wait_until("the strategy", || run(&p, "op", 1).0 == 1);
    assert_eq!(run(&p, "op", 50), (50, vec![Some("0".to_string())]));
    // The parsed configuration.
    let s = Sampler::from_config(
        "jaeger_remote",
        Some("endpoint=http://127.0.0.1:9/x,pollingIntervalMs=100000"),
    );
    let Sampler::JaegerRemote(r) = s else {
        panic!("{s:?}")
    };
    assert_eq!(r.url(), "http://127.0.0.1:9/x?service=unknown_service");
}

/// The HTTP server layer asks the remote sampler with the span's name (the
/// route) before building its attributes: requests to the route the
/// strategy keeps are recorded with the route's name and their attributes,
/// requests to a route at probability 0 are not, and the `http.route` found
/// for the name is the attribute the recorded span carries.
#[test]
fn http_server_root_spans_are_decided_by_route_name() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let server = Server::start(Reply::Json(
        200,
        r#"{"operationSampling":{"defaultSamplingProbability":0,
            "perOperationStrategies":[
              {"operation":"GET /users/{id}","probabilisticSampling":{"samplingRate":1}},
              {"operation":"GET /health","probabilisticSampling":{"samplingRate":0}}]}}"#
            .into(),
    ));
    let s = sampler(&server, Sampler::AlwaysOff);
    wait_until("a fetch", || s.stats().fetches >= 1);
    let exporter = InMemorySpanExporter::default();
    let p = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::parent_based(Sampler::JaegerRemote(s.clone())))
        .with_unended_span_age(None)
        .build();
    let router = axum::Router::new()
        .route("/users/{id}", axum::routing::get(|| async { "user" }))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route("/other", axum::routing::get(|| async { "other" }))
        .layer(ferrotrace::integrations::http::HttpServerLayer::new(
            p.tracer("t"),
        ))
        .with_state(());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..30 {
            for path in ["/users/7", "/health", "/other"] {
                let req = http::Request::get(format!("{path}?i={i}"))
                    .header("host", "api.example.com")
                    .body(axum::body::Body::empty())
                    .unwrap();
                let resp = router.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        }
    });
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), 30, "only the kept route's requests recorded");
    for span in &spans {
        assert_eq!(span.name, "GET /users/{id}");
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .and_then(|kv| match &kv.value {
                    ferrotrace::Value::String(v) => Some(v.as_str().to_string()),
                    _ => None,
                })
        };
        assert_eq!(attr("http.route").as_deref(), Some("/users/{id}"));
        assert_eq!(attr("url.path").as_deref(), Some("/users/7"));
        assert_eq!(attr("http.request.method").as_deref(), Some("GET"));
        let th = OtState::of(span.span_context.trace_state())
            .th
            .map(|t| t.to_th());
        assert_eq!(
            th.as_deref(),
            Some("0"),
            "a kept root records its threshold"
        );
    }
}
