//! The write-ahead log: numbered segment files of length-prefixed, CRC-checked
//! records, each holding one accepted request body exactly as decoded at the
//! edge (OTLP protobuf or JSON, Zipkin JSON or protobuf, Jaeger protobuf or
//! Thrift: [`RecordFormat`]), so replay runs the same decoder and yields the
//! same spans.
//!
//! One writer thread appends records and group-commits them: every append
//! waiting when a write starts shares one `fsync` (policy `always`), so the
//! cost of durability is amortised over concurrent requests. A caller is
//! answered only after its record is written (and synced, under `always`).
//!
//! Each segment tracks how many of its spans are still outstanding (queued,
//! held by tail sampling or not yet committed by the sink). A segment file is
//! deleted once it is sealed (no longer written to, or fully replayed) and its
//! outstanding count is zero and no rollup contribution of its spans is held
//! only in memory ([`Wal::hold_rollups`]). The total size of all segments is
//! bounded; an append beyond it is refused with [`WalError::Full`] (backpressure).
//!
//! A write that fails for lack of space (ENOSPC, EDQUOT) refuses the appends
//! of its group like any I/O error, and is remembered ([`Wal::out_of_space`])
//! until an append succeeds or [`Wal::check_space`] sees space again. A full
//! disk at open is not fatal: the writer starts without a segment and
//! creates one with the first append that finds room, so a collector can
//! start, replay and serve queries on a full disk.
//!
//! Every span has a stable position: its segment and its ordinal among the
//! spans of that segment ([`WalPos`]), the same when it is replayed. Segment
//! ids are never reused within a WAL directory, and the directory has a random
//! identity ([`Wal::instance`]), both kept in the `wal.meta` file; rollup
//! origins stored by the sinks name spans by (instance, segment, ordinal).

mod meta;
mod read;
mod space;
mod spare;
#[cfg(test)]
mod tests;
mod vectored;
mod writer;

use crate::disk::{free_bytes, free_space_reserve, fs_size_bytes};

use meta::{random_instance, Meta, META_FILE};
use space::is_out_of_space;
use writer::Writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{bounded, Sender, TrySendError};
use parking_lot::Mutex;

use crate::metrics::Metrics;
use crate::receiver::format::RecordFormat;
use serde::{Deserialize, Serialize};

/// When the WAL calls `fsync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before every acknowledgement (group commit: one fsync per batch of concurrent appends).
    #[default]
    Always,
    /// Every `fsync_interval_ms`; an OS crash may lose the last interval (a process crash does not).
    Interval,
    /// Never; the OS flushes when it likes.
    Never,
}

/// Write-ahead log settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Directory; default `<data_dir>/wal`.
    pub dir: Option<PathBuf>,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Interval for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Total size of all segments; appends beyond it are refused (backpressure).
    pub max_bytes: u64,
    /// Prepare the next segment ahead of time on its own thread, zero-filled
    /// to `segment_bytes` (when the disk has room beyond `min_free_bytes`), so
    /// that rotating costs an acknowledgement no `fsync`s and the group
    /// commit's `fdatasync` changes no file size (see `wal/spare.rs`).
    /// On by default: without it a rotation (every `segment_bytes`) creates
    /// the next segment while the appends of its group wait, four `fsync`s of
    /// `wal.meta` and the directory, which set the acknowledgement's p99
    /// (docs/benchmarks.md, "Session-10 WAL rotation"). `false`: segments are
    /// created when needed and grow as written (no file beyond `max_bytes`).
    pub preallocate: bool,
    /// Free bytes kept on the WAL's file system for the sink: appends are
    /// refused (503, as on a full disk) while less is free. A sink on the same
    /// disk (the SQLite store) needs room to commit what would free the WAL's
    /// segments; without a reserve the WAL takes every byte freed after a full
    /// disk and the two starve each other. The store's size retention
    /// (`storage::budget`) evicts its oldest data and gives the space back
    /// whenever less than this is free on its disk, so the reserve always
    /// comes back. 0 = automatic: a quarter of the file system, at most 256 MiB.
    pub min_free_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: None,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 100,
            segment_bytes: 32 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            preallocate: true,
            min_free_bytes: 0,
        }
    }
}

