//! Queries: which series ([`Selector`]), which time range, raw points or one row per time
//! bucket with several aggregations ([`QuerySpec`]), newest-first and limits.
//!
//! Buckets are aligned to multiples of `step` since the Unix epoch, so the same query asked
//! twice, or by two instances, gives the same bucket boundaries. A bucket is labelled with its
//! start time. Empty buckets are omitted.
//!
//! This module is pure (no I/O): `Store::query` reads the points and hands them here.

use crate::SeriesInfo;
use fieldlab_core::reading::verdict;
use fieldlab_core::FieldValue;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Which series a query reads. Every non-empty list is a filter (a series must match one of
/// its values); filters combine with AND. An empty selector matches every series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    pub device_ids: Vec<String>,
    pub device_types: Vec<String>,
    pub fields: Vec<String>,
    /// Any other tag (`site`, `line`, ...): tag name -> accepted values.
    pub tags: BTreeMap<String, Vec<String>>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.device_ids.is_empty()
            && self.device_types.is_empty()
            && self.fields.is_empty()
            && self.tags.is_empty()
    }

    /// Add a filter by tag name; `device_id`, `device_type` and `field` are the built-in ones.
    /// `values` is a comma-separated list.
    pub fn add(&mut self, name: &str, values: &str) {
        let vals = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from);
        match name {
            "device_id" | "device" => self.device_ids.extend(vals),
            "device_type" | "type" => self.device_types.extend(vals),
            "field" => self.fields.extend(vals),
            _ => self.tags.entry(name.to_string()).or_default().extend(vals),
        }
    }

    pub fn matches(&self, s: &SeriesInfo) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        // Verdict series only when named (a query asks for them with `with=`).
        if verdict::is_verdict(&s.field) && !self.fields.contains(&s.field) {
            return false;
        }
        any(&self.device_ids, &s.device_id)
            && any(&self.device_types, &s.tags.device_type)
            && any(&self.fields, &s.field)
            && self.tags.iter().all(|(k, vals)| {
                s.tags
                    .extra
                    .get(k)
                    .is_some_and(|v| vals.is_empty() || vals.contains(v))
            })
    }
}

/// A whole query.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySpec {
    pub selector: Selector,
    /// Inclusive bounds, epoch ms.
    pub from: i64,
    pub to: i64,
    /// Bucket width in ms; `None` returns raw points.
    pub step: Option<i64>,
    /// Aggregations per bucket (ignored without `step`); empty means `mean`.
    pub aggs: Vec<Agg>,
    /// At most this many rows per series (after ordering).
    pub limit: Option<usize>,
    /// Newest first.
    pub desc: bool,
    /// Verdict columns to add to raw points (`with=quality,anomaly`).
    pub with: Vec<Verdict>,
}

/// A verdict a raw query can carry beside each value (see
/// [`fieldlab_core::reading::verdict`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum Verdict {
    /// The quality rules the reading broke, comma-separated; empty/null when none.
    Quality,
    /// The live detector's anomaly score (0..1); null when the value was not scored.
    Anomaly,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The field name of `field`'s verdict series of this kind.
    pub fn series_field(self, field: &str) -> String {
        verdict::series_field(field, self.name())
    }
}

impl Default for QuerySpec {
    fn default() -> Self {
        QuerySpec {
            selector: Selector::default(),
            from: i64::MIN,
            to: i64::MAX,
            step: None,
            aggs: Vec::new(),
            limit: None,
            desc: false,
            with: Vec::new(),
        }
    }
}

impl QuerySpec {
    /// The column names of each row's values: the aggregations, or `value` for raw points.
    pub fn columns(&self) -> Vec<&'static str> {
        match self.step {
            None => std::iter::once("value")
                .chain(self.with.iter().map(|w| w.name()))
                .collect(),
            Some(_) => self.effective_aggs().iter().map(|a| a.name()).collect(),
        }
    }

    pub fn effective_aggs(&self) -> Vec<Agg> {
        if self.aggs.is_empty() {
            vec![Agg::Mean]
        } else {
            self.aggs.clone()
        }
    }

    /// Shape one series' points (sorted, oldest first) into rows.
    pub fn rows(&self, points: Vec<(i64, FieldValue)>) -> (Vec<Row>, bool) {
        self.rows_with(points, Vec::new())
    }

    /// [`QuerySpec::rows`] with the series' verdict points, one list per entry of `with`
    /// (each sorted, oldest first), joined to the raw rows by timestamp.
    pub fn rows_with(
        &self,
        points: Vec<(i64, FieldValue)>,
        verdicts: Vec<Vec<(i64, FieldValue)>>,
    ) -> (Vec<Row>, bool) {
        let mut rows: Vec<Row> = match self.step {
            None => join_verdicts(points, verdicts),
            Some(step) => aggregate(&points, step, &self.effective_aggs()),
        };
        if self.desc {
            rows.reverse();
        }
        let truncated = self.limit.is_some_and(|l| rows.len() > l);
        if let Some(l) = self.limit {
            rows.truncate(l);
        }
        (rows, truncated)
    }
}

