//! OAuth2 bearer JWT verification (RS256 and EdDSA) producing a [`Principal`].
//!
//! Why it exists: the verifier API (and any other fieldlab API) must accept tokens from an
//! external identity provider without holding its secrets. Keys come from PEM files (RSA or
//! Ed25519 public keys) or a JWKS file; issuer, audience and expiry are always checked; scopes
//! come from the `scope` claim (space-separated, RFC 8693) or `scp` (array). There is no bypass
//! token and no built-in key: with no keys configured, every token is refused.

use fieldlab_core::principal::{AuthMethod, Principal};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::path::Path;

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

pub struct JwtVerifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    /// Tokens already verified, until their expiry (as Envoy's `jwt_cache_config` does): a
    /// client sends the same token with every request, and an RS256/EdDSA check costs far more
    /// than the request it guards. Keys never change after construction, so an entry stays
    /// true until `exp`. Bounded: cleared when full.
    cache: std::sync::Mutex<std::collections::HashMap<String, (Principal, i64)>>,
}

const CACHE_MAX: usize = 4096;

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: i64,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
}

impl JwtVerifier {
    pub fn new(issuer: &str, audience: &str) -> JwtVerifier {
        JwtVerifier {
            keys: Vec::new(),
            issuer: issuer.into(),
            audience: audience.into(),
            cache: Default::default(),
        }
    }

    /// Add a PEM public key (RSA -> RS256, Ed25519 -> EdDSA).
    pub fn add_pem(&mut self, pem: &[u8], kid: Option<String>) -> Result<(), String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            self.keys.push(Key {
                kid,
                alg: Algorithm::RS256,
                key,
            });
            return Ok(());
        }
        let key = DecodingKey::from_ed_pem(pem)
            .map_err(|e| format!("not an RSA or Ed25519 public key in PEM: {e}"))?;
        self.keys.push(Key {
            kid,
            alg: Algorithm::EdDSA,
            key,
        });
        Ok(())
    }

    pub fn add_pem_file(&mut self, path: &Path) -> Result<(), String> {
        let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.add_pem(&b, None)
            .map_err(|m| format!("{}: {m}", path.display()))
    }

    /// Add every RSA and Ed25519 key of a JWKS document.
    pub fn add_jwks(&mut self, json: &str) -> Result<usize, String> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut n = 0;
        for j in &set.keys {
            let alg = match &j.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                _ => continue,
            };
            let key = DecodingKey::from_jwk(j).map_err(|e| format!("JWKS key: {e}"))?;
            self.keys.push(Key {
                kid: j.common.key_id.clone(),
                alg,
                key,
            });
            n += 1;
        }
        Ok(n)
    }

    pub fn add_jwks_file(&mut self, path: &Path) -> Result<usize, String> {
        let t = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.add_jwks(&t)
            .map_err(|m| format!("{}: {m}", path.display()))
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Verify a compact JWS; the principal carries `sub` and the scopes.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let now = fieldlab_core::time::now_ms() / 1000;
        if let Some((p, exp)) = self.cache.lock().unwrap().get(token) {
            if now < *exp {
                return Ok(p.clone());
            }
        }
        self.verify_uncached(token)
    }

    fn verify_uncached(&self, token: &str) -> Result<Principal, String> {
        let h = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if !matches!(h.alg, Algorithm::RS256 | Algorithm::EdDSA) {
            return Err(format!(
                "algorithm {:?} is not accepted (RS256 or EdDSA)",
                h.alg
            ));
        }
        let mut v = Validation::new(h.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = 30;
        let mut last = "no key matches the token's algorithm and kid".to_string();
        for k in self
            .keys
            .iter()
            .filter(|k| k.alg == h.alg && (h.kid.is_none() || k.kid.is_none() || k.kid == h.kid))
        {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(d) => {
                    let mut scopes: Vec<String> = d
                        .claims
                        .scope
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(String::from)
                        .collect();
                    scopes.extend(d.claims.scp.unwrap_or_default());
                    let p = Principal {
                        subject: d.claims.sub.unwrap_or_else(|| "unknown".into()),
                        roles: Vec::new(),
                        scopes,
                        method: AuthMethod::Jwt,
                    };
                    let mut c = self.cache.lock().unwrap();
                    if c.len() >= CACHE_MAX {
                        c.clear();
                    }
                    c.insert(token.to_string(), (p.clone(), d.claims.exp));
                    return Ok(p);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("token refused: {last}"))
    }
}

#[cfg(test)]
pub mod tests {
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
