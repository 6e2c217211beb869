//! `[route]`: the router role (`--route-to`). Empty `backends` and no
//! `dns_name` (the default) means the collector stores spans itself.

use serde::{Deserialize, Serialize};

/// Why `[route]` is unusable; reported at start (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RouteConfigError(pub String);

/// The router role: forward every span, by trace id, to backend collectors.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Backend collectors' OTLP/gRPC addresses, `host:port`, each optionally
    /// followed by `@http_port`: the port of that backend's query/metrics
    /// listener, whose `/readyz` is the health check (default: `health_port`).
    pub backends: Vec<String>,
    /// A DNS name (`name:grpc_port`) resolved every `dns_interval_ms`; each
    /// A/AAAA address is a backend (a Kubernetes headless service). Its
    /// backends are health-checked on `health_port`.
    pub dns_name: String,
    /// How often `dns_name` is resolved again (milliseconds).
    pub dns_interval_ms: u64,
    /// The backends' query/metrics port for `GET /readyz`, unless a backend
    /// names its own with `@port`.
    pub health_port: u16,
    /// How often each backend's `/readyz` is asked (milliseconds).
    pub health_interval_ms: u64,
    /// A health check that has not answered within this is a failure (milliseconds).
    pub health_timeout_ms: u64,
    /// Consecutive failed health checks (or forwards) after which a backend
    /// leaves the ring; one successful check brings it back.
    pub unhealthy_after: u32,
    /// One forward request that has not been acknowledged within this is a
    /// failure, retried (milliseconds).
    pub forward_timeout_ms: u64,
    /// Spans per forwarded request at most (a batch for one backend is split).
    pub max_spans_per_request: usize,
    /// Recent trace ids remembered with the backend they went to, to count
    /// traces split by a membership change (`ferrotrace_route_split_traces_total`);
    /// oldest forgotten first.
    pub recent_traces: usize,
    /// Spans acknowledged by a backend in a batch that is being retried
    /// (another backend failed), remembered so that the retry does not send
    /// them again; oldest forgotten first (then resent: backends' idempotent
    /// writes absorb it).
    pub acked_spans: usize,
    /// File whose first line (after blank lines and `#` comments) is the
    /// bearer token sent to the backends (`authorization: Bearer ...`), for
    /// backends with `[auth] receiver_tokens`. Never logged.
    pub token_file: Option<std::path::PathBuf>,
    /// OTLP protobuf requests (gRPC and HTTP) are forwarded without being
    /// decoded into spans: the router scans them for each span's trace id
    /// (with the decoder's checks and rejections) and copies each span's
    /// bytes, with its resource and scope, into the request for its
    /// backend. `false` decodes and re-encodes them like every other
    /// protocol (which is always done for OTLP/JSON, Zipkin, Jaeger and
    /// WAL replay).
    pub reslice: bool,
    /// PEM file with the CA certificate(s) that signed the backends'
    /// certificates: forwarding and health checks then use TLS (the
    /// backends serve it with `[tls]`). Unset: plain TCP.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The name checked in every backend's certificate; empty: the host of
    /// each backend's address.
    pub tls_server_name: String,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            backends: Vec::new(),
            dns_name: String::new(),
            dns_interval_ms: 10_000,
            health_port: 16686,
            health_interval_ms: 1_000,
            health_timeout_ms: 1_000,
            unhealthy_after: 3,
            forward_timeout_ms: 5_000,
            max_spans_per_request: 2_000,
            recent_traces: 100_000,
            acked_spans: 100_000,
            token_file: None,
            reslice: true,
            tls_ca_file: None,
            tls_server_name: String::new(),
        }
    }
}

/// One configured backend: where to forward and where to ask `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendAddr {
    /// `host:port` of its OTLP/gRPC receiver; also its name in the ring.
    pub grpc: String,
    /// `host:port` of its query/metrics listener.
    pub health: String,
}

impl RouteConfig {
    /// True when the collector runs as a router.
    pub fn enabled(&self) -> bool {
        !self.backends.is_empty() || !self.dns_name.is_empty()
    }

    /// Parses `backends` (and checks `dns_name`): every entry must be
    /// `host:port` or `host:port@port`, with no duplicates.
    pub fn static_backends(&self) -> Result<Vec<BackendAddr>, RouteConfigError> {
        let mut out: Vec<BackendAddr> = Vec::new();
        for raw in &self.backends {
            let b = parse_backend(raw, self.health_port)?;
            if out.iter().any(|o| o.grpc == b.grpc) {
                return Err(RouteConfigError(format!(
                    "route.backends lists {:?} twice",
                    b.grpc
                )));
            }
            out.push(b);
        }
        if !self.dns_name.is_empty() {
            split_host_port(&self.dns_name).map_err(|e| {
                RouteConfigError(format!("route.dns_name = {:?}: {e}", self.dns_name))
            })?;
        }
        Ok(out)
    }

