//! Retention and eviction: whole day partitions dropped, the rest of the
//! cutoff day removed with a mutation; disk usage.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clickhouse::{Client, Row};
use serde::Deserialize;

use super::connection::{map_err, on_one_replica};
use super::{exec, ClickHouseStore};
use crate::model::hex;
use crate::rollup::MINUTE_NS;
use crate::storage::sink_common::{
    day_eviction_cutoff, day_tier_cutoff, evict_days_before, evict_oldest_days, DAY_NS,
};
use crate::storage::span_codec::decode_span;
use crate::storage::{
    DiskUsage, EvictionReport, ExportCursor, ExportPage, Retention, RetentionReport, StorageError,
    StorageResult,
};

/// A span blob with its key, as the tiering copy reads them.
#[derive(Row, Deserialize)]
struct ExportRow {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    start_ns: u64,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// The first trace id of bucket `b` of `n` (an even split of the ids'
/// first 8 bytes), or `None` past the last bucket.
fn bucket_start(b: u64, n: u64) -> Option<[u8; 16]> {
    if b >= n {
        return None;
    }
    let prefix = ((u128::from(b) << 64) / u128::from(n.max(1))) as u64;
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&prefix.to_be_bytes());
    Some(id)
}

#[async_trait]
impl Retention for ClickHouseStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        let mut report = RetentionReport::default();
        for replicas in &self.nodes {
            // Replicated tables replicate partition drops and mutations: one
            // replica of each shard runs them, the next one if it is down.
            let r =
                on_one_replica(replicas, "retention", |c| self.retain_node(c, cutoff_ns)).await?;
            report.spans_deleted += r.spans_deleted;
            report.rollups_deleted += r.rollups_deleted;
        }
        Ok(report)
    }

    /// The compressed size of the active parts of every table, one copy of
    /// the data: each shard's size read on its first reachable replica (the
    /// replicas of a shard hold the same rows, so the budget counts the data,
    /// not its copies). `system.parts`, column `bytes`: the compressed size on
    /// ClickHouse 18.16, an alias of `bytes_on_disk` later.
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        let mut bytes = 0u64;
        for replicas in &self.nodes {
            bytes += on_one_replica(replicas, "disk usage", |c| async move {
                c.query(
                    "SELECT toUInt64(sum(bytes)) FROM system.parts \
                     WHERE database = currentDatabase() AND active AND table LIKE 'ft%'",
                )
                .fetch_one::<u64>()
                .await
                .map_err(map_err)
            })
            .await?;
        }
        #[derive(Row, Deserialize)]
        struct Oldest {
            start: u64,
            rows: u64,
        }
        let oldest = self
            .failover(|| async {
                self.client()
                    .query(
                        "SELECT toUInt64(min(start_ns)) AS start, toUInt64(count()) AS rows \
                         FROM ft_traces",
                    )
                    .fetch_one::<Oldest>()
                    .await
                    .map_err(map_err)
            })
            .await?;
        Ok(Some(DiskUsage {
            dir: None,
            file_bytes: bytes,
            live_bytes: bytes,
            oldest_ns: (oldest.rows > 0).then_some(oldest.start),
        }))
    }

    /// Drops whole day partitions, oldest first, until their sizes (over
    /// every node and table) add up to `bytes` (at least one).
    async fn evict_oldest(&self, bytes: u64, give_back: bool) -> StorageResult<EvictionReport> {
        evict_oldest_days(self, bytes, give_back).await
    }

    async fn evict_before(&self, cutoff_ns: u64, _: bool) -> StorageResult<EvictionReport> {
        evict_days_before(self, cutoff_ns).await
    }

    /// Whole UTC days: the hot delete after a pass drops partitions
    /// (`DROP PARTITION`), never a mutation (which rewrites every part).
    fn tier_cutoff(&self, cutoff_ns: u64) -> u64 {
        day_tier_cutoff(cutoff_ns)
    }

    /// One day partition of `ft_traces` (the blobs, ordered by
    /// `(trace_id, span_id)`) at a time, oldest first. 18.16 cannot stop
    /// reading at a `LIMIT` in key order (every page would read the rest
    /// of the day), so a day is split into trace-id buckets of about half a
    /// page each (its row count over the ids' first 8 bytes, which are
    /// random): each page reads one bucket's granules through the primary
    /// key, and the day is read about once. A bucket with more than a page
    /// (ids that are not random) continues by key in the next pages.
    /// Copies of a span not merged yet are returned once (`LIMIT 1 BY`).
    async fn export_before(
        &self,
        cutoff_ns: u64,
        after: Option<ExportCursor>,
        limit: usize,
    ) -> StorageResult<ExportPage> {
        let limit = limit.max(1);
        let table = format!("ft_traces{}", self.local_suffix);
        let mut days = std::collections::BTreeSet::new();
        for replicas in &self.nodes {
            let parts = on_one_replica(replicas, "export", |c| self.partitions(c, &table)).await?;
            days.extend(
                parts
                    .into_keys()
                    .filter(|d| d.saturating_mul(DAY_NS) < cutoff_ns),
            );
        }
        let mut page = ExportPage::default();
        let mut at = after;
        for day in days {
            let day_i = i64::try_from(day).unwrap_or(i64::MAX);
            if at.is_some_and(|c| day_i < c.row) {
                continue;
            }
            let lo = day * DAY_NS;
            let hi = (day + 1).saturating_mul(DAY_NS).min(cutoff_ns);
            let (mut buckets, mut bucket, mut key) = match at.filter(|c| c.row == day_i) {
                Some(c) => (c.slice >> 32, c.slice & 0xFFFF_FFFF, c.key),
                None => (0, 0, None),
            };
            if buckets == 0 {
                let rows = self
                    .failover(|| async {
                        self.query(
                            "SELECT count() FROM ft_traces WHERE start_ns >= ? AND start_ns < ?",
                        )
                        .bind(lo)
                        .bind(hi)
                        .fetch_one::<u64>()
                        .await
                        .map_err(map_err)
                    })
                    .await?;
                let per_bucket = (limit as u64 / 2).max(1);
                buckets = rows.div_ceil(per_bucket).clamp(1, u64::from(u32::MAX));
                bucket = 0;
                key = None;
            }
            while let Some(start) = bucket_start(bucket, buckets) {
                let want = limit - page.spans.len();
                let end = bucket_start(bucket + 1, buckets);
                let rows = self.export_rows(lo, hi, start, end, key, want).await?;
                let full = rows.len() >= want;
                for r in rows {
                    page.spans.push(decode_span(&r.payload)?);
                    key = Some((r.trace_id, r.span_id));
                    at = Some(ExportCursor {
                        start_ns: r.start_ns,
                        row: day_i,
                        slice: (buckets << 32) | bucket,
                        key,
                    });
                }
                if full {
                    page.next = at;
                    return Ok(page);
                }
                bucket += 1;
                key = None;
            }
            // The day is done: the next call must not resume inside it.
            at = None;
        }
        Ok(page)
    }

    /// The end of the last of the oldest day partitions whose sizes (over
    /// every node and table) add up to `bytes` (at least one); `None` when
    /// there is none.
    async fn eviction_cutoff(&self, bytes: u64, _give_back: bool) -> StorageResult<Option<u64>> {
        #[derive(Row, Deserialize)]
        struct P {
            partition: String,
            bytes: u64,
        }
        let mut days: BTreeMap<u64, u64> = BTreeMap::new();
        let table = format!("ft_spans{}", self.local_suffix);
        for replicas in &self.nodes {
            let parts = on_one_replica(replicas, "eviction", |c| {
                let table = table.clone();
                async move {
                    c.query(
                        "SELECT partition, toUInt64(sum(bytes)) AS bytes FROM system.parts \
                         WHERE database = currentDatabase() AND active AND table = ? \
                         GROUP BY partition",
                    )
                    .bind(table)
                    .fetch_all::<P>()
                    .await
                    .map_err(map_err)
                }
            })
            .await?;
            for p in parts {
                if let Ok(day) = p.partition.trim_matches('\'').parse::<u64>() {
                    *days.entry(day).or_default() += p.bytes;
                }
            }
        }
        Ok(day_eviction_cutoff(days, bytes))
    }
}