/// Raw rows `(ts, [value, verdict...])`: each verdict list's value at the row's timestamp,
/// or `None`. All lists are sorted by time (a merge, no lookups).
pub fn join_verdicts(
    points: Vec<(i64, FieldValue)>,
    verdicts: Vec<Vec<(i64, FieldValue)>>,
) -> Vec<Row> {
    let mut cursors: Vec<std::iter::Peekable<std::vec::IntoIter<(i64, FieldValue)>>> = verdicts
        .into_iter()
        .map(|v| v.into_iter().peekable())
        .collect();
    points
        .into_iter()
        .map(|(t, v)| {
            let mut vals = Vec::with_capacity(1 + cursors.len());
            vals.push(Some(v));
            for c in &mut cursors {
                while c.next_if(|(vt, _)| *vt < t).is_some() {}
                vals.push(c.next_if(|(vt, _)| *vt == t).map(|(_, v)| v));
            }
            (t, vals)
        })
        .collect()
}

/// A bad query parameter: which one, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl QuerySpec {
    /// Parameter names `from_params` understands (besides `tag.<name>`).
    pub const PARAMS: &'static [&'static str] = &[
        "device_id",
        "device_type",
        "field",
        "site",
        "from",
        "to",
        "step",
        "agg",
        "limit",
        "order",
        "with",
    ];

    /// Build a query from URL-style parameters: `device_id`, `device_type`, `field`, `site`,
    /// `tag.<name>` (comma-separated values, OR within a filter, AND across filters), `from`,
    /// `to` (RFC 3339, epoch ms or relative like `-1h`), `step` (`60s`), `agg`
    /// (`mean,max,...`), `limit`, `order` (`asc`|`desc`). Parameters in `ignore` are skipped.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        now_ms: i64,
        ignore: &[&str],
    ) -> Result<QuerySpec, ParamError> {
        use fieldlab_core::time::{parse_duration_ms, parse_instant_ms};
        let bad = |p: &str, m: String| ParamError {
            param: p.to_string(),
            message: m,
        };
        let mut q = QuerySpec::default();
        let mut agg: Option<&str> = None;
        for (k, v) in params {
            match k {
                "device_id" | "device_type" | "field" | "site" => q.selector.add(k, v),
                "from" => {
                    q.from = parse_instant_ms(v, now_ms).map_err(|e| bad(k, e.to_string()))?
                }
                "to" => q.to = parse_instant_ms(v, now_ms).map_err(|e| bad(k, e.to_string()))?,
                "step" => {
                    let ms = parse_duration_ms(v).map_err(|e| bad(k, e.to_string()))?;
                    if ms <= 0 {
                        return Err(bad(k, "`step` must be positive, e.g. 60s".into()));
                    }
                    q.step = Some(ms);
                }
                "agg" => agg = Some(v),
                "with" => {
                    for w in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                        let w = w.parse::<Verdict>().map_err(|_| {
                            bad(
                                k,
                                format!(
                                    "`{w}` is not a verdict; use {}",
                                    <Verdict as strum::VariantNames>::VARIANTS.join(", ")
                                ),
                            )
                        })?;
                        if !q.with.contains(&w) {
                            q.with.push(w);
                        }
                    }
                }
                "limit" => {
                    q.limit = Some(
                        v.parse::<usize>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| bad(k, "`limit` must be a positive integer".into()))?,
                    )
                }
                "order" => {
                    q.desc = match v {
                        "asc" => false,
                        "desc" => true,
                        o => return Err(bad(k, format!("`{o}`: use asc or desc"))),
                    }
                }
                _ if ignore.contains(&k) => {}
                _ => match k.strip_prefix("tag.") {
                    Some(tag) if !tag.is_empty() => q.selector.add(tag, v),
                    _ => {
                        return Err(bad(
                            k,
                            format!(
                                "unknown parameter `{k}`; use {}, or tag.<name> for any other tag",
                                QuerySpec::PARAMS.join(", ")
                            ),
                        ))
                    }
                },
            }
        }
        if q.from > q.to {
            return Err(bad("from", "`from` is after `to`".into()));
        }
        if !q.with.is_empty() && q.step.is_some() {
            return Err(bad(
                "with",
                "`with` adds verdicts to raw points; drop `step` (and `agg`) to get them".into(),
            ));
        }
        match (agg, q.step) {
            (Some(a), Some(_)) => q.aggs = Agg::parse_list(a).map_err(|e| bad("agg", e))?,
            (Some(_), None) => {
                return Err(bad(
                    "agg",
                    "`agg` needs a `step`, e.g. &step=60s&agg=mean".into(),
                ))
            }
            _ => {}
        }
        Ok(q)
    }
}

