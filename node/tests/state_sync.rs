//! A new observer joins a consortium by state sync, through three peers
//! that this test puts in front of real validators: one serves forged state
//! chunks (it changes a value), the other two forward honestly but can be
//! held. The observer is killed with SIGKILL part-way through the chunks
//! and started again: it resumes from its stored progress, refuses the
//! forger, finishes, and then follows the chain block for block.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::Stream;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::proto::peer_client::PeerClient;
use kubeledger_node::proto::peer_server::{Peer, PeerServer};
use kubeledger_node::proto::{self, *};
use kubeledger_node::tx::envelope::put;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Keys written before the observer joins.
const KEYS: u64 = 6_000;
/// Entries per served chunk: the state is many chunks.
const CHUNK_ENTRIES: usize = 100;

/// A `Peer` service in front of a real node: forwards everything, and
/// either forges every state chunk it serves or holds chunk answers while
/// `hold` is set.
#[derive(Clone)]
struct Proxy {
    upstream: PeerClient<Channel>,
    forge: bool,
    hold: watch::Receiver<bool>,
    chunks_served: Arc<AtomicU64>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for Proxy {
    async fn messages(
        &self,
        _request: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<PeerAck>, Status> {
        Err(Status::unimplemented(
            "a state-sync proxy carries no consensus",
        ))
    }

    type GetBlocksStream = Boxed<CertifiedBlock>;

    async fn get_blocks(
        &self,
        request: Request<GetBlocksRequest>,
    ) -> Result<Response<Self::GetBlocksStream>, Status> {
        let stream = self
            .upstream
            .clone()
            .get_blocks(request.into_inner())
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<CheckpointProof>, Status> {
        self.upstream
            .clone()
            .get_checkpoint(request.into_inner())
            .await
    }

    async fn get_state_manifest(
        &self,
        request: Request<GetStateManifestRequest>,
    ) -> Result<Response<StateManifest>, Status> {
        self.upstream
            .clone()
            .get_state_manifest(request.into_inner())
            .await
    }

    async fn get_state_chunk(
        &self,
        request: Request<GetStateChunkRequest>,
    ) -> Result<Response<StateChunk>, Status> {
        let mut hold = self.hold.clone();
        let _ = hold.wait_for(|held| !*held).await;
        let mut chunk = self
            .upstream
            .clone()
            .get_state_chunk(request.into_inner())
            .await?
            .into_inner();
        if self.forge {
            if let Some(e) = chunk.entries.first_mut() {
                e.value = b"forged".to_vec();
            }
        }
        self.chunks_served.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(chunk))
    }

    type GetHeadersStream = Boxed<HeaderWithTxIds>;

    async fn get_headers(
        &self,
        request: Request<GetHeadersRequest>,
    ) -> Result<Response<Self::GetHeadersStream>, Status> {
        let stream = self
            .upstream
            .clone()
            .get_headers(request.into_inner())
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves `proxy` on a free port; its address.
async fn serve(proxy: Proxy) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                PeerServer::new(proxy)
                    .max_decoding_message_size(128 << 20)
                    .max_encoding_message_size(128 << 20),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

async fn upstream(addr: std::net::SocketAddr) -> PeerClient<Channel> {
    PeerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to a validator's peer port")
        .max_decoding_message_size(128 << 20)
}

async fn get_tx(
    c: &mut kubeledger_node::client::Client,
    id: Vec<u8>,
) -> Result<proto::GetTransactionResponse, Status> {
    c.inner
        .get_transaction(proto::GetTransactionRequest { tx_id: id })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_joins_by_state_sync_past_a_forger_and_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 20,
        ..ChainParams::default()
    };
    let mut nodes = consortium(dir.path(), 4, params);
    for node in &mut nodes {
        node.config.state_sync.chunk_entries = CHUNK_ENTRIES;
        std::fs::write(&node.config_path, node.config.to_toml()).expect("write config");
    }
    let _children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect_retry(&node.endpoint(), Duration::from_secs(60)).await);
    }

    // The chain: KEYS keys, some written twice and some deleted, so the
    // state at the sync point is not simply every write.
    let key = client_key(7);
    let mut nonce = 0u64;
    let mut first_tx = None;
    for start in (0..KEYS).step_by(500) {
        let batch: Vec<_> = (start..start + 500)
            .map(|k| {
                nonce += 1;
                signed(&key, nonce, put(format!("key-{k:06}"), format!("v1-{k}")))
            })
            .collect();
        if first_tx.is_none() {
            first_tx = Some(kubeledger_node::tx::envelope::tx_id(&batch[0]));
        }
        let results = submit_batch(&mut clients[(start / 500) as usize % 4], batch).await;
        assert!(results.iter().all(|r| r.reject_reason == 0), "{results:?}");
    }
    let rewrites: Vec<_> = (0..KEYS)
        .step_by(7)
        .map(|k| {
            nonce += 1;
            signed(&key, nonce, put(format!("key-{k:06}"), format!("v2-{k}")))
        })
        .collect();
    submit_batch(&mut clients[1], rewrites).await;
    let deletes: Vec<_> = (0..KEYS)
        .step_by(11)
        .map(|k| {
            nonce += 1;
            signed(
                &key,
                nonce,
                proto::tx_body::Payload::Delete(proto::Delete {
                    key: format!("key-{k:06}").into_bytes(),
                }),
            )
        })
        .collect();
    submit_batch(&mut clients[2], deletes).await;
    // Wait for everything, and for a stable checkpoint past it.
    let last = signed(&key, nonce + 1, put("last", "x"));
    let last_id = kubeledger_node::tx::envelope::tx_id(&last);
    submit_batch(&mut clients[0], vec![last]).await;
    let committed_at = eventually(Duration::from_secs(120), || {
        let mut c = clients[0].clone();
        let id = last_id.0.to_vec();
        async move { get_tx(&mut c, id).await.ok().map(|t| t.height) }
    })
    .await;
    let checkpoint = eventually(Duration::from_secs(120), || {
        let mut c = clients[0].clone();
        async move {
            let s = try_status(&mut c).await?;
            (s.stable_checkpoint > committed_at).then_some(s.stable_checkpoint)
        }
    })
    .await;

    // The peers the observer syncs from.
    let (hold_tx, hold) = watch::channel(false);
    let forger_served = Arc::new(AtomicU64::new(0));
    let honest_served = Arc::new(AtomicU64::new(0));
    let forger = serve(Proxy {
        upstream: upstream(nodes[0].config.listen.peer).await,
        forge: true,
        hold: watch::channel(false).1,
        chunks_served: forger_served.clone(),
    })
    .await;
    let mut honest = Vec::new();
    for node in &nodes[1..3] {
        honest.push(
            serve(Proxy {
                upstream: upstream(node.config.listen.peer).await,
                forge: false,
                hold: hold.clone(),
                chunks_served: honest_served.clone(),
            })
            .await,
        );
    }
    let mut observer = extra_node(dir.path(), &nodes[0], "observer");
    observer.config.state_sync.min_distance = 1;
    observer.config.state_sync.parallel_chunks = 2;
    observer.config.state_sync.peers = vec![forger, honest[0].clone(), honest[1].clone()];
    // A watchdog far shorter than the sync: it must not count the loops
    // that have not started yet as stuck.
    observer.config.health.loop_timeout_s = 1;
    observer.config.health.watchdog_s = 1;
    std::fs::write(&observer.config_path, observer.config.to_toml()).expect("write config");

    // Part-way through the chunks the honest peers hold their answers and
    // the observer is killed.
    let mut child = spawn_node_process(&observer);
    eventually(Duration::from_secs(120), || {
        let served = honest_served.load(Ordering::SeqCst);
        async move { (served >= 10).then_some(()) }
    })
    .await;
    hold_tx.send(true).expect("hold");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().expect("child status").is_none(),
        "the syncing node exited on its own\n{}",
        log_tail(&observer, 30)
    );
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let log = std::fs::read_to_string(observer.dir.join("node.log")).unwrap_or_default();
    assert!(
        log.contains("state sync started"),
        "{}",
        log_tail(&observer, 30)
    );
    assert!(
        !log.contains("state sync complete"),
        "the sync finished before the kill\n{}",
        log_tail(&observer, 30)
    );
    assert!(
        log.contains("forged state chunk"),
        "the forger was not caught\n{}",
        log_tail(&observer, 30)
    );

