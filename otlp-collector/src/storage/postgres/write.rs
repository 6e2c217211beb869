//! The write path: spans through binary `COPY` into a per-connection staging
//! table and one de-duplicating `INSERT ... SELECT`, rollups, and the WAL
//! rollup origins.

use async_trait::async_trait;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::{attrs_json, esc, from_i64, map_err, to_i64, PostgresStore, SPAN_COLUMNS, SPAN_TYPES};
use crate::model::Span;
use crate::rollup::{RollupBatch, RollupOrigin};
use crate::storage::rollup_math;
use crate::storage::sink_common::DAY_NS;
use crate::storage::span_codec::encode_span;
use crate::storage::{SpanWriter, StorageError, StorageResult};

impl PostgresStore {
    pub(super) async fn copy_spans(&self, spans: &[Span]) -> StorageResult<u64> {
        let mut conn = self.pool.get().await?;
        if !conn.staged {
            // A session-local staging table: COPY cannot skip duplicates, the
            // INSERT from it can.
            conn.client
                .batch_execute(
                    "CREATE TEMP TABLE IF NOT EXISTS ft_stage (LIKE ft_spans) ON COMMIT DELETE ROWS",
                )
                .await
                .map_err(map_err)?;
            conn.staged = true;
        }
        let tx = conn.client.transaction().await.map_err(map_err)?;
        let sink = tx
            .copy_in(&format!(
                "COPY ft_stage ({SPAN_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(map_err)?;
        let writer = BinaryCopyInWriter::new(sink, &SPAN_TYPES);
        tokio::pin!(writer);
        for s in spans {
            let (trace_id, span_id) = (&s.trace_id[..], &s.span_id[..]);
            let parent = s.parent_span_id.as_ref().map(|p| &p[..]);
            let (service, name) = (esc(&s.service_name), esc(&s.name));
            let (service, name): (&str, &str) = (&service, &name);
            let kind = s.kind as i16;
            let (start, end, dur) = (
                to_i64(s.start_ns),
                to_i64(s.end_ns),
                to_i64(s.duration_ns()),
            );
            let status = s.status_code as i16;
            let attrs = attrs_json(s);
            let payload = encode_span(s);
            writer
                .as_mut()
                .write(&[
                    &trace_id, &span_id, &parent, &service, &name, &kind, &start, &end, &dur,
                    &status, &attrs, &payload,
                ])
                .await
                .map_err(map_err)?;
        }
        writer.as_mut().finish().await.map_err(map_err)?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO ft_spans ({SPAN_COLUMNS}) \
                     SELECT DISTINCT ON (trace_id, span_id) {SPAN_COLUMNS} FROM ft_stage s \
                     WHERE NOT EXISTS (SELECT 1 FROM ft_spans t \
                                       WHERE t.trace_id = s.trace_id AND t.span_id = s.span_id) \
                     ORDER BY trace_id, span_id, start_ns \
                     ON CONFLICT DO NOTHING"
                ),
                &[],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(inserted)
    }
}

#[async_trait]
impl SpanWriter for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }
    async fn ping(&self) -> StorageResult<()> {
        // A connection of its own: the pool's may all be busy with long
        // writes or queries, which says nothing about the server answering.
        let mut probe = self.probe.lock().await;
        if probe.as_ref().is_none_or(|c| c.is_closed()) {
            *probe = Some(self.pool.connect().await?.client);
        }
        let Some(client) = probe.as_ref() else {
            return Ok(());
        };
        if let Err(e) = client.simple_query("SELECT 1").await {
            *probe = None;
            return Err(map_err(e));
        }
        Ok(())
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        if spans.is_empty() {
            return Ok(());
        }
        let today = (crate::model::now_ns() / DAY_NS) as i64;
        let mut days: Vec<i64> = spans.iter().map(|s| (s.start_ns / DAY_NS) as i64).collect();
        days.extend(today..=today + self.opts.partition_future_days as i64);
        self.ensure_partitions(&days).await?;
        self.copy_spans(spans).await?;
        Ok(())
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        if rollups.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        let tx = conn.client.transaction().await.map_err(map_err)?;
        if !rollups.operations.is_empty() {
            let sink = tx
                .copy_in(
                    "COPY ft_op_rollups (minute_ns, service, operation, kind, count, errors, sketch) \
                     FROM STDIN (FORMAT binary)",
                )
                .await
                .map_err(map_err)?;
            let w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT2,
                    Type::INT8,
                    Type::INT8,
                    Type::BYTEA,
                ],
            );
            tokio::pin!(w);
            for r in &rollups.operations {
                let sketch = rollup_math::encode_sketch(&r.sketch)?.into_bytes();
                let (svc, op) = (esc(&r.service), esc(&r.operation));
                let (svc, op): (&str, &str) = (&svc, &op);
                w.as_mut()
                    .write(&[
                        &to_i64(r.minute_ns),
                        &svc,
                        &op,
                        &(r.kind as i16),
                        &to_i64(r.count),
                        &to_i64(r.errors),
                        &sketch,
                    ])
                    .await
                    .map_err(map_err)?;
            }
            w.as_mut().finish().await.map_err(map_err)?;
        }
        if !rollups.edges.is_empty() {
            let sink = tx
                .copy_in(
                    "COPY ft_edge_rollups (minute_ns, caller, callee, calls, errors, sketch) \
                     FROM STDIN (FORMAT binary)",
                )
                .await
                .map_err(map_err)?;
            let w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                    Type::BYTEA,
                ],
            );
            tokio::pin!(w);
            for r in &rollups.edges {
                let sketch = rollup_math::encode_sketch(&r.sketch)?.into_bytes();
                let (caller, callee) = (esc(&r.caller), esc(&r.callee));
                let (caller, callee): (&str, &str) = (&caller, &callee);
                w.as_mut()
                    .write(&[
                        &to_i64(r.minute_ns),
                        &caller,
                        &callee,
                        &to_i64(r.calls),
                        &to_i64(r.errors),
                        &sketch,
                    ])
                    .await
                    .map_err(map_err)?;
            }
            w.as_mut().finish().await.map_err(map_err)?;
        }
        // Same transaction as the rows: both are stored or neither.
        if !rollups.origins.is_empty() {
            let ins = tx
                .prepare(
                    "INSERT INTO ft_rollup_origins (instance, segment, minute_ns, ranges)                      VALUES ($1, $2, $3, $4)",
                )
                .await
                .map_err(map_err)?;
            let instance = rollups.wal_instance as i64;
            for o in &rollups.origins {
                tx.execute(
                    &ins,
                    &[
                        &instance,
                        &to_i64(o.segment),
                        &to_i64(o.minute_ns),
                        &o.encode_ranges(),
                    ],
                )
                .await
                .map_err(map_err)?;
            }
        }
        tx.commit().await.map_err(map_err)
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        let segs: Vec<i64> = segments.iter().map(|s| to_i64(*s)).collect();
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT segment, minute_ns, ranges FROM ft_rollup_origins \
                 WHERE instance = $1 AND segment = ANY($2)",
                &[&(instance as i64), &segs],
            )
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let segment = from_i64(r.get(0));
                let ranges: &[u8] = r.get(2);
                Ok(RollupOrigin {
                    segment,
                    minute_ns: from_i64(r.get(1)),
                    parts: RollupOrigin::decode_ranges(ranges).map_err(|e| {
                        StorageError::Backend(format!(
                            "stored rollup origin of WAL segment {segment} is corrupt ({e}); delete its rows from ft_rollup_origins"
                        ))
                    })?,
                })
            })
            .collect()
    }
    async fn prune_rollup_origins(&self, instance: u64, below_segment: u64) -> StorageResult<u64> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "DELETE FROM ft_rollup_origins WHERE instance = $1 AND segment < $2",
                &[&(instance as i64), &to_i64(below_segment)],
            )
            .await
            .map_err(map_err)
    }
}
