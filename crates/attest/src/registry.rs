//! Registry proofs and checkpoints, as an auditor checks them: the pure part of the
//! transparency registry (no database). The log itself — SQLite, the blob store, signing new
//! checkpoints — is the `fieldlab-registry` crate.
//!
//! Why it exists apart: a verifier of bundles and registry proofs needs the proof format and
//! its checks, not a database; keeping them here keeps `fieldlab-attest` pure (files in,
//! verdicts out).

use crate::canon::{self, hex32};
use crate::merkle::{self, Hash};
use crate::note;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const ORIGIN_PREFIX: &str = "fieldlab.registry";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub leaf_hash: String,
    pub body: Value,
}

/// An inclusion or consistency proof, with the signed checkpoint it refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryProof {
    pub kind: String,
    /// Inclusion: the entry and its index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Value>,
    /// Consistency: the earlier size and root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_root: Option<String>,
    pub size: u64,
    pub root: String,
    pub proof: Vec<String>,
    /// The signed checkpoint of `size` (C2SP signed note).
    pub checkpoint: String,
    /// The verifier key of the checkpoint signer.
    pub vkey: String,
}

/// The keys to try for a signed checkpoint: the one the file names (`own`, e.g. a proof's
/// `vkey`) and the pinned ones. With keys pinned, a file naming another key is refused (it was
/// signed by a log nobody trusts, or its `vkey` was changed); without, only the named key.
fn checkpoint_keys(
    own: Option<&str>,
    pinned: &[String],
) -> Result<Vec<String>, RegistryProofError> {
    let canonical = |k: &str| {
        note::parse_vkey(k)
            .map(|(n, pk)| note::vkey(&n, &pk))
            .map_err(RegistryProofError::Vkey)
    };
    match (own, pinned.is_empty()) {
        (Some(o), true) => Ok(vec![canonical(o)?]),
        (Some(o), false) => {
            let o = canonical(o)?;
            if pinned.contains(&o) {
                Ok(vec![o])
            } else {
                Err(RegistryProofError::NotPinned {
                    key: o,
                    pinned: pinned.join(", "),
                })
            }
        }
        (None, false) => Ok(pinned.to_vec()),
        (None, true) => Err(RegistryProofError::NoKey),
    }
}

/// Why a registry proof or checkpoint was refused. The signer's key is the caller's to judge
/// (`NotPinned`, `NoKey`: pin another key); the rest are a bad file or a failed proof.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryProofError {
    #[error("vkey: {0}")]
    Vkey(note::NoteError),
    #[error("the file names log key {key}, which is not pinned (pinned: {pinned}); it was signed by another log, or its vkey was changed. Pin that log's key only if you trust it")]
    NotPinned { key: String, pinned: String },
    #[error("the checkpoint names no verifier key: pin the log's key with --vkey KEY (`cap registry inspect` prints it) or --trust KEYRING")]
    NoKey,
    /// The checkpoint's signature (under every key tried; the last one's error).
    #[error("checkpoint: {0}")]
    Signature(note::NoteError),
    /// A signed checkpoint whose text is not a checkpoint.
    #[error("{0}")]
    Checkpoint(note::NoteError),
    /// The proof is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The proof is well-formed and does not prove its claim (or not against its checkpoint).
    #[error("{0}")]
    Fails(String),
}

/// A signed checkpoint that verified: its text, and the verifier key that signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub vkey: String,
}

/// Verify a C2SP checkpoint note (strictly, docs/formats.md §8) under the key the file names
/// (`own`, e.g. a proof's `vkey`) and/or the pinned keys. With keys pinned, a file naming
/// another key is refused; without, only the named key is tried.
pub fn verify_checkpoint(
    checkpoint: &str,
    own: Option<&str>,
    pinned: &[String],
) -> Result<VerifiedCheckpoint, RegistryProofError> {
    let mut last = None;
    for k in checkpoint_keys(own, pinned)? {
        match note::open(checkpoint, &k) {
            Ok(text) => {
                let (origin, size, root) =
                    note::parse_checkpoint(&text).map_err(RegistryProofError::Checkpoint)?;
                return Ok(VerifiedCheckpoint {
                    origin,
                    size,
                    root,
                    vkey: k,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(RegistryProofError::Signature(last.unwrap_or_else(|| {
        note::NoteError::Malformed(String::new())
    })))
}

/// A checkpoint as `GET /registry/checkpoint` returns it (the note and its verifier key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointFile {
    pub checkpoint: String,
    pub vkey: Option<String>,
    pub size: Option<u64>,
}

impl RegistryProof {
    /// Verify offline. `pinned`: the log keys to trust; the proof's own `vkey` must be one of
    /// them (a different one is a failure, not ignored). Without pinned keys the proof's `vkey`
    /// is used, which shows only internal consistency (the caller must say so). The message
    /// names the key that signed.
    pub fn verify(&self, pinned: &[String]) -> Result<String, RegistryProofError> {
        let cp = verify_checkpoint(&self.checkpoint, Some(&self.vkey), pinned)?;
        self.verify_against(&cp)
            .map(|m| format!("{m}; checkpoint signed by log key {}", cp.vkey))
    }

    fn verify_against(&self, cp: &VerifiedCheckpoint) -> Result<String, RegistryProofError> {
        use RegistryProofError::{Fails, Malformed};
        let malformed = |m: &str| Malformed(m.to_string());
        let (size, root) = (cp.size, cp.root);
        if size != self.size || hex32(&root) != self.root {
            return Err(Fails(
                "proof's size/root differ from its signed checkpoint".into(),
            ));
        }
        let path: Option<Vec<Hash>> = self.proof.iter().map(|h| canon::parse_hex32(h)).collect();
        let path = path.ok_or_else(|| malformed("malformed hash in proof"))?;
        match self.kind.as_str() {
            "inclusion" => {
                let e = (self.entry.as_ref())
                    .ok_or_else(|| malformed("inclusion proof without entry"))?;
                let i = (self.index).ok_or_else(|| malformed("inclusion proof without index"))?;
                let leaf =
                    merkle::leaf_hash(&canon::canonical(e).map_err(|e| Malformed(e.to_string()))?);
                merkle::verify_inclusion(&leaf, i, size, &path, &root)
                    .then(|| format!("entry {i} is in the log of size {size}"))
                    .ok_or_else(|| Fails(format!("entry {i} is NOT in the log of size {size}")))
            }
            "consistency" => {
                let m = (self.old_size)
                    .ok_or_else(|| malformed("consistency proof without old_size"))?;
                let r1 = self
                    .old_root
                    .as_deref()
                    .and_then(canon::parse_hex32)
                    .ok_or_else(|| malformed("bad old_root"))?;
                merkle::verify_consistency(m, size, &path, &r1, &root)
                    .then(|| format!("the log of size {size} extends the log of size {m}"))
                    .ok_or_else(|| {
                        Fails(format!(
                            "the log of size {size} does NOT extend the one of size {m}"
                        ))
                    })
            }
            k => Err(Malformed(format!("unknown proof kind `{k}`"))),
        }
    }
}
