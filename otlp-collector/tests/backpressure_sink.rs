//! Backpressure and sink failures: a saturated collector answers 429 with
//! Retry-After / RESOURCE_EXHAUSTED with RetryInfo, a full WAL refuses, and a
//! sink that is down is retried until every acknowledged span is stored.

mod ingest_util;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferrotrace_collector::model::{Span, SpanKind, TraceId};
use ferrotrace_collector::receiver::rpc_status::{RetryInfo, RpcStatus};
use ferrotrace_collector::rollup::RollupBatch;
use ferrotrace_collector::server::Collector;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::*;
use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

/// Delegates to SQLite, but can hold writes (slow sink) or fail them (sink down).
struct GatedStore {
    inner: SqliteStore,
    open: AtomicBool,
    fail_next: AtomicU32,
}

#[async_trait]
impl SpanWriter for GatedStore {
    fn name(&self) -> &'static str {
        "gated"
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StorageError::Unavailable("sink is down (test)".into()));
        }
        self.inner.write_spans(spans).await
    }
    async fn write_rollups(&self, r: &RollupBatch) -> StorageResult<()> {
        self.inner.write_rollups(r).await
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<ferrotrace_collector::rollup::RollupOrigin>> {
        self.inner.rollup_origins(instance, segments).await
    }
    async fn prune_rollup_origins(&self, instance: u64, below: u64) -> StorageResult<u64> {
        self.inner.prune_rollup_origins(instance, below).await
    }
}

#[async_trait]
impl TraceReader for GatedStore {
    async fn get_trace(&self, t: TraceId, r: Option<TimeRange>) -> StorageResult<Vec<Span>> {
        self.inner.get_trace(t, r).await
    }
    async fn get_traces(
        &self,
        ts: &[TraceId],
        r: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        self.inner.get_traces(ts, r).await
    }
    async fn search(&self, q: &TraceQuery) -> StorageResult<SearchPage> {
        self.inner.search(q).await
    }
    async fn services(&self, r: TimeRange) -> StorageResult<Vec<String>> {
        self.inner.services(r).await
    }
    async fn operations(&self, s: &str, r: TimeRange) -> StorageResult<Vec<Operation>> {
        self.inner.operations(s, r).await
    }
}

#[async_trait]
impl AnalyticsReader for GatedStore {
    async fn dependencies(&self, r: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.inner.dependencies(r).await
    }
    async fn latency(&self, q: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        self.inner.latency(q).await
    }
    async fn exact_percentiles(
        &self,
        s: &str,
        o: Option<&str>,
        k: &[SpanKind],
        r: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        self.inner.exact_percentiles(s, o, k, r, qs).await
    }
}

#[async_trait]
impl Retention for GatedStore {
    async fn apply_retention(&self, c: u64) -> StorageResult<RetentionReport> {
        self.inner.apply_retention(c).await
    }
}

impl ferrotrace_collector::storage::SamplingCounts for GatedStore {}

