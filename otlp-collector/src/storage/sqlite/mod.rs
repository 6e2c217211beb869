//! The embedded SQLite sink, the collector's default store.
//!
//! One database file under the data directory, opened in WAL journal mode with
//! `synchronous=FULL`: every committed `write_spans` transaction is fsynced
//! before the call returns, because the collector deletes spans from its own
//! write-ahead log once the sink has committed them (`NORMAL` in WAL mode can
//! lose the last transactions on power loss, which would lose acknowledged
//! spans). The cost is one fsync per batch, not per span.
//!
//! Schema (`layout.rs` and `docs/storage.md`):
//! - `spans`: one row per span, appended in arrival order, with the searchable
//!   columns and the full span as a compact binary blob ([`encode_span`](super::span_codec::encode_span)) for
//!   an exact round trip; a `UNIQUE (trace_id, span_id)` index plus
//!   `INSERT OR IGNORE` makes a retried batch a no-op.
//! - `span_postings`: the attribute index for equality searches, one posting
//!   list per hashed attribute term and written batch (`postings.rs`).
//! - `op_rollups` / `edge_rollups`: per-minute rollups, merged on write.
//! - `rollup_origins`: the WAL spans each rollup batch accounts for, written
//!   in the batch's transaction (see `rollup::origins`).
//!
//! rusqlite is synchronous: writes run on the store's own `sqlite-writer`
//! thread with the one writer connection, reads on tokio's blocking pool
//! with a few reader connections (WAL lets readers run while the writer
//! commits). All values are bound parameters.
//!
//! Files by concern: `layout.rs` (schema, span rows), `postings.rs` (the
//! attribute index), `migrate.rs` (older layouts), `write.rs`
//! (spans, rollups, origins), `read.rs` (trace reads and search),
//! `analytics.rs` (dependencies, latency, exact percentiles), `sampling.rs`
//! (shared sampling counts), `retention.rs` (retention, eviction, disk usage,
//! export).

mod analytics;
mod layout;
mod migrate;
#[cfg(test)]
mod plan_tests;
mod postings;
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
    /// WAL size, in units of 4 KiB whatever the page size, at which a commit
    /// copies the WAL back into the database file. Larger means fewer,
    /// cheaper checkpoints (a page written by several batches is copied
    /// once) and a larger `-wal` file.
    pub wal_autocheckpoint_pages: u32,
    /// Page size in bytes of a database file this store creates: a power of
    /// two from 512 to 65536 (default 4096, SQLite's). A file that exists
    /// keeps the page size it was created with (changing it takes a
    /// `VACUUM` of the whole file, which the collector does not run). The
    /// trade-off measured on a 2-core machine (docs/benchmarks.md, session
    /// 15): 8 KiB pages split fewer B-tree pages per stored span, +3 to +15%
    /// sustained write rate, but write 12–24% more bytes per span at a paced
    /// rate, and the acknowledgement tail follows the disk (p99.9 worse in
    /// three of three runs at 12,000 spans/s); so the default stays 4 KiB.
    pub page_size: u32,
    /// Nice value added to the `sqlite-writer` thread (0 = the process's
    /// priority, at most 19). Acknowledgements depend on the receivers and
    /// the collector's WAL, not on the store: a less favoured writer leaves
    /// them the CPU first when cores are short, and still gets every idle
    /// cycle (the sink keeping up is what `ferrotrace_queue_spans` shows).
    pub writer_nice: i32,
    /// When a committed write is made durable. `full` (default): SQLite
    /// syncs its WAL inside every commit (`PRAGMA synchronous=FULL`), on the
    /// writer thread. `normal`: the commit only writes (`synchronous=NORMAL`)
    /// and the store syncs SQLite's WAL file itself on its `sqlite-sync`
    /// thread before the write returns, so a write is still durable when it
    /// returns (the collector releases its own WAL only then), while the
    /// writer thread already runs the next write (with
    /// `batcher.max_concurrent_writes` ≥ 2) and concurrent writes share one sync.
    pub synchronous: SqliteSync,
}

/// [`SqliteConfig::synchronous`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// SQLite syncs in every commit.
    #[default]
    Full,
    /// Commits only write; the store syncs SQLite's WAL before a write returns.
    Normal,
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
            page_size: DEFAULT_PAGE_SIZE,
            writer_nice: 0,
            synchronous: SqliteSync::Full,
        }
    }
}

/// [`SqliteConfig::page_size`]'s default.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// The unit of [`SqliteConfig::wal_autocheckpoint_pages`] (bytes).
const WAL_UNIT: u64 = 4096;

