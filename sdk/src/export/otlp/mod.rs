//! OTLP exporters: gRPC (tonic), HTTP/protobuf and HTTP/JSON (hyper), with
//! optional gzip, retry with exponential backoff, and a circuit breaker.
//!
//! The exporter owns a small tokio current-thread runtime on a dedicated
//! thread; [`SpanExporter::export`] hands the encoded batch to that thread and
//! waits on a std channel. It never enters the caller's runtime, so it works
//! from plain threads and from inside any tokio runtime alike.
//!
//! ```no_run
//! use ferrotrace::export::batch::BatchSpanProcessor;
//! use ferrotrace::export::otlp::{OtlpExporter, Protocol};
//!
//! // Reads OTEL_EXPORTER_OTLP_* first; builder methods override.
//! let exporter = OtlpExporter::builder()
//!     .with_protocol(Protocol::Grpc)
//!     .with_endpoint("http://collector:4317")
//!     .build()
//!     .expect("valid OTLP configuration");
//! let processor = BatchSpanProcessor::builder(exporter).build();
//! # drop(processor);
//! ```

pub mod config;
pub mod encode;
#[cfg(feature = "otlp-grpc")]
pub mod grpc;
pub mod hint;
#[cfg(feature = "otlp-http")]
pub mod http;
#[cfg(feature = "otlp-http")]
pub mod json;
pub mod proto;
pub mod rpc;

use std::io::Write;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use self::proto::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use prost::Message;

use self::config::Settings;
#[cfg(feature = "tls")]
pub use self::config::{CaCertificate, ClientIdentity};
pub use self::config::{Compression, ConfigError, OtlpConfig, Protocol};
pub use self::encode::encode_request;
use super::breaker::{BreakerConfig, CircuitBreaker, Permit};
use super::retry::{AttemptError, RetryPolicy};
use super::stats::ExportStats;
use super::{ExportError, ExportResult, SpanData, SpanExporter};

/// Extra time `export` waits for the runtime thread beyond the configured
/// timeout, so the thread's own timeout fires first and reports the cause.
const REPLY_GRACE: Duration = Duration::from_secs(2);

/// Builds an [`OtlpExporter`]. Starts from the `OTEL_EXPORTER_OTLP_*`
/// variables (see [`OtlpExporter::builder`]); every method overrides them.
pub struct OtlpExporterBuilder {
    settings: Result<Settings, ConfigError>,
    stats: ExportStats,
}

