//! Trace and span identifiers (W3C Trace Context: 16 and 8 bytes, lowercase hex)
//! and their generation from a cryptographically secure per-thread RNG.

use std::fmt;

/// Why an identifier could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The text does not have exactly 32 (trace) or 16 (span) characters.
    #[error("expected {expected} lowercase hex characters, got {got}")]
    Length {
        /// Required length.
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// A character is not `0-9` or `a-f` (uppercase is rejected, as W3C requires).
    #[error("invalid character at position {0}: only lowercase hex 0-9a-f is allowed")]
    Char(usize),
    /// All bytes are zero, which W3C reserves as invalid.
    #[error("the all-zero id is invalid")]
    Zero,
}

/// Each byte's value as a lowercase hex digit, shifted left by `SHIFT`
/// bits, in a `u16`; 0x100 for anything else (uppercase included: W3C ids
/// are lowercase). Bit 8 is outside every valid digit's bits, so OR-ing the
/// high and low digits' entries gives the byte and an error flag at once.
const fn hex_table<const SHIFT: u32>() -> [u16; 256] {
    let mut t = [0x100u16; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = (i as u16) << SHIFT;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = (10 + i as u16) << SHIFT;
        i += 1;
    }
    t
}
const HEX_HI: [u16; 256] = hex_table::<4>();
const HEX_LO: [u16; 256] = hex_table::<0>();

