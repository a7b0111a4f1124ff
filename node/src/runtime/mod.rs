//! The node process: wires ledger, mempool, orderer, gRPC API and metrics,
//! and shuts them down in order (stop admitting, finish the block being
//! committed, flush RocksDB).

pub mod admission;
pub mod commit_feed;
pub mod solo;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::crypto::keys;
use crate::genesis::{ChainParams, Genesis};
use crate::ledger::{CommittedBlock, Ledger};
use crate::mempool::Mempool;
use crate::metrics::{HealthSource, NodeMetrics};
use crate::tx::envelope::TxLimits;
use commit_feed::CommitFeed;

/// A loop that has not reported for this long fails the liveness check.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "the genesis names {validators} validators, but this build orders blocks as a single \
         replica; multi-validator consortia need PBFT replication"
    )]
    ReplicationUnavailable { validators: usize },
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
    params: RwLock<ChainParams>,
    started: Instant,
    /// Milliseconds since `started` of the orderer's last heartbeat.
    heartbeat_ms: AtomicU64,
    storage_error: Mutex<Option<String>>,
    shutting_down: AtomicBool,
    /// Turns true when shutdown starts; long-lived streams end on it.
    stopping: watch::Sender<bool>,
}

impl NodeState {
    pub fn new(
        name: String,
        node_key: VerifyingKey,
        ledger: Arc<Ledger>,
        mempool_max: usize,
    ) -> Self {
        let params = ledger.genesis().params.clone();
        let metrics = NodeMetrics::new();
        let tip = ledger.tip();
        metrics.height.set(tip.height as i64);
        Self {
            name,
            node_key,
            ledger,
            mempool: Mempool::new(mempool_max),
            metrics,
            feed: CommitFeed::default(),
            params: RwLock::new(params),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            storage_error: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            stopping: watch::channel(false).0,
        }
    }

    pub fn params(&self) -> ChainParams {
        match self.params.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn tx_limits(&self) -> TxLimits {
        self.params().tx_limits()
    }

    pub fn heartbeat(&self) {
        self.heartbeat_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
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
    /// let the orderer commit what is already admitted.
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

impl HealthSource for NodeState {
    fn live(&self) -> Result<(), String> {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.heartbeat_ms.load(Ordering::Relaxed);
        let age = Duration::from_millis(now.saturating_sub(last));
        if age > HEARTBEAT_TIMEOUT {
            return Err(format!("orderer loop silent for {} s", age.as_secs()));
        }
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        if let Some(e) = self.storage_error() {
            return Err(format!("storage error: {e}"));
        }
        self.live()
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
    if genesis.validators.len() > 1 {
        // Ordering alone with several validators would fork the chain.
        return Err(NodeError::ReplicationUnavailable {
            validators: genesis.validators.len(),
        });
    }
    let key: SigningKey = keys::load(&config.key_file)?;
    let node_key = key.verifying_key();
    let node_hex = hex::encode(node_key.to_bytes());
    if !genesis
        .validators
        .iter()
        .any(|v| v.public_key.eq_ignore_ascii_case(&node_hex))
    {
        tracing::warn!(node = %node_hex, "this node's key is not among the genesis validators");
    }
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
        config.mempool.max_txs,
    ));
    state.heartbeat();

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

    let orderer = tokio::spawn(solo::run(state.clone(), state.stopping()));
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
    if let Err(e) = orderer.await {
        tracing::error!(error = %e, "orderer task failed");
    }
    let _ = metrics_stop_tx.send(true);
    let _ = metrics_task.await;
    let ledger = state.ledger.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ledger.flush()).await {
        tracing::warn!(error = %e, "flushing the ledger at shutdown failed");
    }
    tracing::info!(height = state.ledger.tip().height, "node stopped");
    served
}
