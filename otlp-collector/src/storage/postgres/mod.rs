//! The PostgreSQL sink (`--storage postgres --storage-url postgres://...`).
//!
//! Schema (versioned migrations in [`MIGRATIONS`], applied at connect under an
//! advisory lock, recorded in `ft_schema_migrations`; see
//! `docs/storage.md`):
//! - `ft_spans`: one row per span, **partitioned by UTC day** on `start_ns`
//!   (declarative range partitions `ft_spans_YYYYMMDD`, created ahead of time
//!   and on demand; a `DEFAULT` partition catches timestamps far outside the
//!   window so a client with a broken clock cannot create thousands of
//!   partitions). Searchable columns, the span attributes as typed JSONB with a
//!   GIN index, and the whole span as a binary blob for an exact round trip.
//!   Indexes: trace id (primary key prefix), service+time and
//!   service+operation+time (both covering `trace_id`, `duration_ns` and `kind`, so
//!   searches and exact percentiles read them index-only), service+duration,
//!   and a partial index on error spans.
//! - `ft_op_rollups` / `ft_edge_rollups`: per-minute rollups, appended and
//!   merged at query time (sketch merging is not expressible in SQL).
//!
//! Writes go through binary `COPY` into a per-connection temporary staging
//! table, then one `INSERT ... SELECT` that skips every staged span whose
//! `(trace_id, span_id)` is already stored (or staged twice), so a retried
//! batch never duplicates a span. The primary key must contain the partition
//! key (`trace_id, span_id, start_ns`), so it alone would let a span re-sent
//! with another start time in twice; the `NOT EXISTS` probe uses the primary
//! key's `(trace_id, span_id)` prefix in each partition. Like SQLite, the first
//! version of a span stored wins. Two collectors writing the same span with
//! different start times in the same instant can still both insert it (the
//! probe is not a constraint); one collector writes its batches in sequence. Retention drops whole day partitions and deletes
//! only the remainder older than the cutoff.
//!
//! PostgreSQL `text` and `jsonb` cannot hold NUL characters, which span data
//! (attacker-controlled) may contain: searchable text columns store an
//! injective escape of the string (`\` → `\\`, NUL → `\0`), applied alike to
//! stored values and query values, and undone when read back. The span blob
//! keeps the exact original.
//!
//! TLS (rustls with the `ring` provider) follows libpq's URL options:
//! - `sslmode=disable`: plaintext only.
//! - `sslmode=prefer` (the default): TLS when the server offers it, plaintext
//!   when it does not. The certificate is not checked, so this only protects
//!   against passive eavesdropping.
//! - `sslmode=require`: TLS or no connection, certificate **not** checked (as
//!   libpq's `require` without a root certificate): an active attacker can
//!   still impersonate the server.
//! - `sslmode=verify-ca`: TLS, the chain is verified, the host name is not.
//! - `sslmode=verify-full`: TLS, chain and host name verified. **The safe
//!   choice** on any network you do not fully trust.
//! - `sslrootcert=/path/ca.pem`: the CA certificates (PEM) to trust instead of
//!   the built-in Mozilla roots (`webpki-roots`). As in libpq, giving it with
//!   `prefer` or `require` also verifies the chain (like `verify-ca`).
//!
//! The CA file is read when the URL is checked at start, so a wrong path fails
//! the start instead of every reconnect.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncMutexGuard};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::rollup_math;
use super::sink_common::{self as common, SearchWindows, SummaryRow, DAY_NS};
use super::span_codec::{decode_span, encode_span};
use super::{
    AnalyticsReader, DependencyEdge, DiskUsage, EvictionReport, LatencyPoint, LatencyQuery,
    Operation, Retention, RetentionReport, SamplingCountRow, SamplingCounts, SamplingPeriodCounts,
    SearchPage, SpanWriter, StorageError, StorageResult, TimeRange, TraceQuery, TraceReader,
    TraceSpans,
};
use crate::model::{AttrValue, Span, SpanKind, StatusCode, TraceId};
use crate::rollup::{RollupBatch, RollupOrigin, MINUTE_NS};

/// Tuning for [`PostgresStore`].
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresOptions {
    /// Connections kept open (queries and writes run in parallel up to this number).
    pub pool_size: usize,
    /// Day partitions are created on demand for spans at most this many days old;
    /// older spans go to the default partition.
    pub partition_past_days: u32,
    /// Day partitions are created this many days ahead of today, and on demand
    /// up to that far in the future; later spans go to the default partition.
    pub partition_future_days: u32,
    /// Maximum buckets a `latency` time series may have.
    pub max_latency_points: usize,
    /// Maximum traces one search page may return (larger limits are capped).
    pub max_search_limit: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 4,
            partition_past_days: 62,
            partition_future_days: 2,
            max_latency_points: 10_000,
            max_search_limit: 10_000,
        }
    }
}

/// Schema migrations, applied in order; a version is applied once and recorded.
/// Never edit a released migration: append a new one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "spans partitioned by day, typed JSONB attributes, rollups",
        r#"
CREATE TABLE ft_spans (
    trace_id       bytea    NOT NULL,
    span_id        bytea    NOT NULL,
    parent_span_id bytea,
    service        text     NOT NULL,
    name           text     NOT NULL,
    kind           smallint NOT NULL,
    start_ns       bigint   NOT NULL,
    end_ns         bigint   NOT NULL,
    duration_ns    bigint   NOT NULL,
    status_code    smallint NOT NULL,
    attributes     jsonb    NOT NULL,
    payload        bytea    NOT NULL,
    PRIMARY KEY (trace_id, span_id, start_ns)
) PARTITION BY RANGE (start_ns);
CREATE TABLE ft_spans_default PARTITION OF ft_spans DEFAULT;
CREATE INDEX ft_spans_service_start ON ft_spans (service, start_ns);
CREATE INDEX ft_spans_service_name_start ON ft_spans (service, name, start_ns);
CREATE INDEX ft_spans_service_duration ON ft_spans (service, duration_ns);
CREATE INDEX ft_spans_errors ON ft_spans (start_ns) WHERE status_code = 2;
CREATE INDEX ft_spans_attributes ON ft_spans USING gin (attributes jsonb_path_ops);

CREATE TABLE ft_op_rollups (
    minute_ns bigint   NOT NULL,
    service   text     NOT NULL,
    operation text     NOT NULL,
    kind      smallint NOT NULL,
    count     bigint   NOT NULL,
    errors    bigint   NOT NULL,
    sketch    bytea    NOT NULL
);
CREATE INDEX ft_op_rollups_service ON ft_op_rollups (service, operation, minute_ns);
CREATE INDEX ft_op_rollups_minute ON ft_op_rollups (minute_ns);

