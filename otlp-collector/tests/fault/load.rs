//! Concurrent senders of OTLP exports shaped like the official exporters'
//! (one resource, one scope, spans with attributes, an event and a link),
//! half over OTLP/HTTP protobuf and half over OTLP/gRPC, each with one
//! request in flight. Every request is one whole trace; its id is recorded
//! only when the collector acknowledged it. A request that was not
//! acknowledged (refused, or the connection failed) is sent again with the
//! same trace, as an exporter retries, so a collector that stored it anyway
//! must not store it twice.
//!
//! Refusals are checked as they come: a 429 must carry `Retry-After` and a
//! `google.rpc.Status` with `RetryInfo`, a gRPC `RESOURCE_EXHAUSTED` must
//! carry `RetryInfo`; anything else (a 400, a 500, a partial success for
//! valid spans) is recorded as unexpected and fails the test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferrotrace_collector::receiver::rpc_status::{RetryInfo, RpcStatus};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use parking_lot::Mutex;
use prost::Message;

use crate::ingest_util::request_with;

/// What became of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200 / OK: the collector promised the spans are durable.
    Acked,
    /// 429 / `RESOURCE_EXHAUSTED` with its retry hints (backpressure).
    Exhausted(String),
    /// 503 / `UNAVAILABLE` answered by the collector (a full disk, shutdown).
    Unavailable(String),
    /// No answer: connection refused or reset, or a timeout.
    Transport(String),
    /// Anything a correct collector must not answer to a valid export.
    Unexpected(String),
}

/// One request's outcome and when it was answered.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: Instant,
    pub trace: u32,
    pub outcome: Outcome,
    /// Start time of the request's first span (ns since the epoch); the
    /// spans of one request start within microseconds of it.
    pub start_ns: u64,
}

/// How the senders behave.
#[derive(Clone, Copy, Debug)]
pub struct LoadShape {
    /// Concurrent senders; even ones use HTTP, odd ones gRPC.
    pub senders: u32,
    /// Spans per request (one trace per request).
    pub spans: u32,
    /// Each sender starts a request every this often (open loop) instead of
    /// as soon as the previous one is answered.
    pub interval: Option<Duration>,
    /// Pause after a request that was not acknowledged.
    pub retry_pause: Duration,
    /// Trace numbers start above this (so that loads do not collide).
    pub base: u32,
}

impl LoadShape {
    /// `senders` closed-loop senders of `spans`-span traces, retrying after 20 ms.
    pub fn closed(senders: u32, spans: u32) -> LoadShape {
        LoadShape {
            senders,
            spans,
            interval: None,
            retry_pause: Duration::from_millis(20),
            base: 0,
        }
    }
}

/// Running senders; [`Load::stop`] ends them and returns every event.
pub struct Load {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub shape: LoadShape,
    pub started: Instant,
}

impl Load {
    /// Starts the senders against the collector's OTLP/HTTP and gRPC ports.
    pub fn start(http: SocketAddr, grpc: SocketAddr, shape: LoadShape) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let tasks = (0..shape.senders)
            .map(|w| {
                let (stop, events) = (stop.clone(), events.clone());
                tokio::spawn(sender(w, http, grpc, shape, stop, events))
            })
            .collect();
        Load {
            stop,
            events,
            tasks,
            shape,
            started: Instant::now(),
        }
    }

    /// Events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// Requests acknowledged so far.
    pub fn acked(&self) -> usize {
        self.events
            .lock()
            .iter()
            .filter(|e| e.outcome == Outcome::Acked)
            .count()
    }

    /// Stops the senders, waits for their last requests, and returns every
    /// event. Fails on an unexpected answer.
    pub async fn stop(self) -> Vec<Event> {
        self.stop.store(true, SeqCst);
        for t in self.tasks {
            t.await.expect("sender task");
        }
        let events = std::mem::take(&mut *self.events.lock());
        let unexpected: Vec<_> = events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Unexpected(_)))
            .take(5)
            .collect();
        assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
        events
    }
}

/// Trace numbers acknowledged in `events`; fails if one was acknowledged twice.
pub fn acked_traces(events: &[Event]) -> Vec<u32> {
    let mut acked: Vec<u32> = events
        .iter()
        .filter(|e| e.outcome == Outcome::Acked)
        .map(|e| e.trace)
        .collect();
    acked.sort_unstable();
    let n = acked.len();
    acked.dedup();
    assert_eq!(n, acked.len(), "a trace was acknowledged twice");
    acked
}

/// The acknowledged traces of `events`, each with the earliest start time
/// any request of it carried (a resend moves the timestamps to its own
/// time; an earlier attempt may have been stored).
pub fn acked_with_start(events: &[Event]) -> Vec<(u32, u64)> {
    let mut earliest: std::collections::HashMap<u32, u64> = Default::default();
    for e in events {
        let v = earliest.entry(e.trace).or_insert(e.start_ns);
        *v = (*v).min(e.start_ns);
    }
    acked_traces(events)
        .into_iter()
        .map(|t| (t, earliest[&t]))
        .collect()
}

/// Counts of acknowledged, exhausted, unavailable and transport outcomes.
pub fn counts(events: &[Event]) -> [usize; 4] {
    let mut c = [0; 4];
    for e in events {
        match e.outcome {
            Outcome::Acked => c[0] += 1,
            Outcome::Exhausted(_) => c[1] += 1,
            Outcome::Unavailable(_) => c[2] += 1,
            Outcome::Transport(_) => c[3] += 1,
            Outcome::Unexpected(_) => {}
        }
    }
    c
}

