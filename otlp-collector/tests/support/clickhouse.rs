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

/// Name of the cluster the servers of [`ChServer::start_cluster`] form.
pub const CLUSTER: &str = "ft_test";

/// A running throwaway ClickHouse; stopped and deleted on drop.
pub struct ChServer {
    process: ServerProcess,
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
        let Some((exe, pre)) = server_command() else {
            missing("clickhouse-server not found; set FERROTRACE_CLICKHOUSE_BIN or install clickhouse-server");
            return None;
        };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let shards: String = ports
            .iter()
            .map(|(_, tcp)| {
                format!(
                    "<shard><replica><host>127.0.0.1</host><port>{tcp}</port></replica></shard>"
                )
            })
            .collect();
        let mut servers = Vec::new();
        for (http_port, tcp_port) in ports {
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
  <remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>
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
            let mut cmd = Command::new(&exe);
            cmd.args(&pre)
                .arg(format!("--config-file={d}/config.xml"))
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let process = ServerProcess::spawn(cmd, "clickhouse-server");
            servers.push(ChServer {
                process,
                http_port,
                tcp_port,
                dir,
            });
        }
        for s in &mut servers {
            let port = s.http_port;
            let proc_ = &mut s.process;
            let ready = wait_until(Duration::from_secs(60), || {
                proc_.running() && http_get(port, "/ping").is_some_and(|r| r.ends_with("Ok.\n"))
            });
            assert!(
                ready,
                "clickhouse-server did not become ready:\n{}",
                super::tail(&s.dir.path().join("err.log"), 30)
            );
        }
        Some(servers)
    }

    /// Stops the server now (the directory stays until drop).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// HTTP URL of a database on this server.
    pub fn url(&self, db: &str) -> String {
        format!("http://127.0.0.1:{}/{db}", self.http_port)
    }

    /// Runs one statement over HTTP and returns the body (for assertions
    /// beside the sink, e.g. physical row counts).
    pub fn sql(&self, sql: &str) -> String {
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
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{sql}: {resp}"
        );
        body.to_string()
    }
}
