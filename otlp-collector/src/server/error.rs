//! Why the collector could not start ([`StartError`]), the process exit
//! code each failure maps to, and the hint naming the flag and key of a
//! listener that cannot bind.

use crate::config::ConfigError;
use crate::pipeline::wal::WalError;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The WAL could not be opened.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A listener could not bind.
    #[error(
        "cannot listen on {addr} for {what}: {source}; {}",
        bind_hint(what, source)
    )]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A pipeline stage (sampling, enrichment, redaction) is misconfigured.
    #[error(transparent)]
    Stage(#[from] crate::pipeline::StageError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The cold tier's location could not be opened or listed.
    #[error("cold tier: {0}")]
    Cold(crate::storage::StorageError),
    /// A thread could not be started.
    #[error("cannot start the pipeline: {0}")]
    Spawn(std::io::Error),
}

/// Process exit codes of `ferrotrace-collector` for failures at start (see
/// docs/operations.md): scripts and service managers can tell a mistake in
/// the configuration from a busy port or an unusable disk.
pub mod exit_code {
    /// Anything not listed below.
    pub const OTHER: u8 = 1;
    /// The configuration is invalid (file, environment override, flag, or a
    /// file it names such as a TLS certificate or a token file).
    pub const CONFIG: u8 = 2;
    /// A listener cannot bind: address in use, permission denied, or not an
    /// address of this machine.
    pub const LISTEN: u8 = 3;
    /// The data directory, write-ahead log or SQLite database cannot be used.
    pub const STORAGE: u8 = 4;
}

impl StartError {
    /// The process exit code this failure maps to ([`exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) | StartError::Stage(_) | StartError::Tls(_) => exit_code::CONFIG,
            StartError::Bind { .. } => exit_code::LISTEN,
            StartError::Wal(_) | StartError::Cold(_) => exit_code::STORAGE,
            StartError::Spawn(_) => exit_code::OTHER,
        }
    }
}

/// The command-line flag and configuration key that set a listener's
/// address, by the listener's name in [`StartError::Bind`].
fn listener_setting(what: &str) -> (&'static str, &'static str) {
    match what {
        "otlp grpc" => ("--otlp-grpc-addr", "server.otlp_grpc_addr"),
        "otlp http" => ("--otlp-http-addr", "server.otlp_http_addr"),
        "zipkin" => ("--zipkin-addr", "server.zipkin_addr"),
        // No flag of their own: the environment override names them.
        "jaeger grpc" => ("FERROTRACE__JAEGER__GRPC_ADDR", "jaeger.grpc_addr"),
        "jaeger thrift http" => (
            "FERROTRACE__JAEGER__THRIFT_HTTP_ADDR",
            "jaeger.thrift_http_addr",
        ),
        "jaeger agent compact" => (
            "FERROTRACE__JAEGER__AGENT_COMPACT_ADDR",
            "jaeger.agent_compact_addr",
        ),
        "jaeger agent binary" => (
            "FERROTRACE__JAEGER__AGENT_BINARY_ADDR",
            "jaeger.agent_binary_addr",
        ),
        "sampling api" => ("--sampling-addr", "sampling_api.addr"),
        _ => ("--http-addr", "server.http_addr"),
    }
}

/// What to do about a listener that cannot bind, naming the flag and key to change.
fn bind_hint(what: &str, e: &std::io::Error) -> String {
    let (flag, key) = listener_setting(what);
    let change = format!(
        "give the {what} listener another address with {flag} (or {key}; \"\" disables it)"
    );
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("another process is listening there: stop it, or {change}")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need the CAP_NET_BIND_SERVICE capability: grant it, or {change}"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("that IP address is not on this machine: {change}")
        }
        _ => change,
    }
}

impl From<crate::auth::TokenFileError> for StartError {
    fn from(e: crate::auth::TokenFileError) -> Self {
        StartError::Config(e.into())
    }
}