/// `request_with(t, n)` with its timestamps moved to now, so that retention
/// and time-partitioned sinks treat the spans as fresh.
pub fn export(t: u32, n: u32) -> ExportTraceServiceRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let shift = now - 1_700_000_001_000_000_000;
    let mut req = request_with(t, n);
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.start_time_unix_nano += shift;
        s.end_time_unix_nano += shift;
        for e in &mut s.events {
            e.time_unix_nano += shift;
        }
    }
    req
}

async fn sender(
    w: u32,
    http: SocketAddr,
    grpc: SocketAddr,
    shape: LoadShape,
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let mut grpc_client = TraceServiceClient::new(channel);
    let mut t = shape.base + w * 10_000_000 + 1;
    let start = Instant::now();
    let mut n = 0u32;
    while !stop.load(SeqCst) {
        if let Some(every) = shape.interval {
            let mut due = start + every * n;
            let now = Instant::now();
            if now > due + Duration::from_secs(1) {
                // Far behind: start the schedule again rather than burst.
                n = ((now - start).as_nanos() / every.as_nanos()) as u32;
                due = start + every * n;
            }
            tokio::time::sleep_until(due.into()).await;
            n += 1;
        }
        let req = export(t, shape.spans);
        let start_ns = req.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano;
        let outcome = if w.is_multiple_of(2) {
            send_http(&client, http, &req).await
        } else {
            send_grpc(&mut grpc_client, req).await
        };
        let acked = outcome == Outcome::Acked;
        events.lock().push(Event {
            at: Instant::now(),
            trace: t,
            outcome,
            start_ns,
        });
        if acked {
            t += 1;
        } else if shape.interval.is_none() {
            tokio::time::sleep(shape.retry_pause).await;
        }
    }
}

fn check_partial_success(body: &[u8]) -> Outcome {
    match ExportTraceServiceResponse::decode(body) {
        Ok(r)
            if r.partial_success
                .as_ref()
                .is_none_or(|p| p.rejected_spans == 0) =>
        {
            Outcome::Acked
        }
        Ok(r) => Outcome::Unexpected(format!("partial success: {:?}", r.partial_success)),
        Err(e) => Outcome::Unexpected(format!("undecodable 200 body: {e}")),
    }
}

async fn send_http(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    addr: SocketAddr,
    req: &ExportTraceServiceRequest,
) -> Outcome {
    let request = http::Request::post(format!("http://{addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(req.encode_to_vec())))
        .expect("request");
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let resp = client.request(request).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").cloned();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, retry_after, body))
    })
    .await;
    let (status, retry_after, body) = match answer {
        Err(_) => return Outcome::Transport("timeout".into()),
        Ok(Err(e)) => return Outcome::Transport(e),
        Ok(Ok(a)) => a,
    };
    // Refusals carry a `google.rpc.Status` in the request's encoding
    // (protobuf here); show its message.
    let text = || {
        RpcStatus::decode(body.as_ref())
            .map(|s| s.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned())
    };
    match status {
        200 => check_partial_success(&body),
        429 => {
            let hint = RpcStatus::decode(body.as_ref())
                .ok()
                .and_then(|s| s.details.first().cloned())
                .and_then(|d| RetryInfo::decode(d.value.as_slice()).ok())
                .and_then(|r| r.retry_delay);
            match (retry_after, hint) {
                (Some(_), Some(_)) => Outcome::Exhausted(text()),
                _ => {
                    Outcome::Unexpected(format!("429 without Retry-After or RetryInfo: {}", text()))
                }
            }
        }
        503 => Outcome::Unavailable(text()),
        s => Outcome::Unexpected(format!("HTTP {s}: {}", text())),
    }
}

async fn send_grpc(
    client: &mut TraceServiceClient<tonic::transport::Channel>,
    req: ExportTraceServiceRequest,
) -> Outcome {
    match client.export(req).await {
        Ok(r) => match r.into_inner().partial_success {
            Some(p) if p.rejected_spans > 0 => {
                Outcome::Unexpected(format!("partial success: {p:?}"))
            }
            _ => Outcome::Acked,
        },
        // A status with a source error was made by the client's transport
        // (connection refused or reset), not answered by the collector.
        Err(e) if std::error::Error::source(&e).is_some() => {
            Outcome::Transport(format!("{:?}: {}", e.code(), e.message()))
        }
        Err(e) => match e.code() {
            tonic::Code::ResourceExhausted => {
                let hint = RpcStatus::decode(e.details())
                    .ok()
                    .and_then(|s| {
                        s.details
                            .into_iter()
                            .find(|d| d.type_url == "type.googleapis.com/google.rpc.RetryInfo")
                    })
                    .and_then(|d| RetryInfo::decode(d.value.as_slice()).ok())
                    .and_then(|r| r.retry_delay);
                match hint {
                    Some(_) => Outcome::Exhausted(e.message().to_string()),
                    None => {
                        Outcome::Unexpected(format!("RESOURCE_EXHAUSTED without RetryInfo: {e:?}"))
                    }
                }
            }
            tonic::Code::Unavailable => Outcome::Unavailable(e.message().to_string()),
            _ => Outcome::Unexpected(format!("gRPC {e:?}")),
        },
    }
}
