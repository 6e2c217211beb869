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
//! - A chunk's `claim` word holds the arming's sequence number (low 32 bits
//!   of `s`, high half) and the number of claimed indices (low half). A
//!   producer claims an index with a compare-and-swap that succeeds only
//!   while the word still names the arming it read from `cur` and the count
//!   is below `cap`; its index is its slot to write, then it counts the write
//!   in `written`. The producer taking the last index moves `cur` on (and
//!   wakes the batch thread). A full or sealed chunk makes the producer help
//!   move `cur` on and try the next chunk once; a chunk still armed for an
//!   older sequence (being exported) means the queue is full and the span is
//!   dropped; one already re-armed for a later sequence means `cur` moved on
//!   while this producer was descheduled, and it reads `cur` again.
//! - The batch thread seals a partial chunk by adding `cap` to the count (no
//!   later claim can succeed), moves `cur` on, waits until `written` equals
//!   the claims made before the seal (producers are mid-write for
//!   nanoseconds), takes the buffer as a `Vec` and re-arms the slot for
//!   `s + K` with a fresh buffer: `written`, `armed` and the buffer are
//!   published by the `Release` store of the new arming's `claim` word.
//! - Why the sequence number is in the word a producer claims with: with a
//!   bare count, a producer that read `cur` = `s`, was descheduled while the
//!   chunk was exported and its slot re-armed for `s + K`, then claimed,
//!   would write its span into chunk `s + K` ahead of `cur`; with no further
//!   traffic `cur` would never reach it, and the span waited indefinitely (a
//!   stress run of `concurrent_producers_lose_and_duplicate_nothing` found it
//!   about once in 1,000 runs).
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
    /// `tag(armed)` in the high half, the next index to claim in the low half
    /// (`>= cap` once the chunk is full or sealed); [`RETIRED`] once retired.
    claim: AtomicU64,
    /// Completed writes of successful claims.
    written: AtomicUsize,
    /// Buffer of a `Vec<SpanData>` with capacity `cap` (null once retired).
    storage: AtomicPtr<SpanData>,
    cap: usize,
}

/// A `claim` word's count (low half).
const COUNT: u64 = u32::MAX as u64;
/// The `claim` word of a retired chunk: a count no claim can pass.
const RETIRED: u64 = u64::MAX;

/// The `claim` word of a fresh arming for sequence `seq`.
#[inline]
fn armed_word(seq: u64) -> u64 {
    (seq & COUNT) << 32
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
    /// `chunks.len() - 1` when that is a power of two (the usual case: the
    /// queue and batch sizes are), else `u64::MAX`: a sequence number's slot
    /// is then a mask, not a 64-bit division (tens of cycles) on every push.
    mask: u64,
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
                    claim: AtomicU64::new(armed_word(i as u64)),
                    written: AtomicUsize::new(0),
                    storage: AtomicPtr::new(fresh_buffer(cap)),
                    cap,
                }
            })
            .collect();
        let mask = if chunks.len().is_power_of_two() {
            chunks.len() as u64 - 1
        } else {
            u64::MAX
        };
        SpanQueue {
            cur: Padded(AtomicU64::new(0)),
            chunks,
            mask,
        }
    }

    #[inline]
    fn chunk(&self, seq: u64) -> &Chunk {
        let i = if self.mask != u64::MAX {
            seq & self.mask
        } else {
            seq % self.chunks.len() as u64
        };
        &self.chunks[i as usize]
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
        'chunk: for _ in 0..2 {
            let s = self.cur.0.load(Ordering::Acquire);
            let c = self.chunk(s);
            let tag = armed_word(s);
            let mut word = c.claim.load(Ordering::Acquire);
            loop {
                if word & !COUNT != tag {
                    if word != RETIRED && (((word >> 32) as u32).wrapping_sub(s as u32) as i32) > 0
                    {
                        // Re-armed for a later sequence: `cur` moved on.
                        continue 'chunk;
                    }
                    // Still being exported (or retired): the queue is full.
                    break 'chunk;
                }
                let i = (word & COUNT) as usize;
                if i >= c.cap {
                    let _ =
                        self.cur
                            .0
                            .compare_exchange(s, s + 1, Ordering::SeqCst, Ordering::Relaxed);
                    continue 'chunk;
                }
                match c.claim.compare_exchange_weak(
                    word,
                    word + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        let base = c.storage.load(Ordering::Acquire);
                        // SAFETY: index `i` of arming `s`'s buffer (capacity
                        // `cap`) is ours alone; the batch thread reads it only
                        // after our `written` increment below, and cannot
                        // re-arm the slot before it. Ownership moves to the
                        // slot: the caller forgets its copy (see the doc
                        // comment).
                        unsafe { std::ptr::copy_nonoverlapping(span, base.add(i), 1) };
                        c.written.fetch_add(1, Ordering::Release);
                        let filled = i + 1 == c.cap;
                        if filled {
                            // SeqCst pairs with the batch thread's reset of its
                            // wake-up flag and its SeqCst read of `cur`, so a
                            // full chunk never waits for the schedule delay.
                            let _ = self.cur.0.compare_exchange(
                                s,
                                s + 1,
                                Ordering::SeqCst,
                                Ordering::Relaxed,
                            );
                        }
                        return Pushed::Queued(filled);
                    }
                    Err(now) => word = now,
                }
            }
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
        c.claim.load(Ordering::Acquire) & !COUNT != armed_word(s)
            || c.claim.load(Ordering::Acquire) & COUNT == 0
    }

    /// Batch thread only: seals the chunk being filled if it holds any span
    /// and moves `cur` past it. Returns its sequence number and span count.
    pub(crate) fn seal_current(&self) -> Option<(u64, usize)> {
        let s = self.current();
        let c = self.chunk(s);
        let word = c.claim.load(Ordering::Acquire);
        if word & !COUNT != armed_word(s) || word & COUNT == 0 {
            return None;
        }
        // The count stays far below the low half's limit: claims stop at
        // `cap`, and only this thread adds `cap` once per arming.
        let before = (c.claim.fetch_add(c.cap as u64, Ordering::AcqRel) & COUNT) as usize;
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
        // producer can claim in it any more (its count is `>= cap`), and the slot
        // gets a new buffer below before claims are allowed again.
        let spans = unsafe { Vec::from_raw_parts(base, n, c.cap) };
        let next = seq + self.chunks.len() as u64;
        c.storage.store(fresh_buffer(c.cap), Ordering::Relaxed);
        c.written.store(0, Ordering::Relaxed);
        c.armed.store(next, Ordering::Relaxed);
        // Publishes the three stores above to the next successful claim.
        c.claim.store(armed_word(next), Ordering::Release);
        spans
    }

    /// Batch thread only, at shutdown: closes every chunk (later pushes get
    /// [`Pushed::Full`]) and returns how many spans were still in them (they
    /// are dropped here).
    pub(crate) fn retire(&self) -> u64 {
        let mut late = 0u64;
        for c in self.chunks.iter() {
            let before = (c.claim.swap(RETIRED, Ordering::AcqRel) & COUNT) as usize;
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
