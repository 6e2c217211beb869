//! The process's own families: the memory guard, the listeners'
//! connections and the UDP listeners' datagrams.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use super::exposition::{EncodeResult, Families, MetricType};

/// What the memory guard ([`crate::memory`]) publishes. Refusals are counted
/// in `ferrotrace_requests_failed_total{status="memory_limit"}`.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    /// Resident memory of the process at the last sample (0 = not sampled).
    pub resident_bytes: AtomicU64,
    /// `limits.memory_limit_mib` in bytes (0 = off).
    pub limit_bytes: AtomicU64,
    /// The soft limit in bytes: above it new requests are refused.
    pub soft_limit_bytes: AtomicU64,
    /// Times freed heap memory was handed back to the OS (`malloc_trim`).
    pub trims: AtomicU64,
    /// Memory reserved for decoding the requests in flight (an estimate
    /// per request from its body size; see `receiver::decode_reserve`).
    pub reserved_bytes: AtomicU64,
}

impl MemoryMetrics {
    pub(super) fn encode(&self, f: &mut Families) -> EncodeResult {
        for (name, kind, help, v) in [
            (
                "ferrotrace_memory_resident_bytes",
                MetricType::Gauge,
                "Resident memory of the collector process at the memory guard's last sample.",
                &self.resident_bytes,
            ),
            (
                "ferrotrace_memory_limit_bytes",
                MetricType::Gauge,
                "limits.memory_limit_mib in bytes (0 = no limit).",
                &self.limit_bytes,
            ),
            (
                "ferrotrace_memory_soft_limit_bytes",
                MetricType::Gauge,
                "Resident memory above which the receivers refuse new requests (requests_failed_total{status=\"memory_limit\"}).",
                &self.soft_limit_bytes,
            ),
            (
                "ferrotrace_memory_trims_total",
                MetricType::Counter,
                "Times the memory guard returned freed heap memory to the OS (glibc malloc_trim) while above the soft limit.",
                &self.trims,
            ),
            (
                "ferrotrace_memory_reserved_bytes",
                MetricType::Gauge,
                "Memory reserved for decoding the requests in flight; with the bodies in flight and resident memory it must fit under the soft limit for a request to be admitted.",
                &self.reserved_bytes,
            ),
        ] {
            f.single(name, kind, help, v.load(Relaxed))?;
        }
        Ok(())
    }
}

/// What the listeners ([`crate::listener`]) publish about connections.
#[derive(Debug, Default)]
pub struct NetMetrics {
    open: Mutex<BTreeMap<&'static str, u64>>,
    closed: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    refused: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl NetMetrics {
    /// A connection was accepted on `listener`.
    pub fn opened(&self, listener: &'static str) {
        *self.open.lock().entry(listener).or_insert(0) += 1;
    }
    /// A connection of `listener` ended (for any reason).
    pub fn ended(&self, listener: &'static str) {
        if let Some(v) = self.open.lock().get_mut(listener) {
            *v = v.saturating_sub(1);
        }
    }
    /// The collector closed a connection of `listener` for `reason`.
    pub fn closed(&self, listener: &'static str, reason: &'static str) {
        *self.closed.lock().entry((listener, reason)).or_insert(0) += 1;
    }
    /// A new connection to `listener` was closed at once for `reason`.
    pub fn refused(&self, listener: &'static str, reason: &'static str) {
        *self.refused.lock().entry((listener, reason)).or_insert(0) += 1;
    }
    /// Open connections of `listener`.
    pub fn open(&self, listener: &str) -> u64 {
        self.open.lock().get(listener).copied().unwrap_or(0)
    }
    /// Connections of `listener` the collector closed for `reason`.
    pub fn closed_count(&self, listener: &str, reason: &str) -> u64 {
        self.closed
            .lock()
            .iter()
            .filter(|((l, r), _)| *l == listener && *r == reason)
            .map(|(_, v)| *v)
            .sum()
    }

    pub(super) fn encode(&self, f: &mut Families) -> EncodeResult {
        let open: Vec<_> = self.open.lock().iter().map(|(l, v)| (*l, *v)).collect();
        f.family(
            "ferrotrace_connections_open",
            MetricType::Gauge,
            "Open client connections, by listener.",
            open.into_iter().map(|(l, v)| ([("listener", l)], v)),
        )?;
        for (name, help, map) in [
            (
                "ferrotrace_connections_closed_total",
                "Connections the collector closed, by listener and reason: header_timeout (connections.header_read_timeout_ms), http2_keepalive (a PING unanswered for connections.http2_keepalive_timeout_ms), body_timeout (connections.body_read_timeout_ms), body_too_slow (connections.min_body_rate_bytes_per_sec), idle (connections.idle_timeout_ms), evicted (the longest-idle connection, closed to make room at connections.max_per_listener or the file-descriptor budget), tls_handshake (failed or timed out).",
                &self.closed,
            ),
            (
                "ferrotrace_connections_refused_total",
                "New connections closed at once, by listener and reason: max_connections (connections.max_per_listener reached and none idle), fd_limit (RLIMIT_NOFILE minus connections.reserved_fds reached and none idle), accept_error (the accept call failed, e.g. EMFILE).",
                &self.refused,
            ),
        ] {
            let rows: Vec<_> = map.lock().iter().map(|(k, v)| (*k, *v)).collect();
            f.family(
                name,
                MetricType::Counter,
                help,
                rows.into_iter()
                    .map(|((l, r), v)| ([("listener", l), ("reason", r)], v)),
            )?;
        }
        Ok(())
    }
}

/// What one UDP listener ([`crate::receiver::jaeger::udp`]) publishes.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// Datagrams read from the socket.
    pub received: AtomicU64,
    /// Datagrams waiting for a worker now.
    pub queued: AtomicU64,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
}

