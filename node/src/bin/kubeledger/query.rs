//! Client commands: keys, writes, reads, history, blocks, status, watch,
//! and chain verification.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use serde_json::json;

use kubeledger_node::client::Client;
use kubeledger_node::crypto::keys;
use kubeledger_node::proto::{self, get_block_request::Selector};
use kubeledger_node::tx::envelope;
use kubeledger_node::tx::reject;

use crate::output::{format_ms, show_bytes, Output};

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    pub key: String,
    pub value: String,
    /// Return once accepted instead of waiting for the commit.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    pub key: String,
    #[arg(long)]
    pub no_wait: bool,
}

fn default_key_path() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".kubeledger/client.key")
}

pub fn client_key(path: Option<PathBuf>) -> Result<SigningKey> {
    let path = path.unwrap_or_else(default_key_path);
    let (key, created) = keys::load_or_generate(&path)?;
    if created {
        eprintln!(
            "created client key {} (public key {})",
            path.display(),
            hex::encode(key.verifying_key().to_bytes())
        );
    }
    Ok(key)
}

/// [`explain`] for the library client's errors.
pub fn explain_client(e: kubeledger_node::client::ClientError) -> anyhow::Error {
    match e {
        kubeledger_node::client::ClientError::Rpc(status) => explain(status),
        other => other.into(),
    }
}

/// Turns a refused submission into an error naming the rule broken.
fn explain(status: tonic::Status) -> anyhow::Error {
    match reject::from_status(&status) {
        Some(r) => anyhow!("refused ({}): {}", r.reason.as_str_name(), r.message),
        None => anyhow!("{}: {}", status.code(), status.message()),
    }
}

pub fn keygen(out: &Path, output: Output) -> Result<()> {
    let key = keys::generate();
    keys::save(out, &key)?;
    let public = hex::encode(key.verifying_key().to_bytes());
    output.print(&json!({"key_file": out, "public_key": public}), || {
        format!("wrote {}\npublic key {public}", out.display())
    });
    Ok(())
}

async fn write(
    endpoint: &str,
    key: Option<PathBuf>,
    payload: proto::tx_body::Payload,
    no_wait: bool,
    output: Output,
) -> Result<()> {
    let key = client_key(key)?;
    let mut client = Client::connect(endpoint).await?;
    let tx = client.sign(&key, payload);
    if no_wait {
        let id = envelope::tx_id(&tx);
        client
            .inner
            .submit(proto::SubmitRequest { tx: Some(tx) })
            .await
            .map_err(explain)?;
        output.print(&json!({"tx_id": id.to_hex(), "state": "pending"}), || {
            format!("accepted {id}")
        });
        return Ok(());
    }
    let r = client
        .inner
        .submit_and_wait(proto::SubmitAndWaitRequest {
            tx: Some(tx),
            timeout_ms: 30_000,
        })
        .await
        .map_err(explain)?
        .into_inner();
    let id = hex::encode(&r.tx_id);
    output.print(
        &json!({"tx_id": id, "height": r.height, "tx_index": r.tx_index, "block_hash": hex::encode(&r.block_hash)}),
        || format!("committed {id} at height {} (index {})", r.height, r.tx_index),
    );
    Ok(())
}

pub async fn put(
    endpoint: &str,
    key: Option<PathBuf>,
    args: PutArgs,
    output: Output,
) -> Result<()> {
    write(
        endpoint,
        key,
        envelope::put(args.key, args.value),
        args.no_wait,
        output,
    )
    .await
}

pub async fn delete(
    endpoint: &str,
    key: Option<PathBuf>,
    args: DeleteArgs,
    output: Output,
) -> Result<()> {
    write(
        endpoint,
        key,
        envelope::delete(args.key),
        args.no_wait,
        output,
    )
    .await
}

