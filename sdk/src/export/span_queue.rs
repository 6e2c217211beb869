//! The batch span processor's queue: a ring of batch-sized chunks that
//! producers write finished spans into directly.
//!
//! Why not a channel of `SpanData`: a `SpanData` is ~250 bytes, and a channel
//! moves it by value into its slot, out of the slot, through `Result` and
//! into the batch `Vec` — about four copies per span on the batch thread
//! (a callgrind profile put 25 of 44 million instructions of the batch
//! thread's `drain` in `memcpy`). Here each chunk's storage *is* the buffer of
//! the `Vec<SpanData>` the exporter receives: a producer writes its span into
//! a claimed slot once, and a full chunk goes to the exporter without any
//! per-span work on the batch thread. The batch thread only seals partial
//! chunks (schedule delay, flush, shutdown) and re-arms exported chunks with
//! fresh storage.
//!
//! Protocol (all producers are lock-free and never wait):
//! - `cur` is the sequence number of the chunk being filled; chunk `s` lives
//!   in slot `s % K` and is usable while that slot is `armed` for `s`.
//! - A producer claims an index with one `fetch_add` on `claimed`; an index
//!   below `cap` is its slot to write, then it counts the write in `written`.
//!   The producer taking the last index moves `cur` on (and wakes the batch
//!   thread). An index at or past `cap` means full or sealed: the producer
//!   helps move `cur` on and tries the next chunk once; if that chunk is not
//!   armed (still exporting) the queue is full and the span is dropped.
//! - The batch thread seals a partial chunk by adding `cap` to `claimed` (no
//!   later claim can succeed), moves `cur` on, waits until `written` equals
//!   the claims made before the seal (producers are mid-write for
//!   nanoseconds), takes the buffer as a `Vec` and re-arms the slot for
//!   `s + K` with a fresh buffer: `written`, `armed` and the buffer are
//!   published by the `Release` store that resets `claimed` to 0.
//! - A producer that read an old `cur` and claims after the slot was re-armed
//!   lands in the re-armed chunk: a valid claim (the seal of that chunk will
//!   wait for it), so no span is lost or written into a buffer already taken.
//!
//! Bounded: the chunks hold at most `max_queue_size` spans in total (the last
//! chunk is shorter when the queue is not a multiple of the batch size); like
//! the bounded channel before it, the storage is allocated up front.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::SpanData;

/// Keeps the producers' shared `cur` off the chunks' cache lines.
#[repr(align(128))]
struct Padded<T>(T);

#[repr(align(128))]
struct Chunk {
    /// Sequence number this slot currently holds; `u64::MAX` once retired.
    armed: AtomicU64,
    /// Next index to claim; `>= cap` once the chunk is full or sealed.
    claimed: AtomicUsize,
    /// Completed writes of successful claims.
    written: AtomicUsize,
    /// Buffer of a `Vec<SpanData>` with capacity `cap` (null once retired).
    storage: AtomicPtr<SpanData>,
    cap: usize,
}

/// Result of [`SpanQueue::push`].
pub(crate) enum Pushed {
    /// Queued; `true` if this span filled a chunk (wake the batch thread).
    Queued(bool),
    /// The queue is full (or retired): the span stays the caller's.
    Full,
}

pub(crate) struct SpanQueue {
    cur: Padded<AtomicU64>,
    chunks: Box<[Chunk]>,
}

// SAFETY: the buffers are only written through claimed, disjoint indices
// (one producer per index per arming) and only read by the batch thread
// after every claimed index was written (the `written` count, Acquire);
// `SpanData` is `Send`.
unsafe impl Send for SpanQueue {}
// SAFETY: as above; every shared field is atomic.
unsafe impl Sync for SpanQueue {}

/// A `Vec<SpanData>` buffer of capacity `cap`, leaked to the chunk. Its pages
/// are touched here, on the batch thread: a batch-sized buffer is ~128 KiB,
/// which the allocator often serves from pages it returned to the system, and
/// the first write to each page would otherwise be a page fault on a
/// producer's thread.
fn fresh_buffer(cap: usize) -> *mut SpanData {
    let mut v = std::mem::ManuallyDrop::new(Vec::<SpanData>::with_capacity(cap));
    let base = v.as_mut_ptr().cast::<u8>();
    let bytes = cap * std::mem::size_of::<SpanData>();
    let mut off = 0;
    while off < bytes {
        // SAFETY: `off < bytes`, inside the allocation; the slots are
        // uninitialised storage, so writing a byte there is allowed.
        unsafe { base.add(off).write_volatile(0) };
        off += 4096;
    }
    v.as_mut_ptr()
}

