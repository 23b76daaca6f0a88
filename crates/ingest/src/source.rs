//! The MQTT source: subscribe, batch, write durably, then acknowledge.
//!
//! Two tasks per ingest connection:
//! - the *poller* drives rumqttc's event loop (keep-alive, reconnects with back-off, re-subscribe
//!   on every new session) and hands incoming publishes to a bounded channel — when the store
//!   falls behind, the channel fills, polling pauses and TCP back-pressure reaches the broker;
//! - the *writer* drains the channel into batches, parses them, writes the points to the store
//!   and, only after the store has acknowledged the batch, sends the MQTT PUBACKs (manual acks).
//!   Unparseable messages are fsynced to the quarantine before they are acknowledged.
//!
//! So with QoS 1, "acknowledged to the broker" means "on disk in fieldlab".

use crate::payload::parse;
use fieldlab_core::config::Qos;
use fieldlab_core::{DeviceDirectory, Readiness};
use fieldlab_store::{Quarantine, Store};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeFilter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where and how to subscribe.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub topics: Vec<String>,
    pub qos: Qos,
    pub batch_max: usize,
    pub max_payload_size: usize,
    /// Keep the broker session across reconnects, so an external broker queues messages
    /// while fieldlab restarts.
    pub persistent_session: bool,
    /// Called with every parsed reading and its receive time before it is stored.
    pub observers: Observers,
}

/// Hooks on the parsed stream (the watch stage of quality rules and detectors plugs in here).
#[derive(Clone, Default)]
pub struct Observers(pub Vec<Arc<dyn Fn(&fieldlab_core::Reading, i64) + Send + Sync>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

/// Ingest metrics, registered under `fieldlab_ingest_*`.
#[derive(Clone)]
pub struct IngestMetrics {
    pub messages: Counter,
    pub quarantined: Counter,
    pub points: Counter,
    pub batches: Counter,
    pub write_errors: Counter,
    pub connected: Gauge,
    pub batch_seconds: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics {
            messages: Counter::default(),
            quarantined: Counter::default(),
            points: Counter::default(),
            batches: Counter::default(),
            write_errors: Counter::default(),
            connected: Gauge::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl IngestMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fieldlab_ingest_messages",
            "MQTT messages received by ingest",
            self.messages.clone(),
        );
        r.register(
            "fieldlab_ingest_quarantined",
            "Messages that could not be parsed and were quarantined",
            self.quarantined.clone(),
        );
        r.register(
            "fieldlab_ingest_points",
            "Points written to the store by ingest",
            self.points.clone(),
        );
        r.register(
            "fieldlab_ingest_batches",
            "Store batches written by ingest",
            self.batches.clone(),
        );
        r.register(
            "fieldlab_ingest_write_errors",
            "Batches the store refused (messages left unacknowledged)",
            self.write_errors.clone(),
        );
        r.register(
            "fieldlab_ingest_connected",
            "1 while ingest is connected and subscribed",
            self.connected.clone(),
        );
        r.register(
            "fieldlab_ingest_batch_duration_seconds",
            "Time from batch start to durable store acknowledgement",
            self.batch_seconds.clone(),
        );
    }
}

/// A running ingest connection.
pub struct Ingest {
    cancel: CancellationToken,
    poller: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Ingest {
    /// Stop receiving, finish the batch in flight (written and acknowledged), and return.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.poller.await;
        let _ = self.writer.await;
    }
}

fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Connect and start ingesting. Readiness part `broker` follows the connection, `ingest` turns
/// true once subscribed.
pub fn start(
    s: IngestSettings,
    store: Store,
    quarantine: Arc<Quarantine>,
    directory: DeviceDirectory,
    readiness: Readiness,
    metrics: IngestMetrics,
) -> Ingest {
    let mut opts = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    opts.set_keep_alive(s.keep_alive)
        .set_clean_session(!s.persistent_session)
        .set_manual_acks(true)
        .set_inflight(1000)
        .set_max_packet_size(s.max_payload_size + 1024, s.max_payload_size + 1024);
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let (tx, rx) = mpsc::channel::<Publish>(s.batch_max.max(1) * 4);
    let cancel = CancellationToken::new();
    readiness.require("broker");
    readiness.require("ingest");

    let filters: Vec<SubscribeFilter> = s
        .topics
        .iter()
        .map(|t| SubscribeFilter::new(t.clone(), qos(s.qos)))
        .collect();
    let poller = {
        let cancel = cancel.clone();
        let client = client.clone();
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        let where_ = format!("{}:{}", s.host, s.port);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => break,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(100);
                        readiness.set("broker", true);
                        tracing::info!(broker = %where_, "ingest connected; subscribing");
                        if let Err(e) = client.subscribe_many(filters.clone()).await {
                            tracing::error!(error = %e, "ingest could not subscribe");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        metrics.connected.set(1);
                        readiness.set("ingest", true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        metrics.connected.set(0);
                        readiness.set("ingest", false);
                        readiness.set("broker", false);
                        tracing::warn!(broker = %where_, error = %e, retry_in = ?backoff, "ingest lost the broker; reconnecting");
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            // Dropping `tx` lets the writer finish what is queued.
            drop(tx);
            // Keep the event loop alive briefly so the writer's final PUBACKs go out.
            let flush = async {
                loop {
                    if eventloop.poll().await.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(300), flush).await;
        })
    };

    let writer = tokio::spawn(write_loop(
        rx,
        client,
        s.observers.clone(),
        s.batch_max,
        store,
        quarantine,
        directory,
        metrics,
    ));
    Ingest {
        cancel,
        poller,
        writer,
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Publish>,
    client: AsyncClient,
    observers: Observers,
    batch_max: usize,
    store: Store,
    quarantine: Arc<Quarantine>,
    directory: DeviceDirectory,
    metrics: IngestMetrics,
) {
    let mut batch: Vec<Publish> = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let started = Instant::now();
        let now = fieldlab_core::time::now_ms();
        let mut points = Vec::new();
        let mut bad = Vec::new();
        let mut seen = Vec::new();
        for m in &batch {
            match parse(&m.topic, &m.payload, now) {
                Ok(readings) => {
                    for r in readings {
                        for o in &observers.0 {
                            o(&r, now);
                        }
                        seen.push((r.device_id.clone(), r.device_type.clone(), r.seq));
                        points.extend(r.into_points());
                    }
                }
                Err(reason) => bad.push((m.topic.clone(), m.payload.to_vec(), reason)),
            }
        }
        metrics.messages.inc_by(batch.len() as u64);
        let n_points = points.len() as u64;
        // Retry a failing store a few times (the store hands the batch back, no copies); if it
        // keeps failing, leave the messages unacknowledged so the broker redelivers them.
        let mut stored = false;
        let mut pending = points;
        for attempt in 0..3 {
            match store.write(pending).await {
                Ok(()) => {
                    stored = true;
                    break;
                }
                Err(e) => {
                    metrics.write_errors.inc();
                    tracing::error!(error = %e.error, attempt, "store refused a batch");
                    pending = e.points;
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        if !stored {
            batch.clear();
            continue;
        }
        if !bad.is_empty() {
            let q = quarantine.clone();
            let n = bad.len() as u64;
            for (topic, _, reason) in &bad {
                tracing::warn!(%topic, %reason, "payload quarantined");
            }
            let at = fieldlab_core::time::format_ms(now);
            let res = tokio::task::spawn_blocking(move || q.append(&bad, &at)).await;
            match res {
                Ok(Ok(_)) => {
                    metrics.quarantined.inc_by(n);
                }
                other => {
                    // Not acknowledging is the only way not to lose them: the broker
                    // redelivers; the points already stored are idempotent (same timestamps).
                    let why = match other {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => unreachable!(),
                    };
                    tracing::error!(error = %why, "quarantine write failed; batch left unacknowledged");
                    batch.clear();
                    continue;
                }
            }
        }
        for (id, ty, seq) in seen {
            directory.seen(&id, &ty, seq, now);
        }
        metrics.points.inc_by(n_points);
        metrics.batches.inc();
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        for m in batch.drain(..) {
            if m.qos != QoS::AtMostOnce {
                if let Err(e) = client.ack(&m).await {
                    tracing::debug!(error = %e, "could not acknowledge (connection closing?)");
                }
            }
        }
    }
}
