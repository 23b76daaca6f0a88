//! The fleet's bookkeeping: devices, their schedule, scenarios and faults — and the messages
//! they produce at a given instant.
//!
//! Why it is separate from the runner: everything that decides *what* is sent, and *when*, is
//! here and takes the time as an argument (a controllable clock), so tests can run an hour of
//! a device in microseconds and check that a phase switched at exactly the right message.
//! The runner only asks "what is due at `now`?" and sends it.
//!
//! Scale: a device is a few hundred bytes (its model state, a seeded `SmallRng`, counters, an
//! `Arc` of its configuration shared by devices created from one template) plus one entry in
//! a binary-heap timer; no task and no thread.

use crate::fault::{apply_value_fault, ActiveFault, FaultKind, FaultSpec, OutValue};
use crate::model::{self, type_info, DeviceModel, TypeInfo};
use crate::scenario::Timeline;
use crate::DeviceSpec;
use fieldlab_core::FieldValue;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A scenario timeline running on a device.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub name: String,
    pub timeline: Arc<Timeline>,
    pub started_ms: i64,
    pub looping: bool,
}

impl ScenarioRun {
    fn total_ms(&self) -> i64 {
        self.timeline
            .phases
            .iter()
            .map(|p| p.duration_ms.max(1))
            .sum()
    }
}

/// What a device sends.
#[derive(Debug, Clone, PartialEq)]
pub enum MsgKind {
    Telemetry,
    /// Retained status (`online`/`offline`) on the status topic.
    Status,
    /// Close this device's connection (disconnect fault).
    Disconnect,
    /// Open it again.
    Reconnect,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub slot: u32,
    pub kind: MsgKind,
    pub topic: String,
    pub payload: Vec<u8>,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Running,
    Stopped,
    /// Running, but cut off by a disconnect fault.
    Disconnected,
}

pub struct Device {
    pub name: Box<str>,
    pub spec: Arc<DeviceSpec>,
    pub info: &'static TypeInfo,
    model: Box<dyn DeviceModel>,
    rng: SmallRng,
    pub seq: u64,
    pub interval_ms: i64,
    pub next_due_ms: i64,
    last_ms: Option<i64>,
    pub running: bool,
    offline: bool,
    pub scenario: Option<Box<ScenarioRun>>,
    pub faults: Vec<ActiveFault>,
    held: Option<Box<Message>>,
    pub published: u64,
}

impl Device {
    pub fn state(&self) -> DeviceState {
        match (self.running, self.offline) {
            (false, _) => DeviceState::Stopped,
            (true, true) => DeviceState::Disconnected,
            (true, false) => DeviceState::Running,
        }
    }
}

/// Settings every device of a fleet shares.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub seed: u64,
    /// `{type}` and `{id}` are replaced; a device's `mqtt_topic` wins.
    pub topic_template: String,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            seed: 42,
            topic_template: "devices/{type}/{id}/telemetry".into(),
        }
    }
}

/// The telemetry topic of a device.
pub fn topic_for(template: &str, d: &DeviceSpec, name: &str) -> String {
    match &d.config.mqtt_topic {
        Some(t) => t.clone(),
        None => template
            .replace("{type}", &d.device_type)
            .replace("{id}", name),
    }
}

pub fn status_topic(device_type: &str, name: &str) -> String {
    format!("devices/{device_type}/{name}/status")
}

/// One part of the fleet: a slab of devices and their timer.
pub struct Shard {
    pub opts: FleetOptions,
    devices: Vec<Option<Device>>,
    free: Vec<u32>,
    index: HashMap<Box<str>, u32>,
    timer: BinaryHeap<Reverse<(i64, u32)>>,
}

fn device_seed(seed: u64, name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    seed ^ h.finish()
}

