//! The real collector binary as a child process on fixed loopback ports
//! (the same across restarts, as a client's configuration would be), with
//! the faults a process can suffer: `kill -9`, SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ferrotrace_collector::config::{Config, StorageKind};

use super::get;
use crate::support::net::free_addr;

/// Where the collector stores spans.
#[derive(Clone, Debug)]
pub enum Sink {
    /// The embedded SQLite store in the data dir.
    Sqlite,
    /// PostgreSQL at this URL.
    Postgres(String),
    /// A ClickHouse cluster, through the entry server at `url`.
    ClickHouse {
        url: String,
        cluster: ferrotrace_collector::storage::clickhouse::ClusterOptions,
    },
}

/// How to start (and start again) one collector: data dir, sink, ports and
/// a configuration file.
pub struct Spec {
    pub data_dir: PathBuf,
    pub config_file: PathBuf,
    pub sink: Sink,
    pub otlp_http: SocketAddr,
    pub otlp_grpc: SocketAddr,
    pub query: SocketAddr,
}

/// Settings every fault test shares: batches written soon, and a sink that
/// comes back is retried within half a second.
const BASE_TOML: &str = "[batcher]\nmax_delay_ms = 20\nretry_initial_ms = 50\nretry_max_ms = 500\n";

impl Spec {
    /// A collector with its data in `data_dir`, its configuration file in
    /// `conf_dir`, `extra_toml` appended to the shared settings.
    pub fn new(data_dir: &Path, conf_dir: &Path, sink: Sink, extra_toml: &str) -> Spec {
        Self::with_base(data_dir, conf_dir, sink, BASE_TOML, extra_toml)
    }

    /// [`Spec::new`] without the shared test settings: the collector runs
    /// with its defaults plus `toml` (for measurements).
    pub fn with_defaults(data_dir: &Path, conf_dir: &Path, sink: Sink, toml: &str) -> Spec {
        Self::with_base(data_dir, conf_dir, sink, "", toml)
    }

    fn with_base(
        data_dir: &Path,
        conf_dir: &Path,
        sink: Sink,
        base: &str,
        extra_toml: &str,
    ) -> Spec {
        let config_file = conf_dir.join("collector.toml");
        // A cluster is configured in the file (it has no command-line flags).
        let storage = match &sink {
            Sink::ClickHouse { url, cluster } => {
                crate::support::clickhouse::collector_toml(url, cluster)
            }
            _ => String::new(),
        };
        std::fs::write(&config_file, format!("{base}{extra_toml}\n{storage}"))
            .expect("write config");
        Spec {
            data_dir: data_dir.to_path_buf(),
            config_file,
            sink,
            otlp_http: free_addr(),
            otlp_grpc: free_addr(),
            query: free_addr(),
        }
    }

    /// Starts the binary (stderr inherited, so its log shows with a failure).
    pub fn spawn(&self) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"));
        cmd.arg("--config")
            .arg(&self.config_file)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--otlp-http-addr", &self.otlp_http.to_string()])
            .args(["--otlp-grpc-addr", &self.otlp_grpc.to_string()])
            .args(["--http-addr", &self.query.to_string()])
            .args(["--zipkin-addr", ""])
            // FT_COLLECTOR_LOG (an EnvFilter) raises the children's log
            // level when diagnosing a test; warnings only by default.
            .args([
                "--log",
                &std::env::var("FT_COLLECTOR_LOG").unwrap_or_else(|_| "warn".into()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Sink::Postgres(url) = &self.sink {
            cmd.args(["--storage", "postgres", "--storage-url", url]);
        }
        let child = cmd.spawn().expect("spawn collector");
        Proc {
            pid: child.id(),
            child,
            query: self.query,
        }
    }

    /// The configuration a store opened by the test needs to read what this
    /// collector wrote.
    pub fn store_config(&self) -> Config {
        let mut c = Config {
            data_dir: self.data_dir.clone(),
            ..Config::default()
        };
        c.batcher.retry_initial_ms = 50;
        c.batcher.retry_max_ms = 500;
        match &self.sink {
            Sink::Sqlite => {}
            Sink::Postgres(url) => {
                c.storage.kind = StorageKind::Postgres;
                c.storage.url = Some(url.clone());
            }
            Sink::ClickHouse { url, cluster } => {
                c.storage.kind = StorageKind::Clickhouse;
                c.storage.url = Some(url.clone());
                c.clickhouse.cluster = Some(cluster.clone());
            }
        }
        c
    }
}

/// A running collector; killed on drop.
pub struct Proc {
    child: Child,
    pub pid: u32,
    query: SocketAddr,
}

impl Proc {
    /// Waits until `/readyz` answers 200 (the WAL replayed, the sink
    /// connected) and returns how long that took; fails if the process exits
    /// first or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!("the collector exited at start with {st}");
            }
            if let Some((200, _, _)) =
                super::get(self.query, "/readyz", Duration::from_secs(1)).await
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "the collector was not ready within {timeout:?}: {:?}",
                get(self.query, "/readyz", Duration::from_secs(1)).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `kill -9`: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then waits for the exit (at most `timeout`, then `kill -9`
    /// and a failure); returns the exit status and the time from signal to exit.
    pub fn sigterm(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(st.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, start.elapsed());
            }
            if start.elapsed() > timeout {
                self.kill9();
                panic!("the collector did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The kernel's high-water mark of its resident memory (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("status");
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
