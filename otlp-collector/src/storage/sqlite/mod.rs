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
//!
//! Files by concern: [`layout`] (schema, span rows, migrations), `write.rs`
//! (spans, rollups, origins), `read.rs` (trace reads and search),
//! `analytics.rs` (dependencies, latency, exact percentiles), `sampling.rs`
//! (shared sampling counts), `retention.rs` (retention, eviction, disk usage,
//! export).

mod analytics;
mod layout;
#[cfg(test)]
mod plan_tests;
mod read;
mod retention;
mod sampling;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use super::{StorageError, StorageResult};

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
            .execute_batch(write::ROLLUP_ORIGINS_SCHEMA)
            .map_err(map_err)?;
        writer
            .execute_batch(sampling::SAMPLING_COUNTS_SCHEMA)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttrValue;
    use crate::storage::span_codec::tests::full_span;
    use crate::storage::{SpanWriter, TraceReader};

    #[tokio::test]
    async fn nan_attribute_stored_and_not_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        store.write_spans(&[full_span()]).await.expect("write");
        let got = store.get_trace([7; 16], None).await.expect("get");
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0].attributes[0].value, AttrValue::Double(d) if d.is_nan()));
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
