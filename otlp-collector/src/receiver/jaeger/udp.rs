//! The Jaeger agent's UDP ports: each datagram is one Thrift
//! `Agent.emitBatch(Batch)` call, in the compact protocol (Jaeger's port
//! 6831) or the binary one (6832).
//!
//! UDP cannot acknowledge or push back, so this receiver never blocks and
//! drops instead, counting every drop
//! (`ferrotrace_udp_datagrams_dropped_total{listener, reason}`):
//!
//! - one task reads the socket into a buffer of `agent_max_packet_bytes` + 1
//!   bytes: a datagram that fills it was larger than the limit and is
//!   dropped (`too_large`);
//! - each datagram's bytes are charged to the in-flight budget
//!   (`limits.max_inflight_bytes`) and it waits in a queue of
//!   `agent_queue_packets` datagrams; with the budget used up, memory above
//!   its soft limit, or the queue full, the datagram is dropped (`memory`,
//!   `queue_full`) — the read loop never waits for anything but the socket;
//! - `agent_workers` tasks decode datagrams and write them to the WAL
//!   ([`Ingest::submit`], the same path as every receiver): an undecodable
//!   datagram is dropped (`undecodable`, `too_many_spans`; also in
//!   `ferrotrace_receiver_bad_requests_total`), and one refused because the
//!   queue or WAL is full or memory is short is dropped (`refused`; its spans
//!   in `ferrotrace_receiver_spans_refused_total`) where a TCP client would
//!   have been told to retry.
//!
//! While the workers are behind, datagrams also wait in the kernel's socket
//! buffer (`agent_socket_buffer_bytes`, else the system default), and what
//! overflows it is dropped by the kernel, unseen here (Linux counts it in
//! `/proc/net/snmp`, `Udp: RcvbufErrors`). Spans that reached the WAL are
//! as durable as any other.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Mutex};

use super::thrift::Protocol;
use super::JaegerConfig;
use crate::memory::Pressure;
use crate::metrics::{Source, UdpCounters};
use crate::receiver::body::InflightGuard;
use crate::receiver::convert::DecodeError;
use crate::receiver::format::RecordFormat;
use crate::receiver::{decode, decode_reserve, Ingest, SubmitError};

/// Which agent port: its protocol, WAL format, metrics source and name.
#[derive(Clone, Copy, Debug)]
pub struct Agent {
    /// Thrift protocol of the datagrams.
    pub protocol: Protocol,
    /// How the WAL stores them.
    pub format: RecordFormat,
    /// Receiver metrics source.
    pub source: Source,
    /// `listener` label (and the name in logs and bind errors).
    pub name: &'static str,
}

/// Port 6831: Thrift compact.
pub const COMPACT: Agent = Agent {
    protocol: Protocol::Compact,
    format: RecordFormat::JaegerAgentCompact,
    source: Source::JaegerAgentCompact,
    name: "jaeger_compact",
};

/// Port 6832: Thrift binary.
pub const BINARY: Agent = Agent {
    protocol: Protocol::Binary,
    format: RecordFormat::JaegerAgentBinary,
    source: Source::JaegerAgentBinary,
    name: "jaeger_binary",
};

impl Agent {
    fn counters(self, ing: &Ingest) -> &UdpCounters {
        match self.protocol {
            Protocol::Compact => &ing.metrics.udp.jaeger_compact,
            Protocol::Binary => &ing.metrics.udp.jaeger_binary,
        }
    }
}

/// Binds a UDP socket (inside a tokio runtime), with `SO_RCVBUF` set to
/// `socket_buffer` bytes unless 0.
pub fn bind(addr: &str, socket_buffer: usize) -> std::io::Result<UdpSocket> {
    let sock = std::net::UdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    if socket_buffer > 0 {
        set_receive_buffer(&sock, socket_buffer)?;
    }
    UdpSocket::from_std(sock)
}

fn set_receive_buffer(sock: &std::net::UdpSocket, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is the open socket; the option value is a c_int that
    // lives across the call, and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

struct Packet {
    data: Bytes,
    /// The datagram's charge to the in-flight budget.
    guard: InflightGuard,
}

async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    // A dropped sender means the collector is gone: stop too.
    let _ = rx.wait_for(|v| *v).await;
}

/// Serves one agent port until `shutdown` turns true; then lets the workers
/// finish what is queued (they answer nobody, so this is quick) and returns.
pub async fn serve(
    sock: UdpSocket,
    agent: Agent,
    ing: Arc<Ingest>,
    cfg: JaegerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel::<Packet>(cfg.agent_queue_packets);
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..cfg.agent_workers)
        .map(|_| tokio::spawn(worker(rx.clone(), ing.clone(), agent)))
        .collect();
    let c = agent.counters(&ing);
    let max = cfg.agent_max_packet_bytes;
    let mut buf = vec![0u8; max + 1];
    loop {
        let got = tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => break,
            r = sock.recv_from(&mut buf) => r,
        };
        let n = match got {
            Ok((n, _from)) => n,
            Err(e) => {
                c.dropped("read_error");
                tracing::debug!(listener = agent.name, error = %e, "UDP receive failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        c.received.fetch_add(1, Relaxed);
        if n > max {
            c.dropped("too_large");
            continue;
        }
        if ing.memory.pressure() != Pressure::Normal {
            c.dropped("memory");
            continue;
        }
        let mut guard = ing.inflight.guard();
        if guard.charge(n).is_err() {
            c.dropped("memory");
            continue;
        }
        let pkt = Packet {
            data: Bytes::copy_from_slice(&buf[..n]),
            guard,
        };
        match tx.try_send(pkt) {
            Ok(()) => {
                c.queued.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => c.dropped("queue_full"),
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.await;
    }
}

async fn worker(rx: Arc<Mutex<mpsc::Receiver<Packet>>>, ing: Arc<Ingest>, agent: Agent) {
    let c = agent.counters(&ing);
    loop {
        let next = rx.lock().await.recv().await;
        let Some(Packet { data, mut guard }) = next else {
            break;
        };
        c.queued.fetch_sub(1, Relaxed);
        let started = Instant::now();
        if guard
            .reserve(decode_reserve(agent.format, data.len()))
            .is_err()
        {
            c.dropped("memory");
            continue;
        }
        let decoded = match decode(agent.format, &data, &ing.limits) {
            Ok(d) => d,
            Err(e) => {
                c.dropped(match e {
                    DecodeError::Malformed(_) => "undecodable",
                    DecodeError::TooManySpans { .. } => "too_many_spans",
                });
                ing.metrics
                    .source(agent.source)
                    .bad_requests
                    .fetch_add(1, Relaxed);
                tracing::debug!(listener = agent.name, error = %e, "UDP datagram dropped");
                continue;
            }
        };
        match ing
            .submit(
                agent.source,
                agent.format,
                data,
                decoded,
                started,
                Some(&guard.decode_reserve()),
            )
            .await
        {
            Ok(ack) => {
                if ack.rejected > 0 {
                    tracing::debug!(listener = agent.name, rejected = ack.rejected, message = %ack.error_message, "jaeger agent spans rejected");
                }
            }
            Err(SubmitError::Refused(..)) => c.dropped("refused"),
            Err(SubmitError::Unavailable(_)) => c.dropped("unavailable"),
        }
        drop(guard);
    }
}
