//! fieldlab-opcua: the emulated fleet as an OPC UA server.
//!
//! Why it exists: test engineers point OPC UA clients (SCADA, historians, UaExpert) at the
//! lab as well as MQTT consumers; the legacy emulator had an OPC UA server that was never started. This
//! crate serves, with async-opcua, one object per emulated device:
//!
//! ```text
//! Objects/DeviceEmulator/<device id>/<field>          live values (Double or Boolean)
//!                                   /State, /Seq, /MessagesPublished, /Scenario
//!                                   /Start(), /Stop(), /RunScenario(Name, Loop), /StopScenario()
//! ```
//!
//! Values come from the emulator's live broadcast (the same stream `/ws` serves), so an OPC UA
//! read sees what was last published over MQTT, with the payload's `ts` as source timestamp.
//! The methods call the emulator's control API, exactly what the REST API calls. The device
//! list is re-read every second (and at once after a method call), so devices created or
//! deleted over REST appear and disappear here too.
//!
//! Security: a `None` endpoint and `Basic256Sha256` (signed and encrypted) with a server
//! certificate generated under the PKI directory on first start (private key 0600, never
//! checked in). With fieldlab's auth off, access is anonymous (the local lab). With auth on
//! ([`OpcuaSettings::auth`]), only fieldlab users sign in, by user name and password or by an
//! X.509 user certificate, only over `Basic256Sha256`/`SignAndEncrypt` (the `None` endpoint is
//! left out), and their roles decide what they may do (see [`access`]).
//!
//! Architecture invariant: reads and controls the fleet only through
//! [`fieldlab_emulator::Emulator`]; knows nothing of MQTT, the store or HTTP.

pub mod access;
pub mod front;
mod mirror;

use fieldlab_emulator::Emulator;
use mirror::Mirror;
use opcua::crypto::SecurityPolicy;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{ServerBuilder, ServerEndpoint, ServerHandle, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{BuildInfo, DateTime, MessageSecurityMode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The namespace of every fieldlab node.
pub const NAMESPACE_URI: &str = "urn:fieldlab:emulator";

/// Endpoint security the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No signing, no encryption: for the local lab.
    None,
    /// Basic256Sha256, signed and encrypted.
    Basic256Sha256,
}

#[derive(Debug, Clone)]
pub struct OpcuaSettings {
    /// Bind address.
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Where the server certificate, its key and trusted/rejected client certificates live.
    pub pki_dir: PathBuf,
    pub security: Vec<Security>,
    pub trust_client_certs: bool,
    /// Most devices in the address space (the first by name).
    pub max_devices: usize,
    /// How often the device list and the status variables are re-read.
    pub sync_interval: Duration,
    /// fieldlab's users when auth is on: then anonymous access is refused and only the
    /// signed-and-encrypted endpoints are offered. `None`: auth off, anonymous access.
    pub auth: Option<Arc<fieldlab_auth::Authenticator>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpcuaError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen for OPC UA on {addr}: {source}; pick another port with opcua.port or OPC_UA_PORT (0 = any free port), or set opcua.enabled: false")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("OPC UA server certificate in {dir}: {message}")]
    Pki { dir: PathBuf, message: String },
    #[error("OPC UA server: {0}")]
    Server(String),
}

/// A running OPC UA server. [`OpcuaServer::stop`] ends it (clients are told it shuts down).
pub struct OpcuaServer {
    addr: SocketAddr,
    handle: ServerHandle,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<Result<(), String>>,
}

impl OpcuaServer {
    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `opc.tcp://host:port/` for clients on this machine.
    pub fn endpoint_url(&self) -> String {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("opc.tcp://{a}/")
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.handle.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "OPC UA server ended with an error"),
            Err(_) => tracing::warn!("OPC UA server did not stop within 5 s"),
            _ => {}
        }
    }
}

/// Make the PKI directories private (0700) before the server writes its key into them, and
/// the key itself 0600 after; the library writes files with the process umask.
fn secure_pki(dir: &Path) -> Result<(), OpcuaError> {
    let pki_err = |message: String| OpcuaError::Pki {
        dir: dir.to_path_buf(),
        message,
    };
    for d in [dir.to_path_buf(), dir.join("private")] {
        std::fs::create_dir_all(&d)
            .map_err(|e| pki_err(format!("cannot create {}: {e}", d.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| pki_err(format!("cannot make {} private: {e}", d.display())))?;
        }
    }
    Ok(())
}

fn key_0600(path: &Path) -> Result<(), std::io::Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let _ = path;
    Ok(())
}

