//! The collector's own flat span type. Every receiver converts its wire format
//! (OTLP protobuf/JSON, Zipkin v2) into [`Span`] once, at the edge; everything
//! after that (WAL, sampling, enrichment, redaction, rollups, sinks, queries)
//! works on this type only.

use std::sync::{Arc, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The model's short-text type: strings of up to 24 bytes are stored inline
/// (no heap allocation), longer ones on the heap like `String`. Attribute
/// keys, short string values and span/service/scope names are almost always
/// that short, so decoding a span no longer calls the allocator once per key
/// and value (issue 19: 29.5 allocator calls per span before, see
/// `tests/alloc_per_span.rs`). Same size as `String`, serialises as a string.
pub use compact_str::CompactString;
/// `to_compact_string()` on anything `Display` (numbers, ids, ...).
pub use compact_str::ToCompactString;

/// A 128-bit trace id (big-endian bytes).
pub type TraceId = [u8; 16];
/// A 64-bit span id (big-endian bytes).
pub type SpanId = [u8; 8];

/// Span kind, with OTLP's numeric values.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[repr(u8)]
pub enum SpanKind {
    /// `SPAN_KIND_UNSPECIFIED` (0).
    #[default]
    Unspecified = 0,
    /// `SPAN_KIND_INTERNAL` (1).
    Internal = 1,
    /// `SPAN_KIND_SERVER` (2).
    Server = 2,
    /// `SPAN_KIND_CLIENT` (3).
    Client = 3,
    /// `SPAN_KIND_PRODUCER` (4).
    Producer = 4,
    /// `SPAN_KIND_CONSUMER` (5).
    Consumer = 5,
}

impl SpanKind {
    /// From the OTLP enum number; unknown numbers map to `Unspecified`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
    /// Lowercase name as Jaeger and the UI show it (`server`, `client`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// Span status code, with OTLP's numeric values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum StatusCode {
    /// `STATUS_CODE_UNSET` (0).
    #[default]
    Unset = 0,
    /// `STATUS_CODE_OK` (1).
    Ok = 1,
    /// `STATUS_CODE_ERROR` (2).
    Error = 2,
}

impl StatusCode {
    /// From the OTLP enum number; unknown numbers map to `Unset`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

/// An attribute value (OTLP `AnyValue`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    /// String.
    Str(CompactString),
    /// Boolean.
    Bool(bool),
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Array of values.
    Array(Vec<AttrValue>),
    /// Nested key/value list.
    KvList(Vec<KeyValue>),
    /// An `AnyValue` with no value set (the key is kept; the query APIs show it
    /// as OTLP's `{}`, as text as the empty string).
    Empty,
}

impl AttrValue {
    /// The value rendered as text (strings as-is, others in their natural
    /// notation; arrays and maps as JSON). Used for search and display.
    pub fn to_text(&self) -> String {
        match self {
            AttrValue::Str(s) => s.to_string(),
            AttrValue::Bool(b) => b.to_string(),
            AttrValue::Int(i) => i.to_string(),
            AttrValue::Double(d) => d.to_string(),
            AttrValue::Empty => String::new(),
            other => serde_json::to_string(&other.to_json()).unwrap_or_default(),
        }
    }

    /// The value as plain JSON (bytes as base64-free lowercase hex).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            AttrValue::Str(s) => J::String(s.to_string()),
            AttrValue::Bool(b) => J::Bool(*b),
            AttrValue::Int(i) => J::from(*i),
            AttrValue::Double(d) => serde_json::Number::from_f64(*d)
                .map(J::Number)
                .unwrap_or_else(|| J::String(d.to_string())),
            AttrValue::Bytes(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
            AttrValue::Array(a) => J::Array(a.iter().map(AttrValue::to_json).collect()),
            AttrValue::KvList(kvs) => J::Object(
                kvs.iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_json()))
                    .collect(),
            ),
            AttrValue::Empty => J::Null,
        }
    }
}

/// A key/value attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: CompactString,
    /// Value.
    pub value: AttrValue,
}

impl KeyValue {
    /// Builds a key/value.
    pub fn new(key: impl Into<CompactString>, value: AttrValue) -> Self {
        KeyValue {
            key: key.into(),
            value,
        }
    }
}

