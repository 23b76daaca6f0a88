//! fieldlab-watch: the transform stage that watches every parsed reading.
//!
//! Why it exists: quality rules and anomaly detectors are pure (`fieldlab-quality`,
//! `fieldlab-detect`); something has to keep one detector per series, run the rules in order,
//! remember what was found and tell the world. [`Watch::observe`] does that for one reading:
//! quality events first, then every numeric field through its series' detector. A value that
//! breaks a field's rule (range, rate of change, physics, stuck) is still scored, and an
//! anomaly on it names the rules it broke ([`AnomalyEvent::quality`]): both verdicts are shown.
//! Only readings that are wrong as a whole (duplicate, out of order, clock skew) are not fed to
//! the detectors, which need each series once and in time order. Events are appended to JSON-lines files under the data
//! directory (`events/quality.jsonl`, `events/anomalies.jsonl`), kept in a bounded in-memory
//! ring for the API, and sent on a broadcast channel that topology forwards to MQTT
//! (`fieldlab/quality/<device_id>`, `fieldlab/anomalies/<device_id>`) and the webhook.
//!
//! Counters for Prometheus ([`WatchMetrics`]): points scored and anomalies raised per detector
//! and device type, quality violations per rule; topology registers them for `/metrics`.
//!
//! Architecture invariant: no network I/O here (publishing is the subscriber's job); the
//! only files written are the two event logs.

mod config;
pub mod predict;

pub use config::{DetectConfig, PredictLimits};

use fieldlab_core::reading::Reading;
use fieldlab_core::{FieldValue, SeriesKey};
use fieldlab_detect::autoencoder::Autoencoder;
use fieldlab_detect::Detector;
use fieldlab_quality::{Checker, Rules};
pub use fieldlab_quality::{QualityEvent, QualityScore};
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An anomaly found by a detector.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AnomalyEvent {
    pub device_id: String,
    pub field: String,
    pub ts_ms: i64,
    pub value: f64,
    pub score: f64,
    pub detector: String,
    /// Quality rules the same value broke (e.g. `range`), if any: the other verdict on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<String>,
}

/// Anything the watch reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Quality(QualityEvent),
    Anomaly(AnomalyEvent),
}

impl Event {
    pub fn device_id(&self) -> &str {
        match self {
            Event::Quality(q) => &q.device_id,
            Event::Anomaly(a) => &a.device_id,
        }
    }

    /// The time of the reading the event is about.
    pub fn ts_ms(&self) -> i64 {
        match self {
            Event::Quality(q) => q.ts_ms,
            Event::Anomaly(a) => a.ts_ms,
        }
    }

    /// The MQTT topic the event belongs on.
    pub fn topic(&self) -> String {
        match self {
            Event::Quality(q) => format!("fieldlab/quality/{}", q.device_id),
            Event::Anomaly(a) => format!("fieldlab/anomalies/{}", a.device_id),
        }
    }
}

/// Settings of the watch (from the `detect:` section of fieldlab.yaml).
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub enabled: bool,
    /// Detector spec for series without an entry in `series`.
    pub default_detector: String,
    /// `<device_type or device_id>.<field>`, `<device_type or device_id>.*` or just `<field>`
    /// -> detector spec.
    pub series: BTreeMap<String, String>,
    /// Score at or above which an anomaly event is raised.
    pub threshold: f64,
    pub window_size: usize,
    pub rules: Rules,
    /// Events kept in memory per kind for the API.
    pub keep: usize,
    /// The only directory models are loaded from over the API. None: `<data_dir>/models`
    /// (filled in by [`Watch::open`]).
    pub models_dir: Option<PathBuf>,
    /// Memory for per-series detector and per-device quality state (`ingest.state_memory_mb`):
    /// three quarters for detectors, one for quality, each kept least-recently-used.
    pub state_budget_bytes: usize,
    /// Caps of `/predict` (`detect.predict`).
    pub predict: predict::Limits,
    /// Size of each event log before it is rotated (`detect.events_max_size`).
    pub events_max_bytes: u64,
}

