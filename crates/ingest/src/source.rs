//! The MQTT source: subscribe, batch, write durably, then acknowledge.
//!
//! Two tasks per ingest connection:
//! - the *poller* drives rumqttc's event loop (keep-alive, reconnects with back-off, re-subscribe
//!   on every new session) and hands incoming publishes to a bounded channel — when the store
//!   falls behind, the channel fills, polling pauses and TCP back-pressure reaches the broker;
//! - the *writer* drains the channel into batches, parses them, writes the points to the store
//!   and, only after the store has acknowledged the batch, sends the MQTT PUBACKs (manual acks).
//!   Unparseable messages are fsynced to the quarantine before they are acknowledged, and so
//!   are messages of a device over its rate limit ([`Admit`], reason "rate limited").
//!
//! So with QoS 1, "acknowledged to the broker" means "on disk in fieldlab".
//!
//! When the store cannot write (a full disk, an I/O error; it reports itself failed and `/ready`
//! answers 503), the writer holds the batch, leaves its messages unacknowledged and retries with
//! back-off; the bounded channels and the broker's window of unacknowledged messages hold back
//! everything else, and ingest goes on by itself once a write works again.
//!
//! Scale-out: with an external broker the connection speaks MQTT 5 (3.1.1 for the embedded
//! rumqttd) under a client id unique per instance, and with `share_group` it subscribes to
//! `$share/<group>/<filter>`, so instances of one group split the messages. Redeliveries are
//! stored once ([`crate::dedup`]), and after the store acknowledged a batch its points are
//! handed to the scale-out sinks (`fieldlab-sinks`), whose back-pressure slows ingest down.

use crate::dedup::Dedup;
use crate::identity::{Guard, Limits};
use crate::payload::parse;
use fieldlab_core::backoff::Backoff;
use fieldlab_core::config::Qos;
use fieldlab_core::reconnect::{self, Polled};
use fieldlab_core::{DeviceDirectory, Readiness};
use fieldlab_sinks::Sinks;
use fieldlab_store::{Quarantine, Store, StoreError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rumqttc::v5::mqttbytes::v5::{Filter as Filter5, Packet as Packet5, Publish as Publish5};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeFilter};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Speak MQTT 5 (needed for shared subscriptions) instead of 3.1.1.
    pub mqtt5: bool,
    /// Subscribe as a member of this shared-subscription group (`$share/<group>/<filter>`).
    pub share_group: Option<String>,
    /// Recent (seq, ts) pairs remembered per device for de-duplication; 0 = off.
    pub dedup_window: usize,
    /// MQTT connections feeding this ingest's one writer (>= 1). More than one subscribes as
    /// a shared-subscription group (`share_group`, or the client id if none), so the broker
    /// spreads messages over them: brokers cap the unacknowledged messages per connection
    /// (rumqttd: 100), and a store batch can only hold what is in flight, so N connections
    /// make N-times larger batches per fsync.
    pub connections: usize,
    /// MQTT over TLS (an `mqtts://` broker): built once by `fieldlab_mqtt_tls::client_config`
    /// from `mqtt.tls` (CA, client certificate for mTLS, server name). None: plain TCP.
    pub tls: Option<rumqttc::TlsConfiguration>,
    /// Called with every parsed reading and its receive time before it is stored (duplicates
    /// included, so the quality rules see them).
    pub observers: Observers,
    /// Per-device admission (the rate-limit guard plugs in here). None: every message is admitted.
    pub admit: Option<Admit>,
    /// Who may write which device, and how many devices and series are taken in
    /// ([`crate::identity`]); refusals are quarantined with their reason.
    pub limits: Limits,
}

/// Asked once per device named in a parsed message, before anything of it is stored: `Ok` lets
/// it through, `Err(reason)` sends the whole message to the quarantine with that reason (counted
/// in `fieldlab_ingest_rate_limited_total`) — never a silent drop. A hook rather than a
/// dependency, so ingest stays free of the rate limiter's Redis client.
#[derive(Clone)]
pub struct Admit(pub Arc<AdmitFn>);

/// What an [`Admit`] calls: device id in, `Ok` or the quarantine reason out.
pub type AdmitFn =
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>> + Send + Sync;

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit")
    }
}

/// Hooks on the parsed stream (the watch stage of quality rules and detectors plugs in here).
#[derive(Clone, Default)]
pub struct Observers(pub Vec<Observer>);

/// One hook: the reading and the time it was received (epoch ms); returns fields to store
/// with the reading, in the same batch (the watch's verdict series,
/// [`fieldlab_core::reading::verdict`]).
pub type Observer = Arc<
    dyn Fn(&fieldlab_core::Reading, i64) -> Vec<(String, fieldlab_core::FieldValue)> + Send + Sync,
>;

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

impl IngestSettings {
    /// The shared-subscription group in effect, if any.
    fn group(&self) -> Option<String> {
        match (&self.share_group, self.connections > 1) {
            (Some(g), _) => Some(g.clone()),
            (None, true) => Some(self.client_id.clone()),
            (None, false) => None,
        }
    }

    /// The filters actually subscribed: shared if a group is set.
    pub fn filters(&self) -> Vec<String> {
        match &self.group() {
            Some(g) => self
                .topics
                .iter()
                .map(|t| format!("$share/{g}/{t}"))
                .collect(),
            None => self.topics.clone(),
        }
    }
}

