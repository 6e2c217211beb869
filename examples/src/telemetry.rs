//! One tracer provider per demo service: its own `service.name`, exporting
//! through the SDK's OTLP exporter and batch span processor.

use std::time::Duration;

use ferrotrace::export::otlp::{ConfigError, OtlpExporter, Protocol};
use ferrotrace::export::{BatchSpanProcessor, ExportStats, InMemorySpanExporter};
use ferrotrace::trace::TracerProvider;

/// Where a service's spans go.
#[derive(Clone, Debug)]
pub enum Export {
    /// OTLP to a collector (e.g. `http://localhost:4317` for gRPC).
    Otlp {
        /// Collector endpoint.
        endpoint: String,
        /// OTLP transport.
        protocol: Protocol,
    },
    /// Kept in memory (tests).
    InMemory(InMemorySpanExporter),
    /// Not recorded (context is still propagated).
    None,
}

/// A service's provider and its export counters.
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// The service's tracer provider.
    pub provider: TracerProvider,
    /// Export counters (OTLP only; zero otherwise).
    pub stats: ExportStats,
}

impl Telemetry {
    /// Builds the provider for `service`.
    pub fn new(service: &str, export: &Export) -> Result<Self, ConfigError> {
        let stats = ExportStats::new();
        let builder = TracerProvider::builder().with_service_name(service);
        let builder = match export {
            Export::Otlp { endpoint, protocol } => {
                let exporter = OtlpExporter::builder()
                    .with_protocol(*protocol)
                    .with_endpoint(endpoint.clone())
                    .with_stats(stats.clone())
                    .build()?;
                // A short delay so the demo's traces show up in the UI quickly.
                let processor = BatchSpanProcessor::builder(exporter)
                    .with_scheduled_delay(Duration::from_millis(500))
                    .with_stats(stats.clone())
                    .build();
                builder.with_span_processor(processor)
            }
            Export::InMemory(exporter) => builder.with_simple_exporter(exporter.clone()),
            Export::None => builder,
        };
        Ok(Telemetry {
            provider: builder.build(),
            stats,
        })
    }
}
