//! The remote sampling API: the collector serves sampling strategies to
//! SDKs over Jaeger's HTTP protocol (`GET /api/sampling?service=NAME`, and
//! the agent's `/sampling`), so Jaeger clients and the ferrotrace SDK's
//! `RemoteSampler` learn their rates from the collector.
//!
//! - [`config`]: `[sampling_api]`, the pinned probabilities and the address.
//! - [`strategy`]: Jaeger's JSON strategy, rendered once at start.
//! - [`handler`]: the query check (the `service` parameter, once, bounded)
//!   and the answer; counted in `ferrotrace_sampling_api_requests_total`.
//!
//! Rates are pinned in configuration; adaptive rates are not computed here.

pub mod config;
pub mod handler;
pub mod strategy;

pub use config::SamplingApiConfig;
pub use handler::{router, SamplingState};
pub use strategy::Strategies;
