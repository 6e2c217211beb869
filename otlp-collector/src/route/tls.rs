//! TLS from a router to its backends (`route.tls_ca_file`): the forwarded
//! OTLP/gRPC and the `/readyz` health checks both run over TLS, the
//! backends' certificates verified against the given CA (backends serve
//! TLS with `[tls] cert_file` / `key_file`, on every listener). The name
//! checked in a backend's certificate is `route.tls_server_name` when set
//! (one certificate for every backend, e.g. found through DNS), else the
//! host of its address (a DNS name or an IP address SAN).

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::{split_host_port, RouteConfig, RouteConfigError};

/// Client TLS settings for the backends.
#[derive(Clone)]
pub struct BackendTls {
    /// ALPN `h2`: forwarding (OTLP/gRPC).
    grpc: TlsConnector,
    /// ALPN `http/1.1`: health checks.
    http: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BackendTls {
    /// The TLS settings of `cfg`; `None` when `tls_ca_file` is unset (plain
    /// TCP). Fails when the CA file cannot be read or holds no certificate,
    /// or the server name is not a name.
    pub fn from_config(cfg: &RouteConfig) -> Result<Option<BackendTls>, RouteConfigError> {
        let Some(ca) = &cfg.tls_ca_file else {
            if !cfg.tls_server_name.is_empty() {
                return Err(RouteConfigError(
                    "route.tls_server_name is set but route.tls_ca_file is not: set the CA \
                     that signed the backends' certificates to forward over TLS"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let bad = |why: String| {
            RouteConfigError(format!(
                "route.tls_ca_file {}: {why} (a PEM file with the CA certificate(s) that \
                 signed the backends' certificates)",
                ca.display()
            ))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            roots
                .add(c)
                .map_err(|e| bad(format!("unusable certificate: {e}")))?;
        }
        let config = |alpn: &[u8]| -> Result<TlsConnector, RouteConfigError> {
            let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsConnector::from(Arc::new(c)))
        };
        let server_name = if cfg.tls_server_name.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(cfg.tls_server_name.clone()).map_err(|_| {
                    RouteConfigError(format!(
                        "route.tls_server_name {:?} is not a DNS name or IP address",
                        cfg.tls_server_name
                    ))
                })?,
            )
        };
        Ok(Some(BackendTls {
            grpc: config(b"h2")?,
            http: config(b"http/1.1")?,
            server_name,
        }))
    }

    /// A TLS connection to `addr` (`host:port`), for gRPC (`h2`) or the
    /// health check, verified as the module says; `timeout` bounds the TCP
    /// connect and the handshake together.
    pub async fn connect(
        &self,
        addr: &str,
        grpc: bool,
        timeout: Duration,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let (host, port) = split_host_port(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{host:?} is not a name a certificate can be checked against"),
                )
            })?,
        };
        let connector = if grpc { &self.grpc } else { &self.http };
        let connect = async {
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            connector.connect(name, tcp).await
        };
        tokio::time::timeout(timeout, connect).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "TLS connection to {addr} not made within {} ms",
                    timeout.as_millis()
                ),
            )
        })?
    }
}
