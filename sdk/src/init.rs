//! One-call setup from the environment: [`init`], [`builder`] and the
//! guard they return (the variables read are listed on [`init`]).

use std::time::Duration;

use crate::export::{ConsoleExporter, ExportResult, SimpleSpanProcessor, SpanProcessor};
use crate::propagation::global::set_text_map_propagator;
use crate::propagation::TextMapPropagator;
use crate::resource::Resource;
use crate::trace::diagnostics::{self, Diagnostic};
use crate::trace::{Sampler, TracerProvider};

/// How long the guard's drop waits for the final flush by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go (`OTEL_TRACES_EXPORTER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TracesExporter {
    /// OTLP through the batch span processor (features `otlp-http` / `otlp-grpc`).
    Otlp,
    /// One line per span on stdout, through the simple processor.
    Console,
}

impl TracesExporter {
    /// Parses an `OTEL_TRACES_EXPORTER` value: the exporters named, in order,
    /// duplicates removed; `none` (alone) means none. Unknown names are
    /// returned separately so the caller can report them.
    pub fn parse_list(spec: &str) -> (Vec<TracesExporter>, Vec<String>) {
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        for name in spec.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let e = match name.to_ascii_lowercase().as_str() {
                "otlp" => TracesExporter::Otlp,
                // `logging` is the older name some SDKs still accept.
                "console" | "logging" => TracesExporter::Console,
                "none" => continue,
                _ => {
                    unknown.push(name.to_string());
                    continue;
                }
            };
            if !out.contains(&e) {
                out.push(e);
            }
        }
        (out, unknown)
    }
}

/// Why [`init`] could not set tracing up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The OTLP exporter's configuration is invalid (the message names the variable).
    #[cfg(feature = "otlp")]
    #[error("cannot set up the OTLP exporter: {0}")]
    Otlp(#[from] crate::export::otlp::ConfigError),
    /// The OTLP exporter was asked for but this build has no OTLP transport.
    #[error("OTEL_TRACES_EXPORTER=otlp needs the ferrotrace cargo feature `otlp-http` or `otlp-grpc`; enable one, or set OTEL_TRACES_EXPORTER=console or none")]
    OtlpNotBuilt,
}

/// Configures [`init`]: every option not set here comes from the environment.
#[must_use = "call .init() to install the provider"]
pub struct InitBuilder {
    service_name: Option<String>,
    resource: Option<Resource>,
    sampler: Option<Sampler>,
    exporters: Option<Vec<TracesExporter>>,
    propagator: Option<Box<dyn TextMapPropagator>>,
    disabled: Option<bool>,
    processors: Vec<Box<dyn SpanProcessor>>,
    shutdown_timeout: Duration,
    #[cfg(feature = "otlp")]
    otlp: Option<crate::export::otlp::OtlpExporterBuilder>,
}

impl Default for InitBuilder {
    fn default() -> Self {
        InitBuilder {
            service_name: None,
            resource: None,
            sampler: None,
            exporters: None,
            propagator: None,
            disabled: None,
            processors: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            #[cfg(feature = "otlp")]
            otlp: None,
        }
    }
}

impl std::fmt::Debug for InitBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitBuilder")
            .field("service_name", &self.service_name)
            .field("exporters", &self.exporters)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Sets tracing up from the environment: reads every standard `OTEL_*`
