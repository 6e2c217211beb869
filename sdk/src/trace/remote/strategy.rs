//! Jaeger's sampling strategy response (`GET /api/sampling?service=NAME`,
//! the JSON form of `jaeger.api_v2.SamplingStrategyResponse`): strict
//! parsing into a checked [`StrategyResponse`].
//!
//! Strict means: the body must be one JSON object; every field this SDK
//! uses must have the right type and range (a probability in `[0, 1]`, a
//! rate that is finite and not negative), and an error names the JSON path
//! and the value found. Two leniencies follow the protobuf JSON mapping
//! Jaeger uses: a numeric field that is absent is 0 (proto3 omits default
//! values, so `"probabilisticSampling": {}` is a rate of 0), and fields the
//! SDK does not use are ignored (newer servers may add some).

use serde_json::{Map, Value};

/// Why a strategy response was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// The body is not valid JSON.
    #[error("the sampling strategy response is not valid JSON: {0}")]
    Json(String),
    /// A field has the wrong type or an out-of-range value.
    #[error("the sampling strategy response has an invalid {path}: {problem}")]
    Field {
        /// JSON path of the field (e.g. `operationSampling.perOperationStrategies[2].operation`).
        path: String,
        /// What was wrong.
        problem: String,
    },
    /// No strategy in the response.
    #[error("the sampling strategy response has none of probabilisticSampling, rateLimitingSampling, operationSampling")]
    NoStrategy,
}

/// One operation's probability.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationStrategy {
    /// The operation (span name).
    pub operation: String,
    /// Its sampling probability.
    pub probability: f64,
}

/// Per-operation sampling.
#[derive(Clone, Debug, PartialEq)]
pub struct PerOperation {
    /// Probability for operations not listed.
    pub default_probability: f64,
    /// Traces per second each operation gets at least (Jaeger's lower bound).
    pub default_lower_bound_per_second: f64,
    /// Listed operations, first occurrence of each name, at most the configured maximum.
    pub operations: Vec<OperationStrategy>,
    /// Listed operations left out (duplicates or beyond the maximum).
    pub operations_dropped: usize,
}

/// A checked strategy.
#[derive(Clone, Debug, PartialEq)]
pub enum StrategyResponse {
    /// One probability for the whole service.
    Probabilistic(f64),
    /// At most this many traces per second.
    RateLimiting(f64),
    /// Per-operation probabilities.
    PerOperation(PerOperation),
}

fn field(path: &str, problem: impl Into<String>) -> StrategyError {
    StrategyError::Field {
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// A short rendering of a JSON value for error messages (attacker-controlled,
/// so it is cut).
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        let cut: String = s.chars().take(64).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, StrategyError> {
    v.as_object()
        .ok_or_else(|| field(path, format!("expected an object, got {}", show(v))))
}

/// An optional object member (`null` counts as absent, as in protobuf JSON).
fn member<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, StrategyError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => object(v, &join(path, key)).map(Some),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A number member; absent or `null` is 0 (proto3 default).
fn number(obj: &Map<String, Value>, key: &str, path: &str) -> Result<f64, StrategyError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0.0),
        Some(v) => v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
            field(
                &join(path, key),
                format!("expected a number, got {}", show(v)),
            )
        }),
    }
}

fn probability(obj: &Map<String, Value>, key: &str, path: &str) -> Result<f64, StrategyError> {
    let p = number(obj, key, path)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(field(
            &join(path, key),
            format!("expected a probability in [0, 1], got {p:?}"),
        ))
    }
}

fn rate(obj: &Map<String, Value>, key: &str, path: &str) -> Result<f64, StrategyError> {
    let r = number(obj, key, path)?;
    if r >= 0.0 {
        Ok(r)
    } else {
        Err(field(
            &join(path, key),
            format!("expected a rate of at least 0, got {r:?}"),
        ))
    }
}

/// The strategy type, if given: `PROBABILISTIC`/`RATE_LIMITING` or 0/1.
fn strategy_type(obj: &Map<String, Value>) -> Result<Option<bool>, StrategyError> {
    const PATH: &str = "strategyType";
    match obj.get(PATH) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "PROBABILISTIC" => Ok(Some(false)),
        Some(Value::String(s)) if s == "RATE_LIMITING" => Ok(Some(true)),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(v) => Err(field(
            PATH,
            format!(
                "expected \"PROBABILISTIC\", \"RATE_LIMITING\", 0 or 1, got {}",
                show(v)
            ),
        )),
    }
}

