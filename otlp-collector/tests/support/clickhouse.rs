//! Throwaway ClickHouse servers: `clickhouse-server` with a generated config in
//! a temp dir on free loopback ports. Several can be started together as the
//! shards of one cluster (`ft_test`), each listed in every server's
//! `remote_servers`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{find_exe, free_port, missing, wait_until, ServerProcess};

/// A running throwaway ZooKeeper (Debian package `zookeeper`): one standalone
/// server on a free loopback port with its data in a temp dir, admin server
/// off; stopped and deleted on drop.
pub struct ZooKeeper {
    process: ServerProcess,
    /// Client port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl ZooKeeper {
    /// Starts one, or `None` (after printing why) when ZooKeeper or Java is
    /// not installed outside CI.
    pub fn start() -> Option<ZooKeeper> {
        let jar = std::env::var("FERROTRACE_ZOOKEEPER_JAR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("/usr/share/java/zookeeper.jar"));
        let java = find_exe(&[PathBuf::from("/usr/bin/java")]);
        let (Some(java), true) = (java, jar.exists()) else {
            missing("ZooKeeper not found (/usr/share/java/zookeeper.jar and java); install the Debian package zookeeper or set FERROTRACE_ZOOKEEPER_JAR");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("ferrotrace-zk-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={d}/data\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\nmaxClientCnxns=0\n4lw.commands.whitelist=srvr\n"
            ),
        )
        .expect("write zoo.cfg");
        let log = std::fs::File::create(dir.path().join("zk.log")).expect("zk log");
        let mut cmd = Command::new(java);
        // The standalone server's main class; the Debian jar needs nothing
        // else on the class path (logging falls back to a no-op).
        cmd.arg("-Xmx256m")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-cp")
            .arg(class_path(&jar))
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(dir.path().join("zoo.cfg"))
            .current_dir(dir.path())
            .stdout(log.try_clone().expect("zk log"))
            .stderr(log);
        let mut process = ServerProcess::spawn(cmd, "zookeeper");
        let ready = wait_until(Duration::from_secs(60), || {
            process.running() && zk_serving(port)
        });
        assert!(
            ready,
            "zookeeper did not become ready:\n{}",
            super::tail(&dir.path().join("zk.log"), 30)
        );
        Some(ZooKeeper { process, port, dir })
    }
}

impl ZooKeeper {
    /// Kills the server (`kill -9`): a throwaway server needs no graceful stop.
    pub fn kill(&mut self) {
        self.process.stop_with("-KILL");
    }

    /// Process id of the running server (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        // Before the temp dir goes.
        self.process.stop();
        let _ = &self.dir;
    }
}

/// The ZooKeeper jar, plus Debian's simple SLF4J binding when installed so
/// that `zk.log` says why a client was refused.
fn class_path(jar: &std::path::Path) -> std::ffi::OsString {
    let mut cp = jar.as_os_str().to_owned();
    let simple = std::path::Path::new("/usr/share/java/slf4j-simple.jar");
    if simple.exists() {
        cp.push(":");
        cp.push(simple);
    }
    cp
}

/// True once the server serves requests: `ruok` answers `imok` before that
/// (while it loads its data), `srvr` reports the server's mode only after.
fn zk_serving(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = String::new();
    s.write_all(b"srvr").is_ok() && s.read_to_string(&mut out).is_ok() && out.contains("Mode: ")
}

/// Name of the cluster the servers of [`ChServer::start_cluster`] form.
pub const CLUSTER: &str = "ft_test";

/// A running throwaway ClickHouse; stopped and deleted on drop.
pub struct ChServer {
    process: ServerProcess,
    /// How it was started, for [`ChServer::restart`].
    exe: PathBuf,
    pre: Vec<&'static str>,
    /// HTTP port on 127.0.0.1.
    pub http_port: u16,
    /// Native protocol port on 127.0.0.1 (used between shards).
    pub tcp_port: u16,
    dir: tempfile::TempDir,
}

