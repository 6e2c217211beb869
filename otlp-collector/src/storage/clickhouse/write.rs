//! The write path: spans as hand-encoded `RowBinary` bodies sent in bounded
//! chunks, rollups, and the WAL rollup origins.

use std::collections::BTreeMap;

use async_trait::async_trait;
use clickhouse::Row;

use super::connection::map_err;
use super::{ClickHouseStore, EdgeRollupRow, OpRollupRow, OriginRow};
use crate::model::Span;
use crate::rollup::{RollupBatch, RollupOrigin};
use crate::storage::rollup_math;
use crate::storage::sink_common::DAY_NS;
use crate::storage::{SpanWriter, StorageError, StorageResult};

/// Bytes of encoded rows handed to the HTTP body at a time: large enough
/// that per-chunk costs vanish, small enough that an insert's memory stays
/// bounded whatever the batch size.
const SEND_CHUNK: usize = 1 << 20;

impl ClickHouseStore {
    pub(super) fn insert_setting<T: Row>(
        &self,
        ins: clickhouse::insert::Insert<T>,
    ) -> clickhouse::insert::Insert<T> {
        let ins = if self.opts.cluster.is_some() {
            // Acknowledged means stored on the shards, not queued on the entry server.
            ins.with_setting("insert_distributed_sync", "1")
        } else {
            ins
        };
        if self.replicated {
            // Replicated tables drop an insert block identical to a recent
            // one. Two different rollup batches can be identical (same minute,
            // same counts) and both count: keep every block.
            ins.with_setting("insert_deduplicate", "0")
                .with_setting("load_balancing", "in_order")
        } else {
            ins
        }
    }

    /// Writes the lookup table first, then the search table: a trace that a
    /// search finds can always be read (a failure in between is healed by
    /// the retry, which deduplicates). Returns once the server acknowledged
    /// both inserts.
    pub(super) async fn insert_spans(&self, spans: &[&Span]) -> StorageResult<()> {
        let mut enc = super::rowbinary::Encoder::default();
        self.insert_rows(
            "ft_traces",
            super::rowbinary::TRACE_COLUMNS,
            spans,
            |s, out| enc.trace_row(s, out),
        )
        .await?;
        self.insert_rows(
            "ft_spans",
            super::rowbinary::SPAN_COLUMNS,
            spans,
            |s, out| enc.span_row(s, out),
        )
        .await
    }

    /// One `INSERT INTO table (columns) FORMAT RowBinary` of every span's row,
    /// sent in chunks of about [`SEND_CHUNK`] bytes as they are encoded (so
    /// the server parses while the rest is encoded and memory stays bounded).
    pub(super) async fn insert_rows(
        &self,
        table: &str,
        columns: &str,
        spans: &[&Span],
        mut row: impl FnMut(&Span, &mut Vec<u8>),
    ) -> StorageResult<()> {
        let mut ins = self
            .client()
            .insert_formatted_with(format!("INSERT INTO {table} ({columns}) FORMAT RowBinary"));
        if self.opts.cluster.is_some() {
            // Acknowledged means stored on the shards, not queued on the entry server.
            ins = ins.with_setting("insert_distributed_sync", "1");
        }
        if self.replicated {
            ins = ins.with_setting("load_balancing", "in_order");
        }
        let mut buf = Vec::with_capacity(SEND_CHUNK + SEND_CHUNK / 4);
        for s in spans {
            row(s, &mut buf);
            if buf.len() >= SEND_CHUNK {
                let chunk =
                    std::mem::replace(&mut buf, Vec::with_capacity(SEND_CHUNK + SEND_CHUNK / 4));
                ins.send(chunk.into()).await.map_err(map_err)?;
            }
        }
        if !buf.is_empty() {
            ins.send(buf.into()).await.map_err(map_err)?;
        }
        ins.end().await.map_err(map_err)
    }
}

