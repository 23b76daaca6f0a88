//! Who may write which device's readings, and how many devices and series ingest takes in.
//!
//! Why it exists: a payload names its device (`device_id`, a line-protocol tag, each element of
//! a JSON array), and a payload is whatever the client sent. Trusting it let any device write
//! into any other device's series, and let one login create devices and series without end
//! (each with detector and quality state) until the process ran out of memory. So:
//!
//! - **Identity.** The topic `devices/<type>/<id>/telemetry` names the *speaker*; with auth on,
//!   the broker's topic ACL lets a device login publish only on its own id's topics (the gate of
//!   the embedded broker, or e.g. Mosquitto's `pattern write devices/+/%u/telemetry`), so the
//!   topic id is the login's id. Every reading of such a message must name that device, unless
//!   the speaker is a configured gateway (`ingest.gateways.<login>.devices`), which may also name
//!   the devices its patterns match. Topics of another shape (a device's own `mqtt_topic`
//!   override) carry no id, so the payload's id is taken, validated; with auth on only
//!   privileged logins may publish there.
//! - **Validity.** Device ids are 1..=128 bytes without control characters, `/`, `+` or `#`
//!   ([`crate::check_device_id`]); device types at most 128 bytes and field names 1..=256 bytes
//!   ([`MAX_FIELD_NAME`]), both without control characters; a reading's tags and its units at
//!   most [`MAX_TAGS`] of [`MAX_TAG_BYTES`] bytes together (each series keeps a copy).
//! - **Cardinality.** At most `max_devices` distinct devices (emulated and external together),
//!   at most `max_devices` of its own per gateway, at most `max_series_per_device` fields per
//!   device. The memory of what was admitted is bounded by those numbers.
//!
//! A message is the unit: one refused reading quarantines the whole message with the reason
//! (never a silent drop), and nothing of it is counted as admitted.

use crate::check_device_id;
use fieldlab_core::Reading;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;

/// What a gateway login may speak for (see `ingest.gateways`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Exact device ids or patterns with `*`.
    pub devices: Vec<String>,
    pub max_devices: usize,
}

impl Gateway {
    /// Whether the gateway may name `id` (its own id is checked by the caller).
    pub fn allows(&self, id: &str) -> bool {
        self.devices.iter().any(|p| glob(p, id))
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: exact.
        return rest.is_empty();
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Ingest's limits (from the `ingest` section of the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_devices: usize,
    pub max_series_per_device: usize,
    /// Gateway logins by name.
    pub gateways: BTreeMap<String, Gateway>,
}

impl Limits {
    /// From `ingest.max_series_per_device` and `ingest.gateways`; `max_devices` is
    /// `ingest.max_devices` resolved by the composed config (else `devices.max_devices`).
    pub fn from_config(c: &crate::IngestConfig, max_devices: usize) -> Limits {
        Limits {
            max_devices,
            max_series_per_device: c.max_series_per_device,
            gateways: c
                .gateways
                .iter()
                .map(|(login, g)| {
                    (
                        login.clone(),
                        Gateway {
                            devices: g.devices.clone(),
                            max_devices: g.max_devices,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_devices: 1000,
            max_series_per_device: 1000,
            gateways: BTreeMap::new(),
        }
    }
}

/// Why a message was refused; `label` is the metric label, `reason` goes to the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub label: &'static str,
    pub reason: String,
}

/// Metric labels of the refusals, in the order they are registered.
pub const REFUSALS: [&str; 6] = [
    "device_mismatch",
    "invalid_device_id",
    "invalid_field",
    "invalid_tags",
    "device_limit",
    "series_limit",
];

/// Most tags (and units) one reading may carry, and their keys' and values' bytes together:
/// each field's series keeps a copy of the reading's tags, so a message of a thousand fields
/// with 100 KB of tags made 100 MB of copies, and every series kept its own.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_BYTES: usize = 2048;

/// The longest field name accepted, in bytes: every name is kept per series (the store's
/// series, the detector state, the metrics of a series), so its size must be bounded by
/// something other than the payload limit.
pub const MAX_FIELD_NAME: usize = 256;

fn refuse(label: &'static str, reason: String) -> Refusal {
    Refusal { label, reason }
}

/// The device id a telemetry topic names, if it has the `devices/<type>/<id>/telemetry` shape.
pub fn topic_device(topic: &str) -> Option<&str> {
    let mut p = topic.split('/');
    match (p.next(), p.next(), p.next(), p.next(), p.next()) {
        (Some("devices"), Some(ty), Some(id), Some("telemetry"), None)
            if !ty.is_empty() && !id.is_empty() =>
        {
            Some(id)
        }
        _ => None,
    }
}

struct Device {
    /// Hashes of the device's field names (8 bytes a series, whatever the name's length).
    series: HashSet<u64>,
}

/// The admission state: bounded by [`Limits`].
pub struct Guard {
    limits: Limits,
    devices: HashMap<Box<str>, Device>,
    /// Devices admitted through each gateway.
    by_gateway: HashMap<String, usize>,
    hasher: std::collections::hash_map::RandomState,
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            devices: HashMap::new(),
            by_gateway: HashMap::new(),
            hasher: Default::default(),
        }
    }

    /// Count `ids` as admitted (devices the store or the emulator already knows at start-up,
    /// so a restart does not open the limit again). More than the limit may be known; then no
    /// new device is admitted.
    pub fn with_known(mut self, ids: impl IntoIterator<Item = String>) -> Guard {
        for id in ids {
            self.devices.entry(id.into()).or_insert_with(|| Device {
                series: HashSet::new(),
            });
        }
        self
    }

    /// Distinct devices admitted so far.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    fn field_hash(&self, field: &str) -> u64 {
        self.hasher.hash_one(field)
    }

