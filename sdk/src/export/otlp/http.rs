//! OTLP/HTTP transport (protobuf or JSON bodies) on hyper.

use super::proto::collector::trace::v1::ExportTraceServiceResponse;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT,
};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prost::Message;

use super::config::{Compression, ConfigError, OtlpConfig, Protocol};
use super::rpc::RpcStatus;
use crate::export::retry::{is_retryable_http_status, parse_retry_after, AttemptError};

/// Largest response body read; OTLP responses are tiny, so anything bigger is
/// cut off rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest server error text kept in a message.
const MAX_ERROR_TEXT: usize = 256;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

pub(crate) struct HttpTransport {
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    json: bool,
}

impl HttpTransport {
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, ConfigError> {
        let uri: Uri = config
            .endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConfigError::InvalidEndpoint {
                endpoint: config.endpoint.clone(),
                reason: e.to_string(),
            })?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.timeout.min(std::time::Duration::from_secs(5))));
        http.set_nodelay(true);
        #[cfg(feature = "tls")]
        let connector = {
            http.enforce_http(false);
            let tls_failed = |e: rustls::Error| ConfigError::InvalidEndpoint {
                endpoint: config.endpoint.clone(),
                reason: format!("TLS setup failed: {e}"),
            };
            let roots = match &config.ca_certificate {
                Some(ca) => ca.root_store(),
                None => rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(tls_failed)?
            .with_root_certificates(roots);
            let tls = match &config.client_identity {
                Some(id) => tls
                    .with_client_auth_cert(id.certs()?, id.key()?)
                    .map_err(|e| ConfigError::ClientIdentity {
                        source_desc: id.source().to_string(),
                        reason: e.to_string(),
                    })?,
                None => tls.with_no_client_auth(),
            };
            let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        #[cfg(not(feature = "tls"))]
        let connector = {
            if uri.scheme_str() == Some("https") {
                return Err(ConfigError::FeatureDisabled {
                    what: format!("the https endpoint {}", config.endpoint),
                    feature: "tls",
                });
            }
            http
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(2)
            .build(connector);

        let json = config.protocol == Protocol::HttpJson;
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| ConfigError::InvalidHeader {
                    name: k.clone(),
                    reason: e.to_string(),
                })?;
            let value = HeaderValue::from_str(v).map_err(|e| ConfigError::InvalidHeader {
                name: k.clone(),
                reason: e.to_string(),
            })?;
            headers.insert(name, value);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if json {
                "application/json"
            } else {
                "application/x-protobuf"
            }),
        );
        if config.compression == Compression::Gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("ferrotrace/", env!("CARGO_PKG_VERSION"))),
        );
        Ok(HttpTransport {
            client,
            uri,
            headers,
            json,
        })
    }

    pub(crate) async fn send(
        &self,
        body: Bytes,
    ) -> Result<ExportTraceServiceResponse, AttemptError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| AttemptError::Retryable {
                message: format!("cannot reach {}: {}", self.uri, error_chain(&e)),
                retry_after: None,
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let is_proto = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-protobuf"));
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes());
        if status.is_success() {
            // The batch was accepted; an unreadable body only loses the
            // partial-success details.
            let body = body.unwrap_or_default();
            return Ok(self.decode_response(&body).unwrap_or_default());
        }
        let text = body
            .map(|b| error_text(&b, is_proto))
            .unwrap_or_else(|e| format!("(unreadable body: {e})"));
        let message = format!("HTTP {} from {}: {}", status.as_u16(), self.uri, text);
        if is_retryable_http_status(status.as_u16()) {
            Err(AttemptError::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(AttemptError::Permanent(message))
        }
    }

    fn decode_response(&self, body: &[u8]) -> Option<ExportTraceServiceResponse> {
        if body.is_empty() {
            return None;
        }
        if self.json {
            super::json::response_from_json(body)
        } else {
            ExportTraceServiceResponse::decode(body).ok()
        }
    }
}

/// A short, printable description of a server's error body.
fn error_text(body: &[u8], is_proto: bool) -> String {
    if is_proto {
        if let Ok(st) = RpcStatus::decode(body) {
            return truncate(st.message);
        }
    }
    truncate(String::from_utf8_lossy(body).into_owned())
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
