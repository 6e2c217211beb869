//! OTLP → [`Span`] conversion, span validation and receiver limits, shared by
//! every receiver (and by WAL replay, which runs the same code on the same
//! bytes and therefore yields the same spans).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as PKeyValue};

use crate::model::{
    AttrValue, CompactString, Event, KeyValue, Link, ResourceAttrs, Span, SpanId, SpanKind,
    StatusCode, TraceId,
};
use crate::receiver::limits::LimitsConfig;

mod span_check;

/// At most this many per-span problems are spelled out in a partial-success message.
const MAX_REPORTED_ERRORS: usize = 3;

/// How deeply attribute values may nest (arrays and kvlists in arrays and
/// kvlists; a plain attribute value is depth 1). An array or kvlist at this
/// depth is kept empty, the rest of the attribute and the span are kept, and
/// the cut is counted (`ferrotrace_attribute_depth_truncated_total`). Deeper
/// nesting than protobuf's stack guard allows (prost's recursion limit of 100
/// nested messages: about 31 kvlist or 47 array levels) still makes a
/// protobuf request undecodable (400); OTLP/JSON skips anything below the
/// cut unread, at any depth.
pub const MAX_ANY_VALUE_DEPTH: usize = 16;

/// The latest time the stores hold: they keep nanoseconds as a signed
/// 64-bit integer (2262-04-11T23:47:16Z).
pub const MAX_TIMESTAMP_NS: u64 = i64::MAX as u64;

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a valid message of the expected type.
    #[error("{0}")]
    Malformed(String),
    /// More spans than `limits.max_spans_per_request`.
    #[error("request has {count} spans; the limit is {limit} per request (split the batch)")]
    TooManySpans {
        /// Spans in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl DecodeError {
    /// `limits.max_spans_per_request` against a request's span count (valid
    /// or not): every decoder refuses a request over it the same way.
    #[inline]
    pub fn check_span_count(count: usize, limits: &LimitsConfig) -> Result<(), DecodeError> {
        if count > limits.max_spans_per_request {
            return Err(DecodeError::TooManySpans {
                count,
                limit: limits.max_spans_per_request,
            });
        }
        Ok(())
    }
}

/// The valid spans of a request and an account of what was rejected or cut.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Valid spans, in request order.
    pub spans: Vec<Span>,
    /// Spans rejected as invalid.
    pub rejected: u64,
    /// Why (the first few problems), for the partial-success message.
    pub errors: Vec<String>,
    /// Memory held by `spans` ([`Span::heap_bytes`]), charged to the queue.
    pub bytes: u64,
    /// Attributes dropped by the per-span limit.
    pub attributes_dropped: u64,
    /// Values truncated by the length limit.
    pub values_truncated: u64,
    /// Attribute values cut at [`MAX_ANY_VALUE_DEPTH`].
    pub depth_truncated: u64,
    /// A router's OTLP protobuf request as scanned on the wire
    /// (`otlp_proto::route_scan`): its valid spans are here, not in `spans`.
    pub wire: Option<std::sync::Arc<super::otlp_proto::wire_request::WireRequest>>,
    /// The resource list measured last by [`Decoded::check`]: the spans of
    /// one resource share it, and it is measured once for all of them.
    pub(crate) resource_bytes: crate::model::ResourceBytesCache,
}

impl Decoded {
    /// Valid spans, built or on the wire.
    pub fn len(&self) -> usize {
        self.spans.len() + self.wire.as_ref().map_or(0, |w| w.spans.len())
    }

