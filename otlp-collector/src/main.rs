//! `ferrotrace-collector`: receives OTLP and Zipkin, keeps spans durable in a
//! write-ahead log, and stores them (embedded SQLite by default).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use ferrotrace_collector::config::{Config, StorageKind};
use ferrotrace_collector::server::Collector;

/// OTLP/Zipkin trace collector with a durable write-ahead log.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (see docs/configuration.md). Every key is optional.
    #[arg(long, env = "FERROTRACE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the WAL and the SQLite database [default: ./ferrotrace-data].
    #[arg(long, env = "FERROTRACE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317]; "" disables.
    #[arg(long, env = "FERROTRACE_OTLP_GRPC_ADDR")]
    otlp_grpc_addr: Option<String>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318]; "" disables.
    #[arg(long, env = "FERROTRACE_OTLP_HTTP_ADDR")]
    otlp_http_addr: Option<String>,
    /// Zipkin v2 listen address [default: 127.0.0.1:9411]; "" disables.
    #[arg(long, env = "FERROTRACE_ZIPKIN_ADDR")]
    zipkin_addr: Option<String>,
    /// Query API, UI and /metrics listen address [default: 127.0.0.1:16686]; "" disables.
    #[arg(long, env = "FERROTRACE_HTTP_ADDR")]
    http_addr: Option<String>,
    /// PEM certificate chain; with --tls-key, every listener serves TLS only.
    #[arg(long, env = "FERROTRACE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FERROTRACE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Sink [default: sqlite]. `null` discards spans (benchmarking only).
    #[arg(long, env = "FERROTRACE_STORAGE", value_enum)]
    storage: Option<StorageKind>,
    /// Connection URL for postgres/clickhouse (or the SQLite file for sqlite).
    #[arg(long, env = "FERROTRACE_STORAGE_URL")]
    storage_url: Option<String>,
    /// WAL fsync policy: always (default), interval, never.
    #[arg(long, env = "FERROTRACE_WAL_FSYNC")]
    wal_fsync: Option<String>,
    /// Log filter (tracing EnvFilter syntax) [default: info].
    #[arg(long, env = "FERROTRACE_LOG", default_value = "info")]
    log: String,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut cfg = Config::load(args.config.as_deref(), std::env::vars())?;
    if cfg.data_dir.as_os_str().is_empty() {
        cfg.data_dir = PathBuf::from("./ferrotrace-data");
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    let s = &mut cfg.server;
    for (dst, src) in [
        (&mut s.otlp_grpc_addr, &args.otlp_grpc_addr),
        (&mut s.otlp_http_addr, &args.otlp_http_addr),
        (&mut s.zipkin_addr, &args.zipkin_addr),
        (&mut s.http_addr, &args.http_addr),
    ] {
        if let Some(v) = src {
            *dst = v.clone();
        }
    }
    if let Some(c) = &args.tls_cert {
        cfg.tls.cert_file = Some(c.clone());
    }
    if let Some(k) = &args.tls_key {
        cfg.tls.key_file = Some(k.clone());
    }
    if let Some(k) = args.storage {
        cfg.storage.kind = k;
    }
    if let Some(u) = &args.storage_url {
        cfg.storage.url = Some(u.clone());
    }
    if let Some(p) = &args.wal_fsync {
        cfg.wal.fsync = match p.as_str() {
            "always" => ferrotrace_collector::config::FsyncPolicy::Always,
            "interval" => ferrotrace_collector::config::FsyncPolicy::Interval,
            "never" => ferrotrace_collector::config::FsyncPolicy::Never,
            other => bail!("--wal-fsync {other:?}: expected always, interval or never"),
        };
    }
    cfg.validate().with_context(|| config_source(args))?;
    Ok(cfg)
}

/// Where the configuration came from, for errors found after parsing
/// (cross-field checks, pipeline stages): the file when there is one.
fn config_source(args: &Args) -> String {
    match &args.config {
        Some(p) => format!(
            "configuration from {} (with environment overrides and flags applied)",
            p.display()
        ),
        None => "configuration from defaults, environment overrides and flags".to_string(),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = load(&args)?;
    // Every client connection takes a file descriptor: use the hard limit.
    let fds = ferrotrace_collector::listener::raise_fd_limit();
    tracing::debug!(fds, "file descriptor limit");
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("collector")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        // A database sink that is down is connected in the background; only
        // a bad URL or an unusable SQLite file stops the start.
        let source = config_source(&args);
        let store = ferrotrace_collector::storage::connecting::open(&cfg)
            .with_context(|| source.clone())?;
        let collector = Collector::start(cfg, store)
            .await
            .with_context(|| source.clone())?;
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        collector.shutdown().await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
