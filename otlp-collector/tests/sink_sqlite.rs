//! The shared conformance suite against the embedded SQLite store, plus
//! SQLite-specific checks (durability across reopen, exact retention counts,
//! concurrent readers while writing).

mod conformance;

use ferrotrace_collector::model::AttrValue;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::{
    AnalyticsReader, Retention, SpanWriter, StorageError, TimeRange, TraceReader,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn committed_spans_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.db");
    let s = conformance::full_span();
    {
        let store = SqliteStore::open(&path).expect("open");
        store
            .write_spans(std::slice::from_ref(&s))
            .await
            .expect("write");
    }
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        store.get_trace(s.trace_id, None).await.expect("get"),
        vec![s]
    );
}

#[tokio::test]
async fn retention_reports_exact_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    let t0 = conformance::day(0);
    let spans: Vec<_> = (0..12_000u32)
        .map(|i| {
            let mut s = conformance::span(
                conformance::tid(50, i),
                0,
                None,
                "ret",
                "op",
                t0 + i as u64,
                1,
            );
            s.attributes
                .push(ferrotrace_collector::model::KeyValue::new(
                    "i",
                    AttrValue::Int(i as i64),
                ));
            s
        })
        .collect();
    store.write_spans(&spans).await.expect("write");
    // 10 000 spans start before the cutoff; deletion runs in several chunks.
    let report = store.apply_retention(t0 + 10_000).await.expect("retention");
    assert_eq!(report.spans_deleted, 10_000);
    let range = TimeRange {
        start_ns: t0,
        end_ns: t0 + conformance::DAY,
    };
    let left = store
        .exact_percentiles("ret", None, &[], range, &[1.0])
        .await
        .expect("pct");
    assert_eq!(left, vec![1]);
    let mut q = conformance_query(range);
    q.attributes = vec![ferrotrace_collector::storage::AttrFilter {
        key: "i".into(),
        value: AttrValue::Int(5),
        mode: Default::default(),
    }];
    assert!(
        store.search(&q).await.expect("search").traces.is_empty(),
        "attributes deleted with spans"
    );
    q.attributes[0].value = AttrValue::Int(11_999);
    assert_eq!(store.search(&q).await.expect("search").traces.len(), 1);
}

fn conformance_query(range: TimeRange) -> ferrotrace_collector::storage::TraceQuery {
    ferrotrace_collector::storage::TraceQuery {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_run_while_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    let t0 = conformance::day(0);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for b in 0..20u32 {
                let batch: Vec<_> = (0..200u32)
                    .map(|i| {
                        conformance::span(
                            conformance::tid(51, b * 200 + i),
                            0,
                            None,
                            "rw",
                            "op",
                            t0 + (b * 200 + i) as u64,
                            1,
                        )
                    })
                    .collect();
                store.write_spans(&batch).await.expect("write");
            }
        })
    };
    let range = TimeRange {
        start_ns: t0,
        end_ns: t0 + conformance::DAY,
    };
    let mut last = 0;
    while !writer.is_finished() {
        let services = store.services(range).await.expect("services while writing");
        assert!(services.len() <= 1);
        let n = store
            .search(&conformance_query(range))
            .await
            .expect("search while writing")
            .traces
            .len();
        assert!(n >= last.min(10));
        last = n;
    }
    writer.await.expect("writer");
    assert_eq!(
        store
            .exact_percentiles("rw", None, &[], range, &[0.5])
            .await
            .expect("pct"),
        vec![1]
    );
}

#[tokio::test]
async fn invalid_queries_are_rejected_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
    let range = TimeRange {
        start_ns: 0,
        end_ns: conformance::DAY,
    };
    let bad_step = ferrotrace_collector::storage::LatencyQuery {
        service: "x".into(),
        operation: None,
        range,
        step_ns: Some(1_000),
        kinds: vec![],
    };
    assert!(matches!(
        store.latency(&bad_step).await,
        Err(StorageError::InvalidQuery(_))
    ));
    assert!(matches!(
        store.exact_percentiles("x", None, &[], range, &[1.5]).await,
        Err(StorageError::InvalidQuery(_))
    ));
    let mut q = conformance_query(range);
    q.attributes = vec![ferrotrace_collector::storage::AttrFilter {
        key: "k".into(),
        value: AttrValue::Bytes(vec![1]),
        mode: Default::default(),
    }];
    assert!(matches!(
        store.search(&q).await,
        Err(StorageError::InvalidQuery(_))
    ));
    assert!(SqliteStore::open("/proc/definitely/not/writable/traces.db").is_err());
}

