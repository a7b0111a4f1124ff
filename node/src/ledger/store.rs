//! The RocksDB layout: column families, tuning, and key encodings.
//!
//! | column family | key                                  | value                         |
//! |---------------|--------------------------------------|-------------------------------|
//! | `blocks`      | height (u64 BE)                      | encoded `Block`               |
//! | `block_hash`  | block hash                           | height (u64 BE)               |
//! | `tx_index`    | tx id                                | height (u64 BE), index (u32 BE)|
//! | `state`       | key                                  | [`StoredValue`]               |
//! | `history`     | len(key) u32 BE, key, height, index  | [`HistoryRecord`]             |
//! | `meta`        | `tip`, `genesis`, `base`, `state-sync*` | [`TipRecord`], genesis hash, sync point, sync progress |
//! | `headers`     | height (u64 BE)                      | encoded `HeaderWithTxIds` (below a state-sync point) |
//! | `consensus`   | `cert/` height, `state`, `payload/` digest | commit certificates, replica state |
//!
//! Big-endian integers keep RocksDB's byte order equal to numeric order, so
//! a key's history iterates oldest first and blocks in height order. The
//! length prefix on history keys stops one key's history from running into
//! another key that extends it (`a` vs `ab`).

use std::path::Path;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};

use crate::config::StorageConfig;

pub const CF_BLOCKS: &str = "blocks";
pub const CF_BLOCK_HASH: &str = "block_hash";
pub const CF_TX_INDEX: &str = "tx_index";
pub const CF_STATE: &str = "state";
pub const CF_HISTORY: &str = "history";
pub const CF_META: &str = "meta";
pub const CF_CONSENSUS: &str = "consensus";
pub const CF_HEADERS: &str = "headers";

pub const META_TIP: &[u8] = b"tip";
pub const META_GENESIS: &[u8] = b"genesis";
/// The height a node joined at by state sync (absent: it replayed from
/// genesis). It holds full blocks above it only.
pub const META_BASE: &[u8] = b"base";
/// A state sync under way: its progress, and the manifest it follows.
pub const META_STATE_SYNC: &[u8] = b"state-sync";
pub const META_STATE_SYNC_MANIFEST: &[u8] = b"state-sync/manifest";

pub(crate) const ALL_CFS: [&str; 8] = [
    CF_BLOCKS,
    CF_BLOCK_HASH,
    CF_TX_INDEX,
    CF_STATE,
    CF_HISTORY,
    CF_META,
    CF_CONSENSUS,
    CF_HEADERS,
];

/// Key of the commit certificate of the block at `height` in `consensus`.
pub fn certificate_key(height: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(b"cert/");
    k[5..].copy_from_slice(&height.to_be_bytes());
    k
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("column family {0} is missing from the database")]
    MissingColumnFamily(&'static str),
    #[error("corrupt record in {cf}: {what}")]
    Corrupt { cf: &'static str, what: String },
}

/// Opens (creating if needed) the node database with all column families.
pub fn open(path: &Path, tuning: &StorageConfig) -> Result<DB, StoreError> {
    let cache = Cache::new_lru_cache(tuning.block_cache_mb.max(8) * 1024 * 1024);
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    db_opts.set_bytes_per_sync(1 << 20);
    // Bound the total memtable memory across column families.
    db_opts.set_db_write_buffer_size(tuning.write_buffer_mb.max(4) * 1024 * 1024 * 3);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Point lookups (dedup, state reads) mostly miss or hit one key: a
        // bloom filter turns most misses into no disk read.
        if matches!(*name, CF_TX_INDEX | CF_STATE | CF_BLOCK_HASH) {
            table.set_bloom_filter(10.0, false);
        }
        let mut opts = Options::default();
        if matches!(*name, CF_TX_INDEX | CF_STATE) {
            // De-duplication asks the transaction index about every
            // transaction several times (gossip, admission, the proposal
            // check, execution), nearly always for an id that is not there
            // and whose neighbours sit in the memtable: a memtable bloom
            // filter answers those misses without a skip-list search.
            opts.set_memtable_whole_key_filtering(true);
            opts.set_memtable_prefix_bloom_ratio(0.05);
        }
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_size(tuning.write_buffer_mb.max(4) * 1024 * 1024);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(*name, opts)
    });
    Ok(DB::open_cf_descriptors(&db_opts, path, cfs)?)
}

