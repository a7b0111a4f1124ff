//! A stable checkpoint with its certificate (2f + 1 signed CHECKPOINTs), as
//! peers serve it and snapshots carry it.

use kubeledger_pbft::{
    verify_checkpoint_proof, Checkpoint, SignedMessage, StableCheckpoint, ValidatorSet,
};

use super::codec;
use crate::proto::CheckpointProof;

/// The wire form of a stable checkpoint and its certificate.
pub fn to_proto(cp: &StableCheckpoint) -> CheckpointProof {
    CheckpointProof {
        seq: cp.seq,
        block_hash: cp.block_hash.to_vec(),
        proof: cp
            .proof
            .iter()
            .filter_map(|m| codec::encode_message(m).ok().map(|b| b.to_vec()))
            .collect(),
        epoch_proofs: Vec::new(),
    }
}

/// Decodes a served certificate and verifies it against `vset`; the
/// checkpoint it certifies, with the certificate.
pub fn verify(vset: &ValidatorSet, served: &CheckpointProof) -> Option<StableCheckpoint> {
    let proof: Vec<SignedMessage> = served
        .proof
        .iter()
        .map(|b| codec::decode_message(b))
        .collect::<Result<_, _>>()
        .ok()?;
    let Checkpoint {
        seq,
        state_root,
        block_hash,
    } = verify_checkpoint_proof(vset, &proof)?;
    (seq == served.seq && block_hash.as_slice() == served.block_hash).then_some(StableCheckpoint {
        seq,
        state_root,
        block_hash,
        proof,
    })
}
