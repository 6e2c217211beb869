//! Internal diagnostics: problems the SDK itself notices (an export that
//! failed, the circuit breaker opening or closing, spans dropped because the
//! queue was full, a span never ended, a bad environment variable). They go
//! to one process-wide hook — by default a rate-limited line on stderr —
//! never through spans: a diagnostic cannot feed back into the telemetry
//! pipeline. The hook runs with instrumentation suppressed on the calling
//! thread, so a hook that logs through `tracing` does not create spans either.
//!
//! `OTEL_LOG_LEVEL` (`none`, `error`, `warn`, `info`, `debug`; default
//! `info`) or [`set_level`] chooses which diagnostics are reported at all.
//!
//! ```
//! use ferrotrace::trace::diagnostics::{self, Diagnostic, Level};
//! diagnostics::set_hook(|d: &Diagnostic| {
//!     // e.g. forward to your logger; `d` also has structured fields.
//!     if d.level() <= Level::Warn {
//!         eprintln!("telemetry: {d}");
//!     }
//! });
//! # diagnostics::reset_hook();
//! ```

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::export::stats::BreakerState;
use crate::ids::{SpanId, TraceId};

/// How serious a diagnostic is. Ordered: `Error < Warn < Info < Debug`, so
/// "at most `Warn`" means errors and warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Telemetry is being lost (an export failed, the breaker opened).
    Error,
    /// Something is wrong but telemetry still flows, or a default was used.
    Warn,
    /// A state change worth knowing (the breaker is probing or closed again).
    Info,
    /// Detail for troubleshooting.
    Debug,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

/// Which diagnostics are reported: none, or those at most as verbose as a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LevelFilter {
    /// Nothing is reported (`OTEL_LOG_LEVEL=none`).
    Off,
    /// Diagnostics at this level or more serious.
    Max(Level),
}

impl LevelFilter {
    /// Parses an `OTEL_LOG_LEVEL` value (case-insensitive): `none`/`off`,
    /// `error`, `warn`/`warning`, `info`, `debug` (`verbose`, `trace` and
    /// `all` mean `debug`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => LevelFilter::Off,
            "error" => LevelFilter::Max(Level::Error),
            "warn" | "warning" => LevelFilter::Max(Level::Warn),
            "info" => LevelFilter::Max(Level::Info),
            "debug" | "verbose" | "trace" | "all" => LevelFilter::Max(Level::Debug),
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            LevelFilter::Off => 0,
            LevelFilter::Max(Level::Error) => 1,
            LevelFilter::Max(Level::Warn) => 2,
            LevelFilter::Max(Level::Info) => 3,
            LevelFilter::Max(Level::Debug) => 4,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => LevelFilter::Off,
            1 => LevelFilter::Max(Level::Error),
            2 => LevelFilter::Max(Level::Warn),
            4 => LevelFilter::Max(Level::Debug),
            _ => LevelFilter::Max(Level::Info),
        }
    }

    /// True if a diagnostic at `level` passes.
    pub fn allows(self, level: Level) -> bool {
        match self {
            LevelFilter::Off => false,
            LevelFilter::Max(max) => level <= max,
        }
    }
}

/// Why spans were dropped before export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The batch processor's queue was full.
    QueueFull,
}

/// An export that failed: what was lost, where it was going, and what most
/// likely fixes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFailure {
    /// The full URL the exporter sends to.
    pub endpoint: String,
    /// The protocol (`grpc`, `http/protobuf`, `http/json`, or another exporter's name).
    pub protocol: String,
    /// What went wrong (transport error, HTTP status or gRPC code with the server's message).
    pub error: String,
    /// Spans in the failed batch (dropped).
    pub spans: u64,
    /// The most likely fix, when the error points at one (e.g. a protocol
    /// sent to the other protocol's port).
    pub likely_fix: Option<String>,
}