impl ClickHouseStore {
    /// Up to `want` spans of `ft_traces` that start in `[lo, hi)` with a
    /// trace id in `[start, end)`, after `key`, in key order, one copy each.
    async fn export_rows(
        &self,
        lo: u64,
        hi: u64,
        start: [u8; 16],
        end: Option<[u8; 16]>,
        key: Option<([u8; 16], [u8; 8])>,
        want: usize,
    ) -> StorageResult<Vec<ExportRow>> {
        // The trace-id bounds are plain comparisons with a constant, which
        // 18.16's primary-key analysis turns into granule ranges.
        let mut sql = String::from(
            "SELECT trace_id, span_id, start_ns, payload FROM ft_traces \
             WHERE start_ns >= ? AND start_ns < ? AND trace_id >= toFixedString(unhex(?), 16)",
        );
        if end.is_some() {
            sql.push_str(" AND trace_id < toFixedString(unhex(?), 16)");
        }
        if key.is_some() {
            sql.push_str(
                " AND (trace_id > toFixedString(unhex(?), 16) \
                 OR (trace_id = toFixedString(unhex(?), 16) AND span_id > toFixedString(unhex(?), 8)))",
            );
        }
        sql.push_str(" ORDER BY trace_id, span_id LIMIT 1 BY trace_id, span_id LIMIT ?");
        let first = match key {
            Some((t, _)) if t > start => t,
            _ => start,
        };
        self.failover(|| async {
            let mut q = self.query(&sql).bind(lo).bind(hi).bind(hex(&first));
            if let Some(end) = end {
                q = q.bind(hex(&end));
            }
            if let Some((t, s)) = key {
                q = q.bind(hex(&t)).bind(hex(&t)).bind(hex(&s));
            }
            q.bind(want as u64)
                .fetch_all::<ExportRow>()
                .await
                .map_err(map_err)
        })
        .await
    }
}