/// A client id unique per instance and stable across its restarts:
/// `fieldlab-ingest-<hostname>-<hash of the data dir>`. Stable matters: with an external broker
/// the session is persistent, and a restarted instance must resume it to receive what the broker
/// queued while it was down (a per-process id would orphan that queue). Two instances on one
/// host have different data dirs, so they still get different ids.
pub fn default_client_id(data_dir: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: a few lines, and unlike std's hasher its output never changes between releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.to_string_lossy().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("fieldlab-ingest-{host}-{:08x}", h as u32)
}

/// A received message of either protocol version, or of a partitioned log.
enum Msg {
    V4(Publish),
    V5(Publish5),
    Log(LogMsg),
}

/// A device message read from a partitioned, durable log (NATS JetStream in a cluster of
/// replicas, `fieldlab-cluster`) instead of an MQTT subscription. The log already holds it
/// durably, so it needs no acknowledgement: once its batch is durable in the store, ingest
/// reports the newest `seq` of each partition to [`Committed`], and the replica resumes there.
#[derive(Debug, Clone)]
pub struct LogMsg {
    /// The MQTT topic the device published on (`devices/<type>/<id>/telemetry`).
    pub topic: String,
    pub payload: Vec<u8>,
    pub partition: u32,
    /// Position in the log (the stream sequence).
    pub seq: u64,
    /// When the log received it (ms since the epoch): the arrival time the quality rules see,
    /// so that a replay of old messages is judged as when they arrived, not as late.
    pub received_ms: i64,
}

/// Told, after each durable batch, the newest `(partition, seq)` it held of each partition.
pub type Committed = Arc<dyn Fn(&[(u32, u64)]) + Send + Sync>;

impl Msg {
    fn topic(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Msg::V4(p) => std::borrow::Cow::Borrowed(p.topic.as_str()),
            Msg::V5(p) => String::from_utf8_lossy(&p.topic),
            Msg::Log(m) => std::borrow::Cow::Borrowed(m.topic.as_str()),
        }
    }

    /// When the message arrived: now, or when the log received it.
    fn received_ms(&self, now: i64) -> i64 {
        match self {
            Msg::Log(m) => m.received_ms,
            _ => now,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Msg::V4(p) => &p.payload,
            Msg::V5(p) => &p.payload,
            Msg::Log(m) => &m.payload,
        }
    }

    fn needs_ack(&self) -> bool {
        match self {
            Msg::V4(p) => p.qos != QoS::AtMostOnce,
            Msg::V5(p) => p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            Msg::Log(_) => false,
        }
    }
}

/// Where a message came from: the connection slot, and which session of it (bumped at each
/// CONNACK). An acknowledgement goes out only on the session the message arrived on: after a
/// reconnect its packet id may name another message of the new session (a clean session
/// starts packet ids afresh), and acknowledging that one before it is durable could lose it.
/// A message of a gone session is left unacknowledged: a persistent session redelivers it
/// (stored once, deduplicated), a clean one has forgotten it.
type Tag = (usize, u64);

/// The client that sends the acknowledgements.
#[derive(Clone)]
enum Acker {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
    /// A log's messages are committed per partition, once per batch (see [`LogMsg`]).
    Log(Committed),
}

impl Acker {
    async fn ack(&self, m: &Msg) -> Result<(), String> {
        match (self, m) {
            (Acker::V4(c), Msg::V4(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Acker::V5(c), Msg::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Acker::Log(_), Msg::Log(_)) => Ok(()),
            _ => Err("protocol mismatch".into()),
        }
    }
}

/// Ingest metrics, registered under `fieldlab_ingest_*`.
#[derive(Clone)]
pub struct IngestMetrics {
    pub messages: Counter,
    pub quarantined: Counter,
    /// Messages quarantined because their device was over its rate limit.
    pub rate_limited: Counter,
    pub points: Counter,
    pub batches: Counter,
    pub write_errors: Counter,
    pub duplicates: Counter,
    pub connected: Gauge,
    pub batch_seconds: Histogram,
    /// Messages refused by [`crate::identity`] (and quarantined), by reason.
    pub rejected: Family<RejectLabels, Counter>,
}

/// The label of `fieldlab_ingest_rejected_total`: one of [`crate::identity::REFUSALS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics {
            messages: Counter::default(),
            quarantined: Counter::default(),
            rate_limited: Counter::default(),
            points: Counter::default(),
            batches: Counter::default(),
            write_errors: Counter::default(),
            duplicates: Counter::default(),
            connected: Gauge::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            rejected: Family::default(),
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
            "Messages quarantined (unparseable, or their device over its rate limit)",
            self.quarantined.clone(),
        );
        r.register(
            "fieldlab_ingest_rate_limited",
            "Messages quarantined with reason \"rate limited\" (device over ingest's rate limit)",
            self.rate_limited.clone(),
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
            "fieldlab_ingest_duplicates",
            "Readings received again (same device, seq and time) and stored once",
            self.duplicates.clone(),
        );
        r.register(
            "fieldlab_ingest_connected",
            "1 while ingest is connected and subscribed",
            self.connected.clone(),
        );
        for reason in crate::identity::REFUSALS {
            let _ = self.rejected.get_or_create(&RejectLabels { reason });
        }
        r.register(
            "fieldlab_ingest_rejected",
            "Messages quarantined because a reading named another device than its topic, had an invalid device id, or passed the device or series limit",
            self.rejected.clone(),
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
    pollers: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
}

