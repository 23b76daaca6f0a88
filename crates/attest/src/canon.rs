//! The one canonical encoding of fieldlab's proofs: RFC 8785 JSON (JCS).
//!
//! Why it exists: the legacy `cap` computed "the manifest hash" three different ways. Here every byte
//! string that is hashed or signed is `canonical(value)`: object members sorted by their UTF-16
//! code units, no whitespace, strings escaped as ECMAScript `JSON.stringify` does, numbers in
//! ECMAScript `Number.prototype.toString` form.
//!
//! Hand-written rather than `serde_jcs` because `prepare` encodes a million records per run
//! (this encoder writes into one reused buffer without building intermediate maps), and because
//! integers whose double prints as another number (9007199254740993 prints as ...992) must be
//! refused rather than silently rounded. RFC 8785 numbers are doubles: an integer text is
//! canonical when it is the ECMAScript text of the double it denotes (9007199254740992 and
//! 1152921504606847000 are; 9007199254740993 and 1152921504606846976, 2^60 in full, are not). The tests cross-check it
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
    #[error("number {0} cannot be encoded exactly in RFC 8785 JSON (no IEEE 754 double holds it, or it is not finite)")]
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
            keys.sort_by(|a, b| key_order(a, b));
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
    // Integers are doubles too: accepted when their decimal text is the ECMAScript text of the
    // nearest double (2^53 as 9007199254740992, 2^60 as 1152921504606847000), refused when that double would print
    // as another number (9007199254740993 prints as ...992: fieldlab does not round).
    let exact = |m: u64| {
        m <= MAX_SAFE || {
            let mut b = ryu_js::Buffer::new();
            b.format_finite(m as f64) == m.to_string()
        }
    };
    if let Some(u) = n.as_u64() {
        if !exact(u) {
            return Err(CanonError::Number(n.to_string()));
        }
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        if !exact(i.unsigned_abs()) {
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
///
/// Checked in one pass over the bytes, without building a `serde_json::Value` (the bundle
/// verifier runs this on every file of every bundle): the answer is the same as parsing the
/// bytes and comparing them with [`write_value`] of the result ([`is_canonical_value`]; a
/// property test below holds the two to agree). Scalars are decided by the very code the
/// reference uses: a number's text is parsed by serde_json and re-encoded by the same number
/// writer; a string with an escape is decoded by serde_json and re-encoded by [`write_string`].
pub fn is_canonical(bytes: &[u8]) -> bool {
    // UTF-8 is checked once for the whole document (one vectorised pass); every string the
    // checker cuts out starts and ends at an ASCII quote, so it is valid UTF-8 too.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut c = Checker {
        s: text,
        b: bytes,
        i: 0,
    };
    c.value(0) && c.i == bytes.len()
}

/// serde_json refuses input nested deeper than this; so does [`is_canonical`].
const MAX_DEPTH: usize = 128;

struct Checker<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Checker<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, lit: &[u8]) -> bool {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'"') => self.string().is_some(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return false;
                }
                self.i += 1;
                if self.eat(b']') {
                    return true;
                }
                loop {
                    if !self.value(depth + 1) {
                        return false;
                    }
                    if self.eat(b']') {
                        return true;
                    }
                    if !self.eat(b',') {
                        return false;
                    }
                }
            }
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return false;
                }
                self.i += 1;
                if self.eat(b'}') {
                    return true;
                }
                let mut prev: Option<std::borrow::Cow<'a, str>> = None;
                loop {
                    if self.peek() != Some(b'"') {
                        return false;
                    }
                    let Some(k) = self.string() else {
                        return false;
                    };
                    // Members strictly ascending in RFC 8785 order: sorted and no duplicates
                    // (a duplicate would collapse in the parsed value and not re-encode).
                    if prev
                        .as_ref()
                        .is_some_and(|p| key_order(p, &k) != std::cmp::Ordering::Less)
                    {
                        return false;
                    }
                    if !self.eat(b':') || !self.value(depth + 1) {
                        return false;
                    }
                    prev = Some(k);
                    if self.eat(b'}') {
                        return true;
                    }
                    if !self.eat(b',') {
                        return false;
                    }
                }
            }
            _ => false,
        }
    }

    /// A string at `self.i` in canonical form; its decoded text.
    fn string(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        let start = self.i;
        let mut j = start + 1;
        let mut escaped = false;
        loop {
            // Jump to the next quote or backslash; nothing in between may be a control
            // character (canonical JSON escapes them).
            let k = j + memchr::memchr2(b'"', b'\\', self.b.get(j..)?)?;
            // `fold` without early exit vectorises (`any` walks byte by byte).
            if self.b[j..k].iter().fold(false, |a, &c| a | (c < 0x20)) {
                return None;
            }
            if self.b[k] == b'"' {
                j = k;
                break;
            }
            escaped = true;
            j = k + 2;
        }
        let lit = self.b.get(start..=j)?;
        self.i = j + 1;
        if !escaped {
            // No escape and no control character: the canonical form is the text itself.
            return Some(std::borrow::Cow::Borrowed(&self.s[start + 1..j]));
        }
        let s: String = serde_json::from_slice(lit).ok()?;
        let mut again = Vec::with_capacity(lit.len());
        write_string(&mut again, &s);
        (again == lit).then_some(std::borrow::Cow::Owned(s))
    }

    fn number(&mut self) -> bool {
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.i += 1;
        }
        let lit = &self.b[start..self.i];
        // Fast path: an integer of at most 15 digits (below 2^53, so exactly what ECMAScript
        // prints) without a leading zero or a minus zero is canonical as it stands.
        let digits = lit.strip_prefix(b"-").unwrap_or(lit);
        if !digits.is_empty()
            && digits.len() <= 15
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || (digits.len() == 1 && digits.len() == lit.len()))
        {
            return true;
        }
        let Ok(n) = serde_json::from_slice::<serde_json::Number>(lit) else {
            return false;
        };
        let mut again = Vec::with_capacity(lit.len());
        write_number(&mut again, &n).is_ok() && again == lit
    }
}

