//! The `tracing` spans a thread has entered, as the layer saw them: the
//! guard that keeps each one's context current, and whether the layer
//! records it. The top entry is the registry's current span as far as the
//! layer is concerned (every `on_enter` it gets is pushed, recorded or
//! not), so an event finds its span here without a registry look-up.
//!
//! The stack is per thread and shared by every layer instance; entries say
//! which layer pushed them (by its states' key). When the stack cannot be
//! trusted — more than [`MAX_ENTERED`] entered spans, or an enter that found
//! the stack borrowed — [`current`] answers [`Top::Unknown`] and callers ask
//! the registry, as before.

use std::cell::{Cell, RefCell};

use crate::context::ContextGuard;

/// Most spans a thread can have entered at once in this stack; deeper
/// nesting is still traced, its contexts no longer made current (a bound on
/// the guard stack).
pub(super) const MAX_ENTERED: usize = 1024;

/// What the layer keeps of an entered span.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// No state (below the level filter, suppressed, or internal).
    Untracked,
    /// A state whose span does not record (unsampled): only its context.
    Unrecorded,
    /// A recording span.
    Recording,
}

struct Entry {
    layer: usize,
    id: u64,
    kind: Kind,
    /// Entered again while already on the stack: like the registry, the
    /// current span is then the innermost entry that is not a repeat.
    repeat: bool,
    guard: Option<ContextGuard>,
}

/// The thread's current span for one layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Top {
    /// No span entered on this thread (that any layer saw).
    Empty,
    /// The innermost entered span is this layer's `id`.
    Span { id: u64, kind: Kind },
    /// Ask the registry (another layer's entry on top, or the stack lost
    /// track).
    Unknown,
}

thread_local! {
    static ENTERED: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    /// Enters not pushed (stack full or busy) and not yet exited: while
    /// non-zero the stack's top is not the current span.
    static MISSED: Cell<u32> = const { Cell::new(0) };
}

/// Records that `layer` entered `id`; `guard` (if any) keeps the span's
/// context current until the matching [`exit`].
pub(super) fn enter(layer: usize, id: u64, kind: Kind, guard: Option<ContextGuard>) {
    let pushed = ENTERED
        .try_with(|e| match e.try_borrow_mut() {
            Ok(mut e) if e.len() < MAX_ENTERED => {
                let repeat = e.iter().any(|t| t.id == id && t.layer == layer);
                e.push(Entry {
                    layer,
                    id,
                    kind,
                    repeat,
                    guard,
                });
                None
            }
            // Full or busy: the guard is handed back and dropped below.
            _ => Some(guard),
        })
        .unwrap_or(None);
    if let Some(guard) = pushed {
        let _ = MISSED.try_with(|m| m.set(m.get().saturating_add(1)));
        drop(guard);
    }
}

/// Records that `layer` left `id` (the innermost entry with that id), and
/// restores the context that was current before it.
pub(super) fn exit(layer: usize, id: u64) {
    let found = ENTERED
        .try_with(|e| {
            let mut e = e.try_borrow_mut().ok()?;
            // Usually the top: spans are left in the order they were entered.
            match e.last() {
                Some(t) if t.id == id && t.layer == layer => e.pop().map(|t| t.guard),
                _ => {
                    let pos = e.iter().rposition(|t| t.id == id && t.layer == layer)?;
                    Some(e.remove(pos).guard)
                }
            }
        })
        .ok()
        .flatten();
    match found {
        // Dropped outside the borrow: detaching may run other context code.
        Some(guard) => drop(guard),
        None => {
            let _ = MISSED.try_with(|m| m.set(m.get().saturating_sub(1)));
        }
    }
}

/// The innermost entered span, if this stack can tell for `layer`.
#[inline]
pub(super) fn current(layer: usize) -> Top {
    if MISSED.try_with(Cell::get).unwrap_or(1) != 0 {
        return Top::Unknown;
    }
    ENTERED
        .try_with(|e| {
            let Ok(e) = e.try_borrow() else {
                return Top::Unknown;
            };
            match e.iter().rev().find(|t| !t.repeat) {
                None => Top::Empty,
                Some(t) if t.layer == layer => Top::Span {
                    id: t.id,
                    kind: t.kind,
                },
                Some(_) => Top::Unknown,
            }
        })
        .unwrap_or(Top::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_follows_enters_and_exits_in_any_order() {
        assert_eq!(current(1), Top::Empty);
        enter(1, 10, Kind::Recording, None);
        enter(1, 11, Kind::Untracked, None);
        assert_eq!(
            current(1),
            Top::Span {
                id: 11,
                kind: Kind::Untracked
            }
        );
        // Another layer's entry on top: unknown to layer 1.
        enter(2, 11, Kind::Recording, None);
        assert_eq!(current(1), Top::Unknown);
        exit(2, 11);
        // Left out of order: 10 first, then 11.
        exit(1, 10);
        assert_eq!(
            current(1),
            Top::Span {
                id: 11,
                kind: Kind::Untracked
            }
        );
        exit(1, 11);
        assert_eq!(current(1), Top::Empty);
    }

    #[test]
    fn a_span_entered_again_is_not_the_current_one() {
        // As the registry's stack: A, B, A again -> the current span is B.
        enter(3, 1, Kind::Recording, None);
        enter(3, 2, Kind::Recording, None);
        enter(3, 1, Kind::Recording, None);
        assert_eq!(
            current(3),
            Top::Span {
                id: 2,
                kind: Kind::Recording
            }
        );
        exit(3, 1);
        exit(3, 2);
        assert_eq!(
            current(3),
            Top::Span {
                id: 1,
                kind: Kind::Recording
            }
        );
        exit(3, 1);
        assert_eq!(current(3), Top::Empty);
    }

    #[test]
    fn past_the_bound_the_stack_says_unknown_until_it_is_back() {
        for i in 0..MAX_ENTERED as u64 + 3 {
            enter(7, i, Kind::Recording, None);
        }
        assert_eq!(current(7), Top::Unknown);
        for i in (0..MAX_ENTERED as u64 + 3).rev() {
            exit(7, i);
        }
        assert_eq!(current(7), Top::Empty);
    }
}
