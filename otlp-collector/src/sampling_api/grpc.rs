//! gRPC `jaeger.api_v2.SamplingManager/GetSamplingStrategy`, the sampling
//! API Jaeger's collector serves on its gRPC port 14250 and that gRPC
//! remote samplers (OpenTelemetry Java's `JaegerRemoteSampler`, Go's
//! `jaegerremote` with a gRPC fetcher) poll.
//!
//! Served on the collector's gRPC listeners (`jaeger.grpc_addr` and
//! `server.otlp_grpc_addr`) when `[sampling_api] enabled`, through the same
//! path as the receivers' calls (`serve_unary`): bearer token, request
//! size limits and in-flight budget are checked before the message is
//! decoded. The answer is [`Strategies::answer`](crate::sampling_api::Strategies::answer), the one the HTTP API
//! serves, in its protobuf form; like the HTTP API's header, the response
//! metadata [`PERIOD_HEADER`] names the store period a `source = "store"`
//! strategy was computed from, so a gRPC client can tell answers of
//! different periods apart as an HTTP one can.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tonic::Status;

use super::handler::{SamplingState, PERIOD_HEADER};
use super::limits::MAX_SERVICE_NAME_BYTES;
use super::proto::pb;
use super::strategy::Source;
use crate::metrics::Source as IngestSource;
use crate::receiver::format::RecordFormat;
use crate::receiver::grpc_unary::serve_unary;
use crate::receiver::Ingest;

/// Full method path.
pub const GET_SAMPLING_STRATEGY_PATH: &str = "/jaeger.api_v2.SamplingManager/GetSamplingStrategy";

/// Checks the request and picks the answer. As the HTTP API: the service
/// name must be non-empty and at most 256 bytes, and an answer computed from
/// the store's counts names its period in the metadata [`PERIOD_HEADER`]
/// (Unix ns of the period's end).
pub fn get_strategy(
    state: &SamplingState,
    body: &[u8],
) -> Result<tonic::Response<pb::SamplingStrategyResponse>, Status> {
    let bad = |msg: String| {
        state.metrics.sampling_api_requests.add("bad_request", 1);
        Status::invalid_argument(msg)
    };
    let params = pb::SamplingStrategyParameters::decode(body)
        .map_err(|e| bad(format!("invalid SamplingStrategyParameters: {e}")))?;
    let service = params.service_name;
    if service.is_empty() {
        return Err(bad("serviceName is empty".into()));
    }
    if service.len() > MAX_SERVICE_NAME_BYTES {
        return Err(bad(format!(
            "serviceName is longer than {MAX_SERVICE_NAME_BYTES} bytes"
        )));
    }
    let (answer, source, period) = state.strategies.answer_with_period(&service);
    let outcome = match source {
        Source::Pinned => "pinned",
        Source::Adaptive => "adaptive",
        Source::Default => "default",
    };
    state.metrics.sampling_api_requests.add(outcome, 1);
    let mut response = tonic::Response::new(answer.proto.clone());
    if let Some(p) = period {
        response
            .metadata_mut()
            .insert(PERIOD_HEADER, tonic::metadata::MetadataValue::from(p));
    }
    Ok(response)
}

#[derive(Clone)]
struct GetStrategySvc(SamplingState);

impl tonic::server::UnaryService<Bytes> for GetStrategySvc {
    type Response = pb::SamplingStrategyResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let r = get_strategy(&self.0, request.get_ref());
        Box::pin(async move { r })
    }
}

