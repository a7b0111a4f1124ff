//! The checkpoint audit: at each stable checkpoint, this replica's own
//! block and state against what a quorum certified.

use kubeledger_pbft::{Digest, Seq};

use super::ConsensusTask;

impl ConsensusTask {
    /// Compares this replica's block and state at a stable checkpoint with
    /// what a quorum certified; a mismatch means its own data is wrong.
    pub(super) fn check_against_checkpoint(
        &self,
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
    ) {
        if self.state.ledger.tip().height < seq {
            return; // behind: state transfer brings the certified blocks
        }
        let ours = match self.state.ledger.header(seq) {
            Ok(Some(h)) => (
                crate::crypto::hash32(&h.state_root).unwrap_or_default(),
                crate::block::header_hash(&h),
            ),
            Err(e) => {
                if e.is_corruption() {
                    self.state
                        .report_corruption(format!("reading block {seq} for checkpoint: {e}"));
                }
                return;
            }
            Ok(None) => {
                self.state.report_corruption(format!(
                    "block {seq} is missing below the tip, at a stable checkpoint"
                ));
                return;
            }
        };
        if ours != (state_root, block_hash) {
            self.state.report_corruption(format!(
                "block {seq}: local state root {} / hash {} disagree with the stable checkpoint's {} / {}",
                hex::encode(&ours.0[..8]),
                hex::encode(&ours.1[..8]),
                hex::encode(&state_root[..8]),
                hex::encode(&block_hash[..8]),
            ));
        }
    }
}