impl Shard {
    pub fn new(opts: FleetOptions) -> Shard {
        Shard {
            opts,
            devices: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            timer: BinaryHeap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Add a device (validated by the caller) named `name` from `spec`; it starts at `now_ms`
    /// if `running`. Its configured scenarios start with it and loop.
    pub fn add(
        &mut self,
        name: &str,
        spec: Arc<DeviceSpec>,
        running: bool,
        now_ms: i64,
    ) -> Result<u32, String> {
        if self.index.contains_key(name) {
            return Err(format!("device `{name}` exists already"));
        }
        let info = type_info(&spec.device_type)
            .ok_or_else(|| format!("unknown device type `{}`", spec.device_type))?;
        let model = model::build(info.name, &spec.config)
            .ok_or_else(|| format!("type `{}` cannot be built", info.name))?;
        let timeline = Timeline::from_specs(&spec.scenarios, &info.field_names())
            .map_err(|(i, m)| format!("scenarios[{i}]: {m}"))?;
        let scenario = (!timeline.phases.is_empty()).then(|| {
            Box::new(ScenarioRun {
                name: "configured".into(),
                timeline: Arc::new(timeline),
                started_ms: now_ms,
                looping: true,
            })
        });
        let interval_ms = ((spec.config.update_interval * 1000.0) as i64).max(1);
        let d = Device {
            name: name.into(),
            info,
            model,
            rng: SmallRng::seed_from_u64(device_seed(self.opts.seed, name)),
            seq: 0,
            interval_ms,
            next_due_ms: now_ms,
            last_ms: None,
            running,
            offline: false,
            scenario,
            faults: Vec::new(),
            held: None,
            published: 0,
            spec,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.devices[s as usize] = Some(d);
                s
            }
            None => {
                self.devices.push(Some(d));
                (self.devices.len() - 1) as u32
            }
        };
        self.index.insert(name.into(), slot);
        if running {
            self.timer.push(Reverse((now_ms, slot)));
        }
        Ok(slot)
    }

    pub fn slot(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<&Device> {
        self.devices[*self.index.get(name)? as usize].as_ref()
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Device> {
        self.devices[*self.index.get(name)? as usize].as_mut()
    }

    pub fn by_slot(&self, slot: u32) -> Option<&Device> {
        self.devices.get(slot as usize)?.as_ref()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().flatten()
    }

    pub fn remove(&mut self, name: &str) -> Option<Device> {
        let slot = self.index.remove(name)?;
        self.free.push(slot);
        self.devices[slot as usize].take()
    }

    /// Start a stopped device; returns false if it was running.
    pub fn start(&mut self, name: &str, now_ms: i64) -> Option<bool> {
        self.start_at(name, now_ms)
    }

    /// Start a stopped device with its first message at `first_ms`.
    pub fn start_at(&mut self, name: &str, now_ms: i64) -> Option<bool> {
        let slot = self.slot(name)?;
        let d = self.devices[slot as usize].as_mut()?;
        if d.running {
            return Some(false);
        }
        d.running = true;
        d.next_due_ms = now_ms;
        self.timer.push(Reverse((now_ms, slot)));
        Some(true)
    }

    /// Stop a device (its timer entry is dropped lazily).
    pub fn stop(&mut self, name: &str) -> Option<bool> {
        let d = self.get_mut(name)?;
        let was = d.running;
        d.running = false;
        d.held = None;
        Some(was)
    }

    /// The earliest instant something is due, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.timer.peek().map(|Reverse((t, _))| *t)
    }

    /// Produce every message due at or before `now_ms` into `out`.
    pub fn poll(&mut self, now_ms: i64, out: &mut Vec<Message>) {
        while let Some(&Reverse((due, slot))) = self.timer.peek() {
            if due > now_ms {
                break;
            }
            self.timer.pop();
            let Some(d) = self.devices.get_mut(slot as usize).and_then(|d| d.as_mut()) else {
                continue;
            };
            if !d.running || d.next_due_ms != due {
                continue; // stopped, or rescheduled since
            }
            produce(d, slot, due, &self.opts, out);
            // Fixed rate: the next message is one interval after this one was due (a late
            // runner catches up by skipping, not by bursting).
            let mut next = due + d.interval_ms;
            if next <= now_ms - d.interval_ms {
                next = now_ms + d.interval_ms - (now_ms - due) % d.interval_ms;
            }
            d.next_due_ms = next;
            self.timer.push(Reverse((next, slot)));
        }
    }
}

/// Encode a fieldlab JSON payload. Hand-written rather than via `serde_json::Value`: it runs
/// for every message of every device, and it must be able to write a bare `NaN` (bad data).
fn encode(
    d: &Device,
    seq: u64,
    ts_ms: i64,
    data: &[(String, OutValue)],
    scenario: Option<&str>,
) -> Vec<u8> {
    use std::fmt::Write;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut s = String::with_capacity(96 + data.len() * 28);
    let _ = write!(
        s,
        "{{\"device_id\":{},\"device_type\":{},\"seq\":{seq},\"ts\":\"{}\",\"data\":{{",
        q(&d.name),
        q(d.info.name),
        fieldlab_core::time::format_ms(ts_ms)
    );
    for (i, (k, v)) in data.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&q(k));
        s.push(':');
        match v {
            OutValue::V(FieldValue::F64(x)) if x.is_finite() => {
                let _ = write!(s, "{x}");
            }
            OutValue::V(FieldValue::F64(_)) | OutValue::Null => s.push_str("null"),
            OutValue::NanToken => s.push_str("NaN"),
            OutValue::V(FieldValue::I64(x)) => {
                let _ = write!(s, "{x}");
            }
            OutValue::V(FieldValue::Bool(b)) => s.push_str(if *b { "true" } else { "false" }),
            OutValue::V(FieldValue::Str(t)) => s.push_str(&q(t)),
        }
    }
    s.push_str("},\"status\":\"operational\"");
    if !d.spec.config.tags.is_empty() {
        s.push_str(",\"tags\":");
        s.push_str(&serde_json::to_string(&d.spec.config.tags).unwrap_or_default());
    }
    if let Some(sc) = scenario {
        let _ = write!(s, ",\"scenario\":{}", q(sc));
    }
    s.push('}');
    s.into_bytes()
}