impl OtlpExporterBuilder {
    fn update(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        if let Ok(s) = &mut self.settings {
            f(s);
        }
        self
    }
    /// Sets the protocol (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`).
    pub fn with_protocol(self, protocol: Protocol) -> Self {
        self.update(|s| s.protocol = Some(protocol))
    }
    /// Sets the full endpoint URL, used as-is (no `/v1/traces` is appended);
    /// a bare `host:port` gets `http://`.
    pub fn with_endpoint(self, endpoint: impl Into<String>) -> Self {
        let e = endpoint.into();
        self.update(|s| s.endpoint = Some((e, true)))
    }
    /// Sets a base endpoint the way `OTEL_EXPORTER_OTLP_ENDPOINT` is read:
    /// for HTTP the signal path `/v1/traces` is appended (`http://host:4318`
    /// → `http://host:4318/v1/traces`); for gRPC it is used as-is. A bare
    /// `host:port` gets `http://`. Use this for a "collector address" option;
    /// use [`with_endpoint`](Self::with_endpoint) for a full URL.
    pub fn with_base_endpoint(self, endpoint: impl Into<String>) -> Self {
        let e = endpoint.into();
        self.update(|s| s.endpoint = Some((e, false)))
    }
    /// Adds or replaces one request header / gRPC metadata entry.
    pub fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (n, v) = (name.into(), value.into());
        self.update(|s| config::set_header(&mut s.headers, n, v))
    }
    /// Sets the time budget for one batch export, retries included
    /// (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, default 10 s).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.update(|s| s.timeout = Some(timeout))
    }
    /// Sets body compression (`OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`).
    pub fn with_compression(self, compression: Compression) -> Self {
        self.update(|s| s.compression = Some(compression))
    }
    /// Sets the retry policy (default: 3 attempts, 100 ms doubling, 20 % jitter).
    pub fn with_retry_policy(self, retry: RetryPolicy) -> Self {
        self.update(|s| s.retry = retry)
    }
    /// Sets the circuit breaker (default: opens after 5 failed exports for 30 s).
    pub fn with_breaker(self, breaker: BreakerConfig) -> Self {
        self.update(|s| s.breaker = breaker)
    }
    /// Trusts only the CA certificates in this PEM bundle (instead of the
    /// webpki roots) for `https` endpoints, over gRPC and HTTP. Overrides
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`. Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn with_ca_certificate_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        let pem = pem.into();
        self.update(|s| s.ca_certificate = Some(config::CaSource::Pem(pem)))
    }
    /// Like [`with_ca_certificate_pem`](Self::with_ca_certificate_pem), with
    /// the PEM bundle read from `path` when the exporter is built (the same as
    /// `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`). Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn with_ca_certificate_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        let path = path.into();
        self.update(|s| s.ca_certificate = Some(config::CaSource::File { path, var: None }))
    }
    /// Presents this client certificate chain and private key (PEM) to
    /// `https` endpoints that ask for one (mTLS), over gRPC and HTTP.
    /// Overrides `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` / `..._CLIENT_KEY`.
    /// Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn with_client_identity_pem(
        self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        let (cert, key) = (cert_pem.into(), key_pem.into());
        self.update(|s| s.client_identity = Some(config::IdentitySource::Pem { cert, key }))
    }
    /// Like [`with_client_identity_pem`](Self::with_client_identity_pem),
    /// read from files when the exporter is built. Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn with_client_identity_files(
        self,
        cert_path: impl Into<std::path::PathBuf>,
        key_path: impl Into<std::path::PathBuf>,
    ) -> Self {
        let (cert, key) = (cert_path.into(), key_path.into());
        self.update(|s| {
            s.client_identity = Some(config::IdentitySource::Files {
                cert: (cert, None),
                key: (key, None),
            })
        })
    }
    /// For a gRPC endpoint given without a scheme (`collector:4317`): `true`
    /// sends plain text, `false` TLS (`OTEL_EXPORTER_OTLP_TRACES_INSECURE`;
    /// the OpenTelemetry default is `false`). An `http://` or `https://`
    /// endpoint decides by itself.
    pub fn with_insecure(self, insecure: bool) -> Self {
        self.update(|s| s.insecure = Some(insecure))
    }
    /// Uses these counters instead of [`ExportStats::global`].
    pub fn with_stats(mut self, stats: ExportStats) -> Self {
        self.stats = stats;
        self
    }
    /// The configuration `build` would use.
    pub fn config(&self) -> Result<OtlpConfig, ConfigError> {
        self.settings.as_ref().map_err(Clone::clone)?.resolve()
    }

    /// Validates the configuration and starts the exporter's runtime thread.
    pub fn build(self) -> Result<OtlpExporter, ConfigError> {
        let config = self.config()?;
        match config.protocol {
            Protocol::Grpc if !cfg!(feature = "otlp-grpc") => {
                return Err(ConfigError::FeatureDisabled {
                    what: "protocol grpc".into(),
                    feature: "otlp-grpc",
                })
            }
            Protocol::HttpProtobuf | Protocol::HttpJson if !cfg!(feature = "otlp-http") => {
                return Err(ConfigError::FeatureDisabled {
                    what: "protocol http/protobuf or http/json".into(),
                    feature: "otlp-http",
                })
            }
            _ => {}
        }
        let (job_tx, job_rx) = bounded::<Job>(1);
        let (init_tx, init_rx) = bounded::<Result<(), ConfigError>>(1);
        let thread_config = config.clone();
        let stats = self.stats.clone();
        thread::Builder::new()
            .name("ferrotrace-otlp".into())
            .spawn(move || runtime_thread(thread_config, job_rx, init_tx, stats))
            .map_err(|e| ConfigError::Runtime(e.to_string()))?;
        init_rx.recv().map_err(|_| {
            ConfigError::Runtime("the exporter thread exited during setup".into())
        })??;
        Ok(OtlpExporter {
            breaker: Arc::new(CircuitBreaker::new(config.breaker, self.stats.clone())),
            config,
            jobs: Mutex::new(Some(job_tx)),
            stats: self.stats,
        })
    }
}

