//! The action interpreter: what the consensus task does with each action
//! the replica returns (queue messages for the next flush, validate
//! off-task, hand commits and state fetches to the executor, keep timers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeledger_pbft::{Action, Digest, Payload, ReplicaIndex, Seq, View};

use super::{ConsensusTask, PayloadVerdict, Unexecuted};
use crate::clock::now_ms;
use crate::consensus::cutter::{BlockCutter, CutterLimits};
use crate::consensus::executor::ExecutorCommand;
use crate::consensus::payload_check;
use crate::tx::VerifiedTx;

/// Transactions per frame when re-forwarding the pool to a new primary.
const FORWARD_CHUNK: usize = 2_000;

impl ConsensusTask {
    pub(super) fn handle(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                // Sent by `flush`, once the state that promises them is durable.
                Action::Broadcast(msg) => self.outbox.push((None, msg)),
                Action::Send { to, msg } => self.outbox.push((Some(to), msg)),
                Action::ValidatePayload {
                    seq,
                    view,
                    digest,
                    payload,
                } => self.check_payload_off_task(seq, view, digest, payload),
                Action::Commit {
                    seq,
                    view,
                    payload,
                    certificate,
                } => {
                    let own = self.my_proposals.remove(&certificate.digest).is_some();
                    tracing::debug!(seq, view, txs = payload.txs.len(), "committed");
                    self.unexecuted.insert(
                        seq,
                        Unexecuted {
                            digest: certificate.digest,
                            payload: payload.clone(),
                            own,
                        },
                    );
                    let _ = self
                        .carryover
                        .executor_commands
                        .send(ExecutorCommand::Commit {
                            seq,
                            view,
                            payload,
                            certificate,
                        });
                }
                Action::SetTimer { id, after_ms } => {
                    self.timers
                        .insert(id, Instant::now() + Duration::from_millis(after_ms));
                }
                Action::CancelTimer { id } => {
                    self.timers.remove(&id);
                }
                Action::FetchState {
                    target_seq,
                    block_hash,
                    certificate,
                    peers,
                    ..
                } => {
                    tracing::info!(target_seq, "state transfer requested");
                    let _ = self
                        .carryover
                        .executor_commands
                        .send(ExecutorCommand::Fetch {
                            target_seq,
                            block_hash,
                            certificate,
                            peers,
                        });
                }
                Action::ViewChanged { view, primary } => self.on_view_changed(view, primary),
                Action::CheckpointStable {
                    seq,
                    state_root,
                    block_hash,
                } => {
                    tracing::debug!(seq, "checkpoint stable");
                    self.state.metrics.checkpoints_stable.inc();
                    self.state
                        .consensus
                        .set_stable(self.replica.persistent().stable.clone());
                    self.check_against_checkpoint(seq, state_root, block_hash);
                }
                Action::ProposalRejected { payload, reason } => {
                    tracing::debug!(?reason, "proposal not ordered");
                    if reason == kubeledger_pbft::RejectReason::WindowFull {
                        self.window_full = true;
                    }
                    if let Some(txs) = self.my_proposals.remove(&payload.digest()) {
                        self.state.mempool.requeue(txs);
                    }
                }
            }
        }
    }

    fn check_payload_off_task(&self, seq: Seq, view: View, digest: Digest, payload: Payload) {
        let state = self.state.clone();
        let cache = self.carryover.cache.clone();
        let tx = self.carryover.verdicts_tx.clone();
        tokio::task::spawn_blocking(move || {
            let span = tracing::debug_span!("validate", seq, view, txs = payload.txs.len());
            let _e = span.enter();
            let valid = match payload_check::check_proposed_payload(&state, seq, &payload, now_ms())
            {
                Ok(txs) => {
                    cache.insert(digest, txs);
                    true
                }
                Err(e) => {
                    tracing::warn!(seq, view, error = %e, "refusing proposed block");
                    false
                }
            };
            let _ = tx.send(PayloadVerdict {
                seq,
                view,
                digest,
                valid,
            });
        });
    }

    fn on_view_changed(&mut self, view: View, primary: ReplicaIndex) {
        tracing::info!(view, primary, "new view installed");
        self.state.metrics.view_changes.inc();
        // Proposals of the old view that were not carried over return to
        // the pool (the cutter skips whatever the new view re-proposes).
        let mut back: Vec<Arc<VerifiedTx>> = self.already_in_flight.drain(..).collect();
        for (_, txs) in self.my_proposals.drain() {
            back.extend(txs);
        }
        if !back.is_empty() {
            self.state.mempool.requeue(back);
        }
        self.foreign_ids.clear();
        self.cutter = BlockCutter::new(
            CutterLimits::from_params(&self.state.params()),
            Instant::now(),
        );
        self.publish();
        if primary != self.replica.id() {
            let queued = self.state.mempool.queued();
            for chunk in queued.chunks(FORWARD_CHUNK) {
                let txs = chunk.iter().map(|t| t.signed.clone()).collect();
                self.links.forward_txs(primary, txs);
            }
        }
    }
}
