//! The in-memory head: recent points, per series, sorted by time, queryable at once.
//!
//! Every acknowledged batch is in the WAL *and* in the head. When the head grows past its
//! limits it is frozen (kept readable) and written out as a block by a background thread;
//! a fresh head takes new writes meanwhile, so ingest never waits for a block write.

use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct SeriesBuf {
    pub tags: Tags,
    pub points: Vec<(i64, FieldValue)>,
}

impl SeriesBuf {
    /// Insert keeping time order; a point at an existing timestamp replaces it, so replaying
    /// the same batch twice (WAL + block after a crash) is harmless.
    pub fn insert(&mut self, ts: i64, value: FieldValue) {
        match self.points.last() {
            None => self.points.push((ts, value)),
            Some((last, _)) if *last < ts => self.points.push((ts, value)),
            _ => match self.points.binary_search_by_key(&ts, |p| p.0) {
                Ok(i) => self.points[i].1 = value,
                Err(i) => self.points.insert(i, (ts, value)),
            },
        }
    }

    pub fn range(&self, from: i64, to: i64) -> &[(i64, FieldValue)] {
        let lo = self.points.partition_point(|p| p.0 < from);
        let hi = self.points.partition_point(|p| p.0 <= to);
        &self.points[lo..hi.max(lo)]
    }
}

#[derive(Debug, Default)]
pub struct Head {
    pub series: HashMap<SeriesKey, SeriesBuf, foldhash::fast::RandomState>,
    pub points: usize,
    /// Wall-clock time (ms) of the first write into this head.
    pub opened_ms: Option<i64>,
}

impl Head {
    pub fn insert(&mut self, p: &Point, now_ms: i64) {
        // Look up before inserting: the key is only cloned for a new series (hot path).
        let buf = match self.series.get_mut(&p.key) {
            Some(b) => b,
            None => self.series.entry(p.key.clone()).or_default(),
        };
        if buf.tags != p.tags {
            buf.tags = p.tags.clone();
        }
        buf.insert(p.ts_ms, p.value.clone());
        self.points += 1;
        self.opened_ms.get_or_insert(now_ms);
    }

    pub fn range(&self, key: &SeriesKey, from: i64, to: i64) -> &[(i64, FieldValue)] {
        self.series.get(key).map_or(&[], |s| s.range(from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_replaces_same_timestamp() {
        let mut s = SeriesBuf::default();
        for (t, v) in [(5, 1.0), (1, 2.0), (3, 3.0), (3, 4.0), (9, 5.0)] {
            s.insert(t, FieldValue::F64(v));
        }
        let ts: Vec<i64> = s.points.iter().map(|p| p.0).collect();
        assert_eq!(ts, vec![1, 3, 5, 9]);
        assert_eq!(s.points[1].1, FieldValue::F64(4.0));
        assert_eq!(s.range(2, 5).len(), 2);
        assert_eq!(s.range(10, 20).len(), 0);
        assert_eq!(s.range(6, 2).len(), 0);
    }
}