/// Bytes one series' detector state is assumed to take when sizing the detector LRU from
/// [`WatchConfig::state_budget_bytes`]: the default ensemble once warmed up (five likelihood
/// windows of 2000 values, the isolation forest's 512-shingle window and its 50 trees, the
/// autoencoder's weights, the sequence model, the trend check) holds at most this much.
/// Counted by `tests/state_size.rs`: 351 KB for a room temperature over two days (it was 506
/// KB, twice the 256 KB assumed here before, until the forest's nodes were packed; the
/// autoencoder added 35 KB).
pub const SERIES_STATE_BYTES: usize = 384 << 10;

/// Distinct `device_type` label values of the detector counters; further types are counted
/// under `other`, so payloads cannot grow the metric families without bound.
pub const MAX_LABEL_DEVICE_TYPES: usize = 64;

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            enabled: true,
            default_detector: "ensemble".into(),
            series: BTreeMap::new(),
            threshold: 0.9,
            window_size: 30,
            rules: Rules::default(),
            keep: 10_000,
            models_dir: None,
            state_budget_bytes: 256 << 20,
            predict: predict::Limits::default(),
            events_max_bytes: 64 << 20,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectLabels {
    pub detector: String,
    pub device_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

/// The watch's counters, registered as `fieldlab_detect_points_scored_total`,
/// `fieldlab_detect_anomalies_total` (labels `detector`, `device_type`: bounded by the
/// detectors and device types in use) and `fieldlab_quality_violations_total` (`rule`).
#[derive(Clone, Default)]
pub struct WatchMetrics {
    pub points_scored: Family<DetectLabels, Counter>,
    pub anomalies: Family<DetectLabels, Counter>,
    pub violations: Family<RuleLabels, Counter>,
}

impl WatchMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fieldlab_detect_points_scored",
            "Numeric field values scored by an anomaly detector",
            self.points_scored.clone(),
        );
        r.register(
            "fieldlab_detect_anomalies",
            "Anomaly events raised (score at or above detect.threshold)",
            self.anomalies.clone(),
        );
        r.register(
            "fieldlab_quality_violations",
            "Data-quality rule violations (quality events) by rule",
            self.violations.clone(),
        );
        for rule in fieldlab_quality::RULES {
            let _ = self.violations.get_or_create(&RuleLabels {
                rule: (*rule).into(),
            });
        }
    }

    fn violation(&self, rule: &str) {
        self.violations
            .get_or_create(&RuleLabels { rule: rule.into() })
            .inc();
    }
}

/// One series' detector with its two counters (looked up once, not per point).
struct SeriesDetector {
    detector: Box<dyn Detector>,
    scored: Counter,
    anomalies: Counter,
    /// Time of the last point at or above the threshold: the open episode, if recent.
    last_alarm_ms: Option<i64>,
}

/// One anomaly event per episode: a point at or above the threshold within this long of the
/// series' previous one continues that episode (its score is in the reading's verdict, not a
/// new event). A fault that lasts a minute is one event, not sixty.
pub const EPISODE_GAP_MS: i64 = 300_000;

/// A problem opening the event logs.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WatchError {
    path: String,
    source: std::io::Error,
}

/// One event log (JSON lines). Appends go through the store's [`AppendLog`]: a write that
/// fails (a full disk) is cut back, so the next event is not glued to a partial line and lost
/// with it. Not fsynced: events are derived from stored data, not promised durable. Bounded:
/// beyond `max` bytes the file is renamed to `<name>.1` (replacing the older one) and a new
/// one begins, so a device that provokes an event per reading fills at most `2 x max`.
struct Log {
    log: fieldlab_store::fs::AppendLog,
    max: u64,
}

impl Log {
    fn open(path: PathBuf, max: u64) -> Result<Log, WatchError> {
        let log = fieldlab_store::fs::AppendLog::open(fieldlab_store::fs::real(), &path).map_err(
            |source| WatchError {
                path: path.display().to_string(),
                source,
            },
        )?;
        Ok(Log { log, max })
    }

    /// Rename the full log to `.1` and start a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        let path = self.log.path().to_path_buf();
        let mut old = path.clone().into_os_string();
        old.push(".1");
        let fs = fieldlab_store::fs::real();
        fs.rename(&path, std::path::Path::new(&old))?;
        self.log = fieldlab_store::fs::AppendLog::open(fs, &path)?;
        Ok(())
    }

    fn append<T: serde::Serialize>(&mut self, v: &T) {
        let mut line = serde_json::to_vec(v).expect("events serialise");
        line.push(b'\n');
        if self.log.len() + line.len() as u64 > self.max && !self.log.is_empty() {
            if let Err(e) = self.rotate() {
                eprintln!("fieldlab: cannot rotate {}: {e}", self.log.path().display());
            }
        }
        if let Err(e) = self.log.append_unsynced(&line) {
            // An event log that cannot be written must not stop ingest; it is logged loudly.
            eprintln!(
                "fieldlab: cannot append to {}: {e}",
                self.log.path().display()
            );
        }
    }
}

