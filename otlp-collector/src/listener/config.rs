//! `[connections]`: what every listener allows one client connection.
//! Owned by the listener that enforces it; `config` re-exports it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-connection limits, the same for every listener (OTLP/gRPC, OTLP/HTTP,
/// Zipkin, query). A connection that breaks one is closed and counted in
/// `ferrotrace_connections_closed_total{reason}`; see docs/configuration.md.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Open connections per listener; past it the longest-idle connection of
    /// that listener is closed to make room, or the new one when none is idle.
    pub max_per_listener: usize,
    /// File descriptors kept out of the connection budget for the WAL, the
    /// sink and the runtime: all listeners together hold at most
    /// `RLIMIT_NOFILE - reserved_fds` connections.
    pub reserved_fds: usize,
    /// An HTTP/1 request's headers must arrive within this time of the
    /// connection opening or of the previous response; also the longest an
    /// idle HTTP/1 keep-alive connection waits for its next request.
    pub header_read_timeout_ms: u64,
    /// A request body must arrive completely within this time of its headers.
    pub body_read_timeout_ms: u64,
    /// Slowest accepted body transfer: at least this many bytes per second
    /// in every `min_body_rate_window_ms` window, while a body is being read
    /// (0 turns the check off).
    pub min_body_rate_bytes_per_sec: u64,
    /// The window over which `min_body_rate_bytes_per_sec` is measured.
    pub min_body_rate_window_ms: u64,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 with GOAWAY), as is one that sent nothing since it opened.
    pub idle_timeout_ms: u64,
    /// Requests in flight per HTTP/2 connection (`SETTINGS_MAX_CONCURRENT_STREAMS`);
    /// an HTTP/1 connection handles one request at a time.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval on a connection (0 = no pings).
    pub http2_keepalive_interval_ms: u64,
    /// A connection whose PING is not answered within this time is closed.
    pub http2_keepalive_timeout_ms: u64,
    /// How long a client has to complete the TLS handshake (with `[tls]`).
    pub tls_handshake_timeout_ms: u64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max_per_listener: 4096,
            reserved_fds: 128,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            min_body_rate_bytes_per_sec: 4096,
            min_body_rate_window_ms: 5_000,
            idle_timeout_ms: 120_000,
            max_concurrent_streams: 100,
            http2_keepalive_interval_ms: 30_000,
            http2_keepalive_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
        }
    }
}

impl ConnectionsConfig {
    /// Checks the values that would make a listener unusable.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("connections.max_per_listener", self.max_per_listener as u64),
            (
                "connections.header_read_timeout_ms",
                self.header_read_timeout_ms,
            ),
            (
                "connections.body_read_timeout_ms",
                self.body_read_timeout_ms,
            ),
            (
                "connections.min_body_rate_window_ms",
                self.min_body_rate_window_ms,
            ),
            ("connections.idle_timeout_ms", self.idle_timeout_ms),
            (
                "connections.max_concurrent_streams",
                u64::from(self.max_concurrent_streams),
            ),
            (
                "connections.http2_keepalive_timeout_ms",
                self.http2_keepalive_timeout_ms,
            ),
            (
                "connections.tls_handshake_timeout_ms",
                self.tls_handshake_timeout_ms,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("{key} must be above 0"));
            }
        }
        Ok(())
    }

    /// `header_read_timeout_ms` as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
}
