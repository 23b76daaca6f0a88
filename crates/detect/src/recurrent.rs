//! The autoencoder's forward pass by hand, for scoring one window at a time.
//!
//! Candle dispatches a tensor op for every gate of every step, and a 16-unit cell over a
//! 30-step window is only some 50k multiply-adds: through candle a window took about 40 µs.
//! The live ensemble scores every reading of every series with it, so the pass has to take a
//! few microseconds. Hence this module (no crate does small recurrent inference well):
//! - weights are stored column-major, so one step is a few vector multiply-adds over all gate
//!   rows at once, in four interleaved partial sums (a step waits on the last one, so the
//!   chain of dependent additions is what costs);
//! - the decoder's input (the encoder's last state, the same at every step) is projected once
//!   per window;
//! - tanh and the sigmoid are a rational approximation that vectorises (libm's `expf` does
//!   not), within a few ulp of the exact functions.
//!
//! The arithmetic is the same on every machine: AVX2 or AVX-512, found at run time, only
//! change how many lanes run at once (no fused multiply-add), so scores are bit-identical.
//! A test in `autoencoder.rs` pins the pass to candle's own forward pass.

use crate::autoencoder::Cell;

/// One recurrent layer, laid out for [`Forward`] (gate blocks of `hidden` rows as in PyTorch
/// and candle: GRU r|z|n, LSTM i|f|g|o).
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    cell: Cell,
    /// Column-major: the weights of input `k` over all gate rows are `[k*rows..(k+1)*rows]`.
    w_ih_t: Vec<f32>,
    w_hh_t: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for k in 0..cols {
            t[k * rows + r] = w[r * cols + k];
        }
    }
    t
}

impl Layer {
    /// From row-major weights: `w_ih` is (gates*hidden, input), `w_hh` (gates*hidden, hidden).
    pub(crate) fn from_rows(
        cell: Cell,
        input: usize,
        hidden: usize,
        w_ih: &[f32],
        w_hh: &[f32],
        b_ih: Vec<f32>,
        b_hh: Vec<f32>,
    ) -> Layer {
        let rows = cell.gates() * hidden;
        Layer {
            cell,
            w_ih_t: transpose(w_ih, rows, input),
            w_hh_t: transpose(w_hh, rows, hidden),
            b_ih,
            b_hh,
        }
    }
}

/// The buffers of one pass, kept by the caller so that scoring allocates nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scratch {
    h: Vec<f32>,
    c: Vec<f32>,
    z: Vec<f32>,
    gi: Vec<f32>,
    gh: Vec<f32>,
}

impl Scratch {
    fn fit(&mut self, cell: Cell, hidden: usize) {
        if self.h.len() != hidden {
            let rows = cell.gates() * hidden;
            *self = Scratch {
                h: vec![0.0; hidden],
                c: vec![0.0; hidden],
                z: vec![0.0; hidden],
                gi: vec![0.0; rows],
                gh: vec![0.0; rows],
            };
        }
        self.h.fill(0.0);
        self.c.fill(0.0);
    }
}

/// Encoder, decoder and output layer of a trained autoencoder.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    pub(crate) enc: Layer,
    pub(crate) dec: Layer,
    /// (features, hidden), row-major.
    pub(crate) out_w: Vec<f32>,
    pub(crate) out_b: Vec<f32>,
    pub(crate) hidden: usize,
    pub(crate) features: usize,
}

