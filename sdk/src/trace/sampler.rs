//! Samplers: which spans are recorded and exported.

use std::fmt;
use std::sync::Arc;

use crate::attributes::KeyValue;
use crate::context::{SpanContext, TraceState};
use crate::ids::TraceId;
use crate::trace::consistent::{
    parent_based_update, parent_has_th, updated_state, ConsistentProbability, ThUpdate, Threshold,
};
use crate::trace::span_data::{Link, SpanKind};

/// Whether a span is dropped, only recorded, or recorded and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplingDecision {
    /// Not recorded, not exported (the span still propagates its context, unsampled).
    Drop,
    /// Recorded (`is_recording()`), not exported, sampled flag clear.
    RecordOnly,
    /// Recorded and exported, sampled flag set.
    RecordAndSample,
}

/// A sampler's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingResult {
    /// The decision.
    pub decision: SamplingDecision,
    /// Attributes to add to the span.
    pub attributes: Vec<KeyValue>,
    /// A replacement trace state (`None` keeps the parent's).
    pub trace_state: Option<TraceState>,
}

/// A custom sampling policy.
pub trait ShouldSample: Send + Sync + fmt::Debug {
    /// Decides for a span about to start. `parent` is the valid parent span
    /// context, if any.
    fn should_sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult;
}

/// The built-in samplers, plus a custom one.
#[derive(Clone, Debug)]
pub enum Sampler {
    /// Sample everything.
    AlwaysOn,
    /// Sample nothing.
    AlwaysOff,
    /// The legacy ratio rule: a fraction of traces, decided by the trace id
    /// alone (see [`trace_id_ratio_sampled`], the rule of `opentelemetry_sdk`
    /// 0.33 and of the collector's head sampler). It records no threshold
    /// (and erases a parent's `th`), so a span it keeps has an unknown
    /// adjusted count; prefer [`Sampler::ConsistentProbability`].
    TraceIdRatioBased(f64),
    /// Consistent probability sampling (OpenTelemetry tracestate `th`/`rv`):
    /// keeps a trace when its 56 bits of randomness reach the threshold and
    /// records `ot=th:..` on the spans it keeps. See
    /// [`consistent`](crate::trace::consistent).
    ConsistentProbability(ConsistentProbability),
    /// Jaeger remote sampling: per-operation probabilities polled from a
    /// sampling server (see [`RemoteSampler`](crate::trace::remote::RemoteSampler)).
    #[cfg(feature = "jaeger-remote")]
    JaegerRemote(crate::trace::remote::RemoteSampler),
    /// A sampler whose probability is lowered (consistently, recorded in
    /// `th`) while the export pipeline is overloaded. Built with
    /// [`LoadShedding::builder`](crate::trace::load_shedding::LoadShedding::builder).
    LoadShedding(Arc<crate::trace::load_shedding::LoadShedding>),
    /// Follow the parent's decision; use delegates for each parent situation.
    ParentBased(Box<ParentBased>),
    /// A user-supplied policy.
    Custom(Arc<dyn ShouldSample>),
}

impl Default for Sampler {
    /// `parentbased_always_on`, the OpenTelemetry default.
    fn default() -> Self {
        Sampler::parent_based(Sampler::AlwaysOn)
    }
}

/// Delegates of [`Sampler::ParentBased`].
#[derive(Clone, Debug)]
pub struct ParentBased {
    /// For spans without a (valid) parent.
    pub root: Sampler,
    /// Remote parent, sampled (default: `AlwaysOn`).
    pub remote_parent_sampled: Sampler,
    /// Remote parent, not sampled (default: `AlwaysOff`).
    pub remote_parent_not_sampled: Sampler,
    /// Local parent, sampled (default: `AlwaysOn`).
    pub local_parent_sampled: Sampler,
    /// Local parent, not sampled (default: `AlwaysOff`).
    pub local_parent_not_sampled: Sampler,
}

impl ParentBased {
    /// Default delegates with `root` for root spans.
    pub fn new(root: Sampler) -> Self {
        ParentBased {
            root,
            remote_parent_sampled: Sampler::AlwaysOn,
            remote_parent_not_sampled: Sampler::AlwaysOff,
            local_parent_sampled: Sampler::AlwaysOn,
            local_parent_not_sampled: Sampler::AlwaysOff,
        }
    }
    /// Sets the delegate for a sampled remote parent.
    pub fn with_remote_parent_sampled(mut self, s: Sampler) -> Self {
        self.remote_parent_sampled = s;
        self
    }
    /// Sets the delegate for an unsampled remote parent.
    pub fn with_remote_parent_not_sampled(mut self, s: Sampler) -> Self {
        self.remote_parent_not_sampled = s;
        self
    }
    /// Sets the delegate for a sampled local parent.
    pub fn with_local_parent_sampled(mut self, s: Sampler) -> Self {
        self.local_parent_sampled = s;
        self
    }
    /// Sets the delegate for an unsampled local parent.
    pub fn with_local_parent_not_sampled(mut self, s: Sampler) -> Self {
        self.local_parent_not_sampled = s;
        self
    }
}

