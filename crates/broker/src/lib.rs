//! fieldlab-broker: the embedded MQTT broker.
//!
//! Why it exists: `fieldlab up` must work on a laptop with nothing installed, so fieldlab
//! carries its own broker — rumqttd, run in-process on its own threads. Devices (emulated or
//! real) and ingest connect to it over TCP exactly as they would to Mosquitto or an EMQX
//! cluster, so the same ingest code serves the embedded and the external case (`--broker`).
//!
//! Architecture invariant: nothing else in fieldlab talks to rumqttd's internals; the broker is
//! reached only through the MQTT protocol.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot use {addr} for the embedded MQTT broker: {cause}. Pick another port (--mqtt-port N, or 0 for any free port), or use a running broker with --broker mqtt://HOST:PORT")]
    Bind { addr: String, cause: std::io::Error },
    #[error("the embedded MQTT broker did not accept connections on {0} within 5 s")]
    NotListening(SocketAddr),
}

/// Settings of the embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    pub max_payload_size: usize,
    pub max_connections: usize,
}

/// A running embedded broker. It stops when the process exits.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// The address it listens on (with the real port when 0 was asked for).
    pub listen: SocketAddr,
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

/// Start rumqttd and wait until it accepts TCP connections.
pub fn start(s: &BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
    let want = format!("{}:{}", s.host, s.port);
    let addr: SocketAddr = want
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BrokerError::Bind {
            addr: want.clone(),
            cause: std::io::Error::other("not a valid listen address"),
        })?;
    // Probe the port ourselves: rumqttd only logs bind failures from its own thread, and port
    // 0 must be resolved to a concrete port before rumqttd gets it.
    let listen = {
        let l = TcpListener::bind(addr).map_err(|cause| BrokerError::Bind {
            addr: want.clone(),
            cause,
        })?;
        l.local_addr().expect("bound socket has an address")
    };

    let conn = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: s.max_payload_size,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "fieldlab-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: conn,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: s.max_connections,
            max_outgoing_packet_count: 1000,
            max_segment_size: 32 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
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
            addr: want.clone(),
            cause,
        })?;

    let b = EmbeddedBroker { listen };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&b.local_addr(), Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(listen));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_free_port_and_refuses_a_taken_one() {
        let b = start(&BrokerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            max_payload_size: 1024,
            max_connections: 10,
        })
        .unwrap();
        assert_ne!(b.listen.port(), 0);
        let e = start(&BrokerSettings {
            host: "127.0.0.1".into(),
            port: b.listen.port(),
            max_payload_size: 1024,
            max_connections: 10,
        })
        .unwrap_err();
        assert!(e.to_string().contains("--mqtt-port"), "{e}");
    }
}
