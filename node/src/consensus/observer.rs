//! Observer mode: a node whose key is not in the validator set follows the
//! chain without voting. It asks validators, one at a time, for their
//! latest stable checkpoint, trusts it only with a valid quorum
//! certificate (2f + 1 signed CHECKPOINTs of the validator set), then
//! fetches the blocks up to it, checks their hash chain ends at the
//! certified block, and re-executes them (which recomputes every state
//! root). It serves reads and refuses transactions.
//!
//! Across a change of the validator set it first verifies the certificate
//! that ended its epoch (with the set it knows), fetches up to it, stores
//! it, and hands back to the supervisor, which re-plans: the node follows
//! the next set, or becomes one of its validators.
//!
//! It trails the validators by at most a checkpoint interval. A new
//! member's nodes run this way until they are promoted to validators.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use super::epoch::{self, EpochPlan};
use super::state_transfer;
use crate::node_state::consensus_board::Snapshot;
use crate::node_state::{Loop, NodeState};
use crate::proto::peer_client::PeerClient;
use crate::proto::{CheckpointProof, GetCheckpointRequest};

/// Pause between polls when the observer is caught up.
const POLL: Duration = Duration::from_millis(500);
/// Longest pause after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ObserveError {
    #[error("cannot reach validator {peer}: {message}")]
    Unreachable { peer: String, message: String },
    #[error("validator {peer} served a checkpoint certificate that does not verify")]
    InvalidProof { peer: String },
    #[error(transparent)]
    Transfer(#[from] state_transfer::TransferError),
    #[error("storing the epoch proof: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// Why following stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FollowExit {
    Stopping,
    /// The ledger crossed into the next epoch: plan again.
    EpochCrossed,
}

/// Peer clients by address, reused across polls.
#[derive(Default)]
pub(crate) struct Peers {
    clients: HashMap<String, PeerClient<Channel>>,
}

impl Peers {
    /// Asks `address` for its latest stable checkpoint and the epoch proofs
    /// from height `epoch_proofs_from` on.
    pub(crate) async fn checkpoint(
        &mut self,
        address: &str,
        epoch_proofs_from: u64,
    ) -> Result<CheckpointProof, ObserveError> {
        let unreachable = |message: String| ObserveError::Unreachable {
            peer: address.to_owned(),
            message,
        };
        if !self.clients.contains_key(address) {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| unreachable(e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            self.clients
                .insert(address.to_owned(), PeerClient::new(channel));
        }
        let Some(client) = self.clients.get_mut(address) else {
            return Err(unreachable("no client".into()));
        };
        match client
            .get_checkpoint(GetCheckpointRequest { epoch_proofs_from })
            .await
        {
            Ok(r) => Ok(r.into_inner()),
            Err(e) => {
                self.clients.remove(address);
                Err(unreachable(e.to_string()))
            }
        }
    }
}

/// Addresses to follow: the plan's validators, then any the configuration
/// schedules next (they are the ones that carry on past a switch).
pub(crate) fn sources(state: &NodeState, plan: &EpochPlan) -> Vec<String> {
    let my_key = state.node_key.to_bytes();
    let config = state.ledger.config();
    let scheduled = config
        .scheduled_validators
        .iter()
        .flat_map(|s| s.validators.iter());
    let mut out: Vec<String> = Vec::new();
    for v in plan.validators.iter().chain(scheduled) {
        if v.public_key != my_key && !out.contains(&v.peer_address) {
            out.push(v.peer_address.clone());
        }
    }
    out
}

/// Follows the chain as an observer of `plan`'s validator set.
pub(crate) async fn follow(state: &Arc<NodeState>, plan: &EpochPlan) -> FollowExit {
    tracing::info!(
        validators = plan.vset.n(),
        epoch_base = plan.base.seq,
        "not a validator: following the chain as an observer"
    );
    let sources = sources(state, plan);
    let mut peers = Peers::default();
    let mut next = 0usize;
    let mut backoff = POLL;
    let mut stopping = state.stopping();
    loop {
        // Both loops are this one here: no replica, no executor.
        state.heartbeat(Loop::Consensus);
        state.heartbeat(Loop::Storage);
        let Some(address) = sources.get(next % sources.len().max(1)).cloned() else {
            tracing::warn!("no validator to follow");
            tokio::select! {
                _ = tokio::time::sleep(MAX_BACKOFF) => continue,
                _ = stopping.wait_for(|s| *s) => return FollowExit::Stopping,
            }
        };
        let span = tracing::debug_span!("observe", peer = %address);
        let result = {
            let _e = span.enter();
            let work = observe(state, plan, &mut peers, &address);
            tokio::pin!(work);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    // A long state transfer beats the storage loop on every
                    // block; this one loop is both, so it is alive while
                    // that goes on (and stuck when it stops).
                    _ = tick.tick() => state.heartbeats.follow(Loop::Consensus, Loop::Storage),
                }
            }
        };
        let pause = match result {
            Ok(Observed::Crossed) => return FollowExit::EpochCrossed,
            Ok(Observed::Moved) => {
                backoff = POLL;
                Duration::ZERO
            }
            Ok(Observed::Current) => {
                backoff = POLL;
                POLL
            }
            Err(e) => {
                tracing::warn!(error = %e, "observer could not follow this validator; trying the next");
                next += 1;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping.wait_for(|s| *s) => return FollowExit::Stopping,
        }
    }
}

