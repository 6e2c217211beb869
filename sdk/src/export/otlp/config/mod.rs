//! OTLP exporter configuration: the `OTEL_EXPORTER_OTLP_*` environment
//! variables with the specification's defaults, overridable by builder methods.
//!
//! Split by concern: this file holds the resolved configuration and how the
//! environment and the builder's settings become it; `values.rs` parses and
//! checks endpoints and headers; `tls.rs` (feature `tls`) loads CA
//! certificates and client identities.

use std::time::Duration;

use crate::export::breaker::BreakerConfig;
use crate::export::retry::RetryPolicy;

#[cfg(feature = "tls")]
mod tls;
mod values;

#[cfg(feature = "tls")]
pub use tls::{CaCertificate, ClientIdentity};
#[cfg(feature = "tls")]
pub(crate) use tls::{CaSource, IdentitySource};
pub use values::parse_headers;
pub(crate) use values::set_header;
use values::{normalize_endpoint, validate_header};

/// Default gRPC endpoint.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Default HTTP base endpoint (the traces path is appended).
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";
/// Path appended to a base HTTP endpoint.
pub const HTTP_TRACES_PATH: &str = "/v1/traces";
/// Default `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP transport and encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies (`http/json`).
    HttpJson,
}

impl Protocol {
    /// Parses the `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            "http/json" => Some(Protocol::HttpJson),
            _ => None,
        }
    }
    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
    /// The specification's default: `http/protobuf` when the `otlp-http`
    /// feature is built, otherwise `grpc`.
    pub fn default_for_build() -> Self {
        if cfg!(feature = "otlp-http") {
            Protocol::HttpProtobuf
        } else {
            Protocol::Grpc
        }
    }
}

/// Request body compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Uncompressed (the default).
    #[default]
    None,
    /// gzip.
    Gzip,
}

impl Compression {
    /// Parses the `OTEL_EXPORTER_OTLP_COMPRESSION` spelling (`gzip` or `none`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "gzip" => Some(Compression::Gzip),
            "none" | "" => Some(Compression::None),
            _ => None,
        }
    }
}

/// Why an exporter could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable has a value the specification does not allow.
    #[error("{var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is allowed instead.
        reason: &'static str,
    },
    /// The endpoint is not a usable URL.
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// A header name or value cannot be sent.
    #[error("invalid OTLP header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The chosen protocol or `https` needs a cargo feature that is not enabled.
    #[error("{what} needs the ferrotrace cargo feature `{feature}`; enable it in Cargo.toml")]
    FeatureDisabled {
        /// What was asked for.
        what: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// The custom CA certificate (`OTEL_EXPORTER_OTLP_CERTIFICATE` or
    /// `with_ca_certificate_*`) cannot be read or holds no usable certificate.
    #[error("cannot use the CA certificate from {source_desc}: {reason}")]
    CaCertificate {
        /// Where it came from (variable and path, file, or in-memory PEM).
        source_desc: String,
        /// What was wrong.
        reason: String,
    },
    /// The client certificate or key (mTLS) cannot be read or used.
    #[error("cannot use the client certificate/key from {source_desc}: {reason}")]
    ClientIdentity {
        /// Where they came from (variables and paths, files, or in-memory PEM).
        source_desc: String,
        /// What was wrong.
        reason: String,
    },
    /// The exporter's runtime thread could not be started.
    #[error("could not start the exporter thread: {0}")]
    Runtime(String),
}

/// The resolved exporter configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// Transport and encoding.
    pub protocol: Protocol,
    /// The full URL requests go to (for HTTP including `/v1/traces`).
    pub endpoint: String,
    /// Extra request headers (gRPC metadata).
    pub headers: Vec<(String, String)>,
    /// Time budget for one batch export, retries included.
    pub timeout: Duration,
    /// Body compression.
    pub compression: Compression,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// Circuit breaker behaviour.
    pub breaker: BreakerConfig,
    /// CA certificates that alone are trusted for `https` endpoints, instead
    /// of the webpki roots (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`).
    #[cfg(feature = "tls")]
    pub ca_certificate: Option<CaCertificate>,
    /// The client certificate chain and key presented to `https` endpoints
    /// that ask for one (mTLS; `OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE`
    /// and `..._CLIENT_KEY`).
    #[cfg(feature = "tls")]
    pub client_identity: Option<ClientIdentity>,
}

fn pick(
    lookup: &dyn Fn(&str) -> Option<String>,
    specific: &str,
    generic: &str,
) -> Option<(String, bool)> {
    let nonempty = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    nonempty(specific)
        .map(|v| (v, true))
        .or_else(|| nonempty(generic).map(|v| (v, false)))
}

