//! A ledger that starts at a state-sync point: what a node that joined by
//! state sync holds below it, and the writes that build it.
//!
//! Below its base height `S` such a node holds, for every block, the
//! header and the transaction ids (checked against the hash chain down
//! from the certified block `S`): enough to verify the chain, to refuse a
//! replayed transaction, and to locate any transaction. It holds no block
//! bodies below `S + 1`, and a key's history starts with the version it
//! had at `S` (the transaction id and block time of that version are
//! verified; the client's timestamp is not known and reads 0).

use prost::Message;
use rocksdb::WriteBatch;

use super::execute::sync_write as write_options_synced;
use super::history;
use super::state_at::VersionedEntry;
use super::state_commitment::StateAccumulator;
use super::store::{
    cf, height_key, read_u64, StoreError, StoredValue, TipRecord, TxLocation, CF_HEADERS,
    CF_HISTORY, CF_META, CF_STATE, CF_TX_INDEX, META_BASE, META_STATE_SYNC,
    META_STATE_SYNC_MANIFEST, META_TIP,
};
use super::{Ledger, LedgerError, Tip};
use crate::block::header_hash;
use crate::proto::{BlockHeader, HeaderWithTxIds};
use crate::tx::TxId;

/// Where a state sync stands, saved with every batch it writes so that a
/// node killed part-way resumes from there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncProgress {
    /// The checkpoint height the state is synced at.
    pub height: u64,
    /// Lowest height whose header is stored (`height + 1`: none yet).
    pub headers_low: u64,
    /// Hash the header at `headers_low - 1` must have (hex).
    pub next_hash: String,
    /// Transactions in the stored headers.
    pub txs: u64,
    /// Per chunk of the manifest, whether it is stored ('1') or not ('0').
    pub chunks_done: String,
    /// The peer that served the manifest.
    #[serde(default)]
    pub source: String,
}

impl SyncProgress {
    pub fn chunk_done(&self, index: usize) -> bool {
        self.chunks_done.as_bytes().get(index) == Some(&b'1')
    }

    pub fn mark_chunk(&mut self, index: usize) {
        let mut bytes = std::mem::take(&mut self.chunks_done).into_bytes();
        if let Some(b) = bytes.get_mut(index) {
            *b = b'1';
        }
        self.chunks_done = String::from_utf8(bytes).unwrap_or_default();
    }
}

fn corrupt(what: String) -> LedgerError {
    LedgerError::Store(StoreError::Corrupt { cf: CF_META, what })
}

impl Ledger {
    /// The height this node joined at by state sync; 0 if it replayed the
    /// chain from genesis.
    pub fn sync_base(&self) -> Result<u64, LedgerError> {
        match self
            .db()
            .get_pinned_cf(cf(self.db(), CF_META)?, META_BASE)?
        {
            Some(b) => Ok(read_u64(&b, CF_META)?),
            None => Ok(0),
        }
    }

    /// The header and transaction ids of block `height` below the sync
    /// point (None above it, or on a node that replayed from genesis).
    pub fn synced_header(&self, height: u64) -> Result<Option<HeaderWithTxIds>, LedgerError> {
        match self
            .db()
            .get_pinned_cf(cf(self.db(), CF_HEADERS)?, height_key(height))?
        {
            Some(bytes) => HeaderWithTxIds::decode(bytes.as_ref())
                .map(Some)
                .map_err(|e| corrupt(format!("stored header {height}: {e}"))),
            None => Ok(None),
        }
    }

    /// The state sync under way, with the manifest it follows (encoded).
    pub fn state_sync_progress(&self) -> Result<Option<(SyncProgress, Vec<u8>)>, LedgerError> {
        let meta = cf(self.db(), CF_META)?;
        let Some(progress) = self.db().get_cf(meta, META_STATE_SYNC)? else {
            return Ok(None);
        };
        let progress: SyncProgress = serde_json::from_slice(&progress)
            .map_err(|e| corrupt(format!("state-sync progress: {e}")))?;
        let manifest = self
            .db()
            .get_cf(meta, META_STATE_SYNC_MANIFEST)?
            .ok_or_else(|| corrupt("state-sync progress without its manifest".into()))?;
        Ok(Some((progress, manifest)))
    }

