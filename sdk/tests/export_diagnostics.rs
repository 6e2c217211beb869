//! Export problems are loud while the service runs: failed exports (naming the
//! endpoint, the protocol and the likely fix), circuit-breaker transitions and
//! queue-full drops reach the diagnostics hook, against real loopback servers.
#![cfg(all(feature = "otlp-grpc", feature = "otlp-http"))]

mod export_support;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use export_support::{
    dead_endpoint, rich_batch, small_span, wait_until, GrpcServer, HttpAnswer, HttpServer,
};
use ferrotrace::export::batch::BatchSpanProcessor;
use ferrotrace::export::breaker::BreakerConfig;
use ferrotrace::export::otlp::{OtlpExporter, Protocol};
use ferrotrace::export::retry::RetryPolicy;
use ferrotrace::export::stats::{BreakerState, ExportStats};
use ferrotrace::export::{ExportError, ExportResult, SpanData, SpanExporter, SpanProcessor};
use ferrotrace::trace::diagnostics::{self, Diagnostic, DropReason};

/// The hook is process-wide: tests that install it run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Captured {
    seen: Arc<Mutex<Vec<Diagnostic>>>,
    _serial: MutexGuard<'static, ()>,
}

impl Captured {
    fn install() -> Captured {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let seen: Arc<Mutex<Vec<Diagnostic>>> = Arc::default();
        let s = seen.clone();
        diagnostics::set_hook(move |d| s.lock().unwrap().push(d.clone()));
        Captured {
            seen,
            _serial: serial,
        }
    }
    fn all(&self) -> Vec<Diagnostic> {
        self.seen.lock().unwrap().clone()
    }
    fn failures(&self) -> Vec<diagnostics::ExportFailure> {
        self.all()
            .into_iter()
            .filter_map(|d| match d {
                Diagnostic::ExportFailed(f) => Some(f),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        diagnostics::reset_hook();
    }
}

fn exporter(protocol: Protocol, endpoint: String) -> OtlpExporter {
    OtlpExporter::builder_from_env_vars(|_| None)
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .with_retry_policy(RetryPolicy::none())
        .with_stats(ExportStats::new())
        .build()
        .unwrap()
}

#[test]
fn http_sent_to_a_grpc_server_names_endpoint_protocol_and_fix() {
    let cap = Captured::install();
    let grpc = GrpcServer::start();
    let endpoint = format!("{}/v1/traces", grpc.endpoint());
    let e = exporter(Protocol::HttpProtobuf, endpoint.clone());
    assert!(e.export(rich_batch()).is_err());
    let f = cap.failures();
    assert_eq!(f.len(), 1, "{:?}", cap.all());
    assert_eq!(f[0].endpoint, endpoint);
    assert_eq!(f[0].protocol, "http/protobuf");
    assert_eq!(f[0].spans, rich_batch().len() as u64);
    let fix = f[0].likely_fix.clone().unwrap_or_default();
    assert!(
        fix.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        "error {:?} gave fix {fix:?}",
        f[0].error
    );
    let line = Diagnostic::ExportFailed(f[0].clone()).to_string();
    println!("{line}");
    assert!(
        line.contains(&endpoint) && line.contains("(http/protobuf)") && line.contains("Likely fix"),
        "{line}"
    );
}

#[test]
fn grpc_sent_to_an_http_server_names_the_fix() {
    let cap = Captured::install();
    let http = HttpServer::start();
    let endpoint = format!("http://{}", http.addr);
    let e = exporter(Protocol::Grpc, endpoint.clone());
    assert!(e.export(rich_batch()).is_err());
    let f = cap.failures();
    assert_eq!(f.len(), 1, "{:?}", cap.all());
    assert_eq!(
        (f[0].endpoint.as_str(), f[0].protocol.as_str()),
        (endpoint.as_str(), "grpc")
    );
    let fix = f[0].likely_fix.clone().unwrap_or_default();
    assert!(
        fix.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"),
        "error {:?} gave fix {fix:?}",
        f[0].error
    );
}

#[test]
fn nothing_listening_says_so() {
    let cap = Captured::install();
    let dead = dead_endpoint();
    for p in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let e = exporter(p, format!("http://{dead}/v1/traces"));
        assert!(e.export(rich_batch()).is_err());
    }
    let f = cap.failures();
    assert_eq!(f.len(), 2);
    for f in f {
        let fix = f.likely_fix.clone().unwrap_or_default();
        assert!(fix.contains("nothing accepts connections"), "{f:?}");
    }
}

#[test]
fn breaker_transitions_are_reported() {
    let cap = Captured::install();
    let http = HttpServer::start();
    http.state.script.lock().push_back(HttpAnswer {
        status: 400,
        headers: Vec::new(),
        body: b"bad".to_vec(),
    });
    let e = OtlpExporter::builder_from_env_vars(|_| None)
        .with_protocol(Protocol::HttpProtobuf)
        .with_endpoint(http.endpoint())
        .with_retry_policy(RetryPolicy::none())
        .with_breaker(BreakerConfig {
            failure_threshold: 1,
            cooldown: Duration::from_millis(50),
        })
        .with_stats(ExportStats::new())
        .build()
        .unwrap();
    assert!(e.export(rich_batch()).is_err());
    // Open: rejected without a report per batch.
    assert!(e.export(rich_batch()).is_err());
    std::thread::sleep(Duration::from_millis(80));
    e.export(rich_batch()).unwrap();
    let states: Vec<BreakerState> = cap
        .all()
        .into_iter()
        .filter_map(|d| match d {
            Diagnostic::Breaker {
                state, endpoint, ..
            } => {
                assert_eq!(endpoint, http.endpoint());
                Some(state)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
    assert_eq!(
        cap.failures().len(),
        1,
        "the rejected batch is counted, not reported"
    );
}

/// An exporter that blocks until released, so the queue fills.
struct Stuck(crossbeam_channel::Receiver<()>);
impl SpanExporter for Stuck {
    fn export(&self, _batch: Vec<SpanData>) -> ExportResult {
        let _ = self.0.recv_timeout(Duration::from_secs(10));
        Ok(())
    }
}

#[test]
fn queue_full_drops_are_reported_in_aggregate() {
    let cap = Captured::install();
    let (release, rx) = crossbeam_channel::unbounded();
    let stats = ExportStats::new();
    let bsp = BatchSpanProcessor::builder(Stuck(rx))
        .with_max_queue_size(8)
        .with_max_export_batch_size(4)
        .with_scheduled_delay(Duration::from_millis(20))
        .with_stats(stats.clone())
        .build();
    for i in 0..200 {
        bsp.on_end(small_span(i));
    }
    let dropped = stats.snapshot().dropped_queue_full;
    assert!(dropped > 100, "{dropped}");
    let reported = || -> (u64, usize) {
        let mut sum = 0;
        let mut n = 0;
        for d in cap.all() {
            if let Diagnostic::SpansDropped {
                reason: DropReason::QueueFull,
                count,
                capacity,
            } = d
            {
                assert_eq!(capacity, 8);
                sum += count;
                n += 1;
            }
        }
        (sum, n)
    };
    assert!(wait_until(Duration::from_secs(5), || reported().0 == dropped));
    let (_, reports) = reported();
    assert!(
        reports < 10,
        "{reports} reports for {dropped} drops: aggregated, not per span"
    );
    for _ in 0..100 {
        let _ = release.send(());
    }
    bsp.shutdown(Duration::from_secs(5)).unwrap();
}

struct Failing;
impl SpanExporter for Failing {
    fn export(&self, _batch: Vec<SpanData>) -> ExportResult {
        Err(ExportError::Failed("disk full".into()))
    }
}

#[test]
fn exporters_without_their_own_report_are_reported_by_the_processor_and_otlp_once() {
    let cap = Captured::install();
    let bsp = BatchSpanProcessor::builder(Failing)
        .with_stats(ExportStats::new())
        .build();
    bsp.on_end(small_span(1));
    let _ = bsp.force_flush(Duration::from_secs(5));
    let generic: Vec<String> = cap
        .all()
        .into_iter()
        .filter_map(|d| match d {
            Diagnostic::Export(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        generic,
        vec!["batch span processor: export failed: disk full; 1 spans dropped".to_string()]
    );
    bsp.shutdown(Duration::from_secs(5)).unwrap();

    // The OTLP exporter reports itself; the processor does not repeat it.
    let dead = dead_endpoint();
    let bsp = BatchSpanProcessor::builder(exporter(
        Protocol::HttpProtobuf,
        format!("http://{dead}/v1/traces"),
    ))
    .with_stats(ExportStats::new())
    .build();
    bsp.on_end(small_span(2));
    let _ = bsp.force_flush(Duration::from_secs(10));
    let all = cap.all();
    assert_eq!(
        all.iter()
            .filter(|d| matches!(d, Diagnostic::ExportFailed(_)))
            .count(),
        1,
        "{all:?}"
    );
    assert_eq!(
        all.iter()
            .filter(|d| matches!(d, Diagnostic::Export(_)))
            .count(),
        1,
        "{all:?}"
    );
    bsp.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn the_level_filter_silences_diagnostics() {
    let cap = Captured::install();
    diagnostics::set_level(diagnostics::LevelFilter::Off);
    let dead = dead_endpoint();
    let e = exporter(Protocol::HttpProtobuf, format!("http://{dead}/v1/traces"));
    assert!(e.export(rich_batch()).is_err());
    diagnostics::set_level(diagnostics::LevelFilter::Max(diagnostics::Level::Info));
    assert!(cap.all().is_empty(), "{:?}", cap.all());
    assert!(e.export(rich_batch()).is_err());
    assert_eq!(cap.failures().len(), 1);
}
