//! Wire-level helpers shared by the OTLP protobuf reader and the router's
//! scanner: prost's field readers with this module's recursion count, and
//! prost's own error values (its error kinds are private, so each is
//! produced by asking prost to fail the same way).

use prost::bytes::Buf;
use prost::encoding::{check_wire_type, decode_key, decode_varint, DecodeContext, WireType};
use prost::DecodeError;

use crate::model::CompactString;

/// prost's recursion limit (`prost::RECURSION_LIMIT`, not public): nested
/// messages allowed below the top-level one.
pub(super) const RECURSION_LIMIT: u32 = 100;

pub(super) type R<T> = Result<T, DecodeError>;

/// Adds prost's `Message.field` trail entry to an error.
#[cold]
pub(super) fn at(mut e: DecodeError, message: &'static str, field: &'static str) -> DecodeError {
    e.push(message, field);
    e
}

/// prost's "buffer underflow", from prost itself (its error kinds are private).
#[cold]
pub(super) fn underflow() -> DecodeError {
    let mut empty: &[u8] = &[];
    skip_field_prost(WireType::SixtyFourBit, &mut empty)
}

#[cold]
pub(super) fn skip_field_prost(wt: WireType, buf: &mut &[u8]) -> DecodeError {
    match prost::encoding::skip_field(wt, 1, buf, DecodeContext::default()) {
        Err(e) => e,
        Ok(()) => unreachable!("prost skipped a field past the end of its input"),
    }
}

/// prost's "invalid string value: data is not UTF-8 encoded".
#[cold]
pub(super) fn invalid_string() -> DecodeError {
    let mut s = String::new();
    let mut bad: &[u8] = &[1, 0xff];
    match prost::encoding::string::merge(
        WireType::LengthDelimited,
        &mut s,
        &mut bad,
        DecodeContext::default(),
    ) {
        Err(e) => e,
        Ok(()) => unreachable!("prost accepted invalid UTF-8"),
    }
}

/// prost's "recursion limit reached": a group nested past the limit.
#[cold]
pub(super) fn recursion_limit() -> DecodeError {
    let nested = [0x0b_u8; RECURSION_LIMIT as usize];
    skip_field_prost(WireType::StartGroup, &mut &nested[..])
}

/// `prost::encoding::skip_field` with this reader's recursion count.
pub(super) fn skip_field(wt: WireType, tag: u32, buf: &mut &[u8], ctx: u32) -> R<()> {
    if ctx == 0 {
        return Err(recursion_limit());
    }
    let len = match wt {
        WireType::Varint => decode_varint(buf).map(|_| 0)?,
        WireType::ThirtyTwoBit => 4,
        WireType::SixtyFourBit => 8,
        WireType::LengthDelimited => decode_varint(buf)?,
        WireType::StartGroup => loop {
            let (inner_tag, inner_wt) = decode_key(buf)?;
            match inner_wt {
                WireType::EndGroup => {
                    if inner_tag != tag {
                        return Err(end_group_error(inner_tag));
                    }
                    break 0;
                }
                _ => skip_field(inner_wt, inner_tag, buf, ctx - 1)?,
            }
        },
        WireType::EndGroup => return Err(end_group_error(tag)),
    };
    if len > buf.len() as u64 {
        return Err(underflow());
    }
    buf.advance(len as usize);
    Ok(())
}

/// prost's "unexpected end group tag".
#[cold]
pub(super) fn end_group_error(_tag: u32) -> DecodeError {
    let mut b: &[u8] = &[];
    skip_field_prost(WireType::EndGroup, &mut b)
}

/// A nested message (`prost::encoding::message::merge`): checks the wire
/// type and the recursion limit, then runs `field` for each of its fields
/// with the inner recursion count.
pub(super) fn message<'a, F>(wt: WireType, buf: &mut &'a [u8], ctx: u32, mut field: F) -> R<()>
where
    F: FnMut(u32, WireType, &mut &'a [u8], u32) -> R<()>,
{
    check_wire_type(WireType::LengthDelimited, wt)?;
    if ctx == 0 {
        return Err(recursion_limit());
    }
    let inner = ctx - 1;
    // prost::encoding::merge_loop, on the same buffer: a field may run past
    // the message's end (delimited length exceeded), as in prost.
    prost::encoding::merge_loop(
        &mut (),
        buf,
        DecodeContext::default(),
        |_, buf: &mut &'a [u8], _| {
            let (tag, wt) = decode_key(buf)?;
            field(tag, wt, buf, inner)
        },
    )
}

/// A length-delimited field's bytes (`bytes::merge`), borrowed.
#[inline]
pub(super) fn bytes_field<'a>(wt: WireType, buf: &mut &'a [u8]) -> R<&'a [u8]> {
    check_wire_type(WireType::LengthDelimited, wt)?;
    let len = decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(underflow());
    }
    let (b, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(b)
}

/// A string field, checked for UTF-8 and borrowed.
#[inline]
pub(super) fn str_field<'a>(wt: WireType, buf: &mut &'a [u8]) -> R<&'a str> {
    utf8(bytes_field(wt, buf)?).ok_or_else(invalid_string)
}

/// `bytes` as text if it is UTF-8. Attribute keys and values are nearly
/// always short ASCII, which `is_ascii` checks a word at a time; the full
/// validation (`str::from_utf8`) cost more than the rest of reading a
/// string field.
#[inline]
pub(super) fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

#[inline]
pub(super) fn string_field(wt: WireType, buf: &mut &[u8]) -> R<String> {
    str_field(wt, buf).map(str::to_owned)
}

/// A string field as the model's inline-when-short string (no allocation up
/// to 24 bytes).
#[inline]
pub(super) fn compact_field(wt: WireType, buf: &mut &[u8]) -> R<CompactString> {
    str_field(wt, buf).map(CompactString::from)
}

#[inline]
pub(super) fn varint_field(wt: WireType, buf: &mut &[u8]) -> R<u64> {
    check_wire_type(WireType::Varint, wt)?;
    decode_varint(buf)
}

#[inline]
pub(super) fn fixed64_field(wt: WireType, buf: &mut &[u8]) -> R<u64> {
    check_wire_type(WireType::SixtyFourBit, wt)?;
    if buf.len() < 8 {
        return Err(underflow());
    }
    Ok(buf.get_u64_le())
}

#[inline]
pub(super) fn fixed32_field(wt: WireType, buf: &mut &[u8]) -> R<u32> {
    check_wire_type(WireType::ThirtyTwoBit, wt)?;
    if buf.len() < 4 {
        return Err(underflow());
    }
    Ok(buf.get_u32_le())
}
