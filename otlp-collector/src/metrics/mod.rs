//! The collector's self-metrics, served in the Prometheus text format at
//! `GET /metrics`. Counters are atomics (hot path) or small labelled maps
//! touched once per request or batch, never per span.
//!
//! - this file: the values ([`Core`]: every field the code increments) and
//!   [`Metrics`], the handle that owns them and the registry;
//! - [`exposition`]: the `prometheus-client` registry and text encoding;
//! - `families`: the families of the ingest path written from [`Core`];
//! - `process`: memory guard, connections, UDP listeners;
//! - `route`: the router role's counters.
//!
//! Areas that start later or may be absent (the retention tasks, the cold
//! tier, the router) register their own [`Collector`] with
//! [`Metrics::register`], so this module depends on none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

pub mod exposition;
mod families;
mod process;
mod route;

pub use exposition::{Collector, EncodeResult, Families, MetricType};
pub use process::{MemoryMetrics, NetMetrics, UdpCounters, UdpMetrics};
pub use route::{RouteMetrics, ROUTE_LABEL_SEP};

/// Where spans came in: one of these per receiver and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// OTLP over gRPC.
    OtlpGrpc = 0,
    /// OTLP over HTTP, protobuf body.
    OtlpHttpProto = 1,
    /// OTLP over HTTP, JSON body.
    OtlpHttpJson = 2,
    /// Zipkin v2 JSON over HTTP.
    ZipkinJson = 3,
    /// Replayed from the WAL at start.
    WalReplay = 4,
    /// Zipkin v2 protobuf over HTTP.
    ZipkinProto = 5,
    /// Zipkin v1 JSON over HTTP.
    ZipkinV1Json = 6,
    /// Jaeger gRPC `PostSpans`.
    JaegerGrpc = 7,
    /// Jaeger Thrift binary over HTTP.
    JaegerThriftHttp = 8,
    /// Jaeger agent UDP, Thrift compact.
    JaegerAgentCompact = 9,
    /// Jaeger agent UDP, Thrift binary.
    JaegerAgentBinary = 10,
}

impl Source {
    pub(crate) const ALL: [Source; 11] = [
        Source::OtlpGrpc,
        Source::OtlpHttpProto,
        Source::OtlpHttpJson,
        Source::ZipkinJson,
        Source::ZipkinProto,
        Source::ZipkinV1Json,
        Source::JaegerGrpc,
        Source::JaegerThriftHttp,
        Source::JaegerAgentCompact,
        Source::JaegerAgentBinary,
        Source::WalReplay,
    ];
    /// `(receiver, protocol)` labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Source::OtlpGrpc => ("otlp", "grpc"),
            Source::OtlpHttpProto => ("otlp", "http/protobuf"),
            Source::OtlpHttpJson => ("otlp", "http/json"),
            Source::ZipkinJson => ("zipkin", "http/json"),
            Source::WalReplay => ("wal", "replay"),
            Source::ZipkinProto => ("zipkin", "http/protobuf"),
            Source::ZipkinV1Json => ("zipkin", "http/json-v1"),
            Source::JaegerGrpc => ("jaeger", "grpc"),
            Source::JaegerThriftHttp => ("jaeger", "http/thrift"),
            Source::JaegerAgentCompact => ("jaeger", "udp/thrift-compact"),
            Source::JaegerAgentBinary => ("jaeger", "udp/thrift-binary"),
        }
    }
}

/// Per-source span counters.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Spans decoded from requests.
    pub received: AtomicU64,
    /// Spans written to the WAL and acknowledged.
    pub accepted: AtomicU64,
    /// Spans rejected as invalid (partial success).
    pub rejected: AtomicU64,
    /// Spans refused by backpressure (queue or WAL full).
    pub refused: AtomicU64,
    /// Requests that failed to decode or broke a limit.
    pub bad_requests: AtomicU64,
}

/// A labelled counter family touched at most once per request or batch.
#[derive(Debug, Default)]
pub struct CounterVec(Mutex<BTreeMap<String, u64>>);

