//! Robust statistics detectors: rolling median/MAD ([`RobustZ`]) and exponentially weighted
//! mean/variance ([`Ewma`]). Both are O(window) memory and O(1)..O(window) work per point with
//! no allocation after warm-up, so they run at millions of points per second.

use crate::Detector;
use std::collections::VecDeque;

/// A sorted copy of a sliding window: O(log w) search + O(w) memmove per update, O(1) median.
#[derive(Debug, Clone)]
pub(crate) struct SortedWindow {
    cap: usize,
    fifo: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl SortedWindow {
    pub(crate) fn new(cap: usize) -> Self {
        SortedWindow {
            cap,
            fifo: VecDeque::with_capacity(cap),
            sorted: Vec::with_capacity(cap),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    pub(crate) fn push(&mut self, x: f64) {
        if self.fifo.len() == self.cap {
            let old = self.fifo.pop_front().expect("full");
            let i = self.sorted.partition_point(|v| v.total_cmp(&old).is_lt());
            self.sorted.remove(i);
        }
        self.fifo.push_back(x);
        let i = self.sorted.partition_point(|v| v.total_cmp(&x).is_lt());
        self.sorted.insert(i, x);
    }

    pub(crate) fn median(&self) -> f64 {
        median_sorted(&self.sorted)
    }

    /// Median absolute deviation from `med`: the k-th smallest of two sorted runs (the
    /// distances left of the median, read backwards, and right of it), merged lazily.
    pub(crate) fn mad(&self, med: f64) -> f64 {
        let s = &self.sorted;
        let n = s.len();
        let split = s.partition_point(|v| *v < med);
        let (mut l, mut r) = (split, split); // left run: s[l-1], s[l-2]...; right run: s[r]...
        let mut next = || -> f64 {
            let dl = if l > 0 { med - s[l - 1] } else { f64::INFINITY };
            let dr = if r < n { s[r] - med } else { f64::INFINITY };
            // Decide by which run is left, not only by distance: with infinite or NaN values
            // in the window both distances can be infinite (or NaN) while one run is empty.
            let take_left = if l == 0 {
                false
            } else if r >= n {
                true
            } else {
                !matches!(dr.partial_cmp(&dl), Some(std::cmp::Ordering::Less))
            };
            if take_left {
                l -= 1;
                dl
            } else {
                r += 1;
                dr
            }
        };
        if n % 2 == 1 {
            for _ in 0..n / 2 {
                next();
            }
            next()
        } else {
            for _ in 0..n / 2 - 1 {
                next();
            }
            (next() + next()) / 2.0
        }
    }
}

fn median_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Map a non-negative surprise `z` to `[0, 1]` as `1 - 2^(-(z/k)^2)`: `z = k` scores 0.5,
/// `z = 2k` scores 0.94, so a fixed alarm level (0.9 ~ `z = 1.8k`) means the same for every
/// detector that reports a z.
pub(crate) fn squash(z: f64, k: f64) -> f64 {
    if z.is_nan() {
        0.0
    } else if z.is_infinite() {
        1.0
    } else {
        1.0 - (-(z / k).powi(2)).exp2()
    }
}

/// Robust z-score against a rolling window: `z = (x - median) / (1.4826 * MAD)`, mapped to
/// `[0, 1]` by [`squash`], so `|z| = k` scores 0.5.
#[derive(Debug, Clone)]
pub struct RobustZ {
    k: f64,
    win: SortedWindow,
}

impl RobustZ {
    /// `window`: past points kept (bounded memory); `k`: the |z| that scores 0.5 (3.5 is usual).
    pub fn new(window: usize, k: f64) -> Self {
        assert!(window >= 3 && k > 0.0);
        RobustZ {
            k,
            win: SortedWindow::new(window),
        }
    }

    /// The signed robust z of `x` against the window (0 before 3 points).
    pub fn z(&self, x: f64) -> f64 {
        if self.win.len() < 3 {
            return 0.0;
        }
        let med = self.win.median();
        let mut mad = 1.4826 * self.win.mad(med);
        if mad == 0.0 {
            // More than half the window is one value: fall back to the mean absolute
            // deviation (1.2533 * MeanAD estimates sigma for normal data), as is usual.
            let n = self.win.len() as f64;
            mad = 1.2533 * self.win.sorted.iter().map(|v| (v - med).abs()).sum::<f64>() / n;
        }
        // Differences at the level of float rounding are no evidence of anything.
        let s = &self.win.sorted;
        let magnitude = s[0].abs().max(s[s.len() - 1].abs());
        if mad > 1e-9 * magnitude {
            (x - med) / mad
        } else if (x - med).abs() <= 1e-9 * magnitude {
            0.0
        } else {
            // A flat history and a different value: maximal surprise.
            f64::INFINITY.copysign(x - med)
        }
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
        let s = squash(self.z(x).abs(), self.k);
        self.win.push(x);
        s
    }
}

/// Exponentially weighted mean and variance; `z = |x - mean| / sd`, mapped like [`RobustZ`].
#[derive(Debug, Clone)]
pub struct Ewma {
    alpha: f64,
    k: f64,
    mean: f64,
    var: f64,
    n: u64,
}

impl Ewma {
    /// `alpha` in (0, 1]: weight of the newest point (0.05 ~ a 40-point memory).
    pub fn new(alpha: f64, k: f64) -> Self {
        assert!(alpha > 0.0 && alpha <= 1.0 && k > 0.0);
        Ewma {
            alpha,
            k,
            mean: 0.0,
            var: 0.0,
            n: 0,
        }
    }

    /// Signed z of `x` against the current mean/variance.
    pub fn z(&self, x: f64) -> f64 {
        if self.n < 3 {
            return 0.0;
        }
        let sd = self.var.sqrt();
        let d = x - self.mean;
        if sd > 1e-12 * self.mean.abs().max(1.0) {
            d / sd
        } else if d.abs() <= 1e-12 * self.mean.abs().max(1.0) {
            0.0
        } else {
            f64::INFINITY.copysign(d)
        }
    }

    /// Learn `x` (West's incremental EW variance).
    pub fn learn(&mut self, x: f64) {
        if self.n == 0 {
            self.mean = x;
        } else {
            let d = x - self.mean;
            let incr = self.alpha * d;
            self.mean += incr;
            self.var = (1.0 - self.alpha) * (self.var + d * incr);
        }
        self.n += 1;
    }
}

impl Detector for Ewma {
    fn name(&self) -> &'static str {
        "ewma"
    }

    fn score(&mut self, _ts_ms: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let s = squash(self.z(x).abs(), self.k);
        self.learn(x);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_mad(v: &[f64]) -> (f64, f64) {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let med = median_sorted(&s);
        let mut d: Vec<f64> = s.iter().map(|x| (x - med).abs()).collect();
        d.sort_by(f64::total_cmp);
        (med, median_sorted(&d))
    }

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
        assert_eq!(d.win.len(), 5);
        assert_eq!(d.score(101, f64::NAN), 0.0);
        assert_eq!(d.score(102, 1.0), 0.0);
        assert_eq!(d.score(103, 2.0), 1.0, "flat history, new value");
    }

    #[test]
    fn ewma_flags_a_level_shift_then_adapts() {
        let mut d = Ewma::new(0.05, 3.5);
        for i in 0..500 {
            d.score(i, 10.0 + (i % 7) as f64 * 0.1);
        }
        assert!(d.score(500, 20.0) > 0.9);
        for i in 501..1000 {
            d.score(i, 20.0 + (i % 7) as f64 * 0.1);
        }
        assert!(d.score(1000, 20.3) < 0.5);
    }

    proptest::proptest! {
        #[test]
        fn sorted_window_median_and_mad_match_naive(xs in proptest::collection::vec(-1e6f64..1e6, 1..200), w in 1usize..40) {
            let mut sw = SortedWindow::new(w);
            for (i, x) in xs.iter().enumerate() {
                sw.push(*x);
                let lo = (i + 1).saturating_sub(w);
                let (med, mad) = naive_mad(&xs[lo..=i]);
                proptest::prop_assert_eq!(sw.median(), med);
                proptest::prop_assert!((sw.mad(med) - mad).abs() <= 1e-9 * mad.abs().max(1.0));
            }
        }

        #[test]
        fn scores_stay_in_unit_interval(xs in proptest::collection::vec(proptest::num::f64::ANY, 0..300)) {
            let mut r = RobustZ::new(30, 3.5);
            let mut e = Ewma::new(0.1, 3.5);
            for (i, x) in xs.iter().enumerate() {
                for s in [r.score(i as i64, *x), e.score(i as i64, *x)] {
                    proptest::prop_assert!((0.0..=1.0).contains(&s), "{s}");
                }
            }
        }
    }
}
