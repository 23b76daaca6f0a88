//! The legacy `/predict` service: score a batch of rows (one column per feature) with a
//! named method, per point and per window, and run batches as asynchronous jobs.
//!
//! Every method runs the streaming detectors in row order, so a row's score depends only on
//! the rows before it (the same semantics as live detection). Methods: `robust_z`, `ewma`,
//! `iforest`, `autoencoder` (needs a trained model whose feature count matches) and
//! `ensemble` (max of robust z over the window, EWMA, and the autoencoder when a model fits).
//! Detectors that need long histories (seasonal, likelihood calibration) are for streams,
//! not for a request's few rows, and are not offered here.
//!
//! Any signed-in role may call `/predict`, so what one request may cost is capped
//! ([`Limits`], `detect.predict` in fieldlab.yaml): rows, window, the estimated steps of
//! scoring ([`work`]: rows x window x features for robust z), body size, and scorings at once
//! ([`Jobs::try_start`]). Every window below a method's minimum ([`min_window`]) is a
//! validation error naming the minimum, never a panic. A job that fails anyway (a bug) ends
//! as `failed` with a problem-style error instead of staying `pending`.

use fieldlab_detect::autoencoder::Autoencoder;
use fieldlab_detect::{Detector, Ewma, IsolationForest, RobustZ};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use crate::PredictLimits as Limits;

/// Methods `/predict` accepts.
pub const METHODS: &[&str] = &["ensemble", "robust_z", "ewma", "iforest", "autoencoder"];

/// The schema of a request's `method`: one of [`METHODS`].
pub fn method_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(METHODS.iter().copied()))
        .description(Some("the scoring method (default `ensemble`)"))
        .build()
}

/// A request: rows of equal length, the window, the method, the flag threshold.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Rows of feature values (null: missing).
    pub data: Vec<Vec<Option<f64>>>,
    /// Rows per window: at least 3 for robust_z and ensemble, 2 for the others; at most
    /// `detect.predict.max_window`.
    #[serde(default)]
    #[schema(minimum = 2)]
    pub window_size: Option<usize>,
    #[serde(default)]
    #[schema(schema_with = method_schema)]
    pub method: Option<String>,
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Run as a job: answer 202 with an id for `/predict/status/{id}`.
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// What went wrong with a request, and in which field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct PredictError {
    pub field: String,
    pub detail: String,
    pub kind: ErrorKind,
}

/// How a [`PredictError`] answers over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 422: input that cannot be scored.
    Invalid,
    /// 409: a method that is not available now.
    Conflict,
    /// 413: more than `detect.predict` allows.
    TooLarge,
}

fn bad(field: &str, detail: impl Into<String>) -> PredictError {
    PredictError {
        field: field.into(),
        detail: detail.into(),
        kind: ErrorKind::Invalid,
    }
}

fn too_large(field: &str, detail: impl Into<String>) -> PredictError {
    PredictError {
        field: field.into(),
        detail: detail.into(),
        kind: ErrorKind::TooLarge,
    }
}

/// The smallest window a method can score with. `robust_z` (and `ensemble`, which runs it)
/// needs a median and a spread: [`RobustZ::MIN_WINDOW`] points; the others 2. The
/// autoencoder also needs exactly the window it was trained on (checked with the model).
pub fn min_window(method: &str) -> usize {
    match method {
        "robust_z" | "ensemble" => RobustZ::MIN_WINDOW,
        _ => 2,
    }
}

/// Rows, window and estimated work of one row set, for [`check_limits`].
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub rows: usize,
    pub window: usize,
    /// Estimated steps of scoring (see [`work`]).
    pub work: u128,
}

