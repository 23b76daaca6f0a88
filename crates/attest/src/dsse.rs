//! DSSE envelopes over in-toto Statement v1: the signature of `fieldlab.bundle/v2`.
//!
//! Why it exists: auditors and supply-chain tooling (in-toto, Sigstore, securesystemslib) read
//! DSSE-signed in-toto statements. A v2 bundle's signature is such an envelope, so any DSSE
//! implementation can check it, and the statement names every bundle file by its SHA-256 and
//! every committed root. DSSE: github.com/secure-systems-lab/dsse (envelope.md, protocol.md);
//! in-toto Statement v1: github.com/in-toto/attestation (spec/v1/statement.md).

use crate::canon;
use crate::sign::{b64, unb64, KeyPair};
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate of a fieldlab v2 bundle's statement is its proof (`proof.json`).
pub const PREDICATE_TYPE: &str = "https://fieldlab.dev/attestations/proof/v1";
/// Digest algorithm name of a subject that is a committed root: the RFC 6962 Merkle tree hash
/// over SHA-256 (not the SHA-256 of a file).
pub const ROOT_DIGEST: &str = "rfc6962-sha256";

/// DSSE pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    m.extend_from_slice(payload);
    m
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: String,
}

/// A DSSE envelope (JSON form); `payload` is base64 (standard, padded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Value,
}

/// Sign `payload` (Ed25519 over the PAE) into an envelope with one signature, keyid = kid.
pub fn sign(payload: &[u8], key: &KeyPair) -> Envelope {
    let sig = key.signing.sign(&pae(PAYLOAD_TYPE, payload));
    Envelope {
        payload: b64(payload),
        payload_type: PAYLOAD_TYPE.into(),
        signatures: vec![EnvelopeSignature {
            keyid: key.kid(),
            sig: b64(&sig.to_bytes()),
        }],
    }
}

/// Check an envelope fieldlab wrote: the in-toto payload type, exactly one signature, made by
/// `public_key` (strict Ed25519 over the PAE, docs/formats.md §1) with keyid = its kid.
/// Returns the payload.
pub fn open(env: &Envelope, public_key: &[u8; 32]) -> Result<Vec<u8>, EnvelopeError> {
    use EnvelopeError::Malformed;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(Malformed(format!(
            "payloadType `{}` is not `{PAYLOAD_TYPE}`",
            env.payload_type
        )));
    }
    let [s] = env.signatures.as_slice() else {
        return Err(Malformed(format!(
            "{} signatures; a fieldlab envelope has exactly one",
            env.signatures.len()
        )));
    };
    let kid = crate::sign::kid(public_key);
    if s.keyid != kid {
        return Err(Malformed(format!(
            "signed by keyid {}, but the signer key's kid is {kid}",
            s.keyid
        )));
    }
    let payload =
        unb64(&env.payload).ok_or_else(|| Malformed("payload is not canonical base64".into()))?;
    let sig: [u8; 64] = unb64(&s.sig)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Malformed("sig is not 64 bytes of canonical base64".into()))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .map_err(|e| Malformed(format!("bad public key: {e}")))?;
    vk.verify_strict(
        &pae(PAYLOAD_TYPE, &payload),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .map_err(|_| EnvelopeError::Invalid)?;
    Ok(payload)
}

/// Why [`open`] refused an envelope: not one fieldlab writes, or its signature is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0}")]
    Malformed(String),
    #[error("the envelope's signature does not verify")]
    Invalid,
}

/// The canonical bytes of a statement.
pub fn statement_bytes(s: &Statement) -> Result<Vec<u8>, canon::CanonError> {
    canon::canonical(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PAE example of the DSSE protocol (protocol.md, "Test vectors"-style check).
    #[test]
    fn pae_is_the_dsse_encoding() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn sign_open_refuse() {
        let k = KeyPair::generate(None).unwrap();
        let e = sign(b"{}", &k);
        assert_eq!(open(&e, &k.public()).unwrap(), b"{}");
        let other = KeyPair::generate(None).unwrap();
        assert!(open(&e, &other.public()).is_err());
        let mut bad = e.clone();
        bad.payload = b64(b"{ }");
        assert!(open(&bad, &k.public()).is_err());
        let mut bad = e.clone();
        bad.payload_type = "application/json".into();
        assert!(open(&bad, &k.public()).is_err());
        let mut two = e.clone();
        two.signatures.push(e.signatures[0].clone());
        assert!(open(&two, &k.public()).is_err());
    }
}
