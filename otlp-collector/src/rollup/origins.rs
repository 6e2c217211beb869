//! Which WAL spans a rollup batch accounts for ("origins"), so that a crash
//! neither loses nor double counts rollups.
//!
//! Every span has a stable identity in the write-ahead log: its segment and
//! its ordinal among the spans of that segment (records are replayed in the
//! order they were written, and each record carries its span count). Every
//! rollup contribution is owned by one span, in that span's start minute, and
//! is one of three parts:
//! - [`OriginPart::Main`]: the span's operation rollup;
//! - [`OriginPart::Child`]: the caller → callee edge from the span's parent
//!   (or the fact that there is none), settled when the parent is known or
//!   given up;
//! - [`OriginPart::Peer`]: the edge to an uninstrumented peer the span names
//!   (or the fact that it was suppressed), settled when its minute is drained.
//!
//! A batch lists, per (segment, minute), the ordinal ranges of every part it
//! accounts for, and the sink stores that list with the rollup rows. At
//! replay, a part already stored is not counted again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The three contributions a span owns (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginPart {
    /// The operation rollup.
    Main = 0,
    /// The edge from the parent span's service.
    Child = 1,
    /// The edge to an uninstrumented peer.
    Peer = 2,
}

/// Where a span sits in the write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanOrigin {
    /// WAL segment id.
    pub segment: u64,
    /// Ordinal of the span among the spans of its segment.
    pub ordinal: u64,
}

/// A set of ordinals as sorted, disjoint, non-adjacent half-open ranges.
/// Ordinals mostly arrive in increasing order, so an insert usually extends
/// the last range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet(pub Vec<(u64, u64)>);

impl RangeSet {
    /// Adds one ordinal.
    pub fn insert(&mut self, v: u64) {
        self.insert_range(v, v.saturating_add(1));
    }

    /// Adds `[start, end)`.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let r = &mut self.0;
        if let Some(last) = r.last_mut() {
            if start >= last.0 && start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
            if start > last.1 {
                r.push((start, end));
                return;
            }
        } else {
            r.push((start, end));
            return;
        }
        // Out of order: merge with every range it touches.
        let first = r.partition_point(|&(_, e)| e < start);
        let mut last = first;
        let (mut s, mut e) = (start, end);
        while last < r.len() && r[last].0 <= end {
            s = s.min(r[last].0);
            e = e.max(r[last].1);
            last += 1;
        }
        r.splice(first..last, [(s, e)]);
    }

    /// True when `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= v);
        i < self.0.len() && self.0[i].0 <= v
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every range of `other`.
    pub fn union(&mut self, other: &RangeSet) {
        for &(s, e) in &other.0 {
            self.insert_range(s, e);
        }
    }
}

/// The spans of one segment whose contributions to one minute a batch
/// accounts for, per [`OriginPart`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupOrigin {
    /// WAL segment id.
    pub segment: u64,
    /// The minute the contributions belong to (the owning spans' start minute).
    pub minute_ns: u64,
    /// Ordinal ranges per part, indexed by `OriginPart as usize`.
    pub parts: [RangeSet; 3],
}

impl RollupOrigin {
    /// Encodes the ranges for storage: per part a count, then
    /// (gap from the previous end, length) pairs, all LEB128 varints.
    pub fn encode_ranges(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.push(1u8); // format version
        for part in &self.parts {
            put_varint(&mut out, part.0.len() as u64);
            let mut prev = 0u64;
            for &(s, e) in &part.0 {
                put_varint(&mut out, s - prev);
                put_varint(&mut out, e - s);
                prev = e;
            }
        }
        out
    }

