//! The tracer provider: owns the pipeline (processors), the resource, the
//! sampler, the limits and the un-ended span watchdog, and hands out tracers.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::attributes::KeyValue;
use crate::export::{ExportError, ExportResult, SpanExporter, SpanProcessor};
use crate::resource::Resource;
use crate::trace::interned::{Interned, Interner};
use crate::trace::limits::SpanLimits;
use crate::trace::sampler::Sampler;
use crate::trace::span_data::InstrumentationScope;
use crate::trace::tracer::Tracer;
use crate::trace::watchdog::{Watchdog, DEFAULT_WATCH_CAPACITY};

/// Resources of the providers built in this process (see [`Interned`]).
static RESOURCES: Interner<Resource> = Interner::new();
/// Scopes of the tracers handed out in this process.
static SCOPES: Interner<InstrumentationScope> = Interner::new();

/// Default age after which an open span is reported.
pub const DEFAULT_UNENDED_SPAN_AGE: Duration = Duration::from_secs(300);

pub(crate) struct ProviderInner {
    pub(crate) resource: Interned<Resource>,
    pub(crate) processors: Vec<Box<dyn SpanProcessor>>,
    pub(crate) sampler: Sampler,
    pub(crate) limits: SpanLimits,
    pub(crate) watchdog: Option<Watchdog>,
    pub(crate) is_shutdown: AtomicBool,
    /// `OTEL_SDK_DISABLED`: spans only pass their parent's context through.
    pub(crate) disabled: bool,
    /// Some processor implements `on_start` (the built-in ones do not): a
    /// provider without one skips the call per sampled span.
    pub(crate) observes_start: bool,
}

impl ProviderInner {
    fn shutdown(&self, timeout: Duration) -> ExportResult {
        if self.is_shutdown.swap(true, Ordering::AcqRel) {
            return Err(ExportError::Shutdown);
        }
        let mut result = Ok(());
        for p in &self.processors {
            if let Err(e) = p.shutdown(timeout) {
                result = Err(e);
            }
        }
        result
    }
}

impl Drop for ProviderInner {
    fn drop(&mut self) {
        // The last handle (provider, tracer or open span) is gone: flush what is queued.
        if !self.is_shutdown.load(Ordering::Acquire) {
            let _ = self.shutdown(Duration::from_secs(5));
        }
    }
}

/// Creates [`Tracer`]s that share one pipeline, resource, sampler and limits.
/// Cheap to clone (a handle). When the last handle, tracer and span are gone
/// the processors are shut down (flushing queued spans).
#[derive(Clone)]
pub struct TracerProvider {
    pub(crate) inner: Arc<ProviderInner>,
}

impl std::fmt::Debug for TracerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerProvider")
            .field("resource", &self.inner.resource)
            .field("processors", &self.inner.processors.len())
            .field("sampler", &self.inner.sampler)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

impl TracerProvider {
    /// A builder; see [`TracerProviderBuilder`].
    pub fn builder() -> TracerProviderBuilder {
        TracerProviderBuilder::default()
    }

    /// True if the SDK is disabled (`OTEL_SDK_DISABLED=true` or
    /// [`TracerProviderBuilder::with_sdk_disabled`]).
    pub fn is_disabled(&self) -> bool {
        self.inner.disabled
    }

    /// A tracer for the instrumentation scope `name`.
    pub fn tracer(&self, name: impl Into<Cow<'static, str>>) -> Tracer {
        self.tracer_with_scope(InstrumentationScope {
            name: name.into(),
            ..Default::default()
        })
    }

    /// A tracer for a scope with version and schema URL.
    pub fn versioned_tracer(
        &self,
        name: impl Into<Cow<'static, str>>,
        version: Option<impl Into<Cow<'static, str>>>,
        schema_url: Option<impl Into<Cow<'static, str>>>,
    ) -> Tracer {
        self.tracer_with_scope(InstrumentationScope {
            name: name.into(),
            version: version.map(Into::into),
            schema_url: schema_url.map(Into::into),
            attributes: Vec::new(),
        })
    }

    /// A tracer for a fully described scope.
    pub fn tracer_with_scope(&self, scope: InstrumentationScope) -> Tracer {
        Tracer::new(self.inner.clone(), SCOPES.intern(scope))
    }

