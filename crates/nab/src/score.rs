//! NAB's scorer, row for row as the benchmark's `sweeper.py` (NAB v1.1) computes it.
//!
//! Why hand-written: NAB exists only in Python; to compare fieldlab's detectors with the
//! published table the arithmetic must be the same, quirks included:
//! - the first `min(floor(p*N), p*5000)` rows of a file are probationary and never scored;
//! - a row inside a window is worth `tpWeight * S(pos) / S(-1)` with
//!   `pos = -(right - i + 1) / width` and `S(y) = 2*sigmoid(-5y) - 1` (`S(y) = -1` for `y >= 3`);
//! - a row outside windows is worth `fpWeight * S(|prevRight - i| / (prevWidth - 1))`, or
//!   `-fpWeight` before the first window; every detected row outside a window counts;
//! - a window scores the best (earliest) detected row in it, or `-fnWeight` when none;
//! - one threshold per profile for the whole corpus, the one that maximises the total
//!   (ties: the highest threshold, as Python's stable sort keeps list order);
//! - normalised = `100 * (S - S_null) / (S_perfect - S_null)`, `S_null` from the null detector
//!   (score 0 everywhere, itself threshold-optimised), `S_perfect = tpWeight * windows`.

use std::collections::BTreeMap;

/// One profile's weights (`profiles.json`: `{"standard": {"CostMatrix": {...}}}`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
pub struct CostMatrix {
    #[serde(rename = "tpWeight")]
    pub tp_weight: f64,
    #[serde(rename = "fpWeight")]
    pub fp_weight: f64,
    #[serde(rename = "fnWeight")]
    pub fn_weight: f64,
}

/// A named cost matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub cost: CostMatrix,
}

/// NAB's probationary share of every file.
pub const PROBATION_PERCENT: f64 = 0.15;

/// Parse NAB's `profiles.json`, in the file's order of names sorted (standard first).
pub fn parse_profiles(json: &str) -> Result<Vec<Profile>, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "CostMatrix")]
        cost: CostMatrix,
    }
    let m: BTreeMap<String, Entry> =
        serde_json::from_str(json).map_err(|e| format!("profiles: {e}"))?;
    let mut v: Vec<Profile> = m
        .into_iter()
        .map(|(name, e)| Profile { name, cost: e.cost })
        .collect();
    v.sort_by_key(|p| (p.name != "standard", p.name.clone()));
    Ok(v)
}

/// `2*sigmoid(-5y) - 1`, and `-1` from `y >= 3` on (far past a window).
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// NAB's probationary length (a float, compared with the row index).
pub fn probationary_length(rows: usize, percent: f64) -> f64 {
    ((percent * rows as f64).floor()).min(percent * 5000.0)
}

/// Where a row sits for scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Place {
    Probationary,
    Outside,
    /// Inside the window with this corpus-wide id.
    Window(u32),
}

/// A row after the sweep: its anomaly score and what detecting it would add.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepRow {
    pub anomaly: f64,
    pub sweep: f64,
    pub place: Place,
}

/// Score and confusion counts at one threshold (detections: `anomaly >= threshold`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdScore {
    pub threshold: f64,
    pub score: f64,
    pub tp: usize,
    pub tn: usize,
    pub fp: usize,
    pub fn_: usize,
    pub total: usize,
}

/// The windows of one file do not fit its rows.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("window end {0} is not a timestamp of the file")]
    WindowEnd(i64),
    #[error("{scores} anomaly scores for {rows} rows")]
    Length { rows: usize, scores: usize },
    #[error("anomaly score {score} at row {row} is not a finite number")]
    NotFinite { row: usize, score: f64 },
}

