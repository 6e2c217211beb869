//! Throwaway TLS material for tests, made with the `openssl` CLI (Debian
//! package `openssl`): a CA, a server certificate for 127.0.0.1 and
//! localhost signed by it, and an unrelated second CA.

use std::path::{Path, PathBuf};
use std::process::Command;

const OPENSSL: &str = "/usr/bin/openssl";

/// Paths of the generated files (all PEM).
pub struct TestCerts {
    /// The CA that signed the server certificate.
    pub ca: PathBuf,
    /// Another CA, which signed nothing.
    pub other_ca: PathBuf,
    /// The server certificate (`server.pem`), for 127.0.0.1 and localhost.
    pub cert: PathBuf,
    /// Its private key (`server.key`).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(OPENSSL)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the TLS tests need /usr/bin/openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the CAs, the server certificate and its key into `d`.
pub fn make(d: &Path) -> TestCerts {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    for (key, pem, cn) in [
        ("ca.key", "ca.pem", "/CN=ferrotrace test CA"),
        (
            "other-ca.key",
            "other-ca.pem",
            "/CN=ferrotrace unrelated CA",
        ),
    ] {
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(ec);
        args.extend(["-keyout", key, "-out", pem, "-subj", cn]);
        openssl(d, &args);
    }
    let mut csr = vec!["req", "-nodes"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(d, &csr);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    TestCerts {
        ca: d.join("ca.pem"),
        other_ca: d.join("other-ca.pem"),
        cert: d.join("server.pem"),
        key: d.join("server.key"),
    }
}
