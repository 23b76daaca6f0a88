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
        if n > 0 && med.is_finite() && s[0].is_finite() && s[n - 1].is_finite() {
            // No distance is NaN: select in O(log n) (the merge below walks half the window
            // with a branch the CPU cannot predict; this ran three times a point).
            let a = |j: usize| med - s[split - 1 - j];
            let b = |j: usize| s[split + j] - med;
            let (la, lb) = (split, n - split);
            // The first k in merged order: i from the left run, k - i from the right.
            let cut = |k: usize| -> usize {
                let (mut lo, mut hi) = (k.saturating_sub(lb), k.min(la));
                while lo < hi {
                    let i = (lo + hi) / 2;
                    if a(i) < b(k - i - 1) {
                        lo = i + 1;
                    } else {
                        hi = i;
                    }
                }
                lo
            };
            let kth = |k: usize, i: usize| -> f64 {
                let x = if i > 0 { a(i - 1) } else { f64::NEG_INFINITY };
                let y = if k > i {
                    b(k - i - 1)
                } else {
                    f64::NEG_INFINITY
                };
                x.max(y)
            };
            let k = n / 2 + n % 2;
            let i = cut(k);
            if n % 2 == 1 {
                return kth(k, i);
            }
            let x = if i < la { a(i) } else { f64::INFINITY };
            let y = if k - i < lb { b(k - i) } else { f64::INFINITY };
            return (kth(k, i) + x.min(y)) / 2.0;
        }
        self.mad_by_merge(med, split)
    }

    /// [`SortedWindow::mad`] by merging the two runs lazily: any values, NaN included.
    fn mad_by_merge(&self, med: f64, split: usize) -> f64 {
        let s = &self.sorted;
        let n = s.len();
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

/// Largest |z| a detector reports: a value off a perfectly flat history is "very surprising",
/// not infinitely so, and every finite z keeps a distinct score below 1.
pub(crate) const Z_MAX: f64 = 1e6;

/// Map a non-negative surprise `z` to `[0, 1)` as `x^2 / (1 + x^2)` with `x = z / k`: `z = k`
/// scores 0.5, `2k` 0.8, `3k` 0.9, `10k` 0.99. It never reaches 1 for a finite z (up to
/// [`Z_MAX`]), so a larger surprise always scores higher: a threshold can still separate a
/// huge spike from a merely large one. (The earlier `1 - 2^(-x^2)` was exactly 1.0 in `f64`
/// from `z ~ 7.5k` on, so heavy-tailed series had thousands of points tied at 1 and NAB's
/// threshold optimisation could do nothing but stay silent: robust_z and seasonal scored 0.)
pub(crate) fn squash(z: f64, k: f64) -> f64 {
    if z.is_nan() {
        return 0.0;
    }
    let x = z.min(Z_MAX) / k;
    let x2 = x * x;
    if x2.is_finite() {
        x2 / (1.0 + x2)
    } else {
        1.0
    }
}

/// The scale below which a spread is no evidence: a share of the spread seen in the past
/// (`long`, a slow average of earlier non-zero spreads) or, for a series that never moved,
/// float rounding of its magnitude.
fn spread_floor(long: f64, magnitude: f64) -> f64 {
    (FLOOR_SHARE * long).max(1e-9 * magnitude)
}

const FLOOR_SHARE: f64 = 0.1;

/// One step of the long-run spread: spreads above the floor are averaged in at rate `a`;
/// while the series sits flat (spread under the floor) it only fades, a hundred times slower,
/// so a long plateau does not make the next small step look infinite.
fn learn_spread(long: f64, sigma: f64, a: f64) -> f64 {
    if !sigma.is_finite() {
        long
    } else if long == 0.0 {
        sigma
    } else if sigma >= FLOOR_SHARE * long {
        long + a * (sigma - long)
    } else {
        long * (1.0 - 0.01 * a)
    }
}

/// Robust z-score against a rolling window: `z = (x - median) / (1.4826 * MAD)`, mapped to
/// `[0, 1]` by `squash`, so `|z| = k` scores 0.5.
#[derive(Debug, Clone)]
pub struct RobustZ {
    k: f64,
    win: SortedWindow,
    /// Slow average of the window's non-zero spread (for the floor on flat stretches).
    long_spread: f64,
    /// As a [`Detector`], score 0 until the window holds more than this many points.
    warmup: usize,
}

impl RobustZ {
    /// The smallest window: a median and a spread need three points.
    pub const MIN_WINDOW: usize = 3;

    /// `window`: past points kept (bounded memory), at least [`RobustZ::MIN_WINDOW`]
    /// (callers validate; this asserts); `k`: the |z| that scores 0.5 (3.5 is usual).
    pub fn new(window: usize, k: f64) -> Self {
        assert!(window >= Self::MIN_WINDOW && k > 0.0);
        RobustZ {
            k,
            win: SortedWindow::new(window),
            long_spread: 0.0,
            warmup: 0,
        }
    }

    /// As a [`Detector`], stay silent (score 0, learning) for the first `n` points: a median
    /// and MAD of a handful of points is no reference (a set point's fifth reading scored 0.96
    /// on clean emulated data).
    pub fn warm_up(mut self, n: usize) -> Self {
        self.warmup = n.min(self.win.cap);
        self
    }

    /// Values in the window.
    pub fn len(&self) -> usize {
        self.win.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.win.len() == 0
    }

    /// The signed robust z of `x` against the window (0 before 3 points), |z| <= `Z_MAX`.
    pub fn z(&self, x: f64) -> f64 {
        if self.win.len() < 3 {
            return 0.0;
        }
        let med = self.win.median();
        self.z_against(x, med, self.spread(med))
    }

    pub(crate) fn z_against(&self, x: f64, med: f64, sigma: f64) -> f64 {
        let s = &self.win.sorted;
        let magnitude = s[0].abs().max(s[s.len() - 1].abs());
        // A flat stretch (sigma 0) is judged against the spread the series had before, so a
        // step off a plateau is large but finite and ranked by its size; differences at the
        // level of float rounding are no evidence of anything.
        let floor = spread_floor(self.long_spread, magnitude);
        let d = x - med;
        let sigma = sigma.max(floor);
        if d.abs() <= 1e-9 * magnitude.max(x.abs()) {
            0.0
        } else if sigma > 0.0 {
            (d / sigma).clamp(-Z_MAX, Z_MAX)
        } else {
            Z_MAX.copysign(d)
        }
    }

    /// Add `x` to the window without judging it or learning the spread: for a caller that
    /// judges by a reference it refreshes now and then ([`RobustZ::refresh`]).
    pub(crate) fn push(&mut self, x: f64) {
        self.win.push(x);
    }

    /// The window's median and spread (as [`RobustZ::z`] judges by; None before 3 points), to
    /// judge many values by one window with [`RobustZ::z_against`]; the spread is learnt into
    /// the long-run average as if `pushed` points had each been learnt.
    pub(crate) fn refresh(&mut self, pushed: usize) -> Option<(f64, f64)> {
        (self.win.len() >= 3).then(|| {
            let med = self.win.median();
            let (mad, sigma) = self.spreads(med);
            let a = (pushed as f64 / self.win.cap as f64).min(1.0);
            self.long_spread = learn_spread(self.long_spread, mad, a);
            (med, sigma)
        })
    }

    /// `1.4826 * MAD` of the window, or `1.2533 * mean absolute deviation` when more than
    /// half of the window is one value (both estimate sigma for normal data).
    fn spread(&self, med: f64) -> f64 {
        self.spreads(med).1
    }

    /// (`1.4826 * MAD`, the spread used: that, or the mean-deviation fallback).
    fn spreads(&self, med: f64) -> (f64, f64) {
        let mad = 1.4826 * self.win.mad(med);
        if mad > 0.0 {
            return (mad, mad);
        }
        let n = self.win.len() as f64;
        let mean_ad = self.win.sorted.iter().map(|v| (v - med).abs()).sum::<f64>() / n;
        (mad, 1.2533 * mean_ad)
    }

    /// The signed z of `x` against the past (as [`RobustZ::z`]), then learn `x`: into the
    /// window, and the window's spread into the long-run average (only non-zero spreads: the
    /// floor remembers how the series moves when it moves). One median/MAD per point.
    pub fn z_then_learn(&mut self, x: f64) -> f64 {
        let mut z = 0.0;
        if self.win.len() >= 3 {
            let med = self.win.median();
            let (mad, sigma) = self.spreads(med);
            z = self.z_against(x, med, sigma);
            // Learnt from the MAD only (not the mean-deviation fallback, which one wild point
            // in a mostly flat window would inflate).
            self.long_spread = learn_spread(self.long_spread, mad, 1.0 / self.win.cap as f64);
        }
        self.win.push(x);
        z
    }
}

/// A value far outside everything the series has shown: beyond the range it has covered by at
/// least `g` robust sigmas. It needs no model of the series, only its range and scale, so it
/// judges from the `min_points`-th point on — the first-minute answer to "inject a fault, watch
/// it get caught" while the detectors behind it are still warming up.
///
/// The range is an envelope: it widens at once to every value learnt and narrows back towards
/// the median slowly (a share of 1/[`ENVELOPE_POINTS`] of the gap per point, and at most the
/// share of [`ENVELOPE_MS`] that passed), so a machine that cycles between set points, or a PV
/// inverter between day and night, is judged against all of its cycle, not its last hours.
/// The scale is the robust sigma (1.4826 MAD) of the last `window` values, floored by a share
/// of the spread the series has shown before and by 1 % of its level. A series whose scale is
/// unknown (most of the window one value, and never moved before: PV power at night and dawn on
/// a first start) is not judged; its first changes would otherwise be "infinitely" far out. Every value is learnt, outliers too, so a
/// real level shift is reported once and then is part of the range.
#[derive(Debug, Clone)]
pub struct GrossOutlier {
    rz: RobustZ,
    g: f64,
    min_points: usize,
    lo: f64,
    hi: f64,
    /// The latest timestamp seen.
    last_ts: Option<i64>,
}

/// The smallest scale a [`GrossOutlier`] judges by, as a share of the series' level: a smooth
/// stretch (PV irradiance under a clear sky, a quiet process) has almost no spread of its own,
/// and the first cloud would be "infinitely" far out.
const LEVEL_SHARE: f64 = 0.01;

/// How slowly a [`GrossOutlier`]'s range forgets: about this many points to narrow by 63 %,
/// and, when it knows the points' times, no less than [`ENVELOPE_MS`].
pub const ENVELOPE_POINTS: f64 = 20_000.0;

/// The least time a [`GrossOutlier`]'s range takes to narrow by 63 %: a week, so a daily
/// cycle stays in it whatever the sampling rate (read every second, 20,000 points are under
/// six hours, and a PV inverter's sunset 0 V was gross after a day at 600 V; over two days it
/// still was).
pub const ENVELOPE_MS: f64 = 7.0 * 86_400_000.0;

impl GrossOutlier {
    pub fn new(window: usize, g: f64, min_points: usize) -> Self {
        GrossOutlier {
            rz: RobustZ::new(window.max(RobustZ::MIN_WINDOW), 3.5),
            g,
            min_points: min_points.max(RobustZ::MIN_WINDOW),
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            last_ts: None,
        }
    }

    /// How far `x` lies outside the series' range, in robust sigmas (0 inside it, or while
    /// the scale is unknown); then learn `x`. The range forgets by points only.
    pub fn beyond_then_learn(&mut self, x: f64) -> f64 {
        self.beyond_then_learn_by(x, 1.0 / ENVELOPE_POINTS)
    }

    /// [`Self::beyond_then_learn`] for a point read at `ts_ms`: the range forgets no faster
    /// than over [`ENVELOPE_POINTS`] points and [`ENVELOPE_MS`] of time (a timestamp not after
    /// the latest one seen forgets nothing).
    pub fn beyond_at_then_learn(&mut self, ts_ms: i64, x: f64) -> f64 {
        let by_points = 1.0 / ENVELOPE_POINTS;
        // Time is the latest timestamp seen: a clock that steps back and forth does not add
        // up to days.
        let a = match self.last_ts {
            Some(t0) if ts_ms > t0 => ((ts_ms - t0) as f64 / ENVELOPE_MS).min(by_points),
            Some(_) => 0.0,
            None => by_points,
        };
        self.last_ts = Some(self.last_ts.map_or(ts_ms, |t0| t0.max(ts_ms)));
        self.beyond_then_learn_by(x, a)
    }

    /// Whether `x`, read at `ts_ms`, is a gross outlier; then learn it.
    pub fn gross_at_then_learn(&mut self, ts_ms: i64, x: f64) -> bool {
        self.beyond_at_then_learn(ts_ms, x) >= self.g
    }

    /// The series' level: the largest magnitude of its median and, once it has moved, its
    /// range (a PV inverter's median is 0 V at night, its level 600 V; a first dawn's 0.1 is
    /// no level to judge the next 0.2 by).
    fn magnitude(&self, med: f64) -> f64 {
        if self.hi.is_finite() && self.rz.long_spread > 0.0 {
            med.abs().max(self.hi.abs()).max(self.lo.abs())
        } else {
            med.abs()
        }
    }

    fn beyond_then_learn_by(&mut self, x: f64, a: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let mut beyond = 0.0;
        let w = &self.rz.win;
        let mut med = x;
        if w.len() >= 3 {
            med = w.median();
        }
        if w.len() >= self.min_points {
            // The MAD only, not the mean-deviation fallback: a window that is mostly one value
            // (PV power at dawn after a night of zeros) has no scale worth judging by yet.
            let sigma = self
                .rz
                .spreads(med)
                .0
                .max(FLOOR_SHARE * self.rz.long_spread)
                .max(LEVEL_SHARE * self.magnitude(med));
            let d = if x > self.hi {
                x - self.hi
            } else if x < self.lo {
                self.lo - x
            } else {
                0.0
            };
            if sigma > 0.0 && sigma.is_finite() {
                beyond = (d / sigma).min(Z_MAX);
            }
        }
        self.rz.z_then_learn(x);
        // Narrow slowly towards the median, then widen to take `x` in.
        if self.hi.is_finite() {
            self.hi -= a * (self.hi - med).max(0.0);
            self.lo += a * (med - self.lo).max(0.0);
        }
        self.hi = self.hi.max(x);
        self.lo = self.lo.min(x);
        beyond
    }

    /// Whether `x` is a gross outlier; then learn it.
    pub fn gross_then_learn(&mut self, x: f64) -> bool {
        self.beyond_then_learn(x) >= self.g
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
        let z = self.z_then_learn(x);
        if self.win.len() <= self.warmup {
            0.0
        } else {
            squash(z.abs(), self.k)
        }
    }
}

/// Exponentially weighted mean and variance; `z = |x - mean| / sd`, mapped like [`RobustZ`].
#[derive(Debug, Clone)]
pub struct Ewma {
    alpha: f64,
    k: f64,
    mean: f64,
    var: f64,
    long_sd: f64,
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
            long_sd: 0.0,
            n: 0,
        }
    }

    /// Signed z of `x` against the current mean/variance, |z| <= `Z_MAX`; the spread is
    /// floored as [`RobustZ`]'s (a share of the long-run spread, or float rounding).
    pub fn z(&self, x: f64) -> f64 {
        if self.n < 3 {
            return 0.0;
        }
        let magnitude = self.mean.abs().max(1.0);
        let sd = self.var.sqrt().max(spread_floor(self.long_sd, magnitude));
        let d = x - self.mean;
        if d.abs() <= 1e-12 * magnitude {
            0.0
        } else if sd > 0.0 {
            (d / sd).clamp(-Z_MAX, Z_MAX)
        } else {
            Z_MAX.copysign(d)
        }
    }

    fn z_then_learn(&mut self, x: f64) -> f64 {
        let z = self.z(x);
        self.learn(x);
        z
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
            // ten times slower than the mean: the spread the series usually has
            self.long_sd = learn_spread(self.long_sd, self.var.sqrt(), 0.1 * self.alpha);
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
        squash(self.z_then_learn(x).abs(), self.k)
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
        let s = d.score(103, 2.0);
        assert!(s > 0.999_999 && s < 1.0, "flat history, new value: {s}");
    }

    #[test]
    fn scores_do_not_saturate_and_a_plateau_is_judged_by_the_past_spread() {
        // Larger surprises score strictly higher, up to z in the millions.
        let zs = [3.5, 35.0, 350.0, 3.5e3, 3.5e4, 3.5e5];
        for w in zs.windows(2) {
            assert!(squash(w[0], 3.5) < squash(w[1], 3.5), "{w:?}");
        }
        assert!(squash(1e300, 3.5) < 1.0 && squash(f64::INFINITY, 3.5) < 1.0);
        assert_eq!(squash(3.5, 3.5), 0.5);
        // A series that moved (sd ~0.3), then sat flat: a step of 0.5 off the plateau is
        // judged against a floor from the past spread (a clear but not extreme score), a step
        // of 100 far more; neither is "infinite".
        let mut d = RobustZ::new(20, 3.5);
        for i in 0..200 {
            d.score(i, 10.0 + ((i * 7919) % 11) as f64 * 0.1);
        }
        for i in 200..260 {
            d.score(i, 10.0);
        }
        let (small, big) = (d.clone().score(260, 10.5), d.clone().score(260, 110.0));
        assert!(small > 0.5 && small < 0.99, "{small}");
        assert!(big > small && big < 1.0, "{small} {big}");
        let mut e = Ewma::new(0.05, 3.5);
        for i in 0..200 {
            e.score(i, 10.0 + ((i * 7919) % 11) as f64 * 0.1);
        }
        for i in 200..2000 {
            e.score(i, 10.0);
        }
        let (small, big) = (e.clone().score(2000, 10.5), e.clone().score(2000, 110.0));
        assert!(small > 0.5 && small < 0.99, "{small}");
        assert!(big > small && big < 1.0, "{small} {big}");
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

        /// The O(log n) selection gives the merge's value to the bit, ties and overflowing
        /// distances included.
        #[test]
        fn mad_by_selection_is_mad_by_merge(
            xs in proptest::collection::vec(proptest::prop_oneof![
                -1e6f64..1e6,
                proptest::strategy::Strategy::prop_map(-3i32..3, f64::from),
                proptest::prop_oneof![proptest::strategy::Just(1e308), proptest::strategy::Just(-1e308), proptest::strategy::Just(f64::MAX)],
            ], 1..300),
            w in 1usize..250,
        ) {
            let mut sw = SortedWindow::new(w);
            for x in xs {
                sw.push(x);
                let med = sw.median();
                let split = sw.sorted.partition_point(|v| *v < med);
                let (fast, merged) = (sw.mad(med), sw.mad_by_merge(med, split));
                proptest::prop_assert!(fast.to_bits() == merged.to_bits() || (fast.is_nan() && merged.is_nan()), "{} vs {}", fast, merged);
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
