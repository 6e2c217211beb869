//! A request body with a deadline and a minimum transfer rate, so a client
//! that declares a large body (or a large gRPC message) and then sends it a
//! byte at a time, or stops, is cut off instead of holding a connection, a
//! request slot and the bytes it sent. The checks run only while the body
//! has nothing ready, so a fast body costs one clock read per frame.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::conns::ConnState;
use super::ListenerCtx;

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    /// The whole body did not arrive within `connections.body_read_timeout_ms`.
    #[error(
        "request body not received within {0} ms (connections.body_read_timeout_ms); \
         the connection is closed"
    )]
    TimedOut(u64),
    /// Fewer than `connections.min_body_rate_bytes_per_sec` arrived in a window.
    #[error(
        "request body arrived slower than {0} bytes/s (connections.min_body_rate_bytes_per_sec); \
         the connection is closed"
    )]
    TooSlow(u64),
    /// The connection failed.
    #[error("{0}")]
    Transport(#[from] hyper::Error),
}

impl BodyReadError {
    /// The `BodyReadError` that `e` is or wraps, if any (handlers see it
    /// wrapped in their framework's error type).
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyReadError> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(b) = err.downcast_ref::<BodyReadError>() {
                return Some(b);
            }
            cur = err.source();
        }
        None
    }

    /// True for the deadline and rate trips (not a transport failure).
    pub fn is_timeout(&self) -> bool {
        !matches!(self, BodyReadError::Transport(_))
    }
}

/// How long an offending connection stays open after a trip, for the error
/// response to reach the client.
const TRIP_GRACE: Duration = Duration::from_secs(1);

/// [`Incoming`] under the body deadline and minimum rate.
pub struct TimedBody {
    inner: Incoming,
    ctx: Arc<ListenerCtx>,
    conn: Arc<ConnState>,
    deadline: Instant,
    window_start: Instant,
    window_bytes: u64,
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl std::fmt::Debug for TimedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedBody").finish_non_exhaustive()
    }
}

impl TimedBody {
    /// Starts the clocks now (the request's headers have arrived).
    pub fn new(inner: Incoming, ctx: Arc<ListenerCtx>, conn: Arc<ConnState>) -> TimedBody {
        let now = Instant::now();
        TimedBody {
            deadline: now + ctx.body_timeout,
            window_start: now,
            window_bytes: 0,
            inner,
            ctx,
            conn,
            timer: None,
            failed: false,
        }
    }

    /// Checks the clocks at `now`; `Err` when the body broke a limit, else
    /// the next instant to check again.
    fn check(&mut self, now: Instant) -> Result<Instant, BodyReadError> {
        let c = &self.ctx;
        if now >= self.deadline {
            return Err(BodyReadError::TimedOut(c.body_timeout.as_millis() as u64));
        }
        if c.min_rate > 0 {
            let window_end = self.window_start + c.rate_window;
            if now >= window_end {
                let needed = c.min_rate.saturating_mul(c.rate_window.as_millis() as u64) / 1000;
                if self.window_bytes < needed {
                    return Err(BodyReadError::TooSlow(c.min_rate));
                }
                self.window_start = now;
                self.window_bytes = 0;
            }
            return Ok(self.deadline.min(self.window_start + c.rate_window));
        }
        Ok(self.deadline)
    }

    fn trip(&mut self, e: BodyReadError) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        self.failed = true;
        self.timer = None;
        let reason = match e {
            BodyReadError::TooSlow(_) => "body_too_slow",
            _ => "body_timeout",
        };
        self.ctx.metrics.net.closed(self.ctx.name, reason);
        self.conn.kill_after(TRIP_GRACE);
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.window_bytes += d.len() as u64;
                }
                if let Err(e) = this.check(Instant::now()) {
                    return this.trip(e);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyReadError::Transport(e)))),
            Poll::Ready(None) => {
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => loop {
                let next = match this.check(Instant::now()) {
                    Ok(next) => next,
                    Err(e) => return this.trip(e),
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
                if timer.deadline() != next {
                    timer.as_mut().reset(next);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