    /// The bearer token for the backends, read from `token_file`.
    pub fn token(&self) -> Result<Option<String>, RouteConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            RouteConfigError(format!(
                "cannot read route.token_file {}: {e}",
                path.display()
            ))
        })?;
        let token = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| {
                RouteConfigError(format!(
                    "route.token_file {} holds no token",
                    path.display()
                ))
            })?;
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RouteConfigError(format!(
                "route.token_file {}: the token must be printable ASCII without spaces",
                path.display()
            )));
        }
        Ok(Some(token.to_string()))
    }

    /// Checks every key; called by `Config::validate`.
    pub fn validate(&self) -> Result<(), RouteConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        self.static_backends()?;
        for (name, v) in [
            ("route.health_interval_ms", self.health_interval_ms),
            ("route.health_timeout_ms", self.health_timeout_ms),
            ("route.forward_timeout_ms", self.forward_timeout_ms),
            ("route.dns_interval_ms", self.dns_interval_ms),
        ] {
            if v == 0 {
                return Err(RouteConfigError(format!("{name} must be above 0")));
            }
        }
        if self.unhealthy_after == 0 {
            return Err(RouteConfigError(
                "route.unhealthy_after must be at least 1".into(),
            ));
        }
        if self.max_spans_per_request == 0 {
            return Err(RouteConfigError(
                "route.max_spans_per_request must be above 0".into(),
            ));
        }
        if self.health_port == 0 {
            return Err(RouteConfigError(
                "route.health_port must be a port (the backends' query/metrics listener)".into(),
            ));
        }
        Ok(())
    }
}

/// `host:port` → (host, port), with a clear message for what is wrong.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port (e.g. backend-1:4317)".to_string())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    if port == 0 {
        return Err("port 0 is not a backend's port".into());
    }
    Ok((host, port))
}

fn parse_backend(raw: &str, health_port: u16) -> Result<BackendAddr, RouteConfigError> {
    let bad = |why: String| {
        RouteConfigError(format!(
            "route backend {raw:?}: {why} (expected host:grpc_port or host:grpc_port@http_port)"
        ))
    };
    let raw = raw.trim();
    let (grpc, http) = match raw.split_once('@') {
        Some((g, h)) => (g, Some(h)),
        None => (raw, None),
    };
    let (host, _) = split_host_port(grpc).map_err(bad)?;
    let hp = match http {
        Some(h) => h
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("{h:?} is not an HTTP port")))?,
        None => health_port,
    };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(BackendAddr {
        grpc: grpc.to_string(),
        health: format!("{host_part}:{hp}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(backends: &[&str]) -> RouteConfig {
        RouteConfig {
            backends: backends.iter().map(|s| s.to_string()).collect(),
            ..RouteConfig::default()
        }
    }

    #[test]
    fn backends_parse_with_and_without_a_health_port() {
        let b = cfg(&["a:4317", "10.0.0.2:4317@8080", "[::1]:4317"])
            .static_backends()
            .unwrap();
        assert_eq!(b[0].health, "a:16686");
        assert_eq!(b[1].grpc, "10.0.0.2:4317");
        assert_eq!(b[1].health, "10.0.0.2:8080");
        assert_eq!(b[2].health, "[::1]:16686");
    }

    #[test]
    fn bad_backends_are_named_in_the_error() {
        for (bad, needle) in [
            ("nohost", "host:port"),
            (":4317", "not a host"),
            ("a:99999", "not a port"),
            ("a:0", "port 0"),
            ("a:4317@x", "not an HTTP port"),
            ("a:4317@0", "not an HTTP port"),
            ("http://a:4317", "not a host"),
            ("a b:1", "not a host"),
        ] {
            let e = cfg(&[bad]).validate().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains(needle), "{bad}: {e}");
        }
        let e = cfg(&["a:1", "a:1@5"]).validate().unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn zero_timings_are_refused() {
        let mut c = cfg(&["a:1"]);
        c.unhealthy_after = 0;
        assert!(c.validate().is_err());
        let mut c = cfg(&["a:1"]);
        c.health_interval_ms = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("health_interval_ms"));
        assert!(RouteConfig::default().validate().is_ok(), "off is valid");
    }
}