/// Something the SDK wants an operator to know.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Diagnostic {
    /// A sampled span has been open longer than the configured age (reported once per span).
    UnendedSpan {
        /// Trace id of the span.
        trace_id: TraceId,
        /// Span id of the span.
        span_id: SpanId,
        /// Span name when it was a static string (dynamic names are not copied, to keep start cheap).
        name: Option<&'static str>,
        /// How long the span had been open when noticed.
        age: Duration,
    },
    /// A configuration value (environment variable or builder input) was invalid and a default was used.
    Config(String),
    /// A processor or exporter failed (exporters without their own report).
    Export(String),
    /// An OTLP (or other network) export failed; the batch was dropped.
    ExportFailed(ExportFailure),
    /// The exporter's circuit breaker changed state.
    Breaker {
        /// The endpoint the breaker guards.
        endpoint: String,
        /// The protocol used.
        protocol: String,
        /// The new state.
        state: BreakerState,
        /// How long it stays open (for [`BreakerState::Open`]).
        cooldown: Option<Duration>,
    },
    /// Spans were dropped before export (counted since the previous report).
    SpansDropped {
        /// Why.
        reason: DropReason,
        /// How many since the previous report of this kind.
        count: u64,
        /// The queue's capacity.
        capacity: usize,
    },
    /// A `from_global()` integration found no global tracer provider: nothing
    /// it traces is recorded until one is installed (reported once per integration).
    NoGlobalProvider {
        /// The integration's instrumentation scope (e.g. `ferrotrace.http`).
        scope: &'static str,
    },
    /// The remote sampler could not fetch (or rejected) a sampling strategy;
    /// the strategy in force stays (the initial sampler until one arrived).
    RemoteSamplingFailed {
        /// The URL polled.
        url: String,
        /// What went wrong.
        error: String,
        /// Failures counted so far by this sampler.
        failures: u64,
    },
    /// Load-based protection changed its level: the sampling probability is
    /// now multiplied by `2^-level`.
    LoadShedding {
        /// The new level.
        level: u8,
        /// True when it rose (pressure), false when it fell (recovery).
        raised: bool,
        /// Spans shed so far.
        spans_shed: u64,
    },
}

impl Diagnostic {
    /// How serious it is.
    pub fn level(&self) -> Level {
        match self {
            Diagnostic::UnendedSpan { .. } => Level::Warn,
            Diagnostic::Config(_) => Level::Warn,
            Diagnostic::Export(_) | Diagnostic::ExportFailed(_) => Level::Error,
            Diagnostic::Breaker { state, .. } => match state {
                BreakerState::Open => Level::Error,
                BreakerState::HalfOpen | BreakerState::Closed => Level::Info,
            },
            Diagnostic::SpansDropped { .. } => Level::Warn,
            Diagnostic::NoGlobalProvider { .. } => Level::Warn,
            Diagnostic::RemoteSamplingFailed { .. } => Level::Warn,
            Diagnostic::LoadShedding { raised, .. } => {
                if *raised {
                    Level::Warn
                } else {
                    Level::Info
                }
            }
        }
    }

    /// The rate-limiting class of the default stderr output: messages of
    /// one class share one budget.
    fn class(&self) -> usize {
        match self {
            Diagnostic::UnendedSpan { .. } => 0,
            Diagnostic::Config(_) => 1,
            Diagnostic::Export(_) | Diagnostic::ExportFailed(_) => 2,
            Diagnostic::Breaker { .. } => 3,
            Diagnostic::SpansDropped { .. } => 4,
            Diagnostic::NoGlobalProvider { .. } => 5,
            Diagnostic::RemoteSamplingFailed { .. } => 6,
            Diagnostic::LoadShedding { .. } => 7,
        }
    }
}

