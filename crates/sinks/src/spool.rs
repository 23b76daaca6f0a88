//! Points a sink could not deliver, kept on disk as JSON lines.
//!
//! Two kinds of file under `<data_dir>/sinks/<name>/`:
//! - `undelivered-<ms>.jsonl`: the server was unreachable when fieldlab stopped; sent first at
//!   the next start, then deleted.
//! - `rejected.jsonl`: the server refused the data itself; kept for a human, never resent.
//!
//! Each line is `{"reason": "...", "point": {...}}`, so a file explains itself.

use fieldlab_core::Point;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct Line {
    reason: String,
    point: Point,
}

fn append(path: &Path, lines: impl Iterator<Item = Line>) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?,
    );
    for l in lines {
        serde_json::to_writer(&mut f, &l)?;
        f.write_all(b"\n")?;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
}

pub fn append_rejected(dir: &Path, points: &[(Point, String)]) -> std::io::Result<()> {
    append(
        &dir.join("rejected.jsonl"),
        points.iter().map(|(p, r)| Line {
            reason: r.clone(),
            point: p.clone(),
        }),
    )
}

pub fn write_undelivered(dir: &Path, points: &[Point], reason: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(format!(
        "undelivered-{}.jsonl",
        fieldlab_core::time::now_ms()
    ));
    append(
        &path,
        points.iter().map(|p| Line {
            reason: reason.to_string(),
            point: p.clone(),
        }),
    )?;
    Ok(path)
}

/// Spooled files of earlier runs, oldest first, with their points. A line that does not parse
/// (a torn tail) is skipped with a warning.
pub fn pending(dir: &Path) -> Vec<(PathBuf, Vec<Point>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("undelivered-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(file) = std::fs::File::open(&f) else {
            continue;
        };
        let mut points = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            match line
                .map_err(|e| e.to_string())
                .and_then(|l| serde_json::from_str::<Line>(&l).map_err(|e| e.to_string()))
            {
                Ok(l) => points.push(l.point),
                Err(e) => {
                    tracing::warn!(file = %f.display(), line = i + 1, error = %e, "skipping an unreadable spooled point")
                }
            }
        }
        out.push((f, points));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::{FieldValue, SeriesKey, Tags};

    #[test]
    fn undelivered_points_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let pts: Vec<Point> = (0..3)
            .map(|i| Point {
                key: SeriesKey::new("d", "f"),
                tags: Tags::default(),
                ts_ms: i,
                value: FieldValue::I64(i),
            })
            .collect();
        let path = write_undelivered(dir.path(), &pts, "down").unwrap();
        append_rejected(dir.path(), &[(pts[0].clone(), "bad".into())]).unwrap();
        let p = pending(dir.path());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, path);
        assert_eq!(p[0].1, pts);
    }
}
