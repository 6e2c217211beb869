//! Conversion of [`SpanData`] into OTLP protobuf messages ([`super::proto`]),
//! grouped by resource and instrumentation scope.
//!
//! Every field is carried over exactly: ids as raw bytes, kind and status code
//! as the OTLP enum numbers, W3C trace flags in the low byte of `flags` with
//! the "parent is remote" bits 8 and 9 set as the specification describes,
//! trace state as its header text, and all `dropped_*_count`s.

use super::proto::collector::trace::v1::ExportTraceServiceRequest;
use super::proto::common::v1 as pc;
use super::proto::resource::v1 as pr;
use super::proto::trace::v1 as pt;

use crate::attributes::{Array, KeyValue, Value};
use crate::context::SpanContext;
use crate::resource::Resource;
use crate::trace::span_data::{Event, InstrumentationScope, SpanData, SpanKind, Status};
use crate::trace::Interned;

/// `flags` bit 8: whether the parent is remote is known.
pub const FLAGS_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
/// `flags` bit 9: the parent (or linked span) is remote.
pub const FLAGS_CONTEXT_IS_REMOTE: u32 = 0x200;

/// Spans of one scope, in arrival order.
type ScopeGroup = (Interned<InstrumentationScope>, Vec<pt::Span>);
/// Scopes of one resource, in first-seen order.
type ResourceGroup = (Interned<Resource>, Vec<ScopeGroup>);

