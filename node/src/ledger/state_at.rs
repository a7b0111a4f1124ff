//! The world state as of a past height, read from key history (every
//! version of every key is kept, so the state at any height at or above a
//! node's lowest is there to read), for state sync: a plan that cuts it
//! into chunks, and one chunk's entries.
//!
//! Versions at or below a height are never rewritten, so these reads need
//! no snapshot while blocks are committed above it.

use rocksdb::{IteratorMode, ReadOptions};

use super::history;
use super::state_commitment::{Entry, StateAccumulator};
use super::store::{cf, StoreError, CF_HISTORY};
use super::{Ledger, LedgerError};

/// How a node cuts the state it serves into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// Most chunks one plan may have (each costs 2 KiB in the manifest).
pub const MAX_CHUNKS: usize = 8192;
/// Most entries and bytes a served chunk may hold, whatever range a
/// request names.
pub const MAX_CHUNK_ENTRIES: usize = 1 << 16;
pub const MAX_CHUNK_BYTES: usize = 32 << 20;

/// A key's value as of a height, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub height: u64,
    pub index: u32,
    pub tx_id: [u8; 32],
}

impl VersionedEntry {
    pub fn commitment(&self) -> Entry<'_> {
        Entry {
            key: &self.key,
            value: &self.value,
            height: self.height,
            index: self.index,
        }
    }

    /// Where the entry sits in the canonical order (see [`history::key_prefix`]).
    pub fn cursor(&self) -> Vec<u8> {
        history::key_prefix(&self.key)
    }
}

/// One planned chunk: the cursor range `[start, end)` (`end` empty: to the
/// end), its size and the sum of its entries' commitments.
#[derive(Debug, Clone)]
pub struct PlannedChunk {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub entries: u32,
    pub bytes: u64,
    pub accumulator: StateAccumulator,
}

#[derive(Debug, thiserror::Error)]
pub enum StateAtError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("height {height} is above the tip {tip}")]
    AboveTip { height: u64, tip: u64 },
    #[error("this node holds the state from height {base} on (it joined by state sync), not at {height}")]
    BelowBase { height: u64, base: u64 },
    #[error(
        "the state at height {height} needs more than {MAX_CHUNKS} chunks of the configured size"
    )]
    TooManyChunks { height: u64 },
    #[error("the range holds more than {MAX_CHUNK_ENTRIES} entries or {MAX_CHUNK_BYTES} bytes; ask for the ranges of a manifest")]
    ChunkTooLarge,
    #[error(
        "the state read from history at height {height} does not match that block's state root"
    )]
    Inconsistent { height: u64 },
}

/// Splits a history record key into the key's cursor and the version.
fn split_record(record: &[u8]) -> Option<(&[u8], u64, u32)> {
    let len = u32::from_be_bytes(record.get(..4)?.try_into().ok()?) as usize;
    let cursor_len = 4usize.checked_add(len)?;
    let cursor = record.get(..cursor_len)?;
    let version = record.get(cursor_len..)?;
    if version.len() != 12 {
        return None;
    }
    let height = u64::from_be_bytes(version[..8].try_into().ok()?);
    let index = u32::from_be_bytes(version[8..].try_into().ok()?);
    Some((cursor, height, index))
}

impl Ledger {
    fn check_servable(&self, height: u64) -> Result<(), StateAtError> {
        let tip = self.tip().height;
        if height > tip {
            return Err(StateAtError::AboveTip { height, tip });
        }
        let base = self.sync_base()?;
        if height < base {
            return Err(StateAtError::BelowBase { height, base });
        }
        Ok(())
    }

