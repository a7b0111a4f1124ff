//! Joining by state sync: pick a verified manifest, fetch the headers down
//! to genesis, then the state's chunks from several peers at once, each
//! checked on arrival; every batch is written with the progress it makes,
//! so a node killed part-way resumes where it stopped.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::manifest::{self, ChunkSpec, VerifiedManifest};
use crate::config::StateSyncConfig;
use crate::ledger::state_at::VersionedEntry;
use crate::ledger::synced_base::SyncProgress;
use crate::ledger::{Ledger, LedgerError};
use crate::proto::peer_client::PeerClient;
use crate::proto::{
    GetCheckpointRequest, GetHeadersRequest, GetStateChunkRequest, GetStateManifestRequest,
    NodeInfo, StateManifest,
};

const MAX_MESSAGE: usize = 96 << 20;
/// Headers, and transaction ids with them, written per batch at most.
const HEADER_BATCH: usize = 2_000;
const HEADER_BATCH_TXS: usize = 100_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const ITEM_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the stored state-sync manifest no longer verifies: {0}")]
    StoredManifest(String),
    #[error("the headers end at {found}, not at this chain's genesis block {expected}")]
    OtherGenesis { expected: String, found: String },
    #[error("no peer serves the state: {0}")]
    NoPeer(String),
    #[error("the manifest's chunks do not match what honest peers serve: {0}")]
    ManifestRefuted(String),
    #[error("the node is stopping")]
    Stopping,
    #[error("state-sync task failed: {0}")]
    Task(String),
}

/// What a state sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not needed (a ledger with blocks, sync off, the chain close enough
    /// or no manifest to be had): the node replays blocks as usual.
    NotNeeded(String),
    Synced {
        height: u64,
        entries: u64,
        /// Bytes of state, headers and transaction ids received.
        bytes: u64,
        elapsed: Duration,
    },
}

struct Peer {
    address: String,
    client: Option<PeerClient<Channel>>,
}

async fn client(peer: &mut Peer) -> Result<PeerClient<Channel>, String> {
    if let Some(c) = &peer.client {
        return Ok(c.clone());
    }
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", peer.address))
        .map_err(|e| format!("bad peer address {}: {e}", peer.address))?
        .connect_timeout(Duration::from_secs(2));
    // A peer whose port is open but not serving yet never completes the
    // HTTP/2 handshake: bound it.
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| {
            format!(
                "no HTTP/2 handshake from {} within {CONNECT_TIMEOUT:?}",
                peer.address
            )
        })?
        .map_err(|e| format!("cannot reach {}: {e}", peer.address))?;
    let c = PeerClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    peer.client = Some(c.clone());
    Ok(c)
}

pub struct StateSync {
    ledger: Arc<Ledger>,
    genesis_validators: Vec<NodeInfo>,
    config: StateSyncConfig,
    peers: Vec<Peer>,
    stopping: watch::Receiver<bool>,
    /// Bytes received so far.
    received: u64,
}

impl StateSync {
    pub fn new(
        ledger: Arc<Ledger>,
        config: StateSyncConfig,
        peers: Vec<String>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let genesis_validators =
            crate::governance::genesis_config::genesis_validators(ledger.genesis());
        Self {
            ledger,
            genesis_validators,
            config,
            peers: peers
                .into_iter()
                .map(|address| Peer {
                    address,
                    client: None,
                })
                .collect(),
            stopping,
            received: 0,
        }
    }

    fn stopping(&self) -> Result<(), SyncError> {
        if *self.stopping.borrow() {
            Err(SyncError::Stopping)
        } else {
            Ok(())
        }
    }

