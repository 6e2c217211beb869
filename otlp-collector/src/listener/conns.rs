//! The connections every listener holds, and what happens at a limit: each
//! listener may hold `connections.max_per_listener`, all of them together
//! what the file-descriptor limit leaves after `connections.reserved_fds`.
//! At a limit the longest-idle connection (no request in flight: a client
//! that connected and sent nothing, is slow to send its headers, or is
//! between requests) is closed to make room; only when none is idle is the
//! new connection refused. So idle sockets cannot lock anybody out, and
//! `/healthz` is served however many of them a client opens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// One open connection, shared by its serving task and the table.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    listener: &'static str,
    epoch: Instant,
    /// Requests in flight (request received, response not yet fully sent).
    active: AtomicU32,
    /// When `active` last dropped to 0 (or the connection opened), in ms since `epoch`.
    idle_since_ms: AtomicU64,
    closing: AtomicBool,
    /// Closed by the table to make room (its room is counted as free).
    evicted: AtomicBool,
    kill: Notify,
}

impl ConnState {
    /// Marks a request in flight until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Relaxed);
        RequestGuard(self.clone())
    }

    /// How long the connection has had no request in flight (`None` while it has one).
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.active.load(Relaxed) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Relaxed));
        Some(now.duration_since(self.epoch).saturating_sub(since))
    }

    /// Asks the serving task to drop the connection now.
    pub fn kill(&self) {
        self.closing.store(true, Relaxed);
        self.kill.notify_one();
    }

    /// Drops the connection after `grace` (time for an error response to go out).
    pub fn kill_after(self: &Arc<Self>, grace: Duration) {
        self.closing.store(true, Relaxed);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            me.kill.notify_one();
        });
    }

    /// Resolves when [`ConnState::kill`] was called.
    pub async fn killed(&self) {
        self.kill.notified().await
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A request in flight on a connection; see [`ConnState::begin_request`].
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since_ms.store(c.now_ms(), Relaxed);
        c.active.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    /// Of `open`: told to close, not gone yet (their room is already free).
    closing: usize,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<u64, Arc<ConnState>>,
    per_listener: HashMap<&'static str, Counts>,
    total: Counts,
}

