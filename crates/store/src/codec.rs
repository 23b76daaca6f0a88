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
    /// Floats that are exact decimals (`n / 10^e`, what sensors and `round(x, 2)` produce),
    /// stored as bit-packed integer deltas or delta-of-deltas.
    Decimal = 6,
    /// Integers as bit-packed deltas or delta-of-deltas.
    PackedInt = 7,
    /// Booleans as run lengths (values that rarely change).
    BoolRuns = 8,
    /// Strings from a small dictionary, one bit-packed index per value.
    Dict = 9,
}

impl ValueCodec {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => ValueCodec::Xor,
            2 => ValueCodec::DeltaInt,
            3 => ValueCodec::Bits,
            4 => ValueCodec::Strings,
            5 => ValueCodec::Tagged,
            6 => ValueCodec::Decimal,
            7 => ValueCodec::PackedInt,
            8 => ValueCodec::BoolRuns,
            9 => ValueCodec::Dict,
            _ => return None,
        })
    }

    fn for_values(values: &[&FieldValue]) -> Self {
        let first = match values.first() {
            Some(v) => std::mem::discriminant(*v),
            None => return ValueCodec::Xor,
        };
        if values.iter().any(|v| std::mem::discriminant(*v) != first) {
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
///
/// For each value type several encodings are tried and the smallest wins (block writes run in
/// the background, so spending a little CPU here for bytes on disk is the right trade).
pub fn encode_chunk(points: &[(i64, FieldValue)]) -> Vec<u8> {
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    let values: Vec<&FieldValue> = points.iter().map(|p| &p.1).collect();
    let (codec, body) = encode_values(&values);
    let ts_bytes = encode_timestamps(&ts);
    let mut out = Vec::with_capacity(ts_bytes.len() + body.len() + 8);
    out.push(codec as u8);
    put_uvarint(&mut out, ts_bytes.len() as u64);
    out.extend_from_slice(&ts_bytes);
    out.extend_from_slice(&body);
    out
}

fn encode_values(values: &[&FieldValue]) -> (ValueCodec, Vec<u8>) {
    let smallest = |a: (ValueCodec, Vec<u8>), b: Option<(ValueCodec, Vec<u8>)>| match b {
        Some(b) if b.1.len() < a.1.len() => b,
        _ => a,
    };
    match ValueCodec::for_values(values) {
        ValueCodec::Xor => {
            let f: Vec<f64> = values
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            let xor = (ValueCodec::Xor, encode_xor(&f));
            smallest(xor, encode_decimal(&f).map(|b| (ValueCodec::Decimal, b)))
        }
        ValueCodec::DeltaInt => {
            let ints: Vec<i64> = values
                .iter()
                .map(|v| match v {
                    FieldValue::I64(i) => *i,
                    _ => 0,
                })
                .collect();
            (ValueCodec::PackedInt, encode_ints(&ints))
        }
        ValueCodec::Bits => {
            let bools: Vec<bool> = values
                .iter()
                .map(|v| matches!(v, FieldValue::Bool(true)))
                .collect();
            let mut w = BitWriter::new();
            for b in &bools {
                w.bit(*b);
            }
            let bits = (ValueCodec::Bits, w.finish());
            smallest(bits, Some((ValueCodec::BoolRuns, encode_runs(&bools))))
        }
        ValueCodec::Strings => {
            let strs: Vec<&str> = values
                .iter()
                .map(|v| match v {
                    FieldValue::Str(s) => s.as_str(),
                    _ => "",
                })
                .collect();
            let mut plain = Vec::new();
            for s in &strs {
                put_uvarint(&mut plain, s.len() as u64);
                plain.extend_from_slice(s.as_bytes());
            }
            smallest(
                (ValueCodec::Strings, plain),
                encode_dict(&strs).map(|b| (ValueCodec::Dict, b)),
            )
        }
        _ => {
            let mut out = Vec::new();
            for v in values {
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
            (ValueCodec::Tagged, out)
        }
    }
}

/// Timestamps and numeric values zipped into points, `None` unless they are as many.
#[inline]
fn zip_points<T>(
    ts: Vec<i64>,
    vals: Vec<T>,
    wrap: impl Fn(T) -> FieldValue,
) -> Option<Vec<(i64, FieldValue)>> {
    if vals.len() != ts.len() {
        return None;
    }
    Some(
        ts.into_iter()
            .zip(vals)
            .map(|(t, v)| (t, wrap(v)))
            .collect(),
    )
}

/// Decode a chunk of `count` points. `None` means the bytes are corrupt.
pub fn decode_chunk(buf: &[u8], count: usize) -> Option<Vec<(i64, FieldValue)>> {
    let codec = ValueCodec::from_u8(*buf.first()?)?;
    let mut pos = 1;
    let ts_len = get_uvarint(buf, &mut pos)? as usize;
    let ts = decode_timestamps(buf.get(pos..pos.checked_add(ts_len)?)?, count)?;
    pos += ts_len;
    let rest = &buf[pos..];
    // The numeric codecs zip straight into the output (one allocation, no Vec<FieldValue>).
    let values: Vec<FieldValue> = match codec {
        ValueCodec::Xor | ValueCodec::Decimal => {
            let f = match codec {
                ValueCodec::Xor => decode_xor(rest, count)?,
                _ => decode_decimal(rest, count)?,
            };
            return zip_points(ts, f, FieldValue::F64);
        }
        ValueCodec::PackedInt => return zip_points(ts, decode_ints(rest, count)?, FieldValue::I64),
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
        ValueCodec::BoolRuns => decode_runs(rest, count)?
            .into_iter()
            .map(FieldValue::Bool)
            .collect(),
        ValueCodec::Dict => decode_dict(rest, count)?,
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

/// Exact powers of ten (literals, so encoder and decoder agree to the bit).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The smallest `e` such that every value is exactly `n / 10^e` for an integer `n` (below
/// 2^53), or `None`. This is the idea of ALP (Afroozeh et al., SIGMOD 2023): most sensor
/// floats were decimals before they were doubles.
fn decimal_exponent(values: &[f64]) -> Option<(u8, Vec<i64>)> {
    let mut e = 0usize;
    let mut ints = Vec::with_capacity(values.len());
    'next_e: while e < POW10.len() {
        ints.clear();
        for &v in values {
            let n = (v * POW10[e]).round();
            // Check what the decoder will compute, from the integer (so -0.0 fails here).
            let i = n as i64;
            if n.is_nan()
                || n.abs() >= 9_007_199_254_740_992.0
                || (i as f64 / POW10[e]).to_bits() != v.to_bits()
            {
                e += 1;
                continue 'next_e;
            }
            ints.push(i);
        }
        return Some((e as u8, ints));
    }
    None
}

/// `[e: u8][packed ints]`; `None` when the values are not short decimals.
fn encode_decimal(values: &[f64]) -> Option<Vec<u8>> {
    if values.is_empty() {
        return None;
    }
    let (e, ints) = decimal_exponent(values)?;
    let mut out = vec![e];
    out.extend_from_slice(&encode_ints(&ints));
    Some(out)
}

fn decode_decimal(buf: &[u8], count: usize) -> Option<Vec<f64>> {
    let e = *buf.first()? as usize;
    let scale = *POW10.get(e)?;
    Some(
        decode_ints(&buf[1..], count)?
            .into_iter()
            .map(|n| n as f64 / scale)
            .collect(),
    )
}

/// Values per bit-packing frame: each frame stores its own bit width, so a burst of large
/// residuals only costs width in its own frame.
const FRAME: usize = 128;

/// Integers as `[order: u8][head: ivarints][packed residuals]` (or order 3: value/run pairs). Order 1 stores the first value
/// and then the differences (random walks, counters); order 2 stores the first value and
/// difference and then the differences of differences (ramps, smooth curves). Both are tried;
/// the smaller wins. The head is kept out of the packed frames so a large first value does not
/// widen the first frame.
fn encode_ints(ints: &[i64]) -> Vec<u8> {
    let d1 = diff(ints);
    let mut best: Option<Vec<u8>> = None;
    for order in 1..=2usize {
        let mut out = vec![order as u8];
        let heads = order.min(d1.len());
        let mut res = d1.clone();
        if order == 2 && res.len() > 1 {
            // Keep d1[0] = x0 and d1[1] = x1 - x0, then second differences.
            let tail = diff(&res[1..]);
            res.truncate(1);
            res.extend_from_slice(&tail);
        }
        for &h in &res[..heads] {
            put_ivarint(&mut out, h);
        }
        out.extend_from_slice(&pack_residuals(&res[heads..]));
        if best.as_ref().is_none_or(|b| out.len() < b.len()) {
            best = Some(out);
        }
    }
    // Order 3: runs of equal values (states, step functions, dictionary indices).
    let mut runs = vec![3u8];
    let mut i = 0;
    while i < ints.len() {
        let mut j = i;
        while j < ints.len() && ints[j] == ints[i] {
            j += 1;
        }
        put_ivarint(&mut runs, ints[i]);
        put_uvarint(&mut runs, (j - i) as u64);
        i = j;
        if best.as_ref().is_some_and(|b| runs.len() >= b.len()) {
            return best.unwrap_or_default();
        }
    }
    if best.as_ref().is_none_or(|b| runs.len() < b.len()) {
        best = Some(runs);
    }
    best.unwrap_or_default()
}

fn decode_ints(buf: &[u8], count: usize) -> Option<Vec<i64>> {
    let order = *buf.first()? as usize;
    let mut p = 1;
    if order == 3 {
        let mut v = Vec::with_capacity(count);
        while v.len() < count {
            let x = get_ivarint(buf, &mut p)?;
            let n = get_uvarint(buf, &mut p)? as usize;
            if n == 0 || n > count - v.len() {
                return None;
            }
            v.extend(std::iter::repeat_n(x, n));
        }
        return Some(v);
    }
    if !(1..=2).contains(&order) {
        return None;
    }
    let heads = order.min(count);
    let mut v = Vec::with_capacity(count);
    for _ in 0..heads {
        v.push(get_ivarint(buf, &mut p)?);
    }
    v.extend(unpack_residuals(&buf[p..], count - heads)?);
    if order == 2 && v.len() > 1 {
        integrate(&mut v[1..]);
    }
    integrate(&mut v);
    Some(v)
}

/// First element kept, then consecutive (wrapping) differences.
fn diff(v: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(v.len());
    let mut prev = 0i64;
    for (i, &x) in v.iter().enumerate() {
        out.push(if i == 0 { x } else { x.wrapping_sub(prev) });
        prev = x;
    }
    out
}

fn integrate(v: &mut [i64]) {
    for i in 1..v.len() {
        v[i] = v[i].wrapping_add(v[i - 1]);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Frames of `FRAME` zig-zagged values: `[width: u8]` then `width` bits per value.
fn pack_residuals(v: &[i64]) -> Vec<u8> {
    let mut w = BitWriter::new();
    for frame in v.chunks(FRAME) {
        let width = frame
            .iter()
            .map(|&x| 64 - zigzag(x).leading_zeros())
            .max()
            .unwrap_or(0);
        w.write(width as u64, 8);
        if width > 0 {
            for &x in frame {
                w.write(zigzag(x), width);
            }
        }
    }
    w.finish()
}

fn unpack_residuals(buf: &[u8], count: usize) -> Option<Vec<i64>> {
    let mut r = BitReader::new(buf);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let n = FRAME.min(count - out.len());
        let width = r.read(8)? as u32;
        if width > 64 {
            return None;
        }
        for _ in 0..n {
            out.push(if width == 0 {
                0
            } else {
                unzigzag(r.read(width)?)
            });
        }
    }
    Some(out)
}

/// `[first: u8]` then the length of each run of equal values.
fn encode_runs(bools: &[bool]) -> Vec<u8> {
    let mut out = vec![bools.first().copied().unwrap_or(false) as u8];
    let mut i = 0;
    while i < bools.len() {
        let mut j = i;
        while j < bools.len() && bools[j] == bools[i] {
            j += 1;
        }
        put_uvarint(&mut out, (j - i) as u64);
        i = j;
    }
    out
}

fn decode_runs(buf: &[u8], count: usize) -> Option<Vec<bool>> {
    let mut cur = *buf.first()? != 0;
    let mut p = 1;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let n = get_uvarint(buf, &mut p)? as usize;
        if n == 0 || n > count - out.len() {
            return None;
        }
        out.extend(std::iter::repeat_n(cur, n));
        cur = !cur;
    }
    Some(out)
}

/// `[n: varint][n strings][indices packed like integers]`; `None` for more than 4096
/// distinct values (then plain strings are as good).
fn encode_dict(strs: &[&str]) -> Option<Vec<u8>> {
    let mut dict: Vec<&str> = Vec::new();
    let mut pos = std::collections::HashMap::new();
    let mut idx = Vec::with_capacity(strs.len());
    for s in strs {
        let i = *pos.entry(*s).or_insert_with(|| {
            dict.push(s);
            dict.len() - 1
        });
        if dict.len() > 4096 {
            return None;
        }
        idx.push(i as i64);
    }
    let mut out = Vec::new();
    put_uvarint(&mut out, dict.len() as u64);
    for s in &dict {
        put_uvarint(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&encode_ints(&idx));
    Some(out)
}

fn decode_dict(buf: &[u8], count: usize) -> Option<Vec<FieldValue>> {
    let mut p = 0;
    let n = get_uvarint(buf, &mut p)? as usize;
    if n > 4096 {
        return None;
    }
    let mut dict = Vec::with_capacity(n);
    for _ in 0..n {
        dict.push(get_str(buf, &mut p)?);
    }
    decode_ints(&buf[p..], count)?
        .into_iter()
        .map(|i| {
            dict.get(usize::try_from(i).ok()?)
                .cloned()
                .map(FieldValue::Str)
        })
        .collect()
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

    /// `pts` encoded and decoded again are `pts`, to the bit.
    fn round_trips(pts: &[(i64, FieldValue)]) -> Result<(), TestCaseError> {
        let enc = encode_chunk(pts);
        let dec = decode_chunk(&enc, pts.len()).unwrap();
        prop_assert_eq!(dec.len(), pts.len());
        for (a, b) in dec.iter().zip(pts) {
            prop_assert_eq!(a.0, b.0);
            prop_assert!(same(&a.1, &b.1), "{:?} vs {:?}", a.1, b.1);
        }
        Ok(())
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
            round_trips(&pts)?;
        }
    }

    /// Homogeneous chunks of each type, shaped so that every specialised codec gets picked.
    fn typed_column() -> impl Strategy<Value = Vec<FieldValue>> {
        prop_oneof![
            proptest::collection::vec((-100_000i64..100_000, 0u8..4), 0..300).prop_map(|v| v
                .into_iter()
                .map(|(n, e)| FieldValue::F64(n as f64 / POW10[e as usize]))
                .collect()),
            proptest::collection::vec(any::<i64>(), 0..300)
                .prop_map(|v| v.into_iter().map(FieldValue::I64).collect()),
            proptest::collection::vec(-50i64..50, 0..300)
                .prop_map(|v| v.into_iter().map(FieldValue::I64).collect()),
            proptest::collection::vec(any::<bool>(), 0..300)
                .prop_map(|v| v.into_iter().map(FieldValue::Bool).collect()),
            proptest::collection::vec(0usize..3, 0..300)
                .prop_map(|v| v.into_iter().map(|i| FieldValue::Bool(i == 0)).collect()),
            proptest::collection::vec("(ok|warn|fault|.{0,6})", 0..300)
                .prop_map(|v| v.into_iter().map(FieldValue::Str).collect()),
        ]
    }

    proptest! {
        #[test]
        fn typed_chunks_round_trip(col in typed_column(), start in any::<i32>()) {
            let pts: Vec<(i64, FieldValue)> = col
                .into_iter()
                .enumerate()
                .map(|(i, v)| (start as i64 + i as i64 * 1000, v))
                .collect();
            round_trips(&pts)?;
        }
    }

    #[test]
    fn sensor_decimals_ints_bools_and_statuses_are_compact() {
        let t0 = 1_767_225_600_000i64;
        let mut walk = 2150i64;
        let temps: Vec<(i64, FieldValue)> = (0..3600)
            .map(|i| {
                walk += [-2, -1, 0, 0, 1, 2][(i * 7919 % 6) as usize];
                (t0 + i * 1000, FieldValue::F64(walk as f64 / 100.0))
            })
            .collect();
        let enc = encode_chunk(&temps);
        assert_eq!(enc[0], ValueCodec::Decimal as u8);
        assert!(enc.len() as f64 / 3600.0 < 1.0, "{} bytes", enc.len());
        let counter: Vec<(i64, FieldValue)> = (0..3600)
            .map(|i| (t0 + i * 1000, FieldValue::I64(1_000_000 + i * 3)))
            .collect();
        assert!(encode_chunk(&counter).len() < 500); // ~450 of them timestamps (1 bit each)
        let door: Vec<(i64, FieldValue)> = (0..3600)
            .map(|i| (t0 + i * 1000, FieldValue::Bool(i % 600 < 30)))
            .collect();
        assert!(encode_chunk(&door).len() < 500);
        let status: Vec<(i64, FieldValue)> = (0..3600)
            .map(|i| {
                let s = if i % 900 < 890 {
                    "operational"
                } else {
                    "degraded"
                };
                (t0 + i * 1000, FieldValue::Str(s.into()))
            })
            .collect();
        let enc = encode_chunk(&status);
        assert_eq!(enc[0], ValueCodec::Dict as u8);
        assert!(enc.len() < 520, "{} bytes", enc.len());
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
