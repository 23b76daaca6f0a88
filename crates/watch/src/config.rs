//! `detect:` of fieldlab.yaml: the detectors, the data-quality rules and the `/predict` caps.
//!
//! Why here rather than in fieldlab-detect: this crate is where the section is consumed — it
//! runs both the detectors and the quality rules per series (ranges, rates, required fields,
//! staleness), keeps the event logs (`events_max_size`) and serves `/predict`
//! ([`crate::predict`], capped by [`PredictLimits`]). fieldlab-detect stays pure and free of
//! fieldlab dependencies; it checks the detector specs when they are built.

use fieldlab_core::config::{validate_at, ByteSize, HumanDuration, Problem, Section};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Anomaly detection and data quality (`detect:`). Specs are detector names with optional
/// parameters (`robust_z:window=120`); `fieldlab-detect` checks them at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub enabled: bool,
    /// Detector for every numeric series without an entry in `series`.
    pub default_detector: String,
    /// `<device_id or device_type>.<field>`, `<device_id or device_type>.*` (every field) or
    /// `<field>` -> detector spec; the most specific key wins, in that order.
    pub series: BTreeMap<String, String>,
    /// Score at or above which an anomaly event is raised (0..1).
    pub threshold: f64,
    /// `/predict` defaults (the legacy `window_size` and `batch_size`).
    pub window_size: usize,
    pub batch_size: usize,
    /// Autoencoder saved by `fieldlab detect train`, loaded at start-up.
    pub model_path: Option<PathBuf>,
    /// The only directory `POST /api/v1/models/load` loads from (paths in requests are relative
    /// to it). Unset: `<data_dir>/models`.
    pub models_dir: Option<PathBuf>,
    /// POST every anomaly event as JSON to this URL.
    pub webhook_url: Option<String>,
    /// A device silent this long gets a `stale` quality event (e.g. `60s`; `0s` = off).
    pub stale_after: HumanDuration,
    /// Apply the lab's physics rules (PV power <= 1.1 V I, wind cut-in/out, ...).
    pub physics: bool,
    /// Per field `[min, max]`, added to (and overriding) the built-in ranges.
    pub ranges: BTreeMap<String, [f64; 2]>,
    /// Per field, largest |change| per second, added to the built-in limits.
    pub max_rate_per_s: BTreeMap<String, f64>,
    /// Per device type, required fields, added to the built-in ones.
    pub required: BTreeMap<String, Vec<String>>,
    /// Caps of `/predict` and `/predict/batch`: CPU and memory per request are bounded by
    /// these, whoever calls.
    pub predict: PredictLimits,
    /// Largest size of each event log (`events/quality.jsonl`, `events/anomalies.jsonl`) before
    /// it is rotated to `.1` (one older file kept), e.g. `64MB`: disk for events is bounded by
    /// this, however many events devices provoke.
    pub events_max_size: ByteSize,
}

/// `detect.predict`: what one `/predict` or `/predict/batch` request may cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictLimits {
    /// Rows per request (all row sets of a batch together); more is 413.
    pub max_rows: usize,
    /// Largest `window_size`; more is 422.
    pub max_window: usize,
    /// Estimated steps of scoring per request (summed over a batch's row sets): rows x window
    /// x features for robust_z and ensemble, per-method factors for the forest and the
    /// autoencoder (`fieldlab_watch::predict::work`); more is 413.
    pub max_work: u64,
    /// Largest request body (e.g. `8MB`); more is 413.
    pub max_body: ByteSize,
    /// Scorings running at once (requests and jobs together); more is 429.
    pub max_concurrent_jobs: usize,
    /// Finished jobs kept for `/predict/status/{id}` (the oldest are forgotten).
    pub max_jobs_kept: usize,
}

