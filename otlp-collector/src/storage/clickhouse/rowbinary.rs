//! Hand-written `RowBinary` rows for the two span tables (`ft_traces`,
//! `ft_spans`), appended straight to the insert's send buffer.
//!
//! Why not the crate's serde `Row` path: there every span row needed owned
//! temporaries — the encoded span blob as its own `Vec`, three attribute
//! `Vec`s and one `String` per attribute value — and the allocations and
//! copies were a large share of the sink's CPU per span. Here a row costs no
//! allocation once the buffers have grown.
//!
//! The byte layout must follow the column lists below exactly (`RowBinary`
//! has no names or types): `FixedString(N)` as N raw bytes, `UInt8`/`UInt64`
//! little-endian, `String` as an unsigned LEB128 length and the bytes,
//! `Array(T)` as a LEB128 element count and the elements. The sink tests read
//! every column back, and a unit test below checks the layout byte by byte.

use crate::model::Span;
use crate::storage::sink_common as common;
// RowBinary's `String` is an unsigned LEB128 length and the bytes: the same
// encoding as the span blob's, so the blob's writers serve both.
use crate::storage::span_codec::{encode_span_into, put_bytes, put_varint};

/// Columns of an [`Encoder::trace_row`] row, in order.
pub(super) const TRACE_COLUMNS: &str =
    "trace_id, span_id, has_parent, service, name, start_ns, end_ns, status_code, payload";

/// Columns of an [`Encoder::span_row`] row, in order.
pub(super) const SPAN_COLUMNS: &str = "trace_id, span_id, service, name, kind, start_ns, \
     duration_ns, status_code, attr_keys, attr_types, attr_values";

/// Reusable scratch space for encoding rows.
#[derive(Default)]
pub(super) struct Encoder {
    /// The span blob, built here first because its length prefix comes first.
    blob: Vec<u8>,
    /// Text of one non-string attribute value.
    text: String,
}

impl Encoder {
    /// Appends the `ft_traces` row of `s` ([`TRACE_COLUMNS`]) to `out`.
    pub(super) fn trace_row(&mut self, s: &Span, out: &mut Vec<u8>) {
        self.blob.clear();
        encode_span_into(s, &mut self.blob);
        out.reserve(64 + s.service_name.len() + s.name.len() + self.blob.len());
        out.extend_from_slice(&s.trace_id);
        out.extend_from_slice(&s.span_id);
        out.push(s.parent_span_id.is_some() as u8);
        put_bytes(out, s.service_name.as_bytes());
        put_bytes(out, s.name.as_bytes());
        out.extend_from_slice(&s.start_ns.to_le_bytes());
        out.extend_from_slice(&s.end_ns.to_le_bytes());
        out.push(s.status_code as u8);
        put_bytes(out, &self.blob);
    }

