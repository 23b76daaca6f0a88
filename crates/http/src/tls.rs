//! HTTPS with rustls, and client certificates (mTLS) when a CA is configured.
//!
//! Why not axum-server: fieldlab needs the verified client certificate in each request (its
//! common name becomes the `Principal` (fieldlab-core) of an mTLS client), which
//! axum-server does not expose. A [`TlsListener`] is an `axum::serve::Listener`: TCP accepts
//! feed handshakes that run in their own tasks (a slow or silent client cannot hold up the
//! others; each has 10 s), and finished TLS streams go to axum's own server loop, which keeps
//! graceful shutdown. [`PeerInfo`] carries the peer address and certificate name into requests.
//! A listener may also admit only client certificates whose subject is on an allow-list (the
//! verifier's deployments): a refused client's connection is closed before any HTTP is read.

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{what} {}: cannot read it: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no `BEGIN CERTIFICATE` block found",
            path.display()
        ));
    }
    Ok(certs)
}

/// The lab API's rustls configuration from PEM files (ring crypto, TLS 1.2 and 1.3, HTTP/1.1).
/// With `client_ca`, every client must present a certificate that chains to it. Errors name
/// the `server.tls_*` keys.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    server_config_named(
        TlsFiles {
            cert,
            key,
            client_ca,
            names: [
                "server.tls_cert_file",
                "server.tls_key_file",
                "server.tls_client_ca_file",
            ],
        },
        &[b"http/1.1"],
    )
}

/// PEM files of a TLS listener, and what the user calls them (a config key or a flag), for
/// errors that say which one to fix.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
    /// Names of `cert`, `key` and `client_ca` in errors.
    pub names: [&'a str; 3],
}

/// A rustls server configuration from PEM files, offering these ALPN protocols.
pub fn server_config_named(f: TlsFiles<'_>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let [cert_name, key_name, ca_name] = f.names;
    let chain = read_certs(f.cert, cert_name)?;
    let key_bytes = std::fs::read(f.key)
        .map_err(|e| format!("{key_name} {}: cannot read it: {e}", f.key.display()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_bytes.as_slice())
        .map_err(|e| format!("{key_name} {}: not PEM: {e}", f.key.display()))?
        .ok_or_else(|| format!("{key_name} {}: no private key block found", f.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match f.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, ca_name)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{ca_name} {}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{ca_name} {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{cert_name}/{key_name} do not match or are unusable: {e}"))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The subject DN of a DER certificate, RFC 4514 style.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(c.subject().to_string())
}

/// Whether `subject` is on the allow-list: a full DN (`CN=auditor,O=Example`) or one RDN
/// (`CN=auditor`). An empty list allows every subject.
pub fn subject_allowed(subject: &str, list: &[String]) -> bool {
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

/// A TCP listener that yields finished TLS streams.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    pub fn new(tcp: TcpListener, cfg: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        TlsListener::with_allowed_subjects(tcp, cfg, Vec::new())
    }

    /// A listener that also closes connections whose client certificate's subject is not on
    /// `allowed_subjects` (see [`subject_allowed`]; empty: any certificate the CA signed).
    pub fn with_allowed_subjects(
        tcp: TcpListener,
        cfg: Arc<ServerConfig>,
        allowed_subjects: Vec<String>,
    ) -> std::io::Result<TlsListener> {
        let allowed_subjects = Arc::new(allowed_subjects);
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(cfg);
        let accept_task = tokio::spawn(async move {
            loop {
                let (sock, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let allowed_subjects = allowed_subjects.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await
                    {
                        Ok(Ok(s)) => {
                            let subject = s
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| subject_of(c));
                            if let Some(sub) = &subject {
                                if !subject_allowed(sub, &allowed_subjects) {
                                    tracing::warn!(%peer, subject = %sub, "client certificate subject not allowed");
                                    return;
                                }
                            }
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accept_task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Who is on the other end of an HTTPS connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// Common name of the verified client certificate (mTLS), if any.
    pub cert_common_name: Option<String>,
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerInfo {
    fn connect_info(s: IncomingStream<'_, TlsListener>) -> Self {
        let cert_common_name = s
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| common_name(der.as_ref()));
        PeerInfo {
            addr: *s.remote_addr(),
            cert_common_name,
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for PeerInfo {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Self {
        PeerInfo {
            addr: *s.remote_addr(),
            cert_common_name: None,
        }
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_matching() {
        let l = vec!["CN=auditor".to_string()];
        assert!(super::subject_allowed("CN=auditor, O=Example", &l));
        assert!(!super::subject_allowed("CN=intruder, O=Example", &l));
        assert!(super::subject_allowed("CN=x", &[]));
        assert!(super::subject_allowed(
            "CN=a, O=B",
            &["CN=a,O=B".to_string()]
        ));
    }
}
