//! The cold tier's self-metrics.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::{Collector, EncodeResult, Families, MetricType};

/// Counters and gauges of the cold tier (rendered on `/metrics`).
#[derive(Debug, Default)]
pub struct ColdStats {
    /// Files in the cold tier (gauge).
    pub files: AtomicU64,
    /// Bytes of those files (gauge).
    pub bytes: AtomicU64,
    /// Spans in those files (gauge; duplicates from a retried run included).
    pub spans: AtomicU64,
    /// Start of the oldest cold span (ns; 0 = empty).
    pub oldest_ns: AtomicU64,
    /// Tiering runs completed / failed.
    pub runs: AtomicU64,
    /// Tiering runs that failed (the next run retries).
    pub failures: AtomicU64,
    /// Files written.
    pub files_written: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Spans copied from the hot store into cold files.
    pub spans_written: AtomicU64,
    /// Spans that aged out of the hot store without going cold (policy).
    pub spans_not_kept: AtomicU64,
    /// Spans that arrived already older than a running tiering pass's cutoff
    /// and were written straight to the cold tier (policy applied).
    pub late_spans: AtomicU64,
    /// Spans a size or disk-full eviction copied cold before deleting them hot.
    pub spans_moved_by_eviction: AtomicU64,
    /// Size or disk-full evictions that deleted spans without the cold copy.
    pub eviction_copy_failures: AtomicU64,
    /// Cold files deleted by age (`cold_days`).
    pub files_evicted: AtomicU64,
    /// Spans in those files.
    pub spans_evicted: AtomicU64,
    /// Trace-by-id lookups that consulted the cold tier (one per call).
    pub lookups: AtomicU64,
    /// Searches that consulted the cold tier.
    pub searches: AtomicU64,
    /// Files a search left unread because its page was settled early.
    pub search_files_skipped: AtomicU64,
    /// Files whose rows a cold read opened (lookups and searches).
    pub files_opened: AtomicU64,
    /// File indexes (footer and trace-id bloom filters) fetched into the cache.
    pub index_loads: AtomicU64,
    /// Bytes fetched from the cold location by reads (indexes included).
    pub bytes_read: AtomicU64,
    /// Cold reads refused for exceeding `max_files_per_query` or `max_bytes_per_query`.
    pub limit_errors: AtomicU64,
    /// Merged files written by compaction.
    pub compactions: AtomicU64,
    /// Small files compaction replaced (deleted).
    pub compaction_files_replaced: AtomicU64,
    /// Spans written into merged files.
    pub compaction_spans: AtomicU64,
    /// Compaction passes that failed (retried after the next tiering run).
    pub compaction_failures: AtomicU64,
    /// Interrupted compactions finished (or undone) by a later pass.
    pub compaction_recoveries: AtomicU64,
}

