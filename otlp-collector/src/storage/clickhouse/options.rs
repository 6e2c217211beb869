//! The sink's configuration (`[clickhouse]`, `[clickhouse.cluster]`).

/// Default ZooKeeper path under which replicated tables register.
pub const DEFAULT_ZOOKEEPER_PATH: &str = "/clickhouse/ferrotrace";

/// Cluster mode settings: the cluster's name and its servers, in one of two
/// forms (see `topology`): `shard_urls` (one server per shard, no replicas)
/// or `shards` (per shard, every replica; replicated tables).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterOptions {
    /// Cluster name from the servers' `remote_servers` configuration.
    pub name: String,
    /// Unreplicated form: the HTTP URL of each shard's one server, used to
    /// create the `*_local` tables and to run retention on them.
    pub shard_urls: Vec<String>,
    /// Replicated form: per shard, the HTTP URL of each of its replicas
    /// (`[["s1r1", "s1r2"], ["s2r1", "s2r2"]]`; every shard the same count).
    /// Tables become `Replicated*MergeTree`; the servers need ZooKeeper and
    /// the `{shard}` / `{replica}` macros, and the cluster
    /// `<internal_replication>true</internal_replication>`.
    pub shards: Vec<Vec<String>>,
    /// ZooKeeper path under which the replicated tables register
    /// (`<path>/<database>/{shard}/<table>_local`).
    pub zookeeper_path: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            name: String::new(),
            shard_urls: Vec::new(),
            shards: Vec::new(),
            zookeeper_path: DEFAULT_ZOOKEEPER_PATH.into(),
        }
    }
}

/// Tuning for [`ClickHouseStore`](super::ClickHouseStore).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseOptions {
    /// Database (created if missing); overrides the URL's path.
    pub database: Option<String>,
    /// Distributed mode over a cluster; `None` for a single server.
    pub cluster: Option<ClusterOptions>,
    /// At most this many distinct days go into one `INSERT` (ClickHouse refuses
    /// inserts touching too many partitions; a batch with odd timestamps is split).
    pub max_days_per_insert: usize,
    /// Maximum buckets a `latency` time series may have.
    pub max_latency_points: usize,
    /// Maximum traces one search page may return (larger limits are capped).
    pub max_search_limit: usize,
    /// How long retention waits for its delete mutations (seconds).
    pub mutation_timeout_secs: u64,
    /// Compression of the HTTP bodies exchanged with the server.
    pub compression: Compression,
}

/// Compression of the HTTP bodies exchanged with ClickHouse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// ClickHouse's own LZ4 block compression (`compress=1`): fewer bytes on a
    /// real network, at a CPU cost on both ends.
    Lz4,
    /// Uncompressed.
    #[default]
    None,
}

impl Default for ClickHouseOptions {
    fn default() -> Self {
        ClickHouseOptions {
            database: None,
            cluster: None,
            max_days_per_insert: 50,
            max_latency_points: 10_000,
            max_search_limit: 10_000,
            mutation_timeout_secs: 60,
            compression: Compression::default(),
        }
    }
}

/// A database or cluster name safe to put into SQL unquoted.
pub(super) fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}
