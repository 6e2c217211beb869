//! The scan's fast path: the same tables as the careful walk (`Scanner`) for a request with
//! nothing unusual in it, from one tight walk over the bytes (no prost
//! helpers, no error values, no field trail), or `None` at the first thing
//! it does not handle, and [`super::scan`] starts over with the careful walk, which
//! gives the exact error or rejection. What it handles is what a well-formed
//! request of today's SDKs holds: every known field with its wire type,
//! well-formed varints and lengths inside their message, UTF-8 strings,
//! attribute values nested at most [`FAST_MAX_NESTING`] deep, spans that
//! pass the cheap wire checks. Anything else (unknown fields, groups,
//! entity refs, a span to reject or to judge in full, too many spans, any
//! malformed byte) gives up. Since prost only accepts a message whose
//! fields end exactly at its length, walking each message as its own slice
//! accepts only bodies the careful walk accepts without a remark, and
//! records the same ranges for them (`tests/fuzz_decoders.rs`
//! `differential_route_scan` holds `scan`, fast path included, to the full
//! decoder; `route_scan`'s unit tests compare the two walks' tables).
//!
//! A span is only cheap for the router if this walk is: it is the one
//! pass over every byte a router makes besides copying them.

use super::{convert_ids, LimitsConfig, WireSpan, MAX_ESTIMATE_PER_WIRE_BYTE, MAX_TIMESTAMP_NS};
use std::ops::Range;

/// Nested `AnyValue` levels handled here (arrays in lists in arrays...);
/// deeper values go to the careful walk, which applies prost's limit.
pub(super) const FAST_MAX_NESTING: u32 = 16;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// The tables of a `WireRequest` and the span count.
#[derive(Default)]
pub(super) struct Tables {
    pub count: usize,
    pub groups: Vec<Range<usize>>,
    pub group_fields: Vec<Range<usize>>,
    pub scopes: Vec<(usize, Range<usize>)>,
    pub scope_fields: Vec<Range<usize>>,
    pub spans: Vec<WireSpan>,
}

#[inline(always)]
fn varint(b: &mut &[u8]) -> Option<u64> {
    if let Some(&x) = b.first() {
        if x < 0x80 {
            *b = &b[1..];
            return Some(u64::from(x));
        }
    }
    prost::encoding::decode_varint(b).ok()
}

/// A field key as prost's `decode_key` accepts it.
#[inline(always)]
fn key(b: &mut &[u8]) -> Option<(u64, u8)> {
    let k = varint(b)?;
    let (tag, wt) = (k >> 3, (k & 7) as u8);
    (k <= u64::from(u32::MAX) && tag >= 1 && wt <= 5).then_some((tag, wt))
}

/// A length-delimited field's bytes.
#[inline(always)]
fn len<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = varint(b)?;
    if n > b.len() as u64 {
        return None;
    }
    let (m, rest) = b.split_at(n as usize);
    *b = rest;
    Some(m)
}

#[inline(always)]
fn fixed(b: &mut &[u8], n: usize) -> Option<u64> {
    if b.len() < n {
        return None;
    }
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(&b[..n]);
    *b = &b[n..];
    Some(u64::from_le_bytes(v))
}

#[inline(always)]
fn utf8(s: &[u8]) -> Option<()> {
    // ASCII is the common case: checked a word at a time by the standard library.
    std::str::from_utf8(s).ok().map(drop)
}

#[inline(always)]
fn string(b: &mut &[u8]) -> Option<()> {
    utf8(len(b)?)
}

/// A `KeyValue` (its message bytes).
fn key_value(mut b: &[u8], nest: u32) -> Option<()> {
    while !b.is_empty() {
        match key(&mut b)? {
            (1, LEN) => string(&mut b)?,
            (2, LEN) => any_value(len(&mut b)?, nest)?,
            (3, VARINT) => {
                varint(&mut b)?;
            }
            _ => return None,
        }
    }
    Some(())
}

