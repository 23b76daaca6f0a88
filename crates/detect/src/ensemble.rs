//! The ensemble: several detectors look at the same point, each raw score is calibrated per
//! series ([`Likelihood`]), the calibrated scores are combined, and repeats are damped
//! ([`Hold`]). Different detectors see different faults (a spike, a level shift, a broken
//! daily rhythm, an odd shape); calibration makes their opinions comparable.
//!
//! How the opinions are combined decides both the NAB score and the false alarms of the live
//! lab (numbers: NAB development subset, standard profile; clean-day test, see
//! `crates/topology/src/clean_day_tests.rs`):
//! - any one point member's extreme raw score alarming on its own, and a 300-point hold, made
//!   the ensemble worse than its best member (45.5 against the sequence likelihood's 66.2). A
//!   raw alarm needs every point member (robust z, EWMA, seasonal) at [`RAW_ALARM`] together;
//!   the hold is 120 points. The max of the calibrated members: 67.4.
//! - The max let any one member alarm alone, and on clean emulated data one member always
//!   finds something new: about 150 events a simulated day over the built-in types. Now
//!   ([`Combine::Agree`]) one *family* alone (the sequence likelihood; the point detectors,
//!   robust z and EWMA, which see the same thing; the seasonal residual; the isolation forest)
//!   scores at most `solo` (0.8, below the lab's 0.9 threshold), and two families that agree
//!   score their common level (their peaks may be a few points apart, see below). NAB's own
//!   threshold optimisation still sees every solo opinion (it picks 0.54): 69.5.
//! - A series with a daily rhythm is judged by it: once the seasonal member has seen a whole
//!   day and finds the point usual for its time of day (raw score below `explain`, 0.7, or
//!   within [`crate::seasonal::USUAL_SPREADS`] of what that phase usually strays), the
//!   context-free members (point, isolation forest) are not counted; a sunrise is not a level
//!   shift. 70.1. When the point is usual for its phase, the sequence member is not counted
//!   either: 70.4 (low FP 63.6 -> 65.9, low FN 74.9 -> 74.3); nor the seasonal member's own
//!   score, nor a raw alarm: 70.6, and the battery's, the PV inverter's and the algae's daily
//!   switches on the second clean day are gone.
//! - A family's opinion is its least convinced member's (robust z and EWMA must both see it):
//!   70.9, and the reefer's door opening on the first clean day (the sequence and EWMA
//!   agreeing, robust z at 0.05) is gone. The calibrated members average the last 5 raw
//!   scores, so a level shift reaches EWMA a few points after the sequence member sees it:
//!   peaks agree within 3 points ([`AGREE_POINTS`]; 1 missed the lab check's +3 level shift;
//!   NAB is the same for 1 to 5).
//! - `learn_s` keeps the ensemble silent for a stretch of time as well (gross outliers aside):
//!   `learn_s=86400` (a day) removes the first-day events of the clean-day test, but then a
//!   level shift on the first day goes unreported, so it is off by default.
//!
//! - Windows are counted in ticks of 10 s ([`Ticker`], `tick_s`), not readings: the warm-up,
//!   the calibrations' history and short average, the agreement window and the hold; the
//!   sequence member's own likewise. They were tuned on NAB's 5 minutes and the clean-day
//!   test's 10 s, where every reading is a tick, and NAB is unchanged. Counted in readings, a
//!   reading a second made the calibration's history half an hour and the warm-up 12 minutes:
//!   two clean days at 1 s raised 9 events (a wind turbine feathering, the algae pH leaving its
//!   plateau, a motor's 2.9-sigma voltage, a reefer's first door, a truck's speed); now 0.
//!
//! - The online GRU autoencoder (`ae`, on by default) joins the isolation forest's family
//!   (`shape`, [`family`]): 72.7 (70.9 without it). As a family of its own it scored the same
//!   on NAB but raised 10 events on the clean days (a wind turbine feathering, a truck
//!   stopping): it learns a series from its first 600 readings only.
//!
//! [`Combine::Lead`] (the first member leads unless two others agree) is there to compare: 66.1.

use crate::calibrate::{Hold, Likelihood, Ticker};
use crate::stats::GrossOutlier;
use crate::trend::{Trend, TrendConfig};
use crate::Detector;

