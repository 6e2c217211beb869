//! The Debian package, end to end on this machine: `cargo deb` packs the
//! binary the test suite built, `dpkg -i` installs it (the ferrotrace user,
//! /etc/ferrotrace/collector.toml as a conffile, /var/lib/ferrotrace, the
//! systemd unit, which `systemd-analyze verify` checks where available), the
//! installed binary runs with the installed configuration as the ferrotrace
//! user, a trace sent to it is read back through the query API, and
//! `dpkg --purge` removes everything.
//!
//! Needs root, dpkg and cargo-deb (scripts/test.sh installs cargo-deb);
//! without them it is skipped with a printed reason, except under `CI=true`,
//! where it fails. It refuses to touch a ferrotrace-collector package that
//! was installed before it ran.

mod ingest_util;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use support::net::free_addr;
use support::{euid, missing};

const PACKAGE: &str = "ferrotrace-collector";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]))
        .stdout
        .starts_with(b"install ok installed")
}

fn user_exists(name: &str) -> bool {
    run(Command::new("getent").args(["passwd", name]))
        .status
        .success()
}

/// Purges the package (and the user, if this test created it) even when an
/// assertion fails half-way.
struct Cleanup {
    created_user: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if installed() || Path::new("/var/lib/dpkg/info/ferrotrace-collector.list").exists() {
            let _ = run(Command::new("dpkg").args(["--purge", PACKAGE]));
        }
        if self.created_user && user_exists("ferrotrace") {
            let _ = run(Command::new("userdel").arg("ferrotrace"));
            let _ = run(Command::new("groupdel").arg("ferrotrace"));
        }
    }
}

/// Builds the .deb from the binary this test run built (no release build:
/// cargo-deb packs `target/release/ferrotrace-collector`, so the debug
/// binary is placed there in a scratch target directory).
fn build_deb(scratch: &Path) -> PathBuf {
    let release = scratch.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_ferrotrace-collector"),
        release.join("ferrotrace-collector"),
    )
    .expect("copy the binary");
    let out = scratch.join("deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    ok(Command::new(cargo)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        .args([
            "deb",
            "-p",
            PACKAGE,
            "--no-build",
            "--strip",
            "--fast",
            "-o",
        ])
        .arg(&out));
    eprintln!("cargo deb: {:?}", started.elapsed());
    std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb was written")
}

