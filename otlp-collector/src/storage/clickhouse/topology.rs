//! Cluster shape of the ClickHouse sink: which servers hold which shard, and
//! the replicated table engines.
//!
//! Two forms of [`ClusterOptions`](super::ClusterOptions):
//! - `shard_urls = ["u1", "u2"]`: one server per shard, plain `MergeTree`
//!   family tables (no replicas; losing a server loses its shard).
//! - `shards = [["u1", "u2"], ["u3", "u4"]]`: per shard, the HTTP URL of each
//!   replica; `Replicated*MergeTree` tables coordinated by the servers'
//!   ZooKeeper, with `{shard}` / `{replica}` macros in the ZooKeeper paths.
//!
//! The shape is checked here without connecting, so a malformed cluster
//! fails the collector's start with a message naming the problem.

use super::connection::check_url;
use super::options::{valid_identifier, ClickHouseOptions, ClusterOptions, DEFAULT_ZOOKEEPER_PATH};
use crate::storage::{StorageError, StorageResult};

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

/// Servers of a cluster, shard by shard (each shard: its replicas' URLs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Topology {
    /// `shards[s][r]`: HTTP URL of replica `r` of shard `s`.
    pub shards: Vec<Vec<String>>,
    /// `Replicated*MergeTree` tables (the `shards` form).
    pub replicated: bool,
}

fn bad(why: String) -> StorageError {
    StorageError::Backend(format!("ClickHouse cluster configuration: {why}"))
}

impl Topology {
    /// Checks the shape of the cluster configuration.
    pub fn from_options(c: &ClusterOptions) -> StorageResult<Topology> {
        let (shards, replicated) =
            match (c.shard_urls.is_empty(), c.shards.is_empty()) {
                (false, false) => {
                    return Err(bad(
                        "set either shard_urls (one server per shard, unreplicated) or shards \
                     (per shard, the URL of every replica), not both"
                            .into(),
                    ))
                }
                (true, true) => return Err(bad(
                    "cluster mode needs the servers: shard_urls = [\"url\", ...] (one per shard) \
                     or shards = [[\"replica url\", ...], ...] (replicated)"
                        .into(),
                )),
                (false, true) => (
                    c.shard_urls.iter().map(|u| vec![u.clone()]).collect(),
                    false,
                ),
                (true, false) => (c.shards.clone(), true),
            };
        let mut seen = std::collections::BTreeSet::new();
        for (i, replicas) in shards.iter().enumerate() {
            if replicas.is_empty() {
                return Err(bad(format!("shard {} has no replica URL", i + 1)));
            }
            // Unequal replica counts are legal in ClickHouse, but the shard
            // with fewer replicas is then the one that loses data first; a
            // shape like that is almost always a typo in the list.
            if replicas.len() != shards[0].len() {
                return Err(bad(format!(
                    "every shard needs the same number of replicas: shard 1 has {}, shard {} has {}",
                    shards[0].len(),
                    i + 1,
                    replicas.len()
                )));
            }
            for u in replicas {
                check_url(u)?;
                if !seen.insert(u.trim_end_matches('/')) {
                    return Err(bad(format!(
                        "server {} is listed twice (a server is one replica of one shard)",
                        crate::storage::url::redact_url(u)
                    )));
                }
            }
        }
        if replicated {
            check_zookeeper_path(&c.zookeeper_path)?;
        }
        Ok(Topology { shards, replicated })
    }

    /// Every server, shard by shard.
    pub fn urls(&self) -> impl Iterator<Item = &String> {
        self.shards.iter().flatten()
    }
}

/// A ZooKeeper path goes into DDL text: only `/`-separated plain names.
fn check_zookeeper_path(p: &str) -> StorageResult<()> {
    let ok = p.starts_with('/')
        && p.len() > 1
        && p[1..].split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                && part != "."
                && part != ".."
        });
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "zookeeper_path {p:?} must be an absolute path of letters, digits, '_', '-' and '.' \
             (e.g. {DEFAULT_ZOOKEEPER_PATH:?})"
        )))
    }
}

