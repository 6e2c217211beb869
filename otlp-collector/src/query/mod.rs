//! Query side of the collector: a native JSON API, the Jaeger-compatible v1 and
//! v3 HTTP APIs, and the web UI, all served by one axum [`Router`] over any
//! [`SpanReader`] (the trace and analytics reader roles; queries never write).
//!
//! Every search carries a time range no wider than [`QueryLimits::max_window_ns`]
//! and a limit of at most [`QueryLimits::max_limit`]; parameters are validated
//! with messages that say what was wrong (HTTP 400).

pub mod api;
pub mod critical_path;
pub mod engine;
pub mod grpc;
pub mod hosts;
pub mod jaeger;
pub mod jaeger_model;
pub mod jaeger_v3;
pub mod node;
pub mod params;
pub mod skew;
pub mod trace_json;
pub mod tree;

use std::sync::Arc;

use axum::Router;

use crate::storage::SpanReader;

pub use engine::QueryError;
pub use tree::{NodeInfo, TraceTree};

/// Bounds every query is held to.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryLimits {
    /// Widest time window a search, dependency or latency query may span (default 7 days).
    pub max_window_ns: u64,
    /// Largest page size (default 100).
    pub max_limit: usize,
    /// Page size when none is given (default 20).
    pub default_limit: usize,
    /// Window used where an endpoint lets the range be omitted, as Jaeger's
    /// own API does for `/api/traces` and `/api/dependencies` (default 1 hour).
    /// Service and operation lists without a range look back `max_window_ns`.
    pub default_lookback_ns: u64,
    /// Widest window for exact percentiles computed from stored spans (default 1 hour).
    pub exact_percentiles_max_window_ns: u64,
    /// Most time buckets a latency series may have (default 1,440).
    pub max_series_points: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_window_ns: 7 * 24 * 3600 * 1_000_000_000,
            max_limit: 100,
            default_limit: 20,
            default_lookback_ns: 3600 * 1_000_000_000,
            exact_percentiles_max_window_ns: 3600 * 1_000_000_000,
            max_series_points: 1440,
        }
    }
}

/// Shared state of the query routes: the store and the limits.
#[derive(Clone)]
pub struct QueryState {
    /// The sink's reader roles that queries read from.
    pub store: Arc<dyn SpanReader>,
    /// Query bounds.
    pub limits: QueryLimits,
}

impl QueryState {
    /// State with default limits.
    pub fn new(store: Arc<dyn SpanReader>) -> Self {
        QueryState {
            store,
            limits: QueryLimits::default(),
        }
    }
}

/// All query routes and the web UI: the native API under `/api/native/`, Jaeger
/// v1 under `/api/`, Jaeger v3 under `/api/v3/`, the gRPC query service under
/// `/ferrotrace.query.v1.QueryService/` (HTTP/2), and the UI at `/`.
pub fn router(state: QueryState) -> Router {
    let grpc = grpc::GrpcQuery::new(state.clone()).into_server();
    Router::new()
        .route_service("/ferrotrace.query.v1.QueryService/{*method}", grpc)
        .merge(api::routes())
        .merge(jaeger::routes())
        .merge(jaeger_v3::routes())
        .merge(crate::ui::routes())
        .with_state(state)
}
