//! Replica-to-replica transport over tonic. Each peer gets two outbound
//! streams on one HTTP/2 connection, so agreement never waits behind
//! client traffic: the consensus lane carries PBFT messages, the
//! transaction lane carries transactions forwarded to the primary (whose
//! admission, with its signature checks, back-pressures only that lane).
//! Each lane is fed from its own bounded queue that drops on overflow
//! (PBFT tolerates message loss; a dead peer must never block the sender)
//! and reconnects with exponential back-off. The server side decodes
//! inbound frames into the consensus task's queue.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kubeledger_pbft::{Message, ReplicaIndex, SignedMessage};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::codec;
use super::inbound::Inbound;
use crate::node_state::consensus_board::{PeerHealth, TxGossip};
use crate::node_state::{admission, NodeState};
use crate::proto::peer_client::PeerClient;
use crate::proto::peer_server::Peer;
use crate::proto::{
    CertifiedBlock, CheckpointProof, GetBlocksRequest, GetCheckpointRequest, GetHeadersRequest,
    GetStateChunkRequest, GetStateManifestRequest, HeaderWithTxIds, PeerAck, PeerFrame,
    SignedTransaction, StateChunk, StateManifest,
};
use kubeledger_protocol::wire::authentic;

/// Consensus messages queued per peer before new ones are dropped.
const CONSENSUS_QUEUE: usize = 4096;
/// Forwarded transaction batches queued per peer before new ones are dropped.
const TX_QUEUE: usize = 256;
/// Largest frame on a peer stream, both directions.
pub const MAX_FRAME_BYTES: usize = codec::MAX_MESSAGE_BYTES + 16 * 1024 * 1024;
/// A frame is sent once it holds this many bytes of queued items.
const FRAME_TARGET_BYTES: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Outbound {
    Consensus(Bytes),
    Txs(Vec<SignedTransaction>),
}

/// Which of a peer's two streams a link task drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Consensus,
    Transactions,
}

struct Link {
    consensus: mpsc::Sender<Outbound>,
    txs: mpsc::Sender<Outbound>,
}

/// The send side of every peer link, indexed by replica.
pub struct PeerLinks {
    links: Vec<Option<Link>>,
    /// Weak: the node state holds these links (no cycle keeps the ledger open).
    state: std::sync::Weak<NodeState>,
}

impl std::fmt::Debug for PeerLinks {
    // Not the node state: it refers back to these links.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLinks")
            .field("peers", &self.links.len())
            .finish()
    }
}

impl PeerLinks {
    /// Starts two link tasks (consensus, transactions) per other validator.
    pub fn start(
        state: Arc<NodeState>,
        me: ReplicaIndex,
        peers: &[Arc<PeerHealth>],
        stopping: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let mut links = Vec::with_capacity(peers.len());
        for (i, health) in peers.iter().enumerate() {
            if i as u32 == me {
                links.push(None);
                continue;
            }
            let (consensus, consensus_rx) = mpsc::channel(CONSENSUS_QUEUE);
            let (txs, txs_rx) = mpsc::channel(TX_QUEUE);
            for (lane, rx) in [
                (Lane::Consensus, consensus_rx),
                (Lane::Transactions, txs_rx),
            ] {
                tokio::spawn(run_link(
                    lane,
                    me,
                    health.clone(),
                    rx,
                    state.clone(),
                    stopping.clone(),
                ));
            }
            links.push(Some(Link { consensus, txs }));
        }
        Arc::new(Self {
            links,
            state: Arc::downgrade(&state),
        })
    }

    fn link(&self, to: ReplicaIndex) -> Option<&Link> {
        self.links.get(to as usize).and_then(Option::as_ref)
    }

    pub fn send(&self, to: ReplicaIndex, msg: Bytes) {
        let sent = self
            .link(to)
            .is_some_and(|l| l.consensus.try_send(Outbound::Consensus(msg)).is_ok());
        if let Some(state) = self.state.upgrade() {
            state
                .metrics
                .consensus_message(if sent { "sent" } else { "dropped" }, 1);
        }
    }

