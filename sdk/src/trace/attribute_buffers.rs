//! Attribute lists (and event lists) handed back by the export thread for
//! the next spans.
//!
//! A span's attribute list is allocated on the thread that starts the span
//! and freed on the thread that exports it. With glibc's allocator that pair
//! is the expensive case: the exporting thread's per-thread cache for that
//! size is always full (it never allocates lists), so each free takes the
//! arena's slow path, and the starting thread's cache is always empty, so
//! each allocation does too. Measured on the HTTP server layer's sampled
//! request: ~330 instructions of `_int_free` and consolidation per span on the
//! export thread and ~270 of `_int_malloc` on the calling thread, beside the
//! cache misses of memory that changes threads twice. A span's list of
//! events, and each event's attribute list, are the same case.
//!
//! So the batch processor, once a batch is exported, empties the spans'
//! lists (their values are dropped there, as before) and hands the emptied
//! buffers back in *magazines* of up to [`MAGAZINE`] lists to a shared depot
//! (one for attribute lists, one for event lists); a thread that needs a
//! list takes one from its own magazine and, when that is empty, takes a
//! whole magazine from the depot: one lock per [`MAGAZINE`] spans, not one
//! per span.
//!
//! Bounded: each depot keeps at most [`DEPOT_MAGAZINES`] magazines and each
//! thread one of each kind; only attribute lists with room for
//! [`MIN_CAPACITY`] to [`MAX_CAPACITY`] attributes and event lists with room
//! for [`MIN_EVENTS`] to [`MAX_EVENTS`] events are kept (at most ~1.8 MiB and
//! ~1 MiB in the depots). Past the bounds buffers are freed as before.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::attributes::KeyValue;
use crate::trace::{Event, SpanData};

/// Lists per magazine.
pub const MAGAZINE: usize = 64;
/// Magazines a depot keeps.
pub const DEPOT_MAGAZINES: usize = 16;
/// Smallest attribute list worth keeping (the HTTP layers ask for 10).
pub const MIN_CAPACITY: usize = 8;
/// Largest attribute list kept.
pub const MAX_CAPACITY: usize = 32;
/// Smallest event list kept (what a first `push` allocates).
pub const MIN_EVENTS: usize = 4;
/// Largest event list kept.
pub const MAX_EVENTS: usize = 16;

/// Shared magazines of emptied lists, how many there are (read without the
/// lock), and the capacities kept.
struct Depot<T> {
    stack: Mutex<Vec<Vec<Vec<T>>>>,
    magazines: AtomicUsize,
    min: usize,
    max: usize,
}

static ATTRIBUTES: Depot<KeyValue> = Depot::new(MIN_CAPACITY, MAX_CAPACITY);
static EVENTS: Depot<Event> = Depot::new(MIN_EVENTS, MAX_EVENTS);

thread_local! {
    static ATTRIBUTES_HERE: RefCell<Vec<Vec<KeyValue>>> = const { RefCell::new(Vec::new()) };
    static EVENTS_HERE: RefCell<Vec<Vec<Event>>> = const { RefCell::new(Vec::new()) };
}

/// An empty attribute list with room for at least `capacity` attributes:
/// a handed-back buffer when there is one, else a new one with room for at
/// least [`MIN_CAPACITY`] (so that it can be handed back in turn).
#[inline]
pub(crate) fn take(capacity: usize) -> Vec<KeyValue> {
    if capacity == 0 {
        // Nothing asked for (a `tracing` span without fields): no list.
        return Vec::new();
    }
    let reused = ATTRIBUTES_HERE
        .try_with(|m| ATTRIBUTES.take(&mut m.borrow_mut()))
        .ok()
        .flatten();
    ATTRIBUTES.ready(reused, capacity)
}

/// An empty event list for a span's first event (handed back, or new).
#[inline]
pub(crate) fn take_events() -> Vec<Event> {
    let reused = EVENTS_HERE
        .try_with(|m| EVENTS.take(&mut m.borrow_mut()))
        .ok()
        .flatten();
    EVENTS.ready(reused, 1)
}

/// Takes the attribute lists out of exported spans and their events, and
/// the spans' event lists, empties them and keeps them for [`take`] and
/// [`take_events`] (within the bounds); the spans keep empty lists. A plain
/// loop: this runs for every exported span (an iterator chain cost ~20
/// instructions per span without attributes).
pub(crate) fn give_back(spans: &mut [SpanData]) {
    give_back_to(&ATTRIBUTES, &EVENTS, spans);
}

