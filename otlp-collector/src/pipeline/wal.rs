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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use crate::log_limit::LogLimiter;
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

fn is_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
}

/// Bytes available to this process on the file system holding `dir`.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; statvfs fills
    // the struct when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u64 here, u32 on some).
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Size of the file system holding `dir`.
#[cfg(unix)]
pub fn fs_size_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: as in `free_bytes`.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}

/// Size of the file system holding `dir` (not known here).
#[cfg(not(unix))]
pub fn fs_size_bytes(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The free-space reserve for `wal.min_free_bytes` (0: a quarter of the file
/// system, at most 256 MiB; 0 too when the size cannot be read).
pub fn free_space_reserve(configured: u64, fs_size: Option<u64>) -> u64 {
    if configured > 0 {
        return configured;
    }
    fs_size.map_or(0, |size| (size / 4).min(256 << 20))
}

/// Bytes available on the file system holding `dir` (not known here).
#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
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

/// Name of the file holding the WAL's identity and next segment id.
const META_FILE: &str = "wal.meta";

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

    /// Deletes a segment if sealed and empty; called with the lock held.
    fn maybe_delete(&self, segs: &mut BTreeMap<u64, SegInfo>, id: u64) {
        let done = matches!(segs.get(&id), Some(s) if s.sealed && s.outstanding == 0 && s.rollup_holds == 0);
        if !done {
            return;
        }
        if let Some(info) = segs.remove(&id) {
            match std::fs::remove_file(self.path(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Keep accounting consistent; the file is retried at next start.
                    tracing::warn!(segment = id, error = %e, "cannot delete WAL segment");
                }
            }
            self.total_bytes.fetch_sub(info.bytes, Relaxed);
            self.metrics.wal_segments_deleted.fetch_add(1, Relaxed);
            self.metrics
                .wal_bytes
                .store(self.total_bytes.load(Relaxed), Relaxed);
            self.metrics.wal_segments.store(segs.len() as u64, Relaxed);
        }
    }
}

struct AppendReq {
    format: RecordFormat,
    spans: u32,
    payload: Bytes,
    reply: tokio::sync::oneshot::Sender<Result<WalPos, WalError>>,
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

/// A fresh random WAL identity (never 0), from the standard library's
/// randomly keyed hasher mixed with the time and the process id.
fn random_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// `wal.meta`: identity and the next segment id never used yet.
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    instance: u64,
    next_segment: u64,
}

impl Meta {
    fn parse(text: &str) -> Option<Meta> {
        let mut lines = text.lines();
        if lines.next()? != "ferrotrace-wal 1" {
            return None;
        }
        let mut field = |name: &str| -> Option<u64> {
            let l = lines.next()?;
            let v = l.strip_prefix(name)?.strip_prefix(' ')?;
            if name == "instance" {
                u64::from_str_radix(v, 16).ok()
            } else {
                v.parse().ok()
            }
        };
        let instance = field("instance")?;
        let next_segment = field("next_segment")?;
        Some(Meta {
            instance,
            next_segment,
        })
    }

    fn render(&self) -> String {
        format!(
            "ferrotrace-wal 1\ninstance {:016x}\nnext_segment {}\n",
            self.instance, self.next_segment
        )
    }

    /// Writes the file atomically (temporary file, fsync, rename, directory fsync).
    fn store(&self, dir: &Path) -> Result<(), WalError> {
        let tmp = dir.join("wal.meta.tmp");
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(self.render().as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written {
            // A partial temporary file (a full disk) is of no use to anyone.
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        let path = dir.join(META_FILE);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
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
        match self.tx.try_send(AppendReq {
            format,
            spans,
            payload,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(WalError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(WalError::Closed),
        }
        rx.await.unwrap_or(Err(WalError::Closed))
    }

    /// Reads every intact record of a segment. A torn or corrupt tail (a crash
    /// mid-write) ends the segment; it is counted, not an error.
    pub fn read_segment(&self, id: u64) -> Result<Vec<Record>, WalError> {
        let path = self.shared.path(id);
        let data = Bytes::from(std::fs::read(&path).map_err(io_err(&path))?);
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos + HEADER_LEN <= data.len() {
            let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                as usize;
            let crc =
                u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
            let body_start = pos + 8;
            let end = pos + HEADER_LEN + len;
            if end > data.len() || crc32fast::hash(&data[body_start..end]) != crc {
                break;
            }
            let Some(format) = RecordFormat::from_u8(data[pos + 8]) else {
                break;
            };
            let spans = u32::from_le_bytes([
                data[pos + 9],
                data[pos + 10],
                data[pos + 11],
                data[pos + 12],
            ]);
            out.push(Record {
                format,
                spans,
                payload: data.slice(pos + HEADER_LEN..end),
            });
            pos = end;
        }
        if pos != data.len() {
            self.shared
                .metrics
                .wal_corrupt_records
                .fetch_add(1, Relaxed);
            tracing::warn!(
                segment = id,
                offset = pos,
                len = data.len(),
                "WAL segment has a torn or corrupt tail; ignoring the rest"
            );
        }
        Ok(out)
    }

    /// Reads back the one record an append acknowledged at `pos` (for spans
    /// kept in the WAL only, see `pipeline::wal_only`). Reads just that
    /// record, so memory is bounded by its size; the segment may still be
    /// being written. A record that is not intact there is an error (the
    /// caller leaves its spans in the WAL for the next start's replay).
    pub fn read_record_at(&self, pos: WalPos) -> Result<Record, WalError> {
        use std::os::unix::fs::FileExt;
        let path = self.shared.path(pos.segment);
        let corrupt = |what: &str| WalError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no intact record at offset {}: {what}", pos.offset),
            ),
        };
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, pos.offset)
            .map_err(io_err(&path))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let format = RecordFormat::from_u8(header[8]).ok_or_else(|| corrupt("format"))?;
        let spans = u32::from_le_bytes([header[9], header[10], header[11], header[12]]);
        // A record never exceeds one group of appends (or the file).
        let file_len = file.metadata().map_err(io_err(&path))?.len();
        if pos.offset + (HEADER_LEN + len) as u64 > file_len {
            return Err(corrupt("length beyond the end of the segment"));
        }
        let mut payload = vec![0u8; len];
        file.read_exact_at(&mut payload, pos.offset + HEADER_LEN as u64)
            .map_err(io_err(&path))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..HEADER_LEN]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            return Err(corrupt("checksum"));
        }
        Ok(Record {
            format,
            spans,
            payload: Bytes::from(payload),
        })
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
        self.shared.maybe_delete(&mut segs, id);
    }

    /// Releases `n` spans of segment `id` (committed by the sink or dropped by sampling).
    pub fn release(&self, id: u64, n: u64) {
        let mut segs = self.shared.segments.lock();
        if let Some(s) = segs.get_mut(&id) {
            s.outstanding = s.outstanding.saturating_sub(n);
        }
        self.shared.maybe_delete(&mut segs, id);
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
        self.shared.maybe_delete(&mut segs, id);
    }

    /// This WAL directory's identity (random, kept in `wal.meta`).
    pub fn instance(&self) -> u64 {
        self.shared.instance
    }

    /// The oldest segment still present (`None` when there is none): rollup
    /// origins of older segments of this WAL are no longer needed.
    pub fn oldest_segment(&self) -> Option<u64> {
        self.shared.segments.lock().keys().next().copied()
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
        });
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
            // Nothing is written any more: seal every segment, so those whose
            // spans were all committed are deleted now rather than replayed.
            let mut segs = self.shared.segments.lock();
            let ids: Vec<u64> = segs.keys().copied().collect();
            for id in ids {
                if let Some(s) = segs.get_mut(&id) {
                    s.sealed |= !s.replaying;
                }
                self.shared.maybe_delete(&mut segs, id);
            }
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    policy: FsyncPolicy,
    interval: Duration,
    segment_bytes: u64,
    /// The segment being written (meaningless while `file` is `None`).
    current: u64,
    /// Its file; `None` when no segment could be created yet (a full disk
    /// at open): the next group creates one.
    file: Option<File>,
    /// Id of the next segment to create; ids are never reused, also when
    /// creating one fails.
    next_id: u64,
    file_len: u64,
    /// Spans of the records written to the current segment so far.
    spans_written: u64,
    dirty: bool,
    /// A write or fsync on the current segment failed: its tail is in an
    /// unknown state (a torn record would hide every later record from
    /// replay, and after a failed fsync the kernel may have dropped the dirty
    /// pages), so nothing more is appended to it; the next group starts a new
    /// segment.
    poisoned: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    /// Log limits for the errors a persisting fault (a full disk) repeats
    /// on every group of appends; every occurrence is still counted in
    /// `wal_io_errors`.
    rotate_log: LogLimiter,
    write_log: LogLimiter,
    fsync_log: LogLimiter,
}