impl Size {
    /// Of a request (method and window defaulted as [`predict`] does).
    pub fn of(
        data: &[Vec<Option<f64>>],
        window: Option<usize>,
        method: Option<&str>,
        default_window: usize,
        model: Option<&Autoencoder>,
    ) -> Size {
        let window = window.unwrap_or(default_window);
        let features = data.first().map_or(0, Vec::len);
        Size {
            rows: data.len(),
            window,
            work: work(
                method.unwrap_or("ensemble"),
                data.len(),
                window,
                features,
                model,
            ),
        }
    }
}

/// Estimated steps (each a few ns) to score `rows` x `features` with `method` and `window`:
/// `rows x window x features` for `robust_z` (a sorted window and its MAD per point), plus
/// `rows x features` for EWMA; the isolation forest's 50 trees and refits per point; the
/// autoencoder's GRU over each window (`window x 6 hidden x (features + hidden)` per row).
/// `detect.predict.max_work` caps it.
pub fn work(
    method: &str,
    rows: usize,
    window: usize,
    features: usize,
    model: Option<&Autoencoder>,
) -> u128 {
    let (n, w, f) = (rows as u128, window as u128, features.max(1) as u128);
    let robust_z = n * w * f;
    let ewma = n * f;
    let ae = model
        .filter(|m| m.meta.features.len() == features && m.meta.window == window)
        .map_or(0, |m| {
            let h = m.meta.hidden as u128;
            n * w * 6 * h * (f + h)
        });
    match method {
        "robust_z" => robust_z,
        "ewma" => ewma,
        "iforest" => {
            let sample = window.clamp(8, 128) as u128;
            let win = window.max(16) as u128;
            let depth = u128::from(sample.ilog2() + 1);
            // Tree walks and refits cost about 5 robust-z steps each (measured: 200k points
            // at window 3 took 3x the CPU of 138k points at window 1440 with robust_z).
            5 * n * f * (50 * depth + 200 * sample * depth / win + 4)
        }
        "autoencoder" => ae,
        _ => robust_z + ewma + ae,
    }
}

/// Check one request (all row sets of a batch together) against the caps: rows and work
/// beyond them are [`ErrorKind::TooLarge`], a window beyond `max_window` is invalid.
pub fn check_limits(sets: &[Size], limits: &Limits) -> Result<(), PredictError> {
    let rows: usize = sets.iter().map(|s| s.rows).sum();
    if rows > limits.max_rows {
        return Err(too_large(
            "data",
            format!(
                "{rows} rows is more than the {} one request may score (detect.predict.max_rows); split the data over several requests",
                limits.max_rows
            ),
        ));
    }
    if let Some(s) = sets.iter().find(|s| s.window > limits.max_window) {
        return Err(bad(
            "window_size",
            format!(
                "window_size {} is above the maximum {} (detect.predict.max_window)",
                s.window, limits.max_window
            ),
        ));
    }
    let work: u128 = sets.iter().map(|s| s.work).sum();
    if work > u128::from(limits.max_work) {
        return Err(too_large(
            "data",
            format!(
                "scoring this would take about {work} steps (rows x window x features for robust_z and ensemble), more than the {} one request may cost (detect.predict.max_work); send fewer rows or features, or a smaller window",
                limits.max_work
            ),
        ));
    }
    Ok(())
}

/// Scores of one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PredictResult {
    pub method: String,
    pub window_size: usize,
    pub rows: usize,
    pub features: usize,
    pub threshold: f64,
    /// Per row, the highest score over its features, in `[0, 1]`.
    pub scores: Vec<f64>,
    /// Per row, `score >= threshold`.
    pub flags: Vec<bool>,
    /// Per window (the window ending at row `window_size - 1 + i`), its highest row score
    /// (or, for the autoencoder, the window's reconstruction score).
    pub window_scores: Vec<f64>,
    pub window_flags: Vec<bool>,
    /// Indices of flagged rows.
    pub anomalies: Vec<usize>,
    /// Said when the answer is partial: fewer rows than `window_size` give row scores (each
    /// against the rows before it) but no window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Validate and score. `model` is the loaded autoencoder, if any.