/// Record header: payload length (u32 LE), CRC32 of format+span count+payload
/// (u32 LE), format (u8), span count (u32 LE).
const HEADER_LEN: usize = 13;
/// Pending appends the writer thread accepts before callers get [`WalError::Busy`].
const APPEND_CHANNEL_CAPACITY: usize = 8192;
/// Largest group written with one `write` + `fsync`.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Why a WAL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The WAL reached `wal.max_bytes`; retry once the sink has caught up.
    #[error("write-ahead log is full ({0} bytes); retry later")]
    Full(u64),
    /// Too many appends are waiting for the writer; retry later.
    #[error("write-ahead log writer is saturated; retry later")]
    Busy,
    /// The writer thread has stopped (shutdown or a previous I/O error).
    #[error("write-ahead log is closed")]
    Closed,
    /// A file operation failed.
    #[error("write-ahead log I/O error on {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

impl WalError {
    /// True when the failure is a lack of space (ENOSPC, or EDQUOT: quota).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if is_out_of_space(source))
    }
}

/// Where an appended record's spans sit in the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalPos {
    /// Segment id (release the spans against it).
    pub segment: u64,
    /// Ordinal of the record's first span among the spans of the segment.
    pub first_span: u64,
    /// Byte offset of the record in its segment file (where
    /// [`Wal::read_record_at`] finds it again).
    pub offset: u64,
}

/// Free bytes on the WAL's file system at which [`Wal::check_space`] takes a
/// lack of space as resolved (a group of appends is up to 8 MiB; most are
/// far smaller).
pub const SPACE_RECOVERED_BYTES: u64 = 4 << 20;

/// One record read back at replay.
#[derive(Debug)]
pub struct Record {
    /// Payload format.
    pub format: RecordFormat,
    /// Spans the record was acknowledged with.
    pub spans: u32,
    /// The request body.
    pub payload: Bytes,
}

impl Record {
    /// Bytes the record takes in its segment file (header and payload).
    pub fn encoded_len(&self) -> u64 {
        (HEADER_LEN + self.payload.len()) as u64
    }
}

#[derive(Debug)]
struct SegInfo {
    outstanding: u64,
    /// Holders of rollup contributions of this segment's spans not yet
    /// committed by the sink (the aggregator, rollup batches in flight).
    rollup_holds: u64,
    sealed: bool,
    /// Found at open and not fully replayed yet: never deleted before replay ends.
    replaying: bool,
    bytes: u64,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    instance: u64,
    segments: Mutex<BTreeMap<u64, SegInfo>>,
    /// Segments taken out of `segments` whose files are not unlinked yet
    /// (see [`Shared::take_if_done`]); locked after `segments`, never before.
    /// [`Wal::oldest_segment`] counts them: their rollup origins are needed
    /// while the file can still be replayed.
    unlinking: Mutex<Vec<u64>>,
    total_bytes: std::sync::atomic::AtomicU64,
    max_bytes: u64,
    /// Free bytes kept for the sink (`wal.min_free_bytes`, resolved).
    min_free_bytes: u64,
    metrics: Arc<Metrics>,
    /// The last write failed for lack of space, and why; cleared by a
    /// successful append or [`Wal::check_space`].
    out_of_space: Mutex<Option<String>>,
    /// An append was refused because the WAL held `max_bytes`, and none has
    /// been written since.
    refusing_full: std::sync::atomic::AtomicBool,
    /// Payload bytes of the last record refused for a full WAL: the size
    /// [`Wal::would_be_full`] assumes for a request of unknown size.
    refused_len: std::sync::atomic::AtomicU64,
    /// Test-only fault injection: the next this-many `fsync` calls fail, as a
    /// failing disk would make them. Real write errors are tested end to end
    /// through `/dev/full`; an fsync error cannot be provoked that way.
    #[cfg(test)]
    fail_fsyncs: std::sync::atomic::AtomicU32,
}