fn give_back_to(attributes: &Depot<KeyValue>, event_lists: &Depot<Event>, spans: &mut [SpanData]) {
    let mut lists = Gathering::new(attributes);
    let mut events = Gathering::new(event_lists);
    for span in spans {
        lists.offer(&mut span.attributes);
        if !span.events.is_empty() {
            for event in &mut span.events {
                lists.offer(&mut event.attributes);
            }
            events.offer(&mut span.events);
        }
    }
}

/// Keeps these emptied-or-not attribute and event lists for [`take`] and
/// [`take_events`], within the bounds (the OTLP encoder's, which reads the
/// spans and drains their events); lists of other capacities are left
/// where they are.
#[cfg(feature = "otlp")]
pub(crate) fn give_back_lists(lists: &mut [Vec<KeyValue>], event_lists: &mut [Vec<Event>]) {
    let mut gathering = Gathering::new(&ATTRIBUTES);
    for list in lists {
        gathering.offer(list);
    }
    let mut gathering = Gathering::new(&EVENTS);
    for list in event_lists {
        gathering.offer(list);
    }
}

impl<T> Depot<T> {
    const fn new(min: usize, max: usize) -> Self {
        Depot {
            stack: parking_lot::const_mutex(Vec::new()),
            magazines: AtomicUsize::new(0),
            min,
            max,
        }
    }

    /// A list from `here` (a thread's magazine), refilled from the depot
    /// when empty.
    #[inline]
    fn take(&self, here: &mut Vec<Vec<T>>) -> Option<Vec<T>> {
        if let Some(v) = here.pop() {
            return Some(v);
        }
        // Not locked when there is nothing to take (a thread that records
        // faster than spans are exported, or no exporter that hands back).
        if self.magazines.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut depot = self.stack.lock();
        *here = depot.pop()?;
        self.magazines.store(depot.len(), Ordering::Relaxed);
        drop(depot);
        here.pop()
    }

    /// `reused` made ready for `capacity` items, or a new list with room
    /// for this depot's minimum at least.
    #[inline]
    fn ready(&self, reused: Option<Vec<T>>, capacity: usize) -> Vec<T> {
        match reused {
            Some(mut v) => {
                v.reserve(capacity);
                v
            }
            None => Vec::with_capacity(capacity.max(self.min)),
        }
    }

