//! A [`tracing_subscriber::Layer`] that records `tracing` spans as ferrotrace
//! spans and `tracing` events as span events, so `#[instrument]`ed code is
//! traced and exported through the ferrotrace pipeline.
//!
//! - Span fields become typed attributes (`i64`, `f64`, `bool`, strings;
//!   `u64` above `i64::MAX` and 128-bit integers as strings, `?debug` and
//!   `%display` values as strings).
//! - Special fields: `otel.name` (span name), `otel.kind` (`server`, `client`,
//!   `producer`, `consumer`, `internal`), `otel.status_code` (`ok`/`error`),
//!   `otel.status_message`, and `error`: any value but `false` (a string,
//!   `true`, a number, a `&dyn Error`) sets an error status; on an event a
//!   non-empty value also adds `exception.message`. An `ERROR`-level event
//!   marks its span as an error.
//! - An event outside any `tracing` span goes to the current ferrotrace span
//!   when its owner made it reachable with a [`SpanInbox`] (the HTTP and gRPC
//!   server layers do), e.g. `tracing::warn!` in an axum handler. With no
//!   such span it is not recorded.
//! - A span's parent is its explicit `parent:`, else the current context —
//!   the innermost entered `tracing` span or a ferrotrace span made current
//!   (e.g. by the HTTP server layer), so both kinds of spans nest together.
//!   Entering a `tracing` span makes its ferrotrace context current.
//! - Level filter: by default only `INFO`, `WARN` and `ERROR` spans and
//!   events are recorded, so the `DEBUG`/`TRACE` output of libraries (hyper,
//!   h2, tonic) does not land on request spans; [`FerrotraceLayer::with_max_level`]
//!   changes it, and a per-target filter can be added with
//!   `tracing_subscriber`'s `Layer::with_filter` (e.g. `Targets`). A span
//!   below the level is not recorded; what happens inside it goes to its
//!   nearest recorded ancestor. The filter applies to this layer only (other
//!   layers, e.g. a `fmt` layer at `DEBUG`, still see everything).
//! - Events that happen while an HTTP or gRPC client span of ferrotrace's
//!   layers is current belong to that client span (the client layers make
//!   it current, with an inbox, while the request is in flight).
//! - Nothing is recorded on the SDK's own threads or inside
//!   [`suppress_instrumentation`](super::suppress_instrumentation), and events
//!   from the `ferrotrace` target are ignored: no feedback loop.
//!
//! ```
//! use ferrotrace::export::InMemorySpanExporter;
//! use ferrotrace::integrations::tracing::FerrotraceLayer;
//! use ferrotrace::trace::TracerProvider;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let exporter = InMemorySpanExporter::default();
//! let provider = TracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(FerrotraceLayer::new(provider.tracer("app")));
//! tracing::subscriber::with_default(subscriber, || {
//!     let _s = tracing::info_span!("load", items = 3).entered();
//! });
//! assert_eq!(exporter.finished_spans()[0].name, "load");
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, LevelFilter, Metadata, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::TracerSource;
use crate::attributes::{Key, KeyValue};
use crate::context::{Context, ContextGuard};
use crate::trace::tracer::LazyDetails;
use crate::trace::{Span, SpanInbox, SpanKind, Status, Tracer};

/// Scope name used when the layer takes its tracer from the global provider.
pub const SCOPE_NAME: &str = "ferrotrace.tracing";

/// Most events a thread can have entered at once; deeper nesting is still
/// traced but no longer made current (a bound on the guard stack).
const MAX_ENTERED: usize = 1024;

/// Records `tracing` spans and events through ferrotrace. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct FerrotraceLayer {
    tracer: TracerSource,
    code_location: bool,
    max_level: LevelFilter,
}

/// The layer's default level filter: `INFO` (and `WARN`, `ERROR`).
pub const DEFAULT_MAX_LEVEL: LevelFilter = LevelFilter::INFO;

