//! Retention and eviction: whole day partitions dropped, the remainder older
//! than the cutoff deleted; disk usage.

use async_trait::async_trait;

use super::schema::{parse_partition_name, DDL_LOCK};
use super::{from_i64, map_err, to_i64, PostgresStore};
use crate::rollup::MINUTE_NS;
use crate::storage::sink_common::DAY_NS;
use crate::storage::{DiskUsage, EvictionReport, Retention, RetentionReport, StorageResult};

#[async_trait]
impl Retention for PostgresStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        let cutoff = to_i64(cutoff_ns);
        let mut report = RetentionReport::default();
        let parts = self.list_partitions().await?;
        let mut conn = self.pool.get().await?;
        for (day, name) in parts {
            if (day + 1) * (DAY_NS as i64) > cutoff {
                continue;
            }
            let tx = conn.client.transaction().await.map_err(map_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
                .await
                .map_err(map_err)?;
            let n: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {name}"), &[])
                .await
                .map_err(map_err)?
                .get(0);
            // The whole day is older than the cutoff: drop it instead of deleting rows.
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            self.partitions.lock().remove(&day);
            report.spans_deleted += from_i64(n);
            tracing::info!(partition = %name, spans = n, "retention dropped day partition");
        }
        // What remains older than the cutoff: part of the cutoff's own day, and
        // the default partition. Partition pruning limits this to those.
        report.spans_deleted += conn
            .client
            .execute("DELETE FROM ft_spans WHERE start_ns < $1", &[&cutoff])
            .await
            .map_err(map_err)?;
        // A minute bucket goes only when all of it is older than the cutoff.
        if cutoff_ns >= MINUTE_NS {
            let last_minute = to_i64(cutoff_ns - MINUTE_NS);
            report.rollups_deleted += conn
                .client
                .execute(
                    "DELETE FROM ft_op_rollups WHERE minute_ns <= $1",
                    &[&last_minute],
                )
                .await
                .map_err(map_err)?;
            report.rollups_deleted += conn
                .client
                .execute(
                    "DELETE FROM ft_edge_rollups WHERE minute_ns <= $1",
                    &[&last_minute],
                )
                .await
                .map_err(map_err)?;
            // Backstop for WALs that are gone (never pruned by segment);
            // bookkeeping, not counted as rollup rows.
            conn.client
                .execute(
                    "DELETE FROM ft_rollup_origins WHERE minute_ns <= $1",
                    &[&last_minute],
                )
                .await
                .map_err(map_err)?;
        }
        Ok(report)
    }

    /// The tables' total size on the server (`pg_total_relation_size`: data,
    /// indexes, TOAST) of every span partition and the rollup tables.
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_one(
                "SELECT (SELECT COALESCE(SUM(pg_total_relation_size(i.inhrelid)), 0) \
                   FROM pg_inherits i WHERE i.inhparent = 'ft_spans'::regclass)::int8 \
                 + pg_total_relation_size('ft_op_rollups') \
                 + pg_total_relation_size('ft_edge_rollups') \
                 + pg_total_relation_size('ft_rollup_origins'), \
                 (SELECT MIN(start_ns) FROM ft_spans)",
                &[],
            )
            .await
            .map_err(map_err)?;
        let bytes = from_i64(row.get::<_, i64>(0));
        Ok(Some(DiskUsage {
            dir: None,
            file_bytes: bytes,
            live_bytes: bytes,
            oldest_ns: row.get::<_, Option<i64>>(1).map(from_i64),
        }))
    }

    /// Drops whole day partitions, oldest first, until their sizes add up
    /// to `bytes` (at least one), through [`apply_retention`](Self::apply_retention)
    /// with the end of the last of those days as the cutoff (which also
    /// deletes what older spans the default partition holds). A dropped
    /// partition's space goes back to the file system at once.
    async fn evict_oldest(&self, bytes: u64, _give_back: bool) -> StorageResult<EvictionReport> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ft_spans'::regclass",
                &[],
            )
            .await
            .map_err(map_err)?;
        drop(conn);
        let mut days: Vec<(i64, u64)> = rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                Some((parse_partition_name(&name)?, from_i64(r.get::<_, i64>(1))))
            })
            .collect();
        days.sort_unstable();
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
        let cutoff = from_i64(day.saturating_add(1)).saturating_mul(DAY_NS);
        let report = self.apply_retention(cutoff).await?;
        Ok(EvictionReport {
            spans_deleted: report.spans_deleted,
            rollups_deleted: report.rollups_deleted,
            cutoff_ns: cutoff,
        })
    }
}
