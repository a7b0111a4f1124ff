//! Test harness: single-node consortia in temporary directories, run in
//! process or as a real `kubeledger node` process.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use kubeledger_node::client::Client;
use kubeledger_node::config::NodeConfig;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::local::{self, LocalOptions};
use kubeledger_node::proto::{self, tx_body::Payload};
use kubeledger_node::runtime::BoundAddrs;
use kubeledger_node::tx::envelope;
use tokio::sync::oneshot;

pub const CHAIN: &str = "test-chain";

/// A free TCP port on 127.0.0.1 (racy in theory, fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Writes a one-node consortium into `dir` with free ports.
pub fn single_node(dir: &Path, params: ChainParams) -> NodeConfig {
    let options = LocalOptions {
        nodes: 1,
        chain_id: CHAIN.into(),
        params,
        base_port: 1,
        distinct_hosts: false,
        admission: Default::default(),
        observers: 0,
    };
    let (_, nodes) = local::prepare(dir, &options).expect("prepare consortium");
    let mut config = nodes[0].config.clone();
    config.listen.grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.listen.peer = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.listen.metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    std::fs::write(&nodes[0].config_path, config.to_toml()).expect("write config");
    config
}

pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("node-0/node.toml")
}

/// A node running inside the test process.
pub struct InProcessNode {
    pub addrs: BoundAddrs,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), kubeledger_node::runtime::NodeError>>,
}

impl InProcessNode {
    pub async fn start(config: NodeConfig) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = oneshot::channel();
        let task = tokio::spawn(kubeledger_node::runtime::run(
            config,
            async move {
                let _ = stop_rx.await;
            },
            move |addrs| {
                let _ = bound_tx.send(addrs);
            },
        ));
        let addrs = bound_rx.await.expect("node reports its addresses");
        Self {
            addrs,
            stop: Some(stop_tx),
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addrs.grpc)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.endpoint()).await.expect("connect")
    }

    /// Graceful stop; returns once the ledger is closed.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task
            .await
            .expect("node task")
            .expect("node stops cleanly");
    }
}

pub fn client_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn signed(key: &SigningKey, nonce: u64, payload: Payload) -> proto::SignedTransaction {
    envelope::sign(
        key,
        CHAIN,
        nonce,
        kubeledger_node::client::now_ms(),
        payload,
    )
}

/// A signed transaction whose body does not decode.
pub fn malformed_tx() -> proto::SignedTransaction {
    proto::SignedTransaction {
        body: vec![0xff, 0x01, 0x02].into(),
        signature: vec![0; 64],
    }
}