impl FerrotraceLayer {
    /// Records with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        FerrotraceLayer {
            tracer: TracerSource::Fixed(tracer),
            code_location: true,
            max_level: DEFAULT_MAX_LEVEL,
        }
    }

    /// Records with the global provider's tracer (scope [`SCOPE_NAME`]),
    /// looked up per span. Needs a global provider (`ferrotrace::init()` or
    /// [`set_tracer_provider`](crate::trace::global::set_tracer_provider)):
    /// without one nothing is recorded and a diagnostic says so once.
    pub fn from_global() -> Self {
        FerrotraceLayer {
            tracer: TracerSource::Global(SCOPE_NAME),
            code_location: true,
            max_level: DEFAULT_MAX_LEVEL,
        }
    }

    /// The most verbose level recorded (default [`DEFAULT_MAX_LEVEL`], `INFO`):
    /// `LevelFilter::DEBUG` also records debug spans and events,
    /// `LevelFilter::WARN` only warnings and errors.
    pub fn with_max_level(mut self, level: LevelFilter) -> Self {
        self.max_level = level;
        self
    }

    fn records(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= self.max_level
    }

    /// Whether spans get `code.file.path` and `code.line.number` (default `true`).
    pub fn with_code_location(mut self, on: bool) -> Self {
        self.code_location = on;
        self
    }
}

/// Where an event is recorded.
enum EventTarget<'a> {
    /// The ferrotrace span of the event's `tracing` span.
    Span(&'a mut Span),
    /// The current ferrotrace span (no `tracing` span around the event).
    Inbox(SpanInbox),
}

/// What the layer keeps in a `tracing` span's extensions.
struct SpanState {
    span: Span,
    /// The parent context (baggage, values) with this span active: made
    /// current while the `tracing` span is entered.
    cx: Context,
}

