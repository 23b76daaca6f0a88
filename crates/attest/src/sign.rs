//! Ed25519 signing keys, key ids and detached signatures.
//!
//! Why it exists: a proof is only worth something if its signature is verified, not just
//! present (the legacy `cap` checked presence). Every signature here covers
//! `context || 0x00 || message`, where `context` names what is signed (e.g.
//! `fieldlab.bundle/v1`), so a signature over one kind of document can never be replayed as
//! another. A key id is derived from the public key bytes alone: the first 8 bytes of
//! SHA-256(public key), as 16 lower-case hex digits.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}

/// Why a [`Signature`] was refused: it is not a well-formed Ed25519 signature by the key it
/// names, or it is and does not verify.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0}")]
    Malformed(String),
    #[error("Ed25519 signature by key {kid} does not verify")]
    Invalid { kid: String },
}

/// Key id: first 8 bytes of SHA-256(public key), lower-case hex.
pub fn kid(public: &[u8; 32]) -> String {
    hex::encode(&crate::canon::sha256(public)[..8])
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Strict base64 (standard alphabet, padded, canonical trailing bits).
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    let v = B64.decode(s).ok()?;
    (B64.encode(&v) == s).then_some(v)
}

fn unb64_32(s: &str) -> Option<[u8; 32]> {
    unb64(s)?.try_into().ok()
}

/// A secret key as stored on disk (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyFile {
    pub format: String,
    pub kid: String,
    pub public_key: String,
    pub secret_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created: String,
}

/// A public key as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyFile {
    pub format: String,
    pub kid: String,
    pub public_key: String,
}

pub const SECRET_FORMAT: &str = "fieldlab.ed25519-secret/v1";
pub const PUBLIC_FORMAT: &str = "fieldlab.ed25519-public/v1";

#[derive(Clone)]
pub struct KeyPair {
    pub signing: SigningKey,
    pub name: Option<String>,
    pub created: String,
}

impl KeyPair {
    /// A new key from the operating system's random source.
    pub fn generate(name: Option<String>) -> Result<KeyPair, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| KeyError::Invalid(format!("no OS randomness: {e}")))?;
        Ok(KeyPair {
            signing: SigningKey::from_bytes(&seed),
            name,
            created: crate::now_rfc3339(),
        })
    }

    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn kid(&self) -> String {
        kid(&self.public())
    }

    pub fn public_file(&self) -> PublicKeyFile {
        PublicKeyFile {
            format: PUBLIC_FORMAT.into(),
            kid: self.kid(),
            public_key: b64(&self.public()),
        }
    }

    pub fn sign(&self, context: &str, message: &[u8]) -> Signature {
        let sig = self.signing.sign(&signed_bytes(context, message));
        Signature {
            alg: "Ed25519".into(),
            kid: self.kid(),
            public_key: b64(&self.public()),
            sig: b64(&sig.to_bytes()),
        }
    }

    /// Write the secret key with mode 0600 (created that way: never world-readable, even briefly).
    pub fn write_secret(&self, path: &Path) -> Result<(), KeyError> {
        let f = SecretKeyFile {
            format: SECRET_FORMAT.into(),
            kid: self.kid(),
            public_key: b64(&self.public()),
            secret_key: b64(&self.signing.to_bytes()),
            name: self.name.clone(),
            created: self.created.clone(),
        };
        let body = serde_json::to_vec_pretty(&f).expect("key file serialises");
        write_private(path, &body).map_err(|e| KeyError::File {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
    }

    pub fn read_secret(path: &Path) -> Result<KeyPair, KeyError> {
        let err = |msg: String| KeyError::File {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let f: SecretKeyFile = serde_json::from_slice(&text)
            .map_err(|e| err(format!("not a fieldlab secret key file: {e}")))?;
        if f.format != SECRET_FORMAT {
            return Err(err(format!(
                "format is `{}`, expected `{SECRET_FORMAT}`",
                f.format
            )));
        }
        let seed = unb64_32(&f.secret_key)
            .ok_or_else(|| err("secret_key is not 32 bytes of base64".into()))?;
        let kp = KeyPair {
            signing: SigningKey::from_bytes(&seed),
            name: f.name,
            created: f.created,
        };
        if kp.kid() != f.kid || b64(&kp.public()) != f.public_key {
            return Err(err("kid or public_key does not match the secret key".into()));
        }
        Ok(kp)
    }
}

/// Create `path` with mode 0600 and write `body`.
pub fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(body)?;
    f.sync_all()
}

impl PublicKeyFile {
    pub fn read(path: &Path) -> Result<PublicKeyFile, KeyError> {
        let err = |msg: String| KeyError::File {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        // A secret key file also names its public key; accept either.
        if let Ok(s) = serde_json::from_slice::<SecretKeyFile>(&text) {
            return Ok(PublicKeyFile {
                format: PUBLIC_FORMAT.into(),
                kid: s.kid,
                public_key: s.public_key,
            });
        }
        let f: PublicKeyFile = serde_json::from_slice(&text)
            .map_err(|e| err(format!("not a fieldlab public key file: {e}")))?;
        let pk = unb64_32(&f.public_key)
            .ok_or_else(|| err("public_key is not 32 bytes of base64".into()))?;
        if kid(&pk) != f.kid {
            return Err(err("kid does not match public_key".into()));
        }
        Ok(f)
    }
}

fn signed_bytes(context: &str, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + message.len());
    m.extend_from_slice(context.as_bytes());
    m.push(0);
    m.extend_from_slice(message);
    m
}

/// A detached signature with the key that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub alg: String,
    pub kid: String,
    pub public_key: String,
    pub sig: String,
}

