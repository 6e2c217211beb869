//! The embedded SQLite sink, the collector's default store.
//!
//! One database file under the data directory, opened in WAL journal mode with
//! `synchronous=FULL`: every committed `write_spans` transaction is fsynced
//! before the call returns, because the collector deletes spans from its own
//! write-ahead log once the sink has committed them (`NORMAL` in WAL mode can
//! lose the last transactions on power loss, which would lose acknowledged
//! spans). The cost is one fsync per batch, not per span.
//!
//! Schema ([`layout`] and `docs/storage.md`):
//! - `spans`: one row per span, appended in arrival order, with the searchable
//!   columns and the full span as a compact binary blob ([`encode_span`](super::span_codec::encode_span)) for
//!   an exact round trip; a `UNIQUE (trace_id, span_id)` index plus
//!   `INSERT OR IGNORE` makes a retried batch a no-op.
//! - `span_attrs`: the scalar span attributes, typed, with a hashed term index
//!   for equality searches.
//! - `op_rollups` / `edge_rollups`: per-minute rollups, merged on write.
//! - `rollup_origins`: the WAL spans each rollup batch accounts for, written
//!   in the batch's transaction (see `rollup::origins`).
//!
//! rusqlite is synchronous, so every operation runs on tokio's blocking pool
//! with one writer connection and a few reader connections (WAL lets readers
//! run while the writer commits). All values are bound parameters.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};

use super::rollup_math;
use super::sink_common as common;
use super::span_codec::decode_span;
use super::{
    AnalyticsReader, DependencyEdge, DiskUsage, EvictionReport, LatencyPoint, LatencyQuery,
    Operation, Retention, RetentionReport, SamplingCountRow, SamplingCounts, SamplingPeriodCounts,
    SearchPage, SpanWriter, StorageError, StorageResult, TimeRange, TraceQuery, TraceReader,
    TraceSpans, TraceSummary,
};
use crate::model::{Span, SpanKind, StatusCode, TraceId};
use crate::rollup::{RollupBatch, RollupOrigin, MINUTE_NS};

mod layout;
#[cfg(test)]
mod plan_tests;

/// Tuning for [`SqliteStore`].
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// Reader connections (queries run in parallel up to this number).
    pub readers: usize,
    /// How long a connection waits for a lock before failing (ms).
    pub busy_timeout_ms: u64,
    /// Page cache per connection (KiB).
    pub cache_kib: u64,
    /// Rows deleted per retention transaction, so retention never holds the
    /// writer for long.
    pub retention_chunk: usize,
    /// Maximum buckets a `latency` time series may have.
    pub max_latency_points: usize,
    /// WAL size (pages of 4 KiB) at which a commit copies the WAL back into
    /// the database file. Larger means fewer, cheaper checkpoints (a page
    /// written by several batches is copied once) and a larger `-wal` file.
    pub wal_autocheckpoint_pages: u32,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            readers: 2,
            busy_timeout_ms: 5_000,
            cache_kib: 16 * 1024,
            retention_chunk: 5_000,
            max_latency_points: 10_000,
            wal_autocheckpoint_pages: 16_384,
        }
    }
}

/// The rollup origins table, created after the span layout ([`layout`]) (idempotent). One row
/// per (WAL segment, minute) of each written rollup batch; `instance` is the
/// WAL identity stored bit for bit as a signed integer.
const ROLLUP_ORIGINS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS rollup_origins (
    instance  INTEGER NOT NULL,
    segment   INTEGER NOT NULL,
    minute_ns INTEGER NOT NULL,
    ranges    BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_origins_segment ON rollup_origins (instance, segment);
CREATE INDEX IF NOT EXISTS rollup_origins_minute ON rollup_origins (minute_ns);
"#;

/// Adaptive sampling counts per period and collector
/// (`[sampling_api.adaptive] source = "store"`; idempotent).
const SAMPLING_COUNTS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sampling_counts (
    period_start_ns INTEGER NOT NULL,
    period_secs     INTEGER NOT NULL,
    collector       TEXT    NOT NULL,
    service         TEXT    NOT NULL,
    operation       TEXT    NOT NULL,
    count_milli     INTEGER NOT NULL,
    PRIMARY KEY (period_secs, period_start_ns, collector, service, operation)
);
CREATE INDEX IF NOT EXISTS sampling_counts_start ON sampling_counts (period_start_ns);
"#;

/// SQLite stores signed 64-bit integers; nanosecond timestamps fit until 2262.
/// Larger values (only ever seen in hostile input) are clamped, never wrapped.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn map_err(e: rusqlite::Error) -> StorageError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::SystemIoFailure
                    | C::DiskFull
                    | C::CannotOpen
                    | C::OutOfMemory
            ) =>
        {
            StorageError::Unavailable(format!(
                "sqlite: {e} (retry later; check disk space and file permissions)"
            ))
        }
        _ => StorageError::Backend(format!("sqlite: {e}")),
    }
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    config: SqliteConfig,
}

/// The embedded SQLite [`SpanStore`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn configure(conn: &Connection, config: &SqliteConfig) -> rusqlite::Result<()> {
    persist_wal(conn)?;
    conn.busy_timeout(std::time::Duration::from_millis(config.busy_timeout_ms))?;
    // Negative cache_size is in KiB.
    conn.pragma_update(None, "cache_size", -(to_i64(config.cache_kib)))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "foreign_keys", false)?;
    Ok(())
}

