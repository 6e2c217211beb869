//! Benchmarks live in `benches/benches/` (and the `hotpath` example); this
//! library holds only what both measure alike.

/// The remote parent the HTTP client measurements run under (the `overhead`
/// bench's `http_client` group and `hotpath http_client_*`): a fixed trace
/// and span id, sampled or not by `flags`.
pub fn remote_parent(flags: ferrotrace::TraceFlags) -> ferrotrace::Context {
    ferrotrace::Context::new().with_span_context(ferrotrace::SpanContext::new(
        ferrotrace::TraceId::from_bytes([7; 16]),
        ferrotrace::SpanId::from_bytes([7; 8]),
        flags,
        true,
        ferrotrace::TraceState::NONE,
    ))
}

/// Serves one per-operation Jaeger sampling strategy to every request on a
/// loopback port and returns its base URL: operations `op` at 1% and `keep`
/// at 100%, default 1% (every field `opentelemetry_sdk`'s parser requires).
/// The remote sampler measurements (`sdk_sampling`, `overhead sampling`,
/// `hotpath root_remote_*`) all fetch it.
pub fn strategy_server() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        let body = r#"{"strategyType":"PROBABILISTIC",
            "probabilisticSampling":{"samplingRate":0.01},
            "operationSampling":{"defaultSamplingProbability":0.01,
            "defaultLowerBoundTracesPerSecond":0,"defaultUpperBoundTracesPerSecond":0,
            "perOperationStrategies":[
              {"operation":"op","probabilisticSampling":{"samplingRate":0.01}},
              {"operation":"keep","probabilisticSampling":{"samplingRate":1}}]}}"#;
        for conn in listener.incoming().flatten() {
            let Ok(read_half) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// A Jaeger remote sampler of service `service` that has fetched the
/// strategy of [`strategy_server`] once (polling again only after an hour,
/// so a measurement never sees a strategy change).
pub fn remote_sampler(service: &str) -> ferrotrace::trace::remote::RemoteSampler {
    use std::time::{Duration, Instant};
    let r = ferrotrace::trace::remote::RemoteSampler::builder(service)
        .with_endpoint(strategy_server())
        .with_polling_interval(Duration::from_secs(3600))
        .with_initial_sampler(ferrotrace::trace::Sampler::AlwaysOff)
        .build()
        .expect("remote sampler");
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.stats().fetches == 0 {
        assert!(Instant::now() < deadline, "no strategy fetched in 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    r
}