pub async fn get(endpoint: &str, key: &str, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let r = client
        .inner
        .get(proto::GetRequest {
            key: key.as_bytes().to_vec(),
        })
        .await?
        .into_inner();
    let version = r.version.unwrap_or_default();
    output.print(
        &json!({
            "key": key, "found": r.found, "value": show_bytes(&r.value),
            "version": {"height": version.height, "tx_index": version.tx_index, "tx_id": hex::encode(&version.tx_id)},
            "read_at_height": r.height,
        }),
        || {
            if r.found {
                format!(
                    "{}\n(version: height {} index {}, tx {})",
                    show_bytes(&r.value),
                    version.height,
                    version.tx_index,
                    hex::encode(&version.tx_id)
                )
            } else {
                format!("{key}: not found (at height {})", r.height)
            }
        },
    );
    if !r.found {
        std::process::exit(3);
    }
    Ok(())
}

pub async fn history(endpoint: &str, key: &str, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let entries = client.full_history(key.as_bytes()).await?;
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({
                "height": e.height, "tx_index": e.tx_index, "tx_id": hex::encode(&e.tx_id),
                "timestamp_ms": e.timestamp_ms, "block_timestamp_ms": e.block_timestamp_ms,
                "deleted": e.deleted, "value": show_bytes(&e.value),
            })
        })
        .collect();
    output.print(&json!({"key": key, "versions": rows}), || {
        let mut out = format!("{} version(s) of {key}", entries.len());
        for e in &entries {
            let what = if e.deleted {
                "<deleted>".to_owned()
            } else {
                show_bytes(&e.value)
            };
            out.push_str(&format!(
                "\n  height {:>8} #{:<5} {} tx {}  {what}",
                e.height,
                e.tx_index,
                format_ms(e.block_timestamp_ms),
                &hex::encode(&e.tx_id)[..16]
            ));
        }
        out
    });
    Ok(())
}

fn header_json(h: &proto::BlockHeader, hash: &[u8]) -> serde_json::Value {
    json!({
        "height": h.height, "hash": hex::encode(hash), "prev_hash": hex::encode(&h.prev_hash),
        "tx_root": hex::encode(&h.tx_root), "state_root": hex::encode(&h.state_root),
        "timestamp_ms": h.timestamp_ms, "proposer": hex::encode(&h.proposer),
        "validators_hash": hex::encode(&h.validators_hash), "tx_count": h.tx_count, "chain_id": h.chain_id,
    })
}

pub async fn block(endpoint: &str, id: &str, output: Output) -> Result<()> {
    let selector = match id.parse::<u64>() {
        Ok(h) => Selector::Height(h),
        Err(_) => Selector::Hash(
            hex::decode(id).context("block id must be a height or a 64-hex-digit hash")?,
        ),
    };
    let mut client = Client::connect(endpoint).await?;
    let r = client
        .inner
        .get_block(proto::GetBlockRequest {
            selector: Some(selector),
        })
        .await?
        .into_inner();
    let block = r.block.unwrap_or_default();
    let header = block.header.clone().unwrap_or_default();
    let ids: Vec<String> = kubeledger_node::block::verify::tx_ids(&block)
        .iter()
        .map(|i| i.to_hex())
        .collect();
    let mut j = header_json(&header, &r.hash);
    j["tx_ids"] = json!(ids);
    output.print(&j, || {
        format!(
            "block {}\n  hash        {}\n  prev_hash   {}\n  tx_root     {}\n  state_root  {}\n  time        {}\n  txs         {}",
            header.height,
            hex::encode(&r.hash),
            hex::encode(&header.prev_hash),
            hex::encode(&header.tx_root),
            hex::encode(&header.state_root),
            format_ms(header.timestamp_ms),
            header.tx_count
        )
    });
    Ok(())
}

