//! fieldlab-detect: anomaly detectors that score each point as it arrives.
//!
//! Why it exists: operators want alerts on live streams and students want to see what a
//! detector saw. Every detector here is *streaming*: it scores point `t` using only points
//! before it, keeps bounded state per series, and returns a score in `[0, 1]`.
//!
//! - `stats`: rolling median/MAD ([`RobustZ`]) and EWMA ([`Ewma`]);
//! - `seasonal`: residual against a learned daily profile ([`Seasonal`]);
//! - `forest`: a streaming isolation forest over shingles ([`IsolationForest`]);
//! - `autoencoder`: a GRU autoencoder over windows (candle, CPU), trained by `fieldlab detect
//!   train` or online after a warm-up ([`autoencoder::Autoencoder`]);
//! - `sequence`: order and time-of-day surprise with Numenta-style likelihood ([`Sequence`]),
//!   the best of these on NAB;
//! - `calibrate` and `ensemble`: per-series likelihood calibration, alarm hold, the ensemble.
//!
//! Detectors are built by name from a spec string (`ewma`, `robust_z:window=120`, ...), see
//! [`build`]; that is how the config, the HTTP API and the NAB runner choose them.
//!
//! Architecture invariant: detectors do no I/O and read no clock; time is an argument
//! (the autoencoder's model files are read and written only by its explicit save/load).

pub mod autoencoder;
pub mod calibrate;
pub mod ensemble;
pub mod forest;
mod recurrent;
pub mod seasonal;
pub mod sequence;
pub mod stats;
pub mod trend;

pub use calibrate::{Hold, Likelihood};
pub use ensemble::{Calibrated, Combine, Ensemble, Member};
pub use forest::IsolationForest;
pub use seasonal::Seasonal;
pub use sequence::{Sequence, SequenceConfig};
pub use stats::{Ewma, RobustZ};

use std::collections::BTreeMap;

/// A streaming anomaly scorer for one series.
pub trait Detector: Send {
    /// Short stable name, used in config and in anomaly events.
    fn name(&self) -> &'static str;
    /// Score `value` observed at `ts_ms`, then learn from it. Returns a score in `[0, 1]`;
    /// non-finite input scores 0 and is not learned (it is a data-quality matter).
    fn score(&mut self, ts_ms: i64, value: f64) -> f64;
    /// What gave the last score, for an anomaly event: the detector itself unless a wrapper
    /// decided (the gross outlier check says `gross_outlier`).
    fn last_verdict_by(&self) -> &'static str {
        self.name()
    }
    /// After the last score: whether the detector found the point usual for its context
    /// (the seasonal one: for its time of day), if it can tell yet.
    fn last_usual(&self) -> Option<bool> {
        None
    }
}

/// Names accepted by [`build`].
pub const DETECTORS: &[&str] = &[
    "robust_z",
    "ewma",
    "seasonal",
    "iforest",
    "autoencoder",
    "sequence",
    "trend",
    "ensemble",
    "off",
];

/// A detector spec that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// `name[:key=value,...]`, e.g. `robust_z:window=120,k=4`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub params: BTreeMap<String, f64>,
}

