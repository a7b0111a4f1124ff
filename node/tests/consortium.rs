//! A 4-replica PBFT consortium as real processes on loopback, under load:
//! SIGKILL the primary (the others change view and keep committing),
//! restart it (it catches up by state transfer), then the same with a
//! backup. At the end every replica holds the same block hash at every
//! height, every acknowledged transaction is on every replica, and no
//! transaction is committed twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kubeledger_node::client::Client;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::local::LocalNode;
use kubeledger_node::proto::{self, TxState};
use kubeledger_node::tx::envelope::{self, put};
use tokio::process::Child;

const N: usize = 4;
/// Bound on every wait; each failure says what did not happen.
const WAIT: Duration = Duration::from_secs(45);

/// tx id -> height at which a client saw it committed.
type Acknowledged = Arc<Mutex<HashMap<Vec<u8>, u64>>>;

struct Cluster {
    nodes: Vec<LocalNode>,
    children: Vec<Option<Child>>,
    /// Which nodes are up, for the load generators.
    up: Arc<Vec<AtomicBool>>,
}

impl Cluster {
    fn endpoint(&self, i: usize) -> String {
        self.nodes[i].endpoint()
    }

    async fn kill(&mut self, i: usize) {
        self.up[i].store(false, Ordering::SeqCst);
        if let Some(mut c) = self.children[i].take() {
            c.start_kill().expect("SIGKILL");
            let _ = c.wait().await;
        }
    }

    async fn start(&mut self, i: usize) {
        self.children[i] = Some(spawn_node_process(&self.nodes[i]));
        let _ = connect_retry(&self.endpoint(i), Duration::from_secs(60)).await;
        self.up[i].store(true, Ordering::SeqCst);
    }
}

async fn status(endpoint: &str) -> Option<proto::StatusResponse> {
    let mut c = Client::connect(endpoint).await.ok()?;
    try_status(&mut c).await
}

/// Waits until `f` holds, or fails naming `what`.
async fn wait_for<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for_or_explain(what, f, String::new).await
}

/// [`wait_for`], adding `explain()` (node logs, say) to the failure message.
async fn wait_for_or_explain<F, Fut>(what: &str, mut f: F, explain: impl FnOnce() -> String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {WAIT:?} waiting for: {what}\n{}",
                explain()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn live_heights(cluster: &Cluster, nodes: &[usize]) -> Vec<u64> {
    let mut out = Vec::new();
    for &i in nodes {
        out.push(status(&cluster.endpoint(i)).await.map_or(0, |s| s.height));
    }
    out
}

/// Submit-and-wait workers: a transaction counts as acknowledged only once
/// a replica reported it committed.
fn spawn_ack_workers(
    endpoints: Vec<String>,
    up: Arc<Vec<AtomicBool>>,
    acknowledged: Acknowledged,
    stop: Arc<AtomicBool>,
    nonce: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4u8)
        .map(|w| {
            let (endpoints, up, ack, stop, nonce) = (
                endpoints.clone(),
                up.clone(),
                acknowledged.clone(),
                stop.clone(),
                nonce.clone(),
            );
            tokio::spawn(async move {
                let key = client_key(40 + w);
                let mut turn = w as usize;
                while !stop.load(Ordering::SeqCst) {
                    turn += 1;
                    let i = turn % endpoints.len();
                    if !up[i].load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(mut c) = Client::connect(&endpoints[i]).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let n = nonce.fetch_add(1, Ordering::SeqCst);
                    let tx = signed(&key, n, put(format!("ack/{w}/{n}"), format!("v{n}")));
                    let id = envelope::tx_id(&tx).0.to_vec();
                    if let Ok(r) = c
                        .inner
                        .submit_and_wait(proto::SubmitAndWaitRequest {
                            tx: Some(tx),
                            timeout_ms: 10_000,
                        })
                        .await
                    {
                        ack.lock().expect("lock").insert(id, r.into_inner().height);
                    }
                }
            })
        })
        .collect()
}

