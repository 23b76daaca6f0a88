//! `server:` of fieldlab.yaml: the HTTP API's listener, TLS and host checks.
//!
//! Why here: these keys configure this crate's service — its address and TLS (topology binds
//! the listener with them) and the host names [`crate::browser_guard`] admits — so their
//! defaults and the checks that keep a wrong host list or half a TLS pair from starting live
//! beside it.

use fieldlab_core::config::{ByteSize, Problem, Section};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The HTTP server (`server:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds to. Loopback by default: there is no auth yet.
    pub host: String,
    /// HTTP port; 0 picks a free port (printed at start-up).
    pub port: u16,
    /// PEM certificate chain and private key: set both to serve HTTPS (rustls).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate signed by it (mTLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// With auth off, the host names (`Host` header, port ignored) fieldlab answers besides
    /// loopback names and IP addresses, e.g. `[lab.local]`: any other name is refused, so a
    /// web page cannot reach the lab through DNS rebinding. Also the origins (by host) whose
    /// browser writes and WebSocket upgrades are accepted besides the server's own.
    pub allowed_hosts: Vec<String>,
    /// Also export deprecated metric names (`active_devices_count`, now
    /// `fieldlab_active_devices`) for dashboards and autoscalers not yet moved. Removed in the
    /// next release.
    pub legacy_metric_names: bool,
    /// In a cluster, the most the peers' shares of one fleet-wide answer (an export above
    /// all) may hold in memory on the replica asked, together: a larger answer is refused
    /// with 413 saying how to narrow it. One replica streams its exports and needs no bound.
    pub fleet_answer_max_size: ByteSize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            allowed_hosts: Vec::new(),
            legacy_metric_names: false,
            fleet_answer_max_size: ByteSize::mib(256),
        }
    }
}

impl Section for ServerConfig {
    fn validate(&self) -> Result<(), Problem> {
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if h.is_empty() || (h.contains(['/', ':', ' ', '*']) && !h.starts_with('[')) {
                return Problem::at(
                    format!("allowed_hosts[{i}]"),
                    format!("`{h}` is not a host name: write the bare name, e.g. `lab.local` (no scheme, port, path or wildcard)"),
                );
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Problem::at(
                "tls_key_file",
                "set both server.tls_cert_file and server.tls_key_file for HTTPS",
            );
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return Problem::at(
                "tls_client_ca_file",
                "client certificates (mTLS) need HTTPS: set server.tls_cert_file and server.tls_key_file",
            );
        }
        Ok(())
    }
}
