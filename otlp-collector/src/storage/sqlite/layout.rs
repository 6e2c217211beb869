//! The SQLite sink's on-disk layout: the schema and how a span becomes rows.
//! The attribute index is in [`postings`](super::postings), the conversion
//! of older layouts in [`migrate`](super::migrate).
//!
//! Layout version 5 (`PRAGMA user_version = 5`), chosen so that a write
//! touches few B-trees, and almost every entry it adds lands at the
//! right-hand end of its B-tree (cheap, and the touched pages stay in cache)
//! instead of at a random place:
//!
//! - `spans` is a rowid table: `id` grows with arrival, so the row (with the
//!   span blob) is appended. The writer assigns `id` itself, above every id
//!   ever given out (`store_counters.span_rowid_high`): a posting list may
//!   still name a deleted span's id, so an id is never given out twice. A
//!   `UNIQUE (trace_id, span_id)` index keeps writes idempotent; it is the
//!   only index with random keys, and its entries are small. The time
//!   indexes are appended per service/operation.
//! - The `(service[, name], start_ns, duration_ns, kind)` indexes answer exact
//!   percentiles (which filter on `kind`: entry spans only) without reading
//!   span rows. Two partial indexes hold only error spans, `(start_ns)` and
//!   `(service, start_ns)`, so an errors-only search reads the error spans of
//!   its range, not every span of it; a write pays for them only on error
//!   spans.
//! - `span_postings` is the attribute index: one row per distinct searchable
//!   attribute (a *term*, a 64-bit hash of key, type and value) per written
//!   batch, holding the row ids of the batch's spans that carry it. One
//!   B-tree insertion per term and batch instead of one per attribute: the
//!   attribute rows of layout 4 were about 60% of the writer's time
//!   (docs/benchmarks.md, session 19).
//!
//! Layout 4 kept one `span_attrs` row per attribute, clustered on `(term,
//! span_rowid, idx)`; layouts 2 and 3 the same rows keyed by `(span_rowid,
//! idx)` with a term index; layout 1 a differently shaped span table. All
//! are converted when the store opens ([`migrate`](super::migrate)).

use rusqlite::{params, Connection};

use super::postings::{self, span_terms, AttrRow};
use super::{map_err, to_i64};
use crate::model::Span;
use crate::storage::span_codec::encode_span_into;
use crate::storage::{StorageError, StorageResult};

