//! The consensus task: the one owner of the PBFT [`Replica`]. It feeds the
//! replica peer messages (drained ahead of everything else), timer
//! expirations, validation and execution results, and the block cutter's
//! proposals, and carries out the actions: persist, then send; validate
//! off-task; hand commits and state fetches to the executor in order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kubeledger_pbft::{
    Action, Config, Digest, Input, Payload, PersistentState, Replica, ReplicaIndex, Seq,
    StableCheckpoint, TimerId, ValidatorSet, View,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::catch_up::CatchUp;
use super::epoch::{self, EpochPlan};
use super::executor::{BlockFill, Done, Executor, Job};
use super::inbound::Inbound;
use super::persist::{PersistError, Persister};
use super::status::{EpochView, Snapshot};
use super::transport::{PeerLinks, PeerService, MAX_FRAME_BYTES};
use super::{codec, observer, validate, PayloadCache};
use crate::clock::now_ms;
use crate::consensus::cutter::{BlockCutter, Decision};
use crate::proto::peer_server::PeerServer;
use crate::runtime::cutter_limits;
use crate::runtime::{Loop, NodeState};
use crate::tx::{TxId, VerifiedTx};

/// Peer messages processed before the task looks at anything else.
const PEER_BURST: usize = 512;
/// Own proposals outstanding (ordered, not yet committed) at most.
const MAX_OUTSTANDING_PROPOSALS: usize = 4;
/// How long a stopping primary keeps ordering what it admitted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ended epoch's peer links keep sending what was queued.
const LINK_LINGER: Duration = Duration::from_secs(2);
/// Transactions per frame when re-forwarding the pool to a new primary.
const FORWARD_CHUNK: usize = 2_000;
/// Test-only fault hook: while the file this variable names exists, the
/// consensus loop blocks (a replica that is alive but does nothing), so
/// whole-system tests can check that it is found stuck and healed.
pub const FREEZE_HOOK_ENV: &str = "KUBELEDGER_TEST_FREEZE_CONSENSUS";

/// Blocks the calling thread while `path` exists (the freeze hook).
fn freeze_while_present(path: &std::path::Path) {
    if !path.exists() {
        return;
    }
    tracing::warn!(path = %path.display(), "consensus loop frozen by the test fault hook");
    while path.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::warn!("consensus loop released by the test fault hook");
}

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

