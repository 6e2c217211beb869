//! Jaeger remote sampling: a sampler whose strategy — one probability, a
//! rate limit, or per-operation probabilities with a lower bound — is
//! polled from a sampling server (`GET <endpoint>?service=NAME`, Jaeger's
//! JSON strategy response; the ferrotrace collector, a Jaeger collector or
//! agent, or the OpenTelemetry Collector's `jaegerremotesampling` extension).
//!
//! - Probabilities are applied with the consistent probability rule
//!   ([`consistent`](crate::trace::consistent)), so a kept span records
//!   `ot=th:..` and its adjusted count is known downstream. The
//!   per-operation lower bound (`defaultLowerBoundTracesPerSecond`) raises
//!   a quiet operation's probability instead of keeping spans by a token
//!   bucket, so the spans it keeps carry their threshold too (see
//!   `lower_bound.rs`). A span kept by a rate-limiting strategy has no known
//!   probability: its threshold is erased.
//! - Polling runs on the sampler's own thread (interval with jitter); span
//!   creation never waits for it. The hot path reads the current strategy
//!   through a per-thread cache validated by one atomic load and one
//!   comparison (a process-wide unique stamp per installed strategy): no
//!   lock, no shared reference-count traffic.
//! - Before the first strategy arrives the initial sampler decides; when the
//!   server is unreachable or answers badly the last good strategy stays in
//!   force. Failures are counted ([`RemoteSampler::stats`]) and reported
//!   through [`diagnostics`](crate::trace::diagnostics).
//! - Bounded: the response body (default 1 MiB), the operations kept
//!   (default 2,000), the request time (default 10 s).

mod cache;
mod compiled;
mod config;
mod current;
mod fxhash;
mod lower_bound;
mod poller;
pub mod strategy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::context::{SpanContext, TraceState};
use crate::ids::TraceId;
use crate::trace::sampler::{Sampler, SamplingDecision, SamplingResult};
use crate::trace::span_data::SpanKind;

use compiled::Compiled;
pub use config::{RemoteSamplerConfigError, DEFAULT_ENDPOINT};
use current::Current;

/// Default polling interval (the OpenTelemetry default for `jaeger_remote`).
pub const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_secs(60);
/// Default initial sampling probability before the first strategy arrives.
pub const DEFAULT_INITIAL_SAMPLING_RATE: f64 = 0.001;
/// Default largest response body accepted.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Default largest number of per-operation strategies kept (Jaeger clients' default).
pub const DEFAULT_MAX_OPERATIONS: usize = 2000;
/// Default time limit of one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default jitter: each wait is the interval ± this fraction, so a fleet
/// started together does not poll in lock step.
pub const DEFAULT_JITTER: f64 = 0.1;

/// Counters of a [`RemoteSampler`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteSamplerStats {
    /// Requests answered with a strategy that was applied.
    pub fetches: u64,
    /// Requests that failed (unreachable, timeout, non-200, too large, invalid JSON).
    pub fetch_failures: u64,
    /// Per-operation entries left out (duplicates, or beyond the maximum), summed over fetches.
    pub operations_dropped: u64,
    /// The most recent failure, if the last request failed.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    operations_dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// State shared by the sampler handles and the poller thread.
struct Shared {
    /// Distinguishes samplers in the per-thread caches (never reused).
    id: u64,
    /// The stamp of the strategy in force: taken anew ([`next_stamp`]) after
    /// every change, unique in the process, so one comparison with the
    /// per-thread cache's tells that the cached strategy is this sampler's
    /// current one (no separate sampler and generation checks).
    stamp: AtomicU64,
    current: Mutex<Arc<Compiled>>,
    counters: Counters,
    url: String,
}

impl Shared {
    fn install(&self, c: Compiled) {
        *self.current.lock() = Arc::new(c);
        // After the strategy: a thread that reads the new stamp then reads
        // the new strategy (a stamp read before it labels the new strategy
        // with the old stamp at worst, which the next call refreshes).
        self.stamp.store(next_stamp(), Ordering::Release);
    }

    fn new(id: u64, initial: Sampler, url: String) -> Shared {
        Shared {
            id,
            stamp: AtomicU64::new(next_stamp()),
            current: Mutex::new(Arc::new(Compiled::Initial(initial))),
            counters: Counters::default(),
            url,
        }
    }
}

/// Strategy stamps: never 0 (an empty slot) nor [`cache::IN_USE`].
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

fn next_stamp() -> u64 {
    NEXT_STAMP.fetch_add(1, Ordering::Relaxed)
}