impl Writer {
    fn new(shared: Arc<Shared>, cfg: &WalConfig, first: u64) -> Result<Writer, WalError> {
        let (file, len) = match Self::create(&shared, first) {
            Ok((f, len)) => (Some(f), len),
            // A full disk must not stop the start: replay and queries need
            // no new segment, and appends are refused until one can be made.
            Err(e) if e.is_out_of_space() => {
                shared.note_error(&e);
                (None, 0)
            }
            Err(e) => return Err(e),
        };
        Ok(Writer {
            shared,
            policy: cfg.fsync,
            interval: Duration::from_millis(cfg.fsync_interval_ms.max(1)),
            segment_bytes: cfg.segment_bytes,
            current: first,
            file,
            next_id: first + 1,
            file_len: len,
            spans_written: 0,
            dirty: false,
            poisoned: false,
            last_sync: Instant::now(),
            buf: Vec::with_capacity(1024 * 1024),
            rotate_log: LogLimiter::default(),
            write_log: LogLimiter::default(),
            fsync_log: LogLimiter::default(),
        })
    }

    fn create(shared: &Shared, id: u64) -> Result<(File, u64), WalError> {
        // Record the id as used before the file exists, so it is never reused
        // even if this segment is deleted before the next start.
        Meta {
            instance: shared.instance,
            next_segment: id + 1,
        }
        .store(&shared.dir)?;
        let path = shared.path(id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // Make the new directory entry durable so a crash cannot lose a synced segment.
        if let Ok(d) = File::open(&shared.dir) {
            let _ = d.sync_all();
        }
        let mut segs = shared.segments.lock();
        segs.insert(
            id,
            SegInfo {
                outstanding: 0,
                rollup_holds: 0,
                sealed: false,
                replaying: false,
                bytes: 0,
            },
        );
        shared
            .metrics
            .wal_segments
            .store(segs.len() as u64, Relaxed);
        Ok((file, 0))
    }

    /// Syncs the current segment if it has unsynced writes. A failure is
    /// counted and logged here; the caller decides what it means for the
    /// records involved.
    fn sync(&mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        if self.dirty {
            result = self.fsync_current();
            self.shared.metrics.wal_fsyncs.fetch_add(1, Relaxed);
            self.dirty = false;
            if let Err(e) = &result {
                self.shared.metrics.wal_io_errors.add("fsync", 1);
                self.shared
                    .note_error(&io_err(&self.shared.path(self.current))(copy_io(e)));
                self.poisoned = true;
                if let Some(suppressed) = self.fsync_log.admit_now() {
                    tracing::error!(
                        error = %e,
                        path = %self.shared.path(self.current).display(),
                        suppressed,
                        "WAL fsync failed; records not known to be on disk are refused and the segment is closed"
                    );
                }
            }
        }
        self.last_sync = Instant::now();
        result
    }

    fn fsync_current(&self) -> std::io::Result<()> {
        #[cfg(test)]
        {
            let f = &self.shared.fail_fsyncs;
            if f.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(std::io::Error::other("injected fsync failure"));
            }
        }
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Starts a new segment; the current one (if any) is sealed.
    fn rotate(&mut self) -> Result<(), WalError> {
        if self.file.is_some() && !self.poisoned {
            // Under `always` everything written is already synced; under
            // `interval` a failure here concerns records already acknowledged
            // by policy, so it can only be counted and logged (in `sync`).
            let _ = self.sync();
        }
        let id = self.next_id;
        // Taken even if creating it fails: wal.meta may already name it.
        self.next_id += 1;
        let (file, len) = Self::create(&self.shared, id).inspect_err(|e| {
            self.shared.note_error(e);
        })?;
        let old = self.file.replace(file).map(|_| self.current);
        self.file_len = len;
        self.spans_written = 0;
        self.current = id;
        self.poisoned = false;
        self.dirty = false;
        if let Some(old) = old {
            let mut segs = self.shared.segments.lock();
            if let Some(s) = segs.get_mut(&old) {
                s.sealed = true;
            }
            self.shared.maybe_delete(&mut segs, old);
        }
        Ok(())
    }

    /// Accounts for whatever a failed write left in the current segment, so
    /// the size bookkeeping matches the file.
    fn account_partial_write(&mut self) {
        let actual = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(self.file_len, |m| m.len());
        let grown = actual.saturating_sub(self.file_len);
        self.file_len = actual;
        if grown > 0 {
            if let Some(s) = self.shared.segments.lock().get_mut(&self.current) {
                s.bytes += grown;
            }
            let total = self.shared.total_bytes.fetch_add(grown, Relaxed) + grown;
            self.shared.metrics.wal_bytes.store(total, Relaxed);
        }
    }

    fn run(&mut self, rx: Receiver<AppendReq>) {
        let mut group: Vec<AppendReq> = Vec::with_capacity(256);
        loop {
            let first = if self.policy == FsyncPolicy::Interval && self.dirty {
                match rx.recv_timeout(self.interval.saturating_sub(self.last_sync.elapsed())) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        // Records synced here were acknowledged under the
                        // `interval` policy; a failure is counted and logged.
                        let _ = self.sync();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            let mut stop = first.spans == u32::MAX;
            let mut group_bytes = first.payload.len();
            if !stop {
                group.push(first);
            }
            while !stop && group_bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) if r.spans == u32::MAX => stop = true,
                    Ok(r) => {
                        group_bytes += r.payload.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.write_group(&mut group);
            }
            if stop {
                break;
            }
        }
        let _ = self.sync();
    }

    /// An out-of-space error when less than the sink's reserve is free
    /// (one `statvfs` per group). The group's own size is not added: a group
    /// may take the free space a little below the reserve, which is what
    /// makes the store evict (`storage::budget` acts below the reserve).
    /// Refusing already when `free < reserve + group` left a band where the
    /// WAL refused every group and the store, not growing, never evicted:
    /// refusals for good (found by `tests/size_retention.rs`).
    fn below_reserve(&self) -> Option<std::io::Error> {
        let reserve = self.shared.min_free_bytes;
        if reserve == 0 {
            return None;
        }
        let free = free_bytes(&self.shared.dir).ok()?;
        (free < reserve).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "No space left on device for the write-ahead log: {free} bytes free, \
                     {reserve} kept for the sink (wal.min_free_bytes)"
                ),
            )
        })
    }

    fn write_group(&mut self, group: &mut Vec<AppendReq>) {
        if self.file.is_none() || self.poisoned || self.file_len >= self.segment_bytes {
            if let Err(e) = self.rotate() {
                self.shared.metrics.wal_io_errors.add("rotate", 1);
                if let Some(suppressed) = self.rotate_log.admit_now() {
                    tracing::error!(
                        error = %e,
                        suppressed,
                        "cannot start a new WAL segment; refusing the appends (repeats are logged at most once per {}s, `suppressed` counts those not logged)",
                        self.rotate_log.interval().as_secs()
                    );
                }
                for r in group.drain(..) {
                    let _ = r.reply.send(Err(copy_err(&e)));
                }
                return;
            }
        }
        self.buf.clear();
        let mut accepted: Vec<(AppendReq, u64, u64)> = Vec::with_capacity(group.len());
        let mut spans_total = 0u64;
        for r in group.drain(..) {
            let rec_len = (HEADER_LEN + r.payload.len()) as u64;
            let total = self.shared.total_bytes.load(Relaxed) + self.buf.len() as u64;
            if total + rec_len > self.shared.max_bytes {
                self.shared
                    .refused_len
                    .store(r.payload.len() as u64, Relaxed);
                self.shared.refusing_full.store(true, Relaxed);
                let _ = r.reply.send(Err(WalError::Full(self.shared.max_bytes)));
                continue;
            }
            let mut hasher = crc32fast::Hasher::new();
            let fmt = [r.format as u8];
            let spans = r.spans.to_le_bytes();
            hasher.update(&fmt);
            hasher.update(&spans);
            hasher.update(&r.payload);
            let offset = self.file_len + self.buf.len() as u64;
            self.buf
                .extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&hasher.finalize().to_le_bytes());
            self.buf.extend_from_slice(&fmt);
            self.buf.extend_from_slice(&spans);
            self.buf.extend_from_slice(&r.payload);
            let first_span = self.spans_written + spans_total;
            spans_total += r.spans as u64;
            accepted.push((r, first_span, offset));
        }
        if accepted.is_empty() {
            return;
        }
        let path = self.shared.path(self.current);
        let refuse = |accepted: Vec<(AppendReq, u64, u64)>, e: &std::io::Error| {
            for (r, _, _) in accepted {
                let _ = r.reply.send(Err(WalError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }));
            }
        };
        if let Some(e) = self.below_reserve() {
            self.shared
                .note_error(&io_err(&path)(std::io::Error::new(e.kind(), e.to_string())));
            refuse(accepted, &e);
            return;
        }
        let Some(file) = self.file.as_mut() else {
            // Not reached: a group only gets here after a segment exists.
            refuse(
                accepted,
                &std::io::Error::other("no WAL segment to write to"),
            );
            return;
        };
        if let Err(e) = file.write_all(&self.buf) {
            self.shared.metrics.wal_io_errors.add("write", 1);
            self.shared.note_error(&io_err(&path)(copy_io(&e)));
            if let Some(suppressed) = self.write_log.admit_now() {
                tracing::error!(error = %e, path = %path.display(), suppressed, "WAL write failed; refusing the appends and closing the segment");
            }
            self.poisoned = true;
            self.account_partial_write();
            refuse(accepted, &e);
            return;
        }
        let n = self.buf.len() as u64;
        self.file_len += n;
        // The records are in the file now (even if their fsync fails below,
        // replay will read them), so later ordinals come after theirs.
        self.spans_written += spans_total;
        self.dirty = true;
        {
            let mut segs = self.shared.segments.lock();
            if let Some(s) = segs.get_mut(&self.current) {
                s.bytes += n;
            }
        }
        let total = self.shared.total_bytes.fetch_add(n, Relaxed) + n;
        self.shared.metrics.wal_bytes.store(total, Relaxed);
        let synced = match self.policy {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval if self.last_sync.elapsed() >= self.interval => {
                // The records of earlier groups were acknowledged by policy
                // before this sync; this group's are refused if it fails.
                self.sync()
            }
            _ => Ok(()),
        };
        if let Err(e) = synced {
            // Acknowledged means durable: the records may still be in the file
            // (a later replay stores them; writes are idempotent), but the
            // client is told to retry, and the spans do not enter the pipeline.
            refuse(accepted, &e);
            return;
        }
        // Written and durable: whatever kept appends out is over.
        if self.shared.out_of_space.lock().take().is_some() {
            tracing::info!(dir = %self.shared.dir.display(), "the write-ahead log writes again");
        }
        self.shared.refusing_full.store(false, Relaxed);
        // Only acknowledged spans are outstanding: a refused record never
        // reaches the queue, so it must not keep the segment alive.
        if let Some(s) = self.shared.segments.lock().get_mut(&self.current) {
            s.outstanding += spans_total;
        }
        self.shared
            .metrics
            .wal_appends
            .fetch_add(accepted.len() as u64, Relaxed);
        for (r, first_span, offset) in accepted {
            let _ = r.reply.send(Ok(WalPos {
                segment: self.current,
                first_span,
                offset,
            }));
        }
    }
}

