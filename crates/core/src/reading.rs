//! Readings and points: what a device says, and what the store keeps.
//!
//! A [`Reading`] is one message from one device: several named fields at one instant. The store
//! does not keep readings; it keeps [`Point`]s, one per field, under a [`SeriesKey`]
//! (`device_id` + `field`) with the series' [`Tags`]. Ingest makes that split in
//! [`crate::SeriesCache`], straight into columnar batches; `Reading::into_points` is its plain form.
//!
//! Series names are `Arc<str>`: a reading's device id and type are shared by all its points,
//! and ingest shares the names of a stream across its batches ([`Names`]), so splitting a
//! reading allocates nothing per point (on the gateway-shaped benchmark the per-point string
//! copies, and freeing them on the store's thread, were ~10% of the CPU). Serialised (WAL,
//! blocks, JSON) they are plain strings, as before.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// A field value as it arrived. Numbers that were integers in JSON stay integers so that
/// counters are not silently turned into floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(String),
}

impl FieldValue {
    /// The value as a number for aggregations: booleans are 0/1, strings have none.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::F64(v) => Some(*v),
            FieldValue::I64(v) => Some(*v as f64),
            FieldValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            FieldValue::Str(_) => None,
        }
    }

    /// The value as JSON, for the HTTP API. Non-finite floats become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::F64(v) => serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            FieldValue::I64(v) => serde_json::Value::from(*v),
            FieldValue::Bool(b) => serde_json::Value::Bool(*b),
            FieldValue::Str(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// Verdict series: what the watch stage decided about each stored reading, stored beside it.
///
/// For a field `F` of a reading, the anomaly score of the live detector is stored as field
/// `F#anomaly` (0..1, rounded to 0.001; absent when the value was not scored: booleans, text,
/// readings a whole-reading rule refused) and the quality rules it broke as `F#quality`
/// (comma-separated rule names; absent when it broke none), at the reading's timestamp, in the
/// same batch, so they are acknowledged with it. Devices may not name a field with `#`
/// (ingest refuses it), so verdict series never collide with device data; queries and series
/// listings leave them out unless asked (`with=quality,anomaly`).
pub mod verdict {
    /// Separates a field from the verdict kind in a verdict series' field name.
    pub const SEP: char = '#';
    /// The quality rules a reading broke.
    pub const QUALITY: &str = "quality";
    /// The live detector's anomaly score.
    pub const ANOMALY: &str = "anomaly";

    /// The field name of `field`'s verdict series of this kind.
    pub fn series_field(field: &str, kind: &str) -> String {
        format!("{field}{SEP}{kind}")
    }

    /// Whether a field name is a verdict series' (devices cannot use [`SEP`]).
    pub fn is_verdict(field: &str) -> bool {
        field.contains(SEP)
    }

    /// A score as stored: rounded to 0.001, which is all a threshold needs and what the
    /// store's decimal codec compresses to a few bits.
    pub fn stored_score(score: f64) -> f64 {
        (score.clamp(0.0, 1.0) * 1000.0).round() / 1000.0
    }
}

/// The identity of a stored series: one field of one device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub device_id: Arc<str>,
    pub field: Arc<str>,
}

impl SeriesKey {
    /// A key from any two names (copied; build the struct directly to share `Arc`s).
    pub fn new(device_id: impl AsRef<str>, field: impl AsRef<str>) -> Self {
        SeriesKey {
            device_id: Arc::from(device_id.as_ref()),
            field: Arc::from(field.as_ref()),
        }
    }
}

impl Tags {
    /// All tags as one flat map, `device_type` included, for APIs and exports.
    pub fn flat(&self) -> BTreeMap<String, String> {
        let mut m = self.extra.clone();
        m.insert("device_type".into(), self.device_type.to_string());
        m
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.device_id, self.field)
    }
}

/// Descriptive labels of a series. `device_type` is always present; the rest (site, unit, ...)
/// are free-form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tags {
    pub device_type: Arc<str>,
    /// (No `skip_serializing_if` here: the WAL and blocks use postcard, which needs every
    /// field present.)
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// One stored sample: a value of one series at one instant (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub key: SeriesKey,
    pub tags: Tags,
    pub ts_ms: i64,
    pub value: FieldValue,
}

