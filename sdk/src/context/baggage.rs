//! W3C Baggage: application key/value pairs that travel with the context.

/// Maximum number of members (W3C Baggage limits).
pub const MAX_BAGGAGE_MEMBERS: usize = 180;
/// Maximum size of the serialized `baggage` header(s), in bytes (W3C Baggage limits).
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// Why a baggage member was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaggageError {
    /// The key is not an RFC 7230 token.
    #[error("invalid baggage key {0:?}: keys are non-empty RFC 7230 tokens (letters, digits and !#$%&'*+-.^_`|~)")]
    Key(String),
    /// The baggage already holds the maximum number of members.
    #[error(
        "baggage is full ({MAX_BAGGAGE_MEMBERS} members): remove a member before adding another"
    )]
    TooManyMembers,
}

/// One property of a baggage member (W3C Baggage `property = key OWS [ "=" OWS value ]`):
/// a token key and an optional value, kept decoded (percent-encoding is
/// undone on extract and applied again on inject).
///
/// ```
/// use ferrotrace::context::BaggageProperty;
/// let ttl = BaggageProperty::new("ttl", Some("60")).unwrap();
/// assert_eq!((ttl.key(), ttl.value()), ("ttl", Some("60")));
/// assert!(BaggageProperty::new("bad key", None::<&str>).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaggageProperty {
    key: String,
    value: Option<String>,
}

impl BaggageProperty {
    /// A property; fails when `key` is not an RFC 7230 token. The value may
    /// hold any text: it is percent-encoded when sent.
    pub fn new(
        key: impl Into<String>,
        value: Option<impl Into<String>>,
    ) -> Result<Self, BaggageError> {
        let key = key.into();
        if !valid_key(&key) {
            return Err(BaggageError::Key(key));
        }
        Ok(BaggageProperty {
            key,
            value: value.map(Into::into),
        })
    }
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The decoded value (`None` for a key-only property such as `secret`).
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

/// One baggage member: key, (decoded) value and its properties.
#[derive(Clone, PartialEq, Eq)]
pub struct BaggageEntry {
    /// The key immediately followed by the decoded value: one allocation per
    /// member (extracting a header allocates once per member, not twice).
    text: Box<str>,
    key_len: usize,
    properties: Vec<BaggageProperty>,
}

impl std::fmt::Debug for BaggageEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaggageEntry")
            .field("key", &self.key())
            .field("value", &self.value())
            .field("properties", &self.properties)
            .finish()
    }
}

impl BaggageEntry {
    /// The key.
    pub fn key(&self) -> &str {
        &self.text[..self.key_len]
    }
    /// The decoded value.
    pub fn value(&self) -> &str {
        &self.text[self.key_len..]
    }
    /// The member's properties in header order (e.g. `ttl=60;secret`), possibly none.
    pub fn properties(&self) -> &[BaggageProperty] {
        &self.properties
    }
    /// The value of property `key` (`Some(None)` for a key-only property).
    pub fn property(&self, key: &str) -> Option<Option<&str>> {
        self.properties
            .iter()
            .find(|p| p.key == key)
            .map(BaggageProperty::value)
    }
}

/// An ordered set of baggage members with unique keys, at most
/// [`MAX_BAGGAGE_MEMBERS`]. Immutable once in a [`Context`](super::Context):
/// read it with [`Context::baggage`](super::Context::baggage) and derive a new
/// context with [`Context::with_baggage`](super::Context::with_baggage).
///
/// ```
/// use ferrotrace::context::{Baggage, Context};
/// let mut b = Baggage::new();
/// b.insert("user.id", "42").unwrap();
/// let cx = Context::new().with_baggage(b);
/// assert_eq!(cx.baggage().get("user.id"), Some("42"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baggage {
    entries: Vec<BaggageEntry>,
}

/// RFC 7230 `tchar`, as a table (one load per byte of a key).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        c += 1;
    }
    t
};

/// RFC 7230 `tchar`.
#[inline]
pub(crate) fn is_tchar(c: u8) -> bool {
    TCHAR[c as usize]
}

/// True if `key` is a valid baggage key (an RFC 7230 token).
pub fn valid_key(key: &str) -> bool {
    // No early exit: keys are short, and a branch-free loop is cheaper.
    !key.is_empty() && key.as_bytes().iter().fold(true, |ok, &c| ok & is_tchar(c))
}

impl Baggage {
    /// Empty baggage.
    pub const fn new() -> Self {
        Baggage {
            entries: Vec::new(),
        }
    }

    /// Sets `key` to `value` (replacing an existing value in place).
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), BaggageError> {
        self.insert_with_properties(key, value, Vec::new())
    }

    /// Sets `key` to `value` with properties (replacing an existing member
    /// in place).
    ///
    /// ```
    /// use ferrotrace::context::{Baggage, BaggageProperty};
    /// let mut b = Baggage::new();
    /// b.insert_with_properties(
    ///     "user.id",
    ///     "42",
    ///     [BaggageProperty::new("ttl", Some("60")).unwrap()],
    /// )
    /// .unwrap();
    /// assert_eq!(b.entry("user.id").unwrap().property("ttl"), Some(Some("60")));
    /// ```
    pub fn insert_with_properties(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        properties: impl IntoIterator<Item = BaggageProperty>,
    ) -> Result<(), BaggageError> {
        let key = key.into();
        if !valid_key(&key) {
            return Err(BaggageError::Key(key));
        }
        let key_len = key.len();
        let mut text = key;
        text.push_str(&value.into());
        self.insert_entry(BaggageEntry {
            text: text.into_boxed_str(),
            key_len,
            properties: properties.into_iter().collect(),
        })
    }

    /// Inserts a member whose key is already validated: `text` holds the
    /// key followed by the value.
    pub(crate) fn insert_parsed(
        &mut self,
        text: String,
        key_len: usize,
        properties: Vec<BaggageProperty>,
    ) -> Result<(), BaggageError> {
        self.insert_entry(BaggageEntry {
            text: text.into_boxed_str(),
            key_len,
            properties,
        })
    }

    /// Room for `n` more members without reallocating.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.entries
            .reserve(n.min(MAX_BAGGAGE_MEMBERS.saturating_sub(self.entries.len())));
    }

    fn insert_entry(&mut self, entry: BaggageEntry) -> Result<(), BaggageError> {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key() == entry.key()) {
            *e = entry;
            return Ok(());
        }
        if self.entries.len() >= MAX_BAGGAGE_MEMBERS {
            return Err(BaggageError::TooManyMembers);
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.entries.iter().position(|e| e.key() == key)?;
        Some(self.entries.remove(i).value().to_string())
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(BaggageEntry::value)
    }

    /// The full entry for `key`.
    pub fn entry(&self, key: &str) -> Option<&BaggageEntry> {
        self.entries.iter().find(|e| e.key() == key)
    }

    /// Members in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &BaggageEntry> {
        self.entries.iter()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
