//! Whole-ledger verification: the hash chain from genesis to the tip
//! (links, heights, merkle roots) and the state against its commitment.

use rocksdb::IteratorMode;

use super::state_commitment::{Entry, StateAccumulator};
use super::store::{cf, StoredValue, CF_STATE};
use super::{Ledger, LedgerError};
use crate::block::header_hash;
use crate::block::verify::{verify_body, verify_successor, ChainError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("block {0} is missing")]
    MissingBlock(u64),
    #[error("genesis block does not commit to the configured genesis")]
    GenesisMismatch,
    #[error("the tip hash does not match block {0}")]
    TipMismatch(u64),
    #[error("state does not match the commitment of block {height}: stored {stored}, recomputed {recomputed}")]
    StateMismatch {
        height: u64,
        stored: String,
        recomputed: String,
    },
}

/// What a verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub blocks: u64,
    pub transactions: u64,
    pub state_keys: u64,
}

impl Ledger {
    /// Walks every block from genesis to the tip, checking links, heights,
    /// merkle roots and counts, then recomputes the state commitment from
    /// the stored state and compares it with the tip block's.
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        let tip = self.tip();
        let (genesis_block, mut prev_hash) = self
            .block_by_height(0)?
            .ok_or(VerifyError::MissingBlock(0))?;
        let mut prev = genesis_block
            .header
            .clone()
            .ok_or(VerifyError::MissingBlock(0))?;
        if prev.prev_hash.as_slice() != self.genesis().hash() {
            return Err(VerifyError::GenesisMismatch);
        }
        verify_body(&prev, &genesis_block)?;
        let mut transactions = 0u64;
        // Below a state-sync point: headers and transaction ids only.
        let base = self.sync_base()?;
        for height in 1..=base.min(tip.height) {
            let stored = self
                .synced_header(height)?
                .ok_or(VerifyError::MissingBlock(height))?;
            let header = stored
                .header
                .clone()
                .ok_or(VerifyError::MissingBlock(height))?;
            if header.height != height || header.prev_hash.as_slice() != prev_hash {
                return Err(ChainError::BrokenLink {
                    height,
                    expected: hex::encode(prev_hash),
                    found: hex::encode(&header.prev_hash),
                }
                .into());
            }
            let hash = header_hash(&header);
            crate::state_sync::manifest::verify_header(height, &hash, stored).map_err(|_| {
                ChainError::BadTxRoot {
                    height,
                    expected: hex::encode(&header.tx_root),
                    found: "the stored transaction ids".into(),
                }
            })?;
            transactions += u64::from(header.tx_count);
            prev_hash = hash;
            prev = header;
        }
        for height in base + 1..=tip.height {
            let (block, hash) = self
                .block_by_height(height)?
                .ok_or(VerifyError::MissingBlock(height))?;
            let header = verify_successor(&prev, &prev_hash, &block)?;
            transactions += u64::from(header.tx_count);
            prev_hash = header_hash(header);
            debug_assert_eq!(prev_hash, hash);
            prev = header.clone();
        }
        if prev_hash != tip.hash {
            return Err(VerifyError::TipMismatch(tip.height));
        }
        let state_keys = self.verify_state(&prev.state_root, tip.height)?;
        Ok(VerifyReport {
            blocks: tip.height + 1,
            transactions,
            state_keys,
        })
    }

    fn verify_state(&self, expected_root: &[u8], height: u64) -> Result<u64, VerifyError> {
        let mut acc = StateAccumulator::default();
        let mut keys = 0u64;
        let state_cf = cf(self.db(), CF_STATE).map_err(LedgerError::from)?;
        for item in self.db().iterator_cf(state_cf, IteratorMode::Start) {
            let (key, value) = item.map_err(LedgerError::from)?;
            let stored = StoredValue::decode(&value).map_err(LedgerError::from)?;
            acc.insert(&Entry {
                key: &key,
                value: &stored.value,
                height: stored.height,
                index: stored.index,
            });
            keys += 1;
        }
        let root = acc.root();
        if root.as_slice() != expected_root {
            return Err(VerifyError::StateMismatch {
                height,
                stored: hex::encode(expected_root),
                recomputed: hex::encode(root),
            });
        }
        Ok(keys)
    }
}
