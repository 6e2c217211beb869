//! Serving one listener (OTLP/gRPC, OTLP/HTTP, Zipkin or query) over
//! hyper: the accept loop, optional TLS, and the limits that keep slow or
//! idle clients from holding the collector (`[connections]`):
//!
//! - connections per listener, and over all listeners what the
//!   file-descriptor limit allows ([`conns`]); at a limit the longest-idle
//!   connection is closed, never the listener stopped;
//! - HTTP/1 header-read timeout (hyper's `header_read_timeout`, which also
//!   bounds an idle keep-alive connection), HTTP/2 concurrent streams and
//!   PING keep-alive (hyper's knobs);
//! - an idle timeout for connections with no request in flight (including
//!   one that never sent a byte, and HTTP/2 connections);
//! - a request-body deadline and minimum rate ([`timed_body`]).
//!
//! Every closed or refused connection is counted in
//! `ferrotrace_connections_closed_total` / `_refused_total` by listener and reason.

pub mod config;
pub mod conns;
pub mod timed_body;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::metrics::Metrics;
pub use config::ConnectionsConfig;
use conns::{ConnSlot, ConnState, ConnTable};
pub use timed_body::{BodyReadError, TimedBody};

/// After an idle connection was asked to close gracefully (HTTP/2 GOAWAY),
/// how long it may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Connections the query listener (health probes, metrics scrapes) may open
/// beyond the process-wide budget when every connection is busy.
const QUERY_OVERFLOW: usize = 16;

/// What one listener serves with: its name (the `listener` label), its
/// limits, TLS, and the shared connection table.
pub struct ListenerCtx {
    /// `otlp_grpc`, `otlp_http`, `zipkin` or `query`.
    pub name: &'static str,
    max_connections: usize,
    /// Connections past the process-wide limit this listener may open when
    /// none is idle (see [`ConnTable::admit`]).
    overflow: usize,
    idle_timeout: Duration,
    body_timeout: Duration,
    min_rate: u64,
    rate_window: Duration,
    tls_handshake_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    table: Arc<ConnTable>,
    metrics: Arc<Metrics>,
    builder: auto::Builder<TokioExecutor>,
}

impl ListenerCtx {
    /// A listener named `name`; `http2_only` for gRPC.
    pub fn new(
        name: &'static str,
        c: &ConnectionsConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        table: Arc<ConnTable>,
        metrics: Arc<Metrics>,
        http2_only: bool,
    ) -> Arc<ListenerCtx> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if http2_only {
            builder = builder.http2_only();
        }
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(c.header_read_timeout());
        let keepalive = (c.http2_keepalive_interval_ms > 0)
            .then(|| Duration::from_millis(c.http2_keepalive_interval_ms));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(c.max_concurrent_streams)
            .keep_alive_interval(keepalive)
            .keep_alive_timeout(Duration::from_millis(c.http2_keepalive_timeout_ms));
        Arc::new(ListenerCtx {
            name,
            max_connections: c.max_per_listener,
            overflow: if name == "query" { QUERY_OVERFLOW } else { 0 },
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            body_timeout: Duration::from_millis(c.body_read_timeout_ms),
            min_rate: c.min_body_rate_bytes_per_sec,
            rate_window: Duration::from_millis(c.min_body_rate_window_ms),
            tls_handshake_timeout: Duration::from_millis(c.tls_handshake_timeout_ms),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            table,
            metrics,
            builder,
        })
    }
}

impl std::fmt::Debug for ListenerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCtx")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The soft `RLIMIT_NOFILE`, raised to the hard limit first when it is
/// lower (as Go's runtime does): the default soft limit of 1024 is small for
/// a server. Returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let Some(r) = nofile_limit() else {
        return 1024;
    };
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return r.rlim_max;
        }
    }
    r.rlim_cur
}

/// The soft `RLIMIT_NOFILE` in force.
pub fn fd_limit() -> u64 {
    nofile_limit().map_or(1024, |r| r.rlim_cur)
}

/// `getrlimit(RLIMIT_NOFILE)`; `None` when the call fails.
fn nofile_limit() -> Option<libc::rlimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0).then_some(r)
}

/// Connections all listeners may hold together: the file-descriptor limit
/// less `reserved` (at least a quarter of the limit, and 8).
pub fn connection_budget(fd_limit: u64, reserved: usize) -> usize {
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    limit.saturating_sub(reserved).max(limit / 4).max(8)
}

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    // A dropped sender means the collector is gone: shut down too.
    let _ = rx.wait_for(|v| *v).await;
}

