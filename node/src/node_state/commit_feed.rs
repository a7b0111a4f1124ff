//! Fan-out of committed blocks: live subscribers and `SubmitAndWait` callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot};

use crate::crypto::Hash32;
use crate::ledger::CommittedBlock;
use crate::tx::TxId;

/// Where a waited-for transaction landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    pub height: u64,
    pub index: u32,
    pub block_hash: Hash32,
}

#[derive(Debug)]
pub struct CommitFeed {
    blocks: broadcast::Sender<Arc<CommittedBlock>>,
    waiters: Mutex<HashMap<TxId, Vec<oneshot::Sender<CommitInfo>>>>,
}

impl Default for CommitFeed {
    fn default() -> Self {
        Self::new(256)
    }
}

impl CommitFeed {
    pub fn new(capacity: usize) -> Self {
        let (blocks, _) = broadcast::channel(capacity);
        Self {
            blocks,
            waiters: Mutex::new(HashMap::new()),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBlock>> {
        self.blocks.subscribe()
    }

    /// Registers interest in one transaction's commit. Register before
    /// submitting, so the commit cannot slip by unseen.
    pub fn wait_for(&self, id: TxId) -> oneshot::Receiver<CommitInfo> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(id).or_default().push(tx);
        rx
    }

    /// Drops the waiters of a transaction that was refused.
    pub fn forget(&self, id: &TxId) {
        self.lock().remove(id);
    }

    pub fn publish(&self, block: Arc<CommittedBlock>) {
        {
            let mut waiters = self.lock();
            if !waiters.is_empty() {
                for (index, id) in block.tx_ids.iter().enumerate() {
                    if let Some(senders) = waiters.remove(id) {
                        for s in senders {
                            let _ = s.send(CommitInfo {
                                height: block.height,
                                index: index as u32,
                                block_hash: block.hash,
                            });
                        }
                    }
                }
            }
        }
        // No receivers is fine: nobody is subscribed right now.
        let _ = self.blocks.send(block);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TxId, Vec<oneshot::Sender<CommitInfo>>>> {
        match self.waiters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