/// A detector whose raw score is passed through a likelihood calibration.
pub struct Calibrated {
    inner: Box<dyn Detector>,
    lik: Likelihood,
    hold: Option<Hold>,
    ticker: Ticker,
}

impl Calibrated {
    pub fn new(inner: Box<dyn Detector>, lik: Likelihood, hold: Option<Hold>) -> Self {
        Calibrated {
            inner,
            lik,
            hold,
            ticker: Ticker::new(0),
        }
    }

    /// Count the calibration's and the hold's windows in ticks of `ms` ([`Ticker`]; 0:
    /// readings).
    pub fn ticks_of(mut self, ms: i64) -> Self {
        self.ticker = Ticker::new(ms);
        self
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
        let tick = self.ticker.advance(ts);
        let s = self.lik.update_at(self.inner.score(ts, x), tick);
        match &mut self.hold {
            Some(h) => h.apply_at(s, tick),
            None => s,
        }
    }
}

/// Any detector behind a [`GrossOutlier`] check: a value far outside the series' recent range
/// scores 1 at once, whatever the detector says (it may still be warming up); the detector
/// learns every value either way. Built by the `gross=G` parameter every spec takes
/// ([`crate::build_live`] sets it for the live lab).
pub struct Guarded {
    inner: Box<dyn Detector>,
    gross: GrossOutlier,
    /// The last score came from the gross outlier check.
    last_gross: bool,
}

impl Guarded {
    pub fn new(inner: Box<dyn Detector>, gross: GrossOutlier) -> Self {
        Guarded {
            inner,
            gross,
            last_gross: false,
        }
    }
}

impl Detector for Guarded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn score(&mut self, ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let gross = self.gross.gross_at_then_learn(ts, x);
        let s = self.inner.score(ts, x);
        self.last_gross = gross;
        if gross {
            1.0
        } else {
            s
        }
    }

    fn last_verdict_by(&self) -> &'static str {
        if self.last_gross {
            "gross_outlier"
        } else {
            self.inner.last_verdict_by()
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
    /// The first member's score, unless at least two others agree at this calibrated
    /// likelihood or more: then the highest of all.
    Lead(f64),
    /// The second-highest family score (a family scores its least convinced member's peak),
    /// or `solo` x the highest, whichever is more: one family alone reaches at most `solo`, two
    /// that agree reach their common level.
    Agree {
        solo: f64,
    },
}

/// The family of a detector, for [`Combine::Agree`]: robust z and EWMA both judge a value's
/// distance from the recent level, so their agreement is one opinion, not two. Likewise the
/// isolation forest and the autoencoder both judge the shape of the last few readings: as
/// families of their own, the autoencoder agreeing with any other family raised 8 events in
/// two clean days at 1 s (a wind turbine feathering, a motor's voltage, a CNC's coolant) and
/// 2 at 10 s (the turbine, a reefer truck stopping); in one family, none, and NAB is the same
/// 72.7.
pub fn family(detector: &str) -> &'static str {
    match detector {
        "robust_z" | "ewma" => "point",
        "sequence" => "sequence",
        "seasonal" => "seasonal",
        "iforest" | "autoencoder" => "shape",
        _ => "other",
    }
}

/// Whether a family judges a value without its time of day: those the seasonal member may
/// explain away.
fn context_free(family: &str) -> bool {
    matches!(family, "point" | "shape")
}

/// One member: a detector and, unless its score is already a likelihood (`sequence`), the
/// calibration that makes its score comparable with the others'.
pub struct Member {
    pub detector: Box<dyn Detector>,
    pub calibrate: Option<Likelihood>,
    /// Its raw score may raise an alarm on its own ([`RAW_ALARM`]): for point detectors.
    pub raw_alarm: bool,
}