fn mode_owner(path: &str) -> String {
    ok(Command::new("stat").args(["-c", "%a %U:%G", path]))
        .trim()
        .to_string()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deb_installs_runs_as_the_service_user_and_purges() {
    if euid() != 0 {
        missing("the packaging test installs a .deb: it needs root");
        return;
    }
    for tool in ["dpkg", "dpkg-query", "runuser", "setpriv"] {
        if !run(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
            .status
            .success()
        {
            missing(&format!(
                "{tool} not found (the packaging test needs a Debian system)"
            ));
            return;
        }
    }
    if !run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["deb", "--version"]),
    )
    .status
    .success()
    {
        missing("cargo-deb not found: cargo install cargo-deb --version 3.8.0 --locked (scripts/test.sh does)");
        return;
    }
    assert!(
        !installed(),
        "a {PACKAGE} package is already installed on this machine; the test will not replace it"
    );
    let _cleanup = Cleanup {
        created_user: !user_exists("ferrotrace"),
    };
    let scratch = tempfile::tempdir().unwrap();
    let deb = build_deb(scratch.path());

    // Install.
    ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed());
    assert!(
        user_exists("ferrotrace"),
        "postinst creates the service user"
    );
    let passwd = ok(Command::new("getent").args(["passwd", "ferrotrace"]));
    assert!(
        passwd.contains("/var/lib/ferrotrace") && passwd.contains("nologin"),
        "{passwd}"
    );
    assert_eq!(
        mode_owner("/var/lib/ferrotrace"),
        "750 ferrotrace:ferrotrace"
    );
    assert_eq!(
        mode_owner("/etc/ferrotrace/collector.toml"),
        "640 root:ferrotrace"
    );
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(
        conffiles.contains("/etc/ferrotrace/collector.toml"),
        "{conffiles:?}"
    );
    let unit = "/usr/lib/systemd/system/ferrotrace-collector.service";
    let unit_text = std::fs::read_to_string(unit).expect("the systemd unit is installed");
    for want in [
        "User=ferrotrace",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/ferrotrace",
        "PrivateTmp=yes",
    ] {
        assert!(unit_text.contains(want), "{want} missing from the unit");
    }
    let analyze = run(Command::new("sh").args(["-c", "command -v systemd-analyze"]));
    if analyze.status.success() {
        let o = run(Command::new("systemd-analyze").args(["verify", unit]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "systemd-analyze verify: {err}"
        );
        eprintln!("systemd-analyze verify: clean");
    } else {
        eprintln!("systemd-analyze not installed: unit not verified");
    }

    // The installed configuration is valid, as the service user reads it.
    ok(Command::new("runuser").args([
        "-u",
        "ferrotrace",
        "--",
        "/usr/bin/ferrotrace-collector",
        "check-config",
        "--config",
        "/etc/ferrotrace/collector.toml",
    ]));

    // Run it as the service would (no systemd here): the installed binary,
    // the installed configuration, the ferrotrace user. setpriv execs the
    // collector itself (runuser would stay in between and turn SIGTERM into
    // a kill), so the signal below reaches it. Only the listener ports are
    // moved to free ones, so parallel tests cannot collide.
    let (otlp_http, query) = (free_addr(), free_addr());
    let child = Command::new("setpriv")
        .args([
            "--reuid=ferrotrace",
            "--regid=ferrotrace",
            "--init-groups",
            "--",
            "/usr/bin/ferrotrace-collector",
            "--config",
            "/etc/ferrotrace/collector.toml",
            "--otlp-grpc-addr",
            "",
            "--zipkin-addr",
            "",
            "--otlp-http-addr",
            &otlp_http.to_string(),
            "--http-addr",
            &query.to_string(),
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the installed collector");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(get(query, "/readyz").await, Some((200, _))) {
        assert!(
            running.0.try_wait().unwrap().is_none(),
            "the installed collector exited"
        );
        assert!(
            Instant::now() < deadline,
            "the installed collector never got ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = ingest_util::post(
        otlp_http,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        ingest_util::request_with(42, 3).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    let id: String = ingest_util::trace_id(42)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, body)) = get(query, &format!("/api/traces/{id}")).await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["data"][0]["spans"].as_array().map_or(0, Vec::len) == 3 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace not readable from the installed collector"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its data is in /var/lib/ferrotrace, owned by the service user.
    assert!(mode_owner("/var/lib/ferrotrace/ferrotrace.db").ends_with(" ferrotrace:ferrotrace"));
    assert!(mode_owner("/var/lib/ferrotrace/wal").ends_with("ferrotrace:ferrotrace"));
    ok(Command::new("kill").args(["-TERM", &running.0.id().to_string()]));
    let status = running.0.wait().unwrap();
    assert!(status.success(), "graceful shutdown: {status}");

    // Purge removes the binary, the configuration and the data.
    ok(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert!(!installed());
    for gone in [
        "/usr/bin/ferrotrace-collector",
        "/etc/ferrotrace",
        "/var/lib/ferrotrace",
        unit,
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
}

/// The packaged configuration lists each key with its real default: with
/// every `# key = value` line uncommented it is the default configuration.
#[test]
fn packaged_config_comments_show_the_defaults() {
    let text = include_str!("../packaging/collector.toml");
    let parsed = |t: &str| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, t).unwrap();
        ferrotrace_collector::config::Config::load(Some(&p), std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut uncommented = 0;
    let all: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(kv)
                if kv.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                }) =>
            {
                uncommented += 1;
                format!("{kv}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(uncommented > 60, "only {uncommented} keys listed");
    let want = ferrotrace_collector::config::Config {
        data_dir: PathBuf::from("/var/lib/ferrotrace"),
        ..Default::default()
    };
    assert_eq!(format!("{:?}", parsed(&all)), format!("{want:?}"));
    assert_eq!(format!("{:?}", parsed(text)), format!("{want:?}"));
    ferrotrace_collector::server::check_config(&parsed(text)).unwrap();
}
