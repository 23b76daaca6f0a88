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
    /// (commit number, slot in that commit's span list) of the last commit that wrote here:
    /// [`Head::insert_spanned`] finds a series' span with the lookup it does anyway.
    span: (u64, usize),
}

/// What one commit wrote to one series: the key, its time span, and the tags of its newest
/// point (the catalog is updated from these once per series, not per point).
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

#[derive(Debug, Default)]
pub struct Head {
    pub series: HashMap<SeriesKey, SeriesBuf, foldhash::fast::RandomState>,
    pub points: usize,
    /// Wall-clock time (ms) of the first write into this head.
    pub opened_ms: Option<i64>,
    /// Commits so far (numbers the span lists of [`Head::insert_spanned`]; 0 = none).
    commits: u64,
}

impl Head {
    pub fn insert(&mut self, p: &Point, now_ms: i64) {
        self.buf(p, |_| ());
        self.finish(now_ms);
    }

    /// Start a commit: its inserts record their spans afresh.
    pub fn begin_commit(&mut self) {
        self.commits += 1;
    }

    /// [`Head::insert`], also recording the point in `spans` (one entry per series written
    /// since [`Head::begin_commit`]), with the one hash lookup the insert needs anyway.
    pub fn insert_spanned<'a>(&mut self, p: &'a Point, now_ms: i64, spans: &mut Vec<Span<'a>>) {
        let commit = self.commits;
        self.buf(p, |buf| {
            if buf.span.0 == commit && commit != 0 {
                let s = &mut spans[buf.span.1];
                s.1 = s.1.min(p.ts_ms);
                if p.ts_ms >= s.2 {
                    s.2 = p.ts_ms;
                    s.3 = &p.tags;
                }
            } else {
                buf.span = (commit, spans.len());
                spans.push((&p.key, p.ts_ms, p.ts_ms, &p.tags));
            }
        });
        self.finish(now_ms);
    }

    /// Insert `p` into its series and hand the series to `then`.
    fn buf<R>(&mut self, p: &Point, then: impl FnOnce(&mut SeriesBuf) -> R) -> R {
        // Look up before inserting: the key is only cloned for a new series (hot path).
        let buf = match self.series.get_mut(&p.key) {
            Some(b) => b,
            None => self.series.entry(p.key.clone()).or_default(),
        };
        if buf.tags != p.tags {
            buf.tags = p.tags.clone();
        }
        buf.insert(p.ts_ms, p.value.clone());
        then(buf)
    }

    fn finish(&mut self, now_ms: i64) {
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

    #[test]
    fn spans_are_per_series_and_per_commit_with_the_newest_points_tags() {
        let pt = |dev: &str, ts: i64, site: &str| Point {
            key: SeriesKey::new(dev, "t"),
            tags: Tags {
                device_type: "x".into(),
                extra: [("site".to_string(), site.to_string())].into(),
            },
            ts_ms: ts,
            value: FieldValue::F64(1.0),
        };
        let mut h = Head::default();
        let first = [
            pt("a", 5, "s5"),
            pt("b", 1, "b"),
            pt("a", 9, "s9"),
            pt("a", 2, "s2"),
        ];
        let mut spans = Vec::new();
        h.begin_commit();
        for p in &first {
            h.insert_spanned(p, 0, &mut spans);
        }
        let got: Vec<_> = spans
            .iter()
            .map(|(k, lo, hi, t)| (k.device_id.as_ref(), *lo, *hi, t.extra["site"].as_str()))
            .collect();
        assert_eq!(got, vec![("a", 2, 9, "s9"), ("b", 1, 1, "b")]);
        // The next commit starts its spans afresh.
        let second = [pt("a", 20, "s20")];
        let mut spans = Vec::new();
        h.begin_commit();
        h.insert_spanned(&second[0], 0, &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].1, spans[0].2), (20, 20));
        assert_eq!(h.points, 5);
        assert_eq!(h.series[&SeriesKey::new("a", "t")].points.len(), 4);
    }
}
