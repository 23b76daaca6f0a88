//! fieldlab-topology: the pipeline, assembled.
//!
//! Why it exists: every capability crate does one job and knows nothing of the others. This
//! crate is the one place that knows the whole graph, in the manner of Vector's topology:
//!
//! ```text
//! sources                 transforms                    sinks
//! emulator ──MQTT──► broker ──► ingest: parse/normalise ──► store (WAL → head → blocks)
//!                    (embedded         │ unparseable          │
//!                     or external)     └──────────────► quarantine
//!                                                             │
//!                                 HTTP server (queries, metrics, health) ◄┘
//! ```
//!
//! [`up`] starts the parts in dependency order (store, broker, HTTP, ingest, emulator) and stops
//! them in reverse so that everything acknowledged is on disk when it returns; each step is a
//! function of `start.rs`.

pub mod config;
pub mod ratelimit;
mod start;
pub mod watch;

pub use config::Config;
use fieldlab_core::Readiness;
use fieldlab_server::AppState;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Addresses of a running fieldlab, as printed in the banner.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub http: SocketAddr,
    pub mqtt_url: String,
    pub embedded_broker: bool,
}

/// Run the whole pipeline until `shutdown` resolves, then stop cleanly.
/// `on_ready` receives the endpoints once everything listens.
///
/// The order is the data path's, sinks first: nothing may be acknowledged before the store
/// can take it, and nothing may listen before auth is decided.
pub async fn up(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Endpoints),
) -> anyhow::Result<()> {
    let started = Instant::now();
    check_exposure(&cfg)?;
    let readiness = Readiness::new();
    // Declare every part up front, so /ready cannot answer 200 while one is still starting.
    for part in ["store", "broker", "ingest"] {
        readiness.require(part);
    }

    let data = start::data(&cfg, &readiness)?;
    let auth = start::auth(&cfg).await?;
    let mqtt = start::broker(&cfg, &auth)?;
    let mut registry = Registry::default();
    let metrics = start::metrics(&cfg, &mut registry, &data, mqtt.denied.clone());
    let limiter = ratelimit::limiter(&cfg, &mut registry)?;
    let admit = ratelimit::ingest_admit(&limiter);
    let cap_routes = cap_verifier(&cfg.storage.data_dir, &mut registry)?;
    // The emulator exists (without devices) before HTTP, so its control API is served; the
    // devices start after ingest subscribed.
    let emulator = start::emulator(&cfg, &mqtt, &data, metrics.emulator.clone())?;
    // In a cluster: join before HTTP, so the server knows which devices this replica answers
    // for; the partitions' messages wait in a bounded channel until ingest starts.
    let (cluster, log) = match start::cluster(&cfg, &readiness).await? {
        Some(s) => (Some(s.cluster), Some((s.rx, s.committed))),
        None => (None, None),
    };
    if let Some(c) = &cluster {
        c.register(&mut registry);
    }
    // HTTP before the sources: /health answers at once and /ready reports what is still
    // starting (an external broker may take a while).
    let http = start::http(
        &cfg,
        AppState {
            store: data.store.clone(),
            quarantine: data.quarantine.clone(),
            directory: data.directory.clone(),
            readiness: readiness.clone(),
            registry: Arc::new(registry),
            http: metrics.http.clone(),
            started,
            broker_url: mqtt.url.clone(),
            auth: auth.clone(),
            emulator: Some(emulator.clone()),
            annotations: Some(data.annotations.clone()),
            ratelimit: Some(limiter),
            extra_routes: Some(match &cluster {
                Some(c) => cap_routes.merge(start::cluster_routes(c)),
                None => cap_routes,
            }),
            extra_openapi: Some(start::with_cluster_openapi(
                fieldlab_verifier::openapi(),
                cluster.is_some(),
            )),
            watch: data.watch.clone(),
            allowed_hosts: cfg.server.allowed_hosts.clone(),
            fleet_answer_max: cfg.server.fleet_answer_max_size.get() as usize,
            // Several replicas: which devices this one answers for, and who answers for the rest.
            cluster: cluster.as_ref().map(|c| c.view()),
        },
    )
    .await?;
    let (fleet, topics) = start::fleet_and_topics(&cfg);
    // Scale-out sinks: every point the store acknowledges is also sent to each of them.
    let sinks = fieldlab_sinks::Sinks::start(&cfg.sinks, &cfg.storage.data_dir, &metrics.sinks)
        .map_err(|e| anyhow::anyhow!("{e}; check `sinks:` in the config"))?;
    let ingest = start::ingest(
        &cfg,
        &mqtt,
        &data,
        &readiness,
        &metrics,
        topics.clone(),
        admit,
        sinks.clone(),
        log,
    )?;
    // Quality and anomaly events go out on MQTT (and the webhook) as they happen.
    let events = start::events(&cfg, &mqtt, &data);
    start::wait_for_ingest(&readiness, &mqtt.url).await;
    fieldlab_emulator::validate_fleet(&fleet).map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    emulator
        .add_all(fleet.clone(), true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let endpoints = Endpoints {
        http: fieldlab_broker::connectable(http.addr),
        mqtt_url: mqtt.url.clone(),
        embedded_broker: mqtt.embedded,
    };
    on_ready(&endpoints);
    #[cfg(feature = "opcua")]
    let opcua = opcua(&cfg, &emulator, auth.clone()).await?;
    let security = Security {
        tls: http.tls,
        mqtt_extra: mqtt.extra_urls.clone(),
        users: auth
            .as_ref()
            .map(|a| a.users().current().map_or(0, |f| f.users.len())),
    };
    let mut banner = banner(&cfg, &endpoints, http.addr, &topics, &fleet, &security);
    if !sinks.is_empty() {
        banner = banner.replacen(
            "\nPress Ctrl-C",
            &format!("\n  sinks   {}\nPress Ctrl-C", sinks.names().join(", ")),
            1,
        );
    }
    if let Some(c) = &cluster {
        // Ingest reads this replica's partitions of the NATS stream, not an MQTT subscription.
        banner = banner.replacen(
            &format!("ingest subscribes to {}", topics.join(", ")),
            "devices publish here; ingest reads the partitions this replica owns from NATS",
            1,
        );
        banner = banner.replacen(
            "\nPress Ctrl-C",
            &format!(
                "\n  cluster replica {} of {} partitions, NATS {}; GET /api/v1/cluster\nPress Ctrl-C",
                c.status().me,
                cfg.cluster.partitions,
                fieldlab_core::redact::url(cfg.cluster.nats_url.as_deref().unwrap_or_default())
            ),
            1,
        );
    }
    #[cfg(feature = "opcua")]
    {
        banner = banner.replacen("\n  data", &format!("\n  OPC UA  {}\n  data", opcua.1), 1);
    }
    println!("{banner}");

    shutdown.await;
    println!("fieldlab: shutting down (stopping devices, draining ingest, flushing the store)...");
    readiness.set("store", false); // stop receiving traffic from load balancers first
    #[cfg(feature = "opcua")]
    if let Some(o) = opcua.0 {
        o.stop().await;
    }
    // In reverse: devices, ingest once it went quiet, events, sinks, HTTP, the store.
    emulator.stop().await;
    // A replica hands its partitions back first: the others take over while it drains.
    if let Some(c) = cluster {
        c.stop().await;
    }
    start::drain_ingest(&metrics.ingest).await;
    ingest.stop().await;
    if let Some(t) = events {
        t.abort();
    }
    // Ingest is quiet: deliver what the sinks still hold (or spool it for the next start).
    sinks.close().await;
    http.stop().await;
    start::close_store(&cfg, &data.store).await
}

/// Whether an address reaches beyond this machine.
fn is_exposed(host: &str) -> bool {
    use std::net::ToSocketAddrs;
    if host == "localhost" {
        return false;
    }
    match (host, 0u16).to_socket_addrs() {
        Ok(addrs) => addrs.into_iter().any(|a| !a.ip().is_loopback()),
        Err(_) => true,
    }
}

/// With auth off, refuse to listen beyond loopback unless `auth.allow_open_network` says so.
/// Refusing (not warning) because an open fieldlab lets anyone stop devices and read data.
/// With auth on every listener, OPC UA included, takes fieldlab users only.
fn check_exposure(cfg: &Config) -> anyhow::Result<()> {
    let opcua_open = cfg!(feature = "opcua") && cfg.opcua.enabled && is_exposed(&cfg.opcua.host);
    if cfg.auth.enabled {
        return Ok(());
    }
    let mut open = Vec::new();
    if is_exposed(&cfg.server.host) {
        open.push(format!("server.host = {}", cfg.server.host));
    }
    if cfg.mqtt.broker_url.is_none() && is_exposed(&cfg.mqtt.host) {
        open.push(format!("mqtt.host = {}", cfg.mqtt.host));
    }
    if opcua_open {
        open.push(format!("opcua.host = {}", cfg.opcua.host));
    }
    if open.is_empty() {
        return Ok(());
    }
    if cfg.auth.allow_open_network {
        tracing::warn!(
            listeners = %open.join(", "),
            "AUTH IS OFF and fieldlab listens beyond loopback (auth.allow_open_network: true): anyone who can reach it can control it"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {} with auth off: anyone on the network could control fieldlab. \
         Turn auth on (auth.enabled: true or AUTH_ENABLED=true, then `fieldlab users add NAME --role admin`), \
         bind to 127.0.0.1, or set auth.allow_open_network: true on a network you trust",
        open.join(" and ")
    )
}

/// What the banner says about security.
struct Security {
    tls: bool,
    mqtt_extra: Vec<String>,
    /// Number of users when auth is on.
    users: Option<usize>,
}

fn banner(
    cfg: &Config,
    e: &Endpoints,
    bound: SocketAddr,
    topics: &[String],
    fleet: &[fieldlab_emulator::DeviceSpec],
    sec: &Security,
) -> String {
    let auth = match sec.users {
        None if cfg.auth.allow_open_network => "OFF and exposed beyond loopback (auth.allow_open_network): anyone who can reach fieldlab controls it".to_string(),
        None => "off: local demo, every endpoint is open; keep server.host and mqtt.host on loopback".to_string(),
        Some(0) => "on (JWT, API keys) — no users yet: run `fieldlab users add NAME --role admin`".to_string(),
        Some(n) => format!("on (JWT, API keys; {n} users); tokens from POST /api/v1/auth/token"),
    };
    let extra = if sec.mqtt_extra.is_empty() {
        String::new()
    } else {
        format!("\n  MQTT    also {}", sec.mqtt_extra.join(", "))
    };
    let devices: Vec<String> = fleet
        .iter()
        .map(|d| format!("{} ({})", d.name, d.device_type))
        .collect();
    format!(
        "fieldlab {ver} is up\n\
         \x20 HTTP    {scheme}://{http}  (bound {bound}; /health /ready /metrics /api/v1/devices /api/v1/query)\n\
         \x20 MQTT    {mqtt}  ({kind}; ingest subscribes to {topics}){extra}\n\
         \x20 data    {data}\n\
         \x20 devices {n} emulated: {devices}\n\
         \x20 auth    {auth}\n\
         Press Ctrl-C to stop.",
        ver = env!("CARGO_PKG_VERSION"),
        scheme = if sec.tls { "https" } else { "http" },
        http = e.http,
        mqtt = e.mqtt_url,
        kind = if e.embedded_broker { "embedded broker" } else { "external broker" },
        topics = topics.join(", "),
        data = cfg.storage.data_dir.display(),
        n = fleet.len(),
        devices = devices.join(", "),
    )
}

#[cfg(test)]
mod tests;

/// The OPC UA server's settings from `opcua:`; the PKI goes to `<data_dir>/opcua/pki`.
#[cfg(feature = "opcua")]
fn opcua_settings(
    c: &config::OpcuaConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<fieldlab_opcua::OpcuaSettings> {
    use config::OpcuaSecurity;
    use fieldlab_opcua::Security;
    if c.security.is_empty() {
        anyhow::bail!(
            "opcua.security: offer at least one of {}",
            <OpcuaSecurity as strum::VariantNames>::VARIANTS.join(", ")
        );
    }
    Ok(fieldlab_opcua::OpcuaSettings {
        host: c.host.clone(),
        port: c.port,
        pki_dir: data_dir.join("opcua").join("pki"),
        security: c
            .security
            .iter()
            .map(|s| match s {
                OpcuaSecurity::None => Security::None,
                OpcuaSecurity::Basic256sha256 => Security::Basic256Sha256,
            })
            .collect(),
        trust_client_certs: c.trust_client_certs,
        max_devices: c.max_devices,
        sync_interval: std::time::Duration::from_secs(1),
        auth: None,
    })
}

/// The OPC UA server over the fleet, and its banner line. A taken port is a warning, not an
/// error: OPC UA is an add-on, and a second lab on this machine should still come up.
#[cfg(feature = "opcua")]
async fn opcua(
    cfg: &Config,
    emulator: &fieldlab_emulator::Emulator,
    auth: Option<Arc<fieldlab_auth::Authenticator>>,
) -> anyhow::Result<(Option<fieldlab_opcua::OpcuaServer>, String)> {
    if !cfg.opcua.enabled {
        return Ok((None, "off (opcua.enabled: false)".into()));
    }
    let mut s = opcua_settings(&cfg.opcua, &cfg.storage.data_dir)?;
    let who = match &auth {
        None => "anonymous".to_string(),
        Some(_) => format!(
            "fieldlab users by password or X.509 user certificate (trusted in {}), basic256sha256 only",
            s.pki_dir.join("users").join("trusted").display()
        ),
    };
    s.auth = auth;
    match fieldlab_opcua::start(s, emulator.clone()).await {
        Ok(o) => {
            let line = format!(
                "{}  (Objects/DeviceEmulator/<device>/<variable>; Start, Stop, RunScenario; security {}; {who})",
                o.endpoint_url(),
                cfg.opcua.security.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(", ")
            );
            Ok((Some(o), line))
        }
        Err(e @ fieldlab_opcua::OpcuaError::Bind { .. }) => {
            tracing::warn!(error = %e, "OPC UA server not started");
            Ok((None, format!("off: {e}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// The proof verifier API (`/verify`, `/policy/...`, `/proof/upload`, `/registry/...`) with its
/// registry under `<data_dir>/cap`. It follows the rest of `fieldlab up` on auth (the local
/// admin until the auth layer lands, hence the loopback default); `fieldlab cap serve` runs it
/// alone with OAuth2 JWT scopes and TLS/mTLS.
fn cap_verifier(
    data_dir: &std::path::Path,
    registry: &mut Registry,
) -> anyhow::Result<axum::Router> {
    let reg =
        fieldlab_registry::Registry::open(&data_dir.join("cap")).map_err(anyhow::Error::msg)?;
    let v = fieldlab_verifier::Verifier::new(fieldlab_verifier::Auth::Disabled, None, Some(reg));
    v.metrics.register(registry);
    Ok(fieldlab_verifier::api(Arc::new(v)))
}