pub fn predict(
    req: &PredictRequest,
    model: Option<&Autoencoder>,
    default_window: usize,
    default_threshold: f64,
) -> Result<PredictResult, PredictError> {
    score(prepare(req, model, default_window, default_threshold)?)
}

/// Everything [`predict`] checks, without scoring: cheap (one pass over the rows).
pub fn validate(
    req: &PredictRequest,
    model: Option<&Autoencoder>,
    default_window: usize,
    default_threshold: f64,
) -> Result<(), PredictError> {
    prepare(req, model, default_window, default_threshold).map(|_| ())
}

/// A checked request.
struct Prepared<'m> {
    method: String,
    w: usize,
    threshold: f64,
    rows: Vec<Vec<f64>>,
    ae: Option<&'m Autoencoder>,
}

fn prepare<'m>(
    req: &PredictRequest,
    model: Option<&'m Autoencoder>,
    default_window: usize,
    default_threshold: f64,
) -> Result<Prepared<'m>, PredictError> {
    let method = req.method.clone().unwrap_or_else(|| "ensemble".into());
    if !METHODS.contains(&method.as_str()) {
        return Err(bad(
            "method",
            format!(
                "unknown method `{method}`; use one of {}",
                METHODS.join(", ")
            ),
        ));
    }
    let w = req.window_size.unwrap_or(default_window);
    let threshold = req.threshold.unwrap_or(default_threshold);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(bad(
            "threshold",
            format!("threshold {threshold} is not in [0, 1]"),
        ));
    }
    let rows = validate_rows(&req.data)?;
    let n = rows.len();
    let f = rows[0].len();
    let min = min_window(&method);
    if w < min {
        return Err(bad(
            "window_size",
            format!("window_size {w} is below the minimum {min} for method `{method}`; send window_size >= {min}"),
        ));
    }
    if w > n && method == "autoencoder" {
        return Err(bad(
            "window_size",
            format!("window_size {w} is larger than the data ({n} rows); the autoencoder scores whole windows: send at least {w} rows"),
        ));
    }
    let ae = match (method.as_str(), model) {
        ("autoencoder", None) => {
            return Err(PredictError {
                field: "method".into(),
                detail: "no autoencoder model is loaded; train one with `fieldlab detect train` and set detect.model_path, or load it via POST /api/v1/models/load".into(),
                kind: ErrorKind::Conflict,
            })
        }
        ("autoencoder", Some(m)) if m.meta.features.len() != f || m.meta.window != w => {
            return Err(bad(
                "data",
                format!(
                    "the loaded autoencoder expects {} features and window {}, got {f} features and window {w}",
                    m.meta.features.len(),
                    m.meta.window
                ),
            ))
        }
        ("autoencoder" | "ensemble", Some(m)) if m.meta.features.len() == f && m.meta.window == w => Some(m),
        _ => None,
    };
    Ok(Prepared {
        method,
        w,
        threshold,
        rows,
        ae,
    })
}

