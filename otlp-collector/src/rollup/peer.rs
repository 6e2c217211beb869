//! The uninstrumented peer a client span calls, found in one pass over the
//! span's attributes.
//!
//! The peer is named by the first of [`PEER_KEYS`] (in that order of
//! preference) whose attribute is a non-empty string. Looking each key up
//! in turn scanned a span's attributes once per candidate key, four times
//! for the common client span that names its peer with `server.address` or
//! none at all (issue 19: part of the rollup's per-span cost).

use crate::model::{AttrValue, CompactString, Span, SpanKind};

/// The attributes that name a client span's peer, most preferred first.
pub const PEER_KEYS: [&str; 4] = [
    "peer.service",
    "db.system",
    "server.address",
    "net.peer.name",
];

// The candidate keys have distinct lengths, so an attribute's key length
// picks the one candidate it can be: one comparison per attribute at most.
const L0: usize = PEER_KEYS[0].len();
const L1: usize = PEER_KEYS[1].len();
const L2: usize = PEER_KEYS[2].len();
const L3: usize = PEER_KEYS[3].len();
const _: () = assert!(L0 != L1 && L0 != L2 && L0 != L3 && L1 != L2 && L1 != L3 && L2 != L3);

/// The index in [`PEER_KEYS`] of `key`, if it is one of them.
#[inline]
fn rank_of(key: &str) -> Option<usize> {
    let rank = match key.len() {
        L0 => 0,
        L1 => 1,
        L2 => 2,
        L3 => 3,
        _ => return None,
    };
    (key == PEER_KEYS[rank]).then_some(rank)
}

/// The uninstrumented peer a `CLIENT`/`PRODUCER` span calls, if it names one.
pub fn peer_name(span: &Span) -> Option<&str> {
    peer_attr(span).map(CompactString::as_str)
}

/// [`peer_name`] as the attribute's own text (cloned without re-encoding).
///
/// Same result as looking the keys up one by one with [`Span::attribute`]:
/// only the first attribute with a given key counts (a later duplicate key
/// does not), and the most preferred key that names a peer wins.
pub(crate) fn peer_attr(span: &Span) -> Option<&CompactString> {
    if !matches!(span.kind, SpanKind::Client | SpanKind::Producer) {
        return None;
    }
    // Rank of the best candidate so far (index into PEER_KEYS), and which
    // keys were seen already (their first occurrence decided).
    let mut best: Option<(usize, &CompactString)> = None;
    let mut seen = 0u8;
    for kv in &span.attributes {
        let Some(rank) = rank_of(&kv.key) else {
            continue;
        };
        if seen & (1 << rank) != 0 {
            continue;
        }
        seen |= 1 << rank;
        if let AttrValue::Str(s) = &kv.value {
            if !s.is_empty() && best.is_none_or(|(r, _)| rank < r) {
                if rank == 0 {
                    return Some(s);
                }
                best = Some((rank, s));
            }
        }
    }
    best.map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyValue;

    /// The key-by-key lookup this module replaces, as the reference.
    fn reference(span: &Span) -> Option<&str> {
        if !matches!(span.kind, SpanKind::Client | SpanKind::Producer) {
            return None;
        }
        PEER_KEYS.iter().find_map(|k| match span.attribute(k) {
            Some(AttrValue::Str(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
    }

    fn test_span() -> Span {
        Span {
            kind: SpanKind::Client,
            ..Span::test(1)
        }
    }

    /// Every attribute list of up to four entries over the candidate keys
    /// (plus another key), with named, empty and non-string values, for
    /// client, producer and server spans: the one-pass search agrees with
    /// the key-by-key lookup on all of them (duplicates included).
    #[test]
    fn one_pass_agrees_with_the_key_by_key_lookup() {
        let keys = [
            "peer.service",
            "db.system",
            "server.address",
            "net.peer.name",
            "http.method",
        ];
        let values = [
            AttrValue::Str("a".into()),
            AttrValue::Str("b".into()),
            AttrValue::Str(CompactString::default()),
            AttrValue::Int(1),
        ];
        let choices: Vec<KeyValue> = keys
            .iter()
            .flat_map(|k| values.iter().map(|v| KeyValue::new(*k, v.clone())))
            .collect();
        let mut checked = 0;
        for kind in [SpanKind::Client, SpanKind::Producer, SpanKind::Server] {
            let mut s = test_span();
            s.kind = kind;
            for len in 0..=4u32 {
                for mut n in 0..choices.len().pow(len) {
                    s.attributes.clear();
                    for _ in 0..len {
                        s.attributes.push(choices[n % choices.len()].clone());
                        n /= choices.len();
                    }
                    assert_eq!(
                        peer_name(&s),
                        reference(&s),
                        "{:?} {:?}",
                        kind,
                        s.attributes
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 400_000);
    }

    #[test]
    fn the_most_preferred_key_wins_wherever_it_is() {
        let mut s = test_span();
        s.attributes = vec![
            KeyValue::new("net.peer.name", AttrValue::Str("host".into())),
            KeyValue::new("server.address", AttrValue::Str("addr".into())),
            KeyValue::new("db.system", AttrValue::Str("postgresql".into())),
        ];
        assert_eq!(peer_name(&s), Some("postgresql"));
        s.attributes.push(KeyValue::new(
            "peer.service",
            AttrValue::Str("billing".into()),
        ));
        assert_eq!(peer_name(&s), Some("billing"));
        s.kind = SpanKind::Internal;
        assert_eq!(peer_name(&s), None);
    }
}
