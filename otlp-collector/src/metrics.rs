//! The collector's self-metrics, rendered in the Prometheus text format at
//! `GET /metrics`. Counters are atomics (hot path) or small labelled maps
//! touched once per request or batch, never per span.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

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
    const ALL: [Source; 11] = [
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
    fn snapshot(&self) -> Vec<(String, u64)> {
        self.0.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Latency histogram with fixed buckets in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
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
        for (i, b) in self.bounds.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Relaxed)
            );
        }
        let c = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {c}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {c}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// All self-metrics.
#[derive(Debug)]
pub struct Metrics {
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
    /// Bytes in WAL segment files.
    pub wal_bytes: AtomicU64,
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
    /// The memory guard's gauges and counters.
    pub memory: MemoryMetrics,
    /// Connection counts and the connections the listeners closed or refused.
    pub net: NetMetrics,
    /// Datagrams the UDP listeners (the Jaeger agent ports) read and dropped.
    pub udp: UdpMetrics,
    /// Attribute values nested (arrays, kvlists) deeper than
    /// [`crate::receiver::convert::MAX_ANY_VALUE_DEPTH`]; the deeper part was cut.
    pub attribute_depth_truncated: AtomicU64,
    /// Retention task counters, once the task runs.
    pub retention: Mutex<Option<std::sync::Arc<crate::storage::retention::RetentionStats>>>,
    /// The cold tier's metrics, once it is open.
    pub cold: Mutex<Option<std::sync::Arc<crate::storage::cold::ColdStats>>>,
    /// The router role's counters, when the collector runs as a router.
    pub route: Mutex<Option<std::sync::Arc<RouteMetrics>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
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
            wal_bytes: AtomicU64::new(0),
            wal_segments: AtomicU64::new(0),
            wal_max_bytes: AtomicU64::new(0),
            wal_disk_free_bytes: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            wal_fsyncs: AtomicU64::new(0),
            wal_appends: AtomicU64::new(0),
            wal_segments_deleted: AtomicU64::new(0),
            wal_corrupt_records: AtomicU64::new(0),
            wal_io_errors: CounterVec::default(),
            inflight_bytes: AtomicU64::new(0),
            sampling_decisions: CounterVec::default(),
            sampling_api_requests: CounterVec::default(),
            sampling_adaptive_recomputations: AtomicU64::new(0),
            sampling_adaptive_operations: AtomicU64::new(0),
            sampling_adaptive_dropped: AtomicU64::new(0),
            sampling_adaptive_store_errors: CounterVec::default(),
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
            memory: MemoryMetrics::default(),
            net: NetMetrics::default(),
            udp: UdpMetrics::default(),
            attribute_depth_truncated: AtomicU64::new(0),
            retention: Mutex::new(None),
            cold: Mutex::new(None),
            route: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// Counters of one source.
    pub fn source(&self, s: Source) -> &SourceCounters {
        &self.sources[s as usize]
    }