    /// The resource attached to every span.
    pub fn resource(&self) -> &Resource {
        &self.inner.resource
    }

    /// The span limits in force.
    pub fn span_limits(&self) -> SpanLimits {
        self.inner.limits
    }

    /// Flushes every processor, each within `timeout`.
    pub fn force_flush(&self, timeout: Duration) -> ExportResult {
        let mut result = Ok(());
        for p in &self.inner.processors {
            if let Err(e) = p.force_flush(timeout) {
                result = Err(e);
            }
        }
        result
    }

    /// Shuts down every processor (flushing first). Spans started afterwards are not recorded.
    /// A second call returns [`ExportError::Shutdown`].
    pub fn shutdown(&self, timeout: Duration) -> ExportResult {
        self.inner.shutdown(timeout)
    }

    /// How many spans the watchdog reported as not ended after the configured age.
    pub fn unended_spans_reported(&self) -> u64 {
        self.inner
            .watchdog
            .as_ref()
            .map_or(0, |w| w.state.reported())
    }

    /// How many spans the watchdog could not watch because its registry was full.
    pub fn unwatched_spans(&self) -> u64 {
        self.inner
            .watchdog
            .as_ref()
            .map_or(0, |w| w.state.unwatched())
    }

    /// Runs one watchdog check now (tests and shutdown hooks); returns how many spans it reported.
    pub fn check_unended_spans(&self) -> usize {
        self.inner
            .watchdog
            .as_ref()
            .map_or(0, |w| w.state.scan(crate::time::now_ns()))
    }
}

/// Configures a [`TracerProvider`]. Unset options come from the OpenTelemetry
/// environment variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_SPAN_*_LIMIT`), then from defaults.
#[derive(Default)]
pub struct TracerProviderBuilder {
    processors: Vec<Box<dyn SpanProcessor>>,
    resource: Option<Resource>,
    service_name: Option<String>,
    sampler: Option<Sampler>,
    limits: Option<SpanLimits>,
    unended_span_age: Option<Option<Duration>>,
    watch_capacity: Option<usize>,
    disabled: Option<bool>,
}

impl TracerProviderBuilder {
    /// Adds a processor (called in the order added).
    pub fn with_span_processor(mut self, p: impl SpanProcessor) -> Self {
        self.processors.push(Box::new(p));
        self
    }

    pub(crate) fn with_span_processor_boxed(mut self, p: Box<dyn SpanProcessor>) -> Self {
        self.processors.push(p);
        self
    }

    /// Adds a [`SimpleSpanProcessor`](crate::export::SimpleSpanProcessor) around
    /// `exporter`: each span is exported synchronously when it ends (tests, examples).
    pub fn with_simple_exporter(self, exporter: impl SpanExporter) -> Self {
        self.with_span_processor(crate::export::SimpleSpanProcessor::new(exporter))
    }

    /// Resource attributes set in code; they win over `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Sets `service.name` (wins over `OTEL_SERVICE_NAME` and the resource).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The sampler (default: from `OTEL_TRACES_SAMPLER`, else `parentbased_always_on`).
    pub fn with_sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// Span limits (default: from `OTEL_SPAN_*_LIMIT`, else 128 each).
    pub fn with_span_limits(mut self, limits: SpanLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Age after which an open sampled span is reported once through
    /// [`diagnostics`](crate::trace::diagnostics) (default 5 minutes; `None` disables the watchdog).
    pub fn with_unended_span_age(mut self, age: Option<Duration>) -> Self {
        self.unended_span_age = Some(age);
        self
    }

    /// Maximum number of open spans the watchdog tracks (default 65,536).
    pub fn with_unended_span_watch_capacity(mut self, capacity: usize) -> Self {
        self.watch_capacity = Some(capacity);
        self
    }

    /// Disables (or, with `false`, enables) the SDK regardless of
    /// `OTEL_SDK_DISABLED`. A disabled provider records and exports nothing,
    /// starts no thread and drops its processors; its spans are non-recording
    /// and carry their parent's context unchanged (no new ids), so a trace
    /// passing through the service stays connected.
    pub fn with_sdk_disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }

