//! The steps of [`crate::up`], one function each, in the order `up` calls them.
//!
//! Why it exists: `up` should read as the pipeline it assembles (data, auth, broker, metrics,
//! emulator, HTTP, sinks, ingest, events, devices; then the reverse), so the wiring of each
//! part — its settings taken from the config, the handles it needs from earlier steps — lives
//! here, next to the others and out of the sequence.

use crate::Config;
use anyhow::Context;
use fieldlab_core::config::parse_broker_url;
use fieldlab_core::{DeviceDirectory, Readiness};
use fieldlab_emulator::DeviceSpec;
use fieldlab_emulator::EmulatorSettings;
use fieldlab_ingest::MqttVersion;
use fieldlab_ingest::{IngestMetrics, IngestSettings};
use fieldlab_server::{AppState, HttpMetrics};
use fieldlab_store::{Quarantine, Store, StoreOptions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the pipeline keeps: the store and what lives beside it in the data dir.
pub(crate) struct Data {
    pub store: Store,
    pub quarantine: Arc<Quarantine>,
    pub watch: Option<fieldlab_watch::Watch>,
    pub annotations: Arc<fieldlab_store::annotations::Annotations>,
    pub directory: DeviceDirectory,
}

/// Opens the store (replaying its WAL), the quarantine, detection state, the fault annotations,
/// and the directory of devices seen before.
pub(crate) fn data(cfg: &Config, readiness: &Readiness) -> anyhow::Result<Data> {
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
        Quarantine::open_with(
            &cfg.storage.data_dir,
            cfg.storage.quarantine_max_bytes.get(),
        )
        .context("cannot open the quarantine")?,
    );
    let watch = crate::watch::open(
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
    Ok(Data {
        store,
        quarantine,
        watch,
        annotations,
        directory,
    })
}

/// Auth before anything listens: no window in which the API is open by mistake.
pub(crate) async fn auth(
    cfg: &Config,
) -> anyhow::Result<Option<Arc<fieldlab_auth::Authenticator>>> {
    if !cfg.auth.enabled {
        return Ok(None);
    }
    let a = fieldlab_auth::Authenticator::new(&cfg.auth, &cfg.storage.data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    Ok(Some(Arc::new(a)))
}

/// The broker fieldlab's own clients (ingest, devices, events) connect to, and how.
pub(crate) struct Mqtt {
    pub host: String,
    pub port: u16,
    pub embedded: bool,
    /// `mqtt[s]://host:port`, as printed.
    pub url: String,
    /// The embedded broker's TLS listener (for devices.tls).
    pub tls_listen: Option<SocketAddr>,
    /// TLS of fieldlab's own clients on an external `mqtts://` broker, from `mqtt.tls`.
    pub client_tls: Option<rumqttc::TlsConfiguration>,
    /// The embedded broker's other listeners (mqtts://, ws://), for the banner.
    pub extra_urls: Vec<String>,
    /// fieldlab's own credentials: the internal one on the embedded broker when auth is on,
    /// else the configured ones (for an external broker).
    pub user: Option<String>,
    pub pass: Option<String>,
    /// Refusals by the embedded broker's topic ACL gate, by kind.
    pub denied: Family<Vec<(String, String)>, Counter>,
    /// The embedded broker's listeners behind its gate: ingest connects there (one hop less
    /// for every message; it may read every topic anyway).
    pub internal: Option<fieldlab_broker::InternalLogin>,
}

/// Starts the embedded broker (behind its ACL gate when auth is on), or checks the external
/// one's URL and TLS settings.
pub(crate) fn broker(
    cfg: &Config,
    auth: &Option<Arc<fieldlab_auth::Authenticator>>,
) -> anyhow::Result<Mqtt> {
    let (user, pass) = match (auth, &cfg.mqtt.broker_url) {
        (Some(a), None) => {
            let (u, p) = a.internal_mqtt_credentials();
            (Some(u), Some(p))
        }
        _ => (cfg.mqtt.username.clone(), cfg.mqtt.password.clone()),
    };
    // Exported at zero.
    let denied: Family<Vec<(String, String)>, Counter> = Family::default();
    for kind in ["publish", "subscribe", "will"] {
        let _ = denied.get_or_create(&vec![("kind".to_string(), kind.to_string())]);
    }
    let mut m = Mqtt {
        host: String::new(),
        port: 0,
        embedded: false,
        url: String::new(),
        tls_listen: None,
        client_tls: None,
        extra_urls: Vec::new(),
        user,
        pass,
        denied,
        internal: None,
    };
    match &cfg.mqtt.broker_url {
        Some(url) => {
            let b = parse_broker_url(url).map_err(anyhow::Error::msg)?;
            if b.tls {
                let t = cfg.mqtt.tls.clone().unwrap_or_default();
                m.client_tls = Some(
                    fieldlab_mqtt_tls::client_config(&t)
                        .map_err(|e| anyhow::anyhow!("mqtt.tls.{}: {}", e.key, e.message))?,
                );
            } else if cfg.mqtt.tls.is_some() {
                anyhow::bail!(
                    "mqtt.tls is set but the broker {url} is plain MQTT; write it as mqtts://HOST:PORT \
                     (--broker or mqtt.broker_url), or remove mqtt.tls"
                );
            }
            (m.host, m.port) = (b.host, b.port);
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
            let denied = m.denied.clone();
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
                auth: auth.clone().map(mqtt_login),
                on_denied: Some(on_denied),
                allowed_hosts: cfg.server.allowed_hosts.clone(),
            })?;
            m.tls_listen = b.tls_listen;
            if let Some(t) = b.tls_listen {
                m.extra_urls
                    .push(format!("mqtts://{}", fieldlab_broker::connectable(t)));
            }
            if let Some(w) = b.ws_listen {
                let scheme = if tls.is_some() { "wss" } else { "ws" };
                m.extra_urls.push(format!(
                    "{scheme}://{}/mqtt",
                    fieldlab_broker::connectable(w)
                ));
            }
            let a = b.local_addr();
            (m.host, m.port, m.embedded) = (a.ip().to_string(), a.port(), true);
            m.internal = Some(b.internal_login().clone());
        }
    }
    let scheme = if m.client_tls.is_some() {
        "mqtts"
    } else {
        "mqtt"
    };
    m.url = format!("{scheme}://{}:{}", m.host, m.port);
    Ok(m)
}

