//! fieldlab-attest: proofs about data that an auditor checks offline.
//!
//! Why it exists: compliance teams must prove facts about records (a supplier list under the
//! LkSG, "the cold chain stayed between 2 and 8 °C") without handing the records over, and an
//! auditor must be able to check such a proof with nothing but the file. The pieces, each in
//! its own module:
//!
//! - [`merkle`]: RFC 6962 trees, inclusion and consistency proofs;
//! - [`canon`]: RFC 8785 canonical JSON — the only encoding that is hashed or signed;
//! - [`sign`]: Ed25519 keys, key ids, signatures with a context;
//! - [`records`]: CSV/JSON records -> commitments (`cap prepare`);
//! - [`policy`]: policy YAML -> lint findings and a hashed IR;
//! - [`proof`]: manifests, rule evaluation with evidence, proof verification;
//! - [`bundle`]: signed zip bundles and the offline verifier; [`dsse`]: their v2 signature (DSSE over in-toto);
//! - [`keyring`]: key life cycle (keygen, rotate, revoke, attestations);
//! - [`registry`], [`note`]: transparency log in SQLite with C2SP checkpoints, blob store;
//! - [`audit`]: SHA3-256 hash-chained audit log;
//! - [`series`]: telemetry attestation ("every point of S in [a, b] during T");
//! - [`trust`]: the pinned signers of a verification (key files, keyring files);
//!
//! Architecture invariant: everything hashed or signed goes through [`canon`]; verification
//! needs no network and no fieldlab state.

pub mod audit;
pub mod bundle;
pub mod canon;
pub mod dsse;
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod proof;
pub mod records;
pub mod registry;
pub mod series;
pub mod sign;
pub mod trust;

pub use merkle::{inclusion_proof, leaf_hash, node_hash, root, verify_inclusion, Hash};

use std::path::Path;

/// Now, as RFC 3339 UTC with milliseconds (the form of every `created` field).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A file that could not be read, written or parsed: its path and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct FileError {
    pub path: String,
    pub msg: String,
}

impl FileError {
    pub fn new(path: &Path, msg: impl std::fmt::Display) -> FileError {
        FileError {
            path: path.display().to_string(),
            msg: msg.to_string(),
        }
    }
}

/// Write a value as pretty JSON (for files people read; hashed files are written canonically).
pub fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<(), FileError> {
    let mut body = serde_json::to_vec_pretty(v).map_err(|e| FileError::new(path, e))?;
    body.push(b'\n');
    std::fs::write(path, body).map_err(|e| FileError::new(path, e))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = std::fs::read(path).map_err(|e| FileError::new(path, e))?;
    serde_json::from_slice(&text).map_err(|e| FileError::new(path, e))
}

#[cfg(test)]
mod tests;
