//! Who is in the ring: the configured backends (and those a DNS name
//! resolves to), each health-checked with `GET /readyz` on its
//! query/metrics listener. A backend leaves the ring after
//! `route.unhealthy_after` consecutive failed checks and comes back after
//! one that succeeds. Backends start outside the ring; the first round of
//! checks runs at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use parking_lot::RwLock;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::config::{split_host_port, BackendAddr, RouteConfig, RouteConfigError};
use super::ring;
use super::tls::BackendTls;
use crate::metrics::RouteMetrics;

/// One backend collector.
pub struct Member {
    /// Its addresses; `addr.grpc` is its name in the ring and in metrics.
    pub addr: BackendAddr,
    /// Its rendezvous seed (from the name).
    pub seed: u64,
    /// Its OTLP/gRPC channel (one HTTP/2 connection, made lazily and again
    /// after a failure); the forwarder sends request bytes over it.
    pub channel: Channel,
    failures: AtomicU32,
    healthy: AtomicBool,
    /// Found through `route.dns_name` (dropped when no longer resolved).
    from_dns: bool,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("addr", &self.addr)
            .field("healthy", &self.healthy.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Member {
    fn new(
        addr: BackendAddr,
        cfg: &RouteConfig,
        from_dns: bool,
        tls: Option<&BackendTls>,
    ) -> Result<Member, RouteConfigError> {
        let endpoint = Endpoint::from_shared(format!("http://{}", addr.grpc))
            .map_err(|e| RouteConfigError(format!("route backend {:?}: {e}", addr.grpc)))?
            .connect_timeout(Duration::from_millis(cfg.forward_timeout_ms))
            .timeout(Duration::from_millis(cfg.forward_timeout_ms))
            .tcp_nodelay(true);
        Ok(Member {
            seed: ring::seed(&addr.grpc),
            channel: match tls {
                None => endpoint.connect_lazy(),
                Some(tls) => {
                    let (tls, grpc) = (tls.clone(), addr.grpc.clone());
                    let timeout = Duration::from_millis(cfg.forward_timeout_ms);
                    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                        let (tls, grpc) = (tls.clone(), grpc.clone());
                        async move {
                            tls.connect(&grpc, true, timeout)
                                .await
                                .map(hyper_util::rt::TokioIo::new)
                        }
                    }))
                }
            },
            failures: AtomicU32::new(0),
            healthy: AtomicBool::new(false),
            addr,
            from_dns,
        })
    }

    /// True while it is in the ring.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }
}

/// The backends in the ring, in a fixed order (by name), with their seeds.
#[derive(Debug, Default)]
pub struct Ring {
    /// Healthy members.
    pub members: Vec<Arc<Member>>,
    /// `members[i].seed`, for [`ring::owner`].
    pub seeds: Vec<u64>,
}

impl Ring {
    /// The member that owns `trace`, if any is healthy.
    pub fn owner(&self, trace: &crate::model::TraceId) -> Option<usize> {
        ring::owner(&self.seeds, trace)
    }
}

/// Every known backend and the current ring.
pub struct Membership {
    cfg: RouteConfig,
    all: RwLock<BTreeMap<String, Arc<Member>>>,
    ring: RwLock<Arc<Ring>>,
    metrics: Arc<RouteMetrics>,
    no_backend: Arc<AtomicBool>,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    /// TLS to the backends (`route.tls_ca_file`), for members found later too.
    tls: Option<BackendTls>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("ring", &self.ring.read().members.len())
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Checks `cfg` as [`Membership::new`] would, without starting anything
    /// (`check-config`).
    pub fn check(cfg: &RouteConfig) -> Result<(), RouteConfigError> {
        cfg.validate()?;
        cfg.token()?;
        BackendTls::from_config(cfg)?;
        for addr in cfg.static_backends()? {
            Endpoint::from_shared(format!("http://{}", addr.grpc))
                .map_err(|e| RouteConfigError(format!("route backend {:?}: {e}", addr.grpc)))?;
        }
        Ok(())
    }

