//! TLS on every listener, end to end on loopback: a throwaway CA and server
//! certificate made with the `openssl` CLI, the SDK's exporter trusting that
//! CA sending over gRPC and HTTP/protobuf, the query API over HTTPS, a
//! plaintext client refused without harming the server, and bad key files
//! failing the start with the file named.

mod ingest_util;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrotrace::export::otlp::{OtlpExporter, Protocol};
use ferrotrace::export::{BatchSpanProcessor, ExportStats};
use ferrotrace::trace::TracerProvider;
use ferrotrace_collector::server::Collector;
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::SpanStore;
use http_body_util::{BodyExt, Full};
use ingest_util::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn make_certs() -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::certs::make(dir.path());
    Certs {
        _dir: dir,
        ca: c.ca,
        cert: c.cert,
        key: c.key,
    }
}

async fn start_tls(certs: &Certs) -> TestCollector {
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    start(move |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
    })
    .await
}

/// How the exporter is told about the CA.
#[derive(Clone, Copy)]
enum CaVia {
    File,
    Pem,
    EnvVar,
}

/// Sends one span with the SDK's exporter, trusting only `ca`; returns its
/// trace id and how many spans the exporter reports as delivered.
async fn send_span(endpoint: String, protocol: Protocol, ca: &Path, via: CaVia) -> ([u8; 16], u64) {
    let stats = ExportStats::new();
    let ca_path = ca.display().to_string();
    let env = move |k: &str| {
        (matches!(via, CaVia::EnvVar) && k == "OTEL_EXPORTER_OTLP_CERTIFICATE")
            .then(|| ca_path.clone())
    };
    let builder = OtlpExporter::builder_from_env_vars(env);
    let builder = match via {
        CaVia::File => builder.with_ca_certificate_file(ca),
        CaVia::Pem => builder.with_ca_certificate_pem(std::fs::read(ca).unwrap()),
        CaVia::EnvVar => builder,
    };
    let exporter = builder
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .with_stats(stats.clone())
        .build()
        .expect("exporter builds");
    let provider = TracerProvider::builder()
        .with_service_name("tls-client")
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_stats(stats.clone())
                .build(),
        )
        .build();
    let mut span = provider.tracer("tls-test").start("over-tls");
    let trace = span.span_context().trace_id().to_bytes();
    span.end();
    let exported = tokio::task::spawn_blocking(move || {
        let _ = provider.shutdown(Duration::from_secs(15));
        stats.snapshot().exported
    })
    .await
    .unwrap();
    (trace, exported)
}