/// Parses and checks a strategy response body, keeping at most
/// `max_operations` per-operation entries.
pub fn parse_strategy(
    body: &[u8],
    max_operations: usize,
) -> Result<StrategyResponse, StrategyError> {
    // serde_json bounds nesting (128 levels) itself, so hostile depth is an error, not a crash.
    let v: Value = serde_json::from_slice(body).map_err(|e| StrategyError::Json(e.to_string()))?;
    let top = object(&v, "the response")?;
    let rate_limiting_type = strategy_type(top)?;
    if let Some(ops) = member(top, "operationSampling", "")? {
        return per_operation(ops, max_operations).map(StrategyResponse::PerOperation);
    }
    let prob = member(top, "probabilisticSampling", "")?;
    let limit = member(top, "rateLimitingSampling", "")?;
    let prob = prob
        .map(|p| probability(p, "samplingRate", "probabilisticSampling"))
        .transpose()?;
    let limit = limit
        .map(|l| rate(l, "maxTracesPerSecond", "rateLimitingSampling"))
        .transpose()?;
    match (rate_limiting_type, prob, limit) {
        (Some(true), _, Some(r)) => Ok(StrategyResponse::RateLimiting(r)),
        (Some(true), _, None) => Err(field(
            "rateLimitingSampling",
            "strategyType is RATE_LIMITING but rateLimitingSampling is missing",
        )),
        (_, Some(p), _) => Ok(StrategyResponse::Probabilistic(p)),
        (None, None, Some(r)) => Ok(StrategyResponse::RateLimiting(r)),
        // proto3 omits the default enum (PROBABILISTIC) and a zero rate, so
        // an explicit PROBABILISTIC without the object is probability 0.
        (Some(false), None, _) => Ok(StrategyResponse::Probabilistic(0.0)),
        (None, None, None) => Err(StrategyError::NoStrategy),
    }
}