    /// Puts a magazine in the depot; false (and the magazine freed) when
    /// the depot is full.
    fn store(&self, magazine: Vec<Vec<T>>) -> bool {
        let mut depot = self.stack.lock();
        if depot.len() < DEPOT_MAGAZINES {
            depot.push(magazine);
            self.magazines.store(depot.len(), Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    fn lists(&self) -> usize {
        self.stack.lock().iter().map(Vec::len).sum()
    }
}

/// Lists being gathered into magazines for a depot; the last, partial
/// magazine is stored when the gathering ends.
struct Gathering<'d, T> {
    depot: &'d Depot<T>,
    magazine: Vec<Vec<T>>,
    full: bool,
}

impl<'d, T> Gathering<'d, T> {
    fn new(depot: &'d Depot<T>) -> Self {
        Gathering {
            depot,
            magazine: Vec::new(),
            full: false,
        }
    }

    /// Takes `list` (emptied) if the depot may keep it. The check is
    /// inlined into the per-span loop (most spans of some programs have no
    /// attributes and no events); keeping a list is not.
    #[inline(always)]
    fn offer(&mut self, list: &mut Vec<T>) {
        let c = list.capacity();
        if self.full || c < self.depot.min || c > self.depot.max {
            return;
        }
        self.keep(list);
    }

    #[inline(never)]
    fn keep(&mut self, list: &mut Vec<T>) {
        if self.magazine.capacity() == 0 {
            self.magazine.reserve_exact(MAGAZINE);
        }
        let mut list = std::mem::take(list);
        list.clear();
        self.magazine.push(list);
        if self.magazine.len() == MAGAZINE {
            self.full = !self.depot.store(std::mem::take(&mut self.magazine));
        }
    }
}

impl<T> Drop for Gathering<'_, T> {
    fn drop(&mut self) {
        if !self.magazine.is_empty() {
            self.depot.store(std::mem::take(&mut self.magazine));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_all<'a, T: 'a>(depot: &Depot<T>, lists: impl Iterator<Item = &'a mut Vec<T>>) {
        let mut g = Gathering::new(depot);
        for l in lists {
            g.offer(l);
        }
    }

    fn list(capacity: usize, n: usize) -> Vec<KeyValue> {
        let mut v = Vec::with_capacity(capacity);
        for i in 0..n {
            v.push(KeyValue::new("k", format!("v{i}")));
        }
        v
    }

    #[test]
    fn lists_come_back_emptied_and_the_depot_is_bounded() {
        // A depot of its own: the process-wide one serves the other tests.
        let depot = Depot::new(MIN_CAPACITY, MAX_CAPACITY);
        let mut here = Vec::new();
        // Handed back: emptied, capacity kept; lists of other capacities
        // are freed, not kept.
        let kept = list(10, 7);
        let ptr = kept.as_ptr();
        let mut lists = [kept, list(2, 2), list(100, 1)];
        offer_all(&depot, lists.iter_mut());
        assert_eq!(depot.lists(), 1);
        assert_eq!(
            lists.map(|l| (l.len(), l.capacity())),
            [(0, 0), (2, 2), (1, 100)]
        );
        let v = depot.ready(depot.take(&mut here), 10);
        assert_eq!((v.as_ptr(), v.len(), v.capacity()), (ptr, 0, 10));
        // Nothing left: a new list, with room for the minimum at least.
        assert!(depot.take(&mut here).is_none());
        assert_eq!(depot.ready(None, 2).capacity(), MIN_CAPACITY);
        assert_eq!(depot.ready(None, 20).capacity(), 20);
        // A request for more room than the list has grows it.
        offer_all(&depot, [list(8, 1)].iter_mut());
        assert!(depot.ready(depot.take(&mut here), 20).capacity() >= 20);

        // A thread takes a whole magazine at once, then serves itself.
        let mut lists: Vec<_> = (0..MAGAZINE + 3).map(|_| list(10, 1)).collect();
        offer_all(&depot, lists.iter_mut());
        assert_eq!(depot.lists(), MAGAZINE + 3);
        assert!(depot.take(&mut here).is_some());
        let left = depot.lists();
        assert!(left == MAGAZINE || left == 3, "{left}");
        assert_eq!(here.len() + left + 1, MAGAZINE + 3);

        // Bounded: never more than DEPOT_MAGAZINES magazines.
        for _ in 0..DEPOT_MAGAZINES + 5 {
            let mut lists: Vec<_> = (0..MAGAZINE).map(|_| list(10, 1)).collect();
            offer_all(&depot, lists.iter_mut());
        }
        assert!(depot.stack.lock().len() <= DEPOT_MAGAZINES);
        assert_eq!(depot.magazines.load(Ordering::Relaxed), DEPOT_MAGAZINES);
        assert!(depot.lists() <= DEPOT_MAGAZINES * MAGAZINE);
    }

    #[test]
    fn spans_and_their_events_hand_back_their_lists() {
        use crate::trace::{Event, SpanKind, Status};
        let event = |capacity| Event {
            name: "e".into(),
            timestamp_ns: 1,
            attributes: list(capacity, 1),
            dropped_attributes_count: 0,
        };
        let mut spans = vec![SpanData {
            span_context: Default::default(),
            parent_span_id: crate::ids::SpanId::INVALID,
            parent_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "s".into(),
            start_time_ns: 1,
            end_time_ns: 2,
            attributes: list(10, 3),
            dropped_attributes_count: 0,
            events: {
                let mut events = Vec::with_capacity(MIN_EVENTS);
                events.extend([event(8), event(2), event(12)]);
                events
            },
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Status::Unset,
            resource: Default::default(),
            scope: Default::default(),
        }];
        let (lists, events) = (Depot::new(MIN_CAPACITY, MAX_CAPACITY), Depot::new(4, 16));
        give_back_to(&lists, &events, &mut spans);
        assert_eq!(lists.lists(), 3, "the span's list and two of its events'");
        assert_eq!(events.lists(), 1, "the span's event list");
        assert!(spans[0].events.is_empty() && spans[0].events.capacity() == 0);
        assert!(spans[0].attributes.is_empty());
    }

    #[test]
    fn spans_started_without_attributes_get_lists_that_can_go_back() {
        use crate::export::{ExportResult, SpanExporter};
        use std::sync::{Arc, Mutex};
        // Sees each exported span's list as recorded (no clone).
        #[derive(Clone, Default)]
        struct Lists(Arc<Mutex<Vec<(usize, usize)>>>);
        impl SpanExporter for Lists {
            fn export(&self, mut batch: Vec<SpanData>) -> ExportResult {
                for s in &batch {
                    let a = &s.attributes;
                    self.0.lock().unwrap().push((a.len(), a.capacity()));
                }
                give_back(&mut batch);
                assert!(batch.iter().all(|s| s.attributes.is_empty()));
                Ok(())
            }
        }
        let lists = Lists::default();
        let provider = crate::trace::TracerProvider::builder()
            .with_simple_exporter(lists.clone())
            .build();
        let tracer = provider.tracer("t");
        let mut span = tracer.start("s");
        span.set_attribute("a", 1_i64);
        span.set_attribute("b", "x");
        span.end();
        let seen = lists.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, 2, "every attribute kept");
        assert!(seen[0].1 >= MIN_CAPACITY, "{seen:?}");
    }
}