/// variable ([`builder`] has the same defaults), installs the global tracer provider and
/// propagator, and returns a [`TelemetryGuard`] that flushes and shuts the
/// pipeline down when dropped.
///
/// ```no_run
/// fn main() -> Result<(), ferrotrace::InitError> {
///     // OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*, ...
///     let _telemetry = ferrotrace::init()?;
///     let tracer = ferrotrace::trace::global::tracer("app");
///     tracer.in_span("work", |_span| { /* ... */ });
///     Ok(())
/// } // spans still queued are flushed here
/// ```
///
/// What `init` reads, and what it does with it:
///
/// | variable | effect |
/// | --- | --- |
/// | `OTEL_SDK_DISABLED=true` | a disabled provider: nothing recorded or exported, no thread started; context still propagates |
/// | `OTEL_TRACES_EXPORTER` | `otlp` (default): batch processor + OTLP exporter; `console`: one line per span on stdout; `none`; a comma-separated list combines them |
/// | `OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*` | the OTLP exporter and batch processor (see `docs/sdk-export.md`) |
/// | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource |
/// | `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_SPAN_*_LIMIT` | sampler and limits |
/// | `OTEL_PROPAGATORS` | the global propagator (`tracecontext`, `baggage`, `b3`, `b3multi`, `jaeger`, `none`; default W3C `tracecontext,baggage`) |
/// | `OTEL_LOG_LEVEL` | which SDK diagnostics are reported |
pub fn init() -> Result<TelemetryGuard, InitError> {
    builder().init()
}

/// A builder with [`init`]'s defaults.
pub fn builder() -> InitBuilder {
    InitBuilder::default()
}

impl InitBuilder {
    /// Sets `service.name` (wins over `OTEL_SERVICE_NAME`).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }
    /// Resource attributes (win over `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }
    /// The sampler (instead of `OTEL_TRACES_SAMPLER`).
    pub fn with_sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }
    /// The exporters (instead of `OTEL_TRACES_EXPORTER`); empty means none.
    pub fn with_traces_exporters(
        mut self,
        exporters: impl IntoIterator<Item = TracesExporter>,
    ) -> Self {
        self.exporters = Some(exporters.into_iter().collect());
        self
    }
    /// The OTLP exporter to use when `otlp` is selected, e.g. with a
    /// protocol or endpoint set in code (it still reads the environment for
    /// the rest).
    #[cfg(feature = "otlp")]
    pub fn with_otlp_exporter(
        mut self,
        exporter: crate::export::otlp::OtlpExporterBuilder,
    ) -> Self {
        self.otlp = Some(exporter);
        self
    }
    /// An extra span processor, beside the selected exporters (e.g. an
    /// in-memory exporter in tests).
    pub fn with_span_processor(mut self, processor: impl SpanProcessor) -> Self {
        self.processors.push(Box::new(processor));
        self
    }
    /// The global propagator (instead of `OTEL_PROPAGATORS`).
    pub fn with_propagator(mut self, propagator: impl TextMapPropagator + 'static) -> Self {
        self.propagator = Some(Box::new(propagator));
        self
    }
    /// Disables or enables the SDK regardless of `OTEL_SDK_DISABLED`.
    pub fn with_sdk_disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }
    /// How long dropping the guard waits for the final flush (default 5 s).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Builds the pipeline, installs the global provider and propagator, and
    /// returns the guard that shuts them down.
    pub fn init(self) -> Result<TelemetryGuard, InitError> {
        // Read OTEL_LOG_LEVEL first, so problems below are filtered by it.
        let _ = diagnostics::level();
        let propagator = self.propagator.unwrap_or_else(env_propagator);
        let disabled = self
            .disabled
            .unwrap_or_else(crate::trace::provider::sdk_disabled_from_env);
        let mut builder = TracerProvider::builder().with_sdk_disabled(disabled);
        #[cfg(feature = "otlp")]
        let mut otlp = self.otlp;
        if !disabled {
            let exporters = self.exporters.unwrap_or_else(env_exporters);
            for e in exporters {
                match e {
                    TracesExporter::Console => {
                        builder = builder.with_span_processor(SimpleSpanProcessor::new(
                            ConsoleExporter::stdout(),
                        ));
                    }
                    #[cfg(feature = "otlp")]
                    TracesExporter::Otlp => {
                        let exporter = otlp
                            .take()
                            .unwrap_or_else(crate::export::otlp::OtlpExporter::builder)
                            .build()?;
                        builder = builder.with_span_processor(
                            crate::export::BatchSpanProcessor::builder(exporter).build(),
                        );
                    }
                    #[cfg(not(feature = "otlp"))]
                    TracesExporter::Otlp => return Err(InitError::OtlpNotBuilt),
                }
            }
            for p in self.processors {
                builder = builder.with_span_processor_boxed(p);
            }
            if let Some(s) = self.sampler {
                builder = builder.with_sampler(s);
            }
            if let Some(r) = self.resource {
                builder = builder.with_resource(r);
            }
            if let Some(n) = self.service_name {
                builder = builder.with_service_name(n);
            }
        }
        let provider = builder.build();
        set_text_map_propagator_boxed(propagator);
        crate::trace::global::set_tracer_provider(provider.clone());
        Ok(TelemetryGuard {
            provider: Some(provider),
            timeout: self.shutdown_timeout,
        })
    }
}