CREATE TABLE ft_edge_rollups (
    minute_ns bigint NOT NULL,
    caller    text   NOT NULL,
    callee    text   NOT NULL,
    calls     bigint NOT NULL,
    errors    bigint NOT NULL,
    sketch    bytea  NOT NULL
);
CREATE INDEX ft_edge_rollups_minute ON ft_edge_rollups (minute_ns);
"#,
    ),
    (
        2,
        "rollup origins: the WAL spans each rollup batch accounts for",
        r#"
CREATE TABLE ft_rollup_origins (
    instance  bigint NOT NULL,
    segment   bigint NOT NULL,
    minute_ns bigint NOT NULL,
    ranges    bytea  NOT NULL
);
CREATE INDEX ft_rollup_origins_segment ON ft_rollup_origins (instance, segment);
CREATE INDEX ft_rollup_origins_minute ON ft_rollup_origins (minute_ns);
"#,
    ),
    (
        3,
        "covering search indexes: (service[, name], start) INCLUDE (trace_id, duration_ns, kind)",
        // The search probe, every search window and exact percentiles (which
        // filter on kind: entry spans) read only these columns of the matching
        // spans; without them in the index each matching span costs a visit
        // to its ~1.1 KB heap row (a window over an hour of one service read
        // the whole table, 1.7 s at 1.35M spans; exact percentiles over an
        // hour at 10M spans seq-scanned 12 GB, 3.3 s warm).
        // Rebuilds the two indexes on every partition once, under the
        // migration's lock.
        r#"
CREATE INDEX ft_spans_service_start_v3 ON ft_spans (service, start_ns)
    INCLUDE (trace_id, duration_ns, kind);
DROP INDEX ft_spans_service_start;
ALTER INDEX ft_spans_service_start_v3 RENAME TO ft_spans_service_start;
CREATE INDEX ft_spans_service_name_start_v3 ON ft_spans (service, name, start_ns)
    INCLUDE (trace_id, duration_ns, kind);
DROP INDEX ft_spans_service_name_start;
ALTER INDEX ft_spans_service_name_start_v3 RENAME TO ft_spans_service_name_start;
"#,
    ),
    (
        4,
        "adaptive sampling counts per period, per collector (source = \"store\")",
        r#"
CREATE TABLE ft_sampling_counts (
    period_start_ns bigint  NOT NULL,
    period_secs     integer NOT NULL,
    collector       text    NOT NULL,
    service         text    NOT NULL,
    operation       text    NOT NULL,
    count_milli     bigint  NOT NULL,
    PRIMARY KEY (period_secs, period_start_ns, collector, service, operation)
);
CREATE INDEX ft_sampling_counts_start ON ft_sampling_counts (period_start_ns);
"#,
    ),
];

/// Advisory lock key serializing migrations and partition DDL across collectors.
const DDL_LOCK: i64 = 0x6674_7261_6365; // "ftrace"

const SPAN_COLUMNS: &str = "trace_id, span_id, parent_span_id, service, name, kind, start_ns, \
                            end_ns, duration_ns, status_code, attributes, payload";
const SPAN_TYPES: [Type; 12] = [
    Type::BYTEA,
    Type::BYTEA,
    Type::BYTEA,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT2,
    Type::JSONB,
    Type::BYTEA,
];

fn to_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn from_i64(v: i64) -> u64 {
    v.max(0) as u64
}

/// Injective escape so strings with NUL fit PostgreSQL `text`/`jsonb`.
fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['\0', '\\']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Inverse of [`esc`].
fn unesc(s: String) -> String {
    if !s.contains('\\') {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One typed JSONB attribute element: `{"k": key, "<type>": value}`; the type
/// letter keeps `"200"`, `200` and `200.0` distinct in containment searches.
fn attr_json(key: &str, v: &AttrValue) -> Option<serde_json::Value> {
    let k = esc(key);
    Some(match v {
        AttrValue::Str(s) => json!({"k": k, "s": esc(s)}),
        AttrValue::Bool(b) => json!({"k": k, "b": b}),
        AttrValue::Int(i) => json!({"k": k, "i": i}),
        AttrValue::Double(d) => {
            // NaN and infinities have no JSON form; they stay in the blob only.
            let n = serde_json::Number::from_f64(if *d == 0.0 { 0.0 } else { *d })?;
            json!({"k": k, "d": n})
        }
        _ => return None,
    })
}

fn attrs_json(span: &Span) -> serde_json::Value {
    serde_json::Value::Array(
        span.attributes
            .iter()
            .filter_map(|kv| attr_json(&kv.key, &kv.value))
            .collect(),
    )
}

/// Maps a driver error: connection and resource problems are retryable.
fn map_err(e: tokio_postgres::Error) -> StorageError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let retryable = code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || code == "40001"
            || code == "40P01";
        let msg = format!(
            "postgres: {} (SQLSTATE {code}){}",
            db.message(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        );
        return if retryable {
            StorageError::Unavailable(msg)
        } else {
            StorageError::Backend(msg)
        };
    }
    if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return StorageError::Unavailable(format!(
            "postgres connection failed: {e}; check that the server is up and --storage-url is right"
        ));
    }
    StorageError::Backend(format!("postgres: {e}"))
}

/// One pooled connection and whether its session has the staging table.
struct Conn {
    client: Client,
    staged: bool,
}

/// A fixed set of connections, each used by one task at a time (a binary COPY
/// needs its connection to itself), reconnected when broken.
struct Pool {
    config: tokio_postgres::Config,
    tls: PgTls,
    slots: Vec<AsyncMutex<Option<Conn>>>,
    next: AtomicUsize,
}

/// A connection checked out of the [`Pool`].
struct Pooled<'a>(AsyncMutexGuard<'a, Option<Conn>>);

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.0
            .as_ref()
            .expect("Pool::get fills the slot before handing it out")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.0
            .as_mut()
            .expect("Pool::get fills the slot before handing it out")
    }
}

impl Pool {
    async fn connect(&self) -> StorageResult<Conn> {
        let (client, connection) = self
            .config
            .connect(self.tls.connector.clone())
            .await
            .map_err(|e| self.tls.map_connect_err(e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        Ok(Conn {
            client,
            staged: false,
        })
    }

    async fn get(&self) -> StorageResult<Pooled<'_>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut guard = None;
        for i in 0..n {
            if let Ok(g) = self.slots[(start + i) % n].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut g = match guard {
            Some(g) => g,
            None => self.slots[start].lock().await,
        };
        if g.as_ref().is_none_or(|c| c.client.is_closed()) {
            *g = Some(self.connect().await?);
        }
        Ok(Pooled(g))
    }
}

/// The PostgreSQL [`SpanStore`].
pub struct PostgresStore {
    pool: Pool,
    opts: PostgresOptions,
    /// Day numbers that have a partition (cache of the catalog).
    partitions: Mutex<BTreeSet<i64>>,
    /// Days whose partition could not be created (rows go to the default partition).
    skipped_days: Mutex<BTreeSet<i64>>,
    /// The readiness check's own connection ([`SpanWriter::ping`]).
    probe: AsyncMutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn partition_name(day: i64) -> String {
    let (y, m, d) = common::civil_from_days(day);
    format!("ft_spans_{y:04}{m:02}{d:02}")
}

fn parse_partition_name(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("ft_spans_")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[..4].parse().ok()?;
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..].parse().ok()?;
    Some(common::days_from_civil(y, m, d))
}

fn parse_config(url: &str) -> StorageResult<(tokio_postgres::Config, PgTls)> {
    // tokio_postgres::Config rejects options it does not know (`sslrootcert`)
    // and `sslmode` values beyond disable/prefer/require (`verify-ca`,
    // `verify-full`), so both are taken out of the string here and handled by
    // the sink's own rustls setup; the driver sees the remaining options only.
    let (rest, tls_opts) = split_tls_options(url)?;
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        StorageError::Backend(format!(
            "invalid PostgreSQL URL ({e}); expected postgres://user:password@host:port/database"
        ))
    })?;
    let tls = PgTls::new(tls_opts)?;
    config.ssl_mode(tls.mode.driver_mode());
    Ok((config, tls))
}

