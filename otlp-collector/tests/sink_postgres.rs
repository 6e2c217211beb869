//! The PostgreSQL sink against a throwaway PostgreSQL started by the test
//! (initdb + postgres on a free loopback port): the shared conformance suite,
//! then PostgreSQL-specific behaviour (migrations, day partitions, partition
//! drops in retention, the default partition, NUL characters, reconnects,
//! TLS against a server that refuses plaintext).

mod conformance;
mod ingest_util;
mod support;

use ferrotrace_collector::model::{AttrValue, KeyValue};
use ferrotrace_collector::storage::postgres::{PostgresOptions, PostgresStore, MIGRATIONS};
use ferrotrace_collector::storage::{
    AttrFilter, Retention, SpanWriter, StorageError, TimeRange, TraceQuery, TraceReader,
};
use support::postgres::PgServer;

fn wide_partitions() -> PostgresOptions {
    // The suite writes into January 2026; a window that wide makes every one
    // of its days a real partition instead of the default partition.
    PostgresOptions {
        partition_past_days: 4000,
        ..PostgresOptions::default()
    }
}

fn query(range: TimeRange) -> TraceQuery {
    TraceQuery {
        service: None,
        operation: None,
        attributes: vec![],
        min_duration_ns: None,
        max_duration_ns: None,
        errors_only: false,
        range,
        limit: 10,
        cursor: None,
    }
}

