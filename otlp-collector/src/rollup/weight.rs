//! A span's adjusted count: how many spans of the unsampled traffic it stands
//! for, `1 / p` where `p` is the probability the sender sampled it with.
//!
//! Sources, first match wins:
//! 1. OpenTelemetry consistent probability sampling: the `th` sub-key of the
//!    `ot` member of the span's W3C `tracestate` (`ot=th:fd70a` is 1%),
//!    `p = 1 - th / 2^56`. Parsed with the SDK's own parsers
//!    ([`TraceState::from_header`], [`OtState::parse`]), so the collector reads
//!    exactly what the SDK writes. A `tracestate` that is invalid as a whole
//!    (W3C: its vendor data cannot be trusted) or an `ot` entry whose `th` is
//!    malformed gives no threshold.
//! 2. Jaeger clients' root-span tags (looked for on root spans only) `sampler.type = probabilistic` and
//!    `sampler.param = p` with `0 < p <= 1` (a number, or a string holding
//!    one). Jaeger clients put them on the span that made the decision (the
//!    root) only; other spans of such a trace carry nothing and count 1.
//! 3. Otherwise 1: an unsampled-by-the-sender span, or nothing known.
//!
//! The collector's own head and tail sampling run after the rollups observe a
//! span (see [`crate::rollup`]), so they never enter the rollup weight.

use ferrotrace::trace::consistent::{OtState, OT_KEY};
use ferrotrace::TraceState;

use crate::model::{AttrValue, Span};

/// Where a span's adjusted count came from (counted in the rollup stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightSource {
    /// A valid `th` in the `ot` tracestate member.
    Threshold,
    /// Jaeger `sampler.type=probabilistic` / `sampler.param` tags.
    JaegerTags,
    /// No sampling information: the span counts 1.
    None,
    /// Sampling information was present but unusable (invalid `tracestate`,
    /// malformed `th`, a `sampler.param` outside `(0, 1]`): the span counts 1.
    Malformed,
}

/// The adjusted count of `span` and where it came from. Always finite and in
/// `[1, 2^56]`.
pub fn adjusted_count(span: &Span) -> (f64, WeightSource) {
    adjusted_count_memo(span, &mut ThresholdMemo::default())
}

/// Longest trace state [`ThresholdMemo`] remembers (longer ones are parsed
/// every time, so the memo's memory stays bounded).
const MEMO_MAX_LEN: usize = 512;

/// The last trace state parsed and its result. Spans of one trace, and of
/// one service sampling at one probability, carry the same `tracestate`
/// string, so most spans are answered by one string comparison instead of a
/// parse that allocates.
#[derive(Debug, Default)]
pub struct ThresholdMemo {
    trace_state: String,
    result: Option<Result<f64, ()>>,
}

impl ThresholdMemo {
    fn threshold_count(&mut self, trace_state: &str) -> Option<Result<f64, ()>> {
        if !trace_state.contains("ot=") {
            return None;
        }
        if !self.trace_state.is_empty() && self.trace_state == trace_state {
            return self.result;
        }
        let r = threshold_count(trace_state);
        if trace_state.len() <= MEMO_MAX_LEN {
            self.trace_state.clear();
            self.trace_state.push_str(trace_state);
            self.result = r;
        }
        r
    }
}

/// [`adjusted_count`], answering repeated trace states from `memo`.
pub fn adjusted_count_memo(span: &Span, memo: &mut ThresholdMemo) -> (f64, WeightSource) {
    let mut malformed = false;
    match memo.threshold_count(&span.trace_state) {
        Some(Ok(c)) => return (c, WeightSource::Threshold),
        Some(Err(())) => malformed = true,
        None => {}
    }
    match jaeger_count(span) {
        Some(Ok(c)) => return (c, WeightSource::JaegerTags),
        Some(Err(())) => malformed = true,
        None => {}
    }
    if malformed {
        (1.0, WeightSource::Malformed)
    } else {
        (1.0, WeightSource::None)
    }
}

