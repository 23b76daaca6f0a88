//! A streaming isolation forest (iForestASD): trees are grown from a sliding reference window
//! of shingles (the last `shingle` values as one point) and regrown every `window` points;
//! each new shingle is scored against the current forest, `2^(-E[h] / c(psi))`. Points that
//! are isolated by few random cuts are anomalous. State is bounded: the window and the forest.
//!
//! Hand-written: the Rust isolation-forest crates are batch-only and allocate per fit; this
//! one reuses its buffers and needs to grow from a ring buffer.

use crate::Detector;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
enum Node {
    Split {
        dim: u16,
        at: f64,
        left: u32,
        right: u32,
    },
    Leaf {
        size: u32,
    },
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
    reference: VecDeque<Vec<f64>>,
    nodes: Vec<Vec<Node>>,
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
            reference: VecDeque::with_capacity(window),
            nodes: Vec::new(),
            since_fit: 0,
        }
    }

    fn fit(&mut self) {
        let n = self.reference.len();
        let psi = self.sample.min(n);
        let max_depth = (psi as f64).log2().ceil() as usize;
        let mut forest = Vec::with_capacity(self.trees);
        let mut idx: Vec<usize> = (0..n).collect();
        for _ in 0..self.trees {
            // partial Fisher-Yates: the first psi indices are a sample without replacement
            for i in 0..psi {
                let j = self.rng.random_range(i..n);
                idx.swap(i, j);
            }
            let mut sample: Vec<usize> = idx[..psi].to_vec();
            let mut nodes = Vec::with_capacity(2 * psi);
            self.grow(&mut sample, 0, max_depth, &mut nodes);
            forest.push(nodes);
        }
        self.nodes = forest;
    }

    fn grow(
        &mut self,
        pts: &mut [usize],
        depth: usize,
        max_depth: usize,
        nodes: &mut Vec<Node>,
    ) -> u32 {
        let me = nodes.len() as u32;
        if pts.len() <= 1 || depth >= max_depth {
            nodes.push(Node::Leaf {
                size: pts.len() as u32,
            });
            return me;
        }
        // choose a dimension with spread (a few tries), then a uniform cut within it
        for _ in 0..4 {
            let dim = self.rng.random_range(0..self.shingle);
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &p in pts.iter() {
                let v = self.reference[p][dim];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if hi > lo {
                let u: f64 = self.rng.random();
                let mut at = lo + u * (hi - lo);
                if !at.is_finite() || at <= lo {
                    at = lo / 2.0 + hi / 2.0; // (hi - lo) overflowed, or u was 0
                }
                let mut k = 0;
                for i in 0..pts.len() {
                    if self.reference[pts[i]][dim] < at {
                        pts.swap(i, k);
                        k += 1;
                    }
                }
                nodes.push(Node::Leaf { size: 0 }); // placeholder, patched below
                let (l, r) = pts.split_at_mut(k);
                let left = self.grow(l, depth + 1, max_depth, nodes);
                let right = self.grow(r, depth + 1, max_depth, nodes);
                nodes[me as usize] = Node::Split {
                    dim: dim as u16,
                    at,
                    left,
                    right,
                };
                return me;
            }
        }
        nodes.push(Node::Leaf {
            size: pts.len() as u32,
        });
        me
    }

    fn path(nodes: &[Node], x: &[f64]) -> f64 {
        let mut i = 0usize;
        let mut depth = 0.0;
        loop {
            match nodes[i] {
                Node::Leaf { size } => return depth + c(size as f64),
                Node::Split {
                    dim,
                    at,
                    left,
                    right,
                } => {
                    i = if x[dim as usize] < at { left } else { right } as usize;
                    depth += 1.0;
                }
            }
        }
    }

    /// Anomaly score `2^(-E[h]/c(psi))` of a shingle (0.5 = unremarkable).
    pub fn score_shingle(&self, x: &[f64]) -> f64 {
        if self.nodes.is_empty() {
            return 0.0;
        }
        let psi = self.sample.min(self.reference.len()) as f64;
        let mean: f64 =
            self.nodes.iter().map(|t| Self::path(t, x)).sum::<f64>() / self.nodes.len() as f64;
        2f64.powf(-mean / c(psi).max(1e-9))
    }
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
        let sh: Vec<f64> = self.recent.iter().copied().collect();
        let s = self.score_shingle(&sh);
        if self.reference.len() == self.window {
            self.reference.pop_front();
        }
        self.reference.push_back(sh);
        self.since_fit += 1;
        let warm = self.reference.len() >= self.sample.min(self.window);
        if warm && (self.nodes.is_empty() || self.since_fit >= self.window / 4) {
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
        assert!(f.reference.len() <= 256);
    }
}