/// Sweep one file (`calcSweepScore`). Windows are `[start, end]` timestamps in order; their
/// ids start at `first_window_id`. Returns the rows and the number of windows entered.
pub fn sweep_file(
    timestamps: &[i64],
    scores: &[f64],
    windows: &[(i64, i64)],
    cost: &CostMatrix,
    probation_percent: f64,
    first_window_id: u32,
) -> Result<Vec<SweepRow>, SweepError> {
    if timestamps.len() != scores.len() {
        return Err(SweepError::Length {
            rows: timestamps.len(),
            scores: scores.len(),
        });
    }
    let max_tp = scaled_sigmoid(-1.0);
    let probation = probationary_length(timestamps.len(), probation_percent);
    let index_of = |t: i64| timestamps.iter().position(|x| *x == t);
    let mut pending = windows.iter().copied().enumerate().peekable();
    // (id, end timestamp, right index, width) of the window we are in.
    let mut cur: Option<(u32, i64, usize, f64)> = None;
    let mut prev: Option<(usize, f64)> = None;
    let mut out = Vec::with_capacity(timestamps.len());
    for (i, (&t, &a)) in timestamps.iter().zip(scores).enumerate() {
        if !a.is_finite() {
            return Err(SweepError::NotFinite { row: i, score: a });
        }
        if let Some(&(k, (start, end))) = pending.peek() {
            if t == start {
                pending.next();
                let right = index_of(end).ok_or(SweepError::WindowEnd(end))?;
                let left = index_of(start).unwrap_or(i);
                let width = (right as f64) - (left as f64) + 1.0;
                cur = Some((first_window_id + k as u32, end, right, width));
            }
        }
        let (sweep, place) = match cur {
            Some((id, _, right, width)) => {
                let pos = -((right as f64) - (i as f64) + 1.0) / width;
                (
                    scaled_sigmoid(pos) * cost.tp_weight / max_tp,
                    Place::Window(id),
                )
            }
            None => {
                let pos = match prev {
                    None => 3.0,
                    Some((right, width)) => (right as f64 - i as f64).abs() / (width - 1.0),
                };
                (scaled_sigmoid(pos) * cost.fp_weight, Place::Outside)
            }
        };
        let place = if (i as f64) >= probation {
            place
        } else {
            Place::Probationary
        };
        out.push(SweepRow {
            anomaly: a,
            sweep,
            place,
        });
        if let Some((_, end, _, width)) = cur {
            if t == end {
                prev = Some((i, width));
                cur = None;
            }
        }
    }
    Ok(out)
}

/// Total score for every distinct threshold (`calcScoreByThreshold`), highest threshold first;
/// the first entry (1.1) detects nothing.
pub fn score_by_threshold(rows: &[SweepRow], fn_weight: f64) -> Vec<ThresholdScore> {
    let mut scorable: Vec<&SweepRow> = rows
        .iter()
        .filter(|r| r.place != Place::Probationary)
        .collect();
    // Stable, descending, as Python's sorted(reverse=True).
    scorable.sort_by(|a, b| b.anomaly.total_cmp(&a.anomaly));
    let mut window_best: BTreeMap<u32, f64> = BTreeMap::new();
    for r in &scorable {
        if let Place::Window(id) = r.place {
            window_best.insert(id, -fn_weight);
        }
    }
    let mut total: f64 = window_best.values().sum();
    let mut fp_sum = 0.0;
    let mut tn = scorable
        .iter()
        .filter(|r| r.place == Place::Outside)
        .count();
    let mut fn_ = scorable.len() - tn;
    let (mut tp, mut fp) = (0, 0);
    let mut out = Vec::new();
    let mut threshold = 1.1;
    let snapshot = |threshold, total: f64, fp_sum: f64, tp, tn, fp, fn_| ThresholdScore {
        threshold,
        score: total + fp_sum,
        tp,
        tn,
        fp,
        fn_,
        total: tp + tn + fp + fn_,
    };
    for r in &scorable {
        if r.anomaly != threshold {
            out.push(snapshot(threshold, total, fp_sum, tp, tn, fp, fn_));
            threshold = r.anomaly;
        }
        match r.place {
            Place::Window(id) => {
                tp += 1;
                fn_ -= 1;
                let best = window_best.get_mut(&id).expect("initialised above");
                if r.sweep > *best {
                    total += r.sweep - *best;
                    *best = r.sweep;
                }
            }
            _ => {
                fp += 1;
                tn -= 1;
                fp_sum += r.sweep;
            }
        }
    }
    out.push(snapshot(threshold, total, fp_sum, tp, tn, fp, fn_));
    out
}

