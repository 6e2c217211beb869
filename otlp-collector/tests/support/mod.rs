//! Throwaway database servers for the sink tests: each test starts its own
//! PostgreSQL or ClickHouse in a temporary directory on free loopback ports,
//! waits until it answers, and stops it (whole process group) and deletes the
//! directory when the guard drops. Nothing touches a server already running
//! on this machine.
//!
//! A missing server binary skips the test with a printed reason, except under
//! `CI=true`, where it fails.

#![allow(dead_code)]

pub mod certs;
pub mod clickhouse;
#[path = "../net/mod.rs"]
pub mod net;
pub mod postgres;
pub mod smallfs;

pub use net::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// True when running in CI, where a missing server is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports a missing prerequisite: panics in CI, prints and returns otherwise.
pub fn missing(what: &str) {
    if in_ci() {
        panic!(
            "{what} (CI=true: a missing test server is a failure, install it with scripts/test.sh)"
        );
    }
    eprintln!("SKIPPED: {what}");
}

/// First existing executable among `candidates`.
pub fn find_exe(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

/// Effective user id, via `id -u` (no libc dependency for one number).
pub fn euid() -> u32 {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// A command run as `nobody` when we are root (servers like PostgreSQL refuse root).
pub fn command_as_unprivileged(exe: &Path) -> Command {
    if euid() == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

/// Gives `dir` (recursively) to `nobody` when we are root.
pub fn chown_unprivileged(dir: &Path) {
    if euid() == 0 {
        let st = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(dir)
            .status()
            .expect("run chown");
        assert!(st.success(), "chown {dir:?} to nobody failed");
    }
}

/// A server process started in its own process group; killed (group-wide) on drop.
pub struct ServerProcess {
    pub child: Child,
    pub name: String,
}

impl ServerProcess {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(mut cmd: Command, name: &str) -> ServerProcess {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ServerProcess {
            child,
            name: name.to_string(),
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .status();
    }

    /// Stops the whole process group: TERM, then KILL after 10 s.
    pub fn stop(&mut self) {
        self.stop_with("-TERM");
    }

    /// Stops the whole process group with `signal` (as `kill` names it,
    /// e.g. `-INT`), then KILL after 10 s.
    pub fn stop_with(&mut self, signal: &str) {
        if !self.running() {
            return;
        }
        self.signal_group(signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `ready` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Last `n` lines of a file, for start-up failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