/// Calibrated members, combined, then held; silent for the first `warmup` points and the
/// first `learn_ms` of time.
pub struct Ensemble {
    members: Vec<Member>,
    /// Each member's family ([`family`]).
    families: Vec<&'static str>,
    combine: Combine,
    hold: Hold,
    warmup: usize,
    seen: usize,
    first_ts: Option<i64>,
    learn_ms: i64,
    /// The seasonal member, and the raw score below which it explains a point (once a whole
    /// day has passed).
    explain: Option<(usize, f64)>,
    last: Vec<f64>,
    /// The seasonal member's raw score of the last point (when [`Self::explain`] is set).
    seasonal_raw: f64,
    /// Per member: its highest counted score of the last few points, and that score's age.
    peaks: Vec<(f64, usize)>,
    /// Members whose raw score must reach [`RAW_ALARM`] together for a raw alarm (0: never).
    raw_agree: usize,
    /// Counts the readings in time: the warm-up, the agreement window, the hold and the
    /// calibrations' windows are counted in its ticks.
    ticker: Ticker,
    /// The drift check: the level change over the last minutes ([`Trend`], counting streaks
    /// at the robust z that reports; none: no drift check).
    drift: Option<Trend>,
    /// The last score came from the drift check.
    last_drift: bool,
}

/// Points within which two families' peaks count as agreeing ([`Combine::Agree`]).
pub const AGREE_POINTS: usize = 3;

/// Ticks of the drift check in a row whose level change is a ramp of [`crate::DRIFT_Z`] before
/// it is reported: a drift goes on.
pub const DRIFT_TICKS: usize = 12;

/// How long the seasonal member needs before it can explain anything: its period.
const SEASON_MS: i64 = 86_400_000;

impl Ensemble {
    /// `warmup`: points during which every member learns and the ensemble scores 0 (no member
    /// has a history worth judging by yet: a detector that has seen three points calls the
    /// fourth a wild outlier).
    pub fn new(members: Vec<Member>, combine: Combine, hold: Hold, warmup: usize) -> Self {
        let n = members.len();
        let families = members.iter().map(|m| family(m.detector.name())).collect();
        Ensemble {
            members,
            families,
            combine,
            hold,
            warmup,
            seen: 0,
            first_ts: None,
            learn_ms: 0,
            explain: None,
            last: vec![0.0; n],
            seasonal_raw: 0.0,
            peaks: vec![(0.0, 0); n],
            raw_agree: 1,
            ticker: Ticker::new(0),
            drift: None,
            last_drift: false,
        }
    }

    /// Count the warm-up, the agreement window, the hold and the calibrations' windows in ticks
    /// of `ms` ([`Ticker`]) rather than in readings (0: readings).
    pub fn ticks_of(mut self, ms: i64) -> Self {
        self.ticker = Ticker::new(ms);
        self
    }

    /// Report a level change of robust z `z` or more against the series' past changes over as
    /// long ([`Trend`]) on its own: a drift every point detector follows (0: never). The check
    /// has its own history, so it reports during the members' warm-up too (not during
    /// `learn_s`).
    pub fn drift_at(mut self, z: f64) -> Self {
        self.drift =
            (z > 0.0 && z.is_finite()).then(|| Trend::new(TrendConfig::default()).streaks_at(z));
        self
    }

    /// Stay silent until `ms` after the first point as well (0: points only).
    pub fn learn_for(mut self, ms: i64) -> Self {
        self.learn_ms = ms.max(0);
        self
    }

    /// Let the seasonal member, once it has seen a whole day, explain a point whose raw
    /// seasonal score is below `level`, or that it finds usual for its phase (0: never).
    pub fn explained_below(mut self, level: f64) -> Self {
        self.explain = self
            .members
            .iter()
            .position(|m| m.detector.name() == "seasonal")
            .filter(|_| level > 0.0)
            .map(|i| (i, level));
        self
    }

