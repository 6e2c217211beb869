//! The per-thread current context and the guard that restores the previous one.

use std::cell::RefCell;
use std::marker::PhantomData;

use super::{Context, SpanContext};

/// The attached contexts of one thread. The current context is the last
/// `Some`; a guard dropped out of order leaves a `None` hole that is trimmed
/// once everything attached after it is gone. So dropping guards in any order
/// never resurrects a context that was already detached.
struct Stack {
    entries: Vec<Option<Context>>,
    /// The `tracing` bridge's entered spans, kept beside the contexts they
    /// attached (see [`Mark`]).
    #[cfg(feature = "tracing")]
    marks: Vec<Mark>,
}

static EMPTY: Context = Context::new();

thread_local! {
    static STACK: RefCell<Stack> = const {
        RefCell::new(Stack {
            entries: Vec::new(),
            #[cfg(feature = "tracing")]
            marks: Vec::new(),
        })
    };
}

/// Runs `f` on the current context. `f` must not attach or detach contexts
/// (crate-internal callers only read or clone).
pub(super) fn with_current<T>(f: impl FnOnce(&Context) -> T) -> T {
    let mut f = Some(f);
    let mut out = None;
    // try_with fails only during thread teardown; then the empty context applies.
    let _ = STACK.try_with(|s| {
        if let Some(f) = f.take() {
            out = Some(match s.try_borrow() {
                Ok(stack) => f(stack
                    .entries
                    .last()
                    .and_then(|c| c.as_ref())
                    .unwrap_or(&EMPTY)),
                Err(_) => f(&EMPTY),
            });
        }
    });
    match (out, f) {
        (Some(v), _) => v,
        (None, Some(f)) => f(&EMPTY),
        // The closure above either ran `f` (so `out` is set) or did not run (so `f` is still here).
        (None, None) => unreachable!("context closure neither ran nor remained"),
    }
}

/// A clone of the current context (one thread-local access, no closure
/// juggling: the span-starting path of the `tracing` bridge).
#[inline]
pub(super) fn current() -> Context {
    STACK
        .try_with(|s| {
            // SAFETY: as in `current_span_context`: cloning a `Context` only
            // bumps reference counts, it never attaches or detaches one, so
            // no mutable borrow can start while this reference is used.
            let stack = unsafe { s.try_borrow_unguarded() }.ok()?;
            stack.entries.last()?.clone()
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The current context's span context, cloned (the span starting path: no
/// closure juggling, one thread-local access).
#[inline]
pub(super) fn current_span_context() -> Option<SpanContext> {
    STACK
        .try_with(|s| {
            // SAFETY: no mutable borrow can start while this reference is
            // used: cloning a `SpanContext` never attaches or detaches a
            // context. (Unguarded: no borrow-count update per span start.)
            let stack = unsafe { s.try_borrow_unguarded() }.ok()?;
            stack.entries.last()?.as_ref()?.span.clone()
        })
        .ok()
        .flatten()
}

/// Takes the context at `index` off `entries` (popped when it is the
/// innermost, else left as a hole) and trims the holes left on top.
#[inline]
fn detach_at(entries: &mut Vec<Option<Context>>, index: usize) -> Option<Context> {
    let len = entries.len();
    if index >= len {
        return None;
    }
    // Usually the innermost: popped, not taken and then popped (one move of
    // the context instead of two).
    let removed = if index + 1 == len {
        entries.pop().flatten()
    } else {
        entries[index].take()
    };
    while matches!(entries.last(), Some(None)) {
        entries.pop();
    }
    removed
}

pub(super) fn attach(cx: Context) -> ContextGuard {
    let index = STACK
        .try_with(|s| {
            let mut s = s.borrow_mut();
            s.entries.push(Some(cx));
            s.entries.len() - 1
        })
        .unwrap_or(usize::MAX);
    ContextGuard {
        index,
        _not_send: PhantomData,
    }
}

/// Restores the previously current context when dropped. Not `Send`: it must
/// be dropped on the thread where the context was attached.
#[must_use = "the context is detached as soon as the guard is dropped"]
pub struct ContextGuard {
    index: usize,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextGuard")
            .field("depth", &self.index)
            .finish()
    }
}

impl ContextGuard {
    /// Detaches the guard's context and hands it back (`None` if it was
    /// already gone); the guard's drop then does nothing.
    fn detach(&mut self) -> Option<Context> {
        let index = std::mem::replace(&mut self.index, usize::MAX);
        STACK
            .try_with(|s| detach_at(&mut s.try_borrow_mut().ok()?.entries, index))
            .ok()
            .flatten()
    }
}

/// Makes `*cx` the current context while `f` runs by moving it onto the
/// thread's stack and back afterwards: no clone and no drop of the context,
/// for callers that attach the same context again and again (a future's
/// `poll`). If `f` unwinds, the context is detached and dropped and `*cx`
/// is left empty.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
#[inline(always)]
pub(crate) fn with_attached<T>(cx: &mut Context, f: impl FnOnce() -> T) -> T {
    let mut guard = attach(std::mem::take(cx));
    let out = f();
    let index = std::mem::replace(&mut guard.index, usize::MAX);
    // Detached below: the guard's drop would only look the index up again.
    std::mem::forget(guard);
    // Put back from inside the stack's borrow: one move of the context.
    let _ = STACK.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(back) = detach_at(&mut s.entries, index) {
                // `*cx` holds the empty context `take` left, which owns
                // nothing: forgotten rather than dropped (no drop glue run).
                std::mem::forget(std::mem::replace(cx, back));
            }
        }
    });
    out
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        // The detached context is dropped after the stack's borrow is
        // released (inside `detach`), so its destructor may touch the
        // current context.
        drop(self.detach());
    }
}