/// An OTLP span exporter (gRPC, HTTP/protobuf or HTTP/JSON). Use it with
/// [`crate::export::batch::BatchSpanProcessor`].
pub struct OtlpExporter {
    config: OtlpConfig,
    jobs: Mutex<Option<Sender<Job>>>,
    breaker: Arc<CircuitBreaker>,
    stats: ExportStats,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("config", &self.config)
            .finish()
    }
}

struct Job {
    payload: Payload,
    reply: Sender<Result<ExportTraceServiceResponse, String>>,
}

enum Payload {
    #[cfg_attr(not(feature = "otlp-grpc"), allow(dead_code))]
    Grpc(ExportTraceServiceRequest),
    #[cfg_attr(not(feature = "otlp-http"), allow(dead_code))]
    Http(Bytes),
}

impl OtlpExporter {
    /// A builder starting from the `OTEL_EXPORTER_OTLP_*` environment variables
    /// (an invalid value makes `build` fail with an error naming it).
    pub fn builder() -> OtlpExporterBuilder {
        Self::builder_from_env_vars(|k| std::env::var(k).ok())
    }

    /// A builder reading variables through `lookup` instead of the process
    /// environment (`|_| None` gives the specification defaults).
    pub fn builder_from_env_vars(lookup: impl Fn(&str) -> Option<String>) -> OtlpExporterBuilder {
        OtlpExporterBuilder {
            settings: Settings::from_env_vars(&lookup),
            stats: ExportStats::global().clone(),
        }
    }

    /// The resolved configuration.
    pub fn config(&self) -> &OtlpConfig {
        &self.config
    }

    /// The counters this exporter writes to.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Encodes a batch into the request body for this exporter's protocol and
    /// compression (protobuf or OTLP/JSON, optionally gzipped).
    fn payload(&self, batch: Vec<SpanData>) -> Result<Payload, ExportError> {
        let request = encode_request(batch);
        let body = match self.config.protocol {
            Protocol::Grpc => return Ok(Payload::Grpc(request)),
            Protocol::HttpProtobuf => request.encode_to_vec(),
            Protocol::HttpJson => encode_json(&request)?,
        };
        let body = match self.config.compression {
            Compression::None => body,
            Compression::Gzip => gzip(&body)?,
        };
        Ok(Payload::Http(Bytes::from(body)))
    }
}

/// The OTLP/HTTP protobuf body (an encoded `ExportTraceServiceRequest`) for a batch.
pub fn encode_protobuf(batch: Vec<SpanData>) -> Vec<u8> {
    encode_request(batch).encode_to_vec()
}

/// The OTLP/JSON body for a request (hex ids, lowerCamelCase names, enums as
/// integers, 64-bit integers as strings), as the specification maps it.
#[cfg(feature = "otlp-http")]
pub fn encode_json(request: &ExportTraceServiceRequest) -> Result<Vec<u8>, ExportError> {
    Ok(json::request_to_json(request))
}

#[cfg(not(feature = "otlp-http"))]
fn encode_json(_request: &ExportTraceServiceRequest) -> Result<Vec<u8>, ExportError> {
    Err(ExportError::Failed(
        "http/json needs the ferrotrace cargo feature `otlp-http`".into(),
    ))
}

/// gzip-compresses a body.
pub fn gzip(body: &[u8]) -> Result<Vec<u8>, ExportError> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)
        .and_then(|_| enc.finish())
        .map_err(|e| ExportError::Failed(format!("gzip compression failed: {e}")))
}

