//! String attribute values without a copy per span: values that repeat at
//! a call site — a `tracing` callsite's field (`db.system = "postgresql"`,
//! `http.route = "/orders/{id}"`, an event's constant message), or the
//! HTTP server layer's `server.address` and `user_agent.original` — are kept
//! once for the life of the process and handed out as `&'static str`.
//!
//! The `tracing` bridge gets string values as `&str` borrowed for the call,
//! and the HTTP layer reads them from the request: recording one used to
//! mean an allocation on the calling thread and a free on the export thread,
//! per value, per span. Here each thread remembers, per *slot* (a callsite
//! and field, or one of the HTTP layer's attributes), the first
//! [`VALUES_PER_SLOT`] distinct values it saw there, interned: the next value
//! is compared with them (a few instructions each) and, when equal, recorded
//! as `StringValue::Static`. A further distinct value marks the slot as
//! varying and it is copied from then on (a slot's look-up costs little more
//! than a hash probe then). So a slot interns at most [`VALUES_PER_SLOT`]
//! values, whatever its traffic.
//!
//! Bounded: at most [`MAX_INTERNED`] strings per process (deduplicated by
//! content, each at most [`MAX_VALUE_LEN`] bytes: ≤ 512 KiB in all) and
//! [`MAX_SLOTS_PER_THREAD`] slots per thread; past either bound values are
//! copied as before. [`interned_value_count`] reports the process-wide count.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
#[cfg(feature = "tracing")]
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
#[cfg(feature = "tracing")]
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Most strings interned per process.
pub const MAX_INTERNED: usize = 4096;
/// Longest value interned (bytes); longer values are always copied.
pub const MAX_VALUE_LEN: usize = 128;
/// Distinct values a slot interns before it counts as varying.
pub const VALUES_PER_SLOT: usize = 4;
/// Most `(callsite, field)` slots a thread remembers.
pub const MAX_SLOTS_PER_THREAD: usize = 1024;

/// A multiply-and-rotate hash over two words (a callsite address and a
/// field index): no need for a keyed hash on keys that come from the binary.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// What a thread knows about one slot: the distinct values seen there so
/// far (interned, `values[..len]`), or `len == VARYING` once there were more
/// than [`VALUES_PER_SLOT`] (or interning was refused): copy.
#[derive(Clone, Copy)]
struct Slot {
    len: u8,
    values: [&'static str; VALUES_PER_SLOT],
}

const VARYING: u8 = u8::MAX;

impl Slot {
    #[inline(always)]
    fn lookup(&mut self, s: &str) -> Option<&'static str> {
        let n = usize::from(self.len);
        if n > VALUES_PER_SLOT {
            return None;
        }
        if let Some(v) = self.values[..n].iter().find(|v| **v == s) {
            return Some(*v);
        }
        self.add(s)
    }

    /// A value the slot has not seen: interned while there is room.
    #[cold]
    #[inline(never)]
    fn add(&mut self, s: &str) -> Option<&'static str> {
        let n = usize::from(self.len);
        match (n < VALUES_PER_SLOT).then(|| intern(s)).flatten() {
            Some(v) => {
                self.values[n] = v;
                self.len += 1;
                Some(v)
            }
            None => {
                self.len = VARYING;
                None
            }
        }
    }
}

type SlotMap = HashMap<(usize, usize), Slot, BuildHasherDefault<WordHasher>>;

thread_local! {
    // `const`: no lazy-initialisation check per access.
    static SLOTS: RefCell<SlotMap> =
        const { RefCell::new(HashMap::with_hasher(BuildHasherDefault::new())) };
}

static GLOBAL: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// How many field values the `tracing` bridge has interned in this process
/// (at most [`MAX_INTERNED`]).
#[cfg(feature = "tracing")]
pub fn interned_value_count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// `s` as a process-lifetime string shared by every thread; `None` once
/// [`MAX_INTERNED`] strings exist.
fn intern(s: &str) -> Option<&'static str> {
    let mut g = GLOBAL.lock();
    let set = g.get_or_insert_with(HashSet::new);
    if let Some(&v) = set.get(s) {
        return Some(v);
    }
    if set.len() >= MAX_INTERNED {
        return None;
    }
    let v: &'static str = Box::leak(Box::from(s));
    set.insert(v);
    COUNT.store(set.len(), Ordering::Relaxed);
    Some(v)
}

/// A slot's first value (cold: once per slot and thread).
#[cold]
#[inline(never)]
fn new_slot(slots: &mut SlotMap, key: (usize, usize), s: &str) -> Option<&'static str> {
    if slots.len() >= MAX_SLOTS_PER_THREAD {
        return None;
    }
    let mut slot = Slot {
        len: 0,
        values: [""; VALUES_PER_SLOT],
    };
    let v = slot.add(s);
    slots.insert(key, slot);
    v
}

/// The HTTP layer's slots (`callsite` 0, which no `'static` metadata has).
#[cfg(feature = "http")]
pub(crate) mod http_slots {
    pub(crate) const SERVER_ADDRESS: (usize, usize) = (0, 0);
    pub(crate) const USER_AGENT: (usize, usize) = (0, 1);
}

