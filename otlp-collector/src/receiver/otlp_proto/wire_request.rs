//! A scanned OTLP/protobuf request as the router holds it ([`WireRequest`]:
//! the body and the byte ranges of its spans and framing, filled by
//! [`super::route_scan::scan`]) and [`reslice`], which writes a new
//! request from any subset of those spans. Kept apart from the scanner so
//! that the span model's `Decoded` can carry a `WireRequest` without the
//! model depending on the scanner (which depends on the model).

use std::ops::Range;

use bytes::{BufMut, Bytes};
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
    let plan = Reslice::new(spans);
    // One allocation for the whole request (it is copied span by span).
    out.reserve(plan.len());
    plan.write(out);
}

/// Runs of spans of one `ScopeSpans`.
struct Run {
    scope: usize,
    /// Its spans: a range of the input.
    spans: Range<usize>,
    /// Its `ScopeSpans` message's length.
    len: usize,
}

/// Runs of one `ResourceSpans`.
struct Group<'a> {
    req: &'a WireRequest,
    group: usize,
    runs: Range<usize>,
    /// Its `ResourceSpans` message's length.
    len: usize,
}

/// A re-sliced request, measured before it is written: [`Reslice::len`]
/// lets the writer reserve the exact size first (the router writes it
/// straight into the gRPC client's buffer, `route::codec`, with no
/// intermediate copy).
pub struct Reslice<'s, 'a> {
    spans: &'s [(&'a WireRequest, usize)],
    runs: Vec<Run>,
    groups: Vec<Group<'a>>,
}

/// A `ResourceSpans`' or `ScopeSpans`' field (one-byte key) of `len` bytes.
fn framed(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

impl<'s, 'a> Reslice<'s, 'a> {
    /// Groups `spans` as [`reslice`] writes them.
    pub fn new(spans: &'s [(&'a WireRequest, usize)]) -> Self {
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
        let mut groups: Vec<Group<'a>> = Vec::new();
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
            groups.push(Group {
                req,
                group,
                runs: first..r,
                len,
            });
        }
        Reslice {
            spans,
            runs,
            groups,
        }
    }

    /// The encoded request's length in bytes.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| framed(g.len)).sum()
    }

    /// True if it holds no span.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Writes the request ([`Reslice::len`] bytes) to `out`.
    pub fn write(&self, out: &mut impl BufMut) {
        for g in &self.groups {
            let req = g.req;
            out.put_u8(0x0a); // ExportTraceServiceRequest.resource_spans
            encode_varint(g.len as u64, out);
            for f in &req.group_fields[req.groups[g.group].clone()] {
                out.put_slice(&req.body[f.clone()]);
            }
            for run in &self.runs[g.runs.clone()] {
                out.put_u8(0x12); // ResourceSpans.scope_spans
                encode_varint(run.len as u64, out);
                for f in &req.scope_fields[req.scopes[run.scope].1.clone()] {
                    out.put_slice(&req.body[f.clone()]);
                }
                // A run's spans are in one request and, unless some were
                // left out (rejected, or owned by another backend), next to
                // each other in its body: copied in one piece.
                let mut piece = 0..0;
                for &(_, s) in &self.spans[run.spans.clone()] {
                    let r = &req.spans[s].range;
                    if piece.end == r.start && !piece.is_empty() {
                        piece.end = r.end;
                    } else {
                        out.put_slice(&req.body[piece]);
                        piece = r.clone();
                    }
                }
                out.put_slice(&req.body[piece]);
            }
        }
    }
}
