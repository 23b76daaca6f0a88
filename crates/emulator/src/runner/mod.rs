//! Running devices: the [`Emulator`] handle, its shard tasks and MQTT connections.
//!
//! The fleet is split into a few shards (one tokio task each). A shard task asks its
//! [`Shard`] what is due at `now` and publishes it; a device costs a timer entry, not a task.
//!
//! Connections (`devices.connection`):
//! - `per_device` (default): each device has its own MQTT connection with its own client id
//!   (`fieldlab-<name>`; the legacy emulator used one fixed id, so devices kicked each other off), a
//!   retained last-will `offline` status and a retained `online` status on every (re)connect.
//!   A `disconnect` fault really closes that connection.
//! - `shared`: the devices of a shard share `shared_connections` connections
//!   (`fieldlab-emu-<shard>-<n>`). This is how 100k..1M devices fit in one process. A broker
//!   cannot tell the devices apart by connection, so there is no per-device last will: status
//!   messages are published explicitly, and a `disconnect` fault makes the device silent and
//!   `offline` instead of closing a shared connection.
//!
//! Control (start/stop, scenarios, faults) goes through the handle and takes effect at the
//! device's next message; every fault is recorded as a ground-truth annotation.

use crate::fault::{ActiveFault, FaultSpec};
use crate::fleet::{
    self, make_fault, DeviceState, FleetOptions, Message, MsgKind, ScenarioRun, Shard,
};
use crate::model::{self, type_info};
use crate::scenario::Timeline;
use crate::{ConnectionMode, DeviceSettings, DeviceSpec, MqttProtocol, ScenarioSpec};
use fieldlab_core::backoff::Backoff;
use fieldlab_core::config::Qos;
use fieldlab_core::DeviceDirectory;
use fieldlab_store::annotations::{Annotation, Annotations};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod link;
mod settings;

use link::*;
pub use settings::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// `fieldlab_emulator_*` metrics.
#[derive(Clone, Default)]
pub struct EmulatorMetrics {
    pub devices: Family<StateLabel, Gauge>,
    pub published: Counter,
    pub publish_errors: Counter,
    pub active_scenarios: Gauge,
    pub active_faults: Gauge,
}

impl EmulatorMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fieldlab_emulator_devices",
            "Emulated devices by state",
            self.devices.clone(),
        );
        r.register(
            "fieldlab_emulator_messages_published",
            "Telemetry messages handed to the MQTT client",
            self.published.clone(),
        );
        r.register(
            "fieldlab_emulator_publish_errors",
            "Messages the MQTT client refused (queue full, connection down)",
            self.publish_errors.clone(),
        );
        r.register(
            "fieldlab_emulator_active_scenarios",
            "Devices running a scenario",
            self.active_scenarios.clone(),
        );
        r.register(
            "fieldlab_emulator_active_faults",
            "Faults currently injected",
            self.active_faults.clone(),
        );
    }
}

/// One telemetry message, as streamed to `/ws`.
#[derive(Debug, Clone)]
pub struct LiveMessage {
    pub topic: String,
    pub payload: Arc<[u8]>,
}

/// A control request that could not be carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlError {
    NotFound(String),
    Invalid { key: String, message: String },
    Conflict(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::NotFound(m) | ControlError::Conflict(m) => f.write_str(m),
            ControlError::Invalid { key, message } => write!(f, "{key}: {message}"),
        }
    }
}

/// A device as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub device_id: String,
    pub device_type: String,
    pub state: DeviceState,
    pub update_interval: f64,
    pub topic: String,
    pub seq: u64,
    pub messages_published: u64,
    pub scenario: Option<ScenarioView>,
    pub faults: Vec<ActiveFault>,
    pub config: DeviceSpec,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScenarioView {
    pub name: String,
    pub phase: Option<String>,
    pub looping: bool,
    pub started: String,
}

