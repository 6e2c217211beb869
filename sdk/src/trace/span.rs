//! The span: an operation in progress, owned by the code that started it.
//!
//! A span is not shared: mutators take `&mut self`, so there is no lock inside.
//! An unsampled span is just its [`SpanContext`] (no allocation); a recording
//! span keeps its state in one box, handed to the processors when it ends.

use std::borrow::Cow;
use std::cell::Cell;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::attributes::{Key, KeyValue, Value};
use crate::context::{Context, ContextGuard, SpanContext};
use crate::export::SpanSlot;
use crate::ids::SpanId;
use crate::trace::limits::{limit_attributes, truncate_value, SpanLimits};
use crate::trace::provider::ProviderInner;
use crate::trace::span_data::{Event, Link, SpanData, Status};
use crate::trace::watchdog::WatchToken;

/// The recording state of a sampled (or record-only) span.
///
/// The finished-span record is built here once, in its final form: `data`
/// is the [`SpanData`] the processors receive (only `end_time_ns` is filled
/// in at the end), so ending a span copies it once, into the batch queue's
/// slot, instead of assembling a second record field by field first.
pub(crate) struct Recording {
    pub(crate) data: SpanData,
    pub(crate) provider: Arc<ProviderInner>,
    pub(crate) watch: Option<WatchToken>,
    /// Set once [`Span::inbox`] was called: updates from code that only sees
    /// the context, applied when the span ends.
    pub(crate) inbox: Option<Arc<Mutex<InboxState>>>,
}

/// Applies the count and length limits to an attribute list. A key already
/// present is overwritten in place (that never counts as a drop).
fn push_limited(
    attrs: &mut Vec<KeyValue>,
    dropped: &mut u32,
    mut kv: KeyValue,
    max_count: u32,
    max_len: Option<usize>,
) {
    truncate_value(&mut kv.value, max_len);
    if attrs.capacity() == 0 {
        // A span started without attributes: a handed-back list, not one
        // grown from nothing (see `attribute_buffers`).
        *attrs = crate::trace::attribute_buffers::take(1);
    }
    if let Some(e) = attrs.iter_mut().find(|e| e.key == kv.key) {
        e.value = kv.value;
    } else if attrs.len() < max_count as usize {
        attrs.push(kv);
    } else {
        *dropped = dropped.saturating_add(1);
    }
}

fn limited_list(
    mut attrs: Vec<KeyValue>,
    max_count: u32,
    max_len: Option<usize>,
) -> (Vec<KeyValue>, u32) {
    let dropped = limit_attributes(&mut attrs, max_count, max_len, false);
    (attrs, dropped)
}

/// Recycled recording boxes, per thread: a sampled span's state is a few
/// hundred bytes, and taking a box from here instead of the allocator (and
/// returning it when the span ends) saves a malloc/free pair per span.
/// Bounded: beyond `POOL_MAX` boxes, ended spans free theirs.
const POOL_MAX: usize = 32;

/// A thread's recycled boxes: a fixed array and a length in `Cell`s, so a
/// take or a give-back is a few instructions (a `RefCell<Vec<_>>` cost a
/// borrow flag and a capacity check each way).
struct Pool {
    len: Cell<usize>,
    slots: [Cell<*mut MaybeUninit<Recording>>; POOL_MAX],
}

impl Drop for Pool {
    fn drop(&mut self) {
        for slot in &self.slots[..self.len.get()] {
            // SAFETY: the first `len` slots hold boxes given back by
            // `Span::recycle` (owned, uninitialised); each is freed once.
            drop(unsafe { Box::from_raw(slot.get()) });
        }
    }
}

thread_local! {
    static POOL: Pool = const {
        Pool {
            len: Cell::new(0),
            slots: [const { Cell::new(std::ptr::null_mut()) }; POOL_MAX],
        }
    };
}

impl Recording {
    fn set_status(&mut self, status: Status) {
        match (&self.data.status, &status) {
            (Status::Ok, _) | (_, Status::Unset) => {}
            _ => self.data.status = status,
        }
    }

