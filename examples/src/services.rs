//! The demo's four services and how to start them together:
//! `gateway` (axum) → `orders` (axum) → `payments` (tonic) and `inventory` (axum).
//!
//! The gateway puts the request's `tenant` into the W3C baggage; every
//! service's server layer copies it onto its spans (`tenant` attribute), so
//! a trace can be searched by tenant in any service.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use ferrotrace::context::{Context, FutureExt};
use ferrotrace::export::stats::StatsSnapshot;
use ferrotrace::integrations::http::HttpServerLayer;
use ferrotrace::integrations::tonic::GrpcServerLayer;
use ferrotrace::trace::{Status, Tracer};
use ferrotrace::KeyValue;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::faults::Faults;
use crate::payments::{ChargeRequest, InvalidEndpoint, PaymentsClient, PaymentsServer};
use crate::telemetry::{Export, Telemetry};
use crate::{traced_http_client, TracedHttpClient};

/// Largest response body a service reads from another service.
const MAX_UPSTREAM_BODY: usize = 64 * 1024;

/// Where one service listens and how it misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct ServiceConfig {
    /// Listen address (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Injected latency and errors.
    pub faults: Faults,
}

impl ServiceConfig {
    /// A loopback service on `port` without faults.
    pub fn loopback(port: u16) -> Self {
        ServiceConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            faults: Faults::default(),
        }
    }
}

/// The whole demo's configuration.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The HTTP entry point.
    pub gateway: ServiceConfig,
    /// HTTP, called by the gateway.
    pub orders: ServiceConfig,
    /// HTTP, called by orders.
    pub inventory: ServiceConfig,
    /// gRPC, called by orders.
    pub payments: ServiceConfig,
    /// Where every service's spans go.
    pub export: Export,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A listen address was taken or not allowed.
    #[error("{service}: cannot listen on {addr}: {source} (pick another port)")]
    Bind {
        /// Which service.
        service: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The OTLP exporter configuration was invalid.
    #[error("telemetry for {service}: {source}")]
    Telemetry {
        /// Which service.
        service: &'static str,
        /// The configuration problem.
        source: ferrotrace::export::otlp::ConfigError,
    },
    /// The payments endpoint was not a URI.
    #[error(transparent)]
    Endpoint(#[from] InvalidEndpoint),
}

/// The running demo: addresses, providers, and a shutdown switch.
#[derive(Debug)]
pub struct RunningDemo {
    /// Gateway address.
    pub gateway: SocketAddr,
    /// Orders address.
    pub orders: SocketAddr,
    /// Inventory address.
    pub inventory: SocketAddr,
    /// Payments (gRPC) address.
    pub payments: SocketAddr,
    telemetry: Vec<(&'static str, Telemetry)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningDemo {
    /// The tracer provider of `service` (`gateway`, `orders`, `inventory`, `payments`).
    pub fn telemetry(&self, service: &str) -> Option<&Telemetry> {
        self.telemetry
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, t)| t)
    }

    /// Stops the servers, flushes every provider (each within `timeout`) and
    /// returns each service's export counters.
    pub async fn shutdown(self, timeout: Duration) -> Vec<(&'static str, StatsSnapshot)> {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(timeout, t).await;
        }
        let telemetry = self.telemetry;
        // Provider shutdown blocks while the batch processor flushes.
        tokio::task::spawn_blocking(move || {
            telemetry
                .into_iter()
                .map(|(name, t)| {
                    let _ = t.provider.shutdown(timeout);
                    (name, t.stats.snapshot())
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

async fn bind(service: &'static str, addr: SocketAddr) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind {
            service,
            addr,
            source,
        })
}

fn local_addr(
    service: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, DemoError> {
    l.local_addr().map_err(|source| DemoError::Bind {
        service,
        addr,
        source,
    })
}

fn spawn_http(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            eprintln!("demo: HTTP server stopped: {e}");
        }
    })
}

/// Starts the four services.
pub async fn start(config: DemoConfig) -> Result<RunningDemo, DemoError> {
    let tel = |service: &'static str| {
        Telemetry::new(service, &config.export)
            .map_err(|source| DemoError::Telemetry { service, source })
    };
    let (gw_t, orders_t, inv_t, pay_t) = (
        tel("gateway")?,
        tel("orders")?,
        tel("inventory")?,
        tel("payments")?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);

    let gw_l = bind("gateway", config.gateway.addr).await?;
    let orders_l = bind("orders", config.orders.addr).await?;
    let inv_l = bind("inventory", config.inventory.addr).await?;
    let pay_l = bind("payments", config.payments.addr).await?;
    let gateway = local_addr("gateway", &gw_l, config.gateway.addr)?;
    let orders = local_addr("orders", &orders_l, config.orders.addr)?;
    let inventory = local_addr("inventory", &inv_l, config.inventory.addr)?;
    let payments = local_addr("payments", &pay_l, config.payments.addr)?;

    let mut tasks = Vec::new();

    // payments (tonic)
    let pay_tracer = pay_t.provider.tracer("payments");
    let server = tonic::transport::Server::builder()
        .layer(GrpcServerLayer::new(pay_tracer.clone()).with_baggage_attributes(["tenant"]))
        .add_service(PaymentsServer::new(pay_tracer, config.payments.faults));
    let mut stop = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(pay_l);
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = server
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            eprintln!("demo: payments server stopped: {e}");
        }
    }));

    // inventory
    let inv_tracer = inv_t.provider.tracer("inventory");
    let router = Router::new()
        .route("/inventory/{item}", get(inventory_handler))
        .with_state(InventoryState {
            tracer: inv_tracer.clone(),
            faults: config.inventory.faults,
        })
        .layer(HttpServerLayer::new(inv_tracer).with_baggage_attributes(["tenant"]));
    tasks.push(spawn_http(inv_l, router, stop_rx.clone()));

    // orders
    let orders_tracer = orders_t.provider.tracer("orders");
    let router = Router::new()
        .route("/orders", post(orders_handler))
        .with_state(OrdersState {
            tracer: orders_tracer.clone(),
            faults: config.orders.faults,
            inventory: traced_http_client(orders_tracer.clone()),
            inventory_addr: inventory,
            payments: PaymentsClient::new(&format!("http://{payments}"), orders_tracer.clone())?,
        })
        .layer(HttpServerLayer::new(orders_tracer).with_baggage_attributes(["tenant"]));
    tasks.push(spawn_http(orders_l, router, stop_rx.clone()));

    // gateway
    let gw_tracer = gw_t.provider.tracer("gateway");
    let router = Router::new()
        .route("/checkout", get(checkout_handler))
        .route("/health", get(|| async { "ok" }))
        .with_state(GatewayState {
            tracer: gw_tracer.clone(),
            faults: config.gateway.faults,
            orders: traced_http_client(gw_tracer.clone()),
            orders_addr: orders,
        })
        .layer(HttpServerLayer::new(gw_tracer));
    tasks.push(spawn_http(gw_l, router, stop_rx));

    Ok(RunningDemo {
        gateway,
        orders,
        inventory,
        payments,
        telemetry: vec![
            ("gateway", gw_t),
            ("orders", orders_t),
            ("inventory", inv_t),
            ("payments", pay_t),
        ],
        shutdown: stop_tx,
        tasks,
    })
}

