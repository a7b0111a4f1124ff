//! The executor: applies committed payloads to the ledger in order, each
//! with its commit certificate, and carries out state transfers. It runs
//! beside the consensus task, so agreement continues while a block writes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kubeledger_pbft::{CommitCertificate, Digest, Payload, ReplicaIndex, Seq, SignedMessage, View};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::codec;
use super::state_transfer;
use super::PayloadCache;
use crate::block::Proposal;
use crate::ledger::LedgerError;
use crate::node_state::{Loop, NodeState};
use crate::tx::VerifiedTx;

const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// How often the idle executor reports that it is alive.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// What the consensus task asks of the executor, in order.
#[derive(Debug)]
pub enum ExecutorCommand {
    Commit {
        seq: Seq,
        view: View,
        payload: Payload,
        certificate: CommitCertificate,
    },
    Fetch {
        target_seq: Seq,
        block_hash: Digest,
        certificate: Vec<SignedMessage>,
        peers: Vec<ReplicaIndex>,
    },
}

/// How much of a block's limits its payload used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockFill {
    pub txs: usize,
    pub bytes: usize,
}

impl BlockFill {
    pub fn of(payload: &Payload) -> Self {
        BlockFill {
            txs: payload.txs.len(),
            bytes: payload.txs.iter().map(Vec::len).sum(),
        }
    }

    /// Whether one more transaction of `size` bytes fitted under the limits.
    pub fn had_room_for(&self, size: usize, max_txs: usize, max_bytes: usize) -> bool {
        self.txs < max_txs && self.bytes.saturating_add(size) <= max_bytes
    }
}

/// What the executor reports back to the consensus task.
#[derive(Debug)]
pub enum ExecutorReport {
    Executed {
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
        /// What the ordered payload used of the block limits.
        filled: BlockFill,
    },
    Transferred {
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
    },
}

/// Applies committed payloads and runs state transfers, reporting each
/// to the consensus task.
pub struct Executor {
    pub state: Arc<NodeState>,
    pub cache: Arc<PayloadCache>,
    pub reports: mpsc::UnboundedSender<ExecutorReport>,
}

fn digest32(bytes: &[u8]) -> Digest {
    crate::crypto::hash32(bytes).unwrap_or_default()
}

