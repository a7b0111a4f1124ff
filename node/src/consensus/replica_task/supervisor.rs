//! Epoch supervision: this node's part in each validator-set epoch in
//! turn, a replica while its key is in the set and an observer otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kubeledger_pbft::{PersistentState, Replica, ReplicaIndex, StableCheckpoint};
use tokio::sync::{oneshot, watch};

use super::event_loop::FREEZE_HOOK_ENV;
use super::{replica_config, ConsensusTask, EpochCarryover};
use crate::consensus::catch_up::CatchUp;
use crate::consensus::cutter::{BlockCutter, CutterLimits};
use crate::consensus::epoch::{self, EpochPlan};
use crate::consensus::observer;
use crate::consensus::transport::PeerLinks;
use crate::node_state::consensus_board::{EpochView, TxGossip};
use crate::node_state::{Loop, NodeState};

/// How long an ended epoch's peer links keep sending what was queued.
const LINK_LINGER: Duration = Duration::from_secs(2);

/// Why an epoch's consensus task returned.
pub(super) enum Exit {
    Stopping,
    /// The epoch's last checkpoint is stable, with the old set's certificate.
    EpochComplete(StableCheckpoint),
    /// Could not start; plan again.
    Retry,
}

/// Runs this node's part in one validator-set epoch after another.
pub(super) struct Supervisor {
    pub(super) state: Arc<NodeState>,
    pub(super) key: SigningKey,
    /// The replica state saved before this start, until used.
    pub(super) stored: Option<PersistentState>,
    pub(super) carryover: Option<EpochCarryover>,
}

impl Supervisor {
    pub(super) async fn run(mut self, first: EpochPlan) {
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
                Some(me) => self.run_as_validator(current, me).await,
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
    async fn run_as_validator(&mut self, plan: EpochPlan, me: ReplicaIndex) -> Exit {
        let Some(carryover) = self.carryover.take() else {
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
                self.carryover = Some(carryover);
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
        view.gossip = Some(links.clone() as Arc<dyn TxGossip>);
        view.vset = Some(plan.vset.clone());
        self.state.consensus.set_epoch(view);
        self.state
            .consensus
            .set_stable(replica.persistent().stable.clone());
        let task = ConsensusTask {
            cutter: BlockCutter::new(
                CutterLimits::from_params(&self.state.params()),
                Instant::now(),
            ),
            state: self.state.clone(),
            replica,
            vset: plan.vset,
            carryover,
            links,
            timers: HashMap::new(),
            my_proposals: HashMap::new(),
            already_in_flight: Vec::new(),
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
        let (carryover, exit) = task.run().await;
        drop(epoch_over);
        self.carryover = Some(carryover);
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