#[derive(Debug)]
struct Validated {
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
    let service = PeerServer::new(PeerService::new(state.clone(), inbound.clone()))
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    let mut stopping = state.stopping();
    let peer_server = tokio::spawn(async move {
        let incoming = crate::runtime::connections::accept(peer_listener);
        let result = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(crate::runtime::reads::MAX_REQUESTS_PER_CONNECTION)
            .max_concurrent_streams(Some(
                crate::runtime::connections::MAX_STREAMS_PER_CONNECTION,
            ))
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
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let executor = tokio::spawn(
        Executor {
            state: state.clone(),
            cache: cache.clone(),
            done: done_tx,
        }
        .run(jobs_rx),
    );
    let (validated_tx, validated_rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor {
        state,
        key,
        stored,
        parts: Some(Parts {
            persister,
            inbound,
            jobs: jobs_tx,
            done: done_rx,
            validated_tx,
            validated_rx,
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
struct Parts {
    persister: Persister,
    /// Verified peer messages, queued per signer.
    inbound: Arc<Inbound>,
    jobs: mpsc::UnboundedSender<Job>,
    done: mpsc::UnboundedReceiver<Done>,
    validated_tx: mpsc::UnboundedSender<Validated>,
    validated_rx: mpsc::UnboundedReceiver<Validated>,
    cache: Arc<PayloadCache>,
}

/// Why an epoch's consensus task returned.
enum Exit {
    Stopping,
    /// The epoch's last checkpoint is stable, with the old set's certificate.
    EpochComplete(StableCheckpoint),
    /// Could not start; plan again.
    Retry,
}

struct Supervisor {
    state: Arc<NodeState>,
    key: SigningKey,
    /// The replica state saved before this start, until used.
    stored: Option<PersistentState>,
    parts: Option<Parts>,
}

impl Supervisor {
    async fn run(mut self, first: EpochPlan) {
        let my_key = self.key.verifying_key().to_bytes();
        let mut plan = Some(first);
        loop {
            if *self.state.stopping().borrow() {
                break;
            }
            let current = match plan.take() {
                Some(p) => p,
                None => {
                    let l = self.state.ledger.clone();
                    match tokio::task::spawn_blocking(move || epoch::plan(&l, &my_key)).await {
                        Ok(Ok(p)) => p,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "cannot work out the validator set; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "epoch planning task failed");
                            break;
                        }
                    }
                }
            };
            let exit = match current.me {
                Some(me) => self.validate(current, me).await,
                None => {
                    self.state.consensus.set_epoch(EpochView::new(
                        current.base.seq,
                        current.end,
                        current.validators.clone(),
                        None,
                    ));
                    match observer::follow(&self.state, &current).await {
                        observer::FollowExit::Stopping => Exit::Stopping,
                        observer::FollowExit::EpochCrossed => continue,
                    }
                }
            };
            match exit {
                Exit::Stopping => break,
                Exit::EpochComplete(cp) => self.finish_epoch(cp).await,
                Exit::Retry => {}
            }
        }
        tracing::info!("consensus stopped");
    }

    /// One epoch as a validator: returns when it ends or the node stops.
    async fn validate(&mut self, plan: EpochPlan, me: ReplicaIndex) -> Exit {
        let Some(parts) = self.parts.take() else {
            return Exit::Stopping;
        };
        let genesis = self.state.ledger.genesis().clone();
        // The checkpoint interval (and with it the window) is fixed at
        // genesis; the timeout is whatever configuration has in force now.
        let cfg = replica_config(&crate::genesis::ChainParams {
            view_change_timeout_ms: self.state.params().view_change_timeout_ms,
            ..genesis.params.clone()
        });
        let height = self.state.ledger.tip().height;
        let base_seq = plan.base.seq;
        let restored = match self
            .stored
            .take()
            .filter(|st| Replica::state_belongs_to_epoch(st, base_seq))
        {
            Some(st) => Replica::restore_in_epoch(
                cfg,
                plan.vset.clone(),
                me,
                self.key.clone(),
                st,
                height,
                plan.base.clone(),
            ),
            None => Replica::new_epoch(
                cfg,
                plan.vset.clone(),
                me,
                self.key.clone(),
                plan.base.clone(),
                height,
            ),
        };
        let replica = match restored {
            Ok(r) => r,
            Err(e) => {
                // Keys were checked when the plan was made; nothing a peer
                // sends gets here.
                tracing::error!(error = %e, "cannot build the replica for this epoch");
                self.parts = Some(parts);
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Exit::Retry;
            }
        };
        tracing::info!(
            replica = me,
            view = replica.status().view,
            height,
            validators = plan.vset.n(),
            epoch_base = base_seq,
            "PBFT replica ready"
        );
        let mut view = EpochView::new(base_seq, plan.end, plan.validators.clone(), Some(me));
        let (epoch_over, link_stop) = epoch_stop_signal(&self.state);
        let links = PeerLinks::start(self.state.clone(), me, &view.peers, link_stop);
        view.links = Some(links.clone());
        view.vset = Some(plan.vset.clone());
        self.state.consensus.set_epoch(view);
        self.state
            .consensus
            .set_stable(replica.persistent().stable.clone());
        let task = ConsensusTask {
            cutter: BlockCutter::new(cutter_limits(&self.state), Instant::now()),
            state: self.state.clone(),
            replica,
            vset: plan.vset,
            parts,
            links,
            timers: HashMap::new(),
            my_proposals: HashMap::new(),
            held: Vec::new(),
            overlooked: None,
            foreign_ids: HashMap::new(),
            unexecuted: BTreeMap::new(),
            last_pending: None,
            last_ts: 0,
            last_view: None,
            last_request_timeout_ms: None,
            outbox: Vec::new(),
            freeze_file: std::env::var_os(FREEZE_HOOK_ENV).map(std::path::PathBuf::from),
            window_full: false,
            catch_up: CatchUp::new(),
        };
        let (parts, exit) = task.run().await;
        drop(epoch_over);
        self.parts = Some(parts);
        exit
    }

    /// Keeps the certificate that ended the epoch and waits until the
    /// executor has written the epoch's last block.
    async fn finish_epoch(&mut self, cp: StableCheckpoint) {
        if cp.proof.is_empty() {
            return;
        }
        tracing::info!(epoch_end = cp.seq, "validator-set epoch complete");
        let l = self.state.ledger.clone();
        let stored = cp.clone();
        match tokio::task::spawn_blocking(move || epoch::store_proof(&l, &stored)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot store the epoch proof");
                self.state.set_storage_error(Some(e.to_string()));
            }
            Err(e) => tracing::error!(error = %e, "epoch proof task failed"),
        }
        let stopping = self.state.stopping();
        while self.state.ledger.tip().height < cp.seq && !*stopping.borrow() {
            self.state.heartbeat(Loop::Consensus);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stop signal for one epoch's peer links: set when the node stops, or
/// [`LINK_LINGER`] after the returned guard is dropped (the epoch is over:
/// the last CHECKPOINTs still go out, so slower members of the old set
/// complete the epoch from messages rather than by asking a peer).
fn epoch_stop_signal(state: &NodeState) -> (oneshot::Sender<()>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let (over_tx, over_rx) = oneshot::channel::<()>();
    let mut node_stop = state.stopping();
    let mut node_stop_lingering = state.stopping();
    tokio::spawn(async move {
        tokio::select! {
            _ = node_stop.wait_for(|s| *s) => {}
            _ = async {
                let _ = over_rx.await;
                tokio::select! {
                    _ = tokio::time::sleep(LINK_LINGER) => {}
                    _ = node_stop_lingering.wait_for(|s| *s) => {}
                }
            } => {}
        }
        let _ = tx.send(true);
    });
    (over_tx, rx)
}

struct ConsensusTask {
    state: Arc<NodeState>,
    replica: Replica,
    /// The replica's validator set (to verify certificates fetched for it).
    vset: ValidatorSet,
    parts: Parts,
    links: Arc<PeerLinks>,
    timers: HashMap<TimerId, Instant>,
    cutter: BlockCutter,
    /// This node's proposals not yet committed, by payload digest: their
    /// transactions return to the pool if the proposal is lost.
    my_proposals: HashMap<Digest, Vec<Arc<VerifiedTx>>>,
    /// Taken from the pool but held back because another in-flight payload
    /// already carries them.
    held: Vec<Arc<VerifiedTx>>,
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

impl ConsensusTask {
    async fn run(mut self) -> (Parts, Exit) {
        self.follow_epoch();
        let actions = self.replica.start();
        self.handle(actions);
        self.report_tip();
        self.publish();
        let mut stopping = self.state.stopping();
        let mut drain_until: Option<Instant> = None;
        let (proofs_tx, mut proofs_rx) = mpsc::channel::<Vec<kubeledger_pbft::SignedMessage>>(1);
        let exit = loop {
            if self.replica.epoch_complete() {
                self.flush();
                break Exit::EpochComplete(self.replica.persistent().stable.clone());
            }
            self.state.heartbeat(Loop::Consensus);
            if let Some(path) = &self.freeze_file {
                freeze_while_present(path);
            }
            if *stopping.borrow() {
                // Graceful stop: order what was admitted while the primary
                // can, within a bound (admission is closed by now).
                let deadline = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
                let status = self.replica.status();
                let idle = self.state.mempool.stats().queued == 0 && self.my_proposals.is_empty();
                if idle || !status.is_primary || Instant::now() >= deadline {
                    break Exit::Stopping;
                }
            }
            // Agreement first: drain a burst of peer messages.
            for _ in 0..PEER_BURST {
                match self.parts.inbound.pop() {
                    Some((from, msg)) => self.on_peer_message(from, msg),
                    None => break,
                }
            }
            while let Ok(d) = self.parts.done.try_recv() {
                self.on_done(d);
            }
            while let Ok(v) = self.parts.validated_rx.try_recv() {
                self.on_validated(v);
            }
            self.fire_due_timers();
            self.update_pending();
            let cut_at = self.maybe_propose();
            let timer_at = self.timers.values().min().copied();
            let wake = match (cut_at, timer_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.flush();
            self.publish();
            self.catch_up
                .maybe_ask(&self.state, &self.vset, self.replica.status(), &proofs_tx);
            tokio::select! {
                biased;
                _ = self.parts.inbound.ready() => {}
                d = self.parts.done.recv() => {
                    if let Some(d) = d {
                        self.on_done(d);
                    }
                }
                v = self.parts.validated_rx.recv() => {
                    if let Some(v) = v {
                        self.on_validated(v);
                    }
                }
                _ = sleep_until(wake) => {}
                p = proofs_rx.recv() => {
                    if let Some(proof) = p {
                        tracing::info!("certificate from a peer for a checkpoint this replica missed");
                        self.step(Input::StableCertificate(proof));
                    }
                }
                _ = self.state.mempool.admitted.notified() => {}
                _ = stopping.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        };
        self.flush();
        // What this replica proposed and did not see ordered goes back to
        // the pool (the next set, or the next start, orders it).
        let mut back: Vec<Arc<VerifiedTx>> = self.held.drain(..).collect();
        for (_, txs) in self.my_proposals.drain() {
            back.extend(txs);
        }
        if !back.is_empty() {
            self.state.mempool.requeue(back);
        }
        tracing::info!("consensus task stopped");
        (self.parts, exit)
    }

    /// Reports the ledger tip to a (re)started replica: a crash between
    /// writing a block and reporting it loses that block's CHECKPOINT, and
    /// the last checkpoint of an epoch has no later one to stand in for it.
    fn report_tip(&mut self) {
        let tip = self.state.ledger.tip();
        if tip.height <= self.replica.status().epoch_base {
            return;
        }
        match self.state.ledger.header(tip.height) {
            Ok(Some(h)) => {
                let state_root = crate::crypto::hash32(&h.state_root).unwrap_or_default();
                self.step(Input::Executed {
                    seq: tip.height,
                    state_root,
                    block_hash: tip.hash,
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the tip's header"),
        }
    }

    /// Once the ledger schedules the next validator set, this epoch ends at
    /// the checkpoint before it. Called before the replica hears of any
    /// executed block, so it knows before its window could pass the end.
    fn follow_epoch(&mut self) {
        let base = self.replica.status().epoch_base;
        let config = self.state.ledger.config();
        if let Some(end) = crate::governance::validators::epoch_at(&config, base + 1).end {
            if self.replica.status().epoch_end != Some(end) {
                self.replica.set_epoch_end(end);
                self.state.consensus.set_epoch_end(end);
            }
        }
    }

    /// A peer's consensus message: the height it shows raises what this node
    /// knows of that peer (readiness compares against it) only once its
    /// signature checks; a forged PREPARE claiming a far height would
    /// otherwise keep this node not-ready until it restarts.
    fn on_peer_message(&mut self, from: ReplicaIndex, msg: kubeledger_pbft::SignedMessage) {
        if let Some(h) = super::transport::message_height(&msg) {
            if self.replica.is_authentic(from, &msg) {
                if let Some(p) = self.state.consensus.epoch().peers.get(from as usize) {
                    p.last_seen_height
                        .fetch_max(h, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.step(Input::Message { from, msg });
    }

    fn step(&mut self, input: Input) {
        let suspected = self.replica.stats().censorship_suspected;
        let actions = self.replica.step(input);
        let newly = self.replica.stats().censorship_suspected - suspected;
        if newly > 0 {
            self.state.metrics.censorship_suspected.inc_by(newly);
        }
        self.handle(actions);
    }

    /// The request / view-change timeout is a chain parameter: once the
    /// ledger reaches the height a change applies from, the replica uses it.
    fn follow_timeouts(&mut self) {
        let wanted = u64::from(self.state.params().view_change_timeout_ms.max(1));
        let cfg = self.replica.config();
        if cfg.request_timeout_ms != wanted || cfg.view_change_timeout_ms != wanted {
            tracing::info!(
                timeout_ms = wanted,
                "view-change timeout changed by configuration"
            );
            self.replica.set_timeouts(wanted, wanted);
        }
    }

    fn on_done(&mut self, d: Done) {
        match d {
            Done::Executed {
                seq,
                state_root,
                block_hash,
                filled,
            } => {
                // The block's transactions left the pool; what was held back
                // behind it may be proposed again.
                if !self.held.is_empty() {
                    self.state.mempool.requeue(std::mem::take(&mut self.held));
                }
                self.executed_through(seq);
                self.follow_timeouts();
                self.follow_epoch();
                self.window_full = false;
                self.step(Input::Executed {
                    seq,
                    state_root,
                    block_hash,
                });
                self.watch_overlooked(filled);
            }
            Done::Transferred {
                seq,
                state_root,
                block_hash,
            } => {
                self.executed_through(seq);
                self.follow_timeouts();
                self.follow_epoch();
                self.window_full = false;
                self.step(Input::StateTransferred {
                    seq,
                    state_root,
                    block_hash,
                });
            }
        }
    }

    /// Forgets what blocks up to `seq` carried: the executor has written
    /// them, and their transactions left the pool.
    fn executed_through(&mut self, seq: Seq) {
        self.unexecuted.retain(|s, _| *s > seq);
    }

    fn on_validated(&mut self, v: Validated) {
        self.step(Input::PayloadValidated {
            seq: v.seq,
            view: v.view,
            digest: v.digest,
            valid: v.valid,
        });
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<TimerId> = self
            .timers
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.timers.remove(&id);
            tracing::debug!(?id, "timer fired");
            self.step(Input::TimerFired(id));
        }
    }

    /// The next validator set is scheduled and this epoch has blocks left
    /// to order: the chain must reach the epoch's end even without client
    /// traffic, so the primary cuts blocks (empty if need be) and the
    /// backups watch it as they would with requests pending.
    fn epoch_end_ahead(&self) -> bool {
        let s = self.replica.status();
        s.epoch_end.is_some_and(|end| s.last_committed < end)
    }

    /// Tells the replica which client request, if any, a committed block
    /// with room for it left out: the censorship watch of
    /// `kubeledger_pbft::Input::Overlooked`. The request watched stays until
    /// it leaves the pool (committed); then the next oldest is watched if
    /// the block just committed had room for it. Full blocks accuse no one.
    fn watch_overlooked(&mut self, filled: BlockFill) {
        if let Some((_, id)) = &self.overlooked {
            if self.state.mempool.is_pending(id) {
                return;
            }
        }
        let limits = cutter_limits(&self.state);
        let next = self.state.mempool.oldest_queued().filter(|(_, tx)| {
            filled.had_room_for(tx.encoded_len(), limits.max_txs, limits.max_bytes)
        });
        let report = next.as_ref().map(|(ticket, tx)| (*ticket, tx.id));
        if report == self.overlooked {
            return;
        }
        if let Some((ticket, tx)) = &next {
            let status = self.replica.status();
            tracing::debug!(
                ticket,
                tx = %tx.id,
                height = status.last_committed,
                "a block with room left out the oldest pending transaction"
            );
            // The primary may never have got it: send it once more.
            if !status.is_primary {
                self.links
                    .forward_txs(status.primary, vec![tx.signed.clone()]);
            }
        }
        self.overlooked = report;
        self.step(Input::Overlooked(report.map(|(ticket, _)| ticket)));
    }

    fn update_pending(&mut self) {
        let pending = self.state.mempool_len() > 0 || self.epoch_end_ahead();
        if self.last_pending != Some(pending) {
            self.last_pending = Some(pending);
            self.step(Input::RequestsPending(pending));
        }
    }

    /// Proposes a block when this replica is primary and the cutter says
    /// so; returns when to look again.
    fn maybe_propose(&mut self) -> Option<Instant> {
        let status = self.replica.status();
        if self.state.corruption().is_some()
            || !status.is_primary
            || status.view_change_in_progress
            || status.state_transfer_target.is_some()
            || self.window_full
            || self.my_proposals.len() >= MAX_OUTSTANDING_PROPOSALS
        {
            return None;
        }
        let now = Instant::now();
        // Block interval and size follow configuration changes live.
        self.cutter.set_limits(cutter_limits(&self.state));
        let stats = self.state.mempool.stats();
        // An empty block at the block interval while the epoch must end.
        let queued = if stats.queued == 0 && self.epoch_end_ahead() {
            1
        } else {
            stats.queued
        };
        let decision = if *self.state.stopping().borrow() && stats.queued > 0 {
            Decision::Cut
        } else {
            self.cutter.decide(now, queued, stats.queued_bytes)
        };
        match decision {
            Decision::Idle => None,
            Decision::WaitUntil(t) => Some(t),
            Decision::Cut => {
                self.cutter.cut(now);
                self.propose();
                Some(now)
            }
        }
    }

    fn in_flight_ids(&mut self) -> HashSet<TxId> {
        let chain_id = self.state.ledger.chain_id().to_owned();
        let limits = self.state.tx_limits();
        let mut ids = HashSet::new();
        // In the replica's window, plus ordered but not yet executed: those
        // stay in this pool until the executor writes their block, so they
        // must not be proposed again. Own proposals are skipped: their
        // transactions were taken from the pool and cannot be taken twice.
        let payloads: Vec<(Digest, &Payload)> = self
            .replica
            .in_flight_payloads()
            .map(|(_, d, p)| (d, p))
            .chain(
                self.unexecuted
                    .values()
                    .filter(|u| !u.own)
                    .map(|u| (u.digest, &u.payload)),
            )
            .filter(|(d, _)| !self.my_proposals.contains_key(d))
            .collect();
        let live: HashSet<Digest> = payloads.iter().map(|(d, _)| *d).collect();
        for (digest, payload) in payloads {
            let cache = &self.parts.cache;
            let set = self.foreign_ids.entry(digest).or_insert_with(|| {
                // Validation decoded them already, usually.
                match cache.ids(&digest) {
                    Some(ids) => ids.into_iter().collect(),
                    None => payload
                        .txs
                        .iter()
                        .filter_map(|b| codec::tx_from_payload(b, &chain_id, &limits).ok())
                        .map(|t| t.id)
                        .collect(),
                }
            });
            ids.extend(set.iter().copied());
        }
        self.foreign_ids.retain(|d, _| live.contains(d));
        ids
    }

    fn propose(&mut self) {
        let limits = self.cutter.limits();
        let taken = self.state.mempool.take(limits.max_txs, limits.max_bytes);
        let empty_ok = self.epoch_end_ahead();
        if taken.is_empty() && !empty_ok {
            return;
        }
        let in_flight = self.in_flight_ids();
        let (txs, held): (Vec<_>, Vec<_>) =
            taken.into_iter().partition(|t| !in_flight.contains(&t.id));
        self.held.extend(held);
        if txs.is_empty() && !empty_ok {
            return;
        }
        let ts = now_ms()
            .max(self.last_ts)
            .max(self.state.ledger.tip().timestamp_ms);
        self.last_ts = ts;
        let payload = Payload {
            timestamp_ms: ts,
            // The replica names itself too; the digest must be the same.
            proposer: self.replica.id(),
            txs: txs
                .iter()
                .map(|t| codec::tx_to_payload(t))
                .collect::<Vec<_>>()
                .into(),
        };
        let digest = payload.digest();
        let span = tracing::debug_span!("propose", txs = txs.len());
        let _e = span.enter();
        self.parts.cache.insert(digest, txs.clone());
        self.my_proposals.insert(digest, txs);
        self.step(Input::Propose { payload });
    }

    fn handle(&mut self, actions: Vec<Action>) {
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
                } => self.validate(seq, view, digest, payload),
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
                    let _ = self.parts.jobs.send(Job::Commit {
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
                    let _ = self.parts.jobs.send(Job::Fetch {
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

    /// Makes the replica state durable once for everything stepped since the
    /// last flush (one fsynced write however many messages arrived), then
    /// sends what those steps produced. Promises are durable before anyone
    /// hears them; a failed write sends nothing.
    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        if self.state.corruption().is_some() {
            // A replica that knows its own state is wrong does not vote.
            tracing::debug!(dropped = outbox.len(), "corrupt: not sending");
            return;
        }
        if let Err(e) = self.parts.persister.save(self.replica.persistent()) {
            tracing::error!(error = %e, dropped = outbox.len(), "persisting replica state failed; not sending");
            self.state.set_storage_error(Some(e.to_string()));
            return;
        }
        for (to, msg) in outbox {
            let bytes = match codec::encode_message(&msg) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode message");
                    continue;
                }
            };
            match to {
                Some(to) => self.links.send(to, bytes),
                None => self.links.broadcast(bytes),
            }
        }
    }

    fn validate(&self, seq: Seq, view: View, digest: Digest, payload: Payload) {
        let state = self.state.clone();
        let cache = self.parts.cache.clone();
        let tx = self.parts.validated_tx.clone();
        tokio::task::spawn_blocking(move || {
            let span = tracing::debug_span!("validate", seq, view, txs = payload.txs.len());
            let _e = span.enter();
            let valid = match validate::validate(&state, seq, &payload, now_ms()) {
                Ok(txs) => {
                    cache.insert(digest, txs);
                    true
                }
                Err(e) => {
                    tracing::warn!(seq, view, error = %e, "refusing proposed block");
                    false
                }
            };
            let _ = tx.send(Validated {
                seq,
                view,
                digest,
                valid,
            });
        });
    }

    /// Compares this replica's block and state at a stable checkpoint with
    /// what a quorum certified; a mismatch means its own data is wrong.
    fn check_against_checkpoint(&self, seq: Seq, state_root: Digest, block_hash: Digest) {
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

    fn on_view_changed(&mut self, view: View, primary: ReplicaIndex) {
        tracing::info!(view, primary, "new view installed");
        self.state.metrics.view_changes.inc();
        // Proposals of the old view that were not carried over return to
        // the pool (the cutter skips whatever the new view re-proposes).
        let mut back: Vec<Arc<VerifiedTx>> = self.held.drain(..).collect();
        for (_, txs) in self.my_proposals.drain() {
            back.extend(txs);
        }
        if !back.is_empty() {
            self.state.mempool.requeue(back);
        }
        self.foreign_ids.clear();
        self.cutter = BlockCutter::new(crate::runtime::cutter_limits(&self.state), Instant::now());
        self.publish();
        if primary != self.replica.id() {
            let queued = self.state.mempool.queued();
            for chunk in queued.chunks(FORWARD_CHUNK) {
                let txs = chunk.iter().map(|t| t.signed.clone()).collect();
                self.links.forward_txs(primary, txs);
            }
        }
    }

    fn publish(&mut self) {
        let s = self.replica.status();
        if self.last_view != Some(s.view) {
            self.last_view = Some(s.view);
            self.state.metrics.consensus_view.set(s.view as i64);
        }
        if self.last_request_timeout_ms != Some(s.request_timeout_ms) {
            self.last_request_timeout_ms = Some(s.request_timeout_ms);
            self.state
                .metrics
                .request_timeout
                .set(s.request_timeout_ms as f64 / 1000.0);
        }
        self.state.consensus.publish(Snapshot {
            view: s.view,
            primary: s.primary,
            low_watermark: s.low_watermark,
            high_watermark: s.high_watermark,
            stable_checkpoint: s.stable_checkpoint,
            last_committed: s.last_committed,
            view_changes: s.view_changes,
            view_change_in_progress: s.view_change_in_progress,
            state_transfer_target: s.state_transfer_target,
            request_timeout_ms: s.request_timeout_ms,
        });
    }
}
