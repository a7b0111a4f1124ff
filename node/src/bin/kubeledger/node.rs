//! `kubeledger node`: run one node from a config file, with flag overrides.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use kubeledger_node::config::NodeConfig;

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Node configuration file (TOML).
    #[arg(long, env = "KUBELEDGER_CONFIG")]
    pub config: PathBuf,
    /// Override `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Override `listen.grpc`.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// Override `listen.metrics`.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Override `mempool.max_txs`.
    #[arg(long)]
    pub mempool_max_txs: Option<usize>,
    /// Log as JSON lines (for log collectors).
    #[arg(long)]
    pub log_json: bool,
}

pub async fn run(args: NodeArgs) -> Result<()> {
    let mut config = NodeConfig::load(&args.config)?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = args.grpc_listen {
        config.listen.grpc = a;
    }
    if let Some(a) = args.metrics_listen {
        config.listen.metrics = a;
    }
    if let Some(n) = args.mempool_max_txs {
        config.mempool.max_txs = n;
    }
    config.validate()?;
    kubeledger_node::runtime::run(config, shutdown_signal(), |_| {})
        .await
        .context("node failed")
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
