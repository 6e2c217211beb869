//! Delivery under faults, against real loopback servers: retries for the
//! retryable outcomes only, server-requested delays, the circuit breaker, and
//! timeouts that hold against a server that never answers.
#![cfg(all(feature = "otlp-grpc", feature = "otlp-http"))]

mod export_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use export_support::{
    dead_endpoint, rich_batch, wait_until, GrpcServer, HangingServer, HttpAnswer, HttpServer,
};
use ferrotrace::export::batch::BatchSpanProcessor;
use ferrotrace::export::breaker::BreakerConfig;
use ferrotrace::export::otlp::rpc::encode_retry_status;
use ferrotrace::export::otlp::{OtlpExporter, OtlpExporterBuilder, Protocol};
use ferrotrace::export::retry::RetryPolicy;
use ferrotrace::export::stats::{BreakerState, ExportStats};
use ferrotrace::export::{ExportError, SpanExporter, SpanProcessor};
use ferrotrace::trace::{Sampler, TracerProvider};

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

fn builder(protocol: Protocol, endpoint: String, stats: &ExportStats) -> OtlpExporterBuilder {
    OtlpExporter::builder_from_env_vars(|_| None)
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .with_retry_policy(fast_retry())
        .with_stats(stats.clone())
}

fn answer(status: u16, headers: &[(&'static str, &str)]) -> HttpAnswer {
    HttpAnswer {
        status,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: b"try later".to_vec(),
    }
}

#[test]
fn grpc_unavailable_twice_then_ok_delivers_the_batch_exactly_once() {
    let server = GrpcServer::start();
    server.state.script.lock().extend([
        tonic::Status::unavailable("warming up"),
        tonic::Status::unavailable("still warming up"),
    ]);
    let stats = ExportStats::new();
    let exp = builder(Protocol::Grpc, server.endpoint(), &stats)
        .build()
        .unwrap();
    let bsp = BatchSpanProcessor::builder(exp)
        .with_stats(stats.clone())
        .build();
    for s in rich_batch() {
        bsp.on_end(s);
    }
    bsp.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(server.state.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        server.state.received.lock().len(),
        1,
        "delivered exactly once"
    );
    let snap = stats.snapshot();
    assert_eq!(snap.retries, 2);
    assert_eq!(snap.export_attempts, 3);
    assert_eq!(snap.exported, 5);
    assert_eq!(snap.dropped_export_failed, 0);
}

#[test]
fn grpc_every_listed_code_is_retried_and_others_are_not() {
    for status in [
        tonic::Status::deadline_exceeded("x"),
        tonic::Status::aborted("x"),
        tonic::Status::out_of_range("x"),
        tonic::Status::cancelled("x"),
        tonic::Status::data_loss("x"),
    ] {
        let server = GrpcServer::start();
        server.state.script.lock().push_back(status.clone());
        let stats = ExportStats::new();
        let exp = builder(Protocol::Grpc, server.endpoint(), &stats)
            .build()
            .unwrap();
        exp.export(rich_batch())
            .unwrap_or_else(|e| panic!("{status:?}: {e}"));
        assert_eq!(server.state.calls.load(Ordering::SeqCst), 2, "{status:?}");
    }
    for status in [
        tonic::Status::invalid_argument("bad"),
        tonic::Status::unauthenticated("who"),
        tonic::Status::resource_exhausted("full, no hint"),
    ] {
        let server = GrpcServer::start();
        server.state.script.lock().push_back(status.clone());
        let stats = ExportStats::new();
        let exp = builder(Protocol::Grpc, server.endpoint(), &stats)
            .build()
            .unwrap();
        assert!(exp.export(rich_batch()).is_err(), "{status:?}");
        assert_eq!(server.state.calls.load(Ordering::SeqCst), 1, "{status:?}");
        assert_eq!(stats.snapshot().retries, 0);
    }
}

#[test]
fn grpc_resource_exhausted_with_retry_info_waits_the_requested_delay() {
    let server = GrpcServer::start();
    let details = encode_retry_status(8, "queue full", Duration::from_millis(300));
    server
        .state
        .script
        .lock()
        .push_back(tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            "queue full",
            details.into(),
        ));
    let stats = ExportStats::new();
    let exp = builder(Protocol::Grpc, server.endpoint(), &stats)
        .build()
        .unwrap();
    let t = Instant::now();
    exp.export(rich_batch()).unwrap();
    // Lower bound only: the server asked for 300 ms, the default backoff would be ~100 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.state.calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.state.received.lock().len(), 1);
}

#[test]
fn http_400_is_not_retried_and_the_drop_is_counted() {
    for protocol in [Protocol::HttpProtobuf, Protocol::HttpJson] {
        let server = HttpServer::start();
        server.state.script.lock().push_back(answer(400, &[]));
        let stats = ExportStats::new();
        let exp = builder(protocol, server.endpoint(), &stats)
            .build()
            .unwrap();
        let bsp = BatchSpanProcessor::builder(exp)
            .with_stats(stats.clone())
            .build();
        for s in rich_batch() {
            bsp.on_end(s);
        }
        let r = bsp.force_flush(Duration::from_secs(10));
        assert!(
            matches!(&r, Err(ExportError::Failed(m)) if m.contains("HTTP 400")),
            "{r:?}"
        );
        bsp.shutdown(Duration::from_secs(10)).unwrap();
        assert_eq!(server.state.calls.load(Ordering::SeqCst), 1, "no retry");
        let snap = stats.snapshot();
        assert_eq!(snap.dropped_export_failed, 5);
        assert_eq!(snap.retries, 0);
        assert_eq!(snap.exported, 0);
        assert!(snap.last_error.unwrap().contains("try later"));
    }
}

#[test]
fn http_retryable_statuses_are_retried() {
    let server = HttpServer::start();
    server
        .state
        .script
        .lock()
        .extend([answer(429, &[]), answer(502, &[])]);
    let stats = ExportStats::new();
    let exp = builder(Protocol::HttpProtobuf, server.endpoint(), &stats)
        .build()
        .unwrap();
    exp.export(rich_batch()).unwrap();
    server
        .state
        .script
        .lock()
        .extend([answer(503, &[]), answer(504, &[])]);
    exp.export(rich_batch()).unwrap();
    assert_eq!(server.state.calls.load(Ordering::SeqCst), 6);
    assert_eq!(server.state.received.lock().len(), 2);
    assert_eq!(stats.snapshot().retries, 4);
}

#[test]
fn http_retry_after_is_honoured() {
    let server = HttpServer::start();
    server
        .state
        .script
        .lock()
        .push_back(answer(503, &[("retry-after", "1")]));
    let stats = ExportStats::new();
    let exp = builder(Protocol::HttpJson, server.endpoint(), &stats)
        .build()
        .unwrap();
    let t = Instant::now();
    exp.export(rich_batch()).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.state.received.lock().len(), 1);
}

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        MON[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[test]
fn http_retry_after_date_is_honoured_beyond_max_backoff() {
    let server = HttpServer::start();
    // Two seconds ahead; the date has whole seconds, so the wait is 1–2 s.
    let date = http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    server
        .state
        .script
        .lock()
        .push_back(answer(429, &[("retry-after", &date)]));
    let stats = ExportStats::new();
    let exp = builder(Protocol::HttpProtobuf, server.endpoint(), &stats)
        .with_retry_policy(RetryPolicy {
            // Far below the server's delay: it must not shorten it.
            max_backoff: Duration::from_millis(20),
            ..fast_retry()
        })
        .build()
        .unwrap();
    let t = Instant::now();
    exp.export(rich_batch()).unwrap();
    let elapsed = t.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "{date}: {elapsed:?}");
    assert_eq!(server.state.calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.state.received.lock().len(), 1);
    assert_eq!(stats.snapshot().retries, 1);
}