impl ParentBased {
    /// The fixed answer of a parent-present delegate that follows the parent
    /// (`AlwaysOn`/`AlwaysOff`): then the parent's threshold is propagated
    /// (if consistent) instead of a new one being stated.
    #[inline]
    fn follows_parent(delegate: &Sampler) -> Option<bool> {
        match delegate {
            Sampler::AlwaysOn => Some(true),
            Sampler::AlwaysOff => Some(false),
            _ => None,
        }
    }

    /// The delegate for this parent situation.
    #[inline]
    fn delegate(&self, parent: Option<&SpanContext>) -> &Sampler {
        match parent {
            None => &self.root,
            Some(pc) => match (pc.is_remote(), pc.is_sampled()) {
                (true, true) => &self.remote_parent_sampled,
                (true, false) => &self.remote_parent_not_sampled,
                (false, true) => &self.local_parent_sampled,
                (false, false) => &self.local_parent_not_sampled,
            },
        }
    }
}

impl From<ParentBased> for Sampler {
    fn from(p: ParentBased) -> Self {
        Sampler::ParentBased(Box::new(p))
    }
}

/// The trace-id ratio rule, identical to `opentelemetry_sdk` 0.33's
/// `TraceIdRatioBased` so that the SDK and the collector's head sampler agree.
///
/// The lower 8 bytes of the trace id, read big-endian and shifted right by one
/// (63 random bits), are compared with `ratio * 2^63`: sampled when strictly
/// below. `ratio >= 1` samples everything, `ratio <= 0` (or NaN) nothing.
/// Because the threshold grows with `ratio`, a trace kept at rate `r` is kept
/// at every rate above `r` (consistent decisions across services and rates).
///
/// ```
/// use ferrotrace::trace::sampler::trace_id_ratio_sampled;
/// let id = [0u8; 16];
/// assert!(trace_id_ratio_sampled(&id, 0.0001));
/// assert!(!trace_id_ratio_sampled(&[0xff; 16], 0.9999));
/// ```
#[inline]
pub fn trace_id_ratio_sampled(trace_id_bytes: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    // `as` saturates and maps NaN to 0, which samples nothing.
    let upper = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id_bytes[8..]);
    (u64::from_be_bytes(low) >> 1) < upper
}

impl Sampler {
    /// `ParentBased` with default delegates and `root` for root spans.
    pub fn parent_based(root: Sampler) -> Self {
        ParentBased::new(root).into()
    }

    /// A [`Sampler::ConsistentProbability`] keeping `probability` of traces.
    pub fn consistent_probability(probability: f64) -> Self {
        Sampler::ConsistentProbability(ConsistentProbability::new(probability))
    }

    /// The sampler named by `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
    /// (`always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off`, `parentbased_traceidratio`,
    /// `consistent_probability`, `parentbased_consistent_probability`,
    /// `jaeger_remote`, `parentbased_jaeger_remote`; default
    /// `parentbased_always_on`). Invalid values fall back to the default and are
    /// reported through diagnostics.
    pub fn from_env() -> Self {
        Self::from_env_for_service(None)
    }

    /// [`from_env`](Self::from_env) for a provider whose `service.name` is
    /// known (the remote sampler asks for that service's strategy).
    pub(crate) fn from_env_for_service(service: Option<&str>) -> Self {
        let name = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        Self::from_config_for_service(&name, arg.as_deref(), service)
    }

    /// The sampler for an `OTEL_TRACES_SAMPLER` name and optional argument.
    /// A remote sampler asks for the service `OTEL_SERVICE_NAME` (or
    /// `OTEL_RESOURCE_ATTRIBUTES`) names.
    pub fn from_config(name: &str, arg: Option<&str>) -> Self {
        Self::from_config_for_service(name, arg, None)
    }