struct Inner {
    cfg: WatchConfig,
    checker: Mutex<Checker>,
    /// Least recently used first out, at most [`WatchConfig::state_budget_bytes`] worth.
    detectors: Mutex<lru::LruCache<SeriesKey, SeriesDetector>>,
    /// `device_type` label values in use (at most [`MAX_LABEL_DEVICE_TYPES`]).
    label_types: Mutex<HashSet<String>>,
    metrics: WatchMetrics,
    quality: Mutex<(VecDeque<QualityEvent>, Log)>,
    anomalies: Mutex<(VecDeque<AnomalyEvent>, Log)>,
    tx: tokio::sync::broadcast::Sender<Event>,
    model: RwLock<Option<Arc<Autoencoder>>>,
    jobs: predict::Jobs,
}

/// Cloneable handle to the watch stage.
#[derive(Clone)]
pub struct Watch {
    inner: Arc<Inner>,
}

/// Detector series and quality devices (of `device_bytes` each) kept within `budget` bytes
/// (at least 16 of each).
fn state_capacity(budget: usize, device_bytes: usize) -> (std::num::NonZeroUsize, usize) {
    let series = (budget / 4 * 3 / SERIES_STATE_BYTES).max(16);
    let devices = (budget / 4 / device_bytes.max(1)).max(16);
    (
        std::num::NonZeroUsize::new(series).expect("at least 16"),
        devices,
    )
}

fn tail_events<T: serde::de::DeserializeOwned>(path: &Path, keep: usize) -> VecDeque<T> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut q: VecDeque<T> = VecDeque::new();
    for line in text.lines() {
        if let Ok(e) = serde_json::from_str(line) {
            if q.len() == keep {
                q.pop_front();
            }
            q.push_back(e);
        }
    }
    q
}

impl Watch {
    /// Open (or create) the event logs under `data_dir/events`, reloading recent events.
    pub fn open(data_dir: &Path, mut cfg: WatchConfig) -> Result<Watch, WatchError> {
        cfg.models_dir
            .get_or_insert_with(|| data_dir.join("models"));
        let dir = data_dir.join("events");
        std::fs::create_dir_all(&dir).map_err(|source| WatchError {
            path: dir.display().to_string(),
            source,
        })?;
        let qp = dir.join("quality.jsonl");
        let ap = dir.join("anomalies.jsonl");
        let quality = (
            tail_events(&qp, cfg.keep),
            Log::open(qp, cfg.events_max_bytes)?,
        );
        let anomalies = (
            tail_events(&ap, cfg.keep),
            Log::open(ap, cfg.events_max_bytes)?,
        );
        let (tx, _) = tokio::sync::broadcast::channel(4096);
        let (series, devices) =
            state_capacity(cfg.state_budget_bytes, cfg.rules.device_state_bytes());
        Ok(Watch {
            inner: Arc::new(Inner {
                checker: Mutex::new(Checker::with_capacity(cfg.rules.clone(), devices)),
                cfg,
                detectors: Mutex::new(lru::LruCache::new(series)),
                label_types: Mutex::new(HashSet::new()),
                metrics: WatchMetrics::default(),
                quality: Mutex::new(quality),
                anomalies: Mutex::new(anomalies),
                tx,
                model: RwLock::new(None),
                jobs: predict::Jobs::default(),
            }),
        })
    }

    pub fn config(&self) -> &WatchConfig {
        &self.inner.cfg
    }

    /// The counters (register them with [`WatchMetrics::register`]).
    pub fn metrics(&self) -> &WatchMetrics {
        &self.inner.metrics
    }

