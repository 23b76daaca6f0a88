//! Seasonal residual: learn the usual value for each phase of a period (a day by default),
//! then judge the residual `x - profile[phase]` with a robust z. A warm afternoon is normal,
//! the same temperature at 3 a.m. is not.
//!
//! Each phase also learns how far its values usually stray from its profile (the mean absolute
//! residual met there), so it can tell whether a point is usual for its time of day
//! ([`Detector::last_usual`]), which a robust z over the last few hundred residuals (a quiet
//! night's, at sunrise) cannot.
//!
//! A series read more often than the buckets are wide (every 10 s into 5-minute buckets)
//! learns each point at a share of the per-visit rate, so a bucket's profile is its level over
//! the last days, not yesterday's last minute; and a point near the profile of a neighbouring
//! bucket is usual too (a switch a minute early, a ramp crossing a bucket's edge).
//!
//! State is bounded: at most `max_buckets` phase buckets plus the residual window. The
//! sampling interval is learned from the first timestamps (the smallest positive step).

use crate::stats::{squash, RobustZ};
use crate::Detector;

/// A residual within this many of its phase's usual absolute residuals is usual for that time
/// of day ([`Detector::last_usual`]): the ensemble then lets the seasonal member explain a
/// sunrise or a scheduled switch away (on clean emulated data: 7 / 13 / 13 second-day
/// episodes for seeds 11 / 12 / 13 became 5 / 4 / 5; NAB unchanged; 5 gives the same; with
/// the neighbouring buckets and the per-visit rate, 0 / 0 / 0).
/// The first visits of a phase average plainly, so the spread is not underestimated.
pub const USUAL_SPREADS: f64 = 3.0;

#[derive(Debug, Clone)]
pub struct Seasonal {
    period_ms: i64,
    max_buckets: usize,
    alpha: f64,
    k: f64,
    bucket_ms: i64,
    /// The sampling step learnt from the first timestamps (the bucket is at least that).
    step_ms: i64,
    profile: Vec<f64>,
    /// Per phase: the mean absolute residual met there on earlier visits.
    spread: Vec<f64>,
    seen: Vec<u32>,
    /// The last point's verdict ([`Detector::last_usual`]).
    usual: Option<bool>,
    last_ts: Option<i64>,
    steps: u32,
    residual: RobustZ,
    /// Full periods observed so far; residuals count only once a whole period was seen.
    first_ts: Option<i64>,
}

impl Seasonal {
    /// `period_ms`: the season (86_400_000 for daily); `alpha`: learning rate of a phase's
    /// value per visit; `residual_window`: points of residual history for the robust z.
    pub fn new(
        period_ms: i64,
        max_buckets: usize,
        alpha: f64,
        residual_window: usize,
        k: f64,
    ) -> Self {
        assert!(period_ms > 0 && max_buckets > 0 && alpha > 0.0 && alpha <= 1.0);
        Seasonal {
            period_ms,
            max_buckets,
            alpha,
            k,
            bucket_ms: 0,
            step_ms: 0,
            profile: Vec::new(),
            spread: Vec::new(),
            seen: Vec::new(),
            usual: None,
            last_ts: None,
            steps: 0,
            residual: RobustZ::new(residual_window, k),
            first_ts: None,
        }
    }

    fn bucket(&self, ts: i64) -> usize {
        ((ts.rem_euclid(self.period_ms) / self.bucket_ms) as usize).min(self.profile.len() - 1)
    }

