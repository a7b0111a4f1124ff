//! Consensus on the wire and on disk: PBFT messages, commit certificates
//! and the replica's state, encoded with bounded decoding, and payloads
//! stored once by digest.

pub mod checkpoint_proof;
pub mod codec;
pub mod payload_table;

use kubeledger_pbft::{ReplicaIndex, SignedMessage, ValidatorSet};

/// Whether the network edge may pass `msg`, delivered by `from`, to the
/// consensus task: its signer is a validator, it is signed by the peer that
/// sent it (a NEW-VIEW, self-certifying, may be relayed), and its outer
/// signature verifies. The check is remembered in the set, so the replica
/// does not repeat it.
pub fn authentic(vset: &ValidatorSet, from: ReplicaIndex, msg: &SignedMessage) -> bool {
    vset.contains(msg.signer) && (msg.signer == from || msg.may_be_relayed()) && msg.verify(vset)
}
