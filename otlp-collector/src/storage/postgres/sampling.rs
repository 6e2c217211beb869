//! The adaptive sampler's per-period counts, shared between collectors.

use async_trait::async_trait;

use super::{esc, from_i64, map_err, to_i64, unesc, PostgresStore};
use crate::storage::{SamplingCountRow, SamplingCounts, SamplingPeriodCounts, StorageResult};

/// Rows per `INSERT` of sampling counts (the arrays are sent as parameters).
const SAMPLING_ROWS_PER_INSERT: usize = 10_000;

#[async_trait]
impl SamplingCounts for PostgresStore {
    async fn write_sampling_counts(&self, c: &SamplingPeriodCounts) -> StorageResult<()> {
        let conn = self.pool.get().await?;
        for chunk in c.counts.chunks(SAMPLING_ROWS_PER_INSERT) {
            let services: Vec<String> = chunk.iter().map(|r| esc(&r.0).into_owned()).collect();
            let ops: Vec<String> = chunk.iter().map(|r| esc(&r.1).into_owned()).collect();
            let counts: Vec<i64> = chunk.iter().map(|r| to_i64(r.2)).collect();
            // A retried write (its first attempt committed) adds nothing.
            conn.client
                .execute(
                    "INSERT INTO ft_sampling_counts \
                     (period_start_ns, period_secs, collector, service, operation, count_milli) \
                     SELECT $1, $2, $3, s, o, n FROM unnest($4::text[], $5::text[], $6::bigint[]) \
                     AS t(s, o, n) ON CONFLICT DO NOTHING",
                    &[
                        &to_i64(c.period_start_ns),
                        &(c.period_secs as i32),
                        &esc(&c.collector).as_ref(),
                        &services,
                        &ops,
                        &counts,
                    ],
                )
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT period_start_ns, service, operation, sum(count_milli)::bigint \
                 FROM ft_sampling_counts \
                 WHERE period_secs = $1 AND period_start_ns >= $2 AND period_start_ns < $3 \
                 GROUP BY period_start_ns, service, operation \
                 ORDER BY period_start_ns, service, operation",
                &[&(period_secs as i32), &to_i64(from_ns), &to_i64(to_ns)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|r| SamplingCountRow {
                period_start_ns: from_i64(r.get(0)),
                service: unesc(r.get(1)),
                operation: unesc(r.get(2)),
                count_milli: from_i64(r.get(3)),
            })
            .collect())
    }
    async fn prune_sampling_counts(&self, before_ns: u64) -> StorageResult<u64> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "DELETE FROM ft_sampling_counts WHERE period_start_ns < $1",
                &[&to_i64(before_ns)],
            )
            .await
            .map_err(map_err)
    }
}
