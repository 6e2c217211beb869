//! Receivers: OTLP/gRPC, OTLP/HTTP (protobuf and JSON), Zipkin (v2 JSON and
//! protobuf, v1 JSON) and Jaeger (gRPC, Thrift over HTTP, agent UDP).
//! Each decodes its wire format into [`crate::model::Span`]s once, then hands
//! them to [`Ingest::submit`], which reserves queue room, appends the request
//! to the WAL and only then acknowledges.

pub mod body;
pub mod convert;
pub mod decoding;
pub mod format;
pub mod grpc_unary;
pub mod http;
pub mod jaeger;
pub mod limits;
pub mod otlp_grpc;
pub mod otlp_json;
pub mod otlp_proto;
pub mod rpc_status;
pub mod zipkin;
pub mod zipkin_proto;
pub mod zipkin_v1;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::auth::TokenSet;
use crate::memory::{MemoryGuard, Pressure};
use crate::metrics::{Metrics, Source};
use crate::pipeline::queue::Queue;
use crate::pipeline::wal::{Wal, WalError};
use crate::pipeline::wal_only::WalOnly;
use convert::{DecodeError, Decoded};
pub use decoding::{
    decode, decode_reserve, DECODE_RESERVE_JAEGER_COMPACT, DECODE_RESERVE_JAEGER_PROTO,
    DECODE_RESERVE_JAEGER_THRIFT, DECODE_RESERVE_JSON, DECODE_RESERVE_PROTO, DECODE_RESERVE_ZIPKIN,
    DECODE_RESERVE_ZIPKIN_PROTO,
};
pub use format::RecordFormat;
pub use limits::LimitsConfig;

/// Why a submitted batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Queue or WAL full: the client should retry after the given seconds.
    #[error("collector is saturated ({0}); retry after {1} s")]
    Refused(&'static str, u64),
    /// The collector is shutting down or the WAL failed.
    #[error("collector unavailable: {0}")]
    Unavailable(String),
}

/// What an acknowledged request reports back.
#[derive(Debug, Default)]
pub struct Ack {
    /// Spans rejected as invalid.
    pub rejected: u64,
    /// Partial-success message (empty if none rejected).
    pub error_message: String,
}

/// The shared ingest path used by every receiver.
#[derive(Debug)]
pub struct Ingest {
    queue: Arc<Queue>,
    wal: Wal,
    /// Requests acknowledged into the WAL only while the queue is full.
    wal_only: Arc<WalOnly>,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// Receiver limits.
    pub limits: LimitsConfig,
    /// Retry-After seconds for refusals.
    pub retry_after_secs: u64,
    /// Tokens accepted by the receivers.
    pub tokens: TokenSet,
    /// Memory budget for request bodies in flight (`limits.max_inflight_bytes`).
    pub inflight: body::InflightBudget,
    /// The process-wide memory limit (`limits.memory_limit_mib`).
    pub memory: Arc<MemoryGuard>,
    accepting: AtomicBool,
    /// On a router: true while no backend is in the ring. A full queue or
    /// WAL is then refused with 503 / UNAVAILABLE, not 429: nothing drains
    /// it until a backend is back.
    no_downstream: std::sync::OnceLock<Arc<AtomicBool>>,
    /// On a router with `route.reslice`: OTLP protobuf requests are scanned
    /// on the wire and forwarded as bytes, never built into spans.
    reslice: AtomicBool,
}

