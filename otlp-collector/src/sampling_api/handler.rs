//! `GET /api/sampling?service=NAME` (and `/sampling`, the Jaeger agent's
//! path that Jaeger's own clients poll): the query check and the answer.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::limits::MAX_SERVICE_NAME_BYTES;
use super::strategy::{Source, Strategies};
use crate::metrics::Metrics;

/// Response header naming the end (Unix time in nanoseconds) of the last
/// wall-clock period whose store-wide counts the served strategy was
/// computed from (`[sampling_api.adaptive] source = "store"` only):
/// collectors on one store that name the same period serve the same bytes.
/// The gRPC method sends the same name as response metadata.
pub const PERIOD_HEADER: &str = "x-ferrotrace-sampling-period-end";

/// Longest query string read; longer ones are refused before parsing.
pub const MAX_QUERY_BYTES: usize = 4_096;

/// What the handler serves from.
#[derive(Clone, Debug)]
pub struct SamplingState {
    pub(super) strategies: Arc<Strategies>,
    pub(super) metrics: Arc<Metrics>,
}

impl SamplingState {
    /// Serves `strategies`, counting requests in `metrics`.
    pub fn new(strategies: Strategies, metrics: Arc<Metrics>) -> SamplingState {
        Self::shared(Arc::new(strategies), metrics)
    }

    /// Serves strategies that another task updates (adaptive rates).
    pub fn shared(strategies: Arc<Strategies>, metrics: Arc<Metrics>) -> SamplingState {
        SamplingState {
            strategies,
            metrics,
        }
    }
}

/// The sampling API's routes.
pub fn router(state: SamplingState) -> Router {
    Router::new()
        .route("/api/sampling", get(strategy))
        .route("/sampling", get(strategy))
        .with_state(state)
}

/// The one `service` value of a query string, or why there is none. As
/// Jaeger's handler: the parameter must appear exactly once.
pub fn service_param(query: Option<&str>) -> Result<String, &'static str> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY_BYTES {
        return Err("the query string is longer than 4096 bytes; send only ?service=NAME\n");
    }
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "service" {
            if found.is_some() {
                return Err("'service' parameter must be provided once\n");
            }
            found = Some(v);
        }
    }
    match found {
        None => Err("'service' parameter must be provided once: ?service=NAME\n"),
        Some(v) if v.is_empty() => Err("'service' parameter is empty: ?service=NAME\n"),
        Some(v) if v.len() > MAX_SERVICE_NAME_BYTES => {
            Err("'service' parameter is longer than 256 bytes\n")
        }
        Some(v) => Ok(v.into_owned()),
    }
}

async fn strategy(State(s): State<SamplingState>, RawQuery(q): RawQuery) -> Response {
    let service = match service_param(q.as_deref()) {
        Ok(v) => v,
        Err(msg) => {
            s.metrics.sampling_api_requests.add("bad_request", 1);
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                msg,
            )
                .into_response();
        }
    };
    let (answer, source, period) = s.strategies.answer_with_period(&service);
    let body = answer.json.clone();
    let outcome = match source {
        Source::Pinned => "pinned",
        Source::Adaptive => "adaptive",
        Source::Default => "default",
    };
    s.metrics.sampling_api_requests.add(outcome, 1);
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(p) = period {
        resp.headers_mut().insert(PERIOD_HEADER, p.into());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_must_appear_once_non_empty_and_short() {
        assert_eq!(service_param(Some("service=a%20b")).unwrap(), "a b");
        assert_eq!(service_param(Some("x=1&service=c+d")).unwrap(), "c d");
        assert!(service_param(None).unwrap_err().contains("provided once"));
        assert!(service_param(Some("servic=a")).is_err());
        assert!(service_param(Some("service=a&service=b"))
            .unwrap_err()
            .contains("once"));
        assert!(service_param(Some("service="))
            .unwrap_err()
            .contains("empty"));
        let long = format!("service={}", "x".repeat(257));
        assert!(service_param(Some(&long)).unwrap_err().contains("256"));
        let huge = format!("service=a&pad={}", "x".repeat(5000));
        assert!(service_param(Some(&huge)).unwrap_err().contains("4096"));
        // Invalid UTF-8 and stray percent signs never panic.
        assert!(service_param(Some("service=%FF%FE")).is_ok());
        assert!(service_param(Some("service=%G1%")).is_ok());
    }
}
