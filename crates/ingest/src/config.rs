//! `ingest:` of fieldlab.yaml: what ingest subscribes to, how it batches, and what it admits.
//!
//! Why here: these keys configure ingest alone (topology hands them to
//! [`crate::Limits::from_config`] and the subscriber's settings); the device-id rule
//! ([`check_device_id`]) is ingest's too, and the gateway checks use it.

use fieldlab_core::config::{Problem, Qos, Section};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// MQTT protocol version of the ingest connection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(ascii_case_insensitive)]
pub enum MqttVersion {
    #[strum(serialize = "auto")]
    Auto,
    #[strum(serialize = "3.1.1")]
    V311,
    #[strum(serialize = "5")]
    V5,
}
fieldlab_core::config_words!(MqttVersion);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Topic filters ingest subscribes to. Topics of emulated devices with their own
    /// `mqtt_topic` are added automatically.
    pub topics: Vec<String>,
    /// Subscription QoS. 1 (default): a message is acknowledged to the broker only after its
    /// points are durable in the store.
    pub qos: Qos,
    /// Most messages written to the store in one batch.
    pub batch_max: usize,
    /// Shared-subscription group: several fieldlab instances on one external broker with the
    /// same group split the messages between them (`$share/<group>/<filter>`, MQTT 5).
    pub share_group: Option<String>,
    /// MQTT version of the ingest connection: `auto` = 5 for an external broker, 3.1.1 for the
    /// embedded one.
    pub mqtt_version: MqttVersion,
    /// Recent (seq, ts) pairs remembered per device to store a redelivered message once.
    /// 0 turns de-duplication off.
    pub dedup_window: usize,
    /// MQTT connections of this instance's ingest, sharing one shared subscription and one
    /// store writer. A broker caps unacknowledged messages per connection (rumqttd: 100), and
    /// a store batch (one fsync) holds at most what is in flight, so more connections mean
    /// bigger batches — on a broker whose shared subscriptions are cheap (Mosquitto, EMQX,
    /// HiveMQ). 0 = auto = 1: the embedded broker (rumqttd 0.20) routes shared subscriptions
    /// so slowly that 2 connections measured 4x slower than 1 (`fieldlab bench ingest
    /// --connections 2`).
    pub connections: usize,
    /// Most distinct devices ingest accepts, emulated and external together; readings of a
    /// further device are quarantined with reason "device limit". Unset (default): the value
    /// of `devices.max_devices` (environment: MAX_DEVICES).
    pub max_devices: Option<usize>,
    /// Most series (fields) per device; readings adding a further one are quarantined with
    /// reason "series limit".
    pub max_series_per_device: usize,
    /// Memory budget of the per-series detector and per-device quality state, in MiB; the
    /// least recently used state is evicted beyond it (and rebuilt, from a cold start, when
    /// its series speaks again).
    pub state_memory_mb: usize,
    /// Logins that may publish readings of other devices (gateways), by login name. A gateway
    /// publishes on its own topic `devices/<type>/<login>/telemetry`; see [`GatewayConfig`].
    pub gateways: BTreeMap<String, GatewayConfig>,
}

/// What one gateway login may speak for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Device ids the gateway may name in its payloads: exact ids or patterns with `*`
    /// (`plant1_*`). Its own id is always allowed.
    pub devices: Vec<String>,
    /// Most distinct devices this gateway may bring in; readings of a further device are
    /// quarantined with reason "device limit".
    pub max_devices: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            devices: Vec::new(),
            max_devices: 1000,
        }
    }
}

/// A device id ingest accepts: 1 to 128 bytes, no control characters, no MQTT topic level or
/// wildcard characters (`/`, `+`, `#`). `Err` says what is wrong.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the device id is empty".into());
    }
    if id.len() > 128 {
        return Err(format!(
            "the device id is {} bytes long; at most 128 are accepted",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the device id contains the control character U+{:04X}",
            c as u32
        ));
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(format!(
            "the device id contains `{c}`, which MQTT topics reserve"
        ));
    }
    Ok(())
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            topics: vec!["devices/+/+/telemetry".into()],
            qos: Qos::AtLeastOnce,
            batch_max: 4096,
            share_group: None,
            mqtt_version: MqttVersion::Auto,
            dedup_window: 256,
            connections: 0,
            max_devices: None,
            max_series_per_device: 1000,
            state_memory_mb: 256,
            gateways: BTreeMap::new(),
        }
    }
}

impl Section for IngestConfig {
    fn validate(&self) -> Result<(), Problem> {
        if self.topics.is_empty() {
            return Problem::at(
                "topics",
                "needs at least one topic filter, e.g. devices/+/+/telemetry",
            );
        }
        if self.batch_max == 0 {
            return Problem::at("batch_max", "must be at least 1");
        }
        if self.connections > 64 {
            return Problem::at("connections", "must be at most 64 (0 = auto)");
        }
        if self.max_devices == Some(0) {
            return Problem::at(
                "max_devices",
                "must be at least 1 (or unset: devices.max_devices / MAX_DEVICES)",
            );
        }
        if self.max_series_per_device == 0 {
            return Problem::at("max_series_per_device", "must be at least 1");
        }
        if self.state_memory_mb < 8 {
            return Problem::at("state_memory_mb", "must be at least 8 (MiB)");
        }
        for (login, g) in &self.gateways {
            check_device_id(login).map_err(|m| {
                Problem::new(
                    format!("gateways.{login}"),
                    format!(
                        "a gateway is named by its login, which must be a valid device id: {m}"
                    ),
                )
            })?;
            if g.devices.is_empty() {
                return Problem::at(
                    format!("gateways.{login}.devices"),
                    "list the device ids (or patterns such as plant1_*) this gateway may speak for",
                );
            }
            for p in &g.devices {
                check_device_id(p).map_err(|m| {
                    Problem::new(format!("gateways.{login}.devices"), format!("`{p}`: {m}"))
                })?;
            }
            if g.max_devices == 0 {
                return Problem::at(
                    format!("gateways.{login}.max_devices"),
                    "must be at least 1",
                );
            }
        }
        if let Some(g) = &self.share_group {
            if g.is_empty() || g.contains(['/', '+', '#']) {
                return Problem::at(
                    "share_group",
                    "must be non-empty and must not contain '/', '+' or '#'",
                );
            }
            if self.mqtt_version == MqttVersion::V311 {
                return Problem::at(
                    "mqtt_version",
                    "shared subscriptions (ingest.share_group) need MQTT 5; write 5 or auto",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_and_gateways_are_checked() {
        assert!(check_device_id("t1").is_ok());
        assert!(check_device_id("a\0b").unwrap_err().contains("U+0000"));
        assert!(check_device_id(&"x".repeat(129)).is_err());
        assert!(check_device_id("a+b").is_err());
        let mut c = IngestConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.gateways.insert(
            "gw1".into(),
            GatewayConfig {
                devices: vec!["a/b".into()],
                ..GatewayConfig::default()
            },
        );
        let p = c.validate().unwrap_err();
        assert_eq!(p.key, "gateways.gw1.devices");
        assert!(p.message.contains("`a/b`"), "{p:?}");
    }
}