    /// Closes the inbox and applies what it holds, in arrival order.
    #[cold]
    fn apply_inbox(&mut self, inbox: &Mutex<InboxState>) {
        let (items, dropped) = {
            let mut st = inbox.lock();
            st.closed = true;
            (std::mem::take(&mut st.items), st.dropped_events)
        };
        let limits = self.provider.limits;
        self.data.dropped_events_count = self.data.dropped_events_count.saturating_add(dropped);
        for item in items {
            match item {
                InboxItem::Event {
                    name,
                    timestamp_ns,
                    attributes,
                } => self.push_event(name, timestamp_ns, attributes, &limits),
                InboxItem::Status(status) => self.set_status(status),
            }
        }
    }

    pub(crate) fn push_attribute(&mut self, kv: KeyValue, limits: &SpanLimits) {
        push_limited(
            &mut self.data.attributes,
            &mut self.data.dropped_attributes_count,
            kv,
            limits.max_attributes_per_span,
            limits.max_attribute_value_length,
        );
    }

    pub(crate) fn push_link(&mut self, link: Link, limits: &SpanLimits) {
        if self.data.links.len() >= limits.max_links_per_span as usize {
            self.data.dropped_links_count = self.data.dropped_links_count.saturating_add(1);
            return;
        }
        let (attributes, dropped) = limited_list(
            link.attributes,
            limits.max_attributes_per_link,
            limits.max_attribute_value_length,
        );
        self.data.links.push(Link {
            span_context: link.span_context,
            attributes,
            dropped_attributes_count: link.dropped_attributes_count.saturating_add(dropped),
        });
    }

    fn push_event(
        &mut self,
        name: Cow<'static, str>,
        timestamp_ns: u64,
        attributes: Vec<KeyValue>,
        limits: &SpanLimits,
    ) {
        if self.data.events.len() >= limits.max_events_per_span as usize {
            self.data.dropped_events_count = self.data.dropped_events_count.saturating_add(1);
            return;
        }
        let (attributes, dropped) = limited_list(
            attributes,
            limits.max_attributes_per_event,
            limits.max_attribute_value_length,
        );
        if self.data.events.capacity() == 0 {
            // A handed-back list, not one freed on the export thread and
            // allocated here again (see `attribute_buffers`).
            self.data.events = crate::trace::attribute_buffers::take_events();
        }
        self.data.events.push(Event {
            name,
            timestamp_ns,
            attributes,
            dropped_attributes_count: dropped,
        });
    }
}

/// A span in progress. Dropping it ends it; ending twice is a no-op and
/// changes after the end are ignored.
///
/// ```
/// use ferrotrace::export::InMemorySpanExporter;
/// use ferrotrace::trace::{Status, TracerProvider};
/// let exporter = InMemorySpanExporter::default();
/// let provider = TracerProvider::builder().with_simple_exporter(exporter.clone()).build();
/// let mut span = provider.tracer("t").start("op");
/// span.set_attribute("retries", 2);
/// span.add_event("cache miss", vec![]);
/// span.set_status(Status::Ok);
/// span.end();
/// span.set_attribute("ignored", true);
/// assert_eq!(exporter.finished_spans()[0].attributes.len(), 1);
/// ```
pub struct Span {
    span_context: SpanContext,
    /// `ManuallyDrop`: `Drop for Span` ends the span, which always leaves
    /// `None` here, so the field needs no drop glue of its own (a call per
    /// span otherwise).
    inner: ManuallyDrop<Option<Box<Recording>>>,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("span_context", &self.span_context)
            .field("name", &self.inner.as_ref().map(|r| &r.data.name))
            .field("recording", &self.inner.is_some())
            .finish()
    }
}

impl Span {
    pub(crate) fn non_recording(span_context: SpanContext) -> Self {
        Span {
            span_context,
            inner: ManuallyDrop::new(None),
        }
    }

    /// An uninitialised recording box from this thread's pool (or a new
    /// one); the tracer writes the record into it field by field, so the
    /// ~300-byte record is not assembled on the stack and copied in.
    #[inline]
    pub(crate) fn recording_box() -> Box<MaybeUninit<Recording>> {
        let pooled = POOL
            .try_with(|p| {
                let n = p.len.get();
                (n > 0).then(|| {
                    p.len.set(n - 1);
                    p.slots[n - 1].get()
                })
            })
            .ok()
            .flatten();
        match pooled {
            // SAFETY: slots below `len` hold owned boxes given back by
            // `recycle`; taking it out of the pool (len - 1) makes it ours.
            Some(raw) => unsafe { Box::from_raw(raw) },
            None => Box::new_uninit(),
        }
    }

