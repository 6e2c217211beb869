//! TLS material for the OTLP exporters: CA certificates to trust and client
//! identities for mTLS, from PEM given in code or files named by the
//! environment, checked when the configuration is resolved.

use super::ConfigError;

/// A PEM bundle of CA certificates to trust for `https` endpoints.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCertificate {
    pem: Vec<u8>,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    source: String,
}

impl std::fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCertificate")
            .field("source", &self.source)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl CaCertificate {
    /// Parses a PEM bundle; `source` says where it came from, for errors.
    pub(crate) fn from_pem(pem: Vec<u8>, source: String) -> Result<Self, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        let invalid = |reason: String| ConfigError::CaCertificate {
            source_desc: source.clone(),
            reason,
        };
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no PEM `CERTIFICATE` block found".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (i, c) in certs.iter().enumerate() {
            roots
                .add(c.clone())
                .map_err(|e| invalid(format!("certificate #{}: {e}", i + 1)))?;
        }
        Ok(CaCertificate { pem, certs, source })
    }

    /// The PEM text as given.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// A root store holding exactly these certificates.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        // Every certificate was accepted by `from_pem`.
        roots.add_parsable_certificates(self.certs.iter().cloned());
        roots
    }

    /// Where the certificates came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A client certificate chain and its private key (PEM), for mTLS.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    source: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ClientIdentity")
            .field("source", &self.source)
            .finish()
    }
}

impl ClientIdentity {
    /// Checks that `cert_pem` holds at least one certificate and `key_pem` a
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        source: String,
    ) -> Result<Self, ConfigError> {
        let id = ClientIdentity {
            cert_pem,
            key_pem,
            source,
        };
        id.certs()?;
        id.key()?;
        Ok(id)
    }

    fn invalid(&self, reason: String) -> ConfigError {
        ConfigError::ClientIdentity {
            source_desc: self.source.clone(),
            reason,
        }
    }

    /// The certificate chain.
    pub fn certs(&self) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(format!("certificate is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.invalid("no PEM `CERTIFICATE` block in the certificate file".into()));
        }
        Ok(certs)
    }

    /// The private key.
    pub fn key(&self) -> Result<rustls::pki_types::PrivateKeyDer<'static>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| {
            self.invalid(format!(
                "no usable private key (PKCS#8, PKCS#1 or SEC1 PEM) in the key file: {e}"
            ))
        })
    }

    /// The certificate PEM as given.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// The key PEM as given.
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    /// Where they came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Where a client certificate and key come from.
#[derive(Clone, Debug)]
pub(crate) enum IdentitySource {
    Pem {
        cert: Vec<u8>,
        key: Vec<u8>,
    },
    Files {
        cert: (std::path::PathBuf, Option<&'static str>),
        key: (std::path::PathBuf, Option<&'static str>),
    },
}

impl IdentitySource {
    pub(super) fn load(&self) -> Result<ClientIdentity, ConfigError> {
        match self {
            IdentitySource::Pem { cert, key } => {
                ClientIdentity::from_pem(cert.clone(), key.clone(), "in-memory PEM".into())
            }
            IdentitySource::Files { cert, key } => {
                let desc = |(path, var): &(std::path::PathBuf, Option<&'static str>)| match var {
                    Some(v) => format!("{v}={}", path.display()),
                    None => format!("file {}", path.display()),
                };
                let source = format!("{} and {}", desc(cert), desc(key));
                let read = |f: &(std::path::PathBuf, Option<&'static str>)| {
                    std::fs::read(&f.0).map_err(|e| ConfigError::ClientIdentity {
                        source_desc: desc(f),
                        reason: e.to_string(),
                    })
                };
                ClientIdentity::from_pem(read(cert)?, read(key)?, source)
            }
        }
    }
}

/// Where a custom CA comes from, read when the configuration is resolved.
#[derive(Clone, Debug)]
pub(crate) enum CaSource {
    Pem(Vec<u8>),
    File {
        path: std::path::PathBuf,
        var: Option<&'static str>,
    },
}

impl CaSource {
    pub(super) fn load(&self) -> Result<CaCertificate, ConfigError> {
        match self {
            CaSource::Pem(pem) => CaCertificate::from_pem(pem.clone(), "in-memory PEM".into()),
            CaSource::File { path, var } => {
                let desc = match var {
                    Some(v) => format!("{v}={}", path.display()),
                    None => format!("file {}", path.display()),
                };
                let pem = std::fs::read(path).map_err(|e| ConfigError::CaCertificate {
                    source_desc: desc.clone(),
                    reason: e.to_string(),
                })?;
                CaCertificate::from_pem(pem, desc)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_certificate_must_hold_a_certificate() {
        let e = CaCertificate::from_pem(b"not a certificate".to_vec(), "test".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PEM `CERTIFICATE` block"), "{e}");
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = CaCertificate::from_pem(bad.to_vec(), "test".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("certificate #1"), "{e}");
    }
}