struct ShardHandle {
    core: Mutex<Shard>,
    notify: Notify,
    /// per_device: slot -> link; shared: index -> link.
    links: Mutex<HashMap<u32, Link>>,
}

struct Inner {
    s: EmulatorSettings,
    shards: Vec<ShardHandle>,
    directory: DeviceDirectory,
    annotations: Option<Arc<Annotations>>,
    metrics: EmulatorMetrics,
    live: broadcast::Sender<LiveMessage>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The running emulator. Cheap to clone; every clone controls the same fleet.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl Emulator {
    /// Start the shard tasks (and, in shared mode, the shared connections). No devices yet.
    pub fn new(
        s: EmulatorSettings,
        directory: DeviceDirectory,
        annotations: Option<Arc<Annotations>>,
        metrics: EmulatorMetrics,
    ) -> Result<Emulator, String> {
        let n = s.shards.max(1);
        let cancel = CancellationToken::new();
        let shards = (0..n)
            .map(|_| ShardHandle {
                core: Mutex::new(Shard::new(FleetOptions {
                    seed: s.seed,
                    topic_template: s.topic_template.clone(),
                })),
                notify: Notify::new(),
                links: Mutex::new(HashMap::new()),
            })
            .collect::<Vec<_>>();
        let (live, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            s,
            shards,
            directory,
            annotations,
            metrics,
            live,
            cancel,
            tasks: Mutex::new(Vec::new()),
        });
        let em = Emulator { inner };
        if em.inner.s.connection == ConnectionMode::Shared {
            for (i, sh) in em.inner.shards.iter().enumerate() {
                let mut links = sh.links.lock();
                for c in 0..em.inner.s.shared_connections.max(1) {
                    let l = connect(
                        &em.inner.s,
                        format!("fieldlab-emu-{}-{i}-{c}", std::process::id()),
                        None,
                        100_000,
                        em.inner.cancel.child_token(),
                    );
                    links.insert(c as u32, l);
                }
            }
        }
        for i in 0..n {
            let e = em.clone();
            em.inner
                .tasks
                .lock()
                .push(tokio::spawn(async move { e.run_shard(i).await }));
        }
        let e = em.clone();
        em.inner
            .tasks
            .lock()
            .push(tokio::spawn(async move { e.run_metrics().await }));
        Ok(em)
    }

    pub fn settings(&self) -> &EmulatorSettings {
        &self.inner.s
    }

    pub fn metrics(&self) -> &EmulatorMetrics {
        &self.inner.metrics
    }