/// The best entry of [`score_by_threshold`] (first of the maxima: the highest threshold).
pub fn best_threshold(scores: &[ThresholdScore]) -> ThresholdScore {
    let mut best = scores[0];
    for s in &scores[1..] {
        if s.score > best.score {
            best = *s;
        }
    }
    best
}

/// One file's anomaly scores (aligned with its rows) and labelled windows.
#[derive(Debug, Clone)]
pub struct FileScores {
    /// `category/file.csv`, the key in the labels.
    pub name: String,
    pub timestamps: Vec<i64>,
    pub scores: Vec<f64>,
    pub windows: Vec<(i64, i64)>,
}

/// One profile's result on a corpus.
#[derive(Debug, Clone)]
pub struct ProfileResult {
    pub profile: String,
    pub threshold: f64,
    pub raw: f64,
    pub null: f64,
    pub perfect: f64,
    pub normalized: f64,
    pub counts: ThresholdScore,
    /// Per file: raw score at the corpus threshold.
    pub per_file: Vec<(String, f64)>,
}

/// Score a corpus under one profile: sweep, optimise the threshold, normalise.
pub fn score_corpus(
    files: &[FileScores],
    profile: &Profile,
    probation_percent: f64,
) -> Result<ProfileResult, (String, SweepError)> {
    let sweep_all = |zeros: bool| -> Result<Vec<Vec<SweepRow>>, (String, SweepError)> {
        let mut id = 0u32;
        let mut all = Vec::with_capacity(files.len());
        for f in files {
            let z;
            let scores = if zeros {
                z = vec![0.0; f.timestamps.len()];
                &z
            } else {
                &f.scores
            };
            let rows = sweep_file(
                &f.timestamps,
                scores,
                &f.windows,
                &profile.cost,
                probation_percent,
                id,
            )
            .map_err(|e| (f.name.clone(), e))?;
            id += f.windows.len() as u32;
            all.push(rows);
        }
        Ok(all)
    };
    let rows = sweep_all(false)?;
    let flat: Vec<SweepRow> = rows.iter().flatten().copied().collect();
    let best = best_threshold(&score_by_threshold(&flat, profile.cost.fn_weight));
    let null_rows: Vec<SweepRow> = sweep_all(true)?.into_iter().flatten().collect();
    let null = best_threshold(&score_by_threshold(&null_rows, profile.cost.fn_weight)).score;
    let windows: usize = files.iter().map(|f| f.windows.len()).sum();
    let perfect = windows as f64 * profile.cost.tp_weight;
    let per_file = files
        .iter()
        .zip(&rows)
        .map(|(f, r)| (f.name.clone(), file_score(r, best.threshold, &profile.cost)))
        .collect();
    let normalized = if perfect == null {
        0.0
    } else {
        100.0 * (best.score - null) / (perfect - null)
    };
    Ok(ProfileResult {
        profile: profile.name.clone(),
        threshold: best.threshold,
        raw: best.score,
        null,
        perfect,
        normalized,
        counts: best,
        per_file,
    })
}

