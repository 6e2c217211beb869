//! Collector configuration: a TOML file (every key optional, unknown keys
//! rejected), environment overrides (`FERROTRACE__SECTION__KEY=value`), then
//! command-line flags for the common settings. `docs/configuration.md` lists
//! every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod budgets;
pub mod connections;
pub use budgets::MemoryBudgets;
pub use connections::{ConnectionsConfig, QueryConfig};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a bad value.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// What was wrong, with the key and location.
        message: String,
    },
    /// An environment override is malformed or names an unknown key.
    #[error("invalid environment override {var}: {message}")]
    Env {
        /// Variable name.
        var: String,
        /// What was wrong.
        message: String,
    },
    /// The values are individually valid but not together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the WAL and the SQLite database live.
    pub data_dir: PathBuf,
    /// Listener addresses.
    pub server: ServerConfig,
    /// The Jaeger receivers (gRPC, Thrift over HTTP, agent UDP); all off by default.
    pub jaeger: crate::receiver::jaeger::JaegerConfig,
    /// Per-connection limits and timeouts of every listener.
    pub connections: ConnectionsConfig,
    /// Who may address the query listener.
    pub query: QueryConfig,
    /// Sink selection.
    pub storage: StorageConfig,
    /// Write-ahead log.
    pub wal: WalConfig,
    /// In-memory queue between receivers and the pipeline.
    pub queue: QueueConfig,
    /// Receiver limits.
    pub limits: LimitsConfig,
    /// Batching towards the sink.
    pub batcher: BatcherConfig,
    /// Bearer-token authentication.
    pub auth: AuthConfig,
    /// TLS for every listener.
    pub tls: TlsConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Head and tail sampling (`[sampling.head]`, `[sampling.tail]`).
    pub sampling: crate::pipeline::sampling::SamplingConfig,
    /// The remote sampling API served to SDKs (`[sampling_api]`); off by default.
    pub sampling_api: crate::sampling_api::SamplingApiConfig,
    /// Resource enrichment.
    pub enrich: crate::pipeline::enrich::EnrichConfig,
    /// Redaction of attribute values.
    pub redact: crate::pipeline::redact::RedactConfig,
    /// Per-minute rollups (RED metrics and service graph).
    pub rollups: crate::rollup::RollupConfig,
    /// Age-based retention in the sink.
    pub retention: crate::storage::retention::RetentionConfig,
    /// SQLite sink tuning.
    pub sqlite: crate::storage::sqlite::SqliteConfig,
    /// PostgreSQL sink tuning.
    pub postgres: crate::storage::postgres::PostgresOptions,
    /// ClickHouse sink tuning.
    pub clickhouse: crate::storage::clickhouse::ClickHouseOptions,
}

/// Listener addresses. All bind to loopback by default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// OTLP/gRPC listener; empty string disables it.
    pub otlp_grpc_addr: String,
    /// OTLP/HTTP listener; empty string disables it.
    pub otlp_http_addr: String,
    /// Zipkin v2 listener; empty string disables it.
    pub zipkin_addr: String,
    /// Query API, UI, `/metrics`, `/healthz`, `/readyz`; empty string disables it.
    pub http_addr: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            otlp_grpc_addr: "127.0.0.1:4317".into(),
            otlp_http_addr: "127.0.0.1:4318".into(),
            zipkin_addr: "127.0.0.1:9411".into(),
            http_addr: "127.0.0.1:16686".into(),
        }
    }
}

/// Which sink stores spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Embedded SQLite in `data_dir` (default).
    #[default]
    Sqlite,
    /// PostgreSQL at `storage.url`.
    Postgres,
    /// ClickHouse at `storage.url`.
    Clickhouse,
    /// Discards everything after the pipeline: for benchmarking the ingest path only.
    Null,
}

impl StorageKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Sqlite => "sqlite",
            StorageKind::Postgres => "postgres",
            StorageKind::Clickhouse => "clickhouse",
            StorageKind::Null => "null",
        }
    }
}

/// Sink selection.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite`, `postgres`, `clickhouse` or `null`.
    pub kind: StorageKind,
    /// Connection URL for postgres/clickhouse; SQLite file path override for sqlite.
    pub url: Option<String>,
}