thread_local! {
    static ENTERED: RefCell<Vec<(u64, ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

fn is_internal(meta: &Metadata<'_>) -> bool {
    let t = meta.target();
    t == "ferrotrace" || t.starts_with("ferrotrace::")
}

fn parse_kind(s: &str) -> Option<SpanKind> {
    let s = s.trim_matches('"');
    Some(match s.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

/// Collects fields into attributes and the special `otel.*` / `error` values.
#[derive(Default)]
struct Fields {
    attrs: Vec<KeyValue>,
    name: Option<String>,
    kind: Option<SpanKind>,
    status_code: Option<String>,
    status_message: Option<String>,
    error: Option<String>,
    message: Option<String>,
}

impl Fields {
    fn string(&mut self, field: &Field, value: String) {
        match field.name() {
            "otel.name" => self.name = Some(value),
            "otel.kind" => self.kind = parse_kind(&value),
            "otel.status_code" => self.status_code = Some(value),
            "otel.status_message" => self.status_message = Some(value),
            "message" => self.message = Some(value),
            "error" => {
                self.attrs.push(KeyValue::new("error", value.clone()));
                self.error = Some(value);
            }
            name => self
                .attrs
                .push(KeyValue::new(Key::from_static(name), value)),
        }
    }

    fn typed(&mut self, field: &Field, value: crate::attributes::Value) {
        if field.name().starts_with("otel.") || field.name() == "message" {
            self.string(field, format!("{}", DisplayValue(&value)));
        } else if field.name() == "error" {
            // `error = true`, `error = 42`: an error too, only `false` is not.
            // A bare `true` says nothing beyond "failed", so no message.
            self.error = match &value {
                crate::attributes::Value::Bool(false) => None,
                crate::attributes::Value::Bool(true) => Some(String::new()),
                other => Some(format!("{}", DisplayValue(other))),
            };
            self.attrs.push(KeyValue {
                key: Key::from_static("error"),
                value,
            });
        } else {
            self.attrs.push(KeyValue {
                key: Key::from_static(field.name()),
                value,
            });
        }
    }

    /// The status the special fields ask for, if any.
    fn status(&self) -> Option<Status> {
        if let Some(code) = &self.status_code {
            let code = code.trim_matches('"').to_ascii_lowercase();
            if code == "ok" {
                return Some(Status::Ok);
            }
            if code == "error" {
                let d = self
                    .status_message
                    .clone()
                    .or_else(|| self.error.clone())
                    .unwrap_or_default();
                return Some(Status::error(d));
            }
        }
        self.error.as_ref().map(|e| Status::error(e.clone()))
    }
}

struct DisplayValue<'a>(&'a crate::attributes::Value);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::attributes::Value;
        match self.0 {
            Value::Bool(b) => write!(f, "{b}"),
            Value::I64(i) => write!(f, "{i}"),
            Value::F64(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s.as_str()),
            Value::Array(a) => write!(f, "{a:?}"),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.typed(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.typed(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.typed(field, v.into()),
            Err(_) => self.string(field, value.to_string()),
        }
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.typed(field, v.into()),
            Err(_) => self.string(field, value.to_string()),
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match i64::try_from(value) {
            Ok(v) => self.typed(field, v.into()),
            Err(_) => self.string(field, value.to_string()),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.typed(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value.to_string());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, format!("{value:?}"));
    }
}

impl FerrotraceLayer {
    fn parent_context<S>(&self, attrs: &Attributes<'_>, ctx: &LayerContext<'_, S>) -> Context
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if attrs.is_root() {
            return Context::current().without_span();
        }
        if let Some(parent) = attrs.parent() {
            // The nearest recorded ancestor (a parent below the level filter is skipped).
            if let Some(state_cx) = ctx.span(parent).and_then(|s| {
                s.scope()
                    .find_map(|s| s.extensions().get::<SpanState>().map(|st| st.cx.clone()))
            }) {
                return state_cx;
            }
        }
        // Contextual: entering a traced span attaches its context, so the
        // current context is the innermost entered span (tracing or ferrotrace).
        let current = Context::current();
        if current.has_active_span() {
            return current;
        }
        ctx.lookup_current()
            .and_then(|s| {
                s.scope()
                    .find_map(|s| s.extensions().get::<SpanState>().map(|st| st.cx.clone()))
            })
            .unwrap_or(current)
    }
}

impl<S> Layer<S> for FerrotraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let meta = attrs.metadata();
        if !self.records(meta) || super::is_suppressed() || is_internal(meta) {
            return;
        }
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let parent = self.parent_context(attrs, &ctx);
        let parent_sc = parent
            .has_active_span()
            .then(|| parent.span_context().clone());
        // The sampler decides first: an unsampled span records no field, so
        // it copies no string (only its context is kept, for its children).
        let mut status = None;
        let mut span = self.tracer.tracer().start_lazy_with(parent_sc, || {
            let mut fields = Fields {
                attrs: Vec::with_capacity(attrs.fields().len() + 2),
                ..Fields::default()
            };
            attrs.record(&mut fields);
            if self.code_location {
                if let Some(file) = meta.file() {
                    fields.attrs.push(KeyValue::new("code.file.path", file));
                }
                if let Some(line) = meta.line() {
                    fields.attrs.push(KeyValue::new("code.line.number", line));
                }
            }
            let name: Cow<'static, str> = match fields.name.take() {
                Some(n) => n.into(),
                None => meta.name().into(),
            };
            status = fields.status();
            LazyDetails {
                name,
                kind: fields.kind.unwrap_or_default(),
                attributes: std::mem::take(&mut fields.attrs),
            }
        });
        if let Some(status) = status {
            span.set_status(status);
        }
        let cx = parent.into_with_span_context(span.span_context().clone());
        span_ref.extensions_mut().insert(SpanState { span, cx });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let mut ext = span_ref.extensions_mut();
        let Some(state) = ext.get_mut::<SpanState>() else {
            return;
        };
        if !state.span.is_recording() {
            return;
        }
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(name) = fields.name.take() {
            state.span.update_name(name);
        }
        if let Some(status) = fields.status() {
            state.span.set_status(status);
        }
        state.span.set_attributes(fields.attrs);
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: LayerContext<'_, S>) {
        let Some(other) = ctx.span(follows).and_then(|s| {
            s.extensions()
                .get::<SpanState>()
                .map(|st| st.span.span_context().clone())
        }) else {
            return;
        };
        if let Some(span_ref) = ctx.span(id) {
            if let Some(state) = span_ref.extensions_mut().get_mut::<SpanState>() {
                state.span.add_link(other, Vec::new());
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        if !self.records(meta) || super::is_suppressed() || is_internal(meta) {
            return;
        }
        // The event's span, or its nearest recorded ancestor (spans below the
        // level filter have no ferrotrace span).
        let span_ref = ctx.event_span(event).and_then(|s| {
            s.scope()
                .find(|s| s.extensions().get::<SpanState>().is_some())
        });
        let mut ext = span_ref.as_ref().map(|s| s.extensions_mut());
        let target = match ext.as_mut().and_then(|e| e.get_mut::<SpanState>()) {
            Some(state) if !state.span.is_recording() => return,
            Some(state) => EventTarget::Span(&mut state.span),
            // Outside any recorded `tracing` span: the current ferrotrace span
            // (a server request span, or a client span while its request is
            // in flight), when its owner left an inbox for it.
            None if event.is_root() => return,
            None if event.parent().is_some() && ctx.event_span(event).is_none() => return,
            None => match SpanInbox::current() {
                Some(inbox) => EventTarget::Inbox(inbox),
                None => return,
            },
        };
        let mut fields = Fields {
            attrs: Vec::with_capacity(meta.fields().len() + 2),
            ..Fields::default()
        };
        event.record(&mut fields);
        let mut attrs = std::mem::take(&mut fields.attrs);
        attrs.push(KeyValue::new("level", meta.level().as_str()));
        // An event's metadata is `'static`: the target needs no copy.
        attrs.push(KeyValue::new("target", meta.target()));
        if let Some(err) = fields.error.as_ref().filter(|e| !e.is_empty()) {
            attrs.push(KeyValue::new("exception.message", err.clone()));
        }
        let name: Cow<'static, str> = match fields.message.take() {
            Some(m) => m.into(),
            None if fields.error.is_some() => "exception".into(),
            None => "event".into(),
        };
        let level_status = (*meta.level() == Level::ERROR).then(|| Status::error(name.clone()));
        let statuses = level_status.into_iter().chain(fields.status());
        match target {
            EventTarget::Span(span) => {
                for st in statuses {
                    span.set_status(st);
                }
                span.add_event(name, attrs);
            }
            EventTarget::Inbox(inbox) => {
                for st in statuses {
                    inbox.set_status(st);
                }
                inbox.add_event(name, attrs);
            }
        }
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let cx = match span_ref.extensions().get::<SpanState>() {
            Some(state) => state.cx.clone(),
            None => return,
        };
        let _ = ENTERED.try_with(|e| {
            if let Ok(mut e) = e.try_borrow_mut() {
                if e.len() < MAX_ENTERED {
                    e.push((id.into_u64(), cx.attach()));
                }
            }
        });
    }

    fn on_exit(&self, id: &Id, _ctx: LayerContext<'_, S>) {
        let raw = id.into_u64();
        let guard = ENTERED
            .try_with(|e| {
                let mut e = e.try_borrow_mut().ok()?;
                let pos = e.iter().rposition(|(i, _)| *i == raw)?;
                Some(e.remove(pos).1)
            })
            .ok()
            .flatten();
        // Dropped outside the borrow: detaching may run other context code.
        drop(guard);
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.span(&id) else {
            return;
        };
        let state = span_ref.extensions_mut().remove::<SpanState>();
        if let Some(mut state) = state {
            state.span.end();
        }
    }
}