/// `None` when the trace state has no `ot` member; `Err` when it has one but
/// no usable `th` can be read (or the whole trace state is invalid).
fn threshold_count(trace_state: &str) -> Option<Result<f64, ()>> {
    // Cheap pre-check: most spans carry no `ot` member, and parsing the
    // trace state allocates.
    if !trace_state.contains("ot=") {
        return None;
    }
    let Ok(ts) = TraceState::from_header(trace_state) else {
        return Some(Err(()));
    };
    let ot = ts.get(OT_KEY)?;
    let state = OtState::parse(ot);
    match state.th {
        Some(th) => Some(Ok(th.adjusted_count())),
        // An `ot` member without `th` (only `rv`, say) says nothing about
        // sampling; a malformed one is flagged.
        None if state.malformed > 0 => Some(Err(())),
        None => None,
    }
}

/// `None` without Jaeger sampler tags (or with a non-probabilistic sampler);
/// `Err` when `sampler.param` is not a probability in `(0, 1]`. Only root
/// spans are looked at: Jaeger clients tag nothing else, and it spares every
/// other span a scan of its attributes.
fn jaeger_count(span: &Span) -> Option<Result<f64, ()>> {
    if span.parent_span_id.is_some() {
        return None;
    }
    match span.attribute("sampler.type") {
        Some(AttrValue::Str(t)) if t == "probabilistic" => {}
        _ => return None,
    }
    let p = match span.attribute("sampler.param") {
        Some(AttrValue::Double(d)) => *d,
        Some(AttrValue::Int(i)) => *i as f64,
        Some(AttrValue::Str(s)) => match s.trim().parse::<f64>() {
            Ok(v) => v,
            Err(_) => return Some(Err(())),
        },
        _ => return Some(Err(())),
    };
    // The same floor as `th` can express: 2^-56.
    let min = 1.0 / ferrotrace::trace::consistent::MAX_ADJUSTED_COUNT as f64;
    if p.is_finite() && p >= min && p <= 1.0 {
        Some(Ok(1.0 / p))
    } else {
        Some(Err(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyValue;

    fn span(trace_state: &str, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: trace_state.into(),
            flags: 1,
            name: "op".into(),
            kind: Default::default(),
            start_ns: 0,
            end_ns: 0,
            attributes: attrs,
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: Default::default(),
            status_message: String::new(),
            service_name: "s".into(),
            resource_attributes: Default::default(),
            scope_name: Default::default(),
            scope_version: Default::default(),
        }
    }

    fn count(ts: &str) -> (f64, WeightSource) {
        adjusted_count(&span(ts, vec![]))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-3 * b
    }

    #[test]
    fn thresholds_from_the_specification() {
        // Examples of the OpenTelemetry "TraceState handling" specification.
        for (ts, want) in [
            ("ot=th:0", 1.0),
            ("ot=th:8", 2.0),
            ("ot=th:c", 4.0),
            ("ot=th:fd70a", 100.0),
            ("ot=th:e668", 10.0),
            ("ot=th:ffffffffffff", 2f64.powi(48)),
            ("vendor=x,ot=th:8;rv:0123456789abcd;k:v", 2.0),
            ("ot=rv:0123456789abcd;th:c", 4.0),
        ] {
            let (c, src) = count(ts);
            assert!(close(c, want), "{ts}: {c} != {want}");
            assert_eq!(src, WeightSource::Threshold, "{ts}");
        }
        // The smallest probability, 2^-56.
        let (c, _) = count("ot=th:ffffffffffffff");
        assert_eq!(c, 2f64.powi(56));
    }

    #[test]
    fn the_sdk_writes_what_the_collector_reads() {
        use ferrotrace::trace::consistent::Threshold;
        for p in [1.0, 0.5, 0.1, 0.01, 0.001, 1e-6] {
            let th = Threshold::from_probability(p).expect("probability");
            let (c, src) = count(&format!("ot=th:{}", th.to_th()));
            assert_eq!(src, WeightSource::Threshold);
            assert!(close(c, 1.0 / p), "{p}: {c}");
        }
    }

    #[test]
    fn hostile_thresholds_count_one() {
        for ts in [
            "ot=th:",
            "ot=th:xyz",
            "ot=th:-1",
            "ot=th:+8",
            "ot=th:0x8",
            "ot=th:fffffffffffffff", // 15 digits
            "ot=th:100000000000000", // 15 digits, would overflow 56 bits
            "ot=th:FFFF;th:8",       // the first th wins (upper-case hex is accepted)
            "ot=th: 8",
            "ot=th:8,ot=th:fd70a,FOO=1", // invalid member: whole tracestate invalid
            "ot=th:8,=x",
            "OT=th:8",
            "ot=th:\u{e9}",
            "ot=th:8;;;;th",
        ] {
            let (c, src) = count(ts);
            assert!(c.is_finite() && c >= 1.0, "{ts:?}: {c}");
            // Anything unusable counts 1; the cases the grammar still accepts
            // must give a probability in (0, 1].
            if src == WeightSource::Threshold {
                assert!(c <= 2f64.powi(56), "{ts:?}: {c}");
            } else {
                assert_eq!(c, 1.0, "{ts:?}");
            }
        }
        assert_eq!(count("ot=th:xyz").1, WeightSource::Malformed);
        assert_eq!(count("FOO=1,ot=th:8").1, WeightSource::Malformed);
        assert_eq!(count("ot=th:fffffffffffffff").1, WeightSource::Malformed);
        // No `ot` member, or an `ot` member with no `th`: nothing known.
        assert_eq!(count("").1, WeightSource::None);
        assert_eq!(count("congo=t61rcWkgMzE").1, WeightSource::None);
        assert_eq!(count("ot=rv:0123456789abcd").1, WeightSource::None);
        // A huge trace state does not panic.
        let long = format!("ot=th:{}", "f".repeat(100_000));
        assert_eq!(count(&long).0, 1.0);
        let many = (0..1000).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
        assert_eq!(count(&format!("{},ot=th:8", many.join(","))).0, 1.0);
    }

    #[test]
    fn the_memo_answers_like_a_fresh_parse() {
        let mut memo = ThresholdMemo::default();
        let long = format!("x={},ot=th:8", "v".repeat(250));
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let many = format!("{},ot=th:8", many.join(","));
        for ts in [
            "ot=th:8",
            "ot=th:8",
            "ot=th:c",
            "ot=th:zz",
            "ot=th:zz",
            "",
            "a=b",
            "ot=th:8",
            long.as_str(),
            long.as_str(),
            many.as_str(),
            "ot=th:fd70a",
        ] {
            let s = span(ts, vec![]);
            assert_eq!(
                adjusted_count_memo(&s, &mut memo),
                adjusted_count(&s),
                "{ts}"
            );
        }
    }

    fn jaeger(t: &str, p: AttrValue) -> (f64, WeightSource) {
        adjusted_count(&span(
            "",
            vec![
                KeyValue::new("sampler.type", AttrValue::Str(t.into())),
                KeyValue::new("sampler.param", p),
            ],
        ))
    }

    #[test]
    fn jaeger_root_tags() {
        let (c, src) = jaeger("probabilistic", AttrValue::Double(0.25));
        assert_eq!((c, src), (4.0, WeightSource::JaegerTags));
        assert_eq!(jaeger("probabilistic", AttrValue::Int(1)).0, 1.0);
        assert_eq!(
            jaeger("probabilistic", AttrValue::Str("0.01".into())).0,
            100.0
        );
        // Other samplers say nothing about a probability.
        assert_eq!(
            jaeger("ratelimiting", AttrValue::Double(2.0)).1,
            WeightSource::None
        );
        assert_eq!(jaeger("const", AttrValue::Bool(true)).1, WeightSource::None);
        for bad in [
            AttrValue::Double(0.0),
            AttrValue::Double(-0.5),
            AttrValue::Double(1.5),
            AttrValue::Double(f64::NAN),
            AttrValue::Double(f64::INFINITY),
            AttrValue::Double(1e-300),
            AttrValue::Int(0),
            AttrValue::Int(i64::MIN),
            AttrValue::Str("ten percent".into()),
            AttrValue::Bool(true),
        ] {
            assert_eq!(
                jaeger("probabilistic", bad.clone()),
                (1.0, WeightSource::Malformed),
                "{bad:?}"
            );
        }
        // `th` wins over Jaeger tags.
        let mut s = span("ot=th:8", vec![]);
        s.attributes = vec![
            KeyValue::new("sampler.type", AttrValue::Str("probabilistic".into())),
            KeyValue::new("sampler.param", AttrValue::Double(0.01)),
        ];
        assert_eq!(adjusted_count(&s), (2.0, WeightSource::Threshold));
    }
}
