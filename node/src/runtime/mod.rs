//! The node process, the top of the node's layers: wires ledger, mempool,
//! PBFT replica, peer transport, gRPC API and metrics around one
//! [`NodeState`], and shuts them down in order (stop admitting, stop
//! consensus, finish the block being committed, flush RocksDB).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::crypto::keys;
use crate::genesis::Genesis;
use crate::ledger::Ledger;
use crate::node_state::{liveness, NodeState};

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
    #[error(transparent)]
    Serve(#[from] crate::api::ServeError),
    #[error("node task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Consensus(#[from] crate::consensus::replica_task::ConsensusError),
    #[error("state sync: {0}")]
    StateSync(crate::state_sync::SyncError),
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
    match crate::consensus::block_spool::remove_stale(&config.data_dir) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            spools = n,
            "removed state-transfer spools left by an earlier run"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot clear old state-transfer spools"),
    }
    let state = Arc::new(NodeState::new(
        config.name.clone(),
        node_key,
        Arc::new(ledger),
        (&config.mempool).into(),
        config.health.clone(),
    ));
    // A new node far behind a long chain joins by state sync, and a sync a
    // previous run began is finished, before consensus starts and before
    // the node listens: peers starting at the same time find its ports
    // closed (a refused connection, at once) rather than open and silent.
    let peers = if config.state_sync.peers.is_empty() {
        state
            .ledger
            .config()
            .validators
            .iter()
            .filter(|v| v.public_key.as_slice() != node_key.as_bytes())
            .map(|v| v.peer_address.clone())
            .collect()
    } else {
        config.state_sync.peers.clone()
    };
    let sync = crate::state_sync::StateSync::new(
        state.ledger.clone(),
        config.state_sync.clone(),
        peers,
        state.stopping(),
    );
    match sync.run().await {
        Ok(crate::state_sync::Outcome::NotNeeded(why)) => {
            tracing::debug!(reason = %why, "no state sync")
        }
        Ok(synced) => tracing::info!(outcome = ?synced, "joined by state sync"),
        Err(crate::state_sync::SyncError::Stopping) => {}
        Err(e) => return Err(NodeError::StateSync(e)),
    }

    // The watchdog starts once the sync is done: no loop runs before it,
    // and a sync of a large state takes longer than any loop timeout.
    // Every loop counts as having just reported.
    state.heartbeat(liveness::Loop::Consensus);
    state.heartbeat(liveness::Loop::Storage);
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
    let consensus = crate::consensus::replica_task::start(
        state.clone(),
        key,
        peer_listener,
        &config.peer,
        &config.state_sync,
    )
    .await?;
    crate::backup::spawn_schedule(state.clone(), &config.backup);
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
    served.map_err(NodeError::from)
}
