//! fieldlab-broker: the embedded MQTT broker.
//!
//! Why it exists: `fieldlab up` must work on a laptop with nothing installed, so fieldlab
//! carries its own broker — rumqttd, run in-process on its own threads. Devices (emulated or
//! real) and ingest connect to it over TCP exactly as they would to Mosquitto or an EMQX
//! cluster, so the same ingest code serves the embedded and the external case (`--broker`).
//!
//! Listeners (every one speaks MQTT 3.1.1 and MQTT 5, told apart by the CONNECT):
//! - MQTT over TCP (`port`, 1883);
//! - MQTT over TLS (`tls_port`, 8883) with rustls, from PEM certificate and key files;
//! - MQTT over WebSocket (`ws_port`, 9001, subprotocol `mqtt`); with TLS files set it is
//!   WebSocket over TLS (`wss://`), so passwords never cross the network in the clear. It
//!   refuses handshakes from foreign web pages ([`origin_allowed`]).
//! - Username/password on every listener through [`MqttAuth`] (fieldlab checks users and
//!   API keys; a device key also pins the client id to the device), and a topic ACL per
//!   login ([`Acl`]).
//!
//! The public listeners are always fieldlab's gate ([`gate`]), with rumqttd behind it on two
//! loopback ports (MQTT 3.1.1 and MQTT 5) that accept only the gate's random password. The gate
//! exists because rumqttd 0.20 has no authorisation hook for PUBLISH or SUBSCRIBE (it checks
//! every packet against the client's ACL) and refuses CONNECTs with keep-alive 0, which MQTT
//! allows (it keeps such clients alive itself). With auth off it accepts every login and only
//! relays. Still not offered: client certificates (rumqttd's `verify-client-cert` makes them
//! mandatory on every TLS listener and prefixes topics per tenant).
//!
//! Architecture invariant: nothing else in fieldlab talks to rumqttd's internals; the broker is
//! reached only through the MQTT protocol.

pub mod gate;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The login of one MQTT CONNECT, for [`MqttAuth`].
#[derive(Debug, Clone)]
pub struct MqttConnect {
    pub client_id: String,
    pub username: String,
    pub password: String,
    /// Who connected (for per-address failure limits).
    pub peer: SocketAddr,
}

/// Why a CONNECT is refused: the CONNACK return code the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttRefusal {
    /// 4, bad user name or password.
    BadLogin,
    /// 5, not authorized (too many failed logins: back off).
    NotAuthorized,
    /// 3, server unavailable (every password check worker busy: retry later).
    Unavailable,
}

/// The future of one [`MqttAuth`] check.
pub type MqttAuthFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Acl, MqttRefusal>> + Send>>;

/// Checks an MQTT CONNECT: the login -> its topic ACL, or why it is refused. Awaited on the
/// gate's async workers: slow work (password hashing) belongs in a bounded blocking pool
/// (fieldlab's is `fieldlab_auth::login`).
pub type MqttAuth = Arc<dyn Fn(MqttConnect) -> MqttAuthFuture + Send + Sync>;

/// An [`MqttAuth`] from a cheap check of `(client_id, username, password)` (tests,
/// benchmarks): `None` refuses with "bad user name or password".
pub fn plain_auth(f: impl Fn(&str, &str, &str) -> Option<Acl> + Send + Sync + 'static) -> MqttAuth {
    Arc::new(move |c: MqttConnect| {
        let r = f(&c.client_id, &c.username, &c.password).ok_or(MqttRefusal::BadLogin);
        Box::pin(std::future::ready(r)) as MqttAuthFuture
    })
}

/// The MQTT topic filters one login may publish to (`write`) and subscribe within (`read`);
/// `None` means any topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
}

impl Acl {
    /// Every topic.
    pub fn all() -> Acl {
        Acl::default()
    }
}

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
    /// Called with "publish", "subscribe" or "will" for each refusal by the topic ACL (for
    /// the `fieldlab_mqtt_acl_denied_total` metric).
    pub on_denied: Option<OnDenied>,
    /// Names besides loopback ones a browser page may come from on the WebSocket listener
    /// (`server.allowed_hosts`): see [`origin_allowed`].
    pub allowed_hosts: Vec<String>,
}