fn any_value(mut b: &[u8], nest: u32) -> Option<()> {
    while !b.is_empty() {
        match key(&mut b)? {
            (1, LEN) => string(&mut b)?,
            (2 | 3 | 8, VARINT) => {
                varint(&mut b)?;
            }
            (4, I64) => {
                fixed(&mut b, 8)?;
            }
            (7, LEN) => {
                len(&mut b)?;
            }
            (5, LEN) if nest < FAST_MAX_NESTING => {
                // ArrayValue: repeated AnyValue values = 1.
                let mut a = len(&mut b)?;
                while !a.is_empty() {
                    match key(&mut a)? {
                        (1, LEN) => any_value(len(&mut a)?, nest + 1)?,
                        _ => return None,
                    }
                }
            }
            (6, LEN) if nest < FAST_MAX_NESTING => {
                // KeyValueList: repeated KeyValue values = 1.
                let mut l = len(&mut b)?;
                while !l.is_empty() {
                    match key(&mut l)? {
                        (1, LEN) => key_value(len(&mut l)?, nest + 1)?,
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    Some(())
}

fn resource(mut b: &[u8]) -> Option<()> {
    while !b.is_empty() {
        match key(&mut b)? {
            (1, LEN) => key_value(len(&mut b)?, 0)?,
            (2, VARINT) => {
                varint(&mut b)?;
            }
            _ => return None,
        }
    }
    Some(())
}

fn scope(mut b: &[u8]) -> Option<()> {
    while !b.is_empty() {
        match key(&mut b)? {
            (1 | 2, LEN) => string(&mut b)?,
            (3, LEN) => key_value(len(&mut b)?, 0)?,
            (4, VARINT) => {
                varint(&mut b)?;
            }
            _ => return None,
        }
    }
    Some(())
}

fn event(mut b: &[u8]) -> Option<()> {
    while !b.is_empty() {
        match key(&mut b)? {
            (1, I64) => {
                fixed(&mut b, 8)?;
            }
            (2, LEN) => string(&mut b)?,
            (3, LEN) => key_value(len(&mut b)?, 0)?,
            (4, VARINT) => {
                varint(&mut b)?;
            }
            _ => return None,
        }
    }
    Some(())
}

/// A `Link` whose ids have their lengths (any other is left to the careful walk).
fn link(mut b: &[u8]) -> Option<()> {
    let (mut trace, mut span) = (0, 0);
    while !b.is_empty() {
        match key(&mut b)? {
            (1, LEN) => trace = len(&mut b)?.len(),
            (2, LEN) => span = len(&mut b)?.len(),
            (3, LEN) => string(&mut b)?,
            (4, LEN) => key_value(len(&mut b)?, 0)?,
            (5, VARINT) => {
                varint(&mut b)?;
            }
            (6, I32) => {
                fixed(&mut b, 4)?;
            }
            _ => return None,
        }
    }
    (trace == 16 && span == 8).then_some(())
}

fn status(mut b: &[u8]) -> Option<()> {
    while !b.is_empty() {
        match key(&mut b)? {
            (2, LEN) => string(&mut b)?,
            (3, VARINT) => {
                varint(&mut b)?;
            }
            _ => return None,
        }
    }
    Some(())
}

pub(super) struct Fast<'a> {
    pub body: &'a [u8],
    pub limits: &'a LimitsConfig,
    pub t: Tables,
}

impl<'a> Fast<'a> {
    fn at(&self, rest: &[u8]) -> usize {
        rest.as_ptr() as usize - self.body.as_ptr() as usize
    }

    /// The whole request.
    pub fn request(&mut self) -> Option<()> {
        let mut b = self.body;
        while !b.is_empty() {
            match key(&mut b)? {
                (1, LEN) => {
                    let m = len(&mut b)?;
                    self.resource_spans(m)?;
                }
                _ => return None,
            }
        }
        (self.t.count <= self.limits.max_spans_per_request).then_some(())
    }

    fn resource_spans(&mut self, mut b: &'a [u8]) -> Option<()> {
        let group = self.t.groups.len();
        let first = self.t.group_fields.len();
        while !b.is_empty() {
            let start = self.at(b);
            match key(&mut b)? {
                (1, LEN) => resource(len(&mut b)?)?,
                (2, LEN) => {
                    let m = len(&mut b)?;
                    self.scope_spans(m, group)?;
                    continue;
                }
                (3, LEN) => string(&mut b)?,
                _ => return None,
            }
            let end = self.at(b);
            self.t.group_fields.push(start..end);
        }
        self.t.groups.push(first..self.t.group_fields.len());
        Some(())
    }

    fn scope_spans(&mut self, mut b: &'a [u8], group: usize) -> Option<()> {
        let index = self.t.scopes.len();
        self.t.scopes.push((group, 0..0));
        let first = self.t.scope_fields.len();
        while !b.is_empty() {
            let start = self.at(b);
            match key(&mut b)? {
                (1, LEN) => scope(len(&mut b)?)?,
                (2, LEN) => {
                    // The careful walk bounds the size by the bytes after the key.
                    let after_key = self.at(b);
                    let m = len(&mut b)?;
                    self.t.count += 1;
                    let end = self.at(b);
                    self.span(m, index, start..end, end - after_key)?;
                    continue;
                }
                (3, LEN) => string(&mut b)?,
                _ => return None,
            }
            let end = self.at(b);
            self.t.scope_fields.push(start..end);
        }
        self.t.scopes[index].1 = first..self.t.scope_fields.len();
        Some(())
    }

    /// One span that passes the wire checks (any other gives up).
    fn span(
        &mut self,
        mut b: &'a [u8],
        scope: usize,
        range: Range<usize>,
        wire_len: usize,
    ) -> Option<()> {
        let (mut trace, mut id, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
        let (mut start, mut end) = (0u64, 0u64);
        while !b.is_empty() {
            match key(&mut b)? {
                (1, LEN) => trace = len(&mut b)?,
                (2, LEN) => id = len(&mut b)?,
                (4, LEN) => parent = len(&mut b)?,
                (3 | 5, LEN) => string(&mut b)?,
                (6 | 10 | 12 | 14, VARINT) => {
                    varint(&mut b)?;
                }
                (7, I64) => start = fixed(&mut b, 8)?,
                (8, I64) => end = fixed(&mut b, 8)?,
                (9, LEN) => key_value(len(&mut b)?, 0)?,
                (11, LEN) => event(len(&mut b)?)?,
                (13, LEN) => link(len(&mut b)?)?,
                (15, LEN) => status(len(&mut b)?)?,
                (16, I32) => {
                    fixed(&mut b, 4)?;
                }
                _ => return None,
            }
        }
        let (trace_id, span_id, _) = convert_ids(0, trace, id, parent).ok()?;
        let plain = start != 0
            && end <= MAX_TIMESTAMP_NS
            && end >= start
            && 128 + wire_len.saturating_mul(MAX_ESTIMATE_PER_WIRE_BYTE)
                <= self.limits.max_span_bytes;
        plain.then(|| {
            self.t.spans.push(WireSpan {
                trace_id,
                span_id,
                scope,
                range,
            })
        })
    }
}
