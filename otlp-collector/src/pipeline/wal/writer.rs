//! The writer thread: groups waiting appends, writes each group with one
//! `pwritev` and syncs it per the fsync policy (group commit), rotates segments.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::spare::{Preparer, Spare};
use super::vectored::write_all_vectored_at;
use super::{
    io_err, AppendReq, FsyncPolicy, Meta, SegInfo, Shared, WalConfig, WalError, WalPos, HEADER_LEN,
    MAX_GROUP_BYTES,
};
use crate::disk::free_bytes;
use crate::log_limit::LogLimiter;

pub(super) struct Writer {
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
    /// Zero bytes written ahead into the current segment (a prepared spare):
    /// records up to here overwrite them, changing no file size.
    zeroed: u64,
    /// The next segment, being prepared or ready (`wal.preallocate`).
    spare: Option<Preparer>,
    /// Spans of the records written to the current segment so far.
    spans_written: u64,
    /// A sealed segment taken out of the table at a rotation, its file
    /// deleted once the group that rotated has been answered (unlinking it
    /// is file-system journal work no acknowledgement should wait for).
    deferred_delete: Option<(u64, std::path::PathBuf)>,
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
    pub(super) fn new(
        shared: Arc<Shared>,
        cfg: &WalConfig,
        first: u64,
    ) -> Result<Writer, WalError> {
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
        let spare = if cfg.preallocate {
            Some(
                Preparer::start(shared.clone(), cfg.segment_bytes, Self::create_file)
                    .map_err(io_err(&shared.dir))?,
            )
        } else {
            None
        };
        let mut w = Writer {
            shared,
            policy: cfg.fsync,
            interval: Duration::from_millis(cfg.fsync_interval_ms.max(1)),
            segment_bytes: cfg.segment_bytes,
            current: first,
            file,
            next_id: first + 1,
            file_len: len,
            zeroed: 0,
            spare,
            spans_written: 0,
            deferred_delete: None,
            dirty: false,
            poisoned: false,
            last_sync: Instant::now(),
            // Record headers of one group (the payloads are not copied).
            buf: Vec::with_capacity(256 * HEADER_LEN),
            rotate_log: LogLimiter::default(),
            write_log: LogLimiter::default(),
            fsync_log: LogLimiter::default(),
        };
        if w.file.is_some() {
            w.request_spare();
        }
        Ok(w)
    }

    /// Asks the preparer for the next segment id, if there is a preparer
    /// and nothing is asked for yet (the id is taken now: ids stay in order).
    fn request_spare(&mut self) {
        let id = self.next_id;
        if let Some(p) = self.spare.as_mut() {
            if !p.pending() && p.request(id) {
                self.next_id += 1;
            }
        }
    }

    /// Creates segment `id` and records it in the segment table.
    fn create(shared: &Shared, id: u64) -> Result<(File, u64), WalError> {
        let made = Self::create_file(shared, id)?;
        Self::register(shared, id);
        Ok(made)
    }

    /// Creates segment `id`'s file (empty), its id recorded in `wal.meta`
    /// first; not yet in the segment table (a spare is entered when used).
    fn create_file(shared: &Shared, id: u64) -> Result<(File, u64), WalError> {
        // Record the id as used before the file exists, so it is never reused
        // even if this segment is deleted before the next start.
        Meta {
            instance: shared.instance,
            next_segment: id + 1,
        }
        .store(&shared.dir)?;
        let path = shared.path(id);
        // Written at explicit offsets (not O_APPEND: a prepared spare is
        // overwritten from the start).
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // Make the new directory entry durable so a crash cannot lose a synced segment.
        if let Ok(d) = File::open(&shared.dir) {
            let _ = d.sync_all();
        }
        Ok((file, 0))
    }

    /// Enters segment `id` in the segment table, empty.
    fn register(shared: &Shared, id: u64) {
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
        let t = Instant::now();
        let r = self.fsync_current_untimed();
        self.shared.metrics.wal_fsync_latency.observe(t.elapsed());
        r
    }