/// See [`BrokerSettings::on_denied`].
pub type OnDenied = Arc<dyn Fn(&'static str) + Send + Sync>;

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
            on_denied: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Whether a browser page from `origin` (the WebSocket handshake's `Origin` header) may use
/// the MQTT-over-WebSocket listener. Browsers send `Origin` on every WebSocket handshake and
/// let any page open one to any address, `localhost` included: without this check a web page
/// the user visits could publish as any device into a lab running with auth off. Allowed are
/// pages served from this machine (`localhost`, `*.localhost`, loopback addresses) and from
/// `allowed_hosts`; clients that are not browsers send no `Origin` and are not asked.
pub fn origin_allowed(origin: &str, allowed_hosts: &[String]) -> bool {
    let Some((scheme, authority)) = origin.trim().split_once("://") else {
        // `null` (sandboxed frames, file: pages) or garbage.
        return false;
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return false;
    }
    let authority = authority.trim_end_matches('/');
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        }),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || allowed_hosts
            .iter()
            .any(|a| a.trim().trim_end_matches('.').eq_ignore_ascii_case(&host))
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
    /// Refusals by the topic ACL gate (see [`EmbeddedBroker::denied`]).
    denied: Arc<AtomicU64>,
    /// rumqttd's loopback listeners behind the gate, and the gate's login there.
    internal: InternalLogin,
}

/// rumqttd's loopback listeners behind the gate and the one login they accept: for fieldlab's
/// own in-process clients that may read and write every topic anyway (ingest), so that their
/// traffic takes no extra hop through the gate. Never printed or written anywhere.
#[derive(Clone)]
pub struct InternalLogin {
    /// MQTT 3.1.1 and MQTT 5 listeners.
    pub v4: SocketAddr,
    pub v5: SocketAddr,
    pub username: &'static str,
    pub password: String,
}

impl std::fmt::Debug for InternalLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalLogin")
            .field("v4", &self.v4)
            .field("v5", &self.v5)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// An address clients on this machine can connect to.
    pub fn local_addr(&self) -> SocketAddr {
        connectable(self.listen)
    }

    /// rumqttd's MQTT 3.1.1 loopback listener behind the gate. It accepts only the gate's
    /// login.
    pub fn upstream(&self) -> SocketAddr {
        self.internal.v4
    }

    /// The loopback listeners behind the gate and their login, for in-process clients.
    pub fn internal_login(&self) -> &InternalLogin {
        &self.internal
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
    // rumqttd only logs bind failures from its own thread, and port 0 must be resolved to a
    // concrete port before rumqttd gets it.
    Ok(bind(host, port)?
        .local_addr()
        .expect("bound socket has an address"))
}

/// Bind `host:port` and keep the listener (the gate serves it; non-blocking, for tokio).
fn bind(host: &str, port: u16) -> Result<TcpListener, BrokerError> {
    let want = format!("{host}:{port}");
    let failed = |cause| BrokerError::Bind {
        addr: want.clone(),
        cause,
    };
    let addr: SocketAddr = want
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| failed(std::io::Error::other("not a valid listen address")))?;
    let l = TcpListener::bind(addr).map_err(failed)?;
    l.set_nonblocking(true).map_err(failed)?;
    Ok(l)
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

/// Start the broker and wait until every listener accepts TCP connections: rumqttd on the
/// public listeners (auth off), or the topic ACL gate on them in front of rumqttd on a
/// loopback port (auth on).
pub fn start(s: &BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
    if let Some(t) = &s.tls {
        check_tls(t)?;
    }
    if s.tls_port.is_some() && s.tls.is_none() {
        return Err(BrokerError::Tls(
            "a TLS port needs mqtt.server_cert_file and mqtt.server_key_file".into(),
        ));
    }
    let denied = Arc::new(AtomicU64::new(0));
    // With auth off every login is accepted and every topic open: the gate only relays (and
    // keeps keep-alive 0 clients alive).
    let auth = s
        .auth
        .clone()
        .unwrap_or_else(|| plain_auth(|_, _, _| Some(Acl::all())));
    let b = start_gated(s, auth, denied)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    for a in [Some(b.listen), b.tls_listen, b.ws_listen]
        .into_iter()
        .flatten()
    {
        wait_listening(a, deadline)?;
    }
    Ok(b)
}

fn wait_listening(a: SocketAddr, deadline: Instant) -> Result<(), BrokerError> {
    while TcpStream::connect_timeout(&connectable(a), Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(a));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn connection_settings(s: &BrokerSettings) -> rumqttd::ConnectionSettings {
    rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: s.max_payload_size,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    }
}