async fn start_gated(
    tweak: impl FnOnce(&mut ferrotrace_collector::config::Config),
) -> (Collector, Arc<GatedStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.batcher.retry_initial_ms = 5;
    cfg.batcher.retry_max_ms = 20;
    tweak(&mut cfg);
    let store = Arc::new(GatedStore {
        inner: SqliteStore::open(dir.path().join("s.db")).unwrap(),
        open: AtomicBool::new(false),
        fail_next: AtomicU32::new(0),
    });
    let mut c = Collector::start(cfg, store.clone() as Arc<dyn SpanStore>)
        .await
        .unwrap();
    c.wait_ready().await;
    (c, store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_collector_refuses_with_retry_hints_and_loses_nothing() {
    let (c, store, _dir) = start_gated(|cfg| {
        cfg.queue.max_spans = 40;
        cfg.queue.retry_after_secs = 3;
        // A few requests wait in the WAL only once the queue is full (they
        // are read back and stored below), then the queue-full refusal.
        cfg.queue.wal_only_max_records = 3;
        cfg.batcher.max_spans = Some(10);
        cfg.batcher.max_pending_batches = 1;
    })
    .await;
    let http = c.addrs.otlp_http.unwrap();
    let mut accepted = Vec::new();
    let mut refused = None;
    for t in 0..200u32 {
        let r = post(
            http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            request_with(t, 10).encode_to_vec(),
        )
        .await;
        match r.status {
            200 => accepted.push(t),
            429 => {
                refused = Some(r);
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let r = refused.expect("the collector must refuse once saturated");
    assert_eq!(r.headers["retry-after"], "3");
    let st = RpcStatus::decode(r.body.as_ref()).unwrap();
    assert_eq!(st.code, 8);

    // gRPC: RESOURCE_EXHAUSTED with google.rpc.RetryInfo in the status details.
    let mut g = TraceServiceClient::connect(format!("http://{}", c.addrs.otlp_grpc.unwrap()))
        .await
        .unwrap();
    let err = g.export(request_with(999, 10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let details = RpcStatus::decode(err.details()).unwrap();
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let retry = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
    assert_eq!(retry.retry_delay.unwrap().seconds, 3);
    let m = c.metrics.render();
    assert!(
        m.contains("ferrotrace_requests_failed_total{status=\"queue_full\"}"),
        "{m}"
    );

    // Open the sink: every acknowledged span is stored, and ingestion works again.
    store.open.store(true, Ordering::SeqCst);
    for t in &accepted {
        assert_eq!(
            wait_spans(store.as_ref(), trace_id(*t), 10).await.len(),
            10,
            "trace {t}"
        );
    }
    let r = post(
        http,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        request_with(5000, 10).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(c.shutdown().await);
}

/// Posts traces of 5 spans (ids 0, 1, ...) until one is refused (at most
/// 100): the traces acknowledged, and the refusal's body if there was one.
async fn fill_wal(http: std::net::SocketAddr) -> (Vec<u32>, Option<Vec<u8>>) {
    let mut accepted = Vec::new();
    for t in 0..100u32 {
        let r = post(
            http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            request_with(t, 5).encode_to_vec(),
        )
        .await;
        match r.status {
            200 => accepted.push(t),
            429 => return (accepted, Some(r.body.to_vec())),
            s => panic!("unexpected status {s}"),
        }
    }
    (accepted, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_wal_refuses_and_down_sink_is_retried() {
    let (c, store, dir) = start_gated(|cfg| {
        cfg.wal.segment_bytes = 4096;
        cfg.wal.max_bytes = 16 * 1024;
        cfg.batcher.max_spans = Some(5);
        // A segment also waits for the rollups of its spans to be written
        // (every rollup_flush_ms): write them often, so it shrinks back in time.
        cfg.batcher.rollup_flush_ms = 50;
    })
    .await;
    let http = c.addrs.otlp_http.unwrap();
    let (accepted, refusal) = fill_wal(http).await;
    let refusal = refusal.expect("a small WAL must fill up while the sink is stuck");
    assert!(
        String::from_utf8_lossy(&refusal).contains("write-ahead log"),
        "{refusal:?}"
    );
    // The sink now fails a few times (down), then recovers: nothing acknowledged is lost.
    store.fail_next.store(3, Ordering::SeqCst);
    store.open.store(true, Ordering::SeqCst);
    for t in &accepted {
        assert_eq!(
            wait_spans(store.as_ref(), trace_id(*t), 5).await.len(),
            5,
            "trace {t}"
        );
    }
    let m = c.metrics.render();
    assert!(
        m.contains("ferrotrace_sink_errors_total{kind=\"retryable\"} 3"),
        "{m}"
    );
    // Committed segments are deleted: the WAL shrinks back.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.wal_bytes() > 4096 + 2048 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.wal_bytes() <= 4096 + 2048, "wal bytes {}", c.wal_bytes());
    assert!(c.shutdown().await);
    // After a clean shutdown with everything committed, no segment is left to replay.
    // (`wal.meta`, the WAL's identity and next segment id, stays.)
    let left = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "wal.meta")
        .count();
    assert_eq!(left, 0);
}

/// A nearly full WAL does not wait for the rollup period to give its
/// segments back: with rollups due only every minute, the segments of
/// written spans (held until the rollups counting them are written) are
/// deleted within seconds once the sink takes writes again, so admission is
/// bounded by the sink, not by the rollup period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearly_full_wal_writes_rollups_early_and_shrinks() {
    let (c, store, _dir) = start_gated(|cfg| {
        cfg.wal.segment_bytes = 4096;
        cfg.wal.max_bytes = 16 * 1024;
        cfg.batcher.max_spans = Some(5);
        cfg.batcher.rollup_flush_ms = 60_000;
    })
    .await;
    let http = c.addrs.otlp_http.unwrap();
    let (accepted, _) = fill_wal(http).await;
    assert!(c.wal_bytes() * 4 >= 16 * 1024 * 3, "the WAL filled up");
    store.open.store(true, Ordering::SeqCst);
    for t in &accepted {
        assert_eq!(
            wait_spans(store.as_ref(), trace_id(*t), 5).await.len(),
            5,
            "trace {t}"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.wal_bytes() * 4 >= 16 * 1024 * 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        c.wal_bytes() * 4 < 16 * 1024 * 3,
        "the WAL still holds {} bytes of written spans 10 s after the sink opened",
        c.wal_bytes()
    );
    // Admission is back: a new request is taken.
    let r = post(
        http,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        request_with(5000, 5).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(c.shutdown().await);
}

/// SIGTERM with a sink that does not answer: the drain stops at its timeout,
/// the acknowledged spans stay in the write-ahead log, and the next start
/// replays them into the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_leaves_the_rest_in_the_wal_for_the_next_start() {
    let (c, store, dir) = start_gated(|cfg| {
        cfg.shutdown.drain_timeout_ms = 300;
    })
    .await;
    let http = c.addrs.otlp_http.unwrap();
    for t in 1..=5u32 {
        let r = post(
            http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            request_with(7_000 + t, 4).encode_to_vec(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let started = std::time::Instant::now();
    assert!(
        !c.shutdown().await,
        "the sink never answered, so the drain cannot have committed everything"
    );
    // The drain timeout plus the listeners' own grace period, with room for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(store
        .inner
        .get_trace(trace_id(7_001), None)
        .await
        .unwrap()
        .is_empty());

    // Next start on the same data directory, with a sink that works.
    let mut cfg = test_config(dir.path());
    cfg.batcher.max_delay_ms = 20;
    let sqlite = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
    let mut c2 = Collector::start(cfg, sqlite.clone() as Arc<dyn SpanStore>)
        .await
        .unwrap();
    let replayed = c2.wait_ready().await;
    assert_eq!(replayed, 20, "every acknowledged span is replayed");
    for t in 1..=5u32 {
        let spans = wait_spans(sqlite.as_ref(), trace_id(7_000 + t), 4).await;
        assert_eq!(spans.len(), 4, "trace {t}");
    }
    assert!(c2.shutdown().await);
}

/// Resident memory of this process in KiB (the collector runs in it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A saturated collector keeps refusing while ~100 MB of requests arrive from
/// 8 concurrent clients, and its memory stays bounded by the queue, not by
/// what is offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_collector_memory_stays_bounded() {
    let (c, store, _dir) = start_gated(|cfg| {
        cfg.queue.max_spans = 2_000;
        cfg.queue.max_bytes = Some(16 << 20);
        // Requests kept in the WAL only hold no memory; a few, then refusals.
        cfg.queue.wal_only_max_records = 8;
    })
    .await;
    let http = c.addrs.otlp_http.unwrap();
    let body = bytes::Bytes::from(request_with(9_000, 500).encode_to_vec());
    let before = rss_kib();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            for _ in 0..125 {
                let r = post(
                    http,
                    "/v1/traces",
                    &[("content-type", "application/x-protobuf")],
                    body.clone(),
                )
                .await;
                match r.status {
                    200 => ok += 1,
                    429 => refused += 1,
                    s => panic!("unexpected status {s}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        refused += r;
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    let offered_mib = body.len() * 1_000 / (1 << 20);
    eprintln!("RSS grew {grown_mib} MiB, {offered_mib} MiB offered, ok={ok} refused={refused}");
    assert!(refused > 900, "ok={ok} refused={refused}");
    assert!(
        grown_mib < 64,
        "RSS grew {grown_mib} MiB while {offered_mib} MiB were offered (ok={ok}, refused={refused})"
    );
    store.open.store(true, Ordering::SeqCst);
    drop(c);
}
