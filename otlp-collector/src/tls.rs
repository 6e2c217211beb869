//! TLS for the collector's listeners (rustls with the `ring` provider).
//!
//! When `[tls] cert_file` and `key_file` are set, every listener serves TLS
//! only. Handshakes run in their own tasks, off the accept loop, with a
//! timeout and a bound on how many run at once, so a client that connects and
//! then stalls cannot hold up anybody else's accept. Finished connections are
//! handed to the HTTP (axum) or gRPC (tonic) server through a channel.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress per listener; past this, accepting waits (the
/// kernel's backlog holds new connections meanwhile).
const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the server to pick them up.
const READY_QUEUE: usize = 64;

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

/// An accepted connection after a completed TLS handshake.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    local: Option<SocketAddr>,
    remote: SocketAddr,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.remote),
        }
    }
}

/// A listener that yields connections whose TLS handshake has completed.
/// Implements axum's [`axum::serve::Listener`]; [`TlsListener::into_stream`]
/// feeds tonic's `serve_with_incoming_shutdown`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<TlsConn>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with handshakes in background tasks. The
    /// accept task ends when this listener (or its stream) is dropped.
    /// `name` labels the handshake-failure metric.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        name: &'static str,
        metrics: Arc<Metrics>,
    ) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(
            tcp,
            tokio_rustls::TlsAcceptor::from(config),
            name,
            metrics,
            tx,
        ));
        Ok(TlsListener { ready, local })
    }

    /// The connections as a stream, for tonic.
    pub fn into_stream(
        mut self,
    ) -> impl futures_util::Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
        futures_util::stream::poll_fn(move |cx| self.ready.poll_recv(cx).map(|c| c.map(Ok)))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => {
                let remote = c.remote;
                (c, remote)
            }
            // The accept task only ends once this receiver is gone, so this
            // cannot happen; never hand axum a fake connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    name: &'static str,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<TlsConn>,
) {
    let local = tcp.local_addr().ok();
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = tx.closed() => return,
            r = tcp.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept;
                    // back off instead of spinning (as axum and tonic do).
                    tracing::debug!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, metrics, tx) = (acceptor.clone(), metrics.clone(), tx.clone());
        tokio::spawn(async move {
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            let inner = match result {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(listener = name, %remote, error = %e, "TLS handshake failed");
                    metrics.tls_handshake_failures.add(name, 1);
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = name, %remote, "TLS handshake timed out");
                    metrics.tls_handshake_failures.add(name, 1);
                    return;
                }
            };
            // The handshake is done: free the slot before possibly waiting on a busy server.
            drop(permit);
            let _ = tx
                .send(TlsConn {
                    inner,
                    local,
                    remote,
                })
                .await;
        });
    }
}
