//! fieldlab-broker: the embedded MQTT broker.
//!
//! Why it exists: `fieldlab up` must work on a laptop with nothing installed, so fieldlab
//! carries its own broker — rumqttd, run in-process on its own threads. Devices (emulated or
//! real) and ingest connect to it over TCP exactly as they would to Mosquitto or an EMQX
//! cluster, so the same ingest code serves the embedded and the external case (`--broker`).
//!
//! Listeners (what rumqttd 0.20 offers, and so what fieldlab offers on the embedded broker):
//! - MQTT 3.1.1 over TCP (`port`, 1883);
//! - MQTT over TLS (`tls_port`, 8883) with rustls, from PEM certificate and key files;
//! - MQTT over WebSocket (`ws_port`, 9001, subprotocol `mqtt`); with TLS files set it is
//!   WebSocket over TLS (`wss://`), so passwords never cross the network in the clear.
//! - Username/password on every listener through [`MqttAuth`] (fieldlab checks users and
//!   API keys; a device key also pins the client id to the device).
//!
//! What rumqttd 0.20 does not offer: per-topic ACLs (no authorisation hook for PUBLISH or
//! SUBSCRIBE), and client certificates without its multi-tenant mode (`verify-client-cert`
//! makes a client certificate mandatory on every TLS listener and prefixes topics with the
//! certificate's organisation). Deployments that need per-device topic ACLs run Mosquitto
//! (`deploy/compose/mosquitto`, with an `acl_file` pattern per device) and point fieldlab at it.
//!
//! Architecture invariant: nothing else in fieldlab talks to rumqttd's internals; the broker is
//! reached only through the MQTT protocol.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checks an MQTT CONNECT: `(client_id, username, password) -> allowed`. Called on a blocking
/// thread, so it may hash passwords.
pub type MqttAuth = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot use {addr} for the embedded MQTT broker: {cause}. Pick another port (--mqtt-port N, or 0 for any free port), or use a running broker with --broker mqtt://HOST:PORT")]
    Bind { addr: String, cause: std::io::Error },
    #[error("the embedded MQTT broker did not accept connections on {0} within 5 s")]
    NotListening(SocketAddr),
    #[error("MQTT over TLS: {0}")]
    Tls(String),
}

/// Settings of the embedded broker.
#[derive(Clone)]
pub struct BrokerSettings {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    pub max_payload_size: usize,
    pub max_connections: usize,
    /// MQTT over TLS listener (needs `tls`); 0 picks a free port.
    pub tls_port: Option<u16>,
    /// MQTT over WebSocket listener (TLS too when `tls` is set); 0 picks a free port.
    pub ws_port: Option<u16>,
    pub tls: Option<BrokerTls>,
    /// `None`: anyone may connect (the local demo).
    pub auth: Option<MqttAuth>,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            host: "127.0.0.1".into(),
            port: 1883,
            max_payload_size: 256 * 1024,
            max_connections: 1100,
            tls_port: None,
            ws_port: None,
            tls: None,
            auth: None,
        }
    }
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("ws_port", &self.ws_port)
            .field("tls", &self.tls)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// PEM files of the broker's TLS listeners.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running embedded broker. It stops when the process exits.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// The address it listens on (with the real port when 0 was asked for).
    pub listen: SocketAddr,
    pub tls_listen: Option<SocketAddr>,
    pub ws_listen: Option<SocketAddr>,
}

impl EmbeddedBroker {
    /// An address clients on this machine can connect to.
    pub fn local_addr(&self) -> SocketAddr {
        connectable(self.listen)
    }
}

/// A bound address as a local client would dial it (`0.0.0.0` becomes `127.0.0.1`).
pub fn connectable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// Bind `host:port` once to check it is free and to resolve port 0.
fn probe(host: &str, port: u16) -> Result<SocketAddr, BrokerError> {
    let want = format!("{host}:{port}");
    let addr: SocketAddr = want
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BrokerError::Bind {
            addr: want.clone(),
            cause: std::io::Error::other("not a valid listen address"),
        })?;
    // rumqttd only logs bind failures from its own thread, and port 0 must be resolved to a
    // concrete port before rumqttd gets it.
    let l = TcpListener::bind(addr).map_err(|cause| BrokerError::Bind { addr: want, cause })?;
    Ok(l.local_addr().expect("bound socket has an address"))
}