/// Serves one `GetSamplingStrategy` call on a receiver's listener, with
/// that listener's auth, limits and counters (`source`, `format`).
pub(crate) fn serve<B>(
    state: SamplingState,
    ingest: Arc<Ingest>,
    req: http::Request<B>,
    source: IngestSource,
    format: RecordFormat,
) -> Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + 'static,
{
    Box::pin(serve_unary(
        ingest,
        req,
        source,
        format,
        GetStrategySvc(state),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::sampling_api::{SamplingApiConfig, Strategies};

    /// The hand-written types against an independent implementation: the
    /// bytes below are Python `protobuf`'s encoding of the same messages,
    /// from a descriptor built field by field after `sampling.proto`.
    #[test]
    fn wire_format_matches_pythons_protobuf() {
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let prob = |p| Some(pb::ProbabilisticSamplingStrategy { sampling_rate: p });
        let r = pb::SamplingStrategyResponse {
            strategy_type: pb::SamplingStrategyType::RateLimiting as i32,
            probabilistic_sampling: prob(0.25),
            rate_limiting_sampling: Some(pb::RateLimitingSamplingStrategy {
                max_traces_per_second: 7,
            }),
            operation_sampling: Some(pb::PerOperationSamplingStrategies {
                default_sampling_probability: 0.25,
                default_lower_bound_traces_per_second: 0.5,
                per_operation_strategies: vec![pb::OperationSamplingStrategy {
                    operation: "GET /cart".into(),
                    probabilistic_sampling: prob(1.0),
                }],
                default_upper_bound_traces_per_second: 9.0,
            }),
        };
        assert_eq!(
            hex(r.encode_to_vec()),
            "0801120909000000000000d03f1a020807223309000000000000d03f11000000000000e03f1a160a09\
             474554202f63617274120909000000000000f03f210000000000002240"
        );
        let q = pb::SamplingStrategyParameters {
            service_name: "checkout".into(),
        };
        assert_eq!(hex(q.encode_to_vec()), "0a08636865636b6f7574");
    }

    #[test]
    fn answers_like_the_http_api_and_refuses_bad_names() {
        let cfg: SamplingApiConfig = toml::from_str(
            r#"
            [services.checkout]
            probability = 0.25
            operations = { "GET /cart" = 1.0 }
            "#,
        )
        .unwrap();
        let state = SamplingState::new(Strategies::new(&cfg), Arc::new(Metrics::default()));
        let req = |name: &str| {
            pb::SamplingStrategyParameters {
                service_name: name.into(),
            }
            .encode_to_vec()
        };
        let r = get_strategy(&state, &req("checkout")).unwrap();
        // Not computed from the store: no period named.
        assert!(r.metadata().get(PERIOD_HEADER).is_none());
        let r = r.into_inner();
        assert_eq!(r.probabilistic_sampling.unwrap().sampling_rate, 0.25);
        let ops = r.operation_sampling.unwrap().per_operation_strategies;
        assert_eq!(ops[0].operation, "GET /cart");
        let d = get_strategy(&state, &req("other")).unwrap().into_inner();
        assert_eq!(d.probabilistic_sampling.unwrap().sampling_rate, 0.001);
        assert!(get_strategy(&state, &req("")).is_err());
        assert!(get_strategy(&state, &req(&"x".repeat(257))).is_err());
        assert!(get_strategy(&state, &[0xff, 0xff, 0xff]).is_err());
    }

    /// Once the rates come from a store period, every answer (pinned,
    /// adaptive or default, as the HTTP header) names that period's end in
    /// its metadata, and the next recomputation's period replaces it.
    #[test]
    fn answers_name_the_store_period_in_metadata() {
        let cfg: SamplingApiConfig = toml::from_str(
            r#"
            [services.checkout]
            probability = 0.25
            "#,
        )
        .unwrap();
        let state = SamplingState::new(Strategies::new(&cfg), Arc::new(Metrics::default()));
        let req = |name: &str| {
            pb::SamplingStrategyParameters {
                service_name: name.into(),
            }
            .encode_to_vec()
        };
        let period = |name: &str| {
            get_strategy(&state, &req(name))
                .unwrap()
                .metadata()
                .get(PERIOD_HEADER)
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap())
        };
        assert_eq!(period("other"), None);
        let end = 1_765_000_000_000_000_000u64;
        state
            .strategies
            .set_adaptive_from(&std::collections::BTreeMap::new(), Some(end));
        assert_eq!(period("checkout"), Some(end));
        assert_eq!(period("other"), Some(end));
        state.strategies.set_adaptive_from(
            &std::collections::BTreeMap::new(),
            Some(end + 1_000_000_000),
        );
        assert_eq!(period("other"), Some(end + 1_000_000_000));
    }
}