fn status_msg(d: &Device, slot: u32, state: &str) -> Message {
    let payload =
        serde_json::json!({"device_id": &*d.name, "device_type": d.info.name, "status": state})
            .to_string()
            .into_bytes();
    Message {
        slot,
        kind: MsgKind::Status,
        topic: status_topic(&d.spec.device_type, &d.name),
        payload,
        seq: d.seq,
    }
}

fn active(faults: &[ActiveFault], t: i64, k: FaultKind) -> bool {
    faults.iter().any(|f| f.kind == k && f.active_at(t))
}

/// One device's messages for the tick due at `t`.
fn produce(d: &mut Device, slot: u32, t: i64, opts: &FleetOptions, out: &mut Vec<Message>) {
    let dt = d
        .last_ms
        .map_or(d.interval_ms as f64 / 1000.0, |l| (t - l) as f64 / 1000.0);
    d.last_ms = Some(t);

    // Faults that ended (their annotation keeps the end; the fault leaves the device).
    let mut reconnect = false;
    d.faults.retain(|f| {
        let over = f.end_ms.is_some_and(|e| t >= e);
        if over && f.kind == FaultKind::Disconnect {
            reconnect = true;
        }
        !over
    });

    // Scenario phase.
    if d.scenario
        .as_ref()
        .is_some_and(|s| !s.looping && t - s.started_ms >= s.total_ms())
    {
        d.scenario = None;
    }
    let phase = d
        .scenario
        .as_ref()
        .and_then(|s| s.timeline.phase_at(t - s.started_ms).map(|p| (s, p)));
    let empty = Default::default();
    let ranges = phase.map_or(&empty, |(_, p)| &p.ranges);
    let scenario_label = phase.map(|(s, p)| {
        if s.name == "configured" {
            p.name.clone()
        } else {
            format!("{}/{}", s.name, p.name)
        }
    });
    let values = model::sample(d.model.as_mut(), t, dt, ranges, &mut d.rng);

    // Connection faults.
    let disconnected = active(&d.faults, t, FaultKind::Disconnect);
    if disconnected && !d.offline {
        d.offline = true;
        out.push(status_msg(d, slot, "offline"));
        out.push(Message {
            slot,
            kind: MsgKind::Disconnect,
            topic: String::new(),
            payload: Vec::new(),
            seq: d.seq,
        });
    } else if (!disconnected || reconnect) && d.offline {
        d.offline = false;
        out.push(Message {
            slot,
            kind: MsgKind::Reconnect,
            topic: String::new(),
            payload: Vec::new(),
            seq: d.seq,
        });
        out.push(status_msg(d, slot, "online"));
    }

    let mut data: Vec<(String, OutValue)> = values
        .into_iter()
        .map(|(k, v)| (k.to_string(), OutValue::V(v)))
        .collect();
    for f in d.faults.iter_mut() {
        if f.active_at(t) {
            apply_value_fault(f, t, &mut data);
        }
    }
    let skew_ms: i64 = d
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::ClockSkew && f.active_at(t))
        .map(|f| (f.spec.offset_s.unwrap_or(60.0) * 1000.0) as i64)
        .fold(0i64, i64::saturating_add);
    let copies = d
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::BurstFlood && f.active_at(t))
        .map(|f| f.spec.multiplier.unwrap_or(20).max(1))
        .max()
        .unwrap_or(1);
    let topic = topic_for(&opts.topic_template, &d.spec, &d.name);
    for _ in 0..copies {
        d.seq += 1;
        if disconnected || active(&d.faults, t, FaultKind::Dropout) {
            continue; // nothing leaves the device; the seq gap shows it
        }
        let msg = Message {
            slot,
            kind: MsgKind::Telemetry,
            topic: topic.clone(),
            payload: encode(
                d,
                d.seq,
                t.saturating_add(skew_ms),
                &data,
                scenario_label.as_deref(),
            ),
            seq: d.seq,
        };
        let dup = active(&d.faults, t, FaultKind::Duplicate);
        if active(&d.faults, t, FaultKind::OutOfOrder) {
            match d.held.take() {
                None => {
                    d.held = Some(Box::new(msg));
                    continue;
                }
                Some(prev) => {
                    out.push(msg);
                    out.push(*prev);
                }
            }
        } else {
            if let Some(prev) = d.held.take() {
                out.push(*prev);
            }
            if dup {
                out.push(msg.clone());
            }
            out.push(msg);
        }
        d.published += 1;
    }
}