/// The layout-1 schema (the SQLite sink's tables before the append-ordered
/// layout), verbatim, to build a file as older collectors left it.
const LAYOUT_1_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS spans (
    trace_id       BLOB    NOT NULL,
    span_id        BLOB    NOT NULL,
    parent_span_id BLOB,
    service        TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    kind           INTEGER NOT NULL,
    start_ns       INTEGER NOT NULL,
    end_ns         INTEGER NOT NULL,
    duration_ns    INTEGER NOT NULL,
    status_code    INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_start ON spans (start_ns);
CREATE INDEX IF NOT EXISTS spans_service_start ON spans (service, start_ns, duration_ns);
CREATE INDEX IF NOT EXISTS spans_service_name_start ON spans (service, name, start_ns, duration_ns);

CREATE TABLE IF NOT EXISTS span_attributes (
    trace_id BLOB    NOT NULL,
    span_id  BLOB    NOT NULL,
    idx      INTEGER NOT NULL,
    key      TEXT    NOT NULL,
    type     INTEGER NOT NULL,
    str_val  TEXT,
    int_val  INTEGER,
    dbl_val  REAL,
    PRIMARY KEY (trace_id, span_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS span_attributes_str ON span_attributes (key, str_val) WHERE str_val IS NOT NULL;
CREATE INDEX IF NOT EXISTS span_attributes_int ON span_attributes (key, int_val) WHERE int_val IS NOT NULL;
CREATE INDEX IF NOT EXISTS span_attributes_dbl ON span_attributes (key, dbl_val) WHERE dbl_val IS NOT NULL;

CREATE TABLE IF NOT EXISTS op_rollups (
    minute_ns INTEGER NOT NULL,
    service   TEXT    NOT NULL,
    operation TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    errors    INTEGER NOT NULL,
    sketch    BLOB    NOT NULL,
    PRIMARY KEY (minute_ns, service, operation, kind)
);
CREATE INDEX IF NOT EXISTS op_rollups_service ON op_rollups (service, minute_ns);

CREATE TABLE IF NOT EXISTS edge_rollups (
    minute_ns INTEGER NOT NULL,
    caller    TEXT    NOT NULL,
    callee    TEXT    NOT NULL,
    calls     INTEGER NOT NULL,
    errors    INTEGER NOT NULL,
    sketch    BLOB    NOT NULL,
    PRIMARY KEY (minute_ns, caller, callee)
);
"#;

/// Writes `spans` into a new layout-1 file the way the layout-1 sink did.
fn write_layout_1(path: &std::path::Path, spans: &[ferrotrace_collector::model::Span]) {
    use rusqlite::params;
    let mut conn = rusqlite::Connection::open(path).expect("open layout-1 file");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    conn.execute_batch(LAYOUT_1_SCHEMA)
        .expect("layout-1 schema");
    let tx = conn.transaction().expect("tx");
    for s in spans {
        tx.execute(
            "INSERT INTO spans (trace_id, span_id, parent_span_id, service, name, kind, start_ns, \
             end_ns, duration_ns, status_code, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                &s.trace_id[..],
                &s.span_id[..],
                s.parent_span_id.as_ref().map(|p| &p[..]),
                s.service_name.as_str(),
                s.name.as_str(),
                s.kind as i64,
                s.start_ns as i64,
                s.end_ns as i64,
                (s.end_ns - s.start_ns) as i64,
                s.status_code as i64,
                ferrotrace_collector::storage::span_codec::encode_span(s),
            ],
        )
        .expect("layout-1 span");
        for (i, kv) in s.attributes.iter().enumerate() {
            let (ty, sv, iv, dv): (i64, Option<&str>, Option<i64>, Option<f64>) = match &kv.value {
                AttrValue::Str(v) => (0, Some(v.as_str()), None, None),
                AttrValue::Bool(b) => (1, None, Some(*b as i64), None),
                AttrValue::Int(v) => (2, None, Some(*v), None),
                AttrValue::Double(d) if !d.is_nan() => (3, None, None, Some(*d)),
                _ => continue,
            };
            tx.execute(
                "INSERT INTO span_attributes (trace_id, span_id, idx, key, type, str_val, int_val, \
                 dbl_val) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![&s.trace_id[..], &s.span_id[..], i as i64, kv.key.as_str(), ty, sv, iv, dv],
            )
            .expect("layout-1 attribute");
        }
    }
    tx.commit().expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_1_file_is_converted_at_open() {
    use ferrotrace_collector::model::KeyValue;
    use ferrotrace_collector::storage::AttrFilter;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.db");
    let t0 = conformance::day(0);
    let full = conformance::full_span();
    // 25,000 spans: more than one conversion chunk.
    let mut spans: Vec<_> = (0..25_000u32)
        .map(|i| {
            let mut s = conformance::span(
                conformance::tid(60, i / 5),
                i % 5,
                (i % 5 != 0).then_some(0),
                if i % 2 == 0 { "old-a" } else { "old-b" },
                "op",
                t0 + i as u64 * 1_000,
                10 + i as u64 % 100,
            );
            s.attributes = vec![
                KeyValue::new("i", AttrValue::Int(i as i64)),
                KeyValue::new(
                    "code",
                    AttrValue::Str(compact_str::format_compact!("{}", i % 7)),
                ),
                KeyValue::new("ratio", AttrValue::Double(i as f64 / 4.0)),
                KeyValue::new("hit", AttrValue::Bool(i % 3 == 0)),
            ];
            s
        })
        .collect();
    spans.push(full.clone());
    write_layout_1(&path, &spans);

    let store = SqliteStore::open(&path).expect("open converts the layout-1 file");
    // Every span reads back exactly.
    assert_eq!(
        store.get_trace(full.trace_id, None).await.expect("get"),
        vec![full.clone()]
    );
    let trace = store
        .get_trace(conformance::tid(60, 4_321), None)
        .await
        .expect("get");
    assert_eq!(trace, spans[4_321 * 5..4_321 * 5 + 5].to_vec());
    let range = TimeRange {
        start_ns: t0,
        end_ns: t0 + conformance::DAY,
    };
    // Attribute search works on converted rows: typed and Jaeger text.
    let mut q = conformance_query(range);
    q.attributes = vec![AttrFilter::typed("i", AttrValue::Int(12_345))];
    let page = store.search(&q).await.expect("search");
    assert_eq!(page.traces.len(), 1);
    assert_eq!(page.traces[0].trace_id, conformance::tid(60, 2_469));
    q.attributes = vec![
        AttrFilter::text("i", "12345"),
        AttrFilter::text("ratio", "3086.25"),
    ];
    assert_eq!(store.search(&q).await.expect("text search").traces.len(), 1);
    q.attributes = vec![AttrFilter::typed("code", AttrValue::Int(3))];
    assert!(store.search(&q).await.expect("typed").traces.is_empty());
    // Services and exact percentiles see every converted span.
    assert_eq!(
        store.services(range).await.expect("services"),
        vec!["old-a".to_string(), "old-b".to_string()]
    );
    let all: Vec<u64> = store
        .exact_percentiles("old-a", None, &[], range, &[0.0, 1.0])
        .await
        .expect("pct");
    assert_eq!(all, vec![10, 108]);
    // Writes stay idempotent across the conversion: the converted spans are
    // not stored a second time.
    store.write_spans(&spans[..1_000]).await.expect("rewrite");
    assert_eq!(
        store
            .get_trace(conformance::tid(60, 7), None)
            .await
            .expect("get")
            .len(),
        5
    );
    drop(store);
    // The old tables are gone and the layout version is recorded.
    let conn = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 5);
    let old: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('spans_v1', 'span_attributes')",
            [],
            |r| r.get(0),
        )
        .expect("old tables");
    assert_eq!(old, 0);
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 25_001);
    drop(conn);
    // Reopening a converted file changes nothing.
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        store.get_trace(full.trace_id, None).await.expect("get"),
        vec![full]
    );
}

