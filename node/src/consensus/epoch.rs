//! Validator-set epochs on the node: which set this node works with (and
//! whether it votes in it), and the certificates that end epochs.
//!
//! A set orders the blocks of its epoch, up to the checkpoint its
//! successor was scheduled after (see [`crate::governance::validators`]).
//! When that checkpoint is stable, the old set's certificate of it is
//! stored as the *epoch proof*: it is what the new set starts from, and
//! what lets a node that missed the switch verify its way across it
//! (validators and observers serve these proofs with `GetCheckpoint`).

use kubeledger_pbft::{ReplicaIndex, StableCheckpoint, ValidatorSet};
use prost::Message as _;

use crate::governance::validators::epoch_at;
use crate::ledger::{Ledger, LedgerError};
use crate::proto::{CheckpointProof, NodeInfo};

const EPOCH_PROOF_PREFIX: &[u8] = b"epoch-proof/";
/// Epoch proofs served in one answer.
pub const MAX_EPOCH_PROOFS_SERVED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("PBFT: {0}")]
    Pbft(#[from] kubeledger_pbft::Error),
    #[error("validator {name} has an invalid public key")]
    BadKey { name: String },
    #[error("block {0}, the base of this epoch, is missing")]
    MissingBase(u64),
    #[error("stored epoch proof {0} cannot be decoded")]
    BadProof(u64),
}

fn proof_key(seq: u64) -> Vec<u8> {
    let mut k = EPOCH_PROOF_PREFIX.to_vec();
    k.extend_from_slice(format!("{seq:020}").as_bytes());
    k
}

pub use kubeledger_protocol::wire::checkpoint_proof::{to_proto, verify};

/// Stores the certificate that ended an epoch.
pub fn store_proof(ledger: &Ledger, cp: &StableCheckpoint) -> Result<(), LedgerError> {
    ledger.write_consensus(&[(proof_key(cp.seq), to_proto(cp).encode_to_vec())], &[])
}

pub fn has_proof(ledger: &Ledger, seq: u64) -> Result<bool, LedgerError> {
    Ok(ledger.consensus_record(&proof_key(seq))?.is_some())
}

/// Stored epoch proofs at or after `from`, oldest first.
pub fn proofs_from(ledger: &Ledger, from: u64) -> Result<Vec<CheckpointProof>, EpochError> {
    ledger
        .consensus_records_from(
            EPOCH_PROOF_PREFIX,
            &proof_key(from),
            MAX_EPOCH_PROOFS_SERVED,
        )?
        .into_iter()
        .map(|(k, v)| {
            CheckpointProof::decode(v.as_slice()).map_err(|_| {
                let seq = std::str::from_utf8(&k[EPOCH_PROOF_PREFIX.len()..])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default();
                EpochError::BadProof(seq)
            })
        })
        .collect()
}

/// The validator set this node works with, from its ledger.
#[derive(Debug, Clone)]
pub struct EpochPlan {
    /// The checkpoint the epoch starts after (seq 0: genesis), as the node
    /// executed it; the proof is not kept.
    pub base: StableCheckpoint,
    pub end: Option<u64>,
    pub validators: Vec<NodeInfo>,
    pub vset: ValidatorSet,
    /// This node's replica index, if it is one of the validators.
    pub me: Option<ReplicaIndex>,
}

/// The PBFT validator set of an epoch: its validators' keys, in replica
/// index order, bound to the checkpoint the epoch starts after.
pub fn validator_set(validators: &[NodeInfo], base: u64) -> Result<ValidatorSet, EpochError> {
    let keys = validators
        .iter()
        .map(|v| {
            <[u8; 32]>::try_from(v.public_key.as_slice()).map_err(|_| EpochError::BadKey {
                name: v.name.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ValidatorSet::for_epoch(&keys, base)?)
}

/// The epoch a node whose ledger is at its tip works in: the one ordering
/// the next block, except right at an epoch's end whose certificate this
/// node does not hold yet (it stays with the old set until it does).
pub fn plan(ledger: &Ledger, my_key: &[u8; 32]) -> Result<EpochPlan, EpochError> {
    let tip = ledger.tip().height;
    let config = ledger.config();
    let next = epoch_at(&config, tip + 1);
    let (base, validators, end) = if next.base > 0 && next.base == tip && !has_proof(ledger, tip)? {
        // The configuration after the epoch's last block still has the
        // switch scheduled, not settled.
        let before = ledger.config_at(tip)?;
        let old = epoch_at(&before, tip);
        (old.base, old.validators.to_vec(), old.end)
    } else {
        (next.base, next.validators.to_vec(), next.end)
    };
    let vset = validator_set(&validators, base)?;
    let me = validators
        .iter()
        .position(|v| v.public_key.as_slice() == my_key)
        .map(|i| i as ReplicaIndex);
    let base = if base == 0 {
        StableCheckpoint {
            seq: 0,
            state_root: [0; 32],
            block_hash: [0; 32],
            proof: Vec::new(),
        }
    } else {
        let header = ledger.header(base)?.ok_or(EpochError::MissingBase(base))?;
        StableCheckpoint {
            seq: base,
            state_root: crate::crypto::hash32(&header.state_root).unwrap_or_default(),
            block_hash: crate::block::header_hash(&header),
            proof: Vec::new(),
        }
    };
    Ok(EpochPlan {
        base,
        end,
        validators,
        vset,
        me,
    })
}