    /// True when no span is valid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records one rejected span.
    pub fn reject(&mut self, why: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(why);
        }
    }

    /// The OTLP partial-success `error_message` (empty when nothing was rejected).
    pub fn error_message(&self) -> String {
        if self.rejected == 0 {
            return String::new();
        }
        let more = if self.rejected as usize > self.errors.len() {
            format!(" (and {} more)", self.rejected as usize - self.errors.len())
        } else {
            String::new()
        };
        format!(
            "{} invalid span(s) rejected: {}{}",
            self.rejected,
            self.errors.join("; "),
            more
        )
    }

    /// Validates a converted span, applies limits and keeps it, or rejects it.
    pub fn push(&mut self, mut span: Span, limits: &LimitsConfig, index: usize) {
        if self.check(&mut span, limits, index) {
            self.spans.push(span);
        }
    }

    /// [`Decoded::push`] without the push: validates `span` and applies the
    /// limits to it where it is, counting it (true) or rejecting it (false),
    /// for a decoder that builds its spans in place.
    pub fn check(&mut self, span: &mut Span, limits: &LimitsConfig, index: usize) -> bool {
        if span.start_ns == 0 {
            self.reject(format!(
                "span {index} ({}): start time is missing (start_time_unix_nano = 0)",
                crate::model::hex(&span.span_id),
            ));
            return false;
        }
        if span.end_ns > MAX_TIMESTAMP_NS {
            self.reject(format!(
                "span {index} ({}): end time {} ns is after 2262-04-11, the latest time \
                 the store can hold",
                crate::model::hex(&span.span_id),
                span.end_ns
            ));
            return false;
        }
        if span.end_ns < span.start_ns {
            self.reject(format!(
                "span {index} ({}): end time {} is before start time {}",
                crate::model::hex(&span.span_id),
                span.end_ns,
                span.start_ns
            ));
            return false;
        }
        // The limits, the size and the heap bytes in one walk over the
        // attributes (the same results as `apply_span_limits`, then
        // `estimate_size`, then `Span::heap_bytes`).
        let pass = span_check::limit_and_measure_span(span, limits, &mut self.resource_bytes);
        self.attributes_dropped += pass.dropped;
        self.values_truncated += pass.truncated;
        let size = pass.size;
        if size > limits.max_span_bytes {
            self.reject(format!(
                "span {index} ({}): {size} bytes exceeds the {}-byte span size limit",
                crate::model::hex(&span.span_id),
                limits.max_span_bytes
            ));
            return false;
        }
        self.bytes += pass.heap as u64;
        true
    }
}

/// Checks and converts trace/span/parent ids.
pub fn convert_ids(
    index: usize,
    trace_id: &[u8],
    span_id: &[u8],
    parent: &[u8],
) -> Result<(TraceId, SpanId, Option<SpanId>), String> {
    let t: TraceId = trace_id.try_into().map_err(|_| {
        format!(
            "span {index}: trace_id must be 16 bytes (32 hex digits), got {} bytes",
            trace_id.len()
        )
    })?;
    if t == [0; 16] {
        return Err(format!("span {index}: trace_id is all zeros"));
    }
    let s: SpanId = span_id.try_into().map_err(|_| {
        format!(
            "span {index}: span_id must be 8 bytes (16 hex digits), got {} bytes",
            span_id.len()
        )
    })?;
    if s == [0; 8] {
        return Err(format!("span {index}: span_id is all zeros"));
    }
    let p = match parent.len() {
        0 => None,
        8 => {
            let p: SpanId = parent.try_into().map_err(|_| String::new())?;
            // Some SDKs send eight zero bytes for "no parent".
            (p != [0; 8]).then_some(p)
        }
        n => {
            return Err(format!(
                "span {index}: parent_span_id must be empty or 8 bytes, got {n} bytes"
            ))
        }
    };
    Ok((t, s, p))
}