    /// Appends the `ft_spans` row of `s` ([`SPAN_COLUMNS`]) to `out`: the
    /// searchable (scalar) attributes as three parallel arrays of key, type
    /// tag and canonical text, exactly as `sink_common::scalar_text` gives.
    pub(super) fn span_row(&mut self, s: &Span, out: &mut Vec<u8>) {
        out.extend_from_slice(&s.trace_id);
        out.extend_from_slice(&s.span_id);
        put_bytes(out, s.service_name.as_bytes());
        put_bytes(out, s.name.as_bytes());
        out.push(s.kind as u8);
        out.extend_from_slice(&s.start_ns.to_le_bytes());
        out.extend_from_slice(&s.duration_ns().to_le_bytes());
        out.push(s.status_code as u8);
        let searchable = || {
            s.attributes
                .iter()
                .filter_map(|kv| common::scalar_type(&kv.value).map(|t| (kv, t)))
        };
        let n = searchable().count() as u64;
        put_varint(out, n);
        for (kv, _) in searchable() {
            put_bytes(out, kv.key.as_bytes());
        }
        put_varint(out, n);
        for (_, t) in searchable() {
            out.push(t);
        }
        put_varint(out, n);
        for (kv, _) in searchable() {
            match &kv.value {
                crate::model::AttrValue::Str(v) => put_bytes(out, v.as_bytes()),
                v => {
                    self.text.clear();
                    common::write_scalar_text(v, &mut self.text);
                    put_bytes(out, self.text.as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, KeyValue, SpanKind, StatusCode};
    use crate::storage::span_codec::{decode_span, encode_span};

    fn span() -> Span {
        let kv = |k: &str, v| KeyValue {
            key: k.into(),
            value: v,
        };
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            name: "x".repeat(130).into(),
            kind: SpanKind::Client,
            start_ns: 1_000,
            end_ns: 1_500,
            attributes: vec![
                kv("s", AttrValue::Str("v".into())),
                kv("raw", AttrValue::Bytes(vec![9])),
                kv("i", AttrValue::Int(-7)),
                kv("nan", AttrValue::Double(f64::NAN)),
                kv("d", AttrValue::Double(-0.0)),
                kv("b", AttrValue::Bool(true)),
            ],
            status_code: StatusCode::Error,
            ..Span::test(0)
        }
    }

    /// Strings longer than 127 bytes take a two-byte LEB128 length.
    fn name_bytes() -> Vec<u8> {
        let mut v = vec![130, 1];
        v.extend_from_slice(&[b'x'; 130]);
        v
    }

    #[test]
    fn span_row_layout() {
        let mut out = Vec::new();
        Encoder::default().span_row(&span(), &mut out);
        let mut want = vec![1; 16];
        want.extend_from_slice(&[2; 8]);
        want.extend_from_slice(&[3, b's', b'v', b'c']);
        want.extend_from_slice(&name_bytes());
        want.push(SpanKind::Client as u8);
        want.extend_from_slice(&1_000u64.to_le_bytes());
        want.extend_from_slice(&500u64.to_le_bytes());
        want.push(2);
        // Bytes and NaN are not searchable: four of the six attributes.
        want.extend_from_slice(&[4, 1, b's', 1, b'i', 1, b'd', 1, b'b']);
        want.extend_from_slice(&[
            4,
            common::T_STR,
            common::T_INT,
            common::T_DOUBLE,
            common::T_BOOL,
        ]);
        want.extend_from_slice(&[
            4, 1, b'v', 2, b'-', b'7', 1, b'0', 4, b't', b'r', b'u', b'e',
        ]);
        assert_eq!(out, want);
    }

    #[test]
    fn trace_row_layout() {
        let s = span();
        let mut out = vec![0xAA];
        let mut enc = Encoder::default();
        enc.trace_row(&s, &mut out);
        let mut want = vec![0xAA];
        want.extend_from_slice(&[1; 16]);
        want.extend_from_slice(&[2; 8]);
        want.push(1);
        want.extend_from_slice(&[3, b's', b'v', b'c']);
        want.extend_from_slice(&name_bytes());
        want.extend_from_slice(&1_000u64.to_le_bytes());
        want.extend_from_slice(&1_500u64.to_le_bytes());
        want.push(2);
        let blob = encode_span(&s);
        put_varint(&mut want, blob.len() as u64);
        want.extend_from_slice(&blob);
        assert_eq!(out, want);
        // The blob is the SQLite sink's span codec (its round trip is tested
        // there); the NaN attribute makes a whole-span `==` false, so compare ids.
        let back = decode_span(&blob).unwrap();
        assert_eq!((back.trace_id, back.span_id), (s.trace_id, s.span_id));
        // The scratch blob is reused: a second row is encoded the same way.
        let mut again = Vec::new();
        enc.trace_row(&s, &mut again);
        assert_eq!(again, want[1..]);
    }

    #[test]
    fn scalar_type_agrees_with_scalar_text() {
        for kv in &span().attributes {
            assert_eq!(
                common::scalar_type(&kv.value),
                common::scalar_text(&kv.value).map(|(t, _)| t),
                "{kv:?}"
            );
        }
    }
}
