//! mTLS: the OTLP exporter presents the client certificate named by
//! `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` / `OTEL_EXPORTER_OTLP_CLIENT_KEY`
//! to servers that require one, over gRPC and HTTP/protobuf. Throwaway
//! certificates are made with the `openssl` CLI (Debian package `openssl`,
//! installed by scripts/test.sh); the servers are real loopback servers that
//! refuse clients without a certificate signed by the test CA.
#![cfg(all(feature = "tls", feature = "otlp-grpc", feature = "otlp-http"))]

mod export_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use export_support::rich_batch;
use ferrotrace::export::otlp::{OtlpExporter, Protocol};
use ferrotrace::export::stats::ExportStats;
use ferrotrace::export::SpanExporter;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("/usr/bin/openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the mTLS tests need /usr/bin/openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA; a server certificate for 127.0.0.1 and a client certificate, both signed by it.
fn make_certs(d: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=mtls test CA",
    ]);
    openssl(d, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, cnf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.cnf"),
        );
        let mut req = vec!["req", "-nodes"];
        req.extend(ec);
        let subj = format!("/CN={name}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(d, &req);
        std::fs::write(d.join(&cnf), format!("basicConstraints=CA:FALSE\n{ext}")).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &cnf,
                "-out",
                &pem,
            ],
        );
    }
}

fn read(d: &Path, f: &str) -> Vec<u8> {
    std::fs::read(d.join(f)).unwrap()
}

struct Svc(Arc<AtomicUsize>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        _r: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A gRPC server that requires a client certificate signed by the test CA.
fn grpc_server(rt: &tokio::runtime::Runtime, d: &Path, calls: Arc<AtomicUsize>) -> String {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(d, "server.pem"),
            read(d, "server.key"),
        ))
        .client_ca_root(Certificate::from_pem(read(d, "ca.pem")));
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(TraceServiceServer::new(Svc(calls)))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    rt.spawn(server);
    format!("https://127.0.0.1:{}", addr.port())
}

/// An OTLP/HTTP server over TLS that requires a client certificate.
fn http_server(rt: &tokio::runtime::Runtime, d: &Path, calls: Arc<AtomicUsize>) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(d, "ca.pem")) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&read(d, "server.pem"))
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&read(d, "server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, calls) = (acceptor.clone(), calls.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |_req: http::Request<hyper::body::Incoming>| {
                        let calls = calls.clone();
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let body = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    format!("https://127.0.0.1:{}/v1/traces", addr.port())
}

fn exporter(
    protocol: Protocol,
    endpoint: &str,
    d: &Path,
    client_cert: bool,
) -> Result<OtlpExporter, ferrotrace::export::otlp::ConfigError> {
    let dir: PathBuf = d.to_path_buf();
    OtlpExporter::builder_from_env_vars(move |k| {
        let f = match k {
            "OTEL_EXPORTER_OTLP_CERTIFICATE" => "ca.pem",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE" if client_cert => "client.pem",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY" if client_cert => "client.key",
            _ => return None,
        };
        Some(dir.join(f).display().to_string())
    })
    .with_protocol(protocol)
    .with_endpoint(endpoint)
    .with_timeout(Duration::from_secs(5))
    .with_retry_policy(ferrotrace::export::retry::RetryPolicy::none())
    .with_stats(ExportStats::new())
    .build()
}

#[test]
fn client_certificate_from_the_environment_is_presented_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (grpc_calls, http_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let grpc = grpc_server(&rt, dir.path(), grpc_calls.clone());
    let http = http_server(&rt, dir.path(), http_calls.clone());
    for (protocol, endpoint, calls) in [
        (Protocol::Grpc, &grpc, &grpc_calls),
        (Protocol::HttpProtobuf, &http, &http_calls),
    ] {
        // Without a client certificate the server refuses the handshake.
        let e = exporter(protocol, endpoint, dir.path(), false).unwrap();
        let err = e.export(rich_batch()).unwrap_err().to_string();
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{protocol:?}: {err}");
        // With it, the batch is delivered.
        let e = exporter(protocol, endpoint, dir.path(), true).unwrap();
        e.export(rich_batch())
            .unwrap_or_else(|err| panic!("{protocol:?} with a client certificate: {err}"));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{protocol:?}");
    }
}

#[test]
fn a_certificate_without_its_key_or_a_bad_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let d = dir.path().to_path_buf();
    let only_cert = {
        let d = d.clone();
        move |k: &str| {
            (k == "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
                .then(|| d.join("client.pem").display().to_string())
        }
    };
    let err = OtlpExporter::builder_from_env_vars(only_cert)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE") && err.contains("CLIENT_KEY"),
        "{err}"
    );

    let swapped = move |k: &str| match k {
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" => Some(d.join("client.key").display().to_string()),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY" => Some(d.join("client.pem").display().to_string()),
        _ => None,
    };
    let err = OtlpExporter::builder_from_env_vars(swapped)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=") && err.contains("CERTIFICATE"),
        "{err}"
    );

    let err = OtlpExporter::builder_from_env_vars(|_| None)
        .with_client_identity_files("/nonexistent/c.pem", "/nonexistent/c.key")
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
}
