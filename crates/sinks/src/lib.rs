//! fieldlab-sinks: every stored point, also sent to the databases that scale out.
//!
//! Why it exists: the embedded store is right for one machine; a fleet-sized deployment keeps
//! its telemetry in a database cluster (InfluxDB 3, VictoriaMetrics, TimescaleDB, Citus...).
//! Ingest hands each batch the store has acknowledged to [`Sinks::send`]; each configured sink
//! (`sinks:` in fieldlab.yaml) buffers it, batches it and writes it with retries.
//!
//! ```text
//! ingest ──store ack──► Sinks::send ──► [bounded buffer] ──► worker ──► InfluxDB /write
//!                                   └─► [bounded buffer] ──► worker ──► PostgreSQL INSERT
//! ```
//!
//! The promises, per sink:
//! - **Back-pressure, not loss.** The buffer holds at most `buffer_max` points. When it is
//!   full, `send` waits; ingest then stops acknowledging and reading MQTT, and the broker
//!   holds the messages. A sink that is down slows ingest down; it never drops points.
//! - **Retries without end** on transient errors (network, 5xx, 429, connection lost), with
//!   exponential back-off from 100 ms to `max_backoff`. Both sinks are idempotent (InfluxDB
//!   overwrites the same series and time; PostgreSQL upserts on `(device_id, field, ts)`), so
//!   a retry after a lost answer stores nothing twice.
//! - **Rejected, with the reason**, when the server refuses the data itself (HTTP 4xx, SQL
//!   data errors, NaN for line protocol): the points go to `<data_dir>/sinks/<name>/
//!   rejected.jsonl` with the reason, and `fieldlab_sink_rejected_points` counts them.
//! - **Spooled at shutdown.** What is still undelivered after `drain_timeout` is written to
//!   `<data_dir>/sinks/<name>/undelivered-<ms>.jsonl` and sent first at the next start.
//!   (A SIGKILL loses the sink's in-memory buffer, at most `buffer_max` points; they remain
//!   in the embedded store.)
//!
//! Architecture invariant: sinks only read points; nothing here knows about MQTT or the store.

mod config;
pub mod influx;
pub mod postgres;
mod spool;

pub use config::{validate_sinks, InfluxPrecision, SinkConfig, SinkKind};
use fieldlab_core::backoff::Backoff;
use fieldlab_core::Point;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a write did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: the server or the network.
    #[error("{0}")]
    Transient(String),
    /// The server refuses this data; retrying cannot help.
    #[error("{0}")]
    Permanent(String),
    #[error("sink configuration: {0}")]
    Config(String),
}

/// A destination of points. `write` returns points it skipped as unwritable, with the reason
/// (they are rejected; the rest was written).
pub trait Target {
    fn write(
        &mut self,
        points: &[Point],
    ) -> impl std::future::Future<Output = Result<Vec<(Point, String)>, SinkError>> + Send;
}

enum AnyTarget {
    Influx(influx::Influx),
    Postgres(postgres::Postgres),
}

impl AnyTarget {
    async fn write(&mut self, points: &[Point]) -> Result<Vec<(Point, String)>, SinkError> {
        match self {
            AnyTarget::Influx(t) => t.write(points).await,
            AnyTarget::Postgres(t) => t.write(points).await,
        }
    }
}

/// Per-sink metrics, labelled `sink="<name>"`, registered under `fieldlab_sink_*`.
#[derive(Clone)]
pub struct SinkMetrics {
    pub points: Family<Vec<(String, String)>, Counter>,
    pub batches: Family<Vec<(String, String)>, Counter>,
    pub retries: Family<Vec<(String, String)>, Counter>,
    pub errors: Family<Vec<(String, String)>, Counter>,
    pub rejected: Family<Vec<(String, String)>, Counter>,
    pub spooled: Family<Vec<(String, String)>, Counter>,
    pub buffer: Family<Vec<(String, String)>, Gauge>,
    pub write_seconds: Family<Vec<(String, String)>, Histogram>,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics {
            points: Family::default(),
            batches: Family::default(),
            retries: Family::default(),
            errors: Family::default(),
            rejected: Family::default(),
            spooled: Family::default(),
            buffer: Family::default(),
            write_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        }
    }
}

