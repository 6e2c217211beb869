// Over ~800 lines and not split (issue 19): the last 300 are the unit tests of the
// layout and its migrations, which build files of the older layouts by hand.
//! The SQLite sink's on-disk layout: the schema, how a span becomes rows, and
//! the migration from older layouts.
//!
//! Layout version 4 (`PRAGMA user_version = 4`), chosen so that a write
//! touches few B-trees, and almost every entry it adds lands at the
//! right-hand end of its B-tree or of a term's run in it (cheap, and the
//! touched pages stay in cache) instead of at a random place:
//!
//! - `spans` is a rowid table: `id` grows with arrival, so the row (with the
//!   span blob) is appended. A `UNIQUE (trace_id, span_id)` index keeps writes
//!   idempotent; it is the only index with random keys, and its entries are
//!   small. The time indexes are appended per service/operation.
//! - The `(service[, name], start_ns, duration_ns, kind)` indexes answer exact
//!   percentiles (which filter on `kind`: entry spans only) without reading
//!   span rows. Two partial indexes hold only error spans, `(start_ns)` and
//!   `(service, start_ns)`, so an errors-only search reads the error spans of
//!   its range, not every span of it; a write pays for them only on error
//!   spans.
//! - `span_attrs` holds one row per scalar span attribute, clustered on
//!   `(term, span_rowid, idx)` (`WITHOUT ROWID`, no other index): `term` is a
//!   64-bit XXH3 hash of (key, type, value). Attribute search is equality
//!   only, so a condition becomes a term lookup, and the stored key, type and
//!   value (in the same entry) are compared as well, so a hash collision can
//!   never produce a wrong match. One B-tree insertion per attribute; a
//!   batch's rows are inserted sorted by key, and within a term they arrive
//!   in span order, so they append to the term's run. Retention finds a
//!   span's rows by the terms recomputed from its blob.
//!
//! Version 3 had the same span table and indexes, and `span_attrs` keyed by
//! `(span_rowid, idx)` with a separate index on `term` (two B-tree
//! insertions per attribute); [`prepare`] sets that table aside and moves
//! its rows in chunks when the store opens.
//!
//! Version 2 had version 3's attribute table, `(service[, name], start_ns,
//! duration_ns)` indexes (no `kind`) and no error indexes; [`prepare`] builds
//! the new indexes and drops the old ones when the store opens, then moves
//! the attribute rows as for version 3.
//!
//! Version 1 (`user_version = 0`) kept spans in a table clustered on
//! `(trace_id, span_id)` and attributes in a `WITHOUT ROWID` table clustered
//! on `(trace_id, span_id, idx)` with three partial indexes. [`prepare`]
//! converts such a file when the store opens.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, CachedStatement, Connection, TransactionBehavior};

use super::{map_err, to_i64};
use crate::model::{AttrValue, Span};
use crate::storage::span_codec::{decode_span, encode_span_into};
use crate::storage::{AttrFilter, StorageError, StorageResult};

/// The layout this code writes (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = 4;

/// Spans moved per transaction when converting a layout-1 file.
pub(super) const MIGRATION_CHUNK: usize = 10_000;

const SCHEMA: &str = r#"
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

-- `value` has no declared type on purpose: no affinity, so a string "500"
-- stays text and the integer 500 stays an integer. Clustered on the term:
-- one B-tree insertion per attribute, and a search reads key, type and
-- value from the entry its term lookup lands on.
CREATE TABLE IF NOT EXISTS span_attrs (
    term       INTEGER NOT NULL,
    span_rowid INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    type       INTEGER NOT NULL,
    value              NOT NULL,
    PRIMARY KEY (term, span_rowid, idx)
) WITHOUT ROWID;

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

/// Attribute type codes in `span_attrs.type`.
pub(super) const T_STR: i64 = 0;
pub(super) const T_BOOL: i64 = 1;
pub(super) const T_INT: i64 = 2;
pub(super) const T_DOUBLE: i64 = 3;