/// One message of one device, after parsing, in whatever payload format it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: String,
    pub device_type: String,
    /// Sample time in milliseconds since the Unix epoch (send time if the payload had one,
    /// otherwise the time of receipt).
    pub ts_ms: i64,
    /// The device's own sequence number, if it sent one.
    pub seq: Option<u64>,
    pub fields: Vec<(String, FieldValue)>,
    /// Optional per-field units (legacy emulator payloads carry them).
    pub units: BTreeMap<String, String>,
    /// Series tags sent with the message (site, line, ...), stored with every field's series.
    pub tags: BTreeMap<String, String>,
    pub status: Option<String>,
}

impl Reading {
    /// Split the reading into one point per field (the plain form of what
    /// [`crate::SeriesCache`] does for ingest's batches; tests hold the two equal).
    pub fn into_points(self) -> Vec<Point> {
        let Reading {
            device_id,
            device_type,
            ts_ms,
            fields,
            units,
            tags,
            ..
        } = self;
        let device_id: Arc<str> = device_id.into();
        let device_type: Arc<str> = device_type.into();
        fields
            .into_iter()
            .map(|(field, value)| {
                let mut extra = tags.clone();
                if let Some(u) = units.get(&field) {
                    extra.insert("unit".to_string(), u.clone());
                }
                Point {
                    key: SeriesKey {
                        device_id: device_id.clone(),
                        field: field.into(),
                    },
                    tags: Tags {
                        device_type: device_type.clone(),
                        extra,
                    },
                    ts_ms,
                    value,
                }
            })
            .collect()
    }
}

/// Interned series names (device ids, types, field names): one `Arc<str>` per distinct name,
/// cloned for every point that uses it. Bounded: when full it starts afresh (the names in
/// use stay alive in their points), so a stream of ever-new device ids cannot grow it.
#[derive(Default)]
pub struct Names {
    set: HashSet<Arc<str>, foldhash::fast::RandomState>,
}

impl Names {
    /// Past this many names the set is cleared.
    pub const MAX: usize = 16_384;

    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.set.get(name) {
            return a.clone();
        }
        if self.set.len() >= Self::MAX {
            self.set.clear();
        }
        let a: Arc<str> = Arc::from(name);
        self.set.insert(a.clone());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_splits_into_one_point_per_field_with_units() {
        let mut units = BTreeMap::new();
        units.insert("temperature".into(), "°C".into());
        let r = Reading {
            device_id: "t1".into(),
            device_type: "TemperatureSensor".into(),
            ts_ms: 1000,
            seq: Some(1),
            fields: vec![
                ("temperature".into(), FieldValue::F64(21.5)),
                ("door_open".into(), FieldValue::Bool(false)),
            ],
            units,
            tags: [("site".to_string(), "lab".to_string())].into(),
            status: None,
        };
        let pts = r.into_points();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].key, SeriesKey::new("t1", "temperature"));
        assert_eq!(
            pts[0].tags.extra.get("unit").map(String::as_str),
            Some("°C")
        );
        assert_eq!(pts[1].tags.extra.len(), 1);
        assert_eq!(
            pts[0].tags.extra.get("site").map(String::as_str),
            Some("lab")
        );
        assert_eq!(pts[1].value.as_f64(), Some(0.0));
        // One device id for both points, and the same name again from `Names`.
        assert!(Arc::ptr_eq(&pts[0].key.device_id, &pts[1].key.device_id));
        let mut names = Names::default();
        let a = names.get("temperature");
        assert!(Arc::ptr_eq(&a, &names.get("temperature")));
        assert_eq!(&*a, "temperature");
    }

    #[test]
    fn names_stay_bounded() {
        let mut names = Names::default();
        for i in 0..Names::MAX + 10 {
            names.get(&format!("d{i}"));
        }
        assert!(names.set.len() <= Names::MAX);
        // Series keys serialise as plain strings.
        let k = SeriesKey::new("t1", "temperature");
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            r#"{"device_id":"t1","field":"temperature"}"#
        );
    }

    #[test]
    fn non_finite_floats_serialise_as_null() {
        assert_eq!(FieldValue::F64(f64::NAN).to_json(), serde_json::Value::Null);
        assert_eq!(FieldValue::I64(3).to_json(), serde_json::json!(3));
    }
}