    /// Learn the sampling step from the first timestamps, then fix the buckets.
    fn observe_step(&mut self, ts: i64) {
        if let Some(prev) = self.last_ts {
            let dt = ts - prev;
            if dt > 0 && (self.bucket_ms == 0 || dt < self.bucket_ms) && self.steps < 16 {
                self.bucket_ms = dt;
            }
            if dt > 0 {
                self.steps += 1;
            }
        }
        self.last_ts = Some(ts);
        if self.steps == 16 && self.profile.is_empty() {
            let min_bucket = (self.period_ms / self.max_buckets as i64).max(1);
            self.step_ms = self.bucket_ms;
            self.bucket_ms = self.bucket_ms.max(min_bucket);
            let n = ((self.period_ms + self.bucket_ms - 1) / self.bucket_ms) as usize;
            self.profile = vec![0.0; n];
            self.spread = vec![0.0; n];
            self.seen = vec![0; n];
        }
    }

    /// The residual of `x` against the learned profile, if its phase has been seen.
    pub fn residual(&self, ts: i64, x: f64) -> Option<f64> {
        if self.profile.is_empty() {
            return None;
        }
        let b = self.bucket(ts);
        (self.seen[b] > 0).then(|| x - self.profile[b])
    }

    /// Whether `x` is within [`USUAL_SPREADS`] of what its phase, or a neighbouring one,
    /// usually strays: a switch that comes a minute early, or a ramp that crosses a bucket's
    /// edge (where the profile, learnt at the end of yesterday's bucket, lags by a bucket's
    /// worth of ramp), is still usual for its time of day.
    fn usual_near(&self, ts: i64, x: f64) -> bool {
        let n = self.profile.len();
        let b = self.bucket(ts);
        let near = |i: usize| {
            self.seen[i] > 0 && (x - self.profile[i]).abs() <= USUAL_SPREADS * self.spread[i]
        };
        // One point a bucket (NAB's 5-minute series): the profile resolves every phase, and
        // the neighbours' leeway would excuse real jumps (NAB development subset 70.4 -> 60.1).
        near(b)
            || (self.bucket_ms >= 2 * self.step_ms && (near((b + n - 1) % n) || near((b + 1) % n)))
    }

    fn learn(&mut self, ts: i64, x: f64) {
        if self.profile.is_empty() {
            return;
        }
        let b = self.bucket(ts);
        if self.seen[b] == 0 {
            self.profile[b] = x;
        } else {
            let r = x - self.profile[b];
            // `alpha` is per visit: a bucket read 30 times a day learns each point at a 30th
            // of it, so its profile is the bucket's level over the last days, not the last
            // minute of yesterday's bucket.
            let alpha = self.alpha * (self.step_ms as f64 / self.bucket_ms as f64).clamp(0.0, 1.0);
            // A plain mean over the first visits (an EWMA from 0 would start far too small),
            // then the profile's learning rate.
            let w = (1.0 / self.seen[b] as f64).max(alpha);
            self.spread[b] += w * (r.abs() - self.spread[b]);
            self.profile[b] += alpha * r;
        }
        self.seen[b] = self.seen[b].saturating_add(1);
    }
}

