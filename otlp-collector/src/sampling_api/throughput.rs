//! What the adaptive rates are computed from: each (service, operation)'s
//! adjusted root-span count, recorded by the pipeline thread and taken by
//! the recomputation task.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

/// Adjusted root-span counts per (service, operation), fed by the pipeline
/// thread once per queue item and read by the recomputation task; bounded
/// by `max_operations` pairs per period.
///
/// With a period ([`per_period`](Self::per_period), `source = "store"`)
/// each count lands in the wall-clock period it was recorded in, and
/// [`take_before`](Self::take_before) hands over only the periods that
/// ended: a recomputation task that wakes late (a loaded machine) no
/// longer adds the traffic seen since the boundary to the period that
/// ended — which made that period look like a spike, the next one like a
/// lull, and the served probability swing with the scheduler instead of
/// the traffic.
#[derive(Debug)]
pub struct ThroughputRecorder {
    max: usize,
    /// The period's length in nanoseconds; 0 keeps one running count.
    period_ns: u64,
    inner: Mutex<Periods>,
}

/// How many ended periods the recorder keeps apart before folding the
/// oldest into the next one (counts are moved, never lost, when the
/// recomputation task is this far behind).
const MAX_UNTAKEN_PERIODS: usize = 4;

#[derive(Debug, Default)]
struct Periods {
    /// The period counts are being recorded in, and its index
    /// (`start / period_ns`).
    open: Counts,
    open_index: u64,
    /// Periods that ended and were not taken yet, oldest first.
    ended: Vec<(u64, Counts)>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Service → operation → adjusted count; nested so that a known pair is
    /// found by `&str` without allocating.
    by_service: HashMap<String, HashMap<String, f64>>,
    pairs: usize,
    dropped: u64,
}

impl Counts {
    fn add(&mut self, max: usize, service: &str, op: &str, w: f64) -> bool {
        if let Some(v) = self.by_service.get_mut(service).and_then(|m| m.get_mut(op)) {
            *v += w;
        } else if self.pairs < max {
            self.pairs += 1;
            self.by_service
                .entry(service.to_string())
                .or_default()
                .insert(op.to_string(), w);
        } else {
            return false;
        }
        true
    }

