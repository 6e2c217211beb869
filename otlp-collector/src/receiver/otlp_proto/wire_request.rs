//! A scanned OTLP/protobuf request as the router holds it ([`WireRequest`]:
//! the body and the byte ranges of its spans and framing, filled by
//! [`super::route_scan::scan`]) and [`reslice`], which writes a new
//! request from any subset of those spans. Kept apart from the scanner so
//! that the span model's `Decoded` can carry a `WireRequest` without the
//! model depending on the scanner (which depends on the model).

use std::ops::Range;

use bytes::Bytes;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::model::{SpanId, TraceId};

/// A scanned request: the body and where its spans and framing are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    pub(super) body: Bytes,
    /// Each `ResourceSpans`: its range in `group_fields`.
    pub(super) groups: Vec<Range<usize>>,
    /// Byte ranges of the non-`scope_spans` fields of every `ResourceSpans`.
    pub(super) group_fields: Vec<Range<usize>>,
    /// Each `ScopeSpans`: its `ResourceSpans` and its range in `scope_fields`.
    pub(super) scopes: Vec<(usize, Range<usize>)>,
    /// Byte ranges of the non-`spans` fields of every `ScopeSpans`.
    pub(super) scope_fields: Vec<Range<usize>>,
    /// The valid spans, in request order.
    pub spans: Vec<WireSpan>,
}

/// One valid span of a [`WireRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSpan {
    /// Its trace id (what the router routes by).
    pub trace_id: TraceId,
    /// Its span id.
    pub span_id: SpanId,
    /// Index of its `ScopeSpans` in the request.
    pub(super) scope: usize,
    /// Its whole `spans` field in the body (key, length, message).
    pub(super) range: Range<usize>,
}

impl WireRequest {
    /// Memory it holds (body, tables), charged to the queue.
    pub fn heap_bytes(&self) -> u64 {
        (self.body.len()
            + self.spans.capacity() * std::mem::size_of::<WireSpan>()
            + (self.groups.capacity()
                + self.group_fields.capacity()
                + self.scope_fields.capacity())
                * std::mem::size_of::<Range<usize>>()
            + self.scopes.capacity() * std::mem::size_of::<(usize, Range<usize>)>()) as u64
    }
}

/// Writes an `ExportTraceServiceRequest` holding `spans` (a span is its
/// request and its index in `WireRequest::spans`) to `out`: consecutive
/// spans of one `ResourceSpans` share one, consecutive spans of one
/// `ScopeSpans` share one, each with its original framing fields.
pub fn reslice(spans: &[(&WireRequest, usize)], out: &mut Vec<u8>) {
    // Runs of one ScopeSpans, then runs of those within one ResourceSpans.
    struct Run {
        scope: usize,
        spans: Range<usize>,
        len: usize,
    }
    let same = |a: &WireRequest, b: &WireRequest| std::ptr::eq(a, b);
    let mut runs: Vec<Run> = Vec::new();
    let mut i = 0;
    while i < spans.len() {
        let (req, first) = spans[i];
        let scope = req.spans[first].scope;
        let start = i;
        let mut len: usize = req.scope_fields[req.scopes[scope].1.clone()]
            .iter()
            .map(|r| r.len())
            .sum();
        while i < spans.len()
            && same(spans[i].0, req)
            && spans[i].0.spans[spans[i].1].scope == scope
        {
            len += spans[i].0.spans[spans[i].1].range.len();
            i += 1;
        }
        runs.push(Run {
            scope,
            spans: start..i,
            len,
        });
    }
    let framed = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    // Runs of one ResourceSpans: (its request, its index, its runs, its length).
    let mut groups: Vec<(&WireRequest, usize, Range<usize>, usize)> = Vec::new();
    let mut r = 0;
    while r < runs.len() {
        let req = spans[runs[r].spans.start].0;
        let group = req.scopes[runs[r].scope].0;
        let first = r;
        let mut len: usize = req.group_fields[req.groups[group].clone()]
            .iter()
            .map(|f| f.len())
            .sum();
        while r < runs.len()
            && same(spans[runs[r].spans.start].0, req)
            && req.scopes[runs[r].scope].0 == group
        {
            len += framed(runs[r].len);
            r += 1;
        }
        groups.push((req, group, first..r, len));
    }
    // One allocation for the whole request (it is copied span by span).
    out.reserve(groups.iter().map(|g| framed(g.3)).sum());
    for (req, group, group_runs, len) in groups {
        out.push(0x0a); // ExportTraceServiceRequest.resource_spans
        encode_varint(len as u64, out);
        for f in &req.group_fields[req.groups[group].clone()] {
            out.extend_from_slice(&req.body[f.clone()]);
        }
        for run in &runs[group_runs] {
            out.push(0x12); // ResourceSpans.scope_spans
            encode_varint(run.len as u64, out);
            for f in &req.scope_fields[req.scopes[run.scope].1.clone()] {
                out.extend_from_slice(&req.body[f.clone()]);
            }
            for &(req, s) in &spans[run.spans.clone()] {
                out.extend_from_slice(&req.body[req.spans[s].range.clone()]);
            }
        }
    }
}