/// Bind, build the address space from the fleet and serve until [`OpcuaServer::stop`].
pub async fn start(mut s: OpcuaSettings, emulator: Emulator) -> Result<OpcuaServer, OpcuaError> {
    if s.auth.is_some() {
        // Users sign in only where their password and session cannot be read or taken over.
        if s.security.contains(&Security::None) {
            tracing::info!("OPC UA: auth is on, so the `none` endpoint is not offered (user tokens only over basic256sha256)");
            s.security.retain(|x| *x != Security::None);
        }
        if s.security.is_empty() {
            return Err(OpcuaError::Config(
                "opcua.security: with auth on, fieldlab users sign in to OPC UA only over basic256sha256 \
                 (signed and encrypted, so passwords never cross the network in the clear); add basic256sha256 \
                 to opcua.security, or set opcua.enabled: false"
                    .into(),
            ));
        }
    }
    // The front door owns the public port (front.rs); the sign-in check asks it who is behind
    // each relayed connection.
    let front = Arc::new(front::Front::new());
    let bind = format!("{}:{}", s.host, s.port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|source| OpcuaError::Bind {
            addr: bind.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| OpcuaError::Bind {
        addr: bind.clone(),
        source,
    })?;
    let secure = s.security.contains(&Security::Basic256Sha256);
    if secure {
        secure_pki(&s.pki_dir)?;
    }
    let cancel = CancellationToken::new();
    // With auth on the user token policies come from FieldlabUsers, not from token ids.
    let anonymous = match s.auth {
        None => vec![ANONYMOUS_USER_TOKEN_ID.to_string()],
        Some(_) => vec![],
    };
    let mut b = ServerBuilder::new()
        .application_name("fieldlab device emulator")
        .application_uri("urn:fieldlab:server")
        .product_uri("urn:fieldlab")
        .build_info(BuildInfo {
            product_uri: "urn:fieldlab".into(),
            manufacturer_name: "fieldlab".into(),
            product_name: "fieldlab".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            build_number: env!("CARGO_PKG_VERSION").into(),
            build_date: DateTime::now(),
        })
        .with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: NAMESPACE_URI.to_owned(),
                ..Default::default()
            },
            "fieldlab",
        ))
        .host(s.host.clone())
        .port(addr.port())
        .discovery_urls(vec!["/".to_owned()])
        .pki_dir(s.pki_dir.clone())
        .certificate_path("own/cert.der")
        .private_key_path("private/private.pem")
        .create_sample_keypair(secure)
        .trust_client_certs(s.trust_client_certs)
        .token(cancel.child_token());
    if let Some(auth) = &s.auth {
        let trusted = s.pki_dir.join("users").join("trusted");
        std::fs::create_dir_all(&trusted).map_err(|e| OpcuaError::Pki {
            dir: s.pki_dir.clone(),
            message: format!("cannot create {}: {e}", trusted.display()),
        })?;
        b = b.with_authenticator(Arc::new(access::FieldlabUsers::new(
            auth.clone(),
            trusted,
            front.relayed.clone(),
        )));
    }
    for sec in &s.security {
        b = match sec {
            Security::None => b.add_endpoint("none", ServerEndpoint::new_none("/", &anonymous)),
            Security::Basic256Sha256 => b.add_endpoint(
                "basic256sha256_sign_encrypt",
                ServerEndpoint::new(
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    &anonymous,
                ),
            ),
        };
    }
    let default = match s.security[0] {
        Security::None => "none",
        Security::Basic256Sha256 => "basic256sha256_sign_encrypt",
    };
    b = b.default_endpoint(default);
    let (server, handle) = b.build().map_err(OpcuaError::Server)?;
    if secure {
        let key = s.pki_dir.join("private").join("private.pem");
        if !key.exists() || !s.pki_dir.join("own").join("cert.der").exists() {
            return Err(OpcuaError::Pki {
                dir: s.pki_dir.clone(),
                message: "no server certificate could be created; see the log above, or leave \
                          basic256sha256 out of opcua.security"
                    .into(),
            });
        }
        key_0600(&key).map_err(|e| OpcuaError::Pki {
            dir: s.pki_dir.clone(),
            message: format!("cannot make {} private: {e}", key.display()),
        })?;
    }
    let nm = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .ok_or_else(|| OpcuaError::Server("the fieldlab node manager is missing".into()))?;
    let ns = handle
        .get_namespace_index(NAMESPACE_URI)
        .ok_or_else(|| OpcuaError::Server("the fieldlab namespace is missing".into()))?;
    let mirror = Arc::new(Mirror::new(
        nm,
        handle.subscriptions().clone(),
        ns,
        emulator,
        s.max_devices,
    ));
    mirror.sync();
    // async-opcua serves on a loopback listener; the public one is fieldlab's front door,
    // which applies per-address limits and relays (see front.rs).
    let inner = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|source| OpcuaError::Bind {
            addr: "127.0.0.1:0".into(),
            source,
        })?;
    let inner_addr = inner.local_addr().map_err(|source| OpcuaError::Bind {
        addr: "127.0.0.1:0".into(),
        source,
    })?;
    let server = tokio::spawn(server.run_with(inner));
    // run_with stores the loopback port as the server's port, which endpoint descriptions
    // (GetEndpoints) then carry: put the public port back before any client gets through.
    let info = handle.info().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while info.port.load(std::sync::atomic::Ordering::Relaxed) != inner_addr.port() {
        if server.is_finished() || std::time::Instant::now() > deadline {
            cancel.cancel();
            return Err(OpcuaError::Server(
                "the OPC UA server did not start listening".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    info.port
        .store(addr.port(), std::sync::atomic::Ordering::Relaxed);
    let tasks = vec![
        tokio::spawn(front.run(listener, inner_addr, cancel.clone())),
        tokio::spawn(mirror.clone().run_sync(s.sync_interval, cancel.clone())),
        tokio::spawn(mirror.run_live(cancel.clone())),
    ];
    tracing::info!(%addr, "OPC UA server listening");
    Ok(OpcuaServer {
        addr,
        handle,
        cancel,
        tasks,
        server,
    })
}
