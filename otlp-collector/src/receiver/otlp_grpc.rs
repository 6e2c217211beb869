//! OTLP/gRPC `TraceService/Export`. The request message is taken as raw
//! bytes (a pass-through codec, [`super::grpc_unary`]) so that the exact bytes
//! go to the WAL without re-encoding, and so that an undecodable message is
//! answered with `INVALID_ARGUMENT` naming the problem (tonic's own codec
//! would say INTERNAL).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tonic::Status;

use super::grpc_unary::{decode_and_submit, serve_unary, unimplemented};
use super::Ingest;
use crate::metrics::Source;
use crate::receiver::format::RecordFormat;
use crate::sampling_api::grpc::{self as sampling_grpc, GET_SAMPLING_STRATEGY_PATH};
use crate::sampling_api::SamplingState;

/// Full method path.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC service; add it to a `tonic::transport::Server`.
#[derive(Clone, Debug)]
pub struct TraceServiceServer {
    ingest: Arc<Ingest>,
    sampling: Option<SamplingState>,
}

impl TraceServiceServer {
    /// Wraps the ingest path.
    pub fn new(ingest: Arc<Ingest>) -> Self {
        TraceServiceServer {
            ingest,
            sampling: None,
        }
    }

    /// Also serves `jaeger.api_v2.SamplingManager/GetSamplingStrategy`.
    pub fn with_sampling(mut self, sampling: Option<SamplingState>) -> Self {
        self.sampling = sampling;
        self
    }
}

impl tonic::server::NamedService for TraceServiceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

#[derive(Clone)]
struct ExportSvc(Arc<Ingest>);

async fn export(
    ing: Arc<Ingest>,
    req: tonic::Request<Bytes>,
) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
    // Authentication was checked before the body was read (read_limited_frame).
    let ack = decode_and_submit(&ing, Source::OtlpGrpc, RecordFormat::OtlpProto, req).await?;
    Ok(tonic::Response::new(ExportTraceServiceResponse {
        partial_success: (ack.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: ack.rejected as i64,
            error_message: ack.error_message,
        }),
    }))
}

impl tonic::server::UnaryService<Bytes> for ExportSvc {
    type Response = ExportTraceServiceResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        Box::pin(export(self.0.clone(), request))
    }
}

impl<B> tower::Service<http::Request<B>> for TraceServiceServer
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
        if req.uri().path() == EXPORT_PATH {
            let svc = ExportSvc(ingest.clone());
            Box::pin(serve_unary(
                ingest,
                req,
                Source::OtlpGrpc,
                RecordFormat::OtlpProto,
                svc,
            ))
        } else if let (Some(s), GET_SAMPLING_STRATEGY_PATH) = (&self.sampling, req.uri().path()) {
            sampling_grpc::serve(
                s.clone(),
                ingest,
                req,
                Source::OtlpGrpc,
                RecordFormat::OtlpProto,
            )
        } else {
            Box::pin(async { Ok(unimplemented()) })
        }
    }
}