/// A searchable attribute value as stored: its type code and the SQL value.
/// Bytes, arrays, maps and NaN are kept in the span blob but not indexed
/// (`None`). Borrows, so the write path copies no strings.
pub(super) fn indexed(v: &AttrValue) -> Option<(i64, ValueRef<'_>)> {
    Some(match v {
        AttrValue::Str(s) => (T_STR, ValueRef::Text(s.as_bytes())),
        AttrValue::Bool(b) => (T_BOOL, ValueRef::Integer(*b as i64)),
        AttrValue::Int(i) => (T_INT, ValueRef::Integer(*i)),
        AttrValue::Double(d) if !d.is_nan() => (T_DOUBLE, ValueRef::Real(*d)),
        _ => return None,
    })
}

/// The term of a searchable attribute: XXH3-64 (seed 0, a fixed, published
/// algorithm, so stored terms stay valid across versions) over the key's
/// length and bytes, the type code and the value's bytes. `-0.0` hashes as
/// `0.0` because SQL compares them equal. `buf` is scratch space.
pub(super) fn term(key: &str, ty: i64, value: ValueRef<'_>, buf: &mut Vec<u8>) -> i64 {
    buf.clear();
    buf.extend_from_slice(&(key.len() as u64).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.push(ty as u8);
    match value {
        ValueRef::Text(s) => buf.extend_from_slice(s),
        ValueRef::Integer(i) => buf.extend_from_slice(&i.to_le_bytes()),
        ValueRef::Real(d) => {
            let d = if d == 0.0 { 0.0 } else { d };
            buf.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        // `indexed` produces nothing else.
        ValueRef::Null | ValueRef::Blob(_) => {}
    }
    twox_hash::XxHash3_64::oneshot(buf) as i64
}

/// Attribute rows per multi-row `INSERT`: far cheaper than a statement per
/// row. A batch's last few rows go one per statement, so that only two
/// statements are ever prepared (another row count would be another cached
/// statement, evicting hot ones).
const ATTR_ROWS_PER_INSERT: usize = 32;
const ATTR_COLUMNS: usize = 6;

/// `OR IGNORE`: no row here can conflict (the span's row id is new and
/// `idx` unique within it, `value` is never NULL), but a multi-row statement
/// that could abort half-way makes SQLite copy every page it touches into a
/// statement journal first, to undo just that statement: 6–9% of the
/// collector's CPU at 15,000 spans/s (profile in docs/benchmarks.md). A
/// statement that cannot abort needs none. (A layout-3 conversion that
/// resumes after a crash relies on it too: rows already moved are skipped.)
fn insert_attrs_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO span_attrs (term, span_rowid, idx, key, type, value) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?)");
    }
    sql
}

/// One attribute row of a batch, waiting for the batch's sorted insert.
struct AttrRow<'s> {
    term: i64,
    span_rowid: i64,
    idx: i64,
    key: &'s str,
    ty: i64,
    value: ValueRef<'s>,
}

/// The terms of `s`'s searchable attributes with their positions, as
/// [`insert_spans`] stores them (retention finds a span's rows by them).
fn span_terms<'s, 'b>(
    s: &'s Span,
    buf: &'b mut Vec<u8>,
) -> impl Iterator<Item = (i64, usize, &'s str, i64, ValueRef<'s>)> + use<'s, 'b> {
    s.attributes.iter().enumerate().filter_map(move |(i, kv)| {
        indexed(&kv.value).map(|(ty, v)| (term(&kv.key, ty, v, buf), i, kv.key.as_str(), ty, v))
    })
}