    /// The static backends of `cfg` (none in the ring until checked).
    pub fn new(
        cfg: &RouteConfig,
        metrics: Arc<RouteMetrics>,
    ) -> Result<Membership, RouteConfigError> {
        let tls = BackendTls::from_config(cfg)?;
        let mut all = BTreeMap::new();
        for addr in cfg.static_backends()? {
            all.insert(
                addr.grpc.clone(),
                Arc::new(Member::new(addr, cfg, false, tls.as_ref())?),
            );
        }
        if all.is_empty() && cfg.dns_name.is_empty() {
            return Err(RouteConfigError(
                "the router has no backends: set route.backends, --route-to or route.dns_name"
                    .into(),
            ));
        }
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(cfg.health_timeout_ms)));
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector);
        let m = Membership {
            cfg: cfg.clone(),
            all: RwLock::new(all),
            ring: RwLock::new(Arc::new(Ring::default())),
            metrics,
            no_backend: Arc::new(AtomicBool::new(true)),
            http,
            tls,
        };
        m.publish();
        Ok(m)
    }

    /// True while no backend is in the ring, shared with the receivers: a
    /// full queue or WAL is then answered 503 / UNAVAILABLE (nothing will
    /// drain it soon), not 429 / RESOURCE_EXHAUSTED.
    pub fn no_backend_flag(&self) -> Arc<AtomicBool> {
        self.no_backend.clone()
    }

    /// The ring now (cheap: an `Arc` clone).
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.read().clone()
    }

    /// Recomputes the ring from the members' health and updates the gauges.
    fn publish(&self) {
        let all = self.all.read();
        let members: Vec<Arc<Member>> = all.values().filter(|m| m.is_healthy()).cloned().collect();
        let seeds = members.iter().map(|m| m.seed).collect();
        self.metrics.backends.store(all.len() as u64, Relaxed);
        self.metrics.ring_size.store(members.len() as u64, Relaxed);
        self.no_backend.store(members.is_empty(), Relaxed);
        drop(all);
        *self.ring.write() = Arc::new(Ring { members, seeds });
    }

    async fn probe(&self, m: &Member) -> Result<(), String> {
        if let Some(tls) = &self.tls {
            return self.probe_tls(tls, m).await;
        }
        let uri = format!("http://{}/readyz", m.addr.health);
        let req = http::Request::get(&uri)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let t = Duration::from_millis(self.cfg.health_timeout_ms);
        match tokio::time::timeout(t, self.http.request(req)).await {
            Err(_) => Err(format!("{uri} did not answer within {} ms", t.as_millis())),
            Ok(Err(e)) => Err(format!("{uri}: {e}")),
            Ok(Ok(r)) if r.status().is_success() => Ok(()),
            Ok(Ok(r)) => Err(format!("{uri} answered {}", r.status())),
        }
    }

    /// [`Membership::probe`] over TLS: one connection per check (a check
    /// a second per backend; no pool to keep).
    async fn probe_tls(&self, tls: &BackendTls, m: &Member) -> Result<(), String> {
        let uri = format!("https://{}/readyz", m.addr.health);
        let t = Duration::from_millis(self.cfg.health_timeout_ms);
        let check = async {
            let stream = tls
                .connect(&m.addr.health, false, t)
                .await
                .map_err(|e| format!("{uri}: {e}"))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("{uri}: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = http::Request::get("/readyz")
                .header(http::header::HOST, &m.addr.health)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            sender
                .send_request(req)
                .await
                .map(|r| r.status())
                .map_err(|e| format!("{uri}: {e}"))
        };
        match tokio::time::timeout(t, check).await {
            Err(_) => Err(format!("{uri} did not answer within {} ms", t.as_millis())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(s)) if s.is_success() => Ok(()),
            Ok(Ok(s)) => Err(format!("{uri} answered {s}")),
        }
    }

    /// One round of health checks, all backends at once.
    pub async fn check_all(&self) {
        let members: Vec<Arc<Member>> = self.all.read().values().cloned().collect();
        let results = futures_util::future::join_all(members.iter().map(|m| self.probe(m))).await;
        let mut changed = false;
        for (m, r) in members.iter().zip(results) {
            match r {
                Ok(()) => {
                    m.failures.store(0, Relaxed);
                    if !m.healthy.swap(true, Relaxed) {
                        tracing::info!(backend = %m.addr.grpc, "backend healthy; in the ring");
                        changed = true;
                    }
                }
                Err(e) => {
                    self.metrics.health_failures.add(&m.addr.grpc, 1);
                    let n = m.failures.fetch_add(1, Relaxed) + 1;
                    if n >= self.cfg.unhealthy_after && m.healthy.swap(false, Relaxed) {
                        tracing::warn!(backend = %m.addr.grpc, failures = n, error = %e,
                            "backend failed its health checks; out of the ring");
                        changed = true;
                    } else if n < self.cfg.unhealthy_after {
                        tracing::debug!(backend = %m.addr.grpc, failures = n, error = %e, "health check failed");
                    }
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Resolves `route.dns_name` once: new addresses become members (checked
    /// before they join the ring), vanished ones leave.
    pub async fn resolve(&self) {
        if self.cfg.dns_name.is_empty() {
            return;
        }
        let Ok((_, port)) = split_host_port(&self.cfg.dns_name) else {
            return;
        };
        let found: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(&self.cfg.dns_name)
            .await
        {
            Ok(a) => a.collect(),
            Err(e) => {
                // Keep what we have: a DNS outage must not empty the ring.
                self.metrics.dns_failures.fetch_add(1, Relaxed);
                tracing::warn!(name = %self.cfg.dns_name, error = %e, "route.dns_name did not resolve; keeping the current backends");
                return;
            }
        };
        let names: BTreeMap<String, BackendAddr> = found
            .into_iter()
            .map(|a| {
                let grpc = std::net::SocketAddr::new(a.ip(), port).to_string();
                let health = std::net::SocketAddr::new(a.ip(), self.cfg.health_port).to_string();
                (grpc.clone(), BackendAddr { grpc, health })
            })
            .collect();
        let mut changed = false;
        {
            let mut all = self.all.write();
            let before = all.len();
            all.retain(|name, m| !m.from_dns || names.contains_key(name));
            changed |= all.len() != before;
            for (name, addr) in names {
                if all.contains_key(&name) {
                    continue;
                }
                match Member::new(addr, &self.cfg, true, self.tls.as_ref()) {
                    Ok(m) => {
                        tracing::info!(backend = %name, "backend found through route.dns_name");
                        all.insert(name, Arc::new(m));
                        changed = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "unusable address from route.dns_name"),
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Health checks every `health_interval_ms` and DNS every
    /// `dns_interval_ms`, until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let health_every = Duration::from_millis(self.cfg.health_interval_ms);
        let dns_every = Duration::from_millis(self.cfg.dns_interval_ms);
        let mut next_dns = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_dns {
                self.resolve().await;
                next_dns = tokio::time::Instant::now() + dns_every;
            }
            self.check_all().await;
            tokio::select! {
                _ = tokio::time::sleep(health_every) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}
