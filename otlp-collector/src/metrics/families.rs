//! The families of the ingest path — receivers, queue, WAL, sampling,
//! redaction, rollups, sink — and of the process (memory, connections, UDP
//! listeners), written from [`Core`]'s atomics at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::exposition::{Collector, EncodeResult, Families, MetricType};
use super::{Core, CounterVec, Source, SourceCounters};

/// Always 1 while the collector runs (`ferrotrace_up`).
static ONE: AtomicU64 = AtomicU64::new(1);

impl Collector for Core {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> EncodeResult {
        let f = &mut Families::new(encoder);
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
            let rows = Source::ALL.map(|s| {
                let (r, p) = s.labels();
                (
                    [("receiver", r), ("protocol", p)],
                    field(self.source(s)).load(Relaxed),
                )
            });
            f.family(name, MetricType::Counter, help, rows)?;
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
            v.encode(f, name, help, label)?;
        }
        let scalars: [(&str, MetricType, &str, &AtomicU64); 36] = [
            (
                "ferrotrace_receiver_inflight_bytes",
                MetricType::Gauge,
                "Bytes of request bodies (received and inflated) held by the receivers, bounded by limits.max_inflight_bytes.",
                &self.inflight_bytes,
            ),
            (
                "ferrotrace_attributes_dropped_total",
                MetricType::Counter,
                "Attributes dropped by the per-span attribute limit.",
                &self.attributes_dropped,
            ),
            (
                "ferrotrace_attribute_values_truncated_total",
                MetricType::Counter,
                "Attribute values truncated by the length limit.",
                &self.attribute_values_truncated,
            ),
            (
                "ferrotrace_queue_spans",
                MetricType::Gauge,
                "Spans waiting in the queue.",
                &self.queue_spans,
            ),
            (
                "ferrotrace_queue_bytes",
                MetricType::Gauge,
                "Estimated bytes waiting in the queue.",
                &self.queue_bytes,
            ),
            (
                "ferrotrace_wal_bytes",
                MetricType::Gauge,
                "Bytes in WAL segment files.",
                &self.wal_bytes,
            ),
            (
                "ferrotrace_wal_segments",
                MetricType::Gauge,
                "WAL segment files.",
                &self.wal_segments,
            ),
            (
                "ferrotrace_wal_max_bytes",
                MetricType::Gauge,
                "wal.max_bytes: appends beyond it are refused with 429 / RESOURCE_EXHAUSTED.",
                &self.wal_max_bytes,
            ),
            (
                "ferrotrace_wal_disk_free_bytes",
                MetricType::Gauge,
                "Bytes available on the WAL's file system, read every 2 s.",
                &self.wal_disk_free_bytes,
            ),
            (
                "ferrotrace_ready",
                MetricType::Gauge,
                "1 when /readyz answers 200 (replay done, sink answering and writing, disk and WAL not full), else 0.",
                &self.ready,
            ),
            (
                "ferrotrace_wal_fsyncs_total",
                MetricType::Counter,
                "fsync calls on the WAL.",
                &self.wal_fsyncs,
            ),
            (
                "ferrotrace_wal_appends_total",
                MetricType::Counter,
                "Records appended to the WAL.",
                &self.wal_appends,
            ),
            (
                "ferrotrace_wal_segments_deleted_total",
                MetricType::Counter,
                "WAL segments deleted after all their spans were committed or dropped.",
                &self.wal_segments_deleted,
            ),
            (
                "ferrotrace_wal_rotations_unprepared_total",
                MetricType::Counter,
                "WAL rotations that created the next segment while appends waited (no prepared spare).",
                &self.wal_rotations_unprepared,
            ),
            (
                "ferrotrace_queue_wal_only_spans",
                MetricType::Gauge,
                "Acknowledged spans kept in the WAL only (the queue was full), waiting to be read back.",
                &self.wal_only_spans,
            ),
            (
                "ferrotrace_queue_wal_only_records",
                MetricType::Gauge,
                "Acknowledged requests kept in the WAL only, waiting to be read back (bounded by queue.wal_only_max_records).",
                &self.wal_only_records,
            ),
            (
                "ferrotrace_queue_wal_only_read_back_total",
                MetricType::Counter,
                "Spans read back from the WAL into the queue after waiting in the WAL only.",
                &self.wal_only_read_back,
            ),
            (
                "ferrotrace_queue_wal_only_read_errors_total",
                MetricType::Counter,
                "WAL-only records that could not be read back; their spans stay in the WAL for the next start's replay.",
                &self.wal_only_read_errors,
            ),
            (
                "ferrotrace_wal_corrupt_records_total",
                MetricType::Counter,
                "Torn or corrupt WAL records skipped at replay.",
                &self.wal_corrupt_records,
            ),
            (
                "ferrotrace_sink_spans_written_total",
                MetricType::Counter,
                "Spans written to the sink.",
                &self.sink_spans_written,
            ),
            (
                "ferrotrace_rollup_batches_written_total",
                MetricType::Counter,
                "Rollup batches written to the sink.",
                &self.rollups_written,
            ),
            (
                "ferrotrace_tail_sampling_late_spans_total",
                MetricType::Counter,
                "Spans that arrived after their trace was decided and followed the cached decision.",
                &self.tail_late_spans,
            ),
            (
                "ferrotrace_tail_sampling_decision_cache_evictions_total",
                MetricType::Counter,
                "Tail-sampling decisions forgotten to make room in the decision cache (sampling.tail.decision_cache_entries); a later span of such a trace is held and decided again.",
                &self.tail_decision_cache_evictions,
            ),
            (
                "ferrotrace_tail_sampling_held_traces",
                MetricType::Gauge,
                "Traces held by the tail sampler waiting for a decision.",
                &self.tail_held_traces,
            ),
            (
                "ferrotrace_tail_sampling_held_bytes",
                MetricType::Gauge,
                "Approximate bytes of spans held by the tail sampler.",
                &self.tail_held_bytes,
            ),
            (
                "ferrotrace_redact_attributes_dropped_total",
                MetricType::Counter,
                "Attributes removed by redact.drop_keys.",
                &self.redact_attributes_dropped,
            ),
            (
                "ferrotrace_sampling_adaptive_recomputations_total",
                MetricType::Counter,
                "Times the adaptive sampling rates were recomputed and the served strategies replaced.",
                &self.sampling_adaptive_recomputations,
            ),
            (
                "ferrotrace_sampling_adaptive_operations",
                MetricType::Gauge,
                "(service, operation) pairs whose adaptive sampling rate is tracked now.",
                &self.sampling_adaptive_operations,
            ),
            (
                "ferrotrace_sampling_adaptive_settings_conflicts",
                MetricType::Gauge,
                "Adaptive sampling with source = \"store\": distinct [sampling_api] settings other than this collector's announced in the shared store by collectors in the last window; above 0, collectors serve different strategies (the error log names the differing setting).",
                &self.sampling_adaptive_settings_conflicts,
            ),
            (
                "ferrotrace_sampling_adaptive_late_writers_total",
                MetricType::Counter,
                "Adaptive sampling with source = \"store\": collectors seen in the previous period that had not marked their counts of a period written when this collector's bounded wait ended and it read the store anyway (its strategy for that period may differ from theirs).",
                &self.sampling_adaptive_late_writers,
            ),
            (
                "ferrotrace_sampling_adaptive_dropped_total",
                MetricType::Counter,
                "Root spans not counted for adaptive sampling because sampling_api.adaptive.max_operations pairs were already tracked in the period.",
                &self.sampling_adaptive_dropped,
            ),
            (
                "ferrotrace_rollup_spans_observed_total",
                MetricType::Counter,
                "Spans observed by the rollup aggregator (every span received, before sampling).",
                &self.rollup_spans_observed,
            ),
            (
                "ferrotrace_rollup_early_flushes_total",
                MetricType::Counter,
                "Times rollups.max_series forced the in-memory rollups to be flushed before their minute ended.",
                &self.rollup_early_flushes,
            ),
            (
                "ferrotrace_rollup_wal_full_flushes_total",
                MetricType::Counter,
                "Times the rollups of unfinished minutes were written early because the write-ahead log was nearly full (its segments wait for their spans' rollups).",
                &self.rollup_wal_full_flushes,
            ),
            (
                "ferrotrace_rollup_replayed_already_stored_total",
                MetricType::Counter,
                "Rollup contributions (operation counts, caller edges) of spans replayed from the WAL that were not counted again because the sink had stored them before the restart.",
                &self.rollup_replayed_already_stored,
            ),
            (
                "ferrotrace_up",
                MetricType::Gauge,
                "Always 1 while the collector runs.",
                &ONE,
            ),
        ];
        for (name, kind, help, v) in scalars {
            f.single(name, kind, help, v.load(Relaxed))?;
        }
        self.memory.encode(f)?;
        self.net.encode(f)?;
        self.udp.encode(f)?;
        f.counter(
            "ferrotrace_attribute_depth_truncated_total",
            "Attribute values nested (arrays, kvlists) deeper than the documented depth (16); the deeper part was replaced by an empty value.",
            self.attribute_depth_truncated.load(Relaxed),
        )?;
        self.sink_write_latency.encode(
            f,
            "ferrotrace_sink_write_seconds",
            "Sink batch write latency (successful writes).",
        )?;
        self.ack_latency.encode(
            f,
            "ferrotrace_receiver_ack_seconds",
            "Time in the collector from a request to its acknowledgement (WAL durable), decoding included (OTLP/HTTP: reading the body too).",
        )?;
        self.decode_latency.encode(
            f,
            "ferrotrace_receiver_decode_seconds",
            "Time a receiver took to decode one request body into spans.",
        )?;
        self.wal_group_wait.encode(
            f,
            "ferrotrace_wal_group_wait_seconds",
            "Per WAL append: from the append until its group's write started (behind the previous group's write and fsync).",
        )?;
        self.wal_write_latency.encode(
            f,
            "ferrotrace_wal_write_seconds",
            "Per WAL group commit: the write of the group's records.",
        )?;
        self.wal_fsync_latency.encode(
            f,
            "ferrotrace_wal_fsync_seconds",
            "Per WAL fsync (fdatasync of the current segment).",
        )?;
        self.wal_rotate_latency.encode(
            f,
            "ferrotrace_wal_rotate_seconds",
            "Per WAL segment rotation, while the appends of the group that rotates wait.",
        )?;
        self.wal_append_latency.encode(
            f,
            "ferrotrace_wal_append_seconds",
            "Per WAL append as the receiver sees it: from the append until its task has the durable answer.",
        )
    }
}

impl CounterVec {
    /// Writes the family `name` with one series per label value.
    pub fn encode(&self, f: &mut Families, name: &str, help: &str, label: &str) -> EncodeResult {
        let rows = self.snapshot();
        f.family(
            name,
            MetricType::Counter,
            help,
            rows.iter().map(|(k, n)| ([(label, k.as_str())], *n)),
        )
    }
}
