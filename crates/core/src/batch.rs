//! Batches in columns: how points travel from ingest through the WAL into the head.
//!
//! A gateway's message carries hundreds of readings of a few devices, so a store batch of tens
//! of thousands of points names only tens or hundreds of series. A [`Batch`] names each series
//! once (key and tags) and keeps one small [`Row`] per point (series index, time, value). The
//! WAL then serialises every name once per batch instead of once per point, and the store finds
//! each series in its head once per batch instead of hashing every point's key (on the
//! gateway-shaped benchmark those per-point costs were about a third of the store thread).
//!
//! [`SeriesCache`] builds batches from readings on ingest's side: it remembers, per device, the
//! series of its fields, so a reading costs one hash lookup (its device) and a string compare
//! per field. `Vec<Point>` stays the convenient form for tests and tools
//! ([`Batch::from_points`], [`Batch::points`]).

use crate::reading::{FieldValue, Names, Point, Reading, SeriesKey, Tags};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Points in columns: the distinct series once, then one row per point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The series of the batch with their tags. A key may appear twice if its tags changed
    /// within the batch; the later entry holds the newer tags.
    pub series: Vec<(SeriesKey, Tags)>,
    pub rows: Vec<Row>,
}

/// One point of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Index into [`Batch::series`].
    pub series: u32,
    pub ts_ms: i64,
    pub value: FieldValue,
}

impl Batch {
    /// Points in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A batch of `points`, in their order; equal (key, tags) share one series entry.
    pub fn from_points(points: Vec<Point>) -> Batch {
        let mut b = Batch::default();
        let mut index: HashMap<(SeriesKey, Tags), u32, foldhash::fast::RandomState> =
            HashMap::default();
        let mut last: Option<u32> = None;
        for p in points {
            let same_as_last = last.is_some_and(|i| {
                let (k, t) = &b.series[i as usize];
                *k == p.key && *t == p.tags
            });
            let i = if same_as_last {
                last.unwrap()
            } else {
                let next = b.series.len() as u32;
                let i = *index.entry((p.key.clone(), p.tags.clone())).or_insert(next);
                if i == next {
                    b.series.push((p.key, p.tags));
                }
                i
            };
            last = Some(i);
            b.rows.push(Row {
                series: i,
                ts_ms: p.ts_ms,
                value: p.value,
            });
        }
        b
    }

    /// Every point: (key, tags, time, value), in row order.
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesKey, &Tags, i64, &FieldValue)> {
        self.rows.iter().map(|r| {
            let (k, t) = &self.series[r.series as usize];
            (k, t, r.ts_ms, &r.value)
        })
    }

    /// The batch as points (for sinks and tools; copies the values, shares the names).
    pub fn points(&self) -> Vec<Point> {
        self.iter()
            .map(|(k, t, ts_ms, v)| Point {
                key: k.clone(),
                tags: t.clone(),
                ts_ms,
                value: v.clone(),
            })
            .collect()
    }

    /// True if every row names an existing series (a batch read from disk is checked so).
    pub fn is_consistent(&self) -> bool {
        let n = self.series.len() as u64;
        self.rows.iter().all(|r| (r.series as u64) < n)
    }
}

/// Ingest's memory of the series of each device, to build [`Batch`]es from readings without
/// hashing every point. Bounded like [`Names`]: past [`SeriesCache::MAX_DEVICES`] devices it
/// starts afresh (batches already built keep their names).
#[derive(Default)]
pub struct SeriesCache {
    devices: HashMap<Arc<str>, DeviceSeries, foldhash::fast::RandomState>,
    names: Names,
    batch: Batch,
    /// Numbers the batches built; a field's slot remembers its index in batch `gen`.
    gen: u64,
}

struct DeviceSeries {
    id: Arc<str>,
    device_type: Arc<str>,
    /// The reading tags and units the slots' tags were built from.
    tags: BTreeMap<String, String>,
    units: BTreeMap<String, String>,
    fields: Vec<Slot>,
}

struct Slot {
    key: SeriesKey,
    tags: Tags,
    /// (batch number, index in that batch's series).
    used: (u64, u32),
}

impl SeriesCache {
    /// Devices remembered at most.
    pub const MAX_DEVICES: usize = 16_384;
    /// Fields remembered per device at most.
    const MAX_FIELDS: usize = 4_096;

