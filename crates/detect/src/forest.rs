//! A streaming isolation forest (iForestASD): trees are grown from a sliding reference window
//! of shingles (the last `shingle` values as one point) and regrown every `window` points;
//! each new shingle is scored against the current forest, `2^(-E[h] / c(psi))`. Points that
//! are isolated by few random cuts are anomalous. State is bounded: the window and the forest.
//!
//! Hand-written: the Rust isolation-forest crates are batch-only and allocate per fit; this
//! one reuses its buffers (one node array for all trees, a flat reference ring) and grows from
//! a ring buffer.

use crate::Detector;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;

/// One node of a tree. A tree is stored in pre-order in the forest's one node array, so a
/// split's left child is the node after it: 16 bytes a node, not the 24 of an enum with both
/// children (50 trees of up to 255 nodes are most of a series' detector state).
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The split value of a split; a leaf's `c(size)`, the path length it stands for
    /// (computed once when the tree grows, not at every point scored: 50 logarithms a point).
    at: f64,
    /// A split's right child (an index into the forest's nodes); a leaf's size.
    next: u32,
    /// The shingle dimension a split cuts; [`LEAF`] for a leaf.
    dim: u16,
}

const LEAF: u16 = u16::MAX;

impl Node {
    fn leaf(size: usize) -> Self {
        Node {
            at: c_of(size),
            next: size as u32,
            dim: LEAF,
        }
    }
}

/// [`c`] of a leaf size, from a table for the usual sizes.
fn c_of(size: usize) -> f64 {
    static TABLE: std::sync::LazyLock<Vec<f64>> =
        std::sync::LazyLock::new(|| (0..1024).map(|n| c(n as f64)).collect());
    TABLE.get(size).copied().unwrap_or_else(|| c(size as f64))
}

/// Average path length of an unsuccessful BST search over `n` points (the iForest `c(n)`).
fn c(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_9) - 2.0 * (n - 1.0) / n
    }
}

#[derive(Debug, Clone)]
pub struct IsolationForest {
    shingle: usize,
    window: usize,
    trees: usize,
    sample: usize,
    rng: SmallRng,
    recent: VecDeque<f64>,
    /// The reference window: `shingle` values a point, oldest first, flat.
    reference: VecDeque<f64>,
    /// Every tree's nodes, tree after tree (buffers reused from fit to fit).
    nodes: Vec<Node>,
    /// Where each tree starts in `nodes`.
    roots: Vec<u32>,
    /// Scratch: the current shingle.
    shingle_buf: Vec<f64>,
    since_fit: usize,
}

impl IsolationForest {
    pub fn new(shingle: usize, window: usize, trees: usize, sample: usize, seed: u64) -> Self {
        assert!(shingle >= 1 && window >= 16 && trees >= 1 && sample >= 8);
        IsolationForest {
            shingle,
            window,
            trees,
            sample: sample.min(window),
            rng: SmallRng::seed_from_u64(seed),
            recent: VecDeque::with_capacity(shingle),
            reference: VecDeque::with_capacity(window * shingle),
            nodes: Vec::new(),
            roots: Vec::with_capacity(trees),
            shingle_buf: Vec::with_capacity(shingle),
            since_fit: 0,
        }
    }

    /// Points in the reference window.
    fn points(&self) -> usize {
        self.reference.len() / self.shingle
    }

    fn fit(&mut self) {
        let n = self.points();
        let psi = self.sample.min(n);
        let max_depth = (psi as f64).log2().ceil() as usize;
        let d = self.shingle;
        let mut nodes = std::mem::take(&mut self.nodes);
        nodes.clear();
        self.roots.clear();
        let reference = self.reference.make_contiguous();
        // Scratch of a fit (allocated per fit, every `window / 4` points, not kept per series):
        // the sample's shingles are copied out, so a tree grows by swapping rows of one small
        // contiguous array (reading them through the ring cost two thirds of the scoring).
        let mut idx: Vec<usize> = (0..n).collect();
        let mut rows = vec![0.0; psi * d];
        for _ in 0..self.trees {
            for i in 0..psi {
                let j = self.rng.random_range(i..n);
                idx.swap(i, j);
            }
            // partial Fisher-Yates: the first psi indices are a sample without replacement
            for (row, &p) in rows.chunks_exact_mut(d).zip(&idx[..psi]) {
                row.copy_from_slice(&reference[p * d..(p + 1) * d]);
            }
            self.roots.push(nodes.len() as u32);
            grow(&mut self.rng, d, &mut rows, 0, max_depth, &mut nodes);
        }
        self.nodes = nodes;
    }

    fn path(nodes: &[Node], root: u32, x: &[f64]) -> f64 {
        let mut i = root as usize;
        let mut depth = 0.0;
        loop {
            let n = nodes[i];
            if n.dim == LEAF {
                return depth + n.at;
            }
            i = if x[n.dim as usize] < n.at {
                i + 1
            } else {
                n.next as usize
            };
            depth += 1.0;
        }
    }

    /// Anomaly score `2^(-E[h]/c(psi))` of a shingle (0.5 = unremarkable).
    pub fn score_shingle(&self, x: &[f64]) -> f64 {
        if self.roots.is_empty() {
            return 0.0;
        }
        let psi = self.sample.min(self.points()) as f64;
        let mean: f64 = self
            .roots
            .iter()
            .map(|&r| Self::path(&self.nodes, r, x))
            .sum::<f64>()
            / self.roots.len() as f64;
        2f64.powf(-mean / c(psi).max(1e-9))
    }
}