impl Shared {
    fn path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }

    /// Remembers a failure for lack of space (other failures are not kept).
    fn note_error(&self, e: &WalError) {
        if e.is_out_of_space() {
            let mut o = self.out_of_space.lock();
            if o.is_none() {
                tracing::error!(dir = %self.dir.display(), error = %e, "the write-ahead log's disk is full; appends are refused (503) until space is freed");
            }
            *o = Some(e.to_string());
        }
    }

    /// Takes segment `id` out of the table if it is sealed and empty (called
    /// with the lock held) and returns its file's path, which the caller
    /// deletes once it has released the lock ([`Shared::remove_file`]).
    /// Unlinking a segment frees up to `segment_bytes` of blocks through the
    /// file system's journal and can wait for a journal commit in progress;
    /// under the lock it held up the writer, which takes the lock for every
    /// group of appends (a sink's release deleted the old segment while a
    /// group waited to be acknowledged).
    #[must_use]
    fn take_if_done(&self, segs: &mut BTreeMap<u64, SegInfo>, id: u64) -> Option<(u64, PathBuf)> {
        let done = matches!(segs.get(&id), Some(s) if s.sealed && s.outstanding == 0 && s.rollup_holds == 0);
        if !done {
            return None;
        }
        let info = segs.remove(&id)?;
        // Accounted now: the segment's records are no longer needed, so its
        // bytes no longer count against `max_bytes` even before the unlink.
        self.total_bytes.fetch_sub(info.bytes, Relaxed);
        self.metrics.wal_segments_deleted.fetch_add(1, Relaxed);
        self.metrics
            .wal_bytes
            .store(self.total_bytes.load(Relaxed), Relaxed);
        self.metrics.wal_segments.store(segs.len() as u64, Relaxed);
        self.unlinking.lock().push(id);
        Some((id, self.path(id)))
    }

    /// Deletes a segment file taken out of the table by [`Shared::take_if_done`].
    fn remove_file(&self, taken: Option<(u64, PathBuf)>) {
        let Some((id, path)) = taken else { return };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                // Accounting stays consistent; the file is replayed and
                // deleted at the next start (its spans' writes are idempotent).
                tracing::warn!(segment = id, error = %e, "cannot delete WAL segment");
            }
        }
        self.unlinking.lock().retain(|&u| u != id);
    }

    /// Deletes segment `id` if it is sealed and empty, the file outside the lock.
    fn delete_if_done(&self, segs: parking_lot::MutexGuard<'_, BTreeMap<u64, SegInfo>>, id: u64) {
        let mut segs = segs;
        let taken = self.take_if_done(&mut segs, id);
        drop(segs);
        self.remove_file(taken);
    }
}

struct AppendReq {
    format: RecordFormat,
    spans: u32,
    payload: Bytes,
    reply: tokio::sync::oneshot::Sender<Result<WalPos, WalError>>,
    /// When the append was made (`ferrotrace_wal_group_wait_seconds`).
    queued_at: Instant,
}

