//! The native trace document (`GET /api/native/traces/{id}`), serialized
//! straight from the tree into the response bytes.
//!
//! Building a `serde_json::Value` first costs one map per span, attribute,
//! event and link: for a 50,000-span trace with ten attributes per span that
//! was gigabytes of short-lived allocations and seconds of CPU. These borrowed
//! views write the same document (same fields, types and values) without the
//! intermediate tree.

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use crate::model::{hex, AttrValue, KeyValue, Span, StatusCode};

use super::params::format_rfc3339;
use super::tree::{NodeInfo, TraceTree};

/// The attribute type names the native API reports.
pub(crate) fn type_name(v: &AttrValue) -> &'static str {
    match v {
        AttrValue::Str(_) => "string",
        AttrValue::Bool(_) => "bool",
        AttrValue::Int(_) => "int",
        AttrValue::Double(_) => "double",
        AttrValue::Bytes(_) => "bytes",
        AttrValue::Array(_) => "array",
        AttrValue::KvList(_) => "map",
        AttrValue::Empty => "empty",
    }
}

/// An attribute value as JSON: strings, booleans and integers as themselves,
/// finite doubles as numbers (others as their text), bytes as hex, arrays as
/// arrays and key/value lists as objects (`AttrValue::to_json`'s mapping).
pub(crate) struct ValueJson<'a>(pub &'a AttrValue);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            AttrValue::Str(v) => s.serialize_str(v),
            AttrValue::Bool(b) => s.serialize_bool(*b),
            AttrValue::Int(i) => s.serialize_i64(*i),
            AttrValue::Double(d) if d.is_finite() => s.serialize_f64(*d),
            AttrValue::Double(d) => s.serialize_str(&d.to_string()),
            AttrValue::Bytes(b) => s.serialize_str(&hex(b)),
            AttrValue::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&ValueJson(v))?;
                }
                seq.end()
            }
            AttrValue::KvList(kvs) => {
                let mut map = s.serialize_map(Some(kvs.len()))?;
                for kv in kvs {
                    map.serialize_entry(&kv.key, &ValueJson(&kv.value))?;
                }
                map.end()
            }
            AttrValue::Empty => s.serialize_none(),
        }
    }
}

/// `[{"key", "type", "value"}, ...]`.
pub(crate) struct AttrsJson<'a>(pub &'a [KeyValue]);

impl Serialize for AttrsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for kv in self.0 {
            seq.serialize_element(&AttrJson(kv))?;
        }
        seq.end()
    }
}

struct AttrJson<'a>(&'a KeyValue);

impl Serialize for AttrJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("key", &self.0.key)?;
        map.serialize_entry("type", type_name(&self.0.value))?;
        map.serialize_entry("value", &ValueJson(&self.0.value))?;
        map.end()
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct EventJson<'a> {
    time_ns: u64,
    offset_ns: u64,
    name: &'a str,
    attributes: AttrsJson<'a>,
}

#[derive(Serialize)]
struct LinkJson<'a> {
    trace_id: String,
    span_id: String,
    trace_state: &'a str,
    attributes: AttrsJson<'a>,
}

#[derive(Serialize)]
struct ScopeJson<'a> {
    name: &'a str,
    version: &'a str,
}

/// A list serialized element by element from an iterator factory.
struct SeqOf<F>(F);

impl<F, I, T> Serialize for SeqOf<F>
where
    F: Fn() -> I,
    I: ExactSizeIterator<Item = T>,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let it = (self.0)();
        let mut seq = s.serialize_seq(Some(it.len()))?;
        for item in it {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

struct SpanJson<'a> {
    span: &'a Span,
    node: &'a NodeInfo,
    index: usize,
    trace_start: u64,
}

