//! The answers: Jaeger's sampling strategy (the JSON form of
//! `jaeger.api_v2.SamplingStrategyResponse`, as Jaeger's collector and agent
//! serve it), built once at start for every pinned service and the default,
//! and at every recomputation for the services with adaptive rates.
//!
//! One source of truth for both protocols: each strategy is built once as
//! the protobuf message the gRPC `SamplingManager` returns, and the JSON the
//! HTTP API returns is rendered from that same message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::{json, Value};

use super::adaptive::ServiceRates;
use super::config::{SamplingApiConfig, ServiceStrategyConfig};
use super::proto::pb;

/// One service's strategy in both wire forms.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP API's JSON body.
    pub json: Bytes,
    /// The gRPC API's message (the JSON above is rendered from it).
    pub proto: pb::SamplingStrategyResponse,
}

/// Prepared answers, looked up by service name.
#[derive(Debug)]
pub struct Strategies {
    default: Arc<Answer>,
    services: HashMap<String, Arc<Answer>>,
    lower_bound: f64,
    /// Adaptive answers, replaced whole at each recomputation, with the end
    /// (Unix ns) of the last store period they were computed from (`None`
    /// for `source = "local"` or before the first recomputation): one lock,
    /// so an answer and its period are always read together.
    adaptive: RwLock<(Option<u64>, Arc<AdaptiveAnswers>)>,
}

/// The adaptive answers by service.
type AdaptiveAnswers = HashMap<String, Arc<Answer>>;

/// Whether a body came from a pinned service or the default (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The service is pinned in `[sampling_api.services]`.
    Pinned,
    /// Computed from the service's observed throughput.
    Adaptive,
    /// Any other service.
    Default,
}

impl Strategies {
    /// Renders every answer from a validated configuration.
    pub fn new(cfg: &SamplingApiConfig) -> Strategies {
        let default = render(
            cfg.default_probability,
            cfg.default_lower_bound_traces_per_second,
            &ServiceStrategyConfig::default(),
        );
        let services = cfg
            .services
            .iter()
            .map(|(name, s)| {
                let p = s.probability.unwrap_or(cfg.default_probability);
                let body = render(p, cfg.default_lower_bound_traces_per_second, s);
                (name.clone(), body)
            })
            .collect();
        Strategies {
            default,
            services,
            lower_bound: cfg.default_lower_bound_traces_per_second,
            adaptive: RwLock::new((None, Arc::new(HashMap::new()))),
        }
    }

    /// The JSON body for `service` (see [`answer`](Self::answer)).
    pub fn get(&self, service: &str) -> (Bytes, Source) {
        let (a, src) = self.answer(service);
        (a.json.clone(), src)
    }

    /// The answer for `service`: its pinned strategy (pinned rates win), its
    /// adaptive one, or the default one. Both APIs look up here.
    pub fn answer(&self, service: &str) -> (Arc<Answer>, Source) {
        let (a, src, _) = self.answer_with_period(service);
        (a, src)
    }

    /// [`answer`](Self::answer), and the end (Unix ns) of the last store
    /// period the adaptive answers in force were computed from (`None` when
    /// they do not come from the store's counts). Every answer carries it,
    /// the default and pinned ones too: whether a service is adaptive at
    /// all is decided by the same recomputation.
    pub fn answer_with_period(&self, service: &str) -> (Arc<Answer>, Source, Option<u64>) {
        let adaptive = self.adaptive.read();
        let period = adaptive.0;
        if let Some(b) = self.services.get(service) {
            return (b.clone(), Source::Pinned, period);
        }
        if let Some(b) = adaptive.1.get(service) {
            return (b.clone(), Source::Adaptive, period);
        }
        (self.default.clone(), Source::Default, period)
    }

    /// Replaces the adaptive answers; pinned services are left out (their
    /// pinned answer is served).
    pub fn set_adaptive(&self, rates: &BTreeMap<String, ServiceRates>) {
        self.set_adaptive_from(rates, None);
    }

    /// [`set_adaptive`](Self::set_adaptive) with the end (Unix ns) of the
    /// last store period the rates were computed from, served beside every
    /// answer (see [`answer_with_period`](Self::answer_with_period)).
    pub fn set_adaptive_from(
        &self,
        rates: &BTreeMap<String, ServiceRates>,
        period_end_ns: Option<u64>,
    ) {
        let map: HashMap<String, Arc<Answer>> = rates
            .iter()
            .filter(|(s, _)| !self.services.contains_key(*s))
            .map(|(s, r)| {
                let cfg = ServiceStrategyConfig {
                    probability: Some(r.probability),
                    operations: r.operations.clone(),
                };
                (s.clone(), render(r.probability, self.lower_bound, &cfg))
            })
            .collect();
        *self.adaptive.write() = (period_end_ns, Arc::new(map));
    }
}

/// One strategy. Jaeger's shape: a service-wide probabilistic strategy,
/// plus `operationSampling` when there is something per operation (pinned
/// operations or a lower bound), whose default probability is the
/// service's.
fn render(probability: f64, lower_bound: f64, s: &ServiceStrategyConfig) -> Arc<Answer> {
    let prob = |p: f64| Some(pb::ProbabilisticSamplingStrategy { sampling_rate: p });
    let operation_sampling = (!s.operations.is_empty() || lower_bound > 0.0).then(|| {
        pb::PerOperationSamplingStrategies {
            default_sampling_probability: probability,
            default_lower_bound_traces_per_second: lower_bound,
            per_operation_strategies: s
                .operations
                .iter()
                .map(|(op, p)| pb::OperationSamplingStrategy {
                    operation: op.clone(),
                    probabilistic_sampling: prob(*p),
                })
                .collect(),
            default_upper_bound_traces_per_second: 0.0,
        }
    });
    let proto = pb::SamplingStrategyResponse {
        strategy_type: pb::SamplingStrategyType::Probabilistic as i32,
        probabilistic_sampling: prob(probability),
        rate_limiting_sampling: None,
        operation_sampling,
    };
    let json = to_json(&proto);
    Arc::new(Answer { json, proto })
}

