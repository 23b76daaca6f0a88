//! Fault injection: bad data on purpose, switched on per device at run time.
//!
//! Students learn what bad sensor data looks like, and detectors are scored, only if the bad
//! data is realistic and its ground truth is known. A fault changes what a device publishes —
//! a value (spike, dip, stuck-at, drift, NaN/null, unit switch), the shape of the message
//! (schema break), or the stream of messages (dropout, duplicate, out-of-order, clock skew,
//! burst flood, disconnect) — and is recorded as an annotation outside the payload
//! (`fieldlab_store::annotations`), never as a flag inside it.
//!
//! This module is pure: [`FaultSpec`] is what the user asks for, [`ActiveFault`] its state,
//! and the `apply_*` functions transform a sample; the runner decides when.

use fieldlab_core::FieldValue;
use serde::{Deserialize, Serialize};

/// The kinds of fault, as written in the API (`snake_case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumCount, utoipa::ToSchema)]
#[strum(serialize_all = "snake_case")]
pub enum FaultKind {
    /// Add `magnitude` to the field.
    Spike,
    /// Subtract `magnitude` from the field.
    Dip,
    /// Freeze the field at `value` (default: its value when the fault starts).
    StuckAt,
    /// Add `rate_per_s` × seconds since the fault started.
    Drift,
    /// Send nothing (the sequence numbers still advance, so the gap is visible).
    Dropout,
    /// Send every message twice (same `seq`).
    Duplicate,
    /// Swap consecutive messages, so timestamps arrive out of order.
    OutOfOrder,
    /// Shift the payload timestamp by `offset_s`.
    ClockSkew,
    /// Replace the field by `null` (`mode: null`, default) or a bare `NaN` token (`mode: nan`,
    /// which is not valid JSON — as some devices really send it).
    Nan,
    /// Convert the field to another unit: °C -> °F for temperatures, else × `factor` (1000).
    UnitSwitch,
    /// Rename the field to `rename_to` (default `<field>_v2`), or drop it with `mode: missing`.
    SchemaBreak,
    /// Send `multiplier` (default 20) messages per interval instead of one.
    BurstFlood,
    /// Drop the MQTT connection for the fault's duration, then reconnect.
    Disconnect,
}

impl FaultKind {
    pub const ALL: [FaultKind; <FaultKind as strum::EnumCount>::COUNT] = [
        FaultKind::Spike,
        FaultKind::Dip,
        FaultKind::StuckAt,
        FaultKind::Drift,
        FaultKind::Dropout,
        FaultKind::Duplicate,
        FaultKind::OutOfOrder,
        FaultKind::ClockSkew,
        FaultKind::Nan,
        FaultKind::UnitSwitch,
        FaultKind::SchemaBreak,
        FaultKind::BurstFlood,
        FaultKind::Disconnect,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What the kind does, in a few words: the label the UI's fault form shows (it reads them
    /// from `GET /api/v1/emulator/fault-kinds`, so this is the one list).
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Spike => "Spike: one value far off",
            FaultKind::Dip => "Dip: one value far below",
            FaultKind::StuckAt => "Stuck-at: the value stops changing",
            FaultKind::Drift => "Drift: a slowly growing offset",
            FaultKind::Dropout => "Dropout: a gap without messages",
            FaultKind::Duplicate => "Duplicate messages",
            FaultKind::OutOfOrder => "Out-of-order timestamps",
            FaultKind::ClockSkew => "Clock skew",
            FaultKind::Nan => "NaN / null values",
            FaultKind::UnitSwitch => "Unit switch (°C → °F)",
            FaultKind::SchemaBreak => "Schema break (renamed field)",
            FaultKind::BurstFlood => "Burst flood",
            FaultKind::Disconnect => "Disconnect / reconnect",
        }
    }

    /// Does this kind act on one field (and so need `field`)?
    pub fn needs_field(self) -> bool {
        matches!(
            self,
            FaultKind::Spike
                | FaultKind::Dip
                | FaultKind::StuckAt
                | FaultKind::Drift
                | FaultKind::Nan
                | FaultKind::UnitSwitch
                | FaultKind::SchemaBreak
        )
    }
}

/// What the user asks for (`POST /api/v1/devices/{id}/faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: Option<FaultKind>,
    /// The field a value fault acts on; default: the type's first field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds the fault lasts; absent: until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A fault switched on for one device.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ActiveFault {
    /// The annotation id (ground truth) of this fault.
    pub id: u64,
    pub kind: FaultKind,
    /// The affected field (value faults) or `None` (stream faults).
    #[schema(value_type = Option<String>)]
    pub field: Option<&'static str>,
    /// Unit of the field, for unit switches.
    #[serde(skip)]
    pub unit: &'static str,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub spec: FaultSpec,
    /// Stuck-at: the frozen value, captured at the first sample.
    #[serde(skip)]
    pub stuck: Option<f64>,
}

impl ActiveFault {
    pub fn active_at(&self, t_ms: i64) -> bool {
        t_ms >= self.start_ms && self.end_ms.is_none_or(|e| t_ms < e)
    }
}