/// The layout this code writes (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = 5;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS spans (
    id             INTEGER PRIMARY KEY,
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
    data           BLOB    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_trace ON spans (trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_start ON spans (start_ns);
CREATE INDEX IF NOT EXISTS spans_service_start_v3 ON spans (service, start_ns, duration_ns, kind);
CREATE INDEX IF NOT EXISTS spans_service_name_start_v3 ON spans (service, name, start_ns, duration_ns, kind);
-- Error spans only (status code 2 = error, the literal the search writes, so
-- that SQLite can use them).
CREATE INDEX IF NOT EXISTS spans_errors ON spans (start_ns) WHERE status_code = 2;
CREATE INDEX IF NOT EXISTS spans_service_errors ON spans (service, start_ns) WHERE status_code = 2;

-- The highest span row id ever given out (`span_rowid_high`): ids are never
-- reused, because posting lists may still name deleted spans.
CREATE TABLE IF NOT EXISTS store_counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per term and written batch (see `postings.rs`). `value` has no
-- declared type on purpose: no affinity, so a string "500" stays text and
-- the integer 500 stays an integer. `rowids` is a JSON array of span row
-- ids, ascending, which a search expands with `json_each`; `id_count` how
-- many (before the list, so that summing it reads no overflow page).
-- `max_start_ns` (the latest start of those spans) is when retention may
-- drop the row.
CREATE TABLE IF NOT EXISTS span_postings (
    term         INTEGER NOT NULL,
    first_rowid  INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    type         INTEGER NOT NULL,
    value                NOT NULL,
    max_start_ns INTEGER NOT NULL,
    id_count     INTEGER NOT NULL,
    rowids       TEXT    NOT NULL,
    PRIMARY KEY (term, first_rowid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS span_postings_start ON span_postings (max_start_ns);

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

/// The row id the next new span gets: above every stored span and every id
/// ever given out (a file converted from layout 4 or older has no counter
/// yet; its spans' ids were never reused while its attribute rows went with
/// them).
fn next_span_rowid(conn: &Connection) -> StorageResult<i64> {
    let high: i64 = conn
        .prepare_cached(
            "SELECT MAX(COALESCE((SELECT MAX(id) FROM spans), 0), \
             COALESCE((SELECT value FROM store_counters WHERE name = 'span_rowid_high'), 0))",
        )
        .map_err(map_err)?
        .query_row([], |r| r.get(0))
        .map_err(map_err)?;
    high.checked_add(1).ok_or_else(|| {
        StorageError::Backend(
            "the SQLite store has given out every span row id; start a new data directory".into(),
        )
    })
}

/// Stores `spans` in the transaction `conn` is in: each one unless a span
/// with its `(trace_id, span_id)` is stored already (the first stored
/// version wins; a retried batch is a no-op), then the new spans' posting
/// rows ([`postings::write`]). Returns how many spans were new.
pub(super) fn insert_spans(conn: &Connection, spans: &[Span]) -> StorageResult<usize> {
    let mut ins_span = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO spans (id, trace_id, span_id, parent_span_id, service, name, \
             kind, start_ns, end_ns, duration_ns, status_code, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(map_err)?;
    let mut next = next_span_rowid(conn)?;
    let mut blob = Vec::with_capacity(1024);
    let mut scratch = Vec::with_capacity(256);
    let mut rows: Vec<AttrRow<'_>> = Vec::new();
    let mut new = 0;
    for s in spans {
        blob.clear();
        encode_span_into(s, &mut blob);
        let start_ns = to_i64(s.start_ns);
        let inserted = ins_span
            .execute(params![
                next,
                &s.trace_id[..],
                &s.span_id[..],
                s.parent_span_id.as_ref().map(|p| &p[..]),
                s.service_name.as_str(),
                s.name.as_str(),
                s.kind as i64,
                start_ns,
                to_i64(s.end_ns),
                to_i64(s.duration_ns()),
                s.status_code as i64,
                &blob[..],
            ])
            .map_err(map_err)?;
        if inserted == 0 {
            // Already stored (a retried batch): its attributes are too.
            continue;
        }
        new += 1;
        let span_rowid = next;
        next += 1;
        rows.extend(
            span_terms(s, &mut scratch).map(|(term, key, ty, value)| AttrRow {
                term,
                span_rowid,
                start_ns,
                key,
                ty,
                value,
            }),
        );
    }
    if new > 0 {
        postings::write(conn, &rows)?;
        conn.prepare_cached(
            "INSERT INTO store_counters (name, value) VALUES ('span_rowid_high', ?1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .map_err(map_err)?
        .execute([next - 1])
        .map_err(map_err)?;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, KeyValue};

    /// Row ids are never given out twice, even once the spans that had the
    /// highest ones are deleted (a posting list may still name them).
    #[test]
    fn span_row_ids_are_not_reused_after_deletes() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::migrate::prepare(&mut conn, 10).expect("schema");
        let spans: Vec<Span> = (1..=3).map(Span::test).collect();
        assert_eq!(insert_spans(&conn, &spans).expect("insert"), 3);
        conn.execute("DELETE FROM spans WHERE id >= 2", [])
            .expect("delete the newest");
        let mut s = Span::test(4);
        s.attributes = vec![KeyValue::new("a", AttrValue::Int(1))];
        assert_eq!(insert_spans(&conn, &[s]).expect("insert"), 1);
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM spans ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(ids, vec![1, 4]);
        // A retried batch is a no-op and gives out no id.
        assert_eq!(insert_spans(&conn, &spans[..1]).expect("again"), 0);
        assert_eq!(next_span_rowid(&conn).expect("next"), 5);
    }
}