impl Ingest {
    /// Stop receiving, finish the batch in flight (written and acknowledged), and return.
    pub async fn stop(self) {
        self.cancel.cancel();
        for p in self.pollers {
            let _ = p.await;
        }
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
/// true once subscribed. Points the store acknowledged are also handed to `sinks`.
pub fn start(
    s: IngestSettings,
    store: Store,
    quarantine: Arc<Quarantine>,
    directory: DeviceDirectory,
    readiness: Readiness,
    metrics: IngestMetrics,
    sinks: Sinks,
) -> Ingest {
    let conns = s.connections.max(1);
    let (tx, rx) = mpsc::channel::<(Tag, Msg)>(s.batch_max.max(1) * 4);
    let cancel = CancellationToken::new();
    readiness.require("broker");
    readiness.require("ingest");
    let mut pollers = Vec::with_capacity(conns);
    let mut ackers = Vec::with_capacity(conns);
    for conn in 0..conns {
        let epoch = Arc::new(AtomicU64::new(0));
        let ctx = PollCtx {
            cancel: cancel.clone(),
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            where_: format!("{}:{}", s.host, s.port),
            conn,
            epoch: epoch.clone(),
            tx: tx.clone(),
        };
        // Connection 0 keeps the configured id (a persistent session resumes under it).
        let mut cs = s.clone();
        if conn > 0 {
            cs.client_id = format!("{}-{conn}", s.client_id);
        }
        // Spawned where the version is known: the poller's future is `Send` for each one.
        let (poller, acker) = if s.mqtt5 {
            let (session, eventloop, acker) = V5::connect(&cs);
            (tokio::spawn(poll(ctx, eventloop, session)), acker)
        } else {
            let (session, eventloop, acker) = V4::connect(&cs);
            (tokio::spawn(poll(ctx, eventloop, session)), acker)
        };
        pollers.push(poller);
        ackers.push((acker, epoch));
    }
    drop(tx);
    let writer = spawn_writer(
        &s,
        rx,
        ackers,
        (store, quarantine, directory),
        metrics,
        sinks,
        &cancel,
    );
    Ingest {
        cancel,
        pollers,
        writer,
    }
}

/// The writer of [`start`] and [`start_log`]: batches, rules, limits and the store.
fn spawn_writer(
    s: &IngestSettings,
    rx: mpsc::Receiver<(Tag, Msg)>,
    ackers: Vec<(Acker, Arc<AtomicU64>)>,
    (store, quarantine, directory): (Store, Arc<Quarantine>, DeviceDirectory),
    metrics: IngestMetrics,
    sinks: Sinks,
    cancel: &CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(write_loop(
        rx,
        ackers,
        s.observers.clone(),
        s.admit.clone(),
        Guard::new(s.limits.clone()).with_known(directory.list().into_iter().map(|e| e.device_id)),
        s.batch_max,
        Dedup::new(s.dedup_window),
        store,
        quarantine,
        directory,
        metrics,
        sinks,
        cancel.clone(),
    ))
}

/// Start ingesting from a partitioned log instead of MQTT: `rx` brings the messages of the
/// partitions this replica consumes, each partition in log order; after every durable batch,
/// `committed` learns the newest position of each partition in it. Same writer, rules and
/// limits as [`start`]; `s` is used for batching, limits, observers and admission (its MQTT
/// fields are unused). Readiness part `ingest` is the caller's to set.
#[allow(clippy::too_many_arguments)]
pub fn start_log(
    s: IngestSettings,
    rx: mpsc::Receiver<LogMsg>,
    committed: Committed,
    store: Store,
    quarantine: Arc<Quarantine>,
    directory: DeviceDirectory,
    metrics: IngestMetrics,
    sinks: Sinks,
) -> Ingest {
    let cancel = CancellationToken::new();
    let (tx, wrx) = mpsc::channel::<(Tag, Msg)>(s.batch_max.max(1) * 4);
    // Forward the log's messages into the writer's channel (no session epochs: a log message
    // needs no acknowledgement on the connection it came from).
    let forward = {
        let cancel = cancel.clone();
        let mut rx = rx;
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = rx.recv() => m,
                    _ = cancel.cancelled() => None,
                };
                let Some(m) = m else { break };
                if tx.send(((0, 0), Msg::Log(m))).await.is_err() {
                    break;
                }
            }
        })
    };
    let writer = spawn_writer(
        &s,
        wrx,
        vec![(Acker::Log(committed), Arc::new(AtomicU64::new(0)))],
        (store, quarantine, directory),
        metrics,
        sinks,
        &cancel,
    );
    Ingest {
        cancel,
        pollers: vec![forward],
        writer,
    }
}

fn qos5(q: Qos) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q;
    match q {
        Qos::AtMostOnce => Q::AtMostOnce,
        Qos::AtLeastOnce => Q::AtLeastOnce,
        Qos::ExactlyOnce => Q::ExactlyOnce,
    }
}

fn connect_v4(s: &IngestSettings) -> (AsyncClient, rumqttc::EventLoop) {
    let mut opts = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    opts.set_keep_alive(s.keep_alive)
        .set_clean_session(!s.persistent_session)
        .set_manual_acks(true)
        .set_inflight(1000)
        .set_max_packet_size(s.max_payload_size + 1024, s.max_payload_size + 1024);
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    if let Some(t) = &s.tls {
        opts.set_transport(rumqttc::Transport::Tls(t.clone()));
    }
    AsyncClient::new(opts, request_capacity(s))
}

