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
}

static EMPTY: Context = Context::new();

thread_local! {
    static STACK: RefCell<Stack> = const { RefCell::new(Stack { entries: Vec::new() }) };
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
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                let len = s.entries.len();
                if index >= len {
                    return None;
                }
                // Usually the innermost: popped, not taken and then popped
                // (one move of the context instead of two).
                let removed = if index + 1 == len {
                    s.entries.pop().flatten()
                } else {
                    s.entries[index].take()
                };
                while matches!(s.entries.last(), Some(None)) {
                    s.entries.pop();
                }
                removed
            })
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
    let back = guard.detach();
    // Detached already: the guard's drop would only look the index up again.
    std::mem::forget(guard);
    if let Some(back) = back {
        *cx = back;
    }
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
