//! The limits and both measures of a span in one walk over its attribute
//! lists, for [`Decoded::check`](super::Decoded::check): the
//! count and length limits ([`apply_span_limits`]), the size checked against
//! `limits.max_span_bytes` ([`estimate_size`]) and the memory charged to the
//! queue ([`Span::heap_bytes`]) were three walks over the same attributes of
//! every span (issue 19: about 940 instructions per span between them). The
//! results are the same as those three functions' (unit tests below compare
//! them on spans of every shape).
//!
//! [`apply_span_limits`]: super::apply_span_limits
//! [`estimate_size`]: super::estimate_size

use super::{limit_value, truncate_str, value_size};
use crate::model::{
    chunk_bytes, compact_bytes, string_bytes, value_heap_bytes, AttrValue, KeyValue,
    ResourceBytesCache, Span,
};
use crate::receiver::limits::LimitsConfig;

/// What one pass over a span (or one attribute list) found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Attributes dropped by the per-list count limit.
    pub dropped: u64,
    /// Values cut by the length limit.
    pub truncated: u64,
    /// [`estimate_size`](super::estimate_size), after the limits.
    pub size: usize,
    /// [`Span::heap_bytes`], after the limits.
    pub heap: usize,
}

/// Applies the count and value-length limits to `attrs` and measures what
/// is left: its contribution to the size estimate and to the heap bytes.
fn limit_and_measure(attrs: &mut Vec<KeyValue>, limits: &LimitsConfig) -> Pass {
    let mut pass = Pass::default();
    if attrs.len() > limits.max_attributes_per_span {
        pass.dropped = (attrs.len() - limits.max_attributes_per_span) as u64;
        // Keeps the capacity, as the heap bytes count it.
        attrs.truncate(limits.max_attributes_per_span);
    }
    let max = limits.max_attribute_value_bytes;
    pass.heap = chunk_bytes(attrs.capacity() * std::mem::size_of::<KeyValue>());
    for kv in attrs.iter_mut() {
        // Strings and scalars inline: this runs for every attribute of
        // every span; nested values take the general (rarer) paths.
        let (size, heap) = match &mut kv.value {
            AttrValue::Str(s) => {
                pass.truncated += truncate_str(s, max) as u64;
                (s.len(), compact_bytes(s))
            }
            AttrValue::Bool(_) | AttrValue::Int(_) | AttrValue::Double(_) | AttrValue::Empty => {
                (8, 0)
            }
            v => {
                pass.truncated += limit_value(v, max);
                (value_size(v), value_heap_bytes(v))
            }
        };
        pass.size += kv.key.len() + size + 16;
        pass.heap += compact_bytes(&kv.key) + heap;
    }
    pass
}