/// A span event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Event name.
    pub name: CompactString,
    /// Attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes the sender dropped.
    pub dropped_attributes_count: u32,
}

/// A span link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Linked trace.
    pub trace_id: TraceId,
    /// Linked span.
    pub span_id: SpanId,
    /// W3C trace state of the link.
    pub trace_state: String,
    /// Attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes the sender dropped.
    pub dropped_attributes_count: u32,
    /// OTLP link flags.
    pub flags: u32,
}

/// Bytes malloc takes for a request of `n` bytes (0 for no allocation):
/// glibc rounds `n` plus an 8-byte header up to 16, with a 32-byte minimum.
pub(crate) fn chunk_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

pub(crate) fn string_bytes(s: &str) -> usize {
    chunk_bytes(s.len())
}

/// Heap bytes of a [`CompactString`]: none when stored inline.
#[inline]
pub(crate) fn compact_bytes(s: &CompactString) -> usize {
    if s.is_heap_allocated() {
        chunk_bytes(s.capacity())
    } else {
        0
    }
}

pub(crate) fn value_heap_bytes(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => compact_bytes(s),
        AttrValue::Bytes(b) => chunk_bytes(b.capacity()),
        AttrValue::Array(a) => {
            chunk_bytes(a.capacity() * std::mem::size_of::<AttrValue>())
                + a.iter().map(value_heap_bytes).sum::<usize>()
        }
        AttrValue::KvList(kvs) => kvs_heap_bytes(kvs),
        AttrValue::Bool(_) | AttrValue::Int(_) | AttrValue::Double(_) | AttrValue::Empty => 0,
    }
}

fn kvs_heap_bytes(kvs: &Vec<KeyValue>) -> usize {
    chunk_bytes(kvs.capacity() * std::mem::size_of::<KeyValue>())
        + kvs
            .iter()
            .map(|kv| {
                // Scalars inline: every span's attributes are measured as
                // they are decoded.
                let value = match &kv.value {
                    AttrValue::Str(s) => compact_bytes(s),
                    AttrValue::Bool(_)
                    | AttrValue::Int(_)
                    | AttrValue::Double(_)
                    | AttrValue::Empty => 0,
                    v => value_heap_bytes(v),
                };
                compact_bytes(&kv.key) + value
            })
            .sum::<usize>()
}

/// A span's resource attributes, shared (not copied) by every span of one
/// OTLP `ResourceSpans`: the spans of a request nearly always come from one
/// resource, and a copy per span was an allocation and three key/value
/// clones on the way in plus their frees in the sink task (issue 19).
///
/// Immutable while shared: [`ResourceAttrs::make_mut`] copies the list
/// first when another span still holds it (enrichment and redaction change
/// one span's resource only). Reads go through `Deref` to `[KeyValue]`;
/// it serialises as the plain list, so every format is unchanged. The empty
/// list holds no allocation.
#[derive(Clone, Default)]
pub struct ResourceAttrs(Option<Arc<Vec<KeyValue>>>);

impl ResourceAttrs {
    /// Shares `attrs` (no allocation when it is empty), shrunk to its length
    /// first: the list lives as long as the last span holding it.
    pub fn new(mut attrs: Vec<KeyValue>) -> Self {
        if attrs.is_empty() {
            ResourceAttrs(None)
        } else {
            attrs.shrink_to_fit();
            ResourceAttrs(Some(Arc::new(attrs)))
        }
    }

    /// The list, for a change to this span's resource only: copied first
    /// when another span shares it.
    pub fn make_mut(&mut self) -> &mut Vec<KeyValue> {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default))
    }

    /// True when both are the same shared list (not merely equal).
    pub fn shares_with(&self, other: &ResourceAttrs) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Heap bytes of the shared list, counted in full for every span that
    /// holds it: budgets charged per span then never fall below what the
    /// spans really hold, whichever of them is dropped first.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.0 {
            // The Arc's two counters beside the `Vec`.
            Some(a) => {
                chunk_bytes(2 * std::mem::size_of::<usize>() + std::mem::size_of::<Vec<KeyValue>>())
                    + kvs_heap_bytes(a)
            }
            None => 0,
        }
    }
}

