//! Redaction: removes attributes by key and masks sensitive values in span,
//! event, link and resource attributes before anything is stored.
//!
//! - `drop_keys`: attributes with these keys are removed.
//! - `hash_keys`: the whole value of these keys is replaced by its keyed hash.
//! - `mask_keys`: the whole value of these keys is replaced by the fixed mask.
//! - `patterns` (regular expressions) and `builtin` detectors (`credit_card`
//!   with a Luhn check, `email`): every match inside a string value is
//!   replaced according to `action`: by its keyed hash (`hash`, the default)
//!   or by the fixed `mask` text (`mask`, default `****`).
//!
//! The keyed hash is `redacted:` + the lowercase hex HMAC-SHA256 of the
//! original text under a secret key, so equal values stay joinable across
//! spans without being readable, and nobody without the key can confirm a
//! guess. Masking needs no key but loses joinability: every match reads the
//! same.

use hmac::{Hmac, Mac};
use regex::Regex;
use serde::Deserialize;
use sha2::Sha256;

use crate::model::{AttrValue, CompactString, KeyValue, Span};

/// Prefix of every replacement value.
pub const REDACTED_PREFIX: &str = "redacted:";

/// Default replacement text of the `mask` action.
pub const DEFAULT_MASK: &str = "****";

/// What replaces text matched by `patterns` and `builtin` detectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactAction {
    /// The keyed hash (`redacted:<hex HMAC-SHA256>`); needs a key.
    #[default]
    Hash,
    /// The fixed `mask` text; needs no key.
    Mask,
}

/// `[redact]` configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    /// Attribute keys removed everywhere (default none).
    pub drop_keys: Vec<String>,
    /// Attribute keys whose whole value is replaced by its keyed hash.
    pub hash_keys: Vec<String>,
    /// Attribute keys whose whole value is replaced by `mask`.
    pub mask_keys: Vec<String>,
    /// Regular expressions; matching text in string values is replaced.
    pub patterns: Vec<String>,
    /// Built-in detectors: `credit_card`, `email`.
    pub builtin: Vec<String>,
    /// How pattern and builtin matches are replaced (default `hash`).
    pub action: RedactAction,
    /// Replacement text of the `mask` action and of `mask_keys` (default `****`).
    pub mask: String,
    /// HMAC key (prefer `hash_key_env` to keep it out of config files).
    pub hash_key: Option<String>,
    /// Name of an environment variable holding the HMAC key.
    pub hash_key_env: Option<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            drop_keys: Vec::new(),
            hash_keys: Vec::new(),
            mask_keys: Vec::new(),
            patterns: Vec::new(),
            builtin: Vec::new(),
            action: RedactAction::Hash,
            mask: DEFAULT_MASK.to_string(),
            hash_key: None,
            hash_key_env: None,
        }
    }
}

/// A redaction configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum RedactConfigError {
    /// A pattern does not compile.
    #[error("redact pattern {pattern:?} is not a valid regular expression: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        source: regex::Error,
    },
    /// Unknown built-in detector.
    #[error("unknown redact builtin {0:?}; use \"credit_card\" or \"email\"")]
    UnknownBuiltin(String),
    /// Hashing configured but no key.
    #[error("redaction hashes values (redact.hash_keys, or patterns/builtin with action = \"hash\") but has no key: set redact.hash_key or redact.hash_key_env (an env var holding a secret), or use action = \"mask\" / mask_keys, which need no key")]
    MissingKey,
    /// The mask itself would be matched by a pattern, so redacting would not be stable.
    #[error("redact.mask {0:?} is matched by a redact pattern or builtin; choose a mask none of them matches (e.g. \"****\")")]
    MaskMatchesPattern(String),
    /// The key environment variable is unset or empty.
    #[error("redact.hash_key_env names {0:?}, which is unset or empty")]
    KeyEnvUnset(String),
}

const EMAIL: &str = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}";
/// 13–19 digits, optionally separated by single spaces or dashes; Luhn-checked after matching.
const CARD: &str = r"\b\d(?:[ \-]?\d){12,18}\b";