#[test]
fn a_retry_after_past_the_export_timeout_drops_the_batch_at_once() {
    for retry_after in [
        "30".to_string(),
        http_date(std::time::SystemTime::now() + Duration::from_secs(60)),
        "99999999999999999999999".to_string(),
    ] {
        let server = HttpServer::start();
        server
            .state
            .script
            .lock()
            .push_back(answer(503, &[("retry-after", &retry_after)]));
        let stats = ExportStats::new();
        let exp = builder(Protocol::HttpProtobuf, server.endpoint(), &stats)
            .with_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let bsp = BatchSpanProcessor::builder(exp)
            .with_stats(stats.clone())
            .build();
        for s in rich_batch() {
            bsp.on_end(s);
        }
        let t = Instant::now();
        let r = bsp.force_flush(Duration::from_secs(10));
        // Neither waited for nor retried after max_backoff (5 s): given up at once.
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            matches!(&r, Err(ExportError::Failed(m)) if m.contains("server asked to retry in")
                && m.contains("past the export timeout")),
            "{retry_after}: {r:?}"
        );
        bsp.shutdown(Duration::from_secs(10)).unwrap();
        assert_eq!(server.state.calls.load(Ordering::SeqCst), 1, "no retry");
        let snap = stats.snapshot();
        assert_eq!(snap.dropped_export_failed, 5, "{snap}");
        assert_eq!(snap.retries, 0);
        assert_eq!(snap.exported, 0);
    }
}