/// Check a fault request against a device and make it active from `now_ms`.
pub fn make_fault(
    d: &Device,
    spec: FaultSpec,
    id: u64,
    now_ms: i64,
) -> Result<ActiveFault, String> {
    let kind = spec.kind.ok_or_else(|| {
        format!(
            "`kind` is required; one of: {}",
            FaultKind::ALL.map(|k| k.as_str()).join(", ")
        )
    })?;
    let (field, unit) = if kind.needs_field() {
        let f = match &spec.field {
            Some(name) => d
                .info
                .fields
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| {
                    format!(
                        "device `{}` has no field `{name}`; its fields: {}",
                        d.name,
                        d.info.field_names().join(", ")
                    )
                })?,
            None => &d.info.fields[0],
        };
        (Some(f.name), f.unit)
    } else {
        (None, "")
    };
    if let Some(s) = spec.duration_s {
        if !(s > 0.0 && s.is_finite()) {
            return Err("`duration_s` must be a positive number of seconds".into());
        }
    }
    Ok(ActiveFault {
        id,
        kind,
        field,
        unit,
        start_ms: now_ms,
        // Saturating: a duration of 1e300 s is "until removed", not an overflow.
        end_ms: spec
            .duration_s
            .map(|s| now_ms.saturating_add((s * 1000.0) as i64)),
        spec,
        stuck: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultKind as K;
    use crate::{DeviceSettings, ScenarioSpec};
    use serde_json::Value;

    const T0: i64 = 1_767_268_800_000; // 2026-01-01T12:00:00Z

    fn spec(ty: &str, scenarios: Vec<ScenarioSpec>) -> Arc<DeviceSpec> {
        Arc::new(DeviceSpec {
            name: "d".into(),
            device_type: ty.into(),
            config: DeviceSettings::default(),
            scenarios,
        })
    }

    fn phase(name: &str, secs: f64, params: &str) -> ScenarioSpec {
        ScenarioSpec {
            name: name.into(),
            duration: secs,
            parameters: serde_yaml::from_str(params).unwrap(),
        }
    }

    /// A shard with one device `d`, stepped second by second with a manual clock.
    struct Rig {
        shard: Shard,
        now: i64,
    }

    impl Rig {
        fn new(ty: &str, scenarios: Vec<ScenarioSpec>) -> Rig {
            let mut shard = Shard::new(FleetOptions::default());
            shard.add("d", spec(ty, scenarios), true, T0).unwrap();
            Rig { shard, now: T0 }
        }
        /// Advance `secs` seconds, returning every message produced.
        fn run(&mut self, secs: i64) -> Vec<Message> {
            let mut out = Vec::new();
            for _ in 0..secs {
                self.shard.poll(self.now, &mut out);
                self.now += 1000;
            }
            out
        }
        fn telemetry(&mut self, secs: i64) -> Vec<Value> {
            self.run(secs)
                .into_iter()
                .filter(|m| m.kind == MsgKind::Telemetry)
                .map(|m| {
                    serde_json::from_slice(&m.payload).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&m.payload).into())
                    })
                })
                .collect()
        }
        fn fault(&mut self, yaml: &str) {
            let s: FaultSpec = serde_yaml::from_str(yaml).unwrap();
            let d = self.shard.get("d").unwrap();
            let f = make_fault(d, s, 1, self.now).unwrap();
            self.shard.get_mut("d").unwrap().faults.push(f);
        }
    }

    fn temps(msgs: &[Value]) -> Vec<f64> {
        msgs.iter()
            .map(|m| m["data"]["temperature"].as_f64().unwrap())
            .collect()
    }

    #[test]
    fn one_message_per_interval_with_increasing_seq() {
        let mut r = Rig::new("TemperatureSensor", vec![]);
        let m = r.telemetry(10);
        assert_eq!(m.len(), 10);
        let seqs: Vec<u64> = m.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(m[0]["ts"], "2026-01-01T12:00:00.000Z");
        assert_eq!(m[0]["device_type"], "TemperatureSensor");
    }

    #[test]
    fn scenario_phases_switch_at_the_right_message_and_loop() {
        let mut r = Rig::new(
            "TemperatureSensor",
            vec![
                phase("normal", 10.0, "temperature_range: [18, 25]"),
                phase("hot", 5.0, "temperature_range: [45, 50]"),
            ],
        );
        let m = r.telemetry(30);
        for (i, v) in m.iter().enumerate() {
            let want = if (i % 15) < 10 { "normal" } else { "hot" };
            assert_eq!(v["scenario"], want, "message {i}");
            let t = v["data"]["temperature"].as_f64().unwrap();
            if want == "hot" {
                assert!((45.0..=50.0).contains(&t), "{i}: {t}");
            } else {
                assert!((18.0..=25.0).contains(&t), "{i}: {t}");
            }
        }
    }

    #[test]
    fn a_started_scenario_runs_once_then_normal_operation_returns() {
        let mut r = Rig::new("TemperatureSensor", vec![]);
        let tl = Timeline::from_specs(
            &[phase("hot", 3.0, "temperature_range: [45, 50]")],
            &["temperature"],
        )
        .unwrap();
        r.shard.get_mut("d").unwrap().scenario = Some(Box::new(ScenarioRun {
            name: "alert".into(),
            timeline: Arc::new(tl),
            started_ms: r.now,
            looping: false,
        }));
        let m = r.telemetry(6);
        assert!(temps(&m[..3]).iter().all(|t| *t >= 45.0));
        assert_eq!(m[0]["scenario"], "alert/hot");
        assert!(m[3].get("scenario").is_none());
        assert!(r.shard.get("d").unwrap().scenario.is_none());
    }

    #[test]
    fn stop_and_start() {
        let mut r = Rig::new("TemperatureSensor", vec![]);
        assert_eq!(r.telemetry(3).len(), 3);
        r.shard.stop("d");
        assert_eq!(r.telemetry(5).len(), 0);
        r.shard.start("d", r.now);
        let m = r.telemetry(2);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["seq"], 4, "seq continues after a restart");
    }

    #[test]
    fn spike_dip_drift_stuck_change_the_values_for_the_duration() {
        for (yaml, check) in [
            (
                "{kind: spike, field: temperature, magnitude: 100, duration_s: 3}",
                0,
            ),
            (
                "{kind: dip, field: temperature, magnitude: 100, duration_s: 3}",
                1,
            ),
            (
                "{kind: drift, field: temperature, rate_per_s: 10, duration_s: 3}",
                2,
            ),
            (
                "{kind: stuck_at, field: temperature, value: 7.5, duration_s: 3}",
                3,
            ),
        ] {
            let mut r = Rig::new("TemperatureSensor", vec![]);
            r.telemetry(5);
            r.fault(yaml);
            let m = temps(&r.telemetry(5));
            match check {
                0 => assert!(m[..3].iter().all(|t| *t > 100.0) && m[3] < 40.0, "{m:?}"),
                1 => assert!(m[..3].iter().all(|t| *t < -50.0) && m[3] > 0.0, "{m:?}"),
                2 => assert!(m[2] > 35.0 && m[3] < 30.0, "{m:?}"),
                _ => assert!(m[..3].iter().all(|t| *t == 7.5) && m[3] != 7.5, "{m:?}"),
            }
            assert!(r.shard.get("d").unwrap().faults.is_empty(), "fault ended");
        }
    }

    #[test]
    fn nan_null_unit_switch_schema_break() {
        let mut r = Rig::new("TemperatureSensor", vec![]);
        r.fault("{kind: nan, field: humidity, duration_s: 1}");
        let m = r.telemetry(1);
        assert!(m[0]["data"]["humidity"].is_null());
        r.fault("{kind: nan, mode: nan, duration_s: 1}");
        let raw = r.telemetry(1);
        assert!(
            raw[0].as_str().unwrap().contains("\"temperature\":NaN"),
            "{:?}",
            raw[0]
        );
        let before = temps(&r.telemetry(1))[0];
        r.fault("{kind: unit_switch, field: temperature, duration_s: 1}");
        let f = temps(&r.telemetry(1))[0];
        assert!(
            (f - (before * 1.8 + 32.0)).abs() < 5.0,
            "°F: {before} -> {f}"
        );
        r.fault("{kind: schema_break, field: temperature, duration_s: 1}");
        let m = r.telemetry(1);
        assert!(m[0]["data"].get("temperature").is_none());
        assert!(m[0]["data"]["temperature_v2"].is_number());
        r.fault("{kind: schema_break, field: humidity, mode: missing, duration_s: 1}");
        let m = r.telemetry(1);
        assert!(
            m[0]["data"].get("humidity").is_none() && m[0]["data"].get("humidity_v2").is_none()
        );
    }

    #[test]
    fn dropout_duplicate_out_of_order_skew_flood() {
        let mut r = Rig::new("TemperatureSensor", vec![]);
        r.telemetry(2);
        r.fault("{kind: dropout, duration_s: 3}");
        let m = r.telemetry(5);
        let seqs: Vec<u64> = m.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![6, 7], "seq 3..5 dropped, the gap shows");

        r.fault("{kind: duplicate, duration_s: 2}");
        let seqs: Vec<u64> = r
            .telemetry(3)
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![8, 8, 9, 9, 10]);

        r.fault("{kind: out_of_order, duration_s: 4}");
        let m = r.telemetry(5);
        let seqs: Vec<u64> = m.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![12, 11, 14, 13, 15]);
        let ts: Vec<&str> = m.iter().map(|v| v["ts"].as_str().unwrap()).collect();
        assert!(ts[0] > ts[1], "timestamps arrive out of order: {ts:?}");

        let t_expected = fieldlab_core::time::format_ms(r.now + 3_600_000);
        r.fault("{kind: clock_skew, offset_s: 3600, duration_s: 1}");
        assert_eq!(r.telemetry(1)[0]["ts"], t_expected.as_str());

        r.fault("{kind: burst_flood, multiplier: 50, duration_s: 2}");
        assert_eq!(r.telemetry(3).len(), 101);
    }

    /// Absurd numbers (the API takes any float) saturate instead of overflowing.
    #[test]
    fn huge_durations_and_offsets_saturate() {
        let mut r = Rig::new("TemperatureSensor", vec![]);
        r.fault("{kind: clock_skew, offset_s: 2.2e187, duration_s: 7.3e267}");
        r.fault("{kind: clock_skew, offset_s: 1e300, duration_s: 1e300}");
        assert_eq!(r.telemetry(1).len(), 1);
    }

    #[test]
    fn disconnect_goes_offline_and_comes_back() {
        let mut r = Rig::new("TemperatureSensor", vec![]);
        r.run(1);
        r.fault("{kind: disconnect, duration_s: 3}");
        let m = r.run(5);
        let kinds: Vec<&MsgKind> = m.iter().map(|m| &m.kind).collect();
        assert_eq!(kinds[..2], [&MsgKind::Status, &MsgKind::Disconnect]);
        assert!(String::from_utf8_lossy(&m[0].payload).contains("offline"));
        assert_eq!(kinds[2..4], [&MsgKind::Reconnect, &MsgKind::Status]);
        assert_eq!(m.iter().filter(|m| m.kind == MsgKind::Telemetry).count(), 2);
        assert_eq!(r.shard.get("d").unwrap().state(), DeviceState::Running);
    }

    #[test]
    fn bad_fault_requests_are_explained() {
        let r = Rig::new("TemperatureSensor", vec![]);
        let d = r.shard.get("d").unwrap();
        let e = make_fault(d, FaultSpec::default(), 1, 0).unwrap_err();
        assert!(e.contains("spike, dip"), "{e}");
        let s = FaultSpec {
            kind: Some(K::Spike),
            field: Some("volts".into()),
            ..Default::default()
        };
        assert!(make_fault(d, s, 1, 0)
            .unwrap_err()
            .contains("temperature, humidity"));
    }

    #[test]
    fn a_device_is_small() {
        // The per-device cost that decides whether a million devices fit in memory.
        assert!(
            std::mem::size_of::<Device>() <= 256,
            "{}",
            std::mem::size_of::<Device>()
        );
    }
}