    /// Live telemetry of every emulated device.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveMessage> {
        self.inner.live.subscribe()
    }

    fn shard_of(&self, name: &str) -> usize {
        let mut h = DefaultHasher::new();
        name.hash(&mut h);
        (h.finish() % self.inner.shards.len() as u64) as usize
    }

    fn now(&self) -> i64 {
        self.inner.s.clock.now_ms()
    }

    async fn run_shard(&self, i: usize) {
        let sh = &self.inner.shards[i];
        let mut out: Vec<Message> = Vec::new();
        loop {
            let now = self.now();
            let next = {
                let mut core = sh.core.lock();
                core.poll(now, &mut out);
                core.next_due()
            };
            if !out.is_empty() {
                self.send(i, &mut out);
            }
            let wait = next.map_or(1000, |n| (n - now).clamp(0, 1000)) as u64;
            if wait == 0 {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = self.inner.cancel.cancelled() => break,
                _ = sh.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        }
    }

    fn send(&self, shard: usize, out: &mut Vec<Message>) {
        let sh = &self.inner.shards[shard];
        let links = sh.links.lock();
        let shared = self.inner.s.connection == ConnectionMode::Shared;
        let nlinks = links.len().max(1) as u32;
        let q = qos(self.inner.s.qos);
        let want_live = self.inner.live.receiver_count() > 0;
        for m in out.drain(..) {
            let key = if shared { m.slot % nlinks } else { m.slot };
            let Some(link) = links.get(&key) else {
                continue;
            };
            match m.kind {
                MsgKind::Telemetry => {
                    if want_live {
                        let _ = self.inner.live.send(LiveMessage {
                            topic: m.topic.clone(),
                            payload: m.payload.clone().into(),
                        });
                    }
                    match link.client.try_publish(m.topic, q, false, m.payload) {
                        Ok(()) => self.inner.metrics.published.inc(),
                        Err(_) => self.inner.metrics.publish_errors.inc(),
                    };
                }
                MsgKind::Status => {
                    let _ = link
                        .client
                        .try_publish(m.topic, QoS::AtLeastOnce, true, m.payload);
                }
                MsgKind::Disconnect if !shared => {
                    link.paused.store(true, Ordering::Relaxed);
                    let _ = link.client.try_disconnect();
                }
                MsgKind::Reconnect if !shared => link.paused.store(false, Ordering::Relaxed),
                _ => {}
            }
        }
    }

    async fn run_metrics(&self) {
        loop {
            self.refresh_metrics();
            tokio::select! {
                _ = self.inner.cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Recount devices by state, scenarios and faults into the gauges.
    pub fn refresh_metrics(&self) {
        let (mut run, mut stop, mut disc, mut sc, mut f) = (0i64, 0i64, 0i64, 0i64, 0i64);
        let now = self.now();
        for sh in &self.inner.shards {
            let core = sh.core.lock();
            for d in core.iter() {
                match d.state() {
                    DeviceState::Running => run += 1,
                    DeviceState::Stopped => stop += 1,
                    DeviceState::Disconnected => disc += 1,
                }
                sc += i64::from(d.scenario.is_some() && d.running);
                f += d.faults.iter().filter(|x| x.active_at(now)).count() as i64;
            }
        }
        let m = &self.inner.metrics;
        for (s, v) in [("running", run), ("stopped", stop), ("disconnected", disc)] {
            m.devices
                .get_or_create(&StateLabel { state: s.into() })
                .set(v);
        }
        m.active_scenarios.set(sc);
        m.active_faults.set(f);
    }

    /// Add devices (validated first). `running`: start them at once.
    pub fn add_all(&self, fleet: Vec<DeviceSpec>, running: bool) -> Result<(), ControlError> {
        for d in fleet {
            self.create(d, running)?;
        }
        Ok(())
    }

    /// Add one device.
    pub fn create(&self, spec: DeviceSpec, running: bool) -> Result<DeviceView, ControlError> {
        validate_device(&spec).map_err(|(key, message)| ControlError::Invalid { key, message })?;
        let spec = Arc::new(spec);
        let name = spec.name.clone();
        self.create_from(&name, spec, running)?;
        self.get(&name)
    }

    /// Add a device named `name` from a (possibly shared) template: how load mode builds
    /// 1M devices from one `Arc`.
    pub fn create_from(
        &self,
        name: &str,
        spec: Arc<DeviceSpec>,
        running: bool,
    ) -> Result<(), ControlError> {
        if self.count() >= self.inner.s.max_devices {
            return Err(ControlError::Conflict(format!(
                "the emulator already runs devices.max_devices = {} devices",
                self.inner.s.max_devices
            )));
        }
        let i = self.shard_of(name);
        let sh = &self.inner.shards[i];
        let now = self.now();
        let slot = sh
            .core
            .lock()
            .add(name, spec.clone(), false, now)
            .map_err(ControlError::Conflict)?;
        if self.inner.s.connection == ConnectionMode::PerDevice {
            let st = fleet::status_topic(&spec.device_type, name);
            let link = connect(
                &self.inner.s,
                format!("fieldlab-{name}"),
                Some((
                    st,
                    status_payload(name, &spec.device_type, "offline"),
                    status_payload(name, &spec.device_type, "online"),
                )),
                256,
                self.inner.cancel.child_token(),
            );
            sh.links.lock().insert(slot, link);
        }
        self.inner
            .directory
            .register_emulated(name, &spec.device_type);
        if running {
            sh.core.lock().start(name, now);
            sh.notify.notify_one();
        }
        Ok(())
    }

    pub fn count(&self) -> usize {
        self.inner.shards.iter().map(|s| s.core.lock().len()).sum()
    }

    fn with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Shard, i64) -> Option<T>,
    ) -> Result<T, ControlError> {
        let sh = &self.inner.shards[self.shard_of(name)];
        let r = f(&mut sh.core.lock(), self.now());
        sh.notify.notify_one();
        r.ok_or_else(|| {
            ControlError::NotFound(format!(
                "no emulated device `{name}`; GET /api/v1/emulator/devices lists them"
            ))
        })
    }

    fn view(d: &fleet::Device, tmpl: &str, now: i64) -> DeviceView {
        DeviceView {
            device_id: d.name.to_string(),
            device_type: d.info.name.to_string(),
            state: d.state(),
            update_interval: d.interval_ms as f64 / 1000.0,
            topic: fleet::topic_for(tmpl, &d.spec, &d.name),
            seq: d.seq,
            messages_published: d.published,
            scenario: d.scenario.as_ref().map(|s| ScenarioView {
                name: s.name.clone(),
                phase: s
                    .timeline
                    .phase_at(now - s.started_ms)
                    .map(|p| p.name.clone()),
                looping: s.looping,
                started: fieldlab_core::time::format_ms(s.started_ms),
            }),
            faults: d
                .faults
                .iter()
                .filter(|f| f.end_ms.is_none_or(|e| e > now))
                .cloned()
                .collect(),
            config: DeviceSpec {
                name: d.name.to_string(),
                ..(*d.spec).clone()
            },
        }
    }

    pub fn get(&self, name: &str) -> Result<DeviceView, ControlError> {
        let tmpl = self.inner.s.topic_template.clone();
        self.with(name, |s, now| {
            s.get(name).map(|d| Self::view(d, &tmpl, now))
        })
    }

    /// Every device, sorted by name (at most `limit`).
    pub fn list(&self, limit: usize) -> Vec<DeviceView> {
        let now = self.now();
        let mut v = Vec::new();
        for sh in &self.inner.shards {
            let core = sh.core.lock();
            v.extend(
                core.iter()
                    .take(limit)
                    .map(|d| Self::view(d, &self.inner.s.topic_template, now)),
            );
        }
        v.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        v.truncate(limit);
        v
    }

    pub fn delete(&self, name: &str) -> Result<(), ControlError> {
        let slot = self.with(name, |s, _| s.slot(name))?;
        let sh = &self.inner.shards[self.shard_of(name)];
        let d = sh.core.lock().remove(name);
        self.inner.directory.unregister_emulated(name);
        if let (Some(d), Some(link)) = (d, sh.links.lock().remove(&slot)) {
            let _ = link.client.try_publish(
                fleet::status_topic(&d.spec.device_type, name),
                QoS::AtLeastOnce,
                true,
                status_payload(name, d.info.name, "offline"),
            );
            let _ = link.client.try_disconnect();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), link.task).await;
            });
        }
        Ok(())
    }

    /// Start one device; `Ok(false)` if it was running already.
    pub fn start_device(&self, name: &str) -> Result<bool, ControlError> {
        self.with(name, |s, now| s.start(name, now))
    }

    /// Start a device at a random point of its first interval (by name hash), so that a
    /// large fleet does not fire in the same millisecond.
    pub fn start_spread(&self, name: &str) -> Result<bool, ControlError> {
        let mut h = DefaultHasher::new();
        name.hash(&mut h);
        let off = h.finish();
        self.with(name, |s, now| {
            let iv = s.get(name)?.interval_ms.max(1) as u64;
            s.start_at(name, now + (off % iv) as i64)
        })
    }

    pub fn stop_device(&self, name: &str) -> Result<bool, ControlError> {
        self.with(name, |s, _| s.stop(name))
    }

    fn names(&self) -> Vec<String> {
        self.inner
            .shards
            .iter()
            .flat_map(|s| {
                s.core
                    .lock()
                    .iter()
                    .map(|d| d.name.to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Start every device; returns how many were stopped before.
    pub fn start_all(&self) -> usize {
        self.names()
            .iter()
            .filter(|n| self.start_device(n) == Ok(true))
            .count()
    }

    pub fn stop_all(&self) -> usize {
        self.names()
            .iter()
            .filter(|n| self.stop_device(n) == Ok(true))
            .count()
    }

    /// Run a scenario on a device: one of its configured phases by `scenario` name, or the
    /// given `phases`; looped or once (then normal operation returns).
    pub fn start_scenario(
        &self,
        name: &str,
        scenario: Option<&str>,
        phases: Option<Vec<ScenarioSpec>>,
        looping: bool,
    ) -> Result<DeviceView, ControlError> {
        let invalid = |key: &str, message: String| ControlError::Invalid {
            key: key.into(),
            message,
        };
        let (spec, info) = self.with(name, |s, _| s.get(name).map(|d| (d.spec.clone(), d.info)))?;
        let (label, specs) = match (scenario, phases) {
            (_, Some(p)) if !p.is_empty() => (scenario.unwrap_or("custom").to_string(), p),
            (Some(sc), _) => {
                let p: Vec<ScenarioSpec> = spec
                    .scenarios
                    .iter()
                    .filter(|p| p.name == sc)
                    .cloned()
                    .collect();
                if p.is_empty() {
                    return Err(invalid(
                        "scenario",
                        format!(
                            "device `{name}` has no scenario `{sc}`; configured: {}; or send `phases`",
                            spec.scenarios.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                (sc.to_string(), p)
            }
            _ => {
                return Err(invalid(
                    "scenario",
                    "give `scenario` (a configured name) or `phases`".into(),
                ))
            }
        };
        for (i, p) in specs.iter().enumerate() {
            if !(p.duration > 0.0 && p.duration.is_finite()) {
                return Err(invalid(
                    &format!("phases[{i}].duration"),
                    "must be a positive number of seconds".into(),
                ));
            }
        }
        let tl = Timeline::from_specs(&specs, &info.field_names())
            .map_err(|(i, m)| invalid(&format!("phases[{i}].parameters"), m))?;
        self.with(name, |s, now| {
            let d = s.get_mut(name)?;
            d.scenario = Some(Box::new(ScenarioRun {
                name: label,
                timeline: Arc::new(tl),
                started_ms: now,
                looping,
            }));
            Some(())
        })?;
        self.get(name)
    }

    pub fn stop_scenario(&self, name: &str) -> Result<bool, ControlError> {
        self.with(name, |s, _| {
            Some(s.get_mut(name)?.scenario.take().is_some())
        })
    }

    /// Inject a fault and record its ground truth.
    pub fn add_fault(&self, name: &str, spec: FaultSpec) -> Result<ActiveFault, ControlError> {
        let id = self
            .inner
            .annotations
            .as_ref()
            .map_or_else(|| rand::random::<u32>() as u64, |a| a.next_id());
        let f = self.with(name, |s, now| {
            let d = s.get_mut(name)?;
            Some(make_fault(d, spec, id, now).inspect(|f| d.faults.push(f.clone())))
        })?;
        let f = f.map_err(|message| ControlError::Invalid {
            key: "fault".into(),
            message,
        })?;
        self.annotate(name, &f);
        Ok(f)
    }

    /// End a fault now (its annotation gets the end time).
    pub fn remove_fault(&self, name: &str, id: u64) -> Result<ActiveFault, ControlError> {
        let f = self.with(name, |s, now| {
            let d = s.get_mut(name)?;
            let pos = d.faults.iter().position(|f| f.id == id)?;
            let mut f = d.faults.remove(pos);
            if f.end_ms.is_none_or(|e| e > now) {
                f.end_ms = Some(now);
            }
            Some(f)
        });
        let f = f.map_err(|_| {
            ControlError::NotFound(format!("device `{name}` has no active fault {id}"))
        })?;
        self.annotate(name, &f);
        Ok(f)
    }

    fn annotate(&self, name: &str, f: &ActiveFault) {
        if let Some(a) = &self.inner.annotations {
            let rec = Annotation {
                id: f.id,
                device_id: name.to_string(),
                fields: f.field.map(|x| vec![x.to_string()]).unwrap_or_default(),
                kind: f.kind.as_str().to_string(),
                start_ms: f.start_ms,
                end_ms: f.end_ms,
                parameters: serde_json::to_value(&f.spec).unwrap_or_default(),
            };
            if let Err(e) = a.record(&rec) {
                tracing::warn!(error = %e, device = name, "cannot record the fault annotation");
            }
        }
    }

    /// Publish `offline` for every device, disconnect, and wait for the tasks.
    pub async fn stop(self) {
        for sh in &self.inner.shards {
            let core = sh.core.lock();
            let links = sh.links.lock();
            if self.inner.s.connection == ConnectionMode::PerDevice {
                for (slot, l) in links.iter() {
                    if let Some(d) = core.by_slot(*slot) {
                        let _ = l.client.try_publish(
                            fleet::status_topic(&d.spec.device_type, &d.name),
                            QoS::AtLeastOnce,
                            true,
                            status_payload(&d.name, d.info.name, "offline"),
                        );
                    }
                }
            }
            for l in links.values() {
                let _ = l.client.try_disconnect();
            }
        }
        self.inner.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock());
        let links: Vec<JoinHandle<()>> = self
            .inner
            .shards
            .iter()
            .flat_map(|s| {
                s.links
                    .lock()
                    .drain()
                    .map(|(_, l)| l.task)
                    .collect::<Vec<_>>()
            })
            .collect();
        for t in tasks.into_iter().chain(links) {
            let _ = t.await;
        }
    }
}

/// Start every device of `fleet` (validated first).
pub fn start(
    s: EmulatorSettings,
    fleet: Vec<DeviceSpec>,
    directory: DeviceDirectory,
) -> Result<Emulator, String> {
    start_with(s, fleet, directory, None, EmulatorMetrics::default())
}

/// [`start`], recording fault annotations and counting into `metrics`.
pub fn start_with(
    s: EmulatorSettings,
    fleet: Vec<DeviceSpec>,
    directory: DeviceDirectory,
    annotations: Option<Arc<Annotations>>,
    metrics: EmulatorMetrics,
) -> Result<Emulator, String> {
    validate_fleet(&fleet).map_err(|(k, m)| format!("{k}: {m}"))?;
    let em = Emulator::new(s, directory, annotations, metrics)?;
    em.add_all(fleet, true).map_err(|e| e.to_string())?;
    Ok(em)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_fleet_is_valid_and_has_every_lab_station() {
        let f = demo_fleet();
        validate_fleet(&f).unwrap();
        let types: Vec<&str> = f.iter().map(|d| d.device_type.as_str()).collect();
        assert_eq!(
            types,
            vec![
                "TemperatureSensor",
                "PressureValve",
                "PvInverter",
                "WindTurbine",
                "BiogasPlant",
                "HeatBoiler",
                "EnergyStorage",
                "EngineTestBench",
                "AlgaeFarm"
            ]
        );
        assert_eq!(
            telemetry_topic(&f[0]),
            "devices/TemperatureSensor/temperature_sensor_1/telemetry"
        );
    }

    #[test]
    fn unknown_type_names_the_key_and_the_choices() {
        let mut f = demo_fleet();
        f[1].device_type = "Toaster".into();
        let (k, m) = validate_fleet(&f).unwrap_err();
        assert_eq!(k, "devices.fleet[1].type");
        assert!(m.contains("PvInverter"));
    }
}
