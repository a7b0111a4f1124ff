//! `kubeledger snapshot`: take a snapshot of a running node, and seed a
//! stopped node's data directory from one after proving what it holds.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use kubeledger_node::client::Client;
use kubeledger_node::config::NodeConfig;
use kubeledger_node::proto;
use serde_json::json;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a consistent copy of the node at --endpoint (in its data
    /// directory, under snapshots/; the newest three are kept).
    Create,
    /// Seed the data directory of a stopped node from a snapshot, after
    /// verifying its chain from genesis, its tip, and its checkpoint
    /// certificate. Refuses a node that already has a ledger.
    Restore {
        /// A snapshot directory (as `snapshot create` printed it), or a
        /// directory of snapshots (a backup volume): the newest that
        /// proves is restored.
        #[arg(long)]
        from: PathBuf,
        /// The node's configuration (its data directory and genesis).
        #[arg(long)]
        config: PathBuf,
        /// A node that already has a ledger is left as it is and the
        /// command succeeds (for an init container run on every start).
        #[arg(long)]
        if_empty: bool,
    },
}

pub async fn run(endpoint: &str, command: SnapshotCommand, output: Output) -> Result<()> {
    match command {
        SnapshotCommand::Create => create(endpoint, output).await,
        SnapshotCommand::Restore {
            from,
            config,
            if_empty,
        } => restore(&from, &config, if_empty, output).await,
    }
}

async fn create(endpoint: &str, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let started = Instant::now();
    let s = client
        .inner
        .create_snapshot(proto::CreateSnapshotRequest {})
        .await
        .context("create snapshot")?
        .into_inner();
    let ms = started.elapsed().as_millis() as u64;
    output.print(
        &json!({
            "path": s.path, "height": s.height, "block_hash": hex::encode(&s.block_hash),
            "checkpoint_seq": s.checkpoint_seq, "bytes": s.bytes,
            "created_at_ms": s.created_at_ms, "took_ms": ms,
            "commits_paused_us": s.commits_paused_us, "node_took_ms": s.took_ms,
        }),
        || {
            format!(
                "snapshot {}\nheight {}  block {}\ncheckpoint certificate of block {}\n{} bytes, taken in {ms} ms (commits paused {} us)",
                s.path,
                s.height,
                hex::encode(&s.block_hash),
                s.checkpoint_seq,
                s.bytes,
                s.commits_paused_us
            )
        },
    );
    Ok(())
}

async fn restore(
    from: &std::path::Path,
    config: &std::path::Path,
    if_empty: bool,
    output: Output,
) -> Result<()> {
    let config = NodeConfig::load(config)?;
    let existing = kubeledger_node::restore::ledger_dir(&config);
    if if_empty && existing.exists() {
        output.print(
            &json!({"ledger_dir": existing.display().to_string(), "restored": false}),
            || {
                format!(
                    "{} already holds a ledger; nothing restored",
                    existing.display()
                )
            },
        );
        return Ok(());
    }
    let from = from.to_owned();
    let started = Instant::now();
    let r =
        tokio::task::spawn_blocking(move || kubeledger_node::restore::restore_from(&from, &config))
            .await??;
    let ms = started.elapsed().as_millis() as u64;
    output.print(
        &json!({
            "ledger_dir": r.ledger_dir.display().to_string(), "restored": true, "height": r.height,
            "checkpoint_seq": r.checkpoint_seq, "blocks_verified": r.verified.blocks,
            "transactions_verified": r.verified.transactions, "state_keys": r.verified.state_keys,
            "bytes": r.bytes, "took_ms": ms,
        }),
        || {
            format!(
                "restored {} at height {}\nverified {} blocks, {} transactions, {} state keys; checkpoint {} certified by a quorum\n{} bytes in {ms} ms",
                r.ledger_dir.display(),
                r.height,
                r.verified.blocks,
                r.verified.transactions,
                r.verified.state_keys,
                r.checkpoint_seq,
                r.bytes
            )
        },
    );
    Ok(())
}
