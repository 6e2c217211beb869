//! The fence a tiering pass raises so that no late span is deleted from
//! the hot store uncopied (see [`super::tiering`]): writes through the
//! tiered store enter it, a pass raises it at its cutoff.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

/// Keeps spans older than a running tiering pass's cutoff out of the hot
/// store while the pass runs (see the module documentation).
#[derive(Debug, Default)]
pub struct Fence {
    /// The running pass's cutoff (ns); 0 when no pass runs.
    cutoff: AtomicU64,
    /// Held shared by every write through the tiered store; a pass takes it
    /// exclusively once, after raising the cutoff, to wait for the writes
    /// that started before.
    gate: tokio::sync::RwLock<()>,
}

impl Fence {
    /// Enters a write: returns the guard to hold until the write is
    /// committed and the cutoff below which spans must go cold (0: none).
    pub async fn enter(&self) -> (tokio::sync::RwLockReadGuard<'_, ()>, u64) {
        let g = self.gate.read().await;
        (g, self.cutoff.load(SeqCst))
    }

    /// Raises the fence at `cutoff` and waits until no write that may have
    /// missed it is still under way; lowered when the returned guard drops.
    pub(super) async fn raise(&self, cutoff: u64) -> Raised<'_> {
        self.cutoff.store(cutoff, SeqCst);
        drop(self.gate.write().await);
        Raised(self)
    }
}

/// Lowers the fence when dropped (the pass ended, failed, or was cancelled).
pub(super) struct Raised<'a>(&'a Fence);

impl Drop for Raised<'_> {
    fn drop(&mut self) {
        self.0.cutoff.store(0, SeqCst);
    }
}
