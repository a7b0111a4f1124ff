//! PBFT replication: the node side of the pure `kubeledger-pbft` replica.
//!
//! ```text
//!  peers ──Peer.Messages──▶ transport ──per-signer queues▶┌───────────────┐
//!  clients ─▶ admission ─▶ mempool ─▶ block cutter ─────▶ │ consensus task│──▶ peers (bounded
//!       (backups forward admitted txs to the primary)     │  owns Replica │    queues, dropped
//!  timers (deadlines) ──────────────────────────────────▶ │  persists its │    on overflow)
//!  payload validation (blocking pool) ──────────────────▶ │  state first  │
//!                                                          └──────┬────────┘
//!                                   Commit / FetchState (in order)│   ▲ Executed / Transferred
//!                                                          ┌──────▼───┴────┐
//!                                                          │   executor    │──▶ ledger (block +
//!                                                          └───────────────┘    commit certificate)
//! ```

pub mod block_spool;
pub mod catch_up;
pub mod cutter;
pub mod epoch;
pub mod executor;
pub mod inbound;
pub mod observer;
pub mod payload_check;
pub mod persist;
pub mod replica_task;
pub mod state_transfer;
pub mod transport;

pub use kubeledger_protocol::wire::{codec, payload_table};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kubeledger_pbft::Digest;

use crate::tx::{TxId, VerifiedTx};

/// Entries kept before the cache is cleared (payloads that never commit).
const PAYLOAD_CACHE_CAP: usize = 256;

/// Decoded transactions of payloads this node proposed or validated, by
/// payload digest, so execution and the block cutter need not decode the
/// same bytes again.
#[derive(Debug, Default)]
pub struct PayloadCache {
    inner: Mutex<HashMap<Digest, Arc<Vec<Arc<VerifiedTx>>>>>,
}

impl PayloadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Vec<Arc<VerifiedTx>>>>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn insert(&self, digest: Digest, txs: Vec<Arc<VerifiedTx>>) {
        let mut g = self.lock();
        if g.len() >= PAYLOAD_CACHE_CAP {
            g.clear();
        }
        g.insert(digest, Arc::new(txs));
    }

    pub fn take(&self, digest: &Digest) -> Option<Arc<Vec<Arc<VerifiedTx>>>> {
        self.lock().remove(digest)
    }

    pub fn ids(&self, digest: &Digest) -> Option<Vec<TxId>> {
        self.lock()
            .get(digest)
            .map(|txs| txs.iter().map(|t| t.id).collect())
    }
}