    /// Runs (or resumes) a state sync when one is called for.
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn run(mut self) -> Result<Outcome, SyncError> {
        let started = Instant::now();
        // Peers whose manifest turned out wrong: not asked for one again.
        let mut distrusted: HashSet<String> = HashSet::new();
        let (manifest, progress) = loop {
            let (manifest, mut progress) = match self.ledger.state_sync_progress()? {
                Some((progress, bytes)) => {
                    let m = StateManifest::decode(bytes.as_slice())
                        .map_err(|e| SyncError::StoredManifest(e.to_string()))?;
                    let v = manifest::verify(&self.genesis_validators, &m)
                        .map_err(|e| SyncError::StoredManifest(e.to_string()))?;
                    tracing::info!(
                        height = v.height,
                        headers_low = progress.headers_low,
                        "resuming the state sync a previous run began"
                    );
                    (v, progress)
                }
                None => match self.start(&distrusted).await? {
                    Ok(started) => started,
                    Err(why) => return Ok(Outcome::NotNeeded(why)),
                },
            };
            let phase = Instant::now();
            self.headers(&mut progress).await?;
            tracing::info!(
                ms = phase.elapsed().as_millis() as u64,
                txs = progress.txs,
                "state-sync headers and transaction ids stored"
            );
            let phase = Instant::now();
            let chunks = self.chunks(&manifest, &mut progress).await;
            tracing::info!(
                ms = phase.elapsed().as_millis() as u64,
                ok = chunks.is_ok(),
                "state-sync chunks done"
            );
            match chunks {
                Ok(()) => break (manifest, progress),
                Err(SyncError::ManifestRefuted(why)) => {
                    tracing::warn!(source = %progress.source, reason = %why, "the state-sync manifest's chunks cannot be had from honest peers; starting over with another peer's manifest");
                    distrusted.insert(progress.source.clone());
                    let ledger = self.ledger.clone();
                    tokio::task::spawn_blocking(move || ledger.abandon_state_sync())
                        .await
                        .map_err(|e| SyncError::Task(e.to_string()))??;
                }
                Err(e) => return Err(e),
            }
        };
        let ledger = self.ledger.clone();
        let (header, acc, txs) = (
            manifest.header.clone(),
            manifest.accumulator.clone(),
            progress.txs,
        );
        let ends = manifest.epoch_ends.clone();
        tokio::task::spawn_blocking(move || -> Result<(), LedgerError> {
            for (cp, successor) in &ends {
                crate::consensus::epoch::store_proof(&ledger, cp)?;
                super::serve::store_successor(&ledger, cp.seq, successor)?;
            }
            ledger.finish_state_sync(&header, &acc, txs)
        })
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
        let outcome = Outcome::Synced {
            height: manifest.height,
            entries: manifest.state_entries(),
            bytes: self.received,
            elapsed: started.elapsed(),
        };
        tracing::info!(?outcome, "state sync complete");
        Ok(outcome)
    }

    /// Starts a new sync from the best manifest, or says why none is called for.
    async fn start(
        &mut self,
        distrusted: &HashSet<String>,
    ) -> Result<Result<(VerifiedManifest, SyncProgress), String>, SyncError> {
        if !self.config.enabled {
            return Ok(Err("state sync is off".into()));
        }
        let tip = self.ledger.tip().height;
        if tip > 0 {
            return Ok(Err(format!("the ledger holds blocks up to {tip}")));
        }
        let Some((v, raw, source)) = self.best_manifest(distrusted).await? else {
            return Ok(Err("no peer served a manifest that verifies".into()));
        };
        if v.height < self.config.min_distance {
            return Ok(Err(format!(
                "the chain is at checkpoint {}, closer than the {} blocks state sync is for",
                v.height, self.config.min_distance
            )));
        }
        let progress = SyncProgress {
            height: v.height,
            headers_low: v.height + 1,
            next_hash: hex::encode(v.block_hash),
            txs: 0,
            chunks_done: "0".repeat(v.chunks.len()),
            source,
        };
        self.ledger.begin_state_sync(&progress, &raw)?;
        tracing::info!(
            height = v.height,
            keys = v.state_entries(),
            bytes = v.state_bytes(),
            chunks = v.chunks.len(),
            epochs = v.epoch_ends.len(),
            source = %progress.source,
            "state sync started"
        );
        Ok(Ok((v, progress)))
    }

