//! Two bounded memories of the forwarding sink, oldest forgotten first:
//!
//! - [`Acked`]: spans a backend acknowledged within a batch that is being
//!   retried because another backend failed. The retry skips them, so a
//!   backend sees a span again only when this memory overflowed (then its
//!   idempotent write absorbs it; its rollups would count it twice, which is
//!   why the memory exists).
//! - [`TraceOwners`]: recent trace ids with the backend their spans last
//!   went to, to count traces whose spans reached two backends because the
//!   ring changed between their spans (`ferrotrace_route_split_traces_total`).
//!   A trace forgotten before its next span arrives is not counted, so the
//!   counter is a lower bound when traces outlive `route.recent_traces`.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};

use crate::model::{SpanId, TraceId};

/// A span's identity.
pub type SpanKey = (TraceId, SpanId);

/// Spans acknowledged in a batch not yet finished.
#[derive(Debug)]
pub struct Acked {
    cap: usize,
    set: HashSet<SpanKey>,
    order: VecDeque<SpanKey>,
    /// Forgotten before their batch finished (each may be sent once more).
    pub evicted: u64,
}

impl Acked {
    /// Remembers at most `cap` spans.
    pub fn new(cap: usize) -> Acked {
        Acked {
            cap,
            set: HashSet::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// True if `k` was acknowledged and not forgotten.
    pub fn contains(&self, k: &SpanKey) -> bool {
        self.set.contains(k)
    }

    /// Remembers `k` as acknowledged.
    pub fn insert(&mut self, k: SpanKey) {
        if self.cap == 0 || !self.set.insert(k) {
            return;
        }
        self.order.push_back(k);
        while self.set.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    if self.set.remove(&old) {
                        self.evicted += 1;
                    }
                }
                None => break,
            }
        }
        // Entries removed by `forget` linger in `order`; keep it bounded too.
        if self.order.len() > 2 * self.cap.max(1) {
            let set = &self.set;
            self.order.retain(|k| set.contains(k));
        }
    }

    /// Forgets `k` (its batch finished: it will not be retried).
    pub fn forget(&mut self, k: &SpanKey) {
        self.set.remove(k);
        if self.set.is_empty() {
            self.order.clear();
        }
    }

    /// Spans remembered now.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Recent traces and the backend (by seed) their spans last went to.
#[derive(Debug)]
pub struct TraceOwners {
    cap: usize,
    map: HashMap<TraceId, u64>,
    order: VecDeque<TraceId>,
}

impl TraceOwners {
    /// Remembers at most `cap` traces.
    pub fn new(cap: usize) -> TraceOwners {
        TraceOwners {
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records that spans of `trace` went to the backend with `seed`;
    /// returns true if the trace's earlier spans went to another backend
    /// (a split: counted once per change of backend).
    pub fn record(&mut self, trace: TraceId, seed: u64) -> bool {
        if self.cap == 0 {
            return false;
        }
        match self.map.insert(trace, seed) {
            Some(old) => old != seed,
            None => {
                self.order.push_back(trace);
                if self.order.len() > self.cap {
                    if let Some(old) = self.order.pop_front() {
                        self.map.remove(&old);
                    }
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_is_bounded_and_counts_what_it_forgets() {
        let mut a = Acked::new(2);
        for i in 0..3u8 {
            a.insert(([i; 16], [i; 8]));
        }
        assert_eq!(a.len(), 2);
        assert_eq!(a.evicted, 1);
        assert!(!a.contains(&([0; 16], [0; 8])));
        assert!(a.contains(&([2; 16], [2; 8])));
        a.forget(&([2; 16], [2; 8]));
        a.forget(&([1; 16], [1; 8]));
        assert!(a.is_empty());
        for i in 0..100u8 {
            a.insert(([i; 16], [i; 8]));
            a.forget(&([i; 16], [i; 8]));
        }
        assert!(a.order.len() <= 4);
    }

    #[test]
    fn a_trace_moving_backend_is_a_split_and_old_traces_are_forgotten() {
        let mut o = TraceOwners::new(2);
        assert!(!o.record([1; 16], 10));
        assert!(!o.record([1; 16], 10));
        assert!(o.record([1; 16], 11), "moved");
        assert!(!o.record([1; 16], 11));
        o.record([2; 16], 10);
        o.record([3; 16], 10); // forgets trace 1
        assert!(!o.record([1; 16], 12), "forgotten, not counted");
        assert!(o.map.len() <= 2);
    }
}