pub fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or(StoreError::MissingColumnFamily(name))
}

pub fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

pub fn read_u64(bytes: &[u8], cf: &'static str) -> Result<u64, StoreError> {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            cf,
            what: format!("expected 8-byte integer, got {} bytes", bytes.len()),
        })
}

/// Where a transaction sits in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
}

impl TxLocation {
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.height.to_be_bytes());
        out[8..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt {
            cf: CF_TX_INDEX,
            what: format!("location must be 12 bytes, got {}", bytes.len()),
        };
        let height = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let index = bytes
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        if bytes.len() != 12 {
            return Err(corrupt());
        }
        Ok(Self {
            height: u64::from_be_bytes(height),
            index: u32::from_be_bytes(index),
        })
    }
}

/// Current value of a key with the transaction that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub height: u64,
    pub index: u32,
    pub tx_id: [u8; 32],
    pub value: bytes::Bytes,
}

impl StoredValue {
    const HEADER: usize = 8 + 4 + 32;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + self.value.len());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.tx_id);
        out.extend_from_slice(&self.value);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() < Self::HEADER {
            return Err(StoreError::Corrupt {
                cf: CF_STATE,
                what: format!(
                    "value record of {} bytes is shorter than its header",
                    bytes.len()
                ),
            });
        }
        let (head, value) = bytes.split_at(Self::HEADER);
        let mut height = [0u8; 8];
        height.copy_from_slice(&head[..8]);
        let mut index = [0u8; 4];
        index.copy_from_slice(&head[8..12]);
        let mut tx_id = [0u8; 32];
        tx_id.copy_from_slice(&head[12..44]);
        Ok(Self {
            height: u64::from_be_bytes(height),
            index: u32::from_be_bytes(index),
            tx_id,
            value: bytes::Bytes::copy_from_slice(value),
        })
    }
}

/// The last committed block and the running state commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipRecord {
    pub height: u64,
    pub hash: [u8; 32],
    pub timestamp_ms: u64,
    pub txs_committed: u64,
    /// The state commitment accumulator (see `state_commitment`).
    pub accumulator: Vec<u8>,
}

impl TipRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(56 + self.accumulator.len());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.txs_committed.to_be_bytes());
        out.extend_from_slice(&self.accumulator);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() < 56 {
            return Err(StoreError::Corrupt {
                cf: CF_META,
                what: format!("tip record of {} bytes is too short", bytes.len()),
            });
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[8..40]);
        Ok(Self {
            height: read_u64(&bytes[..8], CF_META)?,
            hash,
            timestamp_ms: read_u64(&bytes[40..48], CF_META)?,
            txs_committed: read_u64(&bytes[48..56], CF_META)?,
            accumulator: bytes[56..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let v = StoredValue {
            height: 7,
            index: 3,
            tx_id: [9; 32],
            value: bytes::Bytes::from_static(b"hello"),
        };
        assert_eq!(StoredValue::decode(&v.encode()).expect("decodes"), v);
        let loc = TxLocation {
            height: 1 << 40,
            index: 77,
        };
        assert_eq!(TxLocation::decode(&loc.encode()).expect("decodes"), loc);
        let tip = TipRecord {
            height: 5,
            hash: [1; 32],
            timestamp_ms: 99,
            txs_committed: 12,
            accumulator: vec![4; 2048],
        };
        assert_eq!(TipRecord::decode(&tip.encode()).expect("decodes"), tip);
    }

    #[test]
    fn short_records_are_corruption_not_panics() {
        assert!(StoredValue::decode(&[1, 2, 3]).is_err());
        assert!(TxLocation::decode(&[0; 11]).is_err());
        assert!(TipRecord::decode(&[0; 20]).is_err());
    }
}
