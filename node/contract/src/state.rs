//! What a contract reads: a read-only view of the ledger's state, through
//! the contract's namespace. Writes never reach it; they are collected in
//! the call's outcome and applied by the ledger when the call succeeds.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Key `key` of contract `name` in the ledger's state.
pub fn namespaced(name: &str, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(NAMESPACE_PREFIX.len() + name.len() + 1 + key.len());
    full.extend_from_slice(NAMESPACE_PREFIX);
    full.extend_from_slice(name.as_bytes());
    full.push(b'/');
    full.extend_from_slice(key);
    full
}

/// Contract state lives under `\0kubeledger/contract/<name>/`, a reserved
/// prefix: plain puts cannot write there.
pub const NAMESPACE_PREFIX: &[u8] = kubeledger_protocol::governance::keys::CONTRACT_PREFIX;

/// The ledger's state as a contract may read it (full keys, already
/// namespaced by the host).
pub trait ContractState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// The first key `k` with `from <= k` and `k < to` (no bound when
    /// `to` is None).
    fn first_key(&self, from: &[u8], to: Option<&[u8]>) -> Option<Vec<u8>>;
}

/// A state held in memory: tests, the simulator, and queries over a
/// snapshot read into memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapState(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl ContractState for MapState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }

    fn first_key(&self, from: &[u8], to: Option<&[u8]>) -> Option<Vec<u8>> {
        let upper = match to {
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        self.0
            .range((Bound::Included(from.to_vec()), upper))
            .next()
            .map(|(k, _)| k.clone())
    }
}

impl MapState {
    /// Applies a successful outcome's writes.
    pub fn apply(&mut self, writes: &[crate::Write]) {
        for w in writes {
            match &w.value {
                Some(v) => {
                    self.0.insert(w.key.clone(), v.clone());
                }
                None => {
                    self.0.remove(&w.key);
                }
            }
        }
    }
}
