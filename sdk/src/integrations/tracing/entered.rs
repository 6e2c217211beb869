//! The `tracing` spans a thread has entered, as the layer saw them: whether
//! the layer records each one, and the context entering it made current.
//! The top entry is the registry's current span as far as the layer is
//! concerned (every `on_enter` it gets is pushed, recorded or not), so an
//! event finds its span here without a registry look-up.
//!
//! The entries are marks on the thread's context stack (`context::mark`),
//! beside the contexts they attach: entering or leaving a span is one
//! thread-local access and one borrow for both. The marks are shared by
//! every layer instance; each says which layer pushed it (by its states'
//! key). When the marks cannot be trusted — more than [`MAX_ENTERED`]
//! entered spans, or an enter that found the stack busy — [`current`]
//! answers [`Top::Unknown`] and callers ask the registry, as before.

use crate::context::{self, Context, TopMark};

/// Most spans a thread can have entered at once in this stack; deeper
/// nesting is still traced, its contexts no longer made current (a bound on
/// the stack).
pub(super) const MAX_ENTERED: usize = 1024;

/// What the layer keeps of an entered span.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum Kind {
    /// No state (below the level filter, suppressed, or internal).
    Untracked = 0,
    /// A state whose span does not record (unsampled): only its context.
    Unrecorded = 1,
    /// A recording span.
    Recording = 2,
}

impl Kind {
    fn from_u8(k: u8) -> Kind {
        match k {
            2 => Kind::Recording,
            1 => Kind::Unrecorded,
            _ => Kind::Untracked,
        }
    }
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

/// Records that `layer` entered `id`; `cx` (if any) is the current context
/// until the matching [`exit`].
#[inline]
pub(super) fn enter(layer: usize, id: u64, kind: Kind, cx: Option<Context>) {
    context::mark(layer, id, kind as u8, cx, MAX_ENTERED);
}

/// Records that `layer` left `id` (the innermost entry with that id), and
/// restores the context that was current before it.
#[inline]
pub(super) fn exit(layer: usize, id: u64) {
    context::unmark(layer, id);
}

/// The innermost entered span, if this stack can tell for `layer`.
#[inline]
pub(super) fn current(layer: usize) -> Top {
    match context::top_mark(layer) {
        TopMark::Empty => Top::Empty,
        TopMark::Span { id, kind } => Top::Span {
            id,
            kind: Kind::from_u8(kind),
        },
        TopMark::Unknown => Top::Unknown,
    }
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
