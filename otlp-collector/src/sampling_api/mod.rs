//! The remote sampling API: the collector serves sampling strategies to
//! SDKs over Jaeger's HTTP protocol (`GET /api/sampling?service=NAME`, and
//! the agent's `/sampling`) and gRPC protocol
//! (`jaeger.api_v2.SamplingManager/GetSamplingStrategy`), so Jaeger clients
//! and the ferrotrace SDK's `RemoteSampler` learn their rates from the
//! collector.
//!
//! - [`config`]: `[sampling_api]`, the pinned probabilities and the address.
//! - [`limits`]: the API's bounds and its configuration error, shared by
//!   `config`, `adaptive` and the handlers.
//! - [`strategy`]: Jaeger's JSON strategy, rendered once at start.
//! - [`grpc`]: the gRPC method, served on the collector's gRPC listeners.
//! - [`proto`]: Jaeger's sampling messages.
//! - [`handler`]: the query check (the `service` parameter, once, bounded)
//!   and the answer; counted in `ferrotrace_sampling_api_requests_total`.
//! - [`adaptive`]: `[sampling_api.adaptive]`, probabilities computed from the
//!   observed adjusted throughput of root spans; pinned services win.
//! - [`throughput`]: the root-span counts the rates are computed from, per
//!   wall-clock period when collectors share a store.
//! - [`recompute`]: the periodic task that turns the pipeline's counts into
//!   served strategies.
//! - [`settings`]: the fingerprint of the settings collectors sharing a
//!   store must agree on, and the check that they do.

pub mod adaptive;
pub mod config;
pub mod grpc;
pub mod handler;
pub mod limits;
pub mod proto;
pub mod recompute;
pub mod settings;
pub mod strategy;
pub mod throughput;

pub use config::SamplingApiConfig;
pub use handler::{router, SamplingState};
pub use strategy::Strategies;
