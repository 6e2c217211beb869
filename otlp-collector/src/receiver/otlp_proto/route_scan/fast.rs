//! The scan's fast path: the same tables as the careful walk (`Scanner`) for a request with
//! nothing unusual in it, from one tight walk over the bytes (no prost
//! helpers, no error values, no field trail), or `None` at the first thing
//! it does not handle, and [`super::scan`] starts over with the careful walk, which
//! gives the exact error or rejection. What it handles is what a well-formed
//! request of today's SDKs holds: every known field with its wire type,
//! well-formed varints and lengths inside their message, UTF-8 strings,
//! attribute values nested at most [`FAST_MAX_NESTING`] deep, spans that
//! pass the cheap wire checks, and unknown fields (a tag above every tag the
//! careful walk knows in that message: a newer proto's field), skipped as
//! prost skips them, so that a sender on a newer OTLP version does not pay
//! both walks. Anything else (a known tag with another wire type, groups,
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

/// True if every byte of `s` is ASCII. Attribute keys and values are short
/// (5–30 bytes) and nearly always ASCII; `str::from_utf8` walks such a string
/// byte by byte unless it happens to be word-aligned, so this reads it as
/// (overlapping, unaligned) words instead: a handful of instructions for
/// any string under 16 bytes.
#[inline(always)]
fn ascii(s: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let n = s.len();
    if n < 8 {
        if n >= 4 {
            let half = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"));
            return (half(0) | half(n - 4)) & 0x8080_8080 == 0;
        }
        return s.iter().all(|&c| c < 0x80);
    }
    let mut i = 0;
    while i + 8 < n {
        if word(i) & HIGH != 0 {
            return false;
        }
        i += 8;
    }
    word(n - 8) & HIGH == 0
}

#[inline(always)]
fn utf8(s: &[u8]) -> Option<()> {
    if ascii(s) {
        return Some(());
    }
    std::str::from_utf8(s).ok().map(drop)
}

/// An unknown field of a message (its tag above every tag the careful walk
/// knows there, so prost's `skip_field` would skip it), skipped the same
/// way; a group gives up (prost walks its nested fields).
#[inline(always)]
fn skip(wt: u8, b: &mut &[u8]) -> Option<()> {
    match wt {
        VARINT => varint(b).map(drop),
        I64 => fixed(b, 8).map(drop),
        LEN => len(b).map(drop),
        I32 => fixed(b, 4).map(drop),
        _ => None,
    }
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
            (2, LEN) => value(len(&mut b)?, nest)?,
            (3, VARINT) => {
                varint(&mut b)?;
            }
            (t, wt) if t > 3 => skip(wt, &mut b)?,
            _ => return None,
        }
    }
    Some(())
}

/// An attribute's `AnyValue`: the usual one, a single string, int, bool or
/// double field, checked here without a call; any other to [`any_value`].
#[inline(always)]
fn value(v: &[u8], nest: u32) -> Option<()> {
    match v.first() {
        // string_value
        Some(0x0a) => {
            let mut r = &v[1..];
            let s = len(&mut r)?;
            if r.is_empty() {
                return utf8(s);
            }
        }
        // bool_value, int_value: one varint to the end
        Some(0x10 | 0x18) => {
            let mut r = &v[1..];
            varint(&mut r)?;
            if r.is_empty() {
                return Some(());
            }
        }
        // double_value
        Some(0x21) if v.len() == 9 => return Some(()),
        _ => {}
    }
    any_value(v, nest)
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
                        (t, wt) if t > 1 => skip(wt, &mut a)?,
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
                        (t, wt) if t > 1 => skip(wt, &mut l)?,
                        _ => return None,
                    }
                }
            }
            (t, wt) if t > 8 => skip(wt, &mut b)?,
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
            (t, wt) if t > 3 => skip(wt, &mut b)?,
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
            (t, wt) if t > 4 => skip(wt, &mut b)?,
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
            (t, wt) if t > 4 => skip(wt, &mut b)?,
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
            (t, wt) if t > 6 => skip(wt, &mut b)?,
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
            (t, wt) if t > 3 => skip(wt, &mut b)?,
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
                // Not recorded: the careful walk skips it too, and a
                // re-sliced request is built from the `ResourceSpans` only.
                (t, wt) if t > 1 => skip(wt, &mut b)?,
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
                // Kept in the group's framing, as the careful walk keeps it.
                (t, wt) if t > 3 => skip(wt, &mut b)?,
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
                (t, wt) if t > 3 => skip(wt, &mut b)?,
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
                (t, wt) if t > 16 => skip(wt, &mut b)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_ascii_check_agrees_with_the_standard_library() {
        let base: Vec<u8> = (0..70u8).map(|i| b'a' + i % 26).collect();
        for n in 0..base.len() {
            let s = &base[..n];
            assert!(ascii(s), "{n}");
            for at in 0..n {
                for high in [0x80u8, 0xc3, 0xff] {
                    let mut t = s.to_vec();
                    t[at] = high;
                    assert!(!ascii(&t), "{n} bytes, {high:#x} at {at}");
                    assert_eq!(t.is_ascii(), ascii(&t));
                }
            }
        }
        // Non-ASCII UTF-8 is still accepted (by the full check), invalid is not.
        assert_eq!(utf8("é and ü".as_bytes()), Some(()));
        assert_eq!(
            utf8(&[b'a'; 9].iter().chain(&[0xff]).copied().collect::<Vec<_>>()),
            None
        );
    }
}