    // Started again: it resumes, and finishes.
    hold_tx.send(false).expect("release");
    let _child = spawn_node_process(&observer);
    let mut synced = connect_retry(&observer.endpoint(), Duration::from_secs(120)).await;
    let s = status(&mut synced).await;
    let log = std::fs::read_to_string(observer.dir.join("node.log")).unwrap_or_default();
    assert!(
        log.contains("resuming the state sync"),
        "{}",
        log_tail(&observer, 30)
    );
    assert!(
        log.contains("state sync complete"),
        "{}",
        log_tail(&observer, 30)
    );
    assert!(s.observer);
    assert!(s.lowest_full_block > checkpoint.min(committed_at), "{s:?}");
    let base = s.lowest_full_block - 1;
    eprintln!(
        "synced at {base} (checkpoint seen {checkpoint}); forger served {}, honest peers {}",
        forger_served.load(Ordering::SeqCst),
        honest_served.load(Ordering::SeqCst)
    );

    // Then it follows new blocks (an observer trails by up to a
    // checkpoint interval) and agrees block for block.
    let mut extra = 0;
    let target = eventually(Duration::from_secs(120), || {
        extra += 1;
        let tx = signed(&key, nonce + 10 + extra, put(format!("after-{extra}"), "y"));
        let mut c = clients[0].clone();
        async move {
            submit_batch(&mut c, vec![tx]).await;
            let s = try_status(&mut c).await?;
            (s.stable_checkpoint > base + 10).then_some(s.stable_checkpoint)
        }
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while try_status(&mut synced).await.map_or(0, |s| s.height) < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the synced observer does not follow the chain to {target}\n{}",
            log_tail(&observer, 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_height(&clients[3], target, Duration::from_secs(120)).await;
    let ours = block_at(&mut synced, target).await;
    let theirs = block_at(&mut clients[3], target).await;
    assert_eq!(ours.hash, theirs.hash, "block {target}");

    // The same state: every key as a validator has it (nothing writes
    // them any more).
    for k in (0..KEYS).step_by(97) {
        let key = format!("key-{k:06}").into_bytes();
        let ours = get_key(&mut synced, &key).await;
        let theirs = get_key(&mut clients[3], &key).await;
        assert_eq!(
            (ours.found, &ours.value, ours.version.clone()),
            (theirs.found, &theirs.value, theirs.version.clone()),
            "key {k}"
        );
    }
    // Below the sync point it holds headers and ids, not blocks.
    let below = synced
        .inner
        .get_block(proto::GetBlockRequest {
            selector: Some(proto::get_block_request::Selector::Height(1)),
        })
        .await
        .expect_err("no block bodies below the sync point");
    assert_eq!(below.code(), tonic::Code::FailedPrecondition, "{below:?}");
    let early = get_tx(&mut synced, first_tx.expect("a first tx").0.to_vec())
        .await
        .expect_err("its body is not held");
    assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early:?}");
    assert!(early.message().contains("state sync"), "{early:?}");
    let history = synced
        .inner
        .get_history(proto::GetHistoryRequest {
            key: b"key-000007".to_vec(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    // History starts with the version the key had at the sync point (its
    // transaction id and block time verified, the client's time unknown);
    // versions written after it follow as on any node.
    let first = history.entries.first().expect("a version");
    assert!(
        first.height <= base && first.timestamp_ms == 0,
        "{history:?}"
    );
    assert!(first.block_timestamp_ms > 0, "{history:?}");
    assert!(
        history.entries[1..].iter().all(|e| e.height > base),
        "{history:?}"
    );
    assert_eq!(
        history.entries.last().map(|e| e.value.as_slice()),
        Some(&b"v2-7"[..])
    );
}
