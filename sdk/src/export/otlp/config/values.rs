//! Parsing and checking of endpoint URLs and header lists (from the
//! environment or the builder).

use super::ConfigError;

pub(crate) fn set_header(headers: &mut Vec<(String, String)>, k: String, v: String) {
    let k = k.to_ascii_lowercase();
    if let Some(e) = headers.iter_mut().find(|(n, _)| *n == k) {
        e.1 = v;
    } else {
        headers.push((k, v));
    }
}

/// Adds `default_scheme://` to a bare `host:port` and checks the URL parses.
pub(super) fn normalize_endpoint(e: &str, default_scheme: &str) -> Result<String, ConfigError> {
    let e = e.trim();
    let with_scheme = if e.contains("://") {
        e.to_string()
    } else {
        format!("{default_scheme}://{e}")
    };
    let uri: http::Uri =
        with_scheme
            .parse()
            .map_err(|err: http::uri::InvalidUri| ConfigError::InvalidEndpoint {
                endpoint: e.to_string(),
                reason: err.to_string(),
            })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        other => {
            return Err(ConfigError::InvalidEndpoint {
                endpoint: e.to_string(),
                reason: format!("scheme {other:?} is not http or https"),
            })
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::InvalidEndpoint {
            endpoint: e.to_string(),
            reason: "no host".into(),
        });
    }
    Ok(with_scheme)
}

pub(super) fn validate_header(k: &str, v: &str) -> Result<(), ConfigError> {
    http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| ConfigError::InvalidHeader {
        name: k.to_string(),
        reason: e.to_string(),
    })?;
    http::HeaderValue::from_str(v).map_err(|e| ConfigError::InvalidHeader {
        name: k.to_string(),
        reason: e.to_string(),
    })?;
    Ok(())
}

/// Parses the W3C-baggage-like `key1=value1,key2=value2` list of
/// `OTEL_EXPORTER_OTLP_HEADERS`; values are percent-decoded.
pub fn parse_headers(var: &'static str, s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once('=').ok_or(ConfigError::InvalidEnv {
            var,
            value: s.to_string(),
            reason: "use comma-separated key=value pairs",
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(ConfigError::InvalidEnv {
                var,
                value: s.to_string(),
                reason: "a header name is empty",
            });
        }
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8_lossy()
            .into_owned();
        out.push((k.to_ascii_lowercase(), v));
    }
    Ok(out)
}