#[async_trait]
impl SpanWriter for ClickHouseStore {
    fn name(&self) -> &'static str {
        "clickhouse"
    }
    async fn ping(&self) -> StorageResult<()> {
        self.failover(move || async move {
            self.client()
                .query("SELECT 1")
                .execute()
                .await
                .map_err(map_err)
        })
        .await
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        self.failover(move || async move {
            if spans.is_empty() {
                return Ok(());
            }
            let mut by_day: BTreeMap<u64, Vec<&Span>> = BTreeMap::new();
            for s in spans {
                by_day.entry(s.start_ns / DAY_NS).or_default().push(s);
            }
            if by_day.len() <= self.opts.max_days_per_insert.max(1) {
                return self.insert_spans(&spans.iter().collect::<Vec<_>>()).await;
            }
            let days: Vec<Vec<&Span>> = by_day.into_values().collect();
            for chunk in days.chunks(self.opts.max_days_per_insert.max(1)) {
                let group: Vec<&Span> = chunk.iter().flatten().copied().collect();
                self.insert_spans(&group).await?;
            }
            Ok(())
        })
        .await
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        self.failover(move || async move {
            if !rollups.operations.is_empty() {
                let mut ins = self.insert_setting(
                    self.client()
                        .insert::<OpRollupRow<'_>>("ft_op_rollups")
                        .await
                        .map_err(map_err)?,
                );
                for r in &rollups.operations {
                    let row = OpRollupRow {
                        minute_ns: r.minute_ns,
                        service: &r.service,
                        operation: &r.operation,
                        kind: r.kind as u8,
                        count: r.count,
                        errors: r.errors,
                        sketch: rollup_math::encode_sketch(&r.sketch)?,
                    };
                    ins.write(&row).await.map_err(map_err)?;
                }
                ins.end().await.map_err(map_err)?;
            }
            if !rollups.edges.is_empty() {
                let mut ins = self.insert_setting(
                    self.client()
                        .insert::<EdgeRollupRow<'_>>("ft_edge_rollups")
                        .await
                        .map_err(map_err)?,
                );
                for r in &rollups.edges {
                    let row = EdgeRollupRow {
                        minute_ns: r.minute_ns,
                        caller: &r.caller,
                        callee: &r.callee,
                        calls: r.calls,
                        errors: r.errors,
                        sketch: rollup_math::encode_sketch(&r.sketch)?,
                    };
                    ins.write(&row).await.map_err(map_err)?;
                }
                ins.end().await.map_err(map_err)?;
            }
            // No transactions: after the rows (see the module documentation).
            if !rollups.origins.is_empty() {
                let mut ins = self.insert_setting(
                    self.client()
                        .insert::<OriginRow>("ft_rollup_origins")
                        .await
                        .map_err(map_err)?,
                );
                for o in &rollups.origins {
                    let row = OriginRow {
                        instance: rollups.wal_instance,
                        segment: o.segment,
                        minute_ns: o.minute_ns,
                        ranges: o.encode_ranges(),
                    };
                    ins.write(&row).await.map_err(map_err)?;
                }
                ins.end().await.map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        self.failover(move || async move {
            let rows = self
                .query(
                    "SELECT instance, segment, minute_ns, ranges FROM ft_rollup_origins \
                     WHERE instance = ? AND has(?, segment)",
                )
                .bind(instance)
                .bind(segments.to_vec())
                .fetch_all::<OriginRow>()
                .await
                .map_err(map_err)?;
            rows.into_iter()
                .map(|r| {
                    Ok(RollupOrigin {
                        segment: r.segment,
                        minute_ns: r.minute_ns,
                        parts: RollupOrigin::decode_ranges(&r.ranges).map_err(|e| {
                            StorageError::Backend(format!(
                                "stored rollup origin of WAL segment {} is corrupt ({e}); delete its rows from ft_rollup_origins",
                                r.segment
                            ))
                        })?,
                    })
                })
                .collect()
        })
        .await
    }
    async fn prune_rollup_origins(
        &self,
        _instance: u64,
        _below_segment: u64,
    ) -> StorageResult<u64> {
        // A delete is a mutation rewriting parts; retention drops the day
        // partitions instead (see the module documentation).
        Ok(0)
    }
}
