//! What the node's parts share: [`NodeState`] (ledger, mempool, metrics,
//! commit feed, the consensus status board, heartbeats, bounded storage
//! reads, health), and the admission pipeline that puts transactions in
//! the pool. Both the API and consensus build on this module; it imports
//! neither of them.

pub mod admission;
pub mod commit_feed;
pub mod consensus_board;
pub mod liveness;
pub mod reads;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use tokio::sync::watch;

use crate::config::HealthConfig;
use crate::genesis::ChainParams;
use crate::ledger::{CommittedBlock, Ledger};
use crate::mempool::Mempool;
use crate::metrics::{HealthSource, NodeMetrics};
use crate::tx::envelope::TxLimits;
use commit_feed::CommitFeed;
use consensus_board::ConsensusShared;
pub use liveness::{Heartbeats, Loop};

/// State shared by the node's tasks and API handlers.
#[derive(Debug)]
pub struct NodeState {
    pub name: String,
    pub node_key: VerifyingKey,
    pub ledger: Arc<Ledger>,
    pub mempool: Mempool,
    pub metrics: NodeMetrics,
    pub feed: CommitFeed,
    pub consensus: ConsensusShared,
    /// Heartbeats of the consensus and storage loops.
    pub heartbeats: Heartbeats,
    /// Storage reads of the gRPC servers, off the async workers, bounded.
    pub reads: reads::Reads,
    /// The newest snapshot taken or kept.
    pub backups: crate::backup::Backups,
    health: HealthConfig,
    storage_error: Mutex<Option<String>>,
    /// Set once this replica finds its own storage or state wrong; it then
    /// stops voting and says so in `Status` until rebuilt.
    corruption: Mutex<Option<String>>,
    shutting_down: AtomicBool,
    /// Turns true when shutdown starts; long-lived streams end on it.
    stopping: watch::Sender<bool>,
}

impl NodeState {
    pub fn new(
        name: String,
        node_key: VerifyingKey,
        ledger: Arc<Ledger>,
        mempool: crate::mempool::MempoolLimits,
        health: HealthConfig,
    ) -> Self {
        let metrics = NodeMetrics::new();
        let tip = ledger.tip();
        metrics.height.set(tip.height as i64);
        Self {
            name,
            node_key,
            ledger,
            mempool: Mempool::new(mempool),
            metrics,
            feed: CommitFeed::default(),
            consensus: ConsensusShared::default(),
            heartbeats: Heartbeats::new(Duration::from_secs(health.loop_timeout_s)),
            reads: reads::Reads::default(),
            backups: crate::backup::Backups::default(),
            health,
            storage_error: Mutex::new(None),
            corruption: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            stopping: watch::channel(false).0,
        }
    }

    /// Chain parameters in force for the next block. They change with
    /// configuration transactions, from the height those announce.
    pub fn params(&self) -> ChainParams {
        self.ledger.params_at(self.ledger.tip().height + 1)
    }

    /// Transaction size limits. They are not among the parameters a
    /// configuration change can update, so genesis has them.
    pub fn tx_limits(&self) -> TxLimits {
        self.ledger.genesis().params.tx_limits()
    }

    pub fn heartbeat(&self, which: Loop) {
        self.heartbeats.beat(which);
    }

    /// Records that this replica's storage or state is wrong (first cause
    /// wins). It stops voting from then on.
    pub fn report_corruption(&self, cause: String) {
        let mut g = match self.corruption.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if g.is_none() {
            tracing::error!(%cause, "this replica's storage or state is corrupt; it stops voting until rebuilt");
            self.metrics.corrupt.set(1);
            *g = Some(cause);
        }
    }

    /// Why this replica is corrupt, if it is.
    pub fn corruption(&self) -> Option<String> {
        match self.corruption.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Readiness from consensus: connected to a quorum (counting itself)
    /// and within `ready_max_lag` blocks of the highest height a peer
    /// reports. A one-validator consortium is always connected.
    fn consensus_ready(&self) -> Result<(), String> {
        let epoch = self.consensus.epoch();
        let peers = &epoch.peers;
        let n = peers.len();
        if n <= 1 {
            return Ok(());
        }
        let Some(me) = epoch.me.map(|m| m as usize) else {
            return Ok(());
        };
        let connected = 1 + peers
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != me && p.connected.load(Ordering::Relaxed))
            .count();
        let quorum = kubeledger_pbft::quorum(n);
        if connected < quorum {
            return Err(format!(
                "connected to {connected} of {n} replicas (self included), a quorum is {quorum}"
            ));
        }
        let highest = peers
            .iter()
            .map(|p| p.last_seen_height.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let height = self.ledger.tip().height;
        let lag = highest.saturating_sub(height);
        if lag > self.health.ready_max_lag {
            return Err(format!(
                "height {height} is {lag} blocks behind peers (at {highest}; at most {} allowed)",
                self.health.ready_max_lag
            ));
        }
        Ok(())
    }

    pub fn mempool_len(&self) -> usize {
        let s = self.mempool.stats();
        s.queued + s.in_flight
    }

    pub fn set_storage_error(&self, error: Option<String>) {
        match self.storage_error.lock() {
            Ok(mut g) => *g = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }

    fn storage_error(&self) -> Option<String> {
        match self.storage_error.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records a committed block in metrics and tells subscribers.
    pub fn on_committed(&self, block: Arc<CommittedBlock>) {
        self.set_storage_error(None);
        let now = Instant::now();
        let m = &self.metrics;
        m.height.set(block.height as i64);
        m.blocks_committed.inc();
        m.txs_committed.inc_by(block.tx_ids.len() as u64);
        m.block_commit_seconds
            .observe(block.commit_duration.as_secs_f64());
        m.block_txs.observe(block.tx_ids.len() as f64);
        for tx in &block.txs {
            m.tx_commit_latency_seconds
                .observe(now.saturating_duration_since(tx.received).as_secs_f64());
        }
        for (outcome, fuel) in &block.contract_calls {
            // Failure kinds are a fixed set: the label stays bounded.
            m.contract_calls
                .get_or_create(&crate::metrics::OutcomeKindLabel {
                    outcome: outcome.clone(),
                })
                .inc();
            m.contract_call_fuel.observe(*fuel as f64);
        }
        m.mempool_txs.set(self.mempool_len() as i64);
        tracing::debug!(height = block.height, txs = block.tx_ids.len(), hash = %hex::encode(&block.hash[..8]), "block committed");
        self.feed.publish(block);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Starts a graceful shutdown: refuse new transactions, end streams,
    /// stop consensus after the block being written.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.mempool.close();
        self.stopping.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

impl liveness::Watched for NodeState {
    fn liveness(&self) -> Result<(), String> {
        self.heartbeats.check()
    }

    fn stopping(&self) -> bool {
        self.is_shutting_down()
    }
}

impl HealthSource for NodeState {
    fn live(&self) -> Result<(), String> {
        self.heartbeats.check()
    }

    fn ready(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        if let Some(e) = self.storage_error() {
            return Err(format!("storage error: {e}"));
        }
        if let Some(c) = self.corruption() {
            return Err(format!("corrupt: {c}"));
        }
        self.live()?;
        self.consensus_ready()
    }

    fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }
}
