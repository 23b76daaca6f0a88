//! The in-memory head: recent points, per series, sorted by time, queryable at once.
//!
//! Every acknowledged batch is in the WAL *and* in the head. When the head grows past its
//! limits it is frozen (kept readable) and written out as a block by a background thread;
//! a fresh head takes new writes meanwhile, so ingest never waits for a block write.

use fieldlab_core::{Batch, FieldValue, SeriesKey, Tags};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct SeriesBuf {
    pub tags: Tags,
    pub points: Vec<(i64, FieldValue)>,
}

/// What one batch wrote to one of its series: the key, its time span, and its tags (the
/// catalog is updated from these once per series of a batch, not per point).
pub type Span<'a> = (&'a SeriesKey, i64, i64, &'a Tags);

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

/// Series in a `Vec`, found by key through an index: a batch resolves each of its series once
/// and then inserts its rows by position, with no hashing per point.
#[derive(Debug, Default)]
pub struct Head {
    index: HashMap<SeriesKey, usize, foldhash::fast::RandomState>,
    pub series: Vec<(SeriesKey, SeriesBuf)>,
    pub points: usize,
    /// Wall-clock time (ms) of the first write into this head.
    pub opened_ms: Option<i64>,
}

impl Head {
    /// The position of `key`'s series (created if new), its tags set to `tags`.
    fn slot(&mut self, key: &SeriesKey, tags: &Tags) -> usize {
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                self.series.push((key.clone(), SeriesBuf::default()));
                self.index.insert(key.clone(), self.series.len() - 1);
                self.series.len() - 1
            }
        };
        let buf = &mut self.series[i].1;
        if buf.tags != *tags {
            buf.tags = tags.clone();
        }
        i
    }

    /// Insert every row of `batch` (its values are moved out; the series stay), and append to
    /// `spans` one entry per series of the batch that has rows. A series listed twice (its
    /// tags changed within the batch) ends with the later entry's tags.
    pub fn insert_batch<'a>(
        &mut self,
        batch: &'a mut Batch,
        now_ms: i64,
        spans: &mut Vec<Span<'a>>,
    ) {
        let Batch { series, rows } = batch;
        if rows.is_empty() {
            return;
        }
        let slots: Vec<usize> = series.iter().map(|(k, t)| self.slot(k, t)).collect();
        let mut lohi = vec![(i64::MAX, i64::MIN); slots.len()];
        let n = rows.len();
        for r in rows.drain(..) {
            let s = r.series as usize;
            let span = &mut lohi[s];
            span.0 = span.0.min(r.ts_ms);
            span.1 = span.1.max(r.ts_ms);
            self.series[slots[s]].1.insert(r.ts_ms, r.value);
        }
        let series: &'a [(SeriesKey, Tags)] = series;
        for ((k, t), (lo, hi)) in series.iter().zip(lohi) {
            if lo <= hi {
                spans.push((k, lo, hi, t));
            }
        }
        self.points += n;
        self.opened_ms.get_or_insert(now_ms);
    }

    pub fn range(&self, key: &SeriesKey, from: i64, to: i64) -> &[(i64, FieldValue)] {
        self.index
            .get(key)
            .map_or(&[], |&i| self.series[i].1.range(from, to))
    }

    /// The series of `key`, if the head has it.
    #[cfg(test)]
    pub fn get(&self, key: &SeriesKey) -> Option<&SeriesBuf> {
        self.index.get(key).map(|&i| &self.series[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::Point;

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

    #[test]
    fn batches_insert_by_series_and_report_spans() {
        let pt = |dev: &str, ts: i64, site: &str| Point {
            key: SeriesKey::new(dev, "t"),
            tags: Tags {
                device_type: "x".into(),
                extra: [("site".to_string(), site.to_string())].into(),
            },
            ts_ms: ts,
            value: FieldValue::F64(ts as f64),
        };
        let mut h = Head::default();
        let mut b = Batch::from_points(vec![
            pt("a", 5, "s"),
            pt("b", 1, "b"),
            pt("a", 9, "s"),
            pt("a", 2, "s"),
        ]);
        let mut spans = Vec::new();
        h.insert_batch(&mut b, 0, &mut spans);
        let got: Vec<_> = spans
            .iter()
            .map(|(k, lo, hi, t)| (k.device_id.as_ref(), *lo, *hi, t.extra["site"].as_str()))
            .collect();
        assert_eq!(got, vec![("a", 2, 9, "s"), ("b", 1, 1, "b")]);
        // A later batch with new tags for `a`: one series, the newer tags.
        let mut b2 = Batch::from_points(vec![pt("a", 20, "s20"), pt("a", 3, "s")]);
        let mut spans = Vec::new();
        h.insert_batch(&mut b2, 0, &mut spans);
        assert_eq!(spans.len(), 2);
        assert_eq!(h.points, 6);
        let a = h.get(&SeriesKey::new("a", "t")).unwrap();
        let ts: Vec<i64> = a.points.iter().map(|p| p.0).collect();
        assert_eq!(ts, vec![2, 3, 5, 9, 20]);
        assert_eq!(a.tags.extra["site"], "s");
        assert_eq!(h.range(&SeriesKey::new("a", "t"), 3, 9).len(), 3);
        assert_eq!(h.series.len(), 2);
    }
}
