//! The multi-service demo in one process: gateway → orders → payments (gRPC)
//! and inventory, a bounded traffic generator, OTLP export to a collector.
//!
//! ```text
//! cargo run -p ferrotrace-examples --bin demo -- --requests 300 --orders-error-rate 0.05
//! ```

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ferrotrace::export::otlp::{OtlpExporter, Protocol};
use ferrotrace_examples::faults::Faults;
use ferrotrace_examples::services::{self, DemoConfig, ServiceConfig};
use ferrotrace_examples::telemetry::{otlp_exporter_builder, Export, Telemetry};
use ferrotrace_examples::traffic::{self, TrafficConfig};

#[derive(Debug, Parser)]
#[command(about = "ferrotrace demo: gateway → orders → payments (gRPC) + inventory, with traffic")]
struct Args {
    /// OTLP collector base address, read like OTEL_EXPORTER_OTLP_ENDPOINT:
    /// for HTTP `/v1/traces` is appended. Default: http://localhost:4317 for
    /// grpc, http://localhost:4318/v1/traces for http/protobuf and http/json.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    collector: Option<String>,
    /// OTLP protocol: grpc, http/protobuf or http/json.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    otlp_protocol: String,

    /// Gateway port (HTTP, the entry point).
    #[arg(long, env = "DEMO_GATEWAY_PORT", default_value_t = 8080)]
    gateway_port: u16,
    /// Orders port (HTTP).
    #[arg(long, env = "DEMO_ORDERS_PORT", default_value_t = 8081)]
    orders_port: u16,
    /// Inventory port (HTTP).
    #[arg(long, env = "DEMO_INVENTORY_PORT", default_value_t = 8082)]
    inventory_port: u16,
    /// Payments port (gRPC).
    #[arg(long, env = "DEMO_PAYMENTS_PORT", default_value_t = 50051)]
    payments_port: u16,

    /// Mean added latency of the gateway, milliseconds.
    #[arg(long, env = "DEMO_GATEWAY_LATENCY_MS", default_value_t = 2)]
    gateway_latency_ms: u64,
    /// Gateway error rate (0.0–1.0).
    #[arg(long, env = "DEMO_GATEWAY_ERROR_RATE", default_value_t = 0.0)]
    gateway_error_rate: f64,
    /// Mean added latency of orders, milliseconds.
    #[arg(long, env = "DEMO_ORDERS_LATENCY_MS", default_value_t = 10)]
    orders_latency_ms: u64,
    /// Orders error rate (0.0–1.0).
    #[arg(long, env = "DEMO_ORDERS_ERROR_RATE", default_value_t = 0.02)]
    orders_error_rate: f64,
    /// Mean added latency of inventory, milliseconds.
    #[arg(long, env = "DEMO_INVENTORY_LATENCY_MS", default_value_t = 5)]
    inventory_latency_ms: u64,
    /// Inventory error rate (0.0–1.0).
    #[arg(long, env = "DEMO_INVENTORY_ERROR_RATE", default_value_t = 0.01)]
    inventory_error_rate: f64,
    /// Mean added latency of payments, milliseconds.
    #[arg(long, env = "DEMO_PAYMENTS_LATENCY_MS", default_value_t = 25)]
    payments_latency_ms: u64,
    /// Payments error rate (0.0–1.0).
    #[arg(long, env = "DEMO_PAYMENTS_ERROR_RATE", default_value_t = 0.05)]
    payments_error_rate: f64,

    /// Requests the traffic generator sends at most (0 = no traffic).
    #[arg(long, env = "DEMO_REQUESTS", default_value_t = 200)]
    requests: u64,
    /// Time limit of the traffic, seconds.
    #[arg(long, env = "DEMO_DURATION_SECS", default_value_t = 60)]
    duration_secs: u64,
    /// Target requests per second (0 = as fast as possible).
    #[arg(long, env = "DEMO_RATE", default_value_t = 20.0)]
    rate: f64,
    /// Concurrent request loops.
    #[arg(long, env = "DEMO_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Keep the services running after the traffic until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let protocol = Protocol::parse(&args.otlp_protocol).with_context(|| {
        format!(
            "unknown --otlp-protocol {:?}: use grpc, http/protobuf or http/json",
            args.otlp_protocol
        )
    })?;
    let export = Export::Otlp {
        endpoint: args.collector.clone(),
        protocol,
    };
    let collector =
        otlp_exporter_builder(OtlpExporter::builder(), args.collector.as_deref(), protocol)
            .config()
            .context("OTLP exporter configuration")?
            .endpoint;
    let svc = |port, latency, rate| ServiceConfig {
        faults: Faults::new(latency, rate),
        ..ServiceConfig::loopback(port)
    };
    let demo = services::start(DemoConfig {
        gateway: svc(
            args.gateway_port,
            args.gateway_latency_ms,
            args.gateway_error_rate,
        ),
        orders: svc(
            args.orders_port,
            args.orders_latency_ms,
            args.orders_error_rate,
        ),
        inventory: svc(
            args.inventory_port,
            args.inventory_latency_ms,
            args.inventory_error_rate,
        ),
        payments: svc(
            args.payments_port,
            args.payments_latency_ms,
            args.payments_error_rate,
        ),
        export: export.clone(),
    })
    .await
    .context("starting the demo services")?;
    println!(
        "demo: gateway http://{}  orders http://{}  inventory http://{}  payments grpc://{}  exporting to {} ({})",
        demo.gateway, demo.orders, demo.inventory, demo.payments, collector, args.otlp_protocol
    );
    println!(
        "demo: try  curl 'http://{}/checkout?tenant=acme&item=widget'",
        demo.gateway
    );

    let loadgen = Telemetry::new("loadgen", &export).context("telemetry for loadgen")?;
    if args.requests > 0 {
        let report = traffic::run(
            demo.gateway,
            TrafficConfig {
                requests: args.requests,
                duration: Duration::from_secs(args.duration_secs),
                concurrency: args.concurrency,
                rate_per_sec: args.rate,
                ..TrafficConfig::default()
            },
            loadgen.provider.tracer("loadgen"),
        )
        .await?;
        println!(
            "traffic: {} requests in {:.1?}; responses by status (0 = transport error): {:?}",
            report.sent, report.elapsed, report.by_status
        );
    }
    if args.keep_running {
        println!("demo: services keep running; Ctrl-C to stop");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    let timeout = Duration::from_secs(10);
    let loadgen_stats = tokio::task::spawn_blocking(move || {
        let _ = loadgen.provider.shutdown(timeout);
        loadgen.stats.snapshot()
    })
    .await?;
    println!("export loadgen: {loadgen_stats}");
    for (service, stats) in demo.shutdown(timeout).await {
        println!("export {service}: {stats}");
    }
    Ok(())
}
