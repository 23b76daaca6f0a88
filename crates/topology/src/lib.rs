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

pub mod bench;
pub mod watch;

use anyhow::Context;
use fieldlab_core::config::{parse_broker_url, Config};
use fieldlab_core::{DeviceDirectory, Readiness};
use fieldlab_emulator::EmulatorSettings;
use fieldlab_ingest::{IngestMetrics, IngestSettings};
use fieldlab_server::{AppState, HttpMetrics};
use fieldlab_store::{Quarantine, Store, StoreOptions};
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
    let quarantine =
        Arc::new(Quarantine::open(&cfg.storage.data_dir).context("cannot open the quarantine")?);
    let watch = watch::open(&cfg.detect, &cfg.storage.data_dir)?;
    let directory = DeviceDirectory::new();
    for s in store.series(None) {
        directory.register_stored(&s.device_id, &s.tags.device_type, s.last_ts_ms);
    }

    // The broker: embedded unless an external one is configured.
    let (host, port, embedded) = match &cfg.mqtt.broker_url {
        Some(url) => {
            let b = parse_broker_url(url).map_err(anyhow::Error::msg)?;
            if b.tls {
                anyhow::bail!("mqtts:// (TLS) brokers are not supported yet; use mqtt://HOST:PORT");
            }
            (b.host, b.port, false)
        }
        None => {
            let b = fieldlab_broker::start(&fieldlab_broker::BrokerSettings {
                host: cfg.mqtt.host.clone(),
                port: cfg.mqtt.port,
                max_payload_size: cfg.mqtt.max_payload_size,
                max_connections: cfg.devices.max_devices + 100,
            })?;
            let a = b.local_addr();
            (a.ip().to_string(), a.port(), true)
        }
    };
    let mqtt_url = format!("mqtt://{host}:{port}");

    let mut registry = Registry::default();
    let ingest_metrics = IngestMetrics::default();
    let http_metrics = HttpMetrics::default();
    store.metrics().register(&mut registry);
    ingest_metrics.register(&mut registry);
    http_metrics.register(&mut registry);

    // HTTP before the sources: /health answers at once and /ready reports what is still
    // starting (an external broker may take a while).
    let bind = format!("{}:{}", cfg.server.host, cfg.server.port);
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
        watch: watch.clone(),
    };
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fieldlab_server::serve(listener, state, async {
        let _ = stop_http_rx.await;
    }));

    // Source: ingest subscribes to the telemetry topics plus every device topic override.
    let fleet = cfg
        .devices
        .fleet
        .clone()
        .unwrap_or_else(fieldlab_emulator::demo_fleet);
    let mut topics = cfg.ingest.topics.clone();
    for d in &fleet {
        let t = fieldlab_emulator::runner::telemetry_topic(d);
        if d.config.mqtt_topic.is_some() && !topics.contains(&t) {
            topics.push(t);
        }
    }
    let ingest = fieldlab_ingest::start(
        IngestSettings {
            host: host.clone(),
            port,
            client_id: cfg.mqtt.client_id.clone(),
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive.max(5) as u64),
            username: cfg.mqtt.username.clone(),
            password: cfg.mqtt.password.clone(),
            topics: topics.clone(),
            qos: cfg.ingest.qos,
            batch_max: cfg.ingest.batch_max,
            max_payload_size: cfg.mqtt.max_payload_size,
            persistent_session: !embedded,
            observers: watch::observers(&watch),
        },
        store.clone(),
        quarantine.clone(),
        directory.clone(),
        readiness.clone(),
        ingest_metrics.clone(),
    );

    let events = watch.clone().map(|w| {
        let creds = cfg.mqtt.username.clone().zip(cfg.mqtt.password.clone());
        watch::spawn_publisher(w, host.clone(), port, creds, cfg.detect.webhook_url.clone())
    });

    // Wait for ingest before starting devices, so the first messages are not missed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !readiness.is_ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !readiness.is_ready() {
        tracing::warn!(broker = %mqtt_url, "ingest is not connected yet; continuing, /ready stays 503 until it is");
    }

    let emulator = fieldlab_emulator::start(
        EmulatorSettings {
            host: host.clone(),
            port,
            username: cfg.mqtt.username.clone(),
            password: cfg.mqtt.password.clone(),
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive.max(5) as u64),
            qos: cfg.ingest.qos,
            seed: cfg.devices.seed,
        },
        fleet.clone(),
        directory.clone(),
    )
    .map_err(anyhow::Error::msg)?;

    let endpoints = Endpoints {
        http: fieldlab_broker::connectable(http_addr),
        mqtt_url: mqtt_url.clone(),
        embedded_broker: embedded,
    };
    on_ready(&endpoints);
    let banner = banner(&cfg, &endpoints, http_addr, &topics, &fleet);
    println!("{banner}");

    shutdown.await;
    println!("fieldlab: shutting down (stopping devices, draining ingest, flushing the store)...");
    readiness.set("store", false); // stop receiving traffic from load balancers first

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
    let _ = stop_http_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Err(_) => tracing::warn!("HTTP connections did not close within 5 s; closing anyway"),
        _ => {}
    }
    store
        .close()
        .await
        .context("flushing the store at shutdown failed; the WAL still has the data")?;
    println!(
        "fieldlab: stopped cleanly; {} points written this run, all on disk in {}",
        store.points_written(),
        cfg.storage.data_dir.display()
    );
    Ok(())
}

fn banner(
    cfg: &Config,
    e: &Endpoints,
    bound: SocketAddr,
    topics: &[String],
    fleet: &[fieldlab_core::config::DeviceSpec],
) -> String {
    let devices: Vec<String> = fleet
        .iter()
        .map(|d| format!("{} ({})", d.name, d.device_type))
        .collect();
    format!(
        "fieldlab {ver} is up\n\
         \x20 HTTP    http://{http}  (bound {bound}; /health /ready /metrics /api/v1/devices /api/v1/query)\n\
         \x20 MQTT    {mqtt}  ({kind}; ingest subscribes to {topics})\n\
         \x20 data    {data}\n\
         \x20 devices {n} emulated: {devices}\n\
         \x20 auth    off: local demo, every endpoint is open; keep server.host and mqtt.host on loopback\n\
         Press Ctrl-C to stop.",
        ver = env!("CARGO_PKG_VERSION"),
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