    /// Adds `other` into `self`; a pair that does not fit counts as one
    /// dropped root.
    fn merge(&mut self, max: usize, other: Counts) {
        self.dropped += other.dropped;
        for (s, ops) in other.by_service {
            for (o, n) in ops {
                if !self.add(max, &s, &o, n) {
                    self.dropped += 1;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.pairs == 0 && self.dropped == 0
    }
}

impl ThroughputRecorder {
    /// A recorder with one running count, tracking at most `max_operations`
    /// pairs between two [`take`](Self::take)s (`source = "local"`, whose
    /// task measures the time between takes).
    pub fn new(max_operations: usize) -> ThroughputRecorder {
        Self::per_period(max_operations, 0)
    }

    /// A recorder that keeps counts per wall-clock period of `period_ns`
    /// (`[k·period, (k+1)·period)` in Unix time), at most `max_operations`
    /// pairs per period.
    pub fn per_period(max_operations: usize, period_ns: u64) -> ThroughputRecorder {
        ThroughputRecorder {
            max: max_operations,
            period_ns,
            inner: Mutex::new(Periods::default()),
        }
    }

    /// Adds root spans `(service, operation, adjusted count)` seen now.
    pub fn record<'a>(&self, roots: impl IntoIterator<Item = (&'a str, &'a str, f64)>) {
        let at = if self.period_ns > 0 {
            crate::model::now_ns()
        } else {
            0
        };
        self.record_at(at, roots);
    }

    /// [`record`](Self::record) at Unix time `at_ns`. A time before the
    /// open period (the clock stepped back) counts in the open period.
    pub fn record_at<'a>(
        &self,
        at_ns: u64,
        roots: impl IntoIterator<Item = (&'a str, &'a str, f64)>,
    ) {
        let index = at_ns.checked_div(self.period_ns).unwrap_or(0);
        let mut guard = self.inner.lock();
        let p = &mut *guard;
        if index > p.open_index {
            let ended = std::mem::take(&mut p.open);
            if !ended.is_empty() {
                p.ended.push((p.open_index, ended));
                if p.ended.len() > MAX_UNTAKEN_PERIODS {
                    let (_, oldest) = p.ended.remove(0);
                    p.ended[0].1.merge(self.max, oldest);
                }
            }
            p.open_index = index;
        }
        let c = &mut p.open;
        for (service, op, w) in roots {
            if !c.add(self.max, service, op, w) {
                c.dropped += 1;
            }
        }
    }

    /// Everything counted since the last take, and how many roots were not
    /// counted because the table was full.
    pub fn take(&self) -> (BTreeMap<(String, String), f64>, u64) {
        self.take_before(u64::MAX)
    }

    /// The counts of the periods that ended by Unix time `boundary_ns`
    /// (all of them without a period), and how many roots were not counted
    /// because a table was full; later counts stay for the next take.
    pub fn take_before(&self, boundary_ns: u64) -> (BTreeMap<(String, String), f64>, u64) {
        let before = boundary_ns.checked_div(self.period_ns).unwrap_or(u64::MAX);
        let mut out = Counts::default();
        {
            let mut guard = self.inner.lock();
            let p = &mut *guard;
            let mut kept = Vec::new();
            for (index, c) in std::mem::take(&mut p.ended) {
                if index < before {
                    out.merge(self.max, c);
                } else {
                    kept.push((index, c));
                }
            }
            p.ended = kept;
            if p.open_index < before {
                out.merge(self.max, std::mem::take(&mut p.open));
            }
        }
        let counts = out
            .by_service
            .into_iter()
            .flat_map(|(s, ops)| ops.into_iter().map(move |(o, n)| ((s.clone(), o), n)))
            .collect();
        (counts, out.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_is_bounded() {
        let rec = ThroughputRecorder::new(2);
        rec.record([
            ("s", "a", 1.0),
            ("s", "b", 2.0),
            ("s", "c", 3.0),
            ("s", "a", 1.0),
        ]);
        let (c, dropped) = rec.take();
        assert_eq!(c.len(), 2);
        assert_eq!(c[&("s".to_string(), "a".to_string())], 2.0);
        assert_eq!(dropped, 1);
        assert!(rec.take().0.is_empty());
    }

    #[test]
    fn counts_land_in_the_period_they_were_recorded_in() {
        const S: u64 = 1_000_000_000;
        let rec = ThroughputRecorder::per_period(10, S);
        let key = |o: &str| ("s".to_string(), o.to_string());
        rec.record_at(100 * S + 10, [("s", "a", 1.0)]);
        rec.record_at(100 * S + 900_000_000, [("s", "a", 2.0)]);
        // The task wakes late: traffic after the boundary is already in.
        rec.record_at(101 * S + 300_000_000, [("s", "a", 4.0), ("s", "b", 1.0)]);
        let (c, dropped) = rec.take_before(101 * S);
        assert_eq!((c.len(), c[&key("a")], dropped), (1, 3.0, 0));
        // Nothing ended before 101 s is left; the next period is whole.
        assert!(rec.take_before(101 * S).0.is_empty());
        rec.record_at(101 * S + 800_000_000, [("s", "a", 8.0)]);
        let (c, _) = rec.take_before(102 * S);
        assert_eq!((c[&key("a")], c[&key("b")]), (12.0, 1.0));
        // A clock stepped back counts in the open period.
        rec.record_at(105 * S, [("s", "a", 1.0)]);
        rec.record_at(104 * S, [("s", "a", 1.0)]);
        assert!(rec.take_before(105 * S).0.is_empty());
        assert_eq!(rec.take_before(106 * S).0[&key("a")], 2.0);
    }

    #[test]
    fn a_task_far_behind_gets_every_count_and_bounded_memory() {
        const S: u64 = 1_000_000_000;
        let rec = ThroughputRecorder::per_period(10, S);
        for k in 0..20 {
            rec.record_at((200 + k) * S, [("s", "a", 1.0)]);
        }
        assert!(rec.inner.lock().ended.len() <= MAX_UNTAKEN_PERIODS);
        let (c, _) = rec.take_before(300 * S);
        assert_eq!(c[&("s".to_string(), "a".to_string())], 20.0);
    }
}
