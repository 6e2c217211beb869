//! Schema of the replicated cluster mode, created by the sink on every replica.
//!
//! Why not `ON CLUSTER`: ClickHouse 18.16 runs distributed DDL through a
//! ZooKeeper queue and waits for *every* host of the cluster, so with one
//! replica down a migration hangs until `distributed_ddl_task_timeout` and
//! then fails; it also needs `<distributed_ddl>` in every server's config.
//! The sink instead runs the same idempotent `CREATE ... IF NOT EXISTS`
//! statements over HTTP on each replica it is given (as the unreplicated
//! cluster mode already does on each shard), at every start: a replica that
//! is down is skipped with a warning and gets its tables at the next start
//! that reaches it. Replication itself (the rows) is ClickHouse's own,
//! through ZooKeeper; the sink never copies data between replicas.
//!
//! Before any DDL the replicas are checked, so that a misconfigured server
//! fails the start with a message instead of half a schema: ZooKeeper
//! configured, the cluster known with the configured number of shards, and
//! the `{shard}` / `{replica}` macros consistent with the configured shape
//! (one `shard` value per shard, distinct `replica` values within a shard).

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::Deserialize;

use super::{exec, map_err, topology, ClickHouseStore, Node, MIGRATIONS, TABLES};
use crate::storage::{StorageError, StorageResult};

/// The `{shard}` and `{replica}` macros of one server.
#[derive(Debug)]
struct Macros {
    shard: String,
    replica: String,
}

fn config_error(node: &Node, why: String) -> StorageError {
    StorageError::Backend(format!("ClickHouse replica {}: {why}", node.url))
}

impl ClickHouseStore {
    /// Checks every reachable replica, then creates the database, the
    /// replicated `*_local` tables and the `Distributed` tables on each.
    pub(super) async fn migrate_replicated(&self) -> StorageResult<()> {
        let cluster = self
            .opts
            .cluster
            .as_ref()
            .expect("replicated mode has a cluster");
        let mut live: Vec<Vec<&Node>> = Vec::new();
        let mut macros: Vec<Vec<Macros>> = Vec::new();
        for (s, replicas) in self.nodes.iter().enumerate() {
            let (mut up, mut m) = (Vec::new(), Vec::new());
            let mut last = None;
            for node in replicas {
                match self.check_replica(node, &cluster.name).await {
                    Ok(found) => {
                        up.push(node);
                        m.push(found);
                    }
                    Err(StorageError::Unavailable(why)) => {
                        tracing::warn!(server = %node.url, error = %why,
                            "clickhouse replica unreachable at start; its tables are created at the next start that reaches it");
                        last = Some(why);
                    }
                    Err(e) => return Err(e),
                }
            }
            if up.is_empty() {
                return Err(StorageError::Unavailable(format!(
                    "no replica of ClickHouse shard {} answers: {}",
                    s + 1,
                    last.unwrap_or_default()
                )));
            }
            live.push(up);
            macros.push(m);
        }
        check_macros(&live, &macros)?;
        for node in live.iter().flatten() {
            self.create_schema(node, cluster).await?;
        }
        Ok(())
    }

