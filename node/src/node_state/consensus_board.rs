//! The consensus status board: what the consensus task publishes for the
//! API, metrics and admission (its status, the validator set it works
//! with, the latest stable checkpoint), and the handle admission gossips
//! client transactions through.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use kubeledger_pbft::{ReplicaIndex, StableCheckpoint};

use crate::proto::{NodeInfo, SignedTransaction};

/// Sends transactions a client handed to this node on to every peer; the
/// peer transport implements it while this node is a validator.
pub trait TxGossip: std::fmt::Debug + Send + Sync {
    /// Sends `txs` to every peer.
    fn gossip_txs(&self, txs: Vec<SignedTransaction>);
}

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
    /// The request timeout in force (`Replica::request_timeout_ms`).
    pub request_timeout_ms: u64,
}

/// The validator set this node works with now, and its place in it.
#[derive(Debug, Default)]
pub struct EpochView {
    /// The checkpoint the set's epoch started after (0: genesis).
    pub base: u64,
    /// The epoch's last block, once the next set is scheduled.
    pub end: Option<u64>,
    /// Replica index order.
    pub validators: Vec<NodeInfo>,
    /// Reachability of each validator, by replica index.
    pub peers: Vec<Arc<PeerHealth>>,
    /// Gossip to the peers over the outbound links, while this node is one
    /// of the validators.
    pub(crate) gossip: Option<Arc<dyn TxGossip>>,
    /// This node's replica index (none: it observes).
    pub me: Option<ReplicaIndex>,
    /// The set's keys, while this node is one of the validators: the network
    /// edge checks consensus signatures with it (sharing the replica's memo).
    pub vset: Option<kubeledger_pbft::ValidatorSet>,
}

impl EpochView {
    pub fn new(
        base: u64,
        end: Option<u64>,
        validators: Vec<NodeInfo>,
        me: Option<ReplicaIndex>,
    ) -> Self {
        let peers = validators
            .iter()
            .map(|v| {
                Arc::new(PeerHealth {
                    name: v.name.clone(),
                    address: v.peer_address.clone(),
                    connected: AtomicBool::new(false),
                    last_seen_height: AtomicU64::new(0),
                })
            })
            .collect();
        EpochView {
            base,
            end,
            validators,
            peers,
            gossip: None,
            me,
            vset: None,
        }
    }
}

/// Shared between the consensus task and the rest of the node.
#[derive(Debug, Default)]
pub struct ConsensusShared {
    snapshot: RwLock<Snapshot>,
    pub primary: AtomicU32,
    epoch: RwLock<Arc<EpochView>>,
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

    /// The validator set this node works with now.
    pub fn epoch(&self) -> Arc<EpochView> {
        match self.epoch.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_epoch(&self, epoch: EpochView) {
        self.observer.store(epoch.me.is_none(), Ordering::Relaxed);
        let epoch = Arc::new(epoch);
        match self.epoch.write() {
            Ok(mut g) => *g = epoch,
            Err(poisoned) => *poisoned.into_inner() = epoch,
        }
    }

    /// The current epoch's last block is now known.
    pub(crate) fn set_epoch_end(&self, end: u64) {
        let cur = self.epoch();
        self.set_epoch(EpochView {
            base: cur.base,
            end: Some(end),
            validators: cur.validators.clone(),
            peers: cur.peers.clone(),
            gossip: cur.gossip.clone(),
            me: cur.me,
            vset: cur.vset.clone(),
        });
    }

    /// This node's replica index, when it is a validator.
    pub fn me(&self) -> Option<ReplicaIndex> {
        self.epoch().me
    }

    pub fn is_observer(&self) -> bool {
        self.observer.load(Ordering::Relaxed)
    }

    pub fn is_primary(&self) -> bool {
        self.me() == Some(self.primary.load(Ordering::Relaxed))
    }

    /// Public key of the current primary, if known.
    pub fn primary_key(&self) -> Option<[u8; 32]> {
        let p = self.primary.load(Ordering::Relaxed) as usize;
        self.epoch()
            .validators
            .get(p)
            .and_then(|v| <[u8; 32]>::try_from(v.public_key.as_slice()).ok())
    }

    /// Sends transactions a client handed to this node to every peer
    /// (nothing when it runs without peers).
    pub fn gossip(&self, txs: Vec<SignedTransaction>) {
        if txs.is_empty() {
            return;
        }
        if let Some(gossip) = &self.epoch().gossip {
            gossip.gossip_txs(txs);
        }
    }
}