/// Checks a PostgreSQL URL without connecting (used at start, so that a
/// malformed URL fails the start instead of being retried forever).
pub(crate) fn check_url(url: &str) -> StorageResult<()> {
    parse_config(url).map(|_| ())
}

impl PostgresStore {
    /// Connects with default options, applies migrations and creates the
    /// upcoming day partitions. `url` is a libpq-style URL or key=value string
    /// (`postgres://user:pass@host:5432/db`).
    pub async fn connect(url: &str) -> StorageResult<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Like [`connect`](Self::connect) with explicit options.
    pub async fn connect_with(url: &str, opts: PostgresOptions) -> StorageResult<Self> {
        let (config, tls) = parse_config(url)?;
        let pool = Pool {
            config,
            tls,
            slots: (0..opts.pool_size.max(1))
                .map(|_| AsyncMutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        };
        let store = PostgresStore {
            pool,
            opts,
            partitions: Mutex::new(BTreeSet::new()),
            skipped_days: Mutex::new(BTreeSet::new()),
            probe: AsyncMutex::new(None),
        };
        store.migrate().await?;
        store.load_partitions().await?;
        let today = (crate::model::now_ns() / DAY_NS) as i64;
        let ahead: Vec<i64> = (today..=today + store.opts.partition_future_days as i64).collect();
        store.ensure_partitions(&ahead).await?;
        Ok(store)
    }

    /// Applies pending [`MIGRATIONS`]; returns the versions applied now.
    async fn migrate(&self) -> StorageResult<Vec<i32>> {
        let mut conn = self.pool.get().await?;
        let tx = conn.client.transaction().await.map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await
            .map_err(map_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS ft_schema_migrations (
                 version     integer PRIMARY KEY,
                 description text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(map_err)?;
        let applied: BTreeSet<i32> = tx
            .query("SELECT version FROM ft_schema_migrations", &[])
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut done = Vec::new();
        for (version, description, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(map_err)?;
            tx.execute(
                "INSERT INTO ft_schema_migrations (version, description) VALUES ($1, $2)",
                &[version, description],
            )
            .await
            .map_err(map_err)?;
            done.push(*version);
        }
        tx.commit().await.map_err(map_err)?;
        if !done.is_empty() {
            tracing::info!(versions = ?done, "postgres schema migrations applied");
        }
        Ok(done)
    }

    /// Day partitions that exist, from the catalog.
    async fn list_partitions(&self) -> StorageResult<BTreeMap<i64, String>> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'ft_spans'::regclass",
                &[],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                parse_partition_name(&name).map(|d| (d, name))
            })
            .collect())
    }

    async fn load_partitions(&self) -> StorageResult<()> {
        let days = self.list_partitions().await?;
        *self.partitions.lock() = days.into_keys().collect();
        Ok(())
    }

    /// Creates the missing day partitions among `days` (those inside the window).
    async fn ensure_partitions(&self, days: &[i64]) -> StorageResult<()> {
        let today = (crate::model::now_ns() / DAY_NS) as i64;
        let lo = today - self.opts.partition_past_days as i64;
        let hi = today + self.opts.partition_future_days as i64;
        let missing: Vec<i64> = {
            let known = self.partitions.lock();
            let skipped = self.skipped_days.lock();
            days.iter()
                .copied()
                .filter(|d| (lo..=hi).contains(d) && !known.contains(d) && !skipped.contains(d))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        for day in missing {
            let tx = conn.client.transaction().await.map_err(map_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
                .await
                .map_err(map_err)?;
            let (from, to) = (day * DAY_NS as i64, (day + 1) * DAY_NS as i64);
            // DDL cannot take bound parameters; the bounds are integers computed here.
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF ft_spans FOR VALUES FROM ({from}) TO ({to})",
                partition_name(day)
            );
            match tx.batch_execute(&ddl).await {
                Ok(()) => {
                    tx.commit().await.map_err(map_err)?;
                    self.partitions.lock().insert(day);
                }
                Err(e) if e.as_db_error().is_some() => {
                    // Typically: the default partition already holds rows of that
                    // day. They stay there (still found and deleted by retention).
                    tracing::warn!(partition = %partition_name(day), error = %map_err(e),
                        "cannot create day partition; its spans go to ft_spans_default");
                    self.skipped_days.lock().insert(day);
                }
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }

    async fn copy_spans(&self, spans: &[Span]) -> StorageResult<u64> {
        let mut conn = self.pool.get().await?;
        if !conn.staged {
            // A session-local staging table: COPY cannot skip duplicates, the
            // INSERT from it can.
            conn.client
                .batch_execute(
                    "CREATE TEMP TABLE IF NOT EXISTS ft_stage (LIKE ft_spans) ON COMMIT DELETE ROWS",
                )
                .await
                .map_err(map_err)?;
            conn.staged = true;
        }
        let tx = conn.client.transaction().await.map_err(map_err)?;
        let sink = tx
            .copy_in(&format!(
                "COPY ft_stage ({SPAN_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(map_err)?;
        let writer = BinaryCopyInWriter::new(sink, &SPAN_TYPES);
        tokio::pin!(writer);
        for s in spans {
            let (trace_id, span_id) = (&s.trace_id[..], &s.span_id[..]);
            let parent = s.parent_span_id.as_ref().map(|p| &p[..]);
            let (service, name) = (esc(&s.service_name), esc(&s.name));
            let (service, name): (&str, &str) = (&service, &name);
            let kind = s.kind as i16;
            let (start, end, dur) = (
                to_i64(s.start_ns),
                to_i64(s.end_ns),
                to_i64(s.duration_ns()),
            );
            let status = s.status_code as i16;
            let attrs = attrs_json(s);
            let payload = encode_span(s);
            writer
                .as_mut()
                .write(&[
                    &trace_id, &span_id, &parent, &service, &name, &kind, &start, &end, &dur,
                    &status, &attrs, &payload,
                ])
                .await
                .map_err(map_err)?;
        }
        writer.as_mut().finish().await.map_err(map_err)?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO ft_spans ({SPAN_COLUMNS}) \
                     SELECT DISTINCT ON (trace_id, span_id) {SPAN_COLUMNS} FROM ft_stage s \
                     WHERE NOT EXISTS (SELECT 1 FROM ft_spans t \
                                       WHERE t.trace_id = s.trace_id AND t.span_id = s.span_id) \
                     ORDER BY trace_id, span_id, start_ns \
                     ON CONFLICT DO NOTHING"
                ),
                &[],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(inserted)
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The conditions on a matching span besides its start time, with their
/// values appended to `params` (numbered after what `params` already holds).
/// `None` when no stored span can match (an unsearchable attribute value).
fn span_conditions(q: &TraceQuery, params: &mut Params) -> StorageResult<Option<Vec<String>>> {
    let mut conds = Vec::new();
    if let Some(svc) = &q.service {
        params.push(Box::new(esc(svc).into_owned()));
        conds.push(format!("service = ${}", params.len()));
    }
    if let Some(op) = &q.operation {
        params.push(Box::new(esc(op).into_owned()));
        conds.push(format!("name = ${}", params.len()));
    }
    if let Some(min) = q.min_duration_ns {
        params.push(Box::new(to_i64(min)));
        conds.push(format!("duration_ns >= ${}", params.len()));
    }
    if let Some(max) = q.max_duration_ns {
        params.push(Box::new(to_i64(max)));
        conds.push(format!("duration_ns <= ${}", params.len()));
    }
    if q.errors_only {
        conds.push(format!("status_code = {}", StatusCode::Error as i16));
    }
    for f in &q.attributes {
        common::check_filter(&f.key, &f.value)?;
        // A typed condition has one candidate value; a Jaeger text
        // condition one per type whose text equals it. Any of them matches.
        let mut alts = Vec::new();
        for value in f.candidates() {
            // An infinite double cannot be stored searchably, so it matches nothing.
            if let Some(el) = attr_json(&f.key, &value) {
                params.push(Box::new(serde_json::Value::Array(vec![el])));
                alts.push(format!("attributes @> ${}", params.len()));
            }
        }
        if alts.is_empty() {
            return Ok(None);
        }
        conds.push(format!("({})", alts.join(" OR ")));
    }
    Ok(Some(conds))
}

/// Starts of the newest `n` matching spans in `[range start, top)`, newest
/// first: a backward scan of the (service, start) indexes of the partitions
/// the bounds select, stopping after `n`.
async fn search_probe(
    client: &Transaction<'_>,
    q: &TraceQuery,
    top: u64,
    n: usize,
) -> StorageResult<Vec<u64>> {
    let mut params: Params = vec![Box::new(to_i64(q.range.start_ns)), Box::new(to_i64(top))];
    let mut conds = vec!["start_ns >= $1".to_string(), "start_ns < $2".to_string()];
    match span_conditions(q, &mut params)? {
        Some(c) => conds.extend(c),
        None => return Ok(Vec::new()),
    }
    params.push(Box::new(n as i64));
    let sql = format!(
        "SELECT start_ns FROM ft_spans WHERE {} ORDER BY start_ns DESC LIMIT ${}",
        conds.join(" AND "),
        params.len()
    );
    let rows = client.query(&sql, &refs(&params)).await.map_err(map_err)?;
    Ok(rows.iter().map(|r| from_i64(r.get(0))).collect())
}

/// One search window (see `sink_common::SearchWindows`): traces with a
/// matching span starting in `[max(from, range start), range end)` whose
/// trace start is `>= from` and sorts after the cursor, newest first, at most
/// `n`. The matching spans' trace ids come from the covering (service, start)
/// indexes (index-only). Each candidate's start is one `MIN` over its entries
/// in the primary key index (a lateral subquery: its cost follows the
/// window's traces, where a join let the planner hash the whole primary key
/// once a window held a few thousand traces).
async fn search_window(
    client: &Transaction<'_>,
    q: &TraceQuery,
    from: Option<u64>,
    cursor: Option<(u64, TraceId)>,
    n: usize,
) -> StorageResult<Vec<(TraceId, u64)>> {
    let lo = from.map_or(q.range.start_ns, |a| a.max(q.range.start_ns));
    let mut params: Params = vec![Box::new(to_i64(lo)), Box::new(to_i64(q.range.end_ns))];
    let mut conds = vec!["start_ns >= $1".to_string(), "start_ns < $2".to_string()];
    match span_conditions(q, &mut params)? {
        Some(c) => conds.extend(c),
        None => return Ok(Vec::new()),
    }
    let mut sql = format!(
        "WITH m AS (SELECT DISTINCT trace_id FROM ft_spans WHERE {}), \
         t AS (SELECT m.trace_id, x.tstart FROM m CROSS JOIN LATERAL \
               (SELECT MIN(s.start_ns) AS tstart FROM ft_spans s \
                WHERE s.trace_id = m.trace_id) x) \
         SELECT trace_id, tstart FROM t WHERE true",
        conds.join(" AND ")
    );
    if let Some(a) = from {
        params.push(Box::new(to_i64(a)));
        sql.push_str(&format!(" AND tstart >= ${}", params.len()));
    }
    if let Some((cs, cid)) = cursor {
        params.push(Box::new(to_i64(cs)));
        params.push(Box::new(cid.to_vec()));
        sql.push_str(&format!(
            " AND (tstart, trace_id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    params.push(Box::new(n as i64));
    sql.push_str(&format!(
        " ORDER BY tstart DESC, trace_id DESC LIMIT ${}",
        params.len()
    ));
    let rows = client.query(&sql, &refs(&params)).await.map_err(map_err)?;
    rows.iter()
        .map(|r| Ok((trace_id_from(r.get::<_, &[u8]>(0))?, from_i64(r.get(1)))))
        .collect()
}

fn trace_id_from(v: &[u8]) -> StorageResult<TraceId> {
    TraceId::try_from(v).map_err(|_| {
        StorageError::Backend(format!(
            "stored trace id has {} bytes, expected 16",
            v.len()
        ))
    })
}

#[async_trait]
impl SpanWriter for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }
    async fn ping(&self) -> StorageResult<()> {
        // A connection of its own: the pool's may all be busy with long
        // writes or queries, which says nothing about the server answering.
        let mut probe = self.probe.lock().await;
        if probe.as_ref().is_none_or(|c| c.is_closed()) {
            *probe = Some(self.pool.connect().await?.client);
        }
        let Some(client) = probe.as_ref() else {
            return Ok(());
        };
        if let Err(e) = client.simple_query("SELECT 1").await {
            *probe = None;
            return Err(map_err(e));
        }
        Ok(())
    }
    async fn write_spans(&self, spans: &[Span]) -> StorageResult<()> {
        if spans.is_empty() {
            return Ok(());
        }
        let today = (crate::model::now_ns() / DAY_NS) as i64;
        let mut days: Vec<i64> = spans.iter().map(|s| (s.start_ns / DAY_NS) as i64).collect();
        days.extend(today..=today + self.opts.partition_future_days as i64);
        self.ensure_partitions(&days).await?;
        self.copy_spans(spans).await?;
        Ok(())
    }
    async fn write_rollups(&self, rollups: &RollupBatch) -> StorageResult<()> {
        if rollups.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        let tx = conn.client.transaction().await.map_err(map_err)?;
        if !rollups.operations.is_empty() {
            let sink = tx
                .copy_in(
                    "COPY ft_op_rollups (minute_ns, service, operation, kind, count, errors, sketch) \
                     FROM STDIN (FORMAT binary)",
                )
                .await
                .map_err(map_err)?;
            let w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT2,
                    Type::INT8,
                    Type::INT8,
                    Type::BYTEA,
                ],
            );
            tokio::pin!(w);
            for r in &rollups.operations {
                let sketch = rollup_math::encode_sketch(&r.sketch)?.into_bytes();
                let (svc, op) = (esc(&r.service), esc(&r.operation));
                let (svc, op): (&str, &str) = (&svc, &op);
                w.as_mut()
                    .write(&[
                        &to_i64(r.minute_ns),
                        &svc,
                        &op,
                        &(r.kind as i16),
                        &to_i64(r.count),
                        &to_i64(r.errors),
                        &sketch,
                    ])
                    .await
                    .map_err(map_err)?;
            }
            w.as_mut().finish().await.map_err(map_err)?;
        }
        if !rollups.edges.is_empty() {
            let sink = tx
                .copy_in(
                    "COPY ft_edge_rollups (minute_ns, caller, callee, calls, errors, sketch) \
                     FROM STDIN (FORMAT binary)",
                )
                .await
                .map_err(map_err)?;
            let w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                    Type::BYTEA,
                ],
            );
            tokio::pin!(w);
            for r in &rollups.edges {
                let sketch = rollup_math::encode_sketch(&r.sketch)?.into_bytes();
                let (caller, callee) = (esc(&r.caller), esc(&r.callee));
                let (caller, callee): (&str, &str) = (&caller, &callee);
                w.as_mut()
                    .write(&[
                        &to_i64(r.minute_ns),
                        &caller,
                        &callee,
                        &to_i64(r.calls),
                        &to_i64(r.errors),
                        &sketch,
                    ])
                    .await
                    .map_err(map_err)?;
            }
            w.as_mut().finish().await.map_err(map_err)?;
        }
        // Same transaction as the rows: both are stored or neither.
        if !rollups.origins.is_empty() {
            let ins = tx
                .prepare(
                    "INSERT INTO ft_rollup_origins (instance, segment, minute_ns, ranges)                      VALUES ($1, $2, $3, $4)",
                )
                .await
                .map_err(map_err)?;
            let instance = rollups.wal_instance as i64;
            for o in &rollups.origins {
                tx.execute(
                    &ins,
                    &[
                        &instance,
                        &to_i64(o.segment),
                        &to_i64(o.minute_ns),
                        &o.encode_ranges(),
                    ],
                )
                .await
                .map_err(map_err)?;
            }
        }
        tx.commit().await.map_err(map_err)
    }
    async fn rollup_origins(
        &self,
        instance: u64,
        segments: &[u64],
    ) -> StorageResult<Vec<RollupOrigin>> {
        let segs: Vec<i64> = segments.iter().map(|s| to_i64(*s)).collect();
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT segment, minute_ns, ranges FROM ft_rollup_origins \
                 WHERE instance = $1 AND segment = ANY($2)",
                &[&(instance as i64), &segs],
            )
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let segment = from_i64(r.get(0));
                let ranges: &[u8] = r.get(2);
                Ok(RollupOrigin {
                    segment,
                    minute_ns: from_i64(r.get(1)),
                    parts: RollupOrigin::decode_ranges(ranges).map_err(|e| {
                        StorageError::Backend(format!(
                            "stored rollup origin of WAL segment {segment} is corrupt ({e}); delete its rows from ft_rollup_origins"
                        ))
                    })?,
                })
            })
            .collect()
    }
    async fn prune_rollup_origins(&self, instance: u64, below_segment: u64) -> StorageResult<u64> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "DELETE FROM ft_rollup_origins WHERE instance = $1 AND segment < $2",
                &[&(instance as i64), &to_i64(below_segment)],
            )
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl TraceReader for PostgresStore {
    async fn get_trace(
        &self,
        trace_id: TraceId,
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<Span>> {
        let (lo, hi) = match range {
            Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
            None => (i64::MIN, i64::MAX),
        };
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT payload FROM ft_spans WHERE trace_id = $1 AND start_ns >= $2 AND start_ns < $3",
                &[&&trace_id[..], &lo, &hi],
            )
            .await
            .map_err(map_err)?;
        let mut spans = rows
            .iter()
            .map(|r| decode_span(r.get::<_, &[u8]>(0)))
            .collect::<StorageResult<Vec<Span>>>()?;
        common::order_trace(&mut spans);
        Ok(spans)
    }
    /// One statement: `trace_id = ANY($1)` probes the trace-id index of each
    /// partition, and the time bounds prune the day partitions outside `range`.
    async fn get_traces(
        &self,
        trace_ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<Vec<TraceSpans>> {
        let ids = common::distinct_trace_ids(trace_ids)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (lo, hi) = match range {
            Some(r) => (to_i64(r.start_ns), to_i64(r.end_ns)),
            None => (i64::MIN, i64::MAX),
        };
        let id_list: Vec<&[u8]> = ids.iter().map(|id| &id[..]).collect();
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT trace_id, payload FROM ft_spans WHERE trace_id = ANY($1) AND start_ns >= $2 AND start_ns < $3",
                &[&id_list, &lo, &hi],
            )
            .await
            .map_err(map_err)?;
        let spans = rows
            .iter()
            .map(|r| {
                Ok((
                    trace_id_from(r.get::<_, &[u8]>(0))?,
                    decode_span(r.get::<_, &[u8]>(1))?,
                ))
            })
            .collect::<StorageResult<Vec<(TraceId, Span)>>>()?;
        Ok(common::group_traces(&ids, spans))
    }
    async fn search(&self, q: &TraceQuery) -> StorageResult<SearchPage> {
        if q.limit == 0 || q.range.end_ns <= q.range.start_ns {
            return Ok(SearchPage::default());
        }
        let limit = q.limit.min(self.opts.max_search_limit);
        let cursor = q.cursor.as_deref().map(common::decode_cursor).transpose()?;
        // Validates the filters once; `None`: no stored span can match.
        if span_conditions(q, &mut Vec::new())?.is_none() {
            return Ok(SearchPage::default());
        }
        let mut conn = self.pool.get().await?;
        // The probe and the windows are short index walks: a parallel plan
        // costs more to start its workers (15-40 ms measured) than the walk
        // itself (1-3 ms), and on recent, not yet vacuumed rows the planner's
        // cost estimate of the per-trace MIN passes the JIT thresholds, whose
        // compilation took 100-140 ms per window that ran in 2-11 ms. So this
        // read-only transaction runs serially and without JIT.
        let tx = conn.client.transaction().await.map_err(map_err)?;
        tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off")
            .await
            .map_err(map_err)?;
        let top = SearchWindows::probe_top(q.range, cursor);
        let starts = search_probe(&tx, q, top, SearchWindows::probe_len(limit)).await?;
        // Windows grow below the newest matching start rather than below the
        // range end: when the matching spans stopped minutes before the end
        // (a burst, a service that went quiet), growing from the end made the
        // first window past the probe cover them all. No matching span lies
        // in `[newest + 1, top)`, so the probe's answer is the same and every
        // window stays exact; the windows still query up to the range end.
        let anchored = TimeRange {
            start_ns: q.range.start_ns,
            end_ns: starts.first().map_or(top, |s| s.saturating_add(1)),
        };
        let client = &tx;
        let (ids, more) = common::search_windows(
            anchored,
            cursor,
            limit,
            move |_, _| std::future::ready(Ok(starts)),
            move |from, n| search_window(client, q, from, cursor, n),
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        if ids.is_empty() {
            return Ok(SearchPage::default());
        }
        let id_list: Vec<Vec<u8>> = ids.iter().map(|(id, _)| id.to_vec()).collect();
        let rows = conn
            .client
            .query(
                "SELECT trace_id, span_id, parent_span_id IS NULL, service, name, start_ns, end_ns, \
                 status_code FROM ft_spans WHERE trace_id = ANY($1)",
                &[&id_list],
            )
            .await
            .map_err(map_err)?;
        let mut summary_rows = Vec::with_capacity(rows.len());
        for r in &rows {
            let span_id: &[u8] = r.get(1);
            summary_rows.push(SummaryRow {
                trace_id: trace_id_from(r.get::<_, &[u8]>(0))?,
                span_id: span_id.try_into().map_err(|_| {
                    StorageError::Backend(format!(
                        "stored span id has {} bytes, expected 8",
                        span_id.len()
                    ))
                })?,
                is_root: r.get(2),
                service: unesc(r.get(3)),
                name: unesc(r.get(4)),
                start_ns: from_i64(r.get(5)),
                end_ns: from_i64(r.get(6)),
                status_code: r.get::<_, i16>(7) as u8,
            });
        }
        let order: Vec<TraceId> = ids.iter().map(|(id, _)| *id).collect();
        let traces = common::summarize(&order, summary_rows);
        Ok(common::search_page(&ids, more, traces))
    }
    async fn services(&self, range: TimeRange) -> StorageResult<Vec<String>> {
        let conn = self.pool.get().await?;
        // Loose index scan over (service, start_ns): one probe per service.
        let rows = conn
            .client
            .query(
                "WITH RECURSIVE svc(s) AS ( \
                   SELECT MIN(service) FROM ft_spans WHERE start_ns >= $1 AND start_ns < $2 \
                   UNION ALL \
                   SELECT (SELECT MIN(service) FROM ft_spans \
                           WHERE service > svc.s AND start_ns >= $1 AND start_ns < $2) \
                   FROM svc WHERE svc.s IS NOT NULL) \
                 SELECT s FROM svc WHERE s IS NOT NULL",
                &[&to_i64(range.start_ns), &to_i64(range.end_ns)],
            )
            .await
            .map_err(map_err)?;
        let mut out: Vec<String> = rows.iter().map(|r| unesc(r.get(0))).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    async fn operations(&self, service: &str, range: TimeRange) -> StorageResult<Vec<Operation>> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT DISTINCT name, kind FROM ft_spans WHERE service = $1 AND start_ns >= $2 AND start_ns < $3",
                &[&esc(service).as_ref(), &to_i64(range.start_ns), &to_i64(range.end_ns)],
            )
            .await
            .map_err(map_err)?;
        let mut out: Vec<Operation> = rows
            .iter()
            .map(|r| Operation {
                name: unesc(r.get(0)),
                kind: SpanKind::from_i32(r.get::<_, i16>(1) as i32),
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl AnalyticsReader for PostgresStore {
    async fn dependencies(&self, range: TimeRange) -> StorageResult<Vec<DependencyEdge>> {
        if range.end_ns <= range.start_ns {
            return Ok(Vec::new());
        }
        let (lo, hi) = rollup_math::minute_bounds(range);
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT caller, callee, calls, errors, sketch FROM ft_edge_rollups \
                 WHERE minute_ns >= $1 AND minute_ns < $2",
                &[&to_i64(lo), &to_i64(hi)],
            )
            .await
            .map_err(map_err)?;
        let mut merged = Vec::with_capacity(rows.len());
        for r in &rows {
            merged.push((
                unesc(r.get(0)),
                unesc(r.get(1)),
                from_i64(r.get(2)),
                from_i64(r.get(3)),
                rollup_math::decode_sketch(r.get::<_, &[u8]>(4))?,
            ));
        }
        Ok(rollup_math::merge_edges(merged))
    }
    async fn latency(&self, q: &LatencyQuery) -> StorageResult<Vec<LatencyPoint>> {
        if q.range.end_ns <= q.range.start_ns {
            return Ok(Vec::new());
        }
        let step = rollup_math::latency_step(q, self.opts.max_latency_points)?;
        let (lo, hi) = rollup_math::minute_bounds(q.range);
        let svc = esc(&q.service).into_owned();
        let mut params: Params = vec![Box::new(svc), Box::new(to_i64(lo)), Box::new(to_i64(hi))];
        let mut sql = String::from(
            "SELECT minute_ns, count, errors, sketch FROM ft_op_rollups \
             WHERE service = $1 AND minute_ns >= $2 AND minute_ns < $3",
        );
        if let Some(op) = &q.operation {
            params.push(Box::new(esc(op).into_owned()));
            sql.push_str(" AND operation = $4");
        }
        if !q.kinds.is_empty() {
            let mut marks = Vec::with_capacity(q.kinds.len());
            for k in &q.kinds {
                params.push(Box::new(*k as i16));
                marks.push(format!("${}", params.len()));
            }
            sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
        }
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(&sql, &refs(&params))
            .await
            .map_err(map_err)?;
        let mut data = Vec::with_capacity(rows.len());
        for r in &rows {
            data.push((
                from_i64(r.get(0)),
                from_i64(r.get(1)),
                from_i64(r.get(2)),
                rollup_math::decode_sketch(r.get::<_, &[u8]>(3))?,
            ));
        }
        Ok(rollup_math::latency_points(q, step, data))
    }
    async fn exact_percentiles(
        &self,
        service: &str,
        operation: Option<&str>,
        kinds: &[SpanKind],
        range: TimeRange,
        qs: &[f64],
    ) -> StorageResult<Vec<u64>> {
        rollup_math::check_quantiles(qs)?;
        if qs.is_empty() {
            return Ok(Vec::new());
        }
        // percentile_disc picks the ceil(q*n)-th value (at least the first):
        // exactly the nearest rank.
        let mut params: Params = vec![
            Box::new(esc(service).into_owned()),
            Box::new(to_i64(range.start_ns)),
            Box::new(to_i64(range.end_ns)),
            Box::new(qs.to_vec()),
        ];
        let mut sql = String::from(
            "SELECT COUNT(*), percentile_disc($4::float8[]) WITHIN GROUP (ORDER BY duration_ns) \
             FROM ft_spans WHERE service = $1 AND start_ns >= $2 AND start_ns < $3",
        );
        if let Some(op) = operation {
            params.push(Box::new(esc(op).into_owned()));
            sql.push_str(" AND name = $5");
        }
        if !kinds.is_empty() {
            let mut marks = Vec::with_capacity(kinds.len());
            for k in kinds {
                params.push(Box::new(*k as i16));
                marks.push(format!("${}", params.len()));
            }
            sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
        }
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_one(&sql, &refs(&params))
            .await
            .map_err(map_err)?;
        let n: i64 = row.get(0);
        if n == 0 {
            return Ok(Vec::new());
        }
        let values: Vec<i64> = row.get(1);
        Ok(values.into_iter().map(from_i64).collect())
    }
}

/// Rows per `INSERT` of sampling counts (the arrays are sent as parameters).
const SAMPLING_ROWS_PER_INSERT: usize = 10_000;

#[async_trait]
impl SamplingCounts for PostgresStore {
    async fn write_sampling_counts(&self, c: &SamplingPeriodCounts) -> StorageResult<()> {
        let conn = self.pool.get().await?;
        for chunk in c.counts.chunks(SAMPLING_ROWS_PER_INSERT) {
            let services: Vec<String> = chunk.iter().map(|r| esc(&r.0).into_owned()).collect();
            let ops: Vec<String> = chunk.iter().map(|r| esc(&r.1).into_owned()).collect();
            let counts: Vec<i64> = chunk.iter().map(|r| to_i64(r.2)).collect();
            // A retried write (its first attempt committed) adds nothing.
            conn.client
                .execute(
                    "INSERT INTO ft_sampling_counts \
                     (period_start_ns, period_secs, collector, service, operation, count_milli) \
                     SELECT $1, $2, $3, s, o, n FROM unnest($4::text[], $5::text[], $6::bigint[]) \
                     AS t(s, o, n) ON CONFLICT DO NOTHING",
                    &[
                        &to_i64(c.period_start_ns),
                        &(c.period_secs as i32),
                        &esc(&c.collector).as_ref(),
                        &services,
                        &ops,
                        &counts,
                    ],
                )
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }
    async fn read_sampling_counts(
        &self,
        period_secs: u32,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<Vec<SamplingCountRow>> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT period_start_ns, service, operation, sum(count_milli)::bigint \
                 FROM ft_sampling_counts \
                 WHERE period_secs = $1 AND period_start_ns >= $2 AND period_start_ns < $3 \
                 GROUP BY period_start_ns, service, operation \
                 ORDER BY period_start_ns, service, operation",
                &[&(period_secs as i32), &to_i64(from_ns), &to_i64(to_ns)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|r| SamplingCountRow {
                period_start_ns: from_i64(r.get(0)),
                service: unesc(r.get(1)),
                operation: unesc(r.get(2)),
                count_milli: from_i64(r.get(3)),
            })
            .collect())
    }
    async fn prune_sampling_counts(&self, before_ns: u64) -> StorageResult<u64> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "DELETE FROM ft_sampling_counts WHERE period_start_ns < $1",
                &[&to_i64(before_ns)],
            )
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl Retention for PostgresStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        let cutoff = to_i64(cutoff_ns);
        let mut report = RetentionReport::default();
        let parts = self.list_partitions().await?;
        let mut conn = self.pool.get().await?;
        for (day, name) in parts {
            if (day + 1) * (DAY_NS as i64) > cutoff {
                continue;
            }
            let tx = conn.client.transaction().await.map_err(map_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
                .await
                .map_err(map_err)?;
            let n: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {name}"), &[])
                .await
                .map_err(map_err)?
                .get(0);
            // The whole day is older than the cutoff: drop it instead of deleting rows.
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            self.partitions.lock().remove(&day);
            report.spans_deleted += from_i64(n);
            tracing::info!(partition = %name, spans = n, "retention dropped day partition");
        }
        // What remains older than the cutoff: part of the cutoff's own day, and
        // the default partition. Partition pruning limits this to those.
        report.spans_deleted += conn
            .client
            .execute("DELETE FROM ft_spans WHERE start_ns < $1", &[&cutoff])
            .await
            .map_err(map_err)?;
        // A minute bucket goes only when all of it is older than the cutoff.
        if cutoff_ns >= MINUTE_NS {
            let last_minute = to_i64(cutoff_ns - MINUTE_NS);
            report.rollups_deleted += conn
                .client
                .execute(
                    "DELETE FROM ft_op_rollups WHERE minute_ns <= $1",
                    &[&last_minute],
                )
                .await
                .map_err(map_err)?;
            report.rollups_deleted += conn
                .client
                .execute(
                    "DELETE FROM ft_edge_rollups WHERE minute_ns <= $1",
                    &[&last_minute],
                )
                .await
                .map_err(map_err)?;
            // Backstop for WALs that are gone (never pruned by segment);
            // bookkeeping, not counted as rollup rows.
            conn.client
                .execute(
                    "DELETE FROM ft_rollup_origins WHERE minute_ns <= $1",
                    &[&last_minute],
                )
                .await
                .map_err(map_err)?;
        }
        Ok(report)
    }

    /// The tables' total size on the server (`pg_total_relation_size`: data,
    /// indexes, TOAST) of every span partition and the rollup tables.
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_one(
                "SELECT (SELECT COALESCE(SUM(pg_total_relation_size(i.inhrelid)), 0) \
                   FROM pg_inherits i WHERE i.inhparent = 'ft_spans'::regclass)::int8 \
                 + pg_total_relation_size('ft_op_rollups') \
                 + pg_total_relation_size('ft_edge_rollups') \
                 + pg_total_relation_size('ft_rollup_origins'), \
                 (SELECT MIN(start_ns) FROM ft_spans)",
                &[],
            )
            .await
            .map_err(map_err)?;
        let bytes = from_i64(row.get::<_, i64>(0));
        Ok(Some(DiskUsage {
            dir: None,
            file_bytes: bytes,
            live_bytes: bytes,
            oldest_ns: row.get::<_, Option<i64>>(1).map(from_i64),
        }))
    }

    /// Drops whole day partitions, oldest first, until their sizes add up
    /// to `bytes` (at least one), through [`apply_retention`](Self::apply_retention)
    /// with the end of the last of those days as the cutoff (which also
    /// deletes what older spans the default partition holds). A dropped
    /// partition's space goes back to the file system at once.
    async fn evict_oldest(&self, bytes: u64, _give_back: bool) -> StorageResult<EvictionReport> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ft_spans'::regclass",
                &[],
            )
            .await
            .map_err(map_err)?;
        drop(conn);
        let mut days: Vec<(i64, u64)> = rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                Some((parse_partition_name(&name)?, from_i64(r.get::<_, i64>(1))))
            })
            .collect();
        days.sort_unstable();
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
        let cutoff = from_i64(day.saturating_add(1)).saturating_mul(DAY_NS);
        let report = self.apply_retention(cutoff).await?;
        Ok(EvictionReport {
            spans_deleted: report.spans_deleted,
            rollups_deleted: report.rollups_deleted,
            cutoff_ns: cutoff,
        })
    }
}