/// Entries of the per-thread memo in front of the slots.
const MEMO: usize = 64;

thread_local! {
    /// A direct-mapped memo of the last shared value per `(callsite,
    /// field)` (by a hash of the pair): a value that repeats is found with
    /// two word compares and a string compare, without the slot map's
    /// borrow, hash and probe (~75 instructions less per value, measured: 116 → 39).
    /// It only ever holds values a slot returned (interned for the life of
    /// the process), and a slot's refusal clears its entry, so a hit is what
    /// the slot would have answered; a collision just overwrites. Fixed
    /// size, no destructor.
    static LAST: [Cell<(usize, usize, &'static str)>; MEMO] =
        const { [const { Cell::new((usize::MAX, 0, "")) }; MEMO] };
}

#[inline(always)]
fn memo_index(callsite: usize, field: usize) -> usize {
    // Callsites are `'static` metadata, at least 8-byte aligned and spread
    // over the binary; the field index separates one callsite's fields.
    ((callsite >> 3) ^ field.wrapping_mul(0x9E37_79B9)) & (MEMO - 1)
}

/// `s`, recorded in slot `(callsite, field)`: an interned copy when the slot
/// has seen it (or has room for it), else `None` (the caller copies).
#[inline]
pub(crate) fn shared(callsite: usize, field: usize, s: &str) -> Option<&'static str> {
    if s.len() > MAX_VALUE_LEN {
        return None;
    }
    let i = memo_index(callsite, field);
    let hit = LAST
        .try_with(|m| {
            let (c, f, v) = m[i].get();
            (c == callsite && f == field && v == s).then_some(v)
        })
        .ok()
        .flatten();
    if hit.is_some() {
        return hit;
    }
    let v = shared_slow(callsite, field, s);
    // A refusal (the slot is varying now, or a bound was reached) clears
    // the entry, so a slot that turned varying is never answered from here.
    let entry = match v {
        Some(v) => (callsite, field, v),
        None => (usize::MAX, 0, ""),
    };
    let _ = LAST.try_with(|m| m[i].set(entry));
    v
}

/// [`shared`] past the memo: the thread's slot for `(callsite, field)`.
fn shared_slow(callsite: usize, field: usize, s: &str) -> Option<&'static str> {
    // The closure only takes the address, so it inlines; the look-up runs
    // here (through `try_with` it was a call of its own, ~120 instructions
    // more per value measured).
    let slots: *const RefCell<SlotMap> = SLOTS.try_with(|s| s as *const _).ok()?;
    // SAFETY: a thread-local lives until its thread exits, and this thread
    // is running this function: the reference does not outlive the value.
    let mut slots = unsafe { &*slots }.try_borrow_mut().ok()?;
    if let Some(slot) = slots.get_mut(&(callsite, field)) {
        return slot.lookup(s);
    }
    new_slot(&mut slots, (callsite, field), s)
}

/// `s` as an attribute value: shared when it repeats (see [`shared`]).
#[cfg(feature = "http")]
pub(crate) fn string_value((callsite, field): (usize, usize), s: &str) -> crate::attributes::Value {
    match shared(callsite, field, s) {
        Some(v) => v.into(),
        None => s.to_owned().into(),
    }
}

/// Formats a value on the stack when it is short, so a `?debug` or
/// `%display` field (and an event's message, a `fmt::Arguments`) can be
/// compared with its callsite's first value before anything is allocated.
#[cfg(feature = "tracing")]
pub(crate) struct StackText {
    /// `buf[..len]` is initialised and valid UTF-8 (only whole `&str`s are
    /// copied in); the rest is never read.
    buf: [MaybeUninit<u8>; MAX_VALUE_LEN],
    len: usize,
    /// Set once the text outgrew `buf`.
    spilled: Option<String>,
}

#[cfg(feature = "tracing")]
impl StackText {
    /// An empty text (nothing initialised).
    #[inline]
    pub(crate) fn new() -> Self {
        StackText {
            buf: [MaybeUninit::uninit(); MAX_VALUE_LEN],
            len: 0,
            spilled: None,
        }
    }

    /// `value` formatted with `Debug`.
    #[cfg(test)]
    pub(crate) fn format(value: &dyn fmt::Debug) -> Self {
        let mut t = StackText::new();
        t.write_debug(value);
        t
    }

    /// Appends `value` formatted with `Debug`. In place: the caller's text
    /// is written where it lives (returning a new one copied its 160 bytes,
    /// ~30 instructions per value, measured).
    #[inline]
    pub(crate) fn write_debug(&mut self, value: &dyn fmt::Debug) {
        // Writing into memory cannot fail unless a `Debug` impl reports an
        // error; what was written so far is kept (`format!` would panic).
        let _ = fmt::write(self, format_args!("{value:?}"));
    }

    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        match &self.spilled {
            Some(s) => s,
            // SAFETY: `buf[..len]` was written from whole `&str`s by
            // `write_str` (initialised, valid UTF-8), never beyond `len`.
            None => unsafe {
                let bytes = std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len);
                std::str::from_utf8_unchecked(bytes)
            },
        }
    }

    /// True when the text outgrew the stack buffer (it is never shared then).
    #[inline]
    pub(crate) fn spilled(&self) -> bool {
        self.spilled.is_some()
    }

    /// The text as an owned string (reusing the spilled allocation).
    pub(crate) fn into_string(self) -> String {
        match self.spilled {
            Some(s) => s,
            None => self.as_str().to_owned(),
        }
    }
}

