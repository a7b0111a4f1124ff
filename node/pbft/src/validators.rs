//! The validator set: replica index -> ed25519 public key.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::message::{Digest, ReplicaIndex, View};
use crate::quorum;

/// Entries kept in the verified-signature memo before it is reset.
const VERIFIED_CACHE_CAP: usize = 65_536;

#[derive(Debug)]
pub struct ValidatorSet {
    keys: Vec<VerifyingKey>,
    hash: Digest,
    /// Memo of already verified (message, signature) hashes. Certificates
    /// nest signatures the replica has usually checked before; skipping
    /// the curve arithmetic for them does not change any outcome. Clones
    /// share it: a runtime that checks a message's signature at the network
    /// edge saves the replica from checking it again.
    verified: Arc<Mutex<BTreeSet<Digest>>>,
}

impl Clone for ValidatorSet {
    fn clone(&self) -> Self {
        ValidatorSet {
            keys: self.keys.clone(),
            hash: self.hash,
            verified: Arc::clone(&self.verified),
        }
    }
}

impl ValidatorSet {
    pub fn new(public_keys: &[[u8; 32]]) -> Result<Self, Error> {
        Self::for_epoch(public_keys, 0)
    }

    /// The set of the epoch that starts after checkpoint `base`. The base
    /// is bound into [`ValidatorSet::hash`] (and so into every signature),
    /// so a set that returns after a change does not accept messages of
    /// its earlier epoch. Epoch 0 (genesis) hashes as [`ValidatorSet::new`].
    pub fn for_epoch(public_keys: &[[u8; 32]], base: u64) -> Result<Self, Error> {
        if public_keys.is_empty() {
            return Err(Error::EmptyValidatorSet);
        }
        let mut keys = Vec::with_capacity(public_keys.len());
        let mut h = Sha256::new();
        h.update(b"kubeledger-pbft/validators/v1");
        h.update((public_keys.len() as u64).to_be_bytes());
        for (i, pk) in public_keys.iter().enumerate() {
            keys.push(VerifyingKey::from_bytes(pk).map_err(|_| Error::InvalidKey(i))?);
            h.update(pk);
        }
        if base > 0 {
            h.update(b"epoch-base");
            h.update(base.to_be_bytes());
        }
        Ok(ValidatorSet {
            keys,
            hash: h.finalize().into(),
            verified: Arc::new(Mutex::new(BTreeSet::new())),
        })
    }

    /// Binds every signature to this set, so messages cannot be replayed
    /// into another network or membership.
    pub fn hash(&self) -> &Digest {
        &self.hash
    }

    pub fn n(&self) -> usize {
        self.keys.len()
    }

    pub fn f(&self) -> usize {
        quorum::max_faulty(self.n())
    }

    pub fn quorum(&self) -> usize {
        quorum::quorum(self.n())
    }

    pub fn weak_quorum(&self) -> usize {
        quorum::weak_quorum(self.n())
    }

    pub fn primary(&self, view: View) -> ReplicaIndex {
        // n >= 1 is guaranteed by the constructor.
        (view % self.keys.len() as u64) as ReplicaIndex
    }

    pub fn key(&self, i: ReplicaIndex) -> Option<&VerifyingKey> {
        self.keys.get(i as usize)
    }

    pub(crate) fn was_verified(&self, memo_key: &Digest) -> bool {
        self.verified
            .lock()
            .map(|set| set.contains(memo_key))
            .unwrap_or(false)
    }

    pub(crate) fn remember_verified(&self, memo_key: Digest) {
        if let Ok(mut set) = self.verified.lock() {
            if set.len() >= VERIFIED_CACHE_CAP {
                set.clear();
            }
            set.insert(memo_key);
        }
    }

    pub fn contains(&self, i: ReplicaIndex) -> bool {
        (i as usize) < self.keys.len()
    }
}
