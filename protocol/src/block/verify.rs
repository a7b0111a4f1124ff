//! Checks a block against its predecessor: hash link, height, merkle root
//! and transaction count. Used by the ledger's own verification and by
//! clients that audit a node's chain over the API.

use crate::crypto::{sha256, Hash32};
use crate::proto::{Block, BlockHeader};
use crate::tx::TxId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("block {height}: header missing")]
    MissingHeader { height: u64 },
    #[error("block at position {expected} claims height {found}")]
    WrongHeight { expected: u64, found: u64 },
    #[error(
        "block {height}: prev_hash {found} does not match the previous block's hash {expected}"
    )]
    BrokenLink {
        height: u64,
        expected: String,
        found: String,
    },
    #[error("block {height}: merkle root {found} does not match its transactions ({expected})")]
    BadTxRoot {
        height: u64,
        expected: String,
        found: String,
    },
    #[error("block {height}: header says {header} transactions, body has {body}")]
    BadTxCount {
        height: u64,
        header: u32,
        body: usize,
    },
    #[error("block {height}: timestamp {found} is before the previous block's {previous}")]
    TimeWentBackwards {
        height: u64,
        previous: u64,
        found: u64,
    },
    #[error("block {height}: chain id {found:?}, expected {expected:?}")]
    WrongChain {
        height: u64,
        expected: String,
        found: String,
    },
}

/// The ids of a block's transactions, in order.
pub fn tx_ids(block: &Block) -> Vec<TxId> {
    block.txs.iter().map(|t| TxId(sha256(&t.body))).collect()
}

/// Checks `block` as the successor of `previous` (whose hash is
/// `previous_hash`). Returns the header of `block` on success.
pub fn verify_successor<'a>(
    previous: &BlockHeader,
    previous_hash: &Hash32,
    block: &'a Block,
) -> Result<&'a BlockHeader, ChainError> {
    let expected_height = previous.height + 1;
    let header = block.header.as_ref().ok_or(ChainError::MissingHeader {
        height: expected_height,
    })?;
    if header.height != expected_height {
        return Err(ChainError::WrongHeight {
            expected: expected_height,
            found: header.height,
        });
    }
    if header.chain_id != previous.chain_id {
        return Err(ChainError::WrongChain {
            height: header.height,
            expected: previous.chain_id.clone(),
            found: header.chain_id.clone(),
        });
    }
    if header.prev_hash.as_slice() != previous_hash {
        return Err(ChainError::BrokenLink {
            height: header.height,
            expected: hex::encode(previous_hash),
            found: hex::encode(&header.prev_hash),
        });
    }
    if header.timestamp_ms < previous.timestamp_ms {
        return Err(ChainError::TimeWentBackwards {
            height: header.height,
            previous: previous.timestamp_ms,
            found: header.timestamp_ms,
        });
    }
    verify_body(header, block)?;
    Ok(header)
}

/// Checks the transaction count and merkle root of a block's body.
pub fn verify_body(header: &BlockHeader, block: &Block) -> Result<(), ChainError> {
    if header.tx_count as usize != block.txs.len() {
        return Err(ChainError::BadTxCount {
            height: header.height,
            header: header.tx_count,
            body: block.txs.len(),
        });
    }
    let root = super::tx_root(&tx_ids(block));
    if header.tx_root.as_slice() != root {
        return Err(ChainError::BadTxRoot {
            height: header.height,
            expected: hex::encode(root),
            found: hex::encode(&header.tx_root),
        });
    }
    Ok(())
}