    /// Add one reading's points (one per field) to the batch being built.
    pub fn push(&mut self, r: Reading) {
        let Reading {
            device_id,
            device_type,
            ts_ms,
            fields,
            units,
            tags,
            ..
        } = r;
        let SeriesCache {
            devices,
            names,
            batch,
            gen,
        } = self;
        let gen = *gen + 1;
        if devices.len() >= Self::MAX_DEVICES && !devices.contains_key(device_id.as_str()) {
            devices.clear();
        }
        let dev = match devices.get_mut(device_id.as_str()) {
            Some(d) => d,
            None => {
                let id = names.get(&device_id);
                devices.entry(id.clone()).or_insert(DeviceSeries {
                    id,
                    device_type: names.get(&device_type),
                    tags: tags.clone(),
                    units: units.clone(),
                    fields: Vec::new(),
                })
            }
        };
        // Tags or type changed: the series' tags are built afresh from this reading.
        if *dev.device_type != *device_type || dev.tags != tags || dev.units != units {
            dev.device_type = names.get(&device_type);
            dev.tags = tags;
            dev.units = units;
            dev.fields.clear();
        }
        for (i, (field, value)) in fields.into_iter().enumerate() {
            // Devices send their fields in the same order every time: try that slot first.
            let j = match dev.fields.get(i) {
                Some(s) if *s.key.field == *field => i,
                _ => match dev.fields.iter().position(|s| *s.key.field == *field) {
                    Some(j) => j,
                    None => {
                        if dev.fields.len() >= Self::MAX_FIELDS {
                            dev.fields.clear();
                        }
                        let mut extra = dev.tags.clone();
                        if let Some(u) = dev.units.get(&field) {
                            extra.insert("unit".to_string(), u.clone());
                        }
                        dev.fields.push(Slot {
                            key: SeriesKey {
                                device_id: dev.id.clone(),
                                field: names.get(&field),
                            },
                            tags: Tags {
                                device_type: dev.device_type.clone(),
                                extra,
                            },
                            used: (0, 0),
                        });
                        dev.fields.len() - 1
                    }
                },
            };
            let slot = &mut dev.fields[j];
            if slot.used.0 != gen {
                slot.used = (gen, batch.series.len() as u32);
                batch.series.push((slot.key.clone(), slot.tags.clone()));
            }
            batch.rows.push(Row {
                series: slot.used.1,
                ts_ms,
                value,
            });
        }
    }

    /// Reserve room for `points` more rows.
    pub fn reserve(&mut self, points: usize) {
        self.batch.rows.reserve(points);
    }

    /// The batch built so far; the next push starts a new one.
    pub fn take(&mut self) -> Batch {
        self.gen += 1;
        std::mem::take(&mut self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(dev: &str, ts: i64, fields: &[(&str, f64)], site: &str) -> Reading {
        Reading {
            device_id: dev.into(),
            device_type: "T".into(),
            ts_ms: ts,
            seq: None,
            fields: fields
                .iter()
                .map(|(f, v)| (f.to_string(), FieldValue::F64(*v)))
                .collect(),
            units: [("temp".to_string(), "°C".to_string())].into(),
            tags: [("site".to_string(), site.to_string())].into(),
            status: None,
        }
    }

    /// The cache builds the same points as splitting each reading, in the same order.
    #[test]
    fn cache_builds_what_into_points_builds() {
        let rs = vec![
            reading("a", 1, &[("temp", 1.0), ("hum", 2.0)], "x"),
            reading("b", 1, &[("temp", 3.0)], "x"),
            reading("a", 2, &[("hum", 4.0), ("temp", 5.0)], "x"),
            reading("a", 3, &[("temp", 6.0), ("new", 7.0)], "y"),
        ];
        let mut c = SeriesCache::default();
        for r in rs.clone() {
            c.push(r);
        }
        let b = c.take();
        assert!(b.is_consistent());
        let want: Vec<Point> = rs.into_iter().flat_map(Reading::into_points).collect();
        assert_eq!(b.points(), want);
        // a/temp, a/hum, b/temp, then a/temp, a/new again with site=y.
        assert_eq!(b.series.len(), 5);
        assert_eq!(b.series[0].1.extra["unit"], "°C");
        // The next batch names its series afresh, with the same shared names.
        c.push(reading("a", 4, &[("temp", 8.0)], "y"));
        let b2 = c.take();
        assert_eq!(b2.series.len(), 1);
        assert_eq!(b2.rows[0].series, 0);
        assert!(Arc::ptr_eq(&b2.series[0].0.field, &b.series[3].0.field));
    }

    #[test]
    fn from_points_round_trips_and_shares_series() {
        let rs = [
            reading("a", 1, &[("temp", 1.0), ("hum", 2.0)], "x"),
            reading("a", 2, &[("temp", 3.0), ("hum", 4.0)], "x"),
        ];
        let pts: Vec<Point> = rs.iter().cloned().flat_map(Reading::into_points).collect();
        let b = Batch::from_points(pts.clone());
        assert_eq!(b.series.len(), 2);
        assert_eq!(b.len(), 4);
        assert_eq!(b.points(), pts);
        let bytes = serde_json::to_vec(&b).unwrap();
        assert_eq!(serde_json::from_slice::<Batch>(&bytes).unwrap(), b);
    }

    #[test]
    fn cache_stays_bounded() {
        let mut c = SeriesCache::default();
        for i in 0..SeriesCache::MAX_DEVICES + 5 {
            c.push(reading(&format!("d{i}"), 1, &[("temp", 1.0)], "x"));
        }
        assert!(c.devices.len() <= SeriesCache::MAX_DEVICES);
        let b = c.take();
        assert_eq!(b.series.len(), SeriesCache::MAX_DEVICES + 5);
        assert!(b.is_consistent());
    }
}