impl OtlpExporter {
    /// Reports a failed batch with the endpoint, protocol and likely fix.
    fn report_failure(&self, error: &str, spans: u64) {
        use crate::trace::diagnostics::{enabled, report, Diagnostic, ExportFailure, Level};
        if !enabled(Level::Error) {
            return;
        }
        report(Diagnostic::ExportFailed(ExportFailure {
            endpoint: self.config.endpoint.clone(),
            protocol: self.config.protocol.as_str().to_string(),
            error: error.to_string(),
            spans,
            likely_fix: hint::likely_fix(self.config.protocol, &self.config.endpoint, error),
        }));
    }

    fn report_breaker(&self, state: super::stats::BreakerState) {
        use crate::trace::diagnostics::{report, Diagnostic};
        report(Diagnostic::Breaker {
            endpoint: self.config.endpoint.clone(),
            protocol: self.config.protocol.as_str().to_string(),
            state,
            cooldown: (state == super::stats::BreakerState::Open).then(|| self.breaker.cooldown()),
        });
    }
}

impl SpanExporter for OtlpExporter {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        use super::stats::BreakerState;
        if batch.is_empty() {
            return Ok(());
        }
        let jobs = self.jobs.lock().clone().ok_or(ExportError::Shutdown)?;
        let n = batch.len() as u64;
        match self.breaker.acquire() {
            Permit::Rejected => {
                // Not reported per batch: the breaker's opening was, and the
                // drops are counted (`dropped_breaker_open`).
                self.stats.add_dropped_breaker_open(n);
                return Err(ExportError::Failed(format!(
                    "circuit breaker open after repeated failures to reach {}; batch of {n} spans dropped",
                    self.config.endpoint
                )));
            }
            Permit::Probe => self.report_breaker(BreakerState::HalfOpen),
            Permit::Allowed => {}
        }
        let payload = match self.payload(batch) {
            Ok(p) => p,
            Err(e) => {
                // Settle a probe permit too, or the breaker would stay half-open.
                if self.breaker.record_failure() {
                    self.report_breaker(BreakerState::Open);
                }
                self.stats.set_last_error(e.to_string());
                self.report_failure(&e.to_string(), n);
                return Err(e);
            }
        };
        let (reply_tx, reply_rx) = bounded(1);
        let wait = self.config.timeout + REPLY_GRACE;
        let result = match jobs.send_timeout(
            Job {
                payload,
                reply: reply_tx,
            },
            wait,
        ) {
            Err(_) => Err(ExportError::Timeout(wait)),
            Ok(()) => match reply_rx.recv_timeout(wait) {
                Ok(Ok(resp)) => {
                    if let Some(ps) = resp.partial_success {
                        if ps.rejected_spans > 0 {
                            self.stats.add_rejected_by_server(ps.rejected_spans as u64);
                        }
                        if ps.rejected_spans > 0 || !ps.error_message.is_empty() {
                            self.stats.set_last_error(format!(
                                "server rejected {} spans: {}",
                                ps.rejected_spans, ps.error_message
                            ));
                        }
                    }
                    Ok(())
                }
                Ok(Err(msg)) => Err(ExportError::Failed(msg)),
                Err(RecvTimeoutError::Timeout) => Err(ExportError::Timeout(wait)),
                Err(RecvTimeoutError::Disconnected) => Err(ExportError::Failed(
                    "the exporter thread stopped unexpectedly".into(),
                )),
            },
        };
        match &result {
            Ok(()) => {
                if self.breaker.record_success() {
                    self.report_breaker(BreakerState::Closed);
                }
            }
            Err(e) => {
                let message = match e {
                    ExportError::Failed(m) => m.clone(),
                    other => other.to_string(),
                };
                self.stats.set_last_error(e.to_string());
                self.report_failure(&message, n);
                if self.breaker.record_failure() {
                    self.report_breaker(BreakerState::Open);
                }
            }
        }
        result
    }

    fn shutdown(&self) -> ExportResult {
        // Dropping the sender ends the runtime thread after its current job.
        match self.jobs.lock().take() {
            Some(_) => Ok(()),
            None => Err(ExportError::Shutdown),
        }
    }

    fn reports_failures(&self) -> bool {
        true
    }
}

enum Transport {
    #[cfg(feature = "otlp-grpc")]
    Grpc(Box<grpc::GrpcTransport>),
    #[cfg(feature = "otlp-http")]
    Http(Box<http::HttpTransport>),
}

