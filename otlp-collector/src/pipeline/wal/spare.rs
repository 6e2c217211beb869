//! The next segment, prepared ahead of time on its own thread so that
//! rotating the WAL costs an acknowledgement nothing, and zero-filled so that
//! the group commit's `fdatasync` flushes data only.
//!
//! Creating a segment takes four `fsync`s (`wal.meta` written, renamed,
//! the directory twice); done by the writer, they delayed every append
//! waiting behind the rotation. And `fdatasync` of a file that grows must
//! also commit the new size through the file system's journal (on ext4, a
//! journal commit shared with everything else the disk writes, the SQLite
//! store included); overwriting blocks that already hold zeros changes no
//! metadata. Measured on the 2-vCPU machine (ext4 on a virtio disk, 64 KiB
//! records, `fdatasync` each): mean 1.8–3.5 ms appending, 0.7–3.0 ms over a
//! zero-filled file (docs/benchmarks.md, "WAL: spare segments").
//!
//! A spare is zero-filled only while the disk has room for it beyond the
//! sink's reserve (`wal.min_free_bytes`); otherwise, or if filling fails,
//! it stays an empty file and is written by extending it, as before.
//! Replay takes an all-zero rest of a segment as its clean end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{Shared, WalError};
use crate::disk::free_bytes;

/// Creates a segment's file (see `Writer::create_file`).
pub(super) type CreateFile = fn(&Shared, u64) -> Result<(File, u64), WalError>;

/// A prepared segment: its id, its file, and how many zero bytes were
/// written ahead into it (0: an empty file).
pub(super) struct Spare {
    pub(super) id: u64,
    pub(super) file: File,
    pub(super) zeroed: u64,
}

/// The preparing thread and its two channels.
pub(super) struct Preparer {
    requests: Option<Sender<u64>>,
    done: Receiver<(u64, Result<Spare, WalError>)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The id asked for and not yet taken.
    pending: Option<u64>,
}

impl Preparer {
    /// Starts the thread; segments are created by `create(shared, id)`
    /// (which records the id in `wal.meta` and the segment in the table)
    /// and zero-filled to `segment_bytes`.
    pub(super) fn start(
        shared: Arc<Shared>,
        segment_bytes: u64,
        create: CreateFile,
    ) -> std::io::Result<Preparer> {
        let (req_tx, req_rx) = bounded::<u64>(1);
        let (done_tx, done_rx) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("wal-spare".into())
            .spawn(move || {
                for id in req_rx {
                    let made = create(&shared, id).map(|(file, _)| {
                        let zeroed = zero_fill(&shared, &file, segment_bytes);
                        Spare { id, file, zeroed }
                    });
                    if done_tx.send((id, made)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Preparer {
            requests: Some(req_tx),
            done: done_rx,
            thread: Some(thread),
            pending: None,
        })
    }

    /// Asks for segment `id` unless one is already asked for.
    pub(super) fn request(&mut self, id: u64) -> bool {
        if self.pending.is_some() {
            return false;
        }
        match self.requests.as_ref().map(|r| r.send(id)) {
            Some(Ok(())) => {
                self.pending = Some(id);
                true
            }
            _ => false,
        }
    }

    /// Whether a segment is asked for and not yet taken.
    pub(super) fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The segment asked for, waiting for it if it is still being prepared;
    /// `None` when none was asked for. Ids come back in the order asked.
    pub(super) fn take(&mut self) -> Option<(u64, Result<Spare, WalError>)> {
        self.pending.take()?;
        self.done.recv().ok()
    }

    /// Ends the thread (after the segment it is preparing, if any); the
    /// prepared segment, if any, is returned so the caller can account for it.
    pub(super) fn stop(&mut self) -> Option<(u64, Result<Spare, WalError>)> {
        let left = self.take();
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        left
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Writes `len` zero bytes into the new `file` and syncs them, if the disk
/// has room beyond the sink's reserve; returns the bytes zeroed (0 if it did
/// not or could not: the file is then left empty).
fn zero_fill(shared: &Shared, file: &File, len: u64) -> u64 {
    let room = free_bytes(&shared.dir)
        .map(|free| free >= len.saturating_add(shared.min_free_bytes))
        .unwrap_or(false);
    if !room || len == 0 {
        return 0;
    }
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut off = 0u64;
    let filled = (|| {
        while off < len {
            let n = (len - off).min(CHUNK as u64) as usize;
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
        file.sync_all()
    })();
    match filled {
        Ok(()) => len,
        Err(e) => {
            // A spare is an optimisation: give the space back and let the
            // segment be written by extending it, as without one.
            tracing::debug!(error = %e, "cannot zero-fill the next WAL segment; it grows as written");
            let _ = file.set_len(0);
            0
        }
    }
}
