//! Jaeger's protobuf model (`jaeger.api_v2`, `proto/jaeger/api_v2/`) read
//! into [`JBatch`]: the body of gRPC `CollectorService/PostSpans`.

use prost::Message;

use super::model::{JBatch, JLog, JProcess, JRef, JSpan};
use crate::model::{AttrValue, KeyValue, ToCompactString};
use crate::receiver::convert::DecodeError;
use crate::receiver::limits::LimitsConfig;

/// Messages generated from `proto/jaeger/api_v2/*.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!("jaeger_gen.rs");
}

fn tags(kvs: Vec<pb::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter()
        .map(|kv| {
            let value = match pb::ValueType::try_from(kv.v_type) {
                Ok(pb::ValueType::String) => AttrValue::Str(kv.v_str.into()),
                Ok(pb::ValueType::Bool) => AttrValue::Bool(kv.v_bool),
                Ok(pb::ValueType::Int64) => AttrValue::Int(kv.v_int64),
                Ok(pb::ValueType::Float64) => AttrValue::Double(kv.v_float64),
                Ok(pb::ValueType::Binary) => AttrValue::Bytes(kv.v_binary),
                Err(_) => AttrValue::Str(
                    format_args!("<Unknown Jaeger TagType {}>", kv.v_type).to_compact_string(),
                ),
            };
            KeyValue {
                key: kv.key.into(),
                value,
            }
        })
        .collect()
}

/// A protobuf `Timestamp` as nanoseconds since the epoch (absent: 0, which
/// the span validation reports as a missing start time).
fn timestamp_ns(what: &str, t: Option<prost_types::Timestamp>) -> Result<u64, String> {
    let Some(t) = t else { return Ok(0) };
    let (Ok(s), Ok(n)) = (u64::try_from(t.seconds), u64::try_from(t.nanos)) else {
        return Err(format!(
            "{what} {}s {}ns is before 1970 (negative)",
            t.seconds, t.nanos
        ));
    };
    if n >= 1_000_000_000 {
        return Err(format!("{what} has {n} nanoseconds (must be below 10^9)"));
    }
    s.checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(n))
        .ok_or_else(|| format!("{what} {s}s is past the year 2554 (64-bit nanoseconds overflow)"))
}

fn duration_ns(d: Option<prost_types::Duration>) -> Result<u64, String> {
    let Some(d) = d else { return Ok(0) };
    let (Ok(s), Ok(n)) = (u64::try_from(d.seconds), u64::try_from(d.nanos)) else {
        return Err(format!("duration {}s {}ns is negative", d.seconds, d.nanos));
    };
    if n >= 1_000_000_000 {
        return Err(format!("duration has {n} nanoseconds (must be below 10^9)"));
    }
    s.checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(n))
        .ok_or_else(|| format!("duration {s}s overflows 64-bit nanoseconds"))
}

fn process(p: pb::Process) -> JProcess {
    JProcess {
        service_name: p.service_name,
        tags: tags(p.tags),
    }
}

fn span(s: pb::Span) -> JSpan {
    let times = timestamp_ns("startTime", s.start_time).and_then(|start| {
        let end = start
            .checked_add(duration_ns(s.duration)?)
            .ok_or_else(|| "startTime + duration is past the year 2554".to_string())?;
        Ok((start, end))
    });
    JSpan {
        trace_id: s.trace_id,
        span_id: s.span_id,
        parent_span_id: 0,
        operation_name: s.operation_name,
        references: s
            .references
            .into_iter()
            .map(|r| JRef {
                child_of: r.ref_type == pb::SpanRefType::ChildOf as i32,
                trace_id: r.trace_id,
                span_id: r.span_id,
            })
            .collect(),
        flags: s.flags,
        times,
        tags: tags(s.tags),
        logs: s
            .logs
            .into_iter()
            .map(|l| JLog {
                time: timestamp_ns("timestamp", l.timestamp),
                fields: tags(l.fields),
            })
            .collect(),
        process: s.process.map(process),
    }
}

/// Decodes a `PostSpansRequest`.
pub fn decode_post_spans(body: &[u8], limits: &LimitsConfig) -> Result<JBatch, DecodeError> {
    let req = pb::PostSpansRequest::decode(body).map_err(|e| {
        DecodeError::Malformed(format!("invalid Jaeger protobuf PostSpansRequest: {e}"))
    })?;
    let batch = req.batch.unwrap_or_default();
    DecodeError::check_span_count(batch.spans.len(), limits)?;
    Ok(JBatch {
        process: batch.process.map(process),
        spans: batch.spans.into_iter().map(span).collect(),
    })
}