impl SpanQueue {
    /// A queue of `capacity` spans in chunks of `batch` (`1 <= batch <= capacity`).
    pub(crate) fn new(capacity: usize, batch: usize) -> Self {
        let batch = batch.clamp(1, capacity.max(1));
        let capacity = capacity.max(batch);
        let chunks: Box<[Chunk]> = (0..capacity.div_ceil(batch))
            .map(|i| {
                let cap = batch.min(capacity - i * batch);
                Chunk {
                    armed: AtomicU64::new(i as u64),
                    claimed: AtomicUsize::new(0),
                    written: AtomicUsize::new(0),
                    storage: AtomicPtr::new(fresh_buffer(cap)),
                    cap,
                }
            })
            .collect();
        SpanQueue {
            cur: Padded(AtomicU64::new(0)),
            chunks,
        }
    }

    #[inline]
    fn chunk(&self, seq: u64) -> &Chunk {
        &self.chunks[(seq % self.chunks.len() as u64) as usize]
    }

    /// Queues a copy of `*span` without blocking; on [`Pushed::Queued`] the
    /// queue owns the span and the caller must forget its own (no drop), on
    /// [`Pushed::Full`] the caller keeps it. Taking a reference copies the
    /// span straight from the caller's argument into its slot: a move into
    /// a local first cost one more copy of ~250 bytes per span.
    #[inline]
    pub(crate) fn push(&self, span: &SpanData) -> Pushed {
        // Two tries: the current chunk, and the next one if the current was
        // full (its filler may not have moved `cur` on yet).
        for _ in 0..2 {
            let s = self.cur.0.load(Ordering::Acquire);
            let c = self.chunk(s);
            if c.armed.load(Ordering::Acquire) != s {
                // Still being exported (or retired): the queue is full.
                break;
            }
            let i = c.claimed.fetch_add(1, Ordering::AcqRel);
            if i < c.cap {
                let base = c.storage.load(Ordering::Acquire);
                // SAFETY: index `i` of this arming's buffer (capacity `cap`)
                // is ours alone; the batch thread reads it only after our
                // `written` increment below. Ownership moves to the slot:
                // the caller forgets its copy (see the doc comment).
                unsafe { std::ptr::copy_nonoverlapping(span, base.add(i), 1) };
                c.written.fetch_add(1, Ordering::Release);
                let filled = i + 1 == c.cap;
                if filled {
                    // SeqCst pairs with the batch thread's reset of its
                    // wake-up flag and its SeqCst read of `cur`, so a full
                    // chunk never waits for the schedule delay.
                    let _ =
                        self.cur
                            .0
                            .compare_exchange(s, s + 1, Ordering::SeqCst, Ordering::Relaxed);
                }
                return Pushed::Queued(filled);
            }
            let _ = self
                .cur
                .0
                .compare_exchange(s, s + 1, Ordering::SeqCst, Ordering::Relaxed);
        }
        Pushed::Full
    }

    /// The sequence number of the chunk being filled.
    pub(crate) fn current(&self) -> u64 {
        self.cur.0.load(Ordering::SeqCst)
    }

    /// Spans queued (a snapshot: producers and the batch thread move on).
    pub(crate) fn len(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| c.armed.load(Ordering::Relaxed) != u64::MAX)
            .map(|c| c.written.load(Ordering::Relaxed).min(c.cap))
            .sum()
    }

    /// True if the chunk being filled holds no span (a snapshot).
    #[cfg(test)]
    pub(crate) fn current_is_empty(&self) -> bool {
        let s = self.current();
        let c = self.chunk(s);
        c.armed.load(Ordering::Acquire) != s || c.claimed.load(Ordering::Acquire) == 0
    }

    /// Batch thread only: seals the chunk being filled if it holds any span
    /// and moves `cur` past it. Returns its sequence number and span count.
    pub(crate) fn seal_current(&self) -> Option<(u64, usize)> {
        let s = self.current();
        let c = self.chunk(s);
        if c.armed.load(Ordering::Acquire) != s || c.claimed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let before = c.claimed.fetch_add(c.cap, Ordering::AcqRel);
        let _ = self
            .cur
            .0
            .compare_exchange(s, s + 1, Ordering::SeqCst, Ordering::Relaxed);
        Some((s, before.min(c.cap)))
    }

    /// Batch thread only: the spans of chunk `seq` (which is behind `cur`:
    /// full, or sealed with `len` spans), once every claimed slot is written;
    /// the slot is re-armed for `seq + K` with a fresh buffer.
    pub(crate) fn take(&self, seq: u64, len: Option<usize>) -> Vec<SpanData> {
        let c = self.chunk(seq);
        debug_assert_eq!(c.armed.load(Ordering::Relaxed), seq);
        let n = len.unwrap_or(c.cap);
        wait_for_writes(&c.written, n);
        let base = c.storage.load(Ordering::Relaxed);
        // SAFETY: `base` is a `Vec<SpanData>` buffer of capacity `cap` whose
        // first `n` slots were written (Acquire on `written` above); no
        // producer can claim in it any more (`claimed >= cap`), and the slot
        // gets a new buffer below before claims are allowed again.
        let spans = unsafe { Vec::from_raw_parts(base, n, c.cap) };
        c.storage.store(fresh_buffer(c.cap), Ordering::Relaxed);
        c.written.store(0, Ordering::Relaxed);
        c.armed
            .store(seq + self.chunks.len() as u64, Ordering::Relaxed);
        // Publishes the three stores above to the next successful claim.
        c.claimed.store(0, Ordering::Release);
        spans
    }

    /// Batch thread only, at shutdown: closes every chunk (later pushes get
    /// [`Pushed::Full`]) and returns how many spans were still in them (they
    /// are dropped here).
    pub(crate) fn retire(&self) -> u64 {
        let mut late = 0u64;
        for c in self.chunks.iter() {
            let before = c.claimed.swap(usize::MAX / 2, Ordering::AcqRel);
            c.armed.store(u64::MAX, Ordering::Release);
            let base = c.storage.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if base.is_null() {
                continue;
            }
            let n = before.min(c.cap);
            wait_for_writes(&c.written, n);
            late += n as u64;
            // SAFETY: as in `take`; the slot is retired, so the buffer is not
            // used again.
            drop(unsafe { Vec::from_raw_parts(base, n, c.cap) });
        }
        late
    }
}

