//! The ensemble: several detectors look at the same point, each raw score is calibrated per
//! series ([`Likelihood`]), the calibrated scores are combined, and repeats are damped
//! ([`Hold`]). Different detectors see different faults (a spike, a level shift, a broken
//! daily rhythm, an odd shape); calibration makes their opinions comparable.

use crate::calibrate::{Hold, Likelihood};
use crate::Detector;

/// A detector whose raw score is passed through a likelihood calibration.
pub struct Calibrated {
    inner: Box<dyn Detector>,
    lik: Likelihood,
    hold: Option<Hold>,
}

impl Calibrated {
    pub fn new(inner: Box<dyn Detector>, lik: Likelihood, hold: Option<Hold>) -> Self {
        Calibrated { inner, lik, hold }
    }
}

impl Detector for Calibrated {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn score(&mut self, ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let s = self.lik.update(self.inner.score(ts, x));
        match &mut self.hold {
            Some(h) => h.apply(s),
            None => s,
        }
    }
}

/// Raw member score that raises an alarm on its own: `z = 10k` for the z detectors (with
/// [`crate::stats`]'s mapping), a point so far out that its history cannot excuse it.
pub const RAW_ALARM: f64 = 0.99;

/// How member scores are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    Max,
    Mean,
}

/// One member: a detector and, unless its score is already a likelihood (`sequence`), the
/// calibration that makes its score comparable with the others'.
pub struct Member {
    pub detector: Box<dyn Detector>,
    pub calibrate: Option<Likelihood>,
    /// Its raw score may raise an alarm on its own ([`RAW_ALARM`]): for point detectors.
    pub raw_alarm: bool,
}

/// Calibrated members, combined, then held; silent for the first `warmup` points.
pub struct Ensemble {
    members: Vec<Member>,
    combine: Combine,
    hold: Hold,
    warmup: usize,
    seen: usize,
    last: Vec<f64>,
}

impl Ensemble {
    /// `warmup`: points during which every member learns and the ensemble scores 0 (no member
    /// has a history worth judging by yet: a detector that has seen three points calls the
    /// fourth a wild outlier).
    pub fn new(members: Vec<Member>, combine: Combine, hold: Hold, warmup: usize) -> Self {
        let n = members.len();
        Ensemble {
            members,
            combine,
            hold,
            warmup,
            seen: 0,
            last: vec![0.0; n],
        }
    }

    /// The calibrated member scores of the last point, in member order.
    pub fn member_scores(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.members
            .iter()
            .map(|m| m.detector.name())
            .zip(self.last.iter().copied())
    }
}

impl Detector for Ensemble {
    fn name(&self) -> &'static str {
        "ensemble"
    }

    fn score(&mut self, ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.seen = self.seen.saturating_add(1);
        let mut max_raw: f64 = 0.0;
        for (i, m) in self.members.iter_mut().enumerate() {
            let raw = m.detector.score(ts, x);
            if m.raw_alarm {
                max_raw = max_raw.max(raw);
            }
            self.last[i] = match &mut m.calibrate {
                Some(lik) => lik.update(raw),
                None => raw,
            };
        }
        if self.seen <= self.warmup {
            return 0.0;
        }
        let mut s = match self.combine {
            Combine::Max => self.last.iter().copied().fold(0.0, f64::max),
            Combine::Mean => self.last.iter().sum::<f64>() / self.last.len().max(1) as f64,
        };
        // A single extreme point is an anomaly whatever its history says; the likelihood's
        // short-term averaging would otherwise dilute a one-point spike.
        if max_raw >= RAW_ALARM {
            s = s.max(max_raw);
        }
        self.hold.apply(s).clamp(0.0, 1.0)
    }
}
