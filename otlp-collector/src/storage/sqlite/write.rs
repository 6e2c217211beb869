//! The writer: spans (through [`layout::insert_spans`]), rollups merged into
//! their minute rows, and the WAL rollup origins written in the rollups'
//! transaction.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{from_i64, layout, map_err, to_i64, SqliteStore};
use crate::model::Span;
use crate::rollup::{RollupBatch, RollupOrigin};
use crate::storage::rollup_math;
use crate::storage::{SpanWriter, StorageError, StorageResult};

/// The rollup origins table, created after the span layout ([`layout`](super::layout)) (idempotent). One row
/// per (WAL segment, minute) of each written rollup batch; `instance` is the
/// WAL identity stored bit for bit as a signed integer.
pub(super) const ROLLUP_ORIGINS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS rollup_origins (
    instance  INTEGER NOT NULL,
    segment   INTEGER NOT NULL,
    minute_ns INTEGER NOT NULL,
    ranges    BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_origins_segment ON rollup_origins (instance, segment);
CREATE INDEX IF NOT EXISTS rollup_origins_minute ON rollup_origins (minute_ns);
"#;

pub(super) fn write_spans_tx(conn: &mut Connection, spans: &[Span]) -> StorageResult<()> {
    let tx = conn.transaction().map_err(map_err)?;
    layout::insert_spans(&tx, spans)?;
    tx.commit().map_err(map_err)
}

fn write_rollups_tx(conn: &mut Connection, batch: &RollupBatch) -> StorageResult<()> {
    let tx = conn.transaction().map_err(map_err)?;
    {
        let mut get_op = tx
            .prepare_cached(
                "SELECT count, errors, sketch FROM op_rollups WHERE minute_ns = ?1 AND service = ?2 AND operation = ?3 AND kind = ?4",
            )
            .map_err(map_err)?;
        let mut put_op = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO op_rollups (minute_ns, service, operation, kind, count, errors, sketch) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_err)?;
        for r in &batch.operations {
            let key = (
                to_i64(r.minute_ns),
                r.service.as_str(),
                r.operation.as_str(),
                r.kind as i64,
            );
            let existing: Option<(i64, i64, Vec<u8>)> = get_op
                .query_row(params![key.0, key.1, key.2, key.3], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
                .map_err(map_err)?;
            let (mut count, mut errors, mut sketch) = (r.count, r.errors, r.sketch.clone());
            if let Some((c, e, b)) = existing {
                count += from_i64(c);
                errors += from_i64(e);
                sketch.merge(&rollup_math::decode_sketch(&b)?);
            }
            put_op
                .execute(params![
                    key.0,
                    key.1,
                    key.2,
                    key.3,
                    to_i64(count),
                    to_i64(errors),
                    rollup_math::encode_sketch(&sketch)?.into_bytes()
                ])
                .map_err(map_err)?;
        }
        let mut get_edge = tx
            .prepare_cached("SELECT calls, errors, sketch FROM edge_rollups WHERE minute_ns = ?1 AND caller = ?2 AND callee = ?3")
            .map_err(map_err)?;
        let mut put_edge = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO edge_rollups (minute_ns, caller, callee, calls, errors, sketch) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(map_err)?;
        for r in &batch.edges {
            let m = to_i64(r.minute_ns);
            let existing: Option<(i64, i64, Vec<u8>)> = get_edge
                .query_row(params![m, r.caller, r.callee], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
                .map_err(map_err)?;
            let (mut calls, mut errors, mut sketch) = (r.calls, r.errors, r.sketch.clone());
            if let Some((c, e, b)) = existing {
                calls += from_i64(c);
                errors += from_i64(e);
                sketch.merge(&rollup_math::decode_sketch(&b)?);
            }
            put_edge
                .execute(params![
                    m,
                    r.caller,
                    r.callee,
                    to_i64(calls),
                    to_i64(errors),
                    rollup_math::encode_sketch(&sketch)?.into_bytes()
                ])
                .map_err(map_err)?;
        }
        // Same transaction as the rows: both are stored or neither.
        let mut put_origin = tx
            .prepare_cached(
                "INSERT INTO rollup_origins (instance, segment, minute_ns, ranges) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(map_err)?;
        for o in &batch.origins {
            put_origin
                .execute(params![
                    batch.wal_instance as i64,
                    to_i64(o.segment),
                    to_i64(o.minute_ns),
                    o.encode_ranges()
                ])
                .map_err(map_err)?;
        }
    }
    tx.commit().map_err(map_err)
}

fn rollup_origins_tx(
    conn: &Connection,
    instance: u64,
    segments: &[u64],
) -> StorageResult<Vec<RollupOrigin>> {
    let mut q = conn
        .prepare_cached(
            "SELECT segment, minute_ns, ranges FROM rollup_origins WHERE instance = ?1 AND segment = ?2",
        )
        .map_err(map_err)?;
    let mut out = Vec::new();
    for &seg in segments {
        let rows = q
            .query_map(params![instance as i64, to_i64(seg)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(map_err)?;
        for row in rows {
            let (segment, minute, ranges) = row.map_err(map_err)?;
            out.push(RollupOrigin {
                segment: from_i64(segment),
                minute_ns: from_i64(minute),
                parts: RollupOrigin::decode_ranges(&ranges).map_err(|e| {
                    StorageError::Backend(format!(
                        "stored rollup origin of WAL segment {segment} is corrupt ({e}); delete its rows from rollup_origins"
                    ))
                })?,
            });
        }
    }
    Ok(out)
}

#[async_trait]
impl SpanWriter for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        if spans.is_empty() {
            return Ok(());
        }
        let spans = spans.to_vec();
        self.with_writer_durable(move |c, _| write_spans_tx(c, &spans))
            .await
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        if rollups.is_empty() {
            return Ok(());
        }
        let batch = rollups.clone();
        self.with_writer_durable(move |c, _| write_rollups_tx(c, &batch))
            .await
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        let segments = segments.to_vec();
        // The writer connection: it sees every committed batch.
        self.with_writer(move |c, _| rollup_origins_tx(c, instance, &segments))
            .await
    }
    async fn prune_rollup_origins(&self, instance: u64, below_segment: u64) -> StorageResult<u64> {
        self.with_writer(move |c, _| {
            c.execute(
                "DELETE FROM rollup_origins WHERE instance = ?1 AND segment < ?2",
                params![instance as i64, to_i64(below_segment)],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }
}