/// The decoded key of `pk`. Decoding is a point decompression (a field square root, ~2% of a
/// bundle verification), and a verifier sees the same few keys again and again, so each
/// thread keeps the last keys it decoded. The cache is keyed by all 32 bytes: it can only
/// return what `from_bytes` would.
fn verifying_key(pk: &[u8; 32]) -> Result<VerifyingKey, SignatureError> {
    use std::cell::RefCell;
    const KEEP: usize = 8;
    thread_local! {
        static LAST: RefCell<Vec<([u8; 32], VerifyingKey)>> = const { RefCell::new(Vec::new()) };
    }
    LAST.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(i) = c.iter().position(|(k, _)| k == pk) {
            return Ok(c[i].1);
        }
        let vk = VerifyingKey::from_bytes(pk)
            .map_err(|e| SignatureError::Malformed(format!("bad public key: {e}")))?;
        if c.len() == KEEP {
            c.remove(0);
        }
        c.push((*pk, vk));
        Ok(vk)
    })
}

impl Signature {
    /// Verify the signature over `context || 0x00 || message`, and that `kid` belongs to the key.
    pub fn verify(&self, context: &str, message: &[u8]) -> Result<(), SignatureError> {
        let malformed = |m: &str| SignatureError::Malformed(m.to_string());
        if self.alg != "Ed25519" {
            return Err(SignatureError::Malformed(format!(
                "signature algorithm `{}` is not Ed25519",
                self.alg
            )));
        }
        let pk = unb64_32(&self.public_key)
            .ok_or_else(|| malformed("public_key is not 32 bytes of canonical base64"))?;
        if kid(&pk) != self.kid {
            return Err(SignatureError::Malformed(format!(
                "kid {} does not belong to the public key (its kid is {})",
                self.kid,
                kid(&pk)
            )));
        }
        let vk = verifying_key(&pk)?;
        let sig: [u8; 64] = unb64(&self.sig)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| malformed("sig is not 64 bytes of canonical base64"))?;
        vk.verify_strict(
            &signed_bytes(context, message),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| SignatureError::Invalid {
            kid: self.kid.clone(),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse_tampering() {
        let k = KeyPair::generate(None).unwrap();
        let s = k.sign("ctx", b"hello");
        s.verify("ctx", b"hello").unwrap();
        assert!(s.verify("ctx", b"hellp").is_err());
        assert!(s.verify("other", b"hello").is_err());
        let other = KeyPair::generate(None).unwrap();
        let mut forged = s.clone();
        forged.public_key = b64(&other.public());
        assert!(forged.verify("ctx", b"hello").is_err());
        forged.kid = other.kid();
        assert!(forged.verify("ctx", b"hello").is_err());
    }

    #[test]
    fn secret_key_file_is_0600_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.key");
        let k = KeyPair::generate(Some("test".into())).unwrap();
        k.write_secret(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let back = KeyPair::read_secret(&p).unwrap();
        assert_eq!(back.kid(), k.kid());
        assert_eq!(PublicKeyFile::read(&p).unwrap(), k.public_file());
    }
}
