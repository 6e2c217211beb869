//! Regression guards for the SQLite sink's query plans: which index each
//! search shape and the exact-percentile statements use, and how much work an
//! errors-only search does, counted by SQLite itself
//! (`SQLITE_STMTSTATUS_VM_STEP`), not timed.
//!
//! Both regressions these guard against were invisible to the conformance
//! suite (the answers stayed right) and only showed at 1M spans in
//! `tests/query_bench.rs`: an errors-only search that read every span row of
//! its range to find the few error spans, and exact percentiles that read a
//! span row per span once they filtered on `kind`, a column their index
//! lacked.

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, StatementStatus};

use super::analytics::{exact_percentiles_tx, exact_statements};
use super::read::{probe_sql, search_tx, span_conditions, window_sql};
use super::write::write_spans_tx;
use crate::model::{AttrValue, KeyValue, Span, SpanKind, StatusCode};
use crate::storage::{TimeRange, TraceQuery};

const SERVICES: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
const TRACES: u64 = 2_000;
const PER_TRACE: u64 = 10;
const HOUR_NS: u64 = 3_600_000_000_000;
const BASE_NS: u64 = 1_800_000_000_000_000_000;

/// 20,000 spans over one hour like the query benchmark's: 10 spans per trace
/// over 10 services and 20 operations, the first a server span, the others
/// client spans; in one trace of ten the last span is an error (200 error
/// spans, 1% of the spans).
fn spans() -> Vec<Span> {
    let gap = HOUR_NS / TRACES;
    let mut out = Vec::with_capacity((TRACES * PER_TRACE) as usize);
    for t in 0..TRACES {
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&(t + 1).to_be_bytes());
        let start = BASE_NS + t * gap;
        for i in 0..PER_TRACE {
            let dur = 1_000_000 + (t * 7919 + i * 104_729) % 50_000_000;
            out.push(Span {
                trace_id,
                span_id: (i + 1).to_be_bytes(),
                parent_span_id: (i > 0).then(|| i.to_be_bytes()),
                flags: 1,
                name: compact_str::format_compact!("op-{}", (t + i) % 20),
                kind: if i == 0 {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                },
                start_ns: start + i * 1_000,
                end_ns: start + i * 1_000 + dur,
                attributes: vec![KeyValue::new("http.status_code", AttrValue::Int(200))],
                status_code: if t % 10 == 0 && i == PER_TRACE - 1 {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                service_name: SERVICES[((t + i) % 10) as usize].into(),
                ..Span::test(0)
            });
        }
    }
    out
}

fn store(spans: &[Span]) -> Connection {
    let mut conn = Connection::open_in_memory().expect("db");
    super::migrate::prepare(&mut conn, super::migrate::MIGRATION_CHUNK).expect("schema");
    write_spans_tx(&mut conn, spans).expect("write");
    conn
}

fn hour() -> TimeRange {
    TimeRange {
        start_ns: BASE_NS,
        end_ns: BASE_NS + HOUR_NS,
    }
}

fn query(service: Option<&str>, operation: Option<&str>, errors_only: bool) -> TraceQuery {
    TraceQuery {
        service: service.map(str::to_string),
        operation: operation.map(str::to_string),
        attributes: Vec::new(),
        min_duration_ns: None,
        max_duration_ns: None,
        errors_only,
        range: hour(),
        limit: 100,
        cursor: None,
    }
}

/// `EXPLAIN QUERY PLAN` of `sql` with `args` bound: one line per plan step.
fn plan(conn: &Connection, sql: &str, args: &[Value]) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    stmt.query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows")
}

/// The plan steps that read the `spans` table through the outer alias `s`
/// (the matching spans; `sp` is the per-trace start lookup).
fn matching_steps(steps: &[String]) -> Vec<&String> {
    steps
        .iter()
        .filter(|d| d.starts_with("SEARCH s ") || d.starts_with("SCAN s"))
        .collect()
}