    /// Decodes what [`encode_ranges`](Self::encode_ranges) wrote.
    pub fn decode_ranges(data: &[u8]) -> Result<[RangeSet; 3], String> {
        let mut pos = 0usize;
        if data.first() != Some(&1) {
            return Err("unknown rollup origin encoding (expected version 1)".into());
        }
        pos += 1;
        let mut parts: [RangeSet; 3] = Default::default();
        for part in &mut parts {
            let n = get_varint(data, &mut pos)?;
            let mut prev = 0u64;
            for _ in 0..n {
                let s = prev
                    .checked_add(get_varint(data, &mut pos)?)
                    .ok_or("rollup origin range overflows")?;
                let e = s
                    .checked_add(get_varint(data, &mut pos)?)
                    .ok_or("rollup origin range overflows")?;
                part.insert_range(s, e);
                prev = e;
            }
        }
        if pos != data.len() {
            return Err("trailing bytes after rollup origin ranges".into());
        }
        Ok(parts)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos).ok_or("truncated rollup origin ranges")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("rollup origin varint too long".into())
}

/// The parts already stored by a sink for the segments being replayed.
#[derive(Clone, Debug, Default)]
pub struct WrittenOrigins {
    segments: HashMap<u64, [RangeSet; 3]>,
}

impl WrittenOrigins {
    /// Collects stored origins (any order, any number of rows per segment).
    pub fn from_stored(rows: impl IntoIterator<Item = RollupOrigin>) -> Self {
        let mut segments: HashMap<u64, [RangeSet; 3]> = HashMap::new();
        for r in rows {
            let e = segments.entry(r.segment).or_default();
            for (acc, part) in e.iter_mut().zip(r.parts.iter()) {
                acc.union(part);
            }
        }
        WrittenOrigins { segments }
    }

    /// True when nothing was stored.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Which parts of the span at `o` are already stored, indexed by `OriginPart as usize`.
    pub fn written(&self, o: SpanOrigin) -> [bool; 3] {
        match self.segments.get(&o.segment) {
            None => [false; 3],
            Some(p) => [
                p[0].contains(o.ordinal),
                p[1].contains(o.ordinal),
                p[2].contains(o.ordinal),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges_in_any_order() {
        let mut r = RangeSet::default();
        for v in [0, 1, 2, 5, 6, 9, 3, 4, 8, 7, 20, 12] {
            r.insert(v);
        }
        assert_eq!(r.0, vec![(0, 10), (12, 13), (20, 21)]);
        assert!(r.contains(0) && r.contains(9) && r.contains(12) && r.contains(20));
        assert!(!r.contains(10) && !r.contains(11) && !r.contains(13) && !r.contains(21));
        r.insert_range(10, 20);
        assert_eq!(r.0, vec![(0, 21)]);
    }

    #[test]
    fn ranges_round_trip_and_bad_input_is_an_error() {
        let mut o = RollupOrigin {
            segment: 3,
            minute_ns: 60,
            ..Default::default()
        };
        o.parts[0].insert_range(0, 1000);
        o.parts[1].insert_range(0, 10);
        o.parts[1].insert_range(11, 1000);
        o.parts[2].insert(u64::MAX - 1);
        let enc = o.encode_ranges();
        assert_eq!(RollupOrigin::decode_ranges(&enc).unwrap(), o.parts);
        assert!(RollupOrigin::decode_ranges(&enc[..enc.len() - 1]).is_err());
        assert!(RollupOrigin::decode_ranges(&[2]).is_err());
        let mut long = enc.clone();
        long.push(0);
        assert!(RollupOrigin::decode_ranges(&long).is_err());
    }

    #[test]
    fn written_unions_rows() {
        let mk = |seg, part: usize, s, e| {
            let mut o = RollupOrigin {
                segment: seg,
                ..Default::default()
            };
            o.parts[part].insert_range(s, e);
            o
        };
        let w = WrittenOrigins::from_stored([mk(1, 0, 0, 5), mk(1, 0, 5, 9), mk(1, 1, 2, 3)]);
        let at = |ordinal| SpanOrigin {
            segment: 1,
            ordinal,
        };
        assert_eq!(w.written(at(7)), [true, false, false]);
        assert_eq!(w.written(at(2)), [true, true, false]);
        assert_eq!(
            w.written(SpanOrigin {
                segment: 2,
                ordinal: 2
            }),
            [false; 3]
        );
    }
}
