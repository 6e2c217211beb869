//! What the router role counts, registered by `crate::route` when the
//! collector runs as a router.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::exposition::{Collector, EncodeResult, Families, MetricType};
use super::CounterVec;

/// What the router role (`crate::route`) counts. Backends are labelled by
/// their configured (or resolved) `host:port`.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// Spans a backend acknowledged, by backend.
    pub forwarded: CounterVec,
    /// Spans a backend acknowledged but rejected as invalid (OTLP partial success), by backend.
    pub rejected: CounterVec,
    /// Forward requests that failed, by `backend` and gRPC `code` (joined by [`ROUTE_LABEL_SEP`]).
    pub forward_failures: CounterVec,
    /// Failed `/readyz` checks, by backend.
    pub health_failures: CounterVec,
    /// Backends known (configured and resolved).
    pub backends: AtomicU64,
    /// Backends in the ring (healthy).
    pub ring_size: AtomicU64,
    /// Traces whose spans went to a different backend than their earlier
    /// spans (a membership change between them), among recent traces.
    pub split_traces: AtomicU64,
    /// Acknowledged spans of a retried batch forgotten before the retry (sent again).
    pub acked_forgotten: AtomicU64,
    /// Failed resolutions of `route.dns_name`.
    pub dns_failures: AtomicU64,
}

/// Separates the two labels of [`RouteMetrics::forward_failures`]' keys.
pub const ROUTE_LABEL_SEP: char = '\u{1f}';

impl Collector for RouteMetrics {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> EncodeResult {
        let f = &mut Families::new(encoder);
        for (name, help, v) in [
            (
                "ferrotrace_route_forwarded_spans_total",
                "Spans forwarded to and acknowledged by a backend.",
                &self.forwarded,
            ),
            (
                "ferrotrace_route_rejected_spans_total",
                "Forwarded spans a backend rejected as invalid (partial success); not retried.",
                &self.rejected,
            ),
            (
                "ferrotrace_route_health_check_failures_total",
                "Failed GET /readyz checks of a backend.",
                &self.health_failures,
            ),
        ] {
            v.encode(f, name, help, "backend")?;
        }
        let failures = self.forward_failures.snapshot();
        f.family(
            "ferrotrace_route_forward_failures_total",
            MetricType::Counter,
            "Forward requests a backend did not acknowledge (retried from the WAL), by gRPC code.",
            failures.iter().map(|(k, n)| {
                let (b, code) = k.split_once(ROUTE_LABEL_SEP).unwrap_or((k, ""));
                ([("backend", b), ("code", code)], *n)
            }),
        )?;
        for (name, kind, help, v) in [
            ("ferrotrace_route_backends", MetricType::Gauge, "Backends known (configured or resolved).", &self.backends),
            ("ferrotrace_route_ring_size", MetricType::Gauge, "Backends in the ring (passing health checks).", &self.ring_size),
            ("ferrotrace_route_split_traces_total", MetricType::Counter, "Traces whose spans went to another backend than their earlier spans because the ring changed (among the last route.recent_traces traces).", &self.split_traces),
            ("ferrotrace_route_acked_forgotten_total", MetricType::Counter, "Acknowledged spans of a retried batch forgotten before the retry (route.acked_spans), so sent again.", &self.acked_forgotten),
            ("ferrotrace_route_dns_failures_total", MetricType::Counter, "Failed resolutions of route.dns_name.", &self.dns_failures),
        ] {
            f.single(name, kind, help, v.load(Relaxed))?;
        }
        Ok(())
    }
}
