//! fieldlab-nab: the Numenta Anomaly Benchmark as a yardstick for fieldlab's detectors.
//!
//! Why it exists: "detects anomalies" means nothing without a number that others can check.
//! NAB is the public benchmark for streaming detectors; this crate reimplements its scorer
//! exactly (`score`), reads its files (`corpus`) and runs fieldlab detectors over its data
//! to produce result files in NAB's own format (`run`), so results can be scored here or by
//! NAB's Python code alike.
//!
//! Architecture invariant: `score` is pure arithmetic; only `corpus` and `run` touch files.

pub mod corpus;
pub mod run;
pub mod score;

use std::path::Path;

pub use score::{parse_profiles, Profile, ProfileResult, PROBATION_PERCENT};

/// NAB's three profiles, as in its `config/profiles.json`.
pub const DEFAULT_PROFILES: &str = r#"{
 "standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}},
 "reward_low_FP_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0}},
 "reward_low_FN_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}}
}"#;

/// Score one detector's result directory (`<category>/<detector>_<file>.csv`) against the
/// windows of every labelled file. A labelled file without a result is an error.
pub fn score_results(
    results: &Path,
    windows: &corpus::Windows,
    profiles: &[Profile],
) -> Result<Vec<ProfileResult>, String> {
    let mut files = Vec::with_capacity(windows.len());
    for (key, w) in windows {
        let path = corpus::find_result(results, key).ok_or_else(|| {
            format!(
                "{}: no result file for `{key}` (expected {}/<detector>_{})",
                results.display(),
                key.split('/').next().unwrap_or(""),
                key.rsplit('/').next().unwrap_or(key)
            )
        })?;
        let (timestamps, scores) = corpus::read_results(&path).map_err(|e| e.to_string())?;
        files.push(score::FileScores {
            name: key.clone(),
            timestamps,
            scores,
            windows: w.clone(),
        });
    }
    profiles
        .iter()
        .map(|p| {
            score::score_corpus(&files, p, PROBATION_PERCENT)
                .map_err(|(file, e)| format!("{file}: {e}"))
        })
        .collect()
}