impl Detector for Seasonal {
    fn name(&self) -> &'static str {
        "seasonal"
    }

    fn last_usual(&self) -> Option<bool> {
        self.usual
    }

    fn score(&mut self, ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.observe_step(ts);
        let first = *self.first_ts.get_or_insert(ts);
        self.usual = None;
        let s = match self.residual(ts, x) {
            Some(r) => {
                if ts - first >= self.period_ms {
                    self.usual = Some(self.usual_near(ts, x));
                }
                let z = self.residual.z_then_learn(r);
                if ts - first >= self.period_ms {
                    squash(z.abs(), self.k)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.learn(ts, x);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn daily(t: i64) -> f64 {
        let phase = (t % 86_400_000) as f64 / 86_400_000.0;
        // deterministic pseudo-random noise in [0, 0.5)
        let mut h = ((t / MIN) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
        20.0 + 10.0 * (phase * std::f64::consts::TAU).sin() + (h % 1000) as f64 / 2000.0
    }

    #[test]
    fn a_normal_day_is_quiet_and_an_out_of_phase_value_is_not() {
        let mut d = Seasonal::new(86_400_000, 288, 0.3, 288, 3.5);
        let mut quiet: f64 = 0.0;
        let mut t = 0;
        for _ in 0..(3 * 288) {
            let s = d.score(t, daily(t));
            if t > 2 * 86_400_000 {
                quiet = quiet.max(s);
            }
            t += 5 * MIN;
        }
        assert!(quiet < 0.9, "no alarm on a normal day: {quiet}");
        // the daily maximum (30) at the time of the daily minimum: a plain z would not care
        let t_min = 3 * 86_400_000 + 18 * 3_600_000;
        assert!(d.score(t_min, 30.0) > 0.9);
        assert!(d.profile.len() <= 288);
    }

    /// A battery discharging on schedule: full until 17:00, then a percent down every two
    /// minutes for two hours.
    fn schedule(t: i64) -> f64 {
        let s = (t % 86_400_000) as f64 / 1000.0;
        100.0 - ((s - 61_200.0).max(0.0) / 120.0).min(60.0)
    }

    /// Feed `schedule` from `t` until `until`, every `step` ms; the time reached.
    fn feed(d: &mut Seasonal, mut t: i64, until: i64, step: i64) -> i64 {
        while t < until {
            d.score(t, schedule(t));
            t += step;
        }
        t
    }

    #[test]
    fn a_daily_ramp_read_often_is_usual_across_bucket_edges() {
        // Read every 10 s, a 5-minute bucket holds 30 points of the ramp: learnt per point,
        // its profile was yesterday's end of the bucket, and each bucket's first point was
        // a bucket's worth of ramp away from it.
        let mut d = Seasonal::new(86_400_000, 288, 0.2, 288, 3.5);
        let mut t = feed(&mut d, 0, 86_400_000, 10_000);
        let mut unusual = Vec::new();
        while t < 2 * 86_400_000 {
            d.score(t, schedule(t));
            if d.last_usual() != Some(true) {
                unusual.push(t % 86_400_000 / 1000);
            }
            t += 10_000;
        }
        assert!(unusual.is_empty(), "unusual at {unusual:?} s");
    }

    #[test]
    fn with_a_point_a_bucket_a_neighbours_value_is_not_usual() {
        // Read every 5 minutes, each bucket holds one point a day: yesterday's 17:00 value
        // at 17:05 is a broken schedule, not a switch a minute early.
        let mut d = Seasonal::new(86_400_000, 288, 0.2, 288, 3.5);
        let t = feed(&mut d, 0, 3 * 86_400_000, 5 * MIN);
        let t = feed(&mut d, t, t + 17 * 60 * MIN + 5 * MIN, 5 * MIN);
        d.score(t, schedule(t));
        assert_eq!(d.last_usual(), Some(true), "its own value");
        d.score(t + 5 * MIN, schedule(t));
        assert_eq!(
            d.last_usual(),
            Some(false),
            "the value of the bucket before"
        );
    }

    #[test]
    fn a_point_is_usual_for_its_phase_only_once_a_day_is_seen() {
        let mut d = Seasonal::new(86_400_000, 288, 0.3, 288, 3.5);
        let mut t = 0;
        while t < 86_400_000 {
            d.score(t, daily(t));
            assert_eq!(d.last_usual(), None, "no verdict before a whole day");
            t += 5 * MIN;
        }
        // Four more days to learn each phase's spread, then a fifth judged point by point.
        while t < 5 * 86_400_000 {
            d.score(t, daily(t));
            t += 5 * MIN;
        }
        let mut usual = 0;
        for _ in 0..288 {
            d.score(t, daily(t));
            usual += usize::from(d.last_usual() == Some(true));
            t += 5 * MIN;
        }
        assert!(usual >= 270, "{usual} of 288 clean points usual");
        // The daily maximum at the time of the daily minimum.
        let t_min = t - t % 86_400_000 + 86_400_000 + 18 * 3_600_000;
        d.score(t_min, 30.0);
        assert_eq!(d.last_usual(), Some(false));
    }
}
