//! Bit-level writer and reader for the Gorilla codecs.
//!
//! Hand-written because the codecs need exactly two operations (append / take the low `n` bits
//! of a `u64`, MSB first) on an owned buffer; the general bit-stream crates add traits and
//! error types for no gain here.

#[derive(Default)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Bits used in the last byte of `buf` (0 = start a new byte).
    used: u32,
}

impl BitWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the low `n` bits of `value`, most significant first. `n <= 64`.
    pub fn write(&mut self, value: u64, mut n: u32) {
        debug_assert!(n <= 64);
        while n > 0 {
            if self.used == 0 {
                self.buf.push(0);
                self.used = 0;
            }
            let free = 8 - self.used;
            let take = free.min(n);
            let shift = n - take;
            let bits = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.buf.last_mut().expect("byte pushed");
            *last |= bits << (free - take);
            self.used = (self.used + take) % 8;
            n -= take;
        }
    }

    pub fn bit(&mut self, b: bool) {
        self.write(b as u64, 1);
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize, // in bits
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, pos: 0 }
    }

    /// Take `n` bits (`n <= 64`), or `None` if the buffer ends first.
    pub fn read(&mut self, n: u32) -> Option<u64> {
        if self.pos + n as usize > self.buf.len() * 8 {
            return None;
        }
        let mut out = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = self.buf[self.pos / 8];
            let off = (self.pos % 8) as u32;
            let avail = 8 - off;
            let take = avail.min(left);
            let bits = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            out = (out << take) | bits as u64;
            self.pos += take as usize;
            left -= take;
        }
        Some(out)
    }

    pub fn bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_mixed_widths() {
        let mut w = BitWriter::new();
        let items = [
            (1u64, 1u32),
            (0b101, 3),
            (u64::MAX, 64),
            (0, 7),
            (12345, 17),
            (1, 1),
        ];
        for (v, n) in items {
            w.write(v, n);
        }
        let buf = w.finish();
        let mut r = BitReader::new(&buf);
        for (v, n) in items {
            assert_eq!(
                r.read(n),
                Some(v & if n == 64 { u64::MAX } else { (1 << n) - 1 })
            );
        }
        assert_eq!(buf.len(), (1 + 3 + 64 + 7 + 17 + 1usize).div_ceil(8));
    }
}