impl Forward {
    /// Mean squared reconstruction error of one window of scaled rows (`rows.len()` is a
    /// multiple of the feature count).
    pub(crate) fn window_error(&self, rows: &[f32], s: &mut Scratch) -> f64 {
        #[cfg(target_arch = "x86_64")]
        {
            // AVX-512 is slower for the GRU (4.4 µs a window against 4.0 with AVX2: a step
            // waits on its last operation, and 16 units are two AVX2 vectors), faster for the
            // LSTM (4.8 against 6.0): `recurrent::speed`.
            if self.enc.cell == Cell::Lstm && std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above).
                return unsafe { self.window_error_avx512(rows, s) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { self.window_error_avx2(rows, s) };
            }
        }
        self.pass(rows, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn window_error_avx512(&self, rows: &[f32], s: &mut Scratch) -> f64 {
        self.pass(rows, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn window_error_avx2(&self, rows: &[f32], s: &mut Scratch) -> f64 {
        self.pass(rows, s)
    }

    #[inline(always)]
    fn pass(&self, rows: &[f32], s: &mut Scratch) -> f64 {
        if self.features == 1 && self.hidden == 16 {
            return match self.enc.cell {
                Cell::Gru => self.pass_fixed::<16, 48>(rows),
                Cell::Lstm => self.pass_fixed::<16, 64>(rows),
            };
        }
        self.pass_any(rows, s)
    }

    /// The hot path (one feature, the default 16 hidden units): the same arithmetic as
    /// [`Forward::pass_any`] in the same order, with the sizes known at compile time so
    /// that the state and the partial sums stay in registers. `R` is gates × `H`.
    #[inline(always)]
    fn pass_fixed<const H: usize, const R: usize>(&self, xs: &[f32]) -> f64 {
        fn arr<const R: usize>(v: &[f32]) -> &[f32; R] {
            v.try_into().expect("R rows")
        }
        let (enc, dec) = (&self.enc, &self.dec);
        let (e_bi, e_bh) = (arr::<R>(&enc.b_ih), arr::<R>(&enc.b_hh));
        let (d_bi, d_bh) = (arr::<R>(&dec.b_ih), arr::<R>(&dec.b_hh));
        let e_wi: &[f32; R] = enc.w_ih_t.as_slice().try_into().expect("one input");
        let e_wh: &[[f32; R]; H] = enc.w_hh_t.as_chunks::<R>().0.try_into().expect("H columns");
        let d_wi: &[[f32; R]; H] = dec.w_ih_t.as_chunks::<R>().0.try_into().expect("H columns");
        let d_wh: &[[f32; R]; H] = dec.w_hh_t.as_chunks::<R>().0.try_into().expect("H columns");
        let out_w: &[f32; H] = self.out_w.as_slice().try_into().expect("H weights");
        let out_b = self.out_b[0];
        // A step from the zero state projects nothing but the bias (`bias + 0` is `bias`, to
        // the bit): the first step of each layer skips its product.
        let (mut h, mut c) = ([0.0f32; H], [0.0f32; H]);
        for (t, &x) in xs.iter().enumerate() {
            let mut gi = [0.0f32; R];
            for r in 0..R {
                gi[r] = e_bi[r] + e_wi[r] * x;
            }
            let gh = if t == 0 {
                *e_bh
            } else {
                project_fixed(e_bh, e_wh, &h)
            };
            gates(enc.cell, &gi, &gh, &mut h, &mut c);
        }
        let gi = project_fixed(d_bi, d_wi, &h);
        let (mut h, mut c) = ([0.0f32; H], [0.0f32; H]);
        let mut err = 0.0f64;
        for (t, &x) in xs.iter().enumerate() {
            let gh = if t == 0 {
                *d_bh
            } else {
                project_fixed(d_bh, d_wh, &h)
            };
            gates(dec.cell, &gi, &gh, &mut h, &mut c);
            let y = out_b + dot(out_w, &h);
            err += ((y - x) as f64).powi(2);
        }
        err / xs.len().max(1) as f64
    }

    fn pass_any(&self, rows: &[f32], s: &mut Scratch) -> f64 {
        let (f, hd) = (self.features.max(1), self.hidden);
        s.fit(self.enc.cell, hd);
        let Scratch { h, c, z, gi, gh } = s;
        for row in rows.chunks_exact(f) {
            project(gi, &self.enc.b_ih, &self.enc.w_ih_t, row);
            project(gh, &self.enc.b_hh, &self.enc.w_hh_t, h);
            gates(self.enc.cell, gi, gh, h, c);
        }
        // The decoder starts from a zero state; its input, the encoder's last state, is the
        // same at every step.
        z.copy_from_slice(h);
        project(gi, &self.dec.b_ih, &self.dec.w_ih_t, z);
        h.fill(0.0);
        c.fill(0.0);
        let mut err = 0.0f64;
        for row in rows.chunks_exact(f) {
            project(gh, &self.dec.b_hh, &self.dec.w_hh_t, h);
            gates(self.dec.cell, gi, gh, h, c);
            for (j, &x) in row.iter().enumerate() {
                let y = self.out_b[j] + dot(&self.out_w[j * hd..(j + 1) * hd], h);
                err += ((y - x) as f64).powi(2);
            }
        }
        err / rows.len().max(1) as f64
    }
}

/// `acc = bias + W v` with `W` column-major, in four partial sums over the columns.
#[inline(always)]
fn project(acc: &mut [f32], bias: &[f32], w_t: &[f32], v: &[f32]) {
    let n = acc.len();
    let cols = v.len();
    if cols < 4 {
        acc.copy_from_slice(bias);
        for (k, &vk) in v.iter().enumerate() {
            for (a, w) in acc.iter_mut().zip(&w_t[k * n..(k + 1) * n]) {
                *a += w * vk;
            }
        }
        return;
    }
    // Rows in blocks of 16 so that the four partial sums stay in registers.
    for r0 in (0..n).step_by(16) {
        let m = 16.min(n - r0);
        let mut p = [[0.0f32; 16]; 4];
        let quads = cols / 4;
        for q in 0..quads {
            for (l, pl) in p.iter_mut().enumerate() {
                let k = 4 * q + l;
                let vk = v[k];
                let col = &w_t[k * n + r0..k * n + r0 + m];
                for (a, w) in pl.iter_mut().zip(col) {
                    *a += w * vk;
                }
            }
        }
        for k in 4 * quads..cols {
            let vk = v[k];
            let col = &w_t[k * n + r0..k * n + r0 + m];
            for (a, w) in p[0].iter_mut().zip(col) {
                *a += w * vk;
            }
        }
        for (i, a) in acc[r0..r0 + m].iter_mut().enumerate() {
            *a = bias[r0 + i] + ((p[0][i] + p[1][i]) + (p[2][i] + p[3][i]));
        }
    }
}

/// [`project`] with the sizes fixed: `bias + W v`, `W` as `C` columns of `R` rows.
#[inline(always)]
fn project_fixed<const R: usize, const C: usize>(
    bias: &[f32; R],
    w_t: &[[f32; R]; C],
    v: &[f32; C],
) -> [f32; R] {
    let mut p = [[0.0f32; R]; 4];
    for q in 0..C / 4 {
        for (l, pl) in p.iter_mut().enumerate() {
            let k = 4 * q + l;
            for r in 0..R {
                pl[r] += w_t[k][r] * v[k];
            }
        }
    }
    for k in 4 * (C / 4)..C {
        for r in 0..R {
            p[0][r] += w_t[k][r] * v[k];
        }
    }
    let mut acc = [0.0f32; R];
    for r in 0..R {
        acc[r] = bias[r] + ((p[0][r] + p[1][r]) + (p[2][r] + p[3][r]));
    }
    acc
}

/// A dot product in eight partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut p = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            p[l] += x[l] * y[l];
        }
    }
    let mut s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn gates(cell: Cell, gi: &[f32], gh: &[f32], h: &mut [f32], c: &mut [f32]) {
    let hd = h.len();
    match cell {
        Cell::Gru => {
            let (ir, iz, inn) = (&gi[..hd], &gi[hd..2 * hd], &gi[2 * hd..3 * hd]);
            let (hr, hz, hn) = (&gh[..hd], &gh[hd..2 * hd], &gh[2 * hd..3 * hd]);
            for j in 0..hd {
                let r = sigmoid(ir[j] + hr[j]);
                let z = sigmoid(iz[j] + hz[j]);
                let n = tanh(inn[j] + r * hn[j]);
                h[j] = z * h[j] + (1.0 - z) * n;
            }
        }
        Cell::Lstm => {
            let g = |k: usize, j: usize| gi[k * hd + j] + gh[k * hd + j];
            for j in 0..hd {
                let (i, f) = (sigmoid(g(0, j)), sigmoid(g(1, j)));
                let (cand, o) = (tanh(g(2, j)), sigmoid(g(3, j)));
                c[j] = f * c[j] + i * cand;
                h[j] = o * tanh(c[j]);
            }
        }
    }
}

/// tanh as a rational function (the approximation Eigen uses for `float`), clamped where
/// tanh is ±1 in `f32`; a few ulp from the exact value.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_7e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let x4 = x2 * x2;
    // Estrin's scheme: short independent chains instead of one long Horner chain (a step of
    // the recurrence waits on this).
    let lo = (A1 + A3 * x2) + (A5 + A7 * x2) * x4;
    let hi = (A9 + A11 * x2) + A13 * x4;
    let p = x * (lo + hi * (x4 * x4));
    let q = (B0 + B2 * x2) + (B4 + B6 * x2) * x4;
    p / q
}