enum Observed {
    /// Nothing new.
    Current,
    /// The ledger moved within the epoch.
    Moved,
    /// The ledger reached the end of the epoch, whose certificate is now
    /// stored.
    Crossed,
}

/// One poll of the validator at `address`.
async fn observe(
    state: &Arc<NodeState>,
    plan: &EpochPlan,
    peers: &mut Peers,
    address: &str,
) -> Result<Observed, ObserveError> {
    let served = peers.checkpoint(address, plan.base.seq + 1).await?;
    let invalid = || ObserveError::InvalidProof {
        peer: address.to_owned(),
    };
    // The first epoch proof after our base ends our epoch: it must verify
    // with our set.
    if let Some(end) = served.epoch_proofs.first() {
        let cp = epoch::verify(&plan.vset, end).ok_or_else(invalid)?;
        transfer(state, address, &cp).await?;
        epoch::store_proof(&state.ledger, &cp)?;
        tracing::info!(
            epoch_end = cp.seq,
            "crossed the end of a validator-set epoch"
        );
        return Ok(Observed::Crossed);
    }
    let tip = state.ledger.tip().height;
    if served.proof.is_empty() || served.seq <= tip {
        return Ok(Observed::Current);
    }
    let cp = epoch::verify(&plan.vset, &served).ok_or_else(invalid)?;
    transfer(state, address, &cp).await?;
    Ok(Observed::Moved)
}

/// Fetches and re-executes the blocks up to a verified checkpoint.
async fn transfer(
    state: &Arc<NodeState>,
    address: &str,
    cp: &kubeledger_pbft::StableCheckpoint,
) -> Result<(), ObserveError> {
    if state.ledger.tip().height >= cp.seq {
        return Ok(());
    }
    state.consensus.publish(Snapshot {
        stable_checkpoint: cp.seq,
        state_transfer_target: Some(cp.seq),
        ..state.consensus.snapshot()
    });
    let result = state_transfer::fetch_from(state, address, cp.seq, cp.block_hash).await;
    state.consensus.publish(Snapshot {
        state_transfer_target: None,
        ..state.consensus.snapshot()
    });
    if let Err(e) = result {
        if let state_transfer::TransferError::Diverged { .. } = &e {
            state.report_corruption(format!("observer: {e}"));
        }
        return Err(e.into());
    }
    state.metrics.height.set(state.ledger.tip().height as i64);
    Ok(())
}