/// Applies the limits to the span's own, event and link attributes (adding
/// what each list lost to its `dropped_attributes_count`) and measures the
/// span as [`estimate_size`](super::estimate_size) and
/// [`Span::heap_bytes`] would after them; the resource's heap bytes come
/// from `resource` (measured once per shared list).
pub(crate) fn limit_and_measure_span(
    span: &mut Span,
    limits: &LimitsConfig,
    resource: &mut ResourceBytesCache,
) -> Pass {
    let mut pass = limit_and_measure(&mut span.attributes, limits);
    span.dropped_attributes_count = span
        .dropped_attributes_count
        .saturating_add(pass.dropped as u32);
    pass.size += 128 + span.name.len() + span.trace_state.len() + span.status_message.len();
    for e in &mut span.events {
        let p = limit_and_measure(&mut e.attributes, limits);
        e.dropped_attributes_count = e.dropped_attributes_count.saturating_add(p.dropped as u32);
        pass.dropped += p.dropped;
        pass.truncated += p.truncated;
        pass.size += 32 + e.name.len() + p.size;
        pass.heap += compact_bytes(&e.name) + p.heap;
    }
    for l in &mut span.links {
        let p = limit_and_measure(&mut l.attributes, limits);
        l.dropped_attributes_count = l.dropped_attributes_count.saturating_add(p.dropped as u32);
        pass.dropped += p.dropped;
        pass.truncated += p.truncated;
        pass.size += 48 + l.trace_state.len() + p.size;
        pass.heap += string_bytes(&l.trace_state) + p.heap;
    }
    pass.heap += span.fixed_heap_bytes() + resource.heap_bytes(&span.resource_attributes);
    pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CompactString, Event, Link, ResourceAttrs, SpanKind, StatusCode};
    use crate::receiver::convert::{apply_span_limits, estimate_size};

    fn kv(key: &str, value: AttrValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
        }
    }

    fn s(text: &str) -> AttrValue {
        AttrValue::Str(text.into())
    }

    /// Attribute lists of every kind of value, short and long, nested.
    fn attrs(n: usize, long: usize) -> Vec<KeyValue> {
        let mut v = Vec::with_capacity(n + 3);
        for i in 0..n {
            let value = match i % 8 {
                0 => s("short"),
                1 => s(&"é".repeat(long)),
                2 => AttrValue::Int(i as i64),
                3 => AttrValue::Bytes(vec![7; long * 2]),
                4 => AttrValue::Array(vec![s(&"x".repeat(long)), AttrValue::Bool(true)]),
                5 => AttrValue::KvList(vec![kv("inner", s(&"y".repeat(long * 3)))]),
                6 => AttrValue::Empty,
                _ => AttrValue::Double(0.5),
            };
            let key = if i % 3 == 0 {
                format!("a.key.long.enough.to.live.on.the.heap.{i}")
            } else {
                format!("k{i}")
            };
            v.push(kv(&key, value));
        }
        v
    }

    fn span(n: usize, long: usize, resource: &ResourceAttrs) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            name: CompactString::from("GET /an/operation/name/of/some/length"),
            trace_state: "k=v".into(),
            status_message: "x".repeat(long),
            start_ns: 1,
            end_ns: 2,
            attributes: attrs(n, long),
            dropped_attributes_count: 3,
            events: (0..n % 4)
                .map(|i| Event {
                    time_ns: 1,
                    name: format!("event {i}").into(),
                    attributes: attrs(n / 2 + i, long),
                    dropped_attributes_count: 0,
                })
                .collect(),
            links: (0..n % 3)
                .map(|i| Link {
                    trace_id: [3; 16],
                    span_id: [4; 8],
                    trace_state: "t".repeat(i * 40),
                    attributes: attrs(n + i, long),
                    dropped_attributes_count: 1,
                    flags: 0,
                })
                .collect(),
            service_name: "svc".into(),
            resource_attributes: resource.clone(),
            parent_span_id: None,
            flags: 0,
            kind: SpanKind::Server,
            dropped_events_count: 0,
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            scope_name: "a.scope.name.longer.than.inline".into(),
            scope_version: "1".into(),
        }
    }

    /// The three walks this pass replaces, on a copy.
    fn three_walks(span: &Span, limits: &LimitsConfig) -> (Span, Pass) {
        let mut span = span.clone();
        let (dropped, truncated) = apply_span_limits(&mut span, limits);
        let pass = Pass {
            dropped,
            truncated,
            size: estimate_size(&span),
            heap: span.heap_bytes(),
        };
        (span, pass)
    }

    #[test]
    fn one_pass_equals_the_limits_then_both_measures() {
        let resource = ResourceAttrs::new(attrs(5, 30));
        let shared_other = ResourceAttrs::new(attrs(2, 2));
        let mut cache = ResourceBytesCache::default();
        let mut compared = 0;
        for max_attributes_per_span in [0, 1, 4, 7, 128] {
            for max_attribute_value_bytes in [0, 3, 16, 4096] {
                let limits = LimitsConfig {
                    max_attributes_per_span,
                    max_attribute_value_bytes,
                    ..LimitsConfig::default()
                };
                for n in [0, 1, 5, 9, 20] {
                    for long in [0, 10, 40] {
                        for r in [&resource, &shared_other, &ResourceAttrs::default()] {
                            let original = span(n, long, r);
                            let (expected_span, expected) = three_walks(&original, &limits);
                            let mut got_span = original.clone();
                            let got = limit_and_measure_span(&mut got_span, &limits, &mut cache);
                            assert_eq!(got, expected, "n {n} long {long} limits {limits:?}");
                            assert_eq!(got_span, expected_span);
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 5 * 4 * 5 * 3 * 3);
    }

    #[test]
    fn a_resource_changed_after_measuring_is_measured_again() {
        let mut cache = ResourceBytesCache::default();
        let mut resource = ResourceAttrs::new(attrs(1, 0));
        let first = cache.heap_bytes(&resource);
        assert_eq!(first, resource.heap_bytes());
        // Sole owner now (the cache holds only a `Weak`): the change is
        // made in place as far as the span can tell, yet must be seen.
        resource.make_mut().push(kv("added", s(&"z".repeat(100))));
        let second = cache.heap_bytes(&resource);
        assert_eq!(second, resource.heap_bytes());
        assert!(second > first);
        // A shared copy is measured once and then reused, unchanged.
        let other = resource.clone();
        assert_eq!(cache.heap_bytes(&other), second);
        assert_eq!(cache.heap_bytes(&ResourceAttrs::default()), 0);
        assert_eq!(cache.heap_bytes(&other), second);
    }
}