/// Converts an OTLP request into validated spans.
pub fn from_otlp(
    req: ExportTraceServiceRequest,
    limits: &LimitsConfig,
) -> Result<Decoded, DecodeError> {
    let count: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .map(|s| s.spans.len())
        .sum();
    DecodeError::check_span_count(count, limits)?;
    let mut out = Decoded {
        spans: Vec::with_capacity(count),
        ..Decoded::default()
    };
    let mut index = 0usize;
    let cut = &mut 0u64;
    for rs in req.resource_spans {
        let mut resource_attributes = match rs.resource {
            Some(r) => convert_attrs(r.attributes, cut),
            None => Vec::new(),
        };
        let (d, t) = limit_attrs(&mut resource_attributes, limits);
        out.attributes_dropped += d;
        out.values_truncated += t;
        let service_name = service_name_of(&resource_attributes);
        let resource_attributes = ResourceAttrs::new(resource_attributes);
        for ss in rs.scope_spans {
            let (scope_name, scope_version): (CompactString, CompactString) = match ss.scope {
                Some(s) => (s.name.into(), s.version.into()),
                None => Default::default(),
            };
            for ps in ss.spans {
                let i = index;
                index += 1;
                let (trace_id, span_id, parent_span_id) =
                    match convert_ids(i, &ps.trace_id, &ps.span_id, &ps.parent_span_id) {
                        Ok(ids) => ids,
                        Err(e) => {
                            out.reject(e);
                            continue;
                        }
                    };
                let mut bad_link = None;
                let links = ps
                    .links
                    .into_iter()
                    .filter_map(|l| {
                        let t: Option<TraceId> = l.trace_id.as_slice().try_into().ok();
                        let s: Option<SpanId> = l.span_id.as_slice().try_into().ok();
                        match (t, s) {
                            (Some(trace_id), Some(span_id)) => Some(Link {
                                trace_id,
                                span_id,
                                trace_state: l.trace_state,
                                attributes: convert_attrs(l.attributes, cut),
                                dropped_attributes_count: l.dropped_attributes_count,
                                flags: l.flags,
                            }),
                            _ => {
                                bad_link = Some(format!(
                                    "span {i}: a link has a trace_id of {} bytes / span_id of {} bytes (need 16 / 8)",
                                    l.trace_id.len(),
                                    l.span_id.len()
                                ));
                                None
                            }
                        }
                    })
                    .collect();
                if let Some(e) = bad_link {
                    out.reject(e);
                    continue;
                }
                let (status_code, status_message) = match ps.status {
                    Some(s) => (StatusCode::from_i32(s.code), s.message),
                    None => (StatusCode::Unset, String::new()),
                };
                let span = Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    trace_state: ps.trace_state,
                    flags: ps.flags,
                    name: ps.name.into(),
                    kind: SpanKind::from_i32(ps.kind),
                    start_ns: ps.start_time_unix_nano,
                    end_ns: ps.end_time_unix_nano,
                    attributes: convert_attrs(ps.attributes, cut),
                    dropped_attributes_count: ps.dropped_attributes_count,
                    events: ps
                        .events
                        .into_iter()
                        .map(|e| Event {
                            time_ns: e.time_unix_nano,
                            name: e.name.into(),
                            attributes: convert_attrs(e.attributes, cut),
                            dropped_attributes_count: e.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count: ps.dropped_events_count,
                    links,
                    dropped_links_count: ps.dropped_links_count,
                    status_code,
                    status_message,
                    service_name: service_name.clone(),
                    resource_attributes: resource_attributes.clone(),
                    scope_name: scope_name.clone(),
                    scope_version: scope_version.clone(),
                };
                out.push(span, limits, i);
            }
        }
    }
    out.depth_truncated = *cut;
    Ok(out)
}

/// Converts OTLP attributes, cutting values nested deeper than
/// [`MAX_ANY_VALUE_DEPTH`] (counted in `cut`).
pub fn convert_attrs(kvs: Vec<PKeyValue>, cut: &mut u64) -> Vec<KeyValue> {
    convert_attrs_at(kvs, 1, cut)
}

fn convert_attrs_at(kvs: Vec<PKeyValue>, depth: usize, cut: &mut u64) -> Vec<KeyValue> {
    kvs.into_iter()
        .map(|kv| KeyValue {
            key: kv.key.into(),
            value: convert_value(kv.value, depth, cut),
        })
        .collect()
}

fn convert_value(v: Option<AnyValue>, depth: usize, cut: &mut u64) -> AttrValue {
    match v.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.into()),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(d),
        Some(any_value::Value::BytesValue(b)) => AttrValue::Bytes(b),
        Some(any_value::Value::ArrayValue(a)) if depth >= MAX_ANY_VALUE_DEPTH => {
            *cut += u64::from(!a.values.is_empty());
            AttrValue::Array(Vec::new())
        }
        Some(any_value::Value::KvlistValue(kv)) if depth >= MAX_ANY_VALUE_DEPTH => {
            *cut += u64::from(!kv.values.is_empty());
            AttrValue::KvList(Vec::new())
        }
        Some(any_value::Value::ArrayValue(a)) => AttrValue::Array(
            a.values
                .into_iter()
                .map(|v| convert_value(Some(v), depth + 1, cut))
                .collect(),
        ),
        Some(any_value::Value::KvlistValue(kv)) => {
            AttrValue::KvList(convert_attrs_at(kv.values, depth + 1, cut))
        }
        // An empty AnyValue (or one of a kind this build does not know): the
        // key is kept, with no value.
        Some(_) | None => AttrValue::Empty,
    }
}

