//! RFC 6962 / RFC 9162 Merkle trees: the one commitment structure of fieldlab's proofs.
//!
//! Why it exists: a root must bind every record and its position, so that a single record can be
//! proven present (inclusion) and a later tree proven to extend an earlier one (consistency).
//! `leaf = SHA-256(0x00 || data)`, `node = SHA-256(0x01 || left || right)`; the split is the
//! largest power of two smaller than the size. The legacy `cap` hashed concatenated hashes instead.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

pub fn node_hash(l: &Hash, r: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Merkle tree hash (RFC 6962 §2.1) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Audit path for leaf `index` (RFC 6962 §2.1.1), bottom-up.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    assert!(index < leaves.len());
    let n = leaves.len();
    if n == 1 {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut p = inclusion_proof(&leaves[..k], index);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_proof(&leaves[k..], index - k);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Verify that the leaf of the bytes `data` is at `index` in a tree of `size` leaves with
/// `root`: [`verify_inclusion`] of its [`leaf_hash`].
pub fn verify_leaf(data: &[u8], index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    verify_inclusion(&leaf_hash(data), index, size, proof, root)
}

/// Verify that `leaf` is at `index` in a tree of `size` leaves with `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && &r == root
}

/// Consistency proof between the tree of the first `m` leaves and the tree of all `leaves`
/// (RFC 9162 §2.1.4.1). Empty when `m == 0` or `m == leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Vec<Hash> {
    assert!(m <= leaves.len());
    if m == 0 || m == leaves.len() {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if complete {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut p = subproof(m, &leaves[..k], complete);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Verify that a tree of `size2` leaves with root `root2` extends the tree of `size1` leaves with
/// root `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> bool {
    if size1 > size2 {
        return false;
    }
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if size1 == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && &fr == root1 && &sr == root2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc6962_known_values() {
        // Empty tree: SHA-256 of the empty string; one empty leaf: SHA-256(0x00).
        assert_eq!(
            hex(&root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        // Two leaves: not the hash of the concatenation (the legacy `cap`'s mistake).
        let l = [leaf_hash(b"a"), leaf_hash(b"b")];
        let mut cat = Sha256::new();
        cat.update(l[0]);
        cat.update(l[1]);
        assert_ne!(root(&l), <[u8; 32]>::from(cat.finalize()));
        assert_eq!(root(&l), node_hash(&l[0], &l[1]));
    }

    #[test]
    fn every_leaf_of_every_small_tree_proves_and_nothing_else_does() {
        for n in 1..=33usize {
            let leaves: Vec<Hash> = (0..n)
                .map(|i| leaf_hash(format!("record {i}").as_bytes()))
                .collect();
            let r = root(&leaves);
            for i in 0..n {
                let p = inclusion_proof(&leaves, i);
                assert!(
                    verify_inclusion(&leaves[i], i as u64, n as u64, &p, &r),
                    "n={n} i={i}"
                );
                // Wrong index, wrong leaf, wrong size, tampered path: all refused.
                if n > 1 {
                    assert!(!verify_inclusion(
                        &leaves[i],
                        ((i + 1) % n) as u64,
                        n as u64,
                        &p,
                        &r
                    ));
                    assert!(!verify_inclusion(
                        &leaf_hash(b"forged"),
                        i as u64,
                        n as u64,
                        &p,
                        &r
                    ));
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_inclusion(&leaves[i], i as u64, n as u64, &bad, &r));
                }
                // (A wrong tree size can still verify — e.g. n=3, i=0 against size 4 — because an
                // inner node is indistinguishable from a leaf hash; the size is bound to the root by
                // the signed checkpoint, not by the path.)
                assert!(
                    !verify_inclusion(&leaves[i], n as u64, n as u64, &p, &r),
                    "index out of range"
                );
            }
        }
    }

    #[test]
    fn consistency_between_every_pair_of_small_trees() {
        let leaves: Vec<Hash> = (0..40)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        for n in 1..=leaves.len() {
            let r2 = root(&leaves[..n]);
            for m in 0..=n {
                let r1 = root(&leaves[..m]);
                let p = consistency_proof(&leaves[..n], m);
                assert!(
                    verify_consistency(m as u64, n as u64, &p, &r1, &r2),
                    "m={m} n={n}"
                );
                if m > 0 && m < n {
                    let mut bad = p.clone();
                    bad[0][5] ^= 0x40;
                    assert!(!verify_consistency(m as u64, n as u64, &bad, &r1, &r2));
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &p,
                        &leaf_hash(b"x"),
                        &r2
                    ));
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &p,
                        &r1,
                        &leaf_hash(b"x")
                    ));
                }
            }
        }
    }
}