impl Ingest {
    /// Builds the ingest path; `inflight_bytes` is the budget for request
    /// bodies in flight (`Config::memory_budgets`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: Arc<Queue>,
        wal: Wal,
        wal_only: Arc<WalOnly>,
        metrics: Arc<Metrics>,
        limits: LimitsConfig,
        inflight_bytes: usize,
        memory: Arc<MemoryGuard>,
        retry_after_secs: u64,
        tokens: TokenSet,
    ) -> Arc<Ingest> {
        Arc::new(Ingest {
            queue,
            wal,
            wal_only,
            inflight: body::InflightBudget::new(inflight_bytes, metrics.clone(), memory.clone()),
            memory,
            metrics,
            limits,
            retry_after_secs,
            tokens,
            accepting: AtomicBool::new(true),
            no_downstream: std::sync::OnceLock::new(),
            reslice: AtomicBool::new(false),
        })
    }

    /// Makes [`Ingest::decode`] scan OTLP protobuf on the wire (a router
    /// with `route.reslice`).
    pub fn set_reslice(&self, on: bool) {
        self.reslice.store(on, Relaxed);
    }

    /// Decodes a received body under the receivers' limits: on a router
    /// that re-slices, OTLP protobuf is only scanned
    /// (`otlp_proto::route_scan`), with the same errors and rejections.
    pub fn decode(&self, format: RecordFormat, body: &Bytes) -> Result<Decoded, DecodeError> {
        let t = Instant::now();
        let out = if format == RecordFormat::OtlpProto && self.reslice.load(Relaxed) {
            otlp_proto::route_scan::scan(body.clone(), &self.limits)
        } else {
            decode(format, body, &self.limits)
        };
        // One part of the acknowledgement latency (ack_seconds includes it).
        self.metrics.decode_latency.observe(t.elapsed());
        out
    }

    /// Makes refusals for a full queue or WAL answer 503 / UNAVAILABLE while
    /// `flag` is true (a router with no backend in its ring). Set once.
    pub fn set_no_downstream_flag(&self, flag: Arc<AtomicBool>) {
        let _ = self.no_downstream.set(flag);
    }

    /// A refusal because the queue or WAL is full: 429 with a retry hint,
    /// or 503 when nothing downstream will drain it (see
    /// [`Ingest::set_no_downstream_flag`]).
    fn full(&self, why: &'static str) -> SubmitError {
        if self.no_downstream.get().is_some_and(|f| f.load(Relaxed)) {
            SubmitError::Unavailable(format!(
                "{why} and no backend is in the router's ring (all failed their health checks)"
            ))
        } else {
            SubmitError::Refused(why, self.retry_after_secs)
        }
    }

    /// Stops acknowledging new requests (shutdown); they get 503 / UNAVAILABLE.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Relaxed);
    }

    /// Counts an authentication failure.
    pub fn auth_failed(&self, source: Source) {
        self.metrics.auth_failures.add("receiver", 1);
        self.metrics
            .source(source)
            .bad_requests
            .fetch_add(1, Relaxed);
    }

    /// Counts a request refused because request bodies in flight hold the
    /// whole memory budget (429 / RESOURCE_EXHAUSTED with a retry hint).
    pub fn over_budget(&self) {
        self.metrics.requests_failed.add("inflight_full", 1);
    }

    /// Counts a request refused because holding its body or decoding it
    /// would take the process over its soft memory limit (429 /
    /// RESOURCE_EXHAUSTED with a retry hint).
    pub fn memory_refused(&self) {
        self.metrics.requests_failed.add("memory_limit", 1);
    }

    /// Counts a refusal of the in-flight budget (`OverBudget`) or of the
    /// memory limit (`MemoryLimit`); other errors are not refusals.
    pub fn count_refusal(&self, e: &body::BodyError) {
        match e {
            body::BodyError::OverBudget(_) => self.over_budget(),
            body::BodyError::MemoryLimit => self.memory_refused(),
            _ => {}
        }
    }

    /// Refuses a new request, before its body is read, while the process is
    /// above its soft memory limit (counted as `memory_limit`). The caller
    /// answers like a full queue: 429 + `Retry-After` / RESOURCE_EXHAUSTED +
    /// RetryInfo.
    pub fn check_memory(&self) -> Result<(), SubmitError> {
        if self.memory.pressure() == Pressure::Normal {
            return Ok(());
        }
        self.metrics.requests_failed.add("memory_limit", 1);
        Err(SubmitError::Refused(
            "memory limit reached (limits.memory_limit_mib)",
            self.retry_after_secs,
        ))
    }

    /// Refuses a new request, before its body is read, while the process is
    /// above its soft memory limit ([`Ingest::check_memory`]) or the WAL has
    /// no room for it ([`Wal::would_be_full`]; `len_hint` is the body's
    /// `Content-Length` when known): reading and decoding a body that will
    /// be refused anyway only takes CPU from the sink. The refusal is the
    /// one the append would give (429 `write-ahead log full`, counted as
    /// `wal_full`).
    pub fn check_admission(&self, len_hint: Option<u64>) -> Result<(), SubmitError> {
        self.check_memory()?;
        if self.wal.would_be_full(len_hint.unwrap_or(0)) {
            self.metrics.requests_failed.add("wal_full", 1);
            return Err(self.full("write-ahead log full"));
        }
        Ok(())
    }

    /// Counts a request refused before decoding (bad body, limit, content type).
    pub fn bad_request(&self, source: Source, status: &str) {
        self.metrics
            .source(source)
            .bad_requests
            .fetch_add(1, Relaxed);
        self.metrics.requests_failed.add(status, 1);
    }

    /// Writes the valid spans of a decoded request to the WAL and queues them;
    /// returns once they are durable. `reserve`, the request's decoding
    /// reserve, is lowered to what the decoded spans take (decoding has
    /// ended), and to nothing once they wait in the WAL only.
    pub async fn submit(
        &self,
        source: Source,
        format: RecordFormat,
        payload: Bytes,
        decoded: Decoded,
        started: Instant,
        reserve: Option<&body::DecodeReserve>,
    ) -> Result<Ack, SubmitError> {
        if let Some(r) = reserve {
            r.settle(decoded.bytes);
        }
        let m = self.metrics.source(source);
        let n = decoded.len() as u64;
        m.received.fetch_add(n + decoded.rejected, Relaxed);
        m.rejected.fetch_add(decoded.rejected, Relaxed);
        self.metrics.dropped.add("invalid", decoded.rejected);
        self.metrics
            .attributes_dropped
            .fetch_add(decoded.attributes_dropped, Relaxed);
        self.metrics
            .attribute_values_truncated
            .fetch_add(decoded.values_truncated, Relaxed);
        self.metrics
            .attribute_depth_truncated
            .fetch_add(decoded.depth_truncated, Relaxed);
        let ack = Ack {
            rejected: decoded.rejected,
            error_message: decoded.error_message(),
        };
        if n == 0 {
            return Ok(ack);
        }
        if !self.accepting.load(Relaxed) {
            m.refused.fetch_add(n, Relaxed);
            return Err(SubmitError::Unavailable("shutting down".into()));
        }
        // Admitted before the memory went over the soft limit: dropping the
        // decoded spans now frees memory, queueing them would hold it.
        if self.memory.pressure() != Pressure::Normal {
            m.refused.fetch_add(n, Relaxed);
            self.metrics.requests_failed.add("memory_limit", 1);
            return Err(SubmitError::Refused(
                "memory limit reached (limits.memory_limit_mib)",
                self.retry_after_secs,
            ));
        }
        // Behind requests already waiting in the WAL only, a request waits
        // there too (first in, first out); otherwise it is queued if there
        // is room, or kept in the WAL only if not.
        let direct = if self.wal_only.is_active() {
            None
        } else {
            self.queue.try_reserve(n, decoded.bytes)
        };
        let admitted = match direct {
            Some(r) => Ok(r),
            None => match self.wal_only.try_admit() {
                Some(a) => Err(a),
                None => {
                    m.refused.fetch_add(n, Relaxed);
                    self.metrics.requests_failed.add("queue_full", 1);
                    return Err(self.full("queue full"));
                }
            },
        };
        match self.wal.append(format, n as u32, payload).await {
            Ok(pos) => {
                match admitted {
                    Ok(reservation) => reservation.push_with_wire(pos, decoded.spans, decoded.wire),
                    // The decoded spans are dropped here: the WAL holds them,
                    // and this request holds no more than its body now.
                    Err(admission) => {
                        admission.push(pos, n);
                        drop(decoded.spans);
                        drop(decoded.wire);
                        if let Some(r) = reserve {
                            r.settle(0);
                        }
                    }
                }
                m.accepted.fetch_add(n, Relaxed);
                self.metrics.ack_latency.observe(started.elapsed());
                Ok(ack)
            }
            Err(WalError::Full(_)) => {
                m.refused.fetch_add(n, Relaxed);
                self.metrics.requests_failed.add("wal_full", 1);
                Err(self.full("write-ahead log full"))
            }
            Err(WalError::Busy) => {
                m.refused.fetch_add(n, Relaxed);
                self.metrics.requests_failed.add("wal_busy", 1);
                Err(SubmitError::Refused(
                    "write-ahead log busy",
                    self.retry_after_secs,
                ))
            }
            Err(e) => {
                m.refused.fetch_add(n, Relaxed);
                self.metrics.requests_failed.add("wal_error", 1);
                Err(SubmitError::Unavailable(e.to_string()))
            }
        }
    }
}
