//! The HTTP and gRPC layers through real servers on loopback: gateway (axum)
//! → orders (axum) → payments (tonic), one trace across three hops.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use ferrotrace::context::{Context, FutureExt};
use ferrotrace::export::{InMemorySpanExporter, SpanData};
use ferrotrace::integrations::http::{ClientTraceService, HttpClientLayer, HttpServerLayer};
use ferrotrace::integrations::tonic::{GrpcClientLayer, GrpcServerLayer};
use ferrotrace::trace::{Sampler, SpanKind, Status, Tracer, TracerProvider};
use ferrotrace::{SpanId, Value};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

// ---- a proto-free tonic service: prost-derive messages + tonic::server::Grpc ----

#[derive(Clone, PartialEq, prost::Message)]
struct ChargeRequest {
    #[prost(string, tag = "1")]
    order_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ChargeReply {
    #[prost(string, tag = "1")]
    tenant: String,
    #[prost(string, tag = "2")]
    trace_id: String,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone)]
struct Payments {
    tracer: Tracer,
}

impl tonic::server::NamedService for Payments {
    const NAME: &'static str = "demo.Payments";
}

struct Charge {
    tracer: Tracer,
    method: &'static str,
}

impl tonic::server::UnaryService<ChargeRequest> for Charge {
    type Response = ChargeReply;
    type Future = BoxFut<Result<tonic::Response<ChargeReply>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<ChargeRequest>) -> Self::Future {
        let tracer = self.tracer.clone();
        let method = self.method;
        Box::pin(async move {
            if method == "Panic" {
                panic!("payments exploded");
            }
            if method == "Fail" {
                return Err(tonic::Status::not_found(format!(
                    "no order {}",
                    req.get_ref().order_id
                )));
            }
            // A child span of the gRPC server span (the layer made it current).
            let _db = tracer.start("charge-db");
            let cx = Context::current();
            Ok(tonic::Response::new(ChargeReply {
                tenant: cx.baggage().get("tenant").unwrap_or_default().to_string(),
                trace_id: cx.span_context().trace_id().to_string(),
            }))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Payments {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = match req.uri().path() {
            "/demo.Payments/Charge" => "Charge",
            "/demo.Payments/Fail" => "Fail",
            "/demo.Payments/Panic" => "Panic",
            _ => {
                return Box::pin(async {
                    Ok(tonic::Status::unimplemented("no such method").into_http())
                })
            }
        };
        let svc = Charge {
            tracer: self.tracer.clone(),
            method,
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(svc, req).await)
        })
    }
}

type GrpcClient = tonic::client::Grpc<ClientTraceService<tonic::transport::Channel>>;