/// The probe's and the windows' statements of `q` (first page: bounded and
/// complete; a later page: bounded, after a cursor) with representative
/// values bound, each with its plan.
fn search_plans(conn: &Connection, q: &TraceQuery) -> Vec<(String, Vec<String>)> {
    let (conds, args) = span_conditions(conn, q).expect("conditions");
    let bounds = |extra: &[Value]| {
        let mut all: Vec<Value> = vec![
            Value::Integer(q.range.start_ns as i64),
            Value::Integer(q.range.end_ns as i64),
        ];
        all.extend(args.iter().cloned());
        all.extend(extra.iter().cloned());
        all
    };
    let probe = probe_sql(&conds);
    let bounded = window_sql(&conds, true, false);
    let complete = window_sql(&conds, false, false);
    let next_page = window_sql(&conds, true, true);
    let mid = Value::Integer((q.range.start_ns + HOUR_NS / 2) as i64);
    vec![
        (
            probe.clone(),
            plan(conn, &probe, &bounds(&[Value::Integer(12_928)])),
        ),
        (
            bounded.clone(),
            plan(
                conn,
                &bounded,
                &bounds(&[Value::Integer(q.range.start_ns as i64), Value::Integer(101)]),
            ),
        ),
        (
            complete.clone(),
            plan(conn, &complete, &bounds(&[Value::Integer(101)])),
        ),
        (
            next_page.clone(),
            plan(
                conn,
                &next_page,
                &bounds(&[
                    Value::Integer(q.range.start_ns as i64),
                    mid.clone(),
                    mid,
                    Value::Blob(vec![0xff; 16]),
                    Value::Integer(101),
                ]),
            ),
        ),
    ]
}

/// Asserts that every statement of `q`'s search reads its matching spans
/// through `index` only.
fn assert_search_uses(conn: &Connection, q: &TraceQuery, index: &str) {
    for (sql, steps) in search_plans(conn, q) {
        let matching = matching_steps(&steps);
        assert!(
            !matching.is_empty() && matching.iter().all(|d| d.contains(&format!(" {index} "))),
            "expected {sql} to read spans through {index}, plan: {steps:#?}"
        );
    }
}

#[test]
fn errors_only_searches_read_the_error_indexes() {
    let conn = store(&spans());
    assert_search_uses(&conn, &query(None, None, true), "spans_errors");
    assert_search_uses(
        &conn,
        &query(Some("s3"), None, true),
        "spans_service_errors",
    );
    let mut slow = query(Some("s3"), None, true);
    slow.min_duration_ns = Some(10_000_000);
    assert_search_uses(&conn, &slow, "spans_service_errors");
}

#[test]
fn other_searches_read_their_time_indexes() {
    let conn = store(&spans());
    assert_search_uses(&conn, &query(None, None, false), "spans_start");
    assert_search_uses(
        &conn,
        &query(Some("s3"), None, false),
        "spans_service_start_v3",
    );
    assert_search_uses(
        &conn,
        &query(Some("s3"), Some("op-4"), false),
        "spans_service_name_start_v3",
    );
}

/// The VM steps (SQLite's own count of the work) that the probe and window
/// statements of `q` made on `conn` so far: the search's cached statements,
/// whose counters hold everything they did.
fn search_vm_steps(conn: &Connection, q: &TraceQuery) -> i64 {
    let (conds, _) = span_conditions(conn, q).expect("conditions");
    [
        probe_sql(&conds),
        window_sql(&conds, true, false),
        window_sql(&conds, false, false),
    ]
    .iter()
    .map(|sql| {
        i64::from(
            conn.prepare_cached(sql)
                .expect("cached")
                .get_status(StatementStatus::VmStep),
        )
    })
    .sum()
}

/// The work, not just the plan: an errors-only search over a store with four
/// times as many spans in the same hour, none of them errors, does the same
/// work (counted by SQLite, not timed). A search that walks the time index
/// and reads every span row to test its status does about five VM steps per
/// span of the range, so it would do about four times as many.
#[test]
fn errors_only_search_work_follows_the_error_spans_not_the_store() {
    let base = spans();
    let mut grown = base.clone();
    // 60,000 more spans over the same hour: three copies of every trace
    // under other trace ids, without errors.
    for copy in 1..=3u64 {
        grown.extend(base.iter().map(|s| {
            let mut c = s.clone();
            c.trace_id[..8].copy_from_slice(&copy.to_be_bytes());
            c.start_ns += copy * 100;
            c.end_ns += copy * 100;
            c.status_code = StatusCode::Unset;
            c
        }));
    }
    let q = query(None, None, true);
    let mut work = Vec::new();
    let mut pages = Vec::new();
    for spans in [&base, &grown] {
        let conn = store(spans);
        pages.push(search_tx(&conn, &q).expect("search"));
        work.push(search_vm_steps(&conn, &q));
    }
    // Right answer, the same on both: the newest 100 of the 200 traces with
    // an error span.
    assert_eq!(pages[0], pages[1]);
    assert_eq!(pages[0].traces.len(), 100);
    assert!(pages[0].next_cursor.is_some());
    assert!(pages[0].traces.iter().all(|t| t.error_count == 1));
    let (small, large) = (work[0], work[1]);
    assert!(
        small > 0 && large <= small + small / 10,
        "errors-only search: {small} VM steps over {} spans, {large} over {} spans \
         with the same 200 error spans: its work must follow the error spans, not the store",
        base.len(),
        grown.len()
    );
}