impl Spec {
    pub fn parse(s: &str) -> Result<Spec, SpecError> {
        let (name, rest) = s.trim().split_once(':').unwrap_or((s.trim(), ""));
        if !DETECTORS.contains(&name) {
            return Err(SpecError(format!(
                "unknown detector `{name}`; choose one of {}",
                DETECTORS.join(", ")
            )));
        }
        let mut params = BTreeMap::new();
        for kv in rest.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| SpecError(format!("`{kv}` in `{s}`: expected key=value")))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| SpecError(format!("`{kv}` in `{s}`: value is not a number")))?;
            params.insert(k.trim().to_string(), v);
        }
        Ok(Spec {
            name: name.to_string(),
            params,
        })
    }

    fn get(&self, k: &str, default: f64) -> f64 {
        self.params.get(k).copied().unwrap_or(default)
    }

    fn check_known(&self, known: &[&str]) -> Result<(), SpecError> {
        for k in self.params.keys() {
            if !known.contains(&k.as_str()) {
                return Err(SpecError(format!(
                    "detector `{}` has no parameter `{k}` (known: {})",
                    self.name,
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }
}

const CAL: &[&str] = &[
    "calibrate",
    "history",
    "short",
    "hold",
    "damp",
    "gross",
    "diff",
    "tick_s",
];

/// The tick the windows of `sequence`, `ensemble` and `calibrate=1` are counted in
/// ([`calibrate::Ticker`]): they were tuned on readings 10 s apart and NAB's 5 minutes, where
/// every reading is a tick.
pub const TICK_MS: i64 = 10_000;

/// How far beyond a series' recent range, in robust sigmas, a value is a gross outlier in the
/// live lab ([`build_live`]).
pub const GROSS_SIGMAS: f64 = 15.0;

/// Build a detector from a spec string. Every detector accepts `calibrate=1` (wrap in the
/// likelihood calibration and alarm hold; parameters `history`, `short`, `hold`, `damp`,
/// `tick_s`) and `gross=G` (put it behind a [`ensemble::Guarded`] check: a value `G` robust
/// sigmas beyond the last 240 values' range scores 1 at once, from the 20th value on, warm-up
/// or not; 0 = off, the default here).
pub fn build(spec: &str) -> Result<Box<dyn Detector>, SpecError> {
    build_spec(&Spec::parse(spec)?)
}

/// [`build`] as the live lab runs a spec: with `gross` = [`GROSS_SIGMAS`] unless the spec sets
/// it, so gross outliers are reported from the first minute whatever the series' detector.
pub fn build_live(spec: &str) -> Result<Box<dyn Detector>, SpecError> {
    let mut s = Spec::parse(spec)?;
    s.params.entry("gross".into()).or_insert(GROSS_SIGMAS);
    build_spec(&s)
}

fn likelihood(s: &Spec) -> Likelihood {
    let history = s.get("history", 2000.0) as usize;
    Likelihood::new(
        history,
        s.get("short", 5.0) as usize,
        (history / 10).max(50),
    )
}

/// `tick_s`: the windows of `sequence`, `ensemble` and `calibrate=1` count ticks of this many
/// seconds ([`calibrate::Ticker`]; default [`TICK_MS`]; 0 counts readings).
fn tick_ms(s: &Spec) -> i64 {
    seconds_ms(s, "tick_s", TICK_MS)
}

/// A tick length given in seconds by `key` (at most a day), in ms; `default_ms` if unset or
/// not finite.
fn seconds_ms(s: &Spec, key: &str, default_ms: i64) -> i64 {
    let t = s.get(key, default_ms as f64 / 1000.0);
    if t.is_finite() {
        (t.clamp(0.0, 86_400.0) * 1000.0) as i64
    } else {
        default_ms
    }
}

fn hold(s: &Spec) -> Hold {
    Hold::new(s.get("hold", 300.0) as usize, s.get("damp", 0.5))
}

fn positive(s: &Spec, k: &str, default: f64) -> Result<f64, SpecError> {
    let v = s.get(k, default);
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(SpecError(format!("`{k}` of `{}` must be > 0", s.name)))
    }
}

fn build_spec(s: &Spec) -> Result<Box<dyn Detector>, SpecError> {
    fn with<'a>(own: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&'a str> = own.to_vec();
        v.extend_from_slice(CAL);
        v
    }
    let d: Box<dyn Detector> = match s.name.as_str() {
        "robust_z" => {
            s.check_known(&with(&["window", "k", "warmup"]))?;
            let w = (positive(s, "window", 120.0)? as usize).max(3);
            let warmup = s.get("warmup", (w / 2) as f64).max(0.0) as usize;
            Box::new(RobustZ::new(w, positive(s, "k", 3.5)?).warm_up(warmup))
        }
        "ewma" => {
            s.check_known(&with(&["alpha", "k"]))?;
            let a = positive(s, "alpha", 0.05)?;
            if a > 1.0 {
                return Err(SpecError("`alpha` of `ewma` must be in (0, 1]".into()));
            }
            Box::new(Ewma::new(a, positive(s, "k", 3.5)?))
        }
        "seasonal" => {
            s.check_known(&with(&["period_s", "buckets", "alpha", "window", "k"]))?;
            let a = positive(s, "alpha", 0.2)?.min(1.0);
            Box::new(Seasonal::new(
                (positive(s, "period_s", 86_400.0)? * 1000.0) as i64,
                positive(s, "buckets", 288.0)? as usize,
                a,
                (positive(s, "window", 288.0)? as usize).max(3),
                positive(s, "k", 3.5)?,
            ))
        }
        "iforest" => {
            s.check_known(&with(&["shingle", "window", "trees", "sample", "seed"]))?;
            Box::new(IsolationForest::new(
                positive(s, "shingle", 4.0)? as usize,
                (positive(s, "window", 512.0)? as usize).max(16),
                positive(s, "trees", 50.0)? as usize,
                (positive(s, "sample", 128.0)? as usize).max(8),
                s.get("seed", 1.0) as u64,
            ))
        }
        "autoencoder" => {
            s.check_known(&with(&[
                "window",
                "hidden",
                "epochs",
                "train_after",
                "seed",
                "lstm",
            ]))?;
            Box::new(autoencoder::OnlineAutoencoder::new(
                autoencoder::OnlineConfig {
                    cell: if s.get("lstm", 0.0) != 0.0 {
                        autoencoder::Cell::Lstm
                    } else {
                        autoencoder::Cell::Gru
                    },
                    window: positive(s, "window", 30.0)? as usize,
                    hidden: positive(s, "hidden", 16.0)? as usize,
                    epochs: positive(s, "epochs", 20.0)? as usize,
                    train_after: positive(s, "train_after", 600.0)? as usize,
                    seed: s.get("seed", 1.0) as u64,
                },
            ))
        }
        "sequence" => {
            s.check_known(&with(&[
                "buckets",
                "order",
                "slots",
                "sensitivity",
                "tolerance",
                "probation",
                "history",
                "step_k",
            ]))?;
            let d = SequenceConfig::default();
            Box::new(Sequence::new(SequenceConfig {
                buckets: (positive(s, "buckets", d.buckets as f64)? as usize).clamp(2, 4096),
                order: (s.get("order", d.order as f64).max(0.0) as usize).min(3),
                slots: s.get("slots", d.slots as f64).clamp(0.0, 1440.0) as usize,
                sensitivity: positive(s, "sensitivity", d.sensitivity)?,
                tolerance: s.get("tolerance", d.tolerance).max(0.0),
                probation: s.get("probation", d.probation as f64).max(0.0) as usize,
                history: (positive(s, "history", d.history as f64)? as usize).max(10),
                step_k: s.get("step_k", d.step_k).max(0.0),
                tick_ms: tick_ms(s),
            }))
        }
        "trend" => {
            s.check_known(&with(&["span", "horizon", "window", "k", "trend_tick_s"]))?;
            let d = trend::TrendConfig::default();
            Box::new(trend::Trend::new(trend::TrendConfig {
                span: positive(s, "span", d.span as f64)? as usize,
                horizon: positive(s, "horizon", d.horizon as f64)? as usize,
                window: positive(s, "window", d.window as f64)? as usize,
                k: positive(s, "k", d.k)?,
                tick_ms: seconds_ms(s, "trend_tick_s", d.tick_ms),
            }))
        }
        "ensemble" => return Ok(diffed(s, guarded(s, ensemble(s)?))),
        "off" => {
            s.check_known(CAL)?;
            Box::new(Off)
        }
        other => return Err(SpecError(format!("unknown detector `{other}`"))),
    };
    let d: Box<dyn Detector> = if s.get("calibrate", 0.0) != 0.0 {
        Box::new(Calibrated::new(d, likelihood(s), Some(hold(s))).ticks_of(tick_ms(s)))
    } else {
        d
    };
    Ok(diffed(s, guarded(s, d)))
}

/// `off`: scores nothing. In the live lab it still stands behind the gross outlier check
/// (`gross`), so a field a program drives (a tool-wear sawtooth, a mode) is judged only by
/// its quality rules and gross outliers.
struct Off;

impl Detector for Off {
    fn name(&self) -> &'static str {
        "off"
    }

    fn score(&mut self, _ts: i64, _x: f64) -> f64 {
        0.0
    }
}

/// `d` scoring the rate of change (per second) instead of the value when the spec's `diff` is
/// not 0: for cumulative counters (energy meters), whose value always grows but whose rate
/// has a rhythm. The first point, and a point at the same instant as the one before, score 0.
/// It wraps the gross outlier check too: a counter's gross outlier is a jump of its rate (a
/// reset, a burst), not its next value, which is always beyond what it has shown.
fn diffed(s: &Spec, d: Box<dyn Detector>) -> Box<dyn Detector> {
    if s.get("diff", 0.0) != 0.0 {
        Box::new(Diff {
            inner: d,
            prev: None,
        })
    } else {
        d
    }
}

struct Diff {
    inner: Box<dyn Detector>,
    prev: Option<(i64, f64)>,
}

impl Detector for Diff {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn score(&mut self, ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let prev = self.prev.replace((ts, x));
        match prev {
            Some((t0, x0)) if ts > t0 => {
                self.inner.score(ts, (x - x0) / ((ts - t0) as f64 / 1000.0))
            }
            _ => 0.0,
        }
    }

    fn last_verdict_by(&self) -> &'static str {
        self.inner.last_verdict_by()
    }
}

