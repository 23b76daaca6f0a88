//! fieldlab-mqtt-tls: MQTT over TLS for every MQTT client fieldlab runs.
//!
//! Why a crate of its own: the emulator's device connections and load-mode subscriber
//! (`devices.tls`, `fieldlab emulate --ca/--cert/--key`), ingest and the event publisher on an
//! external `mqtts://` broker (`mqtt.tls`) all need the same rules, and ingest must not depend
//! on the emulator to get them. One rustls `ClientConfig` is built per use (not per connection:
//! a fleet of 100k devices shares it behind an `Arc`): the broker's certificate must chain to
//! the given CA file, or to the system's trust store when none is given, and name the host (or
//! `server_name` when set); a client certificate is sent when the broker asks for one (mTLS).

mod config;

pub use config::MqttTlsConfig;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
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
                    "no CA file given and the system trust store is empty; give the broker's CA (--ca FILE, devices.tls.ca_file or mqtt.tls.ca_file)".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls", e.to_string()))?;
    let builder = match &c.server_name {
        // rumqttc checks the certificate against the host it connects to; with `server_name`
        // the same full WebPKI check runs against that name instead (an IP in the URL, a
        // certificate for the broker's DNS name).
        Some(name) => {
            let name = ServerName::try_from(name.clone()).map_err(|e| {
                err(
                    "server_name",
                    format!("`{name}` is not a DNS name or IP address: {e}"),
                )
            })?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| err("ca_file", e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedName { inner, name }))
        }
        None => builder.with_root_certificates(roots),
    };
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

/// WebPKI verification of the broker's certificate against a configured name rather than the
/// name rumqttc connected to. Everything else (chain to the roots, validity, signatures) is
/// the stock verifier's.
#[derive(Debug)]
struct FixedName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
