//! Assembles the collector: WAL (replayed first), queue, pipeline, receivers
//! and the HTTP listener for the query API, UI, `/metrics`, `/healthz` and
//! `/readyz`; and shuts it down in order (stop accepting, drain with a
//! timeout, close the WAL).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{load_tokens, AuthResult, TokenSet};
use crate::config::{Config, ConfigError};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pipeline::queue::Queue;
use crate::pipeline::wal::Wal;
use crate::pipeline::{Pipeline, Stages};
use crate::receiver::{http as rhttp, jaeger, otlp_grpc, Ingest};
use crate::storage::{Retention, SpanReader, SpanStore, SpanWriter};

pub mod config;
mod error;
pub use config::{ServerConfig, ShutdownConfig};
pub use error::{exit_code, StartError};

/// Validates everything a start would check in the configuration, without
/// opening anything or binding a listener: cross-field rules and memory
/// budgets, the TLS certificate and key, token files, the pipeline stages
/// (sampling, enrichment, redaction) and the storage URL's form.
/// `ferrotrace-collector check-config` runs this.
pub fn check_config(config: &Config) -> Result<(), StartError> {
    config.validate()?;
    crate::tls::server_config(
        config.tls.cert_file.as_deref(),
        config.tls.key_file.as_deref(),
    )?;
    load_tokens(
        &config.auth.receiver_tokens,
        config.auth.receiver_tokens_file.as_deref(),
    )?;
    load_tokens(
        &config.auth.query_tokens,
        config.auth.query_tokens_file.as_deref(),
    )?;
    if config.route.enabled() {
        crate::route::membership::Membership::check(&config.route).map_err(ConfigError::from)?;
    } else {
        Stages::from_config(config)?;
    }
    crate::storage::connecting::check_url(&config.storage)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(())
}

/// Addresses the listeners actually bound (useful with port 0).
#[derive(Clone, Debug, Default)]
pub struct BoundAddrs {
    /// OTLP/gRPC.
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP.
    pub otlp_http: Option<SocketAddr>,
    /// Zipkin.
    pub zipkin: Option<SocketAddr>,
    /// Jaeger gRPC (`PostSpans`).
    pub jaeger_grpc: Option<SocketAddr>,
    /// Jaeger Thrift over HTTP (`/api/traces`).
    pub jaeger_thrift_http: Option<SocketAddr>,
    /// Jaeger agent UDP, Thrift compact.
    pub jaeger_agent_compact: Option<SocketAddr>,
    /// Jaeger agent UDP, Thrift binary.
    pub jaeger_agent_binary: Option<SocketAddr>,
    /// Query API, UI and metrics.
    pub http: Option<SocketAddr>,
    /// Remote sampling API.
    pub sampling: Option<SocketAddr>,
}

