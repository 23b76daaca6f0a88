//! Running devices: one lightweight tokio task and one MQTT connection per device.
//!
//! Each device connects with its own client id (`fieldlab-<name>`; upstream used one fixed id,
//! so devices kicked each other off the broker), sets a retained last-will `offline` status,
//! publishes a retained `online` status on every (re)connect, and then one fieldlab JSON message
//! per `update_interval` with its own sequence number and send timestamp, so loss and latency
//! can be measured downstream.

use crate::model::{self, type_info};
use crate::scenario::Timeline;
use fieldlab_core::config::{DeviceSettings, DeviceSpec, Qos, ScenarioSpec};
use fieldlab_core::DeviceDirectory;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct EmulatorSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub qos: Qos,
    pub seed: u64,
}

/// The demo fleet of `fieldlab up` when the config names none: one device of each kind the
/// seeds start with, in the seed's devices.yaml shape.
pub fn demo_fleet() -> Vec<DeviceSpec> {
    let dev = |name: &str, ty: &str, site: &str, scenarios: Vec<ScenarioSpec>| DeviceSpec {
        name: name.into(),
        device_type: ty.into(),
        config: DeviceSettings {
            tags: [("site".to_string(), site.to_string())].into(),
            ..DeviceSettings::default()
        },
        scenarios,
    };
    let range = |k: &str, lo: f64, hi: f64| {
        let mut m = std::collections::BTreeMap::new();
        m.insert(k.to_string(), serde_yaml::to_value([lo, hi]).expect("yaml"));
        m
    };
    vec![
        dev(
            "temperature_sensor_1",
            "TemperatureSensor",
            "factory",
            vec![
                ScenarioSpec {
                    name: "normal_operation".into(),
                    duration: 3600.0,
                    parameters: range("temperature_range", 18.0, 25.0),
                },
                ScenarioSpec {
                    name: "high_temperature_alert".into(),
                    duration: 300.0,
                    parameters: range("temperature_range", 45.0, 50.0),
                },
            ],
        ),
        dev("pressure_valve_1", "PressureValve", "factory", vec![]),
        dev("pv_inverter_1", "PvInverter", "renewable-lab", vec![]),
    ]
}

/// Check a fleet against the catalog. Errors carry the dotted config key.
pub fn validate_fleet(fleet: &[DeviceSpec]) -> Result<(), (String, String)> {
    for (i, d) in fleet.iter().enumerate() {
        let info = type_info(&d.device_type).ok_or_else(|| {
            (
                format!("devices.fleet[{i}].type"),
                format!(
                    "unknown device type `{}`; built-in types: {}",
                    d.device_type,
                    model::catalog()
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        Timeline::from_specs(&d.scenarios, &info.field_names())
            .map_err(|(j, m)| (format!("devices.fleet[{i}].scenarios[{j}].parameters"), m))?;
    }
    Ok(())
}

/// The telemetry topic of a device.
pub fn telemetry_topic(d: &DeviceSpec) -> String {
    d.config
        .mqtt_topic
        .clone()
        .unwrap_or_else(|| format!("devices/{}/{}/telemetry", d.device_type, d.name))
}

fn status_topic(d: &DeviceSpec) -> String {
    format!("devices/{}/{}/status", d.device_type, d.name)
}

/// Running emulated devices.
pub struct Emulator {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Emulator {
    /// Publish `offline` for every device, disconnect, and wait for the tasks.
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
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
    validate_fleet(&fleet).map_err(|(k, m)| format!("{k}: {m}"))?;
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    for d in fleet {
        directory.register_emulated(&d.name, &d.device_type);
        tasks.push(tokio::spawn(run_device(s.clone(), d, cancel.clone())));
    }
    Ok(Emulator { cancel, tasks })
}

fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

async fn run_device(s: EmulatorSettings, d: DeviceSpec, cancel: CancellationToken) {
    let info = type_info(&d.device_type).expect("validated");
    let mut model = model::build(&d.device_type, &d.config).expect("validated");
    let timeline = Timeline::from_specs(&d.scenarios, &info.field_names()).expect("validated");
    let mut h = DefaultHasher::new();
    d.name.hash(&mut h);
    let mut rng = SmallRng::seed_from_u64(s.seed ^ h.finish());

    let topic = telemetry_topic(&d);
    let status = status_topic(&d);
    let status_msg = |state: &str| {
        serde_json::json!({"device_id": d.name, "device_type": d.device_type, "status": state})
            .to_string()
    };
    let mut opts = MqttOptions::new(format!("fieldlab-{}", d.name), s.host.clone(), s.port);
    opts.set_keep_alive(s.keep_alive)
        .set_last_will(LastWill::new(
            status.clone(),
            status_msg("offline"),
            QoS::AtLeastOnce,
            true,
        ));
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut el) = AsyncClient::new(opts, 256);
    let period = Duration::from_secs_f64(d.config.update_interval);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = fieldlab_core::time::now_ms();
    let mut last_ms: Option<i64> = None;
    let mut seq: u64 = 0;
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    let _ = client.try_publish(status.clone(), QoS::AtLeastOnce, true, status_msg("online"));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(device = %d.name, error = %e, "device lost the broker; reconnecting");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            },
            _ = tick.tick() => {
                let now = fieldlab_core::time::now_ms();
                let dt = last_ms.map_or(d.config.update_interval, |l| (now - l) as f64 / 1000.0);
                last_ms = Some(now);
                let phase = timeline.phase_at(now - started);
                let empty = Default::default();
                let ranges = phase.map_or(&empty, |p| &p.ranges);
                let data: serde_json::Map<String, serde_json::Value> =
                    model::sample(model.as_mut(), now, dt, ranges, &mut rng)
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_json()))
                        .collect();
                seq += 1;
                let mut payload = serde_json::json!({
                    "device_id": d.name,
                    "device_type": d.device_type,
                    "seq": seq,
                    "ts": fieldlab_core::time::format_ms(now),
                    "data": data,
                    "status": "operational",
                });
                if !d.config.tags.is_empty() {
                    payload["tags"] = serde_json::json!(d.config.tags);
                }
                if let Some(p) = phase {
                    payload["scenario"] = serde_json::Value::String(p.name.clone());
                }
                // A full request queue means the broker is unreachable: the message is lost,
                // as it would be on a real device with a small buffer; `seq` shows the gap.
                let _ = client.try_publish(topic.clone(), qos(s.qos), false, payload.to_string());
            }
        }
    }
    let _ = client.try_publish(
        status.clone(),
        QoS::AtLeastOnce,
        true,
        status_msg("offline"),
    );
    let _ = client.try_disconnect();
    let drain = async {
        while let Ok(ev) = el.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_fleet_is_valid_and_has_the_three_kinds() {
        let f = demo_fleet();
        validate_fleet(&f).unwrap();
        let types: Vec<&str> = f.iter().map(|d| d.device_type.as_str()).collect();
        assert_eq!(
            types,
            vec!["TemperatureSensor", "PressureValve", "PvInverter"]
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
