//! A backup's check of a proposed payload before it votes: every
//! transaction decodes, is for this chain and within the size limits,
//! carries a valid signature, appears once and is not already committed;
//! the block fits the block limits and its timestamp is sane.

use std::collections::HashSet;
use std::sync::Arc;

use kubeledger_pbft::Payload;

use super::codec;
use crate::node_state::NodeState;
use crate::tx::{signature_batch, TxId, VerifiedTx};

/// How far a proposal's timestamp may run ahead of this node's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidPayload {
    #[error("block holds {count} transactions, the limit is {limit}")]
    TooManyTxs { count: usize, limit: usize },
    #[error("block holds {size} bytes of transactions, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("block timestamp {proposed} is before the last block's {tip}")]
    TimestampRegressed { proposed: u64, tip: u64 },
    #[error("block timestamp {proposed} is more than 10 s ahead of this node's clock {now}")]
    TimestampAhead { proposed: u64, now: u64 },
    #[error("transaction #{index}: {message}")]
    BadTx { index: usize, message: String },
    #[error("transaction {0} appears twice in the block")]
    DuplicateInBlock(TxId),
    #[error("transaction {0} is already committed")]
    AlreadyCommitted(TxId),
    #[error("transaction {0}: signature does not verify")]
    BadSignature(TxId),
    #[error("ledger lookup failed: {0}")]
    Ledger(String),
}

