//! OTLP exporter configuration: the `OTEL_EXPORTER_OTLP_*` environment
//! variables with the specification's defaults, overridable by builder methods.

use std::time::Duration;

use crate::export::breaker::BreakerConfig;
use crate::export::retry::RetryPolicy;

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

/// A PEM bundle of CA certificates to trust for `https` endpoints.
#[cfg(feature = "tls")]
#[derive(Clone, PartialEq, Eq)]
pub struct CaCertificate {
    pem: Vec<u8>,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    source: String,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCertificate")
            .field("source", &self.source)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

#[cfg(feature = "tls")]
impl CaCertificate {
    /// Parses a PEM bundle; `source` says where it came from, for errors.
    pub(crate) fn from_pem(pem: Vec<u8>, source: String) -> Result<Self, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        let invalid = |reason: String| ConfigError::CaCertificate {
            source_desc: source.clone(),
            reason,
        };
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no PEM `CERTIFICATE` block found".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (i, c) in certs.iter().enumerate() {
            roots
                .add(c.clone())
                .map_err(|e| invalid(format!("certificate #{}: {e}", i + 1)))?;
        }
        Ok(CaCertificate { pem, certs, source })
    }

    /// The PEM text as given.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// A root store holding exactly these certificates.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        // Every certificate was accepted by `from_pem`.
        roots.add_parsable_certificates(self.certs.iter().cloned());
        roots
    }

    /// Where the certificates came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A client certificate chain and its private key (PEM), for mTLS.
#[cfg(feature = "tls")]
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    source: String,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ClientIdentity")
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(feature = "tls")]
impl ClientIdentity {
    /// Checks that `cert_pem` holds at least one certificate and `key_pem` a
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        source: String,
    ) -> Result<Self, ConfigError> {
        let id = ClientIdentity {
            cert_pem,
            key_pem,
            source,
        };
        id.certs()?;
        id.key()?;
        Ok(id)
    }

    fn invalid(&self, reason: String) -> ConfigError {
        ConfigError::ClientIdentity {
            source_desc: self.source.clone(),
            reason,
        }
    }

    /// The certificate chain.
    pub fn certs(&self) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(format!("certificate is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.invalid("no PEM `CERTIFICATE` block in the certificate file".into()));
        }
        Ok(certs)
    }

    /// The private key.
    pub fn key(&self) -> Result<rustls::pki_types::PrivateKeyDer<'static>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| {
            self.invalid(format!(
                "no usable private key (PKCS#8, PKCS#1 or SEC1 PEM) in the key file: {e}"
            ))
        })
    }

    /// The certificate PEM as given.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// The key PEM as given.
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    /// Where they came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Where a client certificate and key come from.
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub(crate) enum IdentitySource {
    Pem {
        cert: Vec<u8>,
        key: Vec<u8>,
    },
    Files {
        cert: (std::path::PathBuf, Option<&'static str>),
        key: (std::path::PathBuf, Option<&'static str>),
    },
}

#[cfg(feature = "tls")]
impl IdentitySource {
    fn load(&self) -> Result<ClientIdentity, ConfigError> {
        match self {
            IdentitySource::Pem { cert, key } => {
                ClientIdentity::from_pem(cert.clone(), key.clone(), "in-memory PEM".into())
            }
            IdentitySource::Files { cert, key } => {
                let desc = |(path, var): &(std::path::PathBuf, Option<&'static str>)| match var {
                    Some(v) => format!("{v}={}", path.display()),
                    None => format!("file {}", path.display()),
                };
                let source = format!("{} and {}", desc(cert), desc(key));
                let read = |f: &(std::path::PathBuf, Option<&'static str>)| {
                    std::fs::read(&f.0).map_err(|e| ConfigError::ClientIdentity {
                        source_desc: desc(f),
                        reason: e.to_string(),
                    })
                };
                ClientIdentity::from_pem(read(cert)?, read(key)?, source)
            }
        }
    }
}

/// Where a custom CA comes from, read when the configuration is resolved.
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub(crate) enum CaSource {
    Pem(Vec<u8>),
    File {
        path: std::path::PathBuf,
        var: Option<&'static str>,
    },
}

#[cfg(feature = "tls")]
impl CaSource {
    fn load(&self) -> Result<CaCertificate, ConfigError> {
        match self {
            CaSource::Pem(pem) => CaCertificate::from_pem(pem.clone(), "in-memory PEM".into()),
            CaSource::File { path, var } => {
                let desc = match var {
                    Some(v) => format!("{v}={}", path.display()),
                    None => format!("file {}", path.display()),
                };
                let pem = std::fs::read(path).map_err(|e| ConfigError::CaCertificate {
                    source_desc: desc.clone(),
                    reason: e.to_string(),
                })?;
                CaCertificate::from_pem(pem, desc)
            }
        }
    }
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

pub(crate) fn set_header(headers: &mut Vec<(String, String)>, k: String, v: String) {
    let k = k.to_ascii_lowercase();
    if let Some(e) = headers.iter_mut().find(|(n, _)| *n == k) {
        e.1 = v;
    } else {
        headers.push((k, v));
    }
}

/// Adds `default_scheme://` to a bare `host:port` and checks the URL parses.
fn normalize_endpoint(e: &str, default_scheme: &str) -> Result<String, ConfigError> {
    let e = e.trim();
    let with_scheme = if e.contains("://") {
        e.to_string()
    } else {
        format!("{default_scheme}://{e}")
    };
    let uri: http::Uri =
        with_scheme
            .parse()
            .map_err(|err: http::uri::InvalidUri| ConfigError::InvalidEndpoint {
                endpoint: e.to_string(),
                reason: err.to_string(),
            })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        other => {
            return Err(ConfigError::InvalidEndpoint {
                endpoint: e.to_string(),
                reason: format!("scheme {other:?} is not http or https"),
            })
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::InvalidEndpoint {
            endpoint: e.to_string(),
            reason: "no host".into(),
        });
    }
    Ok(with_scheme)
}

fn validate_header(k: &str, v: &str) -> Result<(), ConfigError> {
    http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| ConfigError::InvalidHeader {
        name: k.to_string(),
        reason: e.to_string(),
    })?;
    http::HeaderValue::from_str(v).map_err(|e| ConfigError::InvalidHeader {
        name: k.to_string(),
        reason: e.to_string(),
    })?;
    Ok(())
}

/// Parses the W3C-baggage-like `key1=value1,key2=value2` list of
/// `OTEL_EXPORTER_OTLP_HEADERS`; values are percent-decoded.
pub fn parse_headers(var: &'static str, s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once('=').ok_or(ConfigError::InvalidEnv {
            var,
            value: s.to_string(),
            reason: "use comma-separated key=value pairs",
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(ConfigError::InvalidEnv {
                var,
                value: s.to_string(),
                reason: "a header name is empty",
            });
        }
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8_lossy()
            .into_owned();
        out.push((k.to_ascii_lowercase(), v));
    }
    Ok(out)
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

    #[cfg(feature = "tls")]
    #[test]
    fn ca_certificate_must_hold_a_certificate() {
        let e = CaCertificate::from_pem(b"not a certificate".to_vec(), "test".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PEM `CERTIFICATE` block"), "{e}");
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = CaCertificate::from_pem(bad.to_vec(), "test".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("certificate #1"), "{e}");
    }
}
