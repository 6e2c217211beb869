//! Attribute keys and values: the typed key/value pairs carried by spans,
//! events, links and resources (OpenTelemetry's `AnyValue` subset that the
//! trace API allows: primitives and homogeneous arrays of them).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// An attribute key. Static keys cost no allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Cow<'static, str>);

impl Key {
    /// A key from a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Self {
        Key(Cow::Borrowed(s))
    }
    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Key {
    fn from(s: &'static str) -> Self {
        Key(Cow::Borrowed(s))
    }
}
impl From<String> for Key {
    fn from(s: String) -> Self {
        Key(Cow::Owned(s))
    }
}
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string attribute value: static, owned or shared. Equality, ordering and
/// hashing look at the text only, not at how it is stored.
#[derive(Clone, Debug)]
pub enum StringValue {
    /// A `&'static str` (no allocation).
    Static(&'static str),
    /// An owned string.
    Owned(Box<str>),
    /// A shared string (cheap to clone).
    Shared(Arc<str>),
}

impl StringValue {
    /// The value as a string slice.
    pub fn as_str(&self) -> &str {
        match self {
            StringValue::Static(s) => s,
            StringValue::Owned(s) => s,
            StringValue::Shared(s) => s,
        }
    }
}
impl PartialEq for StringValue {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for StringValue {}
impl std::hash::Hash for StringValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl PartialOrd for StringValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for StringValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}
impl From<&'static str> for StringValue {
    fn from(s: &'static str) -> Self {
        StringValue::Static(s)
    }
}
impl From<String> for StringValue {
    fn from(s: String) -> Self {
        StringValue::Owned(s.into_boxed_str())
    }
}
impl From<Arc<str>> for StringValue {
    fn from(s: Arc<str>) -> Self {
        StringValue::Shared(s)
    }
}
impl fmt::Display for StringValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A homogeneous array attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    /// Array of booleans.
    Bool(Vec<bool>),
    /// Array of 64-bit signed integers.
    I64(Vec<i64>),
    /// Array of 64-bit floats.
    F64(Vec<f64>),
    /// Array of strings.
    String(Vec<StringValue>),
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Boolean.
    Bool(bool),
    /// 64-bit signed integer.
    I64(i64),
    /// 64-bit float.
    F64(f64),
    /// String.
    String(StringValue),
    /// Homogeneous array.
    Array(Array),
}

macro_rules! value_from {
    ($($t:ty => $variant:ident $(as $cast:ty)?),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$variant(v $(as $cast)?) }
        })*
    };
}
value_from!(bool => Bool, i64 => I64, i32 => I64 as i64, u32 => I64 as i64, f64 => F64);

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::String(StringValue::Static(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s.into())
    }
}
impl From<StringValue> for Value {
    fn from(s: StringValue) -> Self {
        Value::String(s)
    }
}
impl From<Array> for Value {
    fn from(a: Array) -> Self {
        Value::Array(a)
    }
}
impl From<Vec<bool>> for Value {
    fn from(v: Vec<bool>) -> Self {
        Value::Array(Array::Bool(v))
    }
}
impl From<Vec<i64>> for Value {
    fn from(v: Vec<i64>) -> Self {
        Value::Array(Array::I64(v))
    }
}
impl From<Vec<f64>> for Value {
    fn from(v: Vec<f64>) -> Self {
        Value::Array(Array::F64(v))
    }
}
impl From<Vec<StringValue>> for Value {
    fn from(v: Vec<StringValue>) -> Self {
        Value::Array(Array::String(v))
    }
}

/// A key/value pair.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    /// The attribute key.
    pub key: Key,
    /// The attribute value.
    pub value: Value,
}

impl KeyValue {
    /// Creates a key/value pair.
    ///
    /// ```
    /// let kv = ferrotrace::KeyValue::new("http.response.status_code", 200);
    /// assert_eq!(kv.key.as_str(), "http.response.status_code");
    /// ```
    pub fn new(key: impl Into<Key>, value: impl Into<Value>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}
