//! Collector configuration: a TOML file (every key optional, unknown keys
//! rejected), environment overrides (`FERROTRACE__SECTION__KEY=value`), then
//! command-line flags for the common settings. `docs/configuration.md` lists
//! every key with its default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod budgets;
pub use budgets::MemoryBudgets;
// Owned by the modules they configure; re-exported so `config` reads as the
// whole file's schema.
pub use crate::auth::AuthConfig;
pub use crate::listener::config::ConnectionsConfig;
pub use crate::pipeline::batcher::BatcherConfig;
pub use crate::pipeline::queue::QueueConfig;
pub use crate::pipeline::wal::{FsyncPolicy, WalConfig};
pub use crate::query::hosts::QueryConfig;
pub use crate::receiver::limits::LimitsConfig;
pub use crate::server::{ServerConfig, ShutdownConfig};
pub use crate::storage::connecting::{StorageConfig, StorageKind};
pub use crate::tls::TlsConfig;

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
    /// The cold tier (`[cold]`): Parquet files under the hot store.
    pub cold: crate::storage::cold::ColdConfig,
    /// SQLite sink tuning.
    pub sqlite: crate::storage::sqlite::SqliteConfig,
    /// PostgreSQL sink tuning.
    pub postgres: crate::storage::postgres::PostgresOptions,
    /// ClickHouse sink tuning.
    pub clickhouse: crate::storage::clickhouse::ClickHouseOptions,
    /// The router role (`[route]`, `--route-to`): forward spans by trace id
    /// to backend collectors instead of storing them.
    pub route: crate::route::RouteConfig,
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

    /// The options that open the configured sink
    /// ([`crate::storage::connecting::open`]).
    pub fn sink_options(&self) -> crate::storage::connecting::SinkOptions {
        crate::storage::connecting::SinkOptions {
            storage: self.storage.clone(),
            sqlite_path: self.sqlite_path(),
            sqlite: self.sqlite.clone(),
            postgres: self.postgres.clone(),
            clickhouse: self.clickhouse.clone(),
            retry_initial: Duration::from_millis(self.batcher.retry_initial_ms),
            retry_max: Duration::from_millis(self.batcher.retry_max_ms),
        }
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate().map_err(ConfigError::Invalid)?;
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
        self.connections.validate().map_err(ConfigError::Invalid)?;
        self.cold.validate().map_err(ConfigError::Invalid)?;
        // Every database sink pages its old spans out (`Retention::export_before`);
        // the null sink stores nothing to move.
        if self.cold.enabled() && self.storage.kind == StorageKind::Null {
            return Err(ConfigError::Invalid(
                "[cold] needs a sink that stores spans (sqlite, postgres or clickhouse), not storage null"
                    .into(),
            ));
        }
        self.route.validate()?;
        if self.route.enabled() {
            self.validate_router()?;
        }
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
        let adaptive = &self.sampling_api.adaptive;
        if adaptive.enabled
            && adaptive.source == crate::sampling_api::adaptive::AdaptiveSource::Store
            && self.storage.kind == StorageKind::Null
        {
            return Err(ConfigError::Invalid(
                "sampling_api.adaptive.source = \"store\" needs a store to share counts through \
                 (sqlite, postgres or clickhouse); the null sink stores nothing: use \
                 source = \"local\""
                    .into(),
            ));
        }
        Ok(())
    }

    /// A router forwards every span as received: what would change or drop
    /// spans before they reach the backend that sees the whole trace
    /// belongs on the backends, and is refused here rather than ignored.
    fn validate_router(&self) -> Result<(), ConfigError> {
        let mut on = Vec::new();
        if self.sampling.tail.enabled {
            on.push("[sampling.tail] enabled");
        }
        if self.sampling.head.rate < 1.0 || !self.sampling.head.services.is_empty() {
            on.push("[sampling.head] rates below 1");
        }
        if !crate::pipeline::enrich::Enricher::new(&self.enrich).is_ok_and(|e| e.is_noop()) {
            on.push("[enrich] rules");
        }
        if !crate::pipeline::redact::Redactor::new(&self.redact).is_ok_and(|r| r.is_noop()) {
            on.push("[redact] rules");
        }
        // Adaptive rates come from the spans a collector counts; a router
        // counts none.
        if self.sampling_api.adaptive.enabled {
            on.push("[sampling_api.adaptive] enabled");
        }
        if on.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid(format!(
            "this collector is a router ([route] / --route-to), which forwards every span \
             unchanged to the backend owning its trace; configure {} on the backends instead",
            on.join(", ")
        )))
    }
}

impl From<crate::auth::TokenFileError> for ConfigError {
    fn from(e: crate::auth::TokenFileError) -> Self {
        ConfigError::Read {
            path: e.path,
            source: e.source,
        }
    }
}

impl From<crate::sampling_api::limits::SamplingApiConfigError> for ConfigError {
    fn from(e: crate::sampling_api::limits::SamplingApiConfigError) -> Self {
        ConfigError::Invalid(e.0)
    }
}

impl From<crate::route::RouteConfigError> for ConfigError {
    fn from(e: crate::route::RouteConfigError) -> Self {
        ConfigError::Invalid(e.0)
    }
}

impl From<crate::receiver::jaeger::JaegerConfigError> for ConfigError {
    fn from(e: crate::receiver::jaeger::JaegerConfigError) -> Self {
        ConfigError::Invalid(e.0)
    }
}

impl From<&Config> for crate::storage::connecting::SinkOptions {
    fn from(cfg: &Config) -> Self {
        cfg.sink_options()
    }
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
    fn a_router_refuses_adaptive_sampling_it_cannot_compute() {
        let c = load_str(
            "[route]\nbackends = [\"127.0.0.1:4317\"]\n\
             [sampling_api.adaptive]\nenabled = true\n",
            vec![],
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("router") && err.contains("[sampling_api.adaptive] enabled"),
            "{err}"
        );
    }

    #[test]
    fn adaptive_rates_from_the_store_need_a_store() {
        let toml = "[sampling_api.adaptive]\nenabled = true\nsource = \"store\"\n";
        let mut c = load_str(toml, vec![]).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.sampling_api.adaptive.source,
            crate::sampling_api::adaptive::AdaptiveSource::Store
        );
        c.storage.kind = StorageKind::Null;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("source = \"store\"") && err.contains("null"),
            "{err}"
        );
        assert!(load_str("[sampling_api.adaptive]\nsource = \"elected\"\n", vec![]).is_err());
    }

    /// Every database sink can be the hot store under a cold tier; the
    /// null sink, which stores nothing, cannot.
    #[test]
    fn a_cold_tier_needs_a_sink_that_stores_spans() {
        let toml = "[cold]\ndir = \"/tmp/ferrotrace-cold\"\n";
        let mut c = load_str(toml, vec![]).unwrap();
        assert!(c.cold.enabled());
        for (kind, url) in [
            (StorageKind::Sqlite, None),
            (StorageKind::Postgres, Some("postgres://db/traces")),
            (StorageKind::Clickhouse, Some("http://db:8123/traces")),
        ] {
            c.storage.kind = kind;
            c.storage.url = url.map(String::from);
            c.validate()
                .unwrap_or_else(|e| panic!("{} under [cold]: {e}", kind.as_str()));
        }
        c.storage.kind = StorageKind::Null;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("[cold]") && err.contains("null"), "{err}");
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