    /// Connects to one replica and reads what the checks need.
    async fn check_replica(&self, node: &Node, cluster: &str) -> StorageResult<Macros> {
        let admin = node.client.clone().with_database("default");
        admin
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .map_err(map_err)?;
        if let Err(e) = admin
            .query("SELECT count() FROM system.zookeeper WHERE path = '/'")
            .fetch_one::<u64>()
            .await
            .map_err(map_err)
        {
            return Err(match e {
                StorageError::Unavailable(_) => e,
                _ => config_error(
                    node,
                    format!(
                        "replicated tables need ZooKeeper, and this server has none that answers \
                         (add <zookeeper> to its config.xml): {e}"
                    ),
                ),
            });
        }
        let shards = admin
            .query("SELECT uniqExact(shard_num) FROM system.clusters WHERE cluster = ?")
            .bind(cluster)
            .fetch_one::<u64>()
            .await
            .map_err(map_err)?;
        let configured = self.nodes.len() as u64;
        if shards == 0 {
            return Err(config_error(
                node,
                format!("cluster {cluster:?} is not in this server's <remote_servers>"),
            ));
        }
        if shards != configured {
            return Err(config_error(
                node,
                format!(
                    "cluster {cluster:?} has {shards} shards in this server's <remote_servers>, \
                     the sink's configuration lists {configured}"
                ),
            ));
        }
        #[derive(Row, Deserialize)]
        struct MacroRow {
            r#macro: String,
            substitution: String,
        }
        let rows = admin
            .query("SELECT macro, substitution FROM system.macros")
            .fetch_all::<MacroRow>()
            .await
            .map_err(map_err)?;
        let m: BTreeMap<String, String> = rows
            .into_iter()
            .map(|r| (r.r#macro, r.substitution))
            .collect();
        let get = |name: &str| {
            m.get(name).cloned().ok_or_else(|| {
                config_error(
                    node,
                    format!(
                        "the {{{name}}} macro is not defined (<macros><shard>..</shard>\
                         <replica>..</replica></macros> in its config.xml); replicated \
                         tables register in ZooKeeper under it"
                    ),
                )
            })
        };
        Ok(Macros {
            shard: get("shard")?,
            replica: get("replica")?,
        })
    }

    /// Idempotent DDL on one replica: database, replicated local tables,
    /// `Distributed` tables (so that any replica can be the entry server)
    /// and the migration log.
    async fn create_schema(
        &self,
        node: &Node,
        cluster: &super::ClusterOptions,
    ) -> StorageResult<()> {
        let db = &self.database;
        exec(
            &node.client.clone().with_database("default"),
            &format!("CREATE DATABASE IF NOT EXISTS {db}"),
        )
        .await?;
        for (_, _, statements) in MIGRATIONS {
            for st in *statements {
                let (table, _) = TABLES
                    .iter()
                    .find(|(t, _)| st.contains(&format!("{t}{{t}} ")))
                    .ok_or_else(|| {
                        StorageError::Backend("internal: migration of an unknown table".into())
                    })?;
                let ddl = topology::replicated_ddl(
                    &st.replace("{t}", "_local"),
                    table,
                    &cluster.zookeeper_path,
                    db,
                )?;
                exec(&node.client, &ddl).await?;
            }
        }
        for (table, key) in TABLES {
            exec(
                &node.client,
                &format!(
                    "CREATE TABLE IF NOT EXISTS {table} AS {table}_local \
                     ENGINE = Distributed({}, {db}, {table}_local, {key})",
                    cluster.name
                ),
            )
            .await?;
        }
        exec(
            &node.client,
            "CREATE TABLE IF NOT EXISTS ft_schema_migrations \
             (version UInt32, description String, applied_at DateTime) ENGINE = TinyLog",
        )
        .await?;
        let applied: Vec<u32> = node
            .client
            .query("SELECT version FROM ft_schema_migrations")
            .fetch_all::<u32>()
            .await
            .map_err(map_err)?;
        for (version, description, _) in MIGRATIONS {
            if !applied.contains(version) {
                super::schema::record_migration(&node.client, *version, description).await?;
                tracing::info!(version, server = %node.url, "clickhouse schema migration applied");
            }
        }
        Ok(())
    }
}

/// The macros must match the configured shape: replicas of one shard share
/// the `shard` value (else they would not replicate each other), shards
/// differ (else two shards would replicate into one), and replicas of one
/// shard have distinct `replica` values (else they collide in ZooKeeper).
fn check_macros(live: &[Vec<&Node>], macros: &[Vec<Macros>]) -> StorageResult<()> {
    let mut shard_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (s, (nodes, ms)) in live.iter().zip(macros).enumerate() {
        for (node, m) in nodes.iter().zip(ms) {
            if m.shard != ms[0].shard {
                return Err(config_error(
                    node,
                    format!(
                        "its {{shard}} macro is {:?} but {} (listed in the same shard) has {:?}",
                        m.shard, nodes[0].url, ms[0].shard
                    ),
                ));
            }
        }
        if let Some(other) = shard_of.insert(&ms[0].shard, s) {
            return Err(config_error(
                nodes[0],
                format!(
                    "shards {} and {} both have the {{shard}} macro {:?}; each shard needs its own",
                    other + 1,
                    s + 1,
                    ms[0].shard
                ),
            ));
        }
        for (i, m) in ms.iter().enumerate() {
            if let Some(j) = ms[..i].iter().position(|o| o.replica == m.replica) {
                return Err(config_error(
                    nodes[i],
                    format!(
                        "its {{replica}} macro {:?} is also the one of {} in the same shard; \
                         replicas of a shard need distinct names",
                        m.replica, nodes[j].url
                    ),
                ));
            }
        }
    }
    Ok(())
}
