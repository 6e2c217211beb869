//! A throwaway PostgreSQL: `initdb` + `postgres` in a temp dir on a free
//! loopback port, as `nobody` when the tests run as root (PostgreSQL refuses
//! to run as root). [`PgServer::start_tls`] starts one that accepts TCP
//! connections over TLS only, with a certificate from a throwaway CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{
    chown_unprivileged, command_as_unprivileged, find_exe, free_port, missing, wait_until,
    ServerProcess,
};

/// A running throwaway PostgreSQL; stopped and deleted on drop.
pub struct PgServer {
    // Field order matters: the process stops before the directory is removed.
    process: ServerProcess,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Certificates, when started with [`PgServer::start_tls`].
    pub tls: Option<PgTlsFiles>,
    /// The PostgreSQL binaries' directory (for [`PgServer::restart`]).
    bin: PathBuf,
    /// Stopped by [`PgServer::freeze`]: thawed before it is stopped.
    frozen: bool,
    dir: tempfile::TempDir,
}

/// The TLS material of a server started with [`PgServer::start_tls`].
pub struct PgTlsFiles {
    /// The CA (PEM) that signed the server's certificate (for 127.0.0.1 and localhost).
    pub ca: PathBuf,
    /// Another CA, which signed nothing the server uses.
    pub other_ca: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it
/// (`server.pem`, `server.key`), and an unrelated second CA, in `d`.
fn make_certs(d: &Path) -> PgTlsFiles {
    let c = super::certs::make(d);
    PgTlsFiles {
        ca: c.ca,
        other_ca: c.other_ca,
    }
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("FERROTRACE_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    candidates.sort();
    candidates.reverse();
    candidates.push(PathBuf::from("/usr/local/bin"));
    candidates.push(PathBuf::from("/usr/bin"));
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

impl PgServer {
    /// Starts a server, or returns `None` (after printing why) when PostgreSQL
    /// is not installed outside CI.
    pub fn start() -> Option<PgServer> {
        Self::start_on(free_port())
    }

    /// True when the PostgreSQL binaries are installed; otherwise reports
    /// them missing (a failure under CI) and returns false.
    pub fn available() -> bool {
        if bin_dir().is_some() {
            return true;
        }
        missing("PostgreSQL binaries (initdb, postgres) not found; set FERROTRACE_PG_BIN or install postgresql");
        false
    }

    /// Like [`start`](Self::start) on a given loopback port (for tests that
    /// point a collector at the port before the server exists).
    pub fn start_on(port: u16) -> Option<PgServer> {
        Self::start_inner(port, false)
    }

    /// Starts a server with `ssl=on` whose pg_hba.conf accepts TCP connections
    /// over TLS only (`hostnossl ... reject`); its certificate, for 127.0.0.1
    /// and localhost, is signed by [`PgTlsFiles::ca`]. The Unix socket (used by
    /// [`fresh_db`](Self::fresh_db)) stays open without TLS.
    pub fn start_tls() -> Option<PgServer> {
        Self::start_inner(free_port(), true)
    }

    fn start_inner(port: u16, tls: bool) -> Option<PgServer> {
        let Some(bin) = bin_dir() else {
            missing("PostgreSQL binaries (initdb, postgres) not found; set FERROTRACE_PG_BIN or install postgresql");
            return None;
        };
        let initdb = find_exe(&[bin.join("initdb")])?;
        find_exe(&[bin.join("postgres")])?;
        let dir = tempfile::Builder::new()
            .prefix("ferrotrace-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir_all(&sock).expect("socket dir");
        let tls_dir = dir.path().join("tls");
        let tls = tls.then(|| {
            std::fs::create_dir_all(&tls_dir).expect("tls dir");
            make_certs(&tls_dir)
        });
        chown_unprivileged(dir.path());
        if tls.is_some() {
            // PostgreSQL refuses a key file that others can read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                tls_dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
        }
        let out = command_as_unprivileged(&initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tls.is_some() {
            // First match wins: these come before initdb's `host ... trust`.
            let hba = data.join("pg_hba.conf");
            let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            std::fs::write(
                &hba,
                format!(
                    "hostnossl all all 127.0.0.1/32 reject\n\
                     hostssl all all 127.0.0.1/32 trust\n{old}"
                ),
            )
            .expect("write pg_hba.conf");
        }
        let process = launch(&bin, dir.path(), port, tls.is_some());
        Some(PgServer {
            process,
            port,
            tls,
            bin,
            frozen: false,
            dir,
        })
    }

    /// Stops the server at once, as an outage would: PostgreSQL's fast
    /// shutdown (SIGINT) ends every session instead of waiting for clients
    /// to leave, as [`stop`](Self::stop)'s smart shutdown does.
    pub fn stop_fast(&mut self) {
        self.process.stop_with("-INT");
    }

    /// Freezes the server and every session (SIGSTOP to the postmaster, then
    /// to its children, which PostgreSQL puts in sessions of their own):
    /// the kernel still accepts connections into the listen backlog, and
    /// writes in progress hang, answered by nothing until [`thaw`](Self::thaw).
    pub fn freeze(&mut self) {
        let pm = self.process.child.id().to_string();
        let _ = Command::new("kill").args(["-STOP", &pm]).status();
        let _ = Command::new("pkill").args(["-STOP", "-P", &pm]).status();
        self.frozen = true;
    }

    /// Lets a server frozen by [`freeze`](Self::freeze) run again.
    pub fn thaw(&mut self) {
        let pm = self.process.child.id().to_string();
        let _ = Command::new("pkill").args(["-CONT", "-P", &pm]).status();
        let _ = Command::new("kill").args(["-CONT", &pm]).status();
        self.frozen = false;
    }

    /// Starts the server again on the same data directory and port after
    /// [`stop`](Self::stop) or [`stop_fast`](Self::stop_fast) (a database
    /// outage that ends), and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = launch(&self.bin, self.dir.path(), self.port, self.tls.is_some());
    }

    /// URL of a database on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A plaintext connection string for `db` as the superuser: the TCP URL,
    /// or for a TLS-only server its Unix socket (which does not need TLS).
    pub fn admin_url(&self, db: &str) -> String {
        if self.tls.is_some() {
            format!(
                "host={} port={} user=postgres dbname={db}",
                self.dir.path().join("sock").display(),
                self.port
            )
        } else {
            self.url(db)
        }
    }

    /// Creates a fresh database and returns its URL.
    pub async fn fresh_db(&self, db: &str) -> String {
        let (client, conn) =
            tokio_postgres::connect(&self.admin_url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to test postgres");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
        drop(client);
        let _ = task.await;
        self.url(db)
    }

    /// Directory of the server (data and log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the server now (the directory stays until drop).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Starts `postgres` on the data directory in `dir` (made by `initdb`) and
/// waits until it accepts connections on `port`. The log is appended to
/// `dir/postgres.log`.
fn launch(bin: &Path, dir: &Path, port: u16, tls: bool) -> ServerProcess {
    let postgres = bin.join("postgres");
    let data = dir.join("data");
    let sock = dir.join("sock");
    let tls_dir = dir.join("tls");
    let log = dir.join("postgres.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    chown_unprivileged(&log);
    let mut cmd = command_as_unprivileged(&postgres);
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&sock)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=40",
            "-c",
            "shared_buffers=64MB",
        ])
        .stdout(Stdio::null())
        .stderr(log_file.try_clone().expect("log handle"));
    if tls {
        cmd.args(["-c", "ssl=on", "-c"])
            .arg(format!(
                "ssl_cert_file={}",
                tls_dir.join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                tls_dir.join("server.key").display()
            ));
    }
    let mut process = ServerProcess::spawn(cmd, "postgres");
    let isready = bin.join("pg_isready");
    let ready = wait_until(Duration::from_secs(60), || {
        if !process.running() {
            return false;
        }
        Command::new(&isready)
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
            ])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        ready,
        "postgres did not become ready:\n{}",
        super::tail(&log, 30)
    );
    process
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Frozen sessions would not act on the postmaster's shutdown.
        if self.frozen {
            self.thaw();
        }
    }
}