/// When the WAL calls `fsync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before every acknowledgement (group commit: one fsync per batch of concurrent appends).
    #[default]
    Always,
    /// Every `fsync_interval_ms`; an OS crash may lose the last interval (a process crash does not).
    Interval,
    /// Never; the OS flushes when it likes.
    Never,
}

/// Write-ahead log settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Directory; default `<data_dir>/wal`.
    pub dir: Option<PathBuf>,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Interval for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Total size of all segments; appends beyond it are refused (backpressure).
    pub max_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: None,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 100,
            segment_bytes: 32 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Queue bounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Maximum spans waiting for the pipeline.
    pub max_spans: u64,
    /// Maximum estimated in-memory bytes waiting for the pipeline; unset =
    /// a quarter of `limits.memory_limit_mib` (see [`Config::memory_budgets`]).
    pub max_bytes: Option<u64>,
    /// `Retry-After` seconds (and gRPC RetryInfo delay) sent when full.
    pub retry_after_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_spans: 200_000,
            max_bytes: None,
            retry_after_secs: 1,
        }
    }
}

/// Receiver limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum request body as sent (compressed) in bytes; larger → 413.
    /// Unset = 8 MiB, or a sixteenth of the in-flight budget when that is
    /// smaller ([`LimitsConfig::request_bytes`]).
    pub max_request_bytes: Option<usize>,
    /// Maximum body after decompression in bytes; larger → 413. Unset =
    /// 32 MiB, or a quarter of the in-flight budget when that is smaller
    /// ([`LimitsConfig::decompressed_bytes`]).
    pub max_decompressed_bytes: Option<usize>,
    /// Memory budget for request bodies held by all receivers at once (as
    /// received plus inflated); a request that would exceed it → 429 /
    /// RESOURCE_EXHAUSTED with a retry hint. Unset = a quarter of
    /// `memory_limit_mib` (see [`Config::memory_budgets`]).
    pub max_inflight_bytes: Option<usize>,
    /// Limit on the collector's resident memory in MiB; 0 turns the memory
    /// guard off. Budgets not set explicitly are derived from it.
    pub memory_limit_mib: u64,
    /// Above this percentage of `memory_limit_mib` of resident memory the
    /// receivers refuse new requests (429 / RESOURCE_EXHAUSTED with a retry hint).
    pub memory_soft_limit_percent: u64,
    /// How often the memory guard samples resident memory (ms).
    pub memory_check_interval_ms: u64,
    /// Maximum spans in one request; more → 413.
    pub max_spans_per_request: usize,
    /// Attributes kept per span (and per event/link/resource); the rest are dropped and counted.
    pub max_attributes_per_span: usize,
    /// Longest string/bytes attribute value in bytes; longer values are truncated and counted.
    pub max_attribute_value_bytes: usize,
    /// Largest span (estimated decoded size) in bytes; larger spans are rejected.
    pub max_span_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: None,
            max_decompressed_bytes: None,
            max_inflight_bytes: None,
            memory_limit_mib: budgets::DEFAULT_MEMORY_LIMIT_MIB,
            memory_soft_limit_percent: 80,
            memory_check_interval_ms: 10,
            max_spans_per_request: 50_000,
            max_attributes_per_span: 128,
            max_attribute_value_bytes: 8 * 1024,
            max_span_bytes: 64 * 1024,
        }
    }
}

/// Batching towards the sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatcherConfig {
    /// A batch is written once it has this many spans; unset means 32768
    /// for ClickHouse (every insert makes a new part per table that the
    /// server merges again later, so fewer, larger inserts cost it less CPU
    /// per span) and 8192 for the other sinks ([`BatcherConfig::spans_per_batch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_spans: Option<usize>,
    /// ... or once its oldest span has waited this long.
    pub max_delay_ms: u64,
    /// Batches waiting for the sink (each up to `max_spans`); when full the pipeline waits.
    pub max_pending_batches: usize,
    /// First retry delay after a failed sink write; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// A non-retryable sink error is tried this many times before the batch is dropped (counted).
    pub max_attempts_non_retryable: u32,
    /// How often rollups are flushed to the sink.
    pub rollup_flush_ms: u64,
    /// Span batches written to the sink at the same time; unset means 2 for
    /// ClickHouse and PostgreSQL (one insert is largely single-threaded on the
    /// server, so a second one overlaps the server's work with the next
    /// batch's encoding; each PostgreSQL write has its own pooled connection
    /// and staging table) and 1 for SQLite, which has one writer
    /// ([`BatcherConfig::concurrent_writes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_writes: Option<usize>,
}

