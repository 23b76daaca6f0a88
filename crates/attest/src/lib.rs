//! fieldlab-attest: proofs about data that an auditor checks offline.
//!
//! Why it exists: compliance teams must prove facts about records (a supplier list, "the cold
//! chain stayed between 2 and 8 °C") without handing the records over. Upstream's "Merkle root"
//! was a hash of concatenated hashes, which proves nothing. This crate starts with the real
//! thing: RFC 6962 Merkle trees (`leaf = H(0x00 || data)`, `node = H(0x01 || left || right)`)
//! with inclusion proofs and their verification (RFC 9162 §2.1.3.2). The proofs issue adds
//! canonical encoding, policies, signed bundles, the registry and the `cap` commands here.
//!
//! Architecture invariant: everything hashed goes through one encoding; verification needs no
//! network and no fieldlab state.

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
        // Two leaves: not the hash of the concatenation (upstream's mistake).
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
}