    /// Renders everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        type Field = fn(&SourceCounters) -> &AtomicU64;
        let per_source: [(&str, &str, Field); 5] = [
            (
                "ferrotrace_receiver_spans_received_total",
                "Spans decoded from requests.",
                |c| &c.received,
            ),
            (
                "ferrotrace_receiver_spans_accepted_total",
                "Spans written to the WAL and acknowledged.",
                |c| &c.accepted,
            ),
            (
                "ferrotrace_receiver_spans_rejected_total",
                "Invalid spans dropped and reported through partial success.",
                |c| &c.rejected,
            ),
            (
                "ferrotrace_receiver_spans_refused_total",
                "Spans refused with 429/RESOURCE_EXHAUSTED after decoding because the queue or WAL was full or memory was above limits.memory_limit_mib.",
                |c| &c.refused,
            ),
            (
                "ferrotrace_receiver_bad_requests_total",
                "Requests refused as undecodable, over a limit or unauthenticated.",
                |c| &c.bad_requests,
            ),
        ];
        for (name, help, field) in per_source {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for s in Source::ALL {
                let (r, p) = s.labels();
                let _ = writeln!(
                    out,
                    "{name}{{receiver=\"{r}\",protocol=\"{p}\"}} {}",
                    field(self.source(s)).load(Relaxed)
                );
            }
        }
        let vecs: [(&str, &str, &str, &CounterVec); 13] = [
            (
                "ferrotrace_spans_dropped_total",
                "Spans dropped after receipt, by reason.",
                "reason",
                &self.dropped,
            ),
            (
                "ferrotrace_requests_failed_total",
                "Failed requests by status.",
                "status",
                &self.requests_failed,
            ),
            (
                "ferrotrace_auth_failures_total",
                "Requests with a missing or wrong bearer token, by listener.",
                "listener",
                &self.auth_failures,
            ),
            (
                "ferrotrace_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out (plaintext or untrusting clients), by listener.",
                "listener",
                &self.tls_handshake_failures,
            ),
            (
                "ferrotrace_sampling_decisions_total",
                "Sampling decisions by stage, decision and reason.",
                "decision",
                &self.sampling_decisions,
            ),
            (
                "ferrotrace_sampling_api_requests_total",
                "Remote sampling API requests (HTTP and gRPC): served a pinned service's strategy (pinned), an adaptive one computed from observed throughput (adaptive), the default one (default), or refused with 400 / INVALID_ARGUMENT (bad_request).",
                "outcome",
                &self.sampling_api_requests,
            ),
            (
                "ferrotrace_sampling_adaptive_store_errors_total",
                "Adaptive sampling with source = \"store\": failed writes of this collector's counts, reads of the store-wide counts (the last rates stay served) and prunes of old periods.",
                "op",
                &self.sampling_adaptive_store_errors,
            ),
            (
                "ferrotrace_sink_errors_total",
                "Failed sink batch writes by kind.",
                "kind",
                &self.sink_errors,
            ),
            (
                "ferrotrace_wal_io_errors_total",
                "WAL write, fsync and segment-creation failures; the requests involved were refused.",
                "op",
                &self.wal_io_errors,
            ),
            (
                "ferrotrace_tail_sampling_early_decisions_total",
                "Traces decided before their decision wait because the tail sampler held sampling.tail.max_traces traces or max_bytes bytes, by the bound hit.",
                "bound",
                &self.tail_early_decisions,
            ),
            (
                "ferrotrace_redact_values_total",
                "Attribute values, or matched parts of them, replaced by redaction, by action (mask, hash).",
                "action",
                &self.redact_values,
            ),
            (
                "ferrotrace_rollup_observations_dropped_total",
                "Rollup observations lost: series_limit (rollups.max_series hit with nothing drained; the span is not counted), parent_timeout and pending_full (a child span whose parent never arrived in time or did not fit in rollups.pending_children; its caller edge is not counted).",
                "reason",
                &self.rollup_dropped,
            ),
            (
                "ferrotrace_rollup_weighted_spans_total",
                "Spans whose rollup weight (adjusted count) came from sampling information, by source: threshold (ot=th: in tracestate), jaeger (sampler.type=probabilistic with sampler.param), malformed (present but unusable: invalid tracestate, bad th, sampler.param outside (0, 1]; counted 1). Other spans count 1.",
                "source",
                &self.rollup_weight_sources,
            ),
        ];
        for (name, help, label, v) in vecs {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, n) in v.snapshot() {
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape_label(&k));
            }
        }
        let scalars: [(&str, &str, &str, &AtomicU64); 33] = [
            (
                "ferrotrace_receiver_inflight_bytes",
                "gauge",
                "Bytes of request bodies (received and inflated) held by the receivers, bounded by limits.max_inflight_bytes.",
                &self.inflight_bytes,
            ),
            (
                "ferrotrace_attributes_dropped_total",
                "counter",
                "Attributes dropped by the per-span attribute limit.",
                &self.attributes_dropped,
            ),
            (
                "ferrotrace_attribute_values_truncated_total",
                "counter",
                "Attribute values truncated by the length limit.",
                &self.attribute_values_truncated,
            ),
            (
                "ferrotrace_queue_spans",
                "gauge",
                "Spans waiting in the queue.",
                &self.queue_spans,
            ),
            (
                "ferrotrace_queue_bytes",
                "gauge",
                "Estimated bytes waiting in the queue.",
                &self.queue_bytes,
            ),
            (
                "ferrotrace_wal_bytes",
                "gauge",
                "Bytes in WAL segment files.",
                &self.wal_bytes,
            ),
            (
                "ferrotrace_wal_segments",
                "gauge",
                "WAL segment files.",
                &self.wal_segments,
            ),
            (
                "ferrotrace_wal_max_bytes",
                "gauge",
                "wal.max_bytes: appends beyond it are refused with 429 / RESOURCE_EXHAUSTED.",
                &self.wal_max_bytes,
            ),
            (
                "ferrotrace_wal_disk_free_bytes",
                "gauge",
                "Bytes available on the WAL's file system, read every 2 s.",
                &self.wal_disk_free_bytes,
            ),
            (
                "ferrotrace_ready",
                "gauge",
                "1 when /readyz answers 200 (replay done, sink answering and writing, disk and WAL not full), else 0.",
                &self.ready,
            ),
            (
                "ferrotrace_wal_fsyncs_total",
                "counter",
                "fsync calls on the WAL.",
                &self.wal_fsyncs,
            ),
            (
                "ferrotrace_wal_appends_total",
                "counter",
                "Records appended to the WAL.",
                &self.wal_appends,
            ),
            (
                "ferrotrace_wal_segments_deleted_total",
                "counter",
                "WAL segments deleted after all their spans were committed or dropped.",
                &self.wal_segments_deleted,
            ),
            (
                "ferrotrace_queue_wal_only_spans",
                "gauge",
                "Acknowledged spans kept in the WAL only (the queue was full), waiting to be read back.",
                &self.wal_only_spans,
            ),
            (
                "ferrotrace_queue_wal_only_records",
                "gauge",
                "Acknowledged requests kept in the WAL only, waiting to be read back (bounded by queue.wal_only_max_records).",
                &self.wal_only_records,
            ),
            (
                "ferrotrace_queue_wal_only_read_back_total",
                "counter",
                "Spans read back from the WAL into the queue after waiting in the WAL only.",
                &self.wal_only_read_back,
            ),
            (
                "ferrotrace_queue_wal_only_read_errors_total",
                "counter",
                "WAL-only records that could not be read back; their spans stay in the WAL for the next start's replay.",
                &self.wal_only_read_errors,
            ),
            (
                "ferrotrace_wal_corrupt_records_total",
                "counter",
                "Torn or corrupt WAL records skipped at replay.",
                &self.wal_corrupt_records,
            ),
            (
                "ferrotrace_sink_spans_written_total",
                "counter",
                "Spans written to the sink.",
                &self.sink_spans_written,
            ),
            (
                "ferrotrace_rollup_batches_written_total",
                "counter",
                "Rollup batches written to the sink.",
                &self.rollups_written,
            ),
            (
                "ferrotrace_tail_sampling_late_spans_total",
                "counter",
                "Spans that arrived after their trace was decided and followed the cached decision.",
                &self.tail_late_spans,
            ),
            (
                "ferrotrace_tail_sampling_decision_cache_evictions_total",
                "counter",
                "Tail-sampling decisions forgotten to make room in the decision cache (sampling.tail.decision_cache_entries); a later span of such a trace is held and decided again.",
                &self.tail_decision_cache_evictions,
            ),
            (
                "ferrotrace_tail_sampling_held_traces",
                "gauge",
                "Traces held by the tail sampler waiting for a decision.",
                &self.tail_held_traces,
            ),
            (
                "ferrotrace_tail_sampling_held_bytes",
                "gauge",
                "Approximate bytes of spans held by the tail sampler.",
                &self.tail_held_bytes,
            ),
            (
                "ferrotrace_redact_attributes_dropped_total",
                "counter",
                "Attributes removed by redact.drop_keys.",
                &self.redact_attributes_dropped,
            ),
            (
                "ferrotrace_sampling_adaptive_recomputations_total",
                "counter",
                "Times the adaptive sampling rates were recomputed and the served strategies replaced.",
                &self.sampling_adaptive_recomputations,
            ),
            (
                "ferrotrace_sampling_adaptive_operations",
                "gauge",
                "(service, operation) pairs whose adaptive sampling rate is tracked now.",
                &self.sampling_adaptive_operations,
            ),
            (
                "ferrotrace_sampling_adaptive_dropped_total",
                "counter",
                "Root spans not counted for adaptive sampling because sampling_api.adaptive.max_operations pairs were already tracked in the period.",
                &self.sampling_adaptive_dropped,
            ),
            (
                "ferrotrace_rollup_spans_observed_total",
                "counter",
                "Spans observed by the rollup aggregator (every span received, before sampling).",
                &self.rollup_spans_observed,
            ),
            (
                "ferrotrace_rollup_early_flushes_total",
                "counter",
                "Times rollups.max_series forced the in-memory rollups to be flushed before their minute ended.",
                &self.rollup_early_flushes,
            ),
            (
                "ferrotrace_rollup_wal_full_flushes_total",
                "counter",
                "Times the rollups of unfinished minutes were written early because the write-ahead log was nearly full (its segments wait for their spans' rollups).",
                &self.rollup_wal_full_flushes,
            ),
            (
                "ferrotrace_rollup_replayed_already_stored_total",
                "counter",
                "Rollup contributions (operation counts, caller edges) of spans replayed from the WAL that were not counted again because the sink had stored them before the restart.",
                &self.rollup_replayed_already_stored,
            ),
            (
                "ferrotrace_up",
                "gauge",
                "Always 1 while the collector runs.",
                &ONE,
            ),
        ];
        for (name, kind, help, v) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.memory.render(&mut out);
        self.net.render(&mut out);
        self.udp.render(&mut out);
        let name = "ferrotrace_attribute_depth_truncated_total";
        let _ = writeln!(
            out,
            "# HELP {name} Attribute values nested (arrays, kvlists) deeper than the documented depth (16); the deeper part was replaced by an empty value.\n# TYPE {name} counter\n{name} {}",
            self.attribute_depth_truncated.load(Relaxed)
        );
        self.sink_write_latency.render(
            &mut out,
            "ferrotrace_sink_write_seconds",
            "Sink batch write latency (successful writes).",
        );
        self.ack_latency.render(
            &mut out,
            "ferrotrace_receiver_ack_seconds",
            "Time from request decoded to acknowledgement (WAL durable).",
        );
        if let Some(r) = self.retention.lock().as_ref() {
            for (name, v) in [
                ("ferrotrace_retention_runs_total", &r.runs),
                ("ferrotrace_retention_failures_total", &r.failures),
                ("ferrotrace_retention_spans_deleted_total", &r.spans_deleted),
                (
                    "ferrotrace_retention_rollups_deleted_total",
                    &r.rollups_deleted,
                ),
            ] {
                let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", v.load(Relaxed));
            }
            r.size.render(&mut out, self.wal_bytes.load(Relaxed));
        }
        if let Some(c) = self.cold.lock().as_ref() {
            c.render(&mut out);
        }
        if let Some(r) = self.route.lock().as_ref() {
            r.render(&mut out);
        }
        out
    }
}

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

