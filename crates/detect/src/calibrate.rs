//! Turning a detector's raw surprise into a score that means the same on every series.
//!
//! NAB picks one threshold for all files, and an operator sets one alert level for all
//! devices, so "0.9" must be rare everywhere. [`Likelihood`] does what Numenta's anomaly
//! likelihood does: it compares the short-term mean of the raw surprise with its long-term
//! distribution (bounded ring buffers, running sums) and reports the Gaussian tail on a log
//! scale, so a score near 1 means "this much surprise has almost never been seen here".
//! [`Hold`] keeps one alarm per event: after a high score, repeats of the same level are
//! damped for a while (fewer duplicate alerts; NAB charges every repeated detection).
//! [`Ticker`] counts a series' readings in time, so that these windows span the same time
//! whether a device reads every second or every ten.

use std::collections::VecDeque;

/// Ring buffer with running sum and sum of squares (Kahan-free: values are bounded scores).
#[derive(Debug, Clone)]
struct RunningWindow {
    cap: usize,
    buf: VecDeque<f64>,
    sum: f64,
    sumsq: f64,
}

impl RunningWindow {
    fn new(cap: usize) -> Self {
        RunningWindow {
            cap,
            buf: VecDeque::with_capacity(cap),
            sum: 0.0,
            sumsq: 0.0,
        }
    }
    fn push(&mut self, x: f64) {
        if self.cap == 0 {
            return;
        }
        if self.buf.len() == self.cap {
            let o = self.buf.pop_front().expect("full");
            self.sum -= o;
            self.sumsq -= o * o;
        }
        self.buf.push_back(x);
        self.sum += x;
        self.sumsq += x * x;
    }
    fn len(&self) -> usize {
        self.buf.len()
    }
    fn mean(&self) -> f64 {
        self.sum / self.buf.len().max(1) as f64
    }
    fn sd(&self) -> f64 {
        let n = self.buf.len().max(1) as f64;
        let m = self.sum / n;
        (self.sumsq / n - m * m).max(0.0).sqrt()
    }
}

/// Standard normal CDF (Abramowitz-Stegun 7.1.26 via erf; |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    let erf = if x >= 0.0 { y } else { -y };
    0.5 * (1.0 + erf)
}

/// Numenta-style anomaly likelihood on a log scale, in `[0, 1]`.
#[derive(Debug, Clone)]
pub struct Likelihood {
    /// Completed ticks' mean raw scores: the reference distribution.
    long: RunningWindow,
    /// The last `short - 1` completed ticks' means (the current tick makes `short`).
    short: RunningWindow,
    min_history: usize,
    /// The current tick's raw scores.
    tick: TickMean,
}

/// The lower bounds Numenta's `estimateNormal` puts on the long-run distribution (mean 0.03,
/// variance 0.0003): a detector that has been almost silent (a flat night) would otherwise
/// make its first small surprise an extreme tail event. Worth 0.5 NAB points here, and a third
/// of the clean-day false alarms.
const MIN_MEAN: f64 = 0.03;
const MIN_SD: f64 = 0.017_320_508;

impl Likelihood {
    /// `history`: raw scores that form the reference distribution; `short`: points averaged
    /// before comparing (smooths single-point noise); `min_history`: points before any
    /// non-zero output.
    pub fn new(history: usize, short: usize, min_history: usize) -> Self {
        Likelihood {
            long: RunningWindow::new(history.max(2)),
            short: RunningWindow::new(short.max(1) - 1),
            min_history,
            tick: TickMean::default(),
        }
    }

    /// Feed one raw surprise (non-negative, larger = more surprising); get the score. Every
    /// call is a tick of its own.
    pub fn update(&mut self, raw: f64) -> f64 {
        self.update_at(raw, true)
    }