const CLASSES: usize = 8;

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diagnostic::UnendedSpan {
                trace_id,
                span_id,
                name,
                age,
            } => write!(
                f,
                "span {} (trace {trace_id}, span {span_id}) not ended after {age:?}: check that every started span is ended or dropped",
                name.unwrap_or("<dynamic name>")
            ),
            Diagnostic::Config(m) => write!(f, "configuration: {m}"),
            Diagnostic::Export(m) => write!(f, "export: {m}"),
            Diagnostic::ExportFailed(e) => {
                write!(
                    f,
                    "export to {} ({}) failed, {} spans dropped: {}",
                    e.endpoint, e.protocol, e.spans, e.error
                )?;
                if let Some(fix) = &e.likely_fix {
                    write!(f, ". Likely fix: {fix}")?;
                }
                Ok(())
            }
            Diagnostic::Breaker {
                endpoint,
                protocol,
                state,
                cooldown,
            } => match state {
                BreakerState::Open => write!(
                    f,
                    "circuit breaker for {endpoint} ({protocol}) opened after repeated export failures: batches are dropped without a network attempt for {:?}, then one probe is sent",
                    cooldown.unwrap_or_default()
                ),
                BreakerState::HalfOpen => write!(
                    f,
                    "circuit breaker for {endpoint} ({protocol}) half-open: sending one probe export"
                ),
                BreakerState::Closed => write!(
                    f,
                    "circuit breaker for {endpoint} ({protocol}) closed: exports succeed again"
                ),
            },
            Diagnostic::SpansDropped {
                reason: DropReason::QueueFull,
                count,
                capacity,
            } => write!(
                f,
                "{count} spans dropped because the batch processor's queue ({capacity} spans) was full: the exporter cannot keep up (see export errors), or raise OTEL_BSP_MAX_QUEUE_SIZE, or sample less (OTEL_TRACES_SAMPLER)"
            ),
            Diagnostic::NoGlobalProvider { scope } => write!(
                f,
                "{scope}: from_global() found no global tracer provider, so nothing it traces is recorded (context is still propagated): call ferrotrace::init() or trace::global::set_tracer_provider at startup, or build the layer with ::new(provider.tracer(..))"
            ),
            Diagnostic::RemoteSamplingFailed { url, error, failures } => write!(
                f,
                "remote sampling strategy from {url} not updated ({failures} failures so far): {error}; the strategy in force stays. Check the endpoint in OTEL_TRACES_SAMPLER_ARG (endpoint=http://host:5778) and that the sampling server is up"
            ),
            Diagnostic::LoadShedding {
                level,
                raised: true,
                spans_shed,
            } => write!(
                f,
                "export pipeline overloaded (batch queue dropping spans or circuit breaker open): sampling lowered to 1/{} of the configured probability ({spans_shed} spans shed so far); the threshold is recorded in tracestate so counts stay right",
                1u64 << level
            ),
            Diagnostic::LoadShedding {
                level,
                raised: false,
                ..
            } => write!(
                f,
                "export pressure eased: sampling raised to 1/{} of the configured probability",
                1u64 << level
            ),
        }
    }
}

/// A diagnostics sink.
pub type DiagnosticsHook = Arc<dyn Fn(&Diagnostic) + Send + Sync>;

static HOOK: RwLock<Option<DiagnosticsHook>> = RwLock::new(None);

/// Not yet read from `OTEL_LOG_LEVEL`.
const LEVEL_UNSET: u8 = u8::MAX;
static LEVEL: AtomicU8 = AtomicU8::new(LEVEL_UNSET);

/// Installs the process-wide diagnostics hook (replacing the default, which
/// writes rate-limited lines to stderr). The hook receives every diagnostic
/// that passes the level filter, unthrottled; the SDK already aggregates the
/// frequent ones (at most one report per failed batch, dropped spans summed
/// per batch-processor wake-up).
pub fn set_hook(hook: impl Fn(&Diagnostic) + Send + Sync + 'static) {
    *HOOK.write() = Some(Arc::new(hook));
}

/// Restores the default hook (rate-limited stderr).
pub fn reset_hook() {
    *HOOK.write() = None;
}

/// Sets which diagnostics are reported (overrides `OTEL_LOG_LEVEL`).
pub fn set_level(filter: LevelFilter) {
    LEVEL.store(filter.to_u8(), Ordering::Relaxed);
}

