//! A [`tracing_subscriber::Layer`] that records `tracing` spans as ferrotrace
//! spans and `tracing` events as span events, so `#[instrument]`ed code is
//! traced and exported through the ferrotrace pipeline.
//!
//! - Span fields become typed attributes (`i64`, `f64`, `bool`, strings;
//!   `u64` above `i64::MAX` and 128-bit integers as strings, `?debug` and
//!   `%display` values as strings). They are recorded straight into the
//!   span's attribute list; a string value that repeats at its callsite is
//!   shared, not copied (bounded: see [`MAX_INTERNED`], [`VALUES_PER_SLOT`]).
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

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, LevelFilter, Metadata, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::TracerSource;
use crate::attributes::{KeyValue, Value};
use crate::context::{Context, ContextGuard};
use crate::trace::tracer::LazyDetails;
use crate::trace::{Span, SpanInbox, Status, Tracer};

mod fields;

pub use super::shared_values::{
    interned_value_count, MAX_INTERNED, MAX_SLOTS_PER_THREAD, MAX_VALUE_LEN, VALUES_PER_SLOT,
};
use fields::Recorder;

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
    t.starts_with("ferrotrace") && (t.len() == "ferrotrace".len() || t[10..].starts_with("::"))
}

fn cow_value(s: Cow<'static, str>) -> Value {
    match s {
        Cow::Borrowed(b) => Value::from(b),
        Cow::Owned(o) => Value::from(o),
    }
}

/// `code.file.path` and `code.line.number`, from the callsite's `'static`
/// metadata (no copy).
fn push_code_location(attrs: &mut Vec<KeyValue>, meta: &'static Metadata<'static>) {
    if let Some(file) = meta.file() {
        attrs.push(KeyValue::new("code.file.path", file));
    }
    if let Some(line) = meta.line() {
        attrs.push(KeyValue::new("code.line.number", line));
    }
}

/// An event's name, attributes and the statuses it asks for (in order).
fn build_event(event: &Event<'_>) -> (Cow<'static, str>, Vec<KeyValue>, [Option<Status>; 2]) {
    let meta = event.metadata();
    // Fields (the message among them, which is not an attribute), level, target.
    let mut attrs = Vec::with_capacity(meta.fields().len() + 2);
    let mut rec = Recorder::new(meta, &mut attrs);
    event.record(&mut rec);
    let mut special = rec.special;
    attrs.push(KeyValue::new("level", meta.level().as_str()));
    // An event's metadata is `'static`: the target needs no copy.
    attrs.push(KeyValue::new("target", meta.target()));
    if let Some(err) = special.error.as_ref().filter(|e| !e.is_empty()) {
        attrs.push(KeyValue::new("exception.message", cow_value(err.clone())));
    }
    let name: Cow<'static, str> = match special.message.take() {
        Some(m) => m,
        None if special.error.is_some() => Cow::Borrowed("exception"),
        None => Cow::Borrowed("event"),
    };
    let level_status = (*meta.level() == Level::ERROR).then(|| Status::error(name.clone()));
    let field_status = special.status();
    (name, attrs, [level_status, field_status])
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
        if !self.records(meta) || is_internal(meta) || super::is_suppressed() {
            return;
        }
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let parent = self.parent_context(attrs, &ctx);
        let parent_sc = parent
            .has_active_span()
            .then(|| parent.span_context().clone());
        // The sampler decides first: an unsampled span records no field (only
        // its context is kept, for its children). A recorded one gets its
        // fields straight into the attribute list it keeps.
        let mut status = None;
        let code_location = self.code_location;
        let mut span = self.tracer.tracer().start_lazy_with(parent_sc, || {
            let extra = if code_location { 2 } else { 0 };
            let mut attributes = Vec::with_capacity(attrs.fields().len() + extra);
            let mut rec = Recorder::new(meta, &mut attributes);
            attrs.record(&mut rec);
            let mut special = rec.special;
            if code_location {
                push_code_location(&mut attributes, meta);
            }
            status = special.status();
            LazyDetails {
                name: special.name.take().unwrap_or(Cow::Borrowed(meta.name())),
                kind: special.kind.unwrap_or_default(),
                attributes,
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
        let mut attributes = Vec::new();
        let mut rec = Recorder::new(span_ref.metadata(), &mut attributes);
        values.record(&mut rec);
        let mut special = rec.special;
        if let Some(name) = special.name.take() {
            state.span.update_name(name);
        }
        if let Some(status) = special.status() {
            state.span.set_status(status);
        }
        state.span.set_attributes(attributes);
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
        if !self.records(meta) || is_internal(meta) || super::is_suppressed() {
            return;
        }
        // The event's span, or its nearest recorded ancestor (spans below the
        // level filter have no ferrotrace span), and whether it records.
        let event_span = ctx.event_span(event);
        let had_span = event_span.is_some();
        let target = event_span.and_then(|s| {
            let recording = |s: &SpanRef<'_, S>| {
                s.extensions()
                    .get::<SpanState>()
                    .map(|st| st.span.is_recording())
            };
            // The event's own span first: `scope()` would look it up again.
            if let Some(r) = recording(&s) {
                return Some((s, r));
            }
            s.scope()
                .skip(1)
                .find_map(|s| recording(&s).map(|r| (s, r)))
        });
        match target {
            Some((_, false)) => {}
            Some((s, true)) => {
                // Built before the span's extensions are locked: a field's
                // `Debug` may itself log through `tracing`.
                let (name, attrs, statuses) = build_event(event);
                let mut ext = s.extensions_mut();
                if let Some(state) = ext.get_mut::<SpanState>() {
                    for st in statuses.into_iter().flatten() {
                        state.span.set_status(st);
                    }
                    state.span.add_event(name, attrs);
                }
            }
            // Outside any recorded `tracing` span: the current ferrotrace span
            // (a server request span, or a client span while its request is
            // in flight), when its owner left an inbox for it.
            None if event.is_root() => {}
            None if event.parent().is_some() && !had_span => {}
            None => {
                if let Some(inbox) = SpanInbox::current() {
                    let (name, attrs, statuses) = build_event(event);
                    for st in statuses.into_iter().flatten() {
                        inbox.set_status(st);
                    }
                    inbox.add_event(name, attrs);
                }
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
        // Ended in place: the state itself goes when the registry clears the
        // span's extensions, right after this (no move of it out of its box).
        let mut ext = span_ref.extensions_mut();
        if let Some(state) = ext.get_mut::<SpanState>() {
            state.span.end();
        }
    }
}
