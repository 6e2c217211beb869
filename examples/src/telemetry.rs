//! One tracer provider per demo service: its own `service.name`, exporting
//! through the SDK's OTLP exporter and batch span processor.

use std::time::Duration;

use ferrotrace::export::otlp::{ConfigError, OtlpExporter, OtlpExporterBuilder, Protocol};
use ferrotrace::export::{BatchSpanProcessor, ExportStats, InMemorySpanExporter};
use ferrotrace::trace::TracerProvider;

/// Where a service's spans go.
#[derive(Clone, Debug)]
pub enum Export {
    /// OTLP to a collector.
    Otlp {
        /// Collector base address, read like `OTEL_EXPORTER_OTLP_ENDPOINT`:
        /// for HTTP `/v1/traces` is appended (`http://localhost:4318` →
        /// `http://localhost:4318/v1/traces`), for gRPC it is used as-is.
        /// `None`: the protocol's default (`http://localhost:4317` for gRPC,
        /// `http://localhost:4318/v1/traces` for HTTP).
        endpoint: Option<String>,
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
                let exporter =
                    otlp_exporter_builder(OtlpExporter::builder(), endpoint.as_deref(), *protocol)
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

/// Applies the demo's `--collector` / `--otlp-protocol` options to `builder`:
/// the protocol always, the endpoint as a base address (see [`Export::Otlp`])
/// when one is given; otherwise the protocol's default applies.
pub fn otlp_exporter_builder(
    builder: OtlpExporterBuilder,
    endpoint: Option<&str>,
    protocol: Protocol,
) -> OtlpExporterBuilder {
    let builder = builder.with_protocol(protocol);
    match endpoint {
        Some(e) => builder.with_base_endpoint(e),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(endpoint: Option<&str>, protocol: Protocol) -> String {
        otlp_exporter_builder(
            OtlpExporter::builder_from_env_vars(|_| None),
            endpoint,
            protocol,
        )
        .config()
        .unwrap()
        .endpoint
    }

    #[test]
    fn the_default_collector_address_follows_the_protocol() {
        assert_eq!(resolved(None, Protocol::Grpc), "http://localhost:4317");
        for p in [Protocol::HttpProtobuf, Protocol::HttpJson] {
            assert_eq!(resolved(None, p), "http://localhost:4318/v1/traces");
        }
    }

    #[test]
    fn a_base_address_gets_the_traces_path_for_http_only() {
        let http = Protocol::HttpProtobuf;
        assert_eq!(
            resolved(Some("http://localhost:4318"), http),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            resolved(Some("http://collector:4318/"), http),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            resolved(Some("collector:4318"), Protocol::HttpJson),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            resolved(Some("http://collector:4317"), Protocol::Grpc),
            "http://collector:4317"
        );
    }
}