/// Check the PEM files now: rumqttd reads them at each TLS accept and only logs failures.
fn check_tls(t: &BrokerTls) -> Result<(), BrokerError> {
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).map_err(|e| BrokerError::Tls(format!("{what} {}: {e}", p.display())))
    };
    let cert = read(&t.cert, "mqtt.server_cert_file")?;
    if !String::from_utf8_lossy(&cert).contains("BEGIN CERTIFICATE") {
        return Err(BrokerError::Tls(format!(
            "mqtt.server_cert_file {}: no PEM certificate in it",
            t.cert.display()
        )));
    }
    let key = read(&t.key, "mqtt.server_key_file")?;
    if !String::from_utf8_lossy(&key).contains("PRIVATE KEY") {
        return Err(BrokerError::Tls(format!(
            "mqtt.server_key_file {}: no PEM private key in it",
            t.key.display()
        )));
    }
    Ok(())
}

/// Start rumqttd and wait until every listener accepts TCP connections.
pub fn start(s: &BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
    let listen = probe(&s.host, s.port)?;
    if let Some(t) = &s.tls {
        check_tls(t)?;
    }
    let tls_listen = match s.tls_port {
        Some(_) if s.tls.is_none() => {
            return Err(BrokerError::Tls(
                "a TLS port needs mqtt.server_cert_file and mqtt.server_key_file".into(),
            ))
        }
        Some(p) => Some(probe(&s.host, p)?),
        None => None,
    };
    let ws_listen = s.ws_port.map(|p| probe(&s.host, p)).transpose()?;

    let mut conn = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: s.max_payload_size,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if let Some(check) = s.auth.clone() {
        conn.set_auth_handler(move |client_id, user, pass| {
            let check = check.clone();
            async move {
                // Password hashes cost CPU: off the broker's event loop.
                tokio::task::spawn_blocking(move || check(&client_id, &user, &pass))
                    .await
                    .unwrap_or(false)
            }
        });
    }
    let tls = s.tls.as_ref().map(|t| rumqttd::TlsConfig::Rustls {
        capath: None,
        certpath: t.cert.display().to_string(),
        keypath: t.key.display().to_string(),
    });
    let server =
        |name: &str, listen: SocketAddr, tls: Option<rumqttd::TlsConfig>| rumqttd::ServerSettings {
            name: name.into(),
            listen,
            tls,
            next_connection_delay_ms: 0,
            connections: conn.clone(),
        };
    let mut v4 = HashMap::from([("1".to_string(), server("fieldlab-v4", listen, None))]);
    if let Some(a) = tls_listen {
        v4.insert("2".into(), server("fieldlab-v4-tls", a, tls.clone()));
    }
    let ws = ws_listen.map(|a| HashMap::from([("1".to_string(), server("fieldlab-ws", a, tls))]));
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: s.max_connections,
            max_outgoing_packet_count: 1000,
            max_segment_size: 32 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(v4),
        ws,
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("fieldlab-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|cause| BrokerError::Bind {
            addr: listen.to_string(),
            cause,
        })?;

    let b = EmbeddedBroker {
        listen,
        tls_listen,
        ws_listen,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    for a in [Some(listen), tls_listen, ws_listen].into_iter().flatten() {
        while TcpStream::connect_timeout(&connectable(a), Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(BrokerError::NotListening(a));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_free_port_and_refuses_a_taken_one() {
        let b = start(&BrokerSettings {
            port: 0,
            max_payload_size: 1024,
            max_connections: 10,
            ..Default::default()
        })
        .unwrap();
        assert_ne!(b.listen.port(), 0);
        let e = start(&BrokerSettings {
            port: b.listen.port(),
            max_payload_size: 1024,
            max_connections: 10,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--mqtt-port"), "{e}");
    }
}

#[cfg(test)]
mod listener_tests;
