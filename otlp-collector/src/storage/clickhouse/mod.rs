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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use super::rollup_math;
use super::sink_common::{self as common, SummaryRow, DAY_NS};
use super::span_codec::decode_span;
use super::{
    AnalyticsReader, DependencyEdge, DiskUsage, EvictionReport, LatencyPoint, LatencyQuery,
    Operation, Retention, RetentionReport, SamplingCountRow, SamplingCounts, SamplingPeriodCounts,
    SearchPage, SpanWriter, StorageError, StorageResult, TimeRange, TraceQuery, TraceReader,
    TraceSpans,
};
use crate::model::{hex, Span, SpanKind, StatusCode, TraceId};
use crate::rollup::{RollupBatch, RollupOrigin, MINUTE_NS};

mod replicas;
mod rowbinary;
mod topology;

use topology::Topology;

/// Bytes of encoded rows handed to the HTTP body at a time: large enough
/// that per-chunk costs vanish, small enough that an insert's memory stays
/// bounded whatever the batch size.
const SEND_CHUNK: usize = 1 << 20;

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
            zookeeper_path: topology::DEFAULT_ZOOKEEPER_PATH.into(),
        }
    }
}

/// Checks the cluster configuration's shape without connecting (at start, so
/// that a malformed cluster fails the start instead of being retried forever).
pub(crate) fn check_options(opts: &ClickHouseOptions) -> StorageResult<()> {
    if let Some(c) = &opts.cluster {
        check_cluster_name(&c.name)?;
        Topology::from_options(c)?;
    }
    Ok(())
}

fn check_cluster_name(name: &str) -> StorageResult<()> {
    if valid_identifier(name) {
        Ok(())
    } else {
        Err(StorageError::Backend(format!(
            "ClickHouse cluster name {name:?} must be letters, digits and _"
        )))
    }
}

/// Tuning for [`ClickHouseStore`].
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

/// Search condition for error spans.
/// Width of the search probe's first time slice below its top (100 ms): a
/// dense store fills the probe from a slice or two; a sparse hour takes about
/// nine slices, each reading next to nothing.
const PROBE_FIRST_SLICE_NS: u64 = 100_000_000;

const ERROR_STATUS_COND: &str = "status_code = 2";
const _: () = assert!(StatusCode::Error as u8 == 2);

/// Schema migrations: `{t}` is replaced by the table suffix (`_local` in
/// cluster mode). Each statement is idempotent.
/// Never edit a released migration: append a new one.
const MIGRATIONS: &[(u32, &str, &[&str])] = &[
    (
        1,
        "spans, trace lookup, rollups",
        &[
            "CREATE TABLE IF NOT EXISTS ft_spans{t} (
            trace_id     FixedString(16),
            span_id      FixedString(8),
            service      String,
            name         String,
            kind         UInt8,
            start_ns     UInt64,
            duration_ns  UInt64,
            status_code  UInt8,
            attr_keys    Array(String),
            attr_types   Array(UInt8),
            attr_values  Array(String)
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY intDiv(start_ns, 86400000000000)
        ORDER BY (service, name, start_ns, trace_id, span_id)",
            "CREATE TABLE IF NOT EXISTS ft_traces{t} (
            trace_id     FixedString(16),
            span_id      FixedString(8),
            has_parent   UInt8,
            service      String,
            name         String,
            start_ns     UInt64,
            end_ns       UInt64,
            status_code  UInt8,
            payload      String
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY intDiv(start_ns, 86400000000000)
        ORDER BY (trace_id, span_id)",
            "CREATE TABLE IF NOT EXISTS ft_op_rollups{t} (
            minute_ns  UInt64,
            service    String,
            operation  String,
            kind       UInt8,
            count      UInt64,
            errors     UInt64,
            sketch     String
        ) ENGINE = MergeTree()
        PARTITION BY intDiv(minute_ns, 86400000000000)
        ORDER BY (service, operation, minute_ns)",
            "CREATE TABLE IF NOT EXISTS ft_edge_rollups{t} (
            minute_ns  UInt64,
            caller     String,
            callee     String,
            calls      UInt64,
            errors     UInt64,
            sketch     String
        ) ENGINE = MergeTree()
        PARTITION BY intDiv(minute_ns, 86400000000000)
        ORDER BY (minute_ns, caller, callee)",
        ],
    ),
    (
        2,
        "rollup origins",
        &["CREATE TABLE IF NOT EXISTS ft_rollup_origins{t} (
            instance   UInt64,
            segment    UInt64,
            minute_ns  UInt64,
            ranges     String
        ) ENGINE = MergeTree()
        PARTITION BY intDiv(minute_ns, 86400000000000)
        ORDER BY (instance, segment)"],
    ),
    (
        3,
        "adaptive sampling counts",
        &["CREATE TABLE IF NOT EXISTS ft_sampling_counts{t} (
            period_start_ns  UInt64,
            period_secs      UInt32,
            collector        String,
            service          String,
            operation        String,
            count_milli      UInt64
        ) ENGINE = MergeTree()
        PARTITION BY intDiv(period_start_ns, 86400000000000)
        ORDER BY (period_secs, period_start_ns, service, operation, collector)"],
    ),
];

/// Tables of the schema, with the sharding key used in cluster mode.
const TABLES: &[(&str, &str)] = &[
    ("ft_spans", "cityHash64(trace_id)"),
    ("ft_traces", "cityHash64(trace_id)"),
    ("ft_op_rollups", "cityHash64(service)"),
    ("ft_edge_rollups", "cityHash64(caller)"),
    ("ft_rollup_origins", "cityHash64(instance)"),
    ("ft_sampling_counts", "cityHash64(service)"),
];

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

/// Maps a client error: network problems and timeouts are retryable.
fn map_err(e: clickhouse::error::Error) -> StorageError {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => StorageError::Unavailable(format!(
            "{UNREACHABLE}: {e}; check that the server is up and --storage-url is right"
        )),
        E::BadResponse(msg) if transient_server_error(&msg) => {
            StorageError::Unavailable(format!("clickhouse (transient, retried): {msg}"))
        }
        E::BadResponse(msg) => StorageError::Backend(format!("clickhouse: {msg}")),
        other => StorageError::Backend(format!("clickhouse: {other}")),
    }
}