/// SQLite's `wal_autocheckpoint` (in pages of `page_size` bytes) for a WAL
/// size given in units of [`WAL_UNIT`]; at least one page.
fn wal_pages(units: u32, page_size: u32) -> u32 {
    let pages = u64::from(units) * WAL_UNIT / u64::from(page_size.max(512));
    u32::try_from(pages).unwrap_or(u32::MAX).max(1)
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
    /// Jobs for the `sqlite-writer` thread, which runs every write (see
    /// [`WriterThread`]).
    jobs: WriterThread,
    /// With `synchronous = "normal"`: syncs SQLite's WAL after writes.
    syncer: Option<WalSyncer>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    config: SqliteConfig,
    /// The file's page size (the configured one only for a file created
    /// with it).
    page_size: u32,
}

/// Syncs SQLite's WAL file for `synchronous = "normal"` on its own thread:
/// every request waiting when a sync starts is answered by it (one
/// `fdatasync` for all), and a request is only taken after the write it
/// follows has returned, so its frames are in the file before the sync.
struct WalSyncer {
    tx: crossbeam_channel::Sender<tokio::sync::oneshot::Sender<std::io::Result<()>>>,
}

impl WalSyncer {
    fn start(wal_file: std::fs::File) -> std::io::Result<WalSyncer> {
        let (tx, rx) =
            crossbeam_channel::unbounded::<tokio::sync::oneshot::Sender<std::io::Result<()>>>();
        std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = wal_file.sync_data();
                    for w in waiting {
                        let _ = w.send(match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })?;
        Ok(WalSyncer { tx })
    }
}

/// A job for the writer thread: it locks the writer connection itself.
type WriterJob = Box<dyn FnOnce() + Send>;

/// The thread that runs the store's writes, one at a time, in the order they
/// were asked for. Its own named thread rather than tokio's blocking pool:
/// the sink's CPU (a transaction of thousands of spans is tens of
/// milliseconds of one core) shows apart from the tokio workers in
/// per-thread tools (`top -H`, `/proc/PID/task/*/schedstat`, `perf`), and its
/// scheduling priority can be set (`sqlite.writer_nice`) so that on a small
/// machine the acknowledgement path (tokio workers, `wal-writer`) runs first
/// when both want a core. The thread ends when the store is dropped (the job
/// sender with it).
struct WriterThread {
    tx: crossbeam_channel::Sender<WriterJob>,
}

impl WriterThread {
    fn start(nice: i32) -> std::io::Result<WriterThread> {
        // Unbounded, but every job has a caller awaiting its answer, and
        // the callers are few: the sink's span writes
        // (`batcher.max_concurrent_writes`), one rollup write, retention and
        // the sampling store, each one at a time.
        let (tx, rx) = crossbeam_channel::unbounded::<WriterJob>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                lower_priority(nice);
                for job in rx {
                    job();
                }
            })?;
        Ok(WriterThread { tx })
    }
}

/// Raises this thread's nice value by `nice` (0: unchanged). Only ever
/// lowers the priority, which needs no privilege; a failure is logged and
/// the thread runs at the process's priority.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread (on Linux, PRIO_PROCESS
    // with a thread id acts on that thread alone); no memory is passed.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (current + nice).min(19))
    };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the SQLite writer thread's priority (sqlite.writer_nice); it runs at the process's"
        );
    }
}

/// Elsewhere a thread's own nice value cannot be set portably.
#[cfg(not(target_os = "linux"))]
fn lower_priority(nice: i32) {
    if nice > 0 {
        tracing::warn!("sqlite.writer_nice is only applied on Linux; the SQLite writer thread runs at the process's priority");
    }
}