    /// A raw alarm needs this many members with `raw_alarm` at [`RAW_ALARM`] together (at
    /// most all of them; 0: no raw alarms).
    pub fn raw_agree(mut self, n: usize) -> Self {
        let with = self.members.iter().filter(|m| m.raw_alarm).count();
        self.raw_agree = if n == 0 || with == 0 { 0 } else { n.min(with) };
        self
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
        let tick = self.ticker.advance(ts);
        if tick {
            self.seen = self.seen.saturating_add(1);
        }
        let mut max_raw: f64 = 0.0;
        let mut alarms = 0;
        for (i, m) in self.members.iter_mut().enumerate() {
            let raw = m.detector.score(ts, x);
            if self.explain.is_some_and(|(e, _)| e == i) {
                self.seasonal_raw = raw;
            }
            if m.raw_alarm {
                max_raw = max_raw.max(raw);
                alarms += usize::from(raw >= RAW_ALARM);
            }
            self.last[i] = match &mut m.calibrate {
                Some(lik) => lik.update_at(raw, tick),
                None => raw,
            };
        }
        // 1 when the level has ramped beyond its usual changes for DRIFT_TICKS ticks.
        let drift = match &mut self.drift {
            Some(t) => {
                t.z_then_learn(ts, x);
                (t.streak() >= DRIFT_TICKS).then_some(1.0)
            }
            None => None,
        };
        self.last_drift = false;
        let elapsed = ts.saturating_sub(*self.first_ts.get_or_insert(ts));
        if elapsed < self.learn_ms {
            return 0.0;
        }
        if self.seen <= self.warmup {
            // The trend check has its own history (an hour of changes): a drift is reported
            // during the members' warm-up too, as a gross outlier is.
            self.last_drift = drift.is_some();
            return self.hold.apply_at(drift.unwrap_or(0.0), tick);
        }
        // Once it has seen a day, the seasonal member explains a point away: one with a low
        // seasonal score, for the context-free members; one usual for its phase, for the
        // sequence member and its own score too (an ordinary value at its usual time is no
        // order anomaly, and a high residual z there is the bucket's edge, not the value).
        let (explained, usual) = match self.explain {
            Some((i, level)) if elapsed >= SEASON_MS => {
                let usual = self.members[i].detector.last_usual() == Some(true);
                (usual || self.seasonal_raw < level, usual)
            }
            _ => (false, false),
        };
        // A member explained away counts as 0.
        let counted = |i: usize| {
            let f = self.families[i];
            if (explained && context_free(f)) || (usual && matches!(f, "sequence" | "seasonal")) {
                0.0
            } else {
                self.last[i]
            }
        };
        let n = self.last.len();
        let mut s = match self.combine {
            Combine::Max => (0..n).map(counted).fold(0.0, f64::max),
            Combine::Mean => (0..n).map(counted).sum::<f64>() / n.max(1) as f64,
            Combine::Lead(agree) => {
                if (1..n).filter(|&i| counted(i) >= agree).count() >= 2 {
                    (0..n).map(counted).fold(0.0, f64::max)
                } else {
                    counted(0)
                }
            }
            Combine::Agree { solo } => {
                // Families agree when their peaks fall within AGREE_POINTS of each other: the
                // sequence member sees a level shift at its first point, the calibrated ones
                // later (their short-term mean has to rise).
                let mut highest: f64 = 0.0;
                for (i, p) in self.peaks.iter_mut().enumerate() {
                    let v = counted(i);
                    highest = highest.max(v);
                    if v >= p.0 || p.1 >= AGREE_POINTS {
                        *p = (v, 0);
                    } else if tick {
                        p.1 += 1;
                    }
                }
                // The highest recent peak of the best family, and of the best other family.
                // A family's opinion is its least convinced member's: robust z and EWMA see
                // the same thing, so when only one of them sees it, it is not seen.
                let (mut top, mut second) = (0.0f64, 0.0f64);
                for (i, p) in self.peaks.iter().enumerate() {
                    let f = self.families[i];
                    if self.families[..i].contains(&f) {
                        continue;
                    }
                    let mut v = p.0;
                    for (j, q) in self.peaks.iter().enumerate().skip(i + 1) {
                        if self.families[j] == f {
                            v = v.min(q.0);
                        }
                    }
                    if v > top {
                        second = top;
                        top = v;
                    } else {
                        second = second.max(v);
                    }
                }
                second.max(solo * highest)
            }
        };
        // A single extreme point is an anomaly whatever its history says (unless it is usual
        // for its time of day: a sunset's first zero); the likelihood's short-term averaging
        // would otherwise dilute a one-point spike.
        if self.raw_agree > 0 && alarms >= self.raw_agree && !usual {
            s = s.max(max_raw);
        }
        // A drift: the level has moved further over the last minutes than it ever moves over
        // as long (unless that is usual for the time of day: a sunrise).
        if let Some(d) = drift.filter(|_| !explained) {
            self.last_drift = d > s;
            s = s.max(d);
        }
        self.hold.apply_at(s, tick).clamp(0.0, 1.0)
    }

