//! Jaeger receivers: what a Jaeger collector and agent take.
//!
//! - gRPC `jaeger.api_v2.CollectorService/PostSpans` (Jaeger's port 14250),
//!   [`grpc`];
//! - Thrift binary over HTTP, `POST /api/traces` (port 14268), [`http`];
//! - the agent's UDP ports: `emitBatch` in Thrift compact (6831) and binary
//!   (6832), [`udp`].
//!
//! Each is off until given an address (`[jaeger]`, or `--jaeger` for all
//! four on Jaeger's usual ports on loopback). The TCP ones work like OTLP:
//! same limits, bearer tokens, TLS and listener protections, and an answer
//! only once the spans are in the WAL. UDP cannot answer: see [`udp`] for
//! what happens under backpressure. The WAL keeps each body as it came
//! (`RecordFormat::Jaeger*`); replay decodes it with the same code.

pub mod grpc;
pub mod http;
pub mod model;
pub mod proto;
pub mod thrift;
pub mod thrift_batch;
pub mod udp;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::receiver::convert::{DecodeError, Decoded};
use crate::receiver::limits::LimitsConfig;

/// Jaeger's usual collector gRPC port, on loopback (what `--jaeger` binds).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:14250";
/// Jaeger's usual collector HTTP port, on loopback.
pub const DEFAULT_THRIFT_HTTP_ADDR: &str = "127.0.0.1:14268";
/// Jaeger's usual agent port for Thrift compact, on loopback.
pub const DEFAULT_AGENT_COMPACT_ADDR: &str = "127.0.0.1:6831";
/// Jaeger's usual agent port for Thrift binary, on loopback.
pub const DEFAULT_AGENT_BINARY_ADDR: &str = "127.0.0.1:6832";

/// A `[jaeger]` setting that is invalid, with the key and how to fix it
/// (`config` reports it as an invalid configuration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JaegerConfigError(pub String);

/// `[jaeger]`: the Jaeger listeners (each off while its address is empty)
/// and the UDP agent's bounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JaegerConfig {
    /// gRPC `PostSpans` listener (Jaeger uses 14250); empty: off.
    pub grpc_addr: String,
    /// Thrift-over-HTTP `POST /api/traces` listener (Jaeger uses 14268); empty: off.
    pub thrift_http_addr: String,
    /// Agent UDP listener, Thrift compact (Jaeger uses 6831); empty: off.
    pub agent_compact_addr: String,
    /// Agent UDP listener, Thrift binary (Jaeger uses 6832); empty: off.
    pub agent_binary_addr: String,
    /// Largest datagram taken; larger ones are dropped and counted (Jaeger's
    /// clients keep theirs under 65,000 bytes).
    pub agent_max_packet_bytes: usize,
    /// Datagrams waiting for decoding, per UDP listener; when full, new
    /// datagrams are dropped and counted.
    pub agent_queue_packets: usize,
    /// Datagrams decoded and written to the WAL at once, per UDP listener.
    pub agent_workers: usize,
    /// `SO_RCVBUF` of each UDP socket in bytes; 0 keeps the system default
    /// (the kernel drops what overflows it, unseen by the collector).
    pub agent_socket_buffer_bytes: usize,
    /// UDP carries no bearer token and no TLS: with receiver tokens or TLS
    /// configured, an agent listener beyond loopback is refused unless this
    /// is true.
    pub agent_allow_unauthenticated: bool,
}

impl Default for JaegerConfig {
    fn default() -> Self {
        JaegerConfig {
            grpc_addr: String::new(),
            thrift_http_addr: String::new(),
            agent_compact_addr: String::new(),
            agent_binary_addr: String::new(),
            agent_max_packet_bytes: 65_000,
            agent_queue_packets: 1_000,
            agent_workers: 4,
            agent_socket_buffer_bytes: 0,
            agent_allow_unauthenticated: false,
        }
    }
}