/// Stores `spans` in the transaction `conn` is in: each one unless a span
/// with its `(trace_id, span_id)` is stored already (the first stored
/// version wins; a retried batch is a no-op), then the new spans' attribute
/// rows, sorted by their key `(term, span_rowid, idx)`. Sorted, the rows of
/// one term go in one after the other into the same leaf pages, which stay
/// hot, instead of hopping between a batch's few hundred insertion points
/// (or, for high-cardinality values, random places) once per span. Returns
/// how many spans were new.
pub(super) fn insert_spans(conn: &Connection, spans: &[Span]) -> StorageResult<usize> {
    let mut ins_span = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_span_id, service, name, kind, \
             start_ns, end_ns, duration_ns, status_code, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(map_err)?;
    let mut blob = Vec::with_capacity(1024);
    let mut scratch = Vec::with_capacity(256);
    let mut rows: Vec<AttrRow<'_>> = Vec::new();
    let mut new = 0;
    for s in spans {
        blob.clear();
        encode_span_into(s, &mut blob);
        let inserted = ins_span
            .execute(params![
                &s.trace_id[..],
                &s.span_id[..],
                s.parent_span_id.as_ref().map(|p| &p[..]),
                s.service_name.as_str(),
                s.name.as_str(),
                s.kind as i64,
                to_i64(s.start_ns),
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
        let span_rowid = conn.last_insert_rowid();
        rows.extend(
            span_terms(s, &mut scratch).map(|(term, i, key, ty, value)| AttrRow {
                term,
                span_rowid,
                idx: i as i64,
                key,
                ty,
                value,
            }),
        );
    }
    // The rows were pushed in `(span_rowid, idx)` order, so `(term,
    // position)` orders them by their key `(term, span_rowid, idx)`: the
    // sort moves 16-byte pairs instead of the 72-byte rows (it took ~5% of
    // the transaction's instructions). The order only makes the inserts
    // cheaper; any order stores the same rows.
    let mut order: Vec<(i64, usize)> = rows.iter().enumerate().map(|(i, r)| (r.term, i)).collect();
    order.sort_unstable();
    let mut chunks = order.chunks_exact(ATTR_ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut stmt = conn
            .prepare_cached(&insert_attrs_sql(ATTR_ROWS_PER_INSERT))
            .map_err(map_err)?;
        for chunk in &mut chunks {
            bind_attr_rows(&mut stmt, chunk.iter().map(|&(_, i)| &rows[i]))?;
            stmt.raw_execute().map_err(map_err)?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut one = conn.prepare_cached(&insert_attrs_sql(1)).map_err(map_err)?;
        for &(_, i) in rest {
            bind_attr_rows(&mut one, std::iter::once(&rows[i]))?;
            one.raw_execute().map_err(map_err)?;
        }
    }
    Ok(new)
}

fn bind_attr_rows<'r, 's: 'r>(
    stmt: &mut CachedStatement<'_>,
    rows: impl Iterator<Item = &'r AttrRow<'s>>,
) -> StorageResult<()> {
    for (r, row) in rows.enumerate() {
        let at = r * ATTR_COLUMNS;
        stmt.raw_bind_parameter(at + 1, row.term).map_err(map_err)?;
        stmt.raw_bind_parameter(at + 2, row.span_rowid)
            .map_err(map_err)?;
        stmt.raw_bind_parameter(at + 3, row.idx).map_err(map_err)?;
        stmt.raw_bind_parameter(at + 4, row.key).map_err(map_err)?;
        stmt.raw_bind_parameter(at + 5, row.ty).map_err(map_err)?;
        stmt.raw_bind_parameter(at + 6, ToSqlOutput::Borrowed(row.value))
            .map_err(map_err)?;
    }
    Ok(())
}

/// Deletes the attribute rows of the span stored at `span_rowid` whose blob
/// is `data`, found by the terms recomputed from the blob (the same ones
/// [`insert_spans`] stored). A blob that no longer decodes falls back to a
/// scan of the whole table: slow, but rows must not outlive their span, or
/// a later span given the same row id (SQLite reuses the highest ones once
/// they are deleted) would inherit them in searches.
pub(super) fn delete_span_attrs(
    conn: &Connection,
    span_rowid: i64,
    data: &[u8],
    buf: &mut Vec<u8>,
) -> StorageResult<()> {
    match decode_span(data) {
        Ok(span) => {
            let mut del = conn
                .prepare_cached("DELETE FROM span_attrs WHERE term = ?1 AND span_rowid = ?2")
                .map_err(map_err)?;
            for (term, ..) in span_terms(&span, buf) {
                del.execute(params![term, span_rowid]).map_err(map_err)?;
            }
        }
        Err(e) => {
            tracing::warn!(span_rowid, error = %e, "sqlite: a stored span blob does not decode; deleting its attribute rows by a full scan");
            conn.execute(
                "DELETE FROM span_attrs WHERE span_rowid = ?1",
                params![span_rowid],
            )
            .map_err(map_err)?;
        }
    }
    Ok(())
}

/// SQL condition (and its bound values, in order) that `span_rowid_expr`,
/// a span's `spans.id`, has an attribute satisfying `f`: a term lookup for
/// each candidate value (a Jaeger text condition has one per type whose text
/// equals it), checked against the stored key, type and value so that a
/// hash collision cannot match.
pub(super) fn attr_condition(
    f: &AttrFilter,
    span_rowid_expr: &str,
) -> StorageResult<(String, Vec<Value>)> {
    let mut terms = Vec::new();
    let mut alts = Vec::new();
    let mut values = Vec::new();
    let mut buf = Vec::new();
    for candidate in f.candidates() {
        let Some((ty, v)) = indexed(&candidate) else {
            return Err(StorageError::InvalidQuery(format!(
                "attribute filter on {:?} must be a string, bool, int or double, got {candidate:?}",
                f.key
            )));
        };
        terms.push(Value::Integer(term(&f.key, ty, v, &mut buf)));
        alts.push(format!("(a.type = {ty} AND a.value = ?)"));
        values.push(Value::from(v));
    }
    let sql = format!(
        "{span_rowid_expr} IN (SELECT a.span_rowid FROM span_attrs a \
         WHERE a.term IN ({}) AND a.key = ? AND ({}))",
        vec!["?"; terms.len()].join(", "),
        alts.join(" OR ")
    );
    let mut args = terms;
    args.push(f.key.clone().into());
    args.extend(values);
    Ok((sql, args))
}

fn table_exists(conn: &Connection, name: &str) -> StorageResult<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
    .map_err(map_err)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> StorageResult<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |r| r.get(0),
    )
    .map_err(map_err)
}

