//! The ClickHouse sink (`--storage clickhouse --storage-url http://host:8123/db`).
//!
//! Talks HTTP with `RowBinary` through the `clickhouse` crate. The crate's
//! default row validation asks the server for `RowBinaryWithNamesAndTypes` and
//! sends `describe_include_subcolumns`, which ClickHouse 18.16 (Debian's
//! package) does not know, so validation is switched off; everything else the
//! crate sends (optional LZ4 block compression, `database`, client-side bound
//! parameters) works on 18.16 and on current releases. The span tables' rows
//! are encoded by hand (module `rowbinary`) and sent as `INSERT ... FORMAT
//! RowBinary` bodies; bodies are uncompressed unless `[clickhouse] compression
//! = "lz4"` (on loopback or a fast network LZ4 only costs CPU on both ends).
//!
//! The schema uses only what 18.16 has (see `docs/storage.md`):
//! - `ft_spans`: the searchable columns, `ReplacingMergeTree` partitioned by
//!   UTC day number (`intDiv(start_ns, 86400e9)`) and ordered by
//!   `(service, name, start_ns, trace_id, span_id)` for service/operation/time
//!   search; span attributes as parallel `attr_keys` / `attr_types` /
//!   `attr_values` arrays (typed text, so `"200"`, `200` and `200.0` differ).
//! - `ft_traces`: the trace-id lookup table, ordered by `(trace_id, span_id)`
//!   so a trace is read without a scan, holding the whole span as a binary blob
//!   for an exact round trip and the columns trace summaries need.
//! - `ft_op_rollups` / `ft_edge_rollups`: per-minute rollups, appended and
//!   merged at query time.
//! - `ft_rollup_origins`: the WAL spans each rollup batch accounts for
//!   (see `rollup::origins`). ClickHouse has no transactions: they are
//!   inserted after the batch's rollup rows, so a crash between the two
//!   inserts counts that batch again at replay (at-least-once, this sink only).
//!   Kept bounded by retention (day partitions), not pruned per segment,
//!   because a delete is a mutation here.
//! - `ft_sampling_counts`: each collector's adjusted root-span counts per
//!   adaptive-sampling period (`source = "store"`); a retried insert is
//!   counted once by reading the largest row per (period, collector,
//!   service, operation). Dropped by retention's day partitions.
//!
//! Retried batches: both span tables are `ReplacingMergeTree` keyed so a retried
//! span collapses at merge time, and until then every query deduplicates
//! (`LIMIT 1 BY trace_id, span_id`, or counting distinct span ids).
//!
//! Retention drops whole day partitions and removes the rest of the cutoff day
//! with a mutation (`ALTER TABLE ... DELETE`), waiting for it to finish.
//!
//! Cluster mode ([`ClusterOptions`]): the tables above become `Distributed`
//! tables over a named cluster, sharded by `cityHash64(trace_id)` (a trace lives
//! on one shard, so per-shard deduplication and the trace lookup stay exact),
//! over `*_local` tables created on every shard. 18.16 runs `ON CLUSTER` DDL only
//! with ZooKeeper, so the sink creates the local tables itself through each
//! shard's HTTP URL.
//!
//! Files by concern: `options.rs` (configuration), `connection.rs` (URLs,
//! clients, error mapping, replica failover), `schema.rs` (migrations),
//! `write.rs` (span and rollup inserts), `read.rs` (trace reads, search),
//! `analytics.rs`, `sampling.rs`, `retention.rs` (day partitions, eviction),
//! and for cluster mode `topology.rs`, `replicas.rs`; `rowbinary.rs` encodes
//! the span rows.

use std::sync::atomic::{AtomicUsize, Ordering};

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use super::{StorageError, StorageResult};

mod analytics;
mod connection;
mod options;
mod read;
mod replicas;
mod retention;
mod rowbinary;
mod sampling;
mod schema;
mod topology;
mod write;

pub(crate) use connection::check_url;
use connection::{client_for, map_err, parse_url, Node, UNREACHABLE};
use options::valid_identifier;
pub use options::{ClickHouseOptions, ClusterOptions, Compression};
use schema::{MIGRATIONS, TABLES};
pub(crate) use topology::check_options;
use topology::Topology;

#[derive(Row, Serialize)]
struct SamplingCountInsert<'a> {
    period_start_ns: u64,
    period_secs: u32,
    collector: &'a str,
    service: &'a str,
    operation: &'a str,
    count_milli: u64,
}

