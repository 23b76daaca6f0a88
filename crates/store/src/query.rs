//! Downsampling: one value per time bucket.
//!
//! Buckets are aligned to multiples of `step` since the Unix epoch, so the same query asked
//! twice, or by two instances, gives the same bucket boundaries. A bucket is labelled with its
//! start time. Empty buckets are omitted.

use fieldlab_core::FieldValue;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Mean,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
}

impl Agg {
    pub const NAMES: &'static [&'static str] =
        &["mean", "min", "max", "sum", "count", "first", "last"];
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
    assert!(step_ms > 0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let start = points[i].0.div_euclid(step_ms) * step_ms;
        let mut j = i;
        while j < points.len() && points[j].0 < start + step_ms {
            j += 1;
        }
        let bucket = &points[i..j];
        let nums = bucket
            .iter()
            .filter_map(|p| p.1.as_f64())
            .filter(|f| !f.is_nan());
        let v = match agg {
            Agg::Count => Some(FieldValue::I64(bucket.len() as i64)),
            Agg::First => Some(bucket[0].1.clone()),
            Agg::Last => Some(bucket[bucket.len() - 1].1.clone()),
            Agg::Min => nums.reduce(f64::min).map(FieldValue::F64),
            Agg::Max => nums.reduce(f64::max).map(FieldValue::F64),
            Agg::Sum => nums.reduce(|a, b| a + b).map(FieldValue::F64),
            Agg::Mean => {
                let (s, n) = nums.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
                (n > 0).then(|| FieldValue::F64(s / n as f64))
            }
        };
        if let Some(v) = v {
            out.push((start, v));
        }
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
}