/// A value in an outgoing payload: a field value, or a deliberately broken one.
#[derive(Debug, Clone, PartialEq)]
pub enum OutValue {
    V(FieldValue),
    Null,
    /// A bare `NaN` token (not valid JSON).
    NanToken,
}

impl OutValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            OutValue::V(v) => v.as_f64(),
            _ => None,
        }
    }
}

/// Apply one value fault to a sample (field name, value) list, at time `t_ms`.
pub fn apply_value_fault(f: &mut ActiveFault, t_ms: i64, sample: &mut Vec<(String, OutValue)>) {
    let Some(field) = f.field else { return };
    let Some(pos) = sample.iter().position(|(k, _)| k == field) else {
        return;
    };
    let num = sample[pos].1.as_f64();
    let set = |v: f64| OutValue::V(FieldValue::F64(v));
    let new = match (f.kind, num) {
        (FaultKind::Spike, Some(x)) => set(x + f.spec.magnitude.unwrap_or(10.0 * x.abs().max(1.0))),
        (FaultKind::Dip, Some(x)) => set(x - f.spec.magnitude.unwrap_or(10.0 * x.abs().max(1.0))),
        (FaultKind::StuckAt, Some(x)) => {
            let v = *f.stuck.get_or_insert(f.spec.value.unwrap_or(x));
            set(v)
        }
        (FaultKind::Drift, Some(x)) => {
            let secs = (t_ms - f.start_ms) as f64 / 1000.0;
            set(x + f.spec.rate_per_s.unwrap_or(0.1) * secs)
        }
        (FaultKind::Nan, _) => match f.spec.mode.as_deref() {
            Some("nan") => OutValue::NanToken,
            _ => OutValue::Null,
        },
        (FaultKind::UnitSwitch, Some(x)) => {
            if f.unit == "°C" && f.spec.factor.is_none() {
                set(x * 9.0 / 5.0 + 32.0)
            } else {
                set(x * f.spec.factor.unwrap_or(1000.0))
            }
        }
        (FaultKind::SchemaBreak, _) => {
            if f.spec.mode.as_deref() == Some("missing") {
                sample.remove(pos);
            } else {
                sample[pos].0 = f
                    .spec
                    .rename_to
                    .clone()
                    .unwrap_or_else(|| format!("{field}_v2"));
            }
            return;
        }
        _ => return,
    };
    sample[pos].1 = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, spec: FaultSpec) -> ActiveFault {
        ActiveFault {
            id: 1,
            kind,
            field: Some("temperature"),
            unit: "°C",
            start_ms: 1000,
            end_ms: Some(5000),
            spec,
            stuck: None,
        }
    }

    fn one(kind: FaultKind, spec: FaultSpec, x: f64, t: i64) -> Vec<(String, OutValue)> {
        let mut f = fault(kind, spec);
        let mut s = vec![
            ("temperature".to_string(), OutValue::V(FieldValue::F64(x))),
            ("humidity".to_string(), OutValue::V(FieldValue::F64(50.0))),
        ];
        apply_value_fault(&mut f, t, &mut s);
        s
    }

    #[test]
    fn value_faults_change_only_their_field() {
        let m = FaultSpec {
            magnitude: Some(30.0),
            ..Default::default()
        };
        assert_eq!(
            one(FaultKind::Spike, m.clone(), 20.0, 1000)[0].1.as_f64(),
            Some(50.0)
        );
        assert_eq!(
            one(FaultKind::Dip, m, 20.0, 1000)[0].1.as_f64(),
            Some(-10.0)
        );
        let d = FaultSpec {
            rate_per_s: Some(0.5),
            ..Default::default()
        };
        assert_eq!(
            one(FaultKind::Drift, d, 20.0, 5000)[0].1.as_f64(),
            Some(22.0)
        );
        assert_eq!(
            one(FaultKind::UnitSwitch, FaultSpec::default(), 100.0, 1000)[0]
                .1
                .as_f64(),
            Some(212.0)
        );
        assert_eq!(
            one(FaultKind::Nan, FaultSpec::default(), 1.0, 1000)[0].1,
            OutValue::Null
        );
        let s = one(FaultKind::SchemaBreak, FaultSpec::default(), 1.0, 1000);
        assert_eq!(s[0].0, "temperature_v2");
        let s = one(FaultKind::Spike, FaultSpec::default(), 1.0, 1000);
        assert_eq!(s[1].1.as_f64(), Some(50.0), "other fields untouched");
    }

    #[test]
    fn stuck_at_freezes_the_first_value() {
        let mut f = fault(FaultKind::StuckAt, FaultSpec::default());
        for (x, t) in [(20.0, 1000), (25.0, 2000), (30.0, 3000)] {
            let mut s = vec![("temperature".to_string(), OutValue::V(FieldValue::F64(x)))];
            apply_value_fault(&mut f, t, &mut s);
            assert_eq!(s[0].1.as_f64(), Some(20.0));
        }
        assert!(f.active_at(4999) && !f.active_at(5000) && !f.active_at(999));
    }
}
