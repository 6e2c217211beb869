//! Jaeger's Thrift structs (`jaeger.thrift`: `Batch`, `Process`, `Span`,
//! `Tag`, `Log`, `SpanRef`) and the agent's `emitBatch` call (`agent.thrift`)
//! read into [`JBatch`]. As in Thrift's generated code, a field of an
//! unexpected type or an unknown field is skipped, and a missing required
//! field makes the message undecodable.

use super::model::{micros_to_nanos, thrift_times, JBatch, JLog, JProcess, JRef, JSpan};
use super::thrift::{Protocol, Reader, TType};
use crate::model::{AttrValue, KeyValue};
use crate::receiver::convert::DecodeError;
use crate::receiver::limits::LimitsConfig;

/// Reads a struct: `field` is called with each field's type and id and
/// returns false for fields it does not read (they are skipped).
fn read_struct(
    r: &mut Reader<'_>,
    mut field: impl FnMut(&mut Reader<'_>, TType, i16) -> Result<bool, String>,
) -> Result<(), String> {
    r.struct_begin()?;
    while let Some((t, id)) = r.field_begin()? {
        if !field(r, t, id)? {
            r.skip(t)?;
        }
    }
    r.struct_end();
    Ok(())
}

fn missing(what: &str, field: &str) -> String {
    format!("invalid Jaeger Thrift {what}: required field {field} is missing")
}

fn read_tag(r: &mut Reader<'_>) -> Result<KeyValue, String> {
    let mut key = None;
    let mut vtype = None;
    let (mut v_str, mut v_double, mut v_bool, mut v_long, mut v_binary) =
        (None, None, None, None, None);
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::String) => key = Some(r.string("tag key")?),
            (2, TType::I32) => vtype = Some(r.i32()?),
            (3, TType::String) => v_str = Some(r.string("tag vStr")?),
            (4, TType::Double) => v_double = Some(r.double()?),
            (5, TType::Bool) => v_bool = Some(r.bool()?),
            (6, TType::I64) => v_long = Some(r.i64()?),
            (7, TType::String) => v_binary = Some(r.binary("tag vBinary")?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let key = key.ok_or_else(|| missing("Tag", "key"))?;
    let vtype = vtype.ok_or_else(|| missing("Tag", "vType"))?;
    // An absent optional value reads as its type's zero value.
    let value = match vtype {
        0 => AttrValue::Str(v_str.unwrap_or_default().into()),
        1 => AttrValue::Double(v_double.unwrap_or_default()),
        2 => AttrValue::Bool(v_bool.unwrap_or_default()),
        3 => AttrValue::Int(v_long.unwrap_or_default()),
        4 => AttrValue::Bytes(v_binary.unwrap_or_default()),
        other => AttrValue::Str(format!("<Unknown Jaeger TagType {other}>").into()),
    };
    Ok(KeyValue {
        key: key.into(),
        value,
    })
}

fn read_tags(r: &mut Reader<'_>, what: &str) -> Result<Vec<KeyValue>, String> {
    r.list(TType::Struct, what, read_tag)
}

fn read_log(r: &mut Reader<'_>) -> Result<JLog, String> {
    let mut ts = None;
    let mut fields = None;
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::I64) => ts = Some(r.i64()?),
            (2, TType::List) => fields = Some(read_tags(r, "log fields")?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let ts = ts.ok_or_else(|| missing("Log", "timestamp"))?;
    let fields = fields.ok_or_else(|| missing("Log", "fields"))?;
    Ok(JLog {
        time: micros_to_nanos("timestamp", ts),
        fields,
    })
}

fn trace_bytes(high: i64, low: i64) -> Vec<u8> {
    let mut t = Vec::with_capacity(16);
    t.extend_from_slice(&high.to_be_bytes());
    t.extend_from_slice(&low.to_be_bytes());
    t
}

fn read_ref(r: &mut Reader<'_>) -> Result<JRef, String> {
    let (mut kind, mut low, mut high, mut span) = (None, None, None, None);
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::I32) => kind = Some(r.i32()?),
            (2, TType::I64) => low = Some(r.i64()?),
            (3, TType::I64) => high = Some(r.i64()?),
            (4, TType::I64) => span = Some(r.i64()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let kind = kind.ok_or_else(|| missing("SpanRef", "refType"))?;
    let low = low.ok_or_else(|| missing("SpanRef", "traceIdLow"))?;
    let high = high.ok_or_else(|| missing("SpanRef", "traceIdHigh"))?;
    let span = span.ok_or_else(|| missing("SpanRef", "spanId"))?;
    Ok(JRef {
        child_of: kind == 0,
        trace_id: trace_bytes(high, low),
        span_id: span.to_be_bytes().to_vec(),
    })
}

fn read_span(r: &mut Reader<'_>) -> Result<JSpan, String> {
    let (mut low, mut high, mut id_, mut parent, mut name) = (None, None, None, None, None);
    let (mut flags, mut start, mut duration) = (None, None, None);
    let (mut refs, mut tags, mut logs) = (Vec::new(), Vec::new(), Vec::new());
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::I64) => low = Some(r.i64()?),
            (2, TType::I64) => high = Some(r.i64()?),
            (3, TType::I64) => id_ = Some(r.i64()?),
            (4, TType::I64) => parent = Some(r.i64()?),
            (5, TType::String) => name = Some(r.string("operationName")?),
            (6, TType::List) => refs = r.list(TType::Struct, "references", read_ref)?,
            (7, TType::I32) => flags = Some(r.i32()?),
            (8, TType::I64) => start = Some(r.i64()?),
            (9, TType::I64) => duration = Some(r.i64()?),
            (10, TType::List) => tags = read_tags(r, "span tags")?,
            (11, TType::List) => logs = r.list(TType::Struct, "logs", read_log)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let low = low.ok_or_else(|| missing("Span", "traceIdLow"))?;
    let high = high.ok_or_else(|| missing("Span", "traceIdHigh"))?;
    let span_id = id_.ok_or_else(|| missing("Span", "spanId"))?;
    let parent = parent.ok_or_else(|| missing("Span", "parentSpanId"))?;
    let name = name.ok_or_else(|| missing("Span", "operationName"))?;
    let flags = flags.ok_or_else(|| missing("Span", "flags"))?;
    let start = start.ok_or_else(|| missing("Span", "startTime"))?;
    let duration = duration.ok_or_else(|| missing("Span", "duration"))?;
    Ok(JSpan {
        trace_id: trace_bytes(high, low),
        span_id: span_id.to_be_bytes().to_vec(),
        parent_span_id: parent as u64,
        operation_name: name,
        references: refs,
        flags: flags as u32,
        times: thrift_times(start, duration),
        tags,
        logs,
        process: None,
    })
}