/// How an error from a server that did not answer begins (the entry-server
/// failover moves on only for these).
const UNREACHABLE: &str = "clickhouse unreachable";

/// ClickHouse server error codes that say "not now" rather than "never":
/// the server could not reach another server of the cluster (a replica or
/// shard going down mid-insert through a `Distributed` table: 209
/// SOCKET_TIMEOUT, 210 NETWORK_ERROR, 279 ALL_CONNECTION_TRIES_FAILED,
/// 319 UNKNOWN_STATUS_OF_INSERT), lost its ZooKeeper session (225
/// NO_ZOOKEEPER, 242 TABLE_IS_READ_ONLY, 999 KEEPER_EXCEPTION) or is
/// overloaded (159 TIMEOUT_EXCEEDED, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 252
/// TOO_MANY_PARTS). Such a batch is retried with backoff like an
/// unreachable server, never dropped after `max_attempts_non_retryable`
/// (a rollup batch was, when a replica stopped during the multi-node test).
fn transient_server_error(msg: &str) -> bool {
    const TRANSIENT: [u32; 10] = [159, 202, 209, 210, 225, 242, 252, 279, 319, 999];
    msg.split("Code: ")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u32>().ok()
        })
        .is_some_and(|code| TRANSIENT.contains(&code))
}

/// Connection parts of a ClickHouse URL `http://[user[:password]@]host:port[/database]`.
struct ParsedUrl {
    base: String,
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
}

/// Checks a ClickHouse URL without connecting (used at start, so that a
/// malformed URL fails the start instead of being retried forever).
pub(crate) fn check_url(url: &str) -> StorageResult<()> {
    parse_url(url).map(|_| ())
}

fn parse_url(url: &str) -> StorageResult<ParsedUrl> {
    let bad = |why: &str| {
        StorageError::Backend(format!(
            "invalid ClickHouse URL {:?} ({why}); expected http://[user[:password]@]host:8123[/database]",
            super::url::redact_url(url)
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme {
        "http" | "clickhouse" => "http",
        "https" => {
            return Err(bad(
                "https is not supported: TLS to ClickHouse is not implemented",
            ))
        }
        _ => return Err(bad("scheme must be http")),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p.split(['?', '#']).next().unwrap_or("")),
        None => (rest, ""),
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad("user or password is not valid percent-encoded UTF-8"))
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(decode(n)?), Some(decode(p)?)),
            None => (Some(decode(u)?), None),
        },
        None => (None, None),
    };
    let database = (!path.is_empty()).then(|| path.trim_end_matches('/').to_string());
    Ok(ParsedUrl {
        base: format!("{scheme}://{host}"),
        user,
        password,
        database,
    })
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

fn client_for(url: &ParsedUrl, database: Option<&str>, compression: Compression) -> Client {
    let mut c = Client::default()
        .with_url(&url.base)
        .with_validation(false)
        .with_compression(match compression {
            Compression::Lz4 => clickhouse::Compression::Lz4,
            Compression::None => clickhouse::Compression::None,
        });
    if let Some(u) = &url.user {
        c = c.with_user(u);
    }
    if let Some(p) = &url.password {
        c = c.with_password(p);
    }
    if let Some(db) = database {
        c = c.with_database(db);
    }
    c
}

/// One server of the cluster (or the single server).
struct Node {
    /// URL with the password hidden, for messages.
    url: String,
    client: Client,
}

