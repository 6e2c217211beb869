//! Schema migrations, applied at connect (in cluster mode to every shard's
//! local tables).

use std::collections::BTreeSet;

use clickhouse::Client;

use super::connection::{client_for, map_err, ParsedUrl};
use super::{exec, ClickHouseStore};
use crate::storage::StorageResult;

/// Schema migrations: `{t}` is replaced by the table suffix (`_local` in
/// cluster mode). Each statement is idempotent.
/// Never edit a released migration: append a new one.
pub(super) const MIGRATIONS: &[(u32, &str, &[&str])] = &[
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

/// Notes `version` as applied in `ft_schema_migrations` (on the server
/// `client` talks to: every replica keeps its own record).
pub(super) async fn record_migration(
    client: &Client,
    version: u32,
    description: &str,
) -> StorageResult<()> {
    client
        .query("INSERT INTO ft_schema_migrations (version, description, applied_at) VALUES (?, ?, now())")
        .bind(version)
        .bind(description)
        .execute()
        .await
        .map_err(map_err)
}

/// Tables of the schema, with the sharding key used in cluster mode.
pub(super) const TABLES: &[(&str, &str)] = &[
    ("ft_spans", "cityHash64(trace_id)"),
    ("ft_traces", "cityHash64(trace_id)"),
    ("ft_op_rollups", "cityHash64(service)"),
    ("ft_edge_rollups", "cityHash64(caller)"),
    ("ft_rollup_origins", "cityHash64(instance)"),
    ("ft_sampling_counts", "cityHash64(service)"),
];

impl ClickHouseStore {
    /// Creates the database and applies pending migrations on every node, and
    /// the `Distributed` tables in cluster mode.
    pub(super) async fn migrate(&self, admin: &Client, url: &ParsedUrl) -> StorageResult<()> {
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
            record_migration(self.client(), *version, description).await?;
            tracing::info!(version, "clickhouse schema migration applied");
        }
        Ok(())
    }
}