/// The URL's `sslmode` and `sslrootcert`, taken out before the driver parses it.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsOptions {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn tls_option(opts: &mut TlsOptions, key: &str, value: String) -> bool {
    match key {
        "sslmode" => opts.sslmode = Some(value),
        "sslrootcert" => opts.sslrootcert = Some(value),
        _ => return false,
    }
    true
}

/// Splits `sslmode` and `sslrootcert` off a URL (`postgres://...?k=v&...`) or
/// key=value string (`host=... sslmode=verify-full`); the rest goes to the
/// driver. A string this cannot take apart is handed on whole, for the
/// driver's parser to report.
fn split_tls_options(url: &str) -> StorageResult<(String, TlsOptions)> {
    let mut opts = TlsOptions::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), opts));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| {
                        StorageError::Backend(format!(
                            "invalid PostgreSQL URL: option {k:?} is not UTF-8 once percent-decoded"
                        ))
                    })
            };
            if !tls_option(&mut opts, &decode(k)?, decode(v)?) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, opts));
    }
    // key=value form: `key = value` pairs separated by whitespace; a value is
    // either single-quoted or runs to the next whitespace, `\` escapes a char.
    let b = url.as_bytes();
    let ws = |c: u8| c.is_ascii_whitespace();
    let mut kept: Vec<&str> = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !ws(b[i]) && b[i] != b'=' {
            i += 1;
        }
        let key = &url[start..i];
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        if i == b.len() || b[i] != b'=' || key.is_empty() {
            return Ok((url.to_string(), TlsOptions::default()));
        }
        i += 1;
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        let mut value = Vec::new();
        let quoted = i < b.len() && b[i] == b'\'';
        if quoted {
            i += 1;
        }
        loop {
            if i == b.len() {
                if quoted {
                    return Ok((url.to_string(), TlsOptions::default()));
                }
                break;
            }
            match b[i] {
                b'\\' if i + 1 < b.len() => {
                    value.push(b[i + 1]);
                    i += 2;
                }
                b'\'' if quoted => {
                    i += 1;
                    break;
                }
                c if !quoted && ws(c) => break,
                c => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        // Only ASCII bytes were dropped (quotes, escapes), so this stays UTF-8.
        let value = String::from_utf8_lossy(&value).into_owned();
        if !tls_option(&mut opts, key, value) {
            kept.push(&url[start..i]);
        }
    }
    Ok((kept.join(" "), opts))
}