impl Serialize for SpanJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (sp, n, start) = (self.span, self.node, self.trace_start);
        let mut m = s.serialize_map(Some(36))?;
        m.serialize_entry("index", &self.index)?;
        m.serialize_entry("span_id", &hex(&sp.span_id))?;
        m.serialize_entry("parent_span_id", &sp.parent_span_id.map(|p| hex(&p)))?;
        m.serialize_entry("parent_index", &n.parent)?;
        m.serialize_entry("depth", &n.depth)?;
        m.serialize_entry("subtree_end", &n.subtree_end)?;
        m.serialize_entry("name", &sp.name)?;
        m.serialize_entry("service", &sp.service_name)?;
        m.serialize_entry("kind", sp.kind.as_str())?;
        m.serialize_entry("start_ns", &sp.start_ns)?;
        m.serialize_entry("end_ns", &sp.end_ns)?;
        m.serialize_entry("offset_ns", &sp.start_ns.saturating_sub(start))?;
        m.serialize_entry("duration_ns", &sp.duration_ns())?;
        m.serialize_entry("self_ns", &n.self_ns)?;
        m.serialize_entry("orphan", &n.orphan)?;
        m.serialize_entry("missing_parent_id", &n.missing_parent.map(|p| hex(&p)))?;
        m.serialize_entry("skew_shift_ns", &n.skew_shift_ns)?;
        m.serialize_entry("clock_shift_ns", &n.clock_shift_ns)?;
        m.serialize_entry("critical", &n.critical)?;
        m.serialize_entry("error", &sp.is_error())?;
        m.serialize_entry("error_path", &n.error_path)?;
        m.serialize_entry("error_source", &n.error_source)?;
        m.serialize_entry(
            "status",
            &StatusJson {
                code: match sp.status_code {
                    StatusCode::Unset => "unset",
                    StatusCode::Ok => "ok",
                    StatusCode::Error => "error",
                },
                message: &sp.status_message,
            },
        )?;
        m.serialize_entry("trace_state", &sp.trace_state)?;
        m.serialize_entry("flags", &sp.flags)?;
        m.serialize_entry("attributes", &AttrsJson(&sp.attributes))?;
        m.serialize_entry("dropped_attributes_count", &sp.dropped_attributes_count)?;
        m.serialize_entry(
            "events",
            &SeqOf(|| {
                sp.events.iter().map(|e| EventJson {
                    time_ns: e.time_ns,
                    offset_ns: e.time_ns.saturating_sub(start),
                    name: &e.name,
                    attributes: AttrsJson(&e.attributes),
                })
            }),
        )?;
        m.serialize_entry("dropped_events_count", &sp.dropped_events_count)?;
        m.serialize_entry(
            "links",
            &SeqOf(|| {
                sp.links.iter().map(|l| LinkJson {
                    trace_id: hex(&l.trace_id),
                    span_id: hex(&l.span_id),
                    trace_state: &l.trace_state,
                    attributes: AttrsJson(&l.attributes),
                })
            }),
        )?;
        m.serialize_entry("dropped_links_count", &sp.dropped_links_count)?;
        m.serialize_entry("resource", &AttrsJson(&sp.resource_attributes))?;
        m.serialize_entry(
            "scope",
            &ScopeJson {
                name: &sp.scope_name,
                version: &sp.scope_version,
            },
        )?;
        m.end()
    }
}

/// The whole native trace document for `tree` (`raw`: timings as stored).
pub struct TraceJson<'a> {
    /// The assembled trace.
    pub tree: &'a TraceTree,
    /// Whether skew adjustment was turned off.
    pub raw: bool,
    /// Spans read from the cold tier (rendered as `cold_spans` and `tier`).
    pub cold_spans: u64,
}