/// `ResourceAttrs::heap_bytes` of the last shared list measured, so that
/// the spans of one resource (usually every span of a request) have their
/// resource measured once instead of once each (issue 19). The same bytes
/// are still charged to every span.
///
/// Keyed by the list's allocation, held through a `Weak`: while the `Weak`
/// lives the allocation is not freed, so an equal pointer is the same list
/// and never a new one at a reused address; and the list cannot have
/// changed, because `Arc::make_mut` on a list that only `Weak`s share moves
/// it to a new allocation (a different pointer, so it is measured again).
#[derive(Debug, Default)]
pub struct ResourceBytesCache(Option<(Weak<Vec<KeyValue>>, usize)>);

impl ResourceBytesCache {
    /// `resource.heap_bytes()`, measured only when `resource` is not the
    /// list measured last.
    pub fn heap_bytes(&mut self, resource: &ResourceAttrs) -> usize {
        let Some(list) = &resource.0 else {
            return 0;
        };
        if let Some((last, bytes)) = &self.0 {
            if std::ptr::eq(last.as_ptr(), Arc::as_ptr(list)) {
                return *bytes;
            }
        }
        let bytes = resource.heap_bytes();
        self.0 = Some((Arc::downgrade(list), bytes));
        bytes
    }
}

impl std::ops::Deref for ResourceAttrs {
    type Target = [KeyValue];
    fn deref(&self) -> &[KeyValue] {
        match &self.0 {
            Some(a) => a.as_slice(),
            None => &[],
        }
    }
}

impl From<Vec<KeyValue>> for ResourceAttrs {
    fn from(attrs: Vec<KeyValue>) -> Self {
        ResourceAttrs::new(attrs)
    }
}

impl PartialEq for ResourceAttrs {
    fn eq(&self, other: &Self) -> bool {
        self.shares_with(other) || **self == **other
    }
}

impl PartialEq<Vec<KeyValue>> for ResourceAttrs {
    fn eq(&self, other: &Vec<KeyValue>) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for ResourceAttrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for ResourceAttrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ResourceAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<KeyValue>::deserialize(d).map(ResourceAttrs::new)
    }
}

/// One span, flattened: resource and scope are on each span (the resource
/// attributes shared, see [`ResourceAttrs`]) so that a span is
/// self-contained in the WAL, the pipeline and every sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// Trace id (never all-zero once validated).
    pub trace_id: TraceId,
    /// Span id (never all-zero once validated).
    pub span_id: SpanId,
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace state.
    pub trace_state: String,
    /// OTLP span flags (low 8 bits are W3C trace flags; do not infer sampling from them).
    pub flags: u32,
    /// Span name (the operation).
    pub name: CompactString,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the Unix epoch (>= start once validated).
    pub end_ns: u64,
    /// Span attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender, plus any the collector truncated away.
    pub dropped_attributes_count: u32,
    /// Events.
    pub events: Vec<Event>,
    /// Events dropped by the sender.
    pub dropped_events_count: u32,
    /// Links.
    pub links: Vec<Link>,
    /// Links dropped by the sender.
    pub dropped_links_count: u32,
    /// Status code.
    pub status_code: StatusCode,
    /// Status message.
    pub status_message: String,
    /// `service.name` from the resource (`unknown_service` when absent).
    pub service_name: CompactString,
    /// Resource attributes (including `service.name`), shared with the
    /// other spans of the same resource.
    pub resource_attributes: ResourceAttrs,
    /// Instrumentation scope name.
    pub scope_name: CompactString,
    /// Instrumentation scope version.
    pub scope_version: CompactString,
}

#[cfg(test)]
impl Span {
    /// A test span: server span `op` of service `svc`, trace and span ids
    /// all `n`, from 1 ns to 2 ns, nothing else set. Tests spell only the
    /// fields they are about: `Span { kind: SpanKind::Client, ..Span::test(1) }`.
    pub(crate) fn test(n: u8) -> Span {
        Span {
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: "op".into(),
            kind: SpanKind::Server,
            start_ns: 1,
            end_ns: 2,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            service_name: "svc".into(),
            resource_attributes: ResourceAttrs::default(),
            scope_name: CompactString::default(),
            scope_version: CompactString::default(),
        }
    }
}