    /// Check one parsed message published on `topic`; on `Ok` its new devices and series are
    /// admitted (counted against the limits), on `Err` nothing is.
    pub fn admit(&mut self, topic: &str, readings: &[Reading]) -> Result<(), Refusal> {
        let speaker = topic_device(topic);
        let gateway = speaker.and_then(|s| self.limits.gateways.get(s).map(|g| (s, g)));
        for r in readings {
            check_device_id(&r.device_id).map_err(|m| {
                refuse(
                    "invalid_device_id",
                    format!("invalid device id {:?}: {m}", r.device_id),
                )
            })?;
            if r.device_type.len() > 128 || r.device_type.chars().any(char::is_control) {
                return Err(refuse(
                    "invalid_device_id",
                    format!(
                        "invalid device type for device `{}`: at most 128 bytes without control characters",
                        r.device_id
                    ),
                ));
            }
            for (what, map) in [("tags", &r.tags), ("units", &r.units)] {
                let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
                if map.len() > MAX_TAGS || bytes > MAX_TAG_BYTES {
                    return Err(refuse(
                        "invalid_tags",
                        format!(
                            "too many {what} for device `{}`: {} of {bytes} bytes; a reading carries at most {MAX_TAGS} {what} of {MAX_TAG_BYTES} bytes together",
                            r.device_id,
                            map.len()
                        ),
                    ));
                }
            }
            if let Some((f, _)) = r.fields.iter().find(|(f, _)| {
                f.is_empty() || f.len() > MAX_FIELD_NAME || f.chars().any(char::is_control)
            }) {
                let shown: String = f.chars().take(40).collect();
                return Err(refuse(
                    "invalid_field",
                    format!(
                        "invalid field name {shown:?}{} ({} bytes) of device `{}`: field names are 1..={MAX_FIELD_NAME} bytes without control characters",
                        if shown.len() < f.len() { "..." } else { "" },
                        f.len(),
                        r.device_id
                    ),
                ));
            }
            if let Some((f, _)) = r
                .fields
                .iter()
                .find(|(f, _)| fieldlab_core::reading::verdict::is_verdict(f))
            {
                return Err(refuse(
                    "invalid_field",
                    format!(
                        "invalid field name {f:?} of device `{}`: `{}` is reserved for the lab's verdict series (quality, anomaly); rename the field",
                        r.device_id,
                        fieldlab_core::reading::verdict::SEP
                    ),
                ));
            }
            if let Some(s) = speaker {
                let ok = r.device_id == s || gateway.is_some_and(|(_, g)| g.allows(&r.device_id));
                if !ok {
                    let how = if gateway.is_some() {
                        format!(
                            "gateway `{s}` may speak only for the devices in ingest.gateways.{s}.devices"
                        )
                    } else {
                        format!(
                            "a device may publish only its own readings (a gateway needs an entry ingest.gateways.{s})"
                        )
                    };
                    return Err(refuse(
                        "device_mismatch",
                        format!(
                            "device mismatch: the payload names device `{}` but topic {topic} is device `{s}`'s; {how}",
                            r.device_id
                        ),
                    ));
                }
            }
        }
        // Cardinality, all or nothing: first count what this message would add.
        let mut new_devices: Vec<&str> = Vec::new();
        let mut new_series: HashMap<&str, HashSet<u64>> = HashMap::new();
        for r in readings {
            let known = self.devices.get(r.device_id.as_str());
            if known.is_none() && !new_devices.contains(&r.device_id.as_str()) {
                new_devices.push(&r.device_id);
            }
            let have = known.map_or(0, |d| d.series.len());
            for (field, _) in &r.fields {
                let h = self.field_hash(field);
                if known.is_some_and(|d| d.series.contains(&h)) {
                    continue;
                }
                let add = new_series.entry(r.device_id.as_str()).or_default();
                if add.insert(h) && have + add.len() > self.limits.max_series_per_device {
                    return Err(refuse(
                        "series_limit",
                        format!(
                            "series limit: device `{}` already has {have} series; field `{field}` would pass ingest.max_series_per_device = {}",
                            r.device_id, self.limits.max_series_per_device
                        ),
                    ));
                }
            }
        }
        if !new_devices.is_empty() {
            if self.devices.len() + new_devices.len() > self.limits.max_devices {
                return Err(refuse(
                    "device_limit",
                    format!(
                        "device limit: ingest accepts at most {} distinct devices (ingest.max_devices, else devices.max_devices / MAX_DEVICES) and `{}` would be one more",
                        self.limits.max_devices, new_devices[0]
                    ),
                ));
            }
            if let Some((login, g)) = gateway {
                let mine = self.by_gateway.get(login).copied().unwrap_or(0);
                if mine + new_devices.len() > g.max_devices {
                    return Err(refuse(
                        "device_limit",
                        format!(
                            "device limit: gateway `{login}` may bring in at most {} devices (ingest.gateways.{login}.max_devices) and `{}` would be one more",
                            g.max_devices, new_devices[0]
                        ),
                    ));
                }
            }
        }
        // Admitted: remember.
        if let Some((login, _)) = gateway {
            if !new_devices.is_empty() {
                *self.by_gateway.entry(login.to_string()).or_default() += new_devices.len();
            }
        }
        for id in new_devices {
            self.devices.insert(
                id.into(),
                Device {
                    series: HashSet::new(),
                },
            );
        }
        for (id, hs) in new_series {
            if let Some(d) = self.devices.get_mut(id) {
                d.series.extend(hs);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::FieldValue;

    fn r(id: &str, fields: &[&str]) -> Reading {
        Reading {
            device_id: id.into(),
            device_type: "T".into(),
            ts_ms: 0,
            seq: None,
            fields: fields
                .iter()
                .map(|f| (f.to_string(), FieldValue::F64(1.0)))
                .collect(),
            units: Default::default(),
            tags: Default::default(),
            status: None,
        }
    }

    fn topic(id: &str) -> String {
        format!("devices/T/{id}/telemetry")
    }

    #[test]
    fn globs() {
        assert!(glob("plant1_*", "plant1_a"));
        assert!(glob("plant1_*", "plant1_"));
        assert!(!glob("plant1_*", "plant2_a"));
        assert!(glob("*", "x"));
        assert!(glob("a*c", "abbc"));
        assert!(!glob("a*c", "abbd"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("ab*b", "ab"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn a_device_speaks_only_for_itself() {
        let mut g = Guard::new(Limits::default());
        assert!(g.admit(&topic("dev1"), &[r("dev1", &["t"])]).is_ok());
        let e = g
            .admit(&topic("dev1"), &[r("temperature_sensor_1", &["t"])])
            .unwrap_err();
        assert_eq!(e.label, "device_mismatch");
        assert!(e.reason.contains("temperature_sensor_1"), "{}", e.reason);
        // One bad element refuses the whole batch, and admits nothing of it.
        let e = g
            .admit(&topic("dev1"), &[r("dev1", &["u"]), r("dev2", &["t"])])
            .unwrap_err();
        assert_eq!(e.label, "device_mismatch");
        assert_eq!(g.devices(), 1);
        // A topic without a device id: the payload's id (validated).
        assert!(g.admit("sensors/temperature/1", &[r("t9", &["t"])]).is_ok());
        assert_eq!(
            g.admit("sensors/x", &[r("a\0b", &["t"])])
                .unwrap_err()
                .label,
            "invalid_device_id"
        );
        assert_eq!(
            g.admit("sensors/x", &[r(&"x".repeat(129), &["t"])])
                .unwrap_err()
                .label,
            "invalid_device_id"
        );
    }

    #[test]
    fn field_names_are_bounded_and_printable() {
        let mut g = Guard::new(Limits::default());
        let long = "f".repeat(MAX_FIELD_NAME + 1);
        for bad in ["", "a\nb", long.as_str()] {
            let e = g
                .admit(&topic("dev1"), &[r("dev1", &["t", bad])])
                .unwrap_err();
            assert_eq!(e.label, "invalid_field", "{bad:?}");
            assert!(e.reason.contains("1..=256 bytes"), "{}", e.reason);
            // The reason shows the name's start, not a 100-KB name.
            assert!(e.reason.len() < 200, "{}", e.reason);
        }
        // Tags: a copy goes with every field's series, so they are bounded too.
        let mut tagged = r("dev1", &["t"]);
        tagged.tags.insert("site".into(), "x".repeat(MAX_TAG_BYTES));
        let e = g.admit(&topic("dev1"), &[tagged.clone()]).unwrap_err();
        assert_eq!(e.label, "invalid_tags");
        assert!(e.reason.contains("at most 32 tags"), "{}", e.reason);
        tagged.tags.clear();
        for i in 0..=MAX_TAGS {
            tagged.tags.insert(format!("t{i}"), "v".into());
        }
        assert_eq!(
            g.admit(&topic("dev1"), &[tagged.clone()])
                .unwrap_err()
                .label,
            "invalid_tags"
        );
        tagged.tags.pop_last();
        tagged.units.insert("t".into(), "u".repeat(MAX_TAG_BYTES));
        assert_eq!(
            g.admit(&topic("dev1"), &[tagged.clone()])
                .unwrap_err()
                .label,
            "invalid_tags"
        );
        // Nothing of a refused message was admitted; 32 tags and the longest name are fine.
        assert_eq!(g.devices(), 0);
        tagged.units.clear();
        assert!(g.admit(&topic("dev1"), &[tagged]).is_ok());
        assert_eq!(g.devices(), 1);
        let ok = "f".repeat(MAX_FIELD_NAME);
        assert!(g
            .admit(&topic("dev1"), &[r("dev1", &[ok.as_str()])])
            .is_ok());
    }

    #[test]
    fn a_gateway_speaks_for_its_patterns_up_to_its_cap() {
        let mut limits = Limits::default();
        limits.gateways.insert(
            "gw".into(),
            Gateway {
                devices: vec!["plant1_*".into()],
                max_devices: 3,
            },
        );
        let mut g = Guard::new(limits);
        let ok = [
            r("plant1_a", &["t"]),
            r("plant1_b", &["t"]),
            r("gw", &["up"]),
        ];
        assert!(g.admit(&topic("gw"), &ok).is_ok());
        let e = g.admit(&topic("gw"), &[r("plant2_a", &["t"])]).unwrap_err();
        assert_eq!(e.label, "device_mismatch");
        assert!(g.admit(&topic("gw"), &[r("plant1_c", &["t"])]).is_err());
        let e = g.admit(&topic("gw"), &[r("plant1_c", &["t"])]).unwrap_err();
        assert_eq!(e.label, "device_limit");
        assert!(e.reason.starts_with("device limit"), "{}", e.reason);
        // Known devices keep speaking.
        assert!(g.admit(&topic("gw"), &[r("plant1_a", &["t"])]).is_ok());
    }

    #[test]
    fn devices_and_series_are_capped() {
        let mut g = Guard::new(Limits {
            max_devices: 2,
            max_series_per_device: 2,
            gateways: BTreeMap::new(),
        });
        assert!(g.admit(&topic("a"), &[r("a", &["x", "y"])]).is_ok());
        let e = g.admit(&topic("a"), &[r("a", &["z"])]).unwrap_err();
        assert_eq!(e.label, "series_limit");
        assert!(e.reason.starts_with("series limit"), "{}", e.reason);
        assert!(g.admit(&topic("a"), &[r("a", &["y", "x"])]).is_ok());
        assert!(g.admit(&topic("b"), &[r("b", &["x"])]).is_ok());
        let e = g.admit(&topic("c"), &[r("c", &["x"])]).unwrap_err();
        assert_eq!(e.label, "device_limit");
        assert_eq!(g.devices(), 2);
        // Too many series in one message of a new device: refused, the device not admitted.
        let mut g = Guard::new(Limits {
            max_devices: 2,
            max_series_per_device: 2,
            gateways: BTreeMap::new(),
        });
        let e = g
            .admit(&topic("a"), &[r("a", &["x", "y", "z"])])
            .unwrap_err();
        assert_eq!(e.label, "series_limit");
        assert_eq!(g.devices(), 0);
    }
}
