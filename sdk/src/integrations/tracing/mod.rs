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
//! - The layer keeps each span's state itself, keyed by `tracing` span id
//!   (at most [`MAX_LIVE_SPANS`] per layer; past that a span is not recorded
//!   and [`refused_span_count`] counts it), released when the span closes on
//!   whichever thread. An event finds its span in a per-thread stack of the
//!   entered spans, and asks the registry only when that stack cannot tell.
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
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, LevelFilter, Metadata, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::TracerSource;
use crate::attributes::{KeyValue, Value};
use crate::context::Context;
use crate::trace::tracer::LazyDetails;
use crate::trace::{Span, SpanInbox, Status, Tracer};

mod entered;
mod fields;
mod states;

pub use super::shared_values::{
    interned_value_count, MAX_INTERNED, MAX_SLOTS_PER_THREAD, MAX_VALUE_LEN, VALUES_PER_SLOT,
};
pub use states::MAX_LIVE_SPANS;

use entered::{Kind, Top};
use fields::Recorder;
use states::SpanStates;

/// Scope name used when the layer takes its tracer from the global provider.
pub const SCOPE_NAME: &str = "ferrotrace.tracing";

/// Records `tracing` spans and events through ferrotrace. See the [module docs](self).
///
/// A clone is a new layer: it shares the configuration, not the spans it
/// tracks (each layer keeps the state of the spans it records itself).
#[derive(Debug)]
pub struct FerrotraceLayer {
    tracer: TracerSource,
    code_location: bool,
    max_level: LevelFilter,
    /// The state of each span this layer tracks, keyed by `tracing` id.
    states: SpanStates<SpanState>,
}

impl Clone for FerrotraceLayer {
    fn clone(&self) -> Self {
        FerrotraceLayer {
            tracer: self.tracer.clone(),
            code_location: self.code_location,
            max_level: self.max_level,
            states: SpanStates::new(),
        }
    }
}

/// The layer's default level filter: `INFO` (and `WARN`, `ERROR`).
pub const DEFAULT_MAX_LEVEL: LevelFilter = LevelFilter::INFO;

static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How many `tracing` spans were not recorded, in this process, because a
/// layer already tracked [`MAX_LIVE_SPANS`] live spans.
pub fn refused_span_count() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

impl FerrotraceLayer {
    /// Records with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        FerrotraceLayer {
            tracer: TracerSource::Fixed(tracer),
            code_location: true,
            max_level: DEFAULT_MAX_LEVEL,
            states: SpanStates::new(),
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
            states: SpanStates::new(),
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

    /// `tracing` spans this layer tracks right now (recorded, or kept for
    /// their context): every one is released when its span closes.
    pub fn live_spans(&self) -> usize {
        self.states.len()
    }
}

/// What the layer keeps per `tracing` span.
struct SpanState {
    span: Span,
    /// What the span's context inherits from its parent's (baggage,
    /// values); `None`, and no allocation, when there is nothing. Kept
    /// small: states are moved in and out of their shard's table.
    inherited: Option<Box<Context>>,
}