    /// Events as they happen (quality and anomalies).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.tx.subscribe()
    }

    /// The detector spec for one series: `<device id>.<field>`, `<device type>.<field>`,
    /// `<device id>.*`, `<device type>.*`, `<field>`, then the default.
    pub fn spec_for(&self, device_id: &str, device_type: &str, field: &str) -> String {
        let s = &self.inner.cfg.series;
        s.get(&format!("{device_id}.{field}"))
            .or_else(|| s.get(&format!("{device_type}.{field}")))
            .or_else(|| s.get(&format!("{device_id}.*")))
            .or_else(|| s.get(&format!("{device_type}.*")))
            .or_else(|| s.get(field))
            .cloned()
            .unwrap_or_else(|| self.inner.cfg.default_detector.clone())
    }

    /// The `device_type` label value for `t`: itself while fewer than
    /// [`MAX_LABEL_DEVICE_TYPES`] values are in use, else `other`.
    fn label_type(&self, t: &str) -> String {
        let mut g = self.inner.label_types.lock();
        if g.contains(t) {
            return t.to_string();
        }
        if g.len() < MAX_LABEL_DEVICE_TYPES {
            g.insert(t.to_string());
            return t.to_string();
        }
        "other".to_string()
    }

    /// Series whose detector state is kept now.
    pub fn series_in_memory(&self) -> usize {
        self.inner.detectors.lock().len()
    }

    fn emit(&self, e: Event) {
        let _ = self.inner.tx.send(e);
    }

    /// Run the quality rules and the detectors on one reading received at `now_ms`.
    pub fn observe(&self, r: &Reading, now_ms: i64) -> Vec<Event> {
        self.observe_with_verdicts(r, now_ms).0
    }

    /// [`Watch::observe`], and the reading's verdict fields to store with it
    /// ([`fieldlab_core::reading::verdict`]): `F#anomaly` for each scored field, `F#quality`
    /// for each field that broke a rule (a whole-reading rule counts for every field).
    pub fn observe_with_verdicts(
        &self,
        r: &Reading,
        now_ms: i64,
    ) -> (Vec<Event>, Vec<(String, FieldValue)>) {
        use fieldlab_core::reading::verdict;
        if !self.inner.cfg.enabled {
            return (Vec::new(), Vec::new());
        }
        let q = self.inner.checker.lock().check(r, now_ms);
        let mut out: Vec<Event> = Vec::new();
        // (field, rule) of each violation; field `None`: the whole reading.
        let broken: Vec<(Option<String>, String)> = q
            .iter()
            .map(|e| (e.field.clone(), e.rule.clone()))
            .collect();
        let whole_reading_bad = q
            .iter()
            .any(|e| matches!(e.rule.as_str(), "duplicate" | "out_of_order" | "clock_skew"));
        let mut verdicts: Vec<(String, FieldValue)> = Vec::new();
        if !broken.is_empty() {
            for (field, _) in &r.fields {
                let mut rules: Vec<&str> = broken
                    .iter()
                    .filter(|(f, _)| f.as_deref().is_none_or(|f| f == field))
                    .map(|(_, rule)| rule.as_str())
                    .collect();
                rules.sort_unstable();
                rules.dedup();
                if !rules.is_empty() {
                    verdicts.push((
                        verdict::series_field(field, verdict::QUALITY),
                        FieldValue::Str(rules.join(",")),
                    ));
                }
            }
        }
        if !q.is_empty() {
            let mut g = self.inner.quality.lock();
            for e in q {
                self.inner.metrics.violation(&e.rule);
                // A later reading of an episode already reported: in the verdict, not the feed.
                if e.repeat {
                    continue;
                }
                g.1.append(&e);
                if g.0.len() == self.inner.cfg.keep {
                    g.0.pop_front();
                }
                g.0.push_back(e.clone());
                out.push(Event::Quality(e));
            }
        }
        if !whole_reading_bad {
            let mut dets = self.inner.detectors.lock();
            for (field, v) in &r.fields {
                // On/off states (a compressor, a door) are not scored: every switch would be
                // "far from the mean". Quality rules still see them.
                if matches!(v, fieldlab_core::reading::FieldValue::Bool(_)) {
                    continue;
                }
                let Some(x) = v.as_f64() else { continue };
                if !x.is_finite() {
                    continue;
                }
                let key = SeriesKey::new(r.device_id.clone(), field.clone());
                let d = dets.get_or_insert_mut(key, || {
                    let spec = self.spec_for(&r.device_id, &r.device_type, field);
                    let detector = fieldlab_detect::build_live(&spec).unwrap_or_else(|_| {
                        fieldlab_detect::build_live("robust_z").expect("builds")
                    });
                    let labels = DetectLabels {
                        detector: detector.name().to_string(),
                        device_type: self.label_type(&r.device_type),
                    };
                    SeriesDetector {
                        scored: self
                            .inner
                            .metrics
                            .points_scored
                            .get_or_create(&labels)
                            .clone(),
                        anomalies: self.inner.metrics.anomalies.get_or_create(&labels).clone(),
                        detector,
                        last_alarm_ms: None,
                    }
                });
                let s = d.detector.score(r.ts_ms, x);
                d.scored.inc();
                verdicts.push((
                    verdict::series_field(field, verdict::ANOMALY),
                    FieldValue::F64(verdict::stored_score(s)),
                ));
                let continues = d
                    .last_alarm_ms
                    .is_some_and(|t| (0..=EPISODE_GAP_MS).contains(&(r.ts_ms - t)));
                if s >= self.inner.cfg.threshold {
                    d.last_alarm_ms = Some(r.ts_ms.max(d.last_alarm_ms.unwrap_or(i64::MIN)));
                }
                if s >= self.inner.cfg.threshold && !continues {
                    d.anomalies.inc();
                    let e = AnomalyEvent {
                        device_id: r.device_id.clone(),
                        field: field.clone(),
                        ts_ms: r.ts_ms,
                        value: x,
                        score: s,
                        detector: d.detector.last_verdict_by().to_string(),
                        quality: broken
                            .iter()
                            .filter(|(f, _)| f.as_deref().is_none_or(|f| f == field))
                            .map(|(_, rule)| rule.clone())
                            .collect(),
                    };
                    let mut g = self.inner.anomalies.lock();
                    g.1.append(&e);
                    if g.0.len() == self.inner.cfg.keep {
                        g.0.pop_front();
                    }
                    g.0.push_back(e.clone());
                    out.push(Event::Anomaly(e));
                }
            }
        }
        for e in &out {
            self.emit(e.clone());
        }
        (out, verdicts)
    }

    /// Report devices that went silent (call periodically).
    pub fn check_stale(&self, now_ms: i64) -> Vec<Event> {
        let evs = self.inner.checker.lock().stale(now_ms);
        let mut out = Vec::new();
        let mut g = self.inner.quality.lock();
        for e in evs {
            self.inner.metrics.violation(&e.rule);
            g.1.append(&e);
            g.0.push_back(e.clone());
            if g.0.len() > self.inner.cfg.keep {
                g.0.pop_front();
            }
            out.push(Event::Quality(e));
        }
        drop(g);
        for e in &out {
            self.emit(e.clone());
        }
        out
    }

    /// Recent anomaly events, newest first, optionally for one device, at most `limit`.
    pub fn anomalies(
        &self,
        device: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Vec<AnomalyEvent> {
        let g = self.inner.anomalies.lock();
        recent(&g.0, |e| (&e.device_id, e.ts_ms), device, since_ms, limit)
    }

    /// Recent quality events, newest first.
    pub fn quality_events(
        &self,
        device: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Vec<QualityEvent> {
        let g = self.inner.quality.lock();
        recent(&g.0, |e| (&e.device_id, e.ts_ms), device, since_ms, limit)
    }

    /// Quality score per device over `[from, to)`.
    pub fn quality_scores(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> Vec<QualityScore> {
        self.inner.checker.lock().score(from_ms, to_ms, device)
    }

    /// The autoencoder used by `/predict` (and by `autoencoder` detectors started afterwards).
    pub fn set_model(&self, m: Autoencoder) {
        *self.inner.model.write() = Some(Arc::new(m));
    }

    pub fn model(&self) -> Option<Arc<Autoencoder>> {
        self.inner.model.read().clone()
    }

    pub fn jobs(&self) -> &predict::Jobs {
        &self.inner.jobs
    }
}

/// The newest `limit` events of a ring (oldest first) at or after `since_ms`, newest first,
/// optionally of one device; `key` gives an event's device and time.
fn recent<E: Clone>(
    ring: &VecDeque<E>,
    key: impl Fn(&E) -> (&str, i64),
    device: Option<&str>,
    since_ms: i64,
    limit: usize,
) -> Vec<E> {
    ring.iter()
        .rev()
        .filter(|e| {
            let (id, ts) = key(e);
            device.is_none_or(|d| d == id) && ts >= since_ms
        })
        .take(limit)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::reading::FieldValue;

    fn reading(ts: i64, seq: u64, t: f64) -> Reading {
        Reading {
            device_id: "t1".into(),
            device_type: "TemperatureSensor".into(),
            ts_ms: ts,
            seq: Some(seq),
            fields: vec![("temperature".into(), FieldValue::F64(t))],
            units: Default::default(),
            tags: Default::default(),
            status: None,
        }
    }

    #[test]
    fn detector_state_and_device_type_labels_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WatchConfig {
            default_detector: "ewma".into(),
            state_budget_bytes: 64 << 20,
            ..WatchConfig::default()
        };
        let w = Watch::open(dir.path(), cfg).unwrap();
        let (cap, _) = state_capacity(64 << 20, fieldlab_quality::DEVICE_STATE_BYTES);
        for i in 0..cap.get() + 500 {
            let mut r = reading(1000, 1, 21.0);
            r.device_id = format!("d{i}");
            r.device_type = format!("type{i}");
            w.observe(&r, 1000);
        }
        assert_eq!(w.series_in_memory(), cap.get());
        let scored = &w.metrics().points_scored;
        let label = |t: &str| DetectLabels {
            detector: "ewma".into(),
            device_type: t.into(),
        };
        assert!(scored.get(&label("type63")).is_some());
        assert!(scored.get(&label("type64")).is_none());
        let other = DetectLabels {
            detector: "ewma".into(),
            device_type: "other".into(),
        };
        assert_eq!(
            scored.get(&other).map(|c| c.get()),
            Some(500 + cap.get() as u64 - 64)
        );
    }

    #[test]
    fn each_reading_gets_its_verdict_fields() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WatchConfig {
            default_detector: "robust_z:window=60".into(),
            ..WatchConfig::default()
        };
        let w = Watch::open(dir.path(), cfg).unwrap();
        let (_, v) = w.observe_with_verdicts(&reading(0, 0, 21.0), 0);
        assert_eq!(v.len(), 1, "a clean reading: its score only: {v:?}");
        assert_eq!(v[0].0, "temperature#anomaly");
        // Out of range: the rule and a score (values breaking a rule are still scored).
        let (_, v) = w.observe_with_verdicts(&reading(10_000, 1, 500.0), 10_000);
        let names: Vec<&str> = v.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            vec!["temperature#quality", "temperature#anomaly"],
            "{v:?}"
        );
        assert!(
            matches!(&v[0].1, FieldValue::Str(r) if r.contains("range")),
            "{v:?}"
        );
        // Out of order: a whole-reading rule; not scored.
        let (_, v) = w.observe_with_verdicts(&reading(5_000, 2, 21.0), 20_000);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            matches!(&v[0].1, FieldValue::Str(r) if r.contains("out_of_order")),
            "{v:?}"
        );
    }

    #[test]
    fn quality_and_anomaly_events_are_logged_published_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WatchConfig {
            default_detector: "robust_z:window=60".into(),
            ..WatchConfig::default()
        };
        let w = Watch::open(dir.path(), cfg.clone()).unwrap();
        let mut rx = w.subscribe();
        for i in 0..300u64 {
            let t = 21.0 + ((i * 7919) % 13) as f64 * 0.05;
            assert!(
                w.observe(&reading(i as i64 * 10_000, i, t), i as i64 * 10_000)
                    .is_empty(),
                "{i}"
            );
        }
        // a step within the rate limit (2 °C/s over 10 s) but far outside the noise: an anomaly
        let ev = w.observe(&reading(3_000_000, 300, 35.0), 3_000_000);
        assert!(
            matches!(&ev[..], [Event::Anomaly(a)] if a.field == "temperature"),
            "{ev:?}"
        );
        // more of it at once: the same episode, so no new event, but the verdict is stored
        let (ev, verdicts) = w.observe_with_verdicts(&reading(3_010_000, 301, 50.0), 3_010_000);
        assert!(ev.is_empty(), "{ev:?}");
        assert!(
            verdicts.iter().any(|(k, v)| k.ends_with("anomaly")
                && matches!(v, FieldValue::F64(s) if *s >= cfg.threshold)),
            "{verdicts:?}"
        );
        // after the episode's gap, a value outside the sensor's range: a quality event, and
        // still scored: an anomaly that names the rule it broke
        let t = 3_010_000 + EPISODE_GAP_MS + 10_000;
        let ev = w.observe(&reading(t, 302, 500.0), t);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Quality(q) if q.rule == "range")),
            "{ev:?}"
        );
        assert!(
            ev.iter().any(
                |e| matches!(e, Event::Anomaly(a) if a.quality.contains(&"range".to_string()))
            ),
            "{ev:?}"
        );
        let mut reg = Registry::default();
        w.metrics().register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let labels = r#"{detector="robust_z",device_type="TemperatureSensor"}"#;
        for want in [
            format!("fieldlab_detect_points_scored_total{labels} 303"),
            format!("fieldlab_detect_anomalies_total{labels} 2"),
            r#"fieldlab_quality_violations_total{rule="range"} 1"#.to_string(),
        ] {
            assert!(text.contains(&want), "{want} in\n{text}");
        }
        assert_eq!(rx.try_recv().unwrap().topic(), "fieldlab/anomalies/t1");
        assert_eq!(rx.try_recv().unwrap().topic(), "fieldlab/quality/t1");
        let again = Watch::open(dir.path(), cfg).unwrap();
        assert_eq!(again.anomalies(Some("t1"), 0, 10).len(), 2);
        assert!(!again.quality_events(None, 0, 10).is_empty());
    }

    #[test]
    fn event_logs_are_rotated_at_their_size_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WatchConfig {
            default_detector: "robust_z:window=60".into(),
            events_max_bytes: 4096,
            ..WatchConfig::default()
        };
        let w = Watch::open(dir.path(), cfg).unwrap();
        // A hostile device: every reading out of range (a quality event each, and the gross
        // check on ever-growing values an anomaly each: one episode each, as they come more
        // than an episode's gap apart).
        for i in 0..2000u64 {
            let v = 1000.0 * 2f64.powi((i % 900) as i32);
            let t = i as i64 * (EPISODE_GAP_MS + 1000);
            w.observe(&reading(t, i, v), t);
        }
        let events = dir.path().join("events");
        for name in ["quality.jsonl", "anomalies.jsonl"] {
            let cur = std::fs::metadata(events.join(name)).unwrap().len();
            let old = std::fs::metadata(events.join(format!("{name}.1")))
                .unwrap()
                .len();
            assert!(cur <= 4096 && old <= 4096, "{name}: {cur} + {old}");
            // Whole lines in both.
            for f in [events.join(name), events.join(format!("{name}.1"))] {
                let text = std::fs::read_to_string(&f).unwrap();
                assert!(text
                    .lines()
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
            }
        }
    }

    #[test]
    fn per_series_detector_choice() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WatchConfig::default();
        cfg.series
            .insert("TemperatureSensor.temperature".into(), "seasonal".into());
        cfg.series.insert("t9.temperature".into(), "ewma".into());
        let w = Watch::open(dir.path(), cfg).unwrap();
        assert_eq!(
            w.spec_for("t1", "TemperatureSensor", "temperature"),
            "seasonal"
        );
        assert_eq!(w.spec_for("t9", "TemperatureSensor", "temperature"), "ewma");
        assert_eq!(
            w.spec_for("t1", "TemperatureSensor", "humidity"),
            "ensemble"
        );
    }

    #[test]
    fn a_type_or_device_wildcard_is_less_specific_than_a_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WatchConfig::default();
        cfg.series.insert("PvInverter.*".into(), "sequence".into());
        cfg.series.insert("pv9.*".into(), "ewma".into());
        cfg.series
            .insert("PvInverter.energy_total".into(), "off".into());
        cfg.series.insert("irradiance".into(), "seasonal".into());
        let w = Watch::open(dir.path(), cfg).unwrap();
        assert_eq!(w.spec_for("pv1", "PvInverter", "dc_power"), "sequence");
        assert_eq!(w.spec_for("pv1", "PvInverter", "irradiance"), "sequence");
        assert_eq!(w.spec_for("pv1", "PvInverter", "energy_total"), "off");
        assert_eq!(w.spec_for("pv9", "PvInverter", "dc_power"), "ewma");
        assert_eq!(w.spec_for("pv9", "PvInverter", "energy_total"), "off");
        assert_eq!(w.spec_for("s1", "AlgaeFarm", "irradiance"), "seasonal");
        assert_eq!(w.spec_for("s1", "AlgaeFarm", "ph"), "ensemble");
    }
}
