//! The consensus task: the one owner of the PBFT [`Replica`]. It feeds the
//! replica peer messages (drained ahead of everything else), timer
//! expirations, validation and execution results, and the block cutter's
//! proposals, and carries out the actions: persist, then send; validate
//! off-task; hand commits and state fetches to the executor in order.
//!
//! - this module: starting the peer server, executor and supervisor, and
//!   the state one epoch's consensus task owns;
//! - [`supervisor`]: one epoch after another, as a validator or observer;
//! - [`event_loop`]: the consensus task's loop and the inputs it steps;
//! - [`actions`]: what the task does with the replica's actions;
//! - [`proposer`]: when and what the primary proposes;
//! - [`checkpoint_audit`]: this replica's data against stable checkpoints.

mod actions;
mod checkpoint_audit;
mod event_loop;
mod proposer;
mod supervisor;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use kubeledger_pbft::{
    Config, Digest, Payload, Replica, ReplicaIndex, Seq, TimerId, ValidatorSet, View,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::catch_up::CatchUp;
use super::epoch;
use super::executor::{Executor, ExecutorCommand, ExecutorReport};
use super::inbound::Inbound;
use super::persist::{PersistError, Persister};
use super::transport::{PeerLinks, PeerService, MAX_FRAME_BYTES};
use super::PayloadCache;
use crate::consensus::cutter::BlockCutter;
use crate::node_state::consensus_board::EpochView;
use crate::node_state::NodeState;
use crate::proto::peer_server::PeerServer;
use crate::tx::{TxId, VerifiedTx};
use supervisor::Supervisor;

pub use event_loop::FREEZE_HOOK_ENV;

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("validator set: {0}")]
    Epoch(#[from] epoch::EpochError),
    #[error("PBFT: {0}")]
    Pbft(#[from] kubeledger_pbft::Error),
    #[error("replica state: {0}")]
    Persist(#[from] PersistError),
}

/// Handles of the running consensus tasks.
#[derive(Debug)]
pub struct Running {
    pub consensus: JoinHandle<()>,
    pub executor: JoinHandle<()>,
    pub peer_server: JoinHandle<()>,
}

/// The outcome of checking a proposed payload off the consensus task.
#[derive(Debug)]
struct PayloadVerdict {
    seq: Seq,
    view: View,
    digest: Digest,
    valid: bool,
}

/// Replica configuration from the chain parameters.
pub fn replica_config(params: &crate::genesis::ChainParams) -> Config {
    let k = u64::from(params.checkpoint_interval.max(1));
    let timeout = u64::from(params.view_change_timeout_ms.max(1));
    Config {
        checkpoint_interval: k,
        // Parameter activation relies on this window (see governance).
        window: crate::governance::params::pbft_window(params.checkpoint_interval),
        request_timeout_ms: timeout,
        view_change_timeout_ms: timeout,
        max_backoff_exponent: 4,
    }
}

/// Starts the peer server and executor, then the supervisor that runs
/// this node's part in each validator-set epoch in turn: a replica while
/// its key is in the set (restored from its saved state when that state
/// is of the same epoch), an observer otherwise.
pub async fn start(
    state: Arc<NodeState>,
    key: SigningKey,
    peer_listener: tokio::net::TcpListener,
    serving: &crate::config::PeerConfig,
    state_sync: &crate::config::StateSyncConfig,
) -> Result<Running, ConsensusError> {
    let ledger = state.ledger.clone();
    let my_key = key.verifying_key().to_bytes();
    let first = {
        let l = ledger.clone();
        tokio::task::spawn_blocking(move || epoch::plan(&l, &my_key))
            .await
            .map_err(|e| PersistError::MissingPayload(format!("plan task: {e}")))??
    };
    let mut view = EpochView::new(
        first.base.seq,
        first.end,
        first.validators.clone(),
        first.me,
    );
    view.vset = first.me.map(|_| first.vset.clone());
    state.consensus.set_epoch(view);
    let (persister, stored) = {
        let l = ledger.clone();
        tokio::task::spawn_blocking(move || Persister::load(l))
            .await
            .map_err(|e| PersistError::MissingPayload(format!("load task: {e}")))??
    };

    let inbound = Arc::new(Inbound::default());
    let service = PeerServer::new(PeerService::new(
        state.clone(),
        inbound.clone(),
        serving,
        state_sync,
    ))
    .max_decoding_message_size(MAX_FRAME_BYTES)
    .max_encoding_message_size(MAX_FRAME_BYTES);
    let mut stopping = state.stopping();
    let peer_server = tokio::spawn(async move {
        let incoming = crate::connections::accept(peer_listener);
        let result = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(crate::node_state::reads::MAX_REQUESTS_PER_CONNECTION)
            .max_concurrent_streams(Some(crate::connections::MAX_STREAMS_PER_CONNECTION))
            .trace_fn(|req| tracing::debug_span!("peer", method = %req.uri().path()))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "peer server failed");
        }
    });

    let cache = Arc::new(PayloadCache::default());
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let executor = tokio::spawn(
        Executor {
            state: state.clone(),
            cache: cache.clone(),
            reports: reports_tx,
        }
        .run(commands_rx),
    );
    let (verdicts_tx, verdicts_rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor {
        state,
        key,
        stored,
        carryover: Some(EpochCarryover {
            persister,
            inbound,
            executor_commands: commands_tx,
            executor_reports: reports_rx,
            verdicts_tx,
            verdicts_rx,
            cache,
        }),
    };
    let consensus = tokio::spawn(supervisor.run(first));
    Ok(Running {
        consensus,
        executor,
        peer_server,
    })
}

/// What outlives one epoch's consensus task.
struct EpochCarryover {
    persister: Persister,
    /// Verified peer messages, queued per signer.
    inbound: Arc<Inbound>,
    executor_commands: mpsc::UnboundedSender<ExecutorCommand>,
    executor_reports: mpsc::UnboundedReceiver<ExecutorReport>,
    verdicts_tx: mpsc::UnboundedSender<PayloadVerdict>,
    verdicts_rx: mpsc::UnboundedReceiver<PayloadVerdict>,
    cache: Arc<PayloadCache>,
}

/// One epoch's consensus task: the replica and what drives it.
struct ConsensusTask {
    state: Arc<NodeState>,
    replica: Replica,
    /// The replica's validator set (to verify certificates fetched for it).
    vset: ValidatorSet,
    carryover: EpochCarryover,
    links: Arc<PeerLinks>,
    timers: HashMap<TimerId, Instant>,
    cutter: BlockCutter,
    /// This node's proposals not yet committed, by payload digest: their
    /// transactions return to the pool if the proposal is lost.
    my_proposals: HashMap<Digest, Vec<Arc<VerifiedTx>>>,
    /// Taken from the pool but held back from proposals because another
    /// in-flight payload already carries them.
    already_in_flight: Vec<Arc<VerifiedTx>>,
    /// The request reported as overlooked (arrival number, id), if any.
    overlooked: Option<(u64, TxId)>,
    /// Transaction ids of in-flight payloads proposed by other primaries.
    foreign_ids: HashMap<Digest, HashSet<TxId>>,
    /// Committed by consensus, not yet written by the executor.
    unexecuted: BTreeMap<Seq, Unexecuted>,
    last_pending: Option<bool>,
    last_ts: u64,
    last_view: Option<View>,
    last_request_timeout_ms: Option<u64>,
    /// Messages produced since the last flush: (recipient, or every peer).
    outbox: Vec<(Option<ReplicaIndex>, kubeledger_pbft::SignedMessage)>,
    /// The freeze hook's file, when the test hook is set.
    freeze_file: Option<std::path::PathBuf>,
    /// The replica refused a proposal for a full window: wait for the next
    /// executed block before cutting another (at an epoch's end the window
    /// stays full until the next set takes over).
    window_full: bool,
    catch_up: CatchUp,
}

/// A block consensus committed that the executor has not written yet.
struct Unexecuted {
    digest: Digest,
    payload: Payload,
    /// This node proposed it (its transactions are in flight in the pool).
    own: bool,
}