    fn put_progress(
        &self,
        batch: &mut WriteBatch,
        progress: &SyncProgress,
    ) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec(progress)
            .map_err(|e| corrupt(format!("state-sync progress: {e}")))?;
        batch.put_cf(cf(self.db(), CF_META)?, META_STATE_SYNC, bytes);
        Ok(())
    }

    /// Starts a state sync on an empty ledger (only genesis).
    pub fn begin_state_sync(
        &self,
        progress: &SyncProgress,
        manifest: &[u8],
    ) -> Result<(), LedgerError> {
        let tip = self.tip().height;
        if tip != 0 {
            return Err(corrupt(format!(
                "a state sync needs an empty ledger; this one is at height {tip}"
            )));
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(self.db(), CF_META)?, META_STATE_SYNC_MANIFEST, manifest);
        self.put_progress(&mut batch, progress)?;
        self.db().write_opt(batch, &write_options_synced())?;
        Ok(())
    }

    /// Stores verified headers (newest first, continuing down from
    /// `progress`) with their transaction ids, and the progress after them.
    pub fn write_synced_headers(
        &self,
        headers: &[(BlockHeader, Vec<TxId>)],
        progress: &SyncProgress,
    ) -> Result<(), LedgerError> {
        let (headers_cf, index_cf) = (cf(self.db(), CF_HEADERS)?, cf(self.db(), CF_TX_INDEX)?);
        let mut batch = WriteBatch::default();
        for (header, ids) in headers {
            let mut packed = Vec::with_capacity(ids.len() * 32);
            for (index, id) in ids.iter().enumerate() {
                packed.extend_from_slice(&id.0);
                let location = TxLocation {
                    height: header.height,
                    index: index as u32,
                };
                batch.put_cf(index_cf, id.0, location.encode());
            }
            let record = HeaderWithTxIds {
                header: Some(header.clone()),
                tx_ids: packed,
            };
            batch.put_cf(
                headers_cf,
                height_key(header.height),
                record.encode_to_vec(),
            );
        }
        self.put_progress(&mut batch, progress)?;
        self.db().write_opt(batch, &write_options_synced())?;
        Ok(())
    }

    /// Stores a verified chunk of the state at the sync point: each entry
    /// as the key's value and as the first version of its history, with
    /// the block time of its version from the stored headers.
    pub fn write_synced_entries(
        &self,
        entries: &[VersionedEntry],
        progress: &SyncProgress,
    ) -> Result<(), LedgerError> {
        let (state_cf, history_cf) = (cf(self.db(), CF_STATE)?, cf(self.db(), CF_HISTORY)?);
        let mut block_times = std::collections::HashMap::<u64, u64>::new();
        let mut batch = WriteBatch::default();
        for e in entries {
            let block_ms = match block_times.get(&e.height) {
                Some(ms) => *ms,
                None => {
                    let ms = self
                        .header(e.height)?
                        .map(|h| h.timestamp_ms)
                        .unwrap_or_default();
                    block_times.insert(e.height, ms);
                    ms
                }
            };
            let stored = StoredValue {
                height: e.height,
                index: e.index,
                tx_id: e.tx_id,
                value: bytes::Bytes::copy_from_slice(&e.value),
            };
            batch.put_cf(state_cf, &e.key, stored.encode());
            batch.put_cf(
                history_cf,
                history::record_key(&e.key, e.height, e.index),
                history::encode_record(&e.tx_id, 0, block_ms, false, &e.value),
            );
        }
        self.put_progress(&mut batch, progress)?;
        self.db().write_opt(batch, &write_options_synced())?;
        Ok(())
    }

    /// Gives up a state sync part-way (its manifest turned out wrong):
    /// everything it wrote goes, and the ledger is back at genesis.
    pub fn abandon_state_sync(&self) -> Result<(), LedgerError> {
        for name in [CF_STATE, CF_HISTORY, CF_HEADERS, CF_TX_INDEX] {
            let handle = cf(self.db(), name)?;
            loop {
                let mut batch = WriteBatch::default();
                let mut n = 0;
                for item in self
                    .db()
                    .iterator_cf(handle, rocksdb::IteratorMode::Start)
                    .take(10_000)
                {
                    let (k, _) = item?;
                    batch.delete_cf(handle, k);
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                self.db().write(batch)?;
            }
        }
        let meta = cf(self.db(), CF_META)?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(meta, META_STATE_SYNC);
        batch.delete_cf(meta, META_STATE_SYNC_MANIFEST);
        self.db().write_opt(batch, &write_options_synced())?;
        Ok(())
    }

    /// Ends a state sync: block `header` (certified) becomes the tip, with
    /// the state's accumulator and the transactions below it counted, and
    /// the configuration is read from the synced state.
    pub fn finish_state_sync(
        &self,
        header: &BlockHeader,
        accumulator: &StateAccumulator,
        txs_committed: u64,
    ) -> Result<(), LedgerError> {
        let mut acc_guard = match self.accumulator.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let hash = header_hash(header);
        let tip = Tip {
            height: header.height,
            hash,
            timestamp_ms: header.timestamp_ms,
            txs_committed,
        };
        let meta = cf(self.db(), CF_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            meta,
            META_TIP,
            TipRecord {
                height: tip.height,
                hash,
                timestamp_ms: tip.timestamp_ms,
                txs_committed,
                accumulator: accumulator.to_bytes(),
            }
            .encode(),
        );
        batch.put_cf(meta, META_BASE, height_key(header.height));
        batch.delete_cf(meta, META_STATE_SYNC);
        batch.delete_cf(meta, META_STATE_SYNC_MANIFEST);
        self.db().write_opt(batch, &write_options_synced())?;
        *acc_guard = accumulator.clone();
        match self.tip.write() {
            Ok(mut t) => *t = tip,
            Err(poisoned) => *poisoned.into_inner() = tip,
        }
        let config = super::config_state::load(self.db(), self.genesis())?;
        self.set_config(config);
        Ok(())
    }
}