    /// The highest verified manifest to be had. Every peer is asked for
    /// its latest stable checkpoint at once (cheap); then manifests, which
    /// cost a scan of the whole state to build, are asked of one peer at a
    /// time, highest claimed checkpoint first, until one verifies. A claim
    /// is only an order to ask in: a peer that claims too much and serves
    /// nothing that verifies just costs one request.
    async fn best_manifest(
        &mut self,
        distrusted: &HashSet<String>,
    ) -> Result<Option<(VerifiedManifest, Vec<u8>, String)>, SyncError> {
        self.stopping()?;
        let asks = self
            .peers
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| !distrusted.contains(&p.address))
            .map(|(i, peer)| async move {
                let address = peer.address.clone();
                let mut c = client(peer).await?;
                match tokio::time::timeout(
                    ITEM_TIMEOUT,
                    c.get_checkpoint(GetCheckpointRequest {
                        epoch_proofs_from: 0,
                    }),
                )
                .await
                {
                    Ok(Ok(r)) => Ok((i, r.into_inner().seq)),
                    Ok(Err(status)) => Err(format!("{address}: {}", status.message())),
                    Err(_) => Err(format!("{address}: no checkpoint within {ITEM_TIMEOUT:?}")),
                }
            });
        let mut failures = Vec::new();
        let mut claims = Vec::new();
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok((i, seq)) if seq > 0 => claims.push((seq, i)),
                Ok((i, _)) => failures.push(format!(
                    "{}: no stable checkpoint yet",
                    self.peers[i].address
                )),
                Err(e) => failures.push(e),
            }
        }
        claims.sort_by(|a, b| b.cmp(a));
        for (_, i) in claims {
            self.stopping()?;
            let peer = &mut self.peers[i];
            let address = peer.address.clone();
            let answer = match client(peer).await {
                Ok(mut c) => tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    c.get_state_manifest(GetStateManifestRequest {}),
                )
                .await
                .map_err(|_| format!("{address}: no manifest within {REQUEST_TIMEOUT:?}"))
                .and_then(|r| r.map_err(|status| format!("{address}: {}", status.message()))),
                Err(e) => Err(e),
            };
            let m = match answer {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            let raw = m.encode_to_vec();
            self.received += raw.len() as u64;
            match manifest::verify(&self.genesis_validators, &m) {
                Ok(v) => return Ok(Some((v, raw, address))),
                Err(e) => {
                    tracing::warn!(peer = %address, error = %e, "peer served a state manifest that does not verify");
                    failures.push(format!("{address}: {e}"));
                }
            }
        }
        tracing::info!(failures = ?failures, "no state-sync manifest");
        Ok(None)
    }

    /// Headers from the sync point down to genesis.
    async fn headers(&mut self, progress: &mut SyncProgress) -> Result<(), SyncError> {
        let mut turn = 0usize;
        let mut failures = 0usize;
        while progress.headers_low > 1 {
            self.stopping()?;
            if failures > 0 && failures % self.peers.len().max(1) == 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if failures > 20 * self.peers.len().max(1) {
                return Err(SyncError::NoPeer("no peer serves the headers".into()));
            }
            let i = turn % self.peers.len().max(1);
            turn += 1;
            let Some(peer) = self.peers.get_mut(i) else {
                return Err(SyncError::NoPeer("no peers configured".into()));
            };
            let address = peer.address.clone();
            match self.headers_from(i, progress).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(peer = %address, error = %e, below = progress.headers_low, "fetching headers failed; trying another peer");
                }
            }
        }
        let genesis = self
            .ledger
            .header(0)?
            .map(|h| crate::block::header_hash(&h))
            .unwrap_or_default();
        if progress.next_hash != hex::encode(genesis) {
            return Err(SyncError::OtherGenesis {
                expected: hex::encode(genesis),
                found: progress.next_hash.clone(),
            });
        }
        Ok(())
    }

    async fn headers_from(
        &mut self,
        peer: usize,
        progress: &mut SyncProgress,
    ) -> Result<(), String> {
        let mut c = client(&mut self.peers[peer]).await?;
        let request = GetHeadersRequest {
            from_height: progress.headers_low - 1,
            down_to: 1,
        };
        let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, c.get_headers(request))
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let mut batch = Vec::with_capacity(HEADER_BATCH);
        let mut batch_txs = 0usize;
        let mut next = progress.clone();
        let mut ended = false;
        while next.headers_low > 1 {
            let item = match tokio::time::timeout(ITEM_TIMEOUT, stream.next()).await {
                Err(_) => Err("stalled".to_string()),
                Ok(None) => {
                    ended = true;
                    Ok(None)
                }
                Ok(Some(Err(s))) => Err(s.message().to_string()),
                Ok(Some(Ok(h))) => Ok(Some(h)),
            };
            let item = match item {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    self.flush_headers(&mut batch, &next, progress).await?;
                    return Err(e);
                }
            };
            self.received += item.encoded_len() as u64;
            let expected = hash32(&next.next_hash);
            let (header, ids) = match manifest::verify_header(next.headers_low - 1, &expected, item)
            {
                Ok(v) => v,
                Err(e) => {
                    self.flush_headers(&mut batch, &next, progress).await?;
                    return Err(format!(
                        "served a header that is not on the certified chain: {e}"
                    ));
                }
            };
            next.headers_low = header.height;
            next.next_hash = hex::encode(&header.prev_hash);
            next.txs += u64::from(header.tx_count);
            batch_txs += ids.len();
            batch.push((header, ids));
            if batch.len() >= HEADER_BATCH || batch_txs >= HEADER_BATCH_TXS {
                batch_txs = 0;
                self.flush_headers(&mut batch, &next, progress).await?;
            }
        }
        self.flush_headers(&mut batch, &next, progress).await?;
        if ended && progress.headers_low > 1 {
            // A peer serves a bounded number per request: ask again.
            return Ok(());
        }
        Ok(())
    }

    async fn flush_headers(
        &self,
        batch: &mut Vec<(crate::proto::BlockHeader, Vec<crate::tx::TxId>)>,
        next: &SyncProgress,
        progress: &mut SyncProgress,
    ) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let ledger = self.ledger.clone();
        let (headers, p) = (std::mem::take(batch), next.clone());
        tokio::task::spawn_blocking(move || ledger.write_synced_headers(&headers, &p))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("storing headers: {e}"))?;
        *progress = next.clone();
        Ok(())
    }

    /// The chunks not stored yet, several at a time from different peers;
    /// a peer that serves a chunk that does not check out is not asked again.
    async fn chunks(
        &mut self,
        m: &VerifiedManifest,
        progress: &mut SyncProgress,
    ) -> Result<(), SyncError> {
        let mut pending: VecDeque<usize> = (0..m.chunks.len())
            .filter(|i| !progress.chunk_done(*i))
            .collect();
        let mut liars: HashSet<usize> = HashSet::new();
        // Per chunk, the peers whose answer for it did not check out: when
        // two disagree with the manifest, the manifest is the liar.
        let mut refused_by: std::collections::HashMap<usize, HashSet<usize>> = Default::default();
        let mut in_flight = FuturesUnordered::new();
        let mut turn = 0usize;
        let mut failures = 0usize;
        let parallel = self.config.parallel_chunks.max(1);
        let n = self.peers.len();
        while !pending.is_empty() || !in_flight.is_empty() {
            self.stopping()?;
            while in_flight.len() < parallel && !pending.is_empty() {
                let honest: Vec<usize> = (0..n).filter(|p| !liars.contains(p)).collect();
                if honest.is_empty() {
                    return Err(SyncError::NoPeer(
                        "every peer served a forged state chunk".into(),
                    ));
                }
                let peer = honest[turn % honest.len()];
                turn += 1;
                let index = pending.pop_front().expect("checked non-empty");
                let c = match client(&mut self.peers[peer]).await {
                    Ok(c) => c,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, chunk = index, "cannot reach peer for a state chunk");
                        pending.push_back(index);
                        if failures % n.max(1) == 0 {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        continue;
                    }
                };
                let spec = m.chunks[index].clone();
                in_flight.push(fetch_chunk(c, peer, index, spec, m.height));
            }
            let Some((peer, index, result)) = in_flight.next().await else {
                continue;
            };
            let address = self.peers[peer].address.clone();
            match result {
                Ok((entries, bytes)) => {
                    self.received += bytes;
                    let ledger = self.ledger.clone();
                    let mut next = progress.clone();
                    next.mark_chunk(index);
                    let written = tokio::task::spawn_blocking(move || {
                        store_chunk(&ledger, entries, &next).map(|()| next)
                    })
                    .await
                    .map_err(|e| SyncError::Task(e.to_string()))?;
                    match written {
                        Ok(next) => {
                            *progress = next;
                            failures = 0;
                            let stored = (0..m.chunks.len())
                                .filter(|i| progress.chunk_done(*i))
                                .count();
                            if stored % (m.chunks.len() / 10).max(1) == 0 {
                                tracing::info!(stored, of = m.chunks.len(), "state chunks stored");
                            }
                        }
                        Err(StoreChunkError::Ledger(e)) => return Err(e.into()),
                        Err(StoreChunkError::Forged(why)) => {
                            tracing::warn!(peer = %address, chunk = index, reason = %why, "peer served a forged state chunk; asking another");
                            liars.insert(peer);
                            pending.push_back(index);
                        }
                    }
                }
                Err(FetchError::Forged(why)) => {
                    let refusals = refused_by.entry(index).or_default();
                    refusals.insert(peer);
                    if refusals.len() >= 2 {
                        return Err(SyncError::ManifestRefuted(format!(
                            "chunk {index} as {} peers serve it: {why}",
                            refusals.len()
                        )));
                    }
                    tracing::warn!(peer = %address, chunk = index, reason = %why, "peer served a forged state chunk; asking another");
                    liars.insert(peer);
                    pending.push_back(index);
                }
                Err(FetchError::Failed(why)) => {
                    failures += 1;
                    tracing::warn!(peer = %address, chunk = index, reason = %why, "fetching a state chunk failed; trying again");
                    pending.push_back(index);
                    if failures > 50 * n.max(1) {
                        return Err(SyncError::NoPeer(format!(
                            "state chunks keep failing: {why}"
                        )));
                    }
                    if failures % n.max(1) == 0 {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        Ok(())
    }
}

fn hash32(hex_hash: &str) -> [u8; 32] {
    hex::decode(hex_hash)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .unwrap_or([0; 32])
}

enum FetchError {
    /// The peer answered with a chunk that does not check out.
    Forged(String),
    /// No answer, or an error.
    Failed(String),
}

async fn fetch_chunk(
    mut c: PeerClient<Channel>,
    peer: usize,
    index: usize,
    spec: ChunkSpec,
    height: u64,
) -> (usize, usize, Result<(Vec<VersionedEntry>, u64), FetchError>) {
    let request = GetStateChunkRequest {
        height,
        start: spec.start.clone(),
        end: spec.end.clone(),
    };
    let result = match tokio::time::timeout(REQUEST_TIMEOUT, c.get_state_chunk(request)).await {
        Err(_) => Err(FetchError::Failed("no answer".into())),
        Ok(Err(status)) => Err(FetchError::Failed(status.message().to_string())),
        Ok(Ok(r)) => {
            let chunk = r.into_inner();
            let bytes = chunk.encoded_len() as u64;
            // Hashing every entry is CPU work: off the async threads.
            tokio::task::spawn_blocking(move || manifest::verify_chunk(&spec, height, chunk))
                .await
                .map_err(|e| FetchError::Failed(e.to_string()))
                .and_then(|r| r.map_err(|e| FetchError::Forged(e.to_string())))
                .map(|entries| (entries, bytes))
        }
    };
    (peer, index, result)
}

enum StoreChunkError {
    Ledger(LedgerError),
    Forged(String),
}

/// Stores a chunk whose entries added up, once each entry's transaction id
/// is the one the verified headers put at its version.
fn store_chunk(
    ledger: &Ledger,
    entries: Vec<VersionedEntry>,
    progress: &SyncProgress,
) -> Result<(), StoreChunkError> {
    let ids: Vec<crate::tx::TxId> = entries.iter().map(|e| crate::tx::TxId(e.tx_id)).collect();
    let locations = ledger.tx_locations(&ids).map_err(StoreChunkError::Ledger)?;
    for (e, location) in entries.iter().zip(locations) {
        let matches = location.is_some_and(|l| l.height == e.height && l.index == e.index);
        if !matches {
            return Err(StoreChunkError::Forged(format!(
                "key {} names transaction {} at ({}, {}), which the chain does not hold there",
                hex::encode(&e.key[..e.key.len().min(16)]),
                hex::encode(&e.tx_id[..8]),
                e.height,
                e.index
            )));
        }
    }
    ledger
        .write_synced_entries(&entries, progress)
        .map_err(StoreChunkError::Ledger)
}
