//! W3C `tracestate`: vendor-specific key/value list carried with the trace:
//! parsing and validation (Trace Context Level 2, "tracestate Header Field
//! Values") and the mutations the spec allows ("Mutating the tracestate Field").

use std::sync::Arc;

/// An immutable W3C trace state: an ordered list of at most 32 `key=value`
/// members, most recently updated first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct TraceState(pub(crate) Option<Arc<[(String, String)]>>);

impl TraceState {
    /// The empty trace state.
    pub const NONE: TraceState = TraceState(None);

    /// Members in header order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// True if there are no members.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The `tracestate` header value (`k1=v1,k2=v2`); empty when there are no members.
    pub fn header(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    }
}

/// Maximum number of list-members in a `tracestate` (W3C).
pub const MAX_TRACE_STATE_MEMBERS: usize = 32;

/// Why a `tracestate` (or a member for it) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// A key does not follow the W3C grammar.
    #[error("invalid tracestate key {0:?}: keys start with a-z or 0-9 and contain only a-z 0-9 _ - * / @ (at most 256 characters)")]
    Key(String),
    /// A value does not follow the W3C grammar.
    #[error("invalid tracestate value for key {0:?}: values are 1-256 printable ASCII characters without ',' or '=' and not ending with a space")]
    Value(String),
    /// A member is not `key=value`.
    #[error("invalid tracestate member {0:?}: expected key=value")]
    Member(String),
    /// The same key was given twice to [`TraceState::from_key_value`]
    /// (a received header keeps the first occurrence instead).
    #[error("duplicate tracestate key {0:?}")]
    Duplicate(String),
    /// More than 32 members.
    #[error("tracestate has more than {MAX_TRACE_STATE_MEMBERS} members")]
    TooManyMembers,
}

/// W3C key (Trace Context Level 2, "Key": `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`): a lowercase
/// letter or a digit first, at most 256 characters, `@` anywhere after the
/// first character (`foo@`, `foo@bar@baz`, `tenant@system`).
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > 256 || !(b[0].is_ascii_lowercase() || b[0].is_ascii_digit()) {
        return false;
    }
    b[1..].iter().all(|&c| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
    })
}

/// W3C value: 1 to 256 characters in 0x20-0x7E except `,` and `=`, not ending with a space.
pub fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b[b.len() - 1] != b' '
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl TraceState {
    /// A trace state from key/value pairs in order; fails on any invalid
    /// key/value, a duplicate key or more than 32 members.
    pub fn from_key_value<K: Into<String>, V: Into<String>>(
        members: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, TraceStateError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in members {
            let (k, v) = (k.into(), v.into());
            if !valid_key(&k) {
                return Err(TraceStateError::Key(k));
            }
            if !valid_value(&v) {
                return Err(TraceStateError::Value(k));
            }
            if out.iter().any(|(e, _)| *e == k) {
                return Err(TraceStateError::Duplicate(k));
            }
            if out.len() == MAX_TRACE_STATE_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            out.push((k, v));
        }
        Ok(Self::from_vec(out))
    }

    fn from_vec(v: Vec<(String, String)>) -> Self {
        if v.is_empty() {
            TraceState::NONE
        } else {
            TraceState(Some(v.into()))
        }
    }

    /// Parses one `tracestate` header value. Empty list-members and optional
    /// whitespace around members are allowed; anything else invalid makes the
    /// whole trace state invalid (W3C: the vendor data cannot be trusted then).
    ///
    /// ```
    /// use ferrotrace::TraceState;
    /// let ts = TraceState::from_header("congo=t61rcWkgMzE, tenant@vendor=x").unwrap();
    /// assert_eq!(ts.get("tenant@vendor"), Some("x"));
    /// assert!(TraceState::from_header("FOO=1").is_err());
    /// // A key may start with a digit; a repeated key keeps its first value.
    /// let ts = TraceState::from_header("1vendor=a,foo=1,foo=2").unwrap();
    /// assert_eq!(ts.header(), "1vendor=a,foo=1");
    /// ```
    pub fn from_header(header: &str) -> Result<Self, TraceStateError> {
        Self::from_headers(std::iter::once(header))
    }

    /// Parses several `tracestate` header values as one list (W3C: multiple
    /// headers are combined as if joined with `,`). A key that appears again
    /// keeps its first value: the spec lets a vendor discard duplicates, and
    /// dropping the whole list would lose every other vendor's entry.
    /// More than 32 list-members (counting repeats) or any malformed member
    /// makes the whole list invalid.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, TraceStateError> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut members = 0usize;
        for header in headers {
            for member in header.split(',') {
                let member = member.trim_matches(is_ows);
                if member.is_empty() {
                    continue;
                }
                let Some((k, v)) = member.split_once('=') else {
                    return Err(TraceStateError::Member(member.to_string()));
                };
                if !valid_key(k) {
                    return Err(TraceStateError::Key(k.to_string()));
                }
                if !valid_value(v) {
                    return Err(TraceStateError::Value(k.to_string()));
                }
                members += 1;
                if members > MAX_TRACE_STATE_MEMBERS {
                    return Err(TraceStateError::TooManyMembers);
                }
                if out.iter().any(|(e, _)| e == k) {
                    continue;
                }
                out.push((k.to_string(), v.to_string()));
            }
        }
        Ok(Self::from_vec(out))
    }

    /// A copy with `key` set to `value`, moved to the front (W3C: the most
    /// recently updated member comes first). If the list is full, the last
    /// member is dropped to make room.
    pub fn insert(
        &self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<TraceState, TraceStateError> {
        let (key, value) = (key.into(), value.into());
        if !valid_key(&key) {
            return Err(TraceStateError::Key(key));
        }
        if !valid_value(&value) {
            return Err(TraceStateError::Value(key));
        }
        let mut out: Vec<(String, String)> = Vec::with_capacity(self.len() + 1);
        out.push((key.clone(), value));
        out.extend(
            self.iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        out.truncate(MAX_TRACE_STATE_MEMBERS);
        Ok(Self::from_vec(out))
    }

    /// A copy without `key`.
    pub fn delete(&self, key: &str) -> TraceState {
        Self::from_vec(
            self.iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }
}