impl Serialize for TraceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.tree;
        let start = t.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = t.spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
        let mut services: Vec<&str> = t.spans.iter().map(|s| s.service_name.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        let root = t.root();
        // With no root the first span (earliest) names the trace.
        let named = root.or(if t.spans.is_empty() { None } else { Some(0) });
        let mut m = s.serialize_map(Some(17))?;
        m.serialize_entry("trace_id", &t.spans.first().map(|s| hex(&s.trace_id)))?;
        m.serialize_entry("partial", &t.partial)?;
        m.serialize_entry("root_missing", &root.is_none())?;
        m.serialize_entry(
            "root_service",
            &named.map(|i| t.spans[i].service_name.as_str()),
        )?;
        m.serialize_entry("root_operation", &named.map(|i| t.spans[i].name.as_str()))?;
        m.serialize_entry("raw", &self.raw)?;
        m.serialize_entry("skew_adjusted_spans", &t.skew_adjusted)?;
        m.serialize_entry("span_count", &t.spans.len())?;
        m.serialize_entry("cold_spans", &self.cold_spans)?;
        m.serialize_entry("tier", tier_name(self.cold_spans, t.spans.len() as u64))?;
        m.serialize_entry(
            "error_count",
            &t.spans.iter().filter(|s| s.is_error()).count(),
        )?;
        m.serialize_entry("services", &services)?;
        m.serialize_entry("start_ns", &start)?;
        m.serialize_entry("end_ns", &end)?;
        m.serialize_entry("start_time", &format_rfc3339(start))?;
        m.serialize_entry("duration_ns", &(end - start))?;
        m.serialize_entry(
            "spans",
            &SeqOf(|| {
                t.spans
                    .iter()
                    .zip(&t.nodes)
                    .enumerate()
                    .map(|(index, (span, node))| SpanJson {
                        span,
                        node,
                        index,
                        trace_start: start,
                    })
            }),
        )?;
        m.end()
    }
}

/// Which tier a trace was read from: `hot`, `cold` (every span from the
/// cold tier's files) or `mixed`: the `tier` field of a trace and of a
/// search result.
pub fn tier_name(cold_spans: u64, spans: u64) -> &'static str {
    match cold_spans {
        0 => "hot",
        n if n >= spans => "cold",
        _ => "mixed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed document equals the one built through `serde_json::Value`
    /// from the same data (the previous implementation's mapping).
    #[test]
    fn attribute_values_map_like_to_json() {
        let values = vec![
            AttrValue::Str("a\"<b>".into()),
            AttrValue::Bool(true),
            AttrValue::Int(-7),
            AttrValue::Double(1.5),
            AttrValue::Double(f64::NAN),
            AttrValue::Double(f64::INFINITY),
            AttrValue::Bytes(vec![0, 255]),
            AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Str("x".into())]),
            AttrValue::KvList(vec![KeyValue::new("k", AttrValue::Bool(false))]),
            AttrValue::Empty,
        ];
        for v in &values {
            let streamed = serde_json::to_value(ValueJson(v)).unwrap();
            assert_eq!(streamed, v.to_json(), "{v:?}");
        }
    }

    #[test]
    fn trace_document_has_every_field() {
        let a = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            flags: 1,
            name: "root".into(),
            start_ns: 1_000,
            end_ns: 5_000,
            attributes: vec![KeyValue::new("n", AttrValue::Int(3))],
            ..Span::test(0)
        };
        let tree = TraceTree::build(vec![a], true);
        let doc = serde_json::to_value(TraceJson {
            tree: &tree,
            raw: false,
            cold_spans: 0,
        })
        .unwrap();
        assert_eq!(doc["tier"], "hot");
        assert_eq!(doc["span_count"], 1);
        assert_eq!(doc["root_service"], "svc");
        assert_eq!(doc["duration_ns"], 4_000);
        let span = &doc["spans"][0];
        assert_eq!(span["span_id"], "0202020202020202");
        assert_eq!(span["parent_span_id"], serde_json::Value::Null);
        assert_eq!(
            span["attributes"],
            serde_json::json!([{ "key": "n", "type": "int", "value": 3 }])
        );
        assert_eq!(span["status"]["code"], "unset");
        assert_eq!(span["scope"]["name"], "");
        assert_eq!(span.as_object().unwrap().len(), 33);
    }
}