/// Truncates a string to at most `max` bytes on a char boundary.
#[inline]
fn truncate_str(s: &mut CompactString, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut cut = max;
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    true
}

fn limit_value(v: &mut AttrValue, max: usize) -> u64 {
    match v {
        AttrValue::Str(s) => truncate_str(s, max) as u64,
        AttrValue::Bytes(b) if b.len() > max => {
            b.truncate(max);
            1
        }
        AttrValue::Array(a) => a.iter_mut().map(|v| limit_value(v, max)).sum(),
        AttrValue::KvList(kvs) => kvs
            .iter_mut()
            .map(|kv| limit_value(&mut kv.value, max))
            .sum(),
        _ => 0,
    }
}

/// The span's service: the resource's non-empty string `service.name`, or
/// `unknown_service` as the OpenTelemetry SDKs name a service left unset.
pub(crate) fn service_name_of(resource_attributes: &[KeyValue]) -> CompactString {
    resource_attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match &kv.value {
            AttrValue::Str(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| CompactString::const_new("unknown_service"))
}

/// Applies the attribute count and value length limits; returns (dropped, truncated).
pub fn limit_attrs(attrs: &mut Vec<KeyValue>, limits: &LimitsConfig) -> (u64, u64) {
    let mut dropped = 0;
    if attrs.len() > limits.max_attributes_per_span {
        dropped = (attrs.len() - limits.max_attributes_per_span) as u64;
        attrs.truncate(limits.max_attributes_per_span);
    }
    let max = limits.max_attribute_value_bytes;
    // Scalars inline: this runs for every attribute of every span.
    let truncated = attrs
        .iter_mut()
        .map(|kv| match &mut kv.value {
            AttrValue::Str(s) => truncate_str(s, max) as u64,
            AttrValue::Bool(_) | AttrValue::Int(_) | AttrValue::Double(_) | AttrValue::Empty => 0,
            v => limit_value(v, max),
        })
        .sum();
    (dropped, truncated)
}

/// Applies limits to the span's own, event and link attributes.
pub fn apply_span_limits(span: &mut Span, limits: &LimitsConfig) -> (u64, u64) {
    let (mut d, mut t) = limit_attrs(&mut span.attributes, limits);
    span.dropped_attributes_count = span.dropped_attributes_count.saturating_add(d as u32);
    for e in &mut span.events {
        let (ed, et) = limit_attrs(&mut e.attributes, limits);
        e.dropped_attributes_count = e.dropped_attributes_count.saturating_add(ed as u32);
        d += ed;
        t += et;
    }
    for l in &mut span.links {
        let (ld, lt) = limit_attrs(&mut l.attributes, limits);
        l.dropped_attributes_count = l.dropped_attributes_count.saturating_add(ld as u32);
        d += ld;
        t += lt;
    }
    (d, t)
}

fn value_size(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => s.len(),
        AttrValue::Bytes(b) => b.len(),
        AttrValue::Array(a) => a.iter().map(value_size).sum::<usize>() + 8 * a.len(),
        AttrValue::KvList(kvs) => attrs_size(kvs),
        _ => 8,
    }
}