impl RouteMetrics {
    fn render(&self, out: &mut String) {
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
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, n) in v.snapshot() {
                let _ = writeln!(out, "{name}{{backend=\"{}\"}} {n}", escape_label(&k));
            }
        }
        let name = "ferrotrace_route_forward_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Forward requests a backend did not acknowledge (retried from the WAL), by gRPC code.\n# TYPE {name} counter"
        );
        for (k, n) in self.forward_failures.snapshot() {
            let (b, code) = k.split_once(ROUTE_LABEL_SEP).unwrap_or((&k, ""));
            let _ = writeln!(
                out,
                "{name}{{backend=\"{}\",code=\"{}\"}} {n}",
                escape_label(b),
                escape_label(code)
            );
        }
        for (name, kind, help, v) in [
            ("ferrotrace_route_backends", "gauge", "Backends known (configured or resolved).", &self.backends),
            ("ferrotrace_route_ring_size", "gauge", "Backends in the ring (passing health checks).", &self.ring_size),
            ("ferrotrace_route_split_traces_total", "counter", "Traces whose spans went to another backend than their earlier spans because the ring changed (among the last route.recent_traces traces).", &self.split_traces),
            ("ferrotrace_route_acked_forgotten_total", "counter", "Acknowledged spans of a retried batch forgotten before the retry (route.acked_spans), so sent again.", &self.acked_forgotten),
            ("ferrotrace_route_dns_failures_total", "counter", "Failed resolutions of route.dns_name.", &self.dns_failures),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        }
    }
}