/// RFC 8785 §3.2.3 member order: by UTF-16 code units.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    // ASCII keys (nearly all) compare the same in both orders; skip the UTF-16 walk.
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
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

/// Serde for an audit path (`Vec<[u8; 32]>`) written as lower-case hex strings: decoded
/// while parsing, straight from the input text (no `String` per hash; a bundle holds hundreds
/// of them), with [`parse_hex32`]'s strictness.
pub mod hex_hashes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(super::hex32))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        struct One;
        impl Visitor<'_> for One {
            type Value = [u8; 32];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 lower-case hex digits")
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<[u8; 32], E> {
                super::parse_hex32(s)
                    .ok_or_else(|| E::custom(format!("`{s}` is not 64 lower-case hex digits")))
            }
        }
        struct Hash([u8; 32]);
        impl<'de> serde::Deserialize<'de> for Hash {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
                d.deserialize_str(One).map(Hash)
            }
        }
        struct Seq;
        impl<'de> Visitor<'de> for Seq {
            type Value = Vec<[u8; 32]>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of hashes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
                while let Some(Hash(h)) = a.next_element()? {
                    out.push(h);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq)
    }
}

/// Parse exactly 64 lower-case hex digits (upper case is refused so that every hash has one
/// spelling and a flipped case bit is detected).
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    // One pass that both checks and decodes (a proof holds hundreds of hashes; the `hex`
    // crate's decoder after a separate check was 7% of a bundle verification).
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hex32_round_trips_and_refuses_other_spellings() {
        let h: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
        assert_eq!(parse_hex32(&hex32(&h)), Some(h));
        let up = hex32(&h).to_uppercase();
        assert_eq!(parse_hex32(&up), None, "upper case");
        assert_eq!(parse_hex32(&hex32(&h)[..62]), None, "short");
        assert_eq!(parse_hex32(&format!("{}0", hex32(&h))), None, "long");
        assert_eq!(
            parse_hex32(&format!("g{}", &hex32(&h)[1..])),
            None,
            "not hex"
        );
    }

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

    /// RFC 8785 Appendix B: IEEE 754 doubles (as bits) and their canonical text; NaN and the
    /// infinities have none.
    const RFC8785_NUMBERS: &[(u64, Option<&str>)] = &[
        (0x0000000000000000, Some("0")),
        (0x8000000000000000, Some("0")),
        (0x0000000000000001, Some("5e-324")),
        (0x8000000000000001, Some("-5e-324")),
        (0x7fefffffffffffff, Some("1.7976931348623157e+308")),
        (0xffefffffffffffff, Some("-1.7976931348623157e+308")),
        (0x4340000000000000, Some("9007199254740992")),
        (0xc340000000000000, Some("-9007199254740992")),
        (0x4430000000000000, Some("295147905179352830000")),
        (0x7fffffffffffffff, None),
        (0x7ff0000000000000, None),
        (0x44b52d02c7e14af5, Some("9.999999999999997e+22")),
        (0x44b52d02c7e14af6, Some("1e+23")),
        (0x44b52d02c7e14af7, Some("1.0000000000000001e+23")),
        (0x444b1ae4d6e2ef4e, Some("999999999999999700000")),
        (0x444b1ae4d6e2ef4f, Some("999999999999999900000")),
        (0x444b1ae4d6e2ef50, Some("1e+21")),
        (0x3eb0c6f7a0b5ed8c, Some("9.999999999999997e-7")),
        (0x3eb0c6f7a0b5ed8d, Some("0.000001")),
        (0x41b3de4355555553, Some("333333333.3333332")),
        (0x41b3de4355555554, Some("333333333.33333325")),
        (0x41b3de4355555555, Some("333333333.3333333")),
        (0x41b3de4355555556, Some("333333333.3333334")),
        (0x41b3de4355555557, Some("333333333.33333343")),
        (0xbecbf647612f3696, Some("-0.0000033333333333333333")),
        (0x43143ff3c1cb0959, Some("1424953923781206.2")),
    ];

    /// Each double is written as the RFC says, and its text, parsed as a verifier parses a
    /// bundle's JSON, is that very double again and canonical.
    #[test]
    fn rfc8785_number_vectors() {
        for &(bits, want) in RFC8785_NUMBERS {
            let f = f64::from_bits(bits);
            let got = serde_json::Number::from_f64(f).map(|n| {
                let mut out = Vec::new();
                write_number(&mut out, &n).unwrap();
                String::from_utf8(out).unwrap()
            });
            assert_eq!(got.as_deref(), want, "{bits:016x}");
            if let Some(text) = want {
                let v: Value = serde_json::from_str(text).unwrap();
                let back = v.as_f64().unwrap();
                assert!(back == f, "{bits:016x}: {text} parsed as {back:e}");
                assert!(is_canonical(text.as_bytes()), "{text}");
            }
        }
    }

    /// The numbers the independent verifier found rejected: correctly rounded parsing keeps
    /// them, so a record's bytes survive parse and re-encoding unchanged.
    #[test]
    fn correctly_rounded_numbers_survive_a_round_trip() {
        for text in [
            "252.33333333333334",
            "96.81818181818181",
            "0.1",
            "1e-7",
            "123456789.12345679",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let mut out = Vec::new();
            write_value(&mut out, &v).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), text);
            assert!(is_canonical(text.as_bytes()), "{text}");
        }
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

        /// Any finite double: its canonical text parses back to the same bits (-0 to 0), is
        /// itself canonical, and re-encodes to the same text.
        #[test]
        fn every_double_round_trips(bits in proptest::prelude::any::<u64>()) {
            let f = f64::from_bits(bits);
            proptest::prop_assume!(f.is_finite());
            let mut out = Vec::new();
            write_number(&mut out, &serde_json::Number::from_f64(f).unwrap()).unwrap();
            let text = String::from_utf8(out).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let back = v.as_f64().unwrap();
            proptest::prop_assert!(back == f, "{} parsed as {:e}, want {:e}", text, back, f);
            let mut again = Vec::new();
            write_value(&mut again, &v).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(again).unwrap(), text.clone());
            proptest::prop_assert!(is_canonical(text.as_bytes()), "{}", text);
        }

        /// The one-pass checker answers exactly as "parse, re-encode, compare" does, for
        /// canonical encodings and for every kind of damage to them.
        #[test]
        fn one_pass_check_agrees_with_reencoding(v in json_value(), edits in proptest::collection::vec((0usize..10_000, 0usize..4, proptest::sample::select(EDIT_BYTES.to_vec())), 0..3)) {
            let mut b = canonical(&v).unwrap();
            proptest::prop_assert!(is_canonical(&b));
            proptest::prop_assert!(reference(&b));
            for (at, kind, byte) in edits {
                let at = at % (b.len() + 1);
                match kind {
                    0 => b.insert(at, byte),
                    1 if at < b.len() => { b.remove(at); }
                    2 if at < b.len() => b[at] = byte,
                    _ if at < b.len() => b[at] ^= 1 << (byte % 8),
                    _ => {}
                }
            }
            proptest::prop_assert_eq!(is_canonical(&b), reference(&b), "{}", String::from_utf8_lossy(&b));
        }
    }

    fn reference(bytes: &[u8]) -> bool {
        serde_json::from_slice::<Value>(bytes).is_ok_and(|v| is_canonical_value(bytes, &v))
    }

    const EDIT_BYTES: &[u8] = b" \t\n\"\\,:{}[]0123456789.eE+-abfnrtu\x00\x1f\x7f\xc3\xa9\xff";

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text =
            "([a-c\"\\/\u{0}-\u{1f}\u{7f}\u{e9}\u{e000}\u{ffff}\u{10000}\u{1f600}]|[a-z]){0,6}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53)..(1i64 << 53)).prop_map(|i| json!(i)),
            (0..=MAX_SAFE).prop_map(|u| json!(u)),
            (-1e25f64..1e25).prop_map(|f| json!(f)),
            (-1e-5f64..1e-5).prop_map(|f| json!(f)),
            proptest::string::string_regex(text)
                .unwrap()
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::string::string_regex(text).unwrap(),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn one_pass_check_edge_cases() {
        for (text, want) in [
            ("{}", true),
            ("[]", true),
            ("\"\"", true),
            ("-0", false),
            ("0", true),
            ("1.0", false),
            ("1e21", false),
            ("1e+21", true),
            ("9007199254740993", false),
            ("9007199254740992", true),
            ("-9007199254740992", true),
            ("1152921504606846976", false),
            ("1152921504606847000", true),
            ("18446744073709551615", false),
            ("295147905179352830000", true),
            ("\"\\u0008\"", false),
            ("\"\\b\"", true),
            ("\"\\u001f\"", true),
            ("\"\\u001F\"", false),
            ("\"\\/\"", false),
            ("\"\\ud83d\\ude00\"", false),
            ("\"\u{1f600}\"", true),
            ("{\"a\":1,\"a\":1}", false),
            ("{\"b\":1,\"a\":1}", false),
            ("{\"\u{10000}\":2,\"\u{e000}\":1}", true),
            ("{\"\u{e000}\":1,\"\u{10000}\":2}", false),
            ("[1,2] ", false),
            (" [1,2]", false),
            ("[1,]", false),
            ("nul", false),
            ("\"abc", false),
        ] {
            assert_eq!(is_canonical(text.as_bytes()), want, "{text}");
            assert_eq!(reference(text.as_bytes()), want, "reference: {text}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(is_canonical(deep.as_bytes()), reference(deep.as_bytes()));
        assert!(!is_canonical(b"\"\xff\""));
    }
}
