//! Critical path: the chain of work that determined each root's end time.
//! Walking back from a span's end, the child that finished last before the
//! current point is on the path; the point then moves to that child's start.
//! Iterative (explicit stack), so arbitrarily deep traces are fine.

use crate::model::Span;

use super::tree::NodeInfo;

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
            let mut t = spans[i].end_ns.min(cursor);
            kids.clear();
            kids.extend_from_slice(&nodes[i].children);
            kids.sort_unstable_by(|&a, &b| spans[b].end_ns.cmp(&spans[a].end_ns));
            for &c in &kids {
                if t <= spans[i].start_ns {
                    break;
                }
                if spans[c].start_ns < t {
                    stack.push((c, t));
                    t = spans[c].start_ns;
                }
            }
        }
    }
}
