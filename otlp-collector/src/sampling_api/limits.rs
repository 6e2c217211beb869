//! The remote sampling API's bounds and its configuration error, shared by
//! `[sampling_api]` ([`super::config`]), `[sampling_api.adaptive]`
//! ([`super::adaptive`]) and the request handlers, so none of them depends on
//! another for them.

/// A `[sampling_api]` setting that is invalid, with the key and how to fix
/// it (`config` reports it as an invalid configuration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SamplingApiConfigError(pub String);

/// Services that may be pinned (each answer is prepared at start).
pub const MAX_SERVICES: usize = 10_000;
/// Pinned operations per service (the ferrotrace SDK and Jaeger's clients
/// keep at most 2,000 per-operation entries).
pub const MAX_OPERATIONS_PER_SERVICE: usize = 2_000;
/// Pinned operations over all services.
pub const MAX_OPERATIONS_TOTAL: usize = 100_000;
/// Longest service name, in bytes (also the longest `service` query value).
pub const MAX_SERVICE_NAME_BYTES: usize = 256;
/// Longest operation name, in bytes.
pub const MAX_OPERATION_NAME_BYTES: usize = 1_024;
/// Highest lower bound Jaeger's clients accept without complaint.
pub const MAX_LOWER_BOUND_PER_SECOND: f64 = 10_000.0;