#[derive(Row, Deserialize)]
struct SamplingCountRead {
    period_start_ns: u64,
    service: String,
    operation: String,
    count_milli: u64,
}

#[derive(Row, Serialize)]
struct OpRollupRow<'a> {
    minute_ns: u64,
    service: &'a str,
    operation: &'a str,
    kind: u8,
    count: u64,
    errors: u64,
    sketch: String,
}

#[derive(Row, Serialize)]
struct EdgeRollupRow<'a> {
    minute_ns: u64,
    caller: &'a str,
    callee: &'a str,
    calls: u64,
    errors: u64,
    sketch: String,
}

#[derive(Row, Serialize, Deserialize)]
struct OriginRow {
    instance: u64,
    segment: u64,
    minute_ns: u64,
    #[serde(with = "serde_bytes")]
    ranges: Vec<u8>,
}

#[derive(Row, Deserialize)]
struct PayloadRow {
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// How many matching spans a bound holds and the newest one's start.
#[derive(Row, Deserialize)]
struct NewestRow {
    n: u64,
    newest: u64,
}

#[derive(Row, Deserialize)]
struct TraceKeyRow {
    trace_id: [u8; 16],
    tstart: u64,
}

/// A span blob with its row's trace id (`get_traces`).
#[derive(Row, Deserialize)]
struct TracePayloadRow {
    trace_id: [u8; 16],
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

#[derive(Row, Deserialize)]
struct SummaryChRow {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    has_parent: u8,
    service: String,
    name: String,
    start_ns: u64,
    end_ns: u64,
    status_code: u8,
}

#[derive(Row, Deserialize)]
struct OperationRow {
    name: String,
    kind: u8,
}

#[derive(Row, Deserialize)]
struct EdgeRow {
    caller: String,
    callee: String,
    calls: u64,
    errors: u64,
    #[serde(with = "serde_bytes")]
    sketch: Vec<u8>,
}

#[derive(Row, Deserialize)]
struct LatencyRow {
    minute_ns: u64,
    count: u64,
    errors: u64,
    #[serde(with = "serde_bytes")]
    sketch: Vec<u8>,
}

/// The ClickHouse [`SpanStore`](crate::storage::SpanStore).
pub struct ClickHouseStore {
    /// Servers that take reads and writes (through the `Distributed` tables
    /// in cluster mode): the configured URL, then in replicated mode every
    /// replica, so that the loss of one server does not stop the sink.
    entries: Vec<Node>,
    /// Index into `entries` of the one in use; moved on when it is unreachable.
    current: AtomicUsize,
    /// Where the data physically lives, shard by shard (each shard: its
    /// replicas): the server itself, or every shard's servers.
    nodes: Vec<Vec<Node>>,
    /// Suffix of the physical tables on `nodes` (`""` or `"_local"`).
    local_suffix: &'static str,
    /// `Replicated*MergeTree` tables (the cluster's `shards` form).
    replicated: bool,
    database: String,
    opts: ClickHouseOptions,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("database", &self.database)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

async fn exec(client: &Client, sql: &str) -> StorageResult<()> {
    client.query(sql).execute().await.map_err(map_err)
}

impl ClickHouseStore {
    /// Connects, creates the database and tables (migrations) and checks the
    /// server answers. `url` is `http://[user[:password]@]host:8123[/database]`.
    ///
    /// In replicated cluster mode the first reachable of `url` and the
    /// replicas is used, and a replica that is down is skipped (with a
    /// warning) as long as every shard has one that answers.
    pub async fn connect(url: &str, opts: ClickHouseOptions) -> StorageResult<Self> {
        let parsed = parse_url(url)?;
        let database = opts
            .database
            .clone()
            .or_else(|| parsed.database.clone())
            .unwrap_or_else(|| "default".into());
        if !valid_identifier(&database) {
            return Err(StorageError::Backend(format!(
                "ClickHouse database name {database:?} must be letters, digits and _"
            )));
        }
        check_options(&opts)?;
        let topology = match &opts.cluster {
            Some(c) => Some(Topology::from_options(c)?),
            None => None,
        };
        let replicated = topology.as_ref().is_some_and(|t| t.replicated);
        let node = |u: &str| -> StorageResult<Node> {
            Ok(Node {
                url: super::url::redact_url(u),
                client: client_for(&parse_url(u)?, Some(&database), opts.compression),
            })
        };
        let mut entries = vec![node(url)?];
        if let (true, Some(t)) = (replicated, &topology) {
            for u in t.urls() {
                if parse_url(u)?.base != parsed.base {
                    entries.push(node(u)?);
                }
            }
        }
        // The first entry that answers; without replicas only `url` counts.
        let mut first = None;
        let mut error = None;
        for (i, e) in entries.iter().enumerate() {
            // Bound to "default": the database may not exist yet.
            let probe = e.client.clone().with_database("default");
            match probe
                .query("SELECT 1")
                .fetch_one::<u8>()
                .await
                .map_err(map_err)
            {
                Ok(_) => {
                    first = Some(i);
                    break;
                }
                Err(err) => {
                    if replicated {
                        tracing::warn!(server = %e.url, error = %err, "clickhouse server unreachable; trying the next replica");
                    }
                    error.get_or_insert(err);
                }
            }
        }
        let Some(first) = first else {
            return Err(error.expect("at least one entry"));
        };
        let (nodes, local_suffix) = match &topology {
            None => (vec![vec![node(url)?]], ""),
            Some(t) => {
                let mut shards = Vec::new();
                for replicas in &t.shards {
                    shards.push(
                        replicas
                            .iter()
                            .map(|u| node(u))
                            .collect::<StorageResult<Vec<_>>>()?,
                    );
                }
                (shards, "_local")
            }
        };
        let admin = entries[first].client.clone().with_database("default");
        let store = ClickHouseStore {
            entries,
            current: AtomicUsize::new(first),
            nodes,
            local_suffix,
            replicated,
            database,
            opts,
        };
        if replicated {
            store.migrate_replicated().await?;
        } else {
            store.migrate(&admin, &parsed).await?;
        }
        Ok(store)
    }

