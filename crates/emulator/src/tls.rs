//! MQTT over TLS for the device connections and the load-mode subscriber.
//!
//! Built once per emulator (not per device: a fleet of 100k devices shares one rustls
//! `ClientConfig` behind an `Arc`) from `devices.tls` or `fieldlab emulate --ca/--cert/--key`:
//! the broker's certificate must chain to the given CA file, or to the system's trust store
//! when none is given; a client certificate is sent when the broker asks for one.

use fieldlab_core::config::MqttTlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;

/// A TLS setting that cannot be used, naming the key (or flag) and the file.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: String) -> TlsError {
    TlsError {
        key: key.into(),
        message,
    }
}

fn certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let v = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                key,
                format!("{}: not PEM certificates: {e}", path.display()),
            )
        })?;
    if v.is_empty() {
        return Err(err(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(v)
}

/// The rumqttc TLS configuration for `c` (rustls with the ring provider).
pub fn client_config(c: &MqttTlsConfig) -> Result<rumqttc::TlsConfiguration, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &c.ca_file {
        Some(ca) => {
            for cert in certs("ca_file", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| err("ca_file", format!("{}: unusable CA: {e}", ca.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(err(
                    "ca_file",
                    "no CA file given and the system trust store is empty; give the broker's CA (--ca FILE or devices.tls.ca_file)".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("tls", e.to_string()))?
    .with_root_certificates(roots);
    let cfg = match (&c.cert_file, &c.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs("cert_file", cert)?;
            let k = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                err(
                    "key_file",
                    format!("cannot read a PEM private key from {}: {e}", key.display()),
                )
            })?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| err("cert_file", format!("certificate and key do not fit: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(err(
                "key_file",
                "give both a client certificate and its key, or neither".into(),
            ))
        }
    };
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)))
}
