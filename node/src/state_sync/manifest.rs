//! Checking a served state manifest before anything it lists is fetched,
//! and each chunk against it as it arrives. Pure: no I/O.
//!
//! Trust starts at the genesis validator set. Each epoch proof (a
//! certificate of the epoch's last block by that epoch's set) is verified
//! in turn; the certified block's header names the next set
//! (`next_validators_hash`), whose list the manifest carries. The
//! checkpoint is verified with the set of its epoch; its block's header
//! must hash to the certified block hash, the accumulator must hash to
//! that header's state root, and the chunks' accumulators must add up to
//! the accumulator. A chunk is then accepted only if its entries add up to
//! its own accumulator (LtHash is a multiset hash: no other set of entries
//! has the same sum), so a forged chunk is caught on its own, and another
//! peer asked for it.

use kubeledger_pbft::StableCheckpoint;

use crate::block::header_hash;
use crate::consensus::epoch;
use crate::governance::validators::validators_hash;
use crate::ledger::history;
use crate::ledger::state_at::{VersionedEntry, MAX_CHUNKS, MAX_CHUNK_BYTES, MAX_CHUNK_ENTRIES};
use crate::ledger::state_commitment::StateAccumulator;
use crate::proto::{BlockHeader, NodeInfo, StateChunk, StateManifest};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest has no {0}")]
    Missing(&'static str),
    #[error("the certificate of epoch end {seq} does not verify with the validators of its epoch")]
    BadEpochProof { seq: u64 },
    #[error("epoch proofs are not in increasing order at {seq}")]
    EpochOrder { seq: u64 },
    #[error("the header of epoch end {seq} is not the certified block")]
    EpochHeader { seq: u64 },
    #[error(
        "the header of epoch end {seq} names no next validator set, or another one than listed"
    )]
    NextValidators { seq: u64 },
    #[error("validator set of epoch {base}: {message}")]
    ValidatorSet { base: u64, message: String },
    #[error(
        "the checkpoint certificate at {seq} does not verify with the validators of its epoch"
    )]
    BadCheckpoint { seq: u64 },
    #[error("the header is not the certified block {seq}")]
    WrongHeader { seq: u64 },
    #[error("the state accumulator does not hash to the certified state root")]
    WrongAccumulator,
    #[error("the chunks do not add up to the state accumulator")]
    ChunksDoNotAddUp,
    #[error("chunk {index}: {message}")]
    BadChunkInfo { index: usize, message: String },
    #[error("{count} chunks; at most {MAX_CHUNKS} are accepted")]
    TooManyChunks { count: usize },
}

/// A chunk as the manifest lists it, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub entries: u32,
    pub bytes: u64,
    pub accumulator: StateAccumulator,
}

/// A manifest whose every claim checked out.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    pub height: u64,
    pub header: BlockHeader,
    pub block_hash: [u8; 32],
    pub accumulator: StateAccumulator,
    pub chunks: Vec<ChunkSpec>,
    /// The epoch proofs, verified, with the set each epoch's successor is.
    pub epoch_ends: Vec<(StableCheckpoint, crate::proto::EpochSuccessor)>,
    /// The certificate of the checkpoint.
    pub checkpoint: StableCheckpoint,
}

impl VerifiedManifest {
    pub fn state_entries(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.entries)).sum()
    }

    pub fn state_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.bytes).sum()
    }
}

fn vset(
    validators: &[NodeInfo],
    base: u64,
) -> Result<kubeledger_pbft::ValidatorSet, ManifestError> {
    epoch::validator_set(validators, base).map_err(|e| ManifestError::ValidatorSet {
        base,
        message: e.to_string(),
    })
}

