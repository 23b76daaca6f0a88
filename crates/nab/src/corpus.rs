//! Reading NAB's files: data (`category/file.csv` with `timestamp,value`), the labelled windows
//! (`combined_windows.json`) and result files (`timestamp,value,anomaly_score,label`).
//!
//! Hand-parsed rather than through a CSV crate: NAB's files are unquoted, comma-separated
//! numbers and timestamps, and the errors here name the file and line, which is what a user
//! fixing a result file needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A problem with a benchmark file: says which file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct CorpusError {
    pub path: String,
    pub msg: String,
}

fn err(path: &Path, msg: impl Into<String>) -> CorpusError {
    CorpusError {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Parse NAB's timestamps (`2014-04-10 07:15:00` or `2014-04-10 07:15:00.000000`) as UTC ms.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// One data file.
#[derive(Debug, Clone)]
pub struct Series {
    /// `category/file.csv`.
    pub name: String,
    /// Timestamps as written in the file (copied to result files).
    pub raw_timestamps: Vec<String>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// Labelled windows per `category/file.csv`.
pub type Windows = BTreeMap<String, Vec<(i64, i64)>>;

/// Read `combined_windows.json`.
pub fn read_windows(path: &Path) -> Result<Windows, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
    let raw: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|e| {
            err(
                path,
                format!("{e} (expected {{\"cat/file.csv\": [[start, end], ...]}})"),
            )
        })?;
    let mut out = Windows::new();
    for (k, ws) in raw {
        let mut v = Vec::with_capacity(ws.len());
        for (a, b) in ws {
            let (Some(s), Some(e)) = (parse_time(&a), parse_time(&b)) else {
                return Err(err(path, format!("{k}: bad window [{a}, {b}]")));
            };
            v.push((s, e));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Split a CSV file into a header and rows of fields, with 1-based line numbers.
/// A CSV's header and its rows, each with its line number.
type Csv = (Vec<String>, Vec<(usize, Vec<String>)>);

fn read_csv(path: &Path) -> Result<Csv, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| err(path, "empty file"))?
        .1
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let rows = lines
        .map(|(i, l)| (i + 1, l.split(',').map(|s| s.trim().to_string()).collect()))
        .collect();
    Ok((header, rows))
}

fn column(path: &Path, header: &[String], name: &str) -> Result<usize, CorpusError> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| err(path, format!("no `{name}` column in header {header:?}")))
}

/// Read a data file (`timestamp,value`).
pub fn read_series(path: &Path, name: &str) -> Result<Series, CorpusError> {
    let (header, rows) = read_csv(path)?;
    let (ti, vi) = (
        column(path, &header, "timestamp")?,
        column(path, &header, "value")?,
    );
    let mut s = Series {
        name: name.to_string(),
        raw_timestamps: Vec::with_capacity(rows.len()),
        timestamps: Vec::with_capacity(rows.len()),
        values: Vec::with_capacity(rows.len()),
    };
    for (line, f) in rows {
        let (Some(t), Some(v)) = (f.get(ti), f.get(vi)) else {
            return Err(err(path, format!("line {line}: missing field")));
        };
        let ts =
            parse_time(t).ok_or_else(|| err(path, format!("line {line}: bad timestamp `{t}`")))?;
        let v: f64 = v
            .parse()
            .map_err(|_| err(path, format!("line {line}: bad value `{v}`")))?;
        s.raw_timestamps.push(t.clone());
        s.timestamps.push(ts);
        s.values.push(v);
    }
    Ok(s)
}

/// Read a result file's timestamps and anomaly scores.
pub fn read_results(path: &Path) -> Result<(Vec<i64>, Vec<f64>), CorpusError> {
    let (header, rows) = read_csv(path)?;
    let (ti, ai) = (
        column(path, &header, "timestamp")?,
        column(path, &header, "anomaly_score")?,
    );
    let mut ts = Vec::with_capacity(rows.len());
    let mut sc = Vec::with_capacity(rows.len());
    for (line, f) in rows {
        let (Some(t), Some(a)) = (f.get(ti), f.get(ai)) else {
            return Err(err(path, format!("line {line}: missing field")));
        };
        ts.push(
            parse_time(t).ok_or_else(|| err(path, format!("line {line}: bad timestamp `{t}`")))?,
        );
        let a: f64 = a
            .parse()
            .map_err(|_| err(path, format!("line {line}: bad anomaly_score `{a}`")))?;
        if !a.is_finite() {
            return Err(err(
                path,
                format!("line {line}: anomaly_score must be a finite number"),
            ));
        }
        sc.push(a);
    }
    Ok((ts, sc))
}

/// The data files under `dir` as (`category/file.csv`, path), sorted.
pub fn data_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, CorpusError> {
    let mut out = Vec::new();
    let cats = std::fs::read_dir(dir).map_err(|e| err(dir, e.to_string()))?;
    for c in cats {
        let c = c.map_err(|e| err(dir, e.to_string()))?;
        if !c.path().is_dir() {
            continue;
        }
        let cat = c.file_name().to_string_lossy().to_string();
        for f in std::fs::read_dir(c.path()).map_err(|e| err(&c.path(), e.to_string()))? {
            let f = f.map_err(|e| err(&c.path(), e.to_string()))?;
            let name = f.file_name().to_string_lossy().to_string();
            if name.ends_with(".csv") {
                out.push((format!("{cat}/{name}"), f.path()));
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(err(dir, "no <category>/<file>.csv files found"));
    }
    Ok(out)
}

/// Find the result file for data key `category/file.csv` in a detector's result directory:
/// NAB names it `<detector>_<file>.csv`; a plain `<file>.csv` is accepted too.
pub fn find_result(dir: &Path, key: &str) -> Option<PathBuf> {
    let (cat, file) = key.split_once('/')?;
    let plain = dir.join(cat).join(file);
    if plain.is_file() {
        return Some(plain);
    }
    let suffix = format!("_{file}");
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir.join(cat))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        .map(|e| e.path())
        .collect();
    hits.sort();
    // Prefer the shortest prefix (`htm_x.csv` over `htm_foo_x.csv` when both exist).
    hits.sort_by_key(|p| p.as_os_str().len());
    hits.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nab_times_with_and_without_fraction() {
        assert_eq!(parse_time("1970-01-01 00:00:01"), Some(1000));
        assert_eq!(parse_time("1970-01-01 00:00:01.000000"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01"), None);
    }

    #[test]
    fn result_lookup_accepts_nab_names() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("cat")).unwrap();
        std::fs::write(d.path().join("cat/det_x.csv"), "timestamp,anomaly_score\n").unwrap();
        assert_eq!(
            find_result(d.path(), "cat/x.csv").unwrap(),
            d.path().join("cat/det_x.csv")
        );
        assert!(find_result(d.path(), "cat/y.csv").is_none());
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.csv");
        std::fs::write(
            &p,
            "timestamp,value,anomaly_score\n2014-01-01 00:00:00,1,0.5\n2014-01-01 00:05:00,1,nan\n",
        )
        .unwrap();
        let e = read_results(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("anomaly_score"), "{e}");
    }
}