/// Ends the poller when the last sampler handle is dropped.
struct Handle {
    shared: Arc<Shared>,
    _stop: crossbeam_channel::Sender<()>,
}

/// The Jaeger remote sampler. Cheap to clone (a handle); the poller thread
/// stops when the last clone is dropped. Use it as the root of
/// [`Sampler::ParentBased`] (`parentbased_jaeger_remote`) so children follow
/// their parent, as Jaeger clients do.
#[derive(Clone)]
pub struct RemoteSampler {
    /// The handle's `shared`, held here too so the hot path reaches the
    /// strategy stamp with one pointer fewer.
    shared: Arc<Shared>,
    handle: Arc<Handle>,
}

impl std::fmt::Debug for RemoteSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSampler")
            .field("url", &self.handle.shared.url)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures a [`RemoteSampler`].
#[derive(Clone, Debug)]
pub struct RemoteSamplerBuilder {
    service: String,
    endpoint: String,
    interval: Duration,
    jitter: f64,
    initial: Sampler,
    max_response_bytes: usize,
    max_operations: usize,
    request_timeout: Duration,
}

impl RemoteSampler {
    fn new(shared: Arc<Shared>, stop: crossbeam_channel::Sender<()>) -> RemoteSampler {
        RemoteSampler {
            shared: shared.clone(),
            handle: Arc::new(Handle {
                shared,
                _stop: stop,
            }),
        }
    }