/// The server binary and the arguments that precede `--config-file`.
fn server_command() -> Option<(PathBuf, Vec<&'static str>)> {
    if let Ok(p) = std::env::var("FERROTRACE_CLICKHOUSE_BIN") {
        return Some((PathBuf::from(p), vec![]));
    }
    if let Some(p) = find_exe(&[
        PathBuf::from("/usr/sbin/clickhouse-server"),
        PathBuf::from("/usr/bin/clickhouse-server"),
        PathBuf::from("/usr/local/bin/clickhouse-server"),
    ]) {
        return Some((p, vec![]));
    }
    // Current releases ship one `clickhouse` binary with a `server` mode.
    find_exe(&[
        PathBuf::from("/usr/bin/clickhouse"),
        PathBuf::from("/usr/local/bin/clickhouse"),
    ])
    .map(|p| (p, vec!["server"]))
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl ChServer {
    /// Starts one server, or `None` (after printing why) when ClickHouse is not
    /// installed outside CI.
    pub fn start() -> Option<ChServer> {
        Self::start_cluster(1).map(|mut v| v.remove(0))
    }

    /// Starts `n` servers that form the cluster [`CLUSTER`] with one shard each.
    pub fn start_cluster(n: usize) -> Option<Vec<ChServer>> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let shards: String = ports
            .iter()
            .map(|(_, tcp)| {
                format!(
                    "<shard><replica><host>127.0.0.1</host><port>{tcp}</port></replica></shard>"
                )
            })
            .collect();
        let remote = format!("<remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>");
        Self::start_servers(ports.into_iter().map(|p| (p, remote.clone())).collect())
    }

    /// Starts `shards` × `replicas` servers that form the cluster [`CLUSTER`]
    /// with `internal_replication`, all using `zk`, with the macros
    /// `{shard}` = `0<s>` and `{replica}` = `r<r>` (1-based). Returned shard
    /// by shard.
    pub fn start_replicated(
        shards: usize,
        replicas: usize,
        zk: &ZooKeeper,
    ) -> Option<Vec<Vec<ChServer>>> {
        Self::start_replicated_with(shards, replicas, |s, r| {
            format!(
                "<zookeeper><node><host>127.0.0.1</host><port>{}</port></node>\
                 <session_timeout_ms>6000</session_timeout_ms></zookeeper>\
                 <macros><shard>0{s}</shard><replica>r{r}</replica></macros>",
                zk.port
            )
        })
    }

    /// Like [`ChServer::start_replicated`], with each server's ZooKeeper and
    /// macros configuration given by `extra(shard, replica)` (1-based), to
    /// start misconfigured clusters.
    pub fn start_replicated_with(
        shards: usize,
        replicas: usize,
        extra: impl Fn(usize, usize) -> String,
    ) -> Option<Vec<Vec<ChServer>>> {
        let ports: Vec<Vec<(u16, u16)>> = (0..shards)
            .map(|_| (0..replicas).map(|_| (free_port(), free_port())).collect())
            .collect();
        let xml: String = ports
            .iter()
            .map(|rs| {
                let r: String = rs
                    .iter()
                    .map(|(_, tcp)| {
                        format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>")
                    })
                    .collect();
                format!("<shard><internal_replication>true</internal_replication>{r}</shard>")
            })
            .collect();
        let remote = format!("<remote_servers><{CLUSTER}>{xml}</{CLUSTER}></remote_servers>");
        let mut specs = Vec::new();
        for (s, rs) in ports.iter().enumerate() {
            for (r, p) in rs.iter().enumerate() {
                // Replicas fetch parts from each other over the interserver
                // HTTP port, addressed by this host name.
                let inter = format!(
                    "<interserver_http_host>127.0.0.1</interserver_http_host>\
                     <interserver_http_port>{}</interserver_http_port>",
                    free_port()
                );
                specs.push((*p, format!("{remote}{inter}{}", extra(s + 1, r + 1))));
            }
        }
        let mut all = Self::start_servers(specs)?.into_iter();
        Some(
            (0..shards)
                .map(|_| all.by_ref().take(replicas).collect())
                .collect(),
        )
    }

    /// Starts one server per `((http, tcp), extra config XML)`.
    fn start_servers(specs: Vec<((u16, u16), String)>) -> Option<Vec<ChServer>> {
        let Some((exe, pre)) = server_command() else {
            missing("clickhouse-server not found; set FERROTRACE_CLICKHOUSE_BIN or install clickhouse-server");
            return None;
        };
        let mut servers = Vec::new();
        for ((http_port, tcp_port), extra) in specs {
            let dir = tempfile::Builder::new()
                .prefix("ferrotrace-ch-")
                .tempdir()
                .expect("temp dir");
            let d = dir.path().display();
            let config = format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/data/tmp/</tmp_path>
  <user_files_path>{d}/data/user_files/</user_files_path>
  <format_schema_path>{d}/data/format_schemas/</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  {extra}
</yandex>
"#
            );
            let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#;
            std::fs::write(dir.path().join("config.xml"), config).expect("write config");
            std::fs::write(dir.path().join("users.xml"), users).expect("write users");
            let process = Self::spawn(&exe, &pre, dir.path());
            servers.push(ChServer {
                process,
                exe: exe.clone(),
                pre: pre.clone(),
                http_port,
                tcp_port,
                dir,
            });
        }
        for s in &mut servers {
            s.wait_ready();
        }
        Some(servers)
    }

    fn spawn(exe: &PathBuf, pre: &[&'static str], dir: &std::path::Path) -> ServerProcess {
        let mut cmd = Command::new(exe);
        cmd.args(pre)
            .arg(format!("--config-file={}/config.xml", dir.display()))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ServerProcess::spawn(cmd, "clickhouse-server")
    }

    fn wait_ready(&mut self) {
        let port = self.http_port;
        let proc_ = &mut self.process;
        let ready = wait_until(Duration::from_secs(60), || {
            proc_.running() && http_get(port, "/ping").is_some_and(|r| r.ends_with("Ok.\n"))
        });
        assert!(
            ready,
            "clickhouse-server did not become ready:\n{}",
            super::tail(&self.dir.path().join("err.log"), 30)
        );
    }

    /// Kills the server (`kill -9`); the directory stays for [`ChServer::restart`].
    pub fn kill(&mut self) {
        self.process.stop_with("-KILL");
    }

    /// Starts the server again on the same ports and data after a stop or kill.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(&self.exe, &self.pre, self.dir.path());
        self.wait_ready();
    }

    /// Stops the server now (the directory stays until drop).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Process id of the running server (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// HTTP URL of a database on this server.
    pub fn url(&self, db: &str) -> String {
        format!("http://127.0.0.1:{}/{db}", self.http_port)
    }

    /// Runs one statement over HTTP and returns the body (for assertions
    /// beside the sink, e.g. physical row counts).
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|resp| panic!("{sql}: {resp}"))
    }

    /// [`ChServer::sql`] that returns the whole response when the server
    /// answers anything but 200.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let enc: String = sql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let resp = http_get(self.http_port, &format!("/?query={enc}")).unwrap_or_default();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
            Ok(body.to_string())
        } else {
            Err(resp)
        }
    }
}