/// Runs `op` on the first replica of a shard that answers: a replica that is
/// unreachable is skipped for the next one (logged), any other error ends it.
async fn on_one_replica<'a, T, F, Fut>(replicas: &'a [Node], what: &str, op: F) -> StorageResult<T>
where
    F: Fn(&'a Client) -> Fut,
    Fut: std::future::Future<Output = StorageResult<T>>,
{
    let mut i = 0;
    loop {
        match op(&replicas[i].client).await {
            Err(StorageError::Unavailable(why)) if i + 1 < replicas.len() => {
                tracing::warn!(server = %replicas[i].url, error = %why, what, "clickhouse replica unreachable; using the next one");
                i += 1;
            }
            r => return r,
        }
    }
}

/// The ClickHouse [`SpanStore`].
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
    fn client(&self) -> &Client {
        &self.entries[self.current.load(Ordering::Relaxed) % self.entries.len()].client
    }

    /// Runs `op` against the current entry server; when that server is
    /// unreachable, moves on to the next entry and runs `op` again, at most
    /// once per entry. Without replicas there is one entry: `op` runs once.
    /// `op` must be safe to repeat (every write of this sink is idempotent or,
    /// for rollups, at-least-once already).
    async fn failover<T, F, Fut>(&self, op: F) -> StorageResult<T>
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

    /// Creates the database and applies pending migrations on every node, and
    /// the `Distributed` tables in cluster mode.
    async fn migrate(&self, admin: &Client, url: &ParsedUrl) -> StorageResult<()> {
        let create_db = format!("CREATE DATABASE IF NOT EXISTS {}", self.database);
        exec(admin, &create_db).await?;
        for node in self.nodes.iter().flatten() {
            let node = &node.client;
            // The shard clients are bound to the database; create it without that.
            exec(&node.clone().with_database("default"), &create_db).await?;
        }
        exec(
            self.client(),
            "CREATE TABLE IF NOT EXISTS ft_schema_migrations \
             (version UInt32, description String, applied_at DateTime) ENGINE = TinyLog",
        )
        .await?;
        let applied: BTreeSet<u32> = self
            .client()
            .query("SELECT version FROM ft_schema_migrations")
            .fetch_all::<u32>()
            .await
            .map_err(map_err)?
            .into_iter()
            .collect();
        for (version, description, statements) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for node in self.nodes.iter().flatten() {
                let node = &node.client;
                for st in *statements {
                    exec(node, &st.replace("{t}", self.local_suffix)).await?;
                }
            }
            if let Some(c) = &self.opts.cluster {
                for (table, key) in TABLES {
                    // Only the tables this migration creates.
                    if !statements
                        .iter()
                        .any(|st| st.contains(&format!("{table}{{t}} ")))
                    {
                        continue;
                    }
                    let ddl = format!(
                        "CREATE TABLE IF NOT EXISTS {table} AS {table}_local \
                         ENGINE = Distributed({}, {}, {table}_local, {key})",
                        c.name, self.database
                    );
                    // The AS clause needs the local table on the entry server too.
                    let entry_has_local = self
                        .client()
                        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?")
                        .bind(format!("{table}_local"))
                        .fetch_one::<u64>()
                        .await
                        .map_err(map_err)?;
                    if entry_has_local == 0 {
                        for st in *statements {
                            if st.contains(&format!("{table}{{t}} ")) {
                                exec(
                                    &client_for(url, Some(&self.database), self.opts.compression),
                                    &st.replace("{t}", "_local"),
                                )
                                .await?;
                            }
                        }
                    }
                    exec(self.client(), &ddl).await?;
                }
            }
            self.client()
                .query("INSERT INTO ft_schema_migrations (version, description, applied_at) VALUES (?, ?, now())")
                .bind(version)
                .bind(*description)
                .execute()
                .await
                .map_err(map_err)?;
            tracing::info!(version, "clickhouse schema migration applied");
        }
        Ok(())
    }

    fn insert_setting<T: Row>(
        &self,
        ins: clickhouse::insert::Insert<T>,
    ) -> clickhouse::insert::Insert<T> {
        let ins = if self.opts.cluster.is_some() {
            // Acknowledged means stored on the shards, not queued on the entry server.
            ins.with_setting("insert_distributed_sync", "1")
        } else {
            ins
        };
        if self.replicated {
            // Replicated tables drop an insert block identical to a recent
            // one. Two different rollup batches can be identical (same minute,
            // same counts) and both count: keep every block.
            ins.with_setting("insert_deduplicate", "0")
                .with_setting("load_balancing", "in_order")
        } else {
            ins
        }
    }

    /// Starts of the newest `n` matching spans in `[range start, top)`, newest
    /// first.
    ///
    /// ClickHouse 18.16 answers `ORDER BY start_ns DESC LIMIT n` by reading
    /// every matching row of its bounds, so the probe asks for time slices
    /// below `top` instead — `[top − w, top)` first, then each older slice
    /// four times as wide — and stops once `n` starts are in: a broad search
    /// over a dense store reads only its recent part. Slices are disjoint and
    /// each is newer than the next, so their answers concatenate into exactly
    /// the newest `n` of the whole range.
    async fn search_probe(
        &self,
        q: &TraceQuery,
        filter: &SpanFilter,
        top: u64,
        n: usize,
    ) -> StorageResult<Vec<u64>> {
        let sql = format!(
            "SELECT start_ns FROM ft_spans WHERE {} ORDER BY start_ns DESC LIMIT ?",
            filter.sql()
        );
        let mut starts = Vec::new();
        let mut hi = top;
        let mut width = PROBE_FIRST_SLICE_NS;
        let mut jumped = false;
        while starts.len() < n && hi > q.range.start_ns {
            let lo = hi.saturating_sub(width).max(q.range.start_ns);
            let slice = filter
                .bind(self.query(&sql), q, lo, hi)
                .bind((n - starts.len()) as u64)
                .fetch_all::<u64>()
                .await
                .map_err(map_err)?;
            let empty = slice.is_empty();
            starts.extend(slice);
            hi = lo;
            width = width.saturating_mul(4);
            if empty && starts.is_empty() && !jumped && hi > q.range.start_ns {
                // Nothing just below `top` (the matching spans stopped a while
                // ago): widening from here would end in one slice over all of
                // them. One pass over the key columns finds the newest instead,
                // and the slices restart just above it.
                jumped = true;
                match self.newest_start(q, filter, hi).await? {
                    Some(newest) => {
                        hi = newest + 1;
                        width = PROBE_FIRST_SLICE_NS;
                    }
                    None => break,
                }
            }
        }
        Ok(starts)
    }

    /// Start of the newest matching span in `[range start, hi)`, if any.
    async fn newest_start(
        &self,
        q: &TraceQuery,
        filter: &SpanFilter,
        hi: u64,
    ) -> StorageResult<Option<u64>> {
        let sql = format!(
            "SELECT count() AS n, max(start_ns) AS newest FROM ft_spans WHERE {}",
            filter.sql()
        );
        let row = filter
            .bind(self.query(&sql), q, q.range.start_ns, hi)
            .fetch_one::<NewestRow>()
            .await
            .map_err(map_err)?;
        Ok((row.n > 0).then_some(row.newest))
    }

    /// One search window (see `sink_common::SearchWindows`): traces with a
    /// matching span starting in `[max(from, range start), range end)` whose
    /// trace start is `>= from` and sorts after the cursor, newest first, at
    /// most `n`. The trace starts come from the lookup table (ordered by trace
    /// id), reading only the granules of the candidate traces.
    async fn search_window(
        &self,
        q: &TraceQuery,
        filter: &SpanFilter,
        from: Option<u64>,
        cursor: Option<(u64, TraceId)>,
        n: usize,
    ) -> StorageResult<Vec<(TraceId, u64)>> {
        let lo = from.map_or(q.range.start_ns, |a| a.max(q.range.start_ns));
        let (pre, _) = self.prewhere();
        let mut sql = format!(
            "SELECT trace_id, min(start_ns) AS tstart FROM ft_traces \
             {pre} trace_id IN (SELECT trace_id FROM ft_spans WHERE {}) \
             GROUP BY trace_id HAVING 1",
            filter.sql()
        );
        if from.is_some() {
            sql.push_str(" AND tstart >= ?");
        }
        if cursor.is_some() {
            sql.push_str(
                " AND (tstart < ? OR (tstart = ? AND trace_id < toFixedString(unhex(?), 16)))",
            );
        }
        sql.push_str(" ORDER BY tstart DESC, trace_id DESC LIMIT ?");
        let mut query = filter.bind(self.query(&sql), q, lo, q.range.end_ns);
        if let Some(a) = from {
            query = query.bind(a);
        }
        if let Some((cs, cid)) = cursor {
            query = query.bind(cs).bind(cs).bind(hex(&cid));
        }
        let keys = query
            .bind(n as u64)
            .fetch_all::<TraceKeyRow>()
            .await
            .map_err(map_err)?;
        Ok(keys.into_iter().map(|k| (k.trace_id, k.tstart)).collect())
    }

    /// Keywords for a lookup by trace id in `ft_traces`: `("PREWHERE", "WHERE")`
    /// on a single server, so the other columns are read only from granules
    /// that hold the trace (the server's own PREWHERE optimizer never moves a
    /// condition on the first primary-key column, and would move the time
    /// bounds instead, which select nothing); `("WHERE", "AND")` over
    /// `Distributed` tables.
    fn prewhere(&self) -> (&'static str, &'static str) {
        if self.opts.cluster.is_some() {
            ("WHERE", "AND")
        } else {
            ("PREWHERE", "WHERE")
        }
    }

    fn query(&self, sql: &str) -> clickhouse::query::Query {
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

    /// Writes the lookup table first, then the search table: a trace that a
    /// search finds can always be read (a failure in between is healed by
    /// the retry, which deduplicates). Returns once the server acknowledged
    /// both inserts.
    async fn insert_spans(&self, spans: &[&Span]) -> StorageResult<()> {
        let mut enc = rowbinary::Encoder::default();
        self.insert_rows("ft_traces", rowbinary::TRACE_COLUMNS, spans, |s, out| {
            enc.trace_row(s, out)
        })
        .await?;
        self.insert_rows("ft_spans", rowbinary::SPAN_COLUMNS, spans, |s, out| {
            enc.span_row(s, out)
        })
        .await
    }

    /// One `INSERT INTO table (columns) FORMAT RowBinary` of every span's row,
    /// sent in chunks of about [`SEND_CHUNK`] bytes as they are encoded (so
    /// the server parses while the rest is encoded and memory stays bounded).
    async fn insert_rows(
        &self,
        table: &str,
        columns: &str,
        spans: &[&Span],
        mut row: impl FnMut(&Span, &mut Vec<u8>),
    ) -> StorageResult<()> {
        let mut ins = self
            .client()
            .insert_formatted_with(format!("INSERT INTO {table} ({columns}) FORMAT RowBinary"));
        if self.opts.cluster.is_some() {
            // Acknowledged means stored on the shards, not queued on the entry server.
            ins = ins.with_setting("insert_distributed_sync", "1");
        }
        if self.replicated {
            ins = ins.with_setting("load_balancing", "in_order");
        }
        let mut buf = Vec::with_capacity(SEND_CHUNK + SEND_CHUNK / 4);
        for s in spans {
            row(s, &mut buf);
            if buf.len() >= SEND_CHUNK {
                let chunk =
                    std::mem::replace(&mut buf, Vec::with_capacity(SEND_CHUNK + SEND_CHUNK / 4));
                ins.send(chunk.into()).await.map_err(map_err)?;
            }
        }
        if !buf.is_empty() {
            ins.send(buf.into()).await.map_err(map_err)?;
        }
        ins.end().await.map_err(map_err)
    }

    /// Active partitions (day numbers) of a physical table on one node.
    async fn partitions(&self, node: &Client, table: &str) -> StorageResult<BTreeMap<u64, u64>> {
        #[derive(Row, Deserialize)]
        struct P {
            partition: String,
            rows: u64,
        }
        let parts = node
            .query(
                "SELECT partition, sum(rows) AS rows FROM system.parts \
                 WHERE database = currentDatabase() AND table = ? AND active GROUP BY partition",
            )
            .bind(table)
            .fetch_all::<P>()
            .await
            .map_err(map_err)?;
        Ok(parts
            .into_iter()
            .filter_map(|p| {
                p.partition
                    .trim_matches('\'')
                    .parse::<u64>()
                    .ok()
                    .map(|d| (d, p.rows))
            })
            .collect())
    }

    /// Deletes rows older than the cutoff in one physical table on one node:
    /// drops whole day partitions, then a mutation for the cutoff's own day.
    /// Returns the rows removed (partition row counts include not-yet-merged duplicates).
    async fn retain_table(
        &self,
        node: &Client,
        table: &str,
        time_col: &str,
        cutoff: u64,
    ) -> StorageResult<u64> {
        let physical = format!("{table}{}", self.local_suffix);
        let mut removed = 0;
        for (day, rows) in self.partitions(node, &physical).await? {
            if (day + 1).saturating_mul(DAY_NS) <= cutoff {
                // Partition ids are integers read back from system.parts.
                exec(
                    node,
                    &format!("ALTER TABLE {physical} DROP PARTITION {day}"),
                )
                .await?;
                removed += rows;
            }
        }
        let left = node
            .query(&format!(
                "SELECT count() FROM {physical} WHERE {time_col} < ?"
            ))
            .bind(cutoff)
            .fetch_one::<u64>()
            .await
            .map_err(map_err)?;
        if left > 0 {
            node.query(&format!(
                "ALTER TABLE {physical} DELETE WHERE {time_col} < ?"
            ))
            .bind(cutoff)
            .execute()
            .await
            .map_err(map_err)?;
            let deadline = Instant::now() + Duration::from_secs(self.opts.mutation_timeout_secs);
            loop {
                let pending = node
                    .query(
                        "SELECT count() FROM system.mutations \
                         WHERE database = currentDatabase() AND table = ? AND is_done = 0",
                    )
                    .bind(&physical)
                    .fetch_one::<u64>()
                    .await
                    .map_err(map_err)?;
                if pending == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(StorageError::Unavailable(format!(
                        "retention delete on {physical} still running after {}s; it continues in the server",
                        self.opts.mutation_timeout_secs
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            removed += left;
        }
        Ok(removed)
    }

    /// WHERE clause and binder for spans of a service (and operation) in a window.
    fn span_filter(
        &self,
        sql_head: &str,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        sql_tail: &str,
    ) -> clickhouse::query::Query {
        let op = if operation.is_some() {
            " AND name = ?"
        } else {
            ""
        };
        let kind = kinds_cond(kinds);
        let sql = format!(
            "{sql_head} FROM ft_spans WHERE service = ?{op} AND start_ns >= ? AND start_ns < ?{kind} \
             LIMIT 1 BY trace_id, span_id{sql_tail}"
        );
        let mut q = self.query(&sql).bind(service);
        if let Some(op) = operation {
            q = q.bind(op);
        }
        q = q.bind(range.start_ns).bind(range.end_ns);
        for k in kinds {
            q = q.bind(*k as u8);
        }
        q
    }
}

/// ` AND kind IN (?, …)` with one placeholder per kind; empty for no kinds.
fn kinds_cond(kinds: &[SpanKind]) -> String {
    if kinds.is_empty() {
        String::new()
    } else {
        format!(" AND kind IN ({})", vec!["?"; kinds.len()].join(", "))
    }
}

/// The conditions on a matching span besides its start time, in `ft_spans`
/// terms, with the values to bind in order.
struct SpanFilter {
    conds: Vec<std::borrow::Cow<'static, str>>,
    attrs: Vec<(String, Vec<(u8, String)>)>,
}

impl SpanFilter {
    /// `None` when no stored span can match (an unsearchable attribute value).
    fn new(q: &TraceQuery) -> StorageResult<Option<Self>> {
        let mut conds: Vec<std::borrow::Cow<'static, str>> = Vec::new();
        let mut attrs = Vec::new();
        if q.service.is_some() {
            conds.push("service = ?".into());
        }
        if q.operation.is_some() {
            conds.push("name = ?".into());
        }
        if q.min_duration_ns.is_some() {
            conds.push("duration_ns >= ?".into());
        }
        if q.max_duration_ns.is_some() {
            conds.push("duration_ns <= ?".into());
        }
        if q.errors_only {
            conds.push(ERROR_STATUS_COND.into());
        }
        for f in &q.attributes {
            common::check_filter(&f.key, &f.value)?;
            // A typed condition has one candidate value; a Jaeger text
            // condition one per type whose text equals it. Any of them matches.
            let alts: Vec<(u8, String)> = f
                .candidates()
                .iter()
                .filter_map(common::scalar_text)
                .collect();
            if alts.is_empty() {
                return Ok(None);
            }
            conds.push(
                format!(
                    "arrayExists((k, t, v) -> k = ? AND ({}), attr_keys, attr_types, attr_values)",
                    vec!["(t = ? AND v = ?)"; alts.len()].join(" OR ")
                )
                .into(),
            );
            attrs.push((f.key.clone(), alts));
        }
        Ok(Some(SpanFilter { conds, attrs }))
    }

    /// `start_ns >= ? AND start_ns < ?` and the conditions, to bind with [`Self::bind`].
    fn sql(&self) -> String {
        let mut out = "start_ns >= ? AND start_ns < ?".to_string();
        for c in &self.conds {
            out.push_str(" AND ");
            out.push_str(c);
        }
        out
    }

    /// Binds the time bounds and the condition values of [`Self::sql`].
    fn bind(
        &self,
        mut query: clickhouse::query::Query,
        q: &TraceQuery,
        lo: u64,
        hi: u64,
    ) -> clickhouse::query::Query {
        query = query.bind(lo).bind(hi);
        if let Some(s) = &q.service {
            query = query.bind(s.as_str());
        }
        if let Some(o) = &q.operation {
            query = query.bind(o.as_str());
        }
        if let Some(v) = q.min_duration_ns {
            query = query.bind(v);
        }
        if let Some(v) = q.max_duration_ns {
            query = query.bind(v);
        }
        for (k, alts) in &self.attrs {
            query = query.bind(k.as_str());
            for (t, v) in alts {
                query = query.bind(*t).bind(v.as_str());
            }
        }
        query
    }
}

#[async_trait]
impl SpanWriter for ClickHouseStore {
    fn name(&self) -> &'static str {
        "clickhouse"
    }
    async fn ping(&self) -> StorageResult<()> {
        self.failover(move || async move {
            self.client()
                .query("SELECT 1")
                .execute()
                .await
                .map_err(map_err)
        })
        .await
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        self.failover(move || async move {
            if spans.is_empty() {
                return Ok(());
            }
            let mut by_day: BTreeMap<u64, Vec<&Span>> = BTreeMap::new();
            for s in spans {
                by_day.entry(s.start_ns / DAY_NS).or_default().push(s);
            }
            if by_day.len() <= self.opts.max_days_per_insert.max(1) {
                return self.insert_spans(&spans.iter().collect::<Vec<_>>()).await;
            }
            let days: Vec<Vec<&Span>> = by_day.into_values().collect();
            for chunk in days.chunks(self.opts.max_days_per_insert.max(1)) {
                let group: Vec<&Span> = chunk.iter().flatten().copied().collect();
                self.insert_spans(&group).await?;
            }
            Ok(())
        })
        .await
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        self.failover(move || async move {
            if !rollups.operations.is_empty() {
                let mut ins = self.insert_setting(
                    self.client()
                        .insert::<OpRollupRow<'_>>("ft_op_rollups")
                        .await
                        .map_err(map_err)?,
                );
                for r in &rollups.operations {
                    let row = OpRollupRow {
                        minute_ns: r.minute_ns,
                        service: &r.service,
                        operation: &r.operation,
                        kind: r.kind as u8,
                        count: r.count,
                        errors: r.errors,
                        sketch: rollup_math::encode_sketch(&r.sketch)?,
                    };
                    ins.write(&row).await.map_err(map_err)?;
                }
                ins.end().await.map_err(map_err)?;
            }
            if !rollups.edges.is_empty() {
                let mut ins = self.insert_setting(
                    self.client()
                        .insert::<EdgeRollupRow<'_>>("ft_edge_rollups")
                        .await
                        .map_err(map_err)?,
                );
                for r in &rollups.edges {
                    let row = EdgeRollupRow {
                        minute_ns: r.minute_ns,
                        caller: &r.caller,
                        callee: &r.callee,
                        calls: r.calls,
                        errors: r.errors,
                        sketch: rollup_math::encode_sketch(&r.sketch)?,
                    };
                    ins.write(&row).await.map_err(map_err)?;
                }
                ins.end().await.map_err(map_err)?;
            }
            // No transactions: after the rows (see the module documentation).
            if !rollups.origins.is_empty() {
                let mut ins = self.insert_setting(
                    self.client()
                        .insert::<OriginRow>("ft_rollup_origins")
                        .await
                        .map_err(map_err)?,
                );
                for o in &rollups.origins {
                    let row = OriginRow {
                        instance: rollups.wal_instance,
                        segment: o.segment,
                        minute_ns: o.minute_ns,
                        ranges: o.encode_ranges(),
                    };
                    ins.write(&row).await.map_err(map_err)?;
                }
                ins.end().await.map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        self.failover(move || async move {
            let rows = self
                .query(
                    "SELECT instance, segment, minute_ns, ranges FROM ft_rollup_origins \
                     WHERE instance = ? AND has(?, segment)",
                )
                .bind(instance)
                .bind(segments.to_vec())
                .fetch_all::<OriginRow>()
                .await
                .map_err(map_err)?;
            rows.into_iter()
                .map(|r| {
                    Ok(RollupOrigin {
                        segment: r.segment,
                        minute_ns: r.minute_ns,
                        parts: RollupOrigin::decode_ranges(&r.ranges).map_err(|e| {
                            StorageError::Backend(format!(
                                "stored rollup origin of WAL segment {} is corrupt ({e}); delete its rows from ft_rollup_origins",
                                r.segment
                            ))
                        })?,
                    })
                })
                .collect()
        })
        .await
    }
    async fn prune_rollup_origins(
        &self,
        _instance: u64,
        _below_segment: u64,
    ) -> StorageResult<u64> {
        // A delete is a mutation rewriting parts; retention drops the day
        // partitions instead (see the module documentation).
        Ok(0)
    }
}

#[async_trait]
impl SamplingCounts for ClickHouseStore {
    async fn write_sampling_counts(&self, c: &SamplingPeriodCounts) -> StorageResult<()> {
        if c.counts.is_empty() {
            return Ok(());
        }
        self.failover(move || async move {
            let mut ins = self.insert_setting(
                self.client()
                    .insert::<SamplingCountInsert<'_>>("ft_sampling_counts")
                    .await
                    .map_err(map_err)?,
            );
            for (service, operation, n) in &c.counts {
                let row = SamplingCountInsert {
                    period_start_ns: c.period_start_ns,
                    period_secs: c.period_secs,
                    collector: &c.collector,
                    service,
                    operation,
                    count_milli: *n,
                };
                ins.write(&row).await.map_err(map_err)?;
            }
            ins.end().await.map_err(map_err)
        })
        .await
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        self.failover(move || async move {
            // The inner max() counts a retried insert (same period,
            // collector, service, operation, same count) once.
            let rows = self
                .query(
                    "SELECT period_start_ns, service, operation, sum(c) AS count_milli FROM ( \
                       SELECT period_start_ns, service, operation, collector, \
                              max(count_milli) AS c \
                       FROM ft_sampling_counts \
                       WHERE period_secs = ? AND period_start_ns >= ? AND period_start_ns < ? \
                       GROUP BY period_start_ns, service, operation, collector) \
                     GROUP BY period_start_ns, service, operation \
                     ORDER BY period_start_ns, service, operation",
                )
                .bind(period_secs)
                .bind(from_ns)
                .bind(to_ns)
                .fetch_all::<SamplingCountRead>()
                .await
                .map_err(map_err)?;
            Ok(rows
                .into_iter()
                .map(|r| SamplingCountRow {
                    period_start_ns: r.period_start_ns,
                    service: r.service,
                    operation: r.operation,
                    count_milli: r.count_milli,
                })
                .collect())
        })
        .await
    }
}

#[async_trait]
impl TraceReader for ClickHouseStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        self.failover(move || async move {
            let (lo, hi) = match range {
                Some(r) => (r.start_ns, r.end_ns),
                None => (0, u64::MAX),
            };
            let (pre, rest) = self.prewhere();
            let sql = format!(
                "SELECT payload FROM ft_traces {pre} trace_id = toFixedString(unhex(?), 16) \
                 {rest} start_ns >= ? AND start_ns < ?"
            );
            let rows = self
                .query(&sql)
                .bind(hex(&trace_id))
                .bind(lo)
                .bind(hi)
                .fetch_all::<PayloadRow>()
                .await
                .map_err(map_err)?;
            let mut spans = rows
                .iter()
                .map(|r| decode_span(&r.payload))
                .collect::<StorageResult<Vec<Span>>>()?;
            common::order_trace(&mut spans);
            Ok(spans)
        })
        .await
    }
    /// One query on the trace-id lookup table, as `get_trace` and the search's
    /// summaries read it: `trace_id IN (subquery)` is matched against the
    /// primary key (18.16 included), so only the granules holding the ids are
    /// read; the time bounds skip day partitions outside `range`. The ids go
    /// as hex in one array parameter (client-side bound, so in the query
    /// text); [`MAX_TRACES_PER_READ`](super::MAX_TRACES_PER_READ) keeps that
    /// text under 40 KB.
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        self.failover(move || async move {
            let ids = common::distinct_trace_ids(trace_ids)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let (lo, hi) = match range {
                Some(r) => (r.start_ns, r.end_ns),
                None => (0, u64::MAX),
            };
            let hex_ids: Vec<String> = ids.iter().map(|id| hex(id)).collect();
            let (pre, rest) = self.prewhere();
            let sql = format!(
                "SELECT trace_id, payload FROM ft_traces \
                 {pre} trace_id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16)) \
                 {rest} start_ns >= ? AND start_ns < ?"
            );
            let rows = self
                .query(&sql)
                .bind(hex_ids)
                .bind(lo)
                .bind(hi)
                .fetch_all::<TracePayloadRow>()
                .await
                .map_err(map_err)?;
            let spans = rows
                .iter()
                .map(|r| Ok((r.trace_id, decode_span(&r.payload)?)))
                .collect::<StorageResult<Vec<(TraceId, Span)>>>()?;
            Ok(common::group_traces(&ids, spans))
        })
        .await
    }
    async fn search(&self, q: &TraceQuery) -> StorageResult<SearchPage> {
        self.failover(move || async move {
            if q.limit == 0 || q.range.end_ns <= q.range.start_ns {
                return Ok(SearchPage::default());
            }
            let limit = q.limit.min(self.opts.max_search_limit);
            let cursor = q.cursor.as_deref().map(common::decode_cursor).transpose()?;
            let Some(filter) = SpanFilter::new(q)? else {
                return Ok(SearchPage::default());
            };
            let filter = &filter;
            let (ids, more) = common::search_windows(
                q.range,
                cursor,
                limit,
                move |top, n| self.search_probe(q, filter, top, n),
                move |from, n| self.search_window(q, filter, from, cursor, n),
            )
            .await?;
            if ids.is_empty() {
                return Ok(SearchPage::default());
            }
            let hex_ids: Vec<String> = ids.iter().map(|(id, _)| hex(id)).collect();
            let (pre, _) = self.prewhere();
            let sql = format!(
                "SELECT trace_id, span_id, has_parent, service, name, start_ns, end_ns, status_code \
                 FROM ft_traces {pre} trace_id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16))"
            );
            let rows = self
                .query(&sql)
                .bind(hex_ids)
                .fetch_all::<SummaryChRow>()
                .await
                .map_err(map_err)?;
            let summary_rows = rows
                .into_iter()
                .map(|r| SummaryRow {
                    trace_id: r.trace_id,
                    span_id: r.span_id,
                    is_root: r.has_parent == 0,
                    service: r.service,
                    name: r.name,
                    start_ns: r.start_ns,
                    end_ns: r.end_ns,
                    status_code: r.status_code,
                })
                .collect();
            let order: Vec<TraceId> = ids.iter().map(|(id, _)| *id).collect();
            let traces = common::summarize(&order, summary_rows);
            Ok(common::search_page(&ids, more, traces))
        })
        .await
    }
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        self.failover(move || async move {
            let mut out = self
                .query("SELECT DISTINCT service FROM ft_spans WHERE start_ns >= ? AND start_ns < ?")
                .bind(range.start_ns)
                .bind(range.end_ns)
                .fetch_all::<String>()
                .await
                .map_err(map_err)?;
            out.sort();
            Ok(out)
        })
        .await
    }
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        self.failover(move || async move {
            let rows = self
                .query(
                    "SELECT DISTINCT name, kind FROM ft_spans WHERE service = ? AND start_ns >= ? AND start_ns < ?",
                )
                .bind(service)
                .bind(range.start_ns)
                .bind(range.end_ns)
                .fetch_all::<OperationRow>()
                .await
                .map_err(map_err)?;
            let mut out: Vec<Operation> = rows
                .into_iter()
                .map(|r| Operation {
                    name: r.name,
                    kind: SpanKind::from_i32(r.kind as i32),
                })
                .collect();
            out.sort();
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl AnalyticsReader for ClickHouseStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        self.failover(move || async move {
            if range.end_ns <= range.start_ns {
                return Ok(Vec::new());
            }
            let (lo, hi) = rollup_math::minute_bounds(range);
            let rows = self
                .query(
                    "SELECT caller, callee, calls, errors, sketch FROM ft_edge_rollups \
                     WHERE minute_ns >= ? AND minute_ns < ?",
                )
                .bind(lo)
                .bind(hi)
                .fetch_all::<EdgeRow>()
                .await
                .map_err(map_err)?;
            let mut merged = Vec::with_capacity(rows.len());
            for r in rows {
                let sketch = rollup_math::decode_sketch(&r.sketch)?;
                merged.push((r.caller, r.callee, r.calls, r.errors, sketch));
            }
            Ok(rollup_math::merge_edges(merged))
        })
        .await
    }
    async fn latency(&self, q: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        self.failover(move || async move {
            if q.range.end_ns <= q.range.start_ns {
                return Ok(Vec::new());
            }
            let step = rollup_math::latency_step(q, self.opts.max_latency_points)?;
            let (lo, hi) = rollup_math::minute_bounds(q.range);
            let op = if q.operation.is_some() {
                " AND operation = ?"
            } else {
                ""
            };
            let kinds = kinds_cond(&q.kinds);
            let mut query = self
                .query(&format!(
                    "SELECT minute_ns, count, errors, sketch FROM ft_op_rollups \
                     WHERE service = ?{op} AND minute_ns >= ? AND minute_ns < ?{kinds}"
                ))
                .bind(q.service.as_str());
            if let Some(o) = &q.operation {
                query = query.bind(o.as_str());
            }
            query = query.bind(lo).bind(hi);
            for k in &q.kinds {
                query = query.bind(*k as u8);
            }
            let rows = query.fetch_all::<LatencyRow>().await.map_err(map_err)?;
            let mut data = Vec::with_capacity(rows.len());
            for r in rows {
                data.push((
                    r.minute_ns,
                    r.count,
                    r.errors,
                    rollup_math::decode_sketch(&r.sketch)?,
                ));
            }
            Ok(rollup_math::latency_points(q, step, data))
        })
        .await
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        self.failover(move || async move {
            rollup_math::check_quantiles(qs)?;
            if qs.is_empty() {
                return Ok(Vec::new());
            }
            let n = self
                .span_filter(
                    "SELECT count() FROM (SELECT 1",
                    service,
                    operation,
                    kinds,
                    range,
                    ")",
                )
                .fetch_one::<u64>()
                .await
                .map_err(map_err)?;
            if n == 0 {
                return Ok(Vec::new());
            }
            // Ranks are computed here, in the same floating point as the other
            // sinks, then picked from the sorted durations in one pass.
            let ranks: Vec<u64> = qs
                .iter()
                .map(|q| rollup_math::nearest_rank(*q, n))
                .collect();
            let op = if operation.is_some() {
                " AND name = ?"
            } else {
                ""
            };
            let kind = kinds_cond(kinds);
            let sql = format!(
                "SELECT arrayMap(r -> s[least(r, length(s))], ?) FROM \
                 (SELECT arraySort(groupArray(d)) AS s FROM (SELECT duration_ns AS d FROM ft_spans \
                  WHERE service = ?{op} AND start_ns >= ? AND start_ns < ?{kind} LIMIT 1 BY trace_id, span_id))"
            );
            let mut query = self.query(&sql).bind(ranks).bind(service);
            if let Some(o) = operation {
                query = query.bind(o);
            }
            query = query.bind(range.start_ns).bind(range.end_ns);
            for k in kinds {
                query = query.bind(*k as u8);
            }
            let values = query.fetch_one::<Vec<u64>>().await.map_err(map_err)?;
            Ok(values)
        })
        .await
    }
}

#[async_trait]
impl Retention for ClickHouseStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        let mut report = RetentionReport::default();
        for replicas in &self.nodes {
            // Replicated tables replicate partition drops and mutations: one
            // replica of each shard runs them, the next one if it is down.
            let r =
                on_one_replica(replicas, "retention", |c| self.retain_node(c, cutoff_ns)).await?;
            report.spans_deleted += r.spans_deleted;
            report.rollups_deleted += r.rollups_deleted;
        }
        Ok(report)
    }

    /// The compressed size of the active parts of every table, one copy of
    /// the data: each shard's size read on its first reachable replica (the
    /// replicas of a shard hold the same rows, so the budget counts the data,
    /// not its copies). `system.parts`, column `bytes`: the compressed size on
    /// ClickHouse 18.16, an alias of `bytes_on_disk` later.
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        let mut bytes = 0u64;
        for replicas in &self.nodes {
            bytes += on_one_replica(replicas, "disk usage", |c| async move {
                c.query(
                    "SELECT toUInt64(sum(bytes)) FROM system.parts \
                     WHERE database = currentDatabase() AND active AND table LIKE 'ft%'",
                )
                .fetch_one::<u64>()
                .await
                .map_err(map_err)
            })
            .await?;
        }
        #[derive(Row, Deserialize)]
        struct Oldest {
            start: u64,
            rows: u64,
        }
        let oldest = self
            .failover(|| async {
                self.client()
                    .query(
                        "SELECT toUInt64(min(start_ns)) AS start, toUInt64(count()) AS rows \
                         FROM ft_traces",
                    )
                    .fetch_one::<Oldest>()
                    .await
                    .map_err(map_err)
            })
            .await?;
        Ok(Some(DiskUsage {
            dir: None,
            file_bytes: bytes,
            live_bytes: bytes,
            oldest_ns: (oldest.rows > 0).then_some(oldest.start),
        }))
    }

    /// Drops whole day partitions, oldest first, until their sizes (over
    /// every node and table) add up to `bytes` (at least one), through
    /// [`apply_retention`](Self::apply_retention) with the end of the last
    /// of those days as the cutoff.
    async fn evict_oldest(&self, bytes: u64, _give_back: bool) -> StorageResult<EvictionReport> {
        #[derive(Row, Deserialize)]
        struct P {
            partition: String,
            bytes: u64,
        }
        let mut days: BTreeMap<u64, u64> = BTreeMap::new();
        let table = format!("ft_spans{}", self.local_suffix);
        for replicas in &self.nodes {
            let parts = on_one_replica(replicas, "eviction", |c| {
                let table = table.clone();
                async move {
                    c.query(
                        "SELECT partition, toUInt64(sum(bytes)) AS bytes FROM system.parts \
                         WHERE database = currentDatabase() AND active AND table = ? \
                         GROUP BY partition",
                    )
                    .bind(table)
                    .fetch_all::<P>()
                    .await
                    .map_err(map_err)
                }
            })
            .await?;
            for p in parts {
                if let Ok(day) = p.partition.trim_matches('\'').parse::<u64>() {
                    *days.entry(day).or_default() += p.bytes;
                }
            }
        }
        let mut freed = 0u64;
        let mut last = None;
        for (day, size) in days {
            if bytes == 0 || (last.is_some() && freed >= bytes) {
                break;
            }
            freed = freed.saturating_add(size);
            last = Some(day);
        }
        let Some(day) = last else {
            return Ok(EvictionReport::default());
        };
        let cutoff = day.saturating_add(1).saturating_mul(DAY_NS);
        let report = self.apply_retention(cutoff).await?;
        Ok(EvictionReport {
            spans_deleted: report.spans_deleted,
            rollups_deleted: report.rollups_deleted,
            cutoff_ns: cutoff,
        })
    }
}

