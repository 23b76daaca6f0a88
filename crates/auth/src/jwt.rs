//! OAuth2 bearer JWTs from an external issuer, verified with its public keys: the one
//! verifier of fieldlab (the API's external issuer, `auth.jwks_*`, and the proof verifier API,
//! `fieldlab cap serve --jwt-*`).
//!
//! Why it exists: fieldlab's APIs must accept tokens from an identity provider without holding
//! its secrets. Keys come from PEM files (RSA or Ed25519 public keys) or JWKS documents (RSA,
//! EC, OKP), picked by `kid`; asymmetric algorithms only (RS*, PS*, ES256/384, EdDSA: never
//! HS* or `none`, so a shared-secret or unsigned token is refused outright). Expiry is always
//! checked, issuer and audience whenever they are configured; scopes come from the `scope`
//! claim (space-separated, RFC 8693) or `scp`, roles from a configured claim. There is no
//! bypass token and no built-in key: with no keys, every token is refused. Keys can be
//! replaced at run time (`replace_jwks`, for a JWKS URL's key rotation).

use fieldlab_core::principal::{AuthMethod, Principal, Role};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::Path;

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Ed),
        // HS256/384/512: a shared secret, never accepted from outside.
        _ => None,
    }
}

struct Key {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

pub struct JwtVerifier {
    keys: RwLock<Vec<Key>>,
    issuer: Option<String>,
    audience: Option<String>,
    roles_claim: Option<String>,
    /// Tokens already verified, until their expiry (as Envoy's `jwt_cache_config` does): a
    /// client sends the same token with every request, and an RS256/EdDSA check costs far more
    /// than the request it guards. Cleared when the keys change, and when full (bounded).
    cache: Mutex<HashMap<String, (Principal, i64)>>,
}

const CACHE_MAX: usize = 4096;

impl JwtVerifier {
    /// Tokens must name this issuer (`iss`) and audience (`aud`).
    pub fn new(issuer: &str, audience: &str) -> JwtVerifier {
        JwtVerifier::with(Some(issuer.into()), Some(audience.into()))
    }

    /// Issuer and audience checked only when given (`auth.oauth2_*`; fieldlab-auth warns at
    /// start-up when one is missing).
    pub fn with(issuer: Option<String>, audience: Option<String>) -> JwtVerifier {
        JwtVerifier {
            keys: RwLock::new(Vec::new()),
            issuer,
            audience,
            roles_claim: None,
            cache: Default::default(),
        }
    }

    /// Roles from this claim (a string of words or an array), for the API's role checks.
    pub fn roles_from(mut self, claim: &str) -> JwtVerifier {
        self.roles_claim = Some(claim.into());
        self
    }

    /// Add a PEM public key (RSA -> RS*/PS*, Ed25519 -> EdDSA).
    pub fn add_pem(&mut self, pem: &[u8], kid: Option<String>) -> Result<(), String> {
        let (family, key) = match DecodingKey::from_rsa_pem(pem) {
            Ok(k) => (Family::Rsa, k),
            Err(_) => (
                Family::Ed,
                DecodingKey::from_ed_pem(pem)
                    .map_err(|e| format!("not an RSA or Ed25519 public key in PEM: {e}"))?,
            ),
        };
        self.keys.get_mut().push(Key { kid, family, key });
        self.cache.get_mut().clear();
        Ok(())
    }

    pub fn add_pem_file(&mut self, path: &Path) -> Result<(), String> {
        let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.add_pem(&b, None)
            .map_err(|m| format!("{}: {m}", path.display()))
    }

    /// Add every RSA, EC and Ed25519 key of a JWKS document; returns how many.
    pub fn add_jwks(&mut self, json: &str) -> Result<usize, String> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys = jwks_keys(&set)?;
        let n = keys.len();
        self.keys.get_mut().extend(keys);
        self.cache.get_mut().clear();
        Ok(n)
    }