fn server(
    name: &str,
    listen: SocketAddr,
    tls: Option<rumqttd::TlsConfig>,
    connections: &rumqttd::ConnectionSettings,
) -> rumqttd::ServerSettings {
    rumqttd::ServerSettings {
        name: name.into(),
        listen,
        tls,
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    }
}

/// Run rumqttd with these listeners on its own thread.
fn run_rumqttd(
    s: &BrokerSettings,
    v4: HashMap<String, rumqttd::ServerSettings>,
    v5: HashMap<String, rumqttd::ServerSettings>,
    listen: SocketAddr,
) -> Result<(), BrokerError> {
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
        v5: Some(v5),
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
        .map(|_| ())
        .map_err(|cause| BrokerError::Bind {
            addr: listen.to_string(),
            cause,
        })
}

/// Serve the gate on these listeners, on its own two-thread runtime.
fn run_gate(
    g: Arc<gate::Gate>,
    listeners: Vec<(TcpListener, gate::Transport)>,
    listen: SocketAddr,
) -> Result<(), BrokerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fieldlab-mqtt-gate")
        .enable_all()
        .build()
        .map_err(|cause| BrokerError::Bind {
            addr: listen.to_string(),
            cause,
        })?;
    std::thread::Builder::new()
        .name("fieldlab-mqtt-gate".into())
        .spawn(move || {
            rt.block_on(async move {
                for (l, t) in listeners {
                    tokio::spawn(gate::accept(g.clone(), l, t));
                }
                std::future::pending::<()>().await
            })
        })
        .map(|_| ())
        .map_err(|cause| BrokerError::Bind {
            addr: listen.to_string(),
            cause,
        })
}

/// Auth on: the gate on every public listener, rumqttd on a loopback port behind it.
fn start_gated(
    s: &BrokerSettings,
    auth: MqttAuth,
    denied: Arc<AtomicU64>,
) -> Result<EmbeddedBroker, BrokerError> {
    let addr = |l: &TcpListener| l.local_addr().expect("bound socket has an address");
    let public = bind(&s.host, s.port)?;
    let tls_l = s.tls_port.map(|p| bind(&s.host, p)).transpose()?;
    let ws_l = s.ws_port.map(|p| bind(&s.host, p)).transpose()?;
    let (listen, tls_listen, ws_listen) = (
        addr(&public),
        tls_l.as_ref().map(addr),
        ws_l.as_ref().map(addr),
    );
    let acceptor = s
        .tls
        .as_ref()
        .map(gate::tls_acceptor)
        .transpose()
        .map_err(BrokerError::Tls)?;

    // rumqttd on loopback, accepting only the gate's login (a fresh random password per
    // start, never written anywhere).
    let internal = probe("127.0.0.1", 0)?;
    let internal_v5 = probe("127.0.0.1", 0)?;
    let password: String = rand::random::<[u8; 24]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut conn = connection_settings(s);
    let expected = password.clone();
    conn.set_auth_handler(move |_client_id, user, pass| {
        let ok = user == gate::GATE_USER && pass == expected;
        async move { ok }
    });
    let v4 = HashMap::from([(
        "1".to_string(),
        server("fieldlab-v4-internal", internal, None, &conn),
    )]);
    let v5 = HashMap::from([(
        "1".to_string(),
        server("fieldlab-v5-internal", internal_v5, None, &conn),
    )]);
    run_rumqttd(s, v4, v5, internal)?;

    let g = Arc::new(gate::Gate {
        auth,
        upstream: internal,
        upstream_v5: internal_v5,
        password: password.clone(),
        max_packet: s.max_payload_size,
        denied: denied.clone(),
        on_denied: s.on_denied.clone(),
        allowed_hosts: s.allowed_hosts.clone().into(),
    });
    let mut listeners = vec![(public, gate::Transport::Tcp)];
    if let (Some(l), Some(a)) = (tls_l, &acceptor) {
        listeners.push((l, gate::Transport::Tls(a.clone())));
    }
    if let Some(l) = ws_l {
        listeners.push((l, gate::Transport::Ws(acceptor.clone())));
    }
    run_gate(g, listeners, listen)?;
    for a in [internal, internal_v5] {
        wait_listening(a, Instant::now() + Duration::from_secs(5))?;
    }
    Ok(EmbeddedBroker {
        listen,
        tls_listen,
        ws_listen,
        denied,
        internal: InternalLogin {
            v4: internal,
            v5: internal_v5,
            username: gate::GATE_USER,
            password,
        },
    })
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

#[cfg(test)]
mod mqtt5_tests;
