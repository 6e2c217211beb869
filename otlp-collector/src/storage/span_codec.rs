//! The span blob codec: a compact, versioned binary encoding of one whole
//! span, shared by every sink that stores spans as a blob (SQLite's `data`
//! column, PostgreSQL's `payload` bytea, ClickHouse's `payload` String).
//!
//! LEB128 varints for integers and lengths, raw IEEE-754 bits for doubles (so
//! NaN, -0.0 and every other value round-trip bit-exactly, which JSON cannot
//! promise). Decoding never panics on a corrupt blob: truncation, trailing
//! bytes, unknown tags and deep nesting are errors.

use super::{StorageError, StorageResult};
use crate::model::{AttrValue, CompactString, Span, SpanId, SpanKind, StatusCode};

const CODEC_VERSION: u8 = 1;
/// Nesting limit when decoding arrays/maps, so a corrupt blob cannot overflow the stack.
const MAX_DEPTH: usize = 128;

/// Encodes a span into the blob stored in the `data` column.
pub fn encode_span(span: &Span) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    encode_span_into(span, &mut out);
    out
}

/// Appends `v` as an unsigned LEB128 varint (also ClickHouse `RowBinary`'s
/// length prefix).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `b` with its varint length first (also ClickHouse `RowBinary`'s
/// `String`).
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_value(out: &mut Vec<u8>, v: &AttrValue) {
    match v {
        AttrValue::Str(s) => {
            out.push(0);
            put_bytes(out, s.as_bytes());
        }
        AttrValue::Bool(b) => {
            out.push(1);
            out.push(*b as u8);
        }
        AttrValue::Int(i) => {
            out.push(2);
            // Zigzag so small negatives stay short.
            put_varint(out, ((*i << 1) ^ (*i >> 63)) as u64);
        }
        AttrValue::Double(d) => {
            out.push(3);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        AttrValue::Bytes(b) => {
            out.push(4);
            put_bytes(out, b);
        }
        AttrValue::Array(a) => {
            out.push(5);
            put_varint(out, a.len() as u64);
            for x in a {
                put_value(out, x);
            }
        }
        AttrValue::KvList(kvs) => {
            out.push(6);
            put_kvs(out, kvs);
        }
        AttrValue::Empty => out.push(7),
    }
}

fn put_kvs(out: &mut Vec<u8>, kvs: &[crate::model::KeyValue]) {
    put_varint(out, kvs.len() as u64);
    for kv in kvs {
        put_bytes(out, kv.key.as_bytes());
        put_value(out, &kv.value);
    }
}

/// Appends the blob of [`encode_span`] to `out` (lets a caller reuse one buffer).
pub(crate) fn encode_span_into(s: &Span, out: &mut Vec<u8>) {
    out.push(CODEC_VERSION);
    out.extend_from_slice(&s.trace_id);
    out.extend_from_slice(&s.span_id);
    match &s.parent_span_id {
        Some(p) => {
            out.push(1);
            out.extend_from_slice(p);
        }
        None => out.push(0),
    }
    put_bytes(out, s.trace_state.as_bytes());
    put_varint(out, s.flags as u64);
    put_bytes(out, s.name.as_bytes());
    out.push(s.kind as u8);
    put_varint(out, s.start_ns);
    put_varint(out, s.end_ns);
    put_kvs(out, &s.attributes);
    put_varint(out, s.dropped_attributes_count as u64);
    put_varint(out, s.events.len() as u64);
    for e in &s.events {
        put_varint(out, e.time_ns);
        put_bytes(out, e.name.as_bytes());
        put_kvs(out, &e.attributes);
        put_varint(out, e.dropped_attributes_count as u64);
    }
    put_varint(out, s.dropped_events_count as u64);
    put_varint(out, s.links.len() as u64);
    for l in &s.links {
        out.extend_from_slice(&l.trace_id);
        out.extend_from_slice(&l.span_id);
        put_bytes(out, l.trace_state.as_bytes());
        put_kvs(out, &l.attributes);
        put_varint(out, l.dropped_attributes_count as u64);
        put_varint(out, l.flags as u64);
    }
    put_varint(out, s.dropped_links_count as u64);
    out.push(s.status_code as u8);
    put_bytes(out, s.status_message.as_bytes());
    put_bytes(out, s.service_name.as_bytes());
    put_kvs(out, &s.resource_attributes);
    put_bytes(out, s.scope_name.as_bytes());
    put_bytes(out, s.scope_version.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
}

type DecodeResult<T> = Result<T, &'static str>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if self.b.len() < n {
            return Err("truncated");
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn varint(&mut self) -> DecodeResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }
    fn u32(&mut self) -> DecodeResult<u32> {
        u32::try_from(self.varint()?).map_err(|_| "u32 out of range")
    }
    fn len(&mut self) -> DecodeResult<usize> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
        // Every element takes at least one byte, so a length beyond the rest is corrupt.
        if n > self.b.len() {
            return Err("length beyond end");
        }
        Ok(n)
    }
    fn bytes(&mut self) -> DecodeResult<Vec<u8>> {
        let n = self.len()?;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> DecodeResult<String> {
        String::from_utf8(self.bytes()?).map_err(|_| "invalid utf-8")
    }
    /// A string as the model's inline-when-short type (no allocation up to 24 bytes).
    fn compact(&mut self) -> DecodeResult<CompactString> {
        let n = self.len()?;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| "invalid utf-8")?;
        Ok(CompactString::from(s))
    }
    fn arr<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn value(&mut self, depth: usize) -> DecodeResult<AttrValue> {
        if depth > MAX_DEPTH {
            return Err("nesting too deep");
        }
        Ok(match self.u8()? {
            0 => AttrValue::Str(self.compact()?),
            1 => AttrValue::Bool(self.u8()? != 0),
            2 => {
                let z = self.varint()?;
                AttrValue::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            3 => AttrValue::Double(f64::from_bits(u64::from_le_bytes(self.arr::<8>()?))),
            4 => AttrValue::Bytes(self.bytes()?),
            5 => {
                let n = self.len()?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                AttrValue::Array(a)
            }
            6 => AttrValue::KvList(self.kvs(depth + 1)?),
            7 => AttrValue::Empty,
            _ => return Err("unknown value tag"),
        })
    }
    fn kvs(&mut self, depth: usize) -> DecodeResult<Vec<crate::model::KeyValue>> {
        let n = self.len()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.compact()?;
            let value = self.value(depth)?;
            out.push(crate::model::KeyValue { key, value });
        }
        Ok(out)
    }
}