/// The exporters `OTEL_TRACES_EXPORTER` names (default `otlp`).
fn env_exporters() -> Vec<TracesExporter> {
    let spec = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    if spec.trim().is_empty() {
        return vec![TracesExporter::Otlp];
    }
    let (list, unknown) = TracesExporter::parse_list(&spec);
    if !unknown.is_empty() {
        diagnostics::report(Diagnostic::Config(format!(
            "OTEL_TRACES_EXPORTER: unsupported exporter(s) {unknown:?} ignored; supported: otlp, console, none"
        )));
    }
    list
}

/// The propagator `init` installs unless one is given in code: the one place
/// where the environment selects it. `OTEL_PROPAGATORS` (tracecontext,
/// baggage, b3, b3multi, jaeger, none) is resolved by
/// [`propagators_from_env`](crate::propagation::global::propagators_from_env);
/// the default is the W3C composite, `tracecontext,baggage`.
fn env_propagator() -> Box<dyn TextMapPropagator> {
    Box::new(crate::propagation::global::propagators_from_env())
}

fn set_text_map_propagator_boxed(p: Box<dyn TextMapPropagator>) {
    struct Boxed(Box<dyn TextMapPropagator>);
    impl TextMapPropagator for Boxed {
        fn inject_context(
            &self,
            cx: &crate::Context,
            injector: &mut dyn crate::propagation::Injector,
        ) {
            self.0.inject_context(cx, injector)
        }
        fn extract_with_context(
            &self,
            cx: &crate::Context,
            extractor: &dyn crate::propagation::Extractor,
        ) -> crate::Context {
            self.0.extract_with_context(cx, extractor)
        }
        fn fields(&self) -> Vec<&'static str> {
            self.0.fields()
        }
    }
    set_text_map_propagator(Boxed(p));
}

/// Keeps tracing running; dropping it flushes what is queued and shuts the
/// provider down (within the shutdown timeout), and uninstalls it from the
/// global slot. Keep it alive for the whole program (`let _telemetry = ..`,
/// not `let _ = ..`, which drops it at once).
#[must_use = "dropping the guard shuts tracing down at once: bind it with `let _telemetry = ...`"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<TracerProvider>,
    timeout: Duration,
}

impl TelemetryGuard {
    /// The installed provider (e.g. for `provider.tracer(..)` or `force_flush`).
    pub fn provider(&self) -> &TracerProvider {
        self.provider
            .as_ref()
            .expect("the provider is only taken by shutdown, which consumes the guard")
    }

    /// Flushes and shuts down now, returning the outcome (dropping the guard
    /// does the same and reports a failure through diagnostics).
    pub fn shutdown(mut self) -> ExportResult {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> ExportResult {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        crate::trace::global::uninstall(&provider);
        let flushed = provider.force_flush(self.timeout);
        let shut = provider.shutdown(self.timeout);
        flushed.and(shut)
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_inner() {
            diagnostics::report(Diagnostic::Export(format!(
                "shutting tracing down: {e}; spans still queued may be lost"
            )));
        }
    }
}