/// Background load: batches of signed puts to whichever replicas are up.
fn spawn_batch_load(
    endpoints: Vec<String>,
    up: Arc<Vec<AtomicBool>>,
    stop: Arc<AtomicBool>,
    nonce: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let key = client_key(77);
        let mut accepted = 0u64;
        let mut turn = 0usize;
        while !stop.load(Ordering::SeqCst) {
            turn += 1;
            let i = turn % endpoints.len();
            if !up[i].load(Ordering::SeqCst) {
                continue;
            }
            if let Ok(mut c) = Client::connect(&endpoints[i]).await {
                let txs: Vec<_> = (0..100)
                    .map(|_| {
                        let n = nonce.fetch_add(1, Ordering::SeqCst);
                        signed(&key, n, put(format!("load/{n}"), "x".repeat(100)))
                    })
                    .collect();
                if let Ok(r) = c
                    .inner
                    .submit_batch(proto::SubmitBatchRequest { txs })
                    .await
                {
                    accepted += r
                        .into_inner()
                        .results
                        .iter()
                        .filter(|r| r.reject_reason == 0)
                        .count() as u64;
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        accepted
    })
}

async fn primary_of(cluster: &Cluster, live: &[usize]) -> (usize, u64) {
    for &i in live {
        if let Some(s) = status(&cluster.endpoint(i)).await {
            return (s.primary_index as usize, s.view);
        }
    }
    panic!("no replica answered status");
}

/// Kills replica `victim`, checks the others keep committing (and change
/// view when it was the primary), restarts it and waits until it caught up.
async fn kill_and_rejoin(cluster: &mut Cluster, victim: usize, expect_view_change: bool) {
    let others: Vec<usize> = (0..N).filter(|i| *i != victim).collect();
    let (_, view_before) = primary_of(cluster, &others).await;
    cluster.kill(victim).await;
    let at_kill = *live_heights(cluster, &others)
        .await
        .iter()
        .max()
        .unwrap_or(&0);
    eprintln!("killed replica {victim} at height {at_kill}");
    wait_for(
        &format!("the {} surviving replicas to commit 5 more blocks", N - 1),
        || async {
            live_heights(cluster, &others)
                .await
                .iter()
                .all(|h| *h >= at_kill + 5)
        },
    )
    .await;
    if expect_view_change {
        let (primary, view) = primary_of(cluster, &others).await;
        assert!(view > view_before, "view changed after the primary died");
        assert_ne!(primary, victim, "the dead primary is no longer primary");
        eprintln!("view {view_before} -> {view}, primary now replica {primary}");
    }
    cluster.start(victim).await;
    let target = *live_heights(cluster, &others)
        .await
        .iter()
        .max()
        .unwrap_or(&0);
    eprintln!("restarted replica {victim}; catching up to height {target}");
    let endpoint = cluster.endpoint(victim);
    let node = &cluster.nodes[victim];
    wait_for_or_explain(
        &format!("restarted replica {victim} to reach height {target}"),
        || async { status(&endpoint).await.is_some_and(|s| s.height >= target) },
        || log_tail(node, 80),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_survive_primary_and_backup_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 100,
        max_block_txs: 1_000,
        checkpoint_interval: 10,
        view_change_timeout_ms: 1_000,
        ..ChainParams::default()
    };
    let nodes = consortium(dir.path(), N, params);
    let mut cluster = Cluster {
        children: (0..N).map(|_| None).collect(),
        up: Arc::new((0..N).map(|_| AtomicBool::new(false)).collect()),
        nodes,
    };
    for i in 0..N {
        cluster.children[i] = Some(spawn_node_process(&cluster.nodes[i]));
    }
    for i in 0..N {
        let _ = connect_retry(&cluster.endpoint(i), Duration::from_secs(60)).await;
        cluster.up[i].store(true, Ordering::SeqCst);
    }
    let endpoints: Vec<String> = (0..N).map(|i| cluster.endpoint(i)).collect();
    let acknowledged: Acknowledged = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let nonce = Arc::new(AtomicU64::new(1));
    let workers = spawn_ack_workers(
        endpoints.clone(),
        cluster.up.clone(),
        acknowledged.clone(),
        stop.clone(),
        nonce.clone(),
    );
    let load = spawn_batch_load(endpoints.clone(), cluster.up.clone(), stop.clone(), nonce);

    let all: Vec<usize> = (0..N).collect();
    wait_for("all replicas to commit 5 blocks under load", || async {
        live_heights(&cluster, &all).await.iter().all(|h| *h >= 5)
    })
    .await;

    // 1. The primary dies.
    let (primary, _) = primary_of(&cluster, &all).await;
    kill_and_rejoin(&mut cluster, primary, true).await;
    // 2. A backup dies.
    let (primary, _) = primary_of(&cluster, &all).await;
    let backup = (primary + 1) % N;
    kill_and_rejoin(&mut cluster, backup, false).await;

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }
    let accepted = load.await.expect("load task");

    // Quiesce: every replica reaches the same height.
    wait_for("all replicas to agree on the height", || async {
        let h = live_heights(&cluster, &all).await;
        h.iter().all(|x| *x == h[0] && *x > 0)
    })
    .await;
    let height = live_heights(&cluster, &all).await[0];

    // Identical block hashes at every height, no transaction twice.
    let mut clients = Vec::new();
    for e in &endpoints {
        clients.push(Client::connect(e).await.expect("connect"));
    }
    let mut seen_txs = HashSet::new();
    let mut total_txs = 0u64;
    for h in 1..=height {
        let mut hashes = Vec::new();
        for c in clients.iter_mut() {
            let b = c
                .inner
                .get_block(proto::GetBlockRequest {
                    selector: Some(proto::get_block_request::Selector::Height(h)),
                })
                .await
                .unwrap_or_else(|e| panic!("block {h}: {e}"))
                .into_inner();
            hashes.push(b.hash.clone());
            if hashes.len() == 1 {
                for tx in b.block.map(|b| b.txs).unwrap_or_default() {
                    total_txs += 1;
                    let id = kubeledger_node::crypto::sha256(&tx.body).to_vec();
                    assert!(
                        seen_txs.insert(id),
                        "a transaction committed twice (height {h})"
                    );
                }
            }
        }
        assert!(
            hashes.iter().all(|x| *x == hashes[0]),
            "replicas disagree on block {h}"
        );
    }

    // Every acknowledged transaction is on every replica, where it was seen.
    let ack = acknowledged.lock().expect("lock").clone();
    assert!(
        ack.len() >= 20,
        "load produced acknowledgements ({})",
        ack.len()
    );
    for c in clients.iter_mut() {
        for (id, at) in &ack {
            let tx = c
                .inner
                .get_transaction(proto::GetTransactionRequest { tx_id: id.clone() })
                .await
                .expect("acknowledged transaction present")
                .into_inner();
            assert_eq!(tx.state, TxState::Committed as i32);
            assert_eq!(tx.height, *at, "acknowledged at the same height everywhere");
        }
    }
    for c in clients.iter_mut() {
        c.verify_chain().await.expect("chain verifies from genesis");
    }
    eprintln!(
        "{height} blocks, {total_txs} transactions ({accepted} batch-accepted, {} acknowledged) identical on {N} replicas",
        ack.len()
    );
    for i in 0..N {
        cluster.kill(i).await;
    }
}

