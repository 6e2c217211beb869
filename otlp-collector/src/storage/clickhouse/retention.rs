//! Retention and eviction: whole day partitions dropped, the rest of the
//! cutoff day removed with a mutation; disk usage.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clickhouse::{Client, Row};
use serde::Deserialize;

use super::connection::{map_err, on_one_replica};
use super::{exec, ClickHouseStore};
use crate::rollup::MINUTE_NS;
use crate::storage::sink_common::DAY_NS;
use crate::storage::{
    DiskUsage, EvictionReport, Retention, RetentionReport, StorageError, StorageResult,
};

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
    /// every node and table) add up to `bytes` (at least one), through
    /// [`apply_retention`](Self::apply_retention) with the end of the last
    /// of those days as the cutoff.
    async fn evict_oldest(&self, bytes: u64, _give_back: bool) -> StorageResult<EvictionReport> {
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
        let mut freed = 0u64;
        let mut last = None;
        for (day, size) in days {
            if bytes == 0 || (last.is_some() && freed >= bytes) {
                break;
            }
            freed = freed.saturating_add(size);
            last = Some(day);
        }
        let Some(day) = last else {
            return Ok(EvictionReport::default());
        };
        let cutoff = day.saturating_add(1).saturating_mul(DAY_NS);
        let report = self.apply_retention(cutoff).await?;
        Ok(EvictionReport {
            spans_deleted: report.spans_deleted,
            rollups_deleted: report.rollups_deleted,
            cutoff_ns: cutoff,
        })
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
            .retain_table(node, "ft_traces", "start_ns", cutoff_ns)
            .await?;
        self.retain_table(node, "ft_spans", "start_ns", cutoff_ns)
            .await?;
        if cutoff_ns >= MINUTE_NS {
            // A minute bucket goes only when all of it is older than the cutoff.
            let bound = cutoff_ns - MINUTE_NS + 1;
            report.rollups_deleted += self
                .retain_table(node, "ft_op_rollups", "minute_ns", bound)
                .await?;
            report.rollups_deleted += self
                .retain_table(node, "ft_edge_rollups", "minute_ns", bound)
                .await?;
            // Bookkeeping, not counted as rollup rows.
            self.retain_table(node, "ft_rollup_origins", "minute_ns", bound)
                .await?;
            self.retain_table(node, "ft_sampling_counts", "period_start_ns", bound)
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
    /// Returns the rows removed (partition row counts include not-yet-merged duplicates).
    pub(super) async fn retain_table(
        &self,
        node: &Client,
        table: &str,
        time_col: &str,
        cutoff: u64,
    ) -> StorageResult<u64> {
        let physical = format!("{table}{}", self.local_suffix);
        let mut removed = 0;
        for (day, rows) in self.partitions(node, &physical).await? {
            if (day + 1).saturating_mul(DAY_NS) <= cutoff {
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
