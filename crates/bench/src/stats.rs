//! The figures every benchmark reports: the median of its runs, and latency quantiles.
//!
//! Why it exists: each benchmark had its own median (some took the upper middle of an even
//! count, some the mean of the two) and its own percentile; now there is one of each.
//! Latencies go into an HdrHistogram (`hdrhistogram`, three significant digits, microsecond
//! resolution): bounded memory however long a run is, and the quantiles wrk and HdrHistogram
//! users read.

use hdrhistogram::Histogram;
use std::time::Duration;

/// The median of `xs` (the mean of the two middle values for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Latencies of one run, 1 µs to 1 h at three significant digits.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant bounds are valid for hdrhistogram"),
        )
    }
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        // Outside the bounds: the nearest bound (a 0 µs or > 1 h request is still counted).
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        self.0
            .record(us)
            .expect("clamped into the histogram's range");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q`-quantile (0..=1) in milliseconds; NaN when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The `q`-quantile (0..=1) in microseconds; NaN when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.quantile_ms(q) * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_empty_and_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn quantiles_within_three_significant_digits() {
        let mut l = Latencies::default();
        assert!(l.quantile_ms(0.5).is_nan());
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.len(), 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(l.quantile_ms(0.5), 500.0), "{}", l.quantile_ms(0.5));
        assert!(close(l.quantile_ms(0.99), 990.0), "{}", l.quantile_ms(0.99));
        assert!(close(l.quantile_ms(1.0), 1000.0), "{}", l.quantile_ms(1.0));
        // Out of range is clamped, not lost.
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(7200));
        assert_eq!(l.len(), 1002);
    }
}