    pub fn add_jwks_file(&mut self, path: &Path) -> Result<usize, String> {
        let t = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.add_jwks(&t)
            .map_err(|m| format!("{}: {m}", path.display()))
    }

    /// Replace every key by those of `set` (a JWKS re-read after key rotation).
    pub fn replace_jwks(&self, set: &JwkSet) -> Result<usize, String> {
        let keys = jwks_keys(set)?;
        let n = keys.len();
        *self.keys.write() = keys;
        self.cache.lock().clear();
        Ok(n)
    }

    pub fn key_count(&self) -> usize {
        self.keys.read().len()
    }

    /// Whether some key could check `token` (its algorithm's kind, its `kid`): when not, the
    /// keys may have rotated.
    pub fn has_key_for(&self, token: &str) -> bool {
        let Ok(h) = jsonwebtoken::decode_header(token) else {
            return true; // malformed: new keys would not help
        };
        let Some(f) = family(h.alg) else {
            return true;
        };
        self.keys.read().iter().any(|k| matches(k, f, &h.kid))
    }

    /// Verify a compact JWS; the principal carries `sub`, the scopes and (with
    /// [`JwtVerifier::roles_from`]) the roles.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let now = fieldlab_core::time::now_ms() / 1000;
        if let Some((p, exp)) = self.cache.lock().get(token) {
            if now < *exp {
                return Ok(p.clone());
            }
        }
        self.verify_uncached(token)
    }

    fn verify_uncached(&self, token: &str) -> Result<Principal, String> {
        let h = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let Some(f) = family(h.alg) else {
            return Err(format!(
                "algorithm {:?} is not accepted (RS*, PS*, ES256/384 or EdDSA)",
                h.alg
            ));
        };
        let mut v = Validation::new(h.alg);
        let mut required = vec!["exp"];
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
            required.push("iss");
        }
        match &self.audience {
            Some(a) => {
                v.set_audience(&[a]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v.leeway = 30;
        let mut last = match &h.kid {
            Some(kid) => format!("no key `{kid}` for {:?} among the issuer's keys", h.alg),
            None => format!("no key for {:?}", h.alg),
        };
        let keys = self.keys.read();
        for k in keys.iter().filter(|k| matches(k, f, &h.kid)) {
            match jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &v) {
                Ok(d) => {
                    let c = d.claims;
                    let p = Principal {
                        subject: c
                            .get("sub")
                            .and_then(|s| s.as_str())
                            .unwrap_or("unknown")
                            .to_string(),
                        roles: self
                            .roles_claim
                            .as_ref()
                            .map(|claim| {
                                words(c.get(claim))
                                    .iter()
                                    .filter_map(|r| Role::parse(r))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        scopes: [words(c.get("scope")), words(c.get("scp"))].concat(),
                        method: AuthMethod::Jwt,
                    };
                    let exp = c.get("exp").and_then(|e| e.as_i64()).unwrap_or(0);
                    let mut cache = self.cache.lock();
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(token.to_string(), (p.clone(), exp));
                    return Ok(p);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("token refused: {last}"))
    }
}

fn matches(k: &Key, f: Family, kid: &Option<String>) -> bool {
    k.family == f && (kid.is_none() || k.kid.is_none() || &k.kid == kid)
}

/// The words of a claim: a space-separated string or an array of strings.
fn words(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// The usable keys of a JWKS (symmetric `oct` keys are skipped: never accepted from outside).
fn jwks_keys(set: &JwkSet) -> Result<Vec<Key>, String> {
    let mut out = Vec::new();
    for j in &set.keys {
        let family = match &j.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            _ => continue,
        };
        let key = DecodingKey::from_jwk(j).map_err(|e| format!("JWKS key: {e}"))?;
        out.push(Key {
            kid: j.common.key_id.clone(),
            family,
            key,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::process::Command;

    /// Generate an RSA or Ed25519 key pair with the `openssl` tool (test-time keys only);
    /// returns (private PEM, public PEM).
    pub fn openssl_keypair(dir: &Path, kind: &str) -> (Vec<u8>, Vec<u8>) {
        let key = dir.join(format!("{kind}.key"));
        let alg: &[&str] = if kind == "rsa" {
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        } else {
            &["-algorithm", "ED25519"]
        };
        let ok = Command::new("openssl")
            .arg("genpkey")
            .args(alg)
            .arg("-out")
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genpkey failed");
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .output()
            .unwrap();
        (std::fs::read(&key).unwrap(), out.stdout)
    }

    pub fn token(
        private_pem: &[u8],
        alg: Algorithm,
        kid: Option<&str>,
        claims: serde_json::Value,
    ) -> String {
        let key = if alg == Algorithm::RS256 {
            EncodingKey::from_rsa_pem(private_pem).unwrap()
        } else {
            EncodingKey::from_ed_pem(private_pem).unwrap()
        };
        let mut h = Header::new(alg);
        h.kid = kid.map(String::from);
        encode(&h, &claims, &key).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn rs256_and_eddsa_tokens_with_iss_aud_exp_and_scopes() {
        let d = tempfile::tempdir().unwrap();
        let (rsa_priv, rsa_pub) = openssl_keypair(d.path(), "rsa");
        let (ed_priv, ed_pub) = openssl_keypair(d.path(), "ed25519");
        let mut v = JwtVerifier::new("https://auth.example", "cap-verifier");
        v.add_pem(&rsa_pub, None).unwrap();
        v.add_pem(&ed_pub, None).unwrap();
        let good = serde_json::json!({"sub": "auditor", "iss": "https://auth.example", "aud": "cap-verifier", "exp": now() + 600, "scope": "verify:run policy:read"});
        let p = v
            .verify(&token(&rsa_priv, Algorithm::RS256, None, good.clone()))
            .unwrap();
        assert_eq!(p.subject, "auditor");
        assert!(p.has_scope("verify:run") && !p.has_scope("registry:write"));
        assert!(v
            .verify(&token(&ed_priv, Algorithm::EdDSA, None, good.clone()))
            .is_ok());
        for (k, bad) in [
            ("iss", serde_json::json!("https://evil")),
            ("aud", serde_json::json!("other")),
            ("exp", serde_json::json!(now() - 3600)),
        ] {
            let mut c = good.clone();
            c[k] = bad;
            assert!(
                v.verify(&token(&rsa_priv, Algorithm::RS256, None, c))
                    .is_err(),
                "{k} accepted"
            );
        }
        // A token signed by a key that is not configured.
        let (other_priv, _) = openssl_keypair(d.path(), "ed25519");
        assert!(v
            .verify(&token(&other_priv, Algorithm::EdDSA, None, good.clone()))
            .is_err());
        // HS256 (the legacy verifier's shared-secret bypass) is refused outright.
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(v.verify(&hs).unwrap_err().contains("not accepted"));
        assert!(JwtVerifier::new("i", "a")
            .verify(&token(&rsa_priv, Algorithm::RS256, None, good))
            .is_err());
    }

    #[test]
    fn jwks_keys_are_selected_by_kid() {
        let d = tempfile::tempdir().unwrap();
        let (ed_priv, _) = openssl_keypair(d.path(), "ed25519");
        // The raw public key: last 32 bytes of the DER SubjectPublicKeyInfo.
        let der = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(d.path().join("ed25519.key"))
            .output()
            .unwrap()
            .stdout;
        use base64::Engine;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "x": x}]});
        let mut v = JwtVerifier::new("iss", "aud");
        assert_eq!(v.add_jwks(&jwks.to_string()).unwrap(), 1);
        let c = serde_json::json!({"sub": "s", "iss": "iss", "aud": "aud", "exp": now() + 60, "scp": ["registry:write"]});
        assert!(v
            .verify(&token(&ed_priv, Algorithm::EdDSA, Some("k1"), c.clone()))
            .unwrap()
            .has_scope("registry:write"));
        assert!(v
            .verify(&token(&ed_priv, Algorithm::EdDSA, Some("k2"), c))
            .is_err());
    }
}