impl SpanState {
    /// The context made current while the `tracing` span is entered: the
    /// inherited part with this span active.
    #[inline]
    fn cx(&self) -> Context {
        Context::from_inherited(self.inherited.as_deref(), self.span.span_context().clone())
    }
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
type BuiltEvent = (Cow<'static, str>, Vec<KeyValue>, [Option<Status>; 2]);

/// The attribute count of an event of this callsite: its fields but the
/// message (the event's name, not an attribute), `level` and `target`, and
/// `exception.message` beside an `error` field. Exact, so the list is
/// allocated once at its final size (a `Vec` grown by pushing would take
/// four slots, and the message's slot was never used).
fn event_capacity(meta: &Metadata<'_>) -> usize {
    let mut n = 2;
    for f in meta.fields() {
        n += match f.name() {
            "message" => 0,
            "error" => 2,
            _ => 1,
        };
    }
    n
}

fn build_event(event: &Event<'_>) -> BuiltEvent {
    let meta = event.metadata();
    let mut attrs = crate::trace::attribute_buffers::take(event_capacity(meta));
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
    /// The context a new span starts in: its explicit parent's, else the
    /// current one.
    fn parent_context<S>(&self, attrs: &Attributes<'_>, ctx: &LayerContext<'_, S>) -> Context
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if attrs.is_root() {
            return Context::current().without_span();
        }
        if let Some(parent) = attrs.parent() {
            if let Some(cx) = self.states.with(parent.into_u64(), |st| st.cx()) {
                return cx;
            }
            // The nearest recorded ancestor (a parent below the level filter is skipped).
            if let Some(cx) = self.nearest_cx(ctx.span(parent)) {
                return cx;
            }
        }
        // Contextual: entering a traced span attaches its context, so the
        // current context is the innermost entered span (tracing or ferrotrace).
        let current = Context::current();
        if current.has_active_span() {
            return current;
        }
        // A context without a span was attached inside an entered span: the
        // entered span (or its nearest recorded ancestor) is the parent.
        match entered::current(self.states.key()) {
            Top::Empty => current,
            Top::Span {
                id,
                kind: Kind::Recording | Kind::Unrecorded,
            } => self
                .states
                .with(id, |st| st.cx())
                .or_else(|| self.nearest_cx(ctx.lookup_current()))
                .unwrap_or(current),
            _ => self.nearest_cx(ctx.lookup_current()).unwrap_or(current),
        }
    }

    /// The context of `span` or of its nearest ancestor this layer tracks
    /// (the registry's view: the slow path).
    fn nearest_cx<S>(&self, span: Option<SpanRef<'_, S>>) -> Option<Context>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        span?
            .scope()
            .find_map(|s| self.states.with(s.id().into_u64(), |st| st.cx()))
    }

    /// Adds a built event to `id`'s span (nothing if it closed meanwhile).
    fn add_event(&self, id: u64, (name, attrs, statuses): BuiltEvent) {
        self.states.with(id, |st| {
            for s in statuses.into_iter().flatten() {
                st.span.set_status(s);
            }
            st.span.add_event(name, attrs);
        });
    }

    /// An event under no recorded `tracing` span: the registry's view of
    /// where it belongs (its span, or that span's nearest recorded ancestor).
    fn on_event_slow<S>(&self, event: &Event<'_>, ctx: &LayerContext<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let event_span = ctx.event_span(event);
        let had_span = event_span.is_some();
        let target = event_span.and_then(|s| {
            s.scope().find_map(|s| {
                let id = s.id().into_u64();
                self.states
                    .with(id, |st| st.span.is_recording())
                    .map(|r| (id, r))
            })
        });
        match target {
            Some((_, false)) => {}
            // Built before the span's state is locked: a field's `Debug`
            // may itself log through `tracing`.
            Some((id, true)) => self.add_event(id, build_event(event)),
            None if event.is_root() => {}
            None if event.parent().is_some() && !had_span => {}
            None => to_inbox(event),
        }
    }
}

/// Outside any recorded `tracing` span: the current ferrotrace span (a
/// server request span, or a client span while its request is in flight),
/// when its owner left an inbox for it.
fn to_inbox(event: &Event<'_>) {
    if let Some(inbox) = SpanInbox::current() {
        let (name, attrs, statuses) = build_event(event);
        for st in statuses.into_iter().flatten() {
            inbox.set_status(st);
        }
        inbox.add_event(name, attrs);
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
        let raw = id.into_u64();
        if !self.states.has_room(raw) {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Taken apart, not cloned: the parent's span context goes to the
        // tracer, the rest (baggage, values) stays with the state.
        let (parent_sc, inherited) = self.parent_context(attrs, &ctx).into_parent_parts();
        // The sampler decides first: an unsampled span records no field (only
        // its context is kept, for its children). A recorded one gets its
        // fields straight into the attribute list it keeps.
        let mut status = None;
        let code_location = self.code_location;
        let mut span = self.tracer.tracer().start_lazy_with(parent_sc, || {
            let extra = if code_location { 2 } else { 0 };
            let mut attributes =
                crate::trace::attribute_buffers::take(attrs.fields().len() + extra);
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
                keys_distinct: false,
            }
        });
        if let Some(status) = status {
            span.set_status(status);
        }
        self.states.insert(raw, SpanState { span, inherited });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let raw = id.into_u64();
        if self.states.with(raw, |st| st.span.is_recording()) != Some(true) {
            return;
        }
        let Some(meta) = ctx.metadata(id) else {
            return;
        };
        // Recorded before the state is locked: a field's `Debug` may log.
        let mut attributes = Vec::new();
        let mut rec = Recorder::new(meta, &mut attributes);
        values.record(&mut rec);
        let mut special = rec.special;
        let name = special.name.take();
        let status = special.status();
        self.states.with(raw, |st| {
            if let Some(name) = name {
                st.span.update_name(name);
            }
            if let Some(status) = status {
                st.span.set_status(status);
            }
            st.span.set_attributes(attributes);
        });
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _ctx: LayerContext<'_, S>) {
        let Some(other) = self
            .states
            .with(follows.into_u64(), |st| st.span.span_context().clone())
        else {
            return;
        };
        self.states.with(id.into_u64(), |st| {
            st.span.add_link(other, Vec::new());
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        if !self.records(meta) || is_internal(meta) || super::is_suppressed() {
            return;
        }
        // A contextual event's span is the innermost span entered on this
        // thread: known here without asking the registry, unless that span
        // is one this layer does not track (then its nearest tracked
        // ancestor is the registry's to find).
        if event.is_contextual() {
            match entered::current(self.states.key()) {
                Top::Span {
                    kind: Kind::Unrecorded,
                    ..
                } => return,
                Top::Span {
                    id,
                    kind: Kind::Recording,
                } => {
                    // Built before the span's state is locked: a field's
                    // `Debug` may itself log through `tracing`.
                    return self.add_event(id, build_event(event));
                }
                Top::Empty => return to_inbox(event),
                Top::Span {
                    kind: Kind::Untracked,
                    ..
                }
                | Top::Unknown => {}
            }
        }
        self.on_event_slow(event, &ctx);
    }

    fn on_enter(&self, id: &Id, _ctx: LayerContext<'_, S>) {
        let raw = id.into_u64();
        let layer = self.states.key();
        match self
            .states
            .with(raw, |st| (st.cx(), st.span.is_recording()))
        {
            Some((cx, recording)) => {
                let kind = if recording {
                    Kind::Recording
                } else {
                    Kind::Unrecorded
                };
                entered::enter(layer, raw, kind, Some(cx));
            }
            // Entered all the same: the stack's top stays the current span.
            None => entered::enter(layer, raw, Kind::Untracked, None),
        }
    }

    fn on_exit(&self, id: &Id, _ctx: LayerContext<'_, S>) {
        entered::exit(self.states.key(), id.into_u64());
    }

    fn on_close(&self, id: Id, _ctx: LayerContext<'_, S>) {
        // Ended outside the shard's lock: ending hands the span to the
        // processors, which may export (and log) right away.
        if let Some(mut state) = self.states.remove(id.into_u64()) {
            state.span.end();
        }
    }
}
