//! `cap serve`: the proof verifier API on its own (JWT scopes, TLS/mTLS).

use super::*;

pub(super) fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    use fieldlab_verifier::{tls, Auth, Verifier};
    let addr: std::net::SocketAddr = a
        .bind
        .parse()
        .map_err(|_| anyhow!("--bind `{}`: use HOST:PORT, e.g. 0.0.0.0:8443", a.bind))?;
    let auth = if a.insecure_no_auth {
        if !addr.ip().is_loopback() {
            bail!("--insecure-no-auth is only allowed on a loopback address; configure --issuer and --jwt-public-key/--jwks");
        }
        Auth::Disabled
    } else {
        let iss = a.issuer.clone().ok_or_else(|| anyhow!("--issuer is required (the `iss` of accepted tokens), with --jwt-public-key PEM or --jwks FILE; or --insecure-no-auth on loopback"))?;
        let mut j = fieldlab_auth::jwt::JwtVerifier::new(&iss, &a.audience);
        for p in &a.jwt_pem {
            j.add_pem_file(p).map_err(|m| anyhow!(m))?;
        }
        if let Some(f) = &a.jwks {
            j.add_jwks_file(f).map_err(|m| anyhow!(m))?;
        }
        if j.key_count() == 0 {
            bail!("no token keys: give --jwt-public-key PEM or --jwks FILE");
        }
        Auth::Jwt(j)
    };
    let trusted = fieldlab_attest::trust::load_signers(&a.trust)?;
    let reg = a
        .data
        .as_deref()
        .map(fieldlab_registry::Registry::open)
        .transpose()
        .map_err(|m| anyhow!(m))?;
    let v = std::sync::Arc::new(Verifier::new(auth, None, reg).trusting(trusted));
    let app = fieldlab_verifier::standalone(v);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => {
                let mtls = a.client_ca.is_some();
                println!(
                    "cap verifier API on https://{local}{}",
                    if mtls { " (mTLS)" } else { "" }
                );
                let s = tls::TlsSettings {
                    cert,
                    key,
                    client_ca: a.client_ca,
                    allowed_subjects: a.allowed_subjects,
                };
                tls::serve(listener, app, s, stop)
                    .await
                    .map_err(|m| anyhow!(m))
            }
            (None, None) => {
                if a.client_ca.is_some() {
                    bail!("--client-ca needs --tls-cert and --tls-key");
                }
                println!("cap verifier API on http://{local}");
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
                    .map_err(Into::into)
            }
            _ => bail!("give both --tls-cert and --tls-key"),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