impl Transport {
    fn new(config: &OtlpConfig) -> Result<Self, ConfigError> {
        match config.protocol {
            #[cfg(feature = "otlp-grpc")]
            Protocol::Grpc => Ok(Transport::Grpc(Box::new(grpc::GrpcTransport::new(config)?))),
            #[cfg(feature = "otlp-http")]
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                Ok(Transport::Http(Box::new(http::HttpTransport::new(config)?)))
            }
            #[allow(unreachable_patterns)]
            other => Err(ConfigError::FeatureDisabled {
                what: format!("protocol {other:?}"),
                feature: "otlp-grpc or otlp-http",
            }),
        }
    }

    #[cfg_attr(not(feature = "otlp-grpc"), allow(unused_variables))]
    async fn send(
        &mut self,
        payload: &Payload,
        timeout: Duration,
    ) -> Result<ExportTraceServiceResponse, AttemptError> {
        match (self, payload) {
            #[cfg(feature = "otlp-grpc")]
            (Transport::Grpc(t), Payload::Grpc(req)) => t.send(req, timeout).await,
            #[cfg(feature = "otlp-http")]
            (Transport::Http(t), Payload::Http(body)) => {
                let _ = timeout;
                t.send(body.clone()).await
            }
            #[allow(unreachable_patterns)]
            _ => Err(AttemptError::Permanent(
                "internal error: payload does not match the transport".into(),
            )),
        }
    }
}

fn runtime_thread(
    config: OtlpConfig,
    jobs: Receiver<Job>,
    init: Sender<Result<(), ConfigError>>,
    stats: ExportStats,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = init.send(Err(ConfigError::Runtime(e.to_string())));
            return;
        }
    };
    let transport = {
        let _guard = rt.enter();
        Transport::new(&config)
    };
    let mut transport = match transport {
        Ok(t) => {
            let _ = init.send(Ok(()));
            t
        }
        Err(e) => {
            let _ = init.send(Err(e));
            return;
        }
    };
    // `block_on` runs here, on a thread that belongs to no other runtime.
    for job in jobs.iter() {
        let result = rt.block_on(send_with_retry(
            &mut transport,
            &job.payload,
            &config.retry,
            config.timeout,
            &stats,
        ));
        let _ = job.reply.send(result);
    }
}

/// Sends one payload, retrying retryable failures with backoff while attempts
/// and the time budget last.
async fn send_with_retry(
    transport: &mut Transport,
    payload: &Payload,
    policy: &RetryPolicy,
    budget: Duration,
    stats: &ExportStats,
) -> Result<ExportTraceServiceResponse, String> {
    let deadline = Instant::now() + budget;
    let attempts = policy.max_attempts.max(1);
    let mut retry = 0u32;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!("export timed out after {budget:?}"));
        }
        stats.add_export_attempt();
        let outcome =
            match tokio::time::timeout(remaining, transport.send(payload, remaining)).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(format!(
                        "export timed out after {budget:?} (attempt {})",
                        retry + 1
                    ))
                }
            };
        match outcome {
            Ok(resp) => return Ok(resp),
            Err(AttemptError::Permanent(m)) => return Err(format!("{m} (not retryable)")),
            Err(AttemptError::Retryable {
                message,
                retry_after,
            }) => {
                if retry + 1 >= attempts {
                    return Err(format!("{message} (gave up after {attempts} attempts)"));
                }
                let delay = policy.delay(retry, retry_after);
                // Compared as durations: a server's delay can be huge, and
                // `Instant + Duration` would panic on overflow.
                if delay >= deadline.saturating_duration_since(Instant::now()) {
                    let asked = if retry_after.is_some() {
                        "the server asked to retry in"
                    } else {
                        "retry in"
                    };
                    return Err(format!(
                        "{message} ({asked} {delay:?}, past the export timeout of {budget:?}; batch dropped)"
                    ));
                }
                tokio::time::sleep(delay).await;
                retry += 1;
                stats.add_retry();
            }
        }
    }
}
