//! Tracers and the span builder.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::attributes::KeyValue;
use crate::context::{Context, SpanContext, TraceFlags};
use crate::ids::{new_span_id, new_trace_and_span_id, SpanId, TraceId};
use crate::trace::interned::Interned;
use crate::trace::limits::limit_attributes;
use crate::trace::provider::ProviderInner;
use crate::trace::sampler::SamplingDecision;
use crate::trace::span::Span;
use crate::trace::span_data::{InstrumentationScope, Link, SpanData, SpanKind, Status};

/// Starts spans for one instrumentation scope. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    pub(crate) provider: Arc<ProviderInner>,
    pub(crate) scope: Interned<InstrumentationScope>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("scope", &self.scope)
            .finish()
    }
}

impl Tracer {
    pub(crate) fn new(provider: Arc<ProviderInner>, scope: Interned<InstrumentationScope>) -> Self {
        Tracer { provider, scope }
    }

    /// The instrumentation scope.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Starts a span named `name`, child of the current context's span (if any).
    #[inline]
    pub fn start(&self, name: impl Into<Cow<'static, str>>) -> Span {
        self.start_span(
            name.into(),
            SpanKind::Internal,
            Context::current_span_context(),
            NoParts,
        )
    }

    /// Starts a span whose name and attributes are built only if it records:
    /// the sampler decides first from the parent and the trace id (every
    /// built-in sampler can), so an unsampled request costs no strings. A
    /// [`Sampler::Custom`](crate::trace::Sampler::Custom) sampler may look at
    /// the name and attributes, so for it `details` runs before the decision.
    /// `keys_distinct`: `details` never gives a key twice (the limits then
    /// skip the search for repeated keys).
    #[cfg(feature = "http")]
    pub(crate) fn start_lazy(
        &self,
        kind: SpanKind,
        parent: Option<SpanContext>,
        keys_distinct: bool,
        details: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>),
    ) -> Span {
        self.start_lazy_with(parent, || {
            let (name, attributes) = details();
            LazyDetails {
                name,
                kind,
                attributes,
                keys_distinct,
            }
        })
    }

    /// [`Tracer::start_lazy`] for callers that can name the span before
    /// building its attributes, cheaply: a sampler that decides by name (the
    /// remote sampler's per-operation rates) is asked with the name alone,
    /// so a span it drops never builds its attributes. `name` also returns
    /// what `attributes` reuses of its work; `details` is the two in one
    /// call, for a span the sampler kept without its name (one call instead
    /// of two on the sampled path). Samplers that need no name decide first,
    /// as in `start_lazy`.
    #[cfg(feature = "http")]
    pub(crate) fn start_lazy_named<N>(
        &self,
        kind: SpanKind,
        parent: Option<SpanContext>,
        keys_distinct: bool,
        details: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>),
        name: impl FnOnce() -> (Cow<'static, str>, N),
        attributes: impl FnOnce(N) -> Vec<KeyValue>,
    ) -> Span {
        let parent = parent.filter(SpanContext::is_valid);
        let provider = &*self.provider;
        if provider.disabled {
            return Span::non_recording(parent.unwrap_or_default());
        }
        let ids = new_ids(parent.as_ref());
        match provider
            .sampler
            .quick_decision(parent.as_ref(), ids.0, None, false)
        {
            Some((decision, None)) if decision == SamplingDecision::Drop || !self.records() => {
                Span::non_recording(unrecorded_context(ids.0, ids.1, ids.2, decision, parent))
            }
            None => self.start_lazy_by_name(kind, parent, keys_distinct, ids, name, attributes),
            quick => {
                let (n, attributes) = details();
                self.start_named(kind, parent, keys_distinct, ids, quick, n, || attributes)
            }
        }
    }

    /// [`Tracer::start_lazy_named`] when the sampler needs more than the
    /// parent and the trace id: the name is built and the sampler asked
    /// again with it (the remote sampler decides there); the attributes only
    /// if the span records or a custom sampler must see them.
    #[cfg(feature = "http")]
    #[inline(never)]
    fn start_lazy_by_name<N>(
        &self,
        kind: SpanKind,
        parent: Option<SpanContext>,
        keys_distinct: bool,
        ids: (TraceId, SpanId, u8),
        name: impl FnOnce() -> (Cow<'static, str>, N),
        attributes: impl FnOnce(N) -> Vec<KeyValue>,
    ) -> Span {
        let (n, reuse) = name();
        let quick = self
            .provider
            .sampler
            .decision_by_name(parent.as_ref(), ids.0, &n);
        self.start_named(kind, parent, keys_distinct, ids, quick, n, || {
            attributes(reuse)
        })
    }

    /// A lazily started span once named, by the quick decision (`None`: the
    /// sampler decides with the attributes).
    #[cfg(feature = "http")]
    #[allow(clippy::too_many_arguments)]
    fn start_named(
        &self,
        kind: SpanKind,
        parent: Option<SpanContext>,
        keys_distinct: bool,
        ids: (TraceId, SpanId, u8),
        quick: Option<(SamplingDecision, Option<crate::context::TraceState>)>,
        name: Cow<'static, str>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        match quick {
            Some((decision, None)) => {
                if decision == SamplingDecision::Drop || !self.records() {
                    return Span::non_recording(unrecorded_context(
                        ids.0, ids.1, ids.2, decision, parent,
                    ));
                }
                self.build(
                    name,
                    kind,
                    parent,
                    ids,
                    decision,
                    None,
                    (attributes(), keys_distinct),
                    Vec::new(),
                    Vec::new(),
                    None,
                )
            }
            Some((decision, Some(trace_state))) => {
                if decision == SamplingDecision::Drop || !self.records() {
                    return non_recording_with_state(ids, decision, trace_state);
                }
                self.start_with_state(
                    name,
                    kind,
                    parent,
                    ids,
                    (decision, trace_state),
                    (attributes(), Vec::new(), None),
                )
            }
            None => self.start_decided_by_sampler(
                name,
                kind,
                parent,
                ids,
                attributes(),
                Vec::new(),
                None,
            ),
        }
    }

    /// [`Tracer::start_lazy`] for callers whose details also say the kind
    /// (the `tracing` bridge: `otel.kind` is one of the span's fields).
    #[cfg(any(feature = "http", feature = "tracing"))]
    pub(crate) fn start_lazy_with(
        &self,
        parent: Option<SpanContext>,
        details: impl FnOnce() -> LazyDetails,
    ) -> Span {
        let parent = parent.filter(SpanContext::is_valid);
        let provider = &*self.provider;
        if provider.disabled {
            return Span::non_recording(parent.unwrap_or_default());
        }
        let (trace_id, span_id, random) = new_ids(parent.as_ref());
        match provider
            .sampler
            .quick_decision(parent.as_ref(), trace_id, None, false)
        {
            Some((decision, None)) => {
                if decision == SamplingDecision::Drop || !self.records() {
                    return Span::non_recording(unrecorded_context(
                        trace_id, span_id, random, decision, parent,
                    ));
                }
                let d = details();
                self.build(
                    d.name,
                    d.kind,
                    parent,
                    (trace_id, span_id, random),
                    decision,
                    None,
                    (d.attributes, d.keys_distinct),
                    Vec::new(),
                    Vec::new(),
                    None,
                )
            }
            Some((decision, Some(trace_state))) => {
                let d = details();
                self.start_with_state(
                    d.name,
                    d.kind,
                    parent,
                    (trace_id, span_id, random),
                    (decision, trace_state),
                    (d.attributes, Vec::new(), None),
                )
            }
            None => {
                let d = details();
                self.start_decided_by_sampler(
                    d.name,
                    d.kind,
                    parent,
                    (trace_id, span_id, random),
                    d.attributes,
                    Vec::new(),
                    None,
                )
            }
        }
    }

    /// True when a sampled span would be recorded at all (processors
    /// present, not shut down).
    #[inline]
    fn records(&self) -> bool {
        !self.provider.processors.is_empty() && !self.provider.is_shutdown.load(Ordering::Relaxed)
    }

    /// The span start path shared by [`Tracer::start`] and [`SpanBuilder`].
    /// `parts` are taken apart only when the span records or a custom
    /// sampler needs them: [`Tracer::start`]'s empty lists are then never
    /// built nor dropped on the unsampled path (~28 instructions of ~170).
    #[inline]
    pub(crate) fn start_span(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        parent: Option<SpanContext>,
        parts: impl StartParts,
    ) -> Span {
        let parent = parent.filter(SpanContext::is_valid);
        let provider = &*self.provider;
        if provider.disabled {
            // OTEL_SDK_DISABLED: pass the parent's context through, like the
            // OpenTelemetry API's no-op tracer.
            return Span::non_recording(parent.unwrap_or_default());
        }
        let ids = new_ids(parent.as_ref());
        // One call per kind of name, each with a constant flag: the flag
        // computed ahead of a single call made every sampler's start path
        // dearer (+10 instructions per `AlwaysOff` span), though only the
        // remote sampler reads it.
        let quick = match &name {
            Cow::Borrowed(text) => {
                provider
                    .sampler
                    .quick_decision(parent.as_ref(), ids.0, Some(text), true)
            }
            Cow::Owned(text) => {
                provider
                    .sampler
                    .quick_decision(parent.as_ref(), ids.0, Some(text), false)
            }
        };
        match quick {
            Some((decision, None)) => {
                if decision == SamplingDecision::Drop || !self.records() {
                    // The unsampled path: no clock read, no allocation.
                    parts.discard();
                    return Span::non_recording(unrecorded_context(
                        ids.0, ids.1, ids.2, decision, parent,
                    ));
                }
                let (attributes, links, start_time_ns) = parts.into_parts();
                self.build(
                    name,
                    kind,
                    parent,
                    ids,
                    decision,
                    None,
                    (attributes, false),
                    Vec::new(),
                    links,
                    start_time_ns,
                )
            }
            Some((decision, Some(trace_state))) => self.start_with_state(
                name,
                kind,
                parent,
                ids,
                (decision, trace_state),
                parts.into_parts(),
            ),
            None => {
                let (attributes, links, start_time_ns) = parts.into_parts();
                self.start_decided_by_sampler(
                    name,
                    kind,
                    parent,
                    ids,
                    attributes,
                    links,
                    start_time_ns,
                )
            }
        }
    }

    /// A quick decision that replaces the trace state (the remote sampler's
    /// kept span, recording its `ot=th:..`). Out of line: inlined, the
    /// state's handling made every other sampler's unsampled span ~12
    /// instructions dearer.
    #[inline(never)]
    fn start_with_state(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        parent: Option<SpanContext>,
        ids: (TraceId, SpanId, u8),
        (decision, trace_state): (SamplingDecision, crate::context::TraceState),
        (attributes, links, start_time_ns): (Vec<KeyValue>, Vec<Link>, Option<u64>),
    ) -> Span {
        if decision == SamplingDecision::Drop || !self.records() {
            return non_recording_with_state(ids, decision, trace_state);
        }
        self.build(
            name,
            kind,
            parent,
            ids,
            decision,
            Some(trace_state),
            (attributes, false),
            Vec::new(),
            links,
            start_time_ns,
        )
    }

    /// A custom sampler's full decision (it may add attributes and replace the trace state).
    #[allow(clippy::too_many_arguments)]
    fn start_decided_by_sampler(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        parent: Option<SpanContext>,
        ids: (TraceId, SpanId, u8),
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
        start_time_ns: Option<u64>,
    ) -> Span {
        let result =
            self.provider
                .sampler
                .decide(parent.as_ref(), ids.0, &name, kind, &attributes, &links);
        if result.decision == SamplingDecision::Drop || !self.records() {
            let trace_state = match result.trace_state {
                Some(ts) => ts,
                None => parent
                    .map(SpanContext::into_trace_state)
                    .unwrap_or_default(),
            };
            return non_recording_with_state(ids, result.decision, trace_state);
        }
        self.build(
            name,
            kind,
            parent,
            ids,
            result.decision,
            result.trace_state,
            (attributes, false),
            result.attributes,
            links,
            start_time_ns,
        )
    }

    /// Builds the recording state of a span that records.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn build(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        parent: Option<SpanContext>,
        (trace_id, span_id, random): (TraceId, SpanId, u8),
        decision: SamplingDecision,
        trace_state: Option<crate::context::TraceState>,
        (mut attributes, keys_distinct): (Vec<KeyValue>, bool),
        sampler_attributes: Vec<KeyValue>,
        links: Vec<Link>,
        start_time_ns: Option<u64>,
    ) -> Span {
        let provider = &*self.provider;
        let sampled = decision == SamplingDecision::RecordAndSample;
        let (parent_span_id, parent_is_remote, parent_state) = match parent {
            Some(p) => (p.span_id(), p.is_remote(), p.into_trace_state()),
            None => (SpanId::INVALID, false, Default::default()),
        };
        let span_context = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(random | u8::from(sampled)),
            false,
            trace_state.unwrap_or(parent_state),
        );
        let now = crate::time::now_ns();
        let watch = if sampled {
            provider.watchdog.as_ref().and_then(|w| {
                let static_name = match &name {
                    Cow::Borrowed(s) => Some(*s),
                    Cow::Owned(_) => None,
                };
                w.state.register(now, trace_id, span_id, static_name)
            })
        } else {
            None
        };
        // The caller's attribute list becomes the span's (no copy) once the
        // limits are applied in place.
        let sampler_attributes_were_empty = sampler_attributes.is_empty();
        if !sampler_attributes_were_empty {
            attributes.extend(sampler_attributes);
        }
        let dropped_attributes_count = if attributes.is_empty() {
            0
        } else {
            limit_attributes(
                &mut attributes,
                provider.limits.max_attributes_per_span,
                provider.limits.max_attribute_value_length,
                // Sampler attributes may repeat the caller's keys.
                keys_distinct && sampler_attributes_were_empty,
            )
        };
        let mut slot = Span::recording_box();
        let p = slot.as_mut_ptr();
        // The record is written in place, in its final form (the `SpanData`
        // the processors get): nothing is assembled on the stack and copied.
        // SAFETY: `p` points to the box's uninitialised `Recording`; each
        // field is written exactly once before `assume_init`.
        let mut rec = unsafe {
            std::ptr::addr_of_mut!((*p).data).write(SpanData {
                span_context: span_context.clone(),
                parent_span_id,
                parent_is_remote,
                span_kind: kind,
                name,
                start_time_ns: start_time_ns.unwrap_or(now),
                end_time_ns: 0,
                attributes,
                dropped_attributes_count,
                events: Vec::new(),
                dropped_events_count: 0,
                links: Vec::new(),
                dropped_links_count: 0,
                status: Status::Unset,
                resource: provider.resource.clone(),
                scope: self.scope.clone(),
            });
            std::ptr::addr_of_mut!((*p).provider).write(Arc::clone(&self.provider));
            std::ptr::addr_of_mut!((*p).watch).write(watch);
            std::ptr::addr_of_mut!((*p).inbox).write(None);
            slot.assume_init()
        };
        if !links.is_empty() {
            let limits = provider.limits;
            for link in links {
                rec.push_link(link, &limits);
            }
        }
        if sampled && provider.observes_start {
            for p in &provider.processors {
                p.on_start(&span_context, &rec.data.name);
            }
        }
        Span::recording(span_context, rec)
    }

    /// Starts a span whose parent is `cx`'s span (a root span if `cx` has none).
    pub fn start_with_context(&self, name: impl Into<Cow<'static, str>>, cx: &Context) -> Span {
        self.span_builder(name).with_parent_context(cx).start()
    }

    /// A builder for a span with kind, attributes, links, start time or explicit parent.
    pub fn span_builder(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder<'_> {
        SpanBuilder {
            tracer: self,
            name: name.into(),
            kind: SpanKind::Internal,
            attributes: Vec::new(),
            links: Vec::new(),
            start_time_ns: None,
            parent: Parent::Current,
        }
    }

    /// Runs `f` inside a new span that is the current context while `f` runs,
    /// then ends the span.
    ///
    /// ```
    /// # let provider = ferrotrace::trace::TracerProvider::builder().build();
    /// let tracer = provider.tracer("app");
    /// let n = tracer.in_span("work", |span| {
    ///     span.set_attribute("items", 3);
    ///     3
    /// });
    /// assert_eq!(n, 3);
    /// ```
    pub fn in_span<T>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: impl FnOnce(&mut Span) -> T,
    ) -> T {
        let mut span = self.start(name);
        let _guard = span.make_current();
        f(&mut span)
    }
}

