//! What the consensus task publishes for the API, metrics and admission.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use kubeledger_pbft::StableCheckpoint;

use crate::proto::SignedTransaction;

use super::transport::PeerLinks;

/// Reachability of one peer, as this node sees it.
#[derive(Debug)]
pub struct PeerHealth {
    pub name: String,
    pub address: String,
    /// An outbound stream to the peer is open.
    pub connected: AtomicBool,
    /// Highest sequence number seen in a message the peer signed.
    pub last_seen_height: AtomicU64,
}

/// A consistent copy of the replica's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub view: u64,
    pub primary: u32,
    pub low_watermark: u64,
    pub high_watermark: u64,
    pub stable_checkpoint: u64,
    pub last_committed: u64,
    pub view_changes: u64,
    pub view_change_in_progress: bool,
    pub state_transfer_target: Option<u64>,
}

/// Shared between the consensus task and the rest of the node.
#[derive(Debug, Default)]
pub struct ConsensusShared {
    snapshot: RwLock<Snapshot>,
    /// This replica's index in the validator set.
    pub me: AtomicU32,
    pub primary: AtomicU32,
    pub peers: OnceLock<Vec<Arc<PeerHealth>>>,
    pub(crate) links: OnceLock<Arc<PeerLinks>>,
    /// Public keys of the validators, by index.
    pub validator_keys: OnceLock<Vec<[u8; 32]>>,
    /// The latest stable checkpoint with its certificate, served to
    /// observers.
    stable: RwLock<Option<StableCheckpoint>>,
    /// This node follows the chain without voting.
    pub observer: AtomicBool,
}

impl ConsensusShared {
    pub fn snapshot(&self) -> Snapshot {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn publish(&self, s: Snapshot) {
        self.primary.store(s.primary, Ordering::Relaxed);
        match self.snapshot.write() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
    }

    pub(crate) fn set_stable(&self, cp: StableCheckpoint) {
        match self.stable.write() {
            Ok(mut g) => *g = Some(cp),
            Err(poisoned) => *poisoned.into_inner() = Some(cp),
        }
    }

    pub fn stable(&self) -> Option<StableCheckpoint> {
        match self.stable.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn is_observer(&self) -> bool {
        self.observer.load(Ordering::Relaxed)
    }

    pub fn is_primary(&self) -> bool {
        !self.is_observer()
            && self.primary.load(Ordering::Relaxed) == self.me.load(Ordering::Relaxed)
    }

    /// Public key of the current primary, if known.
    pub fn primary_key(&self) -> Option<[u8; 32]> {
        let p = self.primary.load(Ordering::Relaxed) as usize;
        self.validator_keys.get().and_then(|k| k.get(p)).copied()
    }

    /// Sends transactions a client handed to this node to every peer
    /// (nothing when it runs without peers).
    pub fn gossip(&self, txs: Vec<SignedTransaction>) {
        if txs.is_empty() {
            return;
        }
        if let Some(links) = self.links.get() {
            links.gossip_txs(txs);
        }
    }
}