/// Room in the client's request channel for every acknowledgement that can be outstanding.
///
/// The poller awaits the writer's channel while holding the event loop, and only a polled event
/// loop drains the request channel. If the writer could block on `ack()` while the poller blocks
/// on a full writer channel, neither would move (seen after a session resume flooded ingest with
/// queued messages). Unacknowledged messages are at most the writer channel (4 x batch_max) plus
/// the batch in hand, so this capacity means `ack()` never waits on the poller.
fn request_capacity(s: &IngestSettings) -> usize {
    s.batch_max.max(1) * 5 + 1024
}

fn connect_v5(s: &IngestSettings) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut opts = rumqttc::v5::MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    opts.set_keep_alive(s.keep_alive)
        .set_clean_start(!s.persistent_session)
        .set_manual_acks(true)
        .set_max_packet_size(Some((s.max_payload_size + 1024) as u32));
    if s.persistent_session {
        // MQTT 5 ends a session at disconnect unless it has an expiry; keep it a day.
        opts.set_session_expiry_interval(Some(86_400));
    }
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    if let Some(t) = &s.tls {
        opts.set_transport(rumqttc::Transport::Tls(t.clone()));
    }
    rumqttc::v5::AsyncClient::new(opts, request_capacity(s))
}

/// What both pollers share.
struct PollCtx {
    cancel: CancellationToken,
    readiness: Readiness,
    metrics: IngestMetrics,
    where_: String,
    /// Which connection this poller drives (its acknowledgements go back through it).
    conn: usize,
    /// This connection's session count (see [`Tag`]), shared with the writer.
    epoch: Arc<AtomicU64>,
    tx: mpsc::Sender<(Tag, Msg)>,
}

impl PollCtx {
    /// The tag of a message arriving now.
    fn tag(&self) -> Tag {
        (self.conn, self.epoch.load(Ordering::Acquire))
    }

    /// On CONNACK. A resumed session already holds the subscriptions, and the broker sends
    /// what it queued before it answers the new SUBSCRIBE: ingest is receiving now.
    fn connected(&self, session_present: bool) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.readiness.set("broker", true);
        tracing::info!(broker = %self.where_, session_present, "ingest connected; subscribing");
        if session_present {
            self.subscribed();
        }
    }

    fn subscribed(&self) {
        self.metrics.connected.set(1);
        self.readiness.set("ingest", true);
    }

    /// After a connection error (before the back-off's `wait`): mark not ready and say so.
    fn lost(&self, error: String, wait: Duration) {
        // The session is gone: acknowledgements of its messages must not reach the next one.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.metrics.connected.set(0);
        self.readiness.set("ingest", false);
        self.readiness.set("broker", false);
        match tls_hint(&error) {
            Some(hint) => {
                tracing::error!(broker = %self.where_, error = %error, retry_in = ?wait, "ingest cannot connect over TLS: {hint}")
            }
            None => {
                tracing::warn!(broker = %self.where_, error = %error, retry_in = ?wait, "ingest lost the broker; reconnecting")
            }
        }
    }
}

/// What to do about a TLS failure, from rustls' error text; None for other errors.
fn tls_hint(error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    if e.contains("unknownissuer") || e.contains("badsignature") {
        Some("the broker's certificate is not signed by a trusted CA; set mqtt.tls.ca_file to the CA that issued it")
    } else if e.contains("notvalidforname") || e.contains("not valid for name") {
        Some("the broker's certificate does not name the host connected to; connect by the name in the certificate or set mqtt.tls.server_name")
    } else if e.contains("expired") || e.contains("notvalidyet") {
        Some("the broker's certificate is outside its validity period (check the clocks)")
    } else if e.contains("certificaterequired") || e.contains("certificate required") {
        Some("the broker requires a client certificate; set mqtt.tls.cert_file and mqtt.tls.key_file")
    } else if e.contains("unknownca")
        || e.contains("bad certificate")
        || e.contains("badcertificate")
    {
        Some("the broker refused the client certificate; it must be issued by a CA the broker trusts")
    } else {
        None
    }
}

/// What an incoming MQTT event means to the poller, in either protocol version.
enum Incoming {
    /// CONNACK: a new session (or a resumed one).
    Connected {
        session_present: bool,
    },
    /// SUBACK, with the filters the broker refused (MQTT 5 says which; 3.1.1 is taken as is).
    Subscribed {
        refused: Vec<String>,
    },
    Publish(Msg),
    Other,
}

/// What the poller needs of one MQTT version: its event loop's events as [`Incoming`], and
/// subscribing to the filters (on every new session).
trait Session {
    type EventLoop: Send;
    /// A connection as `s` says, subscribing to its filters: the session, its event loop, and
    /// the acknowledger of its messages.
    fn connect(s: &IngestSettings) -> (Self, Self::EventLoop, Acker)
    where
        Self: Sized;
    async fn next(el: &mut Self::EventLoop) -> Result<Incoming, String>;
    async fn subscribe(&self) -> Result<(), String>;
}

struct V4 {
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
}