impl JaegerConfig {
    /// Turns on every listener that has no address yet, on Jaeger's usual
    /// port on loopback (`--jaeger`).
    pub fn enable_defaults(&mut self) {
        for (addr, default) in [
            (&mut self.grpc_addr, DEFAULT_GRPC_ADDR),
            (&mut self.thrift_http_addr, DEFAULT_THRIFT_HTTP_ADDR),
            (&mut self.agent_compact_addr, DEFAULT_AGENT_COMPACT_ADDR),
            (&mut self.agent_binary_addr, DEFAULT_AGENT_BINARY_ADDR),
        ] {
            if addr.is_empty() {
                *addr = default.to_string();
            }
        }
    }

    /// Checks addresses and bounds; `authenticated` is true when receiver
    /// tokens or TLS are configured (which UDP cannot honour).
    pub fn validate(&self, authenticated: bool) -> Result<(), JaegerConfigError> {
        for (name, addr) in [
            ("jaeger.grpc_addr", &self.grpc_addr),
            ("jaeger.thrift_http_addr", &self.thrift_http_addr),
            ("jaeger.agent_compact_addr", &self.agent_compact_addr),
            ("jaeger.agent_binary_addr", &self.agent_binary_addr),
        ] {
            if addr.is_empty() {
                continue;
            }
            let parsed: SocketAddr = addr.parse().map_err(|_| {
                JaegerConfigError(format!(
                    "{name} = {addr:?} is not an IP:port address (e.g. 127.0.0.1:14250)"
                ))
            })?;
            let udp = name.starts_with("jaeger.agent_");
            if udp
                && authenticated
                && !parsed.ip().is_loopback()
                && !self.agent_allow_unauthenticated
            {
                return Err(JaegerConfigError(format!(
                    "{name} = {addr:?} listens beyond loopback, but UDP carries no bearer token \
                     and no TLS, so receiver tokens / TLS cannot protect it: bind it to \
                     127.0.0.1 (a Jaeger agent or client on the same host), or set \
                     jaeger.agent_allow_unauthenticated = true to accept spans from anyone \
                     who can reach it"
                )));
            }
        }
        if !(1..=65_507).contains(&self.agent_max_packet_bytes) {
            return Err(JaegerConfigError(format!(
                "jaeger.agent_max_packet_bytes = {} must be between 1 and 65507 (the largest UDP payload)",
                self.agent_max_packet_bytes
            )));
        }
        if self.agent_queue_packets == 0 || self.agent_workers == 0 {
            return Err(JaegerConfigError(
                "jaeger.agent_queue_packets and jaeger.agent_workers must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// Decodes a gRPC `PostSpansRequest`.
pub fn decode_grpc(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    model::to_spans(proto::decode_post_spans(body, limits)?, limits)
}

/// Decodes a Thrift binary `Batch` (`POST /api/traces`).
pub fn decode_thrift_http(body: &[u8], limits: &LimitsConfig) -> Result<Decoded, DecodeError> {
    model::to_spans(thrift_batch::decode_batch(body, limits)?, limits)
}

/// Decodes an agent datagram (`emitBatch` in Thrift compact or binary).
pub fn decode_agent(
    datagram: &[u8],
    proto: thrift::Protocol,
    limits: &LimitsConfig,
) -> Result<Decoded, DecodeError> {
    model::to_spans(thrift_batch::decode_agent(datagram, proto, limits)?, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_beyond_loopback_needs_an_explicit_opt_in_when_auth_is_on() {
        let mut c = JaegerConfig {
            agent_compact_addr: "0.0.0.0:6831".into(),
            ..JaegerConfig::default()
        };
        c.validate(false).unwrap();
        let e = c.validate(true).unwrap_err().to_string();
        assert!(e.contains("agent_allow_unauthenticated"), "{e}");
        c.agent_allow_unauthenticated = true;
        c.validate(true).unwrap();
        c.agent_compact_addr = "127.0.0.1:6831".into();
        c.agent_allow_unauthenticated = false;
        c.validate(true).unwrap();
        c.grpc_addr = "localhost:1".into();
        assert!(c
            .validate(false)
            .unwrap_err()
            .to_string()
            .contains("jaeger.grpc_addr"));
        let mut d = JaegerConfig::default();
        d.enable_defaults();
        assert_eq!(d.agent_binary_addr, DEFAULT_AGENT_BINARY_ADDR);
        d.agent_max_packet_bytes = 70_000;
        assert!(d.validate(false).is_err());
    }
}
