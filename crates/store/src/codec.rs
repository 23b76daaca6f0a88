//! Column codecs for block chunks: Gorilla delta-of-delta timestamps, Gorilla XOR floats, and
//! compact encodings for integers, booleans and strings.
//!
//! A chunk is one series' points inside one block. Its timestamps always use delta-of-delta;
//! its values use the codec that fits the values' types (`ValueCodec`), picked per chunk, so a
//! series whose type changes mid-life (a schema break) still stores losslessly.
//!
//! Layout of an encoded chunk: `[codec: u8][ts_len: varint][timestamps][values]`.

use crate::bits::{BitReader, BitWriter};
use fieldlab_core::FieldValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueCodec {
    /// Gorilla XOR of consecutive IEEE-754 doubles.
    Xor = 1,
    /// Zig-zag varints of consecutive differences.
    DeltaInt = 2,
    /// One bit per value.
    Bits = 3,
    /// Length-prefixed UTF-8.
    Strings = 4,
    /// One type tag per value, then the value; for chunks of mixed types.
    Tagged = 5,
}

impl ValueCodec {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => ValueCodec::Xor,
            2 => ValueCodec::DeltaInt,
            3 => ValueCodec::Bits,
            4 => ValueCodec::Strings,
            5 => ValueCodec::Tagged,
            _ => return None,
        })
    }

    fn for_values(values: &[FieldValue]) -> Self {
        let first = match values.first() {
            Some(v) => std::mem::discriminant(v),
            None => return ValueCodec::Xor,
        };
        if values.iter().any(|v| std::mem::discriminant(v) != first) {
            return ValueCodec::Tagged;
        }
        match values[0] {
            FieldValue::F64(_) => ValueCodec::Xor,
            FieldValue::I64(_) => ValueCodec::DeltaInt,
            FieldValue::Bool(_) => ValueCodec::Bits,
            FieldValue::Str(_) => ValueCodec::Strings,
        }
    }
}