#[test]
fn retries_stop_after_three_attempts() {
    let server = HttpServer::start();
    server
        .state
        .script
        .lock()
        .extend((0..5).map(|_| answer(503, &[])));
    let stats = ExportStats::new();
    let exp = builder(Protocol::HttpProtobuf, server.endpoint(), &stats)
        .build()
        .unwrap();
    let r = exp.export(rich_batch());
    assert!(
        matches!(&r, Err(ExportError::Failed(m)) if m.contains("gave up after 3 attempts")),
        "{r:?}"
    );
    assert_eq!(server.state.calls.load(Ordering::SeqCst), 3);
    assert_eq!(stats.snapshot().retries, 2);
}

/// Median and 99th percentile.
fn p50_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

#[test]
fn a_down_server_opens_the_breaker_and_span_end_is_unaffected() {
    // Two applications with the same pipeline, one exporting to a healthy
    // server (the baseline), one to a port nobody listens on.
    let healthy_server = GrpcServer::start();
    let pipeline = |endpoint: String, stats: &ExportStats| {
        let exp = builder(Protocol::Grpc, endpoint, stats)
            .with_retry_policy(RetryPolicy::none())
            .with_breaker(BreakerConfig {
                failure_threshold: 3,
                cooldown: Duration::from_secs(3600),
            })
            .build()
            .unwrap();
        let bsp = BatchSpanProcessor::builder(exp)
            .with_max_export_batch_size(10)
            .with_max_queue_size(100)
            .with_scheduled_delay(Duration::from_millis(20))
            .with_stats(stats.clone())
            .build();
        TracerProvider::builder()
            .with_span_processor(bsp)
            .with_sampler(Sampler::AlwaysOn)
            .with_unended_span_age(None)
            .build()
    };
    let (down_stats, ok_stats) = (ExportStats::new(), ExportStats::new());
    let down = pipeline(format!("http://{}", dead_endpoint()), &down_stats);
    let healthy = pipeline(healthy_server.endpoint(), &ok_stats);
    let (down_tracer, ok_tracer) = (down.tracer("app"), healthy.tracer("app"));

    // End spans until the breaker opens.
    let mut ended_down = 0u64;
    let opened = wait_until(Duration::from_secs(20), || {
        for _ in 0..10 {
            down_tracer.start("warm-up").end();
            ended_down += 1;
        }
        down_stats.breaker_state() == BreakerState::Open
    });
    assert!(opened, "{}", down_stats.snapshot());
    let attempts_when_opened = down_stats.snapshot().export_attempts;
    assert_eq!(attempts_when_opened, 3);

    // With the breaker open, time only `span.end()` in both applications,
    // interleaved (alternating which goes first) so both see the same load
    // from other processes and tests.
    let n = 20_000usize;
    let (mut lat_down, mut lat_ok) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let timed_end = |mut span: ferrotrace::trace::Span, out: &mut Vec<Duration>| {
        let t = Instant::now();
        span.end();
        out.push(t.elapsed());
    };
    for i in 0..n {
        let mut a = down_tracer.start("work");
        a.set_attribute("i", i as i64);
        let mut b = ok_tracer.start("work");
        b.set_attribute("i", i as i64);
        if i % 2 == 0 {
            timed_end(a, &mut lat_down);
            timed_end(b, &mut lat_ok);
        } else {
            timed_end(b, &mut lat_ok);
            timed_end(a, &mut lat_down);
        }
    }
    ended_down += n as u64;
    let ((down_p50, down_p99), (ok_p50, ok_p99)) = (p50_p99(lat_down), p50_p99(lat_ok));
    let report = format!(
        "span.end(): down server p50 {down_p50:?} p99 {down_p99:?}; healthy p50 {ok_p50:?} p99 {ok_p99:?}"
    );
    println!("{report}");

    down.force_flush(Duration::from_secs(10)).ok();
    let snap = down_stats.snapshot();
    assert_eq!(snap.export_attempts, attempts_when_opened, "{snap}");
    assert!(snap.dropped_breaker_open > 0, "{snap}");
    assert_eq!(snap.breaker_opened, 1);
    // Every span is accounted for: exported, dropped on a full queue, or dropped after a failed export.
    down.shutdown(Duration::from_secs(10)).ok();
    let snap = down_stats.snapshot();
    assert_eq!(
        snap.exported + snap.dropped_queue_full + snap.dropped_export_failed,
        ended_down,
        "{snap}"
    );
    healthy.shutdown(Duration::from_secs(10)).ok();
    let ok_snap = ok_stats.snapshot();
    assert!(ok_snap.exported > 0, "{ok_snap}");
    assert_eq!(ok_snap.breaker_opened, 0, "{ok_snap}");

    // Generous multiples of the baseline measured in the same run: a span.end()
    // that waited on the exporter (a connect attempt, a lock held during
    // export) would cost tens of microseconds or more on every call.
    assert!(
        down_p50 <= ok_p50 * 5 + Duration::from_micros(10),
        "median: {report}"
    );
    assert!(
        down_p99 <= ok_p99 * 10 + Duration::from_millis(1),
        "p99: {report}"
    );
}

