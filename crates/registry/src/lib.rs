//! fieldlab-registry: the transparency registry — an append-only log in SQLite with an RFC
//! 6962 tree over its entries, signed checkpoints (C2SP signed notes), inclusion and
//! consistency proofs; and the content-addressed blob store with reference counts that holds
//! the registered files.
//!
//! Why it exists: an auditor who received a bundle wants to know it was published and that the
//! publisher cannot later show a different history. Each `add` appends an entry (JCS of what
//! was registered, leaf = SHA-256(0x00 || entry)), stores the file once by its SHA-256, and
//! signs a new checkpoint; any earlier checkpoint is provably a prefix of any later one.
//! Layout of the data directory: `registry.db`, `blobs/sha256/<2 hex>/<64 hex>`, `audit.jsonl`,
//! `keys/` (the registry's signing key is the keyring key named `registry`).
//!
//! Architecture invariant: the proof format and its verification live in
//! `fieldlab_attest::registry` (pure); this crate is the only one that opens the registry's
//! database.

use fieldlab_attest::canon::{self, hex32};
use fieldlab_attest::keyring::Keyring;
use fieldlab_attest::merkle::{self, Hash};
use fieldlab_attest::note;
pub use fieldlab_attest::registry::{
    verify_checkpoint, CheckpointFile, Entry, RegistryProof, VerifiedCheckpoint, ORIGIN_PREFIX,
};
use fieldlab_attest::sign::KeyPair;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a registry operation failed. `NotFound`: the entry or tree size asked for is not in
/// the log (the verifier API answers 404); `Failed`: the database, a file, a key, or the log's
/// own check (`verify_all`).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for RegistryError {
    fn from(m: String) -> RegistryError {
        RegistryError::Failed(m)
    }
}

fn failed(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Failed(e.to_string())
}

fn db_err(e: rusqlite::Error) -> RegistryError {
    RegistryError::Failed(format!("registry database: {e}"))
}

/// Content-addressed files with reference counts.
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.dir.join("sha256").join(&hash[..2]).join(hash)
    }

    /// Store `bytes` (once) and add a reference; returns the SHA-256 hex.
    pub fn put(&self, db: &Connection, bytes: &[u8]) -> Result<String, RegistryError> {
        let h = hex32(&canon::sha256(bytes));
        let p = self.path_of(&h);
        if !p.exists() {
            std::fs::create_dir_all(p.parent().unwrap()).map_err(failed)?;
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::rename(&tmp, &p))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        db.execute("INSERT INTO blobs(hash, size, refs) VALUES (?1, ?2, 1) ON CONFLICT(hash) DO UPDATE SET refs = refs + 1",
            params![h, bytes.len() as i64]).map_err(db_err)?;
        Ok(h)
    }

    /// Read a blob and check it still has its hash.
    pub fn get(&self, hash: &str) -> Result<Vec<u8>, RegistryError> {
        let p = self.path_of(hash);
        let b = std::fs::read(&p).map_err(|e| format!("blob {hash}: {e}"))?;
        if hex32(&canon::sha256(&b)) != hash {
            return Err(RegistryError::Failed(format!(
                "blob {hash} is corrupt (content hash differs)"
            )));
        }
        Ok(b)
    }

    pub fn release(&self, db: &Connection, hash: &str) -> Result<i64, RegistryError> {
        let n = db
            .execute(
                "UPDATE blobs SET refs = refs - 1 WHERE hash = ?1 AND refs > 0",
                params![hash],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(RegistryError::Failed(format!(
                "blob {hash} is not referenced"
            )));
        }
        db.query_row(
            "SELECT refs FROM blobs WHERE hash = ?1",
            params![hash],
            |r| r.get(0),
        )
        .map_err(db_err)
    }

    /// Delete blobs without references and files the index does not know; returns (files, bytes).
    pub fn gc(&self, db: &Connection) -> Result<(u64, u64), RegistryError> {
        let mut dead: Vec<String> = Vec::new();
        {
            let mut st = db
                .prepare("SELECT hash FROM blobs WHERE refs <= 0")
                .map_err(db_err)?;
            for h in st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(db_err)?
            {
                dead.push(h.map_err(db_err)?);
            }
        }
        let (mut files, mut bytes) = (0, 0);
        for h in &dead {
            let p = self.path_of(h);
            if let Ok(m) = std::fs::metadata(&p) {
                bytes += m.len();
                std::fs::remove_file(&p).map_err(failed)?;
                files += 1;
            }
            db.execute("DELETE FROM blobs WHERE hash = ?1", params![h])
                .map_err(db_err)?;
        }
        // Orphans: files with no index row (e.g. a crash between write and insert).
        let root = self.dir.join("sha256");
        for d in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                let known: Option<i64> = db
                    .query_row(
                        "SELECT refs FROM blobs WHERE hash = ?1",
                        params![name],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_err)?;
                if known.is_none() {
                    bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                    let _ = std::fs::remove_file(f.path());
                    files += 1;
                }
            }
        }
        Ok((files, bytes))
    }
}