    fn last_verdict_by(&self) -> &'static str {
        if self.last_drift {
            "trend"
        } else {
            "ensemble"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A temperature like the demo sensor's: 21 °C, a daily cycle of +-3 °C, noise 0.08, one
    /// reading per second.
    fn temperature(rng: &mut rand::rngs::StdRng, i: usize) -> f64 {
        let day = (i as f64 / 86_400.0) * std::f64::consts::TAU;
        21.0 + 3.0 * day.sin() + 0.08 * (rng.random::<f64>() * 2.0 - 1.0) * 1.7
    }

    #[test]
    fn a_gross_outlier_scores_1_during_warm_up_and_clean_data_nothing() {
        let mut e = crate::build_live("ensemble").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // 80 s of clean data (the ensemble's members are far from warm): silent.
        for i in 0..80 {
            let s = e.score(i as i64 * 1000, temperature(&mut rng, i));
            assert!(s < 0.5, "clean point {i} scored {s}");
        }
        // A +12 spike at 80 s is reported at once.
        let s = e.score(80_000, temperature(&mut rng, 80) + 12.0);
        assert_eq!(s, 1.0, "the spike");
        // The series goes on clean: no more alarms over the next hour.
        for i in 81..3_681 {
            let s = e.score(i as i64 * 1000, temperature(&mut rng, i));
            assert!(s < 0.9, "clean point {i} scored {s}");
        }
    }

    #[test]
    fn a_slow_drift_is_reported_by_the_trend_check_and_clean_data_nothing() {
        let mut e = crate::build_live("ensemble").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        // Three clean hours at 1 s (past the warm-up of 750 ticks of 10 s), then a drift of
        // 0.002 °C/s: ten times the daily cycle's steepest slope, under the noise per reading.
        for i in 0..10_800 {
            let s = e.score(i as i64 * 1000, temperature(&mut rng, i));
            assert!(s < 0.9, "clean point {i} scored {s}");
        }
        let caught = (10_800..10_800 + 3_600).find(|&i| {
            let x = temperature(&mut rng, i) + 0.002 * (i - 10_800) as f64;
            e.score(i as i64 * 1000, x) >= 0.9
        });
        let i = caught.expect("the drift is reported within an hour");
        assert_eq!(e.last_verdict_by(), "trend");
        assert!(i - 10_800 <= 40 * 60, "reported after {} s", i - 10_800);
    }

    #[test]
    fn a_drift_in_the_first_hours_is_reported_during_the_warm_up() {
        // A series read every second from its start: the members warm up for about two hours,
        // the trend check has an hour of changes after 66 minutes. A drift of 0.002 °C/s from
        // the 70th minute is reported within 40 minutes; the clean minutes before raise nothing.
        let mut e = crate::build_live("ensemble").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let start = 4_200;
        for i in 0..start {
            let s = e.score(i as i64 * 1000, temperature(&mut rng, i));
            assert!(s < 0.9, "clean point {i} scored {s}");
        }
        let caught = (start..start + 2_400).find(|&i| {
            let x = temperature(&mut rng, i) + 0.002 * (i - start) as f64;
            e.score(i as i64 * 1000, x) >= 0.9
        });
        assert!(
            caught.is_some(),
            "the drift was not reported within 40 minutes"
        );
        assert_eq!(e.last_verdict_by(), "trend");
    }

    #[test]
    fn a_series_that_never_moved_is_not_judged_by_its_first_change() {
        // PV power on a first start at night: zeros, then sunrise.
        let mut g = GrossOutlier::new(240, 8.0, 20);
        for _ in 0..500 {
            assert_eq!(g.beyond_then_learn(0.0), 0.0);
        }
        assert_eq!(g.beyond_then_learn(0.5), 0.0, "scale unknown: not judged");
        // Once it has moved, a jump far beyond its range is judged.
        for i in 0..240 {
            g.beyond_then_learn(0.5 + (i % 7) as f64 * 0.1);
        }
        assert!(g.gross_then_learn(50.0));
        // Learnt: the same value again is inside the range now.
        assert!(!g.gross_then_learn(50.0));
    }

    #[test]
    fn read_every_second_a_pv_day_still_remembers_the_night() {
        // A PV inverter's DC voltage read every second: a night at 0 V, a day at ~600 V, a
        // night again, then the next sunrise.
        let pv = |i: i64| 600.0 + ((i * 7919) % 13) as f64 * 0.5 - 3.0;
        let (mut timed, mut counted) = (
            GrossOutlier::new(240, 15.0, 20),
            GrossOutlier::new(240, 15.0, 20),
        );
        let mut t = 0;
        for i in 0..(24 * 3600) {
            let x = if (6 * 3600..20 * 3600).contains(&i) {
                pv(i)
            } else {
                0.0
            };
            timed.gross_at_then_learn(t, x);
            counted.gross_then_learn(x);
            t += 1000;
        }
        // The sunrise after: 20,000 points (under six hours) forgot the day, a week does not.
        for _ in 0..(6 * 3600) {
            timed.gross_at_then_learn(t, 0.0);
            counted.gross_then_learn(0.0);
            t += 1000;
        }
        assert!(!timed.gross_at_then_learn(t, pv(1)), "sunrise, by time");
        assert!(counted.gross_then_learn(pv(1)), "sunrise, by points");
    }

    #[test]
    fn a_client_repeating_one_timestamp_cannot_make_the_range_forget() {
        // Hostile or broken clocks: a million readings all stamped the same instant (or going
        // backwards) take no time, so the range a spike is judged against stays as it was.
        let mut g = GrossOutlier::new(240, 15.0, 20);
        for i in 0..300 {
            g.gross_at_then_learn(
                i * 1000,
                if i == 10 {
                    80.0
                } else {
                    20.0 + (i % 5) as f64 * 0.1
                },
            );
        }
        for i in 0..1_000_000 {
            g.gross_at_then_learn(300_000 - (i % 2) * 1000, 20.0);
        }
        assert!(
            !g.gross_at_then_learn(301_000, 79.0),
            "80 is still inside the range"
        );
    }

    #[test]
    fn the_live_lab_guards_every_detector_and_gross_0_turns_it_off() {
        for spec in [
            "ensemble",
            "seasonal",
            "robust_z:window=60",
            "sequence",
            "ewma",
        ] {
            let mut live = crate::build_live(spec).unwrap();
            let mut plain = crate::build(spec).unwrap();
            let mut off = crate::build_live(&format!(
                "{spec}{}gross=0",
                if spec.contains(':') { "," } else { ":" }
            ))
            .unwrap();
            for i in 0..80 {
                let x = 21.0 + (i % 5) as f64 * 0.05;
                for d in [&mut live, &mut plain, &mut off] {
                    d.score(i * 1000, x);
                }
            }
            assert_eq!(live.score(80_000, 33.0), 1.0, "{spec}");
            assert_eq!(live.last_verdict_by(), "gross_outlier", "{spec}");
            assert_eq!(
                live.name(),
                plain.name(),
                "{spec}: metrics keep the detector's name"
            );
            assert!(off.score(80_000, 33.0) < 1.0, "{spec} with gross=0");
            assert!(
                plain.score(80_000, 33.0) < 1.0,
                "{spec} outside the live lab"
            );
        }
    }
}

#[cfg(test)]
mod speed {
    /// The live default in its steady state, for `perf`:
    /// `cargo test --release -p fieldlab-detect ensemble::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn live_default_steady_state() {
        let mut d = crate::build_live("ensemble").unwrap();
        let x = |i: u64| {
            (i as f64 / 500.0).sin() * 10.0
                + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / 1.6e7
        };
        for i in 0..700u64 {
            d.score(i as i64 * 10_000, x(i));
        }
        let t0 = std::time::Instant::now();
        let n = 300_000u64;
        let mut acc = 0.0;
        for i in 700..700 + n {
            acc += d.score(i as i64 * 10_000, x(i));
        }
        let dt = t0.elapsed().as_secs_f64();
        println!("live default: {:.0} points/s ({acc})", n as f64 / dt);
    }
}
