//! OTLP/gRPC transport: tonic's `TraceServiceClient` from `opentelemetry-proto`.

use std::time::Duration;

use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::config::{Compression, ConfigError, OtlpConfig};
use super::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, EXPORT_PATH,
};
use super::rpc::retry_delay_from_status_details;
use crate::export::retry::AttemptError;

pub(crate) struct GrpcTransport {
    /// A plain unary gRPC client for `TraceService/Export` (what generated
    /// client code does, without the generated code).
    client: Grpc<Channel>,
    metadata: MetadataMap,
}

impl GrpcTransport {
    /// Must run inside the exporter's runtime: the lazy channel spawns its worker there.
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidEndpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .timeout(config.timeout);
        let https = config.endpoint.starts_with("https://");
        #[cfg(feature = "tls")]
        let endpoint = if https {
            let tls = tonic::transport::ClientTlsConfig::new();
            let tls = match &config.ca_certificate {
                Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(ca.pem())),
                None => tls.with_webpki_roots(),
            };
            let tls = match &config.client_identity {
                Some(id) => tls.identity(tonic::transport::Identity::from_pem(
                    id.cert_pem(),
                    id.key_pem(),
                )),
                None => tls,
            };
            endpoint
                .tls_config(tls)
                .map_err(|e| invalid(e.to_string()))?
        } else {
            endpoint
        };
        #[cfg(not(feature = "tls"))]
        if https {
            return Err(ConfigError::FeatureDisabled {
                what: format!("the https endpoint {}", config.endpoint),
                feature: "tls",
            });
        }
        let mut client = Grpc::new(endpoint.connect_lazy());
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        let mut metadata = MetadataMap::new();
        for (k, v) in &config.headers {
            let key =
                MetadataKey::from_bytes(k.as_bytes()).map_err(|e| ConfigError::InvalidHeader {
                    name: k.clone(),
                    reason: e.to_string(),
                })?;
            let value =
                MetadataValue::try_from(v.as_str()).map_err(|e| ConfigError::InvalidHeader {
                    name: k.clone(),
                    reason: e.to_string(),
                })?;
            metadata.insert(key, value);
        }
        Ok(GrpcTransport { client, metadata })
    }

    pub(crate) async fn send(
        &mut self,
        request: &ExportTraceServiceRequest,
        timeout: Duration,
    ) -> Result<ExportTraceServiceResponse, AttemptError> {
        let mut req = tonic::Request::new(request.clone());
        *req.metadata_mut() = self.metadata.clone();
        req.set_timeout(timeout);
        if let Err(e) = self.client.ready().await {
            return Err(classify(&tonic::Status::unavailable(format!(
                "the channel is not ready: {e}"
            ))));
        }
        let codec = tonic_prost::ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        match self.client.unary(req, path, codec).await {
            Ok(resp) => Ok(resp.into_inner()),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// Sorts a gRPC failure into retryable or not, as the OTLP specification lists.
pub fn classify(status: &tonic::Status) -> AttemptError {
    let retry_after = retry_delay_from_status_details(status.details());
    let mut message = format!("gRPC {:?}: {}", status.code(), status.message());
    // Transport failures keep their cause (h2 or I/O error) in the source
    // chain, not in the message: it is what tells a wrong port from a dead one.
    let mut src = std::error::Error::source(status);
    while let Some(e) = src {
        let text = e.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        src = e.source();
    }
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Cancelled
        | Code::DataLoss => AttemptError::Retryable {
            message,
            retry_after,
        },
        // Only retryable when the server says the condition is temporary.
        Code::ResourceExhausted if retry_after.is_some() => AttemptError::Retryable {
            message,
            retry_after,
        },
        _ => AttemptError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::rpc::encode_retry_status;

    #[test]
    fn classification_follows_the_spec() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Cancelled,
            Code::DataLoss,
        ] {
            assert!(matches!(
                classify(&tonic::Status::new(code, "x")),
                AttemptError::Retryable { .. }
            ));
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Unimplemented,
        ] {
            assert!(matches!(
                classify(&tonic::Status::new(code, "x")),
                AttemptError::Permanent(_)
            ));
        }
        let details = encode_retry_status(8, "busy", Duration::from_millis(300));
        let st = tonic::Status::with_details(Code::ResourceExhausted, "busy", details.into());
        assert_eq!(
            classify(&st),
            AttemptError::Retryable {
                message: "gRPC ResourceExhausted: busy".into(),
                retry_after: Some(Duration::from_millis(300))
            }
        );
    }
}