    /// Returns a record's allocation to this thread's pool (or frees it).
    ///
    /// # Safety
    /// `raw` comes from `Box::into_raw` of a `Box<Recording>` whose value has
    /// been moved out (or needs no drop); it is not used afterwards.
    #[inline]
    unsafe fn recycle(raw: *mut Recording) {
        // SAFETY: the caller guarantees `raw` is an owned, moved-out box;
        // `MaybeUninit<T>` has `T`'s layout, so the box is owned, uninitialised.
        let raw = raw.cast::<MaybeUninit<Recording>>();
        let kept = POOL
            .try_with(|p| {
                let n = p.len.get();
                if n < POOL_MAX {
                    p.slots[n].set(raw);
                    p.len.set(n + 1);
                    true
                } else {
                    false
                }
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: as above; the pool did not take it, so it is freed here.
            drop(unsafe { Box::from_raw(raw) });
        }
    }

    pub(crate) fn recording(span_context: SpanContext, rec: Box<Recording>) -> Self {
        Span {
            span_context,
            inner: ManuallyDrop::new(Some(rec)),
        }
    }

    /// A non-recording span that only carries `span_context` (e.g. to make a
    /// remote parent the active span).
    pub fn from_span_context(span_context: SpanContext) -> Self {
        Span::non_recording(span_context)
    }

    /// This span's identity.
    pub fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    /// True while the span records changes (sampled or record-only, not yet ended).
    #[inline]
    pub fn is_recording(&self) -> bool {
        self.inner.is_some()
    }

    /// The current context with this span as the active span.
    pub fn context(&self) -> Context {
        Context::current().with_span_context(self.span_context.clone())
    }

    /// Makes this span the current span until the guard is dropped, so spans
    /// started meanwhile become its children. The span itself stays owned by
    /// the caller (end it after dropping the guard, or let both drop).
    pub fn make_current(&self) -> ContextGuard {
        self.context().attach()
    }

    /// Sets an attribute (replacing a previous value for the same key).
    #[inline]
    pub fn set_attribute(&mut self, key: impl Into<Key>, value: impl Into<Value>) {
        if let Some(rec) = self.inner.as_deref_mut() {
            let limits = rec.provider.limits;
            rec.push_attribute(KeyValue::new(key, value), &limits);
        }
    }

    /// Sets several attributes.
    pub fn set_attributes(&mut self, attrs: impl IntoIterator<Item = KeyValue>) {
        if let Some(rec) = self.inner.as_deref_mut() {
            let limits = rec.provider.limits;
            for kv in attrs {
                rec.push_attribute(kv, &limits);
            }
        }
    }

    /// Adds an event timestamped now.
    pub fn add_event(&mut self, name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>) {
        if self.inner.is_some() {
            self.add_event_with_timestamp(name, crate::time::now_ns(), attributes);
        }
    }

    /// Adds an event with an explicit timestamp (nanoseconds since the Unix epoch).
    pub fn add_event_with_timestamp(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        timestamp_ns: u64,
        attributes: Vec<KeyValue>,
    ) {
        if let Some(rec) = self.inner.as_deref_mut() {
            let limits = rec.provider.limits;
            rec.push_event(name.into(), timestamp_ns, attributes, &limits);
        }
    }

    /// Adds a link to another span.
    pub fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        if let Some(rec) = self.inner.as_deref_mut() {
            let limits = rec.provider.limits;
            rec.push_link(
                Link {
                    span_context,
                    attributes,
                    dropped_attributes_count: 0,
                },
                &limits,
            );
        }
    }

    /// Sets the status with OpenTelemetry's precedence: `Ok` is final, `Unset`
    /// is ignored, `Error` replaces `Unset` or an earlier `Error`.
    pub fn set_status(&mut self, status: Status) {
        if let Some(rec) = self.inner.as_deref_mut() {
            rec.set_status(status);
        }
    }