/// The filter in force: [`set_level`]'s, else `OTEL_LOG_LEVEL`'s (read once),
/// else `info`.
pub fn level() -> LevelFilter {
    let v = LEVEL.load(Ordering::Relaxed);
    if v != LEVEL_UNSET {
        return LevelFilter::from_u8(v);
    }
    let (filter, bad) = match std::env::var("OTEL_LOG_LEVEL") {
        Ok(s) if !s.trim().is_empty() => match LevelFilter::parse(&s) {
            Some(f) => (f, None),
            None => (LevelFilter::Max(Level::Info), Some(s)),
        },
        _ => (LevelFilter::Max(Level::Info), None),
    };
    // A concurrent set_level wins over the environment.
    let _ = LEVEL.compare_exchange(
        LEVEL_UNSET,
        filter.to_u8(),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    if let Some(bad) = bad {
        report(Diagnostic::Config(format!(
            "OTEL_LOG_LEVEL={bad:?} is not a level; using info (use none, error, warn, info or debug)"
        )));
    }
    LevelFilter::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// True if a diagnostic at `level` would be reported (lets callers skip
/// building an expensive message).
pub fn enabled(level: Level) -> bool {
    self::level().allows(level)
}

/// Reports a diagnostic through the hook, if its level passes the filter.
pub fn report(d: Diagnostic) {
    if !enabled(d.level()) {
        return;
    }
    // A hook that logs through `tracing` must not create spans.
    let _quiet = crate::integrations::suppress_instrumentation();
    let hook = HOOK.read().clone();
    match hook {
        Some(h) => h(&d),
        None => STDERR.emit(&d, Instant::now()),
    }
}

/// Shortest interval between two stderr lines of one class; what arrives in
/// between is counted and mentioned in the next line.
pub const STDERR_MIN_INTERVAL: Duration = Duration::from_secs(10);

struct RateLimiter {
    classes: Mutex<[(Option<Instant>, u64); CLASSES]>,
}

static STDERR: RateLimiter = RateLimiter {
    classes: Mutex::new([(None, 0); CLASSES]),
};

impl RateLimiter {
    /// The line to print for `d` at `now`, or `None` while its class is
    /// within its interval (then counted as suppressed).
    fn line(&self, d: &Diagnostic, now: Instant) -> Option<String> {
        let suppressed = {
            let mut classes = self.classes.lock();
            let (last, suppressed) = &mut classes[d.class()];
            if last.is_some_and(|t| now.saturating_duration_since(t) < STDERR_MIN_INTERVAL) {
                *suppressed += 1;
                return None;
            }
            *last = Some(now);
            std::mem::take(suppressed)
        };
        let mut line = format!("ferrotrace {}: {d}", d.level().as_str());
        if suppressed > 0 {
            line.push_str(&format!(
                " ({suppressed} similar messages suppressed in the last {}s)",
                STDERR_MIN_INTERVAL.as_secs()
            ));
        }
        Some(line)
    }

    fn emit(&self, d: &Diagnostic, now: Instant) {
        if let Some(line) = self.line(d, now) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(n: u64) -> Diagnostic {
        Diagnostic::ExportFailed(ExportFailure {
            endpoint: "http://localhost:4317/v1/traces".into(),
            protocol: "http/protobuf".into(),
            error: "HTTP 404".into(),
            spans: n,
            likely_fix: Some("use port 4318".into()),
        })
    }

    #[test]
    fn stderr_lines_are_rate_limited_per_class_and_count_what_was_suppressed() {
        let rl = RateLimiter {
            classes: Mutex::new([(None, 0); CLASSES]),
        };
        let t0 = Instant::now();
        let first = rl.line(&failure(1), t0).unwrap();
        assert!(first.starts_with("ferrotrace ERROR: export to http://localhost:4317/v1/traces (http/protobuf) failed, 1 spans dropped: HTTP 404. Likely fix: use port 4318"), "{first}");
        for i in 0..5 {
            assert!(rl.line(&failure(i), t0 + Duration::from_secs(1)).is_none());
        }
        // Another class has its own budget.
        assert!(rl
            .line(&Diagnostic::Config("x".into()), t0 + Duration::from_secs(1))
            .is_some());
        let next = rl.line(&failure(9), t0 + STDERR_MIN_INTERVAL).unwrap();
        assert!(
            next.ends_with("(5 similar messages suppressed in the last 10s)"),
            "{next}"
        );
        assert!(rl.line(&failure(9), t0 + STDERR_MIN_INTERVAL).is_none());
    }

    #[test]
    fn levels_parse_and_filter() {
        assert_eq!(LevelFilter::parse("NONE"), Some(LevelFilter::Off));
        assert_eq!(
            LevelFilter::parse(" warn "),
            Some(LevelFilter::Max(Level::Warn))
        );
        assert_eq!(
            LevelFilter::parse("verbose"),
            Some(LevelFilter::Max(Level::Debug))
        );
        assert_eq!(LevelFilter::parse("loud"), None);
        let warn = LevelFilter::Max(Level::Warn);
        assert!(warn.allows(Level::Error) && warn.allows(Level::Warn));
        assert!(!warn.allows(Level::Info));
        assert!(!LevelFilter::Off.allows(Level::Error));
        for f in [
            LevelFilter::Off,
            LevelFilter::Max(Level::Error),
            LevelFilter::Max(Level::Warn),
            LevelFilter::Max(Level::Info),
            LevelFilter::Max(Level::Debug),
        ] {
            assert_eq!(LevelFilter::from_u8(f.to_u8()), f);
        }
    }
}