impl Span {
    /// Duration in nanoseconds (0 if end precedes start).
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
    /// True if the span's status is `Error`.
    pub fn is_error(&self) -> bool {
        self.status_code == StatusCode::Error
    }
    /// Memory the span occupies: its own struct plus every heap allocation
    /// it owns (by capacity, with malloc's per-chunk overhead), so that the
    /// byte budgets of the queue and the tail-sampling buffer bound real
    /// memory. `tests/decode_memory.rs` checks it against a counting
    /// allocator.
    pub fn heap_bytes(&self) -> usize {
        self.fixed_heap_bytes()
            + kvs_heap_bytes(&self.attributes)
            + self.resource_attributes.heap_bytes()
            + self
                .events
                .iter()
                .map(|e| compact_bytes(&e.name) + kvs_heap_bytes(&e.attributes))
                .sum::<usize>()
            + self
                .links
                .iter()
                .map(|l| string_bytes(&l.trace_state) + kvs_heap_bytes(&l.attributes))
                .sum::<usize>()
    }

    /// The part of [`Span::heap_bytes`] that is not an attribute list, an
    /// event's name or a link's trace state: the struct, its strings and the
    /// event and link lists' own chunks. Shared with the receivers' one-pass
    /// check (`receiver::span_check`), which measures the rest as it applies
    /// the limits.
    pub(crate) fn fixed_heap_bytes(&self) -> usize {
        std::mem::size_of::<Span>()
            + string_bytes(&self.trace_state)
            + compact_bytes(&self.name)
            + string_bytes(&self.status_message)
            + compact_bytes(&self.service_name)
            + compact_bytes(&self.scope_name)
            + compact_bytes(&self.scope_version)
            + chunk_bytes(self.events.capacity() * std::mem::size_of::<Event>())
            + chunk_bytes(self.links.capacity() * std::mem::size_of::<Link>())
    }

    /// Looks up a span attribute.
    pub fn attribute(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| &kv.value)
    }
}

/// Current wall time in nanoseconds since the Unix epoch (0 before the epoch,
/// `u64::MAX` past the year 2554).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lowercase hex of bytes (for ids in APIs and logs).
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, AttrValue::Str(v.into()))
    }

    /// Spans of one resource share the list; changing one span's copy
    /// leaves the others' alone.
    #[test]
    fn resource_attrs_are_shared_and_copied_on_write() {
        let a = ResourceAttrs::new(vec![kv("service.name", "svc"), kv("host.name", "h")]);
        let mut b = a.clone();
        assert!(a.shares_with(&b));
        b.make_mut().push(kv("team", "payments"));
        assert!(!a.shares_with(&b));
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 3);
        assert_ne!(a, b);
        // Equal content without sharing is still equal.
        assert_eq!(a, ResourceAttrs::new(a.to_vec()));
        assert_eq!(a, vec![kv("service.name", "svc"), kv("host.name", "h")]);
    }

    /// The empty list holds nothing; it serialises exactly like the plain
    /// list, so the formats that store it did not change.
    #[test]
    fn resource_attrs_serialise_as_the_plain_list() {
        let empty = ResourceAttrs::default();
        assert!(empty.is_empty());
        assert_eq!(empty, ResourceAttrs::new(Vec::new()));
        assert_eq!(empty.heap_bytes(), 0);
        let list = vec![kv("service.name", "svc"), kv("host.name", "h")];
        let shared = ResourceAttrs::new(list.clone());
        let json = serde_json::to_string(&shared).expect("serialises");
        assert_eq!(json, serde_json::to_string(&list).expect("serialises"));
        let back: ResourceAttrs = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, shared);
        assert_eq!(format!("{shared:?}"), format!("{list:?}"));
    }

    /// Every span holding a shared list is charged all of it: the memory
    /// budgets never count less than the spans hold.
    #[test]
    fn every_holder_is_charged_the_whole_list() {
        let list = vec![
            kv("service.name", "a-service-name-over-24-bytes"),
            kv("k", "v"),
        ];
        let alone = kvs_heap_bytes(&list);
        let shared = ResourceAttrs::new(list);
        let copy = shared.clone();
        assert!(shared.heap_bytes() > alone);
        assert_eq!(shared.heap_bytes(), copy.heap_bytes());
    }
}
