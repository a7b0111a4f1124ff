//! Checkpoints: stable certificates, garbage collection, watermarks.

use std::collections::BTreeSet;

use crate::message::{Checkpoint, Digest, Message, Seq, SignedMessage};
use crate::replica::{Action, Replica, StableCheckpoint};
use crate::validators::ValidatorSet;

/// Extra checkpoints kept per replica beyond those inside our window.
const CHECKPOINTS_PER_REPLICA_SLACK: usize = 2;

fn as_checkpoint(sm: &SignedMessage) -> Option<&Checkpoint> {
    match &sm.message {
        Message::Checkpoint(c) => Some(c),
        _ => None,
    }
}

/// Validates a stable-checkpoint certificate: a quorum of distinct, validly
/// signed, matching CHECKPOINTs. Returns the checkpoint they agree on.
/// Observers use it to trust a checkpoint served by a single validator.
pub fn verify_checkpoint_proof(vset: &ValidatorSet, proof: &[SignedMessage]) -> Option<Checkpoint> {
    let first = *as_checkpoint(proof.first()?)?;
    let mut signers = BTreeSet::new();
    for sm in proof {
        if as_checkpoint(sm) != Some(&first) || !signers.insert(sm.signer) || !sm.verify(vset) {
            return None;
        }
    }
    (signers.len() >= vset.quorum()).then_some(first)
}

impl Replica {
    pub(crate) fn on_executed(
        &mut self,
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
        out: &mut Vec<Action>,
    ) {
        let progressed = seq > self.last_executed;
        self.last_executed = self.last_executed.max(seq);
        if progressed {
            // Blocks this replica has yet to execute are its own backlog, not
            // the primary's silence: the mempool still holds their requests
            // until they execute. Each block executed restarts the request
            // timer, so a replica catching up on large blocks does not call a
            // view change on a primary that has proposed everything it had.
            // A silent primary is still caught one timeout after the backlog
            // (at most one window of blocks) drains.
            self.update_request_timer(true, out);
        }
        if seq % self.cfg.checkpoint_interval != 0 || seq <= self.st.stable.seq {
            return;
        }
        let sm = self.sign(Message::Checkpoint(Checkpoint {
            seq,
            state_root,
            block_hash,
        }));
        out.push(Action::Broadcast(sm.clone()));
        self.st.own_checkpoints.insert(seq, sm.clone());
        self.record_checkpoint(sm, out);
    }

    pub(crate) fn on_checkpoint(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        self.record_checkpoint(sm, out);
    }

    fn record_checkpoint(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        let Some(cp) = as_checkpoint(&sm).copied() else {
            return;
        };
        if cp.seq <= self.st.stable.seq {
            return;
        }
        let cap = (self.cfg.window / self.cfg.checkpoint_interval) as usize
            + CHECKPOINTS_PER_REPLICA_SLACK;
        let per = self.checkpoints.entry(sm.signer).or_default();
        if let Some(prev) = per.get(&cp.seq).and_then(as_checkpoint) {
            if *prev != cp {
                self.stats.equivocations += 1;
            }
            return;
        }
        per.insert(cp.seq, sm);
        // Keep the newest: a peer far ahead is what tells us we are behind.
        while per.len() > cap {
            per.pop_first();
        }
        let proof: Vec<SignedMessage> = self
            .checkpoints
            .values()
            .filter_map(|m| m.get(&cp.seq))
            .filter(|m| as_checkpoint(m) == Some(&cp))
            .cloned()
            .collect();
        if proof.len() >= self.vset.quorum() {
            self.on_stable_certificate(
                StableCheckpoint {
                    seq: cp.seq,
                    state_root: cp.state_root,
                    block_hash: cp.block_hash,
                    proof,
                },
                out,
            );
        }
    }

    /// A verified quorum certificate for a checkpoint: adopt it if we have
    /// committed that far, otherwise fetch the state.
    pub(crate) fn on_stable_certificate(&mut self, cp: StableCheckpoint, out: &mut Vec<Action>) {
        if cp.seq <= self.st.stable.seq {
            return;
        }
        if self.st.last_committed >= cp.seq {
            self.advance_stable(cp, out);
        } else {
            self.request_state_transfer(cp, out);
        }
    }

    pub(crate) fn on_stable_proof_msg(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        if let Message::StableProof(proof) = sm.message {
            self.on_stable_proof(proof, out);
        }
    }

    pub(crate) fn on_stable_proof(&mut self, proof: Vec<SignedMessage>, out: &mut Vec<Action>) {
        match verify_checkpoint_proof(&self.vset, &proof) {
            Some(cp) => self.on_stable_certificate(
                StableCheckpoint {
                    seq: cp.seq,
                    state_root: cp.state_root,
                    block_hash: cp.block_hash,
                    proof,
                },
                out,
            ),
            None => self.stats.invalid_proofs += 1,
        }
    }

    /// Move the low watermark and discard everything at or below it.
    pub(crate) fn advance_stable(&mut self, cp: StableCheckpoint, out: &mut Vec<Action>) {
        let seq = cp.seq;
        tracing::debug!(me = self.me, seq, "checkpoint stable");
        out.push(Action::CheckpointStable {
            seq,
            state_root: cp.state_root,
            block_hash: cp.block_hash,
        });
        self.st.stable = cp;
        // A whole checkpoint interval committed in one view: the timeouts
        // that recent view changes stretched shrink back by one doubling.
        if self.st.view == self.calm_view && !self.st.in_view_change {
            self.patience = self.patience.saturating_sub(1);
        }
        self.calm_view = self.st.view;
        let keep_from = seq.saturating_add(1);
        self.st.slots = self.st.slots.split_off(&keep_from);
        self.st.own_checkpoints = self.st.own_checkpoints.split_off(&keep_from);
        for per in self.checkpoints.values_mut() {
            *per = per.split_off(&keep_from);
        }
        self.st.next_seq = self.st.next_seq.max(keep_from);
        self.update_request_timer(false, out);
    }

    /// Re-send our unstable checkpoints (repairs lost CHECKPOINT messages).
    pub(crate) fn rebroadcast_checkpoints(&mut self, out: &mut Vec<Action>) {
        for sm in self.st.own_checkpoints.values() {
            out.push(Action::Broadcast(sm.clone()));
        }
    }
}
