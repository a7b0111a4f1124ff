//! The ledger: validates, executes and stores ordered blocks, and answers
//! queries on blocks, transactions, state and key history.

pub mod config_state;
pub mod contracts;
pub mod execute;
pub mod history;
pub mod snapshot;
pub mod state_at;
pub mod state_commitment;
pub mod store;
pub mod synced_base;
pub mod verify;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use prost::Message;
use rocksdb::{IteratorMode, ReadOptions, DB};

use crate::block::header_hash;
use crate::config::StorageConfig;
use crate::crypto::Hash32;
use crate::genesis::Genesis;
use crate::proto::{Block, BlockHeader, HistoryEntry, SignedTransaction};
use crate::tx::TxId;
use state_commitment::StateAccumulator;
use store::{
    cf, height_key, StoreError, StoredValue, TipRecord, TxLocation, CF_BLOCKS, CF_BLOCK_HASH,
    CF_CONSENSUS, CF_HISTORY, CF_META, CF_STATE, CF_TX_INDEX, META_GENESIS, META_TIP,
};

pub use execute::CommittedBlock;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("data directory belongs to a different genesis (stored {stored}, configured {configured}); refusing to start")]
    GenesisMismatch { stored: String, configured: String },
    #[error("proposal for height {proposed} does not follow the tip at height {tip}")]
    WrongHeight { proposed: u64, tip: u64 },
    #[error("proposal timestamp {proposed} is before the tip's {tip}")]
    TimestampRegressed { proposed: u64, tip: u64 },
    #[error("transaction {0} is already committed")]
    DuplicateCommitted(TxId),
    #[error("transaction {0} appears twice in the proposal")]
    DuplicateInBlock(TxId),
    #[error("stored block {height} cannot be decoded: {source}")]
    BlockDecode {
        height: u64,
        source: prost::DecodeError,
    },
    #[error("stored state accumulator is corrupt")]
    CorruptAccumulator,
    #[error(
        "{what} is at or below height {base}, where this node joined by state sync: it holds the \
         headers and transaction ids there, not the blocks; ask a node whose Status reports \
         lowest_full_block 0"
    )]
    NotHeld { what: String, base: u64 },
}

impl LedgerError {
    /// The stored data itself is wrong (not a transient I/O failure): the
    /// replica must be rebuilt rather than retried.
    pub fn is_corruption(&self) -> bool {
        match self {
            LedgerError::CorruptAccumulator | LedgerError::BlockDecode { .. } => true,
            LedgerError::Store(StoreError::Corrupt { .. }) => true,
            LedgerError::Store(StoreError::Rocks(e)) => e.kind() == rocksdb::ErrorKind::Corruption,
            _ => false,
        }
    }
}

impl From<rocksdb::Error> for LedgerError {
    fn from(e: rocksdb::Error) -> Self {
        LedgerError::Store(StoreError::Rocks(e))
    }
}

/// A consensus record's key and value.
pub type ConsensusRecord = (Vec<u8>, Vec<u8>);
/// The last committed block, as the rest of the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    pub height: u64,
    pub hash: Hash32,
    pub timestamp_ms: u64,
    pub txs_committed: u64,
}

/// A committed transaction with its place in the chain.
#[derive(Debug, Clone)]
pub struct CommittedTx {
    pub tx: SignedTransaction,
    pub location: TxLocation,
    pub block_hash: Hash32,
    pub block_timestamp_ms: u64,
}

/// A page of a key's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// (height, index) of the last entry when more may follow.
    pub next: Option<(u64, u32)>,
}

pub struct Ledger {
    db: DB,
    genesis: Genesis,
    validators_hash: Hash32,
    /// Serialises commits and holds the state accumulator of the tip.
    accumulator: Mutex<StateAccumulator>,
    tip: RwLock<Tip>,
    /// The consortium configuration as of the tip (see [`crate::governance`]).
    config: RwLock<Arc<crate::proto::ConsortiumConfig>>,
    /// A snapshot is being taken (one at a time; see [`snapshot`]).
    snapshotting: std::sync::atomic::AtomicBool,
    /// Compiles (cached by code hash) and runs contracts.
    contracts: kubeledger_contract::Engine,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("chain_id", &self.genesis.chain_id)
            .field("tip", &self.tip())
            .finish()
    }
}