/// Builds one export request from a batch, grouping spans by resource, then by
/// scope, in first-seen order.
pub fn encode_request(batch: Vec<SpanData>) -> ExportTraceServiceRequest {
    // Batches almost always hold one resource and a handful of scopes, so a
    // linear search with a pointer fast path (interned values share one address) beats hashing.
    let mut groups: Vec<ResourceGroup> = Vec::new();
    let mut lists = Vec::with_capacity(batch.len());
    let mut event_lists = Vec::new();
    for span in batch {
        let resource = span.resource.clone();
        let scope = span.scope.clone();
        // The attributes are only read: their lists go back to the threads
        // that record spans (`trace::attribute_buffers`) instead of being
        // freed here, on the export thread.
        let encoded = encode_span_keeping_lists(span, Some((&mut lists, &mut event_lists)));
        let gi = match groups
            .iter()
            .position(|(r, _)| Interned::ptr_eq(r, &resource) || **r == *resource)
        {
            Some(i) => i,
            None => {
                groups.push((resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[gi].1;
        let si = match scopes
            .iter()
            .position(|(s, _)| Interned::ptr_eq(s, &scope) || **s == *scope)
        {
            Some(i) => i,
            None => {
                scopes.push((scope, Vec::new()));
                scopes.len() - 1
            }
        };
        scopes[si].1.push(encoded);
    }
    crate::trace::attribute_buffers::give_back_lists(&mut lists, &mut event_lists);
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, scopes)| pt::ResourceSpans {
                resource: Some(encode_resource(&resource)),
                schema_url: resource.schema_url().unwrap_or_default().to_string(),
                scope_spans: scopes
                    .into_iter()
                    .map(|(scope, spans)| pt::ScopeSpans {
                        scope: Some(encode_scope(&scope)),
                        schema_url: scope.schema_url.as_deref().unwrap_or_default().to_string(),
                        spans,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The OTLP resource for a [`Resource`].
pub fn encode_resource(resource: &Resource) -> pr::Resource {
    pr::Resource {
        attributes: resource.iter().map(encode_key_value).collect(),
        dropped_attributes_count: 0,
    }
}

/// The OTLP scope for an [`InstrumentationScope`].
pub fn encode_scope(scope: &InstrumentationScope) -> pc::InstrumentationScope {
    pc::InstrumentationScope {
        name: scope.name.to_string(),
        version: scope.version.as_deref().unwrap_or_default().to_string(),
        attributes: scope.attributes.iter().map(encode_key_value).collect(),
        dropped_attributes_count: 0,
    }
}

/// The OTLP enum number for a span kind.
pub fn encode_kind(kind: SpanKind) -> i32 {
    match kind {
        SpanKind::Internal => pt::span::KIND_INTERNAL,
        SpanKind::Server => pt::span::KIND_SERVER,
        SpanKind::Client => pt::span::KIND_CLIENT,
        SpanKind::Producer => pt::span::KIND_PRODUCER,
        SpanKind::Consumer => pt::span::KIND_CONSUMER,
    }
}

/// The OTLP status for a span status.
pub fn encode_status(status: &Status) -> pt::Status {
    match status {
        Status::Unset => pt::Status {
            message: String::new(),
            code: pt::status::CODE_UNSET,
        },
        Status::Ok => pt::Status {
            message: String::new(),
            code: pt::status::CODE_OK,
        },
        Status::Error { description } => pt::Status {
            message: description.to_string(),
            code: pt::status::CODE_ERROR,
        },
    }
}

/// `flags` for a span or link: W3C trace flags plus the is-remote bits.
pub fn encode_flags(ctx: &SpanContext, is_remote: bool) -> u32 {
    let mut flags = u32::from(ctx.trace_flags().to_u8()) | FLAGS_CONTEXT_HAS_IS_REMOTE;
    if is_remote {
        flags |= FLAGS_CONTEXT_IS_REMOTE;
    }
    flags
}

/// One span.
pub fn encode_span(span: SpanData) -> pt::Span {
    encode_span_keeping_lists(span, None)
}

/// The lists an encoded span leaves: attribute lists, event lists (drained).
type Leftovers<'a> = (&'a mut Vec<Vec<KeyValue>>, &'a mut Vec<Vec<Event>>);

/// One span; its attribute lists and its events' (read, not consumed), and
/// its event list (drained), go to `leftovers` when given, else are dropped.
fn encode_span_keeping_lists(mut span: SpanData, leftovers: Option<Leftovers<'_>>) -> pt::Span {
    let (mut lists, event_lists) = match leftovers {
        Some((l, e)) => (Some(l), Some(e)),
        None => (None, None),
    };
    let attributes: Vec<_> = span.attributes.iter().map(encode_key_value).collect();
    let mut span_events = std::mem::take(&mut span.events);
    let events: Vec<_> = span_events
        .drain(..)
        .map(|mut e| {
            let event = pt::span::Event {
                time_unix_nano: e.timestamp_ns,
                name: e.name.into_owned(),
                attributes: e.attributes.iter().map(encode_key_value).collect(),
                dropped_attributes_count: e.dropped_attributes_count,
            };
            if let Some(lists) = lists.as_deref_mut() {
                lists.push(std::mem::take(&mut e.attributes));
            }
            event
        })
        .collect();
    if let Some(event_lists) = event_lists {
        event_lists.push(span_events);
    }
    if let Some(lists) = lists {
        lists.push(std::mem::take(&mut span.attributes));
    }
    let ctx = &span.span_context;
    pt::Span {
        trace_id: ctx.trace_id().to_bytes().to_vec(),
        span_id: ctx.span_id().to_bytes().to_vec(),
        trace_state: ctx.trace_state().header(),
        parent_span_id: if span.parent_span_id.is_valid() {
            span.parent_span_id.to_bytes().to_vec()
        } else {
            Vec::new()
        },
        flags: encode_flags(ctx, span.parent_is_remote),
        name: span.name.into_owned(),
        kind: encode_kind(span.span_kind),
        start_time_unix_nano: span.start_time_ns,
        end_time_unix_nano: span.end_time_ns,
        attributes,
        dropped_attributes_count: span.dropped_attributes_count,
        events,
        dropped_events_count: span.dropped_events_count,
        links: span
            .links
            .iter()
            .map(|l| pt::span::Link {
                trace_id: l.span_context.trace_id().to_bytes().to_vec(),
                span_id: l.span_context.span_id().to_bytes().to_vec(),
                trace_state: l.span_context.trace_state().header(),
                attributes: l.attributes.iter().map(encode_key_value).collect(),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: encode_flags(&l.span_context, l.span_context.is_remote()),
            })
            .collect(),
        dropped_links_count: span.dropped_links_count,
        status: Some(encode_status(&span.status)),
    }
}

/// One attribute.
pub fn encode_key_value(kv: &KeyValue) -> pc::KeyValue {
    pc::KeyValue {
        key: kv.key.as_str().to_string(),
        value: Some(encode_value(&kv.value)),
    }
}

/// One attribute value.
pub fn encode_value(v: &Value) -> pc::AnyValue {
    use pc::any_value::Value as V;
    let value = match v {
        Value::Bool(b) => V::BoolValue(*b),
        Value::I64(i) => V::IntValue(*i),
        Value::F64(f) => V::DoubleValue(*f),
        Value::String(s) => V::StringValue(s.as_str().to_string()),
        Value::Array(a) => {
            let values = match a {
                Array::Bool(v) => v.iter().map(|b| any(V::BoolValue(*b))).collect(),
                Array::I64(v) => v.iter().map(|i| any(V::IntValue(*i))).collect(),
                Array::F64(v) => v.iter().map(|f| any(V::DoubleValue(*f))).collect(),
                Array::String(v) => v
                    .iter()
                    .map(|s| any(V::StringValue(s.as_str().to_string())))
                    .collect(),
            };
            V::ArrayValue(pc::ArrayValue { values })
        }
    };
    any(value)
}

fn any(value: pc::any_value::Value) -> pc::AnyValue {
    pc::AnyValue { value: Some(value) }
}
