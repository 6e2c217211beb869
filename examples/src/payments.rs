//! The `payments` gRPC service, defined by hand without a `.proto` file or
//! `protoc`: prost-derive messages, `tonic::server::Grpc` with the prost
//! codec on the server, `tonic::client::Grpc` on the client.
//!
//! Service `demo.Payments`, method `Charge(ChargeRequest) -> ChargeReply`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use ferrotrace::context::Context;
use ferrotrace::integrations::http::ClientTraceService;
use ferrotrace::integrations::tonic::GrpcClientLayer;
use ferrotrace::trace::Tracer;
use ferrotrace::KeyValue;

use crate::faults::Faults;

/// The gRPC service name.
pub const SERVICE: &str = "demo.Payments";
/// The full path of the `Charge` method.
pub const CHARGE_PATH: &str = "/demo.Payments/Charge";

/// A charge for an order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChargeRequest {
    /// The order being paid.
    #[prost(string, tag = "1")]
    pub order_id: String,
    /// Amount in cents.
    #[prost(int64, tag = "2")]
    pub amount_cents: i64,
}

/// The result of a charge.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChargeReply {
    /// Payment transaction id.
    #[prost(string, tag = "1")]
    pub transaction_id: String,
    /// The `tenant` baggage entry the payments service received.
    #[prost(string, tag = "2")]
    pub tenant: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The `demo.Payments` server (a tower service tonic's router accepts).
#[derive(Clone, Debug)]
pub struct PaymentsServer {
    tracer: Tracer,
    faults: Faults,
}

impl PaymentsServer {
    /// A server recording its internal spans with `tracer`.
    pub fn new(tracer: Tracer, faults: Faults) -> Self {
        PaymentsServer { tracer, faults }
    }
}

impl tonic::server::NamedService for PaymentsServer {
    const NAME: &'static str = SERVICE;
}

struct Charge {
    tracer: Tracer,
    faults: Faults,
}

impl tonic::server::UnaryService<ChargeRequest> for Charge {
    type Response = ChargeReply;
    type Future = BoxFuture<Result<tonic::Response<ChargeReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ChargeRequest>) -> Self::Future {
        let tracer = self.tracer.clone();
        let faults = self.faults;
        Box::pin(async move {
            let req = request.into_inner();
            if req.amount_cents <= 0 {
                return Err(tonic::Status::invalid_argument(
                    "amount_cents must be positive",
                ));
            }
            // The gRPC server layer made the call's context current.
            let cx = Context::current();
            let tenant = cx.baggage().get("tenant").unwrap_or_default().to_string();
            let mut span = tracer.start("authorize card");
            span.set_attributes([
                KeyValue::new("payment.amount_cents", req.amount_cents),
                KeyValue::new("tenant", tenant.clone()),
            ]);
            let result = faults.apply().await;
            if let Err(e) = &result {
                span.record_error(e);
            }
            drop(span);
            result.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            Ok(tonic::Response::new(ChargeReply {
                transaction_id: format!("tx-{}", ferrotrace::ids::new_span_id()),
                tenant,
            }))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for PaymentsServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != CHARGE_PATH {
            let status = tonic::Status::unimplemented(format!(
                "{} has no method {}",
                SERVICE,
                req.uri().path()
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = Charge {
            tracer: self.tracer.clone(),
            faults: self.faults,
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// The payments endpoint given is not a URI.
#[derive(Debug, thiserror::Error)]
#[error("invalid payments endpoint {0:?}: expected a URI like http://127.0.0.1:50051")]
pub struct InvalidEndpoint(pub String);

/// A traced client of `demo.Payments`.
#[derive(Clone, Debug)]
pub struct PaymentsClient {
    grpc: tonic::client::Grpc<ClientTraceService<tonic::transport::Channel>>,
}

impl PaymentsClient {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:50051`), connecting
    /// lazily; its `CLIENT` spans are recorded with `tracer`.
    pub fn new(endpoint: &str, tracer: Tracer) -> Result<Self, InvalidEndpoint> {
        let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
            .map_err(|_| InvalidEndpoint(endpoint.to_string()))?
            .connect_lazy();
        Ok(PaymentsClient {
            grpc: tonic::client::Grpc::new(
                tower::ServiceBuilder::new()
                    .layer(GrpcClientLayer::new(tracer))
                    .service(channel),
            ),
        })
    }

    /// Calls `Charge`.
    pub async fn charge(&self, request: ChargeRequest) -> Result<ChargeReply, tonic::Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("payments unreachable: {e}")))?;
        let codec = tonic_prost::ProstCodec::<ChargeRequest, ChargeReply>::default();
        grpc.unary(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static(CHARGE_PATH),
            codec,
        )
        .await
        .map(tonic::Response::into_inner)
    }
}
