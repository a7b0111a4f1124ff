//! `kubeledger bench`: many concurrent signed transactions, then throughput
//! and commit latency (submission to the commit event of its block).
//!
//! Transactions are signed before the clock starts, as real clients sign
//! on their own machines; the node still verifies every signature. The run
//! also measures this machine's ed25519 batch-verification rate, the bound
//! on what any replica verifying every client signature can reach here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use kubeledger_node::client::{now_ms, Client};
use kubeledger_node::proto::{self, RejectReason};
use kubeledger_node::tx::envelope::{self, TxLimits};
use kubeledger_node::tx::signature_batch;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Transactions to submit.
    #[arg(long, default_value_t = 200_000)]
    pub txs: usize,
    /// Transactions per SubmitBatch request.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Offered load in tx/s; 0 submits as fast as the node accepts.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Distinct client keys signing the load.
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Distinct keys written (default: every transaction writes a new key).
    #[arg(long)]
    pub key_space: Option<usize>,
    /// Extra endpoints to spread submissions over (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Instead of puts, asset-transfer calls (`contracts/asset_transfer.wat`)
    /// of this deployed contract, each moving 1 from its account A to B.
    #[arg(long)]
    pub call: Option<String>,
    /// Give up waiting for commits after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

struct Shared {
    start: Instant,
    submitted_at: Vec<AtomicU64>,
    committed_at: Vec<AtomicU64>,
    index: HashMap<[u8; 32], usize>,
    accepted: AtomicUsize,
    committed: AtomicUsize,
    failed: AtomicUsize,
    submission_done: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

fn sign_all(chain_id: &str, args: &BenchArgs) -> Vec<proto::SignedTransaction> {
    let run: u32 = rand::random();
    let senders: Vec<SigningKey> = (0..args.senders.max(1))
        .map(|_| kubeledger_node::crypto::keys::generate())
        .collect();
    let key_space = args.key_space.unwrap_or(args.txs).max(1);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = args.txs.div_ceil(threads).max(1);
    let value: Vec<u8> = (0..args.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let ts = now_ms();
    let mut out = Vec::with_capacity(args.txs);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.txs)
            .step_by(chunk)
            .map(|from| {
                let to = (from + chunk).min(args.txs);
                let (senders, value) = (&senders, &value);
                scope.spawn(move || {
                    (from..to)
                        .map(|i| {
                            let payload = match &args.call {
                                Some(contract) => envelope::call(proto::ContractCall {
                                    contract: contract.clone(),
                                    function: "transfer".into(),
                                    input: b"\x01A\x01B\x01\0\0\0\0\0\0\0".to_vec(),
                                    fuel: 0,
                                }),
                                None => envelope::put(
                                    format!("bench/{run:08x}/{:010}", i % key_space),
                                    value.clone(),
                                ),
                            };
                            envelope::sign(
                                &senders[i % senders.len()],
                                chain_id,
                                i as u64,
                                ts,
                                payload,
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(part) = h.join() {
                out.extend(part);
            }
        }
    });
    out
}

/// Single-core ed25519 batch-verification rate (tx/s) on a sample.
fn verify_rate(chain_id: &str, txs: &[proto::SignedTransaction]) -> f64 {
    let limits = TxLimits {
        max_tx_bytes: usize::MAX,
        max_key_bytes: usize::MAX,
        max_value_bytes: usize::MAX,
    };
    let sample: Vec<_> = txs
        .iter()
        .take(20_000)
        .filter_map(|t| envelope::decode(t.clone(), chain_id, &limits).ok())
        .collect();
    if sample.is_empty() {
        return 0.0;
    }
    let started = Instant::now();
    for chunk in sample.chunks(250) {
        let ok = signature_batch::verify(chunk);
        debug_assert!(ok.iter().all(|v| *v));
    }
    sample.len() as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub async fn run(endpoint: &str, args: BenchArgs, output: Output) -> Result<()> {
    if args.txs == 0 || args.batch == 0 || args.concurrency == 0 {
        bail!("--txs, --batch and --concurrency must be positive");
    }
    let mut client = Client::connect(endpoint).await?;
    let mut endpoints = vec![endpoint.to_owned()];
    endpoints.extend(args.endpoints.iter().cloned());
    let mut clients = Vec::with_capacity(endpoints.len());
    for e in &endpoints {
        clients.push(Client::connect(e).await?);
    }
    let chain_id = client.chain_id.clone();
    let status = client
        .inner
        .status(proto::StatusRequest {})
        .await?
        .into_inner();
    let quiet = output == Output::Json;
    if !quiet {
        eprintln!(
            "signing {} transactions ({}-byte values, {} senders)...",
            args.txs, args.value_size, args.senders
        );
    }
    let txs = Arc::new(sign_all(&chain_id, &args));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per_core = verify_rate(&chain_id, &txs);
    // Every replica verifies every client signature once, so the machine
    // orders at most its verification rate divided by the replicas on it.
    let replicas = status.validators.max(1);
    let bound = per_core * cores as f64 / f64::from(replicas);

    let index: HashMap<[u8; 32], usize> = txs
        .iter()
        .enumerate()
        .map(|(i, t)| (envelope::tx_id(t).0, i))
        .collect();
    let shared = Arc::new(Shared {
        start: Instant::now(),
        submitted_at: (0..txs.len()).map(|_| AtomicU64::new(0)).collect(),
        committed_at: (0..txs.len()).map(|_| AtomicU64::new(0)).collect(),
        index,
        accepted: AtomicUsize::new(0),
        committed: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        submission_done: AtomicBool::new(false),
    });

    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(txs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} committed  {per_sec}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };

    // Commit observer.
    let mut events = client
        .inner
        .subscribe(proto::SubscribeRequest {
            from_height: status.height + 1,
            key_prefix: Vec::new(),
        })
        .await?
        .into_inner();
    let observer = {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                let now = shared.now_ns();
                let mut n = 0;
                for t in &event.txs {
                    let Ok(id) = <[u8; 32]>::try_from(t.tx_id.as_slice()) else {
                        continue;
                    };
                    if let Some(&i) = shared.index.get(&id) {
                        shared.committed_at[i].store(now, Ordering::Relaxed);
                        n += 1;
                    }
                }
                let total = shared.committed.fetch_add(n, Ordering::Relaxed) + n;
                bar.set_position(total as u64);
                if shared.submission_done.load(Ordering::Acquire)
                    && total >= shared.accepted.load(Ordering::Acquire)
                {
                    break;
                }
            }
        })
    };

    // Submitters.
    let next = Arc::new(AtomicUsize::new(0));
    let rejects = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (txs, shared, next, rejects) =
            (txs.clone(), shared.clone(), next.clone(), rejects.clone());
        let mut c = clients[w % clients.len()].inner.clone();
        let (batch, rate) = (args.batch, args.rate);
        workers.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= txs.len() {
                    break;
                }
                let to = (from + batch).min(txs.len());
                if rate > 0 {
                    let due = Duration::from_secs_f64(from as f64 / rate as f64);
                    let elapsed = shared.start.elapsed();
                    if due > elapsed {
                        tokio::time::sleep(due - elapsed).await;
                    }
                }
                let mut pending: Vec<usize> = (from..to).collect();
                let mut attempts = 0u32;
                while !pending.is_empty() {
                    let now = shared.now_ns();
                    for &i in &pending {
                        shared.submitted_at[i].store(now, Ordering::Relaxed);
                    }
                    let request = proto::SubmitBatchRequest {
                        txs: pending.iter().map(|&i| txs[i].clone()).collect(),
                    };
                    let results = match c.submit_batch(request).await {
                        Ok(r) => r.into_inner().results,
                        Err(status) => {
                            attempts += 1;
                            if attempts > 20 {
                                shared.failed.fetch_add(pending.len(), Ordering::Relaxed);
                                let mut r = rejects.lock().unwrap_or_else(|p| p.into_inner());
                                *r.entry(format!("rpc {}", status.code())).or_default() +=
                                    pending.len();
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let mut retry = Vec::new();
                    for (&i, r) in pending.iter().zip(&results) {
                        let reason = RejectReason::try_from(r.reject_reason)
                            .unwrap_or(RejectReason::Unspecified);
                        match reason {
                            RejectReason::Unspecified => {
                                shared.accepted.fetch_add(1, Ordering::AcqRel);
                            }
                            RejectReason::MempoolFull
                            | RejectReason::MempoolBytesFull
                            | RejectReason::SenderQuota => retry.push(i),
                            other => {
                                shared.failed.fetch_add(1, Ordering::Relaxed);
                                let mut r = rejects.lock().unwrap_or_else(|p| p.into_inner());
                                *r.entry(other.as_str_name().to_owned()).or_default() += 1;
                            }
                        }
                    }
                    if !retry.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    pending = retry;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let submit_end = shared.start.elapsed();
    shared.submission_done.store(true, Ordering::Release);
    let accepted = shared.accepted.load(Ordering::Acquire);
    let deadline = Instant::now() + args.timeout;
    while shared.committed.load(Ordering::Acquire) < accepted && Instant::now() < deadline {
        if observer.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    observer.abort();
    bar.finish_and_clear();

    let mut first_submit = u64::MAX;
    let mut last_commit = 0u64;
    let mut latencies = Vec::with_capacity(accepted);
    for i in 0..txs.len() {
        let c = shared.committed_at[i].load(Ordering::Relaxed);
        let s = shared.submitted_at[i].load(Ordering::Relaxed);
        if c > 0 {
            first_submit = first_submit.min(s);
            last_commit = last_commit.max(c);
            latencies.push(c.saturating_sub(s) as f64 / 1e6);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let committed = latencies.len();
    let seconds = if committed > 0 {
        (last_commit.saturating_sub(first_submit)) as f64 / 1e9
    } else {
        0.0
    };
    let tps = if seconds > 0.0 {
        committed as f64 / seconds
    } else {
        0.0
    };
    let failed = shared.failed.load(Ordering::Relaxed);
    let lost = accepted.saturating_sub(committed);
    let mean = if committed > 0 {
        latencies.iter().sum::<f64>() / committed as f64
    } else {
        0.0
    };
    let (p50, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
    );
    let final_status = client
        .inner
        .status(proto::StatusRequest {})
        .await?
        .into_inner();
    let blocks = final_status.height.saturating_sub(status.height);
    let rejects = rejects.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let report = json!({
        "txs": txs.len(), "accepted": accepted, "committed": committed, "failed": failed,
        "not_committed": lost, "rejects": rejects, "seconds": seconds,
        "submit_seconds": submit_end.as_secs_f64(),
        "tx_per_sec": tps, "offered_rate": args.rate, "blocks": blocks,
        "block_interval_ms": status.block_interval_ms, "value_size": args.value_size,
        "latency_ms": {"p50": p50, "p99": p99, "max": max, "mean": mean},
        "ed25519_batch_verify": {"per_core_tx_per_sec": per_core, "cores": cores, "replicas": replicas, "bound_tx_per_sec": bound,
                                  "achieved_fraction": if bound > 0.0 { tps / bound } else { 0.0 }},
        "endpoints": endpoints,
    });
    output.print(&report, || {
        format!(
            "transactions   {} submitted, {accepted} accepted, {committed} committed, {failed} refused, {lost} not committed\n\
             throughput     {tps:.0} tx/s over {seconds:.2} s ({blocks} blocks, block interval {} ms)\n\
             commit latency p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms  mean {mean:.1} ms\n\
             ed25519 bound  {per_core:.0} verifications/s per core x {cores} cores / {replicas} replica(s) verifying each = {bound:.0} tx/s; achieved {:.1}%{}",
            txs.len(),
            status.block_interval_ms,
            if bound > 0.0 { 100.0 * tps / bound } else { 0.0 },
            if rejects.is_empty() { String::new() } else { format!("\nrefusals       {rejects:?}") }
        )
    });
    if lost > 0 {
        bail!(
            "{lost} accepted transactions were not committed within {:?}",
            args.timeout
        );
    }
    Ok(())
}