async fn charge(
    client: &GrpcClient,
    method: &str,
    order_id: &str,
) -> Result<ChargeReply, tonic::Status> {
    let mut client = client.clone();
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(format!("/demo.Payments/{method}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<ChargeRequest, ChargeReply>::default();
    let req = tonic::Request::new(ChargeRequest {
        order_id: order_id.to_string(),
    });
    client.unary(req, path, codec).await.map(|r| r.into_inner())
}

// ---- HTTP plumbing ----

type HttpClient = ClientTraceService<Client<HttpConnector, Full<Bytes>>>;

fn http_client(tracer: Tracer) -> HttpClient {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    ServiceBuilder::new()
        .layer(HttpClientLayer::new(tracer))
        .service(client)
}

async fn get_text(client: &HttpClient, url: &str) -> (StatusCode, String) {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.clone().oneshot(req).await.expect("request failed");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

struct Stack {
    exporter: InMemorySpanExporter,
    gateway: SocketAddr,
    orders_grpc: GrpcClient,
    client: HttpClient,
    _provider: TracerProvider,
}

/// A provider that records every span into the returned exporter.
fn recording_provider() -> (TracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::AlwaysOn)
        .with_unended_span_age(None)
        .build();
    (provider, exporter)
}

async fn start_stack() -> Stack {
    let (provider, exporter) = recording_provider();

    // Hop 3: payments (tonic).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let payments_addr = listener.local_addr().unwrap();
    let payments = Payments {
        tracer: provider.tracer("payments"),
    };
    let server = tonic::transport::Server::builder()
        .layer(
            GrpcServerLayer::new(provider.tracer("payments")).with_baggage_attributes(["tenant"]),
        )
        .add_service(payments);
    tokio::spawn(async move {
        server
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{payments_addr}"))
        .unwrap()
        .connect_lazy();
    let orders_grpc: GrpcClient = tonic::client::Grpc::new(
        ServiceBuilder::new()
            .layer(GrpcClientLayer::new(provider.tracer("orders")))
            .service(channel),
    );

    // Hop 2: orders (axum) calls payments.
    let orders = Router::new()
        .route(
            "/orders/{id}",
            get(
                |State(grpc): State<GrpcClient>, Path(id): Path<String>| async move {
                    match charge(&grpc, "Charge", &id).await {
                        Ok(r) => (StatusCode::OK, format!("{} {}", r.tenant, r.trace_id)),
                        Err(s) => (StatusCode::BAD_GATEWAY, s.message().to_string()),
                    }
                },
            ),
        )
        .with_state(orders_grpc.clone())
        .layer(HttpServerLayer::new(provider.tracer("orders")));
    let orders_addr = serve(orders).await;

    // Hop 1: gateway (axum) sets baggage and calls orders.
    let gateway_client = http_client(provider.tracer("gateway"));
    let gateway = Router::new()
        .route(
            "/checkout",
            get(move |State(client): State<HttpClient>| async move {
                let mut baggage = Context::current().baggage().clone();
                baggage.insert("tenant", "acme").unwrap();
                let cx = Context::current().with_baggage(baggage);
                let url = format!("http://{orders_addr}/orders/42");
                let (status, body) = async { get_text(&client, &url).await }
                    .with_context(cx)
                    .await;
                (status, body)
            }),
        )
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/panic",
            get(|| async {
                if Instant::now().elapsed() < Duration::from_secs(3600) {
                    panic!("handler exploded");
                }
                "unreachable"
            }),
        )
        .route(
            "/unavailable",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::unfold(0u32, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    Some((
                        Ok::<_, Infallible>(Bytes::from(format!("chunk{i};"))),
                        i + 1,
                    ))
                });
                axum::body::Body::from_stream(chunks)
            }),
        )
        .with_state(gateway_client)
        .layer(HttpServerLayer::new(provider.tracer("gateway")));
    let gateway = serve(gateway).await;

    Stack {
        exporter,
        gateway,
        orders_grpc,
        client: http_client(provider.tracer("test-client")),
        _provider: provider,
    }
}

/// Spans end when response bodies finish, which can be just after the client
/// has read everything: wait (bounded) for the expected number.
async fn wait_for_spans(exporter: &InMemorySpanExporter, n: usize) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spans = exporter.finished_spans();
        if spans.len() >= n || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn find<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name && s.span_kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} span {name:?} in {:#?}", names(spans)))
}

