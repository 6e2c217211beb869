//! Critical path: the chain of work that determined each root's end time.
//! Walking back from a span's end, the child that finished last at or before
//! the current point is on the path; the point then moves to that child's
//! start. A child still running at the current point overlaps one already on
//! the path and is not (parallel fan-out puts only the last finisher on it).
//! Children ending after their parent (clock skew) count as ending with it.
//! Iterative (explicit stack), so arbitrarily deep traces are fine.

use crate::model::Span;

use super::node::NodeInfo;

/// Marks `critical` on the spans of every root's critical path.
pub fn mark(spans: &[Span], nodes: &mut [NodeInfo]) {
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut kids: Vec<usize> = Vec::new();
    for r in 0..spans.len() {
        if nodes[r].parent.is_some() {
            continue;
        }
        stack.push((r, spans[r].end_ns));
        while let Some((i, cursor)) = stack.pop() {
            nodes[i].critical = true;
            let end = spans[i].end_ns.min(cursor);
            let mut t = end;
            kids.clear();
            kids.extend_from_slice(&nodes[i].children);
            kids.sort_unstable_by(|&a, &b| spans[b].end_ns.cmp(&spans[a].end_ns));
            for &c in &kids {
                if t <= spans[i].start_ns {
                    break;
                }
                if spans[c].end_ns.min(end) <= t && spans[c].start_ns < t {
                    stack.push((c, t));
                    t = spans[c].start_ns;
                }
            }
        }
    }
}
