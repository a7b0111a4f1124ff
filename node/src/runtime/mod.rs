//! The node process: wires ledger, mempool, PBFT replica, peer transport,
//! gRPC API and metrics, and shuts them down in order (stop admitting,
//! stop consensus, finish the block being committed, flush RocksDB).

pub mod admission;
pub mod commit_feed;
pub mod connections;
pub mod liveness;
pub mod reads;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use tokio::sync::watch;

use crate::config::{HealthConfig, NodeConfig};
use crate::consensus::cutter::CutterLimits;
use crate::consensus::status::ConsensusShared;
use crate::crypto::keys;
use crate::genesis::{ChainParams, Genesis};
use crate::ledger::{CommittedBlock, Ledger};
use crate::mempool::Mempool;
use crate::metrics::{HealthSource, NodeMetrics};
use crate::tx::envelope::TxLimits;
use commit_feed::CommitFeed;
pub use liveness::{Heartbeats, Loop};

/// Exit status of a process ended by its watchdog (EX_SOFTWARE).
pub const WATCHDOG_EXIT_CODE: i32 = 70;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Genesis(#[from] crate::genesis::GenesisError),
    #[error(transparent)]
    Key(#[from] crate::crypto::keys::KeyError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("node task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Consensus(#[from] crate::consensus::replica_task::ConsensusError),
}

/// The block cutter's limits from the chain parameters.
pub fn cutter_limits(state: &NodeState) -> CutterLimits {
    let params = state.params();
    CutterLimits {
        interval: Duration::from_millis(u64::from(params.block_interval_ms)),
        max_txs: params.max_block_txs as usize,
        max_bytes: usize::try_from(params.max_block_bytes).unwrap_or(usize::MAX),
    }
}

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

/// Addresses a started node listens on (useful when ports were 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

/// Runs a node until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(BoundAddrs) + Send,
) -> Result<(), NodeError> {
    let genesis = Genesis::load(&config.genesis_file)?;
    let key: SigningKey = keys::load(&config.key_file)?;
    let node_key = key.verifying_key();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::Listen {
        addr: config.listen.grpc,
        what: "data directory",
        source,
    })?;
    let data_dir = config.data_dir.join("ledger");
    let storage = config.storage.clone();
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(&data_dir, genesis, &storage))
        .await
        .map_err(|e| NodeError::Task(e.to_string()))??;
    let tip = ledger.tip();
    tracing::info!(chain = ledger.chain_id(), height = tip.height, node = %config.name, "ledger opened");
    let state = Arc::new(NodeState::new(
        config.name.clone(),
        node_key,
        Arc::new(ledger),
        (&config.mempool).into(),
        config.health.clone(),
    ));
    if config.health.watchdog_s > 0 {
        let grace = Duration::from_secs(config.health.watchdog_s);
        liveness::spawn_watchdog(
            Arc::downgrade(&state),
            Duration::from_secs(1),
            grace,
            |reason| {
                // The supervisor (kubelet, `kubeledger up`) starts a fresh
                // process; a wedged one would never recover by itself.
                eprintln!("watchdog: {reason}; exiting so the node is restarted");
                std::process::exit(WATCHDOG_EXIT_CODE);
            },
        )
        .map_err(|e| NodeError::Task(format!("cannot start the watchdog: {e}")))?;
    }

    let grpc_listener = tokio::net::TcpListener::bind(config.listen.grpc)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen.grpc,
            what: "gRPC",
            source,
        })?;
    let metrics_listener = crate::metrics::bind(config.listen.metrics)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen.metrics,
            what: "metrics",
            source,
        })?;
    let peer_listener = tokio::net::TcpListener::bind(config.listen.peer)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen.peer,
            what: "peer",
            source,
        })?;
    let bound = BoundAddrs {
        grpc: grpc_listener
            .local_addr()
            .map_err(|source| NodeError::Listen {
                addr: config.listen.grpc,
                what: "gRPC",
                source,
            })?,
        metrics: metrics_listener
            .local_addr()
            .map_err(|source| NodeError::Listen {
                addr: config.listen.metrics,
                what: "metrics",
                source,
            })?,
    };

    // Validator or observer, per epoch of the validator set.
    let consensus =
        crate::consensus::replica_task::start(state.clone(), key, peer_listener).await?;
    let (metrics_stop_tx, mut metrics_stop) = watch::channel(false);
    let metrics_task = tokio::spawn(crate::metrics::serve(
        metrics_listener,
        state.clone(),
        async move {
            let _ = metrics_stop.wait_for(|s| *s).await;
        },
    ));

    // First stop admitting transactions, then stop the servers.
    let grpc_state = state.clone();
    let grpc_shutdown = async move {
        shutdown.await;
        tracing::info!("shutdown requested: refusing new transactions");
        grpc_state.begin_shutdown();
    };
    on_bound(bound);
    tracing::info!(grpc = %bound.grpc, metrics = %bound.metrics, "node serving");
    let served = crate::api::serve(state.clone(), grpc_listener, grpc_shutdown).await;

    state.begin_shutdown();
    if let Err(e) = consensus.consensus.await {
        tracing::error!(error = %e, "consensus task failed");
    }
    // The executor ends once the consensus task dropped its job queue,
    // after the block it is writing.
    if tokio::time::timeout(Duration::from_secs(30), consensus.executor)
        .await
        .is_err()
    {
        tracing::warn!("executor did not finish in 30 s");
    }
    let _ = consensus.peer_server.await;
    let _ = metrics_stop_tx.send(true);
    let _ = metrics_task.await;
    let ledger = state.ledger.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ledger.flush()).await {
        tracing::warn!(error = %e, "flushing the ledger at shutdown failed");
    }
    tracing::info!(height = state.ledger.tip().height, "node stopped");
    served
}