impl Session for V4 {
    type EventLoop = rumqttc::EventLoop;
    fn connect(s: &IngestSettings) -> (V4, rumqttc::EventLoop, Acker) {
        let (client, eventloop) = connect_v4(s);
        let filters = s
            .filters()
            .into_iter()
            .map(|t| SubscribeFilter::new(t, qos(s.qos)))
            .collect();
        let acker = Acker::V4(client.clone());
        (V4 { client, filters }, eventloop, acker)
    }
    async fn next(el: &mut rumqttc::EventLoop) -> Result<Incoming, String> {
        Ok(match el.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::ConnAck(ack)) => Incoming::Connected {
                session_present: ack.session_present,
            },
            Event::Incoming(Packet::SubAck(_)) => Incoming::Subscribed {
                refused: Vec::new(),
            },
            Event::Incoming(Packet::Publish(p)) => Incoming::Publish(Msg::V4(p)),
            _ => Incoming::Other,
        })
    }
    async fn subscribe(&self) -> Result<(), String> {
        let filters = self.filters.clone();
        self.client
            .subscribe_many(filters)
            .await
            .map_err(|e| e.to_string())
    }
}

struct V5 {
    client: rumqttc::v5::AsyncClient,
    filters: Vec<Filter5>,
}

impl Session for V5 {
    type EventLoop = rumqttc::v5::EventLoop;
    fn connect(s: &IngestSettings) -> (V5, rumqttc::v5::EventLoop, Acker) {
        let (client, eventloop) = connect_v5(s);
        let filters = s
            .filters()
            .into_iter()
            .map(|t| Filter5::new(t, qos5(s.qos)))
            .collect();
        let acker = Acker::V5(client.clone());
        (V5 { client, filters }, eventloop, acker)
    }
    async fn next(el: &mut rumqttc::v5::EventLoop) -> Result<Incoming, String> {
        use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as R;
        use rumqttc::v5::Event as Event5;
        Ok(match el.poll().await.map_err(|e| e.to_string())? {
            Event5::Incoming(Packet5::ConnAck(ack)) => Incoming::Connected {
                session_present: ack.session_present,
            },
            Event5::Incoming(Packet5::SubAck(ack)) => Incoming::Subscribed {
                refused: ack
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, R::Success(_)))
                    .map(|c| format!("{c:?}"))
                    .collect(),
            },
            Event5::Incoming(Packet5::Publish(p)) => Incoming::Publish(Msg::V5(p)),
            _ => Incoming::Other,
        })
    }
    async fn subscribe(&self) -> Result<(), String> {
        let filters = self.filters.clone();
        self.client
            .subscribe_many(filters)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The poller of one connection, either MQTT version: hands publishes to the writer,
/// subscribes on every new session, reconnects with back-off ([`reconnect::poll`]).
async fn poll<S: Session>(ctx: PollCtx, mut eventloop: S::EventLoop, session: S) {
    let mut backoff = reconnect_backoff();
    loop {
        let next = S::next(&mut eventloop);
        let ev = match reconnect::poll(&ctx.cancel, &mut backoff, next, |e, wait| ctx.lost(e, wait))
            .await
        {
            Polled::Event(ev) => ev,
            Polled::Reconnect => continue,
            Polled::Cancelled => break,
        };
        match ev {
            Incoming::Connected { session_present } => {
                backoff.reset();
                ctx.connected(session_present);
                if let Err(e) = session.subscribe().await {
                    tracing::error!(error = %e, "ingest could not subscribe");
                }
            }
            Incoming::Subscribed { refused } => {
                if refused.is_empty() {
                    ctx.subscribed();
                } else {
                    tracing::error!(broker = %ctx.where_, ?refused, "the broker refused ingest's subscription (shared subscriptions need an MQTT 5 broker that supports them)");
                }
            }
            Incoming::Publish(m) => {
                if ctx.tx.send((ctx.tag(), m)).await.is_err() {
                    break;
                }
            }
            Incoming::Other => {}
        }
    }
    // Dropping `tx` lets the writer finish what is queued.
    drop(ctx);
    // Keep the event loop alive briefly so the writer's final PUBACKs go out.
    let flush = async { while S::next(&mut eventloop).await.is_ok() {} };
    let _ = tokio::time::timeout(Duration::from_millis(300), flush).await;
}

#[allow(clippy::too_many_arguments)]
/// One batch of messages, parsed and ready to be made durable.
struct Parsed {
    batch: Vec<(Tag, Msg)>,
    points: fieldlab_core::Batch,
    bad: Vec<(String, Vec<u8>, String)>,
    /// (device, seq, ts) of this batch: pending in [`DedupState`] until the batch is durable.
    fresh: std::collections::HashSet<(String, u64, i64)>,
    /// (device, type, newest seq, readings) per run of one device's readings.
    seen: Vec<(String, String, Option<u64>, u64)>,
    duplicates: u64,
    limited: u64,
    /// Points of `points` that are verdicts of the watch stage, not device data.
    verdicts: u64,
    started: Instant,
    now: i64,
}

/// Dedup across the two stages: keys of batches parsed but not yet durable are `pending`, so
/// a redelivery arriving meanwhile is still a duplicate; they become remembered once durable,
/// or are forgotten if the store refused their batch (the broker redelivers it).
struct DedupState {
    dedup: Dedup,
    pending: std::collections::HashSet<(String, u64, i64)>,
}

/// Ingest's writer, in two stages so that parsing the next batch overlaps making the previous
/// one durable (the store's WAL append and fsync run on its own thread): stage 1 (this task)
/// batches, parses, rate-limits, runs the observers and drops duplicates; stage 2
/// ([`commit_loop`]) writes to the store, quarantines, updates the directory, feeds the sinks
/// and acknowledges. One parsed batch waits between them at most, so memory stays bounded and
/// a slow store still holds back the reading of MQTT.
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    mut rx: mpsc::Receiver<(Tag, Msg)>,
    ackers: Vec<(Acker, Arc<AtomicU64>)>,
    observers: Observers,
    admit: Option<Admit>,
    mut guard: Guard,
    batch_max: usize,
    dedup: Dedup,
    store: Store,
    quarantine: Arc<Quarantine>,
    directory: DeviceDirectory,
    metrics: IngestMetrics,
    sinks: Sinks,
    cancel: CancellationToken,
) {
    let multi = ackers.len() > 1;
    let dedup = Arc::new(parking_lot::Mutex::new(DedupState {
        dedup,
        pending: Default::default(),
    }));
    let (tx, parsed_rx) = mpsc::channel::<Parsed>(1);
    let rejected = metrics.rejected.clone();
    let commit = tokio::spawn(commit_loop(
        parsed_rx,
        ackers,
        dedup.clone(),
        store,
        quarantine,
        directory,
        metrics,
        sinks,
        cancel,
    ));
    let mut batch: Vec<(Tag, Msg)> = Vec::with_capacity(batch_max);
    // The series of this stream's devices: batches name each series once, with shared names.
    let mut cache = fieldlab_core::SeriesCache::default();
    loop {
        // Cut the next batch only once stage 2 has room for it: what arrives meanwhile joins
        // it, so batches (and fsyncs) are as few as before the split.
        let Ok(slot) = tx.reserve().await else {
            break;
        };
        if !next_batch(&mut rx, &mut batch, batch_max).await {
            break;
        }
        let started = Instant::now();
        let now = fieldlab_core::time::now_ms();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut seen: Vec<(String, String, Option<u64>, u64)> = Vec::new();
        let mut fresh: std::collections::HashSet<(String, u64, i64)> = Default::default();
        let mut duplicates = 0u64;
        let mut limited = 0u64;
        let mut verdicts = 0u64;
        for (_, m) in &batch {
            let topic = m.topic();
            let parsed = parse(&topic, m.payload(), m.received_ms(now)).and_then(|readings| {
                guard.admit(&topic, &readings).map_err(|refusal| {
                    rejected
                        .get_or_create(&RejectLabels {
                            reason: refusal.label,
                        })
                        .inc();
                    refusal.reason
                })?;
                Ok(readings)
            });
            let parsed = match (parsed, &admit) {
                (Ok(readings), Some(admit)) => match admit_all(admit, &readings).await {
                    Ok(()) => Ok(readings),
                    Err(reason) => {
                        limited += 1;
                        Err(reason.to_string())
                    }
                },
                (other, _) => other,
            };
            let at = m.received_ms(now);
            match parsed {
                Ok(readings) => good.extend(readings.into_iter().map(|r| (at, r))),
                Err(reason) => bad.push((topic.into_owned(), m.payload().to_vec(), reason)),
            }
        }
        // Several connections deliver one device's messages round-robin, so their order in
        // the batch is the order the pollers won the channel: restore time order (stable) so
        // the quality rules do not see reordering that the devices never did.
        if multi {
            good.sort_by_key(|(_, r)| r.ts_ms);
        }
        // One allocation for the batch's points (growing by doubling copied ~5% of the
        // gateway-shaped profile in memmove).
        cache.reserve(good.iter().map(|(_, r)| r.fields.len()).sum());
        {
            let mut d = dedup.lock();
            for (at, mut r) in good.drain(..) {
                let mut added = 0;
                for o in &observers.0 {
                    let v = o(&r, at);
                    added += v.len() as u64;
                    r.fields.extend(v);
                }
                if let (Some(seq), true) = (r.seq, d.dedup.enabled()) {
                    let k = (r.device_id.clone(), seq, r.ts_ms);
                    if d.dedup.seen(&k.0, seq, r.ts_ms) || d.pending.contains(&k) {
                        duplicates += 1;
                        continue;
                    }
                    d.pending.insert(k.clone());
                    fresh.insert(k);
                }
                // A gateway's message is hundreds of readings of one device: one entry.
                match seen.last_mut() {
                    Some((id, ty, seq, n)) if *id == r.device_id && *ty == r.device_type => {
                        *seq = (*seq).max(r.seq);
                        *n += 1;
                    }
                    _ => seen.push((r.device_id.clone(), r.device_type.clone(), r.seq, 1)),
                }
                verdicts += added;
                cache.push(r);
            }
        }
        let parsed = Parsed {
            batch: std::mem::replace(&mut batch, Vec::with_capacity(batch_max)),
            points: cache.take(),
            bad,
            fresh,
            seen,
            duplicates,
            limited,
            verdicts,
            started,
            now,
        };
        slot.send(parsed);
    }
    drop(tx);
    let _ = commit.await;
}