impl Drop for SpanQueue {
    fn drop(&mut self) {
        for c in self.chunks.iter_mut() {
            let base = *c.storage.get_mut();
            if !base.is_null() {
                // No producer is left (they borrow the queue): every claimed
                // slot below `written` holds a span, the rest are unclaimed.
                let n = (*c.written.get_mut()).min(c.cap);
                // SAFETY: a buffer of capacity `cap` with `n` written spans.
                drop(unsafe { Vec::from_raw_parts(base, n, c.cap) });
            }
        }
    }
}

/// Waits (batch thread only) until `n` claimed slots are written: producers
/// finish a write within nanoseconds unless they were preempted mid-write.
fn wait_for_writes(written: &AtomicUsize, n: usize) {
    let mut spins = 0u32;
    while written.load(Ordering::Acquire) < n {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else if spins < 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::SpanContext;
    use crate::trace::span_data::{SpanKind, Status};

    fn span(i: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::default(),
            parent_span_id: crate::ids::SpanId::INVALID,
            parent_is_remote: false,
            span_kind: SpanKind::Internal,
            name: format!("s{i}").into(),
            start_time_ns: i,
            end_time_ns: i,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Status::Unset,
            resource: crate::resource::Resource::new(Vec::new()).into(),
            scope: Default::default(),
        }
    }

    fn push(q: &SpanQueue, s: SpanData) -> Pushed {
        let r = q.push(&s);
        if let Pushed::Queued(_) = r {
            std::mem::forget(s);
        }
        r
    }

    fn drain(q: &SpanQueue, next: &mut u64) -> Vec<u64> {
        let mut out = Vec::new();
        let sealed = q.seal_current();
        while *next < q.current() {
            let len = sealed.filter(|(s, _)| s == next).map(|(_, n)| n);
            out.extend(q.take(*next, len).into_iter().map(|s| s.start_time_ns));
            *next += 1;
        }
        out
    }

    #[test]
    fn chunks_fill_in_order_and_a_full_queue_hands_the_span_back() {
        // 10 spans in chunks of 4, 4 and 2.
        let q = SpanQueue::new(10, 4);
        let mut filled = 0;
        for i in 0..10 {
            match push(&q, span(i)) {
                Pushed::Queued(f) => filled += usize::from(f),
                Pushed::Full => panic!("span {i} refused below capacity"),
            }
        }
        assert_eq!(filled, 3);
        assert!(matches!(push(&q, span(10)), Pushed::Full));
        let mut next = 0;
        assert_eq!(drain(&q, &mut next), (0..10).collect::<Vec<_>>());
        // Re-armed: the queue takes spans again, and a partial chunk is sealed.
        for i in 20..25 {
            assert!(matches!(push(&q, span(i)), Pushed::Queued(_)));
        }
        assert_eq!(drain(&q, &mut next), (20..25).collect::<Vec<_>>());
        assert!(q.current_is_empty());
        assert!(matches!(push(&q, span(30)), Pushed::Queued(false)));
        assert_eq!(q.retire(), 1);
        assert!(matches!(push(&q, span(31)), Pushed::Full));
    }

    #[test]
    fn concurrent_producers_lose_and_duplicate_nothing() {
        let q = std::sync::Arc::new(SpanQueue::new(64, 8));
        let per = 20_000u64;
        let producers: Vec<_> = (0..3)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut refused = 0u64;
                    for i in 0..per {
                        if let Pushed::Full = push(&q, span(t * per + i)) {
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut seen = Vec::new();
        let mut next = 0;
        while !producers.iter().all(|p| p.is_finished()) {
            seen.extend(drain(&q, &mut next));
        }
        let refused: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        seen.extend(drain(&q, &mut next));
        seen.extend(drain(&q, &mut next));
        let total = seen.len() as u64;
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len() as u64, total, "a span was exported twice");
        assert_eq!(total + refused, 3 * per);
    }
}
