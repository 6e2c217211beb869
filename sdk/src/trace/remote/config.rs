//! Remote sampler configuration: the strategy URL and
//! `OTEL_TRACES_SAMPLER_ARG` for `jaeger_remote`.

use std::time::Duration;

use super::{RemoteSampler, RemoteSamplerBuilder};
use crate::trace::sampler::Sampler;

/// Default sampling server: the ferrotrace collector's (and Jaeger's) port 5778.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:5778";
/// Path requested when the endpoint has none.
const DEFAULT_PATH: &str = "/api/sampling";

/// Everything but RFC 3986's unreserved characters is escaped in the service name.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a remote sampler could not be configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteSamplerConfigError {
    /// The endpoint is not a usable `http://` URL.
    #[error("invalid remote sampling endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A part of `OTEL_TRACES_SAMPLER_ARG` is invalid (its default is used).
    #[error("OTEL_TRACES_SAMPLER_ARG for jaeger_remote: {0}")]
    Arg(String),
    /// The poller thread could not be started.
    #[error("cannot start the remote sampler's thread: {0}")]
    Thread(String),
}

/// The URL requested: the endpoint (its path, or `/api/sampling` when it
/// has none) with `service=<name>` added to its query.
pub(crate) fn strategy_url(
    endpoint: &str,
    service: &str,
) -> Result<String, RemoteSamplerConfigError> {
    let bad = |reason: &str| RemoteSamplerConfigError::Endpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let e = endpoint.trim();
    let rest = if let Some(rest) = e.strip_prefix("http://") {
        rest
    } else if e.starts_with("https://") {
        return Err(bad(
            "https is not supported by the remote sampler; use an http:// endpoint (a local agent or collector)",
        ));
    } else {
        return Err(bad("expected http://host:port[/path]"));
    };
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let path = if path.is_empty() || path == "/" {
        DEFAULT_PATH
    } else {
        path
    };
    let service: String = percent_encoding::utf8_percent_encode(service, QUERY_VALUE).collect();
    let mut url = format!("http://{authority}{path}?");
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push_str(q);
        url.push('&');
    }
    url.push_str("service=");
    url.push_str(&service);
    url.parse::<http::Uri>().map_err(|e| bad(&e.to_string()))?;
    Ok(url)
}

/// A builder from a `jaeger_remote` argument (`endpoint=..,pollingIntervalMs=..,initialSamplingRate=..`),
/// and the problems found (each part that is invalid keeps its default).
pub(crate) fn builder_from_arg(
    arg: &str,
    service: &str,
) -> (RemoteSamplerBuilder, Vec<RemoteSamplerConfigError>) {
    let mut b = RemoteSampler::builder(service);
    let mut problems = Vec::new();
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            problems.push(RemoteSamplerConfigError::Arg(format!(
                "{part:?} is not key=value (keys: endpoint, pollingIntervalMs, initialSamplingRate)"
            )));
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "endpoint" => b = b.with_endpoint(v),
            "pollingIntervalMs" => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => b = b.with_polling_interval(Duration::from_millis(ms)),
                _ => problems.push(RemoteSamplerConfigError::Arg(format!(
                    "pollingIntervalMs={v:?} is not a positive number of milliseconds; using 60000"
                ))),
            },
            "initialSamplingRate" => match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => {
                    b = b.with_initial_sampler(Sampler::consistent_probability(r))
                }
                _ => problems.push(RemoteSamplerConfigError::Arg(format!(
                    "initialSamplingRate={v:?} is not a probability in [0, 1]; using 0.001"
                ))),
            },
            other => problems.push(RemoteSamplerConfigError::Arg(format!(
                "unknown key {other:?} ignored (keys: endpoint, pollingIntervalMs, initialSamplingRate)"
            ))),
        }
    }
    (b, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = |e| strategy_url(e, "my svc/é");
        assert_eq!(
            u("http://localhost:5778").unwrap(),
            "http://localhost:5778/api/sampling?service=my%20svc%2F%C3%A9"
        );
        assert_eq!(
            u("http://agent:5778/sampling").unwrap(),
            "http://agent:5778/sampling?service=my%20svc%2F%C3%A9"
        );
        assert_eq!(
            u("http://h:1/x?a=b").unwrap(),
            "http://h:1/x?a=b&service=my%20svc%2F%C3%A9"
        );
        assert_eq!(
            u(" http://h:1/ ").unwrap(),
            "http://h:1/api/sampling?service=my%20svc%2F%C3%A9"
        );
        for bad in [
            "https://h:1",
            "h:1",
            "http://",
            "http:///x",
            "http://h h:1",
            "",
        ] {
            assert!(u(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arg_parsing_reports_each_bad_part() {
        let (b, problems) = builder_from_arg(
            "endpoint=http://c:5778,pollingIntervalMs=250,initialSamplingRate=0.5",
            "s",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(b.endpoint, "http://c:5778");
        assert_eq!(b.interval, Duration::from_millis(250));
        assert!(
            matches!(b.initial, Sampler::ConsistentProbability(ref c) if c.probability() == 0.5)
        );
        let (b, problems) = builder_from_arg(
            "pollingIntervalMs=-1,initialSamplingRate=2,foo=1,novalue",
            "s",
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(b.interval, super::super::DEFAULT_POLLING_INTERVAL);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(text[0].contains("pollingIntervalMs=\"-1\""), "{text:?}");
        assert!(text[1].contains("initialSamplingRate=\"2\""), "{text:?}");
        assert!(text[2].contains("unknown key \"foo\""), "{text:?}");
        assert!(text[3].contains("\"novalue\" is not key=value"), "{text:?}");
    }
}
