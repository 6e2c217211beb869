//! The forwarding sink: a [`SpanWriter`] that splits a batch by the ring's
//! owner of each trace id and exports each part to its backend over
//! OTLP/gRPC, succeeding only when every part was acknowledged. The
//! pipeline's sink task (`pipeline/sink.rs`) then gives at-least-once
//! forwarding for free: a failed write is retried with backoff (regrouped
//! by the ring of that moment) while the WAL holds the batch, and the WAL
//! releases it only after success.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::uri::PathAndQuery;
use parking_lot::Mutex;
use prost::Message;
use tonic::Code;

use super::codec::{ForwardBody, ForwardCodec};
use super::encode;
use super::membership::{Member, Membership};
use super::recent::{Acked, TraceOwners};
use crate::metrics::{RouteMetrics, ROUTE_LABEL_SEP};
use crate::model::{Span, SpanId, TraceId};
use crate::receiver::otlp_grpc::EXPORT_PATH;
use crate::receiver::otlp_proto::wire_request::WireRequest;
use crate::rollup::{RollupBatch, RollupOrigin};
use crate::storage::{SpanWriter, StorageError, StorageResult};

/// Forwards span batches to the ring's backends.
pub struct Forwarder {
    membership: Arc<Membership>,
    metrics: Arc<RouteMetrics>,
    max_spans_per_request: usize,
    acked: Mutex<Acked>,
    owners: Mutex<TraceOwners>,
    /// `Bearer <route.token_file>` for backends that require a token.
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

/// What a backend's gRPC status means for the batch: every code the
/// backend or the transport gives for "not now" is retryable (the WAL holds
/// the spans); only a request the backend can never take (INVALID_ARGUMENT
/// and the like: a bug or mismatched limits) is not.
fn classify(backend: &str, s: &tonic::Status) -> StorageError {
    let what = format!("backend {backend} answered {:?}: {}", s.code(), s.message());
    match s.code() {
        Code::ResourceExhausted => StorageError::Unavailable(format!(
            "{what} (the backend is saturated; spans wait in the router's WAL)"
        )),
        Code::InvalidArgument
        | Code::Unimplemented
        | Code::OutOfRange
        | Code::FailedPrecondition => StorageError::Backend(what),
        // Unauthenticated/PermissionDenied are configuration to fix; the WAL holds meanwhile.
        _ => StorageError::Unavailable(what),
    }
}

impl Forwarder {
    /// A forwarder over `membership`'s ring; fails if `route.token_file`
    /// cannot be read.
    pub fn new(
        membership: Arc<Membership>,
        metrics: Arc<RouteMetrics>,
        cfg: &super::RouteConfig,
    ) -> Result<Forwarder, super::RouteConfigError> {
        let authorization = match cfg.token()? {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                super::RouteConfigError(
                    "route.token_file: the token is not a valid header value".into(),
                )
            })?),
            None => None,
        };
        Ok(Forwarder {
            authorization,
            membership,
            metrics,
            max_spans_per_request: cfg.max_spans_per_request.max(1),
            acked: Mutex::new(Acked::new(cfg.acked_spans)),
            owners: Mutex::new(TraceOwners::new(cfg.recent_traces)),
        })
    }

    /// Exports one request (`body`, written as an `ExportTraceServiceRequest`
    /// by the codec) to `m`; the number of spans it rejected as invalid.
    async fn send(&self, m: &Member, body: ForwardBody) -> Result<u64, StorageError> {
        let mut grpc = tonic::client::Grpc::new(m.channel.clone())
            // The backend's own receiver limit applies; this only lifts tonic's 4 MiB default.
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let mut req = tonic::Request::new(body);
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        let sent = match grpc.ready().await {
            Ok(()) => {
                grpc.unary(req, PathAndQuery::from_static(EXPORT_PATH), ForwardCodec)
                    .await
            }
            Err(e) => Err(tonic::Status::unavailable(format!(
                "cannot connect to the backend: {e}"
            ))),
        };
        match sent {
            Ok(r) => Ok(r
                .into_inner()
                .partial_success
                .map_or(0, |p| p.rejected_spans.max(0) as u64)),
            Err(s) => {
                self.metrics.forward_failures.add(
                    &format!("{}{ROUTE_LABEL_SEP}{:?}", m.addr.grpc, s.code()),
                    1,
                );
                Err(classify(&m.addr.grpc, &s))
            }
        }
    }

    /// Forwards `spans` and the spans of `wire` to the backends owning
    /// their traces, succeeding only when every part was acknowledged.
    async fn forward(&self, spans: &[Span], wire: &[Arc<WireRequest>]) -> StorageResult<()> {
        let ring = self.membership.ring();
        if ring.members.is_empty() {
            return Err(StorageError::Unavailable(
                "no backend is in the ring; spans wait in the router's write-ahead log".into(),
            ));
        }
        let all = spans.iter().map(Item::Built).chain(
            wire.iter()
                .flat_map(|w| (0..w.spans.len()).map(move |i| Item::Wire(w, i))),
        );
        // Group by owner, skipping what a backend already acknowledged in an
        // earlier attempt of this batch.
        let mut groups: Vec<Vec<Item<'_>>> = vec![Vec::new(); ring.members.len()];
        {
            let acked = self.acked.lock();
            // Spans of one trace tend to come together (an SDK batches a
            // request's spans, the load generator sends whole traces): the
            // previous span's owner saves scoring every backend again.
            let mut last: Option<(TraceId, Option<usize>)> = None;
            for item in all.clone() {
                let ids = item.ids();
                if !acked.is_empty() && acked.contains(&ids) {
                    continue;
                }
                let owner = match last {
                    Some((t, o)) if t == ids.0 => o,
                    _ => {
                        let o = ring.owner(&ids.0);
                        last = Some((ids.0, o));
                        o
                    }
                };
                if let Some(i) = owner {
                    groups[i].push(item);
                }
            }
        }
        let parts: Vec<(usize, &[Item<'_>])> = groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.chunks(self.max_spans_per_request).map(move |c| (i, c)))
            .collect();
        let results = futures_util::future::join_all(
            parts
                .iter()
                .map(|(i, chunk)| self.send(&ring.members[*i], encode_items(chunk))),
        )
        .await;
        let failed = results.iter().any(Result::is_err);
        let mut first_err = None;
        let mut splits = 0u64;
        {
            let mut owners = self.owners.lock();
            let mut acked = self.acked.lock();
            for ((i, chunk), r) in parts.iter().zip(results) {
                let m = &ring.members[*i];
                match r {
                    Ok(rejected) => {
                        self.metrics.forwarded.add(
                            &m.addr.grpc,
                            chunk.len() as u64 - rejected.min(chunk.len() as u64),
                        );
                        self.metrics.rejected.add(&m.addr.grpc, rejected);
                        let mut last = None;
                        for item in chunk.iter() {
                            let (trace, span) = item.ids();
                            if last != Some(trace) {
                                last = Some(trace);
                                splits += u64::from(owners.record(trace, m.seed));
                            }
                            if failed {
                                acked.insert((trace, span));
                            }
                        }
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if !failed && !acked.is_empty() {
                // The batch is done: nothing of it will be retried.
                for item in all {
                    acked.forget(&item.ids());
                }
            }
            let forgotten = std::mem::take(&mut acked.evicted);
            self.metrics.acked_forgotten.fetch_add(forgotten, Relaxed);
        }
        self.metrics.split_traces.fetch_add(splits, Relaxed);
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// One span to forward: built into the model (other protocols, WAL
/// replay), or found on the wire in an OTLP protobuf request.
#[derive(Clone, Copy)]
enum Item<'a> {
    Built(&'a Span),
    Wire(&'a Arc<WireRequest>, usize),
}

impl Item<'_> {
    fn ids(&self) -> (TraceId, SpanId) {
        match self {
            Item::Built(s) => (s.trace_id, s.span_id),
            Item::Wire(w, i) => (w.spans[*i].trace_id, w.spans[*i].span_id),
        }
    }
}

/// One `ExportTraceServiceRequest` holding `items`: built spans encoded
/// here, wire spans copied with their framing by the codec when tonic
/// encodes the request (straight into its buffer).
fn encode_items(items: &[Item<'_>]) -> ForwardBody {
    let built: Vec<&Span> = items
        .iter()
        .filter_map(|i| match i {
            Item::Built(s) => Some(*s),
            Item::Wire(..) => None,
        })
        .collect();
    let mut body = if built.is_empty() {
        ForwardBody::default()
    } else {
        ForwardBody::from(Bytes::from(encode::request(&built).encode_to_vec()))
    };
    for i in items {
        if let Item::Wire(w, s) = i {
            body.push_wire(w, *s);
        }
    }
    body
}

#[async_trait]
impl SpanWriter for Forwarder {
    fn name(&self) -> &'static str {
        "route"
    }

    fn ready(&self) -> Result<(), String> {
        if self.membership.ring().members.is_empty() {
            Err(
                "no backend is in the ring (none passed its /readyz check yet, or all \
                 failed route.unhealthy_after checks); spans wait in the write-ahead log"
                    .into(),
            )
        } else {
            Ok(())
        }
    }

    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        self.forward(spans, &[]).await
    }

    async fn write_spans_and_wire(
        &self,
        spans: &[Span],
        wire: &[Arc<WireRequest>],
    ) -> StorageResult<()> {
        self.forward(spans, wire).await
    }

    /// A router keeps no rollups: its pipeline computes none (the backends
    /// compute them from every span they receive), so this is never called
    /// with anything to store.
    async fn write_rollups(&self, _rollups: &RollupBatch) -> StorageResult<()> {
        Ok(())
    }

    async fn rollup_origins(
        &self,
        _instance: u64,
        _segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        Ok(Vec::new())
    }

    async fn prune_rollup_origins(&self, _instance: u64, _below: u64) -> StorageResult<u64> {
        Ok(0)
    }
}
