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
//! TLS follows libpq's `sslmode`/`sslrootcert` URL options (see `tls.rs`).
//!
//! Files by concern: `schema.rs` (migrations, day partitions), `write.rs`
//! (COPY write path, rollups, origins), `read.rs` (trace reads and search),
//! `analytics.rs` (dependencies, latency), `sampling.rs` (shared sampling
//! counts), `retention.rs` (retention, eviction, disk usage), `tls.rs`.

mod analytics;
mod read;
mod retention;
mod sampling;
mod schema;
mod tls;
mod write;

pub use schema::MIGRATIONS;
use tls::{split_tls_options, PgTls};

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncMutexGuard};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::sink_common::DAY_NS;
use super::{StorageError, StorageResult};
use crate::model::{AttrValue, Span};

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

/// Whether an error with this SQLSTATE may succeed if the same write is
/// tried again: connection problems (08), insufficient resources such as a
/// full disk (53), the server shutting down (57P), serialization failures
/// and deadlocks (40001, 40P01), and an I/O error on the server (58030),
/// which a full or failing disk on the database host also raises and which
/// passes when the disk does. Anything else is a problem with the data or
/// the schema, which retrying does not cure.
fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "40001" | "40P01" | "58030")
}

/// Maps a driver error: connection and resource problems are retryable.
fn map_err(e: tokio_postgres::Error) -> StorageError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let retryable = retryable_sqlstate(code);
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

/// The PostgreSQL [`SpanStore`](crate::storage::SpanStore).
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

/// Query parameters built up alongside the SQL text that numbers them.
pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

pub(super) fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn server_side_disk_and_connection_errors_are_retried_data_errors_are_not() {
        // disk full, out of memory, connection failure, admin shutdown,
        // serialization failure, deadlock, I/O error
        for code in [
            "53100", "53200", "08006", "57P01", "40001", "40P01", "58030",
        ] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        // invalid text (22P02), unique violation, undefined table, syntax
        for code in ["22P02", "23505", "42P01", "42601", "XX000"] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
    }
}