/// The embedded broker's CONNECT check: each login's topic ACL, enforced by the broker's gate.
/// Passwords go through the authenticator's bounded argon2 pool and its failure limiter (per
/// user and client address).
fn mqtt_login(a: Arc<fieldlab_auth::Authenticator>) -> fieldlab_broker::MqttAuth {
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
}

/// The metrics of every part, registered in one registry.
pub(crate) struct Metrics {
    pub ingest: IngestMetrics,
    pub http: HttpMetrics,
    pub sinks: fieldlab_sinks::SinkMetrics,
    pub emulator: fieldlab_emulator::EmulatorMetrics,
}

pub(crate) fn metrics(
    cfg: &Config,
    registry: &mut Registry,
    data: &Data,
    mqtt_denied: Family<Vec<(String, String)>, Counter>,
) -> Metrics {
    registry.register(
        "fieldlab_mqtt_acl_denied",
        "MQTT publishes, subscription filters and last wills refused by the embedded broker's topic ACL",
        mqtt_denied,
    );
    let m = Metrics {
        ingest: IngestMetrics::default(),
        http: HttpMetrics {
            legacy_names: cfg.server.legacy_metric_names,
            ..HttpMetrics::default()
        },
        sinks: fieldlab_sinks::SinkMetrics::default(),
        emulator: fieldlab_emulator::EmulatorMetrics::default(),
    };
    m.emulator.register(registry);
    data.store.metrics().register(registry);
    data.quarantine.register_metrics(registry);
    m.ingest.register(registry);
    m.sinks.register(registry);
    m.http.register(registry);
    // Detection counters; with detection disabled they are exported and stay at zero.
    match &data.watch {
        Some(w) => w.metrics().register(registry),
        None => fieldlab_watch::WatchMetrics::default().register(registry),
    }
    m
}