/// Connects, retrying while the node starts.
pub async fn connect_retry(endpoint: &str, within: Duration) -> Client {
    let deadline = std::time::Instant::now() + within;
    loop {
        match Client::connect(endpoint).await {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() > deadline => panic!("node did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls `f` until it returns Some, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node's status, or None while it does not answer.
pub async fn try_status(c: &mut Client) -> Option<proto::StatusResponse> {
    c.inner
        .status(proto::StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Waits until the node behind `client` has executed block `height`.
pub async fn wait_height(client: &Client, height: u64, within: Duration) {
    eventually(within, || {
        let mut c = client.clone();
        async move {
            let s = try_status(&mut c).await?;
            (s.height >= height).then_some(())
        }
    })
    .await;
}

/// Writes an `n`-node consortium into `dir` on 127.0.0.1, on a block of
/// free ports (gRPC `base + 10·i`, peer `+1`, metrics `+2`).
pub fn consortium(dir: &Path, n: usize, params: ChainParams) -> Vec<local::LocalNode> {
    consortium_with(dir, n, params, Default::default())
}

/// [`consortium`] under an admission policy; member `orgN`'s admin key is
/// in `dir/orgN/admin.key`.
pub fn consortium_with(
    dir: &Path,
    n: usize,
    params: ChainParams,
    admission: kubeledger_node::genesis::Admission,
) -> Vec<local::LocalNode> {
    for _ in 0..50 {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        let all_free = (0..n).all(|i| {
            (0..3).all(|k| {
                std::net::TcpListener::bind(("127.0.0.1", base + 10 * i as u16 + k)).is_ok()
            })
        });
        if !all_free {
            continue;
        }
        let options = LocalOptions {
            nodes: n,
            chain_id: CHAIN.into(),
            params,
            base_port: base,
            distinct_hosts: false,
            admission: admission.clone(),
            observers: 0,
        };
        let (_, nodes) = local::prepare(dir, &options).expect("prepare consortium");
        return nodes;
    }
    panic!("no block of free ports found");
}

/// A node outside the genesis validators, on the same genesis as
/// `template` (a prepared node), with its own key and free ports: it
/// starts as an observer.
pub fn extra_node(dir: &Path, template: &local::LocalNode, name: &str) -> local::LocalNode {
    let node_dir = dir.join(name);
    let mut config = template.config.clone();
    config.name = name.into();
    config.data_dir = node_dir.join("data");
    config.key_file = node_dir.join("node.key");
    kubeledger_node::crypto::keys::load_or_generate(&config.key_file).expect("node key");
    for addr in [
        &mut config.listen.grpc,
        &mut config.listen.peer,
        &mut config.listen.metrics,
    ] {
        *addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    }
    let config_path = node_dir.join("node.toml");
    std::fs::write(&config_path, config.to_toml()).expect("write config");
    local::LocalNode {
        name: name.into(),
        dir: node_dir,
        config_path,
        config,
    }
}

/// The node's status.
pub async fn status(c: &mut Client) -> proto::StatusResponse {
    c.inner
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// The block at `height` on `c`.
pub async fn block_at(c: &mut Client, height: u64) -> proto::GetBlockResponse {
    c.inner
        .get_block(proto::GetBlockRequest {
            selector: Some(proto::get_block_request::Selector::Height(height)),
        })
        .await
        .expect("block")
        .into_inner()
}

/// Submits `txs` in one batch; the node's answer for each, in order.
pub async fn submit_batch(
    c: &mut Client,
    txs: Vec<proto::SignedTransaction>,
) -> Vec<proto::SubmitResult> {
    c.inner
        .submit_batch(proto::SubmitBatchRequest { txs })
        .await
        .expect("batch")
        .into_inner()
        .results
}

/// Reads `key` from the state on `c`.
pub async fn get_key(c: &mut Client, key: &[u8]) -> proto::GetResponse {
    c.inner
        .get(proto::GetRequest { key: key.to_vec() })
        .await
        .expect("get")
        .into_inner()
}

/// Waits until transaction `id` is committed on the node behind
/// `client`; the height it committed at.
pub async fn wait_committed(
    client: &Client,
    id: kubeledger_node::tx::TxId,
    within: Duration,
) -> u64 {
    eventually(within, || {
        let mut c = client.clone();
        async move {
            let r = c
                .inner
                .get_transaction(proto::GetTransactionRequest {
                    tx_id: id.0.to_vec(),
                })
                .await
                .ok()?
                .into_inner();
            (r.state == proto::TxState::Committed as i32).then_some(r.height)
        }
    })
    .await
}

/// Fails unless every transaction in `acked` is committed on `c`.
pub async fn assert_committed<'a>(
    c: &mut Client,
    acked: impl IntoIterator<Item = &'a kubeledger_node::tx::TxId>,
) {
    for id in acked {
        let r = c
            .inner
            .get_transaction(proto::GetTransactionRequest {
                tx_id: id.0.to_vec(),
            })
            .await
            .expect("get transaction")
            .into_inner();
        assert_eq!(
            r.state,
            proto::TxState::Committed as i32,
            "acknowledged tx {id} lost"
        );
    }
}

/// A steady load for whole-system tests: `workers` tasks, each putting and
/// waiting for the commit in turn, worker `w` through `clients[w % len]`
/// with the key `client_key(key_seed + w)`.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<kubeledger_node::tx::TxId>>>,
    failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(clients: &[Client], workers: u8, key_seed: u8, within: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let load = Load {
            stop: Default::default(),
            acked: Default::default(),
            failures: Default::default(),
            workers: Vec::new(),
        };
        let mut handles = Vec::new();
        for w in 0..workers {
            let (stop, acked, failures) =
                (load.stop.clone(), load.acked.clone(), load.failures.clone());
            let mut client = clients[w as usize % clients.len()].clone();
            let key = client_key(key_seed + w);
            handles.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tx = client.sign(&key, envelope::put(format!("load/{w}/{i}"), "v"));
                    let id = envelope::tx_id(&tx);
                    match client.submit_and_wait(tx, within).await {
                        Ok(_) => {
                            acked.lock().expect("acked").insert(id);
                        }
                        Err(e) => {
                            eprintln!("load tx failed: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                            // A refused connection fails without yielding;
                            // back off so a failing run ends instead of
                            // spinning.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    i += 1;
                }
            }));
        }
        Load {
            workers: handles,
            ..load
        }
    }

    /// Stops the workers; the transactions acknowledged as committed, and
    /// how many failed.
    pub async fn stop(self) -> (std::collections::HashSet<kubeledger_node::tx::TxId>, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("load worker");
        }
        let acked = self.acked.lock().expect("acked").clone();
        (acked, self.failures.load(Ordering::Relaxed))
    }
}

/// Starts `kubeledger node` for a prepared node, logging to `node.log`.
/// The last `lines` lines of a node's log (written by [`spawn_node_process`]),
/// for the message of a failed wait: what the node did is the only clue left
/// once the test's directory is gone.
pub fn log_tail(node: &local::LocalNode, lines: usize) -> String {
    let path = node.dir.join("node.log");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            format!(
                "--- last {} lines of {} ---\n{}",
                all.len() - from,
                path.display(),
                all[from..].join("\n")
            )
        }
        Err(e) => format!("--- {} unreadable: {e} ---", path.display()),
    }
}

pub fn spawn_node_process(node: &local::LocalNode) -> tokio::process::Child {
    spawn_node_process_env(node, &[])
}

/// [`spawn_node_process`] with extra environment variables (fault hooks).
pub fn spawn_node_process_env(
    node: &local::LocalNode,
    env: &[(&str, &Path)],
) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.join("node.log"))
        .expect("open node log");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kubeledger"))
        .arg("node")
        .arg("--config")
        .arg(&node.config_path)
        .arg("--log")
        .arg("info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubeledger node")
}

