//! Span limits: how much a single span may carry.

use crate::attributes::{Array, KeyValue, StringValue, Value};

/// Per-span limits (OpenTelemetry defaults: 128 of everything, no value-length limit).
/// What a limit drops is counted on the span and exported as `dropped_*_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanLimits {
    /// Attributes per span (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`).
    pub max_attributes_per_span: u32,
    /// Events per span (`OTEL_SPAN_EVENT_COUNT_LIMIT`).
    pub max_events_per_span: u32,
    /// Links per span (`OTEL_SPAN_LINK_COUNT_LIMIT`).
    pub max_links_per_span: u32,
    /// Attributes per event (`OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`).
    pub max_attributes_per_event: u32,
    /// Attributes per link (`OTEL_LINK_ATTRIBUTE_COUNT_LIMIT`).
    pub max_attributes_per_link: u32,
    /// Maximum length in bytes of string values (and each string in an array),
    /// truncated at a character boundary (`OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
    pub max_attribute_value_length: Option<usize>,
}

impl Default for SpanLimits {
    fn default() -> Self {
        SpanLimits {
            max_attributes_per_span: 128,
            max_events_per_span: 128,
            max_links_per_span: 128,
            max_attributes_per_event: 128,
            max_attributes_per_link: 128,
            max_attribute_value_length: None,
        }
    }
}

fn env_u32(name: &str, fallback: Option<&str>) -> Option<u32> {
    let raw = std::env::var(name)
        .ok()
        .or_else(|| fallback.and_then(|f| std::env::var(f).ok()))?;
    match raw.trim().parse::<u32>() {
        Ok(v) => Some(v),
        Err(_) => {
            super::diagnostics::report(super::diagnostics::Diagnostic::Config(format!(
                "{name}={raw:?} is not a non-negative integer; using the default"
            )));
            None
        }
    }
}

impl SpanLimits {
    /// Defaults overridden by the `OTEL_SPAN_*_LIMIT`, `OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`
    /// and `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT` variables (falling back to the general
    /// `OTEL_ATTRIBUTE_COUNT_LIMIT` / `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
    pub fn from_env() -> Self {
        let d = SpanLimits::default();
        SpanLimits {
            max_attributes_per_span: env_u32(
                "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
                Some("OTEL_ATTRIBUTE_COUNT_LIMIT"),
            )
            .unwrap_or(d.max_attributes_per_span),
            max_events_per_span: env_u32("OTEL_SPAN_EVENT_COUNT_LIMIT", None)
                .unwrap_or(d.max_events_per_span),
            max_links_per_span: env_u32("OTEL_SPAN_LINK_COUNT_LIMIT", None)
                .unwrap_or(d.max_links_per_span),
            max_attributes_per_event: env_u32("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", None)
                .unwrap_or(d.max_attributes_per_event),
            max_attributes_per_link: env_u32("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", None)
                .unwrap_or(d.max_attributes_per_link),
            max_attribute_value_length: env_u32(
                "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                Some("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
            )
            .map(|v| v as usize),
        }
    }
}

fn truncate_str(s: &mut StringValue, max: usize) {
    let text = s.as_str();
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    *s = match s {
        StringValue::Static(st) => StringValue::Static(&st[..cut]),
        _ => StringValue::Owned(text[..cut].into()),
    };
}

/// Truncates string values to `max` bytes (at a character boundary).
pub(crate) fn truncate_value(v: &mut Value, max: Option<usize>) {
    let Some(max) = max else { return };
    match v {
        Value::String(s) => truncate_str(s, max),
        Value::Array(Array::String(items)) => {
            for s in items {
                truncate_str(s, max);
            }
        }
        _ => {}
    }
}

/// Applies a count limit and the value-length limit to an attribute list in
/// place (no new list unless a key repeats): string values truncated, a
/// repeated key keeps its last value at its first position, attributes past
/// `max_count` dropped. Returns how many were dropped. `keys_distinct`:
/// the caller built the list with no key twice, so it is not searched for
/// repeats (the HTTP layers' fixed attribute sets).
pub(crate) fn limit_attributes(
    attrs: &mut Vec<KeyValue>,
    max_count: u32,
    max_len: Option<usize>,
    keys_distinct: bool,
) -> u32 {
    if attrs.is_empty() {
        return 0;
    }
    if max_len.is_some() {
        for kv in attrs.iter_mut() {
            truncate_value(&mut kv.value, max_len);
        }
    }
    let max_count = max_count as usize;
    // Repeated keys are rare: look first, rebuild only when there is one.
    // Lengths first: distinct keys mostly differ there, and comparing them
    // skips a `memcmp` call per pair.
    let repeated = !keys_distinct
        && (1..attrs.len()).any(|i| {
            let k = attrs[i].key.as_str().as_bytes();
            attrs[..i].iter().any(|e| {
                let e = e.key.as_str().as_bytes();
                e.len() == k.len() && e.last() == k.last() && e == k
            })
        });
    if repeated {
        let mut dropped = 0u32;
        let mut out: Vec<KeyValue> = Vec::with_capacity(attrs.len().min(max_count));
        for kv in attrs.drain(..) {
            if let Some(e) = out.iter_mut().find(|e| e.key == kv.key) {
                e.value = kv.value;
            } else if out.len() < max_count {
                out.push(kv);
            } else {
                dropped = dropped.saturating_add(1);
            }
        }
        *attrs = out;
        dropped
    } else if attrs.len() > max_count {
        let dropped = u32::try_from(attrs.len() - max_count).unwrap_or(u32::MAX);
        attrs.truncate(max_count);
        dropped
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_keeps_its_last_value_at_its_first_position() {
        let mut attrs = vec![
            KeyValue::new("a", 1_i64),
            KeyValue::new("b", 2_i64),
            KeyValue::new("a", 3_i64),
            KeyValue::new("c", 4_i64),
        ];
        assert_eq!(limit_attributes(&mut attrs, 2, None, false), 1);
        assert_eq!(
            attrs,
            vec![KeyValue::new("a", 3_i64), KeyValue::new("b", 2_i64)]
        );
        let mut distinct: Vec<KeyValue> = (0..20)
            .map(|i| KeyValue::new(format!("k{i}"), i64::from(i)))
            .collect();
        assert_eq!(limit_attributes(&mut distinct.clone(), 16, None, false), 4);
        assert_eq!(limit_attributes(&mut distinct, 16, None, true), 4);
        assert_eq!(distinct.len(), 16);
    }
}
