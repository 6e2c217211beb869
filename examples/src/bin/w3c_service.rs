//! The W3C Trace Context test suite's service-under-test.
//!
//! ```text
//! cargo run -p ferrotrace-examples --bin w3c-service -- --listen 127.0.0.1:5000
//! python test.py http://127.0.0.1:5000/test      # in w3c/trace-context/test
//! ```

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use ferrotrace::export::otlp::Protocol;
use ferrotrace_examples::telemetry::{Export, Telemetry};

#[derive(Debug, Parser)]
#[command(about = "W3C Trace Context test-suite service (POST /test)")]
struct Args {
    /// Listen address.
    #[arg(long, env = "W3C_SERVICE_LISTEN", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Also export the spans over OTLP/gRPC to this collector (e.g. http://localhost:4317).
    #[arg(long, env = "W3C_SERVICE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let export = match &args.otlp_endpoint {
        Some(endpoint) => Export::Otlp {
            endpoint: Some(endpoint.clone()),
            protocol: Protocol::Grpc,
        },
        None => Export::None,
    };
    let telemetry = Telemetry::new("w3c-service", &export).context("telemetry")?;
    let app = ferrotrace_examples::w3c::router(telemetry.provider.tracer("w3c-service"));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "w3c-service: listening on http://{}/test",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    tokio::task::spawn_blocking(move || {
        telemetry
            .provider
            .shutdown(std::time::Duration::from_secs(5))
    })
    .await?
    .ok();
    Ok(())
}
