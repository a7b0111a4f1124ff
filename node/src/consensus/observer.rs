//! Observer mode: a node whose key is not in the validator set follows the
//! chain without voting. It asks validators, one at a time, for their
//! latest stable checkpoint, trusts it only with a valid quorum
//! certificate (2f + 1 signed CHECKPOINTs of the validator set), then
//! fetches the blocks up to it, checks their hash chain ends at the
//! certified block, and re-executes them (which recomputes every state
//! root). It serves reads and refuses transactions.
//!
//! It trails the validators by at most a checkpoint interval. A new
//! member's nodes run this way until they are promoted to validators.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kubeledger_pbft::{verify_checkpoint_proof, ReplicaIndex, ValidatorSet};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::replica_task::{ConsensusError, Running};
use super::status::Snapshot;
use super::{codec, state_transfer};
use crate::crypto::keys;
use crate::proto::peer_client::PeerClient;
use crate::proto::GetCheckpointRequest;
use crate::runtime::{Loop, NodeState};

/// Pause between polls when the observer is caught up.
const POLL: Duration = Duration::from_millis(500);
/// Longest pause after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum ObserveError {
    #[error("cannot reach validator {peer}: {message}")]
    Unreachable { peer: String, message: String },
    #[error("validator {peer} served a checkpoint certificate that does not verify")]
    InvalidProof { peer: String },
    #[error(transparent)]
    Transfer(#[from] state_transfer::TransferError),
}

/// Starts the observer loop in place of a replica.
pub fn start(state: Arc<NodeState>) -> Result<Running, ConsensusError> {
    let genesis = state.ledger.genesis();
    let mut validator_keys = Vec::with_capacity(genesis.validators.len());
    for v in &genesis.validators {
        validator_keys.push(keys::parse_public(&v.public_key)?.to_bytes());
    }
    let vset = ValidatorSet::new(&validator_keys)?;
    state.consensus.observer.store(true, Ordering::Relaxed);
    let _ = state.consensus.validator_keys.set(validator_keys);
    tracing::info!(
        validators = vset.n(),
        "not a validator: following the chain as an observer"
    );
    let done = || -> JoinHandle<()> { tokio::spawn(async {}) };
    Ok(Running {
        consensus: tokio::spawn(run(state, vset)),
        executor: done(),
        peer_server: done(),
    })
}

async fn run(state: Arc<NodeState>, vset: ValidatorSet) {
    let n = vset.n() as ReplicaIndex;
    let mut clients: HashMap<ReplicaIndex, PeerClient<Channel>> = HashMap::new();
    let mut peer: ReplicaIndex = 0;
    let mut backoff = POLL;
    let mut stopping = state.stopping();
    loop {
        // Both loops are this one here: no replica, no executor.
        state.heartbeat(Loop::Consensus);
        state.heartbeat(Loop::Storage);
        let span = tracing::debug_span!("observe", peer);
        let result = {
            let _e = span.enter();
            observe(&state, &vset, &mut clients, peer).await
        };
        let pause = match result {
            Ok(true) => {
                backoff = POLL;
                Duration::ZERO
            }
            Ok(false) => {
                backoff = POLL;
                POLL
            }
            Err(e) => {
                tracing::warn!(error = %e, "observer could not follow this validator; trying the next");
                clients.remove(&peer);
                peer = (peer + 1) % n.max(1);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// One poll of validator `peer`; whether the ledger moved.
async fn observe(
    state: &Arc<NodeState>,
    vset: &ValidatorSet,
    clients: &mut HashMap<ReplicaIndex, PeerClient<Channel>>,
    peer: ReplicaIndex,
) -> Result<bool, ObserveError> {
    let address = state
        .ledger
        .genesis()
        .validators
        .get(peer as usize)
        .map(|v| v.peer_address.clone())
        .unwrap_or_default();
    let unreachable = |message: String| ObserveError::Unreachable {
        peer: address.clone(),
        message,
    };
    let client = match clients.get_mut(&peer) {
        Some(c) => c,
        None => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| unreachable(e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            clients.entry(peer).or_insert(PeerClient::new(channel))
        }
    };
    let served = client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .into_inner();
    let tip = state.ledger.tip().height;
    if served.proof.is_empty() || served.seq <= tip {
        return Ok(false);
    }
    let invalid = || ObserveError::InvalidProof {
        peer: address.clone(),
    };
    let proof = served
        .proof
        .iter()
        .map(|b| codec::decode_message(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid())?;
    let checkpoint = verify_checkpoint_proof(vset, &proof).ok_or_else(invalid)?;
    if checkpoint.seq != served.seq || checkpoint.block_hash.as_slice() != served.block_hash {
        return Err(invalid());
    }
    state.consensus.publish(Snapshot {
        stable_checkpoint: checkpoint.seq,
        state_transfer_target: Some(checkpoint.seq),
        ..state.consensus.snapshot()
    });
    let result =
        state_transfer::fetch_from(state, peer, checkpoint.seq, checkpoint.block_hash).await;
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
    Ok(true)
}
