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
//! them in reverse so that everything acknowledged is on disk when it returns. [`bench`] runs the
//! same wiring under load.

pub mod ratelimit;
pub mod watch;

use anyhow::Context;
use fieldlab_core::config::{parse_broker_url, Config, MqttVersion};
use fieldlab_core::{DeviceDirectory, Readiness};
use fieldlab_emulator::EmulatorSettings;
use fieldlab_ingest::{IngestMetrics, IngestSettings};
use fieldlab_server::{AppState, HttpMetrics};
use fieldlab_store::{Quarantine, Store, StoreOptions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Addresses of a running fieldlab, as printed in the banner.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub http: SocketAddr,
    pub mqtt_url: String,
    pub embedded_broker: bool,
}

/// Run the whole pipeline until `shutdown` resolves, then stop cleanly.
/// `on_ready` receives the endpoints once everything listens.
pub async fn up(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Endpoints),
) -> anyhow::Result<()> {
    let readiness = Readiness::new();
    let started = Instant::now();
    check_exposure(&cfg)?;

    // Declare every part up front, so /ready cannot answer 200 while one is still starting.
    for part in ["store", "broker", "ingest"] {
        readiness.require(part);
    }

    // Sinks first: nothing may be acknowledged before the store can take it.
    let (store, rec) = Store::open(StoreOptions::from_config(&cfg.storage)).with_context(|| {
        format!(
            "cannot open the store in {}; check that the directory is writable or pass --data-dir",
            cfg.storage.data_dir.display()
        )
    })?;
    tracing::info!(?rec, "store opened");
    readiness.set("store", true);
    // Down, with the reason, while the store cannot write (a full disk, an I/O error).
    let health = store.clone();
    readiness.check("store", move || health.health());
    let quarantine = Arc::new(
        Quarantine::open_with(&cfg.storage.data_dir, cfg.storage.quarantine_budget())
            .context("cannot open the quarantine")?,
    );
    let watch = watch::open(
        &cfg.detect,
        &cfg.storage.data_dir,
        cfg.ingest.state_memory_mb << 20,
    )?;
    let annotations = Arc::new(
        fieldlab_store::annotations::Annotations::open(&cfg.storage.data_dir)
            .context("cannot open the annotations log")?,
    );
    let directory = DeviceDirectory::new();
    for s in store.series(None) {
        directory.register_stored(&s.device_id, &s.tags.device_type, s.last_ts_ms);
    }

    // Auth before anything listens: no window in which the API is open by mistake.
    let auth = if cfg.auth.enabled {
        let a = fieldlab_auth::Authenticator::new(&cfg.auth, &cfg.storage.data_dir)
            .await
            .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
        Some(Arc::new(a))
    } else {
        None
    };
    // fieldlab's own MQTT clients: the internal credential on the embedded broker when auth is
    // on, else the configured ones (for an external broker).
    let (mqtt_user, mqtt_pass) = match (&auth, &cfg.mqtt.broker_url) {
        (Some(a), None) => {
            let (u, p) = a.internal_mqtt_credentials();
            (Some(u), Some(p))
        }
        _ => (cfg.mqtt.username.clone(), cfg.mqtt.password.clone()),
    };
    let mut mqtt_extra = Vec::new();
    let mut tls_listen = None; // the embedded broker's TLS listener, for devices.tls
                               // Refusals by the embedded broker's topic ACL gate, by kind; exported at zero.
    let mqtt_denied: Family<Vec<(String, String)>, Counter> = Family::default();
    for kind in ["publish", "subscribe", "will"] {
        let _ = mqtt_denied.get_or_create(&vec![("kind".to_string(), kind.to_string())]);
    }

    // TLS of fieldlab's own clients on an external mqtts:// broker (ingest, events, devices
    // without devices.tls), built once from mqtt.tls.
    let mut broker_tls = None;

    // The broker: embedded unless an external one is configured.
    let (host, port, embedded) = match &cfg.mqtt.broker_url {
        Some(url) => {
            let b = parse_broker_url(url).map_err(anyhow::Error::msg)?;
            if b.tls {
                let t = cfg.mqtt.tls.clone().unwrap_or_default();
                broker_tls = Some(
                    fieldlab_mqtt_tls::client_config(&t)
                        .map_err(|e| anyhow::anyhow!("mqtt.tls.{}: {}", e.key, e.message))?,
                );
            } else if cfg.mqtt.tls.is_some() {
                anyhow::bail!(
                    "mqtt.tls is set but the broker {url} is plain MQTT; write it as mqtts://HOST:PORT \
                     (--broker or mqtt.broker_url), or remove mqtt.tls"
                );
            }
            (b.host, b.port, false)
        }
        None if cfg.mqtt.tls.is_some() => anyhow::bail!(
            "mqtt.tls is for an external mqtts:// broker (mqtt.broker_url or --broker); the embedded \
             broker's TLS listener is mqtt.tls_port with mqtt.server_cert_file and mqtt.server_key_file"
        ),
        None => {
            let tls = match (&cfg.mqtt.server_cert_file, &cfg.mqtt.server_key_file) {
                (Some(c), Some(k)) => Some(fieldlab_broker::BrokerTls {
                    cert: c.clone(),
                    key: k.clone(),
                }),
                _ => None,
            };
            // Each login's topic ACL, enforced by the broker's gate.
            // Passwords go through the authenticator's bounded argon2 pool and its failure
            // limiter (per user and client address).
            let check: Option<fieldlab_broker::MqttAuth> = auth.clone().map(|a| {
                Arc::new(move |c: fieldlab_broker::MqttConnect| {
                    let a = a.clone();
                    Box::pin(async move {
                        use fieldlab_auth::AuthError;
                        use fieldlab_broker::MqttRefusal;
                        match a
                            .mqtt_connect(&c.client_id, &c.username, &c.password, c.peer.ip())
                            .await
                        {
                            Ok(l) => {
                                let t = l.topics();
                                Ok(fieldlab_broker::Acl {
                                    read: t.read,
                                    write: t.write,
                                })
                            }
                            Err(AuthError::Throttled { .. }) => Err(MqttRefusal::NotAuthorized),
                            Err(AuthError::Busy { .. }) => Err(MqttRefusal::Unavailable),
                            Err(AuthError::Internal(e)) => {
                                tracing::error!(error = %e, "mqtt login check failed");
                                Err(MqttRefusal::Unavailable)
                            }
                            Err(_) => Err(MqttRefusal::BadLogin),
                        }
                    }) as fieldlab_broker::MqttAuthFuture
                }) as fieldlab_broker::MqttAuth
            });
            let denied = mqtt_denied.clone();
            let on_denied: fieldlab_broker::OnDenied = Arc::new(move |kind: &'static str| {
                denied
                    .get_or_create(&vec![("kind".to_string(), kind.to_string())])
                    .inc();
            });
            let b = fieldlab_broker::start(&fieldlab_broker::BrokerSettings {
                host: cfg.mqtt.host.clone(),
                port: cfg.mqtt.port,
                max_payload_size: cfg.mqtt.max_payload_size,
                max_connections: cfg.devices.max_devices + 100,
                tls_port: cfg.mqtt.tls_port,
                ws_port: cfg.mqtt.ws_port,
                tls: tls.clone(),
                auth: check,
                on_denied: Some(on_denied),
                allowed_hosts: cfg.server.allowed_hosts.clone(),
            })?;
            tls_listen = b.tls_listen;
            if let Some(t) = b.tls_listen {
                mqtt_extra.push(format!("mqtts://{}", fieldlab_broker::connectable(t)));
            }
            if let Some(w) = b.ws_listen {
                let scheme = if tls.is_some() { "wss" } else { "ws" };
                mqtt_extra.push(format!(
                    "{scheme}://{}/mqtt",
                    fieldlab_broker::connectable(w)
                ));
            }
            let a = b.local_addr();
            (a.ip().to_string(), a.port(), true)
        }
    };
    let scheme = if broker_tls.is_some() {
        "mqtts"
    } else {
        "mqtt"
    };
    let mqtt_url = format!("{scheme}://{host}:{port}");

    let mut registry = Registry::default();
    registry.register(
        "fieldlab_mqtt_acl_denied",
        "MQTT publishes, subscription filters and last wills refused by the embedded broker's topic ACL",
        mqtt_denied,
    );
    let ingest_metrics = IngestMetrics::default();
    let http_metrics = HttpMetrics {
        legacy_names: cfg.server.legacy_metric_names,
        ..HttpMetrics::default()
    };
    let sink_metrics = fieldlab_sinks::SinkMetrics::default();
    let emulator_metrics = fieldlab_emulator::EmulatorMetrics::default();
    emulator_metrics.register(&mut registry);
    store.metrics().register(&mut registry);
    quarantine.register_metrics(&mut registry);
    ingest_metrics.register(&mut registry);
    sink_metrics.register(&mut registry);
    http_metrics.register(&mut registry);
    // Detection counters; with detection disabled they are exported and stay at zero.
    match &watch {
        Some(w) => w.metrics().register(&mut registry),
        None => fieldlab_watch::WatchMetrics::default().register(&mut registry),
    }
    let limiter = ratelimit::limiter(&cfg, &mut registry)?;
    let admit = ratelimit::ingest_admit(&limiter);
    let cap_routes = cap_verifier(&cfg.storage.data_dir, &mut registry)?;

    // HTTP before the sources: /health answers at once and /ready reports what is still
    // starting (an external broker may take a while).
    let bind = format!("{}:{}", cfg.server.host, cfg.server.port);
    // The emulator exists (without devices) before HTTP, so its control API is served; the
    // devices start after ingest subscribed.
    fieldlab_emulator::custom::register_yaml(&cfg.devices.types)
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let mut es = EmulatorSettings::new(host.clone(), port);
    es.username = mqtt_user.clone();
    es.password = mqtt_pass.clone();
    es.keep_alive = Duration::from_secs(cfg.mqtt.keep_alive.max(5) as u64);
    es.qos = cfg.ingest.qos;
    es.seed = cfg.devices.seed;
    es.connection = cfg.devices.connection;
    es.shared_connections = cfg.devices.shared_connections;
    es.protocol = cfg.devices.protocol;
    es.topic_template = cfg.devices.topic_template.clone();
    es.max_devices = cfg.devices.max_devices;
    match (&cfg.devices.tls, embedded, &broker_tls) {
        (Some(t), true, _) => {
            // Devices over TLS: to the embedded broker's TLS listener (ingest stays on the
            // plain loopback listener).
            let Some(l) = tls_listen else {
                anyhow::bail!(
                    "devices.tls: the devices can use TLS with the embedded broker's TLS listener; \
                     set mqtt.tls_port, mqtt.server_cert_file and mqtt.server_key_file"
                );
            };
            es.tls = Some(
                fieldlab_mqtt_tls::client_config(t)
                    .map_err(|e| anyhow::anyhow!("devices.tls.{}: {}", e.key, e.message))?,
            );
            es.host = t.server_name.clone().unwrap_or_else(|| "localhost".into());
            es.port = l.port();
        }
        // An external mqtts:// broker: the devices' own TLS settings (e.g. their client
        // certificate), checked against the URL's host or devices.tls.server_name.
        (Some(t), false, Some(_)) => {
            es.tls = Some(
                fieldlab_mqtt_tls::client_config(t)
                    .map_err(|e| anyhow::anyhow!("devices.tls.{}: {}", e.key, e.message))?,
            );
        }
        (Some(_), false, None) => anyhow::bail!(
            "devices.tls: the external broker is plain MQTT; write it as mqtts://HOST:PORT for TLS, \
             or remove devices.tls"
        ),
        // No devices.tls: the devices share fieldlab's mqtt.tls on an mqtts:// broker.
        (None, _, t) => es.tls = t.clone(),
    }
    let emulator = fieldlab_emulator::Emulator::new(
        es,
        directory.clone(),
        Some(annotations.clone()),
        emulator_metrics,
    )
    .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&bind).await.with_context(|| {
        format!("cannot listen for HTTP on {bind}; pick another port with --http-port N (0 = any free port)")
    })?;
    let http_addr = listener.local_addr()?;
    let state = AppState {
        store: store.clone(),
        quarantine: quarantine.clone(),
        directory: directory.clone(),
        readiness: readiness.clone(),
        registry: Arc::new(registry),
        http: http_metrics,
        started,
        broker_url: mqtt_url.clone(),
        auth: auth.clone(),
        emulator: Some(emulator.clone()),
        annotations: Some(annotations.clone()),
        ratelimit: Some(limiter),
        extra_routes: Some(cap_routes),
        extra_openapi: Some(fieldlab_verifier::openapi()),
        watch: watch.clone(),
        allowed_hosts: cfg.server.allowed_hosts.clone(),
    };
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_http = async {
        let _ = stop_http_rx.await;
    };
    let https = match (&cfg.server.tls_cert_file, &cfg.server.tls_key_file) {
        (Some(c), Some(k)) => Some(
            fieldlab_server::tls::server_config(c, k, cfg.server.tls_client_ca_file.as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
        _ => None,
    };
    let tls_on = https.is_some();
    let server = match https {
        Some(t) => tokio::spawn(fieldlab_server::serve_tls(listener, t, state, stop_http)),
        None => tokio::spawn(fieldlab_server::serve(listener, state, stop_http)),
    };

    // Source: ingest subscribes to the telemetry topics plus every device topic override.
    let fleet = cfg
        .devices
        .fleet
        .clone()
        .unwrap_or_else(fieldlab_emulator::demo_fleet);
    let mut topics = cfg.ingest.topics.clone();
    for d in &fleet {
        let t = fieldlab_emulator::fleet::topic_for(&cfg.devices.topic_template, d, &d.name);
        if (d.config.mqtt_topic.is_some()
            || cfg.devices.topic_template != "devices/{type}/{id}/telemetry")
            && !topics.contains(&t)
        {
            topics.push(t);
        }
    }
    // Scale-out sinks: every point the store acknowledges is also sent to each of them.
    let sinks = fieldlab_sinks::Sinks::start(&cfg.sinks, &cfg.storage.data_dir, &sink_metrics)
        .map_err(|e| anyhow::anyhow!("{e}; check `sinks:` in the config"))?;
    let mqtt5 = match cfg.ingest.mqtt_version {
        MqttVersion::Auto => !embedded,
        MqttVersion::V5 => true,
        MqttVersion::V311 => false,
    };
    if mqtt5 && embedded {
        anyhow::bail!(
            "the embedded broker speaks MQTT 3.1.1 only; set ingest.mqtt_version to auto or 3.1.1, \
             or use an external broker (--broker mqtt://HOST:PORT) for MQTT 5 and shared subscriptions"
        );
    }
    let client_id = if cfg.mqtt.client_id.is_empty() {
        fieldlab_ingest::default_client_id(&cfg.storage.data_dir)
    } else {
        cfg.mqtt.client_id.clone()
    };
    let ingest = fieldlab_ingest::start(
        IngestSettings {
            host: host.clone(),
            port,
            client_id,
            // On the embedded broker (same process, loopback) the longest keep-alive MQTT has:
            // rumqttd 0.20 does not answer PINGREQ while a subscriber has 100 messages
            // unacknowledged, which is what ingest holds while the store cannot write (a full
            // disk); a short keep-alive would drop the connection, and with it (clean session)
            // the messages the broker still holds for ingest.
            keep_alive: Duration::from_secs(if embedded {
                u64::from(u16::MAX)
            } else {
                cfg.mqtt.keep_alive.max(5) as u64
            }),
            username: mqtt_user.clone(),
            password: mqtt_pass.clone(),
            topics: topics.clone(),
            qos: cfg.ingest.qos,
            batch_max: cfg.ingest.batch_max,
            max_payload_size: cfg.mqtt.max_payload_size,
            persistent_session: !embedded,
            mqtt5,
            share_group: cfg.ingest.share_group.clone(),
            dedup_window: cfg.ingest.dedup_window,
            connections: cfg.ingest.connections.max(1),
            tls: broker_tls.clone(),
            observers: watch::observers(&watch),
            admit,
            limits: fieldlab_ingest::Limits::from_config(&cfg),
        },
        store.clone(),
        quarantine.clone(),
        directory.clone(),
        readiness.clone(),
        ingest_metrics.clone(),
        sinks.clone(),
    );

    // Quality and anomaly events go out on MQTT (and the webhook) as they happen.
    let events = watch.clone().map(|w| {
        let creds = mqtt_user.clone().zip(mqtt_pass.clone());
        watch::spawn_publisher(
            w,
            host.clone(),
            port,
            creds,
            broker_tls.clone(),
            cfg.detect.webhook_url.clone(),
        )
    });

    // Wait for ingest before starting devices, so the first messages are not missed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !readiness.is_ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !readiness.is_ready() {
        tracing::warn!(broker = %mqtt_url, "ingest is not connected yet; continuing, /ready stays 503 until it is");
    }

    fieldlab_emulator::validate_fleet(&fleet).map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    emulator
        .add_all(fleet.clone(), true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let endpoints = Endpoints {
        http: fieldlab_broker::connectable(http_addr),
        mqtt_url: mqtt_url.clone(),
        embedded_broker: embedded,
    };
    on_ready(&endpoints);
    #[cfg(feature = "opcua")]
    let opcua = opcua(&cfg, &emulator, auth.clone()).await?;
    let security = Security {
        tls: tls_on,
        mqtt_extra,
        users: auth
            .as_ref()
            .map(|a| a.users().current().map_or(0, |f| f.users.len())),
    };
    let mut banner = banner(&cfg, &endpoints, http_addr, &topics, &fleet, &security);
    if !sinks.is_empty() {
        banner = banner.replacen(
            "\nPress Ctrl-C",
            &format!("\n  sinks   {}\nPress Ctrl-C", sinks.names().join(", ")),
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
    emulator.stop().await;
    // Let ingest take what the devices published last (quiet for 300 ms, at most 3 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = ingest_metrics.messages.get();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = ingest_metrics.messages.get();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    ingest.stop().await;
    if let Some(t) = events {
        t.abort();
    }
    // Ingest is quiet: deliver what the sinks still hold (or spool it for the next start).
    sinks.close().await;
    let _ = stop_http_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Err(_) => tracing::warn!("HTTP connections did not close within 5 s; closing anyway"),
        _ => {}
    }
    store
        .close()
        .await
        .context("flushing the store at shutdown failed; what was acknowledged is still in the WAL, and is replayed at the next start")?;
    let (points, dir) = (store.points_written(), cfg.storage.data_dir.display());
    let errors = store.metrics().write_errors_total();
    if let Err(reason) = store.health() {
        anyhow::bail!(
            "fieldlab: stopped with the store failing ({reason}). The {points} points acknowledged this run are on disk in {dir}; \
             batches the store refused were not acknowledged (an external broker with a persistent session redelivers them at the next start; \
             the embedded broker's are lost). Free space or fix the disk, then start again"
        );
    }
    if errors > 0 {
        println!(
            "fieldlab: stopped; {points} points written this run, all on disk in {dir}. The store had {errors} write errors this run \
             and recovered (fieldlab_store_write_errors_total; see the log)"
        );
    } else {
        println!(
            "fieldlab: stopped cleanly; {points} points written this run, all on disk in {dir}"
        );
    }
    Ok(())
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
    fleet: &[fieldlab_core::config::DeviceSpec],
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
    let mut s = fieldlab_opcua::OpcuaSettings::from_config(&cfg.opcua, &cfg.storage.data_dir)?;
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
                cfg.opcua.security.join(", ")
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
    let reg = fieldlab_attest::registry::Registry::open(&data_dir.join("cap"))
        .map_err(anyhow::Error::msg)?;
    let v = fieldlab_verifier::Verifier::new(fieldlab_verifier::Auth::Disabled, None, Some(reg));
    v.metrics.register(registry);
    Ok(fieldlab_verifier::api(Arc::new(v)))
}