/// Move the rows whose `dim` is below `at` first; returns how many. Branch-free (swap every
/// row, count the ones below): which side a row goes is a coin toss the CPU cannot predict,
/// and the mispredictions were most of a fit. The order within each side differs from a
/// swap-only-when-below partition, but a tree depends only on which rows are on a side
/// (their range, their count), so the forest is the same to the bit.
fn partition(rows: &mut [f64], d: usize, dim: usize, at: f64) -> usize {
    fn fixed<const D: usize>(rows: &mut [[f64; D]], dim: usize, at: f64) -> usize {
        let mut k = 0;
        for i in 0..rows.len() {
            let below = rows[i][dim] < at;
            rows.swap(i, k);
            k += below as usize;
        }
        k
    }
    if d == 4 {
        return fixed(rows.as_chunks_mut::<4>().0, dim, at);
    }
    let mut k = 0;
    for i in 0..rows.len() / d {
        let below = rows[i * d + dim] < at;
        for t in 0..d {
            rows.swap(i * d + t, k * d + t);
        }
        k += below as usize;
    }
    k
}

/// Grow one tree over `rows` (shingles of `d` values, reordered in place) into `nodes`, in
/// pre-order; returns its root.
fn grow(
    rng: &mut SmallRng,
    d: usize,
    rows: &mut [f64],
    depth: usize,
    max_depth: usize,
    nodes: &mut Vec<Node>,
) -> u32 {
    let me = nodes.len() as u32;
    let m = rows.len() / d;
    if m <= 1 || depth >= max_depth {
        nodes.push(Node::leaf(m));
        return me;
    }
    // choose a dimension with spread (a few tries), then a uniform cut within it
    for _ in 0..4 {
        let dim = rng.random_range(0..d);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for row in rows.chunks_exact(d) {
            lo = lo.min(row[dim]);
            hi = hi.max(row[dim]);
        }
        if hi > lo {
            let u: f64 = rng.random();
            let mut at = lo + u * (hi - lo);
            if !at.is_finite() || at <= lo {
                at = lo / 2.0 + hi / 2.0; // (hi - lo) overflowed, or u was 0
            }
            let k = partition(rows, d, dim, at);
            nodes.push(Node::leaf(0)); // placeholder, patched below
            let (l, r) = rows.split_at_mut(k * d);
            grow(rng, d, l, depth + 1, max_depth, nodes); // the left child is me + 1
            let right = grow(rng, d, r, depth + 1, max_depth, nodes);
            nodes[me as usize] = Node {
                at,
                next: right,
                dim: dim as u16,
            };
            return me;
        }
    }
    nodes.push(Node::leaf(m));
    me
}

impl Detector for IsolationForest {
    fn name(&self) -> &'static str {
        "iforest"
    }

    fn score(&mut self, _ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        if self.recent.len() == self.shingle {
            self.recent.pop_front();
        }
        self.recent.push_back(x);
        if self.recent.len() < self.shingle {
            return 0.0;
        }
        let mut sh = std::mem::take(&mut self.shingle_buf);
        sh.clear();
        sh.extend(self.recent.iter().copied());
        let s = self.score_shingle(&sh);
        if self.points() == self.window {
            self.reference.drain(..self.shingle);
        }
        self.reference.extend(sh.iter().copied());
        self.shingle_buf = sh;
        self.since_fit += 1;
        let warm = self.points() >= self.sample.min(self.window);
        if warm && (self.roots.is_empty() || self.since_fit >= self.window / 4) {
            self.fit();
            self.since_fit = 0;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_matches_the_paper() {
        assert_eq!(c(1.0), 0.0);
        assert_eq!(c(2.0), 1.0);
        assert!((c(256.0) - 10.24).abs() < 0.01);
    }

    #[test]
    fn an_outlier_is_isolated_early() {
        let mut f = IsolationForest::new(1, 256, 50, 128, 7);
        let mut normal = Vec::new();
        for i in 0..1000 {
            let x = ((i * 7919) % 101) as f64 / 100.0;
            let s = f.score(i, x);
            if i > 300 {
                normal.push(s);
            }
        }
        let avg = normal.iter().sum::<f64>() / normal.len() as f64;
        let out = f.score(1000, 25.0);
        assert!(
            out > avg + 0.1 && avg < 0.55,
            "outlier {out}, normal mean {avg}"
        );
        assert!(f.points() <= 256);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p fieldlab-detect forest::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn scoring_and_fitting_time() {
        let xs: Vec<f64> = (0..200_000u64)
            .map(|i| {
                (i as f64 * 0.01).sin()
                    + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / 1.6e7
            })
            .collect();
        let mut f = IsolationForest::new(4, 512, 50, 128, 1);
        let t0 = std::time::Instant::now();
        let mut acc = 0.0;
        for (i, &x) in xs.iter().enumerate() {
            acc += f.score(i as i64, x);
        }
        let all = t0.elapsed().as_secs_f64() / xs.len() as f64;
        let t0 = std::time::Instant::now();
        for _ in 0..200 {
            f.fit();
        }
        let fit = t0.elapsed().as_secs_f64() / 200.0;
        let sh = [0.1, 0.2, 0.3, 0.4];
        let t0 = std::time::Instant::now();
        for _ in 0..100_000 {
            acc += f.score_shingle(std::hint::black_box(&sh));
        }
        let score = t0.elapsed().as_secs_f64() / 100_000.0;
        println!(
            "iforest: {:.2} µs a point; a fit {:.0} µs ({:.2} µs a point at one fit per 128); a shingle's score {:.2} µs ({acc})",
            all * 1e6,
            fit * 1e6,
            fit * 1e6 / 128.0,
            score * 1e6
        );
    }
}