/// Handle to the WAL; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: Sender<AppendReq>,
    shared: Arc<Shared>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `cfg.dir`. Returns the handle and the ids
    /// of existing segments, oldest first, which the caller must replay with
    /// [`Wal::read_segment`] and then [`Wal::finish_replay`].
    pub fn open(
        dir: &Path,
        cfg: &WalConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Wal, Vec<u64>), WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = BTreeMap::new();
        let mut total = 0u64;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata().map_err(io_err(&entry.path()))?.len();
            total += bytes;
            segments.insert(
                id,
                SegInfo {
                    outstanding: 0,
                    rollup_holds: 0,
                    sealed: false,
                    replaying: true,
                    bytes,
                },
            );
        }
        let replay: Vec<u64> = segments.keys().copied().collect();
        let meta_path = dir.join(META_FILE);
        let meta = match std::fs::read_to_string(&meta_path) {
            Ok(text) => match Meta::parse(&text) {
                Some(m) => Some(m),
                None => {
                    tracing::warn!(path = %meta_path.display(), "unreadable WAL meta file; starting a new WAL identity (rollups of replayed spans may be counted again)");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&meta_path)(e)),
        };
        let first = replay
            .last()
            .map(|l| l + 1)
            .unwrap_or(1)
            .max(meta.as_ref().map_or(1, |m| m.next_segment));
        let instance = meta.map_or_else(random_instance, |m| m.instance);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            instance,
            segments: Mutex::new(segments),
            unlinking: Mutex::new(Vec::new()),
            total_bytes: std::sync::atomic::AtomicU64::new(total),
            max_bytes: cfg.max_bytes,
            min_free_bytes: free_space_reserve(cfg.min_free_bytes, fs_size_bytes(dir).ok()),
            metrics: metrics.clone(),
            out_of_space: Mutex::new(None),
            refusing_full: std::sync::atomic::AtomicBool::new(false),
            refused_len: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            fail_fsyncs: std::sync::atomic::AtomicU32::new(0),
        });
        metrics.wal_bytes.store(total, Relaxed);
        metrics.wal_max_bytes.store(cfg.max_bytes, Relaxed);
        if let Ok(free) = free_bytes(dir) {
            metrics.wal_disk_free_bytes.store(free, Relaxed);
        }
        let (tx, rx) = bounded(APPEND_CHANNEL_CAPACITY);
        let mut writer = Writer::new(shared.clone(), cfg, first)?;
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok((
            Wal {
                tx,
                shared,
                writer: Arc::new(Mutex::new(Some(handle))),
            },
            replay,
        ))
    }

    /// Appends one record; resolves once it is durable per the fsync policy.
    /// Returns where its spans sit: the segment they must be released
    /// against, and the first span's ordinal in it.
    pub async fn append(
        &self,
        format: RecordFormat,
        spans: u32,
        payload: Bytes,
    ) -> Result<WalPos, WalError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let queued_at = Instant::now();
        match self.tx.try_send(AppendReq {
            format,
            spans,
            payload,
            reply,
            queued_at,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(WalError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(WalError::Closed),
        }
        let out = rx.await.unwrap_or(Err(WalError::Closed));
        self.shared
            .metrics
            .wal_append_latency
            .observe(queued_at.elapsed());
        out
    }

    /// Marks `n` more spans of segment `id` as outstanding (used at replay).
    pub fn add_outstanding(&self, id: u64, n: u64) {
        if let Some(s) = self.shared.segments.lock().get_mut(&id) {
            s.outstanding += n;
        }
    }

    /// Seals a replayed segment: once its outstanding spans are released it is deleted.
    pub fn finish_replay(&self, id: u64) {
        let mut segs = self.shared.segments.lock();
        if let Some(s) = segs.get_mut(&id) {
            s.sealed = true;
            s.replaying = false;
        }
        self.shared.delete_if_done(segs, id);
    }

    /// Releases `n` spans of segment `id` (committed by the sink or dropped by sampling).
    pub fn release(&self, id: u64, n: u64) {
        let mut segs = self.shared.segments.lock();
        if let Some(s) = segs.get_mut(&id) {
            s.outstanding = s.outstanding.saturating_sub(n);
        }
        self.shared.delete_if_done(segs, id);
    }

    /// Adds `n` rollup holds on segment `id`: it is not deleted until they are
    /// released, because rollup contributions of its spans are only in memory.
    pub fn hold_rollups(&self, id: u64, n: u64) {
        if let Some(s) = self.shared.segments.lock().get_mut(&id) {
            s.rollup_holds += n;
        }
    }

    /// Releases `n` rollup holds on segment `id` (the sink committed the
    /// rollups, or they were given up).
    pub fn release_rollups(&self, id: u64, n: u64) {
        let mut segs = self.shared.segments.lock();
        if let Some(s) = segs.get_mut(&id) {
            s.rollup_holds = s.rollup_holds.saturating_sub(n);
        }
        self.shared.delete_if_done(segs, id);
    }

    /// This WAL directory's identity (random, kept in `wal.meta`).
    pub fn instance(&self) -> u64 {
        self.shared.instance
    }

    /// The oldest segment still present (`None` when there is none): rollup
    /// origins of older segments of this WAL are no longer needed.
    pub fn oldest_segment(&self) -> Option<u64> {
        let segs = self.shared.segments.lock();
        let listed = segs.keys().next().copied();
        // A segment being unlinked is still on disk (a crash now replays it).
        let unlinking = self.shared.unlinking.lock().iter().min().copied();
        listed.into_iter().chain(unlinking).min()
    }

    /// Why the last write failed for lack of space, while that lasts: until
    /// an append succeeds or [`Wal::check_space`] finds
    /// [`SPACE_RECOVERED_BYTES`] free.
    pub fn out_of_space(&self) -> Option<String> {
        self.shared.out_of_space.lock().clone()
    }

    /// True while appends are refused because the WAL holds `wal.max_bytes`:
    /// from the first refusal until an append succeeds again or the sink has
    /// brought the WAL under 90% of the limit.
    pub fn refusing_full(&self) -> bool {
        self.shared.refusing_full.load(Relaxed)
            && self.total_bytes().saturating_mul(10) >= self.shared.max_bytes.saturating_mul(9)
    }

    /// True while the WAL holds at least 3/4 of `wal.max_bytes` or refuses
    /// appends for being full: segments held only until their spans'
    /// rollups are written should then go at once (the pipeline writes
    /// unfinished minutes early), or it refuses requests the sink could take.
    pub fn nearly_full(&self) -> bool {
        self.refusing_full()
            || self.total_bytes().saturating_mul(4) >= self.shared.max_bytes.saturating_mul(3)
    }

    /// Whether appending a record of `len_hint` payload bytes (0 = not
    /// known) would certainly be refused because the WAL holds `max_bytes`:
    /// lets a receiver refuse before it reads and decodes a body the append
    /// would refuse anyway (on two cores, refused requests decoded in vain
    /// took CPU from the sink). While appends are refused for a full WAL
    /// (until one succeeds), a request of unknown size is taken to be as
    /// large as the last refused one. Errs on letting a request through:
    /// the append decides. A request refused here counts as a refused
    /// append: the WAL is then refusing for being full ([`Wal::refusing_full`],
    /// which `/readyz` reports) until an append succeeds.
    pub fn would_be_full(&self, len_hint: u64) -> bool {
        let refusing = self.shared.refusing_full.load(Relaxed);
        let len = if refusing {
            len_hint.max(self.shared.refused_len.load(Relaxed))
        } else {
            len_hint
        };
        let full = len > 0
            && self
                .total_bytes()
                .saturating_add(HEADER_LEN as u64)
                .saturating_add(len)
                > self.shared.max_bytes;
        if full && !refusing {
            self.shared.refused_len.store(len, Relaxed);
            self.shared.refusing_full.store(true, Relaxed);
        }
        full
    }

    /// Reads the free space on the WAL's file system into
    /// `ferrotrace_wal_disk_free_bytes`, and ends a lack of space once
    /// [`SPACE_RECOVERED_BYTES`] are free (the next append then creates a
    /// segment if there is none). Blocking (one `statvfs`).
    pub fn check_space(&self) {
        let free = match free_bytes(&self.shared.dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the WAL disk's free space");
                return;
            }
        };
        self.shared.metrics.wal_disk_free_bytes.store(free, Relaxed);
        let recovered = SPACE_RECOVERED_BYTES.saturating_add(self.shared.min_free_bytes);
        if free >= recovered && self.shared.out_of_space.lock().take().is_some() {
            tracing::info!(dir = %self.shared.dir.display(), free_bytes = free, "space is free again on the write-ahead log's disk; accepting appends");
        }
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The free-space reserve (`wal.min_free_bytes`, resolved).
    pub fn min_free_bytes(&self) -> u64 {
        self.shared.min_free_bytes
    }

    /// `wal.max_bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.shared.max_bytes
    }

    /// Bytes in all segment files.
    pub fn total_bytes(&self) -> u64 {
        self.shared.total_bytes.load(Relaxed)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.lock().len()
    }

    /// Stops the writer after it has written (and synced) everything queued.
    /// Appends after this fail with [`WalError::Closed`].
    pub fn close(&self) {
        // Dropping our sender is not enough (clones exist); a zero-span marker would be
        // written, so instead the writer exits when it sees the sentinel below.
        let (reply, _rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(AppendReq {
            format: RecordFormat::OtlpProto,
            spans: u32::MAX,
            payload: Bytes::new(),
            reply,
            queued_at: Instant::now(),
        });
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
            // Nothing is written any more: seal every segment, so those whose
            // spans were all committed are deleted now rather than replayed.
            let mut segs = self.shared.segments.lock();
            let ids: Vec<u64> = segs.keys().copied().collect();
            let mut taken = Vec::new();
            for id in ids {
                if let Some(s) = segs.get_mut(&id) {
                    s.sealed |= !s.replaying;
                }
                taken.push(self.shared.take_if_done(&mut segs, id));
            }
            drop(segs);
            for t in taken {
                self.shared.remove_file(t);
            }
        }
    }
}