/// The sink's cluster options for `servers` (shard by shard, as
/// [`ChServer::start_replicated`] returns them) in the [`CLUSTER`].
pub fn cluster_options(
    servers: &[Vec<ChServer>],
) -> ferrotrace_collector::storage::clickhouse::ClusterOptions {
    ferrotrace_collector::storage::clickhouse::ClusterOptions {
        name: CLUSTER.into(),
        shards: servers
            .iter()
            .map(|rs| rs.iter().map(|s| s.url("traces")).collect())
            .collect(),
        ..Default::default()
    }
}

/// The `[storage]` and `[clickhouse.cluster]` sections of a collector's
/// configuration file writing to `cluster` through the entry server `url`.
pub fn collector_toml(
    url: &str,
    cluster: &ferrotrace_collector::storage::clickhouse::ClusterOptions,
) -> String {
    let shards: Vec<String> = cluster
        .shards
        .iter()
        .map(|rs| {
            let r: Vec<String> = rs.iter().map(|u| format!("{u:?}")).collect();
            format!("[{}]", r.join(", "))
        })
        .collect();
    // The unreplicated form (`shard_urls`) when no replicated shards are given.
    let servers = if cluster.shards.is_empty() {
        let urls: Vec<String> = cluster
            .shard_urls
            .iter()
            .map(|u| format!("{u:?}"))
            .collect();
        format!("shard_urls = [{}]", urls.join(", "))
    } else {
        format!("shards = [{}]", shards.join(", "))
    };
    format!(
        "[storage]\nkind = \"clickhouse\"\nurl = {url:?}\n\n\
         [clickhouse.cluster]\nname = {:?}\n{servers}\n",
        cluster.name,
    )
}

/// Distinct spans in one server's local `table` (`ft_traces` or `ft_spans`).
pub fn local_spans(s: &ChServer, table: &str) -> u64 {
    s.sql(&format!(
        "SELECT uniqExact(trace_id, span_id) FROM traces.{table}_local"
    ))
    .trim()
    .parse()
    .expect("count")
}

/// Per shard, the distinct spans its replicas hold in both span tables
/// (`[replica 1 ft_traces, ft_spans, replica 2 ft_traces, ft_spans, ...]`).
pub fn replica_counts(servers: &[Vec<ChServer>]) -> Vec<Vec<u64>> {
    servers
        .iter()
        .map(|rs| {
            rs.iter()
                .flat_map(|s| [local_spans(s, "ft_traces"), local_spans(s, "ft_spans")])
                .collect()
        })
        .collect()
}

/// Waits until both span tables on every replica of each shard hold the
/// same spans, and (when `total` is given) the shards `total` in all;
/// returns the per-shard counts.
pub fn wait_replicas_agree(servers: &[Vec<ChServer>], total: Option<u64>) -> Vec<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counts = replica_counts(servers);
        let per_shard: Vec<u64> = counts.iter().map(|c| c[0]).collect();
        let same = counts.iter().all(|c| c.iter().all(|n| *n == c[0]));
        if same && total.is_none_or(|t| per_shard.iter().sum::<u64>() == t) {
            return per_shard;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas did not converge on {total:?} spans: {counts:?} \
             (per shard: [replica 1 ft_traces, ft_spans, replica 2 ft_traces, ft_spans])"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
