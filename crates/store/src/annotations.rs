//! Ground-truth annotations: what was done to the data, and when.
//!
//! The emulator injects faults (spikes, drift, dropouts, ...) into device telemetry so that
//! students and detectors have bad data to find. Whether a detector found them can only be
//! judged against a record of what was injected, kept *outside* the payload: that record is
//! an annotation. Annotations are JSON lines in `<data_dir>/annotations/annotations.jsonl`,
//! append-only; a later line with the same `id` (e.g. the fault was removed early, so its
//! `end_ms` is now known) supersedes the earlier one when read back.
//!
//! Appends go through [`AppendLog`]: a line is fsynced before `record` returns, and a write or
//! fsync that fails is cut back, so a later line is never glued to a partial one (which would
//! make both unreadable).

use crate::fs::{AppendLog, StoreFs};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One injected fault (or any other labelled interval) on one device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Annotation {
    /// Unique per data directory, assigned by [`Annotations::next_id`].
    pub id: u64,
    pub device_id: String,
    /// Fields affected; empty means the whole message (dropout, duplicate, ...).
    #[serde(default)]
    pub fields: Vec<String>,
    /// What was done, e.g. `spike`, `drift`, `dropout`.
    pub kind: String,
    /// Start, epoch milliseconds.
    pub start_ms: i64,
    /// End, epoch milliseconds; `None` while the fault is open-ended and still active.
    pub end_ms: Option<i64>,
    /// The fault's parameters as given (magnitude, rate, ...).
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// The append-only annotation log of a data directory.
pub struct Annotations {
    path: PathBuf,
    state: Mutex<(AppendLog, u64)>,
}

impl Annotations {
    pub fn open(data_dir: &Path) -> io::Result<Annotations> {
        Self::open_with(crate::fs::real(), data_dir)
    }

    /// [`Annotations::open`], writing through `fs`.
    pub fn open_with(fs: Arc<dyn StoreFs>, data_dir: &Path) -> io::Result<Annotations> {
        let dir = data_dir.join("annotations");
        fs.create_dir_all(&dir)?;
        let path = dir.join("annotations.jsonl");
        // Opened first: a torn last line is cut before the ids are read.
        let log = AppendLog::open(fs, &path)?;
        let max_id = read_lines(&path)?.iter().map(|a| a.id).max().unwrap_or(0);
        Ok(Annotations {
            path,
            state: Mutex::new((log, max_id + 1)),
        })
    }

    /// Reserve a fresh id.
    pub fn next_id(&self) -> u64 {
        let mut st = self.state.lock();
        let id = st.1;
        st.1 += 1;
        id
    }

    /// Append (or supersede, by id) one annotation and fsync it.
    pub fn record(&self, a: &Annotation) -> io::Result<()> {
        let mut line = serde_json::to_vec(a).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut st = self.state.lock();
        st.0.append(&line)?;
        if a.id >= st.1 {
            st.1 = a.id + 1;
        }
        Ok(())
    }

    /// Every annotation (latest version of each id), optionally of one device, oldest first.
    pub fn list(&self, device_id: Option<&str>) -> io::Result<Vec<Annotation>> {
        let _guard = self.state.lock(); // no half-written line is read
        let mut by_id: BTreeMap<u64, Annotation> = BTreeMap::new();
        for a in read_lines(&self.path)? {
            if device_id.is_none_or(|d| d == a.device_id) {
                by_id.insert(a.id, a);
            }
        }
        let mut v: Vec<Annotation> = by_id.into_values().collect();
        v.sort_by_key(|a| (a.start_ms, a.id));
        Ok(v)
    }
}

/// Read every line; one that cannot be parsed (damage on disk) is skipped with a warning.
fn read_lines(path: &Path) -> io::Result<Vec<Annotation>> {
    let mut out = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Annotation>(&line) {
            Ok(a) => out.push(a),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable annotation line"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(id: u64, dev: &str, end: Option<i64>) -> Annotation {
        Annotation {
            id,
            device_id: dev.into(),
            fields: vec!["temperature".into()],
            kind: "spike".into(),
            start_ms: 1000 + id as i64,
            end_ms: end,
            parameters: serde_json::json!({"magnitude": 10}),
        }
    }

    #[test]
    fn later_lines_supersede_and_ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = Annotations::open(dir.path()).unwrap();
        let (i1, i2) = (a.next_id(), a.next_id());
        a.record(&ann(i1, "d1", None)).unwrap();
        a.record(&ann(i2, "d2", Some(5000))).unwrap();
        a.record(&ann(i1, "d1", Some(4000))).unwrap();
        let all = a.list(None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].end_ms, Some(4000));
        assert_eq!(a.list(Some("d2")).unwrap().len(), 1);
        drop(a);
        // A torn tail is skipped, and ids continue after the highest one.
        let p = dir.path().join("annotations/annotations.jsonl");
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"{\"id\": 9, \"dev").unwrap();
        let a = Annotations::open(dir.path()).unwrap();
        assert_eq!(a.list(None).unwrap().len(), 2);
        assert_eq!(a.next_id(), i2 + 1);
        // The torn line was cut, so the next line is readable.
        a.record(&ann(a.next_id(), "d3", None)).unwrap();
        assert_eq!(a.list(None).unwrap().len(), 3);
    }

    /// Every write or fsync of an annotation failing in turn: the failed one is not there, every
    /// one recorded before and after is.
    #[test]
    fn failed_appends_leave_no_trace() {
        use crate::fs::{Fault, FaultyFs, OpKind};
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let a = Annotations::open_with(fs.handle(), dir.path()).unwrap();
        let mut recorded = Vec::new();
        for (i, (kind, fault)) in [
            (OpKind::Write, Fault::ShortWrite),
            (OpKind::Write, Fault::NoSpace),
            (OpKind::Sync, Fault::Io),
        ]
        .into_iter()
        .enumerate()
        {
            let id = a.next_id();
            a.record(&ann(id, "ok", None)).unwrap();
            recorded.push(id);
            fs.fail_nth(kind, 0, fault);
            if i == 2 {
                fs.fail_nth(OpKind::SetLen, 0, Fault::Io); // and the cut-back fails too
            }
            assert!(a.record(&ann(a.next_id(), "lost", None)).is_err());
        }
        let id = a.next_id();
        a.record(&ann(id, "ok", None)).unwrap();
        recorded.push(id);
        drop(a);
        let a = Annotations::open(dir.path()).unwrap();
        let ids: Vec<u64> = a.list(None).unwrap().iter().map(|a| a.id).collect();
        assert_eq!(ids, recorded);
    }
}
