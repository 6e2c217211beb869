//! `[sampling_api]`: the strategies the collector serves to SDKs, pinned in
//! configuration, and where it serves them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::limits::{
    SamplingApiConfigError, MAX_LOWER_BOUND_PER_SECOND, MAX_OPERATIONS_PER_SERVICE,
    MAX_OPERATIONS_TOTAL, MAX_OPERATION_NAME_BYTES, MAX_SERVICES, MAX_SERVICE_NAME_BYTES,
};

/// Jaeger's default remote-sampling port, on loopback.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5778";

/// The remote sampling API (Jaeger's `GET /api/sampling?service=NAME`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingApiConfig {
    /// Serve the API (off by default; `--sampling-addr` turns it on).
    pub enabled: bool,
    /// Listen address (`--sampling-addr`) [default: 127.0.0.1:5778].
    pub addr: String,
    /// Probability served to services not pinned below, and to pinned
    /// services' operations not listed [default: 0.001, as Jaeger].
    pub default_probability: f64,
    /// Traces per second each operation keeps at least (Jaeger's
    /// `defaultLowerBoundTracesPerSecond`) [default: 0, none].
    pub default_lower_bound_traces_per_second: f64,
    /// Pinned services by name.
    pub services: BTreeMap<String, ServiceStrategyConfig>,
    /// `[sampling_api.adaptive]`: rates computed from observed throughput
    /// for services not pinned here.
    pub adaptive: super::adaptive::AdaptiveConfig,
}

impl Default for SamplingApiConfig {
    fn default() -> Self {
        SamplingApiConfig {
            enabled: false,
            addr: DEFAULT_ADDR.into(),
            default_probability: 0.001,
            default_lower_bound_traces_per_second: 0.0,
            services: BTreeMap::new(),
            adaptive: Default::default(),
        }
    }
}

/// One pinned service: `[sampling_api.services."checkout"]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceStrategyConfig {
    /// The service's probability [default: `default_probability`].
    pub probability: Option<f64>,
    /// Pinned operations (span names) and their probabilities.
    pub operations: BTreeMap<String, f64>,
}

fn invalid(msg: String) -> SamplingApiConfigError {
    SamplingApiConfigError(msg)
}

fn probability(key: &str, p: f64) -> Result<(), SamplingApiConfigError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{key} = {p} is not a probability: give a number from 0 to 1"
        )))
    }
}

impl SamplingApiConfig {
    /// The address to bind: empty when the API is off.
    pub fn listen_addr(&self) -> &str {
        if self.enabled {
            &self.addr
        } else {
            ""
        }
    }