/// Stage 2 of [`write_loop`]: make each parsed batch durable, then acknowledge it.
#[allow(clippy::too_many_arguments)]
async fn commit_loop(
    mut rx: mpsc::Receiver<Parsed>,
    ackers: Vec<(Acker, Arc<AtomicU64>)>,
    dedup: Arc<parking_lot::Mutex<DedupState>>,
    store: Store,
    quarantine: Arc<Quarantine>,
    directory: DeviceDirectory,
    metrics: IngestMetrics,
    sinks: Sinks,
    cancel: CancellationToken,
) {
    while let Some(p) = rx.recv().await {
        let Parsed {
            mut batch,
            points,
            bad,
            fresh,
            seen,
            duplicates,
            limited,
            verdicts,
            started,
            now,
        } = p;
        metrics.messages.inc_by(batch.len() as u64);
        // Device data only: the watch's verdict points ride along in the store's batch.
        let n_points = points.len() as u64 - verdicts;
        // The sinks need their own copy (the store takes the batch), of device data only:
        // verdict series are the lab's, kept out of the user's InfluxDB/PostgreSQL schema.
        let for_sinks = (!sinks.is_empty() && n_points > 0).then(|| {
            let mut p = points.points();
            if verdicts > 0 {
                p.retain(|p| !fieldlab_core::reading::verdict::is_verdict(&p.key.field));
            }
            Arc::new(p)
        });
        let stored = store_with_retry(&store, points, &metrics, &cancel).await;
        {
            // Durable: remembered as seen. Refused: forgotten, so the redelivery is stored.
            let mut d = dedup.lock();
            for k in fresh {
                if stored {
                    d.dedup.remember(&k.0, k.1, k.2);
                }
                d.pending.remove(&k);
            }
        }
        if !stored {
            continue;
        }
        metrics.duplicates.inc_by(duplicates);
        if !bad.is_empty() {
            let n = bad.len() as u64;
            // The quarantine logs each entry (reason cut at 200 characters, a few lines a
            // second, then a count of the rest).
            let at = fieldlab_core::time::format_ms(now);
            if !quarantine_with_retry(&quarantine, bad, at, &cancel).await {
                continue;
            }
            metrics.quarantined.inc_by(n);
            metrics.rate_limited.inc_by(limited);
        }
        for (id, ty, seq, n) in seen {
            directory.seen_many(&id, &ty, seq, n, now);
        }
        metrics.points.inc_by(n_points);
        metrics.batches.inc();
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        // Hand the durable points to the sinks; a full sink buffer waits here, which holds
        // back the acknowledgements and, through the bounded channels, the reading of MQTT.
        if let Some(p) = for_sinks {
            sinks.send(p).await;
        }
        // A log's messages: the newest position of each partition, committed once.
        let mut newest: Vec<(u32, u64)> = Vec::new();
        for ((conn, epoch), m) in batch.drain(..) {
            if let Msg::Log(l) = &m {
                match newest.iter_mut().find(|(p, _)| *p == l.partition) {
                    Some((_, seq)) => *seq = (*seq).max(l.seq),
                    None => newest.push((l.partition, l.seq)),
                }
                continue;
            }
            if m.needs_ack() {
                let (acker, now) = &ackers[conn];
                if now.load(Ordering::Acquire) != epoch {
                    tracing::debug!(
                        "not acknowledged: the session it arrived on is gone (a persistent session redelivers it)"
                    );
                    continue;
                }
                if let Err(e) = acker.ack(&m).await {
                    tracing::debug!(error = %e, "could not acknowledge (connection closing?)");
                }
            }
        }
        if !newest.is_empty() {
            if let Some((Acker::Log(committed), _)) = ackers.first() {
                committed(&newest);
            }
        }
    }
}