/// The emulator, without devices yet, connecting like any device: to the embedded broker (its
/// TLS listener with `devices.tls`) or to the external one.
pub(crate) fn emulator(
    cfg: &Config,
    mqtt: &Mqtt,
    data: &Data,
    metrics: fieldlab_emulator::EmulatorMetrics,
) -> anyhow::Result<fieldlab_emulator::Emulator> {
    fieldlab_emulator::custom::register_yaml(&cfg.devices.types)
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let mut es = EmulatorSettings::new(mqtt.host.clone(), mqtt.port);
    es.username = mqtt.user.clone();
    es.password = mqtt.pass.clone();
    es.keep_alive = Duration::from_secs(cfg.mqtt.keep_alive.max(5) as u64);
    es.qos = cfg.ingest.qos;
    es.seed = cfg.devices.seed;
    es.connection = cfg.devices.connection;
    es.shared_connections = cfg.devices.shared_connections;
    es.protocol = cfg.devices.protocol;
    es.topic_template = cfg.devices.topic_template.clone();
    es.max_devices = cfg.devices.max_devices;
    match (&cfg.devices.tls, mqtt.embedded, &mqtt.client_tls) {
        (Some(t), true, _) => {
            // Devices over TLS: to the embedded broker's TLS listener (ingest stays on the
            // plain loopback listener).
            let Some(l) = mqtt.tls_listen else {
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
    fieldlab_emulator::Emulator::new(
        es,
        data.directory.clone(),
        Some(data.annotations.clone()),
        metrics,
    )
    .map_err(anyhow::Error::msg)
}

/// The HTTP server, running.
pub(crate) struct Http {
    pub addr: SocketAddr,
    pub tls: bool,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Http {
    /// Stops taking requests and waits (at most 5 s) for open ones.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(_) => tracing::warn!("HTTP connections did not close within 5 s; closing anyway"),
            _ => {}
        }
    }
}

/// Binds `server.host:server.port` and serves the API (HTTPS with `server.tls_*`).
pub(crate) async fn http(cfg: &Config, state: AppState) -> anyhow::Result<Http> {
    let bind = format!("{}:{}", cfg.server.host, cfg.server.port);
    let listener = tokio::net::TcpListener::bind(&bind).await.with_context(|| {
        format!("cannot listen for HTTP on {bind}; pick another port with --http-port N (0 = any free port)")
    })?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stop_rx.await;
    };
    let https = match (&cfg.server.tls_cert_file, &cfg.server.tls_key_file) {
        (Some(c), Some(k)) => Some(
            fieldlab_server::tls::server_config(c, k, cfg.server.tls_client_ca_file.as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
        _ => None,
    };
    let tls = https.is_some();
    let server = match https {
        Some(t) => tokio::spawn(fieldlab_server::serve_tls(listener, t, state, stopped)),
        None => tokio::spawn(fieldlab_server::serve(listener, state, stopped)),
    };
    Ok(Http {
        addr,
        tls,
        server,
        stop,
    })
}

/// The devices to run (the config's, else the demo fleet) and the topics ingest subscribes
/// to: the telemetry filters plus every device topic the template or an override moves.
pub(crate) fn fleet_and_topics(cfg: &Config) -> (Vec<DeviceSpec>, Vec<String>) {
    // A cluster's replicas would each emulate the same demo devices: no demo fleet there
    // (devices publish to the cluster's MQTT listener; `devices.fleet` still adds some).
    let fleet = match (&cfg.devices.fleet, cfg.cluster.enabled()) {
        (Some(f), _) => f.clone(),
        (None, true) => Vec::new(),
        (None, false) => fieldlab_emulator::demo_fleet(),
    };
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
    (fleet, topics)
}

/// Ingest: subscribes and writes to the store, acknowledging only what the store took. In a
/// cluster, reads this replica's partitions of the NATS stream instead (`log`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn ingest(
    cfg: &Config,
    mqtt: &Mqtt,
    data: &Data,
    readiness: &Readiness,
    metrics: &Metrics,
    topics: Vec<String>,
    admit: Option<fieldlab_ingest::Admit>,
    sinks: fieldlab_sinks::Sinks,
    log: Option<(
        tokio::sync::mpsc::Receiver<fieldlab_ingest::LogMsg>,
        fieldlab_ingest::Committed,
    )>,
) -> anyhow::Result<fieldlab_ingest::Ingest> {
    let settings = ingest_settings(cfg, mqtt, data, topics, admit);
    if let Some((rx, committed)) = log {
        let i = fieldlab_ingest::start_log(
            settings,
            rx,
            committed,
            data.store.clone(),
            data.quarantine.clone(),
            data.directory.clone(),
            metrics.ingest.clone(),
            sinks,
        );
        readiness.set("ingest", true);
        return Ok(i);
    }
    Ok(fieldlab_ingest::start(
        settings,
        data.store.clone(),
        data.quarantine.clone(),
        data.directory.clone(),
        readiness.clone(),
        metrics.ingest.clone(),
        sinks,
    ))
}

fn ingest_settings(
    cfg: &Config,
    mqtt: &Mqtt,
    data: &Data,
    topics: Vec<String>,
    admit: Option<fieldlab_ingest::Admit>,
) -> IngestSettings {
    let mqtt5 = match cfg.ingest.mqtt_version {
        MqttVersion::Auto => !mqtt.embedded,
        MqttVersion::V5 => true,
        MqttVersion::V311 => false,
    };
    let client_id = if cfg.mqtt.client_id.is_empty() {
        fieldlab_ingest::default_client_id(&cfg.storage.data_dir)
    } else {
        cfg.mqtt.client_id.clone()
    };
    // On the embedded broker: straight to rumqttd behind the gate, with the gate's login.
    let (host, port, username, password) = match &mqtt.internal {
        Some(i) => {
            let a = if mqtt5 { i.v5 } else { i.v4 };
            (
                a.ip().to_string(),
                a.port(),
                Some(i.username.to_string()),
                Some(i.password.clone()),
            )
        }
        None => (
            mqtt.host.clone(),
            mqtt.port,
            mqtt.user.clone(),
            mqtt.pass.clone(),
        ),
    };
    IngestSettings {
        host,
        port,
        client_id,
        // On the embedded broker (same process, loopback) the longest keep-alive MQTT has:
        // rumqttd 0.20 does not answer PINGREQ while a subscriber has 100 messages
        // unacknowledged, which is what ingest holds while the store cannot write (a full
        // disk); a short keep-alive would drop the connection, and with it (clean session)
        // the messages the broker still holds for ingest.
        keep_alive: Duration::from_secs(if mqtt.embedded {
            u64::from(u16::MAX)
        } else {
            cfg.mqtt.keep_alive.max(5) as u64
        }),
        username,
        password,
        topics,
        qos: cfg.ingest.qos,
        batch_max: cfg.ingest.batch_max,
        max_payload_size: cfg.mqtt.max_payload_size,
        persistent_session: !mqtt.embedded,
        mqtt5,
        share_group: cfg.ingest.share_group.clone(),
        dedup_window: cfg.ingest.dedup_window,
        connections: cfg.ingest.connections.max(1),
        tls: mqtt.client_tls.clone(),
        observers: crate::watch::observers(&data.watch),
        admit,
        limits: fieldlab_ingest::Limits::from_config(&cfg.ingest, cfg.ingest_max_devices()),
    }
}

/// Joins the cluster when `cluster.nats_url` is set: connects to NATS, takes this replica's
/// partition leases and starts reading them (into a channel ingest drains once it starts).
/// Readiness part `cluster` is down until the replica holds and has caught up on its share.
pub(crate) async fn cluster(
    cfg: &Config,
    readiness: &Readiness,
) -> anyhow::Result<Option<fieldlab_cluster::Started>> {
    let c = &cfg.cluster;
    if !c.enabled() {
        return Ok(None);
    }
    let me = match &c.replica_id {
        Some(id) => id.clone(),
        None => host_name(),
    };
    let url = match &c.advertise_url {
        Some(u) => u.clone(),
        None if cfg.server.port == 0 => anyhow::bail!(
            "cluster: the other replicas cannot reach this one on port 0; set server.port, or cluster.advertise_url"
        ),
        None => {
            let host = match cfg.server.host.as_str() {
                "0.0.0.0" | "::" | "[::]" => host_name(),
                h => h.to_string(),
            };
            let scheme = if cfg.server.tls_cert_file.is_some() { "https" } else { "http" };
            format!("{scheme}://{host}:{}", cfg.server.port)
        }
    };
    let started = fieldlab_cluster::start(
        c,
        me.clone(),
        url.clone(),
        &cfg.storage.data_dir,
        cfg.ingest.batch_max.max(1) * 4,
    )
    .await?;
    let nats = fieldlab_core::redact::url(c.nats_url.as_deref().unwrap_or_default());
    tracing::info!(replica = %me, advertise = %url, %nats, partitions = c.partitions, "joined the cluster");
    readiness.set("broker", true);
    readiness.require("cluster");
    readiness.set("cluster", true);
    let h = started.cluster.handle();
    readiness.check("cluster", move || h.settled());
    Ok(Some(started))
}

/// `GET /api/v1/cluster`: members, and per partition its owner, its desired owner and how far
/// this replica has read it (behind the same auth as every other route).
pub(crate) fn cluster_routes(c: &fieldlab_cluster::Cluster) -> axum::Router {
    let h = c.handle();
    axum::Router::new().route(
        "/api/v1/cluster",
        axum::routing::get(move || {
            let h = h.clone();
            async move { axum::Json(h.status()) }
        }),
    )
}

/// The OpenAPI fragment of the extra routes, with `/api/v1/cluster` when it is served.
pub(crate) fn with_cluster_openapi(mut doc: serde_json::Value, cluster: bool) -> serde_json::Value {
    if cluster {
        doc["paths"]["/api/v1/cluster"] = serde_json::json!({
            "get": {
                "summary": "This replica's view of the cluster: members, partition owners, read positions",
                "tags": ["cluster"],
                "responses": {"200": {"description": "members and partitions", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }
        });
    }
    doc
}

/// This machine's name, as a replica id (letters, digits, `-`, `_`).
fn host_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_else(|| "fieldlab".into());
    let id: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() {
        "fieldlab".into()
    } else {
        id
    }
}

/// Quality and anomaly events to MQTT (`fieldlab/anomalies/<id>`, ...) and the webhook.
pub(crate) fn events(
    cfg: &Config,
    mqtt: &Mqtt,
    data: &Data,
) -> Option<tokio::task::JoinHandle<()>> {
    data.watch.clone().map(|w| {
        crate::watch::spawn_publisher(
            w,
            mqtt.host.clone(),
            mqtt.port,
            mqtt.user.clone().zip(mqtt.pass.clone()),
            mqtt.client_tls.clone(),
            cfg.detect.webhook_url.clone(),
        )
    })
}

/// Waits (at most 5 s) until ingest subscribed, so the devices' first messages are not missed.
pub(crate) async fn wait_for_ingest(readiness: &Readiness, mqtt_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !readiness.is_ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !readiness.is_ready() {
        tracing::warn!(broker = %mqtt_url, "ingest is not connected yet; continuing, /ready stays 503 until it is");
    }
}

/// At shutdown, after the devices stopped: lets ingest take what they published last (until
/// quiet for 300 ms, at most 3 s).
pub(crate) async fn drain_ingest(metrics: &IngestMetrics) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = metrics.messages.get();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = metrics.messages.get();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
}

/// The last step: writes the head to a block and says what is on disk.
pub(crate) async fn close_store(cfg: &Config, store: &Store) -> anyhow::Result<()> {
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