/// libpq's `sslmode` values this sink supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(s: Option<&str>) -> StorageResult<Self> {
        Ok(match s {
            Some("disable") => TlsMode::Disable,
            None | Some("prefer") => TlsMode::Prefer,
            Some("require") => TlsMode::Require,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            Some("allow") => {
                return Err(StorageError::Backend(
                    "sslmode=allow is not supported (it tries plaintext first); \
                     use sslmode=prefer, require or verify-full"
                        .into(),
                ))
            }
            Some(other) => {
                return Err(StorageError::Backend(format!(
                    "invalid sslmode={other:?} in the PostgreSQL URL; expected disable, \
                     prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// What the driver is told: it only knows whether to ask for TLS; the
    /// verification is in the rustls configuration.
    fn driver_mode(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS side of the connection settings.
struct PgTls {
    mode: TlsMode,
    /// `sslrootcert` is in use (instead of the built-in roots).
    custom_roots: bool,
    connector: MakeRustlsConnect,
}

impl PgTls {
    fn new(opts: TlsOptions) -> StorageResult<Self> {
        let mode = TlsMode::parse(opts.sslmode.as_deref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StorageError::Backend(format!("postgres TLS setup failed: {e}")))?;
        // As libpq: `disable` ignores sslrootcert; with any other mode the file
        // is read now, so that a wrong path fails the start.
        let roots = match (&opts.sslrootcert, mode) {
            (Some(path), m) if m != TlsMode::Disable => Some(load_roots(Path::new(path))?),
            _ => None,
        };
        let custom_roots = roots.is_some();
        let webpki = || rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = match (mode, roots) {
            (TlsMode::Disable, _) | (TlsMode::Prefer | TlsMode::Require, None) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
                .with_no_client_auth(),
            (TlsMode::VerifyFull, roots) => builder
                .with_root_certificates(roots.unwrap_or_else(webpki))
                .with_no_client_auth(),
            // verify-ca, and (as libpq) prefer/require given a root certificate.
            (_, roots) => {
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots.unwrap_or_else(webpki)),
                    provider,
                )
                .build()
                .map_err(|e| StorageError::Backend(format!("postgres TLS setup failed: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                    .with_no_client_auth()
            }
        };
        Ok(PgTls {
            mode,
            custom_roots,
            connector: MakeRustlsConnect::new(config),
        })
    }

    /// [`map_err`] for connecting, with what to do about TLS problems.
    fn map_connect_err(&self, e: tokio_postgres::Error) -> StorageError {
        let mode = self.mode.name();
        if let Some(tls) = rustls_cause(&e) {
            let hint = match tls {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => "connect by a host name or address the certificate names (sslmode=verify-ca skips this check)",
                rustls::Error::InvalidCertificate(_) if self.custom_roots => {
                    "check that sslrootcert is the CA that signed the server's certificate"
                }
                rustls::Error::InvalidCertificate(_) => {
                    "the server's certificate is not from a public CA: give its CA with \
                     sslrootcert=/path/ca.pem"
                }
                _ => "check the server's ssl settings",
            };
            // Retryable: the fix is on the server or in its certificate, and
            // meanwhile spans wait in the write-ahead log.
            return StorageError::Unavailable(format!(
                "postgres TLS handshake failed (sslmode={mode}): {tls}; {hint}"
            ));
        }
        let rejected =
            e.code() == Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        match map_err(e) {
            StorageError::Backend(msg) if rejected && self.mode == TlsMode::Disable => {
                StorageError::Backend(format!(
                    "{msg}; sslmode=disable connects without TLS: if the server only accepts \
                     TLS (hostssl in pg_hba.conf), use sslmode=verify-full \
                     (with sslrootcert=/path/ca.pem for a private CA)"
                ))
            }
            other => other,
        }
    }
}

/// The rustls error behind a failed connect, if TLS is what failed.
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // tokio-rustls wraps it in an io::Error, whose `source` skips it.
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Reads the CA certificates of `sslrootcert`.
fn load_roots(path: &Path) -> StorageResult<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| {
        StorageError::Backend(format!(
            "cannot read sslrootcert file {}: {e}; give the path of a PEM file holding \
             the CA certificate(s) that signed the PostgreSQL server's certificate",
            path.display()
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            StorageError::Backend(format!(
                "invalid PEM in sslrootcert file {}: {e}",
                path.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            StorageError::Backend(format!(
                "unusable CA certificate in sslrootcert file {}: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(StorageError::Backend(format!(
            "sslrootcert file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(roots)
}

/// `prefer`/`require` without a root certificate, as libpq: any certificate is
/// accepted (handshake signatures are still checked, so the session key is
/// bound to the certificate the server sent).
#[derive(Debug)]
struct NoCertificateCheck(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not
/// checked. webpki checks the chain before the name, so a name mismatch
/// means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, o) = split_tls_options(
            "postgres://u@h:5/db?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h:5/db?connect_timeout=5");
        assert_eq!(o.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(o.sslrootcert.as_deref(), Some("/tmp/ca x.pem"));
        let (rest, o) = split_tls_options("postgresql://u@h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(o.sslmode.as_deref(), Some("require"));
        let (rest, o) = split_tls_options(
            "host=h sslrootcert = '/tmp/a b\\'c.pem' user=u sslmode=verify-ca dbname='x y'",
        )
        .unwrap();
        assert_eq!(rest, "host=h user=u dbname='x y'");
        assert_eq!(o.sslrootcert.as_deref(), Some("/tmp/a b'c.pem"));
        assert_eq!(o.sslmode.as_deref(), Some("verify-ca"));
        // Unparseable: handed on whole, for the driver to report.
        let (rest, o) = split_tls_options("host='unterminated sslmode=x").unwrap();
        assert_eq!(rest, "host='unterminated sslmode=x");
        assert_eq!(o, TlsOptions::default());
        assert!(parse_config("postgres://u@h/db?sslmode=verify-full").is_ok());
        assert!(parse_config("host=h sslmode=verify-ca").is_ok());
    }

    #[test]
    fn bad_tls_settings_say_what_is_wrong() {
        let e = parse_config("postgres://u@h/db?sslmode=sometimes")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("invalid sslmode=\"sometimes\""),
            "{e}"
        );
        let e = parse_config("postgres://u@h/db?sslmode=allow")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("sslmode=allow is not supported"),
            "{e}"
        );
        let e =
            parse_config("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .err()
                .unwrap();
        assert!(
            e.to_string()
                .contains("cannot read sslrootcert file /nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = parse_config(&format!(
            "postgres://u@h/db?sslmode=require&sslrootcert={}",
            empty.display()
        ))
        .err()
        .unwrap();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        // disable ignores sslrootcert, as libpq does.
        assert!(parse_config("postgres://u@h/db?sslmode=disable&sslrootcert=/nonexistent").is_ok());
    }

    #[test]
    fn escape_is_injective_and_reversible() {
        for s in ["plain", "a\0b", "a\\0b", "\\", "\0", "\\\\0", "é\0🚀\\"] {
            let e = esc(s);
            assert!(!e.contains('\0'));
            assert_eq!(unesc(e.into_owned()), s);
        }
        assert_ne!(esc("a\0b"), esc("a\\0b"));
    }

    #[test]
    fn partition_names_round_trip() {
        for day in [0i64, 20_415, 29_000] {
            assert_eq!(parse_partition_name(&partition_name(day)), Some(day));
        }
        assert_eq!(parse_partition_name("ft_spans_default"), None);
        assert_eq!(parse_partition_name("ft_spans_2025112x"), None);
    }
}