pub struct Registry {
    pub dir: PathBuf,
    db: Connection,
    pub blobs: BlobStore,
    key: KeyPair,
    pub origin: String,
}

impl Registry {
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let db = Connection::open(dir.join("registry.db")).map_err(db_err)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS entries(idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS blobs(hash TEXT PRIMARY KEY, size INTEGER NOT NULL, refs INTEGER NOT NULL);
             CREATE TRIGGER IF NOT EXISTS entries_append_only_u BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
             CREATE TRIGGER IF NOT EXISTS entries_append_only_d BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;",
        ).map_err(db_err)?;
        let kr = Keyring::open(dir.join("keys")).map_err(failed)?;
        let key = match kr.find("registry") {
            Ok(_) => kr.load("registry"),
            Err(_) => kr.keygen(Some("registry".into())),
        }
        .map_err(failed)?;
        let origin = format!("{ORIGIN_PREFIX}/{}", key.kid());
        Ok(Registry {
            dir: dir.into(),
            db,
            blobs: BlobStore {
                dir: dir.join("blobs"),
            },
            key,
            origin,
        })
    }

    pub fn db(&self) -> &Connection {
        &self.db
    }

    pub fn vkey(&self) -> String {
        note::vkey(&self.origin, &self.key.public())
    }

    pub fn audit(&self, event: &str, details: Value) -> Result<(), RegistryError> {
        fieldlab_attest::audit::append(&self.dir.join("audit.jsonl"), event, details)
            .map(|_| ())
            .map_err(failed)
    }

    fn leaves(&self, upto: u64) -> Result<Vec<Hash>, RegistryError> {
        let mut st = self
            .db
            .prepare("SELECT leaf FROM entries WHERE idx < ?1 ORDER BY idx")
            .map_err(db_err)?;
        let rows = st
            .query_map(params![upto as i64], |r| r.get::<_, Vec<u8>>(0))
            .map_err(db_err)?;
        rows.map(|r| {
            r.map_err(db_err).and_then(|v| {
                v.try_into()
                    .map_err(|_| RegistryError::Failed("corrupt leaf".into()))
            })
        })
        .collect()
    }

    pub fn size(&self) -> Result<u64, RegistryError> {
        self.db
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db_err)
    }

    /// Register a file: store it as a blob, append an entry, sign a checkpoint.
    pub fn add(
        &mut self,
        name: &str,
        bytes: &[u8],
        extra: Value,
    ) -> Result<(Entry, String), RegistryError> {
        let tx = self.db.transaction().map_err(db_err)?;
        let hash = self.blobs.put(&tx, bytes)?;
        let idx: i64 = tx
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .map_err(db_err)?;
        let body = serde_json::json!({"name": name, "sha256": hash, "size": bytes.len(), "added": fieldlab_attest::now_rfc3339(), "meta": extra});
        let enc = canon::canonical(&body).map_err(failed)?;
        let leaf = merkle::leaf_hash(&enc);
        tx.execute(
            "INSERT INTO entries(idx, leaf, body) VALUES (?1, ?2, ?3)",
            params![idx, leaf.to_vec(), String::from_utf8(enc).unwrap()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        let note = self.checkpoint()?;
        self.audit(
            "registry.add",
            serde_json::json!({"index": idx, "name": name, "sha256": hash}),
        )?;
        Ok((
            Entry {
                index: idx as u64,
                leaf_hash: hex32(&leaf),
                body,
            },
            note,
        ))
    }

    /// Sign and store a checkpoint of the current tree.
    pub fn checkpoint(&self) -> Result<String, RegistryError> {
        let n = self.size()?;
        let root = merkle::root(&self.leaves(n)?);
        let note = note::sign(
            &note::checkpoint_text(&self.origin, n, &root),
            &self.origin,
            &self.key,
        );
        self.db
            .execute(
                "INSERT OR REPLACE INTO checkpoints(size, root, note) VALUES (?1, ?2, ?3)",
                params![n as i64, root.to_vec(), note],
            )
            .map_err(db_err)?;
        Ok(note)
    }

    fn checkpoint_of(&self, size: u64) -> Result<String, RegistryError> {
        self.db
            .query_row(
                "SELECT note FROM checkpoints WHERE size = ?1",
                params![size as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?
            .ok_or_else(|| RegistryError::Failed(format!("no signed checkpoint of size {size}")))
    }

    pub fn latest_checkpoint(&self) -> Result<String, RegistryError> {
        let n = self.size()?;
        self.checkpoint_of(n).or_else(|_| self.checkpoint())
    }

    pub fn list(&self, offset: u64, limit: u64) -> Result<Vec<Entry>, RegistryError> {
        let mut st = self
            .db
            .prepare("SELECT idx, leaf, body FROM entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2")
            .map_err(db_err)?;
        let rows = st
            .query_map(params![offset as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (i, l, b) = row.map_err(db_err)?;
            out.push(Entry {
                index: i as u64,
                leaf_hash: hex::encode(l),
                body: serde_json::from_str(&b).map_err(failed)?,
            });
        }
        Ok(out)
    }

    pub fn get(&self, index: u64) -> Result<Entry, RegistryError> {
        self.list(index, 1)?.into_iter().next().ok_or_else(|| {
            RegistryError::NotFound(format!(
                "no entry {index} (the log has {} entries)",
                self.size().unwrap_or(0)
            ))
        })
    }

    /// Inclusion proof of entry `index` in the latest tree.
    pub fn prove_inclusion(&self, index: u64) -> Result<RegistryProof, RegistryError> {
        let e = self.get(index)?;
        let n = self.size()?;
        let leaves = self.leaves(n)?;
        Ok(RegistryProof {
            kind: "inclusion".into(),
            index: Some(index),
            entry: Some(e.body),
            old_size: None,
            old_root: None,
            size: n,
            root: hex32(&merkle::root(&leaves)),
            proof: merkle::inclusion_proof(&leaves, index as usize)
                .iter()
                .map(hex32)
                .collect(),
            checkpoint: self.latest_checkpoint()?,
            vkey: self.vkey(),
        })
    }

    /// Consistency proof from the tree of `old` entries to the latest.
    pub fn prove_consistency(&self, old: u64) -> Result<RegistryProof, RegistryError> {
        let n = self.size()?;
        if old > n {
            return Err(RegistryError::NotFound(format!(
                "the log has only {n} entries"
            )));
        }
        let leaves = self.leaves(n)?;
        Ok(RegistryProof {
            kind: "consistency".into(),
            index: None,
            entry: None,
            old_size: Some(old),
            old_root: Some(hex32(&merkle::root(&leaves[..old as usize]))),
            size: n,
            root: hex32(&merkle::root(&leaves)),
            proof: merkle::consistency_proof(&leaves, old as usize)
                .iter()
                .map(hex32)
                .collect(),
            checkpoint: self.latest_checkpoint()?,
            vkey: self.vkey(),
        })
    }

    /// Re-check the whole log: every leaf against its entry, every stored checkpoint's signature
    /// and root, and that each is a prefix of the latest; every blob against its hash.
    pub fn verify_all(&self) -> Result<String, RegistryError> {
        let n = self.size()?;
        let entries = self.list(0, n)?;
        let mut leaves = Vec::with_capacity(entries.len());
        for e in &entries {
            let l = merkle::leaf_hash(&canon::canonical(&e.body).map_err(failed)?);
            if hex32(&l) != e.leaf_hash {
                return Err(RegistryError::Failed(format!(
                    "entry {}: stored leaf hash does not match its body",
                    e.index
                )));
            }
            if let Some(h) = e.body.get("sha256").and_then(Value::as_str) {
                self.blobs
                    .get(h)
                    .map_err(|m| format!("entry {}: {m}", e.index))?;
            }
            leaves.push(l);
        }
        let mut st = self
            .db
            .prepare("SELECT size, note FROM checkpoints ORDER BY size")
            .map_err(db_err)?;
        let cps: Vec<(i64, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)?;
        let vk = self.vkey();
        for (size, note_text) in &cps {
            let text = note::open(note_text, &vk).map_err(|m| format!("checkpoint {size}: {m}"))?;
            let (_, s, root) = note::parse_checkpoint(&text).map_err(failed)?;
            if s as i64 != *size || s > n || merkle::root(&leaves[..s as usize]) != root {
                return Err(RegistryError::Failed(format!(
                    "checkpoint {size} does not match the entries (history rewritten?)"
                )));
            }
        }
        fieldlab_attest::audit::verify(&self.dir.join("audit.jsonl")).map_err(failed)?;
        Ok(format!(
            "{n} entries, {} signed checkpoints, blobs and audit log verified; root {}",
            cps.len(),
            hex32(&merkle::root(&leaves))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_prove_verify_and_blob_refcounts() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Registry::open(d.path()).unwrap();
        for i in 0..6 {
            r.add(
                &format!("f{i}"),
                format!("content {}", i % 3).as_bytes(),
                Value::Null,
            )
            .unwrap();
        }
        let p = r.prove_inclusion(4).unwrap();
        p.verify(&[r.vkey()]).unwrap();
        let c = r.prove_consistency(3).unwrap();
        c.verify(&[r.vkey()]).unwrap();
        let mut bad = p.clone();
        bad.entry.as_mut().unwrap()["name"] = "forged".into();
        assert!(bad.verify(&[]).is_err());
        let mut bad = c.clone();
        bad.old_root = Some(hex32(&[7u8; 32]));
        assert!(bad.verify(&[]).is_err());
        r.verify_all().unwrap();
        // The log refuses in-place edits.
        assert!(r
            .db()
            .execute("UPDATE entries SET body = '{}' WHERE idx = 0", [])
            .is_err());
        // Three distinct blobs, each referenced twice; release and gc.
        let h = r.get(0).unwrap().body["sha256"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(r.blobs.release(r.db(), &h).unwrap(), 1);
        assert_eq!(r.blobs.gc(r.db()).unwrap().0, 0);
        assert_eq!(r.blobs.release(r.db(), &h).unwrap(), 0);
        assert_eq!(r.blobs.gc(r.db()).unwrap().0, 1);
        assert!(r.verify_all().unwrap_err().to_string().contains("entry 0"));
        // Reopen: same key and origin.
        let origin = r.origin.clone();
        drop(r);
        assert_eq!(Registry::open(d.path()).unwrap().origin, origin);
    }

    /// With a log key pinned, a proof whose own `vkey` names another key is a failure (it was
    /// ignored before); several pinned keys: any of them; the message names the signer.
    #[test]
    fn a_pinned_log_key_and_the_proofs_own_vkey_must_agree() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Registry::open(d.path()).unwrap();
        r.add("f", b"content", Value::Null).unwrap();
        let p = r.prove_inclusion(0).unwrap();
        let other = note::vkey(
            "fieldlab.registry/other",
            &KeyPair::generate(None).unwrap().public(),
        );
        let m = p.verify(&[other.clone(), r.vkey()]).unwrap();
        assert!(
            m.contains(&format!("signed by log key {}", r.vkey())),
            "{m}"
        );
        let err = p
            .verify(std::slice::from_ref(&other))
            .unwrap_err()
            .to_string();
        assert!(err.contains("which is not pinned"), "{err}");
        // The proof's vkey swapped for the other key: refused whatever is pinned.
        let mut swapped = p.clone();
        swapped.vkey = other.clone();
        assert!(swapped
            .verify(&[r.vkey()])
            .unwrap_err()
            .to_string()
            .contains("not pinned"));
        assert!(swapped.verify(std::slice::from_ref(&other)).is_err());
        // A bare checkpoint: any pinned key that signed it; none pinned and none named: refused.
        let cp = r.latest_checkpoint().unwrap();
        let v = verify_checkpoint(&cp, None, &[other.clone(), r.vkey()]).unwrap();
        assert_eq!((v.size, v.vkey.as_str()), (1, r.vkey().as_str()));
        assert!(verify_checkpoint(&cp, None, std::slice::from_ref(&other)).is_err());
        assert!(verify_checkpoint(&cp, None, &[])
            .unwrap_err()
            .to_string()
            .contains("--vkey"));
    }
}
