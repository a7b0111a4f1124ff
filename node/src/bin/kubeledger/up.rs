//! `kubeledger up`: a local consortium on loopback, in the foreground.
//! Each node is a child process (`kubeledger node`), restarted if it dies;
//! Ctrl-C stops them all gracefully.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::process::{Child, Command};

use kubeledger_node::genesis::{Admission, AdmissionMode, ChainParams, VoteComparator};
use kubeledger_node::local::{self, LocalNode, LocalOptions};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Number of nodes (one PBFT replica per node; n = 3f + 1 tolerates f faults).
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Directory for keys, genesis, configs, data and logs; reused if it exists.
    #[arg(long, default_value = ".kubeledger/local")]
    pub dir: PathBuf,
    #[arg(long, default_value = "local")]
    pub chain_id: String,
    /// Block interval for a new chain, e.g. 200ms or 1s.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub block_interval: Duration,
    #[arg(long, default_value_t = 10_000)]
    pub max_block_txs: u32,
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_block_bytes: u64,
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_tx_bytes: u64,
    /// PBFT checkpoint interval (blocks) for a new chain. The message log,
    /// and with it every VIEW-CHANGE, holds at most two intervals of blocks.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_interval: u32,
    /// PBFT request / view-change timeout for a new chain, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub view_change_timeout: Duration,
    /// gRPC port of every node (peer port +1, metrics +2).
    #[arg(long, default_value_t = 7050)]
    pub base_port: u16,
    /// Put all nodes on 127.0.0.1 with ports 10 apart, instead of 127.0.0.N.
    #[arg(long)]
    pub same_host: bool,
    /// Leave a node that exits down instead of restarting it (fault drills
    /// and benchmarks that measure the consortium without that node).
    #[arg(long)]
    pub no_restart: bool,
    /// How configuration changes (members, parameters) are decided in a new
    /// chain: `automatic` (org1's admin decides alone) or `vote`.
    #[arg(long, value_enum, default_value_t = AdmissionArg::Automatic)]
    pub admission: AdmissionArg,
    /// Under `vote`: share of the members whose approval decides.
    #[arg(long, default_value_t = 67, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub vote_threshold: u32,
    /// Under `vote`: approve when approvals are strictly greater than the
    /// threshold, instead of at least the threshold.
    #[arg(long)]
    pub vote_greater_than: bool,
    /// Extra nodes that are not validators: they follow the chain as
    /// observers (node-<nodes>, ...), e.g. the nodes of a member about to
    /// be admitted.
    #[arg(long, default_value_t = 0)]
    pub observers: usize,
    /// Under `vote`: how long a proposal stays open, e.g. 10m or 24h.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub vote_expiry: Duration,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AdmissionArg {
    Automatic,
    Vote,
}

async fn spawn(node: &LocalNode) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the kubeledger executable")?;
    let log_path = node.dir.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let child = Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(&node.config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", node.name))?;
    Ok(child)
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

pub async fn run(args: UpArgs, output: Output) -> Result<()> {
    anyhow::ensure!(
        (1..=100).contains(&args.nodes),
        "--nodes must be between 1 and 100"
    );
    let params = ChainParams {
        block_interval_ms: u32::try_from(args.block_interval.as_millis()).unwrap_or(u32::MAX),
        max_block_txs: args.max_block_txs,
        max_block_bytes: args.max_block_bytes,
        max_tx_bytes: args.max_tx_bytes,
        checkpoint_interval: args.checkpoint_interval,
        view_change_timeout_ms: u32::try_from(args.view_change_timeout.as_millis())
            .unwrap_or(u32::MAX),
        ..ChainParams::default()
    };
    let options = LocalOptions {
        nodes: args.nodes,
        chain_id: args.chain_id.clone(),
        params,
        base_port: args.base_port,
        distinct_hosts: !args.same_host,
        admission: Admission {
            mode: match args.admission {
                AdmissionArg::Automatic => AdmissionMode::Automatic,
                AdmissionArg::Vote => AdmissionMode::Vote,
            },
            threshold_percent: args.vote_threshold,
            comparator: if args.vote_greater_than {
                VoteComparator::GreaterThan
            } else {
                VoteComparator::AtLeast
            },
            expiry_ms: u64::try_from(args.vote_expiry.as_millis()).unwrap_or(u64::MAX),
            consortium_admin: String::new(),
        },
        observers: args.observers,
    };
    let dir = std::path::absolute(&args.dir).unwrap_or(args.dir.clone());
    let (genesis, nodes) = local::prepare(&dir, &options)?;
    let mut children = Vec::with_capacity(nodes.len());
    for node in &nodes {
        children.push(spawn(node).await?);
    }
    let endpoints: Vec<_> = nodes
        .iter()
        .map(|n| json!({"name": n.name, "observer": !genesis.validators.iter().any(|v| v.name == n.name), "grpc": n.endpoint(), "metrics": format!("http://{}/metrics", n.config.listen.metrics), "log": n.dir.join("node.log")}))
        .collect();
    output.print(
        &json!({"chain_id": genesis.chain_id, "dir": dir, "nodes": endpoints, "block_interval_ms": genesis.params.block_interval_ms}),
        || {
            let mut out = format!(
                "kubeledger consortium {:?}: {} node(s), block interval {} ms\ndata directory: {}\n",
                genesis.chain_id,
                nodes.len(),
                genesis.params.block_interval_ms,
                dir.display()
            );
            for n in &nodes {
                let role = if genesis.validators.iter().any(|v| v.name == n.name) {
                    ""
                } else {
                    " (observer)"
                };
                out.push_str(&format!(
                    "  {}{role}  gRPC {}  metrics http://{}/metrics  log {}\n",
                    n.name,
                    n.endpoint(),
                    n.config.listen.metrics,
                    n.dir.join("node.log").display()
                ));
            }
            out.push_str(&format!(
                "try:  kubeledger put greeting hello --endpoint {0}\n      kubeledger history greeting --endpoint {0}\nCtrl-C stops the consortium.",
                nodes[0].endpoint()
            ));
            out
        },
    );

    let mut restarts = vec![0u32; nodes.len()];
    let mut down = vec![false; nodes.len()];
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = check.tick() => {
                for (i, child) in children.iter_mut().enumerate() {
                    if down[i] {
                        continue;
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        if args.no_restart {
                            eprintln!(
                                "{} exited ({status}); left down (--no-restart), see {}",
                                nodes[i].name, nodes[i].dir.join("node.log").display()
                            );
                            down[i] = true;
                            continue;
                        }
                        restarts[i] += 1;
                        let backoff = Duration::from_millis(500u64 << restarts[i].min(5));
                        eprintln!(
                            "{} exited ({status}); restarting in {:?} (restart {}), see {}",
                            nodes[i].name, backoff, restarts[i], nodes[i].dir.join("node.log").display()
                        );
                        tokio::time::sleep(backoff).await;
                        *child = spawn(&nodes[i]).await?;
                    }
                }
            }
        }
    }
    eprintln!("stopping {} node(s)...", children.len());
    for child in &children {
        terminate(child);
    }
    for (i, child) in children.iter_mut().enumerate() {
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(Ok(status)) => eprintln!("{} stopped ({status})", nodes[i].name),
            _ => {
                eprintln!("{} did not stop in 30 s; killing it", nodes[i].name);
                let _ = child.kill().await;
            }
        }
    }
    Ok(())
}