pub async fn tx(endpoint: &str, id: &str, output: Output) -> Result<()> {
    let tx_id = hex::decode(id).context("transaction id must be hex")?;
    let mut client = Client::connect(endpoint).await?;
    let r = client
        .inner
        .get_transaction(proto::GetTransactionRequest { tx_id })
        .await?
        .into_inner();
    let state = proto::TxState::try_from(r.state)
        .unwrap_or_default()
        .as_str_name();
    let body = r.body.unwrap_or_default();
    let payload = match &body.payload {
        Some(proto::tx_body::Payload::Put(p)) => {
            json!({"put": {"key": show_bytes(&p.key), "value": show_bytes(&p.value)}})
        }
        Some(proto::tx_body::Payload::Delete(d)) => json!({"delete": {"key": show_bytes(&d.key)}}),
        Some(proto::tx_body::Payload::Config(c)) => json!({"config": format!("{c:?}")}),
        Some(proto::tx_body::Payload::Call(c)) => json!({"call": {
            "contract": c.contract, "function": c.function,
            "input": hex::encode(&c.input), "fuel": c.fuel}}),
        None => json!(null),
    };
    output.print(
        &json!({"tx_id": id, "state": state, "height": r.height, "tx_index": r.tx_index,
                "block_hash": hex::encode(&r.block_hash), "sender": hex::encode(&body.sender),
                "nonce": body.nonce, "timestamp_ms": body.timestamp_ms, "payload": payload}),
        || {
            format!(
                "{id}: {state} at height {} index {}\n  sender {}\n  payload {payload}",
                r.height,
                r.tx_index,
                hex::encode(&body.sender)
            )
        },
    );
    Ok(())
}

pub async fn status(endpoint: &str, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let s = client
        .inner
        .status(proto::StatusRequest {})
        .await?
        .into_inner();
    output.print(
        &json!({
            "chain_id": s.chain_id, "node_name": s.node_name, "node_id": hex::encode(&s.node_id),
            "height": s.height, "last_block_hash": hex::encode(&s.last_block_hash),
            "last_block_time_ms": s.last_block_time_ms, "pending_txs": s.pending_txs,
            "block_interval_ms": s.block_interval_ms, "max_block_txs": s.max_block_txs,
            "max_block_bytes": s.max_block_bytes, "max_tx_bytes": s.max_tx_bytes, "view": s.view,
            "primary": hex::encode(&s.primary), "validators": s.validators,
            "txs_committed": s.txs_committed, "version": s.version,
            "replica_index": s.replica_index, "primary_index": s.primary_index,
            "low_watermark": s.low_watermark, "high_watermark": s.high_watermark,
            "stable_checkpoint": s.stable_checkpoint, "view_changes": s.view_changes,
            "view_change_in_progress": s.view_change_in_progress,
            "state_transfer_target": s.state_transfer_target,
            "observer": s.observer, "corruption": s.corruption,
            "epoch_base": s.epoch_base, "epoch_end": (s.epoch_end > 0).then_some(s.epoch_end),
            "lowest_full_block": s.lowest_full_block,
            "last_backup_height": (s.last_backup_at_ms > 0).then_some(s.last_backup_height),
            "last_backup_at_ms": (s.last_backup_at_ms > 0).then_some(s.last_backup_at_ms),
            "peers": s.peers.iter().map(|p| json!({"index": p.index, "name": p.name, "address": p.address,
                "connected": p.connected, "last_seen_height": p.last_seen_height})).collect::<Vec<_>>(),
        }),
        || {
            let mut out = format!(
                "chain {}  node {} ({})\nheight {}  last block {}  ({})\npending {}  committed {}\nblock interval {} ms, max {} txs / {} bytes per block\nview {}  primary {}  validators {}",
                s.chain_id,
                s.node_name,
                &hex::encode(&s.node_id)[..16.min(s.node_id.len() * 2)],
                s.height,
                &hex::encode(&s.last_block_hash)[..16.min(s.last_block_hash.len() * 2)],
                format_ms(s.last_block_time_ms),
                s.pending_txs,
                s.txs_committed,
                s.block_interval_ms,
                s.max_block_txs,
                s.max_block_bytes,
                s.view,
                &hex::encode(&s.primary)[..16.min(s.primary.len() * 2)],
                s.validators
            );
            if s.epoch_base > 0 || s.epoch_end > 0 {
                out.push_str(&format!("\nvalidator set since height {}", s.epoch_base + 1));
                if s.epoch_end > 0 {
                    out.push_str(&format!(
                        ", the next set takes over at height {}",
                        s.epoch_end + 1
                    ));
                }
            }
            if s.lowest_full_block > 0 {
                out.push_str(&format!(
                    "\njoined by state sync: blocks and history from height {} (headers and transaction ids from genesis)",
                    s.lowest_full_block
                ));
            }
            if s.last_backup_at_ms > 0 {
                out.push_str(&format!(
                    "\nlast backup at height {} ({})",
                    s.last_backup_height,
                    format_ms(s.last_backup_at_ms)
                ));
            }
            if s.observer {
                out.push_str(&format!(
                    "\nobserver: follows stable checkpoints (last {}), refuses transactions",
                    s.stable_checkpoint
                ));
                return out;
            }
            out.push_str(&format!(
                "\nreplica {}  primary {}{}  window ({}, {}]  stable checkpoint {}  view changes {}  request timeout {} ms",
                s.replica_index,
                s.primary_index,
                if s.view_change_in_progress { " (view change under way)" } else { "" },
                s.low_watermark,
                s.high_watermark,
                s.stable_checkpoint,
                s.view_changes,
                s.request_timeout_ms
            ));
            if s.state_transfer_target > 0 {
                out.push_str(&format!("\nstate transfer to height {}", s.state_transfer_target));
            }
            for p in &s.peers {
                out.push_str(&format!(
                    "\n  peer {} {} {}  {}  last seen height {}",
                    p.index,
                    p.name,
                    p.address,
                    if p.connected { "connected" } else { "DISCONNECTED" },
                    p.last_seen_height
                ));
            }
            out
        },
    );
    Ok(())
}

