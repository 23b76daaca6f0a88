//! Seasonal residual: learn the usual value for each phase of a period (a day by default),
//! then judge the residual `x - profile[phase]` with a robust z. A warm afternoon is normal,
//! the same temperature at 3 a.m. is not.
//!
//! State is bounded: at most `max_buckets` phase buckets plus the residual window. The
//! sampling interval is learned from the first timestamps (the smallest positive step).

use crate::stats::{squash, RobustZ};
use crate::Detector;

#[derive(Debug, Clone)]
pub struct Seasonal {
    period_ms: i64,
    max_buckets: usize,
    alpha: f64,
    k: f64,
    bucket_ms: i64,
    profile: Vec<f64>,
    seen: Vec<u32>,
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
            profile: Vec::new(),
            seen: Vec::new(),
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
            self.bucket_ms = self.bucket_ms.max(min_bucket);
            let n = ((self.period_ms + self.bucket_ms - 1) / self.bucket_ms) as usize;
            self.profile = vec![0.0; n];
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

    fn learn(&mut self, ts: i64, x: f64) {
        if self.profile.is_empty() {
            return;
        }
        let b = self.bucket(ts);
        if self.seen[b] == 0 {
            self.profile[b] = x;
        } else {
            self.profile[b] += self.alpha * (x - self.profile[b]);
        }
        self.seen[b] = self.seen[b].saturating_add(1);
    }
}

impl Detector for Seasonal {
    fn name(&self) -> &'static str {
        "seasonal"
    }

    fn score(&mut self, ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.observe_step(ts);
        let first = *self.first_ts.get_or_insert(ts);
        let s = match self.residual(ts, x) {
            Some(r) => {
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
}