/// First and longest wait between two attempts at a write the store or the quarantine refused.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Reconnecting to the broker: 100 ms doubling to 5 s, jittered (many instances may have lost
/// the same broker).
fn reconnect_backoff() -> Backoff {
    Backoff::jittered(Duration::from_millis(100), Duration::from_secs(5))
}

/// Write `points` to the store. While the store reports itself failing ([`Store::health`]: a
/// full disk, an I/O error), the batch is held and retried with back-off until a write works:
/// its messages stay unacknowledged meanwhile, the bounded channels hold back the reading of
/// MQTT (and the broker stops sending once its window of unacknowledged messages is full), and
/// ingest goes on by itself once the disk has room. A refusal by a healthy store (a batch it
/// will never take) is tried three times. Gives up when ingest stops: the messages stay
/// unacknowledged, and a persistent session has the broker redeliver them at the next start.
async fn store_with_retry(
    store: &Store,
    points: fieldlab_core::Batch,
    metrics: &IngestMetrics,
    cancel: &CancellationToken,
) -> bool {
    let mut pending = points;
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut attempts = 0u64;
    let mut logged: Option<Instant> = None;
    loop {
        let err = match store.write_batch(pending).await {
            Ok(()) => {
                if attempts > 0 {
                    tracing::info!(attempts, "the store takes writes again; ingest goes on");
                }
                return true;
            }
            Err(e) => e,
        };
        attempts += 1;
        metrics.write_errors.inc();
        pending = err.batch;
        let failing = store.health().is_err();
        // Closed: the writer is gone (possibly with the batch); nothing to retry.
        let gone = matches!(err.error, StoreError::Closed | StoreError::ReadOnly);
        if gone || cancel.is_cancelled() || (!failing && attempts >= 3) {
            tracing::error!(error = %err.error, attempts, "store refused a batch; its messages are left unacknowledged");
            return false;
        }
        let wait = backoff.next_delay();
        if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            tracing::error!(error = %err.error, attempts, retry_in = ?wait, "store refused a batch; holding its messages unacknowledged and retrying until it takes writes again");
            logged = Some(Instant::now());
        }
        wait_or_stop(wait, cancel).await;
    }
}

/// Wait `wait`, or until ingest stops.
async fn wait_or_stop(wait: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
}

