//! The real `ferrotrace-collector` binary's command line: `check-config`, the
//! exit code of each kind of start failure (2 configuration, 3 listener,
//! 4 storage), the "address in use" message, `--log-format json`, `--help`
//! and the start-up warning for a query listener open beyond loopback.

mod net;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use net::free_addr;

const BIN: &str = env!("CARGO_BIN_EXE_ferrotrace-collector");

/// Runs the binary to completion (it must exit on its own within 60 s) with
/// no inherited `FERROTRACE*` variables.
fn run(cmd: &mut Command) -> Output {
    for (k, _) in std::env::vars() {
        if k.starts_with("FERROTRACE") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the collector");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the collector did not exit within 60 s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// A start with the data in `data` and every listener on a free loopback
/// port, except those given in `listeners` as (flag, address).
fn start_with(data: &Path, listeners: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(data);
    for flag in [
        "--otlp-grpc-addr",
        "--otlp-http-addr",
        "--zipkin-addr",
        "--http-addr",
    ] {
        match listeners.iter().find(|(f, _)| *f == flag) {
            Some((_, addr)) => c.args([flag, addr]),
            None => c.args([flag, &free_addr().to_string()]),
        };
    }
    c
}

fn start(data: &Path) -> Command {
    start_with(data, &[])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed by a signal")
}

#[test]
fn check_config_accepts_a_valid_configuration_without_binding_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[queue]\nmax_spans = 1000\n[limits]\nmemory_limit_mib = 256\n",
    )
    .unwrap();
    // The configured address is taken: a start would fail, check-config does not bind.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let data = dir.path().join("never-created");
    let o = run(Command::new(BIN)
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .args(["--otlp-http-addr", &busy.local_addr().unwrap().to_string()]));
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(out.contains("c.toml"), "{out}");
    // A 256 MiB memory limit with default request limits is valid (derived 4/16 MiB).
    assert!(out.contains("requests up to 4194304 bytes"), "{out}");
    assert!(!data.exists(), "check-config created the data directory");
}

#[test]
fn check_config_rejects_bad_files_overrides_and_values_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[queue]\nmax_spanz = 1\n").unwrap();
    let o = run(Command::new(BIN)
        .arg("check-config")
        .arg("--config")
        .arg(&file));
    assert_eq!(code(&o), 2);
    let err = text(&o.stderr);
    assert!(err.contains("max_spanz") && err.contains("c.toml"), "{err}");

    let o = run(Command::new(BIN)
        .arg("check-config")
        .env("FERROTRACE__QUEUE__NOPE", "1"));
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("FERROTRACE__QUEUE__NOPE"),
        "{}",
        text(&o.stderr)
    );

    // Valid syntax, invalid together: request limits too big for the budget.
    std::fs::write(
        &file,
        "[limits]\nmemory_limit_mib = 160\nmax_request_bytes = 8388608\nmax_decompressed_bytes = 33554432\n",
    )
    .unwrap();
    let o = run(Command::new(BIN)
        .arg("check-config")
        .arg("--config")
        .arg(&file));
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("limits.max_inflight_bytes"),
        "{}",
        text(&o.stderr)
    );

    // A file the configuration names (a token file) that cannot be read.
    std::fs::write(
        &file,
        "[auth]\nquery_tokens_file = \"/nonexistent/tokens\"\n",
    )
    .unwrap();
    let o = run(Command::new(BIN)
        .arg("check-config")
        .arg("--config")
        .arg(&file));
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("/nonexistent/tokens"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_start_with_a_bad_configuration_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(start(&dir.path().join("data")).args(["--wal-fsync", "sometimes"]));
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--wal-fsync"));
    let o = run(start(&dir.path().join("data")).args(["--storage", "postgres"]));
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("storage.url"),
        "{}",
        text(&o.stderr)
    );
    let o = run(start(&dir.path().join("data")).args([
        "--storage",
        "postgres",
        "--storage-url",
        "mysql://nope",
    ]));
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
}

