//! A SHA3-256 hash-chained audit log in JSON lines.
//!
//! Why it exists: every state change of the proof tooling (prepare, export, registry add, key
//! rotation, …) is appended as one line; each line carries the hash of the previous one, so
//! deleting, reordering or editing any line breaks the chain at a line `audit verify` names.
//! Line = JCS of `{seq, ts, event, details, prev, hash}` where
//! `hash = SHA3-256(JCS({seq, ts, event, details, prev}))` in hex and the first `prev` is 64 zeros.

use crate::canon;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha3::{Digest, Sha3_256};
use std::io::Write;
use std::path::Path;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: u64,
    pub ts: String,
    pub event: String,
    pub details: Value,
    pub prev: String,
    pub hash: String,
}

#[derive(Serialize)]
struct Unhashed<'a> {
    seq: u64,
    ts: &'a str,
    event: &'a str,
    details: &'a Value,
    prev: &'a str,
}

/// Why the audit log could not be read, verified or appended to.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    File(#[from] crate::FileError),
    /// The chain is broken at a line (`path:line: what`): the log was edited.
    #[error("{0}")]
    Broken(String),
    #[error(transparent)]
    Canon(#[from] canon::CanonError),
}

fn entry_hash(e: &AuditEntry) -> Result<String, AuditError> {
    let u = Unhashed {
        seq: e.seq,
        ts: &e.ts,
        event: &e.event,
        details: &e.details,
        prev: &e.prev,
    };
    Ok(hex::encode(Sha3_256::digest(canon::canonical(&u)?)))
}

/// Verify the whole log; returns the last entry (None when empty).
pub fn verify(path: &Path) -> Result<Option<AuditEntry>, AuditError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::FileError::new(path, e).into()),
    };
    let mut prev = GENESIS.to_string();
    let mut last = None;
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| AuditError::Broken(format!("{}:{}: {m}", path.display(), i + 1));
        if !canon::is_canonical(line.as_bytes()) {
            return Err(at("line is not canonical JSON (edited?)"));
        }
        let e: AuditEntry = serde_json::from_str(line).map_err(|x| at(&x.to_string()))?;
        if e.seq != i as u64 {
            return Err(at(&format!(
                "seq {} where {i} was expected (line removed or reordered)",
                e.seq
            )));
        }
        if e.prev != prev {
            return Err(at(
                "prev does not match the previous line's hash (chain broken)",
            ));
        }
        if entry_hash(&e)? != e.hash {
            return Err(at("hash does not match the line's content (edited)"));
        }
        prev = e.hash.clone();
        last = Some(e);
    }
    Ok(last)
}

/// Append an event after verifying the chain so far.
pub fn append(path: &Path, event: &str, details: Value) -> Result<AuditEntry, AuditError> {
    let last = verify(path)?;
    let mut e = AuditEntry {
        seq: last.as_ref().map_or(0, |l| l.seq + 1),
        ts: crate::now_rfc3339(),
        event: event.into(),
        details,
        prev: last.map_or(GENESIS.to_string(), |l| l.hash),
        hash: String::new(),
    };
    e.hash = entry_hash(&e)?;
    let mut line = canon::canonical(&e)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| crate::FileError::new(path, e))?;
    f.write_all(&line)
        .and_then(|_| f.sync_data())
        .map_err(|e| crate::FileError::new(path, e))?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_verifies_and_any_edit_is_located() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        for i in 0..5 {
            append(&p, "test", serde_json::json!({"i": i})).unwrap();
        }
        assert_eq!(verify(&p).unwrap().unwrap().seq, 4);
        let good = std::fs::read_to_string(&p).unwrap();
        let edited = good.replacen("{\"i\":2}", "{\"i\":7}", 1);
        std::fs::write(&p, &edited).unwrap();
        assert!(verify(&p).unwrap_err().to_string().contains(":3:"));
        let lines: Vec<&str> = good.lines().collect();
        std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(verify(&p).unwrap_err().to_string().contains(":2:"));
    }
}