fn copy_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

fn copy_err(e: &WalError) -> WalError {
    match e {
        WalError::Full(n) => WalError::Full(*n),
        WalError::Busy => WalError::Busy,
        WalError::Closed => WalError::Closed,
        WalError::Io { path, source } => WalError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_space_reserve_defaults_to_a_quarter_of_the_disk_at_most_256_mib() {
        assert_eq!(free_space_reserve(0, Some(64 << 20)), 16 << 20);
        assert_eq!(free_space_reserve(0, Some(100 << 30)), 256 << 20);
        assert_eq!(free_space_reserve(0, None), 0);
        assert_eq!(free_space_reserve(5, Some(64 << 20)), 5);
    }

    #[tokio::test]
    async fn appends_are_refused_as_out_of_space_below_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let free = free_bytes(dir.path()).unwrap();
        // A reserve larger than what is free: every append is refused.
        let cfg = WalConfig {
            min_free_bytes: free.saturating_add(1 << 30),
            ..cfg()
        };
        let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
        let err = wal
            .append(RecordFormat::OtlpProto, 1, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(err.is_out_of_space(), "{err}");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert!(wal.out_of_space().is_some());
    }

    fn cfg() -> WalConfig {
        WalConfig {
            segment_bytes: 200,
            max_bytes: 2000,
            ..WalConfig::default()
        }
    }

    #[tokio::test]
    async fn append_replay_release_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let (wal, replay) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
        assert!(replay.is_empty());
        let mut segs = Vec::new();
        for i in 0..6u8 {
            let s = wal
                .append(RecordFormat::OtlpJson, 2, Bytes::from(vec![i; 100]))
                .await
                .unwrap();
            assert_eq!(s.first_span, (i as u64 % 2) * 2);
            segs.push(s.segment);
        }
        // 113-byte records, 200-byte segments: rotation after every second record.
        assert_eq!(segs, vec![1, 1, 2, 2, 3, 3]);
        wal.close();
        // Reopen: three segments to replay, new writes go to segment 4.
        let (wal, replay) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
        assert_eq!(replay, vec![1, 2, 3]);
        let recs = wal.read_segment(2).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].payload.as_ref(), &[2u8; 100][..]);
        assert_eq!(recs[1].spans, 2);
        wal.add_outstanding(2, 4);
        wal.finish_replay(2);
        assert!(segment_path(dir.path(), 2).exists());
        wal.release(2, 4);
        assert!(!segment_path(dir.path(), 2).exists());
        // Segment with nothing outstanding is deleted at finish_replay.
        wal.finish_replay(1);
        assert!(!segment_path(dir.path(), 1).exists());
        wal.close();
    }

    #[tokio::test]
    async fn rollup_holds_keep_segments_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
        let instance = wal.instance();
        assert_ne!(instance, 0);
        let mut pos = Vec::new();
        for i in 0..3u8 {
            pos.push(
                wal.append(RecordFormat::OtlpJson, 2, Bytes::from(vec![i; 100]))
                    .await
                    .unwrap(),
            );
        }
        // Segment 1 is sealed (rotated); its spans are released but the
        // rollups of one of them are still only in memory.
        wal.hold_rollups(1, 2);
        wal.release(1, 4);
        assert!(segment_path(dir.path(), 1).exists());
        wal.release_rollups(1, 1);
        assert!(segment_path(dir.path(), 1).exists());
        wal.release_rollups(1, 1);
        assert!(!segment_path(dir.path(), 1).exists());
        assert_eq!(wal.oldest_segment(), Some(2));
        // Everything committed: a clean close deletes every segment.
        wal.release(2, 2);
        wal.close();
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
                .count(),
            0
        );
        // Reopened: same identity, and segment ids continue after the highest ever used.
        let (wal, replay) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
        assert!(replay.is_empty());
        assert_eq!(wal.instance(), instance);
        let p = wal
            .append(RecordFormat::OtlpJson, 1, Bytes::from(vec![9u8; 10]))
            .await
            .unwrap();
        assert_eq!(
            p,
            WalPos {
                segment: 3,
                first_span: 0,
                offset: 0
            }
        );
        wal.close();
        // A lost meta file means a new identity (origins stored under the old
        // one no longer match), never a reused (identity, segment) pair.
        std::fs::remove_file(dir.path().join(META_FILE)).unwrap();
        let (wal, replay) = Wal::open(dir.path(), &cfg(), m).unwrap();
        assert_ne!(wal.instance(), instance);
        assert_eq!(replay, vec![3]);
        wal.close();
    }

    #[tokio::test]
    async fn full_wal_refuses_and_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
        let mut full = false;
        for _ in 0..40 {
            match wal
                .append(RecordFormat::ZipkinJson, 1, Bytes::from(vec![7u8; 100]))
                .await
            {
                Ok(_) => {}
                Err(WalError::Full(_)) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(full);
        assert!(wal.total_bytes() <= 2000);
        wal.close();
        // Tear the last record of segment 1.
        let p = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 5).unwrap();
        let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
        assert_eq!(wal.read_segment(1).unwrap().len(), 1);
        assert_eq!(m.wal_corrupt_records.load(Relaxed), 1);
        wal.close();
    }

    #[tokio::test]
    async fn lack_of_space_and_a_full_wal_are_remembered_until_an_append_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        // One record per segment: every append opens the next segment file.
        let cfg = WalConfig {
            segment_bytes: 1,
            max_bytes: 2000,
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
        let rec = || Bytes::from(vec![7u8; 100]);
        assert_eq!(
            wal.append(RecordFormat::OtlpJson, 1, rec())
                .await
                .unwrap()
                .segment,
            1
        );
        assert_eq!(wal.out_of_space(), None);
        // Segment 2 is /dev/full: its write fails with ENOSPC, as on a full disk.
        std::os::unix::fs::symlink("/dev/full", segment_path(dir.path(), 2)).unwrap();
        let err = wal
            .append(RecordFormat::OtlpJson, 1, rec())
            .await
            .unwrap_err();
        assert!(err.is_out_of_space(), "{err}");
        let why = wal.out_of_space().expect("remembered");
        assert!(why.contains("No space left on device"), "{why}");
        // The next append goes to a fresh segment and ends it.
        assert_eq!(
            wal.append(RecordFormat::OtlpJson, 1, rec())
                .await
                .unwrap()
                .segment,
            3
        );
        assert_eq!(wal.out_of_space(), None);

        // Nothing refused yet: an unknown size is let through, a body
        // larger than the whole WAL is not, and that refusal makes the WAL
        // refuse for being full (reported by /readyz) until an append
        // succeeds.
        assert!(!wal.would_be_full(0));
        assert!(wal.would_be_full(5000));
        assert!(wal.shared.refusing_full.load(Relaxed));
        assert!(wal.would_be_full(0), "as large as the refused one");
        // (An append that succeeds ends it; shown below.)
        wal.shared.refusing_full.store(false, Relaxed);
        assert!(!wal.would_be_full(0));
        // Full: 113-byte records, 2000 bytes: the 18th is refused at 1921 bytes.
        let mut full = false;
        let mut segs = vec![1, 3];
        for _ in 0..40 {
            match wal.append(RecordFormat::OtlpJson, 1, rec()).await {
                Ok(p) => segs.push(p.segment),
                Err(WalError::Full(_)) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(full);
        assert!(wal.refusing_full(), "{} bytes", wal.total_bytes());
        // Before reading a body: a record of unknown size is taken to be as
        // large as the refused one, and would not fit; a known size is a
        // lower bound and never lowers that.
        assert!(wal.would_be_full(0));
        assert!(wal.would_be_full(1));
        assert!(wal.would_be_full(1000));
        // The sink commits one record: still above 90%, still refusing.
        wal.release(segs.remove(0), 1);
        assert!(wal.total_bytes() >= 1800, "{}", wal.total_bytes());
        assert!(wal.refusing_full());
        // Under 90% the WAL no longer counts as full, without any append.
        wal.release(segs.remove(0), 1);
        assert!(!wal.refusing_full(), "{} bytes", wal.total_bytes());
        assert!(
            !wal.would_be_full(0),
            "room again for a record like the refused one"
        );
        // And a successful append ends it outright.
        wal.shared.refusing_full.store(true, Relaxed);
        wal.append(RecordFormat::OtlpJson, 1, rec()).await.unwrap();
        assert!(!wal.shared.refusing_full.load(Relaxed));
        assert_eq!(m.wal_max_bytes.load(Relaxed), 2000);
        wal.close();
    }

    #[tokio::test]
    async fn read_record_at_finds_each_acknowledged_record_and_rejects_a_wrong_offset() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
        let mut written = Vec::new();
        for i in 0..5u8 {
            let payload = Bytes::from(vec![i; 10 + usize::from(i) * 7]);
            let p = wal
                .append(RecordFormat::ZipkinJson, u32::from(i) + 1, payload.clone())
                .await
                .unwrap();
            written.push((p, payload));
        }
        for (p, payload) in &written {
            let r = wal.read_record_at(*p).unwrap();
            assert_eq!(r.payload, *payload);
            assert_eq!(r.format, RecordFormat::ZipkinJson);
            assert_eq!(u64::from(r.spans), u64::from(payload[0]) + 1);
        }
        // Offsets agree with what replay reads.
        let seg = written[0].0.segment;
        let recs = wal.read_segment(seg).unwrap();
        let mut off = 0;
        for (r, (p, _)) in recs
            .iter()
            .zip(written.iter().filter(|(p, _)| p.segment == seg))
        {
            assert_eq!(p.offset, off);
            off += r.encoded_len();
        }
        let bad = WalPos {
            offset: written[1].0.offset + 1,
            ..written[1].0
        };
        assert!(wal.read_record_at(bad).is_err());
        assert_eq!(m.wal_corrupt_records.load(Relaxed), 0);
        wal.close();
    }

    #[tokio::test]
    async fn failed_fsync_refuses_the_append_and_closes_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let cfg = WalConfig {
            segment_bytes: 10_000,
            max_bytes: 100_000,
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
        let ok = wal
            .append(RecordFormat::OtlpProto, 3, Bytes::from(vec![1u8; 50]))
            .await
            .unwrap();
        assert_eq!(ok.segment, 1);
        wal.shared.fail_fsyncs.store(1, Relaxed);
        let err = wal
            .append(RecordFormat::OtlpProto, 5, Bytes::from(vec![2u8; 50]))
            .await
            .unwrap_err();
        assert!(matches!(err, WalError::Io { .. }), "{err}");
        assert!(err.to_string().contains("injected fsync failure"), "{err}");
        assert_eq!(m.wal_io_errors.get("fsync"), 1);
        // The next append goes to a fresh segment, and succeeds.
        let next = wal
            .append(RecordFormat::OtlpProto, 2, Bytes::from(vec![3u8; 50]))
            .await
            .unwrap();
        assert_eq!(next.segment, 2);
        assert_eq!(m.wal_appends.load(Relaxed), 2);
        // Segment 1 is sealed and only the acknowledged record's 3 spans are
        // outstanding: the refused record does not keep it alive.
        wal.release(1, 3);
        assert!(!segment_path(dir.path(), 1).exists());
        wal.close();
    }
}