impl ClickHouseStore {
    /// Retention on the physical tables of one server.
    async fn retain_node(&self, node: &Client, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        let mut report = RetentionReport::default();
        // Count spans from the lookup table: one row per span there too.
        report.spans_deleted += self
            .retain_table(node, "ft_traces", "start_ns", cutoff_ns)
            .await?;
        self.retain_table(node, "ft_spans", "start_ns", cutoff_ns)
            .await?;
        if cutoff_ns >= MINUTE_NS {
            // A minute bucket goes only when all of it is older than the cutoff.
            let bound = cutoff_ns - MINUTE_NS + 1;
            report.rollups_deleted += self
                .retain_table(node, "ft_op_rollups", "minute_ns", bound)
                .await?;
            report.rollups_deleted += self
                .retain_table(node, "ft_edge_rollups", "minute_ns", bound)
                .await?;
            // Bookkeeping, not counted as rollup rows.
            self.retain_table(node, "ft_rollup_origins", "minute_ns", bound)
                .await?;
            self.retain_table(node, "ft_sampling_counts", "period_start_ns", bound)
                .await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transient_server_errors_are_retried_and_others_are_not() {
        use super::transient_server_error as t;
        assert!(t(
            "Code: 210, e.displayText() = DB::NetException: Connection reset by peer"
        ));
        assert!(t(
            "Code: 242, e.displayText() = DB::Exception: Table is in readonly mode"
        ));
        assert!(t(
            "Code: 279, e.displayText() = DB::NetException: All connection tries failed"
        ));
        assert!(!t(
            "Code: 62, e.displayText() = DB::Exception: Syntax error"
        ));
        assert!(!t("Code: 2100, e.displayText() = nothing"));
        assert!(!t("no code at all"));
        assert!(!t("Code: "));
    }

    use super::*;

    #[test]
    fn parses_urls() {
        let u = parse_url("http://bob:p%40ss@127.0.0.1:8123/traces").unwrap();
        assert_eq!(u.base, "http://127.0.0.1:8123");
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.database.as_deref(), Some("traces"));
        let u = parse_url("http://localhost:8123").unwrap();
        assert_eq!(u.database, None);
        assert!(parse_url("https://x:1").is_err());
        assert!(parse_url("localhost:8123").is_err());
        assert!(valid_identifier("ft_db1"));
        assert!(!valid_identifier("a;DROP"));
        assert!(!valid_identifier("1a"));
    }
}