impl CounterVec {
    /// Adds `n` to the series with this label value.
    pub fn add(&self, label: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.0.lock();
        match m.get_mut(label) {
            Some(v) => *v += n,
            None => {
                m.insert(label.to_string(), n);
            }
        }
    }
    /// Current value for a label (0 if never added).
    pub fn get(&self, label: &str) -> u64 {
        self.0.lock().get(label).copied().unwrap_or(0)
    }
    pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
        self.0.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Latency histogram with fixed buckets in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket alone (not cumulative): one increment each.
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        // Above the last bound the observation is only in `+Inf` (`count`).
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
    /// Writes the family `name` (buckets, `_sum` in seconds, `_count`).
    pub fn encode(&self, f: &mut Families, name: &str, help: &str) -> EncodeResult {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| (*b, c.load(Relaxed)))
            .collect();
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        f.histogram(name, help, sum, self.count.load(Relaxed), &buckets)
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Finer buckets for the parts of an acknowledgement (decode, the WAL
/// group's wait, write and fsync): the goal is a p99 under 10 ms, so the
/// parts are a few milliseconds or less and need sub-millisecond buckets to
/// tell where the time goes.
const ACK_PART_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

/// Every value the collector counts (reached through [`Metrics`]).
#[derive(Debug)]
pub struct Core {
    sources: [SourceCounters; 11],
    /// Spans dropped anywhere, by reason (`invalid`, `sampled_out`, `sink_rejected`, ...).
    pub dropped: CounterVec,
    /// Attributes dropped by the per-span limit.
    pub attributes_dropped: AtomicU64,
    /// Attribute values truncated by the length limit.
    pub attribute_values_truncated: AtomicU64,
    /// Rejected requests by HTTP status / gRPC code.
    pub requests_failed: CounterVec,
    /// Authentication failures by listener (`receiver`, `query`).
    pub auth_failures: CounterVec,
    /// Failed or timed-out TLS handshakes by listener.
    pub tls_handshake_failures: CounterVec,
    /// Spans waiting in the queue.
    pub queue_spans: AtomicU64,
    /// Estimated bytes waiting in the queue.
    pub queue_bytes: AtomicU64,
    /// Acknowledged spans kept in the WAL only, waiting to be read back into the queue.
    pub wal_only_spans: AtomicU64,
    /// Acknowledged records (requests) kept in the WAL only.
    pub wal_only_records: AtomicU64,
    /// Spans read back from the WAL into the queue after waiting there only.
    pub wal_only_read_back: AtomicU64,
    /// WAL-only records that could not be read back (left for the next start's replay).
    pub wal_only_read_errors: AtomicU64,
    /// Bytes in WAL segment files (shared with the size-retention families,
    /// which show the WAL beside the hot store).
    pub wal_bytes: Arc<AtomicU64>,
    /// WAL segment files.
    pub wal_segments: AtomicU64,
    /// `wal.max_bytes`: appends beyond it are refused.
    pub wal_max_bytes: AtomicU64,
    /// Bytes free (for the collector's user) on the WAL's file system, read
    /// every few seconds.
    pub wal_disk_free_bytes: AtomicU64,
    /// 1 when `/readyz` would answer 200, else 0.
    pub ready: AtomicU64,
    /// fsync calls on the WAL.
    pub wal_fsyncs: AtomicU64,
    /// WAL appends (records).
    pub wal_appends: AtomicU64,
    /// WAL segments deleted after every span was committed or dropped.
    pub wal_segments_deleted: AtomicU64,
    /// Rotations that created the next segment on the writer thread, its
    /// `fsync`s in the acknowledgements' way (no prepared spare).
    pub wal_rotations_unprepared: AtomicU64,
    /// Corrupt or torn WAL records skipped at replay.
    pub wal_corrupt_records: AtomicU64,
    /// WAL I/O failures by operation (`write`, `fsync`, `rotate`).
    pub wal_io_errors: CounterVec,
    /// Bytes of request bodies (as received and inflated) held by receivers now.
    pub inflight_bytes: AtomicU64,
    /// Sampling decisions by `stage:decision:reason`.
    pub sampling_decisions: CounterVec,
    /// Remote sampling API requests by outcome (pinned, default, bad_request).
    pub sampling_api_requests: CounterVec,
    /// Adaptive sampling: recomputations of the served rates.
    pub sampling_adaptive_recomputations: AtomicU64,
    /// Adaptive sampling: (service, operation) pairs whose rate is tracked now.
    pub sampling_adaptive_operations: AtomicU64,
    /// Adaptive sampling: root spans not counted because
    /// `sampling_api.adaptive.max_operations` pairs were already tracked.
    pub sampling_adaptive_dropped: AtomicU64,
    /// Adaptive sampling with `source = "store"`: failed store operations by
    /// `write`, `read`, `prune`.
    pub sampling_adaptive_store_errors: CounterVec,
    /// Adaptive sampling with `source = "store"`: distinct settings other
    /// than this collector's that collectors on the same store announced in
    /// the last window (0 when all agree).
    pub sampling_adaptive_settings_conflicts: AtomicU64,
    /// Adaptive sampling with `source = "store"`: collectors seen in the
    /// previous period whose counts of a period were not marked written by
    /// the time this collector stopped waiting and read (its strategy for
    /// that period may differ from theirs).
    pub sampling_adaptive_late_writers: AtomicU64,
    /// Spans written to the sink.
    pub sink_spans_written: AtomicU64,
    /// Sink batch writes that failed, by `retryable`/`fatal`.
    pub sink_errors: CounterVec,
    /// Sink batch write latency.
    pub sink_write_latency: Histogram,
    /// Rollup batches written.
    pub rollups_written: AtomicU64,
    /// Traces the tail sampler decided before their wait, by the bound that
    /// was hit (`max_traces`, `max_bytes`).
    pub tail_early_decisions: CounterVec,
    /// Spans that arrived after their trace was decided and followed the
    /// cached decision.
    pub tail_late_spans: AtomicU64,
    /// Tail-sampling decisions forgotten to make room in the decision cache.
    pub tail_decision_cache_evictions: AtomicU64,
    /// Traces held by the tail sampler now.
    pub tail_held_traces: AtomicU64,
    /// Approximate bytes held by the tail sampler now.
    pub tail_held_bytes: AtomicU64,
    /// Attribute values (or matched parts) redacted, by action (`mask`, `hash`).
    pub redact_values: CounterVec,
    /// Attributes removed by `redact.drop_keys`.
    pub redact_attributes_dropped: AtomicU64,
    /// Spans observed by the rollup aggregator (every span, before sampling).
    pub rollup_spans_observed: AtomicU64,
    /// Rollup observations lost, by reason.
    pub rollup_dropped: CounterVec,
    /// Spans the rollups weighted by a sampling probability, by source
    /// (`threshold`, `jaeger`), and spans whose sampling information was
    /// unusable and counted 1 (`malformed`).
    pub rollup_weight_sources: CounterVec,
    /// Times the rollup series limit forced an early flush.
    pub rollup_early_flushes: AtomicU64,
    /// Rollup drains that wrote unfinished minutes because the WAL was nearly full.
    pub rollup_wal_full_flushes: AtomicU64,
    /// Rollup contributions of replayed spans not counted again (already stored).
    pub rollup_replayed_already_stored: AtomicU64,
    /// Receive-to-ack latency of successful requests.
    pub ack_latency: Histogram,
    /// Time a receiver took to decode a request body.
    pub decode_latency: Histogram,
    /// Per WAL append: from the call until its group's write started (the
    /// previous group's write and fsync, and the writer's wake-up).
    pub wal_group_wait: Histogram,
    /// Per WAL group: the `write` of the group's records.
    pub wal_write_latency: Histogram,
    /// Per WAL `fsync` (`fdatasync`).
    pub wal_fsync_latency: Histogram,
    /// Per WAL segment rotation, on the writer thread before the group that
    /// rotates is written (every append of that group waits for it).
    pub wal_rotate_latency: Histogram,
    /// Per WAL append, as the caller sees it: from the call until the
    /// caller's task has the answer (durable per the policy).
    pub wal_append_latency: Histogram,
    /// The memory guard's gauges and counters.
    pub memory: MemoryMetrics,
    /// Connection counts and the connections the listeners closed or refused.
    pub net: NetMetrics,
    /// Datagrams the UDP listeners (the Jaeger agent ports) read and dropped.
    pub udp: UdpMetrics,
    /// Attribute values nested (arrays, kvlists) deeper than
    /// [`crate::receiver::convert::MAX_ANY_VALUE_DEPTH`]; the deeper part was cut.
    pub attribute_depth_truncated: AtomicU64,
}

impl Default for Core {
    fn default() -> Self {
        Core {
            sources: Default::default(),
            dropped: CounterVec::default(),
            attributes_dropped: AtomicU64::new(0),
            attribute_values_truncated: AtomicU64::new(0),
            requests_failed: CounterVec::default(),
            auth_failures: CounterVec::default(),
            tls_handshake_failures: CounterVec::default(),
            queue_spans: AtomicU64::new(0),
            queue_bytes: AtomicU64::new(0),
            wal_only_spans: AtomicU64::new(0),
            wal_only_records: AtomicU64::new(0),
            wal_only_read_back: AtomicU64::new(0),
            wal_only_read_errors: AtomicU64::new(0),
            wal_bytes: Arc::new(AtomicU64::new(0)),
            wal_segments: AtomicU64::new(0),
            wal_max_bytes: AtomicU64::new(0),
            wal_disk_free_bytes: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            wal_fsyncs: AtomicU64::new(0),
            wal_appends: AtomicU64::new(0),
            wal_segments_deleted: AtomicU64::new(0),
            wal_rotations_unprepared: AtomicU64::new(0),
            wal_corrupt_records: AtomicU64::new(0),
            wal_io_errors: CounterVec::default(),
            inflight_bytes: AtomicU64::new(0),
            sampling_decisions: CounterVec::default(),
            sampling_api_requests: CounterVec::default(),
            sampling_adaptive_recomputations: AtomicU64::new(0),
            sampling_adaptive_operations: AtomicU64::new(0),
            sampling_adaptive_dropped: AtomicU64::new(0),
            sampling_adaptive_store_errors: CounterVec::default(),
            sampling_adaptive_settings_conflicts: AtomicU64::new(0),
            sampling_adaptive_late_writers: AtomicU64::new(0),
            sink_spans_written: AtomicU64::new(0),
            sink_errors: CounterVec::default(),
            sink_write_latency: Histogram::new(LATENCY_BOUNDS),
            rollups_written: AtomicU64::new(0),
            tail_early_decisions: CounterVec::default(),
            tail_late_spans: AtomicU64::new(0),
            tail_decision_cache_evictions: AtomicU64::new(0),
            tail_held_traces: AtomicU64::new(0),
            tail_held_bytes: AtomicU64::new(0),
            redact_values: CounterVec::default(),
            redact_attributes_dropped: AtomicU64::new(0),
            rollup_spans_observed: AtomicU64::new(0),
            rollup_dropped: CounterVec::default(),
            rollup_weight_sources: CounterVec::default(),
            rollup_early_flushes: AtomicU64::new(0),
            rollup_wal_full_flushes: AtomicU64::new(0),
            rollup_replayed_already_stored: AtomicU64::new(0),
            ack_latency: Histogram::new(LATENCY_BOUNDS),
            decode_latency: Histogram::new(ACK_PART_BOUNDS),
            wal_group_wait: Histogram::new(ACK_PART_BOUNDS),
            wal_write_latency: Histogram::new(ACK_PART_BOUNDS),
            wal_fsync_latency: Histogram::new(ACK_PART_BOUNDS),
            wal_rotate_latency: Histogram::new(ACK_PART_BOUNDS),
            wal_append_latency: Histogram::new(ACK_PART_BOUNDS),
            memory: MemoryMetrics::default(),
            net: NetMetrics::default(),
            udp: UdpMetrics::default(),
            attribute_depth_truncated: AtomicU64::new(0),
        }
    }
}

impl Core {
    /// Counters of one source.
    pub fn source(&self, s: Source) -> &SourceCounters {
        &self.sources[s as usize]
    }
}

/// The self-metrics: the values ([`Core`], reached through `Deref`, so the
/// hot path increments an atomic as `metrics.queue_spans.fetch_add(..)`) and
/// the registry every family on `/metrics` is written from.
pub struct Metrics {
    core: Arc<Core>,
    registry: Mutex<exposition::Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let core = Arc::new(Core::default());
        let mut registry = exposition::Registry::default();
        registry.register_collector(Box::new(core.clone()));
        Metrics {
            core,
            registry: Mutex::new(registry),
        }
    }
}

impl std::ops::Deref for Metrics {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl Metrics {
    /// Adds an area's families (the retention tasks, the cold tier, the
    /// router), written at every scrape from then on.
    pub fn register(&self, collector: Box<dyn Collector>) {
        self.registry.lock().register_collector(collector);
    }

