//! Serving over TLS, optionally requiring client certificates (mTLS), with rustls.
//!
//! Why it exists: the verifier is deployed on 8443 with TLS, and some sites admit only
//! clients holding a certificate from their CA whose subject is on an allow-list. The CA check
//! is rustls' WebPKI client verifier; the subject check happens right after the handshake
//! (a refused client's connection is closed before any HTTP is read).

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA (PEM).
    pub client_ca: Option<PathBuf>,
    /// Allowed client subjects: a full RFC 4514 DN (`CN=auditor,O=Example`) or `CN=name`.
    /// Empty: any certificate from the CA.
    pub allowed_subjects: Vec<String>,
}

fn certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let c: Result<Vec<_>, _> = rustls_pemfile::certs(&mut std::io::BufReader::new(f)).collect();
    let c = c.map_err(|e| format!("{}: {e}", p.display()))?;
    if c.is_empty() {
        return Err(format!("{}: no PEM certificate found", p.display()));
    }
    Ok(c)
}

fn key(p: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    rustls_pemfile::private_key(&mut std::io::BufReader::new(f))
        .map_err(|e| format!("{}: {e}", p.display()))?
        .ok_or_else(|| format!("{}: no PEM private key found", p.display()))
}

pub fn server_config(s: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let b = match &s.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    let mut cfg = b
        .with_single_cert(certs(&s.cert)?, key(&s.key)?)
        .map_err(|e| format!("{}: {e}", s.cert.display()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The subject DN of a DER certificate, RFC 4514 style.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(c.subject().to_string())
}

fn allowed(subject: &str, list: &[String]) -> bool {
    if list.is_empty() {
        return true;
    }
    let norm = |s: &str| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .collect::<Vec<_>>()
    };
    let parts = norm(subject);
    list.iter().any(|a| {
        let want = norm(a);
        want == parts || (want.len() == 1 && parts.contains(&want[0]))
    })
}

/// Accept TLS connections until `shutdown` resolves; serve each with `app`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    s: TlsSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let acceptor = TlsAcceptor::from(server_config(&s)?);
    let allowed_subjects = Arc::new(s.allowed_subjects.clone());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, allowed_subjects) =
            (acceptor.clone(), app.clone(), allowed_subjects.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| subject_of(c));
            if let Some(sub) = &subject {
                if !allowed(sub, &allowed_subjects) {
                    tracing::warn!(%peer, subject = %sub, "client certificate subject not allowed");
                    return;
                }
            }
            let svc = TowerToHyperService::new(app);
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_matching() {
        let l = vec!["CN=auditor".to_string()];
        assert!(super::allowed("CN=auditor, O=Example", &l));
        assert!(!super::allowed("CN=intruder, O=Example", &l));
        assert!(super::allowed("CN=x", &[]));
        assert!(super::allowed("CN=a, O=B", &["CN=a,O=B".to_string()]));
    }
}
