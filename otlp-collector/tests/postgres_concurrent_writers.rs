//! Several collectors writing to one PostgreSQL (issue 13): three real
//! collector processes start together on one empty throwaway database (their
//! schema migrations race) and receive overlapping traffic at the same time:
//! every span is sent to two different collectors, concurrently, so the
//! same `(trace_id, span_id)` is inserted by two writers in overlapping
//! transactions; one writer is then killed with `kill -9` and restarted, so
//! its WAL replays spans the others already stored. Every span must be
//! stored exactly once (physical rows, not just what a read returns), with
//! no writer failing a batch (a deadlock or unique violation would show up
//! as a sink error).

mod fault;
mod ingest_util;
mod support;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::transport::Channel;

use fault::metric;
use fault::proc::{Proc, Sink, Spec};
use ingest_util::span_i_of_each_at;
use support::postgres::PgServer;

const WRITERS: u32 = 3;
const TRACES: u32 = 400;
const SPANS: u32 = 8;
const CHUNK: usize = 40;

fn client(addr: std::net::SocketAddr) -> TraceServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    TraceServiceClient::new(ch)
}

/// `(rows, distinct (trace_id, span_id))` in `ft_spans`.
async fn rows(url: &str) -> (i64, i64) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM ft_spans",
            &[],
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        // Before the first writer created the table.
        .unwrap_or((0, 0));
    drop(c);
    let _ = task.await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_on_one_postgres_store_overlapping_resends_exactly_once() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("writers").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let specs: Vec<Spec> = (0..WRITERS)
        .map(|w| {
            let d = dir.path().join(format!("collector{w}"));
            std::fs::create_dir_all(&d).expect("dir");
            // Small batches: many overlapping transactions. (The first
            // line continues the shared `[batcher]` table `Spec` writes.)
            Spec::new(
                &d,
                &d,
                Sink::Postgres(url.clone()),
                "max_spans = 64\n[wal]\nfsync = \"never\"\n",
            )
        })
        .collect();
    // All start at once on the empty database: the migrations race (an
    // advisory lock serialises them).
    let mut procs: Vec<Proc> = specs.iter().map(|s| s.spawn()).collect();
    for p in &mut procs {
        p.wait_ready(Duration::from_secs(30)).await;
    }

    // Span i of trace t goes to writer (t + i) % 3 and, at the same time,
    // to writer (t + i + 1) % 3: every span is written by two collectors.
    let started = Instant::now();
    // One start time for all: a span sent to two collectors is the same span.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        - 60_000_000_000;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = client(specs[w as usize].otlp_grpc);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            for i in 0..SPANS {
                let mine: Vec<u32> = (1..=TRACES)
                    .filter(|t| (t + i) % WRITERS == w || (t + i + 1) % WRITERS == w)
                    .collect();
                for chunk in mine.chunks(CHUNK) {
                    c.export(span_i_of_each_at(chunk, i, |_, _| false, t0))
                        .await
                        .unwrap_or_else(|e| panic!("writer {w} refused: {e:?}"));
                    sent += chunk.len() as u64;
                }
            }
            sent
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("sender");
    }
    let distinct = i64::from(TRACES * SPANS);
    assert_eq!(sent, 2 * distinct as u64, "every span sent twice");

    // One writer dies without a chance to release its WAL and comes back:
    // its replay writes spans the others already stored.
    procs[1].kill9();
    procs[1] = specs[1].spawn();
    procs[1].wait_ready(Duration::from_secs(30)).await;

    // Wait until every writer has written all it acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (n, d) = rows(&url).await;
        let mut queued = 0;
        for s in &specs {
            queued += metric(s.query, "ferrotrace_queue_spans").await.unwrap_or(1);
        }
        if d == distinct && queued == 0 {
            assert_eq!(n, distinct, "a span stored twice: {n} rows, {d} distinct");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{d} of {distinct} spans stored ({n} rows), {queued} queued"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut written = 0;
    for (w, s) in specs.iter().enumerate() {
        let errors = metric(s.query, "ferrotrace_sink_errors_total")
            .await
            .unwrap_or(0);
        let wrote = metric(s.query, "ferrotrace_sink_spans_written_total")
            .await
            .unwrap_or(0);
        eprintln!("writer {w}: {wrote} spans written since its start (stored or found already stored), {errors} failed batches");
        assert_eq!(
            errors, 0,
            "writer {w}: a batch failed (deadlock or conflict)"
        );
        written += wrote;
    }
    eprintln!(
        "{sent} spans sent to {WRITERS} writers ({distinct} distinct) stored once in {:?}; \
         spans written by the writers since their start: {written}",
        started.elapsed()
    );
    // Settle, then look again: nothing arrives late as a duplicate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rows(&url).await, (distinct, distinct));
}