    /// Every registered family in the Prometheus text format 0.0.4
    /// ([`exposition::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        exposition::render(&self.registry.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_series() {
        let m = Metrics::default();
        m.source(Source::ZipkinJson).accepted.fetch_add(3, Relaxed);
        m.dropped.add("invalid", 2);
        m.sink_write_latency
            .observe(std::time::Duration::from_millis(3));
        let t = m.render();
        assert!(t.contains(
            "ferrotrace_receiver_spans_accepted_total{receiver=\"zipkin\",protocol=\"http/json\"} 3"
        ));
        assert!(t.contains("ferrotrace_spans_dropped_total{reason=\"invalid\"} 2"));
        assert!(t.contains("ferrotrace_sink_write_seconds_bucket{le=\"0.005\"} 1"));
    }

    /// The exposition keeps the shape scrapers, tests and dashboards read:
    /// counters' HELP/TYPE lines carry the `_total` name, label values are
    /// escaped, histograms are cumulative with `+Inf`, `_sum` and `_count`,
    /// late areas appear once registered. (Compared with the hand-written
    /// exposition before `prometheus-client` line by line: the only
    /// differences are float formatting — shortest round-trip digits instead
    /// of a fixed 6 decimals — and HELP lines for the retention counters.)
    #[test]
    fn exposition_keeps_names_types_and_shapes() {
        let m = Metrics::default();
        m.dropped.add("odd \"label\" \\ with\nnewline", 1);
        m.queue_spans.store(123, Relaxed);
        m.net.closed("query", "idle");
        for d in [300, 3_000, 700_000, 20_000_000] {
            m.sink_write_latency
                .observe(std::time::Duration::from_micros(d));
        }
        let before = m.render();
        assert!(!before.contains("ferrotrace_route_"));
        let route = std::sync::Arc::new(RouteMetrics::default());
        route
            .forward_failures
            .add(&format!("10.0.0.2:4317{ROUTE_LABEL_SEP}UNAVAILABLE"), 2);
        m.register(Box::new(route));
        let t = m.render();
        for block in [
            "# HELP ferrotrace_spans_dropped_total Spans dropped after receipt, by reason.\n\
             # TYPE ferrotrace_spans_dropped_total counter\n\
             ferrotrace_spans_dropped_total{reason=\"odd \\\"label\\\" \\\\ with\\nnewline\"} 1\n",
            "# HELP ferrotrace_queue_spans Spans waiting in the queue.\n\
             # TYPE ferrotrace_queue_spans gauge\n\
             ferrotrace_queue_spans 123\n",
            "ferrotrace_connections_closed_total{listener=\"query\",reason=\"idle\"} 1\n",
            "# TYPE ferrotrace_sink_write_seconds histogram\n\
             ferrotrace_sink_write_seconds_bucket{le=\"0.0005\"} 1\n\
             ferrotrace_sink_write_seconds_bucket{le=\"0.001\"} 1\n\
             ferrotrace_sink_write_seconds_bucket{le=\"0.0025\"} 1\n\
             ferrotrace_sink_write_seconds_bucket{le=\"0.005\"} 2\n",
            "ferrotrace_sink_write_seconds_bucket{le=\"1\"} 3\n",
            "ferrotrace_sink_write_seconds_bucket{le=\"10\"} 3\n\
             ferrotrace_sink_write_seconds_bucket{le=\"+Inf\"} 4\n\
             ferrotrace_sink_write_seconds_sum 20.7033\n\
             ferrotrace_sink_write_seconds_count 4\n",
            "# TYPE ferrotrace_up gauge\nferrotrace_up 1\n",
            "ferrotrace_route_forward_failures_total{backend=\"10.0.0.2:4317\",code=\"UNAVAILABLE\"} 2\n",
        ] {
            assert!(t.contains(block), "missing:\n{block}\nin:\n{t}");
        }
        assert!(
            !t.contains("# EOF"),
            "Prometheus text 0.0.4, not OpenMetrics"
        );
    }
}
