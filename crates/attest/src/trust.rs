//! Pinned signers: the keys a verifier accepts, read from key files and keyring files.
//!
//! Why it exists: a valid signature proves only that *some* key signed. A verifier pins the
//! signers it trusts, and often more than one (a key and its successor after a rotation, the
//! exporters of several sites, the keys of several logs), then says which of them signed.
//! Bundle signers and log (checkpoint) keys are pinned the same way: `--trust FILE` any number
//! of times, where FILE is one key file or a keyring file with one key per line (docs/formats.md
//! §6 and §8).

use crate::note;
use crate::sign::{kid, unb64, PublicKeyFile, PUBLIC_FORMAT};
use std::path::{Path, PathBuf};

/// The keys of a keyring file: one per line, `#` starts a comment, blank lines are skipped.
/// Returns (line number, key text).
pub fn keyring_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// Why the pinned signers, log keys or policies could not be loaded: a file that cannot be
/// read, a key file that is not one, or a line or flag that is not a key or hash (named with
/// its file and line or flag).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    File(#[from] crate::FileError),
    #[error(transparent)]
    KeyFile(#[from] crate::sign::KeyError),
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<String, TrustError> {
    Ok(std::fs::read_to_string(path).map_err(|e| crate::FileError::new(path, e))?)
}

/// The policies to trust: hashes given one by one (`--policy-hash`) and policy list files (one
/// hex policy hash per line, `#` comments). Lower-cased; each must be 64 hex digits.
pub fn load_policy_hashes(hashes: &[String], files: &[PathBuf]) -> Result<Vec<String>, TrustError> {
    let check = |h: &str, at: &dyn Fn() -> String| -> Result<String, TrustError> {
        let h = h.trim().to_ascii_lowercase();
        if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(h)
        } else {
            Err(TrustError::Invalid(format!(
                "{}: `{h}` is not a policy hash (64 hex digits, the `policy_hash` of `cap policy compile`)",
                at()
            )))
        }
    };
    let mut out = Vec::new();
    for h in hashes {
        out.push(check(h, &|| "--policy-hash".to_string())?);
    }
    for p in files {
        let text = read(p)?;
        let lines = keyring_lines(&text);
        if lines.is_empty() {
            return Err(TrustError::Invalid(format!(
                "{}: no policy hashes (one hex hash per line; `#` starts a comment)",
                p.display()
            )));
        }
        for (n, l) in lines {
            out.push(check(l, &|| format!("{}:{n}", p.display()))?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The bundle signers to trust. Each path is a public key file (`KEY.pub.json`; a secret key
/// file names its public key too) or a keyring file whose lines are Ed25519 public keys in
/// base64 (the `public_key` of a `KEY.pub.json`). Duplicates are kept once.
pub fn load_signers(paths: &[PathBuf]) -> Result<Vec<PublicKeyFile>, TrustError> {
    let mut out: Vec<PublicKeyFile> = Vec::new();
    for p in paths {
        let text = read(p)?;
        let keys = if text.trim_start().starts_with('{') {
            vec![PublicKeyFile::read(p)?]
        } else {
            let lines = keyring_lines(&text);
            if lines.is_empty() {
                return Err(TrustError::Invalid(format!(
                    "{}: no keys (a keyring file has one base64 Ed25519 public key per line; `#` starts a comment)",
                    p.display()
                )));
            }
            let mut keys = Vec::new();
            for (n, l) in lines {
                let pk: [u8; 32] = unb64(l).and_then(|v| v.try_into().ok()).ok_or_else(|| {
                    TrustError::Invalid(format!(
                        "{}:{n}: `{l}` is not an Ed25519 public key (32 bytes of base64, the `public_key` of a KEY.pub.json)",
                        p.display()
                    ))
                })?;
                keys.push(PublicKeyFile {
                    format: PUBLIC_FORMAT.into(),
                    kid: kid(&pk),
                    public_key: l.to_string(),
                });
            }
            keys
        };
        for k in keys {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    Ok(out)
}

/// The log keys to trust for checkpoints: verifier keys (`NAME+HASH+KEY`, as `cap registry
/// inspect` prints them) given literally, and keyring files with one verifier key per line.
/// Each is checked and written in its canonical form.
pub fn load_log_keys(vkeys: &[String], files: &[PathBuf]) -> Result<Vec<String>, TrustError> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |k: &str, whence: String| -> Result<(), TrustError> {
        let (name, pk) =
            note::parse_vkey(k).map_err(|e| TrustError::Invalid(format!("{whence}: {e}")))?;
        let k = note::vkey(&name, &pk);
        if !out.contains(&k) {
            out.push(k);
        }
        Ok(())
    };
    for k in vkeys {
        add(k.trim(), format!("--vkey `{k}`"))?;
    }
    for p in files {
        let text = read(p)?;
        let lines = keyring_lines(&text);
        if lines.is_empty() {
            return Err(TrustError::Invalid(format!(
                "{}: no keys (a log keyring file has one verifier key NAME+HASH+KEY per line; `#` starts a comment)",
                p.display()
            )));
        }
        for (n, l) in lines {
            add(l, format!("{}:{n}", p.display()))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn policy_lists_and_hashes_mix_and_bad_lines_are_named() {
        let d = tempfile::tempdir().unwrap();
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let f = d.path().join("policies.txt");
        std::fs::write(&f, format!("# trusted policies\n{b}  # strict\n\n{a}\n")).unwrap();
        let got = load_policy_hashes(std::slice::from_ref(&a), std::slice::from_ref(&f)).unwrap();
        assert_eq!(got, vec![a.clone(), b.to_ascii_lowercase()]);
        std::fs::write(&f, "abc\n").unwrap();
        let e = load_policy_hashes(&[], std::slice::from_ref(&f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("policies.txt:1") && e.contains("64 hex digits"),
            "{e}"
        );
        let e = load_policy_hashes(&["xyz".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--policy-hash"), "{e}");
    }
    use super::*;
    use crate::sign::KeyPair;

    #[test]
    fn keyring_files_and_key_files_mix() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (
            KeyPair::generate(None).unwrap(),
            KeyPair::generate(None).unwrap(),
        );
        let ring = d.path().join("signers.keyring");
        std::fs::write(
            &ring,
            format!(
                "# exporters of site A\n{}  # key a\n\n   \n{}\n",
                a.public_file().public_key,
                b.public_file().public_key
            ),
        )
        .unwrap();
        let file = d.path().join("a.pub.json");
        std::fs::write(&file, serde_json::to_vec(&a.public_file()).unwrap()).unwrap();
        let keys = load_signers(&[ring.clone(), file]).unwrap();
        assert_eq!(keys, vec![a.public_file(), b.public_file()]);
        std::fs::write(&ring, "# nothing\n").unwrap();
        assert!(load_signers(std::slice::from_ref(&ring))
            .unwrap_err()
            .to_string()
            .contains("no keys"));
        std::fs::write(&ring, "not-a-key\n").unwrap();
        assert!(load_signers(std::slice::from_ref(&ring))
            .unwrap_err()
            .to_string()
            .contains(":1: `not-a-key`"));
        let v = note::vkey("log", &a.public());
        std::fs::write(&ring, format!("{v} # the log\n")).unwrap();
        assert_eq!(
            load_log_keys(std::slice::from_ref(&v), &[ring]).unwrap(),
            vec![v]
        );
        assert!(load_log_keys(&["log+00+AA==".into()], &[]).is_err());
    }
}
