//! The seed's `/predict` service: score a batch of rows (one column per feature) with a
//! named method, per point and per window, and run batches as asynchronous jobs.
//!
//! Every method runs the streaming detectors in row order, so a row's score depends only on
//! the rows before it (the same semantics as live detection). Methods: `robust_z`, `ewma`,
//! `iforest`, `autoencoder` (needs a trained model whose feature count matches) and
//! `ensemble` (max of robust z over the window, EWMA, and the autoencoder when a model fits).
//! Detectors that need long histories (seasonal, likelihood calibration) are for streams,
//! not for a request's few rows, and are not offered here.

use fieldlab_detect::autoencoder::GruAutoencoder;
use fieldlab_detect::{Detector, Ewma, IsolationForest, RobustZ};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Methods `/predict` accepts.
pub const METHODS: &[&str] = &["ensemble", "robust_z", "ewma", "iforest", "autoencoder"];

/// A request: rows of equal length, the window, the method, the flag threshold.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub data: Vec<Vec<Option<f64>>>,
    #[serde(default)]
    pub window_size: Option<usize>,
    #[serde(default)]
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
    /// 422 for input that cannot be scored, 409 for a method that is not available now.
    pub conflict: bool,
}

fn bad(field: &str, detail: impl Into<String>) -> PredictError {
    PredictError {
        field: field.into(),
        detail: detail.into(),
        conflict: false,
    }
}

/// Scores of one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
}

/// Validate and score. `model` is the loaded autoencoder, if any.
pub fn predict(
    req: &PredictRequest,
    model: Option<&GruAutoencoder>,
    default_window: usize,
    default_threshold: f64,
) -> Result<PredictResult, PredictError> {
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
    if w < 2 {
        return Err(bad("window_size", "window_size must be at least 2"));
    }
    if w > n {
        return Err(bad(
            "window_size",
            format!("window_size {w} is larger than the data ({n} rows); send at least {w} rows or a smaller window"),
        ));
    }
    let ae = match (method.as_str(), model) {
        ("autoencoder", None) => {
            return Err(PredictError {
                field: "method".into(),
                detail: "no autoencoder model is loaded; train one with `fieldlab detect train` and set detect.model_path, or load it via POST /api/v1/models/load".into(),
                conflict: true,
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
    let mut window_scores = Vec::with_capacity(n + 1 - w);
    for end in w - 1..n {
        let mut s = scores[end + 1 - w..=end]
            .iter()
            .copied()
            .fold(0.0, f64::max);
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

/// State of an asynchronous job.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Done {
        results: Vec<Result<PredictResult, String>>,
    },
}

/// Next job number, jobs by id, ids oldest first.
type JobTable = (u64, BTreeMap<String, JobStatus>, VecDeque<String>);

/// Recent jobs (bounded: the oldest are forgotten).
#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<JobTable>>,
}

const MAX_JOBS: usize = 1000;

impl Jobs {
    pub fn create(&self) -> String {
        let mut g = self.inner.lock();
        g.0 += 1;
        let id = format!("job-{}", g.0);
        g.1.insert(id.clone(), JobStatus::Pending);
        g.2.push_back(id.clone());
        if g.2.len() > MAX_JOBS {
            if let Some(old) = g.2.pop_front() {
                g.1.remove(&old);
            }
        }
        id
    }

    pub fn finish(&self, id: &str, results: Vec<Result<PredictResult, String>>) {
        let mut g = self.inner.lock();
        if let Some(s) = g.1.get_mut(id) {
            *s = JobStatus::Done { results };
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
        let e = predict(&req(rows(2), 30, "ensemble"), None, 30, 0.9).unwrap_err();
        assert_eq!(e.field, "window_size");
        let e = predict(&req(rows(40), 30, "quantum"), None, 30, 0.9).unwrap_err();
        assert!(e.detail.contains("unknown method `quantum`"));
        let e = predict(&req(rows(40), 30, "autoencoder"), None, 30, 0.9).unwrap_err();
        assert!(e.conflict);
    }
}