async fn sql_count(url: &str, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let n: i64 = client.query_one(sql, &[]).await.expect(sql).get(0);
    drop(client);
    let _ = task.await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_conformance_suite() {
    let Some(pg) = PgServer::start() else { return };
    // Day partitions for every day the suite uses.
    let url = pg.fresh_db("conf_partitioned").await;
    let store = PostgresStore::connect_with(&url, wide_partitions())
        .await
        .expect("connect");
    conformance::run_all(&store).await;
    assert!(
        sql_count(
            &url,
            "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'ft_spans'::regclass"
        )
        .await
            > 10,
        "the suite's days got their own partitions"
    );
    assert_eq!(
        sql_count(&url, "SELECT COUNT(*) FROM ft_spans_default").await,
        0
    );

    // Default options: the suite's old days land in the default partition, and
    // everything still holds.
    let url = pg.fresh_db("conf_default").await;
    let store = PostgresStore::connect(&url).await.expect("connect");
    conformance::run_all(&store).await;
    assert!(sql_count(&url, "SELECT COUNT(*) FROM ft_spans_default").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_partitions_retention_and_nul() {
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("specific").await;
    let store = PostgresStore::connect(&url).await.expect("connect");
    // Connecting again applies nothing twice.
    let again = PostgresStore::connect(&url).await.expect("reconnect");
    drop(again);
    assert_eq!(
        sql_count(&url, "SELECT COUNT(*) FROM ft_schema_migrations").await,
        MIGRATIONS.len() as i64
    );
    // Today and the days ahead exist before any write.
    let today = conformance::BASE.max(now_ns()) / conformance::DAY * conformance::DAY;
    let parts = sql_count(
        &url,
        "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'ft_spans'::regclass",
    )
    .await;
    assert!(parts >= 3, "default + today + ahead, got {parts}");

    // Spans in three recent days: day -3 and -2 are whole partitions older
    // than the cutoff, day -1 is cut in the middle.
    let d = |n: u64| today - n * conformance::DAY;
    let cutoff = d(1) + 1_000;
    let mut spans = Vec::new();
    for (i, start) in [
        d(3) + 5,
        d(2) + 5,
        d(1) + 10,
        d(1) + 999,
        d(1) + 1_000,
        d(1) + 5_000,
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = conformance::span(
            conformance::tid(90, i as u32),
            0,
            None,
            "part",
            "op",
            start,
            7,
        );
        s.attributes
            .push(KeyValue::new("nul\0key", AttrValue::Str("a\0b\\0c".into())));
        s.service_name = "svc\0nul".into();
        spans.push(s);
    }
    store.write_spans(&spans).await.expect("write");
    assert_eq!(
        sql_count(&url, "SELECT COUNT(*) FROM ft_spans_default").await,
        0,
        "recent days are partitioned"
    );
    let part_d3 = sql_count(
        &url,
        "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'ft_spans'::regclass",
    )
    .await;

    // NUL in service names, attribute keys and values: stored, listed and searchable exactly.
    let r = TimeRange {
        start_ns: d(3),
        end_ns: today + conformance::DAY,
    };
    assert_eq!(
        store.services(r).await.expect("services"),
        vec!["svc\0nul".to_string()]
    );
    let mut q = query(r);
    q.service = Some("svc\0nul".into());
    q.attributes = vec![AttrFilter {
        key: "nul\0key".into(),
        value: AttrValue::Str("a\0b\\0c".into()),
        mode: Default::default(),
    }];
    q.limit = 100;
    assert_eq!(store.search(&q).await.expect("search").traces.len(), 6);
    q.attributes[0].value = AttrValue::Str("a\\0b\\0c".into());
    assert!(
        store.search(&q).await.expect("search").traces.is_empty(),
        "escape is injective"
    );
    assert_eq!(
        store.get_trace(spans[0].trace_id, None).await.expect("get"),
        vec![spans[0].clone()]
    );

    let report = store.apply_retention(cutoff).await.expect("retention");
    assert_eq!(
        report.spans_deleted, 4,
        "two dropped partitions + two rows of the cut day"
    );
    let after = sql_count(
        &url,
        "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'ft_spans'::regclass",
    )
    .await;
    assert_eq!(
        after,
        part_d3 - 2,
        "whole old days were dropped as partitions"
    );
    for (i, s) in spans.iter().enumerate() {
        let kept = !store
            .get_trace(s.trace_id, None)
            .await
            .expect("get")
            .is_empty();
        assert_eq!(kept, s.start_ns >= cutoff, "span {i} at {}", s.start_ns);
    }
    // Writing into a dropped day again recreates its partition.
    store
        .write_spans(&spans[..1])
        .await
        .expect("rewrite old day");
    assert_eq!(
        store
            .get_trace(spans[0].trace_id, None)
            .await
            .expect("get")
            .len(),
        1
    );

    // A broken connection is reported as retryable and the pool reconnects.
    pg.stop();
    let err = store.services(r).await.expect_err("server is down");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    match PostgresStore::connect(&url).await {
        Err(StorageError::Unavailable(msg)) => assert!(msg.contains("--storage-url"), "{msg}"),
        other => panic!("connect to a stopped server: {other:?}"),
    }
}

/// Size-bounded retention on PostgreSQL (issue 18): the tables' size is
/// measured on the server, and evicting drops whole day partitions, oldest
/// first, until their sizes add up to what was asked; newer days are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_eviction_drops_the_oldest_day_partitions() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.fresh_db("size").await;
    let store = PostgresStore::connect(&url).await.expect("connect");
    let today = conformance::BASE.max(now_ns()) / conformance::DAY * conformance::DAY;
    let d = |n: u64| today - n * conformance::DAY;
    // 200 spans on each of the four days before today.
    for day in 1..=4u64 {
        let spans: Vec<_> = (0..200u32)
            .map(|i| {
                conformance::span(
                    conformance::tid(70 + day as u8, i),
                    0,
                    None,
                    "size",
                    "op",
                    d(day) + u64::from(i) * 1_000,
                    7,
                )
            })
            .collect();
        store.write_spans(&spans).await.expect("write");
    }
    let before = store.disk_usage().await.expect("usage").expect("measured");
    assert_eq!(before.dir, None, "a server's disk is not the collector's");
    assert_eq!(before.oldest_ns, Some(d(4)));
    assert!(before.live_bytes > 0);
    // One byte: the oldest day goes, nothing else.
    let r = store.evict_oldest(1, false).await.expect("evict");
    assert_eq!((r.spans_deleted, r.cutoff_ns), (200, d(3)), "{r:?}");
    let after = store.disk_usage().await.expect("usage").expect("measured");
    assert_eq!(after.oldest_ns, Some(d(3)));
    assert!(after.live_bytes < before.live_bytes, "{before:?} {after:?}");
    assert_eq!(sql_count(&url, "SELECT COUNT(*) FROM ft_spans").await, 600);
    // Asking for more than one day's size takes the next days too, oldest first.
    let r = store
        .evict_oldest(after.live_bytes / 4, false)
        .await
        .expect("evict");
    assert!(r.spans_deleted >= 200 && r.cutoff_ns >= d(2), "{r:?}");
    let left = sql_count(&url, "SELECT COUNT(*) FROM ft_spans").await;
    assert_eq!(left as u64, 600 - r.spans_deleted);
    assert_eq!(
        sql_count(
            &url,
            &format!(
                "SELECT COUNT(*) FROM ft_spans WHERE start_ns >= {}",
                r.cutoff_ns
            )
        )
        .await,
        left,
        "every span after the cutoff is kept"
    );
}

#[tokio::test]
async fn bad_urls_are_rejected_clearly() {
    // Rejected before any connection is tried, so a typo fails the start.
    let err = PostgresStore::connect("postgres://x:y@127.0.0.1:1/db?sslmode=verify_full")
        .await
        .expect_err("bad sslmode");
    assert!(
        err.to_string().contains("invalid sslmode=\"verify_full\""),
        "{err}"
    );
    let err = PostgresStore::connect(
        "postgres://x:y@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    )
    .await
    .expect_err("missing CA file");
    assert!(
        err.to_string()
            .contains("cannot read sslrootcert file /nonexistent/ca.pem"),
        "{err}"
    );
    let err = PostgresStore::connect("not a url at all ===")
        .await
        .expect_err("garbage");
    assert!(err.to_string().contains("PostgreSQL URL"), "{err}");
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Issue 6, "Selecting a sink": a PostgreSQL that is down at start does not
/// stop the collector. Receivers keep acknowledging into the WAL, `/readyz`
/// names the sink (password hidden), and once a server comes up on that port
/// every acknowledged span is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_starts_with_postgres_down_and_drains_the_wal_once_it_is_up() {
    use ingest_util::{post, request, request_with, test_config, trace_id};
    use prost::Message;

    if !PgServer::available() {
        return;
    }
    // The collector's log goes to the test's output, shown when it fails.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("ferrotrace_collector=info")
        .try_init();
    let port = support::free_port();
    // Trust authentication: the server never asks for the password, so it only
    // checks that log lines and /readyz do not show it.
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.storage.kind = ferrotrace_collector::config::StorageKind::Postgres;
    cfg.storage.url = Some(url.clone());
    cfg.batcher.retry_initial_ms = 50;
    cfg.batcher.retry_max_ms = 300;
    // The spans are from 2023: age retention's first pass, which waits for
    // the connection and then runs at once, deleted whichever of them the
    // drain had stored by then (CI saw 45 and 95 of 100 left).
    cfg.retention.max_age_hours = 0;
    let store = ferrotrace_collector::storage::connecting::open(&cfg).expect("open");
    let mut collector = ferrotrace_collector::server::Collector::start(cfg, store.clone())
        .await
        .expect("the collector starts although PostgreSQL is down");
    collector.wait_ready().await;
    let http = collector.addrs.otlp_http.unwrap();
    let query = collector.addrs.http.unwrap();

    // /readyz: not ready because of the sink, with the target and its password hidden.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let r = request("GET", query, "/readyz", &[], bytes::Bytes::new()).await;
        assert_eq!(r.status, 503);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        if body.contains("not connected") || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        body.contains("sink: postgres sink at postgres://postgres:***@127.0.0.1:"),
        "{body}"
    );
    assert!(body.contains("next retry in"), "{body}");
    assert!(!body.contains("hunter2"), "{body}");

    // Spans are acknowledged meanwhile; trace 1 is sent twice, as a client retry would.
    let proto = [("content-type", "application/x-protobuf")];
    for t in (1..=20).chain([1]) {
        let r = post(
            http,
            "/v1/traces",
            &proto,
            request_with(t, 5).encode_to_vec(),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    }
    let before = store.get_trace(trace_id(1), None).await;
    assert!(
        matches!(&before, Err(StorageError::Unavailable(m)) if m.contains("not connected")),
        "{before:?}"
    );

    let pg = PgServer::start_on(port).expect("postgres starts on the reserved port");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ready = request("GET", query, "/readyz", &[], bytes::Bytes::new()).await;
        let stored = if ready.status == 200 {
            sql_count(&pg.url("postgres"), "SELECT COUNT(*) FROM ft_spans").await
        } else {
            0
        };
        if stored >= 100 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let metrics = request("GET", query, "/metrics", &[], bytes::Bytes::new()).await;
            let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
            let sink_lines: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("ferrotrace_sink")
                        || l.contains("dropped")
                        || l.contains("retention")
                })
                .collect();
            panic!(
                "only {stored} of 100 spans stored; /readyz {}: {}\nmetrics:\n{}",
                ready.status,
                String::from_utf8_lossy(&ready.body),
                sink_lines.join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(collector.shutdown().await, "everything drained");
    let url = pg.url("postgres");
    assert_eq!(sql_count(&url, "SELECT COUNT(*) FROM ft_spans").await, 100);
    assert_eq!(
        sql_count(
            &url,
            "SELECT COUNT(*) FROM (SELECT DISTINCT trace_id, span_id FROM ft_spans) d"
        )
        .await,
        100
    );
    assert_eq!(store.get_trace(trace_id(7), None).await.unwrap().len(), 5);
}

/// The primary key has to include the partition key (`start_ns`), so it does
/// not stop a span re-sent with other start times (a clock-corrected resend,
/// or one landing in another day partition) from being stored twice; the
/// insert from staging does. The first stored version wins, as in SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_ids_with_another_start_time_are_stored_once() {
    use conformance::{day, span, tid, MS};
    let Some(pg) = PgServer::start() else { return };
    let url = pg.fresh_db("idem_start").await;
    let store = PostgresStore::connect_with(&url, wide_partitions())
        .await
        .expect("connect");
    let trace = tid(77, 1);
    let t0 = day(3) + 5_000;
    let first: Vec<_> = (0..4)
        .map(|i| span(trace, i, None, "idem-pg", "op", t0 + i as u64, MS))
        .collect();
    store.write_spans(&first).await.expect("first write");

    // The same ids: shifted by a microsecond (same partition), by a day (another
    // partition), and twice within one batch, plus one new span.
    let mut resend: Vec<_> = first
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.start_ns += 1_000;
            s.end_ns += 1_000;
            s
        })
        .collect();
    resend[1].start_ns = first[1].start_ns + 86_400_000_000_000;
    resend[1].end_ns = resend[1].start_ns + MS;
    resend.push(span(trace, 9, None, "idem-pg", "op", t0 + 50, MS));
    resend.push(span(trace, 9, None, "idem-pg", "op", t0 + 60, MS));
    store.write_spans(&resend).await.expect("resend");

    assert_eq!(
        sql_count(
            &url,
            "SELECT COUNT(*) FROM ft_spans WHERE service = 'idem-pg'"
        )
        .await,
        5
    );
    let spans = store.get_trace(trace, None).await.expect("get");
    assert_eq!(spans.len(), 5);
    for s in &first {
        let stored = spans.iter().find(|x| x.span_id == s.span_id).unwrap();
        assert_eq!(stored.start_ns, s.start_ns, "the first version is kept");
    }
    let nine = spans
        .iter()
        .find(|x| x.span_id == resend[4].span_id)
        .unwrap();
    assert_eq!(nine.start_ns, t0 + 50);
}

