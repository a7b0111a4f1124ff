//! Merkle roots over transaction ids, RFC 6962 style.
//!
//! Leaves and inner nodes are hashed with distinct prefixes (0x00, 0x01) so
//! a leaf can never be passed off as an inner node, and an odd level is
//! split at the largest power of two instead of duplicating the last leaf,
//! which avoids the "duplicate last transaction" ambiguity of Bitcoin's tree.

use sha2::{Digest, Sha256};

use super::Hash32;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

fn leaf_hash(leaf: &[u8]) -> Hash32 {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(leaf);
    h.finalize().into()
}

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Merkle root of `leaves` in order. The root of no leaves is SHA-256 of
/// the empty string.
pub fn merkle_root<L: AsRef<[u8]>>(leaves: &[L]) -> Hash32 {
    if leaves.is_empty() {
        return Sha256::digest([]).into();
    }
    let hashed: Vec<Hash32> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    subtree_root(&hashed)
}

fn subtree_root(level: &[Hash32]) -> Hash32 {
    match level.len() {
        0 => Sha256::digest([]).into(),
        1 => level[0],
        n => {
            // Largest power of two strictly less than n.
            let split = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let (left, right) = level.split_at(split);
            node_hash(&subtree_root(left), &subtree_root(right))
        }
    }
}

/// Inclusion proof for the leaf at `index`: sibling hashes from the leaf
/// up to the root. `None` when `index` is out of range.
pub fn inclusion_proof<L: AsRef<[u8]>>(leaves: &[L], index: usize) -> Option<Vec<Hash32>> {
    if index >= leaves.len() {
        return None;
    }
    let hashed: Vec<Hash32> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    let mut path = Vec::new();
    collect_path(&hashed, index, &mut path);
    Some(path)
}

fn collect_path(level: &[Hash32], index: usize, path: &mut Vec<Hash32>) {
    if level.len() <= 1 {
        return;
    }
    let n = level.len();
    let split = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    let (left, right) = level.split_at(split);
    if index < split {
        collect_path(left, index, path);
        path.push(subtree_root(right));
    } else {
        collect_path(right, index - split, path);
        path.push(subtree_root(left));
    }
}

/// Checks an inclusion proof produced by [`inclusion_proof`].
pub fn verify_inclusion(
    leaf: &[u8],
    index: usize,
    leaf_count: usize,
    proof: &[Hash32],
    root: &Hash32,
) -> bool {
    if index >= leaf_count {
        return false;
    }
    // Recompute the splits top-down to know at each depth which side we are on.
    let mut sides = Vec::new();
    let (mut lo, mut n, mut idx) = (0usize, leaf_count, index);
    while n > 1 {
        let split = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
        if idx < split {
            sides.push(true); // we are the left child
            n = split;
        } else {
            sides.push(false);
            idx -= split;
            lo += split;
            n -= split;
        }
    }
    let _ = lo;
    if sides.len() != proof.len() {
        return false;
    }
    let mut acc = leaf_hash(leaf);
    for (sibling, is_left) in proof.iter().zip(sides.iter().rev()) {
        acc = if *is_left {
            node_hash(&acc, sibling)
        } else {
            node_hash(sibling, &acc)
        };
    }
    &acc == root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<[u8; 4]> {
        (0..n as u32).map(|i| i.to_be_bytes()).collect()
    }

    #[test]
    fn empty_root_is_hash_of_nothing() {
        let none: [&[u8]; 0] = [];
        assert_eq!(merkle_root(&none), <[u8; 32]>::from(Sha256::digest([])));
    }

    #[test]
    fn single_leaf_root_is_its_leaf_hash() {
        assert_eq!(merkle_root(&[b"tx"]), leaf_hash(b"tx"));
        assert_ne!(merkle_root(&[b"tx"]), crate::crypto::sha256(b"tx"));
    }

    #[test]
    fn two_and_three_leaves_follow_rfc6962_shape() {
        let l = leaves(3);
        let (a, b, c) = (leaf_hash(&l[0]), leaf_hash(&l[1]), leaf_hash(&l[2]));
        assert_eq!(merkle_root(&l[..2]), node_hash(&a, &b));
        // Odd count: split at 2, the third leaf is promoted, not duplicated.
        assert_eq!(merkle_root(&l), node_hash(&node_hash(&a, &b), &c));
    }

    #[test]
    fn duplicating_the_last_leaf_changes_the_root() {
        let mut l = leaves(3);
        let root3 = merkle_root(&l);
        l.push(l[2]);
        assert_ne!(root3, merkle_root(&l));
    }

    #[test]
    fn order_matters() {
        let mut l = leaves(5);
        let r = merkle_root(&l);
        l.swap(1, 3);
        assert_ne!(r, merkle_root(&l));
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_and_size() {
        for n in 1..=17 {
            let l = leaves(n);
            let root = merkle_root(&l);
            for i in 0..n {
                let proof = inclusion_proof(&l, i).expect("index in range");
                assert!(verify_inclusion(&l[i], i, n, &proof, &root), "n={n} i={i}");
                let wrong = (i + 1) % n;
                if wrong != i {
                    assert!(!verify_inclusion(&l[wrong], i, n, &proof, &root));
                }
            }
            assert!(inclusion_proof(&l, n).is_none());
        }
    }
}
