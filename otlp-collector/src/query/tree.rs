//! Assembles a trace's spans into a tree, iteratively (a 10,000-deep chain must
//! not overflow the stack), and annotates every span with what the UI and the
//! APIs show: depth, orphan marker, clock-skew shift, self time, critical path
//! and error-chain flags.

use std::collections::HashMap;

use crate::model::{Span, SpanId};

// Re-exported: `NodeInfo` is part of the tree's public shape.
pub use super::node::NodeInfo;
use super::{critical_path, skew};

/// A trace assembled for display: spans in depth-first display order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceTree {
    /// Spans in display order (pre-order; siblings by start time). Timings are
    /// skew-adjusted unless the tree was built raw.
    pub spans: Vec<Span>,
    /// Annotations, parallel to `spans`.
    pub nodes: Vec<NodeInfo>,
    /// True when the trace has no root span (the root has not arrived yet) or
    /// contains orphans.
    pub partial: bool,
    /// Number of spans whose timings were shifted for clock skew.
    pub skew_adjusted: usize,
}

impl TraceTree {
    /// Builds the tree. With `adjust_skew` false the timings stay exactly as stored.
    pub fn build(mut spans: Vec<Span>, adjust_skew: bool) -> TraceTree {
        spans.sort_by(|a, b| a.start_ns.cmp(&b.start_ns).then(a.span_id.cmp(&b.span_id)));
        // Duplicate span ids can only come from a misbehaving sender; keep the first
        // so the id → index map is a function.
        let mut index: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
        let mut keep = vec![true; spans.len()];
        for (i, s) in spans.iter().enumerate() {
            match index.entry(s.span_id) {
                std::collections::hash_map::Entry::Occupied(_) => keep[i] = false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
        let n = spans.len();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut roots = Vec::new();
        let mut orphans = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            if !keep[i] {
                continue;
            }
            match s.parent_span_id {
                None => roots.push(i),
                Some(p) if p == s.span_id => orphans.push(i),
                Some(p) => match index.get(&p) {
                    Some(&pi) => children[pi].push(i),
                    None => orphans.push(i),
                },
            }
        }
        let has_root = !roots.is_empty();
        let mut orphan_flag = vec![false; n];
        for &o in &orphans {
            orphan_flag[o] = true;
        }
        roots.extend(orphans);

        // Iterative pre-order walk; spans never reached from a root sit in a parent
        // cycle and are promoted to orphan roots one at a time.
        let mut order: Vec<usize> = Vec::with_capacity(n);
        let mut depth_of = vec![0u32; n];
        let mut parent_of: Vec<Option<usize>> = vec![None; n];
        let mut visited = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        let mut walk = |start: usize,
                        order: &mut Vec<usize>,
                        visited: &mut Vec<bool>,
                        depth_of: &mut Vec<u32>,
                        parent_of: &mut Vec<Option<usize>>| {
            stack.push(start);
            visited[start] = true;
            while let Some(i) = stack.pop() {
                order.push(i);
                for &c in children[i].iter().rev() {
                    if !visited[c] {
                        visited[c] = true;
                        depth_of[c] = depth_of[i] + 1;
                        parent_of[c] = Some(i);
                        stack.push(c);
                    }
                }
            }
        };
        for &r in &roots {
            if !visited[r] {
                walk(r, &mut order, &mut visited, &mut depth_of, &mut parent_of);
            }
        }
        for i in 0..n {
            if keep[i] && !visited[i] {
                orphan_flag[i] = true;
                walk(i, &mut order, &mut visited, &mut depth_of, &mut parent_of);
            }
        }

        let mut pos = vec![usize::MAX; n];
        for (p, &i) in order.iter().enumerate() {
            pos[i] = p;
        }
        let mut nodes: Vec<NodeInfo> = order
            .iter()
            .map(|&i| NodeInfo {
                parent: parent_of[i].map(|p| pos[p]),
                depth: depth_of[i],
                orphan: orphan_flag[i],
                missing_parent: if orphan_flag[i] {
                    spans[i].parent_span_id
                } else {
                    None
                },
                ..NodeInfo::default()
            })
            .collect();
        for p in 0..nodes.len() {
            if let Some(parent) = nodes[p].parent {
                nodes[parent].children.push(p);
            }
        }
        let mut slots: Vec<Option<Span>> = spans.into_iter().map(Some).collect();
        let spans: Vec<Span> = order.iter().filter_map(|&i| slots[i].take()).collect();
        for p in (0..nodes.len()).rev() {
            nodes[p].subtree_end = match nodes[p].children.last() {
                Some(&c) => nodes[c].subtree_end,
                None => p + 1,
            };
        }
        let partial = !has_root || nodes.iter().any(|n| n.orphan);
        let mut tree = TraceTree {
            spans,
            nodes,
            partial,
            skew_adjusted: 0,
        };
        if adjust_skew {
            tree.skew_adjusted = skew::adjust(&mut tree.spans, &mut tree.nodes);
        }
        tree.compute_self_time();
        critical_path::mark(&tree.spans, &mut tree.nodes);
        tree.mark_errors();
        tree
    }

    fn compute_self_time(&mut self) {
        let mut iv: Vec<(u64, u64)> = Vec::new();
        for i in 0..self.spans.len() {
            let (s, e) = (
                self.spans[i].start_ns,
                self.spans[i].end_ns.max(self.spans[i].start_ns),
            );
            iv.clear();
            for &c in &self.nodes[i].children {
                let (cs, ce) = (self.spans[c].start_ns.max(s), self.spans[c].end_ns.min(e));
                if cs < ce {
                    iv.push((cs, ce));
                }
            }
            iv.sort_unstable();
            let mut covered = 0u64;
            let mut cur: Option<(u64, u64)> = None;
            for &(a, b) in &iv {
                cur = match cur {
                    Some((x, y)) if a <= y => Some((x, y.max(b))),
                    Some((x, y)) => {
                        covered += y - x;
                        Some((a, b))
                    }
                    None => Some((a, b)),
                };
            }
            if let Some((x, y)) = cur {
                covered += y - x;
            }
            self.nodes[i].self_ns = (e - s).saturating_sub(covered);
        }
    }

    fn mark_errors(&mut self) {
        // Reverse display order visits children before parents.
        let mut err_below = vec![false; self.spans.len()];
        for i in (0..self.spans.len()).rev() {
            let below = self.nodes[i]
                .children
                .iter()
                .any(|&c| err_below[c] || self.spans[c].is_error());
            err_below[i] = below;
            let is_err = self.spans[i].is_error();
            self.nodes[i].error_path = is_err || below;
            self.nodes[i].error_source = is_err && !below;
        }
    }

    /// Index of the first true root (a span without a parent), if any.
    pub fn root(&self) -> Option<usize> {
        (0..self.spans.len())
            .find(|&i| self.nodes[i].parent.is_none() && self.spans[i].parent_span_id.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SpanKind;

    fn span(id: u8, parent: Option<u8>, svc: &str, start: u64, end: u64) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [0, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: parent.map(|p| [0, 0, 0, 0, 0, 0, 0, p]),
            flags: 1,
            name: compact_str::format_compact!("op{id}"),
            kind: SpanKind::Internal,
            start_ns: start,
            end_ns: end,
            service_name: svc.into(),
            ..Span::test(0)
        }
    }

    #[test]
    fn order_self_time_and_critical_path() {
        let t = TraceTree::build(
            vec![
                span(1, None, "a", 0, 100),
                span(3, Some(1), "a", 50, 90),
                span(2, Some(1), "a", 10, 40),
                span(4, Some(2), "a", 20, 30),
            ],
            true,
        );
        let names: Vec<_> = t.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["op1", "op2", "op4", "op3"]);
        assert_eq!(t.nodes[0].self_ns, 100 - 30 - 40);
        assert_eq!(t.nodes[0].subtree_end, 4);
        assert_eq!(t.nodes[1].subtree_end, 3);
        assert!(t.nodes.iter().all(|n| n.critical));
        assert!(!t.partial);
    }

    #[test]
    fn parallel_fan_out_puts_only_the_last_finisher_on_the_critical_path() {
        // Root 0..100; three overlapping children, then a sequential tail child
        // that ends after the root (skew) and so counts as ending with it.
        let t = TraceTree::build(
            vec![
                span(1, None, "a", 0, 100),
                span(2, Some(1), "a", 10, 50),
                span(3, Some(1), "a", 12, 60),
                span(4, Some(1), "a", 14, 55),
                span(5, Some(1), "a", 70, 105),
            ],
            true,
        );
        let critical: Vec<&str> = t
            .spans
            .iter()
            .zip(&t.nodes)
            .filter(|(_, n)| n.critical)
            .map(|(s, _)| s.name.as_str())
            .collect();
        assert_eq!(critical, ["op1", "op3", "op5"]);
    }

    #[test]
    fn orphans_and_cycles_become_roots() {
        let t = TraceTree::build(
            vec![
                span(2, Some(9), "a", 10, 20),
                span(5, Some(6), "a", 10, 20),
                span(6, Some(5), "a", 11, 20),
            ],
            true,
        );
        assert!(t.partial);
        assert_eq!(t.spans.len(), 3);
        assert!(t.nodes[0].orphan);
        assert_eq!(t.nodes[0].missing_parent, Some([0, 0, 0, 0, 0, 0, 0, 9]));
        assert_eq!(t.nodes.iter().filter(|n| n.parent.is_none()).count(), 2);
    }

    #[test]
    fn skew_only_across_services() {
        let t = TraceTree::build(
            vec![
                span(1, None, "a", 1000, 2000),
                span(2, Some(1), "b", 500, 900),
                span(3, Some(2), "b", 600, 700),
                span(4, Some(1), "a", 900, 1100),
            ],
            true,
        );
        let b = t.spans.iter().position(|s| s.name == "op2").unwrap();
        assert!(t.spans[b].start_ns >= 1000 && t.spans[b].end_ns <= 2000);
        assert_eq!(t.nodes[b].skew_shift_ns, t.spans[b].start_ns as i64 - 500);
        let c = t.spans.iter().position(|s| s.name == "op3").unwrap();
        assert_eq!(t.nodes[c].skew_shift_ns, 0);
        assert_eq!(t.nodes[c].clock_shift_ns, t.nodes[b].skew_shift_ns);
        let same = t.spans.iter().position(|s| s.name == "op4").unwrap();
        assert_eq!(
            t.spans[same].start_ns, 900,
            "same-service spans are never shifted"
        );
        let raw = TraceTree::build(t.spans.clone(), false);
        assert!(raw.nodes.iter().all(|n| n.clock_shift_ns == 0));
    }

    #[test]
    fn deep_chain_is_iterative() {
        let n = 20_000u64;
        let spans: Vec<Span> = (0..n)
            .map(|i| {
                let mut s = span(0, None, "a", i, 2 * n - i);
                s.span_id = (i + 1).to_be_bytes();
                s.parent_span_id = if i == 0 { None } else { Some(i.to_be_bytes()) };
                s
            })
            .collect();
        let t = TraceTree::build(spans, true);
        assert_eq!(t.nodes.last().unwrap().depth, (n - 1) as u32);
        assert!(t.nodes.iter().all(|x| x.critical));
    }
}
