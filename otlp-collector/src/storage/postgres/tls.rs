//! TLS (rustls with the `ring` provider) following libpq's URL options:
//! - `sslmode=disable`: plaintext only.
//! - `sslmode=prefer` (the default): TLS when the server offers it, plaintext
//!   when it does not. The certificate is not checked, so this only protects
//!   against passive eavesdropping.
//! - `sslmode=require`: TLS or no connection, certificate **not** checked (as
//!   libpq's `require` without a root certificate): an active attacker can
//!   still impersonate the server.
//! - `sslmode=verify-ca`: TLS, the chain is verified, the host name is not.
//! - `sslmode=verify-full`: TLS, chain and host name verified. **The safe
//!   choice** on any network you do not fully trust.
//! - `sslrootcert=/path/ca.pem`: the CA certificates (PEM) to trust instead of
//!   the built-in Mozilla roots (`webpki-roots`). As in libpq, giving it with
//!   `prefer` or `require` also verifies the chain (like `verify-ca`).
//!
//! The CA file is read when the URL is checked at start, so a wrong path fails
//! the start instead of every reconnect.

use std::path::Path;
use std::sync::Arc;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::map_err;
use crate::storage::{StorageError, StorageResult};

/// The URL's `sslmode` and `sslrootcert`, taken out before the driver parses it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TlsOptions {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn tls_option(opts: &mut TlsOptions, key: &str, value: String) -> bool {
    match key {
        "sslmode" => opts.sslmode = Some(value),
        "sslrootcert" => opts.sslrootcert = Some(value),
        _ => return false,
    }
    true
}

/// Splits `sslmode` and `sslrootcert` off a URL (`postgres://...?k=v&...`) or
/// key=value string (`host=... sslmode=verify-full`); the rest goes to the
/// driver. A string this cannot take apart is handed on whole, for the
/// driver's parser to report.
pub(super) fn split_tls_options(url: &str) -> StorageResult<(String, TlsOptions)> {
    let mut opts = TlsOptions::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), opts));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| {
                        StorageError::Backend(format!(
                            "invalid PostgreSQL URL: option {k:?} is not UTF-8 once percent-decoded"
                        ))
                    })
            };
            if !tls_option(&mut opts, &decode(k)?, decode(v)?) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, opts));
    }
    // key=value form: `key = value` pairs separated by whitespace; a value is
    // either single-quoted or runs to the next whitespace, `\` escapes a char.
    let b = url.as_bytes();
    let ws = |c: u8| c.is_ascii_whitespace();
    let mut kept: Vec<&str> = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !ws(b[i]) && b[i] != b'=' {
            i += 1;
        }
        let key = &url[start..i];
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        if i == b.len() || b[i] != b'=' || key.is_empty() {
            return Ok((url.to_string(), TlsOptions::default()));
        }
        i += 1;
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        let mut value = Vec::new();
        let quoted = i < b.len() && b[i] == b'\'';
        if quoted {
            i += 1;
        }
        loop {
            if i == b.len() {
                if quoted {
                    return Ok((url.to_string(), TlsOptions::default()));
                }
                break;
            }
            match b[i] {
                b'\\' if i + 1 < b.len() => {
                    value.push(b[i + 1]);
                    i += 2;
                }
                b'\'' if quoted => {
                    i += 1;
                    break;
                }
                c if !quoted && ws(c) => break,
                c => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        // Only ASCII bytes were dropped (quotes, escapes), so this stays UTF-8.
        let value = String::from_utf8_lossy(&value).into_owned();
        if !tls_option(&mut opts, key, value) {
            kept.push(&url[start..i]);
        }
    }
    Ok((kept.join(" "), opts))
}