#[test]
fn exact_percentiles_read_one_covering_index() {
    let spans = spans();
    let conn = store(&spans);
    let entry = [SpanKind::Server, SpanKind::Consumer];
    let cases: [(Option<&str>, &[SpanKind], &str); 4] = [
        (None, &entry, "spans_service_start_v3"),
        (None, &[], "spans_service_start_v3"),
        (Some("op-3"), &entry, "spans_service_name_start_v3"),
        (Some("op-3"), &[], "spans_service_name_start_v3"),
    ];
    for (operation, kinds, index) in cases {
        let (count, durations, args) = exact_statements("s3", operation, kinds, hour());
        for sql in [count, durations] {
            let steps = plan(&conn, &sql, &args);
            let reads: Vec<&String> = steps
                .iter()
                .filter(|d| d.starts_with("SEARCH") || d.starts_with("SCAN"))
                .collect();
            assert!(
                reads.len() == 1 && reads[0].contains(&format!("USING COVERING INDEX {index} ")),
                "expected {sql} to read only the covering index {index}, plan: {steps:#?}"
            );
        }
        // And the answer is the nearest-rank percentile of those spans.
        let mut want: Vec<u64> = spans
            .iter()
            .filter(|s| s.service_name == "s3")
            .filter(|s| operation.is_none_or(|op| s.name == op))
            .filter(|s| kinds.is_empty() || kinds.contains(&s.kind))
            .map(|s| s.end_ns - s.start_ns)
            .collect();
        want.sort_unstable();
        let n = want.len() as f64;
        let rank = |q: f64| want[((q * n).ceil() as usize).max(1) - 1];
        assert_eq!(
            exact_percentiles_tx(&conn, "s3", operation, kinds, hour(), &[0.5, 0.99])
                .expect("percentiles"),
            vec![rank(0.5), rank(0.99)]
        );
    }
}

/// An attribute condition looks its terms up in `span_postings`'s own key
/// (layout 5: the table is clustered on the term, its only other index is
/// retention's) and finds key, type and value there, with no second lookup
/// per hit: a rare value's lists are expanded once (`Lists`), a value on
/// every span is checked per span in the one list that can hold it
/// (`PerSpan`, found by the key too).
#[test]
fn attribute_searches_look_terms_up_in_the_posting_key() {
    use super::postings::{choose_lookup, Lookup};
    let conn = store(&spans());
    let mut q = query(Some("s3"), None, false);
    for (status, want) in [(500, Lookup::Lists), (200, Lookup::PerSpan)] {
        let f = crate::storage::AttrFilter {
            key: "http.status_code".into(),
            value: AttrValue::Int(status),
            mode: Default::default(),
        };
        assert_eq!(choose_lookup(&conn, &f).expect("lookup"), want);
        q.attributes = vec![f];
        for (sql, steps) in search_plans(&conn, &q) {
            let attrs: Vec<&String> = steps
                .iter()
                .filter(|d| {
                    d.contains("span_postings")
                        || ["SEARCH a ", "SCAN a", "SEARCH b ", "SCAN b"]
                            .iter()
                            .any(|p| d.starts_with(p))
                })
                .collect();
            let keyed = |d: &&String| match want {
                Lookup::Lists => d.starts_with("SEARCH a USING PRIMARY KEY (term=?)"),
                Lookup::PerSpan => {
                    d.starts_with("SEARCH a USING PRIMARY KEY (term=? AND first_rowid=?)")
                        || d.starts_with("SEARCH b USING PRIMARY KEY (term=? AND first_rowid<?)")
                }
            };
            assert!(
                !attrs.is_empty() && attrs.iter().all(keyed),
                "expected {sql} to look terms up in span_postings' primary key ({want:?}), plan: {steps:#?}"
            );
        }
    }
    let page = search_tx(&conn, &q).expect("search");
    assert!(!page.traces.is_empty());
    assert!(page
        .traces
        .iter()
        .all(|t| t.services.iter().any(|s| s == "s3")));
}