/// Verifies `m` for a chain whose genesis validators are `genesis_validators`.
pub fn verify(
    genesis_validators: &[NodeInfo],
    m: &StateManifest,
) -> Result<VerifiedManifest, ManifestError> {
    let served = m
        .checkpoint
        .as_ref()
        .ok_or(ManifestError::Missing("checkpoint"))?;
    let header = m.header.clone().ok_or(ManifestError::Missing("header"))?;
    if m.chunks.len() > MAX_CHUNKS {
        return Err(ManifestError::TooManyChunks {
            count: m.chunks.len(),
        });
    }
    if served.epoch_proofs.len() != m.epochs.len() {
        return Err(ManifestError::Missing("successor of every epoch proof"));
    }
    // From the genesis set, epoch by epoch.
    let mut validators = genesis_validators.to_vec();
    let mut base = 0u64;
    let mut epoch_ends = Vec::with_capacity(m.epochs.len());
    for (proof, successor) in served.epoch_proofs.iter().zip(&m.epochs) {
        if proof.seq <= base || proof.seq > served.seq {
            return Err(ManifestError::EpochOrder { seq: proof.seq });
        }
        let cp = epoch::verify(&vset(&validators, base)?, proof)
            .ok_or(ManifestError::BadEpochProof { seq: proof.seq })?;
        let end = successor
            .header
            .as_ref()
            .ok_or(ManifestError::EpochHeader { seq: cp.seq })?;
        if end.height != cp.seq || header_hash(end) != cp.block_hash {
            return Err(ManifestError::EpochHeader { seq: cp.seq });
        }
        if end.next_validators_hash.is_empty()
            || end.next_validators_hash != validators_hash(&successor.validators)
        {
            return Err(ManifestError::NextValidators { seq: cp.seq });
        }
        validators = successor.validators.clone();
        base = cp.seq;
        epoch_ends.push((cp, successor.clone()));
    }
    let checkpoint = epoch::verify(&vset(&validators, base)?, served)
        .ok_or(ManifestError::BadCheckpoint { seq: served.seq })?;
    if header.height != checkpoint.seq || header_hash(&header) != checkpoint.block_hash {
        return Err(ManifestError::WrongHeader {
            seq: checkpoint.seq,
        });
    }
    let accumulator =
        StateAccumulator::from_bytes(&m.accumulator).ok_or(ManifestError::WrongAccumulator)?;
    if accumulator.root() != checkpoint.state_root
        || header.state_root.as_slice() != checkpoint.state_root
    {
        return Err(ManifestError::WrongAccumulator);
    }
    let mut sum = StateAccumulator::default();
    let mut chunks = Vec::with_capacity(m.chunks.len());
    for (index, c) in m.chunks.iter().enumerate() {
        let bad = |message: &str| ManifestError::BadChunkInfo {
            index,
            message: message.to_owned(),
        };
        let acc = StateAccumulator::from_bytes(&c.accumulator)
            .ok_or_else(|| bad("accumulator is not 2048 bytes"))?;
        if c.entries == 0
            || c.entries as usize > MAX_CHUNK_ENTRIES
            || c.bytes > MAX_CHUNK_BYTES as u64
        {
            return Err(bad("empty, or larger than a chunk may be"));
        }
        let last = index + 1 == m.chunks.len();
        if last != c.end.is_empty() || (!c.end.is_empty() && c.end <= c.start) {
            return Err(bad("its range is empty or open before the last chunk"));
        }
        if let Some(previous) = chunks.last() {
            let previous: &ChunkSpec = previous;
            if previous.end != c.start {
                return Err(bad("does not start where the previous chunk ends"));
            }
        }
        sum.add(&acc);
        chunks.push(ChunkSpec {
            start: c.start.clone(),
            end: c.end.clone(),
            entries: c.entries,
            bytes: c.bytes,
            accumulator: acc,
        });
    }
    if sum != accumulator {
        return Err(ManifestError::ChunksDoNotAddUp);
    }
    Ok(VerifiedManifest {
        height: checkpoint.seq,
        block_hash: checkpoint.block_hash,
        header,
        accumulator,
        chunks,
        epoch_ends,
        checkpoint,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("{found} entries, the manifest lists {expected}")]
    Count { expected: u32, found: usize },
    #[error("entry {0} is out of order or outside the chunk's range")]
    Order(usize),
    #[error("entry {0} has a version above the sync height")]
    Version(usize),
    #[error("entry {0}: transaction id is not 32 bytes")]
    TxId(usize),
    #[error("the entries do not add up to the chunk's accumulator")]
    Sum,
}

/// Checks a served chunk against its spec; its entries in canonical order.
pub fn verify_chunk(
    spec: &ChunkSpec,
    height: u64,
    chunk: StateChunk,
) -> Result<Vec<VersionedEntry>, ChunkError> {
    if chunk.entries.len() != spec.entries as usize {
        return Err(ChunkError::Count {
            expected: spec.entries,
            found: chunk.entries.len(),
        });
    }
    let mut sum = StateAccumulator::default();
    let mut out: Vec<VersionedEntry> = Vec::with_capacity(chunk.entries.len());
    let mut previous: Option<Vec<u8>> = None;
    for (i, e) in chunk.entries.into_iter().enumerate() {
        let cursor = history::key_prefix(&e.key);
        let after_previous = previous.as_ref().is_none_or(|p| cursor > *p);
        let in_range = cursor >= spec.start && (spec.end.is_empty() || cursor < spec.end);
        if !after_previous || !in_range {
            return Err(ChunkError::Order(i));
        }
        if e.height > height {
            return Err(ChunkError::Version(i));
        }
        let tx_id = <[u8; 32]>::try_from(e.tx_id.as_slice()).map_err(|_| ChunkError::TxId(i))?;
        let entry = VersionedEntry {
            key: e.key,
            value: e.value,
            height: e.height,
            index: e.index,
            tx_id,
        };
        sum.insert(&entry.commitment());
        previous = Some(cursor);
        out.push(entry);
    }
    if sum != spec.accumulator {
        return Err(ChunkError::Sum);
    }
    Ok(out)
}

/// Checks a header served below `expected_height` whose hash must be
/// `expected_hash`, with its transaction ids; the ids, and the hash the
/// header below must have.
pub fn verify_header(
    expected_height: u64,
    expected_hash: &[u8; 32],
    served: crate::proto::HeaderWithTxIds,
) -> Result<(BlockHeader, Vec<crate::tx::TxId>), String> {
    let header = served.header.ok_or("no header")?;
    if header.height != expected_height {
        return Err(format!(
            "header of height {}, expected {expected_height}",
            header.height
        ));
    }
    if header_hash(&header) != *expected_hash {
        return Err(format!(
            "header {expected_height} is not on the certified chain"
        ));
    }
    if served.tx_ids.len() % 32 != 0 || served.tx_ids.len() / 32 != header.tx_count as usize {
        return Err(format!(
            "header {expected_height}: {} bytes of transaction ids for {} transactions",
            served.tx_ids.len(),
            header.tx_count
        ));
    }
    let ids: Vec<crate::tx::TxId> = served
        .tx_ids
        .chunks_exact(32)
        .map(|c| crate::tx::TxId(c.try_into().unwrap_or([0; 32])))
        .collect();
    if crate::block::tx_root(&ids).as_slice() != header.tx_root {
        return Err(format!(
            "header {expected_height}: transaction ids do not match its merkle root"
        ));
    }
    Ok((header, ids))
}
