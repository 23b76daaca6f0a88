//! The one canonical encoding of fieldlab's proofs: RFC 8785 JSON (JCS).
//!
//! Why it exists: upstream computed "the manifest hash" three different ways. Here every byte
//! string that is hashed or signed is `canonical(value)`: object members sorted by their UTF-16
//! code units, no whitespace, strings escaped as ECMAScript `JSON.stringify` does, numbers in
//! ECMAScript `Number.prototype.toString` form.
//!
//! Hand-written rather than `serde_jcs` because `prepare` encodes a million records per run
//! (this encoder writes into one reused buffer without building intermediate maps), and because
//! integers outside ±2^53 must be refused rather than silently rounded. The tests cross-check it
//! against `serde_jcs` — except for member names that need escaping, where `serde_jcs` sorts
//! the quoted/escaped form (so `"$ "` before `"$"`) while RFC 8785 §3.2.3 (and this encoder)
//! sorts the raw names; and `serde_jcs` sorts by UTF-8 bytes, not UTF-16 units (U+10000 vs
//! U+E000). The cross-check therefore uses names of equal length, without escapes, below U+D800.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest integer magnitude an IEEE double (and therefore JCS) represents exactly.
const MAX_SAFE: u64 = (1 << 53) - 1;

#[derive(Debug, thiserror::Error)]
pub enum CanonError {
    #[error("number {0} cannot be encoded exactly in RFC 8785 JSON (outside ±2^53 or not finite)")]
    Number(String),
    #[error("value cannot be represented as JSON: {0}")]
    Serialize(String),
}

/// Canonical bytes of any serialisable value.
pub fn canonical<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, CanonError> {
    let v = serde_json::to_value(v).map_err(|e| CanonError::Serialize(e.to_string()))?;
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, &v)?;
    Ok(out)
}

/// Canonical bytes of a JSON value, appended to `out`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) -> Result<(), CanonError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            // RFC 8785 §3.2.3: sort by UTF-16 code units (differs from UTF-8 byte order only
            // for characters above U+FFFF against U+E000..U+FFFF).
            // ASCII keys (nearly all) compare the same in both orders; skip the UTF-16 walk.
            keys.sort_by(|a, b| {
                if a.is_ascii() && b.is_ascii() {
                    a.cmp(b)
                } else {
                    a.encode_utf16().cmp(b.encode_utf16())
                }
            });
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                write_value(out, &m[k])?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) -> Result<(), CanonError> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE {
            return Err(CanonError::Number(n.to_string()));
        }
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE {
            return Err(CanonError::Number(n.to_string()));
        }
        out.extend_from_slice(i.to_string().as_bytes());
    } else {
        let f = n
            .as_f64()
            .ok_or_else(|| CanonError::Number(n.to_string()))?;
        if !f.is_finite() {
            return Err(CanonError::Number(n.to_string()));
        }
        let mut b = ryu_js::Buffer::new();
        out.extend_from_slice(b.format_finite(f).as_bytes());
    }
    Ok(())
}

/// A JSON string as ECMAScript `JSON.stringify` writes it (RFC 8785 §3.2.2.2).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Fast path: most strings (hashes, names) need no escaping at all.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `true` when `bytes` are exactly the canonical encoding of the JSON they contain.
pub fn is_canonical(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| is_canonical_value(bytes, &v))
}

/// `true` when `bytes` (which parsed to `v`) are exactly the canonical encoding of `v`.
pub fn is_canonical_value(bytes: &[u8], v: &Value) -> bool {
    let mut out = Vec::with_capacity(bytes.len());
    write_value(&mut out, v).is_ok() && out == bytes
}

/// SHA-256 of the canonical encoding.
pub fn sha256_canonical<T: Serialize + ?Sized>(v: &T) -> Result<[u8; 32], CanonError> {
    Ok(Sha256::digest(canonical(v)?).into())
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex, the only hex form fieldlab writes or accepts.
pub fn hex32(h: &[u8; 32]) -> String {
    hex::encode(h)
}

/// Parse exactly 64 lower-case hex digits (upper case is refused so that every hash has one
/// spelling and a flipped case bit is detected).
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    #[allow(clippy::excessive_precision)] // the RFC 8785 example number, verbatim
    fn rfc8785_examples() {
        // RFC 8785 §3.2.3 sorting example (keys in UTF-16 order) and number forms.
        let v = json!({"\u{20ac}": "Euro Sign", "\r": "Carriage Return", "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
                       "1": "One", "\u{1f600}": "Emoji: Grinning Face", "\u{0080}": "Control", "\u{00f6}": "Latin Small Letter O With Diaeresis"});
        let s = String::from_utf8(canonical(&v).unwrap()).unwrap();
        let order: Vec<&str> = [
            "\\r",
            "1",
            "\u{0080}",
            "\u{00f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ]
        .to_vec();
        let mut last = 0;
        for k in order {
            let at = s.find(&format!("\"{k}\"")).unwrap();
            assert!(at >= last, "{k} out of order in {s}");
            last = at;
        }
        assert_eq!(
            String::from_utf8(
                canonical(&json!([
                    1e21,
                    1e-7,
                    0.000001,
                    -0.0,
                    333333333.33333329,
                    4.5,
                    2e-3
                ]))
                .unwrap()
            )
            .unwrap(),
            "[1e+21,1e-7,0.000001,0,333333333.3333333,4.5,0.002]"
        );
        assert!(canonical(&json!(9007199254740993u64)).is_err());
        // Names are sorted raw, not escaped: `"` (U+0022) sorts before `0` (U+0030).
        assert_eq!(
            canonical(&json!({"0": 1, "\"": 2})).unwrap(),
            b"{\"\\\"\":2,\"0\":1}"
        );
        assert_eq!(
            canonical(&json!({"$ ": 1, "$": 2})).unwrap(),
            b"{\"$\":2,\"$ \":1}"
        );
        assert_eq!(
            String::from_utf8(canonical(&json!({"\u{e000}": 1, "\u{10000}": 2})).unwrap()).unwrap(),
            "{\"\u{10000}\":2,\"\u{e000}\":1}"
        );
        assert_eq!(
            canonical(&json!("a\u{1}\"\\\n")).unwrap(),
            b"\"a\\u0001\\\"\\\\\\n\""
        );
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_serde_jcs(keys in proptest::collection::vec("[ !#-\\[\\]-~\u{a0}-\u{d7ff}]{3}", 0..6),
                                 nums in proptest::collection::vec(-1e15f64..1e15, 0..6),
                                 ints in proptest::collection::vec(-(1i64<<52)..(1i64<<52), 0..6)) {
            let mut m = serde_json::Map::new();
            for (i, k) in keys.iter().enumerate() {
                m.insert(k.clone(), json!([nums.get(i), ints.get(i), k]));
            }
            let v = Value::Object(m);
            let ours = canonical(&v).unwrap();
            proptest::prop_assert_eq!(&ours, &serde_jcs::to_vec(&v).unwrap());
            proptest::prop_assert!(is_canonical(&ours));
        }
    }
}
