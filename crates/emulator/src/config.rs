//! `devices:` of fieldlab.yaml: the emulated fleet, its device types and how it connects.
//!
//! Why here: the emulator is the one reader of these keys. [`DevicesConfig`]'s checks are the
//! ones that need no catalog (counts, names, positive intervals); what needs the catalog of
//! device types (a known type, scenario parameters, custom types) is
//! [`crate::validate_devices`], run by `fieldlab config check` and at start-up.

use fieldlab_core::config::{validate_at, Problem, Section};
use fieldlab_mqtt_tls::MqttTlsConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How emulated devices connect to the broker.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum ConnectionMode {
    PerDevice,
    Shared,
}
fieldlab_core::config_words!(ConnectionMode);

/// MQTT protocol version of the device connections.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum MqttProtocol {
    #[strum(serialize = "3.1.1")]
    V311,
    #[strum(serialize = "5")]
    V5,
}
fieldlab_core::config_words!(MqttProtocol);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Upper bound on emulated devices (seed: MAX_DEVICES).
    pub max_devices: usize,
    /// Seed of the emulator's random generators; the same seed gives the same values.
    pub seed: u64,
    /// The emulated fleet, in the legacy emulator's devices.yaml shape. Absent: the default
    /// fleet (TemperatureSensor, PressureValve and one device per renewable-lab station type).
    /// Empty list: no emulated devices.
    pub fleet: Option<Vec<DeviceSpec>>,
    /// Custom device types built from value generators (checked by the emulator, which
    /// names the key of a bad entry; see `fieldlab devices types`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<serde_yaml::Value>,
    /// `per_device`: one MQTT connection (own client id, last will) per device.
    /// `shared`: devices share a few connections, for fleets of 10k+ devices.
    pub connection: ConnectionMode,
    /// Number of connections in `shared` mode.
    pub shared_connections: usize,
    /// MQTT protocol of the device connections: `3.1.1` or `5`.
    pub protocol: MqttProtocol,
    /// Telemetry topic of devices without `mqtt_topic`; `{type}` and `{id}` are replaced.
    pub topic_template: String,
    /// MQTT over TLS for the device connections. Unset: plain TCP.
    pub tls: Option<MqttTlsConfig>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            max_devices: 1000,
            seed: 42,
            fleet: None,
            types: Vec::new(),
            connection: ConnectionMode::PerDevice,
            shared_connections: 4,
            protocol: MqttProtocol::V311,
            topic_template: "devices/{type}/{id}/telemetry".into(),
            tls: None,
        }
    }
}

impl Section for DevicesConfig {
    fn validate(&self) -> Result<(), Problem> {
        if let Some(t) = &self.tls {
            validate_at("tls", t)?;
        }
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        if fleet.len() > self.max_devices {
            return Problem::at(
                "fleet",
                format!(
                    "{} devices exceed devices.max_devices = {}",
                    fleet.len(),
                    self.max_devices
                ),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in fleet.iter().enumerate() {
            if d.name.is_empty() || d.name.contains(['/', '+', '#']) {
                return Problem::at(
                    format!("fleet[{i}].name"),
                    "must be non-empty and must not contain '/', '+' or '#'",
                );
            }
            if !names.insert(d.name.as_str()) {
                return Problem::at(
                    format!("fleet[{i}].name"),
                    format!("device `{}` is defined twice", d.name),
                );
            }
            if !(d.config.update_interval > 0.0 && d.config.update_interval.is_finite()) {
                return Problem::at(
                    format!("fleet[{i}].config.update_interval"),
                    "must be a positive number of seconds",
                );
            }
            for (j, s) in d.scenarios.iter().enumerate() {
                if !(s.duration > 0.0 && s.duration.is_finite()) {
                    return Problem::at(
                        format!("fleet[{i}].scenarios[{j}].duration"),
                        "must be a positive number of seconds",
                    );
                }
            }
        }
        Ok(())
    }
}

/// One emulated device, in the shape of the legacy emulator's devices.yaml. Also the body of
/// `POST /api/devices` and the `config` of a device the API shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub name: String,
    /// A type of `fieldlab devices types` (built-in or custom).
    #[serde(rename = "type")]
    #[schema(examples("TemperatureSensor", "PressureValve"))]
    pub device_type: String,
    #[serde(default)]
    pub config: DeviceSettings,
    #[serde(default)]
    pub scenarios: Vec<ScenarioSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSettings {
    /// Topic override (default `devices/<type>/<name>/telemetry`).
    pub mqtt_topic: Option<String>,
    /// Seconds between messages.
    pub update_interval: f64,
    /// Clamp of the device's main value.
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    /// Free-form tags stored with the device's series (site, line, ...).
    pub tags: BTreeMap<String, String>,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings {
            mqtt_topic: None,
            update_interval: 1.0,
            min_value: None,
            max_value: None,
            tags: BTreeMap::new(),
        }
    }
}

/// One phase of a device's scenario timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    pub name: String,
    /// Seconds the phase lasts.
    pub duration: f64,
    /// Phase parameters, e.g. `temperature_range: [45, 50]` (`<field>_range: [lo, hi]`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_yaml::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document's example device types are types of the catalog.
    #[test]
    fn example_device_types_are_in_the_catalog() {
        let schema = serde_json::to_value(<DeviceSpec as utoipa::PartialSchema>::schema()).unwrap();
        let examples = schema["properties"]["type"]["examples"].as_array().unwrap();
        assert!(!examples.is_empty());
        let names: Vec<&str> = crate::model::catalog().iter().map(|t| t.name).collect();
        for e in examples {
            assert!(
                names.contains(&e.as_str().unwrap()),
                "{e} is not a device type"
            );
        }
    }
}