    /// Replicated mode reads and writes with `load_balancing = in_order`: the
    /// `Distributed` tables then pick the first live replica of each shard
    /// (in `<remote_servers>` order) for both, so a read sees the writes
    /// acknowledged before it even though replication between replicas is
    /// asynchronous; when that replica is down both move to the next one.
    ///
    /// The server reads and writes go to now.
    pub(super) fn client(&self) -> &Client {
        &self.entries[self.current.load(Ordering::Relaxed) % self.entries.len()].client
    }

    /// Runs `op` against the current entry server; when that server is
    /// unreachable, moves on to the next entry and runs `op` again, at most
    /// once per entry. Without replicas there is one entry: `op` runs once.
    /// `op` must be safe to repeat (every write of this sink is idempotent or,
    /// for rollups, at-least-once already).
    pub(super) async fn failover<T, F, Fut>(&self, op: F) -> StorageResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = StorageResult<T>>,
    {
        let n = self.entries.len();
        let mut attempt = 0;
        loop {
            let at = self.current.load(Ordering::Relaxed) % n;
            match op().await {
                // Only an entry server that does not answer is left; a
                // transient error it answered with (another server of the
                // cluster unreachable, ZooKeeper) goes back to the caller,
                // whose retry reaches the same entry server.
                Err(StorageError::Unavailable(why))
                    if attempt + 1 < n && why.starts_with(UNREACHABLE) =>
                {
                    attempt += 1;
                    // Another task may have moved on already: keep its choice.
                    let _ = self.current.compare_exchange(
                        at,
                        (at + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tracing::warn!(
                        server = %self.entries[at].url,
                        next = %self.entries[(at + 1) % n].url,
                        error = %why,
                        "clickhouse server unreachable; using another replica"
                    );
                }
                r => return r,
            }
        }
    }

    /// Keywords for a lookup by trace id in `ft_traces`: `("PREWHERE", "WHERE")`
    /// on a single server, so the other columns are read only from granules
    /// that hold the trace (the server's own PREWHERE optimizer never moves a
    /// condition on the first primary-key column, and would move the time
    /// bounds instead, which select nothing); `("WHERE", "AND")` over
    /// `Distributed` tables.
    pub(super) fn prewhere(&self) -> (&'static str, &'static str) {
        if self.opts.cluster.is_some() {
            ("WHERE", "AND")
        } else {
            ("PREWHERE", "WHERE")
        }
    }

    pub(super) fn query(&self, sql: &str) -> clickhouse::query::Query {
        let q = self.client().query(sql);
        let q = if self.replicated {
            // Read the replica the writes went to (see `client`).
            q.with_setting("load_balancing", "in_order")
        } else {
            q
        };
        if self.opts.cluster.is_some() {
            // `IN (subquery)` over the Distributed tables runs per shard on the
            // local tables: correct because a trace lives on one shard.
            q.with_setting("distributed_product_mode", "local")
        } else {
            q
        }
    }
}
