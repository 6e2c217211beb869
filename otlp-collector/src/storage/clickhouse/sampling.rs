//! The adaptive sampler's per-period counts, shared between collectors.

use async_trait::async_trait;

use super::connection::map_err;
use super::{ClickHouseStore, SamplingCountInsert, SamplingCountRead};
use crate::storage::{SamplingCountRow, SamplingCounts, SamplingPeriodCounts, StorageResult};

#[async_trait]
impl SamplingCounts for ClickHouseStore {
    async fn write_sampling_counts(&self, c: &SamplingPeriodCounts) -> StorageResult<()> {
        if c.counts.is_empty() {
            return Ok(());
        }
        self.failover(move || async move {
            let mut ins = self.insert_setting(
                self.client()
                    .insert::<SamplingCountInsert<'_>>("ft_sampling_counts")
                    .await
                    .map_err(map_err)?,
            );
            for (service, operation, n) in &c.counts {
                let row = SamplingCountInsert {
                    period_start_ns: c.period_start_ns,
                    period_secs: c.period_secs,
                    collector: &c.collector,
                    service,
                    operation,
                    count_milli: *n,
                };
                ins.write(&row).await.map_err(map_err)?;
            }
            ins.end().await.map_err(map_err)
        })
        .await
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        self.failover(move || async move {
            // The inner max() counts a retried insert (same period,
            // collector, service, operation, same count) once.
            let rows = self
                .query(
                    "SELECT period_start_ns, service, operation, sum(c) AS count_milli FROM ( \
                       SELECT period_start_ns, service, operation, collector, \
                              max(count_milli) AS c \
                       FROM ft_sampling_counts \
                       WHERE period_secs = ? AND period_start_ns >= ? AND period_start_ns < ? \
                       GROUP BY period_start_ns, service, operation, collector) \
                     GROUP BY period_start_ns, service, operation \
                     ORDER BY period_start_ns, service, operation",
                )
                .bind(period_secs)
                .bind(from_ns)
                .bind(to_ns)
                .fetch_all::<SamplingCountRead>()
                .await
                .map_err(map_err)?;
            Ok(rows
                .into_iter()
                .map(|r| SamplingCountRow {
                    period_start_ns: r.period_start_ns,
                    service: r.service,
                    operation: r.operation,
                    count_milli: r.count_milli,
                })
                .collect())
        })
        .await
    }
}
