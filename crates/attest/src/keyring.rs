//! A directory of signing keys with their life cycle: keygen, rotate, revoke, attest, chains.
//!
//! Why it exists: a verifier pins a key id; when the key is rotated, the old key signs the new
//! one (an attestation), so a verifier holding the old id can follow the chain to the current
//! key, and refuse a chain through a revoked key. Files: `<kid>.key` (secret, 0600),
//! `<kid>.pub.json`, `keyring.json` (status of every key), `attestations/<kid>.json`.

use crate::canon;
use crate::sign::{KeyPair, PublicKeyFile, Signature, PUBLIC_FORMAT};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const KEYRING_FORMAT: &str = "fieldlab.keyring/v1";
pub const ATTESTATION_FORMAT: &str = "fieldlab.key-attestation/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Retired,
    Revoked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created: String,
    pub status: KeyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: String,
    keys: Vec<KeyEntry>,
}

/// What an attestation signs: "key `subject` is the successor of the signer".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationBody {
    pub format: String,
    pub subject: PublicKeyFile,
    pub issued: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub body: AttestationBody,
    pub signature: Signature,
}

impl Attestation {
    pub fn verify(&self) -> Result<(), KeyringError> {
        let bad = |m: &str| KeyringError::Attestation(m.to_string());
        if self.body.format != ATTESTATION_FORMAT || self.body.subject.format != PUBLIC_FORMAT {
            return Err(bad("not a fieldlab key attestation"));
        }
        let pk = crate::sign::unb64(&self.body.subject.public_key)
            .ok_or_else(|| bad("subject key is not base64"))?;
        let pk: [u8; 32] = pk
            .try_into()
            .map_err(|_| bad("subject key is not 32 bytes"))?;
        if crate::sign::kid(&pk) != self.body.subject.kid {
            return Err(bad("subject kid does not match its key"));
        }
        let msg = canon::canonical(&self.body)?;
        Ok(self.signature.verify(ATTESTATION_FORMAT, &msg)?)
    }
}

pub struct Keyring {
    pub dir: PathBuf,
}