/// Keeps the `-wal` and `-shm` files when the last connection closes
/// (`SQLITE_FCNTL_PERSIST_WAL`) instead of deleting them. Opening a WAL-mode
/// database, even read-only, needs its `-shm` file: a clean shutdown that
/// deleted it would leave a collector restarted on a completely full disk
/// unable to create it again, and so unable to serve queries.
fn persist_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut on: std::os::raw::c_int = 1;
    // SAFETY: the handle is valid while `conn` lives; this file control
    // reads and writes one int through the pointer, which outlives the call.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL as std::os::raw::c_int,
            (&mut on as *mut std::os::raw::c_int).cast(),
        )
    };
    match rc {
        rusqlite::ffi::SQLITE_OK => Ok(()),
        code => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some("cannot keep the SQLite WAL files (SQLITE_FCNTL_PERSIST_WAL)".into()),
        )),
    }
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` with default tuning.
    pub fn open(path: impl AsRef<Path>) -> StorageResult<Self> {
        Self::open_with(path, SqliteConfig::default())
    }

    /// Opens (or creates) the database file at `path`.
    pub fn open_with(path: impl AsRef<Path>, config: SqliteConfig) -> StorageResult<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StorageError::Unavailable(format!(
                        "cannot create data directory {}: {e}",
                        dir.display()
                    ))
                })?;
            }
        }
        let open_err = |e: rusqlite::Error| {
            StorageError::Unavailable(format!(
                "cannot open SQLite database {}: {e} (check the path and its permissions)",
                path.display()
            ))
        };
        let mut writer = Connection::open(&path).map_err(open_err)?;
        configure(&writer, &config).map_err(map_err)?;
        // Incremental auto-vacuum lets size retention hand the pages it
        // frees back to the file system when the disk is full (a plain
        // DELETE only moves them to the free list). It takes effect only on
        // a new file before anything is written to it (switching to WAL
        // writes the header); an older file keeps its mode (docs/storage.md).
        // Only then: on an existing file the pragma opens a write
        // transaction, which a full disk refuses, and the collector must
        // start on a full disk.
        let pages: i64 = writer
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(map_err)?;
        if pages == 0 {
            writer
                .pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(map_err)?;
        }
        let mode: String = writer
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(map_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Backend(format!(
                "SQLite database {} refused WAL journal mode (got {mode}); use a local file system",
                path.display()
            )));
        }
        // FULL: a commit is on disk when write_spans returns (see module docs).
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(map_err)?;
        writer
            .pragma_update(
                None,
                "wal_autocheckpoint",
                config.wal_autocheckpoint_pages.max(1),
            )
            .map_err(map_err)?;
        // Multi-row attribute inserts use one statement per row count.
        writer.set_prepared_statement_cache_capacity(64);
        layout::prepare(&mut writer, layout::MIGRATION_CHUNK)?;
        writer
            .execute_batch(ROLLUP_ORIGINS_SCHEMA)
            .map_err(map_err)?;
        writer
            .execute_batch(SAMPLING_COUNTS_SCHEMA)
            .map_err(map_err)?;

        let mut readers = Vec::new();
        for _ in 0..config.readers.max(1) {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(open_err)?;
            configure(&conn, &config).map_err(map_err)?;
            readers.push(Mutex::new(conn));
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                config,
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn with_writer<R, F>(&self, f: F) -> StorageResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection, &SqliteConfig) -> StorageResult<R> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock();
            f(&mut conn, &inner.config)
        })
        .await
        .map_err(|e| StorageError::Backend(format!("sqlite worker failed: {e}")))?
    }

    async fn with_reader<R, F>(&self, f: F) -> StorageResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, &SqliteConfig) -> StorageResult<R> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let n = inner.readers.len();
            let start = inner.next_reader.fetch_add(1, Ordering::Relaxed) % n;
            // Take the first idle reader, else wait on the round-robin one.
            for i in 0..n {
                if let Some(conn) = inner.readers[(start + i) % n].try_lock() {
                    return f(&conn, &inner.config);
                }
            }
            let conn = inner.readers[start].lock();
            f(&conn, &inner.config)
        })
        .await
        .map_err(|e| StorageError::Backend(format!("sqlite worker failed: {e}")))?
    }
}

fn write_spans_tx(conn: &mut Connection, spans: &[Span]) -> StorageResult<()> {
    let tx = conn.transaction().map_err(map_err)?;
    {
        let mut w = layout::SpanWriter::new(&tx)?;
        for s in spans {
            w.insert(s)?;
        }
    }
    tx.commit().map_err(map_err)
}

fn write_rollups_tx(conn: &mut Connection, batch: &RollupBatch) -> StorageResult<()> {
    let tx = conn.transaction().map_err(map_err)?;
    {
        let mut get_op = tx
            .prepare_cached(
                "SELECT count, errors, sketch FROM op_rollups WHERE minute_ns = ?1 AND service = ?2 AND operation = ?3 AND kind = ?4",
            )
            .map_err(map_err)?;
        let mut put_op = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO op_rollups (minute_ns, service, operation, kind, count, errors, sketch) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_err)?;
        for r in &batch.operations {
            let key = (
                to_i64(r.minute_ns),
                r.service.as_str(),
                r.operation.as_str(),
                r.kind as i64,
            );
            let existing: Option<(i64, i64, Vec<u8>)> = get_op
                .query_row(params![key.0, key.1, key.2, key.3], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
                .map_err(map_err)?;
            let (mut count, mut errors, mut sketch) = (r.count, r.errors, r.sketch.clone());
            if let Some((c, e, b)) = existing {
                count += from_i64(c);
                errors += from_i64(e);
                sketch.merge(&rollup_math::decode_sketch(&b)?);
            }
            put_op
                .execute(params![
                    key.0,
                    key.1,
                    key.2,
                    key.3,
                    to_i64(count),
                    to_i64(errors),
                    rollup_math::encode_sketch(&sketch)?.into_bytes()
                ])
                .map_err(map_err)?;
        }
        let mut get_edge = tx
            .prepare_cached("SELECT calls, errors, sketch FROM edge_rollups WHERE minute_ns = ?1 AND caller = ?2 AND callee = ?3")
            .map_err(map_err)?;
        let mut put_edge = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO edge_rollups (minute_ns, caller, callee, calls, errors, sketch) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(map_err)?;
        for r in &batch.edges {
            let m = to_i64(r.minute_ns);
            let existing: Option<(i64, i64, Vec<u8>)> = get_edge
                .query_row(params![m, r.caller, r.callee], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
                .map_err(map_err)?;
            let (mut calls, mut errors, mut sketch) = (r.calls, r.errors, r.sketch.clone());
            if let Some((c, e, b)) = existing {
                calls += from_i64(c);
                errors += from_i64(e);
                sketch.merge(&rollup_math::decode_sketch(&b)?);
            }
            put_edge
                .execute(params![
                    m,
                    r.caller,
                    r.callee,
                    to_i64(calls),
                    to_i64(errors),
                    rollup_math::encode_sketch(&sketch)?.into_bytes()
                ])
                .map_err(map_err)?;
        }
        // Same transaction as the rows: both are stored or neither.
        let mut put_origin = tx
            .prepare_cached(
                "INSERT INTO rollup_origins (instance, segment, minute_ns, ranges) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(map_err)?;
        for o in &batch.origins {
            put_origin
                .execute(params![
                    batch.wal_instance as i64,
                    to_i64(o.segment),
                    to_i64(o.minute_ns),
                    o.encode_ranges()
                ])
                .map_err(map_err)?;
        }
    }
    tx.commit().map_err(map_err)
}

fn rollup_origins_tx(
    conn: &Connection,
    instance: u64,
    segments: &[u64],
) -> StorageResult<Vec<RollupOrigin>> {
    let mut q = conn
        .prepare_cached(
            "SELECT segment, minute_ns, ranges FROM rollup_origins WHERE instance = ?1 AND segment = ?2",
        )
        .map_err(map_err)?;
    let mut out = Vec::new();
    for &seg in segments {
        let rows = q
            .query_map(params![instance as i64, to_i64(seg)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(map_err)?;
        for row in rows {
            let (segment, minute, ranges) = row.map_err(map_err)?;
            out.push(RollupOrigin {
                segment: from_i64(segment),
                minute_ns: from_i64(minute),
                parts: RollupOrigin::decode_ranges(&ranges).map_err(|e| {
                    StorageError::Backend(format!(
                        "stored rollup origin of WAL segment {segment} is corrupt ({e}); delete its rows from rollup_origins"
                    ))
                })?,
            });
        }
    }
    Ok(out)
}

fn trace_id_from(v: Vec<u8>) -> StorageResult<TraceId> {
    TraceId::try_from(v.as_slice()).map_err(|_| {
        StorageError::Backend(format!(
            "stored trace id has {} bytes, expected 16",
            v.len()
        ))
    })
}

/// Searches with the shared early-stopping plan ([`common::SearchWindows`]):
/// a probe of the newest matching span starts, then windows of traces whose
/// start is at or after the window's lower bound.
fn search_tx(conn: &Connection, q: &TraceQuery) -> StorageResult<SearchPage> {
    if q.limit == 0 || q.range.end_ns <= q.range.start_ns {
        return Ok(SearchPage::default());
    }
    let cursor = q.cursor.as_deref().map(common::decode_cursor).transpose()?;
    let (conds, args) = span_conditions(q)?;
    let (ids, more) = common::search_windows_sync(
        q.range,
        cursor,
        q.limit,
        |top, n| probe_tx(conn, q, &conds, &args, top, n),
        |from, n| window_tx(conn, q, &conds, &args, from, cursor, n),
    )?;
    let mut traces = Vec::with_capacity(ids.len());
    for (id, _) in &ids {
        traces.push(summarize(conn, id)?);
    }
    Ok(common::search_page(&ids, more, traces))
}

/// The conditions a matching span `s` satisfies besides its start time, and
/// their bound values.
fn span_conditions(q: &TraceQuery) -> StorageResult<(Vec<String>, Vec<rusqlite::types::Value>)> {
    let mut conds = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(svc) = &q.service {
        conds.push("s.service = ?".into());
        args.push(svc.clone().into());
    }
    if let Some(op) = &q.operation {
        conds.push("s.name = ?".into());
        args.push(op.clone().into());
    }
    if let Some(min) = q.min_duration_ns {
        conds.push("s.duration_ns >= ?".into());
        args.push(to_i64(min).into());
    }
    if let Some(max) = q.max_duration_ns {
        conds.push("s.duration_ns <= ?".into());
        args.push(to_i64(max).into());
    }
    if q.errors_only {
        // A literal, not a bound value: SQLite uses the partial error indexes
        // (`WHERE status_code = 2`, see `layout`) only when it sees it.
        conds.push(format!("s.status_code = {}", StatusCode::Error as i64));
    }
    for f in &q.attributes {
        let (cond, cond_args) = layout::attr_condition(f, "s.id")?;
        conds.push(cond);
        args.extend(cond_args);
    }
    Ok((conds, args))
}

/// The probe's statement: starts of the newest matching spans in
/// `[?, ?)`, newest first, `LIMIT ?`; the conditions' values are bound
/// between the time bounds and the limit.
fn probe_sql(conds: &[String]) -> String {
    let mut sql =
        "SELECT s.start_ns FROM spans s WHERE s.start_ns >= ? AND s.start_ns < ?".to_string();
    for c in conds {
        sql.push_str(" AND ");
        sql.push_str(c);
    }
    sql.push_str(" ORDER BY s.start_ns DESC LIMIT ?");
    sql
}

/// Starts of the newest `n` matching spans in `[range start, top)`, newest
/// first (walks a time index backwards — per service, or of error spans
/// only, when the query names them — and stops after `n`).
fn probe_tx(
    conn: &Connection,
    q: &TraceQuery,
    conds: &[String],
    args: &[rusqlite::types::Value],
    top: u64,
    n: usize,
) -> StorageResult<Vec<u64>> {
    let mut all: Vec<rusqlite::types::Value> =
        vec![to_i64(q.range.start_ns).into(), to_i64(top).into()];
    all.extend(args.iter().cloned());
    all.push(to_i64(n as u64).into());
    let mut stmt = conn.prepare_cached(&probe_sql(conds)).map_err(map_err)?;
    let rows = stmt
        .query_map(params_from_iter(all.iter()), |r| r.get::<_, i64>(0))
        .map_err(map_err)?;
    rows.map(|r| r.map(from_i64).map_err(map_err)).collect()
}

/// A window's statement. Bound in order: the lower and upper start bounds,
/// the conditions' values, then the trace-start bound if `bounded`, the
/// cursor's start (twice) and trace id if `after_cursor`, and the limit.
fn window_sql(conds: &[String], bounded: bool, after_cursor: bool) -> String {
    let mut sql = "SELECT trace_id, (SELECT MIN(sp.start_ns) FROM spans sp WHERE sp.trace_id = m.trace_id) AS tstart \
         FROM (SELECT DISTINCT s.trace_id FROM spans s WHERE s.start_ns >= ? AND s.start_ns < ?"
        .to_string();
    for c in conds {
        sql.push_str(" AND ");
        sql.push_str(c);
    }
    sql.push_str(") m WHERE 1");
    if bounded {
        sql.push_str(" AND tstart >= ?");
    }
    if after_cursor {
        sql.push_str(" AND (tstart < ? OR (tstart = ? AND trace_id < ?))");
    }
    sql.push_str(" ORDER BY tstart DESC, trace_id DESC LIMIT ?");
    sql
}

/// One search window: traces with a matching span starting in
/// `[max(from, range start), range end)` whose trace start is `>= from` (any
/// start when `from` is `None`) and sorts after the cursor, newest first, at
/// most `n`. Each candidate's start is one lookup by trace id.
fn window_tx(
    conn: &Connection,
    q: &TraceQuery,
    conds: &[String],
    args: &[rusqlite::types::Value],
    from: Option<u64>,
    cursor: Option<(u64, TraceId)>,
    n: usize,
) -> StorageResult<Vec<(TraceId, u64)>> {
    let lo = from.map_or(q.range.start_ns, |a| a.max(q.range.start_ns));
    let mut all: Vec<rusqlite::types::Value> =
        vec![to_i64(lo).into(), to_i64(q.range.end_ns).into()];
    all.extend(args.iter().cloned());
    if let Some(a) = from {
        all.push(to_i64(a).into());
    }
    if let Some((cs, cid)) = cursor {
        all.push(to_i64(cs).into());
        all.push(to_i64(cs).into());
        all.push(cid.to_vec().into());
    }
    all.push(to_i64(n as u64).into());
    let sql = window_sql(conds, from.is_some(), cursor.is_some());
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let rows = stmt
        .query_map(params_from_iter(all.iter()), |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(map_err)?;
    let mut ids = Vec::new();
    for row in rows {
        let (id, start) = row.map_err(map_err)?;
        ids.push((trace_id_from(id)?, from_i64(start)));
    }
    Ok(ids)
}

/// Summary over every stored span of the trace (not only the matching ones).
fn summarize(conn: &Connection, id: &TraceId) -> StorageResult<TraceSummary> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT parent_span_id IS NULL, service, name, start_ns, end_ns, status_code FROM spans \
             WHERE trace_id = ?1 ORDER BY start_ns, span_id",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![&id[..]], |r| {
            Ok((
                r.get::<_, bool>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(map_err)?;
    let mut first: Option<(String, String)> = None;
    let mut root: Option<(String, String)> = None;
    let (mut start, mut end, mut count, mut errors) = (u64::MAX, 0u64, 0u64, 0u64);
    let mut services = std::collections::BTreeSet::new();
    for row in rows {
        let (is_root, svc, name, s, e, status) = row.map_err(map_err)?;
        let (s, e) = (from_i64(s), from_i64(e));
        start = start.min(s);
        end = end.max(e);
        count += 1;
        if status == StatusCode::Error as i64 {
            errors += 1;
        }
        if first.is_none() {
            first = Some((svc.clone(), name.clone()));
        }
        if is_root && root.is_none() {
            root = Some((svc.clone(), name));
        }
        services.insert(svc);
    }
    let (root_service, root_operation) = root.or(first).unwrap_or_default();
    Ok(TraceSummary {
        trace_id: *id,
        root_service,
        root_operation,
        start_ns: if count == 0 { 0 } else { start },
        duration_ns: end.saturating_sub(if count == 0 { 0 } else { start }),
        span_count: count,
        services: services.into_iter().collect(),
        error_count: errors,
        cold_spans: 0,
    })
}

fn get_trace_tx(
    conn: &Connection,
    id: &TraceId,
    range: Option<TimeRange>,
) -> StorageResult<Vec<Span>> {
    let (lo, hi) = match range {
        Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
        None => (i64::MIN, i64::MAX),
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT data FROM spans WHERE trace_id = ?1 AND start_ns >= ?2 AND start_ns < ?3 ORDER BY start_ns, span_id",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![&id[..], lo, hi], |r| r.get::<_, Vec<u8>>(0))
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode_span(&row.map_err(map_err)?)?);
    }
    Ok(out)
}

/// Ids bound per `get_traces` statement: below SQLite's variable limit (999
/// before 3.32, 32,766 since) with room for the two time bounds.
const TRACE_IDS_PER_STATEMENT: usize = 500;

/// [`TraceReader::get_traces`]: one `trace_id IN (...)` statement per
/// [`TRACE_IDS_PER_STATEMENT`] distinct ids, each answered from the
/// `(trace_id, span_id)` index, all on one connection.
fn get_traces_tx(
    conn: &Connection,
    ids: &[TraceId],
    range: Option<TimeRange>,
) -> StorageResult<Vec<TraceSpans>> {
    let ids = common::distinct_trace_ids(ids)?;
    let (lo, hi) = match range {
        Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
        None => (i64::MIN, i64::MAX),
    };
    let mut spans = Vec::new();
    for chunk in ids.chunks(TRACE_IDS_PER_STATEMENT) {
        let marks = vec!["?"; chunk.len()].join(",");
        // Unary `+` keeps the planner off the `start_ns` index: the ids are
        // always the narrower condition. Not `prepare_cached`: every chunk
        // length is another statement, which would evict the hot ones.
        let mut stmt = conn
            .prepare(&format!(
                "SELECT trace_id, data FROM spans WHERE trace_id IN ({marks}) \
                 AND +start_ns >= ? AND +start_ns < ?"
            ))
            .map_err(map_err)?;
        let mut args: Vec<rusqlite::types::Value> = chunk
            .iter()
            .map(|id| rusqlite::types::Value::Blob(id.to_vec()))
            .collect();
        args.push(lo.into());
        args.push(hi.into());
        let rows = stmt
            .query_map(params_from_iter(args.iter()), |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(map_err)?;
        for row in rows {
            let (id, data) = row.map_err(map_err)?;
            spans.push((trace_id_from(id)?, decode_span(&data)?));
        }
    }
    Ok(common::group_traces(&ids, spans))
}

fn services_tx(conn: &Connection, range: TimeRange) -> StorageResult<Vec<String>> {
    // Loose index scan: one probe per distinct service instead of reading every
    // span in the window.
    let mut stmt = conn
        .prepare_cached(
            "WITH RECURSIVE svc(s) AS ( \
               SELECT MIN(service) FROM spans \
               UNION ALL \
               SELECT (SELECT MIN(service) FROM spans WHERE service > svc.s) FROM svc WHERE svc.s IS NOT NULL) \
             SELECT s FROM svc WHERE s IS NOT NULL AND EXISTS \
               (SELECT 1 FROM spans x WHERE x.service = svc.s AND x.start_ns >= ?1 AND x.start_ns < ?2)",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![to_i64(range.start_ns), to_i64(range.end_ns)], |r| {
            r.get::<_, String>(0)
        })
        .map_err(map_err)?;
    let mut out: Vec<String> = rows.collect::<Result<_, _>>().map_err(map_err)?;
    out.sort();
    Ok(out)
}

fn operations_tx(
    conn: &Connection,
    service: &str,
    range: TimeRange,
) -> StorageResult<Vec<Operation>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT name, kind FROM spans WHERE service = ?1 AND start_ns >= ?2 AND start_ns < ?3",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(
            params![service, to_i64(range.start_ns), to_i64(range.end_ns)],
            |r| {
                Ok(Operation {
                    name: r.get(0)?,
                    kind: SpanKind::from_i32(r.get::<_, i32>(1)?),
                })
            },
        )
        .map_err(map_err)?;
    let mut out: Vec<Operation> = rows.collect::<Result<_, _>>().map_err(map_err)?;
    out.sort();
    Ok(out)
}

/// [`rollup_math::minute_bounds`] as SQLite integers.
fn minute_bounds(range: TimeRange) -> (i64, i64) {
    let (lo, hi) = rollup_math::minute_bounds(range);
    (to_i64(lo), to_i64(hi))
}

fn dependencies_tx(conn: &Connection, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
    let (lo, hi) = minute_bounds(range);
    let mut stmt = conn
        .prepare_cached("SELECT caller, callee, calls, errors, sketch FROM edge_rollups WHERE minute_ns >= ?1 AND minute_ns < ?2")
        .map_err(map_err)?;
    let rows = stmt
        .query_map(params![lo, hi], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })
        .map_err(map_err)?;
    let rows = rows
        .map(|row| {
            let (caller, callee, calls, errors, sketch) = row.map_err(map_err)?;
            let sketch = rollup_math::decode_sketch(&sketch)?;
            Ok((caller, callee, from_i64(calls), from_i64(errors), sketch))
        })
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(rollup_math::merge_edges(rows))
}

fn latency_tx(
    conn: &Connection,
    q: &LatencyQuery,
    config: &SqliteConfig,
) -> StorageResult<Vec<LatencyPoint>> {
    if q.range.end_ns <= q.range.start_ns {
        return Ok(Vec::new());
    }
    let (lo, hi) = minute_bounds(q.range);
    let step = rollup_math::latency_step(q, config.max_latency_points)?;
    let mut sql = String::from("SELECT minute_ns, count, errors, sketch FROM op_rollups WHERE service = ?1 AND minute_ns >= ?2 AND minute_ns < ?3");
    let mut args: Vec<rusqlite::types::Value> =
        vec![q.service.clone().into(), lo.into(), hi.into()];
    if let Some(op) = &q.operation {
        sql.push_str(" AND operation = ?4");
        args.push(op.clone().into());
    }
    if !q.kinds.is_empty() {
        let mut marks = Vec::with_capacity(q.kinds.len());
        for k in &q.kinds {
            args.push((*k as i64).into());
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
    }
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .map_err(map_err)?;
    let rows = rows
        .map(|row| {
            let (minute, count, errors, sketch) = row.map_err(map_err)?;
            let sketch = rollup_math::decode_sketch(&sketch)?;
            Ok((from_i64(minute), from_i64(count), from_i64(errors), sketch))
        })
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(rollup_math::latency_points(q, step, rows))
}

/// The statements of [`exact_percentiles_tx`] — the count of matching spans
/// and their durations in ascending order — and their bound values. Both are
/// answered from the `(service[, name], start_ns, duration_ns, kind)` index
/// alone, without reading span rows.
fn exact_statements(
    service: &str,
    operation: Option<&str>,
    kinds: &[SpanKind],
    range: TimeRange,
) -> (String, String, Vec<rusqlite::types::Value>) {
    let mut where_ = String::from("service = ?1 AND start_ns >= ?2 AND start_ns < ?3");
    let mut args: Vec<rusqlite::types::Value> = vec![
        service.to_string().into(),
        to_i64(range.start_ns).into(),
        to_i64(range.end_ns).into(),
    ];
    if let Some(op) = operation {
        where_.push_str(" AND name = ?4");
        args.push(op.to_string().into());
    }
    if !kinds.is_empty() {
        let mut marks = Vec::with_capacity(kinds.len());
        for k in kinds {
            args.push((*k as i64).into());
            marks.push(format!("?{}", args.len()));
        }
        where_.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
    }
    (
        format!("SELECT COUNT(*) FROM spans WHERE {where_}"),
        format!("SELECT duration_ns FROM spans WHERE {where_} ORDER BY duration_ns"),
        args,
    )
}

fn exact_percentiles_tx(
    conn: &Connection,
    service: &str,
    operation: Option<&str>,
    kinds: &[SpanKind],
    range: TimeRange,
    qs: &[f64],
) -> StorageResult<Vec<u64>> {
    rollup_math::check_quantiles(qs)?;
    let (count_sql, durations_sql, args) = exact_statements(service, operation, kinds, range);
    let n: i64 = conn
        .prepare_cached(&count_sql)
        .map_err(map_err)?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))
        .map_err(map_err)?;
    let n = from_i64(n);
    if n == 0 || qs.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<(u64, usize)> = qs
        .iter()
        .enumerate()
        .map(|(i, q)| (rollup_math::nearest_rank(*q, n), i))
        .collect();
    wanted.sort();
    let mut out = vec![0u64; qs.len()];
    // One sorted pass over the durations picks every rank; memory stays O(qs).
    let mut stmt = conn.prepare_cached(&durations_sql).map_err(map_err)?;
    let mut rows = stmt.query(params_from_iter(args.iter())).map_err(map_err)?;
    let mut rank = 0u64;
    let mut w = 0;
    while w < wanted.len() {
        let Some(row) = rows.next().map_err(map_err)? else {
            break;
        };
        rank += 1;
        let d = from_i64(row.get::<_, i64>(0).map_err(map_err)?);
        while w < wanted.len() && wanted[w].0 == rank {
            out[wanted[w].1] = d;
            w += 1;
        }
    }
    Ok(out)
}

/// [`Retention::export_before`]: one page in `(start_ns, id)` order, read
/// along the `spans_start` index (which ends in the row id).
fn export_before_tx(
    conn: &Connection,
    cutoff_ns: u64,
    after: Option<super::ExportCursor>,
    limit: usize,
) -> StorageResult<super::ExportPage> {
    let (a_start, a_row) = match after {
        Some(c) => (to_i64(c.start_ns), c.row),
        None => (i64::MIN, i64::MIN),
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, start_ns, data FROM spans WHERE start_ns < ?1 \
             AND (start_ns > ?2 OR (start_ns = ?2 AND id > ?3)) \
             ORDER BY start_ns, id LIMIT ?4",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(
            params![to_i64(cutoff_ns), a_start, a_row, limit.max(1) as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )
        .map_err(map_err)?;
    let mut page = super::ExportPage::default();
    let mut last = None;
    for row in rows {
        let (id, start, data) = row.map_err(map_err)?;
        page.spans.push(decode_span(&data)?);
        last = Some(super::ExportCursor {
            start_ns: start.max(0) as u64,
            row: id,
        });
    }
    if page.spans.len() >= limit.max(1) {
        page.next = last;
    }
    Ok(page)
}

fn retention_tx(
    conn: &mut Connection,
    cutoff_ns: u64,
    chunk: usize,
) -> StorageResult<RetentionReport> {
    let mut report = RetentionReport::default();
    retention_into(conn, cutoff_ns, chunk, &mut report)?;
    Ok(report)
}

/// [`retention_tx`], counting into `report` as it goes: when a later chunk
/// fails (a full disk), what the committed chunks deleted is still known.
fn retention_into(
    conn: &mut Connection,
    cutoff_ns: u64,
    chunk: usize,
    report: &mut RetentionReport,
) -> StorageResult<()> {
    let cutoff = to_i64(cutoff_ns);
    loop {
        // Small transactions: the writer is released between chunks so ingest
        // keeps flowing while a large backlog is deleted.
        let tx = conn.transaction().map_err(map_err)?;
        let victims: Vec<i64> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id FROM spans WHERE start_ns < ?1 ORDER BY start_ns LIMIT ?2",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![cutoff, chunk.max(1) as i64], |r| r.get(0))
                .map_err(map_err)?;
            rows.collect::<Result<_, _>>().map_err(map_err)?
        };
        if victims.is_empty() {
            tx.commit().map_err(map_err)?;
            break;
        }
        let mut deleted = 0;
        {
            let mut del_attr = tx
                .prepare_cached("DELETE FROM span_attrs WHERE span_rowid = ?1")
                .map_err(map_err)?;
            let mut del_span = tx
                .prepare_cached("DELETE FROM spans WHERE rowid = ?1")
                .map_err(map_err)?;
            for rowid in &victims {
                del_attr.execute(params![rowid]).map_err(map_err)?;
                deleted += del_span.execute(params![rowid]).map_err(map_err)? as u64;
            }
        }
        tx.commit().map_err(map_err)?;
        report.spans_deleted += deleted;
    }
    // A minute bucket goes only when all of it is older than the cutoff.
    if cutoff_ns >= MINUTE_NS {
        let last_minute = to_i64(cutoff_ns - MINUTE_NS);
        let tx = conn.transaction().map_err(map_err)?;
        report.rollups_deleted += tx
            .execute(
                "DELETE FROM op_rollups WHERE minute_ns <= ?1",
                params![last_minute],
            )
            .map_err(map_err)? as u64;
        report.rollups_deleted += tx
            .execute(
                "DELETE FROM edge_rollups WHERE minute_ns <= ?1",
                params![last_minute],
            )
            .map_err(map_err)? as u64;
        // Backstop for WALs that are gone (their origins are never pruned by
        // segment); origins are bookkeeping, not counted as rollup rows.
        tx.execute(
            "DELETE FROM rollup_origins WHERE minute_ns <= ?1",
            params![last_minute],
        )
        .map_err(map_err)?;
        tx.commit().map_err(map_err)?;
    }
    Ok(())
}

/// Spans deleted per transaction by an eviction on a full disk.
const FULL_DISK_CHUNK: usize = 500;
/// Chunks of `sqlite.retention_chunk` spans one eviction call deletes at most.
const MAX_EVICTION_CHUNKS: usize = 10;

/// Bytes of the pages that hold data: `(page_count - freelist_count) * page_size`.
fn live_bytes(conn: &Connection) -> StorageResult<u64> {
    let get = |p: &str| -> StorageResult<u64> {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
            .map(from_i64)
            .map_err(map_err)
    };
    let pages = get("page_count")?;
    let free = get("freelist_count")?;
    Ok(pages.saturating_sub(free).saturating_mul(get("page_size")?))
}

/// The size of the database file and its `-wal` and `-shm` companions.
fn file_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    }
    total
}

fn disk_usage_tx(conn: &Connection, path: &Path) -> StorageResult<DiskUsage> {
    let oldest: Option<i64> = conn
        .query_row("SELECT MIN(start_ns) FROM spans", [], |r| r.get(0))
        .map_err(map_err)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(DiskUsage {
        dir: Some(dir),
        file_bytes: file_bytes(path),
        live_bytes: live_bytes(conn)?,
        oldest_ns: oldest.map(from_i64),
    })
}

/// Deletes about `bytes` of the oldest data (see [`Retention::evict_oldest`]).
/// The cutoff is a span start time: the stored bytes per span (live bytes
/// over the span count, rollups and attributes included) give how many of
/// the oldest spans to delete, and the start time of the last of them is
/// where the age retention's delete ([`retention_tx`]) is told to stop. So
/// eviction deletes a whole time range, never a span newer than one it keeps.
fn evict_tx(
    conn: &mut Connection,
    bytes: u64,
    give_back: bool,
    chunk: usize,
) -> StorageResult<EvictionReport> {
    if give_back {
        // First return what is free already (free pages, the journal): on a
        // full disk the deletes below need room in the journal. Best effort:
        // a checkpoint that cannot grow the file fails, and is tried again.
        if let Err(e) = give_back_space(conn) {
            tracing::debug!(error = %e, "sqlite: giving space back before the eviction failed");
        }
    }
    // Small transactions on a full disk: each one's pages must fit in the
    // journal's room.
    let chunk = if give_back {
        chunk.min(FULL_DISK_CHUNK)
    } else {
        chunk
    };
    let live = live_bytes(conn)?;
    // Row ids grow with arrival and retention deletes the oldest, so the id
    // range is the span count (an overestimate if rows were deleted out of
    // order, which makes the eviction a little larger): O(log n), where
    // COUNT(*) would read a whole index.
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT MIN(id), MAX(id) FROM spans", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(map_err)?;
    let mut report = EvictionReport::default();
    if let (Some(lo), Some(hi), true) = (lo, hi, bytes > 0) {
        let n = from_i64(hi.saturating_sub(lo)).saturating_add(1);
        let per_span = (live / n).max(1);
        // At most MAX_EVICTION_CHUNKS chunks per call, so that the writer
        // (and ingest) waits for one eviction call at most that long; the
        // size task calls again while there is more to delete.
        let k = bytes
            .div_ceil(per_span)
            .clamp(1, n)
            .min((chunk.max(1) * MAX_EVICTION_CHUNKS) as u64);
        let last: Option<i64> = conn
            .query_row(
                "SELECT start_ns FROM spans ORDER BY start_ns LIMIT 1 OFFSET ?1",
                params![to_i64(k - 1)],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)?;
        let last = match last {
            Some(l) => l,
            None => conn
                .query_row("SELECT MAX(start_ns) FROM spans", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .map_err(map_err)?
                .unwrap_or(0),
        };
        let cutoff = from_i64(last).saturating_add(1);
        let mut deleted = RetentionReport::default();
        let outcome = retention_into(conn, cutoff, chunk, &mut deleted);
        report = EvictionReport {
            spans_deleted: deleted.spans_deleted,
            rollups_deleted: deleted.rollups_deleted,
            cutoff_ns: cutoff,
        };
        match outcome {
            Ok(()) => {}
            // Nothing deleted: the caller retries.
            Err(e) if deleted.spans_deleted == 0 => return Err(e),
            // Some chunks were committed (oldest first): report them, so the
            // cutoff (an upper bound of what is gone) is published.
            Err(e) => {
                tracing::warn!(error = %e, spans = deleted.spans_deleted, "sqlite: eviction stopped part-way; the rest at the next check");
            }
        }
    }
    if give_back {
        if let Err(e) = give_back_space(conn) {
            if report.spans_deleted == 0 {
                return Err(e);
            }
            tracing::warn!(error = %e, "sqlite: could not give the evicted space back yet; retried at the next check");
        }
    }
    Ok(report)
}

/// Returns free pages to the file system: moves pages from the end of the
/// file into free slots and truncates it (incremental auto-vacuum; nothing
/// happens on a file created without it), then copies the journal back and
/// truncates it to zero bytes.
fn give_back_space(conn: &Connection) -> StorageResult<()> {
    // Stepped to the end: each step of the pragma frees pages.
    {
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum").map_err(map_err)?;
        let mut rows = stmt.query([]).map_err(map_err)?;
        while rows.next().map_err(map_err)?.is_some() {}
    }
    // (busy, frames in the log, frames copied); busy = 1 when a reader kept
    // the log from being reset: it is truncated at the next eviction.
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(map_err)?;
    if busy != 0 {
        tracing::debug!("sqlite journal not truncated (a reader holds it); retried later");
    }
    Ok(())
}

/// The journal size for a store with a size budget of `budget` bytes (the
/// size task passes `storage::budget::journal_budget`, which is also bounded
/// by the free-space reserve): at most a sixteenth of it (at least 1 MiB),
/// so that on a small disk
/// the `-wal` file (which holds every write until a checkpoint copies it
/// into the database) does not take the room the budget leaves.
fn autocheckpoint_pages(configured: u32, budget: u64) -> u32 {
    let cap = (budget / 16 / 4096).max(256);
    u32::try_from(cap)
        .unwrap_or(u32::MAX)
        .min(configured.max(1))
}

#[async_trait]
impl SpanWriter for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        if spans.is_empty() {
            return Ok(());
        }
        let spans = spans.to_vec();
        self.with_writer(move |c, _| write_spans_tx(c, &spans))
            .await
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        if rollups.is_empty() {
            return Ok(());
        }
        let batch = rollups.clone();
        self.with_writer(move |c, _| write_rollups_tx(c, &batch))
            .await
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        let segments = segments.to_vec();
        // The writer connection: it sees every committed batch.
        self.with_writer(move |c, _| rollup_origins_tx(c, instance, &segments))
            .await
    }
    async fn prune_rollup_origins(&self, instance: u64, below_segment: u64) -> StorageResult<u64> {
        self.with_writer(move |c, _| {
            c.execute(
                "DELETE FROM rollup_origins WHERE instance = ?1 AND segment < ?2",
                params![instance as i64, to_i64(below_segment)],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }
}

#[async_trait]
impl SamplingCounts for SqliteStore {
    async fn write_sampling_counts(&self, c: &SamplingPeriodCounts) -> StorageResult<()> {
        let c = c.clone();
        self.with_writer(move |conn, _| {
            let tx = conn.transaction().map_err(map_err)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO sampling_counts \
                         (period_start_ns, period_secs, collector, service, operation, count_milli) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(map_err)?;
                for (service, op, n) in &c.counts {
                    st.execute(params![
                        to_i64(c.period_start_ns),
                        c.period_secs,
                        c.collector,
                        service,
                        op,
                        to_i64(*n)
                    ])
                    .map_err(map_err)?;
                }
            }
            tx.commit().map_err(map_err)
        })
        .await
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        // The writer connection: it sees every committed period.
        self.with_writer(move |conn, _| {
            let mut st = conn
                .prepare_cached(
                    "SELECT period_start_ns, service, operation, sum(count_milli) \
                     FROM sampling_counts \
                     WHERE period_secs = ?1 AND period_start_ns >= ?2 AND period_start_ns < ?3 \
                     GROUP BY period_start_ns, service, operation \
                     ORDER BY period_start_ns, service, operation",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![period_secs, to_i64(from_ns), to_i64(to_ns)], |r| {
                    Ok(SamplingCountRow {
                        period_start_ns: from_i64(r.get(0)?),
                        service: r.get(1)?,
                        operation: r.get(2)?,
                        count_milli: from_i64(r.get(3)?),
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }
    async fn prune_sampling_counts(&self, before_ns: u64) -> StorageResult<u64> {
        self.with_writer(move |conn, _| {
            conn.execute(
                "DELETE FROM sampling_counts WHERE period_start_ns < ?1",
                params![to_i64(before_ns)],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }
}

#[async_trait]
impl TraceReader for SqliteStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        self.with_reader(move |c, _| get_trace_tx(c, &trace_id, range))
            .await
    }
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        let ids = trace_ids.to_vec();
        self.with_reader(move |c, _| get_traces_tx(c, &ids, range))
            .await
    }
    async fn search(&self, query: &TraceQuery) -> StorageResult<SearchPage> {
        let q = query.clone();
        self.with_reader(move |c, _| search_tx(c, &q)).await
    }
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        self.with_reader(move |c, _| services_tx(c, range)).await
    }
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        let service = service.to_string();
        self.with_reader(move |c, _| operations_tx(c, &service, range))
            .await
    }
}

#[async_trait]
impl AnalyticsReader for SqliteStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.with_reader(move |c, _| dependencies_tx(c, range))
            .await
    }
    async fn latency(&self, query: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        let q = query.clone();
        self.with_reader(move |c, cfg| latency_tx(c, &q, cfg)).await
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        let (service, operation, kinds, qs) = (
            service.to_string(),
            operation.map(str::to_string),
            kinds.to_vec(),
            qs.to_vec(),
        );
        self.with_reader(move |c, _| {
            exact_percentiles_tx(c, &service, operation.as_deref(), &kinds, range, &qs)
        })
        .await
    }
}

#[async_trait]
impl Retention for SqliteStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        self.with_writer(move |c, cfg| retention_tx(c, cutoff_ns, cfg.retention_chunk))
            .await
    }
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        let path = self.inner.path.clone();
        self.with_reader(move |c, _| disk_usage_tx(c, &path).map(Some))
            .await
    }
    async fn export_before(
        &self,
        cutoff_ns: u64,
        after: Option<super::ExportCursor>,
        limit: usize,
    ) -> StorageResult<super::ExportPage> {
        self.with_reader(move |c, _| export_before_tx(c, cutoff_ns, after, limit))
            .await
    }
    fn set_disk_budget(&self, bytes: u64) {
        let pages = autocheckpoint_pages(self.inner.config.wal_autocheckpoint_pages, bytes);
        let conn = self.inner.writer.lock();
        // A checkpoint resets the journal to this size, so it also bounds the
        // file between checkpoints (PERSIST_WAL otherwise keeps its peak).
        let limit = i64::from(pages).saturating_mul(2 * 4096);
        if let Err(e) = conn
            .pragma_update(None, "wal_autocheckpoint", pages)
            .and_then(|()| conn.pragma_update(None, "journal_size_limit", limit))
        {
            tracing::warn!(error = %e, "cannot size the sqlite journal for the disk budget");
        }
    }
    async fn evict_oldest(&self, bytes: u64, give_back: bool) -> StorageResult<EvictionReport> {
        self.with_writer(move |c, cfg| evict_tx(c, bytes, give_back, cfg.retention_chunk))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttrValue;
    use crate::storage::span_codec::tests::full_span;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let c = common::encode_cursor(123, &[0xab; 16]);
        assert_eq!(
            common::decode_cursor(&c).expect("cursor"),
            (123, [0xab; 16])
        );
        for bad in [
            "",
            "zz",
            &c[..47],
            &format!("{c}0"),
            "é".repeat(24).as_str(),
        ] {
            assert!(
                matches!(
                    common::decode_cursor(bad),
                    Err(StorageError::InvalidQuery(_))
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn nan_attribute_stored_and_not_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        store.write_spans(&[full_span()]).await.expect("write");
        let got = store.get_trace([7; 16], None).await.expect("get");
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0].attributes[0].value, AttrValue::Double(d) if d.is_nan()));
    }

    /// `n` spans of trace `t`, one per millisecond from `t`'s second.
    fn spans_of(t: u32, n: u32) -> Vec<Span> {
        (0..n)
            .map(|i| {
                let mut s = full_span();
                s.trace_id = [0; 16];
                s.trace_id[12..].copy_from_slice(&t.to_be_bytes());
                s.span_id = [0; 8];
                s.span_id[4..].copy_from_slice(&i.to_be_bytes());
                s.start_ns = 1_700_000_000_000_000_000
                    + u64::from(t) * 1_000_000_000
                    + u64::from(i) * 1_000_000;
                s.end_ns = s.start_ns + 1_000;
                s.attributes.push(crate::model::KeyValue::new(
                    "payload",
                    AttrValue::Str("x".repeat(300)),
                ));
                s
            })
            .collect()
    }

    #[tokio::test]
    async fn eviction_deletes_the_oldest_time_range_and_keeps_everything_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        for t in 0..40 {
            store.write_spans(&spans_of(t, 50)).await.expect("write");
        }
        let before = store
            .disk_usage()
            .await
            .expect("usage")
            .expect("sqlite measures");
        assert_eq!(before.oldest_ns, Some(1_700_000_000_000_000_000));
        assert!(before.live_bytes > 0 && before.file_bytes >= before.live_bytes / 2);
        // About a quarter of the data.
        let report = store
            .evict_oldest(before.live_bytes / 4, false)
            .await
            .expect("evict");
        assert!(report.spans_deleted > 0, "{report:?}");
        let after = store
            .disk_usage()
            .await
            .expect("usage")
            .expect("sqlite measures");
        assert!(after.live_bytes < before.live_bytes, "{before:?} {after:?}");
        assert!(after.oldest_ns.expect("not empty") >= report.cutoff_ns);
        // Between a tenth and a half of the spans went (the estimate counts
        // rollups and attribute rows too).
        assert!(
            (200..=1000).contains(&report.spans_deleted),
            "{}",
            report.spans_deleted
        );
        // Every span before the cutoff is gone, every span at or after it kept.
        for t in 0..40u32 {
            let want: Vec<_> = spans_of(t, 50)
                .into_iter()
                .filter(|s| s.start_ns >= report.cutoff_ns)
                .map(|s| s.span_id)
                .collect();
            let mut trace = [0u8; 16];
            trace[12..].copy_from_slice(&t.to_be_bytes());
            let got: Vec<_> = store
                .get_trace(trace, None)
                .await
                .expect("get")
                .into_iter()
                .map(|s| s.span_id)
                .collect();
            assert_eq!(got, want, "trace {t}");
        }
        // The next eviction goes further, never back.
        let next = store.evict_oldest(1, false).await.expect("evict");
        assert!(next.cutoff_ns > report.cutoff_ns);
        // Nothing to ask for, nothing deleted.
        assert_eq!(
            store
                .evict_oldest(0, false)
                .await
                .expect("evict")
                .spans_deleted,
            0
        );
    }

    #[tokio::test]
    async fn eviction_with_give_back_shrinks_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        for t in 0..40 {
            store.write_spans(&spans_of(t, 50)).await.expect("write");
        }
        // Deleted pages stay in the file without give_back...
        store.evict_oldest(1, false).await.expect("evict");
        store
            .with_writer(|c, _| give_back_space(c))
            .await
            .expect("checkpoint");
        let before = store.disk_usage().await.expect("usage").expect("sqlite");
        let kept = store
            .evict_oldest(before.live_bytes / 2, false)
            .await
            .expect("evict");
        assert!(kept.spans_deleted > 0);
        let mid = store.disk_usage().await.expect("usage").expect("sqlite");
        assert!(mid.file_bytes >= before.file_bytes, "{before:?} {mid:?}");
        // ...and go back to the file system with it.
        store.evict_oldest(0, true).await.expect("give back");
        let after = store.disk_usage().await.expect("usage").expect("sqlite");
        assert!(
            after.file_bytes < before.file_bytes * 3 / 4,
            "{before:?} {after:?}"
        );
    }

    #[test]
    fn the_journal_shrinks_with_a_small_budget_only() {
        assert_eq!(autocheckpoint_pages(16_384, 32 << 20), 512);
        assert_eq!(autocheckpoint_pages(16_384, 1 << 20), 256);
        assert_eq!(autocheckpoint_pages(16_384, 100 << 30), 16_384);
        assert_eq!(autocheckpoint_pages(1_000, 100 << 30), 1_000);
    }

    #[tokio::test]
    async fn journal_mode_is_wal_and_sync_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/t.db");
        let store = SqliteStore::open(&path).expect("open");
        let (mode, sync) = {
            let c = store.inner.writer.lock();
            let mode: String = c
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .expect("mode");
            let sync: i64 = c
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .expect("sync");
            (mode, sync)
        };
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        let auto_vacuum: i64 = store
            .inner
            .writer
            .lock()
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .expect("auto_vacuum");
        assert_eq!(auto_vacuum, 2, "auto_vacuum=INCREMENTAL on a new file");
        // Reopening an existing database works (schema is IF NOT EXISTS).
        drop(store);
        SqliteStore::open(&path).expect("reopen");
    }
}