impl Ledger {
    /// Opens the ledger in `dir`, writing the genesis block on first start.
    /// After a crash the tip is the last block whose batch reached the WAL:
    /// each block is one atomic, fsynced write, so there is nothing to repair.
    pub fn open(dir: &Path, genesis: Genesis, tuning: &StorageConfig) -> Result<Self, LedgerError> {
        let db = store::open(dir, tuning)?;
        let validators_hash = genesis.validators_hash();
        let genesis_hash = genesis.hash();
        let meta = cf(&db, CF_META)?;
        let (tip, accumulator) = match db.get_cf(meta, META_TIP)? {
            Some(bytes) => {
                let stored = db.get_cf(meta, META_GENESIS)?.unwrap_or_default();
                if stored.as_slice() != genesis_hash {
                    return Err(LedgerError::GenesisMismatch {
                        stored: hex::encode(stored),
                        configured: hex::encode(genesis_hash),
                    });
                }
                let record = TipRecord::decode(&bytes)?;
                let acc = StateAccumulator::from_bytes(&record.accumulator)
                    .ok_or(LedgerError::CorruptAccumulator)?;
                (
                    Tip {
                        height: record.height,
                        hash: record.hash,
                        timestamp_ms: record.timestamp_ms,
                        txs_committed: record.txs_committed,
                    },
                    acc,
                )
            }
            None => execute::write_genesis(&db, &genesis, &validators_hash)?,
        };
        let config = config_state::load(&db, &genesis)?;
        Ok(Self {
            db,
            genesis,
            validators_hash,
            accumulator: Mutex::new(accumulator),
            tip: RwLock::new(tip),
            config: RwLock::new(Arc::new(config)),
            snapshotting: std::sync::atomic::AtomicBool::new(false),
            contracts: kubeledger_contract::Engine::new(
                kubeledger_contract::EngineLimits::default(),
            ),
        })
    }

    /// The directory the ledger's database lives in.
    pub fn dir(&self) -> &Path {
        self.db.path()
    }