/// Serves `svc` on `tcp` until `shutdown` turns true; then stops accepting,
/// closes every connection gracefully and returns once they are gone.
pub async fn serve<S, B>(
    tcp: TcpListener,
    ctx: Arc<ListenerCtx>,
    svc: S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<TimedBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let accepted = tokio::select! {
            _ = wait_shutdown(&mut shutdown) => break,
            r = tcp.accept() => r,
        };
        match accepted {
            Ok((stream, _remote)) => {
                match ctx.table.admit(ctx.name, ctx.max_connections, ctx.overflow) {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_conn(
                            stream,
                            slot,
                            ctx.clone(),
                            svc.clone(),
                            shutdown.clone(),
                        ));
                    }
                    Err(reason) => {
                        ctx.metrics.net.refused(ctx.name, reason);
                        drop(stream);
                    }
                }
            }
            Err(e) => {
                ctx.metrics.net.refused(ctx.name, "accept_error");
                tracing::debug!(listener = ctx.name, error = %e, "accept failed");
                // Out of file descriptors: free one held by an idle client,
                // then retry; other errors (a reset before accept) pass.
                let fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if !(fds && ctx.table.evict_idle()) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    drop(tcp);
    // Connections see the shutdown themselves; the caller bounds this wait.
    while ctx.table.open(ctx.name) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve_conn<S, B>(
    stream: TcpStream,
    slot: ConnSlot,
    ctx: Arc<ListenerCtx>,
    svc: S,
    shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<TimedBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = slot.state.clone();
    match &ctx.tls {
        None => run(TokioIo::new(stream), &state, &ctx, svc, shutdown).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(ctx.tls_handshake_timeout, acceptor.accept(stream));
            let tls = tokio::select! {
                r = handshake => r,
                _ = state.killed() => return,
            };
            match tls {
                Ok(Ok(tls)) => run(TokioIo::new(tls), &state, &ctx, svc, shutdown).await,
                Ok(Err(e)) => {
                    tracing::debug!(listener = ctx.name, error = %e, "TLS handshake failed");
                    ctx.metrics.tls_handshake_failures.add(ctx.name, 1);
                    ctx.metrics.net.closed(ctx.name, "tls_handshake");
                }
                Err(_) => {
                    tracing::debug!(listener = ctx.name, "TLS handshake timed out");
                    ctx.metrics.tls_handshake_failures.add(ctx.name, 1);
                    ctx.metrics.net.closed(ctx.name, "tls_handshake");
                }
            }
        }
    }
    drop(slot);
}

/// A response body that keeps its request counted as in flight until it
/// has been sent (a connection streaming a response is not idle).
struct Tracked<B> {
    inner: B,
    _guard: conns::RequestGuard,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Which of hyper's own timeouts ended a connection, if one did: the HTTP/1
/// header-read timeout or an unanswered HTTP/2 keep-alive PING (hyper
/// reports both as `is_timeout`; the PING one says so in its source).
fn hyper_timeout(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut timeout = false;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.to_string() == "keep-alive timed out" {
            return Some("http2_keepalive");
        }
        timeout |= err
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_timeout());
        cur = err.source();
    }
    timeout.then_some("header_timeout")
}

async fn run<I, S, B>(
    io: TokioIo<I>,
    state: &Arc<ConnState>,
    ctx: &Arc<ListenerCtx>,
    svc: S,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<TimedBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (svc_ctx, svc_state) = (ctx.clone(), state.clone());
    let hyper_svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = svc_state.begin_request();
        let req = req.map(|b| TimedBody::new(b, svc_ctx.clone(), svc_state.clone()));
        let call = svc.clone().oneshot(req);
        async move {
            let resp = call.await?;
            Ok::<_, Infallible>(resp.map(|inner| Tracked {
                inner,
                _guard: guard,
            }))
        }
    });
    let conn = ctx.builder.serve_connection(io, hyper_svc);
    tokio::pin!(conn);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let mut hard_stop: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = hard_stop.unwrap_or_else(|| match state.idle_for(now.into_std()) {
            Some(idle) => now + ctx.idle_timeout.saturating_sub(idle),
            None => now + ctx.idle_timeout,
        });
        tokio::select! {
            r = conn.as_mut() => {
                if let Some(reason) = r.err().and_then(|e| hyper_timeout(&*e)) {
                    ctx.metrics.net.closed(ctx.name, reason);
                }
                return;
            }
            _ = state.killed() => return,
            _ = wait_shutdown(&mut shutdown), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if hard_stop.is_some_and(|t| now >= t) {
                    return;
                }
                if state.idle_for(now.into_std()).is_some_and(|d| d >= ctx.idle_timeout) {
                    ctx.metrics.net.closed(ctx.name, "idle");
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                    hard_stop = Some(now + CLOSE_GRACE);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_the_fd_limit_reaches_the_hard_limit_and_is_what_fd_limit_reports() {
        let before = fd_limit();
        let hard = nofile_limit().expect("getrlimit works on Linux").rlim_max;
        let raised = raise_fd_limit();
        assert!(raised >= before, "{raised} < {before}");
        // Up to the hard limit, unless the kernel refuses it (a hard limit
        // above fs.nr_open): then unchanged.
        assert!(
            raised == hard || raised == before,
            "{raised} {hard} {before}"
        );
        assert_eq!(fd_limit(), raised);
    }
}