/// A running collector.
pub struct Collector {
    /// Bound listener addresses.
    pub addrs: BoundAddrs,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    ingest: Arc<Ingest>,
    wal: Wal,
    pipeline: Pipeline,
    shutdown_tx: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    health: Arc<Health>,
    replay: Option<tokio::task::JoinHandle<u64>>,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct HealthState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn bind(what: &'static str, addr: &str) -> Result<Option<TcpListener>, StartError> {
    if addr.is_empty() {
        return Ok(None);
    }
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| StartError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// Binds a Jaeger agent UDP socket; `None` when the address is empty.
fn bind_udp(
    what: &'static str,
    addr: &str,
    cfg: &jaeger::JaegerConfig,
) -> Result<Option<tokio::net::UdpSocket>, StartError> {
    if addr.is_empty() {
        return Ok(None);
    }
    jaeger::udp::bind(addr, cfg.agent_socket_buffer_bytes)
        .map(Some)
        .map_err(|source| StartError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

async fn metrics_handler(State(h): State<HealthState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            crate::metrics::exposition::CONTENT_TYPE,
        )],
        h.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(h): State<HealthState>) -> Response {
    let why = h.health.reasons();
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let mut body = String::from("not ready:\n");
        for w in why {
            body.push_str("- ");
            body.push_str(&w);
            body.push('\n');
        }
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn query_auth(
    State((tokens, metrics)): State<(TokenSet, Arc<Metrics>)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    // Probes and scrapes stay open so orchestration works without the query
    // token. The UI's static files hold no data (they are the same in every
    // build), and a browser cannot attach a bearer token to a page load, so
    // they are served openly too; the page asks for the token and sends it
    // with every API call, which stays protected.
    if matches!(path, "/healthz" | "/readyz" | "/metrics") || crate::ui::is_static_asset(path) {
        return next.run(req).await;
    }
    match tokens.check(req.headers()) {
        AuthResult::Allowed => next.run(req).await,
        _ => {
            metrics.auth_failures.add("query", 1);
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response()
        }
    }
}

/// What each part of a collector holds of its store: the pipeline and
/// `/readyz` the writer, the query API the readers, the retention timer
/// retention; a router's writer forwards and it has nothing to read or
/// expire, and its receivers learn when no backend is in the ring.
struct Roles {
    writer: Arc<dyn SpanWriter>,
    reader: Arc<dyn SpanReader>,
    retention: Option<Arc<dyn Retention>>,
    /// Adaptive sampling's shared counts (`source = "store"`).
    counts: Option<Arc<dyn crate::storage::SamplingCounts>>,
    no_backend: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Collector {
    /// Starts everything on the current tokio runtime, storing spans in `store`.
    pub async fn start(config: Config, store: Arc<dyn SpanStore>) -> Result<Collector, StartError> {
        if config.route.enabled() {
            return Err(ConfigError::Invalid(
                "[route] is configured: start this collector with Collector::start_router".into(),
            )
            .into());
        }
        Self::start_as(config, Some(store)).await
    }

    /// Starts a router (`[route]` / `--route-to`): the same receivers, WAL
    /// and acknowledgements, then every span forwarded to the backend
    /// collector owning its trace id; nothing is stored here, so the query
    /// API answers empty (query the backends).
    pub async fn start_router(config: Config) -> Result<Collector, StartError> {
        if !config.route.enabled() {
            return Err(ConfigError::Invalid(
                "the router has no backends: set route.backends, --route-to or route.dns_name"
                    .into(),
            )
            .into());
        }
        Self::start_as(config, None).await
    }

    async fn start_as(
        config: Config,
        store: Option<Arc<dyn SpanStore>>,
    ) -> Result<Collector, StartError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut servers = Vec::new();
        let router = store.is_none();
        let Roles {
            writer,
            reader,
            retention,
            counts,
            no_backend,
        } = match store {
            Some(store) => {
                // With a cold tier, reads fall through to it and the tiering
                // task replaces age retention (it moves, then deletes).
                let store: Arc<dyn SpanStore> = if config.cold.enabled() {
                    let cold = Arc::new(
                        crate::storage::cold::ColdStore::open(&config.cold)
                            .await
                            .map_err(StartError::Cold)?,
                    );
                    metrics.register(Box::new(cold.stats.clone()));
                    servers.push(tokio::spawn(crate::storage::cold::tiering::run(
                        store.clone(),
                        cold.clone(),
                        shutdown_rx.clone(),
                    )));
                    Arc::new(crate::storage::cold::TieredStore::new(store, cold))
                } else {
                    store
                };
                Roles {
                    writer: store.clone(),
                    reader: store.clone(),
                    retention: Some(store.clone()),
                    counts: Some(store),
                    no_backend: None,
                }
            }
            None => {
                let (r, task) =
                    crate::route::Router::start(&config.route, &metrics, shutdown_rx.clone())
                        .map_err(ConfigError::from)?;
                servers.push(task);
                Roles {
                    writer: r.forwarder.clone(),
                    reader: Arc::new(crate::storage::null::NullStore),
                    retention: None,
                    counts: None,
                    no_backend: Some(r.membership.no_backend_flag()),
                }
            }
        };
        let sink = writer.name();
        let tls = crate::tls::server_config(
            config.tls.cert_file.as_deref(),
            config.tls.key_file.as_deref(),
        )?;
        let (wal, replay_segments) = Wal::open(&config.wal_dir(), &config.wal, metrics.clone())?;
        let health = Health::new(writer.clone(), wal.clone(), metrics.clone());
        let budgets = config.memory_budgets()?;
        let memory = crate::memory::MemoryGuard::start(
            &budgets,
            Duration::from_millis(config.limits.memory_check_interval_ms),
            metrics.clone(),
        )
        .map_err(StartError::Spawn)?;
        let queue = Queue::new(config.queue.max_spans, budgets.queue_bytes, metrics.clone());
        let receiver_tokens = TokenSet::new(load_tokens(
            &config.auth.receiver_tokens,
            config.auth.receiver_tokens_file.as_deref(),
        )?);
        let query_tokens = TokenSet::new(load_tokens(
            &config.auth.query_tokens,
            config.auth.query_tokens_file.as_deref(),
        )?);
        let wal_only = crate::pipeline::wal_only::WalOnly::new(
            config.queue.wal_only_max_records,
            metrics.clone(),
        );
        let ingest = Ingest::new(
            queue.clone(),
            wal.clone(),
            wal_only.clone(),
            metrics.clone(),
            config.limits.clone(),
            budgets.inflight_bytes,
            memory,
            config.queue.retry_after_secs,
            receiver_tokens,
        );
        if let Some(flag) = no_backend {
            ingest.set_no_downstream_flag(flag);
            ingest.set_reslice(config.route.reslice);
        }
        let mut stages = if router {
            Stages::for_router(&config)
        } else {
            Stages::from_config(&config)?
        };
        // Adaptive sampling: the pipeline counts root spans, a task turns the
        // counts into the strategies the sampling API serves. A router counts
        // nothing (its backends see the spans), so it serves pinned rates only.
        let sampling_strategies =
            Arc::new(crate::sampling_api::Strategies::new(&config.sampling_api));
        let adaptive = &config.sampling_api.adaptive;
        let throughput = (!router && config.sampling_api.enabled && adaptive.enabled).then(|| {
            use crate::sampling_api::{adaptive::AdaptiveSource, throughput::ThroughputRecorder};
            Arc::new(match adaptive.source {
                // Stored counts are per wall-clock period.
                AdaptiveSource::Store => ThroughputRecorder::per_period(
                    adaptive.max_operations,
                    adaptive.interval_secs * 1_000_000_000,
                ),
                AdaptiveSource::Local => ThroughputRecorder::new(adaptive.max_operations),
            })
        });
        if let Some(t) = &throughput {
            stages.set_throughput(t.clone());
        }
        let mut batcher = config.batcher.clone();
        batcher.max_spans = Some(batcher.spans_per_batch(config.storage.kind));
        batcher.max_concurrent_writes = Some(if router {
            // Forwards to several backends: one slow backend's batch should
            // not be the only one in flight.
            batcher.max_concurrent_writes.unwrap_or(2).max(1)
        } else {
            batcher.concurrent_writes(config.storage.kind)
        });
        let pipeline = Pipeline::start(
            queue.clone(),
            wal.clone(),
            writer.clone(),
            metrics.clone(),
            health.clone(),
            batcher,
            stages,
        )
        .map_err(StartError::Spawn)?;
        pipeline
            .start_wal_only_reader(
                wal_only,
                queue.clone(),
                wal.clone(),
                config.limits.clone(),
                metrics.clone(),
            )
            .map_err(StartError::Spawn)?;

        // Bind everything before serving so a busy port fails the start.
        let grpc_l = bind("otlp grpc", &config.server.otlp_grpc_addr).await?;
        let http_l = bind("otlp http", &config.server.otlp_http_addr).await?;
        let zipkin_l = bind("zipkin", &config.server.zipkin_addr).await?;
        let jaeger = &config.jaeger;
        let jaeger_grpc_l = bind("jaeger grpc", &jaeger.grpc_addr).await?;
        let jaeger_http_l = bind("jaeger thrift http", &jaeger.thrift_http_addr).await?;
        let compact_u = bind_udp("jaeger agent compact", &jaeger.agent_compact_addr, jaeger)?;
        let binary_u = bind_udp("jaeger agent binary", &jaeger.agent_binary_addr, jaeger)?;
        let query_l = bind("query/ui/metrics", &config.server.http_addr).await?;
        let sampling_l = bind("sampling api", config.sampling_api.listen_addr()).await?;
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let local_udp =
            |u: &Option<tokio::net::UdpSocket>| u.as_ref().and_then(|u| u.local_addr().ok());
        let addrs = BoundAddrs {
            otlp_grpc: local(&grpc_l),
            otlp_http: local(&http_l),
            zipkin: local(&zipkin_l),
            jaeger_grpc: local(&jaeger_grpc_l),
            jaeger_thrift_http: local(&jaeger_http_l),
            jaeger_agent_compact: local_udp(&compact_u),
            jaeger_agent_binary: local_udp(&binary_u),
            http: local(&query_l),
            sampling: local(&sampling_l),
        };

        let fd_limit = crate::listener::fd_limit();
        let table = crate::listener::conns::ConnTable::new(
            crate::listener::connection_budget(fd_limit, config.connections.reserved_fds),
            metrics.clone(),
        );
        tracing::debug!(
            fd_limit,
            connections = table.max_total(),
            "connection budget over all listeners"
        );
        let ctx = |name: &'static str, http2_only: bool| {
            crate::listener::ListenerCtx::new(
                name,
                &config.connections,
                tls.clone(),
                table.clone(),
                metrics.clone(),
                http2_only,
            )
        };
        // The gRPC sampling API rides on the gRPC listeners (as Jaeger's
        // collector serves it on 14250), with their auth and limits.
        let sampling_grpc = config.sampling_api.enabled.then(|| {
            crate::sampling_api::SamplingState::shared(sampling_strategies.clone(), metrics.clone())
        });
        if let Some(l) = grpc_l {
            let svc = otlp_grpc::TraceServiceServer::new(ingest.clone())
                .with_sampling(sampling_grpc.clone());
            servers.push(tokio::spawn(crate::listener::serve(
                l,
                ctx("otlp_grpc", true),
                svc,
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = http_l {
            servers.push(tokio::spawn(crate::listener::serve(
                l,
                ctx("otlp_http", false),
                rhttp::otlp_router(ingest.clone()),
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = zipkin_l {
            servers.push(tokio::spawn(crate::listener::serve(
                l,
                ctx("zipkin", false),
                rhttp::zipkin_router(ingest.clone()),
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = jaeger_grpc_l {
            servers.push(tokio::spawn(crate::listener::serve(
                l,
                ctx("jaeger_grpc", true),
                jaeger::grpc::CollectorServiceServer::new(ingest.clone())
                    .with_sampling(sampling_grpc.clone()),
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = jaeger_http_l {
            servers.push(tokio::spawn(crate::listener::serve(
                l,
                ctx("jaeger_http", false),
                jaeger::http::router(ingest.clone()),
                shutdown_rx.clone(),
            )));
        }
        for (sock, agent) in [
            (compact_u, jaeger::udp::COMPACT),
            (binary_u, jaeger::udp::BINARY),
        ] {
            if let Some(sock) = sock {
                servers.push(tokio::spawn(jaeger::udp::serve(
                    sock,
                    agent,
                    ingest.clone(),
                    config.jaeger.clone(),
                    shutdown_rx.clone(),
                )));
            }
        }
        if let Some(t) = throughput {
            let adaptive = config.sampling_api.adaptive.clone();
            let task = match (adaptive.source, counts) {
                (crate::sampling_api::adaptive::AdaptiveSource::Store, Some(store)) => {
                    tokio::spawn(crate::sampling_api::recompute::run_store(
                        adaptive,
                        crate::sampling_api::settings::fingerprint(&config.sampling_api),
                        t,
                        store,
                        sampling_strategies.clone(),
                        metrics.clone(),
                        shutdown_rx.clone(),
                    ))
                }
                _ => tokio::spawn(crate::sampling_api::recompute::run(
                    adaptive,
                    t,
                    sampling_strategies.clone(),
                    metrics.clone(),
                    shutdown_rx.clone(),
                )),
            };
            servers.push(task);
        }
        if let Some(l) = sampling_l {
            let state =
                crate::sampling_api::SamplingState::shared(sampling_strategies, metrics.clone());
            servers.push(tokio::spawn(crate::listener::serve(
                l,
                ctx("sampling", false),
                crate::sampling_api::router(state),
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = query_l {
            let health = HealthState {
                metrics: metrics.clone(),
                health: health.clone(),
            };
            let base = Router::new()
                .route("/metrics", get(metrics_handler))
                .route("/healthz", get(|| async { "ok\n" }))
                .route("/readyz", get(readyz))
                .with_state(health);
            let mut router = base.merge(crate::query::router(crate::query::QueryState::new(
                reader.clone(),
            )));
            let open = l
                .local_addr()
                .map(|a| !a.ip().is_loopback())
                .unwrap_or(false);
            if query_tokens.enabled() {
                router = router.layer(axum::middleware::from_fn_with_state(
                    (query_tokens, metrics.clone()),
                    query_auth,
                ));
            } else if open {
                tracing::warn!(
                    addr = %config.server.http_addr,
                    "the query API and UI listen beyond loopback without a query token: anyone \
                     who can reach this address can read every trace; set [auth] \
                     query_tokens_file (or bind server.http_addr to 127.0.0.1 behind a proxy)"
                );
            }
            // Outermost: a request for another host name is refused before
            // anything else (DNS-rebinding pages never reach the API).
            router = router.layer(axum::middleware::from_fn_with_state(
                crate::query::hosts::HostCheck::new(&config.query.allowed_hosts, metrics.clone()),
                crate::query::hosts::check_host,
            ));
            servers.push(tokio::spawn(crate::listener::serve(
                l,
                ctx("query", false),
                router,
                shutdown_rx.clone(),
            )));
        }

        servers.push(tokio::spawn(crate::health::run(
            health.clone(),
            shutdown_rx.clone(),
        )));
        if let Some(retention) = retention {
            let retention_stats = Arc::new(crate::storage::retention::RetentionStats::default());
            metrics.register(retention_stats.collector(metrics.wal_bytes.clone()));
            // With a cold tier, age retention is the tiering task's (above).
            if !config.cold.enabled() {
                servers.push(tokio::spawn(crate::storage::retention::run(
                    retention.clone(),
                    sink,
                    config.retention.clone(),
                    retention_stats.clone(),
                    shutdown_rx.clone(),
                )));
            }
            servers.push(tokio::spawn(crate::storage::budget::run(
                retention,
                sink,
                config.retention.clone(),
                config.wal.min_free_bytes,
                retention_stats,
                shutdown_rx.clone(),
            )));
        }

        // Replay after the listeners are up: /healthz answers meanwhile, /readyz once done.
        let replay = {
            let (wal, queue, metrics, health) =
                (wal.clone(), queue.clone(), metrics.clone(), health.clone());
            let limits = config.limits.clone();
            // Rollups the sink already stored for the replayed spans are not
            // counted again: their origins reach the aggregator first.
            let written = {
                let (store, instance, segments) =
                    (writer.clone(), wal.instance(), replay_segments.clone());
                tokio::spawn(async move {
                    crate::pipeline::load_written_origins(&*store, instance, &segments).await
                })
            };
            let origins_to = pipeline.written_origins_sender();
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                if let Ok(w) = rt.block_on(written) {
                    origins_to.send(w);
                }
                let n = crate::pipeline::replay(&wal, &queue, &replay_segments, &limits, &metrics);
                if n > 0 {
                    tracing::info!(
                        spans = n,
                        segments = replay_segments.len(),
                        "replayed the write-ahead log"
                    );
                }
                health.set_serving(true);
                n
            })
        };
        tracing::info!(?addrs, sink, "collector started");
        Ok(Collector {
            addrs,
            metrics,
            ingest,
            wal,
            pipeline,
            shutdown_tx,
            servers,
            health,
            replay: Some(replay),
            drain_timeout: config.shutdown.drain_timeout(),
        })
    }

    /// Waits until the WAL replay has finished; returns the spans replayed.
    pub async fn wait_ready(&mut self) -> u64 {
        match self.replay.take() {
            Some(h) => h.await.unwrap_or(0),
            None => 0,
        }
    }

    /// True once WAL replay is done and the collector is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.health.is_serving()
    }

    /// Why `/readyz` would answer 503 now (empty when ready).
    pub fn not_ready_reasons(&self) -> Vec<String> {
        self.health.reasons()
    }

    /// Stops accepting, drains the queue into the sink for at most the drain
    /// timeout, and closes the WAL. Returns true if everything was committed.
    pub async fn shutdown(mut self) -> bool {
        self.health.set_serving(false);
        self.ingest.stop_accepting();
        let _ = self.shutdown_tx.send(true);
        // In-flight requests finish (they were acknowledged or refused); give them a moment.
        for s in self.servers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
        }
        if let Some(r) = self.replay.take() {
            let _ = tokio::time::timeout(self.drain_timeout, r).await;
        }
        let drained = self.pipeline.drain(self.drain_timeout).await;
        let wal = self.wal.clone();
        let _ = tokio::task::spawn_blocking(move || wal.close()).await;
        if drained {
            tracing::info!("shutdown: everything committed");
        } else {
            tracing::warn!("shutdown: drain timed out; the rest stays in the write-ahead log for the next start");
        }
        drained
    }

    /// Bytes currently in the WAL.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.total_bytes()
    }
}