impl Default for PredictLimits {
    fn default() -> Self {
        PredictLimits {
            max_rows: 100_000,
            max_window: 1440,
            max_work: 200_000_000,
            max_body: ByteSize::mib(8),
            max_concurrent_jobs: 2,
            max_jobs_kept: 1000,
        }
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            default_detector: "ensemble".into(),
            // Defaults per emulator type: devices that follow the sun or a daily schedule (PV,
            // algae, the battery) learn a whole day before the ensemble judges their context
            // (`learn_s`; gross outliers are still reported at once): their first sunrise or
            // schedule switch is no anomaly. The energy meter
            // (its value only grows; its rate, quantised to a step or two a second, is
            // `ac_power`'s business) and the tool-wear sawtooth (worn, then reset at each tool
            // change) are not scored (`off`; the meter not even by the gross check), nor is the
            // algae farm's CO2 dosing (the controller's output: on when the clouds let the
            // light pass a threshold, so its start moves by half an hour from day to day; a
            // dosing fault shows in the pH it holds below 8.5); everything else by the
            // ensemble. Fields a program, controller or traffic steps
            // between set points (the CNC machine's spindle, feed and power at every tool
            // change, the test bench's load cycle, the pitch controller, a parked truck's
            // speed), wind power (the cube of the wind speed: a gust doubles it) and the rotor
            // (stopped below cut-in and above cut-out) are not
            // judged as gross outliers (`gross=0`): every new set point or gust would be "far
            // outside what the series has shown". Feathering the blades (pitch 90°) is a
            // mode, not a spike (`raw=0`). A truck's position ramps whenever it drives: it
            // is not judged for drift (`trend=0`; its first long leg north was one).
            series: [
                ("PvInverter.*", "ensemble:learn_s=86400"),
                ("AlgaeFarm.*", "ensemble:learn_s=86400"),
                ("AlgaeFarm.co2_injection", "off:gross=0"),
                ("EnergyStorage.*", "ensemble:learn_s=86400"),
                ("PvInverter.energy_total", "off:gross=0"),
                ("CncMachine.tool_wear", "off"),
                ("CncMachine.spindle_speed", "ensemble:gross=0"),
                ("CncMachine.power", "ensemble:gross=0"),
                ("CncMachine.feed_rate", "ensemble:gross=0"),
                ("CncMachine.spindle_load", "ensemble:gross=0"),
                ("WindTurbine.pitch_angle", "ensemble:gross=0,raw=0"),
                ("WindTurbine.power", "ensemble:gross=0"),
                ("WindTurbine.rotor_speed", "ensemble:gross=0"),
                ("Reefer.speed", "ensemble:gross=0"),
                ("Reefer.latitude", "ensemble:trend=0"),
                ("Reefer.longitude", "ensemble:trend=0"),
                ("EngineTestBench.engine_speed", "ensemble:gross=0"),
                ("EngineTestBench.torque", "ensemble:gross=0"),
                ("EngineTestBench.power", "ensemble:gross=0"),
                ("EngineTestBench.fuel_flow", "ensemble:gross=0"),
                ("EngineTestBench.oil_temperature", "ensemble:gross=0"),
                ("EngineTestBench.exhaust_temperature", "ensemble:gross=0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            threshold: 0.9,
            window_size: 30,
            batch_size: 32,
            model_path: None,
            models_dir: None,
            webhook_url: None,
            stale_after: HumanDuration::from_secs(60),
            physics: true,
            ranges: BTreeMap::new(),
            max_rate_per_s: BTreeMap::new(),
            required: BTreeMap::new(),
            predict: PredictLimits::default(),
            events_max_size: ByteSize::mib(64),
        }
    }
}

impl Section for PredictLimits {
    fn validate(&self) -> Result<(), Problem> {
        for (key, v, min) in [
            ("max_rows", self.max_rows, 1),
            ("max_window", self.max_window, 3),
            ("max_concurrent_jobs", self.max_concurrent_jobs, 1),
            ("max_jobs_kept", self.max_jobs_kept, 1),
        ] {
            if v < min {
                return Problem::at(key, format!("must be at least {min}"));
            }
        }
        if self.max_work < 1000 {
            return Problem::at(
                "max_work",
                "must be at least 1000 (rows x window x features)",
            );
        }
        Ok(())
    }
}

impl Section for DetectConfig {
    fn validate(&self) -> Result<(), Problem> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Problem::at("threshold", "must be between 0 and 1");
        }
        if self.window_size < 2 {
            return Problem::at("window_size", "must be at least 2");
        }
        validate_at("predict", &self.predict)?;
        if self.window_size > self.predict.max_window {
            return Problem::at(
                "window_size",
                format!(
                    "{} is above detect.predict.max_window ({}); lower it or raise the cap",
                    self.window_size, self.predict.max_window
                ),
            );
        }
        if self.events_max_size.get() < 64 << 10 {
            return Problem::at(
                "events_max_size",
                "must be at least 64KB (each event log's size before it is rotated)",
            );
        }
        for (k, [lo, hi]) in &self.ranges {
            if lo > hi {
                return Problem::at(format!("ranges.{k}"), format!("min {lo} is above max {hi}"));
            }
        }
        Ok(())
    }
}
