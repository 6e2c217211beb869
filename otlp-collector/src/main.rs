//! `ferrotrace-collector`: receives OTLP and Zipkin, keeps spans durable in a
//! write-ahead log, and stores them (embedded SQLite by default).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ferrotrace_collector::config::{Config, FsyncPolicy, StorageKind};
use ferrotrace_collector::server::{exit_code, Collector};

/// With feature `mimalloc`: mimalloc instead of glibc's malloc. Spans are
/// decoded on the receivers' threads and freed on the pipeline's and the
/// sink's, and glibc's arenas made those cross-thread frees about half of the
/// ingest CPU (docs/benchmarks.md, "Session-5 allocator"). The memory guard
/// purges it explicitly ([`purge_heap`]).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Decommits every free page mimalloc holds now (it otherwise waits its
/// purge delay): what the memory guard needs to get resident memory back
/// under the limit after a spike.
#[cfg(feature = "mimalloc")]
fn purge_heap() {
    // SAFETY: mi_collect only frees memory mimalloc holds unused; it may be
    // called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

const AFTER_HELP: &str = "\
Configuration: built-in defaults, then the file given with --config, then
environment overrides, then the flags above. Every key of the file can be
overridden with FERROTRACE__SECTION__KEY=value (double underscores, any case),
e.g. FERROTRACE__QUEUE__MAX_SPANS=500000 or FERROTRACE__LIMITS__MEMORY_LIMIT_MIB=256;
values are TOML (numbers, true/false, [\"lists\"]), anything else is a string.
Keys and defaults: docs/configuration.md.

Exit codes: 0 clean shutdown (or valid configuration for check-config),
1 other failure, 2 invalid configuration, 3 a listener cannot bind (address in
use, permission denied), 4 the data directory, write-ahead log or database
cannot be used.";

/// OTLP/Zipkin trace collector with a durable write-ahead log.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see docs/configuration.md). Every key is optional.
    #[arg(long, env = "FERROTRACE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Directory for the WAL and the SQLite database [default: ./ferrotrace-data].
    #[arg(long, env = "FERROTRACE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317]; "" disables.
    #[arg(long, env = "FERROTRACE_OTLP_GRPC_ADDR", global = true)]
    otlp_grpc_addr: Option<String>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318]; "" disables.
    #[arg(long, env = "FERROTRACE_OTLP_HTTP_ADDR", global = true)]
    otlp_http_addr: Option<String>,
    /// Zipkin v2 listen address [default: 127.0.0.1:9411]; "" disables.
    #[arg(long, env = "FERROTRACE_ZIPKIN_ADDR", global = true)]
    zipkin_addr: Option<String>,
    /// Turn on the Jaeger receivers that have no address in the configuration,
    /// on Jaeger's usual ports on loopback: gRPC 127.0.0.1:14250, Thrift over
    /// HTTP 127.0.0.1:14268, agent UDP 127.0.0.1:6831 (compact) and :6832
    /// (binary). Addresses: [jaeger] in the configuration file.
    #[arg(long, env = "FERROTRACE_JAEGER", global = true)]
    jaeger: bool,
    /// Remote sampling API (Jaeger's `GET /api/sampling?service=NAME`) listen
    /// address; giving it turns the API on [default: off, 127.0.0.1:5778 when
    /// sampling_api.enabled]; "" disables.
    #[arg(long, env = "FERROTRACE_SAMPLING_ADDR", global = true)]
    sampling_addr: Option<String>,
    /// Query API, UI and /metrics listen address [default: 127.0.0.1:16686]; "" disables.
    #[arg(long, env = "FERROTRACE_HTTP_ADDR", global = true)]
    http_addr: Option<String>,
    /// PEM certificate chain; with --tls-key, every listener serves TLS only.
    #[arg(long, env = "FERROTRACE_TLS_CERT", global = true)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FERROTRACE_TLS_KEY", global = true)]
    tls_key: Option<PathBuf>,
    /// Sink [default: sqlite]. `null` discards spans (benchmarking only).
    #[arg(long, env = "FERROTRACE_STORAGE", value_enum, global = true)]
    storage: Option<StorageKind>,
    /// Connection URL for postgres/clickhouse (or the SQLite file for sqlite).
    #[arg(long, env = "FERROTRACE_STORAGE_URL", global = true)]
    storage_url: Option<String>,
    /// WAL fsync policy: always (default), interval, never.
    #[arg(long, env = "FERROTRACE_WAL_FSYNC", global = true)]
    wal_fsync: Option<String>,
    /// Log filter (tracing EnvFilter syntax) [default: info].
    /// Run as a router: forward every span, by trace id, to these backend
    /// collectors' OTLP/gRPC addresses (`host:port[@http_port]`, comma-separated;
    /// sets route.backends).
    #[arg(long, env = "FERROTRACE_ROUTE_TO", global = true)]
    route_to: Option<String>,
    #[arg(long, env = "FERROTRACE_LOG", default_value = "info", global = true)]
    log: String,
    /// Log line format on stderr: `text` for people, `json` (one JSON object
    /// per line) for log shippers.
    #[arg(
        long,
        env = "FERROTRACE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum Command {
    /// Validate the configuration (file, environment overrides and flags)
    /// and exit: 0 when it is valid, 2 when not. Opens no listener, sink or
    /// data directory.
    CheckConfig,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// A failure that ends the process with `code` (see [`exit_code`]).
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn new(code: u8, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code,
            error: error.into(),
        }
    }
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
    if args.jaeger {
        cfg.jaeger.enable_defaults();
    }
    if let Some(a) = &args.sampling_addr {
        cfg.sampling_api.enabled = !a.is_empty();
        cfg.sampling_api.addr = a.clone();
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
            "always" => FsyncPolicy::Always,
            "interval" => FsyncPolicy::Interval,
            "never" => FsyncPolicy::Never,
            other => anyhow::bail!("--wal-fsync {other:?}: expected always, interval or never"),
        };
    }
    if let Some(r) = &args.route_to {
        let backends: Vec<String> = r
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(String::from)
            .collect();
        if backends.is_empty() {
            anyhow::bail!(
                "--route-to {r:?} lists no backend: give host:port[@http_port] of each backend \
                 collector's OTLP/gRPC receiver, comma-separated"
            );
        }
        cfg.route.backends = backends;
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

fn init_logging(args: &Args) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .context("invalid --log filter (tracing EnvFilter syntax, e.g. info or warn,ferrotrace_collector=debug)")
        .map_err(|e| Failure::new(exit_code::CONFIG, e))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// `check-config`: everything a start validates, nothing it opens.
fn check_config(args: &Args) -> Result<(), Failure> {
    let cfg = load(args).map_err(|e| Failure::new(exit_code::CONFIG, e))?;
    ferrotrace_collector::server::check_config(&cfg)
        .with_context(|| config_source(args))
        .map_err(|e| Failure::new(exit_code::CONFIG, e))?;
    let budgets = cfg
        .memory_budgets()
        .map_err(|e| Failure::new(exit_code::CONFIG, e))?;
    let addr = |a: &str| if a.is_empty() { "disabled" } else { a }.to_string();
    let s = &cfg.server;
    println!("configuration is valid ({})", config_source(args));
    println!(
        "  listeners: otlp grpc {}, otlp http {}, zipkin {}, query/ui/metrics {}",
        addr(&s.otlp_grpc_addr),
        addr(&s.otlp_http_addr),
        addr(&s.zipkin_addr),
        addr(&s.http_addr)
    );
    let j = &cfg.jaeger;
    println!(
        "  jaeger: grpc {}, thrift http {}, agent udp compact {}, agent udp binary {}",
        addr(&j.grpc_addr),
        addr(&j.thrift_http_addr),
        addr(&j.agent_compact_addr),
        addr(&j.agent_binary_addr)
    );
    println!(
        "  sampling api: {} ({} services pinned, default probability {})",
        addr(cfg.sampling_api.listen_addr()),
        cfg.sampling_api.services.len(),
        cfg.sampling_api.default_probability
    );
    if cfg.route.enabled() {
        println!(
            "  router: forwards to {} (dns {}), health checks every {} ms, out after {} failures",
            if cfg.route.backends.is_empty() {
                "no static backends".to_string()
            } else {
                cfg.route.backends.join(", ")
            },
            addr(&cfg.route.dns_name),
            cfg.route.health_interval_ms,
            cfg.route.unhealthy_after
        );
    }
    println!(
        "  storage: {}, data dir {}, write-ahead log {} (at most {} bytes)",
        cfg.storage.kind.as_str(),
        cfg.data_dir.display(),
        cfg.wal_dir().display(),
        cfg.wal.max_bytes
    );
    println!(
        "  memory limit {} MiB: queue {} bytes, request bodies in flight {} bytes, \
         requests up to {} bytes ({} inflated)",
        cfg.limits.memory_limit_mib,
        budgets.queue_bytes,
        budgets.inflight_bytes,
        cfg.limits.request_bytes(),
        cfg.limits.decompressed_bytes()
    );
    Ok(())
}

fn run(args: Args) -> Result<(), Failure> {
    let cfg = load(&args).map_err(|e| Failure::new(exit_code::CONFIG, e))?;
    // Before any thread of the runtime allocates (arenas are per thread).
    ferrotrace_collector::memory::tune_allocator(cfg.limits.memory_limit_mib > 0);
    #[cfg(feature = "mimalloc")]
    ferrotrace_collector::memory::set_heap_purge(purge_heap);
    // Every client connection takes a file descriptor: use the hard limit.
    let fds = ferrotrace_collector::listener::raise_fd_limit();
    tracing::debug!(fds, "file descriptor limit");
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| {
            format!(
                "cannot create the data directory {} (--data-dir / data_dir)",
                cfg.data_dir.display()
            )
        })
        .map_err(|e| Failure::new(exit_code::STORAGE, e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("collector")
        .build()
        .context("starting the tokio runtime")
        .map_err(|e| Failure::new(exit_code::OTHER, e))?;
    let result = rt.block_on(async move {
        if cfg.route.enabled() {
            // A router stores nothing: no sink is opened.
            let collector = Collector::start_router(cfg)
                .await
                .map_err(|e| Failure::new(e.exit_code(), e))?;
            wait_for_signal().await;
            tracing::info!("signal received; shutting down");
            collector.shutdown().await;
            return Ok(());
        }
        // A database sink that is down is connected in the background; only
        // a bad URL or an unusable SQLite file stops the start.
        let store = ferrotrace_collector::storage::connecting::open(&cfg).map_err(|e| {
            use ferrotrace_collector::storage::connecting::OpenError;
            let code = match e {
                OpenError::Config { .. } => exit_code::CONFIG,
                OpenError::Sqlite { .. } => exit_code::STORAGE,
            };
            Failure::new(code, e)
        })?;
        let collector = Collector::start(cfg, store)
            .await
            .map_err(|e| Failure::new(e.exit_code(), e))?;
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        collector.shutdown().await;
        Ok(())
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// The error and its causes on one line. Most errors here already quote
/// their cause in their own message, so a cause is only appended when the
/// text so far does not contain it.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.log_format == LogFormat::Json;
    let mut logging = false;
    let result = init_logging(&args).and_then(|()| {
        logging = true;
        match args.command {
            Some(Command::CheckConfig) => check_config(&args),
            None => run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json && logging {
                // Log shippers read stderr as JSON lines: the reason goes there too.
                tracing::error!(exit_code = f.code, "{}", render(&f.error));
            } else {
                eprintln!("error: {}", render(&f.error));
            }
            ExitCode::from(f.code)
        }
    }
}