    fn fsync_current_untimed(&self) -> std::io::Result<()> {
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
        let (id, file, zeroed) = match self.take_spare() {
            Some(s) => (s.id, s.file, s.zeroed),
            None => {
                let id = self.next_id;
                // Taken even if creating it fails: wal.meta may already name it.
                self.next_id += 1;
                self.shared
                    .metrics
                    .wal_rotations_unprepared
                    .fetch_add(1, Relaxed);
                let (file, _) = Self::create(&self.shared, id).inspect_err(|e| {
                    self.shared.note_error(e);
                })?;
                (id, file, 0)
            }
        };
        let old = self.file.replace(file).map(|_| self.current);
        self.file_len = 0;
        self.zeroed = zeroed;
        self.spans_written = 0;
        self.current = id;
        self.poisoned = false;
        self.dirty = false;
        if let Some(old) = old {
            let mut segs = self.shared.segments.lock();
            if let Some(s) = segs.get_mut(&old) {
                s.sealed = true;
            }
            if let Some(taken) = self.shared.take_if_done(&mut segs, old) {
                self.deferred_delete = Some(taken);
            }
        }
        self.request_spare();
        Ok(())
    }

    /// The prepared spare, entered in the segment table, waiting for it if
    /// it is still being prepared; `None` without one (or if preparing it
    /// failed: the caller then creates a segment itself, with a new id).
    fn take_spare(&mut self) -> Option<Spare> {
        let (id, made) = self.spare.as_mut()?.take()?;
        match made {
            Ok(s) => {
                Self::register(&self.shared, s.id);
                Some(s)
            }
            Err(e) => {
                tracing::debug!(segment = id, error = %e, "the next WAL segment could not be prepared; creating it now");
                None
            }
        }
    }

    /// Stops the preparer and deletes an unused spare (it holds no record).
    fn drop_spare(&mut self) {
        if let Some(mut p) = self.spare.take() {
            if let Some((id, Ok(_))) = p.stop() {
                let _ = std::fs::remove_file(self.shared.path(id));
            }
        }
    }

    /// Accounts for whatever a failed write left in the current segment, so
    /// the size bookkeeping matches the file.
    fn account_partial_write(&mut self, attempted: u64) {
        let actual = if self.file_len < self.zeroed {
            // Inside zero-filled space the file's size says nothing: count
            // the whole attempt (the segment is closed after this anyway).
            self.file_len + attempted
        } else {
            self.file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(self.file_len, |m| m.len())
        };
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

    pub(super) fn run(&mut self, rx: Receiver<AppendReq>) {
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
                // After the group's answers: see `deferred_delete`.
                self.shared.remove_file(self.deferred_delete.take());
            }
            if stop {
                break;
            }
        }
        let _ = self.sync();
        self.drop_spare();
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
            let t = Instant::now();
            let rotated = self.rotate();
            self.shared.metrics.wal_rotate_latency.observe(t.elapsed());
            if let Err(e) = rotated {
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
        let started = Instant::now();
        for r in group.iter() {
            self.shared
                .metrics
                .wal_group_wait
                .observe(started.saturating_duration_since(r.queued_at));
        }
        // Only the records' headers are built here; the payloads are written
        // from the requests' own buffers (`write_all_vectored_at`).
        self.buf.clear();
        let mut group_len = 0u64;
        let mut accepted: Vec<(AppendReq, u64, u64)> = Vec::with_capacity(group.len());
        let mut spans_total = 0u64;
        for r in group.drain(..) {
            let rec_len = (HEADER_LEN + r.payload.len()) as u64;
            let total = self.shared.total_bytes.load(Relaxed) + group_len;
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
            let offset = self.file_len + group_len;
            self.buf
                .extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&hasher.finalize().to_le_bytes());
            self.buf.extend_from_slice(&fmt);
            self.buf.extend_from_slice(&spans);
            group_len += rec_len;
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
        // Header, payload, header, payload...: the records in file order.
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * accepted.len());
        for ((r, _, _), header) in accepted.iter().zip(self.buf.chunks_exact(HEADER_LEN)) {
            slices.push(IoSlice::new(header));
            slices.push(IoSlice::new(&r.payload));
        }
        let t = Instant::now();
        let written = write_all_vectored_at(file, &mut slices, self.file_len);
        drop(slices);
        self.shared.metrics.wal_write_latency.observe(t.elapsed());
        if let Err(e) = written {
            self.shared.metrics.wal_io_errors.add("write", 1);
            self.shared.note_error(&io_err(&path)(copy_io(&e)));
            if let Some(suppressed) = self.write_log.admit_now() {
                tracing::error!(error = %e, path = %path.display(), suppressed, "WAL write failed; refusing the appends and closing the segment");
            }
            self.poisoned = true;
            self.account_partial_write(group_len);
            refuse(accepted, &e);
            return;
        }
        let n = group_len;
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
