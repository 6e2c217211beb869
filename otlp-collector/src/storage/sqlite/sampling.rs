//! Adaptive sampling counts shared by the collectors on one store
//! (`[sampling_api.adaptive] source = "store"`).

use async_trait::async_trait;
use rusqlite::params;

use super::{from_i64, map_err, to_i64, SqliteStore};
use crate::storage::{SamplingCountRow, SamplingCounts, SamplingPeriodCounts, StorageResult};

/// Adaptive sampling counts per period and collector
/// (`[sampling_api.adaptive] source = "store"`; idempotent).
pub(super) const SAMPLING_COUNTS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sampling_counts (
    period_start_ns INTEGER NOT NULL,
    period_secs     INTEGER NOT NULL,
    collector       TEXT    NOT NULL,
    service         TEXT    NOT NULL,
    operation       TEXT    NOT NULL,
    count_milli     INTEGER NOT NULL,
    PRIMARY KEY (period_secs, period_start_ns, collector, service, operation)
);
CREATE INDEX IF NOT EXISTS sampling_counts_start ON sampling_counts (period_start_ns);
"#;

#[async_trait]
impl SamplingCounts for SqliteStore {
    async fn write_sampling_counts(&self, c: &SamplingPeriodCounts) -> StorageResult<()> {
        let c = c.clone();
        self.with_writer(move |conn, _| {
            let tx = conn.transaction().map_err(map_err)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO sampling_counts \
                         (period_start_ns, period_secs, collector, service, operation, count_milli) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(map_err)?;
                for (service, op, n) in &c.counts {
                    st.execute(params![
                        to_i64(c.period_start_ns),
                        c.period_secs,
                        c.collector,
                        service,
                        op,
                        to_i64(*n)
                    ])
                    .map_err(map_err)?;
                }
            }
            tx.commit().map_err(map_err)
        })
        .await
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        // The writer connection: it sees every committed period.
        self.with_writer(move |conn, _| {
            let mut st = conn
                .prepare_cached(
                    "SELECT period_start_ns, service, operation, sum(count_milli) \
                     FROM sampling_counts \
                     WHERE period_secs = ?1 AND period_start_ns >= ?2 AND period_start_ns < ?3 \
                     GROUP BY period_start_ns, service, operation \
                     ORDER BY period_start_ns, service, operation",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![period_secs, to_i64(from_ns), to_i64(to_ns)], |r| {
                    Ok(SamplingCountRow {
                        period_start_ns: from_i64(r.get(0)?),
                        service: r.get(1)?,
                        operation: r.get(2)?,
                        count_milli: from_i64(r.get(3)?),
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }
    async fn prune_sampling_counts(&self, before_ns: u64) -> StorageResult<u64> {
        self.with_writer(move |conn, _| {
            conn.execute(
                "DELETE FROM sampling_counts WHERE period_start_ns < ?1",
                params![to_i64(before_ns)],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }
}