/// New ids: the parent's trace id and a new span id, or a new trace; and the
/// W3C Trace Context Level 2 random flag: a trace id generated here is random
/// (the per-thread CSPRNG), a continued trace keeps what its parent said.
#[inline]
fn new_ids(parent: Option<&SpanContext>) -> (TraceId, SpanId, u8) {
    match parent {
        Some(p) => (
            p.trace_id(),
            new_span_id(),
            p.trace_flags().to_u8() & TraceFlags::RANDOM.to_u8(),
        ),
        None => {
            let (t, s) = new_trace_and_span_id();
            (t, s, TraceFlags::RANDOM.to_u8())
        }
    }
}

/// The context of a span that does not record: a new span id, the sampled
/// flag as the sampler decided (a provider without processors still
/// propagates a sampled decision), the parent's trace state kept (moved, not
/// cloned).
#[inline]
fn unrecorded_context(
    trace_id: TraceId,
    span_id: SpanId,
    random: u8,
    decision: SamplingDecision,
    parent: Option<SpanContext>,
) -> SpanContext {
    let sampled = u8::from(decision == SamplingDecision::RecordAndSample);
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(random | sampled),
        false,
        parent
            .map(SpanContext::into_trace_state)
            .unwrap_or_default(),
    )
}

/// A span that does not record, with the trace state a sampler chose (the
/// remote sampler's quick decision, a custom sampler's full one): the sampled
/// flag as decided. Shared by both paths so they cannot drift apart.
#[inline]
fn non_recording_with_state(
    (trace_id, span_id, random): (TraceId, SpanId, u8),
    decision: SamplingDecision,
    trace_state: crate::context::TraceState,
) -> Span {
    let sampled = u8::from(decision == SamplingDecision::RecordAndSample);
    Span::non_recording(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(random | sampled),
        false,
        trace_state,
    ))
}

