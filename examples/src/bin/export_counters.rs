//! Prints the SDK's export counters while a service produces spans.
//!
//! ```text
//! cargo run -p ferrotrace-examples --bin export_counters -- [SECONDS]
//! ```
//!
//! Spans go through the batch span processor to the OTLP exporter configured
//! by the usual variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, ...; by default http/protobuf to
//! `localhost:4318`). With a collector running you see `exported` grow; without
//! one you see retries, failed exports and the circuit breaker opening, while
//! the producing loop keeps its pace.

use std::time::{Duration, Instant};

use ferrotrace::export::batch::BatchSpanProcessor;
use ferrotrace::export::otlp::OtlpExporter;
use ferrotrace::export::stats::ExportStats;
use ferrotrace::trace::TracerProvider;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("SECONDS must be a whole number, got {s:?}"))?,
        None => 5,
    };
    let exporter = OtlpExporter::builder().build()?;
    let config = exporter.config().clone();
    println!(
        "exporting with {:?} to {} (timeout {:?}, compression {:?})",
        config.protocol, config.endpoint, config.timeout, config.compression
    );
    let provider = TracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_service_name("export-counters-example")
        .build();
    let tracer = provider.tracer("export_counters");

    let stats = ExportStats::global();
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(1);
    let mut ended = 0u64;
    let mut slowest_burst = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(seconds) {
        // A burst of 1,000 spans every 10 ms: ~100k spans/s.
        let burst = Instant::now();
        for i in 0..1000 {
            let mut span = tracer.start("work");
            span.set_attribute("iteration", i as i64);
            span.end();
        }
        ended += 1000;
        slowest_burst = slowest_burst.max(burst.elapsed());
        if Instant::now() >= next_report {
            println!(
                "[{:>3}s] ended={ended} {}",
                start.elapsed().as_secs(),
                stats.snapshot()
            );
            next_report += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let flushed = provider.shutdown(Duration::from_secs(5));
    println!("shutdown: {flushed:?}");
    println!("final: ended={ended} {}", stats.snapshot());
    println!("slowest burst of 1,000 span ends: {slowest_burst:?}");
    Ok(())
}