impl BatcherConfig {
    /// Batch size for the `kind` sink (at least 1).
    pub fn spans_per_batch(&self, kind: StorageKind) -> usize {
        match self.max_spans {
            Some(n) => n.max(1),
            None if kind == StorageKind::Clickhouse => 32_768,
            None => 8_192,
        }
    }

    /// Span batches written at the same time for the `kind` sink (at least 1).
    pub fn concurrent_writes(&self, kind: StorageKind) -> usize {
        match self.max_concurrent_writes {
            Some(n) => n.max(1),
            None if matches!(kind, StorageKind::Clickhouse | StorageKind::Postgres) => 2,
            None => 1,
        }
    }
}

#[cfg(test)]
mod batcher_defaults {
    use super::*;

    #[test]
    fn batch_size_and_writes_in_flight_default_per_sink() {
        let b = BatcherConfig::default();
        assert_eq!(b.concurrent_writes(StorageKind::Clickhouse), 2);
        assert_eq!(b.concurrent_writes(StorageKind::Postgres), 2);
        assert_eq!(b.concurrent_writes(StorageKind::Sqlite), 1);
        assert_eq!(b.spans_per_batch(StorageKind::Clickhouse), 32_768);
        assert_eq!(b.spans_per_batch(StorageKind::Postgres), 8_192);
        let set = BatcherConfig {
            max_concurrent_writes: Some(0),
            max_spans: Some(10),
            ..BatcherConfig::default()
        };
        assert_eq!(set.concurrent_writes(StorageKind::Postgres), 1);
        assert_eq!(set.spans_per_batch(StorageKind::Clickhouse), 10);
    }
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_spans: None,
            max_delay_ms: 200,
            max_pending_batches: 4,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            max_attempts_non_retryable: 3,
            rollup_flush_ms: 2_000,
            max_concurrent_writes: None,
        }
    }
}

/// Bearer-token authentication; no tokens means no authentication.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens accepted by the receivers (OTLP gRPC/HTTP, Zipkin).
    pub receiver_tokens: Vec<String>,
    /// File with one receiver token per line (merged with `receiver_tokens`).
    pub receiver_tokens_file: Option<PathBuf>,
    /// Tokens accepted by the query API and UI.
    pub query_tokens: Vec<String>,
    /// File with one query token per line (merged with `query_tokens`).
    pub query_tokens_file: Option<PathBuf>,
}

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

/// Graceful shutdown.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long to drain the queue into the sink after SIGTERM/SIGINT; the rest stays in the WAL.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_ms: 10_000,
        }
    }
}