pub async fn watch(endpoint: &str, prefix: &str, from: u64, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let mut stream = client
        .inner
        .subscribe(proto::SubscribeRequest {
            from_height: from,
            key_prefix: prefix.as_bytes().to_vec(),
        })
        .await?
        .into_inner();
    while let Some(event) = stream.next().await {
        let event = event?;
        let header = event.header.unwrap_or_default();
        let txs: Vec<_> = event
            .txs
            .iter()
            .map(|t| json!({"tx_id": hex::encode(&t.tx_id), "tx_index": t.tx_index, "key": show_bytes(&t.key), "deleted": t.deleted}))
            .collect();
        output.print(&json!({"height": header.height, "hash": hex::encode(&event.block_hash), "timestamp_ms": header.timestamp_ms, "block_txs": header.tx_count, "matching": txs}), || {
            let mut out = format!(
                "block {} {} {} txs ({} matching)",
                header.height,
                &hex::encode(&event.block_hash)[..16.min(event.block_hash.len() * 2)],
                header.tx_count,
                event.txs.len()
            );
            for t in &event.txs {
                out.push_str(&format!(
                    "\n  {} {} {}",
                    &hex::encode(&t.tx_id)[..16.min(t.tx_id.len() * 2)],
                    if t.deleted { "delete" } else { "put" },
                    show_bytes(&t.key)
                ));
            }
            out
        });
    }
    Ok(())
}

/// Fetches every block from genesis to the tip and checks hash links,
/// heights, merkle roots and counts.
pub async fn verify(endpoint: &str, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let started = std::time::Instant::now();
    let summary = client.verify_chain().await?;
    let elapsed = started.elapsed();
    let tip = hex::encode(summary.tip_hash);
    output.print(
        &json!({"verified": true, "height": summary.height, "transactions": summary.transactions, "tip_hash": tip, "seconds": elapsed.as_secs_f64()}),
        || format!("chain verified: {} blocks, {} transactions, tip {tip} ({elapsed:.1?})", summary.height + 1, summary.transactions),
    );
    Ok(())
}