    /// Visits, in canonical order, the entries of the state at `height`
    /// whose cursors lie in `[start, end)`, until `visit` returns false.
    fn scan_state_at(
        &self,
        height: u64,
        start: &[u8],
        end: &[u8],
        mut visit: impl FnMut(VersionedEntry) -> Result<bool, StateAtError>,
    ) -> Result<(), StateAtError> {
        let mut opts = ReadOptions::default();
        if !end.is_empty() {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        let history_cf = cf(self.db(), CF_HISTORY).map_err(LedgerError::from)?;
        let iter = self.db().iterator_cf_opt(
            history_cf,
            opts,
            IteratorMode::From(start, rocksdb::Direction::Forward),
        );
        // The latest version at or below `height` of the key being read.
        let mut current: Option<(Vec<u8>, Option<VersionedEntry>)> = None;
        let corrupt = |what: String| {
            StateAtError::Ledger(LedgerError::Store(StoreError::Corrupt {
                cf: CF_HISTORY,
                what,
            }))
        };
        for item in iter {
            let (record_key, value) = item.map_err(LedgerError::from)?;
            let (cursor, at, index) = split_record(&record_key)
                .ok_or_else(|| corrupt(format!("record key of {} bytes", record_key.len())))?;
            if current.as_ref().map(|(c, _)| c.as_slice()) != Some(cursor) {
                if let Some((_, Some(entry))) = current.take() {
                    if !visit(entry)? {
                        return Ok(());
                    }
                }
                current = Some((cursor.to_vec(), None));
            }
            if at > height {
                continue;
            }
            let record = history::decode_record(at, index, &value).map_err(LedgerError::from)?;
            let slot = &mut current.as_mut().expect("set above").1;
            *slot = if record.deleted {
                None
            } else {
                let tx_id = <[u8; 32]>::try_from(record.tx_id.as_slice())
                    .map_err(|_| corrupt("history record's transaction id".into()))?;
                Some(VersionedEntry {
                    key: cursor[4..].to_vec(),
                    value: record.value,
                    height: at,
                    index,
                    tx_id,
                })
            };
        }
        if let Some((_, Some(entry))) = current {
            visit(entry)?;
        }
        Ok(())
    }

    /// Cuts the state at `height` into chunks of at most `limits`, with
    /// the accumulator of the whole, checked against the block's state root.
    pub fn plan_state_chunks(
        &self,
        height: u64,
        limits: ChunkLimits,
    ) -> Result<(Vec<PlannedChunk>, StateAccumulator), StateAtError> {
        self.check_servable(height)?;
        let max_entries = limits.max_entries.clamp(1, MAX_CHUNK_ENTRIES);
        let max_bytes = limits.max_bytes.clamp(1, MAX_CHUNK_BYTES);
        let mut chunks: Vec<PlannedChunk> = Vec::new();
        let mut total = StateAccumulator::default();
        let mut open: Option<PlannedChunk> = None;
        self.scan_state_at(height, &[], &[], |entry| {
            let size = (entry.key.len() + entry.value.len()) as u64;
            let full = open.as_ref().is_some_and(|c| {
                c.entries as usize >= max_entries || c.bytes + size > max_bytes as u64
            });
            if full {
                let mut done = open.take().expect("checked above");
                done.end = entry.cursor();
                chunks.push(done);
                if chunks.len() >= MAX_CHUNKS {
                    return Err(StateAtError::TooManyChunks { height });
                }
            }
            let chunk = open.get_or_insert_with(|| PlannedChunk {
                start: entry.cursor(),
                end: Vec::new(),
                entries: 0,
                bytes: 0,
                accumulator: StateAccumulator::default(),
            });
            chunk.entries += 1;
            chunk.bytes += size;
            chunk.accumulator.insert(&entry.commitment());
            Ok(true)
        })?;
        chunks.extend(open);
        // The whole is the sum of the chunks (the hash is additive).
        for chunk in &chunks {
            total.add(&chunk.accumulator);
        }
        let root = self
            .header(height)?
            .map(|h| h.state_root)
            .unwrap_or_default();
        if root.as_slice() != total.root() {
            return Err(StateAtError::Inconsistent { height });
        }
        Ok((chunks, total))
    }

    /// The entries of the state at `height` in `[start, end)`, in
    /// canonical order; refused when the range is larger than a chunk may be.
    pub fn state_chunk(
        &self,
        height: u64,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<VersionedEntry>, StateAtError> {
        self.check_servable(height)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.scan_state_at(height, start, end, |entry| {
            bytes += entry.key.len() + entry.value.len();
            if out.len() >= MAX_CHUNK_ENTRIES || bytes > MAX_CHUNK_BYTES {
                return Err(StateAtError::ChunkTooLarge);
            }
            out.push(entry);
            Ok(true)
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_split_into_cursor_and_version() {
        let record = history::record_key(b"abc", 7, 3);
        let (cursor, h, i) = split_record(&record).expect("splits");
        assert_eq!(cursor, history::key_prefix(b"abc").as_slice());
        assert_eq!((h, i), (7, 3));
        assert!(split_record(&record[..record.len() - 1]).is_none());
        assert!(split_record(&[0xff, 0xff, 0xff, 0xff, 1]).is_none());
    }
}