fn score(p: Prepared<'_>) -> Result<PredictResult, PredictError> {
    let Prepared {
        method,
        w,
        threshold,
        rows,
        ae,
    } = p;
    let (n, f) = (rows.len(), rows[0].len());
    let mut scores = vec![0.0f64; n];
    if method != "autoencoder" {
        for j in 0..f {
            let mut dets: Vec<Box<dyn Detector>> = match method.as_str() {
                "robust_z" => vec![Box::new(RobustZ::new(w, 3.5))],
                "ewma" => vec![Box::new(Ewma::new(2.0 / (w as f64 + 1.0), 3.5))],
                "iforest" => vec![Box::new(IsolationForest::new(
                    1,
                    w.max(16),
                    50,
                    w.clamp(8, 128),
                    1,
                ))],
                _ => vec![
                    Box::new(RobustZ::new(w, 3.5)),
                    Box::new(Ewma::new(2.0 / (w as f64 + 1.0), 3.5)),
                ],
            };
            for (i, r) in rows.iter().enumerate() {
                for d in dets.iter_mut() {
                    let s = d.score(i as i64 * 1000, r[j]);
                    scores[i] = scores[i].max(s);
                }
            }
        }
    }
    let mut window_scores = Vec::with_capacity((n + 1).saturating_sub(w));
    // Sliding maximum of the row scores: indices whose scores decrease, front = the max.
    let mut maxq: VecDeque<usize> = VecDeque::with_capacity(w);
    for (i, sc) in scores.iter().enumerate().take(w - 1) {
        while maxq.back().is_some_and(|&j| scores[j] <= *sc) {
            maxq.pop_back();
        }
        maxq.push_back(i);
    }
    for end in w - 1..n {
        while maxq.back().is_some_and(|&j| scores[j] <= scores[end]) {
            maxq.pop_back();
        }
        maxq.push_back(end);
        while maxq.front().is_some_and(|&j| j + w <= end) {
            maxq.pop_front();
        }
        let mut s = scores[maxq[0]].max(0.0);
        if let Some(m) = ae {
            let a = m.error_score(m.window_error(&rows[end + 1 - w..=end]));
            s = if method == "autoencoder" { a } else { s.max(a) };
            if method == "autoencoder" {
                scores[end] = a;
            }
        }
        window_scores.push(s);
    }
    let flags: Vec<bool> = scores.iter().map(|s| *s >= threshold).collect();
    Ok(PredictResult {
        method,
        window_size: w,
        rows: n,
        features: f,
        threshold,
        anomalies: flags
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i)
            .collect(),
        window_flags: window_scores.iter().map(|s| *s >= threshold).collect(),
        note: (w > n).then(|| {
            format!("{n} rows are fewer than window_size {w}: row scores only, no whole window; send at least {w} rows for window scores")
        }),
        scores,
        flags,
        window_scores,
    })
}

/// Rows must be non-empty, equally long and finite (`null` is how JSON spells NaN).
fn validate_rows(data: &[Vec<Option<f64>>]) -> Result<Vec<Vec<f64>>, PredictError> {
    if data.is_empty() {
        return Err(bad(
            "data",
            "data is empty; send rows like [[1.2, 3.4], [2.3, 4.5]]",
        ));
    }
    let f = data[0].len();
    if f == 0 {
        return Err(bad(
            "data",
            "row 0 is empty; every row needs one value per feature",
        ));
    }
    let mut out = Vec::with_capacity(data.len());
    for (i, r) in data.iter().enumerate() {
        if r.len() != f {
            return Err(bad(
                "data",
                format!("ragged rows: row {i} has {} values, row 0 has {f}", r.len()),
            ));
        }
        let mut row = Vec::with_capacity(f);
        for (j, v) in r.iter().enumerate() {
            match v {
                Some(x) if x.is_finite() => row.push(*x),
                _ => {
                    return Err(bad(
                        "data",
                        format!("row {i}, column {j} is not a finite number (NaN/null/inf)"),
                    ))
                }
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// State of an asynchronous job, as `/predict/status/{id}` shows it:
/// `{"status": "pending"}`, `{"status": "done", "results": [{"result": {...}} | {"error":
/// {problem}}, ...]}` (one per row set, in order) or `{"status": "failed", "error": {problem}}`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Done {
        results: Vec<JobItem>,
    },
    Failed {
        /// A problem-details object (RFC 9457).
        #[schema(value_type = Object)]
        error: serde_json::Value,
    },
}

/// The outcome of one row set of a job.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobItem {
    Result(PredictResult),
    /// A problem-details object (RFC 9457).
    #[schema(value_type = Object)]
    Error(serde_json::Value),
}

/// Next job number, jobs by id, ids oldest first.
type JobTable = (u64, BTreeMap<String, JobStatus>, VecDeque<String>);

/// Recent jobs (bounded: the oldest finished ones are forgotten; pending ones are bounded by
/// the scorings allowed at once), and the count of scorings running.
#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<JobTable>>,
    running: Arc<AtomicUsize>,
}