/// Encode a chunk. `points` must be sorted by time without duplicate timestamps.
pub fn encode_chunk(points: &[(i64, FieldValue)]) -> Vec<u8> {
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    let values: Vec<FieldValue> = points.iter().map(|p| p.1.clone()).collect();
    let codec = ValueCodec::for_values(&values);
    let ts_bytes = encode_timestamps(&ts);
    let mut out = Vec::with_capacity(ts_bytes.len() + points.len() * 2 + 8);
    out.push(codec as u8);
    put_uvarint(&mut out, ts_bytes.len() as u64);
    out.extend_from_slice(&ts_bytes);
    match codec {
        ValueCodec::Xor => {
            let f: Vec<f64> = values
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            out.extend_from_slice(&encode_xor(&f));
        }
        ValueCodec::DeltaInt => {
            let mut prev = 0i64;
            for v in &values {
                if let FieldValue::I64(i) = v {
                    put_ivarint(&mut out, i.wrapping_sub(prev));
                    prev = *i;
                }
            }
        }
        ValueCodec::Bits => {
            let mut w = BitWriter::new();
            for v in &values {
                w.bit(matches!(v, FieldValue::Bool(true)));
            }
            out.extend_from_slice(&w.finish());
        }
        ValueCodec::Strings => {
            for v in &values {
                if let FieldValue::Str(s) = v {
                    put_uvarint(&mut out, s.len() as u64);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        ValueCodec::Tagged => {
            for v in &values {
                match v {
                    FieldValue::F64(f) => {
                        out.push(1);
                        out.extend_from_slice(&f.to_le_bytes());
                    }
                    FieldValue::I64(i) => {
                        out.push(2);
                        put_ivarint(&mut out, *i);
                    }
                    FieldValue::Bool(b) => out.push(if *b { 4 } else { 3 }),
                    FieldValue::Str(s) => {
                        out.push(5);
                        put_uvarint(&mut out, s.len() as u64);
                        out.extend_from_slice(s.as_bytes());
                    }
                }
            }
        }
    }
    out
}

/// Decode a chunk of `count` points. `None` means the bytes are corrupt.
pub fn decode_chunk(buf: &[u8], count: usize) -> Option<Vec<(i64, FieldValue)>> {
    let codec = ValueCodec::from_u8(*buf.first()?)?;
    let mut pos = 1;
    let ts_len = get_uvarint(buf, &mut pos)? as usize;
    let ts = decode_timestamps(buf.get(pos..pos.checked_add(ts_len)?)?, count)?;
    pos += ts_len;
    let rest = &buf[pos..];
    let values: Vec<FieldValue> = match codec {
        ValueCodec::Xor => decode_xor(rest, count)?
            .into_iter()
            .map(FieldValue::F64)
            .collect(),
        ValueCodec::DeltaInt => {
            let mut p = 0;
            let mut prev = 0i64;
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                prev = prev.wrapping_add(get_ivarint(rest, &mut p)?);
                v.push(FieldValue::I64(prev));
            }
            v
        }
        ValueCodec::Bits => {
            let mut r = BitReader::new(rest);
            (0..count)
                .map(|_| r.bit().map(FieldValue::Bool))
                .collect::<Option<_>>()?
        }
        ValueCodec::Strings => {
            let mut p = 0;
            (0..count)
                .map(|_| get_str(rest, &mut p).map(FieldValue::Str))
                .collect::<Option<_>>()?
        }
        ValueCodec::Tagged => {
            let mut p = 0;
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                let tag = *rest.get(p)?;
                p += 1;
                v.push(match tag {
                    1 => {
                        let b: [u8; 8] = rest.get(p..p + 8)?.try_into().ok()?;
                        p += 8;
                        FieldValue::F64(f64::from_le_bytes(b))
                    }
                    2 => FieldValue::I64(get_ivarint(rest, &mut p)?),
                    3 => FieldValue::Bool(false),
                    4 => FieldValue::Bool(true),
                    5 => FieldValue::Str(get_str(rest, &mut p)?),
                    _ => return None,
                });
            }
            v
        }
    };
    Some(ts.into_iter().zip(values).collect())
}

/// Gorilla delta-of-delta timestamps. Buckets are sized for millisecond timestamps with
/// jittery intervals: 0 -> `0`; 7 bits -> `10`; 9 bits -> `110`; 12 bits -> `1110`;
/// anything else -> `1111` + 64 bits.
pub fn encode_timestamps(ts: &[i64]) -> Vec<u8> {
    let mut w = BitWriter::new();
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for (i, &t) in ts.iter().enumerate() {
        if i == 0 {
            w.write(t as u64, 64);
        } else {
            let delta = t.wrapping_sub(prev);
            let dod = delta.wrapping_sub(prev_delta);
            if dod == 0 {
                w.bit(false);
            } else if fits(dod, 7) {
                w.write(0b10, 2);
                w.write(dod as u64, 7);
            } else if fits(dod, 9) {
                w.write(0b110, 3);
                w.write(dod as u64, 9);
            } else if fits(dod, 12) {
                w.write(0b1110, 4);
                w.write(dod as u64, 12);
            } else {
                w.write(0b1111, 4);
                w.write(dod as u64, 64);
            }
            prev_delta = delta;
        }
        prev = t;
    }
    w.finish()
}

pub fn decode_timestamps(buf: &[u8], count: usize) -> Option<Vec<i64>> {
    let mut r = BitReader::new(buf);
    let mut out = Vec::with_capacity(count);
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for i in 0..count {
        let t = if i == 0 {
            r.read(64)? as i64
        } else {
            let dod = if !r.bit()? {
                0
            } else if !r.bit()? {
                sign_extend(r.read(7)?, 7)
            } else if !r.bit()? {
                sign_extend(r.read(9)?, 9)
            } else if !r.bit()? {
                sign_extend(r.read(12)?, 12)
            } else {
                r.read(64)? as i64
            };
            let delta = prev_delta.wrapping_add(dod);
            prev_delta = delta;
            prev.wrapping_add(delta)
        };
        out.push(t);
        prev = t;
    }
    Some(out)
}

/// Gorilla XOR float compression.
pub fn encode_xor(values: &[f64]) -> Vec<u8> {
    let mut w = BitWriter::new();
    let mut prev = 0u64;
    // (leading, trailing) of the previous meaningful block; None until the first one.
    let mut window: Option<(u32, u32)> = None;
    for (i, v) in values.iter().enumerate() {
        let bits = v.to_bits();
        if i == 0 {
            w.write(bits, 64);
            prev = bits;
            continue;
        }
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.bit(false);
            continue;
        }
        w.bit(true);
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        match window {
            Some((pl, pt)) if lead >= pl && trail >= pt => {
                w.bit(false);
                let len = 64 - pl - pt;
                w.write(x >> pt, len);
            }
            _ => {
                w.bit(true);
                let len = 64 - lead - trail;
                w.write(lead as u64, 5);
                w.write((len % 64) as u64, 6); // 64 is stored as 0
                w.write(x >> trail, len);
                window = Some((lead, trail));
            }
        }
    }
    w.finish()
}

