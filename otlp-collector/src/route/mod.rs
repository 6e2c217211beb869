//! The router role (issue 13, "Routing tier"): a collector started with
//! `[route]` (or `--route-to`) receives every protocol as usual, appends to
//! its own WAL and acknowledges, then forwards each span over OTLP/gRPC to
//! the backend collector that owns its trace id (rendezvous hashing over
//! the healthy backends), instead of storing it.
//!
//! - [`config`]: `[route]` and backend address parsing;
//! - [`ring`]: rendezvous hashing;
//! - [`membership`]: static and DNS backends, `/readyz` health checks, the ring;
//! - [`forward`]: the forwarding sink (a `SpanWriter`), so the pipeline's
//!   WAL, retry and release machinery gives at-least-once forwarding;
//! - [`encode`]: spans back to an OTLP request;
//! - [`codec`]: the client codec of a pre-encoded or re-sliced `Export`
//!   (the load generator sends through it too);
//! - [`recent`]: the bounded memories of acknowledged spans and trace owners;
//! - [`tls`]: TLS to the backends (`route.tls_ca_file`).
//!
//! A router runs no pipeline stages: sampling, enrichment, redaction and
//! rollups happen on the backends, which see whole traces and every span
//! (`Stages::for_router`).

pub mod codec;
pub mod config;
pub mod encode;
pub mod forward;
pub mod membership;
pub mod recent;
pub mod ring;
pub mod tls;

pub use codec::{ForwardBody, ForwardCodec};
pub use config::{RouteConfig, RouteConfigError};

use std::sync::Arc;

use tokio::sync::watch;

use crate::metrics::{Metrics, RouteMetrics};

/// A started router: its forwarding sink and the membership behind it.
#[derive(Debug)]
pub struct Router {
    /// The sink the pipeline writes to.
    pub forwarder: Arc<forward::Forwarder>,
    /// The backends and the ring.
    pub membership: Arc<membership::Membership>,
}

impl Router {
    /// Builds the router from `cfg` (fails on bad or missing backends),
    /// registers its metrics and starts health checks (and DNS resolution)
    /// on the current runtime until `shutdown`.
    pub fn start(
        cfg: &RouteConfig,
        metrics: &Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Router, tokio::task::JoinHandle<()>), RouteConfigError> {
        cfg.validate()?;
        let rm = Arc::new(RouteMetrics::default());
        metrics.register(Box::new(rm.clone()));
        let membership = Arc::new(membership::Membership::new(cfg, rm.clone())?);
        let forwarder = Arc::new(forward::Forwarder::new(membership.clone(), rm, cfg)?);
        let task = tokio::spawn(membership.clone().run(shutdown));
        Ok((
            Router {
                forwarder,
                membership,
            },
            task,
        ))
    }
}