/// Registered with [`crate::metrics::Metrics::register`] once the tier is open.
impl Collector for ColdStats {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> EncodeResult {
        let f = &mut Families::new(encoder);
        let gauges: [(&str, MetricType, &str, &AtomicU64); 3] = [
            (
                "ferrotrace_cold_files",
                MetricType::Gauge,
                "Files in the cold tier.",
                &self.files,
            ),
            (
                "ferrotrace_cold_bytes",
                MetricType::Gauge,
                "Bytes of the cold tier's files.",
                &self.bytes,
            ),
            (
                "ferrotrace_cold_spans",
                MetricType::Gauge,
                "Spans in the cold tier's files.",
                &self.spans,
            ),
        ];
        for (name, kind, help, v) in gauges {
            f.single(name, kind, help, v.load(Relaxed))?;
        }
        f.gauge(
            "ferrotrace_cold_oldest_timestamp_seconds",
            "Start time of the oldest cold span (Unix seconds; 0 = empty).",
            self.oldest_ns.load(Relaxed) as f64 / 1e9,
        )?;
        let rows: [(&str, MetricType, &str, &AtomicU64); 23] = [
            (
                "ferrotrace_cold_tiering_runs_total",
                MetricType::Counter,
                "Tiering runs completed.",
                &self.runs,
            ),
            (
                "ferrotrace_cold_tiering_failures_total",
                MetricType::Counter,
                "Tiering runs that failed (retried at the next interval).",
                &self.failures,
            ),
            (
                "ferrotrace_cold_files_written_total",
                MetricType::Counter,
                "Cold files written.",
                &self.files_written,
            ),
            (
                "ferrotrace_cold_bytes_written_total",
                MetricType::Counter,
                "Bytes of cold files written.",
                &self.bytes_written,
            ),
            (
                "ferrotrace_cold_spans_written_total",
                MetricType::Counter,
                "Spans moved from the hot store into cold files.",
                &self.spans_written,
            ),
            (
                "ferrotrace_cold_spans_not_kept_total",
                MetricType::Counter,
                "Spans that aged out of the hot store without going cold (cold.policy).",
                &self.spans_not_kept,
            ),
            (
                "ferrotrace_cold_late_spans_total",
                MetricType::Counter,
                "Spans that arrived older than a running tiering pass's cutoff and went straight to the cold tier (before cold.policy).",
                &self.late_spans,
            ),
            (
                "ferrotrace_cold_spans_moved_by_eviction_total",
                MetricType::Counter,
                "Spans a size or disk-full eviction copied to the cold tier before deleting them from the hot store.",
                &self.spans_moved_by_eviction,
            ),
            (
                "ferrotrace_cold_eviction_copy_failures_total",
                MetricType::Counter,
                "Size or disk-full evictions that deleted the oldest spans without the cold copy (copy failed or a tiering pass held the tier); collection continues.",
                &self.eviction_copy_failures,
            ),
            (
                "ferrotrace_cold_evicted_files_total",
                MetricType::Counter,
                "Cold files deleted by age (cold.cold_days).",
                &self.files_evicted,
            ),
            (
                "ferrotrace_cold_evicted_spans_total",
                MetricType::Counter,
                "Spans in cold files deleted by age.",
                &self.spans_evicted,
            ),
            (
                "ferrotrace_cold_lookups_total",
                MetricType::Counter,
                "Trace-by-id reads that consulted the cold tier.",
                &self.lookups,
            ),
            (
                "ferrotrace_cold_searches_total",
                MetricType::Counter,
                "Searches that consulted the cold tier.",
                &self.searches,
            ),
            (
                "ferrotrace_cold_search_files_skipped_total",
                MetricType::Counter,
                "Cold files a search left unread because its page was already settled.",
                &self.search_files_skipped,
            ),
            (
                "ferrotrace_cold_files_opened_total",
                MetricType::Counter,
                "Cold files whose rows a read opened.",
                &self.files_opened,
            ),
            (
                "ferrotrace_cold_index_loads_total",
                MetricType::Counter,
                "Cold file indexes (footer and trace-id bloom filters) fetched into the cache.",
                &self.index_loads,
            ),
            (
                "ferrotrace_cold_read_bytes_total",
                MetricType::Counter,
                "Bytes fetched from the cold location by reads.",
                &self.bytes_read,
            ),
            (
                "ferrotrace_cold_limit_errors_total",
                MetricType::Counter,
                "Cold reads refused by cold.max_files_per_query or cold.max_bytes_per_query.",
                &self.limit_errors,
            ),
            (
                "ferrotrace_cold_compaction_files_written_total",
                MetricType::Counter,
                "Merged cold files written by compaction.",
                &self.compactions,
            ),
            (
                "ferrotrace_cold_compaction_files_replaced_total",
                MetricType::Counter,
                "Small cold files replaced by merged ones and deleted.",
                &self.compaction_files_replaced,
            ),
            (
                "ferrotrace_cold_compaction_spans_total",
                MetricType::Counter,
                "Spans written into merged cold files.",
                &self.compaction_spans,
            ),
            (
                "ferrotrace_cold_compaction_failures_total",
                MetricType::Counter,
                "Compaction passes that failed (the next tiering run retries).",
                &self.compaction_failures,
            ),
            (
                "ferrotrace_cold_compaction_recoveries_total",
                MetricType::Counter,
                "Interrupted compactions a later pass finished or undid.",
                &self.compaction_recoveries,
            ),
        ];
        for (name, kind, help, v) in rows {
            f.single(name, kind, help, v.load(Relaxed))?;
        }
        Ok(())
    }
}