/// `d` behind the gross outlier check when the spec's `gross` is > 0.
fn guarded(s: &Spec, d: Box<dyn Detector>) -> Box<dyn Detector> {
    let g = s.get("gross", 0.0);
    if g > 0.0 && g.is_finite() {
        Box::new(ensemble::Guarded::new(
            d,
            stats::GrossOutlier::new(240, g, 20),
        ))
    } else {
        d
    }
}

/// The robust z of a level change (against the series' past changes over as long,
/// [`trend::Trend`]) at which the ensemble reports a drift on its own (`trend=Z`; 0: never).
pub const DRIFT_Z: f64 = 10.5;

/// The default ensemble: sequence (already a likelihood), and robust z, EWMA, seasonal
/// residual and isolation forest, each calibrated; combined by family agreement
/// ([`Combine::Agree`]: one family alone scores at most `solo`, default 0.8; `agree=0`: by max;
/// `mean=1`: by mean; `lead=L`: the first member leads unless two others agree at likelihood
/// L), with the seasonal member explaining away the context-free ones once it has seen a day
/// (`explain`, default 0.7; 0 = off), held (`hold`, 120 ticks: 300 cost 6 NAB points),
/// silent during the warm-up (`warmup` ticks, default: the sequence's `probation`, and
/// `learn_s` seconds, default 0). Windows count ticks of `tick_s` seconds (default 10; 0:
/// readings), so a series read every second is watched over the same time as one read every
/// 10 s. A raw alarm needs `raw` (default 3: all) of robust z, EWMA and seasonal at an extreme
/// raw score together (`raw=1`, any one of them, cost 12 NAB points; `raw=0` turns raw alarms
/// off). `ae` (default 1) adds the online autoencoder: it trains on a series' first 600
/// readings (GRU; `ae_lstm=1`: LSTM; `ae_seed`), about 1.3 s of CPU, in the background in a
/// running lab; `ae=0`: NAB 70.9 instead of 72.7 (seeds 1-3: 72.7, 72.4, 72.6; LSTM 69.7); `seq`, `rz`,
/// `ewma`, `seasonal`, `iforest` = 0 drop a member. A slow drift is reported on its own by the trend check (`trend`: the robust z
/// its 12-minute ramp needs, default [`DRIFT_Z`], for [`ensemble::DRIFT_TICKS`] minutes
/// running; 0 = off). See [`ensemble`](crate::ensemble) for what each choice is worth.
fn ensemble(s: &Spec) -> Result<Box<dyn Detector>, SpecError> {
    s.check_known(&[
        "history",
        "short",
        "hold",
        "damp",
        "mean",
        "ae",
        "ae_seed",
        "ae_lstm",
        "rz_window",
        "ewma_alpha",
        "calibrate",
        "seq",
        "rz",
        "ewma",
        "seasonal",
        "iforest",
        "probation",
        "warmup",
        "gross",
        "lead",
        "raw",
        "diff",
        "agree",
        "solo",
        "explain",
        "learn_s",
        "tick_s",
        "trend",
    ])?;
    let on = |k: &str| s.get(k, 1.0) != 0.0;
    let calibrated = |d: Box<dyn Detector>, raw_alarm: bool| Member {
        detector: d,
        calibrate: Some(likelihood(s)),
        raw_alarm,
    };
    let probation = s
        .get("probation", SequenceConfig::default().probation as f64)
        .max(0.0) as usize;
    let tick_ms = tick_ms(s);
    let mut members: Vec<Member> = Vec::new();
    if on("seq") {
        members.push(Member {
            detector: Box::new(Sequence::new(SequenceConfig {
                probation,
                tick_ms,
                ..SequenceConfig::default()
            })),
            calibrate: None,
            raw_alarm: false,
        });
    }
    if on("rz") {
        let w = s.get("rz_window", 120.0).max(3.0) as usize;
        members.push(calibrated(Box::new(RobustZ::new(w, 3.5)), true));
    }
    if on("ewma") {
        let a = s.get("ewma_alpha", 0.05).clamp(1e-4, 1.0);
        members.push(calibrated(Box::new(Ewma::new(a, 3.5)), true));
    }
    if on("seasonal") {
        members.push(calibrated(
            Box::new(Seasonal::new(86_400_000, 288, 0.2, 288, 3.5)),
            true,
        ));
    }
    if on("iforest") {
        members.push(calibrated(
            Box::new(IsolationForest::new(4, 512, 50, 128, 1)),
            false,
        ));
    }
    if s.get("ae", 1.0) != 0.0 {
        members.push(calibrated(
            Box::new(autoencoder::OnlineAutoencoder::new(
                autoencoder::OnlineConfig {
                    seed: s.get("ae_seed", 1.0) as u64,
                    cell: if s.get("ae_lstm", 0.0) != 0.0 {
                        autoencoder::Cell::Lstm
                    } else {
                        autoencoder::Cell::Gru
                    },
                    ..autoencoder::OnlineConfig::default()
                },
            )),
            false,
        ));
    }
    if members.is_empty() {
        return Err(SpecError("`ensemble` needs at least one member".into()));
    }
    let lead = s.get("lead", 0.0);
    let combine = if s.get("mean", 0.0) != 0.0 {
        Combine::Mean
    } else if lead > 0.0 && members.len() > 1 {
        Combine::Lead(lead)
    } else if s.get("agree", 1.0) != 0.0 {
        Combine::Agree {
            solo: s.get("solo", 0.8).clamp(0.0, 1.0),
        }
    } else {
        Combine::Max
    };
    let warmup = s.get("warmup", probation as f64).max(0.0) as usize;
    let hold = Hold::new(s.get("hold", 120.0) as usize, s.get("damp", 0.5));
    let raw = s.get("raw", 3.0).max(0.0) as usize;
    Ok(Box::new(
        Ensemble::new(members, combine, hold, warmup)
            .raw_agree(raw)
            .explained_below(s.get("explain", 0.7))
            .learn_for((s.get("learn_s", 0.0).max(0.0) * 1000.0) as i64)
            .ticks_of(tick_ms)
            .drift_at(s.get("trend", DRIFT_Z).max(0.0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_build_and_bad_specs_say_why() {
        for name in DETECTORS {
            if *name != "autoencoder" {
                assert_eq!(build(name).unwrap().name(), *name);
            }
        }
        assert!(build("robust_z:window=30,k=4,calibrate=1").is_ok());
        assert!(build("robust_z:calibrate=1,tick_s=1").is_ok());
        assert!(build("ensemble:tick_s=0").is_ok() && build("sequence:tick_s=60").is_ok());
        let e = build("nope").err().unwrap().to_string();
        assert!(
            e.contains("unknown detector `nope`") && e.contains("ewma"),
            "{e}"
        );
        let e = build("ewma:window=3").err().unwrap().to_string();
        assert!(e.contains("no parameter `window`"), "{e}");
        let e = build("ewma:alpha=x").err().unwrap().to_string();
        assert!(e.contains("not a number"), "{e}");
        assert!(build("ewma:alpha=0").is_err());
    }

    #[test]
    fn robust_z_is_silent_until_half_its_window_is_filled() {
        let mut d = build("robust_z:window=60").unwrap();
        let mut eager = build("robust_z:window=60,warmup=0").unwrap();
        for i in 0..4 {
            let x = 50.0 + (i % 2) as f64 * 0.1;
            d.score(i * 1000, x);
            eager.score(i * 1000, x);
        }
        // The fifth reading of a set point that moved: four points are no reference.
        assert_eq!(d.score(4000, 55.8), 0.0);
        assert!(eager.score(4000, 55.8) > 0.9);
        for i in 5..30 {
            d.score(i * 1000, 50.0 + (i % 2) as f64 * 0.1);
        }
        assert!(d.score(30_000, 55.8) > 0.9, "judged from the 31st point on");
    }

    #[test]
    fn diff_scores_the_rate_and_off_scores_nothing_but_gross_outliers() {
        // A meter growing 1 unit/s with noise, then a burst of 50 units in one second.
        let mut meter = build("robust_z:window=60,diff=1").unwrap();
        let mut v = 0.0;
        for i in 0..300 {
            v += 1.0 + (i % 5) as f64 * 0.01;
            let s = meter.score(i * 1000, v);
            assert!(s < 0.5, "a steady meter at {i}: {s}");
        }
        assert!(meter.score(300_000, v + 50.0) > 0.9, "the burst");
        // `off` is silent, but behind the live gross check a wild value still scores 1.
        let mut off = build_live("off").unwrap();
        for i in 0..300 {
            assert_eq!(off.score(i * 1000, (i % 7) as f64), 0.0);
        }
        assert_eq!(off.score(300_000, 1e6), 1.0);
    }

    proptest::proptest! {
        #[test]
        fn every_detector_scores_in_unit_interval(xs in proptest::collection::vec(proptest::num::f64::ANY, 0..400)) {
            for name in ["robust_z", "ewma", "seasonal", "iforest", "sequence", "trend", "ensemble", "ewma:calibrate=1", "trend:calibrate=1"] {
                let mut d = build(name).unwrap();
                for (i, x) in xs.iter().enumerate() {
                    let s = d.score(i as i64 * 60_000, *x);
                    proptest::prop_assert!((0.0..=1.0).contains(&s), "{name}: {s}");
                }
            }
        }
    }
}