pub fn decode_xor(buf: &[u8], count: usize) -> Option<Vec<f64>> {
    let mut r = BitReader::new(buf);
    let mut out = Vec::with_capacity(count);
    let mut prev = 0u64;
    let mut window = (0u32, 0u32);
    for i in 0..count {
        if i == 0 {
            prev = r.read(64)?;
        } else if r.bit()? {
            if r.bit()? {
                let lead = r.read(5)? as u32;
                let mut len = r.read(6)? as u32;
                if len == 0 {
                    len = 64;
                }
                let trail = 64u32.checked_sub(lead + len)?;
                window = (lead, trail);
            }
            let (lead, trail) = window;
            let len = 64 - lead - trail;
            let x = r.read(len)? << trail;
            prev ^= x;
        }
        out.push(f64::from_bits(prev));
    }
    Some(out)
}

fn fits(v: i64, bits: u32) -> bool {
    let lo = -(1i64 << (bits - 1));
    let hi = (1i64 << (bits - 1)) - 1;
    (lo..=hi).contains(&v)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn get_ivarint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let u = get_uvarint(buf, pos)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

fn get_str(buf: &[u8], pos: &mut usize) -> Option<String> {
    let len = get_uvarint(buf, pos)? as usize;
    let bytes = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    String::from_utf8(bytes.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(a: &FieldValue, b: &FieldValue) -> bool {
        match (a, b) {
            (FieldValue::F64(x), FieldValue::F64(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<f64>().prop_map(FieldValue::F64),
            any::<i64>().prop_map(FieldValue::I64),
            any::<bool>().prop_map(FieldValue::Bool),
            ".{0,12}".prop_map(FieldValue::Str),
        ]
    }

    proptest! {
        #[test]
        fn timestamps_round_trip(ts in proptest::collection::vec(any::<i64>(), 0..200)) {
            let enc = encode_timestamps(&ts);
            prop_assert_eq!(decode_timestamps(&enc, ts.len()), Some(ts));
        }

        #[test]
        fn floats_round_trip_bit_exact(v in proptest::collection::vec(any::<f64>(), 0..200)) {
            let dec = decode_xor(&encode_xor(&v), v.len()).unwrap();
            prop_assert_eq!(dec.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                            v.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn chunks_of_any_types_round_trip(
            pts in proptest::collection::vec((any::<i64>(), value()), 0..100),
            homogeneous in any::<bool>(),
        ) {
            let pts: Vec<(i64, FieldValue)> = if homogeneous {
                pts.iter().map(|(t, _)| (*t, FieldValue::F64(*t as f64 / 7.0))).collect()
            } else { pts };
            let enc = encode_chunk(&pts);
            let dec = decode_chunk(&enc, pts.len()).unwrap();
            prop_assert_eq!(dec.len(), pts.len());
            for (a, b) in dec.iter().zip(&pts) {
                prop_assert_eq!(a.0, b.0);
                prop_assert!(same(&a.1, &b.1), "{:?} vs {:?}", a.1, b.1);
            }
        }
    }

    #[test]
    fn regular_series_compress_well() {
        // 1 Hz timestamps with a slowly varying value: the common sensor case.
        let pts: Vec<(i64, FieldValue)> = (0..1000)
            .map(|i| {
                (
                    1_767_225_600_000 + i * 1000,
                    FieldValue::F64(20.0 + ((i / 10) as f64) * 0.5),
                )
            })
            .collect();
        let enc = encode_chunk(&pts);
        let per_point = enc.len() as f64 / pts.len() as f64;
        assert!(per_point < 2.0, "{per_point} bytes/point");
    }

    #[test]
    fn corrupt_chunks_are_detected_not_panicking() {
        let pts: Vec<(i64, FieldValue)> = (0..10).map(|i| (i, FieldValue::I64(i))).collect();
        let enc = encode_chunk(&pts);
        assert!(decode_chunk(&enc[..enc.len() - 3], 10).is_none());
        assert!(decode_chunk(&[99], 1).is_none());
    }
}