/// Append a batch's unparseable messages to the quarantine, retried like a store write (until
/// it works, or ingest stops): until the quarantine has them their messages stay
/// unacknowledged, and giving up on them would leave them in the broker's window for good.
/// The batch's points, already stored, are idempotent.
async fn quarantine_with_retry(
    q: &Arc<Quarantine>,
    bad: Vec<(String, Vec<u8>, String)>,
    at: String,
    cancel: &CancellationToken,
) -> bool {
    let bad = Arc::new(bad);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        let (q, b, at) = (q.clone(), bad.clone(), at.clone());
        let why = match tokio::task::spawn_blocking(move || q.append(&b, &at)).await {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        if cancel.is_cancelled() {
            tracing::error!(error = %why, "quarantine write failed while stopping; batch left unacknowledged");
            return false;
        }
        let wait = backoff.next_delay();
        tracing::error!(error = %why, retry_in = ?wait, "quarantine write failed; batch held unacknowledged and retried");
        wait_or_stop(wait, cancel).await;
    }
}

/// Payload bytes per store batch, besides `batch_max` messages: gateways send thousands of
/// readings per message, and a batch of 4096 such messages would be millions of points (and
/// hundreds of MB of `Point`s) per store write. ~1 MiB keeps batches in the tens of thousands of
/// points: large enough to amortise the fsync, small enough to stay in the allocator's caches.
const BATCH_MAX_BYTES: usize = 1 << 20;

/// Wait for one message, then take what is already queued, up to `max` messages or
/// [`BATCH_MAX_BYTES`] of payload (always at least one message). False when the channel closed.
async fn next_batch(
    rx: &mut mpsc::Receiver<(Tag, Msg)>,
    batch: &mut Vec<(Tag, Msg)>,
    max: usize,
) -> bool {
    let Some(first) = rx.recv().await else {
        return false;
    };
    let mut bytes = first.1.payload().len();
    batch.push(first);
    while batch.len() < max && bytes < BATCH_MAX_BYTES {
        match rx.try_recv() {
            Ok(m) => {
                bytes += m.1.payload().len();
                batch.push(m);
            }
            Err(_) => break,
        }
    }
    true
}

/// Ask `admit` for each distinct device of one message; the first refusal decides (the message
/// is the unit that is stored or quarantined). Note: a batch the store refuses is redelivered
/// and asked again, so its devices are charged twice — failing toward limiting, never loss.
async fn admit_all(admit: &Admit, readings: &[fieldlab_core::Reading]) -> Result<(), &'static str> {
    let mut asked: Vec<&str> = Vec::with_capacity(1);
    for r in readings {
        if !asked.contains(&r.device_id.as_str()) {
            asked.push(&r.device_id);
            (admit.0)(r.device_id.clone()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tls_hint_tests {
    use super::tls_hint;

    /// The texts rumqttc/rustls produce (seen against Mosquitto in crates/fieldlab/tests/it/tls.rs).
    #[test]
    fn tls_failures_get_the_fix_and_others_none() {
        let h = |e: &str| tls_hint(e).unwrap_or("");
        assert!(h("TLS: I/O: invalid peer certificate: UnknownIssuer").contains("mqtt.tls.ca_file"));
        assert!(h("TLS: I/O: invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\")").contains("mqtt.tls.server_name"));
        assert!(h("I/O: received fatal alert: CertificateRequired").contains("mqtt.tls.cert_file"));
        assert_eq!(tls_hint("I/O: Connection refused (os error 111)"), None);
    }
}

#[cfg(test)]
mod store_retry_tests {
    use super::*;
    use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};
    use fieldlab_store::fs::{Fault, FaultyFs, OpKind};
    use fieldlab_store::StoreOptions;

    fn batch(n: i64) -> fieldlab_core::Batch {
        fieldlab_core::Batch::from_points(
            (0..n)
                .map(|i| Point {
                    key: SeriesKey::new("d1", "v"),
                    tags: Tags::default(),
                    ts_ms: 1_767_225_600_000 + i,
                    value: FieldValue::I64(i),
                })
                .collect(),
        )
    }

    /// A full disk: the batch is held and retried until the disk has room, then stored;
    /// ingest never gives up on it by itself. Stopping ingest ends the retries.
    #[tokio::test]
    async fn a_failing_store_is_retried_until_it_takes_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let mut o = StoreOptions::new(dir.path());
        o.fs = fs.handle();
        let (store, _) = Store::open(o).unwrap();
        let metrics = IngestMetrics::default();
        let cancel = CancellationToken::new();
        fs.fail_all(&[OpKind::Write], Fault::NoSpace);
        let task = {
            let (s, m, c) = (store.clone(), metrics.clone(), cancel.clone());
            tokio::spawn(async move { store_with_retry(&s, batch(5), &m, &c).await })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!task.is_finished(), "held while the disk is full");
        assert!(metrics.write_errors.get() >= 3);
        assert!(store.health().is_err());
        fs.heal();
        assert!(task.await.unwrap(), "stored once the disk has room");
        assert_eq!(store.health(), Ok(()));
        let key = SeriesKey::new("d1", "v");
        assert_eq!(store.range(&key, i64::MIN, i64::MAX).unwrap().len(), 5);

        fs.fail_all(&[OpKind::Write], Fault::Io);
        let task = {
            let (s, m, c) = (store.clone(), metrics.clone(), cancel.clone());
            tokio::spawn(async move { store_with_retry(&s, batch(9), &m, &c).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
        assert!(
            !task.await.unwrap(),
            "given up (unacknowledged) when ingest stops"
        );
        fs.heal();
        store.close().await.unwrap();
    }
}