/// Sends a request through a traced client and reads a bounded body.
async fn call(
    client: &TracedHttpClient,
    req: http::Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let resp = client
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| format!("upstream unreachable: {e}"))?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_UPSTREAM_BODY)
        .collect()
        .await
        .map_err(|e| format!("upstream body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn json_request(
    method: http::Method,
    url: &str,
    body: &impl Serialize,
) -> Result<http::Request<Full<Bytes>>, String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())
}

fn current_tenant() -> String {
    Context::current()
        .baggage()
        .get("tenant")
        .unwrap_or("unknown")
        .to_string()
}

// ---------------------------------------------------------------- gateway

#[derive(Clone)]
struct GatewayState {
    tracer: Tracer,
    faults: Faults,
    orders: TracedHttpClient,
    orders_addr: SocketAddr,
}

/// Query of `GET /checkout`.
#[derive(Debug, Deserialize)]
pub struct CheckoutQuery {
    /// Tenant, put into the baggage (default `default`).
    pub tenant: Option<String>,
    /// Item to order (default `widget`; `sold-out` is never in stock).
    pub item: Option<String>,
    /// Quantity (default 1).
    pub quantity: Option<u32>,
}

/// Body of `POST /orders`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderRequest {
    /// Item to order.
    pub item: String,
    /// Quantity.
    pub quantity: u32,
}