/// Brings the database at `conn` to [`SCHEMA_VERSION`]: creates the schema in
/// a new file, builds the layout-3 span indexes of a layout-2 file, moves
/// the attribute rows of a layout-2 or -3 file, or converts a layout-1 file
/// (see the module docs). Conversion moves spans (or their attribute rows)
/// in transactions of `chunk` spans, so it needs little extra disk and a crash
/// in the middle resumes at the next open without loss or duplicates. Runs
/// before the store serves anything.
pub(super) fn prepare(conn: &mut Connection, chunk: usize) -> StorageResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(map_err)?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::Backend(format!(
            "the SQLite database has layout version {version}, written by a newer ferrotrace; \
             this one reads up to {SCHEMA_VERSION}: upgrade the collector or use another data directory"
        )));
    }
    begin_migration(conn, version)?;
    while move_v1_chunk(conn, chunk)? {}
    while move_v3_attrs_chunk(conn, chunk)? {}
    Ok(())
}

/// Whether `span_attrs` is clustered on `term` (layout 4) rather than on
/// `(span_rowid, idx)` with a term index (layouts 2 and 3).
fn attrs_keyed_by_term(conn: &Connection) -> StorageResult<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('span_attrs') WHERE name = 'term' AND pk = 1)",
        [],
        |r| r.get(0),
    )
    .map_err(map_err)
}