/// One output row: a timestamp (bucket start) and one value per column (`None`: no value,
/// e.g. the mean of strings or the stddev of one point).
pub type Row = (i64, Vec<Option<FieldValue>>);

/// The answer for one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResult {
    pub info: SeriesInfo,
    pub rows: Vec<Row>,
    /// `limit` cut rows off.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Mean,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
    /// Sample standard deviation (n - 1), as InfluxQL's STDDEV; none for a single point.
    Stddev,
}

impl Agg {
    pub const NAMES: &'static [&'static str] = &[
        "mean", "min", "max", "sum", "count", "first", "last", "stddev",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Agg::Mean => "mean",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::First => "first",
            Agg::Last => "last",
            Agg::Stddev => "stddev",
        }
    }

    /// A comma-separated list, e.g. `mean,max,stddev`.
    pub fn parse_list(s: &str) -> Result<Vec<Agg>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl FromStr for Agg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "mean" | "avg" => Agg::Mean,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "first" => Agg::First,
            "last" => Agg::Last,
            "stddev" | "std" => Agg::Stddev,
            _ => {
                return Err(format!(
                    "`{s}` is not an aggregation; use one of {}",
                    Agg::NAMES.join(", ")
                ))
            }
        })
    }
}

/// Aggregate time-sorted points into buckets of `step_ms`.
pub fn downsample(points: &[(i64, FieldValue)], step_ms: i64, agg: Agg) -> Vec<(i64, FieldValue)> {
    aggregate(points, step_ms, &[agg])
        .into_iter()
        .filter_map(|(t, mut v)| v.pop().flatten().map(|v| (t, v)))
        .collect()
}

