//! The in-memory head: recent points, per series, queryable at once.
//!
//! Every acknowledged batch is in the WAL *and* in the head. When the head grows past its
//! limits it is frozen (kept readable) and written out as a block by a background thread;
//! a fresh head takes new writes meanwhile, so ingest never waits for a block write.
//!
//! Late and out-of-order points cost what in-order points cost, as in Prometheus' TSDB
//! out-of-order head: a point newer than its series' last one is pushed onto a sorted run; an
//! older one (or a repeat of a timestamp) goes, in arrival order, to the series' small
//! *late* buffer. The buffer is sorted and merged into the run only when it reaches a
//! quarter of the run (and when the head is frozen), so the run's size grows geometrically
//! between merges: a series written in fully descending time order costs O(n log n) in
//! total, not one `Vec::insert` memmove of the whole series per point. Queries sort the late
//! points of their range on the fly and merge them in. Same-timestamp rule, unchanged: the
//! point written later replaces the earlier one (so replaying a batch twice is harmless).

use fieldlab_core::{Batch, FieldValue, SeriesKey, Tags};
use std::collections::HashMap;

/// Below this many late points a series is never merged: merging tiny buffers into a large
/// run would copy the run for nothing.
const LATE_MIN: usize = 256;

#[derive(Debug, Default)]
pub struct SeriesBuf {
    pub tags: Tags,
    /// In time order, one point per timestamp.
    sorted: Vec<(i64, FieldValue)>,
    /// Points at or before `sorted`'s last timestamp, in arrival order. Every one of them
    /// arrived after any point of `sorted` with the same timestamp (a point goes to `sorted`
    /// only if it is newer than all points so far), so on a tie `late` wins.
    late: Vec<(i64, FieldValue)>,
}

/// What one batch wrote to one of its series: the key, its time span, and its tags (the
/// catalog is updated from these once per series of a batch, not per point).
pub type Span<'a> = (&'a SeriesKey, i64, i64, &'a Tags);

/// Sort by time, keeping arrival order among equal timestamps, then keep only the last
/// arrival of each timestamp.
fn sort_keep_last(v: &mut Vec<(i64, FieldValue)>) {
    // Stable: driftsort finds the runs (an ascending `sorted` prefix, a descending late
    // buffer) and merges them in linear time.
    v.sort_by_key(|p| p.0);
    // `dedup_by` hands (later, kept earlier): move the later value into the kept slot.
    v.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            std::mem::swap(&mut later.1, &mut kept.1);
            true
        } else {
            false
        }
    });
}

impl SeriesBuf {
    /// Insert a point; a point at an existing timestamp replaces it, so replaying the same
    /// batch twice (WAL + block after a crash) is harmless. Amortised O(log n).
    pub fn insert(&mut self, ts: i64, value: FieldValue) {
        match self.sorted.last() {
            Some((last, _)) if *last >= ts => {
                self.late.push((ts, value));
                if self.late.len() >= LATE_MIN.max(self.sorted.len() / 4) {
                    self.seal();
                }
            }
            _ => self.sorted.push((ts, value)),
        }
    }

    /// Merge the late points into the sorted run. Only the part of the run that the late
    /// points' time span overlaps is merged point by point; the rest moves by one memmove.
    pub fn seal(&mut self) {
        if self.late.is_empty() {
            return;
        }
        // Stable, so the last arrival of a timestamp stays last; a descending buffer is one
        // run that driftsort reverses in linear time.
        sort_keep_last(&mut self.late);
        let (first, last) = (self.late[0].0, self.late[self.late.len() - 1].0);
        let lo = self.sorted.partition_point(|p| p.0 < first);
        let hi = self.sorted.partition_point(|p| p.0 <= last);
        if lo == hi {
            // No point of the run inside the late span (older data arriving late): a splice.
            self.sorted.splice(lo..lo, self.late.drain(..));
            return;
        }
        let overlap: Vec<_> = self.sorted.drain(lo..hi).collect();
        let mut merged = Vec::with_capacity(overlap.len() + self.late.len());
        let mut run = overlap.into_iter().peekable();
        for p in self.late.drain(..) {
            while let Some(r) = run.next_if(|r| r.0 < p.0) {
                merged.push(r);
            }
            // At an equal timestamp the late point is the later write.
            run.next_if(|r| r.0 == p.0);
            merged.push(p);
        }
        merged.extend(run);
        self.sorted.splice(lo..lo, merged);
    }

    /// Every point in time order. Complete only once [`SeriesBuf::seal`] has run (a head is
    /// sealed before it is frozen and written as a block); a late point left out would be a
    /// point lost, so that is checked.
    pub fn points(&self) -> &[(i64, FieldValue)] {
        assert!(
            self.late.is_empty(),
            "SeriesBuf::points on an unsealed series (Head::seal before freezing)"
        );
        &self.sorted
    }