/// The indexes of the `spans` table, by name.
fn span_indexes(conn: &rusqlite::Connection) -> Vec<String> {
    conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spans' ORDER BY name",
    )
    .expect("prepare")
    .query_map([], |r| r.get(0))
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_2_file_is_converted_to_layout_5_at_open() {
    use ferrotrace_collector::model::{SpanKind, StatusCode};
    use ferrotrace_collector::storage::AttrFilter;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.db");
    let t0 = conformance::day(0);
    // 300 traces of one server and two client spans; every tenth trace has
    // an erroring client span.
    let spans: Vec<_> = (0..900u32)
        .map(|i| {
            let (t, k) = (i / 3, i % 3);
            let mut s = conformance::span(
                conformance::tid(61, t),
                k,
                (k != 0).then_some(0),
                "svc",
                "op",
                t0 + t as u64 * 1_000_000 + k as u64,
                10 + i as u64,
            );
            if k != 0 {
                s.kind = SpanKind::Client;
            }
            if t % 10 == 0 && k == 2 {
                s.status_code = StatusCode::Error;
            }
            s.attributes = vec![
                ferrotrace_collector::model::KeyValue::new("t", AttrValue::Int(i64::from(t))),
                ferrotrace_collector::model::KeyValue::new(
                    "k",
                    AttrValue::Str(format!("k{k}").into()),
                ),
            ];
            s
        })
        .collect();
    let store = SqliteStore::open(&path).expect("create");
    store.write_spans(&spans).await.expect("write");
    drop(store);
    // The same file as the layout-2 sink left it: its two time indexes
    // (verbatim) instead of layout 3's four indexes, and its attribute table
    // (verbatim, as layout 3 kept it) keyed by span with a term index.
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "DROP INDEX spans_service_start_v3; DROP INDEX spans_service_name_start_v3; \
             DROP INDEX spans_errors; DROP INDEX spans_service_errors; \
             CREATE INDEX IF NOT EXISTS spans_service_start ON spans (service, start_ns, duration_ns); \
             CREATE INDEX IF NOT EXISTS spans_service_name_start ON spans (service, name, start_ns, duration_ns); \
             CREATE TABLE span_attrs_old (span_rowid INTEGER NOT NULL, idx INTEGER NOT NULL, \
                 term INTEGER NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL, value NOT NULL, \
                 PRIMARY KEY (span_rowid, idx)) WITHOUT ROWID; \
             INSERT INTO span_attrs_old SELECT j.value, p.term, p.term, p.key, p.type, p.value \
                 FROM span_postings p, json_each(p.rowids) j; \
             DROP TABLE span_postings; DROP TABLE store_counters; \
             ALTER TABLE span_attrs_old RENAME TO span_attrs; \
             CREATE INDEX span_attrs_term ON span_attrs (term); \
             PRAGMA user_version = 2;",
        )
        .expect("downgrade to layout 2");
    }

    let store = SqliteStore::open(&path).expect("open converts the layout-2 file");
    let range = TimeRange {
        start_ns: t0,
        end_ns: t0 + conformance::DAY,
    };
    let mut q = conformance_query(range);
    q.errors_only = true;
    q.limit = 100;
    let page = store.search(&q).await.expect("errors-only search");
    let found: Vec<_> = page.traces.iter().map(|t| t.trace_id).collect();
    let want: Vec<_> = (0..30u32)
        .rev()
        .map(|k| conformance::tid(61, k * 10))
        .collect();
    assert_eq!(found, want);
    // Entry spans only: the 300 server spans, durations 10, 13, ..., 907.
    let pct = store
        .exact_percentiles("svc", None, &[SpanKind::Server], range, &[0.0, 1.0])
        .await
        .expect("percentiles");
    assert_eq!(pct, vec![10, 907]);
    // Attribute search finds the moved rows, typed and as Jaeger text.
    let mut q = conformance_query(range);
    q.attributes = vec![
        AttrFilter::typed("t", AttrValue::Int(123)),
        AttrFilter::text("k", "k2"),
    ];
    let page = store.search(&q).await.expect("attribute search");
    assert_eq!(
        page.traces.iter().map(|t| t.trace_id).collect::<Vec<_>>(),
        vec![conformance::tid(61, 123)]
    );
    q.attributes = vec![AttrFilter::typed("k", AttrValue::Str("k1".into()))];
    q.limit = 1_000;
    assert_eq!(store.search(&q).await.expect("search").traces.len(), 300);
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 5);
    let (attr_rows, old): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT SUM(json_array_length(rowids)) FROM span_postings), \
             (SELECT COUNT(*) FROM sqlite_master \
             WHERE name IN ('span_attrs', 'span_attrs_v3', 'span_attrs_term'))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("attribute rows");
    assert_eq!((attr_rows, old), (1_800, 0));
    assert_eq!(
        span_indexes(&conn),
        vec![
            "spans_errors",
            "spans_service_errors",
            "spans_service_name_start_v3",
            "spans_service_start_v3",
            "spans_start",
            "spans_trace",
        ]
    );
}

#[tokio::test]
async fn newer_layout_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.db");
    SqliteStore::open(&path).expect("create");
    rusqlite::Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", 99)
        .expect("bump version");
    let err = SqliteStore::open(&path).expect_err("a newer layout must be refused");
    assert!(err.to_string().contains("newer ferrotrace"), "{err}");
}