/// Decodes a blob written by [`encode_span`].
pub fn decode_span(b: &[u8]) -> StorageResult<Span> {
    decode_span_inner(b).map_err(|why| {
        StorageError::Backend(format!(
            "stored span blob is corrupt ({why}); the database file may be damaged"
        ))
    })
}

fn decode_span_inner(b: &[u8]) -> DecodeResult<Span> {
    let mut r = Reader { b };
    if r.u8()? != CODEC_VERSION {
        return Err("unknown codec version");
    }
    let trace_id = r.arr::<16>()?;
    let span_id: SpanId = r.arr::<8>()?;
    let parent_span_id = match r.u8()? {
        0 => None,
        _ => Some(r.arr::<8>()?),
    };
    let trace_state = r.string()?;
    let flags = r.u32()?;
    let name = r.compact()?;
    let kind = SpanKind::from_i32(r.u8()? as i32);
    let start_ns = r.varint()?;
    let end_ns = r.varint()?;
    let attributes = r.kvs(0)?;
    let dropped_attributes_count = r.u32()?;
    let n = r.len()?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(crate::model::Event {
            time_ns: r.varint()?,
            name: r.compact()?,
            attributes: r.kvs(0)?,
            dropped_attributes_count: r.u32()?,
        });
    }
    let dropped_events_count = r.u32()?;
    let n = r.len()?;
    let mut links = Vec::with_capacity(n);
    for _ in 0..n {
        links.push(crate::model::Link {
            trace_id: r.arr::<16>()?,
            span_id: r.arr::<8>()?,
            trace_state: r.string()?,
            attributes: r.kvs(0)?,
            dropped_attributes_count: r.u32()?,
            flags: r.u32()?,
        });
    }
    let dropped_links_count = r.u32()?;
    let status_code = StatusCode::from_i32(r.u8()? as i32);
    let status_message = r.string()?;
    let service_name = r.compact()?;
    let resource_attributes = r.kvs(0)?.into();
    let scope_name = r.compact()?;
    let scope_version = r.compact()?;
    if !r.b.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state,
        flags,
        name,
        kind,
        start_ns,
        end_ns,
        attributes,
        dropped_attributes_count,
        events,
        dropped_events_count,
        links,
        dropped_links_count,
        status_code,
        status_message,
        service_name,
        resource_attributes,
        scope_name,
        scope_version,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Event, KeyValue, Link};

    /// A span using every field and every attribute value type.
    pub(crate) fn full_span() -> Span {
        Span {
            trace_id: [7; 16],
            span_id: [9; 8],
            parent_span_id: Some([1; 8]),
            trace_state: "a=b".into(),
            flags: 0x301,
            name: "op 'x' \"y\" \\ é 🚀".into(),
            kind: SpanKind::Consumer,
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_123_456_789,
            attributes: vec![
                KeyValue::new("nan", AttrValue::Double(f64::NAN)),
                KeyValue::new("neg", AttrValue::Int(i64::MIN)),
                KeyValue::new("negz", AttrValue::Double(-0.0)),
                KeyValue::new("b", AttrValue::Bytes(vec![0, 255, 1])),
                KeyValue::new("empty", AttrValue::Empty),
                KeyValue::new(
                    "nested",
                    AttrValue::KvList(vec![KeyValue::new(
                        "arr",
                        AttrValue::Array(vec![AttrValue::Bool(true), AttrValue::Empty]),
                    )]),
                ),
            ],
            dropped_attributes_count: 3,
            events: vec![Event {
                time_ns: 5,
                name: "exception".into(),
                attributes: vec![KeyValue::new("k", AttrValue::Str("v".into()))],
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 2,
            links: vec![Link {
                trace_id: [3; 16],
                span_id: [4; 8],
                trace_state: "x=y".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 4,
            status_code: StatusCode::Error,
            status_message: "boom".into(),
            service_name: "svc".into(),
            resource_attributes: vec![KeyValue::new("service.name", AttrValue::Str("svc".into()))]
                .into(),
            scope_name: "scope".into(),
            scope_version: "1.0".into(),
        }
    }

    #[test]
    fn codec_round_trips_bit_exact_including_nan() {
        let s = full_span();
        let back = decode_span(&encode_span(&s)).expect("decode");
        match (&back.attributes[0].value, &back.attributes[2].value) {
            (AttrValue::Double(n), AttrValue::Double(z)) => {
                assert!(n.is_nan());
                assert_eq!(z.to_bits(), (-0.0f64).to_bits());
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut a = s.clone();
        let mut b = back;
        a.attributes.remove(0);
        b.attributes.remove(0);
        assert_eq!(a, b);
    }

    #[test]
    fn codec_rejects_every_truncation_without_panicking() {
        let blob = encode_span(&full_span());
        for n in 0..blob.len() {
            assert!(
                decode_span(&blob[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        let mut extra = blob.clone();
        extra.push(0);
        assert!(decode_span(&extra).is_err());
    }
}
