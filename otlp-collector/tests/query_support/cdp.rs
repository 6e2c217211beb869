//! A minimal Chrome DevTools Protocol client for the UI tests: starts headless
//! Chromium on a free port, attaches to one page and speaks CDP over the
//! websocket (tungstenite). Dialogs (`alert`) are recorded and dismissed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Finds Chromium; `None` when it is not installed.
pub fn chromium_path() -> Option<String> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(p);
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(|p| p.to_string())
}

/// Chromium is required in CI; elsewhere a missing browser skips with a reason.
pub fn require_chromium(test: &str) -> Option<String> {
    match chromium_path() {
        Some(p) => Some(p),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: chromium not found (install Debian's `chromium`); CI=true makes this a failure")
        }
        None => {
            eprintln!("SKIPPED {test}: chromium not found at /usr/bin/chromium (apt-get install -y chromium)");
            None
        }
    }
}

/// Where screenshots go: $FERROTRACE_ARTIFACTS, else <target dir>/ui-artifacts.
pub fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::env::var("FERROTRACE_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            let target = std::env::var("CARGO_TARGET_DIR")
                .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
            std::path::PathBuf::from(target).join("ui-artifacts")
        });
    std::fs::create_dir_all(&dir).ok();
    dir
}

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
    /// Messages of JavaScript dialogs that opened (an XSS would show here).
    pub dialogs: Vec<String>,
    /// Console errors and uncaught exceptions.
    pub exceptions: Vec<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    pub fn launch(path: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(i) = line.find("ws://") {
                        let _ = tx.send(line[i..].trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium printed no DevTools URL within 30s");
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        let mut b = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            session: String::new(),
            dialogs: vec![],
            exceptions: vec![],
        };
        let target = b.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let att = b.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        b.session = att["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        b
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if session {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send CDP");
        loop {
            let m = self.ws.read().expect("read CDP");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("CDP {method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.on_event(&v);
        }
    }

    fn on_event(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Page.javascriptDialogOpening") => {
                self.dialogs
                    .push(v["params"]["message"].as_str().unwrap_or("").to_string());
                self.next_id += 1;
                let msg = json!({ "id": self.next_id, "method": "Page.handleJavaScriptDialog", "params": { "accept": true }, "sessionId": self.session });
                let _ = self.ws.send(Message::text(msg.to_string()));
            }
            Some("Runtime.exceptionThrown") => {
                self.exceptions
                    .push(v["params"]["exceptionDetails"].to_string());
            }
            _ => {}
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Evaluates an expression (promises awaited) and returns its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls until `expr` is truthy; panics with `what` and a DOM excerpt after `secs`.
    pub fn wait_for(&mut self, expr: &str, secs: u64, what: &str) -> Duration {
        let t0 = Instant::now();
        let wrapped =
            format!("(() => {{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()");
        loop {
            if self.eval(&wrapped) == json!(true) {
                return t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                let dom = self.eval("document.getElementById('app') ? document.getElementById('app').innerText.slice(0, 2000) : document.body.innerText");
                panic!(
                    "timed out waiting for {what} ({expr}); page shows: {dom}; exceptions: {:?}",
                    self.exceptions
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn screenshot(&mut self, name: &str) -> std::path::PathBuf {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let path = artifacts_dir().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}