/// Aggregate time-sorted points into buckets of `step_ms`, several aggregations per bucket in
/// one pass. Numbers are accumulated as f64 (booleans as 0/1); strings only count and have a
/// first and last.
pub fn aggregate(points: &[(i64, FieldValue)], step_ms: i64, aggs: &[Agg]) -> Vec<Row> {
    assert!(step_ms > 0);
    let want_stddev = aggs.contains(&Agg::Stddev);
    let mut out = Vec::new();
    let mut i = 0;
    while i < points.len() {
        // At the ends of time a bucket's bounds leave i64 (a device can send a time far out:
        // stored as i64::MIN or MAX): the first bucket's start is then i64::MIN, and a last
        // bucket ending past i64::MAX holds every remaining point (a saturated end held none,
        // and this loop never advanced).
        let q = points[i].0.div_euclid(step_ms);
        let start = q.checked_mul(step_ms).unwrap_or(i64::MIN);
        let j = match q.checked_add(1).and_then(|n| n.checked_mul(step_ms)) {
            Some(end) => i + points[i..].partition_point(|p| p.0 < end),
            None => points.len(),
        };
        let bucket = &points[i..j];
        // First pass: count, sum, min, max — no division per point and no dependency chain
        // through a running mean (Welford's update divides per point: it was half the query
        // time). The stddev, when asked for, takes a second pass over the bucket around the
        // exact mean: the classic two-pass formula, as accurate as Welford's.
        let (mut n, mut sum, mut min, mut max) = (0usize, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for x in bucket.iter().filter_map(|p| p.1.as_f64()) {
            if x.is_nan() {
                continue;
            }
            n += 1;
            sum += x;
            min = min.min(x);
            max = max.max(x);
        }
        let mean = sum / n as f64;
        let m2 = if want_stddev && n > 1 {
            bucket
                .iter()
                .filter_map(|p| p.1.as_f64())
                .filter(|x| !x.is_nan())
                .map(|x| (x - mean) * (x - mean))
                .sum::<f64>()
        } else {
            0.0
        };
        let num = |ok: bool, v: f64| ok.then_some(FieldValue::F64(v));
        let vals = aggs
            .iter()
            .map(|a| match a {
                Agg::Count => Some(FieldValue::I64(bucket.len() as i64)),
                Agg::First => Some(bucket[0].1.clone()),
                Agg::Last => Some(bucket[bucket.len() - 1].1.clone()),
                Agg::Min => num(n > 0, min),
                Agg::Max => num(n > 0, max),
                Agg::Sum => num(n > 0, sum),
                Agg::Mean => num(n > 0, sum / n as f64),
                // (`saturating_sub`: the value is computed, then dropped, for n = 0 too.)
                Agg::Stddev => num(n > 1, (m2 / n.saturating_sub(1) as f64).sqrt()),
            })
            .collect();
        out.push((start, vals));
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_epoch_aligned() {
        let pts: Vec<_> = [5, 15, 59, 60, 61, 130]
            .iter()
            .map(|&t| (t * 1000, FieldValue::F64(t as f64)))
            .collect();
        let mean = downsample(&pts, 60_000, Agg::Mean);
        assert_eq!(
            mean,
            vec![
                (0, FieldValue::F64((5.0 + 15.0 + 59.0) / 3.0)),
                (60_000, FieldValue::F64(60.5)),
                (120_000, FieldValue::F64(130.0)),
            ]
        );
        let count = downsample(&pts, 60_000, Agg::Count);
        assert_eq!(count[0].1, FieldValue::I64(3));
        assert_eq!(
            downsample(&pts, 60_000, Agg::Max)[0].1,
            FieldValue::F64(59.0)
        );
        assert_eq!(
            downsample(&pts, 60_000, Agg::Last)[1].1,
            FieldValue::F64(61.0)
        );
        assert!("median".parse::<Agg>().is_err());
    }

    #[test]
    fn buckets_at_the_ends_of_time_terminate() {
        // Found by the `query_params` fuzz target: a point at i64::MAX never left its bucket
        // (an endless loop growing the output), one at i64::MIN overflowed the bucket start.
        let pts = vec![
            (i64::MIN, FieldValue::F64(1.0)),
            (i64::MIN + 1, FieldValue::F64(2.0)),
            (0, FieldValue::F64(3.0)),
            (i64::MAX - 1, FieldValue::F64(4.0)),
            (i64::MAX, FieldValue::F64(5.0)),
        ];
        for step in [1, 7, 1000, i64::MAX] {
            let rows = aggregate(&pts, step, &[Agg::Count]);
            let total: i64 = rows
                .iter()
                .map(|(_, v)| match v[0] {
                    Some(FieldValue::I64(n)) => n,
                    _ => 0,
                })
                .sum();
            assert_eq!(total, 5, "step {step}: {rows:?}");
            assert!(
                rows.windows(2).all(|w| w[0].0 < w[1].0),
                "step {step}: {rows:?}"
            );
        }
        // Also found by it: the stddev of a bucket without numbers underflowed `n - 1`.
        let strs = [(0, FieldValue::Str("a".into()))];
        assert_eq!(aggregate(&strs, 1, &[Agg::Stddev]), vec![(0, vec![None])]);
        assert_eq!(
            downsample(&pts, 7, Agg::Count)[0],
            (i64::MIN, FieldValue::I64(1))
        );
        assert_eq!(
            downsample(&pts, 1, Agg::Sum),
            pts.iter().map(|(t, v)| (*t, v.clone())).collect::<Vec<_>>()
        );
    }

    #[test]
    fn strings_count_but_have_no_mean() {
        let pts = vec![
            (0, FieldValue::Str("a".into())),
            (1, FieldValue::Str("b".into())),
        ];
        assert_eq!(
            downsample(&pts, 10, Agg::Count),
            vec![(0, FieldValue::I64(2))]
        );
        assert!(downsample(&pts, 10, Agg::Mean).is_empty());
        // Negative timestamps bucket correctly too.
        let neg = vec![(-1, FieldValue::F64(1.0))];
        assert_eq!(downsample(&neg, 10, Agg::Sum)[0].0, -10);
    }

    #[test]
    fn several_aggregations_per_bucket_including_stddev() {
        let pts: Vec<_> = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, 1.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64, FieldValue::F64(v)))
            .collect();
        let rows = aggregate(
            &pts,
            8,
            &Agg::parse_list("mean,stddev,first,last,count").unwrap(),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1[0], Some(FieldValue::F64(5.0)));
        // Sample stddev of 2,4,4,4,5,5,7,9 is sqrt(32/7).
        let Some(FieldValue::F64(sd)) = rows[0].1[1] else {
            panic!()
        };
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(rows[0].1[2], Some(FieldValue::F64(2.0)));
        assert_eq!(rows[0].1[3], Some(FieldValue::F64(9.0)));
        assert_eq!(rows[1].1[1], None, "one point has no sample stddev");
        assert_eq!(rows[1].1[4], Some(FieldValue::I64(1)));
        assert!(Agg::parse_list("mean,median").is_err());
    }

    #[test]
    fn selectors_filter_on_id_type_field_and_any_tag() {
        let info = |d: &str, t: &str, f: &str, site: Option<&str>| SeriesInfo {
            device_id: d.into(),
            field: f.into(),
            tags: fieldlab_core::Tags {
                device_type: t.into(),
                extra: site
                    .map(|s| [("site".to_string(), s.to_string())].into())
                    .unwrap_or_default(),
            },
            first_ts_ms: 0,
            last_ts_ms: 0,
        };
        let a = info("t1", "TemperatureSensor", "temperature", Some("berlin"));
        let b = info("p1", "PvInverter", "ac_power", Some("lyon"));
        let c = info("t2", "TemperatureSensor", "humidity", None);
        let mut s = Selector::default();
        assert!(s.matches(&a) && s.matches(&b) && s.matches(&c));
        s.add("device_type", "TemperatureSensor");
        assert!(s.matches(&a) && !s.matches(&b) && s.matches(&c));
        s.add("site", "berlin,lyon");
        assert!(s.matches(&a) && !s.matches(&c));
        let mut s = Selector::default();
        s.add("device_id", "t1, p1");
        s.add("field", "ac_power");
        assert!(!s.matches(&a) && s.matches(&b));
    }

    #[test]
    fn parameters_build_queries_and_name_the_bad_one() {
        let q = QuerySpec::from_params(
            [
                ("device_type", "PvInverter"),
                ("tag.line", "3"),
                ("site", "lyon"),
                ("from", "-1h"),
                ("step", "60s"),
                ("agg", "mean,stddev"),
                ("order", "desc"),
                ("format", "csv"),
            ],
            10_000_000,
            &["format"],
        )
        .unwrap();
        assert_eq!(q.from, 10_000_000 - 3_600_000);
        assert_eq!(q.step, Some(60_000));
        assert_eq!(q.aggs, vec![Agg::Mean, Agg::Stddev]);
        assert!(q.desc);
        assert_eq!(q.selector.tags["line"], vec!["3".to_string()]);
        assert_eq!(q.selector.tags["site"], vec!["lyon".to_string()]);
        for (params, bad) in [
            (vec![("agg", "max")], "agg"),
            (vec![("step", "0s")], "step"),
            (vec![("limit", "0")], "limit"),
            (vec![("colour", "red")], "colour"),
            (
                vec![
                    ("from", "2026-01-02T00:00:00Z"),
                    ("to", "2026-01-01T00:00:00Z"),
                ],
                "from",
            ),
            (vec![("step", "1m"), ("agg", "median")], "agg"),
            (vec![("with", "quality,mood")], "with"),
            (vec![("with", "anomaly"), ("step", "1m")], "with"),
        ] {
            let e = QuerySpec::from_params(params, 0, &[]).unwrap_err();
            assert_eq!(e.param, bad, "{}", e.message);
        }
    }

    #[test]
    fn rows_are_ordered_and_limited() {
        let pts: Vec<_> = (0..10).map(|i| (i * 1000, FieldValue::I64(i))).collect();
        let q = QuerySpec {
            desc: true,
            limit: Some(3),
            ..Default::default()
        };
        let (rows, truncated) = q.rows(pts.clone());
        assert!(truncated);
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![9000, 8000, 7000]
        );
        let q = QuerySpec {
            step: Some(5000),
            aggs: vec![Agg::Sum, Agg::Max],
            ..Default::default()
        };
        let (rows, truncated) = q.rows(pts);
        assert!(!truncated);
        assert_eq!(
            rows[1],
            (
                5000,
                vec![Some(FieldValue::F64(35.0)), Some(FieldValue::F64(9.0))]
            )
        );
        assert_eq!(q.columns(), vec!["sum", "max"]);
    }
}
