//! Jaeger gRPC: `jaeger.api_v2.CollectorService/PostSpans` (the Jaeger
//! collector's port 14250). Served like OTLP/gRPC (`receiver::grpc_unary::serve_unary`):
//! the request message is kept as raw bytes (they go to the WAL as sent),
//! limits, bearer token and in-flight budget are checked before decoding,
//! and the answer comes only once the spans are in the WAL. Jaeger has no
//! partial success: rejected spans are counted and logged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::Status;

use super::proto::pb::PostSpansResponse;
use crate::metrics::Source;
use crate::receiver::format::RecordFormat;
use crate::receiver::grpc_unary::{decode_and_submit, serve_unary, unimplemented};
use crate::receiver::Ingest;
use crate::sampling_api::grpc::{self as sampling_grpc, GET_SAMPLING_STRATEGY_PATH};
use crate::sampling_api::SamplingState;

/// Full method path.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// The gRPC service; serve it on its own listener.
#[derive(Clone, Debug)]
pub struct CollectorServiceServer {
    ingest: Arc<Ingest>,
    sampling: Option<SamplingState>,
}

impl CollectorServiceServer {
    /// Wraps the ingest path.
    pub fn new(ingest: Arc<Ingest>) -> Self {
        CollectorServiceServer {
            ingest,
            sampling: None,
        }
    }

    /// Also serves `jaeger.api_v2.SamplingManager/GetSamplingStrategy`, as
    /// Jaeger's collector does on this port.
    pub fn with_sampling(mut self, sampling: Option<SamplingState>) -> Self {
        self.sampling = sampling;
        self
    }
}

impl tonic::server::NamedService for CollectorServiceServer {
    const NAME: &'static str = "jaeger.api_v2.CollectorService";
}

#[derive(Clone)]
struct PostSpansSvc(Arc<Ingest>);

async fn post_spans(
    ing: Arc<Ingest>,
    req: tonic::Request<Bytes>,
) -> Result<tonic::Response<PostSpansResponse>, Status> {
    let ack = decode_and_submit(&ing, Source::JaegerGrpc, RecordFormat::JaegerProto, req).await?;
    if ack.rejected > 0 {
        tracing::debug!(rejected = ack.rejected, message = %ack.error_message, "jaeger gRPC spans rejected");
    }
    Ok(tonic::Response::new(PostSpansResponse {}))
}

impl tonic::server::UnaryService<Bytes> for PostSpansSvc {
    type Response = PostSpansResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        Box::pin(post_spans(self.0.clone(), request))
    }
}

impl<B> tower::Service<http::Request<B>> for CollectorServiceServer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ingest = self.ingest.clone();
        if req.uri().path() == POST_SPANS_PATH {
            let svc = PostSpansSvc(ingest.clone());
            Box::pin(serve_unary(
                ingest,
                req,
                Source::JaegerGrpc,
                RecordFormat::JaegerProto,
                svc,
            ))
        } else if let (Some(s), GET_SAMPLING_STRATEGY_PATH) = (&self.sampling, req.uri().path()) {
            sampling_grpc::serve(
                s.clone(),
                ingest,
                req,
                Source::JaegerGrpc,
                RecordFormat::JaegerProto,
            )
        } else {
            Box::pin(async { Ok(unimplemented()) })
        }
    }
}