/// Unresolved settings: environment values plus code overrides.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings {
    pub protocol: Option<Protocol>,
    /// `(endpoint, is_signal_specific)`: a signal-specific HTTP endpoint is
    /// used as-is, a generic one gets `/v1/traces` appended.
    pub endpoint: Option<(String, bool)>,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub compression: Option<Compression>,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    #[cfg(feature = "tls")]
    pub ca_certificate: Option<CaSource>,
    #[cfg(feature = "tls")]
    pub client_identity: Option<IdentitySource>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]INSECURE`: `Some(true)` sends a
    /// scheme-less gRPC endpoint in plain text, otherwise over TLS.
    pub insecure: Option<bool>,
}

impl Settings {
    pub(crate) fn from_env_vars(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut s = Settings::default();
        if let Some((v, specific)) = pick(
            lookup,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            s.protocol = Some(Protocol::parse(&v).ok_or(ConfigError::InvalidEnv {
                var: if specific {
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                } else {
                    "OTEL_EXPORTER_OTLP_PROTOCOL"
                },
                value: v.clone(),
                reason: "use grpc, http/protobuf or http/json",
            })?);
        }
        s.endpoint = pick(
            lookup,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        )
        .map(|(v, specific)| (v.trim().to_string(), specific));
        // Generic headers first, signal-specific ones override by name.
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(v) = lookup(var) {
                for (k, val) in parse_headers(var, &v)? {
                    set_header(&mut s.headers, k, val);
                }
            }
        }
        if let Some((v, specific)) = pick(
            lookup,
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            let ms = v
                .trim()
                .parse::<u64>()
                .map_err(|_| ConfigError::InvalidEnv {
                    var: if specific {
                        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
                    } else {
                        "OTEL_EXPORTER_OTLP_TIMEOUT"
                    },
                    value: v.clone(),
                    reason: "use a whole number of milliseconds",
                })?;
            s.timeout = Some(Duration::from_millis(ms));
        }
        if let Some((v, specific)) = pick(
            lookup,
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            s.compression = Some(Compression::parse(&v).ok_or(ConfigError::InvalidEnv {
                var: if specific {
                    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
                } else {
                    "OTEL_EXPORTER_OTLP_COMPRESSION"
                },
                value: v.clone(),
                reason: "use gzip or none",
            })?);
        }
        #[cfg(feature = "tls")]
        if let Some((v, specific)) = pick(
            lookup,
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ) {
            s.ca_certificate = Some(CaSource::File {
                path: v.trim().into(),
                var: Some(if specific {
                    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"
                } else {
                    "OTEL_EXPORTER_OTLP_CERTIFICATE"
                }),
            });
        }
        #[cfg(feature = "tls")]
        {
            let cert = pick(
                lookup,
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            );
            let key = pick(
                lookup,
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            );
            let var =
                |specific: bool, s: &'static str, g: &'static str| if specific { s } else { g };
            match (cert, key) {
                (Some((c, cs)), Some((k, ks))) => {
                    s.client_identity = Some(IdentitySource::Files {
                        cert: (
                            c.trim().into(),
                            Some(var(
                                cs,
                                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                            )),
                        ),
                        key: (
                            k.trim().into(),
                            Some(var(
                                ks,
                                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                            )),
                        ),
                    });
                }
                (Some((c, cs)), None) => {
                    return Err(ConfigError::InvalidEnv {
                        var: var(cs, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
                        value: c,
                        reason: "a client certificate needs its key: set OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY too",
                    });
                }
                (None, Some((k, ks))) => {
                    return Err(ConfigError::InvalidEnv {
                        var: var(ks, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
                        value: k,
                        reason: "a client key needs its certificate: set OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE too",
                    });
                }
                (None, None) => {}
            }
        }
        #[cfg(not(feature = "tls"))]
        for var in [
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        ] {
            if lookup(var).is_some_and(|v| !v.trim().is_empty()) {
                crate::trace::diagnostics::report(crate::trace::diagnostics::Diagnostic::Config(
                    format!("{var} is ignored: TLS needs the ferrotrace cargo feature `tls`"),
                ));
            }
        }
        if let Some((v, specific)) = pick(
            lookup,
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
            "OTEL_EXPORTER_OTLP_INSECURE",
        ) {
            s.insecure = Some(match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ConfigError::InvalidEnv {
                        var: if specific {
                            "OTEL_EXPORTER_OTLP_TRACES_INSECURE"
                        } else {
                            "OTEL_EXPORTER_OTLP_INSECURE"
                        },
                        value: v.clone(),
                        reason: "use true or false",
                    })
                }
            });
        }
        Ok(s)
    }

    pub(crate) fn resolve(&self) -> Result<OtlpConfig, ConfigError> {
        let protocol = self.protocol.unwrap_or_else(Protocol::default_for_build);
        let endpoint = match (&self.endpoint, protocol) {
            (None, Protocol::Grpc) => DEFAULT_GRPC_ENDPOINT.to_string(),
            (None, _) => format!("{DEFAULT_HTTP_ENDPOINT}{HTTP_TRACES_PATH}"),
            (Some((e, _)), Protocol::Grpc) => e.clone(),
            (Some((e, true)), _) => e.clone(),
            (Some((e, false)), _) => format!("{}{HTTP_TRACES_PATH}", e.trim_end_matches('/')),
        };
        // The OTLP spec: INSECURE only applies to a gRPC endpoint given
        // without a scheme; then `false` (the default) means TLS.
        let default_scheme = match protocol {
            Protocol::Grpc if self.insecure != Some(true) => "https",
            _ => "http",
        };
        let endpoint = normalize_endpoint(&endpoint, default_scheme)?;
        for (k, v) in &self.headers {
            validate_header(k, v)?;
        }
        Ok(OtlpConfig {
            protocol,
            endpoint,
            headers: self.headers.clone(),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            compression: self.compression.unwrap_or_default(),
            retry: self.retry,
            breaker: self.breaker,
            #[cfg(feature = "tls")]
            ca_certificate: self
                .ca_certificate
                .as_ref()
                .map(CaSource::load)
                .transpose()?,
            #[cfg(feature = "tls")]
            client_identity: self
                .client_identity
                .as_ref()
                .map(IdentitySource::load)
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn resolve(pairs: &[(&str, &str)]) -> Result<OtlpConfig, ConfigError> {
        Settings::from_env_vars(&env(pairs))?.resolve()
    }

    #[test]
    fn spec_defaults() {
        let c = resolve(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap();
        assert_eq!(c.endpoint, "http://localhost:4317");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.compression, Compression::None);
        let c = resolve(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).unwrap();
        assert_eq!(c.endpoint, "http://localhost:4318/v1/traces");
        let c = resolve(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap();
        assert_eq!(c.protocol, Protocol::HttpJson);
        assert_eq!(c.endpoint, "http://localhost:4318/v1/traces");
    }

    #[test]
    fn generic_endpoint_gets_path_specific_is_used_as_is() {
        let c = resolve(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        let c = resolve(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9999/custom",
            ),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://other:9999/custom");
        // A scheme-less gRPC endpoint: plain text only with INSECURE=true
        // (the OTLP spec's default, `false`, means TLS).
        let c = resolve(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://collector:4317");
        let c = resolve(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "https://collector:4317");
        let c = resolve(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "FALSE"),
        ])
        .unwrap();
        assert_eq!(
            c.endpoint, "https://collector:4317",
            "the traces variable wins"
        );
        // A scheme in the endpoint decides; INSECURE does not apply to HTTP.
        for (protocol, endpoint, want) in [
            ("grpc", "http://collector:4317", "http://collector:4317"),
            ("grpc", "https://collector:4317", "https://collector:4317"),
            (
                "http/protobuf",
                "collector:4318",
                "http://collector:4318/v1/traces",
            ),
        ] {
            let c = resolve(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
            ])
            .unwrap();
            assert_eq!(c.endpoint, want);
        }
        let e = resolve(&[("OTEL_EXPORTER_OTLP_INSECURE", "yes")]).unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_INSECURE"), "{e}");
    }

    #[test]
    fn signal_specific_values_win() {
        let c = resolve(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "750"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,X-Tenant=one"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=two"),
        ])
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpJson);
        assert_eq!(c.timeout, Duration::from_millis(750));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(
            c.headers,
            vec![
                ("api-key".into(), "a b".into()),
                ("x-tenant".into(), "two".into())
            ]
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let e = resolve(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")]).unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
        let e = resolve(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
        let e = resolve(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]).unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");
        let e = resolve(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]).unwrap_err();
        assert!(e.to_string().contains("key=value"), "{e}");
        let e = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x:1")]).unwrap_err();
        assert!(e.to_string().contains("scheme"), "{e}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn ca_certificate_from_env_names_the_variable_and_file() {
        let e = resolve(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/generic.pem"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "/nonexistent/ca.pem",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE=/nonexistent/ca.pem"),
            "{e}"
        );
        let e = resolve(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/generic.pem")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_CERTIFICATE="), "{e}");
        assert!(resolve(&[]).unwrap().ca_certificate.is_none());
    }
}
