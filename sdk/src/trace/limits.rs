//! Span limits: how much a single span may carry.

use crate::attributes::{Array, StringValue, Value};

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