/// An encoded consensus message of signed messages nested `depth` deep
/// (stable proofs of stable proofs), as a hostile peer sends it. Written byte
/// by byte: encoding it with serde would recurse as deep.
pub fn nested_message(depth: usize) -> Vec<u8> {
    use kubeledger_pbft::{Message, SignedMessage, Vote};
    let inner = SignedMessage {
        signer: 1,
        message: Message::Prepare(Vote {
            view: 0,
            seq: 1,
            digest: [3; 32],
        }),
        signature: Vec::new(),
    };
    let outer = SignedMessage {
        signer: 1,
        message: Message::StableProof(vec![inner.clone()]),
        signature: Vec::new(),
    };
    let inner_bytes = postcard::to_stdvec(&inner).expect("encodes");
    let outer_bytes = postcard::to_stdvec(&outer).expect("encodes");
    let at = outer_bytes
        .windows(inner_bytes.len())
        .position(|w| w == inner_bytes.as_slice())
        .expect("the inner message is inside the outer one");
    let (prefix, suffix) = (&outer_bytes[..at], &outer_bytes[at + inner_bytes.len()..]);
    let mut frame = prefix.repeat(depth.saturating_sub(1));
    frame.extend_from_slice(&inner_bytes);
    frame.extend_from_slice(&suffix.repeat(depth.saturating_sub(1)));
    frame.push(0); // the empty payload table
    frame
}

/// Scrapes a node's /metrics with a plain HTTP/1.1 request.
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("response");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of one sample (`name{labels}` exactly as exposed), or 0.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// `node` (through `ours`) holds the same block headers as the reference
/// (`theirs`) at each of `heights`.
pub async fn assert_same_blocks(
    ours: &mut Client,
    theirs: &mut Client,
    heights: &[u64],
    node: &local::LocalNode,
) {
    for &h in heights {
        let a = block_at(ours, h).await;
        let b = block_at(theirs, h).await;
        assert_eq!(
            a.block.and_then(|b| b.header),
            b.block.and_then(|b| b.header),
            "block {h} differs\n{}",
            log_tail(node, 30)
        );
    }
}
