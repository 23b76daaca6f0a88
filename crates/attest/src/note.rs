//! C2SP signed notes and transparency-log checkpoints (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).
//!
//! Why it exists: a registry's state is published as a checkpoint — origin, tree size, root —
//! signed in the format other transparency-log tooling (Go's `sumdb/note`, Sigsum, Trillian)
//! already reads. Ed25519 key hash: first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key);
//! signature line: `— <name> <base64(key hash || signature)>`; the signature covers the note text.

use crate::sign::KeyPair;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, VerifyingKey};
use sha2::{Digest, Sha256};

/// Ed25519 algorithm byte of signed-note keys.
const ALG_ED25519: u8 = 0x01;

pub fn key_hash(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    h.finalize()[..4].try_into().unwrap()
}

/// Verifier key string: `<name>+<hex key hash>+<base64(0x01 || public key)>`.
pub fn vkey(name: &str, public: &[u8; 32]) -> String {
    let mut k = vec![ALG_ED25519];
    k.extend_from_slice(public);
    format!(
        "{name}+{}+{}",
        hex::encode(key_hash(name, public)),
        B64.encode(k)
    )
}

/// Why a verifier key, a signed note or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoteError {
    /// Not a well-formed verifier key, note or checkpoint.
    #[error("{0}")]
    Malformed(String),
    #[error("signature by `{name}` does not verify")]
    Invalid { name: String },
    #[error("note has no signature by `{name}`")]
    Unsigned { name: String },
}

fn malformed(m: &str) -> NoteError {
    NoteError::Malformed(m.to_string())
}

pub fn parse_vkey(v: &str) -> Result<(String, [u8; 32]), NoteError> {
    let mut p = v.splitn(3, '+');
    let (Some(name), Some(h), Some(k)) = (p.next(), p.next(), p.next()) else {
        return Err(malformed("verifier key must be NAME+HASH+KEY"));
    };
    let k = B64
        .decode(k)
        .map_err(|_| malformed("verifier key is not base64"))?;
    if k.len() != 33 || k[0] != ALG_ED25519 {
        return Err(malformed("verifier key is not an Ed25519 key"));
    }
    let pk: [u8; 32] = k[1..].try_into().unwrap();
    if hex::encode(key_hash(name, &pk)) != h {
        return Err(malformed("verifier key hash does not match"));
    }
    Ok((name.to_string(), pk))
}

/// The checkpoint body: `<origin>\n<size>\n<base64 root>\n`.
pub fn checkpoint_text(origin: &str, size: u64, root: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Sign `text` (which must end in a newline) as a note.
pub fn sign(text: &str, name: &str, key: &KeyPair) -> String {
    let sig = key.signing.sign(text.as_bytes());
    let mut b = key_hash(name, &key.public()).to_vec();
    b.extend_from_slice(&sig.to_bytes());
    format!("{text}\n\u{2014} {name} {}\n", B64.encode(b))
}

/// Verify a signed note with one verifier key; returns the note text.
pub fn open(note: &str, vkey_str: &str) -> Result<String, NoteError> {
    let (name, pk) = parse_vkey(vkey_str)?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("not a signed note (no blank line before signatures)"))?;
    let text = &note[..split + 1];
    let want = key_hash(&name, &pk);
    let vk = VerifyingKey::from_bytes(&pk).map_err(|e| malformed(&e.to_string()))?;
    for line in note[split + 2..].lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return Err(NoteError::Malformed(format!(
                "malformed signature line `{line}`"
            )));
        };
        let Some((n, s)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(b) = B64.decode(s) else { continue };
        if n != name || b.len() != 68 || b[..4] != want {
            continue;
        }
        let sig = ed25519_dalek::Signature::from_bytes(&b[4..].try_into().unwrap());
        // Strict (RFC 8032 §5.1.7 plus ed25519-dalek's `verify_strict`: canonical S, no
        // small-order R or key), as for bundle signatures (docs/formats.md §1).
        return vk
            .verify_strict(text.as_bytes(), &sig)
            .map(|_| text.to_string())
            .map_err(|_| NoteError::Invalid { name });
    }
    Err(NoteError::Unsigned { name })
}

/// Parse a checkpoint text into (origin, size, root).
pub fn parse_checkpoint(text: &str) -> Result<(String, u64, [u8; 32]), NoteError> {
    let l: Vec<&str> = text.lines().collect();
    if l.len() < 3 {
        return Err(malformed("checkpoint needs origin, size and root lines"));
    }
    let size = l[1]
        .parse()
        .map_err(|_| malformed("checkpoint size is not a number"))?;
    let root: [u8; 32] = B64
        .decode(l[2])
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| malformed("checkpoint root is not 32 bytes of base64"))?;
    Ok((l[0].to_string(), size, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_open_and_refuse_changes() {
        let k = KeyPair::generate(None).unwrap();
        let v = vkey("example.com/log", &k.public());
        let text = checkpoint_text("example.com/log", 7, &[3u8; 32]);
        let n = sign(&text, "example.com/log", &k);
        assert_eq!(open(&n, &v).unwrap(), text);
        assert_eq!(parse_checkpoint(&text).unwrap().1, 7);
        assert!(open(&n.replace("\n7\n", "\n8\n"), &v).is_err());
        let other = KeyPair::generate(None).unwrap();
        assert!(open(&n, &vkey("example.com/log", &other.public())).is_err());
    }

    /// Strict verification (docs/formats.md §1): a signature under a small-order key, which the
    /// lenient `verify` accepts (the identity key with R = identity and S = 0 verifies every
    /// message), is refused for checkpoints as for bundles.
    #[test]
    fn checkpoints_are_verified_strictly() {
        let text = checkpoint_text("log", 1, &[0u8; 32]);
        // The identity point (a small-order key), and a signature (R = identity, S = 0).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = key_hash("log", &identity).to_vec();
        sig.extend_from_slice(&identity);
        sig.extend_from_slice(&[0u8; 32]);
        let forged = format!("{text}\n\u{2014} log {}\n", B64.encode(&sig));
        let lenient = VerifyingKey::from_bytes(&identity).unwrap();
        use ed25519_dalek::Verifier;
        assert!(
            lenient
                .verify(
                    text.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig[4..].try_into().unwrap())
                )
                .is_ok(),
            "the lenient check accepts it"
        );
        let err = open(&forged, &vkey("log", &identity))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");
    }
}
