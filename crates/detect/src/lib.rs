//! fieldlab-detect: anomaly detectors that score each point as it arrives.
//!
//! Why it exists: operators want alerts on live streams and students want to see what a
//! detector saw. Every detector here is *streaming*: it scores point `t` using only points
//! before it, keeps bounded state per series, and returns a score in `[0, 1]`.
//!
//! This crate starts with the [`Detector`] contract and one robust baseline, [`RobustZ`]
//! (rolling median / MAD). The anomaly-detection issue adds EWMA, seasonal residuals, a
//! streaming tree method, the autoencoder, the ensemble, quality rules and the NAB runner here;
//! the topology wires them in as transforms after ingest.
//!
//! Architecture invariant: detectors do no I/O and read no clock; time is an argument.

use std::collections::VecDeque;

/// A streaming anomaly scorer for one series.
pub trait Detector: Send {
    /// Short stable name, used in config and in anomaly events.
    fn name(&self) -> &'static str;
    /// Score `value` observed at `ts_ms`, then learn from it. Returns a score in `[0, 1]`;
    /// non-finite input scores 0 and is not learned (it is a data-quality matter).
    fn score(&mut self, ts_ms: i64, value: f64) -> f64;
}

/// Robust z-score against a rolling window: `z = (x - median) / (1.4826 * MAD)`, mapped to
/// `[0, 1]` as `|z| / (|z| + k)`, so `|z| = k` scores 0.5.
#[derive(Debug, Clone)]
pub struct RobustZ {
    window: usize,
    k: f64,
    buf: VecDeque<f64>,
}

impl RobustZ {
    /// `window`: past points kept (bounded memory); `k`: the |z| that scores 0.5 (3.5 is usual).
    pub fn new(window: usize, k: f64) -> Self {
        assert!(window >= 3 && k > 0.0);
        RobustZ {
            window,
            k,
            buf: VecDeque::with_capacity(window),
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

impl Detector for RobustZ {
    fn name(&self) -> &'static str {
        "robust_z"
    }

    fn score(&mut self, _ts_ms: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let s = if self.buf.len() < 3 {
            0.0
        } else {
            let mut v: Vec<f64> = self.buf.iter().copied().collect();
            v.sort_by(f64::total_cmp);
            let med = median(&v);
            let mut dev: Vec<f64> = v.iter().map(|y| (y - med).abs()).collect();
            dev.sort_by(f64::total_cmp);
            let mad = 1.4826 * median(&dev);
            let z = if mad > 0.0 {
                (x - med).abs() / mad
            } else if x == med {
                0.0
            } else {
                f64::INFINITY // a flat history and a different value: maximal surprise
            };
            if z.is_infinite() {
                1.0
            } else {
                z / (z + self.k)
            }
        };
        if self.buf.len() == self.window {
            self.buf.pop_front();
        }
        self.buf.push_back(x);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_in_noise_scores_high_and_normal_points_low() {
        let mut d = RobustZ::new(60, 3.5);
        let mut normal = Vec::new();
        for i in 0..200 {
            let x = 20.0 + ((i * 7919) % 13) as f64 * 0.1; // deterministic jitter
            normal.push(d.score(i, x));
        }
        assert!(normal[10..].iter().all(|s| *s < 0.5), "{normal:?}");
        assert!(d.score(200, 35.0) > 0.9);
    }

    #[test]
    fn uses_only_the_past_and_bounded_state() {
        let mut d = RobustZ::new(5, 3.5);
        assert_eq!(
            d.score(0, 1e9),
            0.0,
            "nothing to compare the first point with"
        );
        for i in 0..100 {
            d.score(i, 1.0);
        }
        assert_eq!(d.buf.len(), 5);
        assert_eq!(d.score(101, f64::NAN), 0.0);
        assert_eq!(d.score(102, 1.0), 0.0);
        assert_eq!(d.score(103, 2.0), 1.0, "flat history, new value");
    }

    proptest::proptest! {
        #[test]
        fn scores_stay_in_unit_interval(xs in proptest::collection::vec(proptest::num::f64::ANY, 0..300)) {
            let mut d = RobustZ::new(30, 3.5);
            for (i, x) in xs.iter().enumerate() {
                let s = d.score(i as i64, *x);
                proptest::prop_assert!((0.0..=1.0).contains(&s), "{s}");
            }
        }
    }
}