/// Turns a migration's `CREATE TABLE` of `table` (already with the `_local`
/// suffix) into its replicated form: `ReplacingMergeTree()` becomes
/// `ReplicatedReplacingMergeTree('<zk>/<db>/{shard}/<table>_local', '{replica}')`,
/// `MergeTree()` likewise. The macros are expanded by each server from its
/// own `<macros>`, so one statement text serves every replica.
pub(super) fn replicated_ddl(
    statement: &str,
    table: &str,
    zookeeper_path: &str,
    database: &str,
) -> StorageResult<String> {
    let zk = format!("'{zookeeper_path}/{database}/{{shard}}/{table}_local', '{{replica}}'");
    for (plain, replicated) in [
        (
            "ENGINE = ReplacingMergeTree()",
            "ReplicatedReplacingMergeTree",
        ),
        ("ENGINE = MergeTree()", "ReplicatedMergeTree"),
    ] {
        if statement.contains(plain) {
            return Ok(statement.replacen(plain, &format!("ENGINE = {replicated}({zk})"), 1));
        }
    }
    // A new migration with another engine must say how it replicates.
    Err(StorageError::Backend(format!(
        "internal: the migration of {table} has an engine the replicated cluster mode does not map"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(shard_urls: &[&str], shards: &[&[&str]]) -> ClusterOptions {
        ClusterOptions {
            name: "c".into(),
            shard_urls: shard_urls.iter().map(|s| s.to_string()).collect(),
            shards: shards
                .iter()
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .collect(),
            ..ClusterOptions::default()
        }
    }

    fn err(o: &ClusterOptions) -> String {
        Topology::from_options(o).unwrap_err().to_string()
    }

    #[test]
    fn accepts_both_forms() {
        let t = Topology::from_options(&opts(&["http://a:1", "http://b:1"], &[])).unwrap();
        assert!(!t.replicated);
        assert_eq!(t.shards.len(), 2);
        let t = Topology::from_options(&opts(
            &[],
            &[&["http://a:1", "http://b:1"], &["http://c:1", "http://d:1"]],
        ))
        .unwrap();
        assert!(t.replicated);
        assert_eq!(t.urls().count(), 4);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(err(&opts(&["http://a:1"], &[&["http://b:1"]])).contains("not both"));
        assert!(err(&opts(&[], &[])).contains("needs the servers"));
        assert!(err(&opts(&[], &[&["http://a:1"], &[]])).contains("shard 2 has no replica"));
        let e = err(&opts(
            &[],
            &[&["http://a:1", "http://b:1"], &["http://c:1"]],
        ));
        assert!(e.contains("shard 1 has 2, shard 2 has 1"), "{e}");
        let e = err(&opts(
            &[],
            &[
                &["http://a:1", "http://b:1"],
                &["http://a:1/", "http://d:1"],
            ],
        ));
        assert!(e.contains("listed twice"), "{e}");
        assert!(err(&opts(&[], &[&["ftp://a:1"]])).contains("invalid ClickHouse URL"));
        let mut o = opts(&[], &[&["http://a:1"]]);
        for p in ["", "/", "x", "/a//b", "/a/../b", "/a'b", "/a/{shard}"] {
            o.zookeeper_path = p.into();
            assert!(err(&o).contains("zookeeper_path"), "{p}");
        }
    }

    #[test]
    fn every_migration_has_a_replicated_engine() {
        for (_, _, statements) in super::super::MIGRATIONS {
            for st in *statements {
                let (table, _) = super::super::TABLES
                    .iter()
                    .find(|(t, _)| st.contains(&format!("{t}{{t}} ")))
                    .expect("a known table");
                let ddl = replicated_ddl(&st.replace("{t}", "_local"), table, "/ch/ft", "db")
                    .expect("mapped");
                assert!(
                    ddl.contains(&format!(
                        "Replicated{}",
                        if ddl.contains("ReplicatedReplacing") {
                            "Replacing"
                        } else {
                            ""
                        }
                    )) && ddl.contains(&format!(
                        "'/ch/ft/db/{{shard}}/{table}_local', '{{replica}}'"
                    )),
                    "{ddl}"
                );
            }
        }
    }
}
