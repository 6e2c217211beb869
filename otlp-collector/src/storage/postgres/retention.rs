//! Retention and eviction: whole day partitions dropped, the remainder older
//! than the cutoff deleted; disk usage.

use async_trait::async_trait;

use super::schema::{parse_partition_name, DDL_LOCK};
use super::{from_i64, map_err, to_i64, PostgresStore};
use crate::rollup::MINUTE_NS;
use crate::storage::sink_common::{
    day_eviction_cutoff, day_tier_cutoff, evict_days_before, evict_oldest_days, DAY_NS,
};
use crate::storage::span_codec::decode_span;
use crate::storage::{
    DiskUsage, EvictionReport, ExportCursor, ExportPage, Retention, RetentionReport, StorageError,
    StorageResult,
};

/// The slice id of the default partition in an [`ExportCursor`] (day
/// partitions use their day number).
const DEFAULT_SLICE: i64 = -1;

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
    /// to `bytes` (at least one; which also deletes what older spans the
    /// default partition holds).
    async fn evict_oldest(&self, bytes: u64, give_back: bool) -> StorageResult<EvictionReport> {
        evict_oldest_days(self, bytes, give_back).await
    }

    async fn evict_before(&self, cutoff_ns: u64, _: bool) -> StorageResult<EvictionReport> {
        evict_days_before(self, cutoff_ns).await
    }

    /// Whole UTC days: the hot delete after a pass drops partitions (no
    /// row deletes, no dead tuples to vacuum).
    fn tier_cutoff(&self, cutoff_ns: u64) -> u64 {
        day_tier_cutoff(cutoff_ns)
    }

    /// The default partition first (timestamps far outside the partition
    /// window, mostly old ones), then each day partition that starts
    /// before the cutoff, oldest first; within one, along its primary key
    /// `(trace_id, span_id, start_ns)`, so that each page continues the
    /// index scan where the last one stopped: no sort, and no time index
    /// needed. A page fills up from the next slices when one runs out.
    async fn export_before(
        &self,
        cutoff_ns: u64,
        after: Option<ExportCursor>,
        limit: usize,
    ) -> StorageResult<ExportPage> {
        let limit = limit.max(1);
        let cutoff = to_i64(cutoff_ns);
        let mut slices: Vec<(i64, String)> = vec![(DEFAULT_SLICE, "ft_spans_default".into())];
        slices.extend(
            self.list_partitions()
                .await?
                .into_iter()
                .filter(|(day, _)| day.saturating_mul(DAY_NS as i64) < cutoff),
        );
        let mut at = after;
        let mut page = ExportPage::default();
        let conn = self.pool.get().await?;
        for (slice, table) in slices {
            if at.is_some_and(|c| slice < c.row) {
                continue;
            }
            // Continue inside the cursor's slice; a later slice from its start.
            let (t, s, st) = match at
                .filter(|c| c.row == slice)
                .and_then(|c| c.key.map(|k| (k, c.start_ns)))
            {
                Some(((t, s), st)) => (t.to_vec(), s.to_vec(), to_i64(st)),
                None => (Vec::new(), Vec::new(), i64::MIN),
            };
            let want = (limit - page.spans.len()) as i64;
            // `table` comes from the catalog (`ft_spans_YYYYMMDD`) or is the
            // default partition's fixed name.
            let rows = conn
                .client
                .query(
                    &format!(
                        "SELECT trace_id, span_id, start_ns, payload FROM {table} \
                         WHERE start_ns < $1 AND (trace_id, span_id, start_ns) > ($2, $3, $4) \
                         ORDER BY trace_id, span_id, start_ns LIMIT $5"
                    ),
                    &[&cutoff, &t, &s, &st, &want],
                )
                .await
                .map_err(map_err)?;
            for r in &rows {
                page.spans.push(decode_span(r.get::<_, &[u8]>(3))?);
                let key = (id_bytes(r.get(0))?, id_bytes(r.get(1))?);
                at = Some(ExportCursor {
                    start_ns: from_i64(r.get(2)),
                    row: slice,
                    slice: 0,
                    key: Some(key),
                });
            }
            if page.spans.len() >= limit {
                page.next = at;
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// The end of the last of the oldest day partitions whose sizes add up
    /// to `bytes` (at least one); `None` when there is no day partition.
    async fn eviction_cutoff(&self, bytes: u64, _give_back: bool) -> StorageResult<Option<u64>> {
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
        let days = rows.iter().filter_map(|r| {
            let name: String = r.get(0);
            Some((
                from_i64(parse_partition_name(&name)?),
                from_i64(r.get::<_, i64>(1)),
            ))
        });
        Ok(day_eviction_cutoff(days, bytes))
    }
}

/// A stored id column as a fixed-size id.
fn id_bytes<const N: usize>(v: &[u8]) -> StorageResult<[u8; N]> {
    v.try_into()
        .map_err(|_| StorageError::Backend(format!("stored id of {} bytes, expected {N}", v.len())))
}