#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    0.5 + 0.5 * tanh(0.5 * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model with weights spread like a trained one's (±0.25), deterministic.
    pub(super) fn model(cell: Cell, hd: usize, features: usize) -> Forward {
        let rows = cell.gates() * hd;
        let w = |n: usize, seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| {
                    let u = i
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(seed.wrapping_mul(40_503));
                    ((u >> 8) as f32 / 16_777_216.0 - 0.5) * 0.5
                })
                .collect()
        };
        let layer = |input: usize, seed: u32| {
            Layer::from_rows(
                cell,
                input,
                hd,
                &w(rows * input, seed),
                &w(rows * hd, seed + 1),
                w(rows, seed + 2),
                w(rows, seed + 3),
            )
        };
        Forward {
            enc: layer(features, 1),
            dec: layer(hd, 5),
            out_w: w(hd * features, 9),
            out_b: w(features, 10),
            hidden: hd,
            features,
        }
    }

    #[test]
    fn the_fixed_size_path_is_the_general_one_to_the_bit() {
        let xs: Vec<f32> = (0..30).map(|i| (i as f32 * 0.3).sin() * 2.0).collect();
        for (cell, r) in [(Cell::Gru, 48), (Cell::Lstm, 64)] {
            let f = model(cell, 16, 1);
            let fixed = if r == 48 {
                f.pass_fixed::<16, 48>(&xs)
            } else {
                f.pass_fixed::<16, 64>(&xs)
            };
            let any = f.pass_any(&xs, &mut Scratch::default());
            assert_eq!(fixed.to_bits(), any.to_bits(), "{cell:?}: {fixed} vs {any}");
            assert_eq!(
                f.window_error(&xs, &mut Scratch::default()).to_bits(),
                any.to_bits()
            );
            assert!(any > 0.0 && any.is_finite());
        }
    }

    #[test]
    fn the_approximations_stay_within_a_few_ulp_of_the_exact_functions() {
        let mut worst = (0.0f32, 0.0f32);
        let mut x = -12.0f32;
        while x <= 12.0 {
            let e = (tanh(x) - x.tanh()).abs();
            if e > worst.0 {
                worst = (e, x);
            }
            let s = (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs();
            assert!(s < 1e-6, "sigmoid({x}) off by {s}");
            x += 0.001;
        }
        assert!(worst.0 < 1e-6, "tanh off by {} at {}", worst.0, worst.1);
        assert_eq!(tanh(f32::INFINITY), tanh(100.0));
        assert!(tanh(f32::NAN).is_nan());
        assert!((tanh(1e-6) - 1e-6).abs() < 1e-12);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p fieldlab-detect recurrent::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn window_pass_time() {
        for cell in [Cell::Gru, Cell::Lstm] {
            let f = tests::model(cell, 16, 1);
            let xs: Vec<f32> = (0..30).map(|i| (i as f32 * 0.3).sin()).collect();
            let mut s = Scratch::default();
            let n = 200_000;
            let t0 = std::time::Instant::now();
            let mut acc = 0.0;
            for _ in 0..n {
                acc += f.window_error(std::hint::black_box(&xs), &mut s);
            }
            let dt = t0.elapsed().as_secs_f64();
            println!(
                "{cell:?} window pass: {:.2} µs ({acc})",
                dt / n as f64 * 1e6
            );
        }
    }
}