/// Moves the attribute rows of up to `chunk` spans (lowest span row ids
/// first) from the layout-3 table `span_attrs_v3` into `span_attrs` in one
/// transaction; drops `span_attrs_v3` once empty. Returns whether rows may
/// remain. A crash between chunks resumes at the next open: the moved rows
/// are gone from the old table, and `INSERT OR IGNORE` skips any that are
/// in both.
fn move_v3_attrs_chunk(conn: &mut Connection, chunk: usize) -> StorageResult<bool> {
    if !table_exists(conn, "span_attrs_v3")? {
        return Ok(false);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    let first: Option<i64> = tx
        .query_row("SELECT MIN(span_rowid) FROM span_attrs_v3", [], |r| {
            r.get(0)
        })
        .map_err(map_err)?;
    let Some(first) = first else {
        tx.execute_batch("DROP TABLE span_attrs_v3")
            .map_err(map_err)?;
        tx.commit().map_err(map_err)?;
        tracing::info!("SQLite attribute rows converted to layout {SCHEMA_VERSION}");
        return Ok(false);
    };
    let end = first.saturating_add(chunk.max(1) as i64);
    tx.execute(
        "INSERT OR IGNORE INTO span_attrs (term, span_rowid, idx, key, type, value) \
         SELECT term, span_rowid, idx, key, type, value FROM span_attrs_v3 \
         WHERE span_rowid < ?1 ORDER BY term, span_rowid, idx",
        [end],
    )
    .map_err(map_err)?;
    tx.execute("DELETE FROM span_attrs_v3 WHERE span_rowid < ?1", [end])
        .map_err(map_err)?;
    tx.commit().map_err(map_err)?;
    Ok(true)
}

/// Creates the current schema in one transaction. A layout-1 `spans` table
/// is first set aside as `spans_v1` (its indexes and the old attribute table
/// are dropped: the span blob is the source of everything); a layout-2 file
/// gets the layout-3 span indexes built from its rows and loses the layout-2
/// ones; a layout-2 or -3 attribute table is set aside as `span_attrs_v3`.
fn begin_migration(conn: &mut Connection, version: i64) -> StorageResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    let has_spans = table_exists(&tx, "spans")?;
    let v1 = has_spans && !has_column(&tx, "spans", "id")?;
    if v1 {
        tracing::info!("converting the SQLite database from layout 1 to layout {SCHEMA_VERSION}");
        tx.execute_batch(
            "DROP INDEX IF EXISTS spans_start; \
             DROP INDEX IF EXISTS spans_service_start; \
             DROP INDEX IF EXISTS spans_service_name_start; \
             DROP TABLE IF EXISTS span_attributes; \
             ALTER TABLE spans RENAME TO spans_v1;",
        )
        .map_err(map_err)?;
    } else if has_spans && version < SCHEMA_VERSION {
        tracing::info!(
            "converting the SQLite database from layout {version} to layout {SCHEMA_VERSION}; \
             this reads every stored span and attribute row once"
        );
    }
    // Layouts 2 and 3 kept attribute rows by span with an index on the term:
    // the table is set aside (without its index, which only slows the move)
    // and its rows moved into the term-clustered table in chunks.
    if table_exists(&tx, "span_attrs")? && !attrs_keyed_by_term(&tx)? {
        tx.execute_batch(
            "DROP INDEX IF EXISTS span_attrs_term; \
             ALTER TABLE span_attrs RENAME TO span_attrs_v3;",
        )
        .map_err(map_err)?;
    }
    tx.execute_batch(SCHEMA).map_err(map_err)?;
    // Layout 2's time indexes, replaced by the `_v3` ones (which add `kind`).
    tx.execute_batch(
        "DROP INDEX IF EXISTS spans_service_start; \
         DROP INDEX IF EXISTS spans_service_name_start;",
    )
    .map_err(map_err)?;
    // Rewriting the same version would dirty the header page: a database
    // already at this layout is opened without writing anything, which
    // also works on a full disk.
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}

