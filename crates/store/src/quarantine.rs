//! Quarantine: where payloads that could not be parsed go, with their topic, bytes and reason.
//!
//! Upstream dropped invalid data into a debug log; fieldlab keeps every rejected message so
//! that it can be inspected, fixed and replayed. Entries are JSON lines in
//! `<data_dir>/quarantine/quarantine.jsonl`, fsynced before the message is acknowledged.

use base64::Engine;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuarantineEntry {
    pub id: u64,
    /// Time of receipt, RFC 3339.
    pub received_at: String,
    pub topic: String,
    pub reason: String,
    /// The exact bytes received, base64.
    pub payload_base64: String,
    /// The payload as text, when it is UTF-8 (cut at 4 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
}

pub struct Quarantine {
    path: PathBuf,
    state: Mutex<(File, u64)>,
}

impl Quarantine {
    pub fn open(data_dir: &Path) -> io::Result<Quarantine> {
        let dir = data_dir.join("quarantine");
        fs::create_dir_all(&dir)?;
        let path = dir.join("quarantine.jsonl");
        let next_id = if path.exists() {
            BufReader::new(File::open(&path)?).lines().count() as u64 + 1
        } else {
            1
        };
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Quarantine {
            path,
            state: Mutex::new((file, next_id)),
        })
    }

    /// Append entries and fsync. Returns their ids.
    pub fn append(
        &self,
        items: &[(String, Vec<u8>, String)],
        received_at: &str,
    ) -> io::Result<Vec<u64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.state.lock();
        let mut buf = Vec::new();
        let mut ids = Vec::with_capacity(items.len());
        for (topic, payload, reason) in items {
            let id = st.1;
            st.1 += 1;
            ids.push(id);
            let text = std::str::from_utf8(payload).ok().map(|s| {
                let mut end = s.len().min(4096);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_string()
            });
            let e = QuarantineEntry {
                id,
                received_at: received_at.to_string(),
                topic: topic.clone(),
                reason: reason.clone(),
                payload_base64: base64::engine::general_purpose::STANDARD.encode(payload),
                payload_text: text,
            };
            serde_json::to_writer(&mut buf, &e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        st.0.write_all(&buf)?;
        st.0.sync_data()?;
        Ok(ids)
    }

    /// The newest `limit` entries, newest first, skipping `offset`.
    pub fn list(&self, limit: usize, offset: usize) -> io::Result<(Vec<QuarantineEntry>, u64)> {
        let _guard = self.state.lock();
        let mut all = Vec::new();
        for line in BufReader::new(File::open(&self.path)?).lines() {
            let line = line?;
            if let Ok(e) = serde_json::from_str::<QuarantineEntry>(&line) {
                all.push(e);
            }
        }
        let total = all.len() as u64;
        Ok((
            all.into_iter().rev().skip(offset).take(limit).collect(),
            total,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_and_reason_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(dir.path()).unwrap();
        let ids = q
            .append(
                &[
                    (
                        "devices/a/b/telemetry".into(),
                        b"not json".to_vec(),
                        "invalid JSON".into(),
                    ),
                    ("x".into(), vec![0xff, 0xfe], "not UTF-8".into()),
                ],
                "2026-01-01T00:00:00Z",
            )
            .unwrap();
        assert_eq!(ids, vec![1, 2]);
        drop(q);
        let q = Quarantine::open(dir.path()).unwrap();
        let (list, total) = q.list(10, 0).unwrap();
        assert_eq!(total, 2);
        assert_eq!(list[0].id, 2);
        assert_eq!(list[0].payload_text, None);
        assert_eq!(list[0].payload_base64, "//4=");
        assert_eq!(list[1].payload_text.as_deref(), Some("not json"));
        assert_eq!(
            q.append(&[("t".into(), vec![], "empty".into())], "now")
                .unwrap(),
            vec![3]
        );
    }
}