/// Jaeger's JSON form of the message. `strategyType` is always written
/// (Jaeger's legacy endpoint does; protobuf JSON may omit it as the zero
/// value, which clients accept); the upper bound, never set here, is left
/// out as Jaeger's legacy endpoint does.
fn to_json(m: &pb::SamplingStrategyResponse) -> Bytes {
    let rate = |p: &Option<pb::ProbabilisticSamplingStrategy>| json!({ "samplingRate": p.map(|p| p.sampling_rate).unwrap_or(0.0) });
    let mut v = json!({
        "strategyType": "PROBABILISTIC",
        "probabilisticSampling": rate(&m.probabilistic_sampling),
    });
    if let Some(o) = &m.operation_sampling {
        let per_op: Vec<Value> = o
            .per_operation_strategies
            .iter()
            .map(|s| {
                json!({
                    "operation": s.operation,
                    "probabilisticSampling": rate(&s.probabilistic_sampling),
                })
            })
            .collect();
        v["operationSampling"] = json!({
            "defaultSamplingProbability": o.default_sampling_probability,
            "defaultLowerBoundTracesPerSecond": o.default_lower_bound_traces_per_second,
            "perOperationStrategies": per_op,
        });
    }
    Bytes::from(serde_json::to_vec(&v).expect("a JSON value serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn default_is_plain_probabilistic() {
        let s = Strategies::new(&SamplingApiConfig::default());
        let (b, src) = s.get("anything");
        assert_eq!(src, Source::Default);
        assert_eq!(
            parse(&b),
            json!({"strategyType": "PROBABILISTIC", "probabilisticSampling": {"samplingRate": 0.001}})
        );
    }

    #[test]
    fn pinned_service_with_operations_has_jaegers_per_operation_shape() {
        let cfg: SamplingApiConfig = toml::from_str(
            r#"
            default_probability = 0.1
            default_lower_bound_traces_per_second = 0.5
            [services.checkout]
            probability = 0.25
            operations = { "GET /cart" = 1.0, "a\"quote" = 0.0 }
            [services.plain]
            "#,
        )
        .unwrap();
        let s = Strategies::new(&cfg);
        let (b, src) = s.get("checkout");
        assert_eq!(src, Source::Pinned);
        assert_eq!(
            parse(&b),
            json!({
                "strategyType": "PROBABILISTIC",
                "probabilisticSampling": {"samplingRate": 0.25},
                "operationSampling": {
                    "defaultSamplingProbability": 0.25,
                    "defaultLowerBoundTracesPerSecond": 0.5,
                    "perOperationStrategies": [
                        {"operation": "GET /cart", "probabilisticSampling": {"samplingRate": 1.0}},
                        {"operation": "a\"quote", "probabilisticSampling": {"samplingRate": 0.0}},
                    ],
                },
            })
        );
        // A pinned service without a probability gets the default one.
        let (b, _) = s.get("plain");
        assert_eq!(parse(&b)["probabilisticSampling"]["samplingRate"], 0.1);
        assert_eq!(
            parse(&b)["operationSampling"]["perOperationStrategies"],
            json!([])
        );
    }

    #[test]
    fn adaptive_answers_yield_to_pinned_ones() {
        let cfg: SamplingApiConfig = toml::from_str(
            r#"
            [services.pinned]
            probability = 0.5
            "#,
        )
        .unwrap();
        let s = Strategies::new(&cfg);
        let rates: BTreeMap<String, ServiceRates> = ["pinned", "free"]
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    ServiceRates {
                        probability: 0.02,
                        operations: [("hot".to_string(), 0.01)].into_iter().collect(),
                    },
                )
            })
            .collect();
        s.set_adaptive(&rates);
        let (b, src) = s.get("pinned");
        assert_eq!(src, Source::Pinned);
        assert_eq!(parse(&b)["probabilisticSampling"]["samplingRate"], 0.5);
        let (b, src) = s.get("free");
        assert_eq!(src, Source::Adaptive);
        let v = parse(&b);
        assert_eq!(v["probabilisticSampling"]["samplingRate"], 0.02);
        assert_eq!(v["operationSampling"]["defaultSamplingProbability"], 0.02);
        assert_eq!(
            v["operationSampling"]["perOperationStrategies"],
            json!([{"operation": "hot", "probabilisticSampling": {"samplingRate": 0.01}}])
        );
        assert_eq!(s.get("other").1, Source::Default);
        // Rates of `source = "local"` name no store period.
        assert_eq!(s.answer_with_period("free").2, None);
        // From the store: every answer names the period, with its body.
        s.set_adaptive_from(&rates, Some(42_000_000_000));
        for (name, src) in [
            ("free", Source::Adaptive),
            ("pinned", Source::Pinned),
            ("other", Source::Default),
        ] {
            let (_, got, period) = s.answer_with_period(name);
            assert_eq!((got, period), (src, Some(42_000_000_000)), "{name}");
        }
    }
}
