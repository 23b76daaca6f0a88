//! Certificates for TLS tests, made at test time with rcgen: a CA and a server certificate
//! for `localhost` and 127.0.0.1 signed by it, written as PEM files.

use std::path::{Path, PathBuf};

/// A CA and a server certificate, as PEM files.
pub struct Pki {
    /// The CA certificate (PEM text), for clients that take it in memory.
    pub ca_pem: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA (common name `cn`) and a server certificate for `localhost` and 127.0.0.1,
    /// written to `dir` as `<prefix>ca.pem`, `<prefix>server.pem` and `<prefix>server.key`.
    pub fn localhost(dir: &Path, prefix: &str, cn: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let ca = p.self_signed(&ca_key).expect("a self-signed CA");
        let key = KeyPair::generate().expect("a server key");
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server parameters")
            .signed_by(&key, &ca, &ca_key)
            .expect("a server certificate");
        let w = |n: &str, t: String| {
            let path = dir.join(format!("{prefix}{n}"));
            std::fs::write(&path, t).expect("write a PEM file");
            path
        };
        Pki {
            ca_pem: ca.pem(),
            ca: w("ca.pem", ca.pem()),
            cert: w("server.pem", cert.pem()),
            key: w("server.key", key.serialize_pem()),
        }
    }
}