    /// A handle through which code that cannot reach this span — only the
    /// current [`Context`] — can add events to it and set its status, e.g. the
    /// `tracing` bridge recording a `tracing::warn!` in a handler under the
    /// HTTP server layer. Put it in the context that is made current
    /// (`cx.with_value(inbox)`); what arrives is applied, in order and under
    /// the span limits, when the span ends. `None` for a span that does not
    /// record. The span itself stays lock-free: only the inbox has a lock.
    ///
    /// ```
    /// use ferrotrace::export::InMemorySpanExporter;
    /// use ferrotrace::trace::{SpanInbox, TracerProvider};
    /// use ferrotrace::Context;
    ///
    /// let exporter = InMemorySpanExporter::default();
    /// let provider = TracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    /// let mut span = provider.tracer("t").start("request");
    /// let inbox = span.inbox().unwrap();
    /// let cx = span.context().with_value(inbox);
    /// {
    ///     let _g = cx.attach();
    ///     // Somewhere deeper, with only the context at hand:
    ///     if let Some(inbox) = SpanInbox::current() {
    ///         inbox.add_event("cache miss", vec![]);
    ///     }
    /// }
    /// span.end();
    /// assert_eq!(exporter.finished_spans()[0].events[0].name, "cache miss");
    /// ```
    pub fn inbox(&mut self) -> Option<SpanInbox> {
        let rec = self.inner.as_deref_mut()?;
        let max_events = rec.provider.limits.max_events_per_span as usize;
        let shared = rec
            .inbox
            .get_or_insert_with(|| {
                Arc::new(Mutex::new(InboxState {
                    closed: false,
                    items: Vec::new(),
                    dropped_events: 0,
                    max_events,
                }))
            })
            .clone();
        Some(SpanInbox {
            span_id: self.span_context.span_id(),
            shared,
        })
    }

    /// Records an error: an `exception` event with `exception.type`,
    /// `exception.message` and `exception.stacktrace` (captured here), and sets
    /// the status to `Error` (subject to precedence).
    pub fn record_error<E: std::error::Error + ?Sized>(&mut self, err: &E) {
        if self.inner.is_none() {
            return;
        }
        let message = err.to_string();
        let stacktrace = std::backtrace::Backtrace::force_capture().to_string();
        self.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", std::any::type_name::<E>()),
                KeyValue::new("exception.message", message.clone()),
                KeyValue::new("exception.stacktrace", stacktrace),
            ],
        );
        self.set_status(Status::error(message));
    }

    /// Renames the span.
    pub fn update_name(&mut self, name: impl Into<Cow<'static, str>>) {
        if let Some(rec) = self.inner.as_deref_mut() {
            rec.data.name = name.into();
        }
    }

    /// Ends the span now.
    #[inline]
    pub fn end(&mut self) {
        self.end_inner(None);
    }

    /// Ends the span at `end_ns` (nanoseconds since the Unix epoch; clamped to
    /// the start time so durations are never negative).
    pub fn end_with_timestamp(&mut self, end_ns: u64) {
        self.end_inner(Some(end_ns));
    }

    #[inline]
    fn end_inner(&mut self, end_ns: Option<u64>) {
        if let Some(rec) = self.inner.take() {
            self.finish(rec, end_ns);
        }
    }

    fn finish(&mut self, mut rec: Box<Recording>, end_ns: Option<u64>) {
        if let Some(inbox) = rec.inbox.take() {
            rec.apply_inbox(&inbox);
        }
        let end = match end_ns {
            Some(t) => t,
            None => crate::time::now_ns(),
        };
        rec.data.end_time_ns = end.max(rec.data.start_time_ns);
        if let Some(t) = rec.watch {
            // SAFETY: `rec.provider` keeps the watchdog that issued `t` alive.
            unsafe { t.release() };
        }
        let raw = Box::into_raw(rec);
        // The record is handed to the processors where it is (`SpanSlot`):
        // the batch processor copies it once, into its queue's slot; the box
        // then goes back to the pool.
        // SAFETY: `raw` comes from a live `Box<Recording>` that we own. Its
        // owning fields are each moved out exactly once: `provider` here,
        // `data` by the slot (consumed, or dropped in place, before
        // `recycle`); `inbox` was taken above (it holds `None`) and `watch`
        // is `Copy`. `recycle` then treats the allocation as uninitialised.
        let provider = unsafe { std::ptr::read(&(*raw).provider) };
        // SAFETY: see above; the slot owns `data` from here.
        let slot = unsafe { SpanSlot::new(std::ptr::addr_of_mut!((*raw).data)) };
        match &provider.processors[..] {
            // The usual pipeline: one processor, handed the record in place.
            [only] if self.span_context.is_sampled() => only.on_end_in_place(slot),
            processors => hand_to_all(processors, slot, self.span_context.is_sampled()),
        }
        // SAFETY: every owned field was moved out above (a processor that
        // panicked skips this: the allocation leaks, nothing is freed twice).
        unsafe { Span::recycle(raw) };
    }
}

