//! `devices.tls` and `mqtt.tls` of fieldlab.yaml: the TLS of an MQTT client connection.
//!
//! Why here: [`crate::client_config`] is the one reader of these keys, for every MQTT client
//! (the devices, ingest, the event publisher); the two sections embed this struct.

use fieldlab_core::config::{Problem, Section};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// TLS of an MQTT client connection (rustls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MqttTlsConfig {
    /// PEM CA bundle the broker's certificate must chain to. Unset: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require client certificates.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Host name the devices connect to and check in the broker's certificate. Unset:
    /// `localhost` for the embedded broker's TLS listener, else the broker URL's host.
    pub server_name: Option<String>,
}

impl Section for MqttTlsConfig {
    fn validate(&self) -> Result<(), Problem> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Problem::at(
                "key_file",
                "set both cert_file and key_file for a client certificate",
            );
        }
        Ok(())
    }
}