/// Every listener's open connections.
#[derive(Debug)]
pub struct ConnTable {
    epoch: Instant,
    next_id: AtomicU64,
    max_total: usize,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

/// Why a new connection was refused.
pub type RefuseReason = &'static str;

impl ConnTable {
    /// A table for at most `max_total` connections over all listeners.
    pub fn new(max_total: usize, metrics: Arc<Metrics>) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            max_total: max_total.max(1),
            inner: Mutex::new(Inner::default()),
            metrics,
        })
    }

    /// The process-wide connection limit.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Registers a new connection on `listener`, closing the longest-idle
    /// connection first when a limit is reached; refuses it when nothing is
    /// idle. `overflow` more connections than the process-wide limit are
    /// allowed for this listener when nothing is idle (the query listener's
    /// probes, while every receiver connection is busy; they come out of
    /// `reserved_fds`). The slot unregisters the connection when dropped.
    pub fn admit(
        self: &Arc<Self>,
        listener: &'static str,
        max_per_listener: usize,
        overflow: usize,
    ) -> Result<ConnSlot, RefuseReason> {
        let mut g = self.inner.lock();
        let now = Instant::now();
        let c = g.per_listener.entry(listener).or_default();
        if c.open - c.closing >= max_per_listener && !self.evict_locked(&mut g, Some(listener), now)
        {
            return Err("max_connections");
        }
        let live = g.total.open - g.total.closing;
        if live >= self.max_total
            && !self.evict_locked(&mut g, None, now)
            && live >= self.max_total + overflow
        {
            return Err("fd_limit");
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let state = Arc::new(ConnState {
            id,
            listener,
            epoch: self.epoch,
            active: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(now.duration_since(self.epoch).as_millis() as u64),
            closing: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            kill: Notify::new(),
        });
        g.conns.insert(id, state.clone());
        g.per_listener.entry(listener).or_default().open += 1;
        g.total.open += 1;
        drop(g);
        self.metrics.net.opened(listener);
        Ok(ConnSlot {
            table: self.clone(),
            state,
        })
    }

    /// Closes the longest-idle connection of any listener (used when
    /// `accept` fails for lack of file descriptors); false if none is idle.
    pub fn evict_idle(&self) -> bool {
        let mut g = self.inner.lock();
        self.evict_locked(&mut g, None, Instant::now())
    }

    /// Open connections of `listener`, including those being closed.
    pub fn open(&self, listener: &str) -> usize {
        self.inner
            .lock()
            .per_listener
            .get(listener)
            .map_or(0, |c| c.open)
    }

    fn evict_locked(&self, g: &mut Inner, listener: Option<&str>, now: Instant) -> bool {
        let victim = g
            .conns
            .values()
            .filter(|c| listener.is_none_or(|l| c.listener == l) && !c.closing.load(Relaxed))
            .filter_map(|c| c.idle_for(now).map(|d| (d, c)))
            .max_by_key(|(d, _)| *d)
            .map(|(_, c)| c.clone());
        let Some(v) = victim else {
            return false;
        };
        v.evicted.store(true, Relaxed);
        v.kill();
        g.per_listener.entry(v.listener).or_default().closing += 1;
        g.total.closing += 1;
        self.metrics.net.closed(v.listener, "evicted");
        true
    }

    fn remove(&self, state: &ConnState) {
        let mut g = self.inner.lock();
        if g.conns.remove(&state.id).is_none() {
            return;
        }
        // `closing` is counted only for connections evicted by the table.
        let counted_closing = state.evicted.load(Relaxed);
        let c = g.per_listener.entry(state.listener).or_default();
        c.open -= 1;
        if counted_closing {
            c.closing -= 1;
        }
        g.total.open -= 1;
        if counted_closing {
            g.total.closing -= 1;
        }
        drop(g);
        self.metrics.net.ended(state.listener);
    }
}

/// A registered connection; unregisters it when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    table: Arc<ConnTable>,
    /// The connection's shared state.
    pub state: Arc<ConnState>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.table.remove(&self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_a_limit_the_longest_idle_is_closed_and_busy_ones_never() {
        let metrics = Arc::new(Metrics::default());
        let t = ConnTable::new(3, metrics.clone());
        let a = t.admit("l", 2, 0).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = t.admit("l", 2, 0).unwrap();
        // Per-listener limit: `a` (idle longest) makes room.
        let c = t.admit("l", 2, 0).unwrap();
        assert!(a.state.closing.load(Relaxed) && !b.state.closing.load(Relaxed));
        assert_eq!(metrics.net.closed_count("l", "evicted"), 1);
        drop(a);
        // Busy connections are never closed to make room.
        let _rb = b.state.begin_request();
        let _rc = c.state.begin_request();
        assert_eq!(t.admit("l", 2, 0).unwrap_err(), "max_connections");
        // The process-wide limit (3) counts every listener.
        let d = t.admit("other", 10, 0).unwrap();
        let rd = d.state.begin_request();
        assert_eq!(t.admit("other", 10, 0).unwrap_err(), "fd_limit");
        // The query listener's overflow lets a probe in while all are busy.
        let probe = t.admit("query", 10, 1).unwrap();
        let busy_probe = probe.state.begin_request();
        assert_eq!(t.admit("query", 10, 1).unwrap_err(), "fd_limit");
        drop((busy_probe, probe));
        // ... and evicts an idle connection of any listener.
        drop(_rb);
        let e = t.admit("other", 10, 0).unwrap();
        assert!(
            b.state.closing.load(Relaxed),
            "the idle one of `l` was closed"
        );
        assert!(!d.state.closing.load(Relaxed));
        drop(rd);
        drop((b, c, d, e));
        assert_eq!(t.open("l") + t.open("other"), 0);
        assert_eq!(metrics.net.open("l") + metrics.net.open("other"), 0);
    }
}