/// Why a keyring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    File(#[from] crate::FileError),
    #[error(transparent)]
    Key(#[from] crate::sign::KeyError),
    #[error(transparent)]
    Signature(#[from] crate::sign::SignatureError),
    #[error(transparent)]
    Canon(#[from] canon::CanonError),
    /// No key, or more than one, answers to the name or kid prefix given.
    #[error("{0}")]
    Lookup(String),
    /// The key's status forbids the operation (revoked, not active).
    #[error("{0}")]
    Status(String),
    /// An attestation is malformed, or the chain of attestations is broken.
    #[error("{0}")]
    Attestation(String),
}

impl Keyring {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Keyring, KeyringError> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("attestations"))
            .map_err(|e| crate::FileError::new(&dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Keyring { dir })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("keyring.json")
    }

    pub fn list(&self) -> Result<Vec<KeyEntry>, KeyringError> {
        if !self.file().exists() {
            return Ok(Vec::new());
        }
        let f: KeyringFile = crate::read_json(&self.file())?;
        Ok(f.keys)
    }

    fn save(&self, keys: Vec<KeyEntry>) -> Result<(), KeyringError> {
        Ok(crate::write_json(
            &self.file(),
            &KeyringFile {
                format: KEYRING_FORMAT.into(),
                keys,
            },
        )?)
    }

    pub fn secret_path(&self, kid: &str) -> PathBuf {
        self.dir.join(format!("{kid}.key"))
    }

    pub fn public_path(&self, kid: &str) -> PathBuf {
        self.dir.join(format!("{kid}.pub.json"))
    }

    /// Resolve a kid, a unique kid prefix, or a key name.
    pub fn find(&self, q: &str) -> Result<KeyEntry, KeyringError> {
        let keys = self.list()?;
        let hits: Vec<&KeyEntry> = keys
            .iter()
            .filter(|k| k.kid.starts_with(q) || k.name.as_deref() == Some(q))
            .collect();
        match hits.as_slice() {
            [k] => Ok((*k).clone()),
            [] => Err(KeyringError::Lookup(format!(
                "no key `{q}` in {} (see `fieldlab cap keys list`)",
                self.dir.display()
            ))),
            _ => Err(KeyringError::Lookup(format!(
                "`{q}` matches {} keys; give more of the kid",
                hits.len()
            ))),
        }
    }

    pub fn load(&self, q: &str) -> Result<KeyPair, KeyringError> {
        let e = self.find(q)?;
        Ok(KeyPair::read_secret(&self.secret_path(&e.kid))?)
    }

    /// Generate a key, write it (secret 0600) and record it as active.
    pub fn keygen(&self, name: Option<String>) -> Result<KeyPair, KeyringError> {
        let k = KeyPair::generate(name.clone())?;
        k.write_secret(&self.secret_path(&k.kid()))?;
        crate::write_json(&self.public_path(&k.kid()), &k.public_file())?;
        let mut keys = self.list()?;
        keys.push(KeyEntry {
            kid: k.kid(),
            name,
            created: k.created.clone(),
            status: KeyStatus::Active,
            attested_by: None,
            revoked: None,
        });
        self.save(keys)?;
        Ok(k)
    }

    /// `signer` vouches for `subject`; written to `attestations/<subject>.json`.
    pub fn attest(&self, signer: &str, subject: &str) -> Result<Attestation, KeyringError> {
        let s = self.load(signer)?;
        let se = self.find(signer)?;
        if se.status == KeyStatus::Revoked {
            return Err(KeyringError::Status(format!(
                "key {} is revoked and cannot attest",
                se.kid
            )));
        }
        let sub = self.find(subject)?;
        let subject = PublicKeyFile::read(&self.public_path(&sub.kid))?;
        let body = AttestationBody {
            format: ATTESTATION_FORMAT.into(),
            subject,
            issued: crate::now_rfc3339(),
        };
        let signature = s.sign(ATTESTATION_FORMAT, &canon::canonical(&body)?);
        let a = Attestation { body, signature };
        crate::write_json(
            &self
                .dir
                .join("attestations")
                .join(format!("{}.json", sub.kid)),
            &a,
        )?;
        let mut keys = self.list()?;
        for k in keys.iter_mut().filter(|k| k.kid == sub.kid) {
            k.attested_by = Some(s.kid());
        }
        self.save(keys)?;
        Ok(a)
    }

    /// New key, attested by the old one, which is retired.
    pub fn rotate(
        &self,
        old: &str,
        name: Option<String>,
    ) -> Result<(KeyPair, Attestation), KeyringError> {
        let o = self.find(old)?;
        if o.status != KeyStatus::Active {
            return Err(KeyringError::Status(format!(
                "key {} is {:?}, only an active key can be rotated",
                o.kid, o.status
            )));
        }
        let new = self.keygen(name.or(o.name.clone()))?;
        let a = self.attest(&o.kid, &new.kid())?;
        let mut keys = self.list()?;
        for k in keys.iter_mut().filter(|k| k.kid == o.kid) {
            k.status = KeyStatus::Retired;
        }
        self.save(keys)?;
        Ok((new, a))
    }

    pub fn revoke(&self, q: &str, reason: &str) -> Result<KeyEntry, KeyringError> {
        let e = self.find(q)?;
        let mut keys = self.list()?;
        for k in keys.iter_mut().filter(|k| k.kid == e.kid) {
            k.status = KeyStatus::Revoked;
            k.revoked = Some(format!("{} {reason}", crate::now_rfc3339()));
        }
        self.save(keys)?;
        self.find(&e.kid)
    }

    /// Follow attestations from `root` to `leaf`; every link must verify and no key on the
    /// way may be revoked. Returns the chain of kids.
    pub fn verify_chain(&self, root: &str, leaf: &str) -> Result<Vec<String>, KeyringError> {
        use KeyringError::Attestation as Broken;
        let root = self.find(root)?;
        let mut cur = self.find(leaf)?;
        let mut chain = vec![cur.kid.clone()];
        let keys = self.list()?;
        loop {
            if cur.status == KeyStatus::Revoked {
                return Err(KeyringError::Status(format!(
                    "key {} on the chain is revoked ({})",
                    cur.kid,
                    cur.revoked.clone().unwrap_or_default()
                )));
            }
            if cur.kid == root.kid {
                chain.reverse();
                return Ok(chain);
            }
            let p = self
                .dir
                .join("attestations")
                .join(format!("{}.json", cur.kid));
            let a: Attestation = crate::read_json(&p).map_err(|_| {
                Broken(format!(
                    "key {} has no attestation; the chain ends before {}",
                    cur.kid, root.kid
                ))
            })?;
            a.verify()
                .map_err(|e| Broken(format!("{}: {e}", p.display())))?;
            if a.body.subject.kid != cur.kid {
                return Err(Broken(format!(
                    "{}: attests {}, not {}",
                    p.display(),
                    a.body.subject.kid,
                    cur.kid
                )));
            }
            let signer = a.signature.kid.clone();
            cur = keys
                .iter()
                .find(|k| k.kid == signer)
                .cloned()
                .ok_or_else(|| Broken(format!("attesting key {signer} is not in the keyring")))?;
            if chain.contains(&cur.kid) {
                return Err(Broken("attestation cycle".into()));
            }
            chain.push(cur.kid.clone());
        }
    }
}

/// Read a key given as a path to a secret key file, or as a kid/name in a keyring directory.
pub fn load_key(spec: &Path, keyring: &Path) -> Result<KeyPair, KeyringError> {
    if spec.exists() {
        return Ok(KeyPair::read_secret(spec)?);
    }
    Keyring::open(keyring)?.load(&spec.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_attests_and_revocation_breaks_the_chain() {
        let d = tempfile::tempdir().unwrap();
        let kr = Keyring::open(d.path()).unwrap();
        let a = kr.keygen(Some("signer".into())).unwrap();
        let (b, att) = kr.rotate(&a.kid(), None).unwrap();
        att.verify().unwrap();
        let (c, _) = kr.rotate(&b.kid(), None).unwrap();
        assert_eq!(
            kr.verify_chain(&a.kid(), &c.kid()).unwrap(),
            vec![a.kid(), b.kid(), c.kid()]
        );
        assert_eq!(kr.find(&a.kid()).unwrap().status, KeyStatus::Retired);
        // Tampered attestation: refused.
        let p = d
            .path()
            .join("attestations")
            .join(format!("{}.json", c.kid()));
        let mut t: Attestation = crate::read_json(&p).unwrap();
        t.body.issued = "2000-01-01T00:00:00.000Z".into();
        assert!(t.verify().is_err());
        kr.revoke(&b.kid(), "compromised").unwrap();
        assert!(kr
            .verify_chain(&a.kid(), &c.kid())
            .unwrap_err()
            .to_string()
            .contains("revoked"));
        assert!(kr.attest(&b.kid(), &c.kid()).is_err());
    }
}