    /// [`Self::update`] counting in ticks ([`Ticker`]): the windows hold ticks, each the mean
    /// raw score of its readings; `new_tick` says this reading starts one. With one reading a
    /// tick this is exactly [`Self::update`].
    pub fn update_at(&mut self, raw: f64, new_tick: bool) -> f64 {
        let raw = if raw.is_finite() { raw } else { 1e6 };
        // A detector that is not ready yet (the seasonal one before a whole period) says 0:
        // that is no history to judge its first real scores by. Without this, the seasonal
        // member's first day of zeros made its second day an alarm (2.4 NAB points).
        if raw == 0.0 && self.long.len() == 0 && self.tick.is_empty() {
            return 0.0;
        }
        if let Some(m) = new_tick.then(|| self.tick.close()).flatten() {
            self.long.push(m);
            self.short.push(m);
        }
        self.tick.add(raw);
        if self.long.len() >= self.min_history.max(2) {
            let recent = (self.short.sum + self.tick.mean()) / (self.short.len() + 1) as f64;
            let sd = self.long.sd().max(MIN_SD);
            let z = (recent - self.long.mean().max(MIN_MEAN)) / sd;
            log_score(normal_cdf(z))
        } else {
            0.0
        }
    }
}

/// Counts a series' readings in time: one tick per reading, but at most one per `tick_ms` of
/// the series' own clock (a new tick starts when a reading falls in a later `tick_ms` slot than
/// the last tick's). Windows counted in ticks then span the same time at a reading a second as
/// at one every ten: the lab's windows were tuned at 10 s and on NAB's 5 minutes, and counted
/// in readings, a reading a second made a 2000-reading history half an hour, too short to have
/// seen yesterday's feathering of a wind turbine. A clock that stands still or steps back
/// starts no tick, except every [`MAX_PER_TICK`] readings, so such a series is still judged.
#[derive(Debug, Clone)]
pub struct Ticker {
    tick_ms: i64,
    slot: Option<i64>,
    in_tick: u32,
}

/// The mean of the current tick's values: windows counted in ticks hold one such mean a tick.
#[derive(Debug, Clone, Default)]
pub(crate) struct TickMean {
    sum: f64,
    n: u32,
}

impl TickMean {
    /// End the tick: its mean, if it had any value.
    pub(crate) fn close(&mut self) -> Option<f64> {
        let m = (self.n > 0).then(|| self.sum / self.n as f64);
        *self = TickMean::default();
        m
    }

    pub(crate) fn add(&mut self, x: f64) {
        self.sum += x;
        self.n += 1;
    }

    /// The mean so far (0 before any value).
    pub(crate) fn mean(&self) -> f64 {
        self.sum / self.n.max(1) as f64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Readings after which a tick ends whatever the clock says.
pub const MAX_PER_TICK: u32 = 100;

impl Ticker {
    /// `tick_ms` <= 0: every reading is a tick.
    pub fn new(tick_ms: i64) -> Self {
        Ticker {
            tick_ms,
            slot: None,
            in_tick: 0,
        }
    }

    /// Whether the reading at `ts` starts a new tick.
    pub fn advance(&mut self, ts: i64) -> bool {
        if self.tick_ms <= 0 {
            return true;
        }
        let slot = ts.div_euclid(self.tick_ms);
        let new = match self.slot {
            None => true,
            Some(last) => slot > last || self.in_tick >= MAX_PER_TICK,
        };
        if new {
            self.slot = Some(self.slot.map_or(slot, |last| last.max(slot)));
            self.in_tick = 1;
        } else {
            self.in_tick += 1;
        }
        new
    }
}

/// Numenta's `computeLogLikelihood`: 0.5 at likelihood 0.99999, 1 at 1 - 1e-10.
pub fn log_score(likelihood: f64) -> f64 {
    ((1.000_000_000_1 - likelihood).ln() / (1.0f64 - 0.999_999_999_9).ln()).clamp(0.0, 1.0)
}

/// Damp repeated alarms: a score that does not exceed what was already reported in the last
/// `hold` points is multiplied by `damp`.
#[derive(Debug, Clone)]
pub struct Hold {
    hold: usize,
    damp: f64,
    level: f64,
    since: usize,
}

impl Hold {
    pub fn new(hold: usize, damp: f64) -> Self {
        Hold {
            hold,
            damp,
            level: 0.0,
            since: usize::MAX,
        }
    }

    pub fn apply(&mut self, s: f64) -> f64 {
        self.apply_at(s, true)
    }

    /// [`Self::apply`] with `hold` counted in ticks ([`Ticker`]).
    pub fn apply_at(&mut self, s: f64, new_tick: bool) -> f64 {
        if new_tick {
            self.since = self.since.saturating_add(1);
        }
        if self.since > self.hold {
            self.level = 0.0;
        }
        if s > self.level {
            // a new, higher alarm: report it and hold at this level
            if s >= 0.5 {
                self.level = s;
                self.since = 0;
            }
            s
        } else {
            s * self.damp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_reference_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-3.0) - 0.00135).abs() < 1e-5);
    }

