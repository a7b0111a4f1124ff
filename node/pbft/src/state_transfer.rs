//! Catching up past garbage-collected log entries by fetching state.

use crate::message::{Digest, Seq};
use crate::replica::{Action, Replica, StableCheckpoint};

impl Replica {
    /// Ask the node to fetch state up to a certified checkpoint. Commits are
    /// held back until `StateTransferred` so the ledger sees one history.
    pub(crate) fn request_state_transfer(&mut self, cp: StableCheckpoint, out: &mut Vec<Action>) {
        if self.fetching.as_ref().is_some_and(|f| f.seq >= cp.seq) {
            return;
        }
        tracing::info!(me = self.me, target = cp.seq, "state transfer");
        let mut peers: Vec<_> = cp
            .proof
            .iter()
            .map(|m| m.signer)
            .filter(|s| *s != self.me)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        out.push(Action::FetchState {
            target_seq: cp.seq,
            state_root: cp.state_root,
            block_hash: cp.block_hash,
            certificate: cp.proof.clone(),
            peers,
        });
        self.fetching = Some(cp);
        self.update_request_timer(false, out);
    }

    pub(crate) fn on_state_transferred(
        &mut self,
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
        out: &mut Vec<Action>,
    ) {
        let target = self.fetching.take();
        if seq <= self.st.last_committed {
            // Nothing new; resume normal release.
            if let Some(t) = target.filter(|t| t.seq > self.st.last_committed) {
                self.request_state_transfer(t, out);
            }
            self.release_commits(out);
            return;
        }
        self.st.last_committed = seq;
        self.last_executed = self.last_executed.max(seq);
        self.st.next_seq = self.st.next_seq.max(seq.saturating_add(1));
        if let Some(t) = target {
            if t.seq == seq && t.state_root == state_root && t.block_hash == block_hash {
                self.advance_stable(t, out);
            } else if t.seq > seq {
                self.request_state_transfer(t, out);
            }
        }
        self.release_commits(out);
        self.update_request_timer(true, out);
    }
}