impl ClickHouseStore {
    /// Retention on the physical tables of one server.
    pub(super) async fn retain_node(
        &self,
        node: &Client,
        cutoff_ns: u64,
    ) -> StorageResult<RetentionReport> {
        let mut report = RetentionReport::default();
        // Count spans from the lookup table: one row per span there too.
        report.spans_deleted += self
            .retain_table(node, "ft_traces", "start_ns", 1, cutoff_ns)
            .await?;
        self.retain_table(node, "ft_spans", "start_ns", 1, cutoff_ns)
            .await?;
        if cutoff_ns >= MINUTE_NS {
            // A minute bucket goes only when all of it is older than the cutoff.
            let bound = cutoff_ns - MINUTE_NS + 1;
            report.rollups_deleted += self
                .retain_table(node, "ft_op_rollups", "minute_ns", MINUTE_NS, bound)
                .await?;
            report.rollups_deleted += self
                .retain_table(node, "ft_edge_rollups", "minute_ns", MINUTE_NS, bound)
                .await?;
            // Bookkeeping, not counted as rollup rows.
            self.retain_table(node, "ft_rollup_origins", "minute_ns", MINUTE_NS, bound)
                .await?;
            // Periods are whole seconds, so their starts are too.
            self.retain_table(
                node,
                "ft_sampling_counts",
                "period_start_ns",
                1_000_000_000,
                bound,
            )
            .await?;
        }
        Ok(report)
    }
}

impl ClickHouseStore {
    /// Active partitions (day numbers) of a physical table on one node.
    pub(super) async fn partitions(
        &self,
        node: &Client,
        table: &str,
    ) -> StorageResult<BTreeMap<u64, u64>> {
        #[derive(Row, Deserialize)]
        struct P {
            partition: String,
            rows: u64,
        }
        let parts = node
            .query(
                "SELECT partition, sum(rows) AS rows FROM system.parts \
                 WHERE database = currentDatabase() AND table = ? AND active GROUP BY partition",
            )
            .bind(table)
            .fetch_all::<P>()
            .await
            .map_err(map_err)?;
        Ok(parts
            .into_iter()
            .filter_map(|p| {
                p.partition
                    .trim_matches('\'')
                    .parse::<u64>()
                    .ok()
                    .map(|d| (d, p.rows))
            })
            .collect())
    }

    /// Deletes rows older than the cutoff in one physical table on one node:
    /// drops whole day partitions, then a mutation for the cutoff's own day.
    /// `time_col` holds multiples of `step` (a minute for rollups), so a
    /// day whose last possible value is before the cutoff is dropped whole:
    /// with a cutoff at midnight (the cold tier's passes) the previous day's
    /// rollups go by `DROP PARTITION`, not by a mutation that rewrites them.
    /// Returns the rows removed (partition row counts include not-yet-merged duplicates).
    pub(super) async fn retain_table(
        &self,
        node: &Client,
        table: &str,
        time_col: &str,
        step: u64,
        cutoff: u64,
    ) -> StorageResult<u64> {
        let physical = format!("{table}{}", self.local_suffix);
        let mut removed = 0;
        for (day, rows) in self.partitions(node, &physical).await? {
            if (day + 1).saturating_mul(DAY_NS) - step.max(1) < cutoff {
                // Partition ids are integers read back from system.parts.
                exec(
                    node,
                    &format!("ALTER TABLE {physical} DROP PARTITION {day}"),
                )
                .await?;
                removed += rows;
            }
        }
        let left = node
            .query(&format!(
                "SELECT count() FROM {physical} WHERE {time_col} < ?"
            ))
            .bind(cutoff)
            .fetch_one::<u64>()
            .await
            .map_err(map_err)?;
        if left > 0 {
            node.query(&format!(
                "ALTER TABLE {physical} DELETE WHERE {time_col} < ?"
            ))
            .bind(cutoff)
            .execute()
            .await
            .map_err(map_err)?;
            let deadline = Instant::now() + Duration::from_secs(self.opts.mutation_timeout_secs);
            loop {
                let pending = node
                    .query(
                        "SELECT count() FROM system.mutations \
                         WHERE database = currentDatabase() AND table = ? AND is_done = 0",
                    )
                    .bind(&physical)
                    .fetch_one::<u64>()
                    .await
                    .map_err(map_err)?;
                if pending == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(StorageError::Unavailable(format!(
                        "retention delete on {physical} still running after {}s; it continues in the server",
                        self.opts.mutation_timeout_secs
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            removed += left;
        }
        Ok(removed)
    }
}