fn attrs_size(kvs: &[KeyValue]) -> usize {
    kvs.iter()
        .map(|kv| {
            // Scalars inline: this runs for every attribute of every span.
            let value = match &kv.value {
                AttrValue::Str(s) => s.len(),
                AttrValue::Bool(_)
                | AttrValue::Int(_)
                | AttrValue::Double(_)
                | AttrValue::Empty => 8,
                v => value_size(v),
            };
            kv.key.len() + value + 16
        })
        .sum()
}

/// Estimated size of a span's own data (resource and scope excluded: they are
/// shared by every span of a request on the wire). Used for the span size
/// limit (`limits.max_span_bytes`); memory budgets use [`Span::heap_bytes`].
pub fn estimate_size(s: &Span) -> usize {
    128 + s.name.len()
        + s.trace_state.len()
        + s.status_message.len()
        + attrs_size(&s.attributes)
        + s.events
            .iter()
            .map(|e| 32 + e.name.len() + attrs_size(&e.attributes))
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| 48 + l.trace_state.len() + attrs_size(&l.attributes))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};

    fn pspan(t: Vec<u8>, s: Vec<u8>, start: u64, end: u64) -> PSpan {
        PSpan {
            trace_id: t,
            span_id: s,
            name: "op".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    fn req(spans: Vec<PSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![PKeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("svc".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn an_empty_any_value_keeps_its_key_without_a_value() {
        let kvs = convert_attrs(
            vec![
                PKeyValue {
                    key: "unset".into(),
                    value: Some(AnyValue { value: None }),
                    ..Default::default()
                },
                PKeyValue {
                    key: "absent".into(),
                    value: None,
                    ..Default::default()
                },
                PKeyValue {
                    key: "s".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(String::new())),
                    }),
                    ..Default::default()
                },
            ],
            &mut 0,
        );
        assert_eq!(kvs[0].value, AttrValue::Empty);
        assert_eq!(kvs[1].value, AttrValue::Empty);
        assert_eq!(
            kvs[2].value,
            AttrValue::Str(Default::default()),
            "an empty string stays a string"
        );
    }

    #[test]
    fn invalid_spans_are_rejected_and_rest_kept() {
        let r = req(vec![
            pspan(vec![1; 16], vec![2; 8], 1, 2),
            pspan(vec![1; 15], vec![2; 8], 1, 2),
            pspan(vec![0; 16], vec![2; 8], 1, 2),
            pspan(vec![1; 16], vec![0; 8], 1, 2),
            pspan(vec![1; 16], vec![3; 8], 5, 2),
        ]);
        let d = from_otlp(r, &LimitsConfig::default()).unwrap();
        assert_eq!(d.spans.len(), 1);
        assert_eq!(d.rejected, 4);
        assert_eq!(d.spans[0].service_name, "svc");
        let msg = d.error_message();
        assert!(
            msg.contains("4 invalid span(s)") && msg.contains("trace_id must be 16 bytes"),
            "{msg}"
        );
        assert!(msg.contains("and 1 more"), "{msg}");
    }

    #[test]
    fn limits_truncate_and_count() {
        let limits = LimitsConfig {
            max_attributes_per_span: 2,
            max_attribute_value_bytes: 4,
            ..LimitsConfig::default()
        };
        let mut p = pspan(vec![1; 16], vec![2; 8], 1, 2);
        for k in ["a", "b", "c"] {
            p.attributes.push(PKeyValue {
                key: k.into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("héllo".into())),
                }),
                ..Default::default()
            });
        }
        let d = from_otlp(req(vec![p]), &limits).unwrap();
        let s = &d.spans[0];
        assert_eq!(s.attributes.len(), 2);
        assert_eq!(s.dropped_attributes_count, 1);
        assert_eq!(s.attributes[0].value, AttrValue::Str("hél".into()));
        assert_eq!(d.values_truncated, 2);
        let too_many = LimitsConfig {
            max_spans_per_request: 0,
            ..LimitsConfig::default()
        };
        assert!(matches!(
            from_otlp(req(vec![pspan(vec![1; 16], vec![2; 8], 1, 2)]), &too_many),
            Err(DecodeError::TooManySpans { .. })
        ));
    }

    #[test]
    fn oversized_span_rejected() {
        let limits = LimitsConfig {
            max_span_bytes: 1000,
            ..LimitsConfig::default()
        };
        let mut p = pspan(vec![1; 16], vec![2; 8], 1, 2);
        p.name = "x".repeat(2000);
        let d = from_otlp(req(vec![p]), &limits).unwrap();
        assert_eq!(d.rejected, 1);
        assert!(d.error_message().contains("span size limit"));
    }

    #[test]
    fn unrepresentable_or_missing_times_are_rejected_with_a_message() {
        let r = req(vec![
            pspan(vec![1; 16], vec![2; 8], 0, 5),
            pspan(vec![1; 16], vec![3; 8], 1, u64::MAX),
            pspan(vec![1; 16], vec![4; 8], i64::MAX as u64, i64::MAX as u64),
        ]);
        let d = from_otlp(r, &LimitsConfig::default()).unwrap();
        assert_eq!(d.rejected, 2);
        assert_eq!(d.spans.len(), 1);
        let msg = d.error_message();
        assert!(msg.contains("start time is missing"), "{msg}");
        assert!(msg.contains("after 2262-04-11"), "{msg}");
    }

    fn nested(depth: usize) -> AnyValue {
        let mut v = AnyValue {
            value: Some(any_value::Value::StringValue("leaf".into())),
        };
        for i in 0..depth {
            v = AnyValue {
                value: Some(if i % 2 == 0 {
                    any_value::Value::ArrayValue(
                        opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![v] },
                    )
                } else {
                    any_value::Value::KvlistValue(
                        opentelemetry_proto::tonic::common::v1::KeyValueList {
                            values: vec![PKeyValue {
                                key: "k".into(),
                                value: Some(v),
                                ..Default::default()
                            }],
                        },
                    )
                }),
            };
        }
        v
    }

    fn depth_of(v: &AttrValue) -> usize {
        match v {
            AttrValue::Array(a) => 1 + a.first().map_or(0, depth_of),
            AttrValue::KvList(kv) => 1 + kv.first().map_or(0, |kv| depth_of(&kv.value)),
            _ => 0,
        }
    }

    #[test]
    fn deep_values_are_cut_on_the_attribute_and_counted() {
        let mut p = pspan(vec![1; 16], vec![2; 8], 1, 2);
        for (k, depth) in [("deep", 24), ("edge", MAX_ANY_VALUE_DEPTH - 1), ("flat", 0)] {
            p.attributes.push(PKeyValue {
                key: k.into(),
                value: Some(nested(depth)),
                ..Default::default()
            });
        }
        // Survives protobuf encoding and decoding (within prost's recursion limit).
        let bytes = prost::Message::encode_to_vec(&req(vec![p]));
        let decoded = <ExportTraceServiceRequest as prost::Message>::decode(&bytes[..]).unwrap();
        let d = from_otlp(decoded, &LimitsConfig::default()).unwrap();
        assert_eq!(d.rejected, 0);
        assert_eq!(d.depth_truncated, 1, "only the attribute past the limit");
        let s = &d.spans[0];
        assert_eq!(depth_of(&s.attributes[0].value), MAX_ANY_VALUE_DEPTH);
        assert_eq!(depth_of(&s.attributes[1].value), MAX_ANY_VALUE_DEPTH - 1);
        assert_eq!(s.attributes[2].value, AttrValue::Str("leaf".into()));
    }
}
