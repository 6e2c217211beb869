//! [`Interned`]: how a [`SpanData`](super::SpanData) refers to its resource
//! and instrumentation scope without a reference-count update per span.
//!
//! Every finished span names the provider's resource and its tracer's scope.
//! With an `Arc` each span paid two atomic increments on the calling thread
//! and two decrements on the export thread, on cache lines both threads
//! write. A provider's resource and a tracer's scope live as long as the
//! process in practically every program, so they are *interned*: stored once
//! for the life of the process and referred to by a plain `&'static`, whose
//! copy costs nothing. Interning is bounded ([`MAX_INTERNED`] distinct values
//! of each kind, equal values share one entry); beyond that, values are
//! reference-counted as before, so a program that builds providers or tracers
//! with ever-new resources or scopes keeps its memory bounded.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use parking_lot::Mutex;

/// Distinct values of one kind (resources, scopes) kept for the life of the process.
pub const MAX_INTERNED: usize = 64;

/// A shared, immutable value: interned for the life of the process (copying
/// the handle costs nothing) or, past [`MAX_INTERNED`] distinct values or
/// when built by hand, reference-counted. Dereferences to the value.
///
/// ```
/// use std::sync::Arc;
/// use ferrotrace::resource::Resource;
/// use ferrotrace::trace::Interned;
/// let r: Interned<Resource> = Arc::new(Resource::default()).into();
/// assert_eq!(r.iter().count(), 0);
/// ```
pub struct Interned<T: 'static>(Repr<T>);

enum Repr<T: 'static> {
    Static(&'static T),
    Counted(Arc<T>),
}

impl<T> Interned<T> {
    /// True if both handles refer to the same stored value (equal values
    /// interned once always do).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        std::ptr::eq(&**a, &**b)
    }
}

impl<T> Deref for Interned<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        match &self.0 {
            Repr::Static(r) => r,
            Repr::Counted(a) => a,
        }
    }
}

impl<T> Clone for Interned<T> {
    #[inline]
    fn clone(&self) -> Self {
        match &self.0 {
            Repr::Static(r) => Interned(Repr::Static(r)),
            Repr::Counted(a) => Interned(Repr::Counted(Arc::clone(a))),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Interned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Interned<T> {
    fn eq(&self, other: &Self) -> bool {
        Interned::ptr_eq(self, other) || **self == **other
    }
}

impl<T> From<Arc<T>> for Interned<T> {
    fn from(a: Arc<T>) -> Self {
        Interned(Repr::Counted(a))
    }
}

impl<T> From<T> for Interned<T> {
    fn from(v: T) -> Self {
        Interned(Repr::Counted(Arc::new(v)))
    }
}

impl<T: Default> Default for Interned<T> {
    fn default() -> Self {
        T::default().into()
    }
}

/// A bounded set of values kept for the life of the process.
pub(crate) struct Interner<T: 'static> {
    entries: Mutex<Vec<&'static T>>,
}

impl<T: PartialEq> Interner<T> {
    pub(crate) const fn new() -> Self {
        Interner {
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The interned copy of `value` (stored on first sight), or a
    /// reference-counted one once [`MAX_INTERNED`] values are stored.
    pub(crate) fn intern(&self, value: T) -> Interned<T> {
        let mut entries = self.entries.lock();
        if let Some(r) = entries.iter().find(|r| ***r == value) {
            return Interned(Repr::Static(r));
        }
        if entries.len() >= MAX_INTERNED {
            return value.into();
        }
        let r: &'static T = Box::leak(Box::new(value));
        entries.push(r);
        Interned(Repr::Static(r))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_entry_and_the_set_is_bounded() {
        let interner: Interner<String> = Interner::new();
        let a = interner.intern("svc".to_string());
        let b = interner.intern("svc".to_string());
        assert!(Interned::ptr_eq(&a, &b));
        assert_eq!(interner.len(), 1);
        for i in 0..MAX_INTERNED * 2 {
            let v = interner.intern(format!("v{i}"));
            assert_eq!(*v, format!("v{i}"));
        }
        assert_eq!(interner.len(), MAX_INTERNED);
        // Past the bound: counted, equal by value, not by address.
        let c = interner.intern("late".to_string());
        let d = interner.intern("late".to_string());
        assert!(!Interned::ptr_eq(&c, &d));
        assert_eq!(c, d);
        // Values already interned are still found.
        assert!(Interned::ptr_eq(&interner.intern("svc".to_string()), &a));
    }

    #[test]
    fn handles_clone_compare_and_debug_like_the_value() {
        let a: Interned<Vec<u8>> = vec![1, 2].into();
        let b = a.clone();
        assert!(Interned::ptr_eq(&a, &b));
        assert_eq!(a, Interned::from(vec![1, 2]));
        assert_eq!(format!("{a:?}"), "[1, 2]");
    }
}
