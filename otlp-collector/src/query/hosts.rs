//! Which host names the query listener answers to. A page on another site
//! can make a browser send requests to the collector through DNS rebinding
//! (its own name resolving to the collector's address); the browser then
//! treats the answers as same-origin and lets the page read them. Such a
//! request carries the attacker's name in `Host`, so the listener answers
//! only names it knows: `localhost` (and `*.localhost`), any IP address
//! literal (a page whose origin is an IP address is either the collector
//! itself or another origin the browser keeps apart), and
//! `[query] allowed_hosts`. Anything else gets 421 Misdirected Request.
//! Probes and scrapes (`/healthz`, `/readyz`, `/metrics`) hold no trace data
//! and are exempt, so orchestrators reaching them by a service name keep
//! working.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// `[query]`: the query listener (`server.http_addr`); `config` re-exports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Host names (without port) that requests to the query API and UI may
    /// carry in `Host` / `:authority`, besides `localhost`, IP addresses and
    /// the listen address: the names a browser or a proxy uses to reach the
    /// collector. Any other name gets 421, which stops DNS-rebinding pages.
    /// `"*"` accepts every name.
    pub allowed_hosts: Vec<String>,
}

/// The names the query listener answers to; see the module docs.
#[derive(Clone, Debug)]
pub struct HostCheck {
    any: bool,
    names: Arc<Vec<String>>,
    metrics: Arc<Metrics>,
}

impl HostCheck {
    /// Accepts the built-in names and `allowed` (`"*"` accepts every name).
    pub fn new(allowed: &[String], metrics: Arc<Metrics>) -> HostCheck {
        let names: Vec<String> = allowed
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        HostCheck {
            any: names.iter().any(|h| h == "*"),
            names: Arc::new(names),
            metrics,
        }
    }

    /// Whether a request addressed to `host` (a `Host` value, port optional) is served.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(name) = host_name(host) else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }
}

/// The name part of a `Host` value: `name`, `name:port`, `[v6]` or `[v6]:port`.
fn host_name(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return Some(&rest[..end]);
    }
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty()).then_some(name)
}

/// Middleware for the query listener: 421 for a host name not allowed.
pub async fn check_host(State(check): State<HostCheck>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    // HTTP/2 carries the name in `:authority` (the URI); HTTP/1 in `Host`.
    // A request with neither does not come from a browser.
    let host = match req.uri().authority() {
        Some(a) => Some(a.as_str().to_string()),
        None => req
            .headers()
            .get(header::HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    };
    match host {
        Some(h) if !check.allows(&h) => {
            check.metrics.requests_failed.add("421", 1);
            let shown: String = h.chars().take(100).collect();
            (
                StatusCode::MISDIRECTED_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!(
                    "host {shown:?} is not served here; if this collector is reached by that \
                     name, add it to [query] allowed_hosts\n"
                ),
            )
                .into_response()
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_loopback_ip_literals_localhost_and_configured_names() {
        let m = Arc::new(Metrics::default());
        let c = HostCheck::new(&["Traces.Example.com".into()], m.clone());
        for ok in [
            "127.0.0.1:16686",
            "127.0.0.1",
            "[::1]:16686",
            "[::1]",
            "10.1.2.3:16686",
            "localhost:16686",
            "LOCALHOST",
            "app.localhost:80",
            "traces.example.com",
            "traces.example.com.:443",
        ] {
            assert!(c.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:16686",
            "example.com",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
            ":16686",
            "[::1]x",
            "host:port",
            "traces.example.com.evil",
        ] {
            assert!(!c.allows(bad), "{bad}");
        }
        assert!(HostCheck::new(&["*".into()], m).allows("anything.example"));
    }
}
