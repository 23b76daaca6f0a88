//! What an emulator is started with: its clock and settings, the default fleet, and the checks
//! of device specs (type, fields, scenarios) that config, the API and the CLI share.

use super::*;

/// Where "now" comes from: the system clock, or a clock a test moves by hand.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => fieldlab_core::time::now_ms(),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmulatorSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub qos: Qos,
    pub seed: u64,
    pub connection: ConnectionMode,
    /// Connections per shard in `shared` mode.
    pub shared_connections: usize,
    pub protocol: MqttProtocol,
    pub topic_template: String,
    /// Shard tasks (default: number of CPUs).
    pub shards: usize,
    pub max_devices: usize,
    pub clock: Clock,
    /// MQTT over TLS (built once by [`crate::tls::client_config`], shared by every connection).
    pub tls: Option<rumqttc::TlsConfiguration>,
}

impl EmulatorSettings {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        EmulatorSettings {
            host: host.into(),
            port,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(60),
            qos: Qos::AtLeastOnce,
            seed: 42,
            connection: ConnectionMode::PerDevice,
            shared_connections: 4,
            protocol: MqttProtocol::V311,
            topic_template: "devices/{type}/{id}/telemetry".into(),
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_devices: usize::MAX,
            clock: Clock::System,
            tls: None,
        }
    }
}

/// The default fleet of `fieldlab up` when the config names none: the three devices the legacy
/// emulator starts with (in its devices.yaml shape), and one device of each of the renewable
/// lab's seven station types, so every station of the lab's floor map is live on first start.
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
        dev("wind_turbine_1", "WindTurbine", "renewable-lab", vec![]),
        dev("biogas_plant_1", "BiogasPlant", "renewable-lab", vec![]),
        dev("heat_boiler_1", "HeatBoiler", "renewable-lab", vec![]),
        dev("energy_storage_1", "EnergyStorage", "renewable-lab", vec![]),
        dev(
            "engine_test_bench_1",
            "EngineTestBench",
            "renewable-lab",
            vec![],
        ),
        dev("algae_farm_1", "AlgaeFarm", "renewable-lab", vec![]),
    ]
}

/// Check one device against the catalog. Errors carry the key below the device.
pub fn validate_device(d: &DeviceSpec) -> Result<(), (String, String)> {
    if d.name.is_empty() || d.name.contains(['/', '+', '#']) {
        return Err((
            "name".into(),
            "must be non-empty and must not contain '/', '+' or '#'".into(),
        ));
    }
    let info = type_info(&d.device_type).ok_or_else(|| {
        (
            "type".to_string(),
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
    if !(d.config.update_interval > 0.0 && d.config.update_interval.is_finite()) {
        return Err((
            "config.update_interval".into(),
            "must be a positive number of seconds".into(),
        ));
    }
    Timeline::from_specs(&d.scenarios, &info.field_names())
        .map_err(|(j, m)| (format!("scenarios[{j}].parameters"), m))?;
    Ok(())
}

/// Check a fleet against the catalog. Errors carry the dotted config key.
pub fn validate_fleet(fleet: &[DeviceSpec]) -> Result<(), (String, String)> {
    for (i, d) in fleet.iter().enumerate() {
        validate_device(d).map_err(|(k, m)| (format!("devices.fleet[{i}].{k}"), m))?;
    }
    Ok(())
}

/// Register `devices.types` and check `devices.fleet`: what `fieldlab config check` runs.
pub fn validate_devices(c: &crate::DevicesConfig) -> Result<(), (String, String)> {
    crate::custom::register_yaml(&c.types)?;
    if let Some(f) = &c.fleet {
        validate_fleet(f)?;
    }
    Ok(())
}

/// The telemetry topic of a device under the default template.
pub fn telemetry_topic(d: &DeviceSpec) -> String {
    fleet::topic_for(&FleetOptions::default().topic_template, d, &d.name)
}
