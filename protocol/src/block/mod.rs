//! Blocks: what consensus orders ([`Proposal`]) and what the ledger stores
//! ([`crate::proto::Block`]), and the checks that a block extends a chain.

pub mod verify;

use std::sync::Arc;

use prost::Message;

use crate::crypto::{merkle, sha256, Hash32};
use crate::proto::BlockHeader;
use crate::tx::{TxId, VerifiedTx};

/// A batch of transactions in the order consensus agreed on, before
/// execution. The ledger turns it into a block: it fills in the hash link,
/// merkle root and state commitment deterministically, so every replica
/// that commits the same proposal on the same chain stores the same block.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub height: u64,
    /// Proposer's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// ed25519 public key of the proposing replica.
    pub proposer: [u8; 32],
    pub txs: Vec<Arc<VerifiedTx>>,
}

/// Hash of a block: SHA-256 of its canonically encoded header.
pub fn header_hash(header: &BlockHeader) -> Hash32 {
    sha256(&header.encode_to_vec())
}

/// Merkle root over transaction ids in block order.
pub fn tx_root(ids: &[TxId]) -> Hash32 {
    let leaves: Vec<&[u8]> = ids.iter().map(|id| id.0.as_slice()).collect();
    merkle::merkle_root(&leaves)
}