/// Parses exactly `N*2` lowercase hex characters into bytes (zero allowed).
#[inline]
pub(crate) fn parse_hex<const N: usize>(s: &[u8]) -> Result<[u8; N], IdParseError> {
    if s.len() != N * 2 {
        return Err(IdParseError::Length {
            expected: N * 2,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    let ok = if N.is_multiple_of(4) {
        // Ids (16 and 8 bytes): eight characters at a time in a `u64`.
        // The words' invalid bits are gathered and tested once.
        let mut bad = 0u64;
        for (o, eight) in out.chunks_exact_mut(4).zip(s.chunks_exact(8)) {
            let mut c = [0u8; 8];
            c.copy_from_slice(eight);
            let (v, invalid) = hex_word(u64::from_le_bytes(c));
            o.copy_from_slice(&v.to_le_bytes());
            bad |= invalid;
        }
        bad == 0
    } else {
        // Two table look-ups per byte and a single check at the end: no
        // branch per character, no shift and no mask.
        let mut bad = 0u16;
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let v = HEX_HI[pair[0] as usize] | HEX_LO[pair[1] as usize];
            bad |= v;
            *o = v as u8;
        }
        bad & 0x100 == 0
    };
    if !ok {
        let pos = s
            .iter()
            .position(|&c| HEX_LO[c as usize] == 0x100)
            .unwrap_or(0);
        return Err(IdParseError::Char(pos));
    }
    Ok(out)
}

/// Eight lowercase hex characters (little-endian in `x`: the first
/// character in the low byte) as four bytes in order (little-endian in the
/// result), and a mask that is zero when all eight were `0-9a-f` (the high
/// bit of each byte that was not). SWAR, without a branch or a table
/// look-up per character (ids are parsed from every incoming `traceparent`).
#[inline]
fn hex_word(x: u64) -> (u32, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // With every byte below 0x80, adding at most 0x7f to each byte never
    // carries into the next one; bit 7 of each sum says whether the byte
    // reached the bound.
    let digit = x.wrapping_add(ONES * (0x80 - b'0' as u64))
        & !x.wrapping_add(ONES * (0x80 - (b'9' as u64 + 1)));
    let letter = x.wrapping_add(ONES * (0x80 - b'a' as u64))
        & !x.wrapping_add(ONES * (0x80 - (b'f' as u64 + 1)));
    // A byte of 0x80 or more is invalid by its own high bit (the sums
    // above may then carry into its neighbours: the word is refused anyway).
    let invalid = (x | !(digit | letter)) & HIGH;
    // '0'..'9' → 0..9 from the low nibble; 'a'..'f' (low nibble 1..6) + 9.
    let v = (x & (ONES * 0x0f)) + ((letter >> 7) & ONES) * 9;
    // Nibble pairs into bytes, then the bytes side by side.
    let v = ((v << 4) | (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    let v = v | (v >> 16);
    (v as u32, invalid)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Eight bytes as sixteen lowercase hex digits, computed in one `u128`
/// (SWAR): the nibbles are spread one per byte, then each becomes `'0' + n`
/// or `'a' + n - 10`. About a third of the instructions of a table look-up
/// per nibble with a bounds check each (ids are written on every inject).
#[inline]
pub(crate) fn hex8(bytes: [u8; 8]) -> [u8; 16] {
    const LANES_32: u128 = 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    const LANES_16: u128 = 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    const LANES_8: u128 = 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    const LANES_4: u128 = 0x0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f;
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    let mut x = u128::from(u64::from_be_bytes(bytes));
    // Each step moves the upper half of every lane into the next lane up,
    // so the most significant nibble ends in the most significant byte.
    x = (x | (x << 32)) & LANES_32;
    x = (x | (x << 16)) & LANES_16;
    x = (x | (x << 8)) & LANES_8;
    x = (x | (x << 4)) & LANES_4;
    // Every byte is now 0..=15; adding 6 carries into bit 4 exactly for
    // 10..=15 and never into the next byte (15 + 6 < 256).
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    let ascii = x + b'0' as u128 * ONES + letters * (b'a' - b'0' - 10) as u128;
    ascii.to_be_bytes()
}

/// Writes `bytes` as lowercase hex into `out`, which must hold exactly
/// twice as many bytes (a programming error otherwise: it panics).
#[inline]
pub(crate) fn write_hex(bytes: &[u8], out: &mut [u8]) {
    assert_eq!(out.len(), bytes.len() * 2, "write_hex: output length");
    let mut chunks = bytes.chunks_exact(8);
    let mut outs = out.chunks_exact_mut(16);
    for (c, o) in (&mut chunks).zip(&mut outs) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(c);
        o.copy_from_slice(&hex8(eight));
    }
    let rest = outs.into_remainder();
    for (i, b) in chunks.remainder().iter().enumerate() {
        rest[2 * i] = HEX[(b >> 4) as usize];
        rest[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
}

macro_rules! id_type {
    ($name:ident, $n:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name([u8; $n]);

        impl $name {
            /// The invalid all-zero id.
            pub const INVALID: $name = $name([0; $n]);

            /// An id from raw big-endian bytes (may be the invalid all-zero id).
            pub const fn from_bytes(bytes: [u8; $n]) -> Self {
                $name(bytes)
            }
            /// The raw big-endian bytes.
            pub const fn to_bytes(self) -> [u8; $n] {
                self.0
            }
            /// True unless all bytes are zero.
            pub fn is_valid(&self) -> bool {
                self.0 != [0; $n]
            }
            /// Parses lowercase hex of exactly the right length; rejects uppercase,
            /// non-hex and all-zero.
            pub fn from_hex(s: &str) -> Result<Self, IdParseError> {
                let id = $name(parse_hex::<$n>(s.as_bytes())?);
                if id.is_valid() {
                    Ok(id)
                } else {
                    Err(IdParseError::Zero)
                }
            }
            /// Lowercase hex without allocation.
            pub fn to_hex_bytes(&self) -> [u8; $n * 2] {
                let mut out = [0u8; $n * 2];
                write_hex(&self.0, &mut out);
                out
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let hex = self.to_hex_bytes();
                // write_hex only emits ASCII hex digits.
                f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }
    };
}

id_type!(TraceId, 16, "A 128-bit trace id. Displayed as 32 lowercase hex characters.\n\n```\nlet id: ferrotrace::TraceId = \"4bf92f3577b34da6a3ce929d0e0e4736\".parse().unwrap();\nassert_eq!(id.to_string(), \"4bf92f3577b34da6a3ce929d0e0e4736\");\nassert!(\"4BF92F3577B34DA6A3CE929D0E0E4736\".parse::<ferrotrace::TraceId>().is_err());\n```");
id_type!(SpanId, 8, "A 64-bit span id. Displayed as 16 lowercase hex characters.\n\n```\nlet id: ferrotrace::SpanId = \"00f067aa0ba902b7\".parse().unwrap();\nassert_eq!(id.to_string(), \"00f067aa0ba902b7\");\n```");

/// Generates new trace and span ids.
///
/// Ids come from a ChaCha8 CSPRNG per thread (`rand_chacha`), seeded from
/// [`rand::rngs::ThreadRng`] (itself seeded from the operating system) when
/// the thread draws its first id, so ids are unpredictable and never shared
/// between threads without synchronisation. ChaCha8 rather than `ThreadRng`'s
/// ChaCha12 with reference counting and reseeding checks per draw: ids are
/// drawn on every sampled span, and this is about half the instructions
/// (ChaCha8 is the generator Go's runtime and `math/rand/v2` use for the same
/// reason; an id needs unpredictability, not long-term key secrecy). An
/// all-zero draw (probability 2^-64 / 2^-128) is redrawn, so generated ids
/// are always valid.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdGenerator;

impl IdGenerator {
    /// A new random, valid (non-zero) trace id.
    #[inline]
    pub fn new_trace_id(&self) -> TraceId {
        new_trace_id()
    }
    /// A new random, valid (non-zero) span id.
    #[inline]
    pub fn new_span_id(&self) -> SpanId {
        new_span_id()
    }
}

/// The per-thread generator: ChaCha8 blocks (four at a time, 256 bytes)
/// read eight bytes at a time. Reading the block buffer directly, rather
/// than through `rand`'s `BlockRng` (an index check and a possible refill
/// per `next_u64`), costs about a third of the instructions per id.
struct IdRng {
    core: rand_chacha::ChaCha8Core,
    buf: <rand_chacha::ChaCha8Core as BlockRngCore>::Results,
    /// Next unread 64-bit word of `buf` (`WORDS` = all read).
    pos: usize,
}

use rand::rand_core::block::BlockRngCore;

/// 64-bit words in one refill of [`IdRng::buf`].
const WORDS: usize = 32;

impl IdRng {
    fn new() -> Self {
        IdRng {
            core: rand::SeedableRng::from_rng(&mut rand::rng()),
            buf: Default::default(),
            pos: WORDS,
        }
    }

    /// `N` fresh random words (`N <= WORDS`); a refill skips the words left
    /// over from the previous block rather than splicing two blocks.
    #[inline]
    fn words<const N: usize>(&mut self) -> [u64; N] {
        if self.pos + N > WORDS {
            self.core.generate(&mut self.buf);
            self.pos = 0;
        }
        let b: &[u32] = self.buf.as_ref();
        debug_assert!(b.len() >= 2 * WORDS);
        let mut out = [0u64; N];
        // One (unaligned) 64-bit load per word, without a bounds check per
        // word: `pos + N <= WORDS` was established above, and the buffer
        // holds `2 * WORDS` u32s (checked once per refill below).
        if b.len() >= 2 * WORDS {
            let base = b.as_ptr().cast::<u64>();
            for (k, o) in out.iter_mut().enumerate() {
                // SAFETY: `pos + k < WORDS`, so the eight bytes at u32 index
                // `2 * (pos + k)` lie inside the `2 * WORDS`-u32 buffer;
                // `read_unaligned` needs no alignment.
                let w = unsafe { base.add(self.pos + k).read_unaligned() };
                // Little-endian: the same value as `b[i] | b[i + 1] << 32`
                // (ChaCha's word order); on big-endian swap the halves.
                *o = if cfg!(target_endian = "little") {
                    w
                } else {
                    w.rotate_left(32)
                };
            }
        } else {
            for (k, o) in out.iter_mut().enumerate() {
                let i = 2 * (self.pos + k);
                *o = u64::from(b[i]) | (u64::from(b[i + 1]) << 32);
            }
        }
        self.pos += N;
        out
    }
}

thread_local! {
    // `UnsafeCell`, not `RefCell`: the generator is only touched inside
    // `with_rng`, whose closures never re-enter it.
    static RNG: std::cell::UnsafeCell<IdRng> = std::cell::UnsafeCell::new(IdRng::new());
}

/// `N` random words from this thread's generator; on a thread whose
/// thread-locals are being destroyed, from a fresh one seeded from the
/// operating system.
#[inline]
fn random_words<const N: usize>() -> [u64; N] {
    RNG.try_with(|r| {
        // SAFETY: nothing in `words` calls back into `random_words`, so this
        // is the only reference to the thread's generator.
        unsafe { &mut *r.get() }.words::<N>()
    })
    .unwrap_or_else(|_| IdRng::new().words::<N>())
}

/// A new trace id and span id with one access to the per-thread CSPRNG
/// (a root span needs both).
#[inline]
pub fn new_trace_and_span_id() -> (TraceId, SpanId) {
    loop {
        let [hi, lo, s] = random_words::<3>();
        let t = (u128::from(hi) << 64) | u128::from(lo);
        if t != 0 && s != 0 {
            return (
                TraceId::from_bytes(t.to_be_bytes()),
                SpanId::from_bytes(s.to_be_bytes()),
            );
        }
    }
}

/// A new random, valid (non-zero) trace id from the per-thread CSPRNG.
#[inline]
pub fn new_trace_id() -> TraceId {
    loop {
        let [hi, lo] = random_words::<2>();
        let v = (u128::from(hi) << 64) | u128::from(lo);
        if v != 0 {
            return TraceId::from_bytes(v.to_be_bytes());
        }
    }
}

/// A new random, valid (non-zero) span id from the per-thread CSPRNG.
#[inline]
pub fn new_span_id() -> SpanId {
    loop {
        let [v] = random_words::<1>();
        if v != 0 {
            return SpanId::from_bytes(v.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time parser answers as the table for every byte value
    /// in every position, and for random words of valid and invalid text.
    #[test]
    fn hex_words_match_the_table() {
        let table = |s: &[u8]| -> Option<[u8; 4]> {
            let mut out = [0u8; 4];
            for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
                let v = HEX_HI[pair[0] as usize] | HEX_LO[pair[1] as usize];
                if v & 0x100 != 0 {
                    return None;
                }
                *o = v as u8;
            }
            Some(out)
        };
        let check = |c: [u8; 8]| {
            let (v, invalid) = hex_word(u64::from_le_bytes(c));
            let ok = invalid == 0;
            assert_eq!(ok.then(|| v.to_le_bytes()), table(&c), "{c:?}");
            assert_eq!(
                parse_hex::<4>(&c).ok(),
                table(&c),
                "{:?}",
                String::from_utf8_lossy(&c)
            );
        };
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut c = *b"09af5e7c";
                c[pos] = b;
                check(c);
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let hex = b"0123456789abcdef";
            let mut c = [0u8; 8];
            for (i, o) in c.iter_mut().enumerate() {
                *o = hex[((x >> (4 * i)) & 15) as usize];
            }
            check(c);
            // One character replaced by an arbitrary byte.
            c[(x >> 40) as usize % 8] = (x >> 48) as u8;
            check(c);
        }
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").is_ok());
        assert_eq!(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e473"),
            Err(IdParseError::Length {
                expected: 32,
                got: 31
            })
        );
        assert_eq!(
            SpanId::from_hex("00f067aa0ba902bG"),
            Err(IdParseError::Char(15))
        );
        assert_eq!(
            SpanId::from_hex("00F067aa0ba902b7"),
            Err(IdParseError::Char(2))
        );
        assert_eq!(
            SpanId::from_hex("0000000000000000"),
            Err(IdParseError::Zero)
        );
        assert_eq!(
            TraceId::from_hex("00000000000000000000000000000000"),
            Err(IdParseError::Zero)
        );
    }

    #[test]
    fn hex_writing_matches_the_reference_for_every_byte_value() {
        // Every byte value in every position of an eight-byte chunk, plus
        // lengths that leave a remainder for the per-byte path.
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut eight = [0x5au8; 8];
                eight[pos] = b;
                let want: String = eight.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(std::str::from_utf8(&hex8(eight)).unwrap(), want);
            }
        }
        for len in 0..=20usize {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(37) ^ 0xc3)
                .collect();
            let mut out = vec![0u8; len * 2];
            write_hex(&bytes, &mut out);
            let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(std::str::from_utf8(&out).unwrap(), want, "len {len}");
        }
    }

    #[test]
    fn hex_parsing_accepts_exactly_lowercase_digits_in_every_position() {
        for c in 0..=255u8 {
            let digit = c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
            for pos in 0..4 {
                let mut s = *b"7a0f";
                s[pos] = c;
                match parse_hex::<2>(&s) {
                    Ok(v) => {
                        assert!(digit, "{c:#x} accepted at {pos}");
                        let want = u16::from_str_radix(std::str::from_utf8(&s).unwrap(), 16);
                        assert_eq!(u16::from_be_bytes(v), want.unwrap());
                    }
                    Err(e) => {
                        assert!(!digit, "{c:#x} rejected at {pos}");
                        assert_eq!(e, IdParseError::Char(pos));
                    }
                }
            }
        }
        let all: Vec<u8> = (0..=255u8).collect();
        let mut hex = vec![0u8; 512];
        write_hex(&all, &mut hex);
        assert_eq!(parse_hex::<256>(&hex).unwrap().to_vec(), all);
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let t = new_trace_id();
            let s = new_span_id();
            assert!(t.is_valid() && s.is_valid());
            assert!(seen.insert(t));
            assert_eq!(TraceId::from_hex(&t.to_string()), Ok(t));
            assert_eq!(SpanId::from_hex(&s.to_string()), Ok(s));
        }
    }

    /// The direct block reads give exactly ChaCha8's output stream (as
    /// `rand_chacha::ChaCha8Rng` produces it), across refills, minus the
    /// words a refill skips.
    #[test]
    fn id_words_are_the_chacha8_stream() {
        use rand::{RngCore, SeedableRng};
        let seed = [7u8; 32];
        let mut ours = IdRng {
            core: rand_chacha::ChaCha8Core::from_seed(seed),
            buf: Default::default(),
            pos: WORDS,
        };
        let mut reference = rand_chacha::ChaCha8Rng::from_seed(seed);
        let mut expected = Vec::new();
        for _ in 0..WORDS * 3 {
            expected.push(reference.next_u64());
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(ours.words::<3>());
        }
        // 10 draws of 3 words fill the first block's 30 words; the 11th
        // skips the last 2 and starts the next block.
        assert_eq!(got[..], expected[..30]);
        let next = ours.words::<3>();
        assert_eq!(next[..], expected[WORDS..WORDS + 3]);
        assert_eq!(ours.words::<1>()[0], expected[WORDS + 3]);
    }
}