/// The embedded SQLite [`SpanStore`](crate::storage::SpanStore).
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
        if !(512..=65536).contains(&config.page_size) || !config.page_size.is_power_of_two() {
            return Err(StorageError::Backend(format!(
                "sqlite.page_size = {} is not a page size SQLite can use: give a power of two from 512 to 65536 (default {DEFAULT_PAGE_SIZE})",
                config.page_size
            )));
        }
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
            // Like auto-vacuum, the page size can only be chosen before the
            // first write.
            writer
                .pragma_update(None, "page_size", config.page_size)
                .map_err(map_err)?;
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
        // NORMAL: the same, by the store's own sync of SQLite's WAL file
        // ([`WalSyncer`]) before a write returns.
        let sync_mode = match config.synchronous {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        writer
            .pragma_update(None, "synchronous", sync_mode)
            .map_err(map_err)?;
        let page_size: u32 = writer
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(map_err)?;
        writer
            .pragma_update(
                None,
                "wal_autocheckpoint",
                wal_pages(config.wal_autocheckpoint_pages, page_size),
            )
            .map_err(map_err)?;
        writer.set_prepared_statement_cache_capacity(64);
        migrate::prepare(&mut writer, migrate::MIGRATION_CHUNK)?;
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
        let jobs = WriterThread::start(config.writer_nice).map_err(|e| {
            StorageError::Unavailable(format!("cannot start the SQLite writer thread: {e}"))
        })?;
        let syncer = match config.synchronous {
            SqliteSync::Full => None,
            SqliteSync::Normal => {
                // The `-wal` file exists from the WAL mode switch on, and is
                // kept (`persist_wal`), so this handle stays on SQLite's file.
                let mut wal_path = path.clone().into_os_string();
                wal_path.push("-wal");
                let started = std::fs::File::open(&wal_path)
                    .and_then(WalSyncer::start)
                    .map_err(|e| {
                        StorageError::Unavailable(format!(
                            "cannot open SQLite's WAL file {} to sync it (sqlite.synchronous = \"normal\"): {e}",
                            std::path::Path::new(&wal_path).display()
                        ))
                    })?;
                Some(started)
            }
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                jobs,
                syncer,
                readers,
                next_reader: AtomicUsize::new(0),
                config,
                page_size,
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
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: WriterJob = Box::new(move || {
            let out = {
                let mut conn = inner.writer.lock();
                // A panic in a write ends that write (its caller gets an
                // error, as from a failed blocking task), not the thread.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f(&mut conn, &inner.config)
                }))
            };
            let _ = reply.send(out);
        });
        if self.inner.jobs.tx.send(job).is_err() {
            return Err(StorageError::Backend(
                "the SQLite writer thread has stopped".into(),
            ));
        }
        match answer.await {
            Ok(Ok(out)) => out,
            Ok(Err(_)) => Err(StorageError::Backend(
                "sqlite worker failed: the write panicked".into(),
            )),
            Err(_) => Err(StorageError::Backend(
                "the SQLite writer thread has stopped".into(),
            )),
        }
    }

    /// [`Self::with_writer`] for a write that must be durable when it
    /// returns: with `synchronous = "normal"`, SQLite's WAL file is synced
    /// after the write (sharing the sync with concurrent writes).
    async fn with_writer_durable<R, F>(&self, f: F) -> StorageResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection, &SqliteConfig) -> StorageResult<R> + Send + 'static,
    {
        let out = self.with_writer(f).await?;
        if let Some(syncer) = &self.inner.syncer {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let stopped = || StorageError::Backend("the SQLite sync thread has stopped".into());
            syncer.tx.send(reply).map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?.map_err(|e| {
                StorageError::Unavailable(format!(
                    "sqlite: cannot sync the WAL file: {e} (retry later; check the disk)"
                ))
            })?;
        }
        Ok(out)
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

    /// Writes run on the named writer thread, at the configured lower
    /// priority, one after the other; a panicking write is an error for its
    /// caller and the thread goes on with the next.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn writes_run_on_the_writer_thread_at_its_priority() {
        let dir = tempfile::tempdir().expect("tempdir");
        // SAFETY: a plain syscall, no memory passed.
        let process_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let store = SqliteStore::open_with(
            dir.path().join("t.db"),
            SqliteConfig {
                writer_nice: 3,
                ..SqliteConfig::default()
            },
        )
        .expect("open");
        let (name, nice) = store
            .with_writer(|_, _| {
                let name = std::thread::current().name().map(str::to_owned);
                // SAFETY: plain syscalls, no memory passed.
                let nice = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, tid)
                };
                Ok((name, nice))
            })
            .await
            .expect("job");
        assert_eq!(name.as_deref(), Some("sqlite-writer"));
        assert_eq!(nice, (process_nice + 3).min(19));
        let failed = store
            .with_writer(|_, _| -> StorageResult<()> { panic!("injected") })
            .await;
        assert!(matches!(failed, Err(StorageError::Backend(m)) if m.contains("panicked")));
        store
            .write_spans(&[full_span()])
            .await
            .expect("write after a panic");
        assert_eq!(store.get_trace([7; 16], None).await.expect("get").len(), 1);
    }

    /// `synchronous = "normal"`: commits do not sync, the store syncs
    /// SQLite's WAL file before a write returns; concurrent writes work and
    /// everything written is read back, also after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn normal_sync_writes_are_synced_by_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let cfg = SqliteConfig {
            synchronous: SqliteSync::Normal,
            ..SqliteConfig::default()
        };
        let store = SqliteStore::open_with(&path, cfg.clone()).expect("open");
        let sync: i64 = store
            .inner
            .writer
            .lock()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("sync");
        assert_eq!(sync, 1, "synchronous=NORMAL");
        assert!(store.inner.syncer.is_some());
        let writes = (0..8u8).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = full_span();
                s.trace_id = [n + 1; 16];
                store.write_spans(&[s]).await
            })
        });
        for w in writes.collect::<Vec<_>>() {
            w.await.expect("task").expect("write");
        }
        drop(store);
        let store = SqliteStore::open_with(&path, cfg).expect("reopen");
        for n in 0..8u8 {
            assert_eq!(
                store.get_trace([n + 1; 16], None).await.expect("get").len(),
                1
            );
        }
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

    fn pragma(store: &SqliteStore, name: &str) -> i64 {
        store
            .inner
            .writer
            .lock()
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .expect("pragma")
    }

    /// A new file gets the configured page size (SQLite's 4 KiB by default)
    /// and the WAL checkpoint size stays in 4 KiB units; a file that exists
    /// keeps its page size, and spans written before and after read back.
    #[tokio::test]
    async fn a_new_file_gets_the_page_size_an_existing_file_keeps_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("default.db");
        let store = SqliteStore::open(&path).expect("open");
        assert_eq!(pragma(&store, "page_size"), 4096);
        assert_eq!(pragma(&store, "wal_autocheckpoint"), 16_384);
        drop(store);
        let store = SqliteStore::open_with(
            dir.path().join("eight.db"),
            SqliteConfig {
                page_size: 8192,
                ..SqliteConfig::default()
            },
        )
        .expect("open 8 KiB");
        assert_eq!(pragma(&store, "page_size"), 8192);
        assert_eq!(
            pragma(&store, "wal_autocheckpoint"),
            8192,
            "64 MiB of 8 KiB pages"
        );

        // A file made with SQLite's default 4 KiB pages (as before the
        // option existed) keeps them, with the checkpoint size converted.
        let old = dir.path().join("old.db");
        {
            let c = Connection::open(&old).expect("create");
            c.execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (x); DROP TABLE t;")
                .expect("4 KiB file");
        }
        let store = SqliteStore::open_with(
            &old,
            SqliteConfig {
                page_size: 16384,
                ..SqliteConfig::default()
            },
        )
        .expect("open old");
        assert_eq!(pragma(&store, "page_size"), 4096);
        assert_eq!(pragma(&store, "wal_autocheckpoint"), 16384);
        store.write_spans(&[full_span()]).await.expect("write");
        drop(store);
        let store = SqliteStore::open(&old).expect("reopen");
        assert_eq!(pragma(&store, "page_size"), 4096);
        assert_eq!(store.get_trace([7; 16], None).await.expect("get").len(), 1);

        let big = dir.path().join("big.db");
        let store = SqliteStore::open_with(
            &big,
            SqliteConfig {
                page_size: 65536,
                wal_autocheckpoint_pages: 1,
                ..SqliteConfig::default()
            },
        )
        .expect("open 64 KiB");
        assert_eq!(pragma(&store, "page_size"), 65536);
        assert_eq!(
            pragma(&store, "wal_autocheckpoint"),
            1,
            "never below one page"
        );
        store.write_spans(&[full_span()]).await.expect("write");
        assert_eq!(store.get_trace([7; 16], None).await.expect("get").len(), 1);
    }

    #[test]
    fn a_page_size_sqlite_cannot_use_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [0, 256, 3000, 4095, 131_072, u32::MAX] {
            let path = dir.path().join(format!("{bad}.db"));
            let err = SqliteStore::open_with(
                &path,
                SqliteConfig {
                    page_size: bad,
                    ..SqliteConfig::default()
                },
            )
            .expect_err("refused");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("sqlite.page_size = {bad}")) && msg.contains("power of two"),
                "{msg}"
            );
            assert!(
                !path.exists(),
                "nothing created for a refused configuration"
            );
        }
    }

    #[test]
    fn wal_size_units_become_pages_of_the_file() {
        assert_eq!(wal_pages(16_384, 4096), 16_384);
        assert_eq!(wal_pages(16_384, 8192), 8192);
        assert_eq!(wal_pages(16_384, 65_536), 1024);
        assert_eq!(wal_pages(1, 8192), 1);
        assert_eq!(wal_pages(0, 4096), 1);
        assert_eq!(wal_pages(u32::MAX, 512), u32::MAX);
    }
}