    /// A builder for the service named `service` (the `service` query parameter).
    pub fn builder(service: impl Into<String>) -> RemoteSamplerBuilder {
        RemoteSamplerBuilder {
            service: service.into(),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            interval: DEFAULT_POLLING_INTERVAL,
            jitter: DEFAULT_JITTER,
            initial: Sampler::consistent_probability(DEFAULT_INITIAL_SAMPLING_RATE),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_operations: DEFAULT_MAX_OPERATIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The sampler `OTEL_TRACES_SAMPLER=jaeger_remote` selects:
    /// `OTEL_TRACES_SAMPLER_ARG` is `endpoint=..,pollingIntervalMs=..,initialSamplingRate=..`
    /// (each optional); invalid parts are reported and their defaults used.
    pub(crate) fn from_arg(arg: Option<&str>, service: &str) -> RemoteSampler {
        let (builder, problems) = config::builder_from_arg(arg.unwrap_or(""), service);
        for p in problems {
            crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::Config(
                p.to_string(),
            ));
        }
        builder.build_or_report()
    }

    /// The URL polled (with the `service` query).
    pub fn url(&self) -> &str {
        &self.handle.shared.url
    }

    /// The counters.
    pub fn stats(&self) -> RemoteSamplerStats {
        let c = &self.handle.shared.counters;
        RemoteSamplerStats {
            fetches: c.fetches.load(Ordering::Relaxed),
            fetch_failures: c.fetch_failures.load(Ordering::Relaxed),
            operations_dropped: c.operations_dropped.load(Ordering::Relaxed),
            last_error: c.last_error.lock().clone(),
        }
    }

    /// A description of the strategy in force (for logs and debug pages).
    pub fn description(&self) -> String {
        let current = self.handle.shared.current.lock().clone();
        match &*current {
            Compiled::Initial(s) => format!("JaegerRemoteSampler{{initial: {s:?}}}"),
            Compiled::Probabilistic(p) => {
                format!("JaegerRemoteSampler{{probabilistic: {}}}", p.probability)
            }
            Compiled::RateLimiting(l) => {
                format!("JaegerRemoteSampler{{rateLimiting: {}/s}}", l.per_second)
            }
            Compiled::PerOperation {
                default,
                operations,
                ..
            } => format!(
                "JaegerRemoteSampler{{perOperation: {} operations, default {}}}",
                operations.len(),
                default.probability.probability
            ),
        }
    }

    /// `Some(Drop)` when the span is dropped with no trace state change and
    /// no limiter involved (the common unsampled span), decided without
    /// building a [`SamplingResult`]; `None` when the full decision is needed.
    #[inline]
    pub(crate) fn quick_drop(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
    ) -> Option<SamplingDecision> {
        self.with_current(|c| c.quick_drop(parent, trace_id, name))
            .then_some(SamplingDecision::Drop)
    }

    /// The complete decision for a span named `name` and the trace state to
    /// record (`None` keeps the parent's), taken in one visit to the
    /// per-thread cache; `None` before the first strategy (then
    /// [`decide`](Self::decide) asks the initial sampler). The tracer asks
    /// this first and does not ask again, so a lower bound counts each span once.
    /// `is_static`: `name` is a `&'static str` (see [`Sampler::quick_decision`]).
    #[inline]
    pub(crate) fn early_decision(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        is_static: bool,
    ) -> Option<(SamplingDecision, Option<TraceState>)> {
        // A root span under the literal name the thread decided last (the
        // common unsampled span): its drop is answered as a plain `bool`.
        // Answered by `decide` (one visit, the same instruction count), it
        // took ~5 ns more than the static sampler's drop in the `overhead`
        // bench's paired rounds; as a `bool` it takes the same time.
        if is_static
            && parent.is_none()
            && self.with_current(move |c| c.static_root_drop(trace_id, name))
        {
            return Some((SamplingDecision::Drop, None));
        }
        self.with_current(move |c| c.decide(parent, trace_id, name, is_static))
            .map(|(sampled, trace_state)| {
                (
                    if sampled {
                        SamplingDecision::RecordAndSample
                    } else {
                        SamplingDecision::Drop
                    },
                    trace_state,
                )
            })
    }

    /// The decision for a span named `name`.
    #[inline]
    pub(crate) fn decide(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
    ) -> SamplingResult {
        // Only the small (decision, trace state) pair crosses the per-thread
        // cache's closure; the initial sampler (before the first strategy)
        // decides outside it.
        let decided = self.with_current(|c| c.decide(parent, trace_id, name, false));
        match decided {
            Some((sampled, trace_state)) => SamplingResult {
                decision: if sampled {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                },
                attributes: Vec::new(),
                trace_state,
            },
            None => self.decide_initial(parent, trace_id, name),
        }
    }

    /// [`decide`](Self::decide) before the first strategy: the initial
    /// sampler's decision. Out of line, so the common path keeps a small
    /// frame.
    #[cold]
    #[inline(never)]
    fn decide_initial(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
    ) -> SamplingResult {
        let current = self.handle.shared.current.lock().clone();
        match &*current {
            Compiled::Initial(initial) => {
                initial.decide(parent, trace_id, name, SpanKind::Internal, &[], &[])
            }
            // A strategy arrived in between: decide with it.
            c => {
                let (sampled, trace_state) =
                    c.decide(parent, trace_id, name).unwrap_or((false, None));
                SamplingResult {
                    decision: if sampled {
                        SamplingDecision::RecordAndSample
                    } else {
                        SamplingDecision::Drop
                    },
                    attributes: Vec::new(),
                    trace_state,
                }
            }
        }
    }

    /// Runs `f` on the strategy in force, through the thread's cache
    /// (see [`cache::with_current`]).
    #[inline]
    fn with_current<T>(&self, f: impl Fn(&mut Current) -> T) -> T {
        cache::with_current(&self.shared, f)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl RemoteSamplerBuilder {
    /// The sampling server: a base URL (`http://host:5778`, then
    /// `/api/sampling` is requested) or a full URL with a path
    /// (`http://agent:5778/sampling`). Only `http` is supported.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }
    /// How often the strategy is fetched (default 60 s; at least 10 ms).
    pub fn with_polling_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }
    /// Each wait is the interval ± this fraction at random (0 to 0.5, default 0.1).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 0.5)
        };
        self
    }
    /// The sampler deciding until the first strategy arrives (default: a
    /// consistent probability sampler at 0.001).
    pub fn with_initial_sampler(mut self, sampler: Sampler) -> Self {
        self.initial = sampler;
        self
    }
    /// The largest response body accepted (default 1 MiB).
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }
    /// The most per-operation strategies kept (default 2,000); the rest use the default probability.
    pub fn with_max_operations(mut self, n: usize) -> Self {
        self.max_operations = n;
        self
    }
    /// The time limit of one request (default 10 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Validates the endpoint and starts the poller thread (the first
    /// request goes out at once).
    pub fn build(self) -> Result<RemoteSampler, RemoteSamplerConfigError> {
        let url = config::strategy_url(&self.endpoint, &self.service)?;
        let uri: http::Uri =
            url.parse().map_err(
                |e: http::uri::InvalidUri| RemoteSamplerConfigError::Endpoint {
                    endpoint: self.endpoint.clone(),
                    reason: e.to_string(),
                },
            )?;
        let shared = Arc::new(Shared::new(
            NEXT_ID.fetch_add(1, Ordering::Relaxed),
            self.initial.clone(),
            url,
        ));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        poller::start(
            poller::Poller {
                shared: shared.clone(),
                uri,
                interval: self.interval,
                jitter: self.jitter,
                max_response_bytes: self.max_response_bytes,
                max_operations: self.max_operations,
                timeout: self.request_timeout,
            },
            stop_rx,
        )
        .map_err(|e| RemoteSamplerConfigError::Thread(e.to_string()))?;
        Ok(RemoteSampler::new(shared, stop_tx))
    }

    /// [`build`](Self::build), or — when the configuration is invalid — a
    /// sampler that keeps the initial sampler and never polls, with the
    /// problem reported (environment configuration must not stop a service).
    pub(crate) fn build_or_report(self) -> RemoteSampler {
        let initial = self.initial.clone();
        match self.clone().build() {
            Ok(s) => s,
            Err(e) => {
                crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::Config(
                    format!("{e}; the remote sampler keeps its initial sampler and does not poll"),
                ));
                let (stop_tx, _) = crossbeam_channel::bounded::<()>(0);
                RemoteSampler::new(
                    Arc::new(Shared::new(
                        NEXT_ID.fetch_add(1, Ordering::Relaxed),
                        initial,
                        String::new(),
                    )),
                    stop_tx,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cache::{CACHE, CACHE_ENTRIES, HOT, IN_USE};
    use super::*;
    use crate::trace::remote::compiled::lookup;
    use crate::trace::remote::strategy::{PerOperation, StrategyResponse};

    fn sampler_with(response: StrategyResponse) -> RemoteSampler {
        let s = RemoteSampler::builder("t")
            .with_endpoint("ftp://not-polled")
            .build_or_report();
        s.handle.shared.install(Compiled::from_response(&response));
        s
    }

    fn per_op(keep: f64) -> StrategyResponse {
        StrategyResponse::PerOperation(PerOperation {
            default_probability: 0.0,
            default_lower_bound_per_second: 0.0,
            operations: vec![crate::trace::remote::strategy::OperationStrategy {
                operation: "op".into(),
                probability: keep,
            }],
            operations_dropped: 0,
        })
    }

    /// One thread alternating between more samplers than its cache holds,
    /// with strategies changing in between: every answer is the one of the
    /// sampler asked, with its current strategy.
    #[test]
    fn the_per_thread_cache_follows_samplers_and_strategy_changes() {
        let samplers: Vec<RemoteSampler> = (0..CACHE_ENTRIES + 2)
            .map(|i| sampler_with(per_op((i % 2) as f64)))
            .collect();
        let t = crate::ids::new_trace_id();
        for round in 0..4 {
            for (i, s) in samplers.iter().enumerate() {
                // Strategies flip every other round.
                let keep = (i + round / 2) % 2 == 1;
                assert_eq!(s.quick_drop(None, t, "op").is_some(), !keep, "{i} {round}");
                let sampled = s.decide(None, t, "op").decision == SamplingDecision::RecordAndSample;
                assert_eq!(sampled, keep, "{i} {round}");
            }
            if round == 1 {
                for (i, s) in samplers.iter().enumerate() {
                    s.handle
                        .shared
                        .install(Compiled::from_response(&per_op(((i + 1) % 2) as f64)));
                }
            }
        }
        CACHE.with(|c| assert!(c.borrow().0.len() <= CACHE_ENTRIES));
    }

    /// The tracer's one-visit decision (`Sampler::quick_decision`) is the
    /// full decision `Sampler::decide` gives, trace state included, for the
    /// remote sampler alone and as `ParentBased`'s root, with and without
    /// parents (sampled or not, random flag or not, with `ot=th` or another
    /// vendor's entry in the trace state).
    #[test]
    fn the_tracers_early_decision_is_the_full_decision() {
        use crate::context::{TraceFlags, TraceState};
        use crate::ids::SpanId;
        use crate::trace::sampler::ParentBased;
        let s = sampler_with(StrategyResponse::PerOperation(PerOperation {
            default_probability: 0.25,
            default_lower_bound_per_second: 0.0,
            operations: vec![
                crate::trace::remote::strategy::OperationStrategy {
                    operation: "op".into(),
                    probability: 0.5,
                },
                crate::trace::remote::strategy::OperationStrategy {
                    operation: "keep".into(),
                    probability: 1.0,
                },
            ],
            operations_dropped: 0,
        }));
        let parent = |flags: u8, remote: bool, ts: &str| {
            SpanContext::new(
                crate::ids::new_trace_id(),
                SpanId::from_bytes([1; 8]),
                TraceFlags::new(flags),
                remote,
                if ts.is_empty() {
                    TraceState::NONE
                } else {
                    TraceState::from_header(ts).unwrap()
                },
            )
        };
        let parents = [
            None,
            Some(parent(3, false, "")),
            Some(parent(2, true, "")),
            Some(parent(1, true, "")),
            Some(parent(3, true, "ot=th:8,vendor=x")),
            Some(parent(3, true, "ot=th:c;rv:00000000000000")),
            Some(parent(2, true, "vendor=x")),
        ];
        let samplers = [
            Sampler::JaegerRemote(s.clone()),
            Sampler::parent_based(Sampler::JaegerRemote(s.clone())),
            ParentBased::new(Sampler::JaegerRemote(s.clone()))
                .with_remote_parent_sampled(Sampler::JaegerRemote(s.clone()))
                .with_remote_parent_not_sampled(Sampler::JaegerRemote(s.clone()))
                .into(),
        ];
        let (mut kept, mut answered) = (0, 0);
        for (i, sampler) in samplers.iter().enumerate() {
            for p in &parents {
                for name in ["op", "keep", "other"] {
                    for _ in 0..64 {
                        let t = p
                            .as_ref()
                            .map_or_else(crate::ids::new_trace_id, |p| p.trace_id());
                        let full =
                            sampler.decide(p.as_ref(), t, name, SpanKind::Internal, &[], &[]);
                        // `None` (ask `decide`) only where an `AlwaysOn`/`AlwaysOff`
                        // delegate must rewrite the parent's `th`; never from the
                        // remote sampler itself.
                        let Some(early) = sampler.quick_decision(p.as_ref(), t, Some(name), true)
                        else {
                            assert!(i > 0 && p.is_some(), "{sampler:?} {p:?} {name}");
                            continue;
                        };
                        // The same name in a `String` (not `'static`): the same answer.
                        let owned = name.to_string();
                        let from_owned = sampler.quick_decision(p.as_ref(), t, Some(&owned), false);
                        assert_eq!(from_owned.as_ref(), Some(&early), "{name} owned");
                        assert_eq!(
                            early,
                            (full.decision, full.trace_state),
                            "{sampler:?} {p:?} {name}"
                        );
                        answered += 1;
                        kept += usize::from(early.0 == SamplingDecision::RecordAndSample);
                    }
                }
            }
        }
        assert!(
            kept > 0 && answered >= parents.len() * 3 * 64,
            "{kept} {answered}"
        );
    }

    /// A decision taken while another is running on the same thread (a
    /// diagnostics hook or a destructor starting a span) reads the strategy
    /// under the lock instead of borrowing the thread's entry twice, and
    /// answers the same; afterwards the hot slot serves again.
    #[test]
    fn a_reentrant_decision_answers_without_the_thread_cache() {
        let s = sampler_with(per_op(1.0));
        let t = crate::ids::new_trace_id();
        let keep = |s: &RemoteSampler| {
            s.decide(None, t, "op").decision == SamplingDecision::RecordAndSample
        };
        assert!(keep(&s));
        let (outer, inner) = s.with_current(|c| {
            let inner = keep(&s);
            HOT.with(|h| assert_eq!(h.stamp.get(), IN_USE));
            (c.decide(None, t, "op", true).map(|d| d.0), inner)
        });
        assert_eq!((outer, inner), (Some(true), true));
        let stamp = s.handle.shared.stamp.load(Ordering::Relaxed);
        HOT.with(|h| assert_eq!(h.stamp.get(), stamp));
        // A strategy change is seen at once.
        s.handle
            .shared
            .install(Compiled::from_response(&per_op(0.0)));
        assert!(!keep(&s));
    }

    /// With a lower bound every span is counted once, through the tracer's
    /// two questions (the quick drop, then the full decision).
    #[test]
    fn lower_bound_counts_each_span_once() {
        // One trace an hour: the whole test runs in one window.
        let s = sampler_with(StrategyResponse::PerOperation(PerOperation {
            default_probability: 0.0,
            default_lower_bound_per_second: 1e-9,
            operations: vec![],
            operations_dropped: 0,
        }));
        let before = crate::trace::remote::compiled::coarse_now_ns();
        for _ in 0..500 {
            let t = crate::ids::new_trace_id();
            if s.quick_drop(None, t, "op").is_none() {
                s.decide(None, t, "op");
            }
        }
        let compiled = s.handle.shared.current.lock().clone();
        let Compiled::PerOperation {
            default,
            operations,
            unlisted,
        } = &*compiled
        else {
            panic!("per-operation")
        };
        let seen = lookup(default, operations, unlisted, "op")
            .lower_bound
            .seen();
        let hour = 3_600_000_000_000;
        if before / hour == crate::trace::remote::compiled::coarse_now_ns() / hour {
            assert_eq!(seen, 500);
        } else {
            // The run crossed a window's end: only the last part counts.
            assert!(seen <= 500, "{seen}");
        }
    }
}