fn names(spans: &[SpanData]) -> Vec<(String, SpanKind)> {
    spans
        .iter()
        .map(|s| (s.name.to_string(), s.span_kind))
        .collect()
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn assert_child(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{} should be a child of {}",
        child.name,
        parent.name
    );
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hops_one_trace_with_baggage() {
    let stack = start_stack().await;
    let (status, body) =
        get_text(&stack.client, &format!("http://{}/checkout", stack.gateway)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let spans = wait_for_spans(&stack.exporter, 7).await;
    assert_eq!(spans.len(), 7, "{:#?}", names(&spans));

    let client = find(&spans, "GET", SpanKind::Client);
    let client = if client.parent_span_id == SpanId::INVALID {
        client
    } else {
        spans
            .iter()
            .find(|s| {
                s.name == "GET"
                    && s.span_kind == SpanKind::Client
                    && s.parent_span_id == SpanId::INVALID
            })
            .expect("root client span")
    };
    let gateway = find(&spans, "GET /checkout", SpanKind::Server);
    let gateway_out = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Client && s.parent_span_id == gateway.span_context.span_id()
        })
        .expect("gateway client span");
    let orders = find(&spans, "GET /orders/{id}", SpanKind::Server);
    let orders_out = find(&spans, "demo.Payments/Charge", SpanKind::Client);
    let payments = find(&spans, "demo.Payments/Charge", SpanKind::Server);
    let db = find(&spans, "charge-db", SpanKind::Internal);

    assert_child(gateway, client);
    assert_child(gateway_out, gateway);
    assert_child(orders, gateway_out);
    assert_child(orders_out, orders);
    assert_child(payments, orders_out);
    assert_child(db, payments);
    assert!(gateway.parent_is_remote && orders.parent_is_remote && payments.parent_is_remote);

    // Baggage set at hop 1 reached hop 3; hop 3 saw the same trace.
    let trace_id = client.span_context.trace_id().to_string();
    assert_eq!(body, format!("acme {trace_id}"));
    assert_eq!(attr(payments, "tenant"), Some(&Value::from("acme")));
    assert_eq!(
        attr(gateway, "tenant"),
        None,
        "baggage is set inside the gateway handler"
    );

    // Semantic-convention attributes.
    assert_eq!(attr(gateway, "http.route"), Some(&Value::from("/checkout")));
    assert_eq!(
        attr(gateway, "http.request.method"),
        Some(&Value::from("GET"))
    );
    assert_eq!(attr(gateway, "url.path"), Some(&Value::from("/checkout")));
    assert_eq!(attr(gateway, "url.scheme"), Some(&Value::from("http")));
    assert_eq!(
        attr(gateway, "server.address"),
        Some(&Value::from("127.0.0.1"))
    );
    assert_eq!(
        attr(gateway, "network.protocol.version"),
        Some(&Value::from("1.1"))
    );
    assert_eq!(
        attr(gateway, "http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert_eq!(attr(orders, "url.path"), Some(&Value::from("/orders/42")));
    assert_eq!(attr(orders_out, "rpc.system"), Some(&Value::from("grpc")));
    assert_eq!(
        attr(payments, "rpc.service"),
        Some(&Value::from("demo.Payments"))
    );
    assert_eq!(attr(payments, "rpc.method"), Some(&Value::from("Charge")));
    assert_eq!(attr(payments, "rpc.grpc.status_code"), Some(&Value::I64(0)));
    assert_eq!(
        attr(orders_out, "rpc.grpc.status_code"),
        Some(&Value::I64(0))
    );
    for s in &spans {
        assert_eq!(s.status, Status::Unset, "{} should not be an error", s.name);
        assert!(s.end_time_ns >= s.start_time_ns);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_traceparent_starts_a_new_trace() {
    let stack = start_stack().await;
    let bad_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let raw = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for bad in [
        format!("00-{bad_trace}-00f067aa0ba902b7"),    // too short
        format!("00-{bad_trace}-zzf067aa0ba902b7-01"), // not hex
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(), // zero trace id
    ] {
        let req = http::Request::get(format!("http://{}/hello", stack.gateway))
            .header("traceparent", bad.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = raw.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }
    let spans = wait_for_spans(&stack.exporter, 3).await;
    let servers: Vec<_> = spans.iter().filter(|s| s.name == "GET /hello").collect();
    assert_eq!(servers.len(), 3);
    for s in servers {
        assert_eq!(s.parent_span_id, SpanId::INVALID, "must be a root span");
        assert!(s.span_context.is_valid());
        assert_ne!(s.span_context.trace_id().to_string(), bad_trace);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_ends_span_with_error() {
    let stack = start_stack().await;
    let (status, _) = get_text(&stack.client, &format!("http://{}/panic", stack.gateway)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // The server keeps serving after the panic.
    let (status, _) = get_text(&stack.client, &format!("http://{}/hello", stack.gateway)).await;
    assert_eq!(status, StatusCode::OK);

    let spans = wait_for_spans(&stack.exporter, 4).await;
    let server = find(&spans, "GET /panic", SpanKind::Server);
    match &server.status {
        Status::Error { description } => {
            assert!(description.contains("handler exploded"), "{description}")
        }
        other => panic!("expected error status, got {other:?}"),
    }
    assert_eq!(
        attr(server, "http.response.status_code"),
        Some(&Value::I64(500))
    );
    assert!(server.events.iter().any(|e| e.name == "exception"));
    // The client saw a 500: an error on its span too.
    let client = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Client
                && attr(s, "http.response.status_code") == Some(&Value::I64(500))
        })
        .expect("client span of the panicking request");
    assert!(matches!(client.status, Status::Error { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_grpc_status_codes() {
    let stack = start_stack().await;
    let (status, _) = get_text(
        &stack.client,
        &format!("http://{}/unavailable", stack.gateway),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = get_text(&stack.client, &format!("http://{}/missing", stack.gateway)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let err = charge(&stack.orders_grpc, "Fail", "7").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = charge(&stack.orders_grpc, "Panic", "8").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);

    let spans = wait_for_spans(&stack.exporter, 8).await;
    let unavailable = find(&spans, "GET /unavailable", SpanKind::Server);
    assert!(matches!(unavailable.status, Status::Error { .. }));
    // A 404 is the client's problem: an error on the client span only.
    let missing_client = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Client
                && attr(s, "http.response.status_code") == Some(&Value::I64(404))
        })
        .expect("client span for 404");
    assert!(matches!(missing_client.status, Status::Error { .. }));
    let missing_server = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Server
                && attr(s, "http.response.status_code") == Some(&Value::I64(404))
        })
        .expect("server span for 404");
    assert_eq!(missing_server.status, Status::Unset);

    for (kind, method, code) in [
        (SpanKind::Server, "demo.Payments/Fail", 5),
        (SpanKind::Client, "demo.Payments/Fail", 5),
        (SpanKind::Server, "demo.Payments/Panic", 13),
        (SpanKind::Client, "demo.Payments/Panic", 13),
    ] {
        let s = find(&spans, method, kind);
        assert_eq!(
            attr(s, "rpc.grpc.status_code"),
            Some(&Value::I64(code)),
            "{method} {kind:?}"
        );
        assert!(
            matches!(s.status, Status::Error { .. }),
            "{method} {kind:?}: {:?}",
            s.status
        );
    }
    let fail = find(&spans, "demo.Payments/Fail", SpanKind::Client);
    assert_eq!(fail.status, Status::error("NOT_FOUND: no order 7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_body_keeps_span_open_until_finished() {
    let stack = start_stack().await;
    let (status, body) = get_text(&stack.client, &format!("http://{}/stream", stack.gateway)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "chunk0;chunk1;chunk2;");
    let spans = wait_for_spans(&stack.exporter, 2).await;
    let server = find(&spans, "GET /stream", SpanKind::Server);
    let took = Duration::from_nanos(server.end_time_ns - server.start_time_ns);
    assert!(
        took >= Duration::from_millis(170),
        "span ended after {took:?}, before the body finished"
    );
}

/// A baggage key configured as a span attribute may repeat one of the
/// layer's own keys: the span then keeps one attribute of that key, with the
/// later (baggage) value at the first one's position, as the limits' rule
/// for repeated keys says; without baggage keys the layer's keys stay as
/// they are, each once.
#[tokio::test]
async fn baggage_attribute_repeating_a_layer_key_is_kept_once() {
    use tower::ServiceExt;
    for with_baggage in [true, false] {
        let (provider, exporter) = recording_provider();
        let mut layer = HttpServerLayer::new(provider.tracer("repeat"));
        if with_baggage {
            layer = layer.with_baggage_attributes(["url.path", "tenant"]);
        }
        let router = Router::new()
            .route("/items/{id}", get(|| async { "ok" }))
            .layer(layer)
            .with_state(());
        let req = http::Request::get("/items/7")
            .header("host", "shop.example:8443")
            .header("baggage", "url.path=from-baggage,tenant=t1")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap();
        let spans = wait_for_spans(&exporter, 1).await;
        let span = find(&spans, "GET /items/{id}", SpanKind::Server);
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a key twice: {keys:?}");
        let path_at = keys.iter().position(|k| *k == "url.path").unwrap();
        assert_eq!(path_at, 1, "{keys:?}");
        if with_baggage {
            assert_eq!(attr(span, "url.path"), Some(&Value::from("from-baggage")));
            assert_eq!(attr(span, "tenant"), Some(&Value::from("t1")));
        } else {
            assert_eq!(attr(span, "url.path"), Some(&Value::from("/items/7")));
            assert_eq!(attr(span, "tenant"), None);
        }
        assert_eq!(
            attr(span, "server.address"),
            Some(&Value::from("shop.example"))
        );
        assert_eq!(attr(span, "server.port"), Some(&Value::from(8443_i64)));
    }
}

/// With a route function (routers other than axum), the layer takes the
/// request apart to give the function its `Parts`: the span is named by the
/// route, continues the caller's trace, and the handler still gets the whole
/// request (method, URI, headers, extensions, body).
#[tokio::test]
async fn route_function_names_the_span_and_the_handler_gets_the_whole_request() {
    use tower::{Layer, ServiceExt};
    #[derive(Clone, Debug, PartialEq)]
    struct Tag(u32);
    let (provider, exporter) = recording_provider();
    let layer = HttpServerLayer::new(provider.tracer("route-fn")).with_route_fn(|parts| {
        parts
            .uri
            .path()
            .starts_with("/orders/")
            .then(|| "/orders/{id}".to_string())
    });
    let handler = tower::service_fn(|req: http::Request<String>| async move {
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/orders/9");
        assert_eq!(req.headers()["x-check"], "kept");
        assert_eq!(req.extensions().get::<Tag>(), Some(&Tag(5)));
        assert_eq!(req.body(), "payload");
        Ok::<_, Infallible>(http::Response::new(String::from("done")))
    });
    let mut req = http::Request::post("/orders/9")
        .header("x-check", "kept")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(String::from("payload"))
        .unwrap();
    req.extensions_mut().insert(Tag(5));
    let resp = layer.layer(handler).oneshot(req).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "done");
    let spans = wait_for_spans(&exporter, 1).await;
    let span = find(&spans, "POST /orders/{id}", SpanKind::Server);
    assert_eq!(attr(span, "http.route"), Some(&Value::from("/orders/{id}")));
    assert_eq!(
        span.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
}
