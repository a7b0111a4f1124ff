//! Serving state sync: the manifest of the state at this node's latest
//! stable checkpoint (built once per checkpoint asked for, one build at a
//! time, and reused while it is recent), chunks of the state at any height
//! this node holds, and headers with transaction ids.

use std::sync::Arc;

use prost::Message as _;
use tokio::sync::Mutex;

use crate::config::StateSyncConfig;
use crate::consensus::epoch;
use crate::governance::validators::epoch_at;
use crate::ledger::state_at::{ChunkLimits, StateAtError};
use crate::ledger::{Ledger, LedgerError};
use crate::proto::{
    EpochSuccessor, HeaderWithTxIds, StateChunk, StateChunkInfo, StateEntry, StateManifest,
};
use kubeledger_pbft::StableCheckpoint;

/// A manifest is rebuilt once the latest stable checkpoint is this many
/// blocks past the one it describes (any height stays servable, so a node
/// part-way through an older manifest carries on).
pub const MANIFEST_REFRESH_BLOCKS: u64 = 1_000;

const SUCCESSOR_PREFIX: &[u8] = b"epoch-successor/";

fn successor_key(seq: u64) -> Vec<u8> {
    let mut k = SUCCESSOR_PREFIX.to_vec();
    k.extend_from_slice(format!("{seq:020}").as_bytes());
    k
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no stable checkpoint yet")]
    NoCheckpoint,
    #[error(transparent)]
    State(#[from] StateAtError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Epoch(#[from] epoch::EpochError),
    #[error("block {0}, the end of an epoch, is not held")]
    MissingEpochEnd(u64),
    #[error("building the manifest: {0}")]
    Task(String),
}

impl ServeError {
    pub fn to_status(&self) -> tonic::Status {
        match self {
            ServeError::NoCheckpoint
            | ServeError::State(StateAtError::BelowBase { .. })
            | ServeError::State(StateAtError::AboveTip { .. }) => {
                tonic::Status::failed_precondition(self.to_string())
            }
            ServeError::State(StateAtError::ChunkTooLarge) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            _ => tonic::Status::internal(self.to_string()),
        }
    }
}

/// Stores the successor of the epoch that ended at `seq` (a node that
/// joined by state sync cannot work it out from its own history).
pub fn store_successor(ledger: &Ledger, seq: u64, s: &EpochSuccessor) -> Result<(), LedgerError> {
    ledger.write_consensus(&[(successor_key(seq), s.encode_to_vec())], &[])
}

/// The header of the epoch's last block and the validators of the next
/// set, for the epoch that ended at `seq`.
fn successor(ledger: &Ledger, seq: u64) -> Result<EpochSuccessor, ServeError> {
    if let Some(bytes) = ledger.consensus_record(&successor_key(seq))? {
        if let Ok(s) = EpochSuccessor::decode(bytes.as_slice()) {
            return Ok(s);
        }
    }
    let header = ledger
        .header(seq)?
        .ok_or(ServeError::MissingEpochEnd(seq))?;
    let config = ledger.config_at(seq)?;
    let validators = epoch_at(&config, seq + 1).validators.to_vec();
    Ok(EpochSuccessor {
        header: Some(header),
        validators,
    })
}

/// Builds the manifest of the state at `cp` (blocking: it reads the whole state).
pub fn build_manifest(
    ledger: &Ledger,
    cp: &StableCheckpoint,
    limits: ChunkLimits,
) -> Result<StateManifest, ServeError> {
    let header = ledger.header(cp.seq)?.ok_or(StateAtError::AboveTip {
        height: cp.seq,
        tip: ledger.tip().height,
    })?;
    let (chunks, total) = ledger.plan_state_chunks(cp.seq, limits)?;
    let mut checkpoint = epoch::to_proto(cp);
    checkpoint.epoch_proofs = epoch::proofs_from(ledger, 1)?
        .into_iter()
        .filter(|p| p.seq <= cp.seq)
        .collect();
    let epochs = checkpoint
        .epoch_proofs
        .iter()
        .map(|p| successor(ledger, p.seq))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StateManifest {
        checkpoint: Some(checkpoint),
        header: Some(header),
        accumulator: total.to_bytes(),
        chunks: chunks
            .into_iter()
            .map(|c| StateChunkInfo {
                start: c.start,
                end: c.end,
                entries: c.entries,
                accumulator: c.accumulator.to_bytes(),
                bytes: c.bytes,
            })
            .collect(),
        epochs,
    })
}

/// The manifest this node serves, rebuilt as checkpoints advance.
#[derive(Debug)]
pub struct ManifestCache {
    limits: ChunkLimits,
    current: Mutex<Option<Arc<StateManifest>>>,
}

fn manifest_height(m: &StateManifest) -> u64 {
    m.checkpoint.as_ref().map(|c| c.seq).unwrap_or_default()
}

impl ManifestCache {
    pub fn new(config: &StateSyncConfig) -> Self {
        Self {
            limits: ChunkLimits {
                max_entries: config.chunk_entries,
                max_bytes: config.chunk_bytes,
            },
            current: Mutex::new(None),
        }
    }

    /// The manifest at the latest stable checkpoint `stable`, or a recent
    /// one already built.
    pub async fn get(
        &self,
        ledger: &Arc<Ledger>,
        stable: Option<StableCheckpoint>,
    ) -> Result<Arc<StateManifest>, ServeError> {
        let mut current = self.current.lock().await;
        let stable = stable.filter(|cp| cp.seq > 0);
        if let Some(m) = current.as_ref() {
            let fresh = stable
                .as_ref()
                .is_none_or(|cp| cp.seq < manifest_height(m) + MANIFEST_REFRESH_BLOCKS);
            if fresh {
                return Ok(m.clone());
            }
        }
        let cp = stable.ok_or(ServeError::NoCheckpoint)?;
        let (l, limits) = (ledger.clone(), self.limits);
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || build_manifest(&l, &cp, limits))
            .await
            .map_err(|e| ServeError::Task(e.to_string()))??;
        tracing::info!(
            height = manifest_height(&built),
            chunks = built.chunks.len(),
            ms = started.elapsed().as_millis() as u64,
            "state-sync manifest built"
        );
        let built = Arc::new(built);
        *current = Some(built.clone());
        Ok(built)
    }
}

/// A chunk of the state at `height`, as the wire carries it.
pub fn chunk(
    ledger: &Ledger,
    height: u64,
    start: &[u8],
    end: &[u8],
) -> Result<StateChunk, ServeError> {
    let entries = ledger.state_chunk(height, start, end)?;
    Ok(StateChunk {
        entries: entries
            .into_iter()
            .map(|e| StateEntry {
                key: e.key,
                value: e.value,
                height: e.height,
                index: e.index,
                tx_id: e.tx_id.to_vec(),
            })
            .collect(),
    })
}

/// The header and transaction ids of block `height`, from the block or,
/// below a state-sync point, from the stored headers.
pub fn header_with_ids(
    ledger: &Ledger,
    height: u64,
) -> Result<Option<HeaderWithTxIds>, ServeError> {
    if let Some((block, _)) = ledger.block_by_height(height)? {
        let ids = crate::block::verify::tx_ids(&block);
        let mut packed = Vec::with_capacity(ids.len() * 32);
        for id in ids {
            packed.extend_from_slice(&id.0);
        }
        return Ok(Some(HeaderWithTxIds {
            header: block.header,
            tx_ids: packed,
        }));
    }
    Ok(ledger.synced_header(height)?)
}
