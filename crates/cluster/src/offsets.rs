//! Where this replica resumes each partition of the log: the newest stream sequence whose
//! message is durable in its store, per partition, in `<data_dir>/cluster/offsets.json`.
//!
//! Why no fsync: an offset only says where to resume. It is written after the store made the
//! batch durable, so it is never ahead of the data; if it is behind (or lost), the replica
//! reads some messages again, and the store keeps one point per series and time (a re-read
//! replaces, it does not add). The file also names the stream it counts in (its creation
//! time): offsets of a stream that was deleted and created again mean nothing, and are reset.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Offsets {
    /// The stream's creation time (RFC 3339) these offsets count in.
    pub stream_created: String,
    /// Partition -> newest durable stream sequence.
    pub committed: BTreeMap<u32, u64>,
}

impl Offsets {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("cluster").join("offsets.json")
    }

    /// The offsets of `stream_created`'s stream; empty if none were saved, they were written
    /// for another stream, or the file is unreadable (a full re-read is safe).
    pub fn load(data_dir: &Path, stream_created: &str) -> Offsets {
        let fresh = Offsets {
            stream_created: stream_created.to_string(),
            committed: BTreeMap::new(),
        };
        let Ok(text) = std::fs::read(Self::path(data_dir)) else {
            return fresh;
        };
        match serde_json::from_slice::<Offsets>(&text) {
            Ok(o) if o.stream_created == stream_created => o,
            Ok(_) => {
                tracing::warn!(
                    "the NATS stream was created anew since this replica last ran; reading every partition it owns from the start"
                );
                fresh
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable cluster/offsets.json; reading every partition it owns from the start");
                fresh
            }
        }
    }

    /// Write (temp file + rename, so a reader sees the old or the new file, never a torn one).
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let path = Self::path(data_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).expect("offsets serialize"))?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::Offsets;

    #[test]
    fn offsets_survive_a_restart_and_reset_for_a_new_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Offsets::load(dir.path(), "t1");
        assert!(o.committed.is_empty());
        o.committed.insert(3, 42);
        o.save(dir.path()).unwrap();
        assert_eq!(Offsets::load(dir.path(), "t1").committed.get(&3), Some(&42));
        assert!(Offsets::load(dir.path(), "t2").committed.is_empty());
        std::fs::write(Offsets::path(dir.path()), b"{torn").unwrap();
        assert!(Offsets::load(dir.path(), "t1").committed.is_empty());
    }
}