#[test]
fn after_the_cooldown_one_probe_closes_the_breaker() {
    let server = HttpServer::start();
    server
        .state
        .script
        .lock()
        .extend([answer(503, &[]), answer(503, &[])]);
    let stats = ExportStats::new();
    let exp = builder(Protocol::HttpProtobuf, server.endpoint(), &stats)
        .with_retry_policy(RetryPolicy::none())
        .with_breaker(BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_millis(300),
        })
        .build()
        .unwrap();
    assert!(exp.export(rich_batch()).is_err());
    assert!(exp.export(rich_batch()).is_err());
    assert_eq!(stats.breaker_state(), BreakerState::Open);
    let r = exp.export(rich_batch());
    assert!(
        matches!(&r, Err(ExportError::Failed(m)) if m.contains("circuit breaker open")),
        "{r:?}"
    );
    assert_eq!(
        server.state.calls.load(Ordering::SeqCst),
        2,
        "no network while open"
    );
    assert_eq!(stats.snapshot().dropped_breaker_open, 5);
    std::thread::sleep(Duration::from_millis(400));
    exp.export(rich_batch()).expect("probe succeeds");
    assert_eq!(stats.breaker_state(), BreakerState::Closed);
    assert_eq!(server.state.calls.load(Ordering::SeqCst), 3);
    exp.export(rich_batch()).unwrap();
    assert_eq!(server.state.received.lock().len(), 2);
}

#[test]
fn a_hanging_server_does_not_hang_shutdown_beyond_its_timeout() {
    let hang = HangingServer::start();
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let stats = ExportStats::new();
        let endpoint = match protocol {
            Protocol::Grpc => format!("http://{}", hang.addr),
            _ => format!("http://{}/v1/traces", hang.addr),
        };
        let exp = builder(protocol, endpoint, &stats)
            .with_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let bsp = BatchSpanProcessor::builder(exp)
            .with_stats(stats.clone())
            .build();
        for s in rich_batch() {
            bsp.on_end(s);
        }
        let t = Instant::now();
        let r = bsp.shutdown(Duration::from_millis(500));
        assert!(
            matches!(r, Err(ExportError::Timeout(_))),
            "{protocol:?}: {r:?}"
        );
        // Generous bound on a 500 ms timeout.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}

#[test]
fn the_export_timeout_bounds_an_export_to_a_hanging_server() {
    let hang = HangingServer::start();
    let stats = ExportStats::new();
    let exp = builder(
        Protocol::HttpJson,
        format!("http://{}/v1/traces", hang.addr),
        &stats,
    )
    .with_timeout(Duration::from_millis(300))
    .build()
    .unwrap();
    let t = Instant::now();
    let r = exp.export(rich_batch());
    assert!(
        matches!(&r, Err(ExportError::Failed(m)) if m.contains("timed out")),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