/// One file's raw score when rows with `anomaly >= threshold` are detections.
pub fn file_score(rows: &[SweepRow], threshold: f64, cost: &CostMatrix) -> f64 {
    let mut windows: BTreeMap<u32, f64> = BTreeMap::new();
    let mut fp = 0.0;
    for r in rows {
        match r.place {
            Place::Probationary => {}
            Place::Window(id) => {
                let best = windows.entry(id).or_insert(-cost.fn_weight);
                if r.anomaly >= threshold && r.sweep > *best {
                    *best = r.sweep;
                }
            }
            Place::Outside => {
                if r.anomaly >= threshold {
                    fp += r.sweep;
                }
            }
        }
    }
    fp + windows.values().sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: CostMatrix = CostMatrix {
        tp_weight: 1.0,
        fp_weight: 0.11,
        fn_weight: 1.0,
    };

    fn profile(cost: CostMatrix) -> Profile {
        Profile {
            name: "p".into(),
            cost,
        }
    }

    #[test]
    fn probationary_length_matches_nab() {
        // NAB's testGetProbationaryLength.
        for (rows, pct, want) in [
            (100, 0.0, 0.0),
            (100, 1.0, 100.0),
            (100, 0.1, 10.0),
            (100, 0.15, 15.0),
            (5000, 0.1, 500.0),
            (6000, 0.1, 500.0),
        ] {
            assert_eq!(probationary_length(rows, pct), want, "{rows} {pct}");
        }
    }

    #[test]
    fn scaled_sigmoid_reference_points() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
    }

    #[test]
    fn sweep_signs_and_probation_as_nab_test() {
        // NAB's testCalcSweepScoreWindowScoreInteraction.
        let ts: Vec<i64> = (0..100).collect();
        let scores = vec![1.0; 100];
        let rows = sweep_file(&ts, &scores, &[(30, 39), (75, 95)], &STANDARD, 0.1, 0).unwrap();
        assert_eq!(rows.len(), 100);
        let prob = rows
            .iter()
            .filter(|r| r.place == Place::Probationary)
            .count();
        assert_eq!(prob, 10);
        let inside = rows
            .iter()
            .filter(|r| matches!(r.place, Place::Window(_)))
            .count();
        assert_eq!(inside, 10 + 21);
        for r in &rows {
            match r.place {
                Place::Window(_) => assert!(r.sweep > 0.0),
                _ => assert!(r.sweep < 0.0),
            }
        }
        // The first row of a window is worth exactly tpWeight.
        assert!((rows[30].sweep - 1.0).abs() < 1e-12);
    }

    #[test]
    fn score_by_threshold_as_nab_test() {
        // NAB's testCalcScoreByThresholdReturnsExpectedScores, same rows and expectations.
        let fnw = 5.0;
        let row = |anomaly, sweep, place| SweepRow {
            anomaly,
            sweep,
            place,
        };
        let rows = [
            row(0.5, -1000.0, Place::Probationary),
            row(0.5, -1000.0, Place::Probationary),
            row(0.0, -3.0, Place::Outside),
            row(0.2, 20.0, Place::Window(0)),
            row(0.3, 10.0, Place::Window(0)),
            row(0.5, 5.0, Place::Window(1)),
            row(0.5, -3.0, Place::Outside),
        ];
        let got = score_by_threshold(&rows, fnw);
        let want = [
            (1.1, -2.0 * fnw, 0, 2, 0, 3),
            (0.5, 5.0 - 3.0 - fnw, 1, 1, 1, 2),
            (0.3, 5.0 - 3.0 + 10.0, 2, 1, 1, 1),
            (0.2, 5.0 - 3.0 + 20.0, 3, 1, 1, 0),
            (0.0, 5.0 - 3.0 + 20.0 - 3.0, 3, 0, 2, 0),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (g.threshold, g.score, g.tp, g.tn, g.fp, g.fn_, g.total),
                (w.0, w.1, w.2, w.3, w.4, w.5, 5)
            );
        }
    }

    fn corpus(scores: impl Fn(usize, i64) -> f64) -> Vec<FileScores> {
        // Two files of 1000 rows; one window each, and one file without windows.
        let mk = |name: &str, windows: Vec<(i64, i64)>, k: usize| {
            let ts: Vec<i64> = (0..1000).map(|i| i * 300_000).collect();
            FileScores {
                name: name.into(),
                scores: ts.iter().map(|t| scores(k, *t)).collect(),
                timestamps: ts,
                windows,
            }
        };
        vec![
            mk("a/one.csv", vec![(400 * 300_000, 449 * 300_000)], 0),
            mk(
                "a/two.csv",
                vec![
                    (300 * 300_000, 349 * 300_000),
                    (700 * 300_000, 749 * 300_000),
                ],
                1,
            ),
            mk("b/none.csv", vec![], 2),
        ]
    }

    fn starts(k: usize, t: i64) -> bool {
        let i = t / 300_000;
        matches!((k, i), (0, 400) | (1, 300) | (1, 700))
    }

    #[test]
    fn perfect_detector_scores_100_and_silence_scores_0() {
        for cost in [
            STANDARD,
            CostMatrix {
                fp_weight: 0.22,
                ..STANDARD
            },
            CostMatrix {
                fn_weight: 2.0,
                ..STANDARD
            },
        ] {
            let p = profile(cost);
            let perfect =
                score_corpus(&corpus(|k, t| starts(k, t) as u8 as f64), &p, 0.15).unwrap();
            assert!((perfect.normalized - 100.0).abs() < 1e-9, "{perfect:?}");
            assert_eq!(perfect.threshold, 1.0);
            let silent = score_corpus(&corpus(|_, _| 0.0), &p, 0.15).unwrap();
            assert_eq!(silent.normalized, 0.0);
            assert_eq!(silent.null, -3.0 * cost.fn_weight);
        }
    }

    #[test]
    fn late_detection_and_false_positives_cost_points() {
        let p = profile(STANDARD);
        // Fire in the middle of each window instead of its start.
        let late = score_corpus(
            &corpus(|k, t| {
                let i = t / 300_000;
                matches!((k, i), (0, 425) | (1, 325) | (1, 725)) as u8 as f64
            }),
            &p,
            0.15,
        )
        .unwrap();
        assert!(
            late.normalized < 100.0 && late.normalized > 80.0,
            "{late:?}"
        );
        // Perfect plus one false positive long after every window: 0.11 less than perfect.
        let noisy = score_corpus(
            &corpus(|k, t| (starts(k, t) || (k == 2 && t / 300_000 == 500)) as u8 as f64),
            &p,
            0.15,
        )
        .unwrap();
        let want = 100.0 * (3.0 - 0.11 + 3.0) / 6.0;
        assert!((noisy.normalized - want).abs() < 1e-9, "{noisy:?}");
        // A graded score lets the optimiser drop the false positive.
        let graded = score_corpus(
            &corpus(|k, t| {
                if starts(k, t) {
                    0.9
                } else if k == 2 && t / 300_000 == 500 {
                    0.5
                } else {
                    0.0
                }
            }),
            &p,
            0.15,
        )
        .unwrap();
        assert!((graded.normalized - 100.0).abs() < 1e-9);
        assert_eq!(graded.threshold, 0.9);
        let per_file: f64 = graded.per_file.iter().map(|(_, s)| s).sum();
        assert!((per_file - graded.raw).abs() < 1e-9);
    }

    #[test]
    fn profiles_parse_standard_first() {
        let p = parse_profiles(
            r#"{"reward_low_FP_rate":{"CostMatrix":{"tpWeight":1.0,"fnWeight":1.0,"fpWeight":0.22,"tnWeight":1.0}},
                "standard":{"CostMatrix":{"tpWeight":1.0,"fnWeight":1.0,"fpWeight":0.11,"tnWeight":1.0}}}"#,
        )
        .unwrap();
        assert_eq!(p[0].name, "standard");
        assert_eq!(p[1].cost.fp_weight, 0.22);
    }
}