    pub fn broadcast(&self, msg: Bytes) {
        for to in 0..self.links.len() as u32 {
            if self.links[to as usize].is_some() {
                self.send(to, msg.clone());
            }
        }
    }

    pub fn forward_txs(&self, to: ReplicaIndex, txs: Vec<SignedTransaction>) {
        let queued = self
            .link(to)
            .is_some_and(|l| l.txs.try_send(Outbound::Txs(txs)).is_ok());
        if !queued {
            tracing::debug!(
                to,
                "transaction queue full; the peer verifies these when it sees them proposed"
            );
        }
    }
}

impl TxGossip for PeerLinks {
    /// Sends transactions to every peer.
    fn gossip_txs(&self, txs: Vec<SignedTransaction>) {
        let peers: Vec<ReplicaIndex> = (0..self.links.len() as u32)
            .filter(|i| self.links[*i as usize].is_some())
            .collect();
        if let Some((last, rest)) = peers.split_last() {
            for to in rest {
                self.forward_txs(*to, txs.clone());
            }
            self.forward_txs(*last, txs);
        }
    }
}

async fn run_link(
    lane: Lane,
    me: ReplicaIndex,
    health: Arc<PeerHealth>,
    mut queue: mpsc::Receiver<Outbound>,
    state: Arc<NodeState>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut carry: Option<Outbound> = None;
    loop {
        if *stopping.borrow() {
            return;
        }
        let endpoint = match tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            health.address
        )) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10)),
            Err(e) => {
                tracing::error!(peer = %health.name, address = %health.address, error = %e, "invalid peer address");
                return;
            }
        };
        let channel = tokio::select! {
            c = endpoint.connect() => c,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer = %health.name, error = %e, ?backoff, "peer unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(MAX_FRAME_BYTES)
            .max_decoding_message_size(MAX_FRAME_BYTES);
        let (frames, frames_rx) = mpsc::channel::<PeerFrame>(16);
        let mut call =
            tokio::spawn(async move { client.messages(ReceiverStream::new(frames_rx)).await });
        let counts = lane == Lane::Consensus;
        if counts {
            health.connected.store(true, Ordering::Relaxed);
            state.metrics.peers_connected.inc();
            tracing::info!(peer = %health.name, "peer stream open");
        }
        backoff = BACKOFF_MIN;
        loop {
            let first = match carry.take() {
                Some(item) => Some(item),
                None => tokio::select! {
                    item = queue.recv() => item,
                    _ = &mut call => break,
                    _ = stopping.wait_for(|s| *s) => None,
                },
            };
            let Some(first) = first else {
                if counts {
                    health.connected.store(false, Ordering::Relaxed);
                    state.metrics.peers_connected.dec();
                }
                return;
            };
            let mut frame = PeerFrame {
                from: me,
                consensus: Vec::new(),
                txs: Vec::new(),
            };
            let mut size = add(&mut frame, first);
            while size < FRAME_TARGET_BYTES {
                match queue.try_recv() {
                    Ok(item) => size += add(&mut frame, item),
                    Err(_) => break,
                }
            }
            if frames.send(frame).await.is_err() {
                break;
            }
        }
        if counts {
            health.connected.store(false, Ordering::Relaxed);
            state.metrics.peers_connected.dec();
        }
        tracing::info!(peer = %health.name, ?lane, "peer stream closed; reconnecting");
        call.abort();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn add(frame: &mut PeerFrame, item: Outbound) -> usize {
    match item {
        Outbound::Consensus(b) => {
            let n = b.len();
            frame.consensus.push(b);
            n
        }
        Outbound::Txs(txs) => {
            let n = txs.iter().map(|t| t.body.len() + 100).sum();
            frame.txs.extend(txs);
            n
        }
    }
}

/// A stream that delivered more messages failing their signature check than
/// this is closed: the sender pays for the next connection, not the node for
/// more checks. (Counting passes against failures would let a replayer of
/// genuine messages, cheap to recheck, keep a stream of forgeries open.) An
/// honest peer only sends such messages around a validator-set switch, and
/// then reconnects.
const MAX_UNAUTHENTICATED_PER_STREAM: u64 = 64;

/// The `kubeledger.v1.Peer` service.
#[derive(Debug, Clone)]
pub struct PeerService {
    state: Arc<NodeState>,
    inbound: Arc<Inbound>,
    /// Most blocks one `GetBlocks` response streams.
    max_blocks_per_response: u64,
    /// The state-sync manifest this node serves.
    manifests: Arc<crate::state_sync::serve::ManifestCache>,
}

impl PeerService {
    pub fn new(
        state: Arc<NodeState>,
        inbound: Arc<Inbound>,
        serving: &crate::config::PeerConfig,
        state_sync: &crate::config::StateSyncConfig,
    ) -> Self {
        Self {
            state,
            inbound,
            max_blocks_per_response: serving.max_blocks_per_response.max(1),
            manifests: Arc::new(crate::state_sync::serve::ManifestCache::new(state_sync)),
        }
    }
}

/// The height a consensus message shows its signer has reached.
pub(crate) fn message_height(m: &SignedMessage) -> Option<u64> {
    match &m.message {
        Message::PrePrepare(pp) => Some(pp.seq),
        Message::Prepare(v) | Message::Commit(v) => Some(v.seq),
        Message::Checkpoint(c) => Some(c.seq),
        Message::ViewChange(vc) => Some(vc.last_committed),
        _ => None,
    }
}

type BlockStream = Pin<Box<dyn Stream<Item = Result<CertifiedBlock, Status>> + Send>>;
type HeaderStream = Pin<Box<dyn Stream<Item = Result<HeaderWithTxIds, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    async fn messages(
        &self,
        request: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<PeerAck>, Status> {
        let mut frames = request.into_inner();
        let mut unauthenticated = 0u64;
        // A peer's stream stays open as long as both nodes run: on
        // shutdown it ends here, or the server's graceful stop would wait
        // for it forever.
        let mut stopping = self.state.stopping();
        loop {
            let frame = tokio::select! {
                frame = frames.next() => frame,
                _ = stopping.wait_for(|s| *s) => None,
            };
            let Some(frame) = frame else { break };
            let frame = frame?;
            // The validator set can change between frames (epochs).
            let epoch = self.state.consensus.epoch();
            let n = epoch.validators.len() as u32;
            if frame.from >= n {
                return Err(Status::invalid_argument(format!(
                    "replica index {} is not in the validator set of {n}",
                    frame.from
                )));
            }
            let (Some(_), Some(vset)) = (epoch.me, epoch.vset.as_ref()) else {
                // An observer orders nothing: consensus traffic is not for it.
                continue;
            };
            let mut received = 0;
            for bytes in &frame.consensus {
                let msg = match codec::decode_message(bytes) {
                    Ok(msg) => msg,
                    Err(e) => {
                        unauthenticated += 1;
                        self.state.metrics.consensus_message("undecodable", 1);
                        tracing::debug!(from = frame.from, error = %e, "undecodable consensus message");
                        continue;
                    }
                };
                // Nothing a message claims is believed before this check;
                // the peer's height is raised by the consensus task.
                if !authentic(vset, frame.from, &msg) {
                    unauthenticated += 1;
                    self.state.metrics.consensus_message("unauthenticated", 1);
                    continue;
                }
                received += 1;
                if !self.inbound.push(frame.from, msg) {
                    self.state.metrics.consensus_message("dropped", 1);
                }
            }
            self.state.metrics.consensus_message("received", received);
            if unauthenticated > MAX_UNAUTHENTICATED_PER_STREAM {
                tracing::warn!(
                    from = frame.from,
                    unauthenticated,
                    "closing a peer stream of messages that fail their signature check"
                );
                return Err(Status::permission_denied(format!(
                    "{unauthenticated} consensus messages on this stream failed their signature \
                     check (claimed sender replica {}); closing it",
                    frame.from
                )));
            }
            if !frame.txs.is_empty() {
                admit_forwarded(&self.state, frame.txs).await;
            }
        }
        Ok(Response::new(PeerAck {}))
    }

    type GetBlocksStream = BlockStream;

    async fn get_blocks(
        &self,
        request: Request<GetBlocksRequest>,
    ) -> Result<Response<Self::GetBlocksStream>, Status> {
        let r = request.into_inner();
        let from = r.from_height.max(1);
        let to = r
            .to_height
            .min(self.state.ledger.tip().height)
            .min(from.saturating_add(self.max_blocks_per_response - 1));
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for height in from..=to {
                let l = state.ledger.clone();
                let item = state
                    .reads
                    .run("certified block read", move || {
                        let block = l.block_by_height(height)?;
                        let cert = l.certificate(height)?;
                        Ok(block.map(|(b, _)| CertifiedBlock {
                            block: Some(b),
                            certificate: cert.unwrap_or_default(),
                        }))
                    })
                    .await;
                let item = match item {
                    Ok(Some(b)) => Ok(b),
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<CheckpointProof>, Status> {
        let from = request.into_inner().epoch_proofs_from;
        let mut answer = self
            .state
            .consensus
            .stable()
            .map(|cp| super::epoch::to_proto(&cp))
            .unwrap_or_default();
        if from > 0 {
            let ledger = self.state.ledger.clone();
            // A storage read like any other: on the blocking pool, within
            // the servers' shared bound on reads in progress.
            answer.epoch_proofs = self
                .state
                .reads
                .run("epoch proofs", move || {
                    Ok(super::epoch::proofs_from(&ledger, from))
                })
                .await?
                .map_err(|e| Status::internal(format!("epoch proofs from {from}: {e}")))?;
        }
        Ok(Response::new(answer))
    }

    async fn get_state_manifest(
        &self,
        _request: Request<GetStateManifestRequest>,
    ) -> Result<Response<StateManifest>, Status> {
        let manifest = self
            .manifests
            .get(&self.state.ledger, self.state.consensus.stable())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new((*manifest).clone()))
    }

    async fn get_state_chunk(
        &self,
        request: Request<GetStateChunkRequest>,
    ) -> Result<Response<StateChunk>, Status> {
        let r = request.into_inner();
        let ledger = self.state.ledger.clone();
        let chunk = self
            .state
            .reads
            .run("state chunk read", move || {
                Ok(crate::state_sync::serve::chunk(
                    &ledger, r.height, &r.start, &r.end,
                ))
            })
            .await?
            .map_err(|e| e.to_status())?;
        Ok(Response::new(chunk))
    }

    type GetHeadersStream = HeaderStream;

    async fn get_headers(
        &self,
        request: Request<GetHeadersRequest>,
    ) -> Result<Response<Self::GetHeadersStream>, Status> {
        let r = request.into_inner();
        let from = r.from_height.min(self.state.ledger.tip().height);
        let down_to = r
            .down_to
            .max(1)
            .max(from.saturating_sub(self.max_blocks_per_response - 1));
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut height = from;
            while height >= down_to && height > 0 {
                let l = state.ledger.clone();
                let item = state
                    .reads
                    .run("header read", move || {
                        Ok(crate::state_sync::serve::header_with_ids(&l, height))
                    })
                    .await
                    .and_then(|r| r.map_err(|e| e.to_status()));
                let item = match item {
                    Ok(Some(h)) => Ok(h),
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                if tx.send(item).await.is_err() {
                    break;
                }
                height -= 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Admits transactions a peer gossiped; ones already pending or committed
/// here are skipped before their signatures are checked again.
async fn admit_forwarded(state: &Arc<NodeState>, txs: Vec<SignedTransaction>) {
    let ids: Vec<_> = txs.iter().map(crate::tx::envelope::tx_id).collect();
    let pending = state.mempool.contains_all(&ids);
    // Gossip often arrives after the block that carries it committed.
    let committed = state
        .ledger
        .contains_txs(&ids)
        .unwrap_or_else(|_| vec![false; ids.len()]);
    let fresh: Vec<SignedTransaction> = txs
        .into_iter()
        .zip(pending.into_iter().zip(committed))
        .filter(|(_, (p, c))| !p && !c)
        .map(|(t, _)| t)
        .collect();
    if !fresh.is_empty() {
        let _ = admission::admit(state, fresh, admission::Origin::Peer).await;
    }
}