/// Checks `payload`, proposed for height `seq`, as a backup must before
/// it votes; on success returns its decoded transactions.
pub fn check_proposed_payload(
    state: &NodeState,
    seq: u64,
    payload: &Payload,
    now_ms: u64,
) -> Result<Vec<Arc<VerifiedTx>>, InvalidPayload> {
    if payload.is_null() {
        return Ok(Vec::new());
    }
    // Block limits in force at `seq`; while a parameter change is
    // activating, the primary may have cut by those in force one pipeline
    // depth earlier, so the larger of the two passes.
    let at_seq = state.ledger.params_at(seq);
    let at_tip = state.params();
    let limits = state.tx_limits();
    let max_txs = at_seq.max_block_txs.max(at_tip.max_block_txs) as usize;
    if payload.txs.len() > max_txs {
        return Err(InvalidPayload::TooManyTxs {
            count: payload.txs.len(),
            limit: max_txs,
        });
    }
    let size: usize = payload.txs.iter().map(Vec::len).sum();
    let max_bytes =
        usize::try_from(at_seq.max_block_bytes.max(at_tip.max_block_bytes)).unwrap_or(usize::MAX);
    // A single transaction may exceed the block byte limit on its own.
    if size > max_bytes && payload.txs.len() > 1 {
        return Err(InvalidPayload::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    let tip = state.ledger.tip();
    if payload.timestamp_ms < tip.timestamp_ms {
        return Err(InvalidPayload::TimestampRegressed {
            proposed: payload.timestamp_ms,
            tip: tip.timestamp_ms,
        });
    }
    if payload.timestamp_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(InvalidPayload::TimestampAhead {
            proposed: payload.timestamp_ms,
            now: now_ms,
        });
    }
    let chain_id = state.ledger.chain_id();
    let mut txs = Vec::with_capacity(payload.txs.len());
    let mut seen = HashSet::with_capacity(payload.txs.len());
    for (index, bytes) in payload.txs.iter().enumerate() {
        let tx = codec::tx_from_payload(bytes, chain_id, &limits).map_err(|r| {
            InvalidPayload::BadTx {
                index,
                message: r.message,
            }
        })?;
        if !seen.insert(tx.id) {
            return Err(InvalidPayload::DuplicateInBlock(tx.id));
        }
        txs.push(tx);
    }
    let ids: Vec<TxId> = txs.iter().map(|t| t.id).collect();
    let committed = state
        .ledger
        .contains_txs(&ids)
        .map_err(|e| InvalidPayload::Ledger(e.to_string()))?;
    if let Some((id, _)) = ids.iter().zip(&committed).find(|(_, c)| **c) {
        return Err(InvalidPayload::AlreadyCommitted(*id));
    }
    // Transactions this node admitted (from a client or a peer's gossip)
    // were verified then, with exactly this signature.
    let known = state.mempool.verified(&txs);
    let unknown: Vec<VerifiedTx> = txs
        .iter()
        .zip(&known)
        .filter(|(_, k)| !**k)
        .map(|(t, _)| t.clone())
        .collect();
    if !unknown.is_empty() {
        let started = std::time::Instant::now();
        let valid = signature_batch::verify(&unknown);
        state.metrics.signatures_checked(
            "proposal",
            unknown.len(),
            started.elapsed().as_secs_f64(),
        );
        if let Some((t, _)) = unknown.iter().zip(&valid).find(|(_, ok)| !**ok) {
            return Err(InvalidPayload::BadSignature(t.id));
        }
        // Pending here from now on, as if gossiped: their gossip, when it
        // comes, is skipped instead of checked again, and should this
        // proposal fail, a later primary still holds them. Ones committed
        // meanwhile or already pending are refused by the pool, which is
        // all that can go wrong here.
        let _ = state.mempool.admit(unknown, &state.ledger);
    }
    Ok(txs.into_iter().map(Arc::new).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthConfig, StorageConfig};
    use crate::ledger::Ledger;
    use crate::tx::envelope::{self, put};
    use ed25519_dalek::SigningKey;

    fn node(dir: &std::path::Path) -> NodeState {
        let key = SigningKey::from_bytes(&[3; 32]);
        let genesis = crate::genesis::single_validator_for_tests(&key);
        let ledger = Ledger::open(dir, genesis, &StorageConfig::default()).expect("open");
        NodeState::new(
            "n0".into(),
            key.verifying_key(),
            Arc::new(ledger),
            (&crate::config::MempoolConfig {
                max_txs: 1_000,
                ..Default::default()
            })
                .into(),
            HealthConfig::default(),
        )
    }

    fn payload(txs: &[crate::proto::SignedTransaction]) -> Payload {
        use prost::Message;
        Payload {
            timestamp_ms: 10,
            proposer: 0,
            txs: txs
                .iter()
                .map(|t| t.encode_to_vec())
                .collect::<Vec<_>>()
                .into(),
        }
    }

    #[test]
    fn transactions_first_seen_in_a_proposal_are_checked_once_and_then_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = node(dir.path());
        let client = SigningKey::from_bytes(&[9; 32]);
        let txs: Vec<_> = (0..6)
            .map(|i| envelope::sign(&client, "t", i, 5, put(format!("k{i}"), "v")))
            .collect();
        let checked = |state: &NodeState| {
            state
                .metrics
                .signatures_verified
                .get_or_create(&crate::metrics::PathLabel { path: "proposal" })
                .get()
        };

        let valid = check_proposed_payload(&state, 1, &payload(&txs), 1_000).expect("valid");
        assert_eq!(valid.len(), 6);
        assert_eq!(checked(&state), 6);
        let ids: Vec<TxId> = valid.iter().map(|t| t.id).collect();
        assert!(
            state.mempool.contains_all(&ids).iter().all(|p| *p),
            "pending after the check, so their gossip is skipped"
        );
        // The same proposal again (a re-proposal after a view change): the
        // signatures are known now and not checked again.
        check_proposed_payload(&state, 1, &payload(&txs), 1_000).expect("still valid");
        assert_eq!(checked(&state), 6);
    }

    #[test]
    fn a_forged_signature_refuses_the_proposal_and_admits_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = node(dir.path());
        let client = SigningKey::from_bytes(&[9; 32]);
        let mut txs: Vec<_> = (0..6)
            .map(|i| envelope::sign(&client, "t", i, 5, put(format!("k{i}"), "v")))
            .collect();
        txs[4].signature[0] ^= 1;
        let bad = envelope::tx_id(&txs[4]);
        assert_eq!(
            check_proposed_payload(&state, 1, &payload(&txs), 1_000).err(),
            Some(InvalidPayload::BadSignature(bad))
        );
        assert_eq!(state.mempool.stats().queued, 0);
    }
}