#[test]
fn address_in_use_exits_3_naming_the_listener_and_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let o = run(&mut start_with(
        &dir.path().join("data"),
        &[("--zipkin-addr", &addr)],
    ));
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains(&addr) && err.contains("zipkin"), "{err}");
    assert!(err.contains("--zipkin-addr"), "{err}");
    assert!(err.contains("server.zipkin_addr"), "{err}");
    assert!(
        !err.contains("configuration from"),
        "not a configuration error: {err}"
    );
    assert_eq!(
        err.matches("Address already in use").count(),
        1,
        "the cause once: {err}"
    );
}

#[test]
fn sampling_addr_turns_the_sampling_api_on_and_a_busy_one_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr().to_string();
    let o = run(Command::new(BIN)
        .arg("check-config")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--sampling-addr", &addr]));
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains(&format!("sampling api: {addr}")), "{out}");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let o = run(start(&dir.path().join("data")).args(["--sampling-addr", &busy_addr]));
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("--sampling-addr") && err.contains("sampling_api.addr"),
        "{err}"
    );
}

#[test]
fn permission_denied_on_a_privileged_port_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut cmd = if euid() == 0 {
        // Root may bind any port: run as nobody, which may not.
        chown_nobody(dir.path());
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(BIN);
        c
    } else {
        Command::new(BIN)
    };
    cmd.arg("--data-dir").arg(&data).args([
        "--otlp-grpc-addr",
        "",
        "--zipkin-addr",
        "",
        "--otlp-http-addr",
        &free_addr().to_string(),
        "--http-addr",
        "127.0.0.1:1",
    ]);
    let o = run(&mut cmd);
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("--http-addr"),
        "{err}"
    );
    assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");
}

#[test]
fn unusable_storage_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    // The data directory is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = run(&mut start(&file));
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("data directory"),
        "{}",
        text(&o.stderr)
    );
    // The write-ahead log's directory is a file.
    let data = dir.path().join("data");
    let o = run(start(&data).env("FERROTRACE__WAL__DIR", file.to_str().unwrap()));
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("write-ahead log"),
        "{}",
        text(&o.stderr)
    );
    // The SQLite database is a directory.
    let db = dir.path().join("db-dir");
    std::fs::create_dir(&db).unwrap();
    let o = run(start(&data).args(["--storage-url", db.to_str().unwrap()]));
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("SQLite"), "{}", text(&o.stderr));
}

#[test]
fn json_log_format_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let o = run(
        start_with(&dir.path().join("data"), &[("--otlp-http-addr", &addr)])
            .args(["--log-format", "json"]),
    );
    assert_eq!(code(&o), 3);
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    let last: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["fields"]["exit_code"], 3);
    assert!(
        last["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("--otlp-http-addr"),
        "{last}"
    );
    let o = run(Command::new(BIN).args(["--log-format", "xml", "check-config"]));
    assert_eq!(code(&o), 2, "clap's usage error");
}

#[test]
fn help_mentions_environment_overrides_and_exit_codes() {
    let o = run(Command::new(BIN).arg("--help"));
    assert_eq!(code(&o), 0);
    let help = text(&o.stdout);
    for want in [
        "FERROTRACE__SECTION__KEY",
        "check-config",
        "--log-format",
        "Exit codes",
    ] {
        assert!(help.contains(want), "{want} missing from --help:\n{help}");
    }
}

fn euid() -> u32 {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn chown_nobody(dir: &Path) {
    let st = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(st.success());
    // The temp dir's parent must be traversable by nobody (it is /tmp).
}

/// `GET /healthz` on loopback `port`: true once it answers 200.
fn healthz_ok(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let req =
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if c.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

#[test]
fn a_query_listener_beyond_loopback_without_a_token_warns_at_start() {
    for (host, warns) in [("0.0.0.0", true), ("127.0.0.1", false)] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().port();
        let addr = format!("{host}:{port}");
        let mut cmd = start_with(&dir.path().join("data"), &[("--http-addr", &addr)]);
        for (k, _) in std::env::vars() {
            if k.starts_with("FERROTRACE") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the collector");
        // The query router (and its warning) is built before it answers.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthz_ok(port) {
            if Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
                let _ = child.kill();
                let o = child.wait_with_output().expect("output");
                panic!("{addr}: /healthz never answered: {}", text(&o.stderr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().expect("kill");
        let err = text(&child.wait_with_output().expect("output").stderr);
        assert_eq!(
            err.contains("listen beyond loopback without a query token"),
            warns,
            "{addr}: {err}"
        );
    }
}
