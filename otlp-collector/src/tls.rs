//! TLS for the collector's listeners (rustls with the `ring` provider).
//!
//! When `[tls] cert_file` and `key_file` are set, every listener serves TLS
//! only. Each handshake runs in its connection's own task, off the accept
//! loop, under `connections.tls_handshake_timeout_ms` and the connection
//! limits ([`crate::listener`]), so a client that connects and then stalls
//! cannot hold up anybody else's accept.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// TLS for every listener. With both files set, the OTLP/gRPC, OTLP/HTTP,
/// Zipkin and query/UI/metrics listeners serve TLS only; with neither, plain TCP.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (server certificate first, then intermediates).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_file: Option<PathBuf>,
}

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `cert_file` / `key_file` is set.
    #[error("tls.cert_file and tls.key_file must be set together (--tls-cert / --tls-key); only {0} is set")]
    Incomplete(&'static str),
    /// A file could not be read.
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A file could not be parsed as PEM of the expected kind.
    #[error("invalid TLS {what} file {path}: {message}")]
    Parse {
        /// `certificate` or `private key`.
        what: &'static str,
        /// File path.
        path: PathBuf,
        /// What was wrong and what to do.
        message: String,
    },
    /// rustls refused the pair (for example the key does not match the certificate).
    #[error("cannot use TLS certificate {cert} with key {key}: {message}")]
    Config {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls's reason.
        message: String,
    },
}

/// Reads a PEM certificate chain (leaf first).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate";
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Parse {
            what,
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Parse {
            what,
            path: path.to_path_buf(),
            message: "no PEM `CERTIFICATE` block found (expected the server certificate, \
                      then any intermediates)"
                .into(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "private key";
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Parse {
        what,
        path: path.to_path_buf(),
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block found".into()
            }
            other => other.to_string(),
        },
    })
}

/// Builds the server configuration from the `[tls]` section; `None` when TLS
/// is off (neither file set).
pub fn server_config(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (cert, key) = match (cert_file, key_file) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(TlsError::Incomplete("cert_file")),
        (None, Some(_)) => return Err(TlsError::Incomplete("key_file")),
        (Some(c), Some(k)) => (c, k),
    };
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let config_err = |e: rustls::Error| TlsError::Config {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        message: match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "the private key does not belong to the certificate (the first certificate in \
                 the file must be the server's own)"
                    .into()
            }
            other => other.to_string(),
        },
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(config_err)?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(config_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}