impl Executor {
    pub async fn run(self, mut commands: mpsc::UnboundedReceiver<ExecutorCommand>) {
        let mut idle = tokio::time::interval(HEARTBEAT_PERIOD);
        loop {
            // Beats while idle and between commands; a write that hangs (a
            // stuck disk) silences it, and liveness fails.
            self.state.heartbeat(Loop::Storage);
            let command = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
                _ = idle.tick() => continue,
            };
            match command {
                ExecutorCommand::Commit {
                    seq,
                    view,
                    payload,
                    certificate,
                } => {
                    let span = tracing::info_span!("execute", seq, view, txs = payload.txs.len());
                    self.commit(seq, payload, certificate)
                        .instrument(span)
                        .await;
                }
                ExecutorCommand::Fetch {
                    target_seq,
                    block_hash,
                    certificate,
                    peers,
                } => {
                    let span = tracing::info_span!("state_transfer", target = target_seq);
                    state_transfer::run(&self.state, target_seq, block_hash, &certificate, &peers)
                        .instrument(span)
                        .await;
                    let tip = self.state.ledger.tip();
                    let root = self.state_root(tip.height);
                    let _ = self.reports.send(ExecutorReport::Transferred {
                        seq: tip.height,
                        state_root: root,
                        block_hash: tip.hash,
                    });
                }
            }
        }
        tracing::debug!("executor stopped");
    }

    fn state_root(&self, height: u64) -> Digest {
        match self.state.ledger.header(height) {
            Ok(Some(h)) => digest32(&h.state_root),
            _ => [0; 32],
        }
    }

    async fn commit(&self, seq: Seq, payload: Payload, certificate: CommitCertificate) {
        loop {
            let tip = self.state.ledger.tip();
            if seq <= tip.height {
                // Already executed before a restart (or by state transfer).
                let root = self.state_root(seq);
                let hash = match self.state.ledger.block_by_height(seq) {
                    Ok(Some((_, h))) => h,
                    _ => tip.hash,
                };
                let _ = self.reports.send(ExecutorReport::Executed {
                    seq,
                    state_root: root,
                    block_hash: hash,
                    filled: BlockFill::of(&payload),
                });
                return;
            }
            let state = self.state.clone();
            let cached = self.cache.take(&certificate.digest);
            let payload_c = payload.clone();
            let cert = certificate.clone();
            let result = tokio::task::spawn_blocking(move || {
                execute(&state, seq, &payload_c, cached, &cert)
            })
            .await;
            match result {
                Ok(Ok(block)) => {
                    let root = digest32(
                        block
                            .block
                            .header
                            .as_ref()
                            .map(|h| h.state_root.as_slice())
                            .unwrap_or_default(),
                    );
                    let hash = block.hash;
                    self.state.mempool.committed(&block.tx_ids);
                    self.state.on_committed(Arc::new(block));
                    let _ = self.reports.send(ExecutorReport::Executed {
                        seq,
                        state_root: root,
                        block_hash: hash,
                        filled: BlockFill::of(&payload),
                    });
                    return;
                }
                Ok(Err(e)) => {
                    if e.is_corruption() {
                        self.state
                            .report_corruption(format!("executing block {seq}: {e}"));
                    }
                    tracing::error!(error = %e, seq, "block execution failed; retrying");
                    self.state.set_storage_error(Some(e.to_string()));
                }
                Err(e) => tracing::error!(error = %e, seq, "execution task failed; retrying"),
            }
            tokio::time::sleep(STORAGE_RETRY).await;
            self.state.heartbeat(Loop::Storage);
        }
    }
}

/// Executes a committed payload at height `seq`. Transactions that do not
/// decode, repeat within the block or are already committed are skipped,
/// the same way on every replica, so each transaction commits once.
fn execute(
    state: &NodeState,
    seq: Seq,
    payload: &Payload,
    cached: Option<Arc<Vec<Arc<VerifiedTx>>>>,
    certificate: &CommitCertificate,
) -> Result<crate::ledger::CommittedBlock, LedgerError> {
    let txs: Vec<Arc<VerifiedTx>> = match cached {
        Some(txs) if txs.len() == payload.txs.len() => txs.as_ref().clone(),
        _ => {
            let chain_id = state.ledger.chain_id();
            let limits = state.tx_limits();
            payload
                .txs
                .iter()
                .filter_map(|b| codec::tx_from_payload(b, chain_id, &limits).ok())
                .map(Arc::new)
                .collect()
        }
    };
    let mut seen = HashSet::with_capacity(txs.len());
    let ids: Vec<_> = txs.iter().map(|t| t.id).collect();
    let committed = state.ledger.contains_txs(&ids)?;
    let txs: Vec<Arc<VerifiedTx>> = txs
        .into_iter()
        .zip(committed)
        .filter(|(t, c)| !c && seen.insert(t.id))
        .map(|(t, _)| t)
        .collect();
    let tip = state.ledger.tip();
    // The replica the payload names, in the validator set that ordered this
    // height (a switch of sets must not change an older block's header).
    // Not the primary of `view`: a payload can commit in different views
    // at different replicas, and every replica must build the same block.
    let config = state.ledger.config();
    let validators = crate::governance::validators::epoch_at(&config, seq).validators;
    let proposer = if payload.is_null() {
        [0; 32]
    } else {
        validators
            .get(payload.proposer as usize)
            .and_then(|v| <[u8; 32]>::try_from(v.public_key.as_slice()).ok())
            .unwrap_or_default()
    };
    let proposal = Proposal {
        height: seq,
        timestamp_ms: payload.timestamp_ms.max(tip.timestamp_ms),
        proposer,
        txs,
    };
    let cert = codec::encode_certificate(certificate).ok();
    state.ledger.commit_certified(&proposal, cert.as_deref())
}
