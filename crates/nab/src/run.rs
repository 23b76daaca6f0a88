//! Running a detector over the corpus the way NAB does: one fresh detector per file, every
//! row scored in order from the past only, written as NAB result files.

use crate::corpus::{self, CorpusError, Series, Windows};
use fieldlab_detect::Detector;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Score every row of a series with a fresh detector.
pub fn score_series(series: &Series, detector: &mut dyn Detector) -> Vec<f64> {
    series
        .timestamps
        .iter()
        .zip(&series.values)
        .map(|(&t, &v)| detector.score(t, v).clamp(0.0, 1.0))
        .collect()
}

/// `1` for rows inside a labelled window.
pub fn labels(series: &Series, windows: &[(i64, i64)]) -> Vec<u8> {
    series
        .timestamps
        .iter()
        .map(|t| windows.iter().any(|(s, e)| s <= t && t <= e) as u8)
        .collect()
}

/// Write `timestamp,value,anomaly_score,label` to `out/<category>/<detector>_<file>.csv`.
pub fn write_result(
    out: &Path,
    detector: &str,
    series: &Series,
    scores: &[f64],
    labels: &[u8],
) -> Result<PathBuf, CorpusError> {
    let (cat, file) = series.name.split_once('/').unwrap_or(("", &series.name));
    let dir = out.join(cat);
    let io = |e: std::io::Error| CorpusError {
        path: dir.display().to_string(),
        msg: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let path = dir.join(format!("{detector}_{file}"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    writeln!(w, "timestamp,value,anomaly_score,label").map_err(io)?;
    for i in 0..scores.len() {
        writeln!(
            w,
            "{},{},{},{}",
            series.raw_timestamps[i], series.values[i], scores[i], labels[i]
        )
        .map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(path)
}

/// Run `make()` detectors over every file under `data`, writing results under `out`;
/// `progress(done, total, file)` is called before each file. Returns the number of files and
/// rows.
pub fn run_corpus(
    data: &Path,
    windows: &Windows,
    out: &Path,
    detector: &str,
    make: &(dyn Fn(usize) -> Box<dyn Detector> + Sync),
    progress: &dyn Fn(usize, usize, &str),
) -> Result<(usize, usize), CorpusError> {
    let files = corpus::data_files(data)?;
    let mut rows = 0;
    for (i, (key, path)) in files.iter().enumerate() {
        progress(i, files.len(), key);
        let s = corpus::read_series(path, key)?;
        let mut d = make(s.values.len());
        let scores = score_series(&s, d.as_mut());
        let w = windows.get(key).map(Vec::as_slice).unwrap_or(&[]);
        write_result(out, detector, &s, &scores, &labels(&s, w))?;
        rows += s.values.len();
    }
    Ok((files.len(), rows))
}
