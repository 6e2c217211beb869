//! Context: the immutable bag (active span, baggage, typed values) that flows
//! with a request, the per-thread current context and its guard, and the future
//! wrapper that carries a context across `.await` and task/thread hops.

pub mod baggage;
mod current;
mod future;
mod span_context;
pub mod trace_state;

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use crate::trace::SpanInbox;

pub use baggage::{Baggage, BaggageEntry, BaggageError, BaggageProperty};
pub use current::ContextGuard;
#[cfg(feature = "tracing")]
pub(crate) use current::{mark, top_mark, unmark, TopMark};
pub use future::{FutureExt, WithContext};
pub use span_context::{SpanContext, TraceFlags, TraceState};

type Values = Vec<(TypeId, Arc<dyn Any + Send + Sync>)>;

static EMPTY_BAGGAGE: Baggage = Baggage::new();

/// An immutable execution context: the active span's [`SpanContext`], the
/// [`Baggage`] and any typed values. Every `with_*` method returns a new
/// context; cloning is cheap (no allocation, at most reference-count bumps).
///
/// ```
/// use ferrotrace::context::Context;
/// #[derive(Debug, PartialEq)]
/// struct TenantId(u32);
/// let cx = Context::new().with_value(TenantId(7));
/// let _guard = cx.attach();
/// assert_eq!(Context::current().get::<TenantId>(), Some(&TenantId(7)));
/// ```
#[derive(Clone, Default)]
pub struct Context {
    span: Option<SpanContext>,
    baggage: Option<Arc<Baggage>>,
    values: Option<Arc<Values>>,
    /// The active span's inbox, when its owner made one reachable (the HTTP
    /// and gRPC server layers): a slot of its own instead of a typed value,
    /// so a traced request costs one allocation for it, not three.
    inbox: Option<SpanInbox>,
}

impl Context {
    /// An empty context (no span, no baggage, no values).
    pub const fn new() -> Self {
        Context {
            span: None,
            baggage: None,
            values: None,
            inbox: None,
        }
    }

    /// A clone of the calling thread's current context.
    pub fn current() -> Self {
        current::current()
    }

    /// The current context's span context (cloned without cloning the rest).
    #[inline]
    pub(crate) fn current_span_context() -> Option<SpanContext> {
        current::current_span_context()
    }

    /// Makes `self` the thread's current context until the guard is dropped,
    /// which restores the previous one. Guards may be dropped in any order.
    pub fn attach(self) -> ContextGuard {
        current::attach(self)
    }

    /// The active span's context ([`SpanContext::NONE`] when there is none).
    pub fn span_context(&self) -> &SpanContext {
        self.span.as_ref().unwrap_or(&SpanContext::NONE)
    }

    /// True if this context carries a valid span context.
    pub fn has_active_span(&self) -> bool {
        self.span.as_ref().is_some_and(|s| s.is_valid())
    }

    /// A copy whose active span is `span_context` (local or remote).
    pub fn with_span_context(&self, span_context: SpanContext) -> Context {
        Context {
            span: Some(span_context),
            baggage: self.baggage.clone(),
            values: self.values.clone(),
            inbox: self.inbox.clone(),
        }
    }

    /// `self` with its active span replaced by `span_context`: the same as
    /// [`with_span_context`](Self::with_span_context), but the baggage,
    /// values and inbox are moved, not cloned.
    #[cfg(feature = "http")]
    pub(crate) fn into_with_span_context(mut self, span_context: SpanContext) -> Context {
        self.span = Some(span_context);
        self
    }

    /// `self` taken apart for a child span: the active span (when valid),
    /// and what the child's context inherits besides it — baggage and
    /// values — or `None` when there is neither (the usual case: the
    /// `tracing` bridge then keeps no copy). Both are moved out, not cloned.
    /// The inbox is not kept: it only ever serves the span it was made for
    /// (see [`SpanInbox::of`]), never a child's context.
    #[cfg(feature = "tracing")]
    pub(crate) fn into_parent_parts(self) -> (Option<SpanContext>, Option<Box<Context>>) {
        let span = self.span.filter(SpanContext::is_valid);
        if self.baggage.is_none() && self.values.is_none() {
            return (span, None);
        }
        let inherited = Box::new(Context {
            span: None,
            baggage: self.baggage,
            values: self.values,
            inbox: None,
        });
        (span, Some(inherited))
    }