fn read_process(r: &mut Reader<'_>) -> Result<JProcess, String> {
    let mut name = None;
    let mut tags = Vec::new();
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::String) => name = Some(r.string("serviceName")?),
            (2, TType::List) => tags = read_tags(r, "process tags")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(JProcess {
        service_name: name.ok_or_else(|| missing("Process", "serviceName"))?,
        tags,
    })
}

/// Reads a `Batch` struct. A span list longer than the request limit is
/// refused at its header, before any span is decoded.
fn read_batch(r: &mut Reader<'_>, limits: &LimitsConfig) -> Result<JBatch, DecodeError> {
    let mut process = None;
    let mut spans = None;
    let mut too_many = None;
    let res = read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::Struct) => process = Some(read_process(r)?),
            (2, TType::List) => {
                spans =
                    Some(r.list_limited(limits.max_spans_per_request, &mut too_many, read_span)?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    });
    if let Some((count, limit)) = too_many {
        return Err(DecodeError::TooManySpans { count, limit });
    }
    res.map_err(DecodeError::Malformed)?;
    let process = process.ok_or_else(|| DecodeError::Malformed(missing("Batch", "process")))?;
    let spans = spans.ok_or_else(|| DecodeError::Malformed(missing("Batch", "spans")))?;
    Ok(JBatch {
        process: Some(process),
        spans,
    })
}

impl Reader<'_> {
    /// A list of structs of at most `max` elements; a longer one records
    /// its count in `too_many` and fails.
    fn list_limited<T>(
        &mut self,
        max: usize,
        too_many: &mut Option<(usize, usize)>,
        elem: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.list_checked(
            TType::Struct,
            "spans",
            |n| {
                if n > max {
                    *too_many = Some((n, max));
                    return Err(format!("{n} spans (limit {max})"));
                }
                Ok(())
            },
            elem,
        )
    }
}

/// Decodes a Thrift binary `Batch`: the body of `POST /api/traces`.
pub fn decode_batch(body: &[u8], limits: &LimitsConfig) -> Result<JBatch, DecodeError> {
    let mut r = Reader::new(body, Protocol::Binary);
    let b = read_batch(&mut r, limits).map_err(|e| match e {
        DecodeError::Malformed(m) => {
            DecodeError::Malformed(format!("invalid Jaeger Thrift (binary) Batch: {m}"))
        }
        other => other,
    })?;
    r.finish("Batch").map_err(|m| {
        DecodeError::Malformed(format!("invalid Jaeger Thrift (binary) Batch: {m}"))
    })?;
    Ok(b)
}

/// Decodes one agent datagram: a Thrift `Agent.emitBatch(Batch)` message in
/// the compact (port 6831) or binary (port 6832) protocol.
pub fn decode_agent(
    datagram: &[u8],
    proto: Protocol,
    limits: &LimitsConfig,
) -> Result<JBatch, DecodeError> {
    let name = match proto {
        Protocol::Compact => "compact",
        Protocol::Binary => "binary",
    };
    let bad = |m: String| {
        DecodeError::Malformed(format!(
            "invalid Jaeger agent datagram (Thrift {name}): {m}"
        ))
    };
    let mut r = Reader::new(datagram, proto);
    let h = r.message_begin().map_err(bad)?;
    match h.name.as_str() {
        "emitBatch" => {}
        "emitZipkinBatch" => {
            return Err(bad(
                "emitZipkinBatch (Zipkin Thrift spans through the agent) is not supported; \
                 send Jaeger spans (emitBatch) or Zipkin JSON/protobuf over HTTP"
                    .into(),
            ))
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(bad(format!(
                "unknown method {shown:?} (the agent takes emitBatch)"
            )));
        }
    }
    // The call's arguments: field 1 is the batch.
    let mut batch = None;
    r.struct_begin().map_err(bad)?;
    while let Some((t, id)) = r.field_begin().map_err(bad)? {
        if (id, t) == (1, TType::Struct) {
            batch = Some(read_batch(&mut r, limits).map_err(|e| match e {
                DecodeError::Malformed(m) => bad(m),
                other => other,
            })?);
        } else {
            r.skip(t).map_err(bad)?;
        }
    }
    r.struct_end();
    r.finish("message").map_err(bad)?;
    batch.ok_or_else(|| bad("emitBatch without its batch argument".into()))
}