/// Several processors (earlier ones get a clone, the last the record in
/// place), none, or a record-only span (visible to code that checks
/// `is_recording`, never exported): out of the one-processor path.
#[cold]
#[inline(never)]
fn hand_to_all(
    processors: &[Box<dyn crate::export::SpanProcessor>],
    slot: SpanSlot<'_>,
    sampled: bool,
) {
    if !sampled {
        drop(slot);
        return;
    }
    match processors.split_last() {
        Some((last, rest)) => {
            for p in rest {
                p.on_end((*slot).clone());
            }
            last.on_end_in_place(slot);
        }
        None => drop(slot),
    }
}

pub(crate) struct InboxState {
    /// The span has ended: later updates are ignored.
    closed: bool,
    items: Vec<InboxItem>,
    /// Events refused because the inbox already held `max_events`.
    dropped_events: u32,
    max_events: usize,
}

enum InboxItem {
    Event {
        name: Cow<'static, str>,
        timestamp_ns: u64,
        attributes: Vec<KeyValue>,
    },
    Status(Status),
}

/// Adds events to, and sets the status of, a span owned elsewhere. See
/// [`Span::inbox`]. Cloning is cheap; updates after the span ended are ignored.
#[derive(Clone)]
pub struct SpanInbox {
    span_id: SpanId,
    shared: Arc<Mutex<InboxState>>,
}

impl std::fmt::Debug for SpanInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanInbox")
            .field("span_id", &self.span_id)
            .finish()
    }
}

impl SpanInbox {
    /// The inbox of the current context's active span, if that span put one
    /// there. An inbox inherited from an outer span (a context derived for a
    /// child span keeps the parent's values) is not returned.
    pub fn current() -> Option<SpanInbox> {
        Context::map_current(Self::of)
    }

    /// Like [`SpanInbox::current`], for `cx`.
    pub fn of(cx: &Context) -> Option<SpanInbox> {
        let inbox = cx.inbox().or_else(|| cx.get::<SpanInbox>())?;
        (cx.has_active_span() && cx.span_context().span_id() == inbox.span_id)
            .then(|| inbox.clone())
    }

    /// The id of the span this inbox feeds.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Adds an event timestamped now. Beyond the span's event limit the
    /// event is dropped and counted in the span's `dropped_events_count`.
    pub fn add_event(&self, name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>) {
        let timestamp_ns = crate::time::now_ns();
        let mut st = self.shared.lock();
        if st.closed {
            return;
        }
        let events = st
            .items
            .iter()
            .filter(|i| matches!(i, InboxItem::Event { .. }))
            .count();
        if events >= st.max_events {
            st.dropped_events = st.dropped_events.saturating_add(1);
            return;
        }
        st.items.push(InboxItem::Event {
            name: name.into(),
            timestamp_ns,
            attributes,
        });
    }

    /// Sets the span's status, with the precedence of [`Span::set_status`].
    pub fn set_status(&self, status: Status) {
        let mut st = self.shared.lock();
        if !st.closed {
            st.items.push(InboxItem::Status(status));
        }
    }
}

impl Drop for Span {
    #[inline]
    fn drop(&mut self) {
        self.end_inner(None);
    }
}