    /// Checks ranges, counts and name lengths; errors name the key.
    pub fn validate(&self) -> Result<(), SamplingApiConfigError> {
        if self.enabled && self.addr.parse::<SocketAddr>().is_err() {
            return Err(invalid(format!(
                "sampling_api.addr = {:?} is not an IP:port address (e.g. {DEFAULT_ADDR}); \
                 set it or --sampling-addr, or set sampling_api.enabled = false",
                self.addr
            )));
        }
        probability("sampling_api.default_probability", self.default_probability)?;
        let lb = self.default_lower_bound_traces_per_second;
        if !(0.0..=MAX_LOWER_BOUND_PER_SECOND).contains(&lb) {
            return Err(invalid(format!(
                "sampling_api.default_lower_bound_traces_per_second = {lb} must be from 0 to \
                 {MAX_LOWER_BOUND_PER_SECOND}"
            )));
        }
        self.adaptive.validate()?;
        if self.services.len() > MAX_SERVICES {
            return Err(invalid(format!(
                "sampling_api.services pins {} services; at most {MAX_SERVICES} are allowed",
                self.services.len()
            )));
        }
        let mut total = 0usize;
        for (name, s) in &self.services {
            if name.is_empty() || name.len() > MAX_SERVICE_NAME_BYTES {
                return Err(invalid(format!(
                    "sampling_api.services has a service name of {} bytes; names must have 1 to \
                     {MAX_SERVICE_NAME_BYTES} bytes",
                    name.len()
                )));
            }
            if let Some(p) = s.probability {
                probability(&format!("sampling_api.services.{name:?}.probability"), p)?;
            }
            if s.operations.len() > MAX_OPERATIONS_PER_SERVICE {
                return Err(invalid(format!(
                    "sampling_api.services.{name:?}.operations pins {} operations; at most \
                     {MAX_OPERATIONS_PER_SERVICE} per service are allowed",
                    s.operations.len()
                )));
            }
            total += s.operations.len();
            for (op, p) in &s.operations {
                if op.is_empty() || op.len() > MAX_OPERATION_NAME_BYTES {
                    return Err(invalid(format!(
                        "sampling_api.services.{name:?}.operations has an operation name of {} \
                         bytes; names must have 1 to {MAX_OPERATION_NAME_BYTES} bytes",
                        op.len()
                    )));
                }
                probability(
                    &format!("sampling_api.services.{name:?}.operations.{op:?}"),
                    *p,
                )?;
            }
        }
        if total > MAX_OPERATIONS_TOTAL {
            return Err(invalid(format!(
                "sampling_api.services pins {total} operations in all; at most \
                 {MAX_OPERATIONS_TOTAL} are allowed"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &SamplingApiConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let c = SamplingApiConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen_addr(), "");
        assert_eq!(c.addr, "127.0.0.1:5778");
        assert_eq!(c.default_probability, 0.001);
    }

    #[test]
    fn parses_pinned_services_from_toml() {
        let c: SamplingApiConfig = toml::from_str(
            r#"
            enabled = true
            default_probability = 0.25
            [services.checkout]
            probability = 0.5
            [services.checkout.operations]
            "GET /cart" = 1.0
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen_addr(), "127.0.0.1:5778");
        assert_eq!(c.services["checkout"].operations["GET /cart"], 1.0);
        assert!(toml::from_str::<SamplingApiConfig>("probabilty = 1").is_err());
    }

    #[test]
    fn rejects_out_of_range_values_naming_the_key() {
        let mut c = SamplingApiConfig {
            default_probability: 1.5,
            ..Default::default()
        };
        assert!(err(&c).contains("sampling_api.default_probability = 1.5"));
        c.default_probability = f64::NAN;
        assert!(err(&c).contains("not a probability"));
        c.default_probability = 0.5;
        c.default_lower_bound_traces_per_second = -1.0;
        assert!(err(&c).contains("default_lower_bound_traces_per_second"));
        c.default_lower_bound_traces_per_second = 0.0;
        c.services.insert(
            "a".into(),
            ServiceStrategyConfig {
                probability: Some(-0.1),
                ..Default::default()
            },
        );
        assert!(err(&c).contains("sampling_api.services.\"a\".probability"));
        c.services.get_mut("a").unwrap().probability = None;
        c.services
            .get_mut("a")
            .unwrap()
            .operations
            .insert("op".into(), 2.0);
        assert!(err(&c).contains("operations.\"op\""));
        c.enabled = true;
        c.addr = "localhost".into();
        assert!(err(&c).contains("--sampling-addr"));
    }

    #[test]
    fn bounds_counts_and_name_lengths() {
        let mut c = SamplingApiConfig::default();
        c.services
            .insert("s".repeat(MAX_SERVICE_NAME_BYTES + 1), Default::default());
        assert!(err(&c).contains("1 to 256 bytes"));
        c.services.clear();
        c.services.insert(String::new(), Default::default());
        assert!(err(&c).contains("0 bytes"));
        c.services.clear();
        let mut s = ServiceStrategyConfig::default();
        s.operations
            .insert("o".repeat(MAX_OPERATION_NAME_BYTES + 1), 0.5);
        c.services.insert("a".into(), s);
        assert!(err(&c).contains("1 to 1024 bytes"));
        let mut s = ServiceStrategyConfig::default();
        for i in 0..=MAX_OPERATIONS_PER_SERVICE {
            s.operations.insert(format!("op{i}"), 0.5);
        }
        c.services.insert("a".into(), s);
        assert!(err(&c).contains("at most 2000 per service"));
        c.services.clear();
        for i in 0..=MAX_SERVICES {
            c.services.insert(format!("svc{i}"), Default::default());
        }
        assert!(err(&c).contains("at most 10000 are allowed"));
    }
}