impl Config {
    /// Loads `path` (if any), then applies `FERROTRACE__SECTION__KEY` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, shown) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.to_path_buf(),
            ),
            None => (String::new(), PathBuf::from("<defaults>")),
        };
        // Parse typed first: toml's error then names the key and the line.
        let parsed: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string().trim().to_string(),
        })?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("FERROTRACE__"))
            .collect();
        if overrides.is_empty() {
            return Ok(parsed);
        }
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown,
            message: e.to_string(),
        })?;
        for (var, raw) in &overrides {
            let path: Vec<String> = var["FERROTRACE__".len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if path.iter().any(|s| s.is_empty()) {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: "empty key segment (use FERROTRACE__SECTION__KEY)".into(),
                });
            }
            // A value that parses as TOML keeps its type (numbers, bools, arrays); otherwise a string.
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            let mut cur = &mut table;
            for seg in &path[..path.len() - 1] {
                let entry = cur
                    .entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cur = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::Env {
                            var: var.clone(),
                            message: format!("`{seg}` is not a section"),
                        })
                    }
                };
            }
            cur.insert(path[path.len() - 1].clone(), value);
        }
        let text = toml::to_string(&table).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::Env {
            var: overrides
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            message: e.to_string().trim().to_string(),
        })
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wal"))
    }

    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        match &self.storage.url {
            Some(u) if self.storage.kind == StorageKind::Sqlite => PathBuf::from(u),
            _ => self.data_dir.join("ferrotrace.db"),
        }
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, addr) in [
            ("server.otlp_grpc_addr", &self.server.otlp_grpc_addr),
            ("server.otlp_http_addr", &self.server.otlp_http_addr),
            ("server.zipkin_addr", &self.server.zipkin_addr),
            ("server.http_addr", &self.server.http_addr),
        ] {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "{name} = {addr:?} is not an IP:port address (e.g. 127.0.0.1:4317)"
                )));
            }
        }
        if self.wal.segment_bytes == 0 || self.wal.max_bytes < self.wal.segment_bytes {
            return Err(ConfigError::Invalid(format!(
                "wal.max_bytes ({}) must be at least wal.segment_bytes ({}) and both above 0",
                self.wal.max_bytes, self.wal.segment_bytes
            )));
        }
        if self.queue.max_spans == 0 {
            return Err(ConfigError::Invalid(
                "queue.max_spans must be above 0".into(),
            ));
        }
        if self.batcher.max_spans == Some(0) || self.batcher.max_pending_batches == 0 {
            return Err(ConfigError::Invalid(
                "batcher.max_spans and batcher.max_pending_batches must be above 0".into(),
            ));
        }
        if self.limits.max_request_bytes == Some(0) || self.limits.max_decompressed_bytes == Some(0)
        {
            return Err(ConfigError::Invalid(
                "limits.max_request_bytes and limits.max_decompressed_bytes must be above 0".into(),
            ));
        }
        self.connections.validate()?;
        let authenticated = !self.auth.receiver_tokens.iter().all(String::is_empty)
            || self.auth.receiver_tokens_file.is_some()
            || self.tls.cert_file.is_some();
        self.jaeger.validate(authenticated)?;
        self.sampling_api.validate()?;
        // The byte budgets: each set or derived from limits.memory_limit_mib,
        // large enough for one request at the limits, together under the soft limit.
        self.memory_budgets()?;
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "tls.cert_file and tls.key_file must be set together (--tls-cert / --tls-key)"
                        .into(),
                ))
            }
            _ => {}
        }
        if matches!(
            self.storage.kind,
            StorageKind::Postgres | StorageKind::Clickhouse
        ) && self.storage.url.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "storage {} needs storage.url (or --storage-url)",
                self.storage.kind.as_str()
            )));
        }
        Ok(())
    }

    /// The drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown.drain_timeout_ms)
    }
}

/// Reads tokens from config values and an optional file (one per line, `#` comments).
pub fn load_tokens(inline: &[String], file: Option<&Path>) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = inline.iter().filter(|t| !t.is_empty()).cloned().collect();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read {
            path: f.to_path_buf(),
            source,
        })?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: Vec<(&str, &str)>) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(
            Some(&p),
            env.into_iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load_str("", vec![]).unwrap();
        assert_eq!(c.server.otlp_grpc_addr, "127.0.0.1:4317");
        assert_eq!(c.wal.fsync, FsyncPolicy::Always);
        assert_eq!(c.limits.max_span_bytes, 64 * 1024);
    }

    #[test]
    fn unknown_key_is_rejected_with_file_and_key() {
        let err = load_str("[wal]\nfsync = \"always\"\nfsynk = 1\n", vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml"), "{err}");
        assert!(err.contains("fsynk"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = load_str("[queue]\nmax_spans = \"lots\"\n", vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_spans"), "{err}");
    }

    #[test]
    fn env_overrides_apply_with_types() {
        let c = load_str(
            "[queue]\nmax_spans = 5\n",
            vec![
                ("FERROTRACE__QUEUE__MAX_SPANS", "77"),
                ("FERROTRACE__WAL__FSYNC", "never"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.queue.max_spans, 77);
        assert_eq!(c.wal.fsync, FsyncPolicy::Never);
        let err = load_str("", vec![("FERROTRACE__QUEUE__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("FERROTRACE__QUEUE__NOPE") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn every_toml_example_in_the_docs_parses() {
        let doc = include_str!("../../docs/configuration.md");
        let mut found = 0;
        for block in doc.split("```toml").skip(1) {
            let text = block.split("```").next().unwrap();
            let c = load_str(text, vec![]).unwrap_or_else(|e| panic!("{e}\n{text}"));
            c.validate().unwrap();
            found += 1;
        }
        assert!(found >= 2);
    }

    #[test]
    fn validate_rejects_bad_addresses() {
        let mut c = Config::default();
        c.server.http_addr = "localhost".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server.http_addr"));
    }
}
