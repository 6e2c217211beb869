//! `[server]` (the listener addresses the collector binds) and `[shutdown]`
//! (how long a stop drains the queue): owned here, where the collector is
//! assembled and stopped; `config` re-exports them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Listener addresses. All bind to loopback by default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// OTLP/gRPC listener; empty string disables it.
    pub otlp_grpc_addr: String,
    /// OTLP/HTTP listener; empty string disables it.
    pub otlp_http_addr: String,
    /// Zipkin v2 listener; empty string disables it.
    pub zipkin_addr: String,
    /// Query API, UI, `/metrics`, `/healthz`, `/readyz`; empty string disables it.
    pub http_addr: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            otlp_grpc_addr: "127.0.0.1:4317".into(),
            otlp_http_addr: "127.0.0.1:4318".into(),
            zipkin_addr: "127.0.0.1:9411".into(),
            http_addr: "127.0.0.1:16686".into(),
        }
    }
}

impl ServerConfig {
    /// Checks that every listener address set is an IP:port address.
    pub fn validate(&self) -> Result<(), String> {
        for (name, addr) in [
            ("server.otlp_grpc_addr", &self.otlp_grpc_addr),
            ("server.otlp_http_addr", &self.otlp_http_addr),
            ("server.zipkin_addr", &self.zipkin_addr),
            ("server.http_addr", &self.http_addr),
        ] {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                return Err(format!(
                    "{name} = {addr:?} is not an IP:port address (e.g. 127.0.0.1:4317)"
                ));
            }
        }
        Ok(())
    }
}

/// Graceful shutdown.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long to drain the queue into the sink after SIGTERM/SIGINT; the rest stays in the WAL.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_ms: 10_000,
        }
    }
}

impl ShutdownConfig {
    /// The drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}