impl UdpCounters {
    /// Counts a datagram dropped for `reason`.
    pub fn dropped(&self, reason: &'static str) {
        *self.dropped.lock().entry(reason).or_insert(0) += 1;
    }
    /// Datagrams dropped for `reason` so far.
    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.dropped.lock().get(reason).copied().unwrap_or(0)
    }
}

/// The UDP listeners' counters, by listener.
#[derive(Debug, Default)]
pub struct UdpMetrics {
    /// The Jaeger agent's Thrift compact port (6831).
    pub jaeger_compact: UdpCounters,
    /// The Jaeger agent's Thrift binary port (6832).
    pub jaeger_binary: UdpCounters,
}

impl UdpMetrics {
    pub(super) fn encode(&self, f: &mut Families) -> EncodeResult {
        let all = [
            ("jaeger_compact", &self.jaeger_compact),
            ("jaeger_binary", &self.jaeger_binary),
        ];
        for (name, kind, help, field) in [
            (
                "ferrotrace_udp_datagrams_received_total",
                MetricType::Counter,
                "Datagrams read from a UDP listener's socket (Jaeger agent ports), by listener.",
                (|c| &c.received) as fn(&UdpCounters) -> &AtomicU64,
            ),
            (
                "ferrotrace_udp_datagrams_queued",
                MetricType::Gauge,
                "Datagrams waiting to be decoded, by listener (at most jaeger.agent_queue_packets).",
                |c| &c.queued,
            ),
        ] {
            let rows = all.map(|(l, c)| ([("listener", l)], field(c).load(Relaxed)));
            f.family(name, kind, help, rows)?;
        }
        let mut dropped = Vec::new();
        for (l, c) in all {
            for (r, v) in c.dropped.lock().iter() {
                dropped.push(([("listener", l), ("reason", *r)], *v));
            }
        }
        f.family(
            "ferrotrace_udp_datagrams_dropped_total",
            MetricType::Counter,
            "Datagrams a UDP listener dropped (UDP cannot be told to retry), by listener and reason: too_large (over jaeger.agent_max_packet_bytes), queue_full (jaeger.agent_queue_packets waiting), memory (in-flight budget or memory limit), undecodable, too_many_spans (limits.max_spans_per_request), refused (queue or WAL full: the spans are in ferrotrace_receiver_spans_refused_total), unavailable (shutting down), read_error.",
            dropped,
        )
    }
}