/// A slot among the scorings allowed at once; released when dropped.
#[must_use = "the slot is released when the permit is dropped"]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Jobs {
    /// A slot for one scoring if fewer than `max` run now.
    pub fn try_start(&self, max: usize) -> Option<Permit> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.running.clone()))
    }

    /// Scorings running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// A new pending job; beyond `keep` jobs the oldest finished one is forgotten.
    pub fn create(&self, keep: usize) -> String {
        let mut g = self.inner.lock();
        g.0 += 1;
        let id = format!("job-{}", g.0);
        g.1.insert(id.clone(), JobStatus::Pending);
        g.2.push_back(id.clone());
        while g.2.len() > keep.max(1) {
            let (_, jobs, order) = &mut *g;
            let Some(i) = order
                .iter()
                .position(|j| !matches!(jobs.get(j), Some(JobStatus::Pending)))
            else {
                break;
            };
            if let Some(old) = order.remove(i) {
                jobs.remove(&old);
            }
        }
        id
    }

    pub fn finish(&self, id: &str, results: Vec<JobItem>) {
        self.set(id, JobStatus::Done { results });
    }

    /// End a job as failed; `error` is a problem-details object.
    pub fn fail(&self, id: &str, error: serde_json::Value) {
        self.set(id, JobStatus::Failed { error });
    }

    fn set(&self, id: &str, st: JobStatus) {
        let mut g = self.inner.lock();
        if let Some(s) = g.1.get_mut(id) {
            *s = st;
        }
    }

    pub fn get(&self, id: &str) -> Option<JobStatus> {
        self.inner.lock().1.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(data: Vec<Vec<Option<f64>>>, w: usize, method: &str) -> PredictRequest {
        PredictRequest {
            data,
            window_size: Some(w),
            method: Some(method.into()),
            threshold: None,
            run_async: false,
        }
    }

    fn rows(n: usize) -> Vec<Vec<Option<f64>>> {
        (0..n)
            .map(|i| {
                let x = (i as f64 * 0.7).sin();
                vec![
                    Some(x),
                    Some(2.0 * x + 1.0),
                    Some(((i * 13) % 7) as f64 * 0.01),
                ]
            })
            .collect()
    }

    #[test]
    fn scores_rows_and_windows_and_flags_a_spike() {
        let mut d = rows(60);
        d[45][1] = Some(40.0);
        let r = predict(&req(d, 30, "ensemble"), None, 30, 0.9).unwrap();
        assert_eq!(
            (r.rows, r.features, r.scores.len(), r.window_scores.len()),
            (60, 3, 60, 31)
        );
        assert_eq!(r.anomalies, vec![45]);
        assert!(r.window_flags[45 - 29] && !r.window_flags[0]);
    }

    #[test]
    fn bad_input_is_named() {
        let e = predict(
            &req(vec![vec![Some(1.0)], vec![Some(1.0), Some(2.0)]], 2, "ewma"),
            None,
            30,
            0.9,
        )
        .unwrap_err();
        assert!(e.detail.contains("ragged") && e.field == "data");
        let mut d = rows(40);
        d[3][2] = None;
        let e = predict(&req(d, 30, "ewma"), None, 30, 0.9).unwrap_err();
        assert!(e.detail.contains("row 3, column 2"));
        // Fewer rows than the window (the legacy API's own example): row scores, no window, a note.
        let r = predict(&req(rows(2), 30, "ensemble"), None, 30, 0.9).unwrap();
        assert_eq!((r.scores.len(), r.window_scores.len()), (2, 0));
        assert!(r.note.unwrap().contains("fewer than window_size 30"));
        assert!(predict(&req(rows(40), 30, "ensemble"), None, 30, 0.9)
            .unwrap()
            .note
            .is_none());
        let e = predict(&req(rows(40), 30, "quantum"), None, 30, 0.9).unwrap_err();
        assert!(e.detail.contains("unknown method `quantum`"));
        let e = predict(&req(rows(40), 30, "autoencoder"), None, 30, 0.9).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
    }

    #[test]
    fn a_window_below_the_method_minimum_names_the_minimum() {
        for (method, min) in [
            ("robust_z", 3),
            ("ensemble", 3),
            ("ewma", 2),
            ("iforest", 2),
        ] {
            for w in 0..min {
                let e = predict(&req(rows(40), w, method), None, 30, 0.9).unwrap_err();
                assert_eq!(
                    (e.field.as_str(), e.kind),
                    ("window_size", ErrorKind::Invalid)
                );
                assert!(
                    e.detail.contains(&format!("minimum {min}")),
                    "{method}: {e}"
                );
            }
            let r = predict(&req(rows(40), min, method), None, 30, 0.9).unwrap();
            assert_eq!(r.window_scores.len(), 40 + 1 - min);
        }
    }

    #[test]
    fn window_scores_are_the_sliding_max_of_row_scores() {
        let mut d = rows(200);
        d[50][0] = Some(30.0);
        d[120][2] = Some(-9.0);
        for w in [3, 7, 30, 200] {
            let r = predict(&req(d.clone(), w, "ensemble"), None, 30, 0.9).unwrap();
            for (i, ws) in r.window_scores.iter().enumerate() {
                let naive = r.scores[i..i + w].iter().copied().fold(0.0, f64::max);
                assert_eq!(*ws, naive, "w {w}, window {i}");
            }
        }
    }

    #[test]
    fn limits_bound_rows_window_and_work() {
        let l = Limits {
            max_rows: 100,
            max_window: 50,
            max_work: 10_000,
            ..Limits::default()
        };
        let s = |rows, window, features| {
            let data = vec![vec![Some(1.0); features]; rows];
            Size::of(&data, Some(window), Some("robust_z"), 30, None)
        };
        assert!(check_limits(&[s(100, 30, 3)], &l).is_ok());
        let e = check_limits(&[s(60, 10, 1), s(41, 10, 1)], &l).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
        assert!(e.detail.contains("101 rows"), "{e}");
        let e = check_limits(&[s(60, 51, 1)], &l).unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_str()),
            (ErrorKind::Invalid, "window_size")
        );
        let e = check_limits(&[s(100, 50, 3)], &l).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
        assert!(e.detail.contains("15000 steps"), "{e}");
        // The ensemble adds EWMA's step per point; the forest costs per point, whatever the
        // window.
        assert_eq!(work("ensemble", 100, 50, 3, None), 15_300);
        assert!(work("iforest", 100, 3, 1, None) > 100 * 300);
    }

    #[test]
    fn jobs_bound_running_scorings_and_forget_old_finished_jobs() {
        let j = Jobs::default();
        let a = j.try_start(2).unwrap();
        let b = j.try_start(2).unwrap();
        assert!(j.try_start(2).is_none());
        drop(a);
        assert_eq!(j.running(), 1);
        let c = j.try_start(2).unwrap();
        drop((b, c));
        assert_eq!(j.running(), 0);

        let pending = j.create(3);
        let done: Vec<String> = (0..5)
            .map(|_| {
                let id = j.create(3);
                j.finish(&id, vec![]);
                id
            })
            .collect();
        // The pending job is never forgotten; the oldest finished ones are.
        assert!(matches!(j.get(&pending), Some(JobStatus::Pending)));
        assert!(j.get(&done[0]).is_none() && j.get(&done[2]).is_none());
        assert!(j.get(&done[3]).is_some() && j.get(&done[4]).is_some());
        j.fail(&pending, serde_json::json!({"title": "Internal error"}));
        let v = serde_json::to_value(j.get(&pending).unwrap()).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["error"]["title"], "Internal error");
    }
}
