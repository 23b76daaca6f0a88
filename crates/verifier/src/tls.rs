//! Serving the verifier over TLS, optionally requiring client certificates (mTLS).
//!
//! Why it exists: the verifier is deployed on 8443 with TLS, and some sites admit only
//! clients holding a certificate from their CA whose subject is on an allow-list. The TLS
//! listener, the CA check and the subject check are `fieldlab-http`'s (shared with the lab
//! API); this module names the verifier's flags in errors and offers HTTP/2 as well.

use axum::Router;
use fieldlab_http::tls::{server_config_named, TlsFiles, TlsListener};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use fieldlab_http::tls::subject_of;

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

/// The verifier's rustls configuration (HTTP/2 and HTTP/1.1).
pub fn server_config(s: &TlsSettings) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    server_config_named(
        TlsFiles {
            cert: &s.cert,
            key: &s.key,
            client_ca: s.client_ca.as_deref(),
            names: ["--tls-cert", "--tls-key", "--client-ca"],
        },
        &[b"h2", b"http/1.1"],
    )
}

/// Accept TLS connections until `shutdown` resolves; serve each with `app`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    s: TlsSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let cfg = server_config(&s)?;
    let listener = TlsListener::with_allowed_subjects(listener, cfg, s.allowed_subjects)
        .map_err(|e| e.to_string())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string())
}
