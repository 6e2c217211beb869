//! Enrichment: adds configured resource attributes to every span (static ones
//! such as `deployment.environment`, the collector's host name, and
//! per-service metadata such as `service.version` or `team`). Existing
//! attributes are never overwritten unless `overwrite = true`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{AttrValue, KeyValue, Span};

/// Attribute key for the collector's host name.
pub const COLLECTOR_HOST_KEY: &str = "collector.host.name";

/// `[enrich]` configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// Resource attributes added to every span, e.g.
    /// `{ "deployment.environment" = "prod" }` (default none).
    pub attributes: BTreeMap<String, String>,
    /// Adds `collector.host.name` with this machine's host name (default false).
    pub add_collector_host: bool,
    /// Per-service resource attributes, keyed by `service.name`, e.g.
    /// `[enrich.services.checkout] "service.version" = "1.4.2", team = "payments"`.
    pub services: BTreeMap<String, BTreeMap<String, String>>,
    /// Replace attributes the span already has (default false: keep the sender's).
    pub overwrite: bool,
}

/// An enrichment configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid enrich setting: {0}")]
pub struct EnrichConfigError(String);

/// Applies [`EnrichConfig`] to spans.
#[derive(Debug, Clone)]
pub struct Enricher {
    common: Vec<(String, String)>,
    services: BTreeMap<String, Vec<(String, String)>>,
    overwrite: bool,
    /// Attributes added or replaced so far.
    pub attributes_added: u64,
}

/// This machine's host name (from the kernel, else `$HOSTNAME`).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

fn check_key(k: &str) -> Result<(), EnrichConfigError> {
    if k.is_empty() {
        return Err(EnrichConfigError("attribute keys must not be empty".into()));
    }
    if k == "service.name" {
        // service.name identifies the span's service everywhere (sinks,
        // rollups, queries); enrichment changing it would split services.
        return Err(EnrichConfigError(
            "`service.name` cannot be set by enrichment; set it in the SDK".into(),
        ));
    }
    Ok(())
}

impl Enricher {
    /// Validates the configuration and builds the enricher.
    pub fn new(config: &EnrichConfig) -> Result<Self, EnrichConfigError> {
        let mut common: Vec<(String, String)> = config
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if config.add_collector_host {
            let host = host_name().ok_or_else(|| {
                EnrichConfigError("add_collector_host is set but the host name cannot be read; set it as a static attribute".into())
            })?;
            common.push((COLLECTOR_HOST_KEY.to_string(), host));
        }
        for (k, _) in &common {
            check_key(k)?;
        }
        let mut services = BTreeMap::new();
        for (svc, attrs) in &config.services {
            for k in attrs.keys() {
                check_key(k)?;
            }
            services.insert(
                svc.clone(),
                attrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            );
        }
        Ok(Enricher {
            common,
            services,
            overwrite: config.overwrite,
            attributes_added: 0,
        })
    }

    /// True when there is nothing to add.
    pub fn is_noop(&self) -> bool {
        self.common.is_empty() && self.services.is_empty()
    }

    /// Adds the configured attributes to the span's resource attributes.
    pub fn apply(&mut self, span: &mut Span) {
        // Per-service values first so they win over the common ones.
        let svc = self.services.get(span.service_name.as_str());
        for (k, v) in svc.into_iter().flatten().chain(self.common.iter()) {
            // The resource list is shared with the span's siblings: it is
            // copied (`make_mut`) only when this span's actually changes.
            match span.resource_attributes.iter().position(|kv| kv.key == *k) {
                Some(i) => {
                    if self.overwrite
                        && !matches!(&span.resource_attributes[i].value, AttrValue::Str(s) if s == v)
                        && !Self::set_this_round(svc, k, v)
                    {
                        span.resource_attributes.make_mut()[i].value =
                            AttrValue::Str(v.as_str().into());
                        self.attributes_added += 1;
                    }
                }
                None => {
                    span.resource_attributes
                        .make_mut()
                        .push(KeyValue::new(k.as_str(), AttrValue::Str(v.as_str().into())));
                    self.attributes_added += 1;
                }
            }
        }
    }

    /// With `overwrite`, a common value must not replace a per-service value
    /// of the same key that was just written.
    fn set_this_round(svc: Option<&Vec<(String, String)>>, k: &str, v: &str) -> bool {
        svc.is_some_and(|attrs| attrs.iter().any(|(sk, sv)| sk == k && sv != v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, res: Vec<KeyValue>) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [1; 8],
            kind: Default::default(),
            start_ns: 0,
            end_ns: 0,
            service_name: service.into(),
            resource_attributes: res.into(),
            ..Span::test(0)
        }
    }

    fn get<'a>(s: &'a Span, k: &str) -> Option<&'a AttrValue> {
        s.resource_attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| &kv.value)
    }

    fn config(overwrite: bool) -> EnrichConfig {
        EnrichConfig {
            attributes: [
                ("deployment.environment".to_string(), "prod".to_string()),
                ("team".into(), "core".into()),
            ]
            .into_iter()
            .collect(),
            add_collector_host: false,
            services: [(
                "checkout".to_string(),
                [("team".to_string(), "payments".to_string())]
                    .into_iter()
                    .collect(),
            )]
            .into_iter()
            .collect(),
            overwrite,
        }
    }

    #[test]
    fn adds_without_overwriting_by_default() {
        let mut e = Enricher::new(&config(false)).expect("config");
        let mut s = span(
            "checkout",
            vec![KeyValue::new(
                "deployment.environment",
                AttrValue::Str("staging".into()),
            )],
        );
        e.apply(&mut s);
        assert_eq!(
            get(&s, "deployment.environment"),
            Some(&AttrValue::Str("staging".into()))
        );
        assert_eq!(get(&s, "team"), Some(&AttrValue::Str("payments".into())));
        let mut o = span("other", vec![]);
        e.apply(&mut o);
        assert_eq!(get(&o, "team"), Some(&AttrValue::Str("core".into())));
        assert_eq!(o.resource_attributes.len(), 2);
    }

    #[test]
    fn overwrite_when_configured_service_value_wins() {
        let mut e = Enricher::new(&config(true)).expect("config");
        let mut s = span(
            "checkout",
            vec![
                KeyValue::new("deployment.environment", AttrValue::Str("staging".into())),
                KeyValue::new("team", AttrValue::Str("someone".into())),
            ],
        );
        e.apply(&mut s);
        assert_eq!(
            get(&s, "deployment.environment"),
            Some(&AttrValue::Str("prod".into()))
        );
        assert_eq!(get(&s, "team"), Some(&AttrValue::Str("payments".into())));
        assert_eq!(s.resource_attributes.len(), 2);
    }

    #[test]
    fn host_and_validation() {
        let mut c = EnrichConfig {
            add_collector_host: true,
            ..Default::default()
        };
        if host_name().is_some() {
            let mut e = Enricher::new(&c).expect("config");
            let mut s = span("x", vec![]);
            e.apply(&mut s);
            assert!(
                matches!(get(&s, COLLECTOR_HOST_KEY), Some(AttrValue::Str(h)) if !h.is_empty())
            );
        }
        c.attributes.insert("service.name".into(), "evil".into());
        assert!(Enricher::new(&c).is_err());
        assert!(serde_json::from_str::<EnrichConfig>(r#"{"attrs": {}}"#).is_err());
        assert!(Enricher::new(&EnrichConfig::default())
            .expect("default")
            .is_noop());
    }
}