#[cfg(feature = "tracing")]
impl fmt::Write for StackText {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(spilled) = &mut self.spilled {
            spilled.push_str(s);
            return Ok(());
        }
        let end = self.len + s.len();
        if end <= MAX_VALUE_LEN {
            // SAFETY: `end <= MAX_VALUE_LEN`, so the copy stays in `buf`;
            // source and destination do not overlap (`s` is not in `buf`
            // while it is being written: `as_str` borrows `self`).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    s.as_ptr(),
                    self.buf.as_mut_ptr().add(self.len).cast::<u8>(),
                    s.len(),
                );
            }
            self.len = end;
        } else {
            let mut spilled = String::with_capacity(end.max(2 * MAX_VALUE_LEN));
            spilled.push_str(self.as_str());
            spilled.push_str(s);
            self.spilled = Some(spilled);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_are_shared_varying_ones_copied() {
        std::thread::spawn(|| {
            let site = 0x1000_usize;
            let a = shared(site, 0, "/orders/{id}").expect("first value interned");
            let b = shared(site, 0, "/orders/{id}").expect("same value shared");
            assert!(std::ptr::eq(a, b));
            // Another field of the same callsite is a slot of its own.
            assert_eq!(shared(site, 1, "postgresql"), Some("postgresql"));
            // Up to VALUES_PER_SLOT distinct values are shared...
            for i in 1..VALUES_PER_SLOT {
                let v = format!("/route/{i}");
                assert_eq!(shared(site, 0, &v), Some(v.as_str()));
                assert_eq!(shared(site, 0, &v), Some(v.as_str()));
            }
            assert!(std::ptr::eq(shared(site, 0, "/orders/{id}").unwrap(), a));
            // ...one more makes the slot varying: copied from then on.
            assert_eq!(shared(site, 0, "/users/{id}"), None);
            assert_eq!(shared(site, 0, "/orders/{id}"), None);
            assert_eq!(shared(site, 1, "postgresql"), Some("postgresql"));
            // Long values are never interned.
            let long = "x".repeat(MAX_VALUE_LEN + 1);
            assert_eq!(shared(site, 2, &long), None);
            assert_eq!(shared(site, 2, &long), None);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_memo_answers_only_for_its_own_slot_and_value() {
        std::thread::spawn(|| {
            let a = 0x4000_usize;
            // Another callsite whose memo entry is the same as `a`'s.
            let b = (1..)
                .map(|k| a + 8 * k)
                .find(|&b| memo_index(b, 0) == memo_index(a, 0))
                .expect("a colliding callsite");
            assert_eq!(shared(a, 0, "x"), Some("x"));
            assert_eq!(shared(a, 0, "x"), Some("x"));
            // `b` takes the entry over; `a` is answered by its slot again.
            assert_eq!(shared(b, 0, "y"), Some("y"));
            assert_eq!(shared(a, 0, "x"), Some("x"));
            // Another value of the same slot is not the memo's `x`.
            assert_eq!(shared(a, 0, "z"), Some("z"));
            assert_eq!(shared(a, 1, "x"), Some("x"));
            // Enough values to make `a`'s slot varying: from then on the
            // memo never answers for it, even with a value it once held.
            for i in 0..VALUES_PER_SLOT {
                let _ = shared(a, 0, &format!("v{i}"));
            }
            assert_eq!(shared(a, 0, "x"), None);
            assert_eq!(shared(a, 0, "z"), None);
            assert_eq!(shared(b, 0, "y"), Some("y"));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn bounded_per_thread_and_per_process() {
        std::thread::spawn(|| {
            for i in 0..MAX_SLOTS_PER_THREAD + 10 {
                let _ = shared(0x2000 + i, 0, "same");
            }
            assert_eq!(shared(0x2000 + MAX_SLOTS_PER_THREAD + 5, 0, "same"), None);
            SLOTS.with(|s| assert!(s.borrow().len() <= MAX_SLOTS_PER_THREAD));
        })
        .join()
        .unwrap();
        assert!(COUNT.load(Ordering::Relaxed) <= MAX_INTERNED);
    }

    #[cfg(feature = "tracing")]
    #[test]
    fn stack_text_formats_short_and_long_values() {
        let t = StackText::format(&format_args!("cache {}", "miss"));
        assert_eq!(t.as_str(), "cache miss");
        let long = "y".repeat(3 * MAX_VALUE_LEN);
        let t = StackText::format(&format_args!("{long}"));
        assert_eq!(t.as_str(), long);
        assert_eq!(t.into_string(), long);
        let t = StackText::format(&"quoted");
        assert_eq!(t.as_str(), "\"quoted\"");
    }
}