/// libpq's `sslmode` values this sink supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(s: Option<&str>) -> StorageResult<Self> {
        Ok(match s {
            Some("disable") => TlsMode::Disable,
            None | Some("prefer") => TlsMode::Prefer,
            Some("require") => TlsMode::Require,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            Some("allow") => {
                return Err(StorageError::Backend(
                    "sslmode=allow is not supported (it tries plaintext first); \
                     use sslmode=prefer, require or verify-full"
                        .into(),
                ))
            }
            Some(other) => {
                return Err(StorageError::Backend(format!(
                    "invalid sslmode={other:?} in the PostgreSQL URL; expected disable, \
                     prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// What the driver is told: it only knows whether to ask for TLS; the
    /// verification is in the rustls configuration.
    pub(super) fn driver_mode(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS side of the connection settings.
pub(super) struct PgTls {
    pub(super) mode: TlsMode,
    /// `sslrootcert` is in use (instead of the built-in roots).
    custom_roots: bool,
    pub(super) connector: MakeRustlsConnect,
}

impl PgTls {
    pub(super) fn new(opts: TlsOptions) -> StorageResult<Self> {
        let mode = TlsMode::parse(opts.sslmode.as_deref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StorageError::Backend(format!("postgres TLS setup failed: {e}")))?;
        // As libpq: `disable` ignores sslrootcert; with any other mode the file
        // is read now, so that a wrong path fails the start.
        let roots = match (&opts.sslrootcert, mode) {
            (Some(path), m) if m != TlsMode::Disable => Some(load_roots(Path::new(path))?),
            _ => None,
        };
        let custom_roots = roots.is_some();
        let webpki = || rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = match (mode, roots) {
            (TlsMode::Disable, _) | (TlsMode::Prefer | TlsMode::Require, None) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
                .with_no_client_auth(),
            (TlsMode::VerifyFull, roots) => builder
                .with_root_certificates(roots.unwrap_or_else(webpki))
                .with_no_client_auth(),
            // verify-ca, and (as libpq) prefer/require given a root certificate.
            (_, roots) => {
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots.unwrap_or_else(webpki)),
                    provider,
                )
                .build()
                .map_err(|e| StorageError::Backend(format!("postgres TLS setup failed: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                    .with_no_client_auth()
            }
        };
        Ok(PgTls {
            mode,
            custom_roots,
            connector: MakeRustlsConnect::new(config),
        })
    }

    /// [`map_err`] for connecting, with what to do about TLS problems.
    pub(super) fn map_connect_err(&self, e: tokio_postgres::Error) -> StorageError {
        let mode = self.mode.name();
        if let Some(tls) = rustls_cause(&e) {
            let hint = match tls {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => "connect by a host name or address the certificate names (sslmode=verify-ca skips this check)",
                rustls::Error::InvalidCertificate(_) if self.custom_roots => {
                    "check that sslrootcert is the CA that signed the server's certificate"
                }
                rustls::Error::InvalidCertificate(_) => {
                    "the server's certificate is not from a public CA: give its CA with \
                     sslrootcert=/path/ca.pem"
                }
                _ => "check the server's ssl settings",
            };
            // Retryable: the fix is on the server or in its certificate, and
            // meanwhile spans wait in the write-ahead log.
            return StorageError::Unavailable(format!(
                "postgres TLS handshake failed (sslmode={mode}): {tls}; {hint}"
            ));
        }
        let rejected =
            e.code() == Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        match map_err(e) {
            StorageError::Backend(msg) if rejected && self.mode == TlsMode::Disable => {
                StorageError::Backend(format!(
                    "{msg}; sslmode=disable connects without TLS: if the server only accepts \
                     TLS (hostssl in pg_hba.conf), use sslmode=verify-full \
                     (with sslrootcert=/path/ca.pem for a private CA)"
                ))
            }
            other => other,
        }
    }
}

/// The rustls error behind a failed connect, if TLS is what failed.
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // tokio-rustls wraps it in an io::Error, whose `source` skips it.
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Reads the CA certificates of `sslrootcert`.
fn load_roots(path: &Path) -> StorageResult<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| {
        StorageError::Backend(format!(
            "cannot read sslrootcert file {}: {e}; give the path of a PEM file holding \
             the CA certificate(s) that signed the PostgreSQL server's certificate",
            path.display()
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            StorageError::Backend(format!(
                "invalid PEM in sslrootcert file {}: {e}",
                path.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            StorageError::Backend(format!(
                "unusable CA certificate in sslrootcert file {}: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(StorageError::Backend(format!(
            "sslrootcert file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(roots)
}

/// `prefer`/`require` without a root certificate, as libpq: any certificate is
/// accepted (handshake signatures are still checked, so the session key is
/// bound to the certificate the server sent).
#[derive(Debug)]
struct NoCertificateCheck(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not
/// checked. webpki checks the chain before the name, so a name mismatch
/// means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_config;
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, o) = split_tls_options(
            "postgres://u@h:5/db?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h:5/db?connect_timeout=5");
        assert_eq!(o.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(o.sslrootcert.as_deref(), Some("/tmp/ca x.pem"));
        let (rest, o) = split_tls_options("postgresql://u@h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(o.sslmode.as_deref(), Some("require"));
        let (rest, o) = split_tls_options(
            "host=h sslrootcert = '/tmp/a b\\'c.pem' user=u sslmode=verify-ca dbname='x y'",
        )
        .unwrap();
        assert_eq!(rest, "host=h user=u dbname='x y'");
        assert_eq!(o.sslrootcert.as_deref(), Some("/tmp/a b'c.pem"));
        assert_eq!(o.sslmode.as_deref(), Some("verify-ca"));
        // Unparseable: handed on whole, for the driver to report.
        let (rest, o) = split_tls_options("host='unterminated sslmode=x").unwrap();
        assert_eq!(rest, "host='unterminated sslmode=x");
        assert_eq!(o, TlsOptions::default());
        assert!(parse_config("postgres://u@h/db?sslmode=verify-full").is_ok());
        assert!(parse_config("host=h sslmode=verify-ca").is_ok());
    }

    #[test]
    fn bad_tls_settings_say_what_is_wrong() {
        let e = parse_config("postgres://u@h/db?sslmode=sometimes")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("invalid sslmode=\"sometimes\""),
            "{e}"
        );
        let e = parse_config("postgres://u@h/db?sslmode=allow")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("sslmode=allow is not supported"),
            "{e}"
        );
        let e =
            parse_config("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .err()
                .unwrap();
        assert!(
            e.to_string()
                .contains("cannot read sslrootcert file /nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = parse_config(&format!(
            "postgres://u@h/db?sslmode=require&sslrootcert={}",
            empty.display()
        ))
        .err()
        .unwrap();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        // disable ignores sslrootcert, as libpq does.
        assert!(parse_config("postgres://u@h/db?sslmode=disable&sslrootcert=/nonexistent").is_ok());
    }
}