    pub fn chain_id(&self) -> &str {
        &self.genesis.chain_id
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    pub fn validators_hash(&self) -> &Hash32 {
        &self.validators_hash
    }

    pub fn tip(&self) -> Tip {
        match self.tip.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a transaction is committed.
    pub fn contains_tx(&self, id: &TxId) -> Result<bool, LedgerError> {
        Ok(self
            .db
            .get_pinned_cf(cf(&self.db, CF_TX_INDEX)?, id.0)?
            .is_some())
    }

    /// For each id, whether it is committed (one batched lookup).
    pub fn contains_txs(&self, ids: &[TxId]) -> Result<Vec<bool>, LedgerError> {
        let index = cf(&self.db, CF_TX_INDEX)?;
        self.db
            .batched_multi_get_cf(index, ids.iter().map(|id| id.0.as_slice()), false)
            .into_iter()
            .map(|r| r.map(|v| v.is_some()).map_err(LedgerError::from))
            .collect()
    }

    pub fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, LedgerError> {
        match self.db.get_pinned_cf(cf(&self.db, CF_TX_INDEX)?, id.0)? {
            Some(bytes) => Ok(Some(TxLocation::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// [`Ledger::tx_location`] of many ids in one batched read.
    pub fn tx_locations(&self, ids: &[TxId]) -> Result<Vec<Option<TxLocation>>, LedgerError> {
        let index = cf(&self.db, CF_TX_INDEX)?;
        self.db
            .batched_multi_get_cf(index, ids.iter().map(|id| id.0.as_slice()), false)
            .into_iter()
            .map(|r| match r? {
                Some(bytes) => Ok(Some(TxLocation::decode(&bytes)?)),
                None => Ok(None),
            })
            .collect()
    }

    pub fn transaction(&self, id: &TxId) -> Result<Option<CommittedTx>, LedgerError> {
        let Some(location) = self.tx_location(id)? else {
            return Ok(None);
        };
        let Some((block, hash)) = self.block_by_height(location.height)? else {
            let base = self.sync_base()?;
            if location.height <= base {
                return Err(LedgerError::NotHeld {
                    what: format!(
                        "transaction {id} (committed in block {}, index {})",
                        location.height, location.index
                    ),
                    base,
                });
            }
            return Err(StoreError::Corrupt {
                cf: CF_TX_INDEX,
                what: format!("tx {id} indexed at missing block {}", location.height),
            }
            .into());
        };
        let tx = block
            .txs
            .get(location.index as usize)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt {
                cf: CF_TX_INDEX,
                what: format!("tx {id} indexed past the end of block {}", location.height),
            })?;
        Ok(Some(CommittedTx {
            tx,
            location,
            block_hash: hash,
            block_timestamp_ms: block.header.map(|h| h.timestamp_ms).unwrap_or_default(),
        }))
    }

    /// Current value of `key` with its version.
    pub fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, LedgerError> {
        match self.db.get_pinned_cf(cf(&self.db, CF_STATE)?, key)? {
            Some(bytes) => Ok(Some(StoredValue::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` versions of `key` after `after` (exclusive), oldest first.
    pub fn history(
        &self,
        key: &[u8],
        after: Option<(u64, u32)>,
        limit: usize,
    ) -> Result<HistoryPage, LedgerError> {
        let prefix = history::key_prefix(key);
        let start = match after {
            Some((h, i)) => {
                let mut k = history::record_key(key, h, i);
                k.push(0); // strictly after
                k
            }
            None => prefix.clone(),
        };
        let mut upper = prefix.clone();
        upper.extend_from_slice(&[0xff; 13]);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(upper);
        let iter = self.db.iterator_cf_opt(
            cf(&self.db, CF_HISTORY)?,
            opts,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut page = HistoryPage::default();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some((height, index)) = history::version_of(&k, key) else {
                continue; // a longer key sharing the prefix bytes cannot match: length differs
            };
            if page.entries.len() == limit {
                page.next = page.entries.last().map(|e| (e.height, e.tx_index));
                break;
            }
            page.entries
                .push(history::decode_record(height, index, &v)?);
        }
        Ok(page)
    }

    pub fn block_by_height(&self, height: u64) -> Result<Option<(Block, Hash32)>, LedgerError> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(cf(&self.db, CF_BLOCKS)?, height_key(height))?
        else {
            return Ok(None);
        };
        let block = Block::decode(bytes.as_ref())
            .map_err(|source| LedgerError::BlockDecode { height, source })?;
        let hash = block.header.as_ref().map(header_hash).unwrap_or_default();
        Ok(Some((block, hash)))
    }

    pub fn block_by_hash(&self, hash: &[u8]) -> Result<Option<(Block, Hash32)>, LedgerError> {
        match self.db.get_pinned_cf(cf(&self.db, CF_BLOCK_HASH)?, hash)? {
            Some(h) => self.block_by_height(store::read_u64(&h, CF_BLOCK_HASH)?),
            None => Ok(None),
        }
    }

    /// The header of block `height`: from the block, or below a state-sync
    /// point from the stored headers.
    pub fn header(&self, height: u64) -> Result<Option<BlockHeader>, LedgerError> {
        if let Some((block, _)) = self.block_by_height(height)? {
            return Ok(block.header);
        }
        Ok(self.synced_header(height)?.and_then(|h| h.header))
    }

    /// Flushes memtables so a clean shutdown leaves no WAL to replay.
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush_wal(true)?;
        for name in store::ALL_CFS {
            self.db.flush_cf(cf(&self.db, name)?)?;
        }
        Ok(())
    }

    /// The encoded commit certificate stored with the block at `height`.
    pub fn certificate(&self, height: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self
            .db
            .get_cf(cf(&self.db, CF_CONSENSUS)?, store::certificate_key(height))?)
    }

    /// A consensus record (replica state, stored payloads, epoch proofs).
    pub fn consensus_record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self.db.get_cf(cf(&self.db, CF_CONSENSUS)?, key)?)
    }

    /// Consensus records (key, value) whose keys start with `prefix`, from `start` (a
    /// full key) on, in key order, at most `limit`.
    pub fn consensus_records_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<ConsensusRecord>, LedgerError> {
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_CONSENSUS)?,
            IteratorMode::From(start, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes and deletes consensus records in one atomic, fsynced batch.
    pub fn write_consensus(
        &self,
        puts: &[(Vec<u8>, Vec<u8>)],
        deletes: &[Vec<u8>],
    ) -> Result<(), LedgerError> {
        let consensus = cf(&self.db, CF_CONSENSUS)?;
        let mut batch = rocksdb::WriteBatch::default();
        for (k, v) in puts {
            batch.put_cf(consensus, k, v);
        }
        for k in deletes {
            batch.delete_cf(consensus, k);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }
}