/// What the `tracing` bridge keeps on this thread's stack for each span it
/// saw entered: which layer (`owner`, an address), which span (`id`), the
/// bridge's `kind` of it, whether it was already entered further out
/// (`repeat`), and the index of the context entering it attached, if any.
///
/// Kept here, beside the contexts, so that entering or leaving a span is one
/// thread-local access and one borrow for both (they were two stacks).
#[cfg(feature = "tracing")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    owner: usize,
    id: u64,
    kind: u8,
    repeat: bool,
    /// Index into `Stack::entries`; `usize::MAX` for none.
    cx: usize,
}

#[cfg(feature = "tracing")]
thread_local! {
    /// Enters not marked (too many, or the stack was busy) and not yet
    /// exited: while non-zero the top mark is not the current span.
    static MISSED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The innermost mark, as [`top_mark`] sees it for one owner.
#[cfg(feature = "tracing")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopMark {
    /// Nothing entered on this thread (that any owner marked).
    Empty,
    /// The innermost entered span is this owner's `id`, of `kind`.
    Span {
        /// The span.
        id: u64,
        /// What the owner said of it.
        kind: u8,
    },
    /// Not known here: another owner's mark is on top, or marks were missed.
    Unknown,
}

/// Marks `owner`'s span `id` entered and makes `cx` (if any) current until
/// [`unmark`]. Beyond `max` marks, or when the stack is busy, nothing is
/// marked or attached and the miss is counted (callers then ask elsewhere).
#[cfg(feature = "tracing")]
pub(crate) fn mark(owner: usize, id: u64, kind: u8, cx: Option<Context>, max: usize) {
    let refused = STACK
        .try_with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                return Some(cx);
            };
            if s.marks.len() >= max {
                return Some(cx);
            }
            let repeat = s.marks.iter().any(|m| m.id == id && m.owner == owner);
            let cx_index = match cx {
                Some(cx) => {
                    s.entries.push(Some(cx));
                    s.entries.len() - 1
                }
                None => usize::MAX,
            };
            s.marks.push(Mark {
                owner,
                id,
                kind,
                repeat,
                cx: cx_index,
            });
            None
        })
        .unwrap_or(None);
    if let Some(cx) = refused {
        let _ = MISSED.try_with(|m| m.set(m.get().saturating_add(1)));
        // Dropped outside the stack's borrow.
        drop(cx);
    }
}