fn client_config(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// GET over HTTPS/1.1 trusting only `ca`; returns status and body.
async fn https_get(addr: SocketAddr, path: &str, ca: &Path) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, &[b"http/1.1"])));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_tls_and_otlp_arrives_over_grpc_and_http() {
    let certs = make_certs();
    let tc = start_tls(&certs).await;
    let a = tc.collector.addrs.clone();

    // OTLP/gRPC and OTLP/HTTP with the SDK exporter trusting the test CA.
    let grpc = format!("https://127.0.0.1:{}", a.otlp_grpc.unwrap().port());
    let (t1, n1) = send_span(grpc, Protocol::Grpc, &certs.ca, CaVia::Pem).await;
    assert_eq!(n1, 1, "gRPC over TLS exported");
    let http = format!(
        "https://localhost:{}/v1/traces",
        a.otlp_http.unwrap().port()
    );
    let (t2, n2) = send_span(http, Protocol::HttpProtobuf, &certs.ca, CaVia::EnvVar).await;
    assert_eq!(n2, 1, "HTTP/protobuf over TLS exported");
    for t in [t1, t2] {
        let spans = wait_spans(tc.store.as_ref(), t, 1).await;
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "over-tls");
        assert_eq!(spans[0].service_name, "tls-client");
    }

    // The query API over HTTPS finds them.
    let q = a.http.unwrap();
    let (status, body) = https_get(q, "/api/services", &certs.ca).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tls-client"), "{body}");
    let (status, body) = https_get(q, "/healthz", &certs.ca).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // ALPN offers h2 (gRPC clients insist on it) and http/1.1.
    for (offer, want) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice()),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let tcp = tokio::net::TcpStream::connect(a.zipkin.unwrap())
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(&certs.ca, offer)))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .expect("TLS handshake with the Zipkin listener");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(want));
    }
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusting_clients_fail_and_the_collector_keeps_serving() {
    let certs = make_certs();
    let tc = start_tls(&certs).await;
    let a = tc.collector.addrs.clone();

    // Plain HTTP to each HTTP listener: no HTTP response comes back.
    for addr in [a.http.unwrap(), a.otlp_http.unwrap(), a.zipkin.unwrap()] {
        let reply = raw_http(
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(!reply.contains("HTTP/1.1 200"), "{addr}: {reply:?}");
    }
    // Plaintext gRPC (the official exporter over h2c) is not delivered.
    let stats = ExportStats::new();
    let exporter = OtlpExporter::builder_from_env_vars(|_| None)
        .with_protocol(Protocol::Grpc)
        .with_endpoint(format!("http://127.0.0.1:{}", a.otlp_grpc.unwrap().port()))
        .with_timeout(Duration::from_secs(3))
        .with_stats(stats.clone())
        .build()
        .unwrap();
    let provider = TracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_stats(stats.clone())
                .build(),
        )
        .build();
    provider.tracer("t").start("plaintext").end();
    let snap = tokio::task::spawn_blocking(move || {
        let _ = provider.shutdown(Duration::from_secs(10));
        stats.snapshot()
    })
    .await
    .unwrap();
    assert_eq!(snap.exported, 0, "{snap}");

    // A TLS client that does not trust the CA (webpki roots only) is refused.
    let stats = ExportStats::new();
    let exporter = OtlpExporter::builder_from_env_vars(|_| None)
        .with_protocol(Protocol::HttpProtobuf)
        .with_endpoint(format!(
            "https://localhost:{}/v1/traces",
            a.otlp_http.unwrap().port()
        ))
        .with_timeout(Duration::from_secs(3))
        .with_stats(stats.clone())
        .build()
        .unwrap();
    let provider = TracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_stats(stats.clone())
                .build(),
        )
        .build();
    provider.tracer("t").start("untrusted").end();
    let snap = tokio::task::spawn_blocking(move || {
        let _ = provider.shutdown(Duration::from_secs(10));
        stats.snapshot()
    })
    .await
    .unwrap();
    assert_eq!(snap.exported, 0, "{snap}");

    // Failed handshakes are counted per listener.
    let m = &tc.collector.metrics;
    for l in ["query", "otlp_http", "zipkin", "otlp_grpc"] {
        assert!(m.tls_handshake_failures.get(l) >= 1, "{l}: {}", m.render());
    }

    // A client that connects and never speaks does not block other accepts.
    let _silent = tokio::net::TcpStream::connect(a.http.unwrap())
        .await
        .unwrap();

    // Everything still works over TLS, well before that client's handshake
    // times out (10 s): handshakes do not hold up the accept loop.
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        https_get(a.http.unwrap(), "/metrics", &certs.ca),
    )
    .await
    .expect("a stalled handshake must not block other clients");
    assert_eq!(status, 200);
    assert!(
        body.contains("ferrotrace_tls_handshake_failures_total{listener=\"query\"}"),
        "{body}"
    );
    let grpc = format!("https://127.0.0.1:{}", a.otlp_grpc.unwrap().port());
    let (t, n) = send_span(grpc, Protocol::Grpc, &certs.ca, CaVia::File).await;
    assert_eq!(n, 1);
    assert_eq!(wait_spans(tc.store.as_ref(), t, 1).await.len(), 1);
    tc.collector.shutdown().await;
}

async fn start_err(cert: &Path, key: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.tls.cert_file = Some(cert.to_path_buf());
    cfg.tls.key_file = Some(key.to_path_buf());
    let store = Arc::new(SqliteStore::open(dir.path().join("spans.db")).unwrap());
    Collector::start(cfg, store as Arc<dyn SpanStore>)
        .await
        .expect_err("start must fail")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_or_key_fails_the_start_naming_the_file() {
    let certs = make_certs();
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "this is not a key\n").unwrap();
    let e = start_err(&certs.cert, &garbage).await;
    assert!(e.contains(&garbage.display().to_string()), "{e}");
    assert!(e.contains("private key"), "{e}");

    let missing = dir.path().join("missing.pem");
    let e = start_err(&missing, &certs.key).await;
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(e.contains("No such file"), "{e}");

    // A certificate file given as the key: PEM, but no key in it.
    let e = start_err(&certs.cert, &certs.cert).await;
    assert!(e.contains(&certs.cert.display().to_string()), "{e}");
    assert!(e.contains("no PEM"), "{e}");

    // A key that does not belong to the certificate.
    let e = start_err(&certs.cert, &certs.ca.with_file_name("ca.key")).await;
    assert!(e.contains("ca.key"), "{e}");
    assert!(e.contains("does not belong to the certificate"), "{e}");

    // Only one of the two.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir2.path());
    cfg.tls.cert_file = Some(certs.cert.clone());
    let store = Arc::new(SqliteStore::open(dir2.path().join("spans.db")).unwrap());
    let e = Collector::start(cfg, store as Arc<dyn SpanStore>)
        .await
        .expect_err("half a TLS config must fail")
        .to_string();
    assert!(e.contains("tls.key_file"), "{e}");
}