impl SinkMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fieldlab_sink_points",
            "Points written to the sink",
            self.points.clone(),
        );
        r.register(
            "fieldlab_sink_batches",
            "Batches written to the sink",
            self.batches.clone(),
        );
        r.register(
            "fieldlab_sink_retries",
            "Writes retried after a transient error",
            self.retries.clone(),
        );
        r.register(
            "fieldlab_sink_errors",
            "Failed write attempts (transient and permanent)",
            self.errors.clone(),
        );
        r.register(
            "fieldlab_sink_rejected_points",
            "Points the sink refused for good, kept in sinks/<name>/rejected.jsonl",
            self.rejected.clone(),
        );
        r.register(
            "fieldlab_sink_spooled_points",
            "Points spooled to disk at shutdown, to be sent at the next start",
            self.spooled.clone(),
        );
        r.register(
            "fieldlab_sink_buffer_points",
            "Points waiting in the sink's buffer",
            self.buffer.clone(),
        );
        r.register(
            "fieldlab_sink_write_duration_seconds",
            "Latency of successful writes",
            self.write_seconds.clone(),
        );
    }
}

/// One queued batch and the buffer permits it holds.
struct Item {
    points: Arc<Vec<Point>>,
    permits: u32,
}

struct Handle {
    name: String,
    tx: Mutex<Option<mpsc::UnboundedSender<Item>>>,
    room: Arc<Semaphore>,
    buffer_max: u32,
    closing: CancellationToken,
    drain: Duration,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// The running sinks; cheap to clone. The default has no sinks and costs nothing.
#[derive(Clone, Default)]
pub struct Sinks {
    handles: Arc<Vec<Handle>>,
}

/// A configured duration as a timer period: at least 1 ms (a zero period would spin).
pub(crate) fn duration(d: fieldlab_core::config::HumanDuration) -> Duration {
    d.get().max(Duration::from_millis(1))
}

impl Sinks {
    /// Start one worker per configured sink. Must run inside a tokio runtime. Spooled points
    /// of an earlier run under `data_dir` are sent first.
    pub fn start(
        configs: &BTreeMap<String, SinkConfig>,
        data_dir: &Path,
        metrics: &SinkMetrics,
    ) -> Result<Sinks, SinkError> {
        let mut handles = Vec::new();
        for (name, c) in configs {
            let target = match c.kind {
                SinkKind::Influxdb => AnyTarget::Influx(influx::Influx::new(c)?),
                SinkKind::Postgres => AnyTarget::Postgres(postgres::Postgres::new(c)?),
            };
            let dir = data_dir.join("sinks").join(name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| SinkError::Config(format!("cannot create {}: {e}", dir.display())))?;
            let buffer_max = c
                .buffer_max
                .min(Semaphore::MAX_PERMITS)
                .min(u32::MAX as usize) as u32;
            let room = Arc::new(Semaphore::new(buffer_max as usize));
            let (tx, rx) = mpsc::unbounded_channel();
            let closing = CancellationToken::new();
            let drain = duration(c.drain_timeout);
            let w = Worker {
                name: name.clone(),
                label: vec![("sink".to_string(), name.clone())],
                dir,
                target,
                batch_max: c.batch_max,
                flush: duration(c.flush_interval),
                max_backoff: duration(c.max_backoff),
                room: room.clone(),
                buffer_max,
                closing: closing.clone(),
                drain,
                deadline: None,
                metrics: metrics.clone(),
            };
            // Make every sink visible in /metrics from the start.
            let _ = metrics.points.get_or_create(&w.label);
            let _ = metrics.buffer.get_or_create(&w.label);
            let worker = tokio::spawn(w.run(rx));
            tracing::info!(sink = %name, kind = c.kind.as_str(), url = %redact(&c.url), "sink started");
            handles.push(Handle {
                name: name.clone(),
                tx: Mutex::new(Some(tx)),
                room,
                buffer_max,
                closing,
                drain,
                worker: Mutex::new(Some(worker)),
            });
        }
        Ok(Sinks {
            handles: Arc::new(handles),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Names of the running sinks.
    pub fn names(&self) -> Vec<String> {
        self.handles.iter().map(|h| h.name.clone()).collect()
    }

    /// Queue points for every sink. Waits while a sink's buffer is full (back-pressure).
    /// Points sent after [`Sinks::close`] began are spooled by nobody: callers stop first.
    pub async fn send(&self, points: Arc<Vec<Point>>) {
        if points.is_empty() {
            return;
        }
        for h in self.handles.iter() {
            let want = (points.len() as u32).min(h.buffer_max);
            let Ok(permit) = h.room.clone().acquire_many_owned(want).await else {
                continue; // semaphore closed: cannot happen, we never close it
            };
            permit.forget(); // returned by the worker once the points are delivered
            let sent = h.tx.lock().expect("sink lock").as_ref().map(|tx| {
                tx.send(Item {
                    points: points.clone(),
                    permits: want,
                })
            });
            if !matches!(sent, Some(Ok(()))) {
                tracing::error!(sink = %h.name, points = points.len(), "sink is closed; points not queued");
                h.room.add_permits(want as usize);
            }
        }
    }

    /// Stop accepting points, deliver what is buffered (up to each sink's `drain_timeout`),
    /// spool the rest to disk, and wait for the workers.
    pub async fn close(&self) {
        for h in self.handles.iter() {
            h.tx.lock().expect("sink lock").take();
            h.closing.cancel();
        }
        for h in self.handles.iter() {
            let w = h.worker.lock().expect("sink lock").take();
            if let Some(w) = w {
                // The worker honours its drain deadline; the margin covers a slow spool write.
                if tokio::time::timeout(h.drain + Duration::from_secs(30), w)
                    .await
                    .is_err()
                {
                    tracing::error!(sink = %h.name, "sink worker did not stop");
                }
            }
        }
    }
}

/// URLs in logs: [`fieldlab_core::redact::url`].
pub(crate) use fieldlab_core::redact::url as redact;

struct Worker {
    name: String,
    label: Vec<(String, String)>,
    dir: PathBuf,
    target: AnyTarget,
    batch_max: usize,
    flush: Duration,
    max_backoff: Duration,
    room: Arc<Semaphore>,
    buffer_max: u32,
    closing: CancellationToken,
    drain: Duration,
    /// Set once closing began: after it, undelivered points are spooled.
    deadline: Option<Instant>,
    metrics: SinkMetrics,
}

/// What became of a batch.
enum Outcome {
    Delivered,
    Spooled,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
        // First what an earlier run could not deliver.
        for (file, points) in spool::pending(&self.dir) {
            tracing::info!(sink = %self.name, file = %file.display(), points = points.len(), "sending spooled points");
            let mut all_sent = true;
            for chunk in points.chunks(self.batch_max) {
                if let Outcome::Spooled = self.deliver(chunk).await {
                    all_sent = false;
                }
            }
            // Spooled again means a new file holds them; the old one can go either way.
            let _ = std::fs::remove_file(&file);
            if !all_sent {
                break;
            }
        }
        let mut items: Vec<Item> = Vec::new();
        loop {
            // Wait for the first item, then gather until batch_max points or flush_interval.
            let first = tokio::select! {
                it = rx.recv() => it,
                _ = self.closing.cancelled(), if self.deadline.is_none() => {
                    self.deadline = Some(Instant::now() + self.drain);
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut n = first.points.len();
            items.push(first);
            let until = tokio::time::Instant::now() + self.flush;
            while n < self.batch_max {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(it)) => {
                        n += it.points.len();
                        items.push(it);
                    }
                    _ => break,
                }
            }
            self.set_depth();
            let batch: Vec<Point> = items
                .iter()
                .flat_map(|it| it.points.iter().cloned())
                .collect();
            for chunk in batch.chunks(self.batch_max) {
                self.deliver(chunk).await;
            }
            let permits: u32 = items.drain(..).map(|it| it.permits).sum();
            self.room.add_permits(permits as usize);
            self.set_depth();
        }
        tracing::info!(sink = %self.name, "sink stopped");
    }

    fn set_depth(&self) {
        // Permits in use = points held in the buffer (a batch larger than the whole buffer
        // counts as buffer_max).
        let used = self.buffer_max as i64 - self.room.available_permits() as i64;
        self.metrics.buffer.get_or_create(&self.label).set(used);
    }

    /// Write one chunk: retry transient errors with back-off until delivered, or until the
    /// drain deadline passes during shutdown (then spool). Permanent errors reject the chunk.
    async fn deliver(&mut self, chunk: &[Point]) -> Outcome {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            if self.closing.is_cancelled() && self.deadline.is_none() {
                self.deadline = Some(Instant::now() + self.drain);
            }
            let t0 = Instant::now();
            match self.target.write(chunk).await {
                Ok(skipped) => {
                    let written = chunk.len() - skipped.len();
                    self.metrics
                        .points
                        .get_or_create(&self.label)
                        .inc_by(written as u64);
                    self.metrics.batches.get_or_create(&self.label).inc();
                    self.metrics
                        .write_seconds
                        .get_or_create(&self.label)
                        .observe(t0.elapsed().as_secs_f64());
                    if !skipped.is_empty() {
                        self.reject(skipped);
                    }
                    return Outcome::Delivered;
                }
                Err(SinkError::Transient(why)) => {
                    self.metrics.errors.get_or_create(&self.label).inc();
                    if let Some(d) = self.deadline {
                        if Instant::now() >= d {
                            return self.spool(chunk, &why);
                        }
                    }
                    self.metrics.retries.get_or_create(&self.label).inc();
                    let mut wait = backoff.next_delay();
                    tracing::warn!(sink = %self.name, error = %why, retry_in = ?wait, points = chunk.len(), "sink write failed; retrying");
                    if let Some(d) = self.deadline {
                        wait = wait.min(d.saturating_duration_since(Instant::now()));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.closing.cancelled(), if self.deadline.is_none() => {}
                    }
                }
                Err(e) => {
                    self.metrics.errors.get_or_create(&self.label).inc();
                    let why = e.to_string();
                    tracing::error!(sink = %self.name, error = %why, points = chunk.len(), "sink refused a batch; kept in rejected.jsonl");
                    self.reject(chunk.iter().map(|p| (p.clone(), why.clone())).collect());
                    return Outcome::Delivered;
                }
            }
        }
    }

    fn reject(&self, points: Vec<(Point, String)>) {
        self.metrics
            .rejected
            .get_or_create(&self.label)
            .inc_by(points.len() as u64);
        if let Err(e) = spool::append_rejected(&self.dir, &points) {
            tracing::error!(sink = %self.name, error = %e, "cannot write rejected.jsonl");
        }
    }

    fn spool(&self, chunk: &[Point], why: &str) -> Outcome {
        self.metrics
            .spooled
            .get_or_create(&self.label)
            .inc_by(chunk.len() as u64);
        match spool::write_undelivered(&self.dir, chunk, why) {
            Ok(path) => {
                tracing::warn!(sink = %self.name, points = chunk.len(), file = %path.display(), reason = %why, "sink not reachable at shutdown; points spooled for the next start")
            }
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, points = chunk.len(), "cannot spool undelivered points")
            }
        }
        Outcome::Spooled
    }
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn secrets_in_urls_are_hidden() {
        let r = super::redact("http://ann:hunter2@h:8086/write?db=x&u=ann&p=hunter2&token=abc");
        assert!(!r.contains("hunter2") && !r.contains("abc"), "{r}");
        assert!(r.contains("db=x") && r.contains("u=ann"), "{r}");
        assert_eq!(
            super::redact("http://h:8086/write?db=x"),
            "http://h:8086/write?db=x"
        );
        assert!(!super::redact("not a url with secret").contains("secret"));
    }
}