fn per_operation(
    obj: &Map<String, Value>,
    max_operations: usize,
) -> Result<PerOperation, StrategyError> {
    const PATH: &str = "operationSampling";
    let default_probability = probability(obj, "defaultSamplingProbability", PATH)?;
    let default_lower_bound_per_second = rate(obj, "defaultLowerBoundTracesPerSecond", PATH)?;
    let mut out = PerOperation {
        default_probability,
        default_lower_bound_per_second,
        operations: Vec::new(),
        operations_dropped: 0,
    };
    let list = match obj.get("perOperationStrategies") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(field(
                "operationSampling.perOperationStrategies",
                format!("expected an array, got {}", show(v)),
            ))
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in list.iter().enumerate() {
        let path = format!("operationSampling.perOperationStrategies[{i}]");
        let e = object(entry, &path)?;
        let operation = match e.get("operation") {
            Some(Value::String(s)) => s,
            Some(v) => {
                return Err(field(
                    &join(&path, "operation"),
                    format!("expected a string, got {}", show(v)),
                ))
            }
            None => return Err(field(&join(&path, "operation"), "missing")),
        };
        let probability = match member(e, "probabilisticSampling", &path)? {
            Some(p) => probability(p, "samplingRate", &join(&path, "probabilisticSampling"))?,
            None => 0.0,
        };
        // Every entry is checked even beyond the maximum: a malformed
        // response is rejected as a whole, never half applied.
        if out.operations.len() >= max_operations || !seen.insert(operation.as_str()) {
            out.operations_dropped += 1;
            continue;
        }
        out.operations.push(OperationStrategy {
            operation: operation.clone(),
            probability,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StrategyResponse, StrategyError> {
        parse_strategy(s.as_bytes(), 3)
    }

    #[test]
    fn jaeger_shapes() {
        assert_eq!(
            parse(
                r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.5}}"#
            ),
            Ok(StrategyResponse::Probabilistic(0.5))
        );
        // The agent's Thrift JSON: numeric enum.
        assert_eq!(
            parse(r#"{"strategyType":1,"rateLimitingSampling":{"maxTracesPerSecond":7}}"#),
            Ok(StrategyResponse::RateLimiting(7.0))
        );
        // proto3 JSON omits defaults: type PROBABILISTIC and rate 0.
        assert_eq!(
            parse(r#"{"probabilisticSampling":{}}"#),
            Ok(StrategyResponse::Probabilistic(0.0))
        );
        let got = parse(
            r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":1},
                "operationSampling":{"defaultSamplingProbability":0.001,
                "defaultLowerBoundTracesPerSecond":0.0166,"defaultUpperBoundTracesPerSecond":100,
                "perOperationStrategies":[
                  {"operation":"GET /a","probabilisticSampling":{"samplingRate":0.2}},
                  {"operation":"GET /b","probabilisticSampling":{}},
                  {"operation":"GET /a","probabilisticSampling":{"samplingRate":0.9}},
                  {"operation":"c","probabilisticSampling":{"samplingRate":1}},
                  {"operation":"d","probabilisticSampling":{"samplingRate":1}}]}}"#,
        )
        .unwrap();
        let StrategyResponse::PerOperation(p) = got else {
            panic!("{got:?}")
        };
        assert_eq!(p.default_probability, 0.001);
        assert_eq!(p.default_lower_bound_per_second, 0.0166);
        let names: Vec<_> = p
            .operations
            .iter()
            .map(|o| (o.operation.as_str(), o.probability))
            .collect();
        assert_eq!(names, [("GET /a", 0.2), ("GET /b", 0.0), ("c", 1.0)]);
        assert_eq!(
            p.operations_dropped, 2,
            "a duplicate and one beyond the maximum"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", "not valid JSON"),
            ("[]", "the response: expected an object"),
            ("{}", "none of"),
            (
                r#"{"probabilisticSampling":{"samplingRate":1.5}}"#,
                "probabilisticSampling.samplingRate: expected a probability in [0, 1], got 1.5",
            ),
            (
                r#"{"probabilisticSampling":{"samplingRate":"0.5"}}"#,
                "probabilisticSampling.samplingRate: expected a number",
            ),
            (
                r#"{"probabilisticSampling":{"samplingRate":-0.1}}"#,
                "[0, 1]",
            ),
            (
                r#"{"probabilisticSampling":[]}"#,
                "probabilisticSampling: expected an object",
            ),
            (
                r#"{"rateLimitingSampling":{"maxTracesPerSecond":-1}}"#,
                "at least 0",
            ),
            (r#"{"strategyType":"FAST"}"#, "strategyType"),
            (
                r#"{"strategyType":"RATE_LIMITING","probabilisticSampling":{"samplingRate":1}}"#,
                "rateLimitingSampling is missing",
            ),
            (
                r#"{"operationSampling":{"defaultSamplingProbability":2}}"#,
                "operationSampling.defaultSamplingProbability",
            ),
            (
                r#"{"operationSampling":{"perOperationStrategies":{}}}"#,
                "perOperationStrategies: expected an array",
            ),
            (
                r#"{"operationSampling":{"perOperationStrategies":[{"operation":1}]}}"#,
                "perOperationStrategies[0].operation: expected a string",
            ),
            (
                r#"{"operationSampling":{"perOperationStrategies":[{}]}}"#,
                "perOperationStrategies[0].operation: missing",
            ),
            (
                r#"{"operationSampling":{"perOperationStrategies":[{"operation":"a"},{"operation":"b"},{"operation":"c"},{"operation":"d"},{"operation":"e","probabilisticSampling":{"samplingRate":9}}]}}"#,
                "perOperationStrategies[4].probabilisticSampling.samplingRate",
            ),
            (
                r#"{"probabilisticSampling":{"samplingRate":1e999}}"#,
                "not valid JSON",
            ),
        ];
        for (body, want) in cases {
            let err = parse(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        let deep = "[".repeat(10_000);
        assert!(parse(&deep)
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        let long = format!(r#"{{"strategyType":"{}"}}"#, "x".repeat(10_000));
        assert!(
            parse(&long).unwrap_err().to_string().len() < 300,
            "values are cut in messages"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Arbitrary bytes never panic; whatever is accepted is in range.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            check(parse_strategy(&body, 5));
        }

        /// Near-miss JSON (the right keys, random values and nesting) never panics.
        #[test]
        fn near_miss_json_never_panics(
            ty in r#"(null|0|1|2|-1|"PROBABILISTIC"|"RATE_LIMITING"|"x"|\[\]|\{\})"#,
            v in r#"(null|0|1|0\.5|-0\.5|2|1e308|-1e308|"0\.5"|true|\[\]|\{\}|\{"samplingRate":0\.1\})"#,
            op in r#"(null|1|"a"|""|\[\]|"\\u0000")"#,
            n in 0usize..12,
        ) {
            let ops: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"operation":{op},"probabilisticSampling":{{"samplingRate":{v}}},"i":{i}}}"#))
                .collect();
            let body = format!(
                r#"{{"strategyType":{ty},"probabilisticSampling":{{"samplingRate":{v}}},"rateLimitingSampling":{{"maxTracesPerSecond":{v}}},"operationSampling":{{"defaultSamplingProbability":{v},"defaultLowerBoundTracesPerSecond":{v},"perOperationStrategies":[{}]}}}}"#,
                ops.join(",")
            );
            check(parse_strategy(body.as_bytes(), 5));
        }
    }

    fn check(r: Result<StrategyResponse, StrategyError>) {
        let ok_p = |p: f64| (0.0..=1.0).contains(&p);
        match r {
            Ok(StrategyResponse::Probabilistic(p)) => assert!(ok_p(p)),
            Ok(StrategyResponse::RateLimiting(r)) => assert!(r >= 0.0 && r.is_finite()),
            Ok(StrategyResponse::PerOperation(po)) => {
                assert!(ok_p(po.default_probability));
                assert!(po.default_lower_bound_per_second >= 0.0);
                assert!(po.operations.len() <= 5);
                assert!(po.operations.iter().all(|o| ok_p(o.probability)));
            }
            Err(e) => assert!(e.to_string().len() < 400, "{e}"),
        }
    }
}