/// Moves up to `chunk` spans (oldest arrival first) from `spans_v1` into the
/// current tables in one transaction; drops `spans_v1` once empty. Returns
/// whether rows may remain.
fn move_v1_chunk(conn: &mut Connection, chunk: usize) -> StorageResult<bool> {
    if !table_exists(conn, "spans_v1")? {
        return Ok(false);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    let rows: Vec<(i64, Vec<u8>)> = {
        let mut stmt = tx
            .prepare("SELECT rowid, data FROM spans_v1 ORDER BY rowid LIMIT ?1")
            .map_err(map_err)?;
        let rows = stmt
            .query_map([chunk.max(1) as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    let Some(&(last, _)) = rows.last() else {
        tx.execute_batch("DROP TABLE spans_v1").map_err(map_err)?;
        tx.commit().map_err(map_err)?;
        tracing::info!("SQLite database converted to layout {SCHEMA_VERSION}");
        return Ok(false);
    };
    let spans = rows
        .iter()
        .map(|(rowid, data)| {
            decode_span(data).map_err(|e| {
                StorageError::Backend(format!(
                    "cannot convert span row {rowid} of the layout-1 table spans_v1: {e}; \
                     delete that row (or the database) and restart"
                ))
            })
        })
        .collect::<StorageResult<Vec<Span>>>()?;
    insert_spans(&tx, &spans)?;
    tx.execute("DELETE FROM spans_v1 WHERE rowid <= ?1", [last])
        .map_err(map_err)?;
    tx.commit().map_err(map_err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyValue;

    fn val(v: &AttrValue) -> (i64, ValueRef<'_>) {
        indexed(v).expect("indexed")
    }

    #[test]
    fn terms_separate_key_type_and_value() {
        let mut buf = Vec::new();
        let mut t = |k: &str, v: AttrValue| {
            let (ty, x) = val(&v);
            term(k, ty, x, &mut buf)
        };
        let a = t("k", AttrValue::Str("500".into()));
        assert_ne!(a, t("k", AttrValue::Int(500)));
        assert_ne!(a, t("k", AttrValue::Double(500.0)));
        assert_ne!(t("k", AttrValue::Int(1)), t("k", AttrValue::Bool(true)));
        // The key length is hashed, so ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            t("ab", AttrValue::Str("c".into())),
            t("a", AttrValue::Str("bc".into()))
        );
        assert_eq!(
            t("z", AttrValue::Double(0.0)),
            t("z", AttrValue::Double(-0.0))
        );
        assert_eq!(a, t("k", AttrValue::Str("500".into())));
        assert!(indexed(&AttrValue::Double(f64::NAN)).is_none());
        assert!(indexed(&AttrValue::Bytes(vec![1])).is_none());
    }

    #[test]
    fn term_values_are_pinned() {
        // Terms are stored on disk: a change of hash or encoding would make
        // existing files unsearchable, so the exact values are fixed here.
        let mut buf = Vec::new();
        let get = AttrValue::Str("GET".into());
        let (ty, v) = val(&get);
        let got = term("http.request.method", ty, v, &mut buf);
        let mut expect = Vec::new();
        expect.extend_from_slice(&19u64.to_le_bytes());
        expect.extend_from_slice(b"http.request.method");
        expect.push(0);
        expect.extend_from_slice(b"GET");
        assert_eq!(got, twox_hash::XxHash3_64::oneshot(&expect) as i64);
        assert_eq!(got, PINNED_GET_TERM);
        // XXH3-64 of the empty input, the reference implementation's test vector.
        assert_eq!(twox_hash::XxHash3_64::oneshot(b""), 0x2D06_8005_38D3_94C2);
    }

    /// The term above as this version computes it; it must never change.
    const PINNED_GET_TERM: i64 = -8_195_993_401_179_945_439;

    fn span(n: u8) -> Span {
        Span::test(n)
    }

    #[test]
    fn span_writer_skips_unsearchable_values() {
        let mut conn = Connection::open_in_memory().expect("db");
        prepare(&mut conn, 10).expect("schema");
        let tx = conn.transaction().expect("tx");
        let mut s = span(1);
        s.attributes = vec![
            KeyValue::new("a", AttrValue::Str("x".into())),
            KeyValue::new("nan", AttrValue::Double(f64::NAN)),
            KeyValue::new("list", AttrValue::Array(vec![])),
            KeyValue::new("b", AttrValue::Int(3)),
        ];
        // More attributes than one multi-row insert takes.
        let mut many = span(2);
        many.attributes = (0..40)
            .map(|i| KeyValue::new(format!("k{i}"), AttrValue::Int(i)))
            .collect();
        // The second copy of `s` is not new, in the same batch and later.
        assert_eq!(
            insert_spans(&tx, &[s.clone(), s.clone(), many]).expect("insert"),
            2
        );
        assert_eq!(insert_spans(&tx, &[s]).expect("again"), 0);
        let n: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM span_attrs WHERE span_rowid = 2 AND value = idx",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(n, 40);
        let idx: Vec<i64> = tx
            .prepare("SELECT idx FROM span_attrs WHERE span_rowid = 1 ORDER BY idx")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(idx, vec![0, 3]);
    }

    /// Spans (row ids 1..=n) matching the attribute filter `key = value`.
    fn matching(conn: &Connection, key: &str, value: AttrValue) -> Vec<i64> {
        let f = AttrFilter {
            key: key.into(),
            value,
            mode: Default::default(),
        };
        let (cond, args) = attr_condition(&f, "s.id").expect("condition");
        conn.prepare(&format!(
            "SELECT s.id FROM spans s WHERE {cond} ORDER BY s.id"
        ))
        .expect("prepare")
        .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    fn attr_span(n: u8) -> Span {
        let mut s = span(n);
        s.attributes = vec![
            KeyValue::new("parity", AttrValue::Int(i64::from(n % 2))),
            KeyValue::new("name", AttrValue::Str(format!("n{n}").into())),
            KeyValue::new("list", AttrValue::Array(vec![])),
        ];
        s
    }

    /// A layout-3 file (attribute rows keyed by span, with a term index) is
    /// converted at open: every row moved into the term-clustered table, in
    /// chunks, resuming after an interruption without loss or duplicates;
    /// searches find the same spans.
    #[test]
    fn layout_3_attribute_rows_are_moved_and_stay_searchable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).expect("db");
        // The layout-3 file: today's span table, layout 3's attribute table.
        conn.execute_batch(SCHEMA).expect("schema");
        conn.execute_batch(
            "DROP TABLE span_attrs; \
             CREATE TABLE span_attrs (span_rowid INTEGER NOT NULL, idx INTEGER NOT NULL, \
               term INTEGER NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL, value NOT NULL, \
               PRIMARY KEY (span_rowid, idx)) WITHOUT ROWID; \
             CREATE INDEX span_attrs_term ON span_attrs (term); \
             PRAGMA user_version = 3;",
        )
        .expect("layout 3");
        let spans: Vec<Span> = (1..=7).map(attr_span).collect();
        {
            let tx = conn.transaction().expect("tx");
            let mut buf = Vec::new();
            for s in &spans {
                let mut blob = Vec::new();
                encode_span_into(s, &mut blob);
                tx.execute(
                    "INSERT INTO spans (trace_id, span_id, service, name, kind, start_ns, end_ns, \
                     duration_ns, status_code, data) VALUES (?1, ?2, 'svc', 'op', 1, 1, 2, 1, 0, ?3)",
                    params![&s.trace_id[..], &s.span_id[..], blob],
                )
                .expect("span row");
                let rowid = tx.last_insert_rowid();
                for (term, i, key, ty, value) in span_terms(s, &mut buf) {
                    tx.execute(
                        "INSERT INTO span_attrs (span_rowid, idx, term, key, type, value) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![rowid, i as i64, term, key, ty, ToSqlOutput::Borrowed(value)],
                    )
                    .expect("attr row");
                }
            }
            tx.commit().expect("commit");
        }
        let before_odd = matching(&conn, "parity", AttrValue::Int(1));
        assert_eq!(before_odd, vec![1, 3, 5, 7]);
        // Interrupted: the table set aside and one chunk (2 spans) moved,
        // then a row of the next chunk copied without its delete, as a crash
        // inside a chunk's transaction can never leave it but a resumed
        // chunk must tolerate.
        begin_migration(&mut conn, 3).expect("begin");
        assert!(move_v3_attrs_chunk(&mut conn, 2).expect("chunk"));
        conn.execute(
            "INSERT INTO span_attrs SELECT term, span_rowid, idx, key, type, value \
             FROM span_attrs_v3 WHERE span_rowid = 3 AND idx = 0",
            [],
        )
        .expect("duplicate");
        drop(conn);
        let mut conn = Connection::open(&path).expect("reopen");
        prepare(&mut conn, 2).expect("resume");
        assert!(!table_exists(&conn, "span_attrs_v3").expect("exists"));
        assert!(attrs_keyed_by_term(&conn).expect("shape"));
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM span_attrs", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 14, "two searchable attributes per span, once each");
        assert_eq!(matching(&conn, "parity", AttrValue::Int(1)), before_odd);
        assert_eq!(
            matching(&conn, "name", AttrValue::Str("n4".into())),
            vec![4]
        );
        // New spans go into the converted table beside the moved rows.
        {
            let tx = conn.transaction().expect("tx");
            assert_eq!(insert_spans(&tx, &[attr_span(9)]).expect("insert"), 1);
            tx.commit().expect("commit");
        }
        assert_eq!(
            matching(&conn, "parity", AttrValue::Int(1)),
            vec![1, 3, 5, 7, 8]
        );
    }

    /// A span's attribute rows are deleted by the terms recomputed from its
    /// blob, leaving other spans' rows of the same terms; a blob that does
    /// not decode still gets its rows deleted (by a scan).
    #[test]
    fn span_attribute_rows_are_deleted_by_their_terms() {
        let mut conn = Connection::open_in_memory().expect("db");
        prepare(&mut conn, 10).expect("schema");
        let spans: Vec<Span> = (1..=4).map(attr_span).collect();
        insert_spans(&conn, &spans).expect("insert");
        let mut buf = Vec::new();
        let mut blob = Vec::new();
        encode_span_into(&spans[0], &mut blob);
        delete_span_attrs(&conn, 1, &blob, &mut buf).expect("delete");
        delete_span_attrs(&conn, 2, b"not a span blob", &mut buf).expect("delete by scan");
        let left: Vec<i64> = conn
            .prepare("SELECT DISTINCT span_rowid FROM span_attrs ORDER BY span_rowid")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(left, vec![3, 4]);
        assert_eq!(matching(&conn, "parity", AttrValue::Int(1)), vec![3]);
    }

    #[test]
    fn interrupted_conversion_resumes_without_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).expect("db");
        prepare(&mut conn, 10).expect("schema");
        // The state after a crash mid-conversion: span 1 already moved,
        // spans 1 (moved but its chunk's delete not visible here), 2 and 3
        // still in the set-aside layout-1 table.
        {
            let tx = conn.transaction().expect("tx");
            insert_spans(&tx, &[span(1)]).expect("insert");
            tx.execute_batch("CREATE TABLE spans_v1 (data BLOB NOT NULL)")
                .expect("v1 table");
            for n in 1..=3u8 {
                let mut blob = Vec::new();
                encode_span_into(&span(n), &mut blob);
                tx.execute("INSERT INTO spans_v1 (data) VALUES (?1)", [blob])
                    .expect("v1 row");
            }
            tx.commit().expect("commit");
        }
        // One chunk at a time, as a restart would.
        assert!(move_v1_chunk(&mut conn, 2).expect("chunk"));
        drop(conn);
        let mut conn = Connection::open(&path).expect("reopen");
        prepare(&mut conn, 2).expect("resume");
        assert!(!table_exists(&conn, "spans_v1").expect("exists"));
        let ids: Vec<Vec<u8>> = conn
            .prepare("SELECT span_id FROM spans ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(ids, vec![vec![1u8; 8], vec![2u8; 8], vec![3u8; 8]]);
    }
}
