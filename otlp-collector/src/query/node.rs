//! The per-span annotations of a display tree, in their own module so the
//! tree builder and the passes it runs (skew correction, critical path) share
//! them without importing each other.

use crate::model::SpanId;

/// Per-span annotations, parallel to [`TraceTree::spans`](super::tree::TraceTree::spans).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    /// Index of the parent in display order (`None` for roots, including orphans).
    pub parent: Option<usize>,
    /// Depth (roots are 0).
    pub depth: u32,
    /// Children in display order (by adjusted start time).
    pub children: Vec<usize>,
    /// One past the last index of this span's subtree in display order.
    pub subtree_end: usize,
    /// The span names a parent that is not in the trace (or its parent chain
    /// loops), so it is shown as a root.
    pub orphan: bool,
    /// The parent span id an orphan points at (the placeholder shown above it).
    pub missing_parent: Option<SpanId>,
    /// Clock-skew correction computed for this span (ns; 0 when none). Only
    /// spans whose service differs from their parent's are ever corrected.
    pub skew_shift_ns: i64,
    /// Total shift applied to this span's timings (its own correction, or the
    /// one inherited from a parent on the same service).
    pub clock_shift_ns: i64,
    /// Duration minus the time covered by children (ns).
    pub self_ns: u64,
    /// On the critical path of its root's tree.
    pub critical: bool,
    /// The span is an error or has an error below it (the chain from the root
    /// down to where an error started).
    pub error_path: bool,
    /// The span is an error and none of its descendants is: where the error started.
    pub error_source: bool,
}