/// What a lazily started span is built from (see [`Tracer::start_lazy_with`]).
#[cfg(any(feature = "http", feature = "tracing"))]
pub(crate) struct LazyDetails {
    pub(crate) name: Cow<'static, str>,
    pub(crate) kind: SpanKind,
    pub(crate) attributes: Vec<KeyValue>,
    /// No key appears twice in `attributes` (the caller built them so):
    /// the limits skip the search for repeated keys.
    pub(crate) keys_distinct: bool,
}

enum Parent {
    Current,
    Explicit(Option<SpanContext>),
}

/// Describes a span before it starts. Created by [`Tracer::span_builder`].
pub struct SpanBuilder<'t> {
    tracer: &'t Tracer,
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    links: Vec<Link>,
    start_time_ns: Option<u64>,
    parent: Parent,
}

impl<'t> SpanBuilder<'t> {
    /// Sets the span kind (default `Internal`).
    pub fn with_kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }
    /// Attributes known at start (visible to the sampler).
    pub fn with_attributes(mut self, attrs: impl IntoIterator<Item = KeyValue>) -> Self {
        if self.attributes.is_empty() {
            // Collecting a `Vec` reuses its allocation: the list becomes the span's.
            self.attributes = attrs.into_iter().collect();
        } else {
            self.attributes.extend(attrs);
        }
        self
    }
    /// Links known at start (visible to the sampler).
    pub fn with_links(mut self, links: impl IntoIterator<Item = Link>) -> Self {
        self.links.extend(links);
        self
    }
    /// An explicit start time, nanoseconds since the Unix epoch.
    pub fn with_start_time_ns(mut self, ns: u64) -> Self {
        self.start_time_ns = Some(ns);
        self
    }
    /// Uses `cx`'s span as parent instead of the current context's.
    pub fn with_parent_context(mut self, cx: &Context) -> Self {
        self.parent = Parent::Explicit(cx.has_active_span().then(|| cx.span_context().clone()));
        self
    }
    /// Uses `sc` as parent.
    pub fn with_parent_span_context(mut self, sc: SpanContext) -> Self {
        self.parent = Parent::Explicit(Some(sc));
        self
    }
    /// Starts a new trace, ignoring the current context.
    pub fn as_root(mut self) -> Self {
        self.parent = Parent::Explicit(None);
        self
    }

    /// Starts the span. An unsampled span allocates nothing.
    pub fn start(self) -> Span {
        let SpanBuilder {
            tracer,
            name,
            kind,
            attributes,
            links,
            start_time_ns,
            parent,
        } = self;
        let parent = match parent {
            Parent::Current => Context::current_span_context(),
            Parent::Explicit(sc) => sc,
        };
        tracer.start_span(name, kind, parent, (attributes, links, start_time_ns))
    }
}

/// What a span starts with besides its name, kind and parent: its
/// attributes, links and explicit start time, taken apart only for a span
/// that records (or a custom sampler's decision, which sees them).
pub(crate) trait StartParts {
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Link>, Option<u64>);
    /// Drops the parts of a span that does not record: each list on its
    /// own, inline (a closure's drop glue holding them was called out of
    /// line, +17 instructions per unsampled span).
    fn discard(self);
}

/// [`Tracer::start`]'s parts: none, so its empty lists are made only for a
/// span that records.
pub(crate) struct NoParts;

impl StartParts for NoParts {
    #[inline(always)]
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Link>, Option<u64>) {
        (Vec::new(), Vec::new(), None)
    }
    #[inline(always)]
    fn discard(self) {}
}

impl StartParts for (Vec<KeyValue>, Vec<Link>, Option<u64>) {
    #[inline(always)]
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Link>, Option<u64>) {
        self
    }
    #[inline(always)]
    fn discard(self) {
        let (attributes, links, _) = self;
        drop(attributes);
        drop(links);
    }
}