/// Removes `owner`'s innermost mark of `id` and detaches the context it
/// attached (restoring the one current before it); an exit without a mark
/// settles one miss.
#[cfg(feature = "tracing")]
pub(crate) fn unmark(owner: usize, id: u64) {
    let found = STACK
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let s = &mut *s;
            // Usually the top: spans are left in the order they were entered.
            let mark = match s.marks.last() {
                Some(m) if m.id == id && m.owner == owner => s.marks.pop()?,
                _ => {
                    let pos = s
                        .marks
                        .iter()
                        .rposition(|m| m.id == id && m.owner == owner)?;
                    s.marks.remove(pos)
                }
            };
            Some(detach_at(&mut s.entries, mark.cx))
        })
        .ok()
        .flatten();
    match found {
        // The detached context is dropped after the borrow is released: its
        // destructor may touch the current context.
        Some(cx) => drop(cx),
        None => {
            let _ = MISSED.try_with(|m| m.set(m.get().saturating_sub(1)));
        }
    }
}

/// The innermost marked span that is not a repeat, if the marks can tell
/// for `owner`.
#[cfg(feature = "tracing")]
#[inline]
pub(crate) fn top_mark(owner: usize) -> TopMark {
    if MISSED.try_with(std::cell::Cell::get).unwrap_or(1) != 0 {
        return TopMark::Unknown;
    }
    STACK
        .try_with(|s| {
            let Ok(s) = s.try_borrow() else {
                return TopMark::Unknown;
            };
            match s.marks.iter().rev().find(|m| !m.repeat) {
                None => TopMark::Empty,
                Some(m) if m.owner == owner => TopMark::Span {
                    id: m.id,
                    kind: m.kind,
                },
                Some(_) => TopMark::Unknown,
            }
        })
        .unwrap_or(TopMark::Unknown)
}

#[cfg(test)]
mod tests {
    use crate::context::Context;

    #[derive(Debug, PartialEq)]
    struct N(u32);

    fn cur() -> Option<u32> {
        Context::current().get::<N>().map(|n| n.0)
    }

    #[test]
    fn nested_in_order() {
        assert_eq!(cur(), None);
        let g1 = Context::new().with_value(N(1)).attach();
        let g2 = Context::new().with_value(N(2)).attach();
        assert_eq!(cur(), Some(2));
        drop(g2);
        assert_eq!(cur(), Some(1));
        drop(g1);
        assert_eq!(cur(), None);
    }

    #[test]
    fn with_attached_moves_the_context_back() {
        let mut cx = Context::new().with_value(N(9));
        let seen = super::with_attached(&mut cx, cur);
        assert_eq!(seen, Some(9));
        assert_eq!(cur(), None);
        assert_eq!(cx.get::<N>(), Some(&N(9)));
        // Nested: an inner attach left attached (leaked guard) does not lose ours.
        let mut outer = Context::new().with_value(N(1));
        super::with_attached(&mut outer, || {
            std::mem::forget(Context::new().with_value(N(2)).attach());
            assert_eq!(cur(), Some(2));
        });
        assert_eq!(outer.get::<N>(), Some(&N(1)));
    }

    #[test]
    fn out_of_order_drop_is_safe() {
        let g1 = Context::new().with_value(N(1)).attach();
        let g2 = Context::new().with_value(N(2)).attach();
        let g3 = Context::new().with_value(N(3)).attach();
        drop(g2);
        assert_eq!(cur(), Some(3));
        drop(g3);
        // 2 was detached already: we fall back to 1, never back to 2.
        assert_eq!(cur(), Some(1));
        let g4 = Context::new().with_value(N(4)).attach();
        drop(g1);
        assert_eq!(cur(), Some(4));
        drop(g4);
        assert_eq!(cur(), None);
    }
}