    #[test]
    fn likelihood_is_quiet_on_steady_noise_and_loud_on_a_burst() {
        let mut l = Likelihood::new(500, 5, 100);
        let mut max_quiet: f64 = 0.0;
        for i in 0..1000 {
            let s = l.update(0.2 + ((i * 37) % 11) as f64 * 0.01);
            if i > 200 {
                max_quiet = max_quiet.max(s);
            }
        }
        assert!(max_quiet < 0.3, "{max_quiet}");
        let burst = (0..5).map(|_| l.update(0.95)).fold(0.0, f64::max);
        assert!(burst > 0.9, "{burst}");
    }

    #[test]
    fn a_ticker_counts_time_and_a_clock_that_stands_still_still_ticks() {
        let ticks = |t: &mut Ticker, ts: &mut dyn Iterator<Item = i64>| {
            ts.filter(|&x| t.advance(x)).count()
        };
        let mut t = Ticker::new(10_000);
        // A reading a second for 100 s: 10 ticks; then one every 5 minutes: one tick each.
        assert_eq!(ticks(&mut t, &mut (0..100).map(|i| i * 1000)), 10);
        assert_eq!(
            ticks(&mut t, &mut (1..=20).map(|i| 100_000 + i * 300_000)),
            20
        );
        // 1000 readings stamped with one instant, or stepping back: a tick every 100 readings.
        let last = 100_000 + 20 * 300_000;
        assert_eq!(ticks(&mut t, &mut std::iter::repeat_n(last, 1000)), 10);
        assert_eq!(ticks(&mut t, &mut (0..1000).map(|i| last - i * 1000)), 10);
        // Back on time, the next slot starts a tick at once.
        assert!(t.advance(last + 10_000));
        // Readings 10 s apart with a jitter of a few ms are a tick each.
        let mut t = Ticker::new(10_000);
        assert_eq!(
            ticks(&mut t, &mut (0..50).map(|i| i * 10_000 + (i % 3) * 7)),
            50
        );
        // 0: every reading is a tick.
        let mut t = Ticker::new(0);
        assert_eq!(ticks(&mut t, &mut std::iter::repeat_n(5, 30)), 30);
    }

    #[test]
    fn counted_in_ticks_a_second_by_second_series_is_judged_as_its_ten_second_ticks() {
        // The same surprise read every 10 s (one reading a tick) and every second (ten equal
        // readings a tick) gets the same scores; counted in readings it would not.
        let raw = |k: usize| 0.2 + ((k * 37) % 11) as f64 * 0.01 + if k == 900 { 0.9 } else { 0.0 };
        let (mut slow, mut fast, mut by_reading) = (
            Likelihood::new(500, 5, 100),
            Likelihood::new(500, 5, 100),
            Likelihood::new(500, 5, 100),
        );
        let mut differs = false;
        for k in 0..1000 {
            let want = slow.update(raw(k));
            for j in 0..10 {
                let got = fast.update_at(raw(k), j == 0);
                let old = by_reading.update(raw(k));
                if j == 9 {
                    assert!((got - want).abs() < 1e-9, "tick {k}: {got} vs {want}");
                    differs |= (old - want).abs() > 0.05;
                }
            }
        }
        assert!(differs, "counted in readings the scores should differ");
    }

    #[test]
    fn hold_damps_repeats_but_not_a_higher_alarm() {
        let mut h = Hold::new(10, 0.1);
        assert_eq!(h.apply(0.9), 0.9);
        assert!((h.apply(0.9) - 0.09).abs() < 1e-12);
        assert_eq!(h.apply(0.95), 0.95);
        for _ in 0..11 {
            h.apply(0.0);
        }
        assert_eq!(h.apply(0.9), 0.9, "hold expired");
    }
}