    /// Points within `[from, to]`, in time order, one per timestamp.
    pub fn range(&self, from: i64, to: i64) -> Vec<(i64, FieldValue)> {
        let lo = self.sorted.partition_point(|p| p.0 < from);
        let hi = self.sorted.partition_point(|p| p.0 <= to);
        let mut out = self.sorted[lo..hi.max(lo)].to_vec();
        let before = out.len();
        out.extend(
            self.late
                .iter()
                .filter(|p| p.0 >= from && p.0 <= to)
                .cloned(),
        );
        if out.len() > before {
            sort_keep_last(&mut out);
        }
        out
    }

    /// Points held (late points counted, whether or not they repeat a timestamp).
    pub fn len(&self) -> usize {
        self.sorted.len() + self.late.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// Points of `key` within `[from, to]`, in time order.
    pub fn range(&self, key: &SeriesKey, from: i64, to: i64) -> Vec<(i64, FieldValue)> {
        self.index
            .get(key)
            .map_or_else(Vec::new, |&i| self.series[i].1.range(from, to))
    }

    /// Merge every series' late points into its sorted run; done before the head is frozen,
    /// so a block is written from sorted runs.
    pub fn seal(&mut self) {
        for (_, s) in &mut self.series {
            s.seal();
        }
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
        let all = s.range(i64::MIN, i64::MAX);
        let ts: Vec<i64> = all.iter().map(|p| p.0).collect();
        assert_eq!(ts, vec![1, 3, 5, 9]);
        assert_eq!(all[1].1, FieldValue::F64(4.0));
        s.seal();
        assert_eq!(s.points(), all.as_slice());
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
        let ts: Vec<i64> = a.range(i64::MIN, i64::MAX).iter().map(|p| p.0).collect();
        assert_eq!(ts, vec![2, 3, 5, 9, 20]);
        assert_eq!(a.tags.extra["site"], "s");
        assert_eq!(h.range(&SeriesKey::new("a", "t"), 3, 9).len(), 3);
        assert_eq!(h.series.len(), 2);
    }

    #[test]
    fn descending_input_is_sorted_and_merged_geometrically() {
        let mut s = SeriesBuf::default();
        let n = 100_000i64;
        for t in (0..n).rev() {
            s.insert(t, FieldValue::I64(t));
            // The late buffer never outgrows a quarter of the run (or the floor).
            assert!(s.late.len() < LATE_MIN.max(s.sorted.len() / 4) + 1);
        }
        let all = s.range(i64::MIN, i64::MAX);
        assert_eq!(all.len(), n as usize);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(all.iter().all(|(t, v)| *v == FieldValue::I64(*t)));
        assert_eq!(s.range(10, 19).len(), 10);
    }

    #[test]
    fn a_late_repeat_of_the_last_timestamp_replaces_it() {
        let mut s = SeriesBuf::default();
        s.insert(1, FieldValue::I64(1));
        s.insert(2, FieldValue::I64(2));
        s.insert(2, FieldValue::I64(20));
        s.insert(1, FieldValue::I64(10));
        s.insert(1, FieldValue::I64(100));
        s.insert(3, FieldValue::I64(3));
        let want = vec![
            (1, FieldValue::I64(100)),
            (2, FieldValue::I64(20)),
            (3, FieldValue::I64(3)),
        ];
        assert_eq!(s.range(0, 10), want);
        assert_eq!(s.range(2, 2), want[1..2]);
        s.seal();
        assert_eq!(s.points(), want.as_slice());
        assert_eq!(s.len(), 3);
    }

    proptest::proptest! {
        /// Against a model (a map where a later write replaces an earlier one), for any order
        /// of writes and any interleaving of queries and merges.
        #[test]
        fn matches_a_last_write_wins_model(
            ops in proptest::collection::vec((0i64..400, proptest::bool::ANY, 0i64..400, 0i64..60), 1..3000)
        ) {
            let mut s = SeriesBuf::default();
            let mut model = std::collections::BTreeMap::new();
            for (i, (ts, query, from, width)) in ops.into_iter().enumerate() {
                s.insert(ts, FieldValue::I64(i as i64));
                model.insert(ts, FieldValue::I64(i as i64));
                if query {
                    let want: Vec<_> = model
                        .range(from..=from + width)
                        .map(|(t, v)| (*t, v.clone()))
                        .collect();
                    proptest::prop_assert_eq!(s.range(from, from + width), want);
                }
            }
            let want: Vec<_> = model.into_iter().collect();
            proptest::prop_assert_eq!(s.range(i64::MIN, i64::MAX), want.clone());
            s.seal();
            proptest::prop_assert_eq!(s.points(), want.as_slice());
        }
    }
}