#[derive(Debug, Clone)]
enum Detector {
    Regex(Regex),
    Card(Regex),
}

/// Applies [`RedactConfig`] to spans.
#[derive(Debug, Clone)]
pub struct Redactor {
    drop_keys: Vec<String>,
    hash_keys: Vec<String>,
    mask_keys: Vec<String>,
    detectors: Vec<Detector>,
    action: RedactAction,
    mask: String,
    mac: Option<Hmac<Sha256>>,
    /// Attributes removed so far.
    pub attributes_dropped: u64,
    /// Values (or parts of values) replaced by the fixed mask so far.
    pub values_masked: u64,
    /// Values (or parts of values) replaced by their keyed hash so far.
    pub values_hashed: u64,
}

fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = (*d - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

impl Redactor {
    /// Validates the configuration and builds the redactor.
    pub fn new(config: &RedactConfig) -> Result<Self, RedactConfigError> {
        let mut detectors = Vec::new();
        for p in &config.patterns {
            let re = Regex::new(p).map_err(|source| RedactConfigError::Pattern {
                pattern: p.clone(),
                source,
            })?;
            detectors.push(Detector::Regex(re));
        }
        for b in &config.builtin {
            let compile = |p: &str| {
                Regex::new(p).map_err(|source| RedactConfigError::Pattern {
                    pattern: p.to_string(),
                    source,
                })
            };
            detectors.push(match b.as_str() {
                "email" => Detector::Regex(compile(EMAIL)?),
                "credit_card" => Detector::Card(compile(CARD)?),
                other => return Err(RedactConfigError::UnknownBuiltin(other.to_string())),
            });
        }
        let key = match (&config.hash_key, &config.hash_key_env) {
            (_, Some(var)) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| RedactConfigError::KeyEnvUnset(var.clone()))?,
            ),
            (Some(k), None) if !k.is_empty() => Some(k.clone()),
            _ => None,
        };
        let hashes = !config.hash_keys.is_empty()
            || (!detectors.is_empty() && config.action == RedactAction::Hash);
        // A mask a detector matches would be replaced again on every pass
        // (e.g. when the WAL is replayed), counting the same value twice.
        if config.action == RedactAction::Mask
            && detectors.iter().any(|d| match d {
                Detector::Regex(r) | Detector::Card(r) => r.is_match(&config.mask),
            })
        {
            return Err(RedactConfigError::MaskMatchesPattern(config.mask.clone()));
        }
        let mac = match key {
            // HMAC accepts keys of any length; new_from_slice cannot fail for it.
            Some(k) => Some(
                Hmac::<Sha256>::new_from_slice(k.as_bytes())
                    .map_err(|_| RedactConfigError::MissingKey)?,
            ),
            None if hashes => return Err(RedactConfigError::MissingKey),
            None => None,
        };
        Ok(Redactor {
            drop_keys: config.drop_keys.clone(),
            hash_keys: config.hash_keys.clone(),
            mask_keys: config.mask_keys.clone(),
            detectors,
            action: config.action,
            mask: config.mask.clone(),
            mac,
            attributes_dropped: 0,
            values_masked: 0,
            values_hashed: 0,
        })
    }

    /// True when redaction changes nothing.
    pub fn is_noop(&self) -> bool {
        self.drop_keys.is_empty()
            && self.hash_keys.is_empty()
            && self.mask_keys.is_empty()
            && self.detectors.is_empty()
    }

    /// Whether [`apply_kvs`](Self::apply_kvs) may change `kvs`: one of the
    /// configured keys is there, or a detector could match a value. Errs on
    /// the side of true (a copy too many, never a missed redaction).
    fn would_change(&self, kvs: &[KeyValue]) -> bool {
        !self.detectors.is_empty()
            || kvs.iter().any(|kv| {
                self.drop_keys
                    .iter()
                    .chain(&self.hash_keys)
                    .chain(&self.mask_keys)
                    .any(|k| kv.key == *k)
            })
    }

    /// The replacement text for `original`.
    pub fn hash(&self, original: &str) -> String {
        let Some(mac) = &self.mac else {
            return format!("{REDACTED_PREFIX}*");
        };
        let mut m = mac.clone();
        m.update(original.as_bytes());
        let out = m.finalize().into_bytes();
        format!("{REDACTED_PREFIX}{}", crate::model::hex(&out))
    }

    fn mask_str(&mut self, s: &mut CompactString) {
        for i in 0..self.detectors.len() {
            let mut out = String::new();
            let mut last = 0;
            let mut changed = false;
            let det = &self.detectors[i];
            let re = match det {
                Detector::Regex(r) | Detector::Card(r) => r,
            };
            for m in re.find_iter(s) {
                if m.as_str().starts_with(REDACTED_PREFIX) {
                    continue;
                }
                if let Detector::Card(_) = det {
                    let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
                    if !luhn_ok(&digits) {
                        continue;
                    }
                }
                out.push_str(&s[last..m.start()]);
                match self.action {
                    RedactAction::Hash => {
                        out.push_str(&self.hash(m.as_str()));
                        self.values_hashed += 1;
                    }
                    RedactAction::Mask => {
                        out.push_str(&self.mask);
                        self.values_masked += 1;
                    }
                }
                last = m.end();
                changed = true;
            }
            if changed {
                out.push_str(&s[last..]);
                *s = out.into();
            }
        }
    }

    fn mask_value(&mut self, v: &mut AttrValue) {
        match v {
            AttrValue::Str(s) => self.mask_str(s),
            AttrValue::Array(a) => a.iter_mut().for_each(|x| self.mask_value(x)),
            AttrValue::KvList(kvs) => self.apply_kvs(kvs),
            _ => {}
        }
    }

    fn apply_kvs(&mut self, kvs: &mut Vec<KeyValue>) {
        if !self.drop_keys.is_empty() {
            let before = kvs.len();
            let drop = &self.drop_keys;
            kvs.retain(|kv| !drop.iter().any(|k| kv.key == *k));
            self.attributes_dropped += (before - kvs.len()) as u64;
        }
        for kv in kvs.iter_mut() {
            if self.hash_keys.iter().any(|k| kv.key == *k) {
                if matches!(&kv.value, AttrValue::Str(s) if s.starts_with(REDACTED_PREFIX)) {
                    // Already redacted (e.g. a span replayed from the WAL).
                    continue;
                }
                let text = kv.value.to_text();
                kv.value = AttrValue::Str(self.hash(&text).into());
                self.values_hashed += 1;
            } else if self.mask_keys.iter().any(|k| kv.key == *k) {
                if matches!(&kv.value, AttrValue::Str(s) if *s == self.mask) {
                    continue;
                }
                kv.value = AttrValue::Str(self.mask.as_str().into());
                self.values_masked += 1;
            } else if !self.detectors.is_empty() {
                self.mask_value(&mut kv.value);
            }
        }
    }

    /// Redacts span, event, link and resource attributes in place.
    pub fn apply(&mut self, span: &mut Span) {
        if self.is_noop() {
            return;
        }
        self.apply_kvs(&mut span.attributes);
        // Shared with the span's siblings: copied only when redaction would
        // change it.
        if self.would_change(&span.resource_attributes) {
            self.apply_kvs(span.resource_attributes.make_mut());
        }
        for e in &mut span.events {
            self.apply_kvs(&mut e.attributes);
        }
        for l in &mut span.links {
            self.apply_kvs(&mut l.attributes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;

    fn span() -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [1; 8],
            kind: Default::default(),
            start_ns: 0,
            end_ns: 0,
            attributes: vec![
                KeyValue::new("password", AttrValue::Str("hunter2".into())),
                KeyValue::new(
                    "note",
                    AttrValue::Str(
                        "card 4111 1111 1111 1111 and 4111111111111112, mail bob@example.com"
                            .into(),
                    ),
                ),
                KeyValue::new("user.id", AttrValue::Int(42)),
                KeyValue::new(
                    "list",
                    AttrValue::Array(vec![AttrValue::Str("x@y.io".into()), AttrValue::Int(1)]),
                ),
            ],
            events: vec![Event {
                time_ns: 0,
                name: "exception".into(),
                attributes: vec![
                    KeyValue::new(
                        "exception.message",
                        AttrValue::Str("user a.b@c.org failed".into()),
                    ),
                    KeyValue::new("password", AttrValue::Str("x".into())),
                ],
                dropped_attributes_count: 0,
            }],
            resource_attributes: vec![KeyValue::new(
                "owner.email",
                AttrValue::Str("ops@corp.example".into()),
            )]
            .into(),
            ..Span::test(0)
        }
    }

    fn cfg() -> RedactConfig {
        RedactConfig {
            drop_keys: vec!["password".into()],
            hash_keys: vec!["user.id".into()],
            builtin: vec!["credit_card".into(), "email".into()],
            hash_key: Some("k3y".into()),
            ..Default::default()
        }
    }

    fn s<'a>(kvs: &'a [KeyValue], k: &str) -> &'a str {
        match kvs.iter().find(|kv| kv.key == k).map(|kv| &kv.value) {
            Some(AttrValue::Str(s)) => s,
            other => panic!("{k}: {other:?}"),
        }
    }

    #[test]
    fn drops_masks_and_hashes_everywhere() {
        let mut r = Redactor::new(&cfg()).expect("config");
        let mut sp = span();
        r.apply(&mut sp);
        assert!(sp.attributes.iter().all(|kv| kv.key != "password"));
        assert!(sp.events[0]
            .attributes
            .iter()
            .all(|kv| kv.key != "password"));
        let note = s(&sp.attributes, "note");
        let card_hash = r.hash("4111 1111 1111 1111");
        let mail_hash = r.hash("bob@example.com");
        assert_eq!(
            note,
            format!("card {card_hash} and 4111111111111112, mail {mail_hash}"),
            "Luhn-invalid number kept"
        );
        assert_eq!(s(&sp.attributes, "user.id"), r.hash("42"));
        assert_eq!(
            s(&sp.events[0].attributes, "exception.message"),
            format!("user {} failed", r.hash("a.b@c.org"))
        );
        assert_eq!(
            s(&sp.resource_attributes, "owner.email"),
            r.hash("ops@corp.example")
        );
        match &sp
            .attributes
            .iter()
            .find(|kv| kv.key == "list")
            .map(|kv| &kv.value)
        {
            Some(AttrValue::Array(a)) => assert_eq!(a[0], AttrValue::Str(r.hash("x@y.io").into())),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.attributes_dropped, 2);
        assert_eq!(r.values_hashed, 6);
        assert_eq!(r.values_masked, 0);
        // Redacting twice changes nothing more.
        let once = sp.clone();
        r.apply(&mut sp);
        assert_eq!(sp, once);
    }

    #[test]
    fn hash_is_keyed_hmac_sha256() {
        let r = Redactor::new(&cfg()).expect("config");
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let jefe = Redactor::new(&RedactConfig {
            hash_key: Some("Jefe".into()),
            ..Default::default()
        })
        .expect("config");
        assert_eq!(
            jefe.hash("what do ya want for nothing?"),
            "redacted:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(r.hash("a"), jefe.hash("a"));
        assert_eq!(r.hash("a").len(), REDACTED_PREFIX.len() + 64);
    }

    #[test]
    fn custom_patterns_and_config_errors() {
        let mut r = Redactor::new(&RedactConfig {
            patterns: vec![r"token=[A-Za-z0-9]+".into()],
            hash_key: Some("k".into()),
            ..Default::default()
        })
        .expect("config");
        let mut sp = span();
        sp.attributes = vec![KeyValue::new(
            "url",
            AttrValue::Str("/x?token=abc123&y=1".into()),
        )];
        r.apply(&mut sp);
        assert_eq!(
            s(&sp.attributes, "url"),
            format!("/x?{}&y=1", r.hash("token=abc123"))
        );

        assert!(matches!(
            Redactor::new(&RedactConfig {
                patterns: vec!["(".into()],
                hash_key: Some("k".into()),
                ..Default::default()
            }),
            Err(RedactConfigError::Pattern { .. })
        ));
        assert!(matches!(
            Redactor::new(&RedactConfig {
                builtin: vec!["ssn".into()],
                hash_key: Some("k".into()),
                ..Default::default()
            }),
            Err(RedactConfigError::UnknownBuiltin(_))
        ));
        assert!(matches!(
            Redactor::new(&RedactConfig {
                builtin: vec!["email".into()],
                ..Default::default()
            }),
            Err(RedactConfigError::MissingKey)
        ));
        assert!(matches!(
            Redactor::new(&RedactConfig {
                hash_keys: vec!["a".into()],
                hash_key_env: Some("FERROTRACE_TEST_SURELY_UNSET_VAR".into()),
                ..Default::default()
            }),
            Err(RedactConfigError::KeyEnvUnset(_))
        ));
        // Dropping keys alone needs no key.
        assert!(Redactor::new(&RedactConfig {
            drop_keys: vec!["a".into()],
            ..Default::default()
        })
        .is_ok());
        assert!(serde_json::from_str::<RedactConfig>(r#"{"drop": []}"#).is_err());
    }

    #[test]
    fn mask_action_needs_no_key_and_is_stable() {
        let cfg: RedactConfig = toml::from_str(
            r#"
            drop_keys = ["password"]
            mask_keys = ["user.id"]
            builtin = ["credit_card", "email"]
            patterns = ['token=[A-Za-z0-9]+']
            action = "mask"
            "#,
        )
        .expect("toml");
        assert_eq!(cfg.mask, DEFAULT_MASK);
        let mut r = Redactor::new(&cfg).expect("mask needs no key");
        let mut sp = span();
        sp.attributes
            .push(KeyValue::new("url", AttrValue::Str("/a?token=abc1".into())));
        r.apply(&mut sp);
        assert!(sp.attributes.iter().all(|kv| kv.key != "password"));
        assert_eq!(
            s(&sp.attributes, "note"),
            "card **** and 4111111111111112, mail ****",
            "Luhn-invalid number kept"
        );
        assert_eq!(s(&sp.attributes, "user.id"), "****");
        assert_eq!(s(&sp.attributes, "url"), "/a?****");
        assert_eq!(
            s(&sp.events[0].attributes, "exception.message"),
            "user **** failed"
        );
        assert_eq!(s(&sp.resource_attributes, "owner.email"), "****");
        // note: 2, user.id, url, exception.message, owner.email, list[0].
        assert_eq!(r.values_masked, 7);
        assert_eq!(r.values_hashed, 0);
        assert_eq!(r.attributes_dropped, 2);
        let once = sp.clone();
        r.apply(&mut sp);
        assert_eq!(sp, once);
        assert_eq!(r.values_masked, 7, "a second pass masks nothing more");

        // A custom mask, and hash_keys beside masked patterns (with a key).
        let mut r = Redactor::new(&RedactConfig {
            hash_keys: vec!["user.id".into()],
            builtin: vec!["email".into()],
            action: RedactAction::Mask,
            mask: "[email]".into(),
            hash_key: Some("k".into()),
            ..Default::default()
        })
        .expect("config");
        let mut sp = span();
        r.apply(&mut sp);
        assert_eq!(
            s(&sp.events[0].attributes, "exception.message"),
            "user [email] failed"
        );
        assert_eq!(s(&sp.attributes, "user.id"), r.hash("42"));
        assert_eq!((r.values_masked, r.values_hashed), (4, 1));

        // hash_keys still need a key when patterns are masked.
        let err = Redactor::new(&RedactConfig {
            hash_keys: vec!["a".into()],
            action: RedactAction::Mask,
            ..Default::default()
        })
        .expect_err("no key");
        assert!(matches!(err, RedactConfigError::MissingKey));
        assert!(err.to_string().contains("action = \"mask\""), "{err}");
        // A mask the detectors would match again is refused.
        assert!(matches!(
            Redactor::new(&RedactConfig {
                builtin: vec!["email".into()],
                action: RedactAction::Mask,
                mask: "x@redacted.example".into(),
                ..Default::default()
            }),
            Err(RedactConfigError::MaskMatchesPattern(_))
        ));
        assert!(toml::from_str::<RedactConfig>("action = \"blur\"").is_err());
    }
}