/// Against a server that accepts TCP connections over TLS only: verify-full
/// with the test CA connects, writes and reads; `require` connects without
/// checking the certificate; plaintext is refused by the server; a wrong CA,
/// or a host name the certificate does not name, fails with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_works_and_plaintext_or_a_wrong_ca_fail_clearly() {
    use conformance::{day, span, tid, MS};
    let Some(pg) = PgServer::start_tls() else {
        return;
    };
    let tls = pg.tls.as_ref().expect("started with TLS");
    let url = pg.fresh_db("tls_db").await;
    let ca = tls.ca.display().to_string();
    let opts = || PostgresOptions {
        pool_size: 2,
        ..wide_partitions()
    };

    let store = PostgresStore::connect_with(
        &format!("{url}?sslmode=verify-full&sslrootcert={ca}"),
        opts(),
    )
    .await
    .expect("verify-full with the server's CA");
    let trace = tid(91, 1);
    let spans: Vec<_> = (0..3)
        .map(|i| span(trace, i, None, "tls-pg", "op", day(2) + i as u64, MS))
        .collect();
    store.write_spans(&spans).await.expect("write over TLS");
    let got = store.get_trace(trace, None).await.expect("read over TLS");
    assert_eq!(got.len(), 3);
    // The store's sessions really are encrypted (seen from the Unix socket).
    let encrypted = sql_count(
        &pg.admin_url("tls_db"),
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.datname = 'tls_db'",
    )
    .await;
    assert!(encrypted >= 1, "no TLS session from the store");
    drop(store);

    // localhost is in the certificate too.
    let local = url.replace("127.0.0.1", "localhost");
    PostgresStore::connect_with(
        &format!("{local}?sslmode=verify-full&sslrootcert={ca}"),
        opts(),
    )
    .await
    .expect("verify-full via localhost");

    // require: TLS without checking the certificate (libpq's meaning).
    PostgresStore::connect_with(&format!("{url}?sslmode=require"), opts())
        .await
        .expect("require without a CA");

    // Plaintext: the server's pg_hba.conf refuses it, and the error says so
    // and what to use instead.
    let err = PostgresStore::connect_with(&format!("{url}?sslmode=disable"), opts())
        .await
        .expect_err("plaintext must be refused");
    let msg = err.to_string();
    assert!(msg.contains("no encryption"), "{msg}");
    assert!(msg.contains("sslmode=verify-full"), "{msg}");

    // A CA that did not sign the server's certificate.
    let other = tls.other_ca.display().to_string();
    let err = PostgresStore::connect_with(
        &format!("{url}?sslmode=verify-full&sslrootcert={other}"),
        opts(),
    )
    .await
    .expect_err("wrong CA must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake failed (sslmode=verify-full)"),
        "{msg}"
    );
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(msg.contains("sslrootcert"), "{msg}");
    // The default roots (no sslrootcert) do not know the test CA either.
    let err = PostgresStore::connect_with(&format!("{url}?sslmode=verify-full"), opts())
        .await
        .expect_err("webpki roots must not trust the test CA");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(
        err.to_string().contains("give its CA with sslrootcert"),
        "{err}"
    );

    // A host name the certificate does not name (same address): verify-full
    // fails, verify-ca (chain only) connects.
    let misnamed = format!(
        "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=tls_db sslrootcert={ca}",
        pg.port
    );
    let err = PostgresStore::connect_with(&format!("{misnamed} sslmode=verify-full"), opts())
        .await
        .expect_err("name mismatch must fail verify-full");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert!(err.to_string().contains("verify-ca"), "{err}");
    PostgresStore::connect_with(&format!("{misnamed} sslmode=verify-ca"), opts())
        .await
        .expect("verify-ca ignores the host name");
}