static ONE: AtomicU64 = AtomicU64::new(1);

/// What the memory guard ([`crate::memory`]) publishes. Refusals are counted
/// in `ferrotrace_requests_failed_total{status="memory_limit"}`.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    /// Resident memory of the process at the last sample (0 = not sampled).
    pub resident_bytes: AtomicU64,
    /// `limits.memory_limit_mib` in bytes (0 = off).
    pub limit_bytes: AtomicU64,
    /// The soft limit in bytes: above it new requests are refused.
    pub soft_limit_bytes: AtomicU64,
    /// Times freed heap memory was handed back to the OS (`malloc_trim`).
    pub trims: AtomicU64,
    /// Memory reserved for decoding the requests in flight (an estimate
    /// per request from its body size; see `receiver::decode_reserve`).
    pub reserved_bytes: AtomicU64,
}

impl MemoryMetrics {
    fn render(&self, out: &mut String) {
        for (name, kind, help, v) in [
            (
                "ferrotrace_memory_resident_bytes",
                "gauge",
                "Resident memory of the collector process at the memory guard's last sample.",
                &self.resident_bytes,
            ),
            (
                "ferrotrace_memory_limit_bytes",
                "gauge",
                "limits.memory_limit_mib in bytes (0 = no limit).",
                &self.limit_bytes,
            ),
            (
                "ferrotrace_memory_soft_limit_bytes",
                "gauge",
                "Resident memory above which the receivers refuse new requests (requests_failed_total{status=\"memory_limit\"}).",
                &self.soft_limit_bytes,
            ),
            (
                "ferrotrace_memory_trims_total",
                "counter",
                "Times the memory guard returned freed heap memory to the OS (glibc malloc_trim) while above the soft limit.",
                &self.trims,
            ),
            (
                "ferrotrace_memory_reserved_bytes",
                "gauge",
                "Memory reserved for decoding the requests in flight; with the bodies in flight and resident memory it must fit under the soft limit for a request to be admitted.",
                &self.reserved_bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
    }
}

/// What the listeners ([`crate::listener`]) publish about connections.
#[derive(Debug, Default)]
pub struct NetMetrics {
    open: Mutex<BTreeMap<&'static str, u64>>,
    closed: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    refused: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl NetMetrics {
    /// A connection was accepted on `listener`.
    pub fn opened(&self, listener: &'static str) {
        *self.open.lock().entry(listener).or_insert(0) += 1;
    }
    /// A connection of `listener` ended (for any reason).
    pub fn ended(&self, listener: &'static str) {
        if let Some(v) = self.open.lock().get_mut(listener) {
            *v = v.saturating_sub(1);
        }
    }
    /// The collector closed a connection of `listener` for `reason`.
    pub fn closed(&self, listener: &'static str, reason: &'static str) {
        *self.closed.lock().entry((listener, reason)).or_insert(0) += 1;
    }
    /// A new connection to `listener` was closed at once for `reason`.
    pub fn refused(&self, listener: &'static str, reason: &'static str) {
        *self.refused.lock().entry((listener, reason)).or_insert(0) += 1;
    }
    /// Open connections of `listener`.
    pub fn open(&self, listener: &str) -> u64 {
        self.open.lock().get(listener).copied().unwrap_or(0)
    }
    /// Connections of `listener` the collector closed for `reason`.
    pub fn closed_count(&self, listener: &str, reason: &str) -> u64 {
        self.closed
            .lock()
            .iter()
            .filter(|((l, r), _)| *l == listener && *r == reason)
            .map(|(_, v)| *v)
            .sum()
    }

    fn render(&self, out: &mut String) {
        let name = "ferrotrace_connections_open";
        let _ = writeln!(
            out,
            "# HELP {name} Open client connections, by listener.\n# TYPE {name} gauge"
        );
        for (l, v) in self.open.lock().iter() {
            let _ = writeln!(out, "{name}{{listener=\"{l}\"}} {v}");
        }
        for (name, help, map) in [
            (
                "ferrotrace_connections_closed_total",
                "Connections the collector closed, by listener and reason: header_timeout (connections.header_read_timeout_ms), http2_keepalive (a PING unanswered for connections.http2_keepalive_timeout_ms), body_timeout (connections.body_read_timeout_ms), body_too_slow (connections.min_body_rate_bytes_per_sec), idle (connections.idle_timeout_ms), evicted (the longest-idle connection, closed to make room at connections.max_per_listener or the file-descriptor budget), tls_handshake (failed or timed out).",
                &self.closed,
            ),
            (
                "ferrotrace_connections_refused_total",
                "New connections closed at once, by listener and reason: max_connections (connections.max_per_listener reached and none idle), fd_limit (RLIMIT_NOFILE minus connections.reserved_fds reached and none idle), accept_error (the accept call failed, e.g. EMFILE).",
                &self.refused,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((l, r), v) in map.lock().iter() {
                let _ = writeln!(out, "{name}{{listener=\"{l}\",reason=\"{r}\"}} {v}");
            }
        }
    }
}

/// What one UDP listener ([`crate::receiver::jaeger::udp`]) publishes.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// Datagrams read from the socket.
    pub received: AtomicU64,
    /// Datagrams waiting for a worker now.
    pub queued: AtomicU64,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
}

impl UdpCounters {
    /// Counts a datagram dropped for `reason`.
    pub fn dropped(&self, reason: &'static str) {
        *self.dropped.lock().entry(reason).or_insert(0) += 1;
    }
    /// Datagrams dropped for `reason` so far.
    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.dropped.lock().get(reason).copied().unwrap_or(0)
    }
}

/// The UDP listeners' counters, by listener.
#[derive(Debug, Default)]
pub struct UdpMetrics {
    /// The Jaeger agent's Thrift compact port (6831).
    pub jaeger_compact: UdpCounters,
    /// The Jaeger agent's Thrift binary port (6832).
    pub jaeger_binary: UdpCounters,
}

impl UdpMetrics {
    fn render(&self, out: &mut String) {
        let all = [
            ("jaeger_compact", &self.jaeger_compact),
            ("jaeger_binary", &self.jaeger_binary),
        ];
        for (name, kind, help, field) in [
            (
                "ferrotrace_udp_datagrams_received_total",
                "counter",
                "Datagrams read from a UDP listener's socket (Jaeger agent ports), by listener.",
                (|c| &c.received) as fn(&UdpCounters) -> &AtomicU64,
            ),
            (
                "ferrotrace_udp_datagrams_queued",
                "gauge",
                "Datagrams waiting to be decoded, by listener (at most jaeger.agent_queue_packets).",
                |c| &c.queued,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}
# TYPE {name} {kind}");
            for (l, c) in all {
                let _ = writeln!(out, "{name}{{listener=\"{l}\"}} {}", field(c).load(Relaxed));
            }
        }
        let name = "ferrotrace_udp_datagrams_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Datagrams a UDP listener dropped (UDP cannot be told to retry), by listener and reason: too_large (over jaeger.agent_max_packet_bytes), queue_full (jaeger.agent_queue_packets waiting), memory (in-flight budget or memory limit), undecodable, too_many_spans (limits.max_spans_per_request), refused (queue or WAL full: the spans are in ferrotrace_receiver_spans_refused_total), unavailable (shutting down), read_error.\n# TYPE {name} counter"
        );
        for (l, c) in all {
            for (r, v) in c.dropped.lock().iter() {
                let _ = writeln!(out, "{name}{{listener=\"{l}\",reason=\"{r}\"}} {v}");
            }
        }
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
}