    fn from_config_for_service(name: &str, arg: Option<&str>, service: Option<&str>) -> Self {
        #[cfg(feature = "jaeger-remote")]
        let remote = || {
            let from_env;
            let service = match service {
                Some(s) => s,
                None => {
                    from_env = crate::trace::provider::resource_from_env()
                        .get("service.name")
                        .and_then(|v| match v {
                            crate::attributes::Value::String(s) => Some(s.as_str().to_string()),
                            _ => None,
                        })
                        .unwrap_or_else(|| "unknown_service".into());
                    &from_env
                }
            };
            crate::trace::remote::RemoteSampler::from_arg(arg, service)
        };
        #[cfg(not(feature = "jaeger-remote"))]
        let _ = service;
        let ratio = || match arg.map(str::trim) {
            None | Some("") => 1.0,
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    super::diagnostics::report(super::diagnostics::Diagnostic::Config(format!(
                        "OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio in [0, 1]; using 1.0"
                    )));
                    1.0
                }
            },
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatioBased(ratio()),
            "parentbased_always_off" => Sampler::parent_based(Sampler::AlwaysOff),
            "parentbased_traceidratio" => {
                Sampler::parent_based(Sampler::TraceIdRatioBased(ratio()))
            }
            "consistent_probability" => Sampler::consistent_probability(ratio()),
            "parentbased_consistent_probability" => {
                Sampler::parent_based(Sampler::consistent_probability(ratio()))
            }
            #[cfg(feature = "jaeger-remote")]
            "jaeger_remote" => Sampler::JaegerRemote(remote()),
            #[cfg(feature = "jaeger-remote")]
            "parentbased_jaeger_remote" => Sampler::parent_based(Sampler::JaegerRemote(remote())),
            #[cfg(not(feature = "jaeger-remote"))]
            "jaeger_remote" | "parentbased_jaeger_remote" => {
                super::diagnostics::report(super::diagnostics::Diagnostic::Config(format!(
                    "OTEL_TRACES_SAMPLER={name:?} needs the ferrotrace cargo feature `jaeger-remote`; using parentbased_always_on"
                )));
                Sampler::default()
            }
            "" | "parentbased_always_on" => Sampler::parent_based(Sampler::AlwaysOn),
            other => {
                super::diagnostics::report(super::diagnostics::Diagnostic::Config(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not supported; using parentbased_always_on"
                )));
                Sampler::default()
            }
        }
    }

    /// The decision of a built-in sampler that adds no attributes and keeps
    /// the parent's trace state, from the parent and the trace id alone: no
    /// [`SamplingResult`] is built, and the span's name, attributes and links
    /// are not needed, so callers can decide before building them. `None`
    /// when the decision needs the span's details ([`Sampler::Custom`], the
    /// remote sampler's per-operation rates) or changes the trace state (a
    /// threshold to record or erase); then [`Sampler::decide`] must be asked.
    /// `name` is the span name when the caller already has it: the remote
    /// sampler can then answer a plain drop here too. `name_is_static`: the
    /// name is a `&'static str` (the span name's `Cow` was borrowed), which
    /// the remote sampler's per-thread memo then recognises by its address;
    /// `true` for a name that can be freed would let a later name at the
    /// same address be taken for it.
    /// [`Sampler::builtin_decision`] with the default samplers' common case
    /// answered inline, without a call: `AlwaysOn` / `AlwaysOff`, directly or
    /// as the [`ParentBased`] delegate for this parent, when the parent (if
    /// any) carries no trace state (so no `th` threshold can be involved).
    /// The remote sampler (directly or as the delegate) answers its complete
    /// decision here, with the trace state to record (`None` keeps the
    /// parent's): its strategy is read through the per-thread cache, and a
    /// second visit for [`Sampler::decide`] was most of what a kept span cost
    /// beyond the static sampler. Otherwise the answer is `builtin_decision`'s,
    /// with no trace state change.
    #[inline]
    pub(crate) fn quick_decision(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: Option<&str>,
        name_is_static: bool,
    ) -> Option<(SamplingDecision, Option<TraceState>)> {
        let s = match self {
            Sampler::ParentBased(p) => p.delegate(parent),
            s => s,
        };
        if parent.is_none_or(|p| p.trace_state().is_empty()) {
            match s {
                Sampler::AlwaysOn => return Some((SamplingDecision::RecordAndSample, None)),
                Sampler::AlwaysOff => return Some((SamplingDecision::Drop, None)),
                _ => {}
            }
        }
        // A delegate that is not `AlwaysOn`/`AlwaysOff` decides alone (as in
        // `decide`), so the remote sampler's decision is the whole answer.
        #[cfg(feature = "jaeger-remote")]
        if let (Sampler::JaegerRemote(r), Some(name)) = (s, name) {
            return r.early_decision(parent, trace_id, name, name_is_static);
        }
        #[cfg(not(feature = "jaeger-remote"))]
        let _ = name_is_static;
        self.builtin_decision(parent, trace_id, name)
            .map(|d| (d, None))
    }

    /// [`quick_decision`](Self::quick_decision) with the span's name, for a
    /// sampler that could not decide without it (a lazily started span
    /// named after that answer). Out of line: each inlined copy of
    /// `quick_decision` makes the inliner less willing to inline the others
    /// into the tracer's hot start paths.
    #[cfg(feature = "http")]
    #[inline(never)]
    // The `Cow`'s variant says whether the name is `'static`.
    #[allow(clippy::ptr_arg)]
    pub(crate) fn decision_by_name(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &std::borrow::Cow<'static, str>,
    ) -> Option<(SamplingDecision, Option<TraceState>)> {
        let is_static = matches!(name, std::borrow::Cow::Borrowed(_));
        self.quick_decision(parent, trace_id, Some(name), is_static)
    }

    #[inline]
    // Without the remote sampler `name` is only passed down to delegates.
    #[cfg_attr(not(feature = "jaeger-remote"), allow(clippy::only_used_in_recursion))]
    pub(crate) fn builtin_decision(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: Option<&str>,
    ) -> Option<SamplingDecision> {
        use SamplingDecision::*;
        match self {
            Sampler::AlwaysOn => (!parent_has_th(parent)).then_some(RecordAndSample),
            Sampler::AlwaysOff => (!parent_has_th(parent)).then_some(Drop),
            Sampler::TraceIdRatioBased(r) => {
                if parent_has_th(parent) {
                    return None;
                }
                Some(if trace_id_ratio_sampled(&trace_id.to_bytes(), *r) {
                    RecordAndSample
                } else {
                    Drop
                })
            }
            Sampler::ConsistentProbability(c) => c.quick_drop(parent, trace_id).map(|()| Drop),
            Sampler::ParentBased(p) => {
                let delegate = p.delegate(parent);
                match (parent, ParentBased::follows_parent(delegate)) {
                    (Some(pc), Some(sampled)) => (parent_based_update(pc, sampled, trace_id)
                        == ThUpdate::Keep)
                        .then_some(if sampled { RecordAndSample } else { Drop }),
                    _ => delegate.builtin_decision(parent, trace_id, name),
                }
            }
            Sampler::Custom(_) => None,
            #[cfg(feature = "jaeger-remote")]
            Sampler::JaegerRemote(r) => name.and_then(|n| r.quick_drop(parent, trace_id, n)),
            Sampler::LoadShedding(l) => {
                let inner = l.inner().builtin_decision(parent, trace_id, name);
                // Shedding can only turn a keep into a drop (and rewrite th).
                if l.level() == 0
                    || inner == Some(Drop)
                    || !crate::trace::load_shedding::LoadShedding::applies(parent)
                {
                    inner
                } else {
                    None
                }
            }
        }
    }

    /// The full decision: attributes and the trace state to record.
    /// Allocation-free for the built-in samplers unless a threshold is recorded
    /// or erased.
    #[inline]
    pub(crate) fn decide(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        use SamplingDecision::*;
        let with_state = |sampled: bool, trace_state: Option<TraceState>| SamplingResult {
            decision: if sampled { RecordAndSample } else { Drop },
            attributes: Vec::new(),
            trace_state,
        };
        match self {
            // Probability 1: a parent's threshold no longer describes the
            // span, so th:0 replaces it (a root keeps no trace state: its
            // adjusted count, 1, is also what an absent threshold means).
            Sampler::AlwaysOn => with_state(
                true,
                if parent_has_th(parent) {
                    updated_state(parent, ThUpdate::Set(Threshold::ALWAYS_SAMPLE), None)
                } else {
                    None
                },
            ),
            Sampler::AlwaysOff => with_state(false, updated_state(parent, ThUpdate::Erase, None)),
            Sampler::TraceIdRatioBased(r) => with_state(
                trace_id_ratio_sampled(&trace_id.to_bytes(), *r),
                updated_state(parent, ThUpdate::Erase, None),
            ),
            Sampler::ConsistentProbability(c) => {
                let (sampled, ts) = c.decide(parent, trace_id);
                with_state(sampled, ts)
            }
            Sampler::ParentBased(p) => {
                let delegate = p.delegate(parent);
                match (parent, ParentBased::follows_parent(delegate)) {
                    (Some(pc), Some(sampled)) => with_state(
                        sampled,
                        updated_state(parent, parent_based_update(pc, sampled, trace_id), None),
                    ),
                    _ => delegate.decide(parent, trace_id, name, kind, attributes, links),
                }
            }
            Sampler::Custom(s) => s.should_sample(parent, trace_id, name, kind, attributes, links),
            #[cfg(feature = "jaeger-remote")]
            Sampler::JaegerRemote(r) => r.decide(parent, trace_id, name),
            Sampler::LoadShedding(l) => {
                let inner = l
                    .inner()
                    .decide(parent, trace_id, name, kind, attributes, links);
                l.shed(parent, trace_id, inner)
            }
        }
    }
}

impl ShouldSample for Sampler {
    fn should_sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        self.decide(parent, trace_id, name, kind, attributes, links)
    }
}