    /// A context whose active span is `span_context`, with what
    /// [`into_parent_parts`](Self::into_parent_parts) kept (clones of it).
    #[cfg(feature = "tracing")]
    pub(crate) fn from_inherited(
        inherited: Option<&Context>,
        span_context: SpanContext,
    ) -> Context {
        match inherited {
            None => Context {
                span: Some(span_context),
                baggage: None,
                values: None,
                inbox: None,
            },
            Some(cx) => Context {
                span: Some(span_context),
                baggage: cx.baggage.clone(),
                values: cx.values.clone(),
                inbox: None,
            },
        }
    }

    /// Replaces the active span of `self` in place (what
    /// [`with_span_context`](Self::with_span_context) returns, nothing moved).
    pub(crate) fn set_span_context(&mut self, span_context: SpanContext) {
        self.span = Some(span_context);
    }

    /// Replaces the baggage of `self` in place (what
    /// [`with_baggage`](Self::with_baggage) returns, nothing moved).
    pub(crate) fn set_baggage(&mut self, baggage: Baggage) {
        self.baggage = (!baggage.is_empty()).then(|| Arc::new(baggage));
    }

    /// Runs `f` with `*self` as the current context, moving it onto the
    /// thread's stack and back (no clone): for a future that attaches its
    /// context on every `poll`.
    #[cfg(feature = "http")]
    #[inline(always)]
    pub(crate) fn run_attached<T>(&mut self, f: impl FnOnce() -> T) -> T {
        current::with_attached(self, f)
    }

    /// A copy without an active span (the next span started in it is a root).
    pub fn without_span(&self) -> Context {
        Context {
            span: None,
            baggage: self.baggage.clone(),
            values: self.values.clone(),
            inbox: self.inbox.clone(),
        }
    }

    /// The baggage (empty when none was set).
    pub fn baggage(&self) -> &Baggage {
        self.baggage.as_deref().unwrap_or(&EMPTY_BAGGAGE)
    }

    /// A copy carrying `baggage` (replacing any previous baggage).
    pub fn with_baggage(&self, baggage: Baggage) -> Context {
        Context {
            span: self.span.clone(),
            baggage: if baggage.is_empty() {
                None
            } else {
                Some(Arc::new(baggage))
            },
            values: self.values.clone(),
            inbox: self.inbox.clone(),
        }
    }

    /// A copy holding `value`, replacing a previous value of the same type.
    pub fn with_value<T: Any + Send + Sync>(&self, value: T) -> Context {
        let mut values: Values = match &self.values {
            Some(v) => v
                .iter()
                .filter(|(t, _)| *t != TypeId::of::<T>())
                .cloned()
                .collect(),
            None => Vec::with_capacity(1),
        };
        values.push((TypeId::of::<T>(), Arc::new(value)));
        Context {
            span: self.span.clone(),
            baggage: self.baggage.clone(),
            values: Some(Arc::new(values)),
            inbox: self.inbox.clone(),
        }
    }

    /// Gives the active span of `self` its `inbox` (see [`SpanInbox`]), in place.
    #[cfg(feature = "http")]
    pub(crate) fn set_inbox(&mut self, inbox: SpanInbox) {
        self.inbox = Some(inbox);
    }

    /// The inbox set with [`Context::set_inbox`].
    pub(crate) fn inbox(&self) -> Option<&SpanInbox> {
        self.inbox.as_ref()
    }

    /// Runs `f` on the current context without cloning it.
    pub(crate) fn map_current<T>(f: impl FnOnce(&Context) -> T) -> T {
        current::with_current(f)
    }

    /// The value of type `T`, if one was set.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values
            .as_ref()?
            .iter()
            .find(|(t, _)| *t == TypeId::of::<T>())
            .and_then(|(_, v)| v.downcast_ref::<T>())
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("span", &self.span)
            .field("baggage", &self.baggage)
            .field("values", &self.values.as_ref().map_or(0, |v| v.len()))
            .finish()
    }
}
