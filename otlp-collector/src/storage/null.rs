//! The null sink: stores nothing, answers every query with nothing. For
//! measuring the ingest path alone (`storage = null`), and the inner store of
//! test doubles that only need to fail or delay some calls.

use async_trait::async_trait;

use super::{
    AnalyticsReader, DependencyEdge, LatencyPoint, LatencyQuery, Operation, Retention,
    RetentionReport, SearchPage, SpanWriter, StorageError, StorageResult, TimeRange, TraceQuery,
    TraceReader, TraceSpans,
};
use crate::model::{Span, SpanKind, TraceId};
use crate::rollup::{RollupBatch, RollupOrigin};

/// A sink that discards everything: for benchmarking the ingest path only
/// (`--storage null`). Queries return nothing.
#[derive(Debug, Default)]
pub struct NullStore;

#[async_trait]
impl SpanWriter for NullStore {
    fn name(&self) -> &'static str {
        "null"
    }
    async fn write_spans(&self, _spans: &[Span]) -> StorageResult<()> {
        Ok(())
    }
    async fn write_rollups(&self, _rollups: &RollupBatch) -> StorageResult<()> {
        Ok(())
    }
    async fn rollup_origins(
        &self,
        _instance: u64,
        _segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        // Nothing was stored, so nothing is skipped at replay.
        Ok(Vec::new())
    }
    async fn prune_rollup_origins(
        &self,
        _instance: u64,
        _below_segment: u64,
    ) -> StorageResult<u64> {
        Ok(0)
    }
}

#[async_trait]
impl TraceReader for NullStore {
    async fn get_trace(
        &self,
        _trace_id: TraceId,
        _range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        Ok(Vec::new())
    }
    async fn get_traces(
        &self,
        _trace_ids: &[TraceId],
        _range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        Ok(Vec::new())
    }
    async fn search(&self, _query: &TraceQuery) -> StorageResult<SearchPage> {
        Ok(SearchPage::default())
    }
    async fn services(&self, _range: TimeRange) -> StorageResult<Vec<String>> {
        Ok(Vec::new())
    }
    async fn operations(&self, _service: &str, _range: TimeRange) -> StorageResult<Vec<Operation>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl AnalyticsReader for NullStore {
    async fn dependencies(&self, _range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        Ok(Vec::new())
    }
    async fn latency(&self, _query: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        Ok(Vec::new())
    }
    async fn exact_percentiles(
        &self,
        _service: &str,
        _operation: Option<&str>,
        _kinds: &[SpanKind],
        _range: TimeRange,
        _qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Retention for NullStore {
    async fn apply_retention(&self, _cutoff_ns: u64) -> StorageResult<RetentionReport> {
        Err(StorageError::Backend("the null sink stores nothing".into()))
    }
}

/// Stores nothing, so it cannot share adaptive sampling counts (the
/// configuration refuses `source = "store"` with the null sink).
impl super::SamplingCounts for NullStore {}