    /// Builds the provider.
    pub fn build(self) -> TracerProvider {
        let disabled = self.disabled.unwrap_or_else(sdk_disabled_from_env);
        if disabled {
            // Dropping the processors shuts them down (nothing was queued).
            drop(self.processors);
            return TracerProvider {
                inner: Arc::new(ProviderInner {
                    resource: RESOURCES.intern(resource_from_env()),
                    processors: Vec::new(),
                    sampler: Sampler::AlwaysOff,
                    limits: SpanLimits::default(),
                    watchdog: None,
                    is_shutdown: AtomicBool::new(false),
                    disabled: true,
                    observes_start: false,
                }),
            };
        }
        let mut resource = resource_from_env();
        if let Some(r) = &self.resource {
            resource = resource.merge(r);
        }
        if let Some(name) = self.service_name {
            resource.set(KeyValue::new("service.name", name));
        }
        let age = self
            .unended_span_age
            .unwrap_or(Some(DEFAULT_UNENDED_SPAN_AGE));
        let watchdog =
            age.map(|a| Watchdog::start(a, self.watch_capacity.unwrap_or(DEFAULT_WATCH_CAPACITY)));
        // A remote sampler from the environment asks for this provider's service.
        let sampler = self.sampler.unwrap_or_else(|| {
            let service = match resource.get("service.name") {
                Some(crate::attributes::Value::String(s)) => Some(s.as_str().to_string()),
                _ => None,
            };
            Sampler::from_env_for_service(service.as_deref())
        });
        let observes_start = self.processors.iter().any(|p| p.observes_start());
        TracerProvider {
            inner: Arc::new(ProviderInner {
                observes_start,
                resource: RESOURCES.intern(resource),
                processors: self.processors,
                sampler,
                limits: self.limits.unwrap_or_else(SpanLimits::from_env),
                watchdog,
                is_shutdown: AtomicBool::new(false),
                disabled: false,
            }),
        }
    }
}

/// Reads `OTEL_SDK_DISABLED` (`true`, case-insensitive, disables; `false` or
/// unset enables; anything else enables and is reported).
pub fn sdk_disabled_from_env() -> bool {
    parse_sdk_disabled(std::env::var("OTEL_SDK_DISABLED").ok().as_deref())
}

fn parse_sdk_disabled(v: Option<&str>) -> bool {
    match v.map(str::trim) {
        None | Some("") => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::Config(
                format!("OTEL_SDK_DISABLED={v:?} is not true or false; the SDK stays enabled"),
            ));
            false
        }
    }
}

/// Decodes `%XX` escapes in `OTEL_RESOURCE_ATTRIBUTES` values.
fn decode_env_value(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses an `OTEL_RESOURCE_ATTRIBUTES` value (`k1=v1,k2=v2`, values
/// percent-decoded). Malformed entries are skipped and returned for reporting.
pub fn parse_resource_attributes(spec: &str) -> (Vec<KeyValue>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.push(KeyValue::new(
                    k.trim().to_string(),
                    decode_env_value(v.trim()),
                ));
            }
            _ => bad.push(item.to_string()),
        }
    }
    (out, bad)
}

/// The default resource: SDK attributes, then `OTEL_RESOURCE_ATTRIBUTES`, then
/// `OTEL_SERVICE_NAME` (`service.name` defaults to `unknown_service`).
pub fn resource_from_env() -> Resource {
    let mut r = Resource::new([
        KeyValue::new("service.name", "unknown_service"),
        KeyValue::new("telemetry.sdk.name", "ferrotrace"),
        KeyValue::new("telemetry.sdk.language", "rust"),
        KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ]);
    if let Ok(spec) = std::env::var("OTEL_RESOURCE_ATTRIBUTES") {
        let (attrs, bad) = parse_resource_attributes(&spec);
        for kv in attrs {
            r.set(kv);
        }
        if !bad.is_empty() {
            crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::Config(
                format!("OTEL_RESOURCE_ATTRIBUTES: malformed entries {bad:?} ignored (expected key=value)"),
            ));
        }
    }
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME") {
        if !name.trim().is_empty() {
            r.set(KeyValue::new("service.name", name.trim().to_string()));
        }
    }
    r
}
