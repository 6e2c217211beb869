//! A handful of recently used entries, replaced in turn: the per-thread
//! memos the HTTP layers check before doing the work again (the `Host`
//! values split into a host name and port, the routes named). A request
//! usually repeats one of a few recent values, and finding it here is a
//! comparison or two instead of parsing or hashing.

/// At most `N` entries; a new one replaces the oldest.
pub(crate) struct Recent<T, const N: usize> {
    next: usize,
    entries: [Option<T>; N],
}

impl<T, const N: usize> Recent<T, N> {
    /// No entries.
    pub(crate) const fn new() -> Self {
        Recent {
            next: 0,
            entries: [const { None }; N],
        }
    }

    /// The first entry `matches` accepts.
    pub(crate) fn find(&self, matches: impl Fn(&T) -> bool) -> Option<&T> {
        self.entries.iter().flatten().find(|e| matches(e))
    }

    /// Keeps `entry`, in place of the oldest once all `N` are taken.
    pub(crate) fn put(&mut self, entry: T) {
        self.entries[self.next % N] = Some(entry);
        self.next = self.next.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_entries() {
        let mut r: Recent<u32, 3> = Recent::new();
        assert_eq!(r.find(|_| true), None);
        for v in 1..=5 {
            r.put(v);
        }
        for gone in [1, 2] {
            assert_eq!(r.find(|e| *e == gone), None);
        }
        for kept in [3, 4, 5] {
            assert_eq!(r.find(|e| *e == kept), Some(&kept));
        }
    }
}