/// Transactions a backup's clients submitted, whose gossip the primary
/// refused while its pool was full, still commit at a block's pace: when a
/// block with room leaves out a backup's oldest transaction, the backup
/// sends the primary its oldest queued ones again, a few blocks' worth,
/// instead of the single one it watches (which ordered one a block).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_full_primary_refused_is_sent_again_and_commits() {
    const TXS: u64 = 2_000;
    const PRIMARY_POOL: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 100,
        ..ChainParams::default()
    };
    let mut nodes = consortium(dir.path(), N, params);
    nodes[0].config.mempool.max_txs = PRIMARY_POOL;
    std::fs::write(&nodes[0].config_path, nodes[0].config.to_toml()).expect("write config");
    let mut children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut primary = connect_retry(&nodes[0].endpoint(), WAIT).await;
    let mut backup = connect_retry(&nodes[1].endpoint(), WAIT).await;
    // No blocks without requests: wait for the peer links instead.
    eventually(WAIT, || {
        let mut c = backup.clone();
        async move {
            let s = try_status(&mut c).await?;
            (s.peers.iter().filter(|p| p.connected).count() == N - 1).then_some(())
        }
    })
    .await;
    assert_eq!(common::status(&mut primary).await.primary_index, 0);

    // All at once to a backup: its gossip overflows the primary's pool.
    let key = client_key(41);
    let mut ids = Vec::new();
    for chunk in (1..=TXS).collect::<Vec<_>>().chunks(500) {
        let txs: Vec<_> = chunk
            .iter()
            .map(|n| signed(&key, *n, put(format!("f{n}"), "v")))
            .collect();
        ids.extend(txs.iter().map(envelope::tx_id));
        let results = submit_batch(&mut backup, txs).await;
        assert!(results.iter().all(|r| r.reject_reason == 0), "{results:?}");
    }
    // One a block would take TXS blocks; a block's pace takes a few dozen.
    let height_before = common::status(&mut backup).await.height;
    for id in &ids {
        wait_committed(&backup, *id, Duration::from_secs(120)).await;
    }
    let blocks = common::status(&mut backup).await.height - height_before;
    let metrics = scrape_metrics(nodes[1].config.listen.metrics).await;
    let forwarded = sample(&metrics, "kubeledger_txs_forwarded_total");
    let refused = sample(
        &scrape_metrics(nodes[0].config.listen.metrics).await,
        "kubeledger_txs_rejected_total{reason=\"mempool_full\"}",
    );
    eprintln!("{TXS} transactions committed in {blocks} blocks; the primary refused {refused}; node-1 sent {forwarded} again");
    assert!(
        refused > 0.0,
        "the primary's pool never filled: the test proves nothing"
    );
    assert!(forwarded > 0.0, "nothing was sent again");
    assert!(
        blocks < TXS / 10,
        "{TXS} transactions took {blocks} blocks: what the primary refused trickled in"
    );
    for child in &mut children {
        let _ = child.start_kill();
    }
}
