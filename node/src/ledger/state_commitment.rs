//! A commitment to the whole world state, updated per write in O(1).
//!
//! We use a lattice hash (LtHash, Bellare–Micciancio; the construction
//! Facebook uses for its state digests): every entry (key, value, version)
//! is expanded by BLAKE3's extendable output into 1024 16-bit lanes, and the
//! state's accumulator is the lane-wise sum of all its entries' vectors
//! (mod 2^16). Adding a key adds its vector, overwriting subtracts the old
//! vector and adds the new one, deleting subtracts. Because addition
//! commutes, the same set of entries always gives the same accumulator,
//! whatever history produced it: replicas detect divergence by comparing
//! roots, and a state snapshot can be checked against a block's root by
//! summing its entries. The 32-byte root is SHA-256 over the accumulator.

use sha2::{Digest, Sha256};

use crate::crypto::Hash32;

pub const LANES: usize = 1024;
pub const ACCUMULATOR_BYTES: usize = LANES * 2;

const ELEMENT_CONTEXT: &str = "kubeledger 2026 state element v1";

#[derive(Clone, PartialEq, Eq)]
pub struct StateAccumulator {
    lanes: Box<[u16; LANES]>,
}

impl std::fmt::Debug for StateAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateAccumulator({})", hex::encode(&self.root()[..8]))
    }
}

impl Default for StateAccumulator {
    fn default() -> Self {
        Self {
            lanes: Box::new([0; LANES]),
        }
    }
}

/// One state entry as it is committed: the key, its value and the version
/// (height and index of the writing transaction).
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub height: u64,
    pub index: u32,
}

fn expand(entry: &Entry<'_>) -> [u16; LANES] {
    let mut hasher = blake3::Hasher::new_derive_key(ELEMENT_CONTEXT);
    hasher.update(&(entry.key.len() as u64).to_le_bytes());
    hasher.update(entry.key);
    hasher.update(&entry.height.to_le_bytes());
    hasher.update(&entry.index.to_le_bytes());
    hasher.update(entry.value);
    let mut bytes = [0u8; ACCUMULATOR_BYTES];
    hasher.finalize_xof().fill(&mut bytes);
    let mut lanes = [0u16; LANES];
    for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([pair[0], pair[1]]);
    }
    lanes
}

impl StateAccumulator {
    pub fn insert(&mut self, entry: &Entry<'_>) {
        for (acc, x) in self.lanes.iter_mut().zip(expand(entry)) {
            *acc = acc.wrapping_add(x);
        }
    }

    pub fn remove(&mut self, entry: &Entry<'_>) {
        for (acc, x) in self.lanes.iter_mut().zip(expand(entry)) {
            *acc = acc.wrapping_sub(x);
        }
    }

    /// Adds another accumulator (the union of two disjoint sets of entries).
    pub fn add(&mut self, other: &StateAccumulator) {
        for (acc, x) in self.lanes.iter_mut().zip(other.lanes.iter()) {
            *acc = acc.wrapping_add(*x);
        }
    }

    pub fn root(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"kubeledger-state-root-v1");
        h.update(self.to_bytes());
        h.finalize().into()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.lanes.iter().flat_map(|l| l.to_le_bytes()).collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ACCUMULATOR_BYTES {
            return None;
        }
        let mut acc = Self::default();
        for (lane, pair) in acc.lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e<'a>(key: &'a [u8], value: &'a [u8], height: u64) -> Entry<'a> {
        Entry {
            key,
            value,
            height,
            index: 0,
        }
    }

    #[test]
    fn same_set_same_root_regardless_of_order_or_history() {
        let mut a = StateAccumulator::default();
        a.insert(&e(b"x", b"1", 1));
        a.insert(&e(b"y", b"2", 2));
        let mut b = StateAccumulator::default();
        b.insert(&e(b"y", b"2", 2));
        b.insert(&e(b"z", b"9", 3));
        b.insert(&e(b"x", b"1", 1));
        b.remove(&e(b"z", b"9", 3));
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn any_change_of_key_value_or_version_changes_the_root() {
        let mut base = StateAccumulator::default();
        base.insert(&e(b"k", b"v", 1));
        for other in [e(b"k", b"w", 1), e(b"j", b"v", 1), e(b"k", b"v", 2)] {
            let mut acc = StateAccumulator::default();
            acc.insert(&other);
            assert_ne!(acc.root(), base.root());
        }
        // Key/value boundary is unambiguous.
        let mut a = StateAccumulator::default();
        a.insert(&e(b"ab", b"c", 1));
        let mut b = StateAccumulator::default();
        b.insert(&e(b"a", b"bc", 1));
        assert_ne!(a.root(), b.root());
    }

    #[test]
    fn bytes_round_trip_and_empty_is_distinct() {
        let mut a = StateAccumulator::default();
        let empty = a.root();
        a.insert(&e(b"k", b"v", 1));
        assert_ne!(a.root(), empty);
        let back = StateAccumulator::from_bytes(&a.to_bytes()).expect("right length");
        assert_eq!(back, a);
        assert!(StateAccumulator::from_bytes(&[0; 3]).is_none());
        a.remove(&e(b"k", b"v", 1));
        assert_eq!(a.root(), empty);
    }
}