async fn checkout_handler(
    State(st): State<GatewayState>,
    Query(q): Query<CheckoutQuery>,
) -> Response {
    if let Err(e) = st.faults.apply().await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let tenant = q.tenant.unwrap_or_else(|| "default".into());
    let mut baggage = Context::current().baggage().clone();
    if let Err(e) = baggage.insert("tenant", tenant.clone()) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let mut span = st.tracer.start("checkout");
    span.set_attribute("tenant", tenant);
    // Everything below (the orders call included) runs with the tenant baggage.
    let cx = span.context().with_baggage(baggage);
    let order = OrderRequest {
        item: q.item.unwrap_or_else(|| "widget".into()),
        quantity: q.quantity.unwrap_or(1),
    };
    let url = format!("http://{}/orders", st.orders_addr);
    let result = async {
        let req = json_request(http::Method::POST, &url, &order)?;
        call(&st.orders, req).await
    }
    .with_context(cx)
    .await;
    match result {
        Ok((status, body)) if status.is_success() => (StatusCode::OK, body).into_response(),
        Ok((status, body)) => {
            span.set_status(Status::error(format!("orders answered {status}")));
            (StatusCode::BAD_GATEWAY, body).into_response()
        }
        Err(e) => {
            span.set_status(Status::error(e.clone()));
            (StatusCode::BAD_GATEWAY, e).into_response()
        }
    }
}

// ---------------------------------------------------------------- orders

#[derive(Clone)]
struct OrdersState {
    tracer: Tracer,
    faults: Faults,
    inventory: TracedHttpClient,
    inventory_addr: SocketAddr,
    payments: PaymentsClient,
}

/// Reply of `POST /orders`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderReply {
    /// New order id.
    pub order_id: String,
    /// Payment transaction.
    pub transaction_id: String,
    /// Tenant as seen by payments (from the baggage).
    pub tenant: String,
}

/// Reply of `GET /inventory/{item}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StockReply {
    /// The item.
    pub item: String,
    /// Whether it can be ordered.
    pub available: bool,
}

async fn orders_handler(
    State(st): State<OrdersState>,
    Json(order): Json<OrderRequest>,
) -> Response {
    if let Err(e) = st.faults.apply().await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let amount_cents = st.tracer.in_span("price order", |span| {
        let amount = i64::from(order.quantity) * 1299;
        span.set_attributes([
            KeyValue::new("order.item", order.item.clone()),
            KeyValue::new("order.amount_cents", amount),
            KeyValue::new("tenant", current_tenant()),
        ]);
        amount
    });
    let url = format!("http://{}/inventory/{}", st.inventory_addr, order.item);
    let req = match http::Request::get(&url).body(Full::new(Bytes::new())) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad item name: {e}")).into_response(),
    };
    match call(&st.inventory, req).await {
        Ok((status, body)) if status.is_success() => {
            match serde_json::from_slice::<StockReply>(&body) {
                Ok(stock) if stock.available => {}
                Ok(_) => {
                    return (StatusCode::CONFLICT, format!("{} is sold out", order.item))
                        .into_response()
                }
                Err(e) => {
                    return (StatusCode::BAD_GATEWAY, format!("inventory reply: {e}"))
                        .into_response()
                }
            }
        }
        Ok((status, _)) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("inventory answered {status}"),
            )
                .into_response()
        }
        Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
    }
    let order_id = format!("ord-{}", ferrotrace::ids::new_span_id());
    match st
        .payments
        .charge(ChargeRequest {
            order_id: order_id.clone(),
            amount_cents,
        })
        .await
    {
        Ok(reply) => (
            StatusCode::CREATED,
            Json(OrderReply {
                order_id,
                transaction_id: reply.transaction_id,
                tenant: reply.tenant,
            }),
        )
            .into_response(),
        Err(status) => (
            StatusCode::BAD_GATEWAY,
            format!("payment failed: {}", status.message()),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------- inventory

#[derive(Clone)]
struct InventoryState {
    tracer: Tracer,
    faults: Faults,
}

async fn inventory_handler(State(st): State<InventoryState>, Path(item): Path<String>) -> Response {
    let lookup = st.faults.apply().await;
    let mut span = st.tracer.start("stock lookup");
    span.set_attributes([
        KeyValue::new("inventory.item", item.clone()),
        KeyValue::new("tenant", current_tenant()),
    ]);
    if let Err(e) = lookup {
        span.record_error(&e);
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    let available = item != "sold-out";
    span.set_attribute("inventory.available", available);
    Json(StockReply { item, available }).into_response()
}
