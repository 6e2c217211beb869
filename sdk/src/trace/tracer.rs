//! Tracers and the span builder.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::attributes::KeyValue;
use crate::context::{Context, SpanContext, TraceFlags};
use crate::ids::{new_span_id, new_trace_and_span_id};
use crate::trace::provider::ProviderInner;
use crate::trace::sampler::SamplingDecision;
use crate::trace::span::{Recording, Span};
use crate::trace::span_data::{InstrumentationScope, Link, SpanKind, Status};

/// Starts spans for one instrumentation scope. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    pub(crate) provider: Arc<ProviderInner>,
    pub(crate) scope: Arc<InstrumentationScope>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("scope", &self.scope)
            .finish()
    }
}

impl Tracer {
    pub(crate) fn new(provider: Arc<ProviderInner>, scope: Arc<InstrumentationScope>) -> Self {
        Tracer { provider, scope }
    }

    /// The instrumentation scope.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Starts a span named `name`, child of the current context's span (if any).
    #[inline]
    pub fn start(&self, name: impl Into<Cow<'static, str>>) -> Span {
        self.span_builder(name).start()
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
        self.attributes.extend(attrs);
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
        }
        .filter(SpanContext::is_valid);
        let provider = &*tracer.provider;
        if provider.disabled {
            // OTEL_SDK_DISABLED: pass the parent's context through, like the
            // OpenTelemetry API's no-op tracer.
            return Span::non_recording(parent.unwrap_or_default());
        }
        // W3C Trace Context Level 2: a trace id generated here is random (the
        // per-thread CSPRNG), so its `random` flag is set; a continued trace
        // keeps what its parent said about the same trace id.
        let (trace_id, span_id, random) = match &parent {
            Some(p) => (
                p.trace_id(),
                new_span_id(),
                p.trace_flags().to_u8() & TraceFlags::RANDOM.to_u8(),
            ),
            None => {
                let (t, s) = new_trace_and_span_id();
                (t, s, TraceFlags::RANDOM.to_u8())
            }
        };
        let result =
            provider
                .sampler
                .decide(parent.as_ref(), trace_id, &name, kind, &attributes, &links);
        let sampled = result.decision == SamplingDecision::RecordAndSample;
        let trace_state = match result.trace_state {
            Some(ts) => ts,
            None => parent
                .as_ref()
                .map(|p| p.trace_state().clone())
                .unwrap_or_default(),
        };
        let span_context = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(random | u8::from(sampled)),
            false,
            trace_state,
        );
        let recording = result.decision != SamplingDecision::Drop
            && !provider.processors.is_empty()
            && !provider.is_shutdown.load(Ordering::Relaxed);
        if !recording {
            return Span::non_recording(span_context);
        }

        let now = crate::time::now_ns();
        let start_time_ns = start_time_ns.unwrap_or(now);
        let watch = if sampled {
            provider.watchdog.as_ref().and_then(|w| {
                let static_name = match &name {
                    Cow::Borrowed(s) => Some(*s),
                    Cow::Owned(_) => None,
                };
                w.state.register(
                    now,
                    span_context.trace_id(),
                    span_context.span_id(),
                    static_name,
                )
            })
        } else {
            None
        };
        // Built directly in its box: the state is a few hundred bytes, and a
        // stack copy into the box shows up in the sampled-span profile.
        let mut rec = Box::new(Recording {
            tracer: tracer.clone(),
            name,
            kind,
            start_time_ns,
            parent_span_id: parent.as_ref().map(|p| p.span_id()).unwrap_or_default(),
            parent_is_remote: parent.as_ref().is_some_and(|p| p.is_remote()),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Status::Unset,
            watch,
            inbox: None,
        });
        let limits = provider.limits;
        if !attributes.is_empty() || !result.attributes.is_empty() {
            rec.attributes
                .reserve(attributes.len() + result.attributes.len());
            for kv in attributes.into_iter().chain(result.attributes) {
                rec.push_attribute(kv, &limits);
            }
        }
        for link in links {
            rec.push_link(link, &limits);
        }
        if sampled {
            for p in &provider.processors {
                p.on_start(&span_context, &rec.name);
            }
        }
        Span::recording(span_context, rec)
    }
}
