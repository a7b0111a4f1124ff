//! Executing an ordered proposal: the ledger's half of the consensus
//! boundary. Every replica that executes the same proposal on the same
//! chain writes byte-identical blocks, state and history.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use rocksdb::{WriteBatch, WriteOptions, DB};

use super::state_commitment::{Entry, StateAccumulator};
use super::store::{
    certificate_key, cf, height_key, StoredValue, TipRecord, TxLocation, CF_BLOCKS, CF_BLOCK_HASH,
    CF_CONSENSUS, CF_HISTORY, CF_META, CF_STATE, CF_TX_INDEX, META_GENESIS, META_TIP,
};
use super::{contracts, history, Ledger, LedgerError, Tip};
use crate::block::{header_hash, tx_root, Proposal};
use crate::crypto::Hash32;
use crate::genesis::Genesis;
use crate::governance::{
    self,
    keys::{code_key, outcome_key, proposal_key, CONFIG_KEY},
};
use crate::proto::config_change::Change;
use crate::proto::{
    Block, BlockHeader, ConfigOutcome, ConsortiumConfig, Proposal as ConfigProposal,
};
use crate::tx::envelope::Write;
use crate::tx::{TxId, VerifiedTx};

/// A block as committed, with what subscribers need to know about it.
#[derive(Debug, Clone)]
pub struct CommittedBlock {
    pub block: Arc<Block>,
    pub hash: Hash32,
    pub height: u64,
    pub timestamp_ms: u64,
    pub tx_ids: Vec<TxId>,
    /// The verified transactions in block order (their writes and senders).
    pub txs: Vec<Arc<VerifiedTx>>,
    /// Time spent executing and writing the block.
    pub commit_duration: Duration,
    /// Events of the successful contract calls, by transaction index.
    pub contract_events: HashMap<u32, Vec<crate::proto::ContractEvent>>,
    /// Each contract call's outcome (`ok` or its failure kind) and fuel.
    pub contract_calls: Vec<(String, u64)>,
}

pub(super) fn sync_write() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

/// Writes block 0. Its `prev_hash` is the hash of the genesis document, so
/// the chain commits to its chain id, parameters and validators.
pub(super) fn write_genesis(
    db: &DB,
    genesis: &Genesis,
    validators_hash: &Hash32,
) -> Result<(Tip, StateAccumulator), LedgerError> {
    let accumulator = StateAccumulator::default();
    let header = BlockHeader {
        chain_id: genesis.chain_id.clone(),
        height: 0,
        prev_hash: genesis.hash().to_vec(),
        tx_root: tx_root(&[]).to_vec(),
        state_root: accumulator.root().to_vec(),
        timestamp_ms: genesis.created_at_ms,
        proposer: Vec::new(),
        validators_hash: validators_hash.to_vec(),
        tx_count: 0,
        next_validators_hash: Vec::new(),
    };
    let hash = header_hash(&header);
    let tip = Tip {
        height: 0,
        hash,
        timestamp_ms: genesis.created_at_ms,
        txs_committed: 0,
    };
    let block = Block {
        header: Some(header),
        txs: Vec::new(),
    };
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_BLOCKS)?, height_key(0), block.encode_to_vec());
    batch.put_cf(cf(db, CF_BLOCK_HASH)?, hash, height_key(0));
    batch.put_cf(cf(db, CF_META)?, META_GENESIS, genesis.hash());
    batch.put_cf(
        cf(db, CF_META)?,
        META_TIP,
        tip_record(&tip, &accumulator).encode(),
    );
    db.write_opt(batch, &sync_write())?;
    Ok((tip, accumulator))
}

fn tip_record(tip: &Tip, acc: &StateAccumulator) -> TipRecord {
    TipRecord {
        height: tip.height,
        hash: tip.hash,
        timestamp_ms: tip.timestamp_ms,
        txs_committed: tip.txs_committed,
        accumulator: acc.to_bytes(),
    }
}

/// Bytes to reserve for a block's write batch, so that a block of thousands
/// of transactions is not copied over and over while its batch grows: each
/// transaction is written about three times (in the block, as the state
/// value and as a history version) next to fixed-size index entries.
fn batch_capacity(txs: &[Arc<VerifiedTx>]) -> usize {
    const PER_TX_FIXED: usize = 256;
    const BLOCK_FIXED: usize = 16 * 1024;
    let signed: usize = txs.iter().map(|t| t.encoded_len()).sum();
    BLOCK_FIXED + 3 * signed + PER_TX_FIXED * txs.len()
}

/// The latest version of a key while a block executes.
type Overlay = HashMap<Bytes, Option<StoredValue>>;

fn batch_index(
    batch: &mut WriteBatch,
    index_cf: &rocksdb::ColumnFamily,
    tx: &VerifiedTx,
    height: u64,
    index: u32,
) {
    batch.put_cf(index_cf, tx.id.0, TxLocation { height, index }.encode());
}

/// The writes of one block: state, history and the state commitment move
/// together, one key version at a time.
struct BlockWrites<'a> {
    db: &'a DB,
    state_cf: &'a rocksdb::ColumnFamily,
    history_cf: &'a rocksdb::ColumnFamily,
    acc: &'a mut StateAccumulator,
    batch: &'a mut WriteBatch,
    overlay: &'a mut Overlay,
    height: u64,
    block_ms: u64,
}

impl BlockWrites<'_> {
    /// The current version of `key`: written earlier in this block, or stored.
    fn current(&mut self, key: &Bytes) -> Result<Option<StoredValue>, LedgerError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        let stored = match self.db.get_pinned_cf(self.state_cf, key)? {
            Some(bytes) => Some(StoredValue::decode(&bytes)?),
            None => None,
        };
        self.overlay.insert(key.clone(), stored.clone());
        Ok(stored)
    }

    /// A stored configuration proposal, as this block left it so far.
    fn proposal(&mut self, id: u64) -> Result<Option<ConfigProposal>, LedgerError> {
        let key = Bytes::from(proposal_key(id));
        match self.current(&key)? {
            Some(v) => Ok(Some(decode_config_record(&v.value, "proposal")?)),
            None => Ok(None),
        }
    }

    /// Sets (`Some`) or deletes (`None`) `key` as transaction `index` of
    /// the block, recording the new version in the key's history.
    fn set(
        &mut self,
        key: &Bytes,
        value: Option<&Bytes>,
        tx: &VerifiedTx,
        index: u32,
    ) -> Result<(), LedgerError> {
        let height = self.height;
        if let Some(old) = self.current(key)? {
            self.acc.remove(&Entry {
                key,
                value: &old.value,
                height: old.height,
                index: old.index,
            });
        }
        match value {
            Some(value) => {
                let stored = StoredValue {
                    height,
                    index,
                    tx_id: tx.id.0,
                    value: value.clone(),
                };
                self.acc.insert(&Entry {
                    key,
                    value,
                    height,
                    index,
                });
                self.batch.put_cf(self.state_cf, key, stored.encode());
                self.overlay.insert(key.clone(), Some(stored));
            }
            None => {
                self.batch.delete_cf(self.state_cf, key);
                self.overlay.insert(key.clone(), None);
            }
        }
        self.batch.put_cf(
            self.history_cf,
            history::record_key(key, height, index),
            history::encode_record(
                &tx.id.0,
                tx.timestamp_ms,
                self.block_ms,
                value.is_none(),
                value.map(|v| v.as_ref()).unwrap_or_default(),
            ),
        );
        Ok(())
    }
}

/// Which entry point of a contract to run, with what.
struct EntryCall<'a> {
    function: &'a str,
    input: Vec<u8>,
    fuel: u64,
    /// Skip (None) when the contract does not export it.
    optional: bool,
}

/// Decodes a configuration record read from state.
pub(super) fn decode_config_record<M: Message + Default>(
    bytes: &[u8],
    what: &'static str,
) -> Result<M, LedgerError> {
    M::decode(bytes).map_err(|e| {
        LedgerError::Store(super::store::StoreError::Corrupt {
            cf: CF_STATE,
            what: format!("stored {what} cannot be decoded: {e}"),
        })
    })
}

impl Ledger {
    /// Validates `proposal` against the chain, executes it and stores the
    /// resulting block in one atomic, fsynced write. On any error nothing
    /// is written and the tip is unchanged.
    pub fn commit(&self, proposal: &Proposal) -> Result<CommittedBlock, LedgerError> {
        self.commit_certified(proposal, None)
    }

    /// [`Ledger::commit`], storing the consensus commit certificate of the
    /// block in the same atomic write.
    #[tracing::instrument(level = "debug", skip_all, fields(height = proposal.height, txs = proposal.txs.len()))]
    pub fn commit_certified(
        &self,
        proposal: &Proposal,
        certificate: Option<&[u8]>,
    ) -> Result<CommittedBlock, LedgerError> {
        let started = Instant::now();
        let mut acc_guard = match self.accumulator.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let tip = self.tip();
        if proposal.height != tip.height + 1 {
            return Err(LedgerError::WrongHeight {
                proposed: proposal.height,
                tip: tip.height,
            });
        }
        if proposal.timestamp_ms < tip.timestamp_ms {
            return Err(LedgerError::TimestampRegressed {
                proposed: proposal.timestamp_ms,
                tip: tip.timestamp_ms,
            });
        }
        let tx_ids: Vec<TxId> = proposal.txs.iter().map(|t| t.id).collect();
        self.check_unique(&tx_ids)?;

        let db = self.db();
        let (state_cf, history_cf, index_cf) =
            (cf(db, CF_STATE)?, cf(db, CF_HISTORY)?, cf(db, CF_TX_INDEX)?);
        let mut overlay = self.load_current_values(&proposal.txs)?;
        let mut acc = acc_guard.clone();
        let mut batch = WriteBatch::with_capacity_bytes(batch_capacity(&proposal.txs));
        let height = proposal.height;
        // The configuration as this block changes it, when it does.
        let mut config: Option<ConsortiumConfig> = None;
        let mut contract_events = HashMap::new();
        let mut contract_calls = Vec::new();
        let mut writes = BlockWrites {
            db,
            state_cf,
            history_cf,
            acc: &mut acc,
            batch: &mut batch,
            overlay: &mut overlay,
            height,
            block_ms: proposal.timestamp_ms,
        };
        for (index, tx) in proposal.txs.iter().enumerate() {
            let index = index as u32;
            match &tx.write {
                Write::Put { key, value } => writes.set(key, Some(value), tx, index)?,
                Write::Delete { key } => writes.set(key, None, tx, index)?,
                Write::Call(call) => {
                    let current = self.config();
                    let base = config.as_ref().unwrap_or(&current);
                    let outcome = self.execute_call(&mut writes, base, tx, index, call)?;
                    if outcome.ok && !outcome.events.is_empty() {
                        contract_events.insert(index, outcome.events.clone());
                    }
                    let kind = if outcome.ok {
                        "ok".to_owned()
                    } else {
                        outcome.failure_kind.clone()
                    };
                    contract_calls.push((kind, outcome.fuel_used));
                    let key = Bytes::from(outcome_key(&tx.id.0));
                    writes.set(&key, Some(&Bytes::from(outcome.encode_to_vec())), tx, index)?;
                }
                Write::Config(change) => {
                    let base = match &config {
                        Some(c) => c.clone(),
                        None => (*self.config()).clone(),
                    };
                    let outcome =
                        self.execute_config(&mut writes, &base, &mut config, tx, index, change)?;
                    if !outcome.applied {
                        tracing::info!(tx = %tx.id, height, reason = %outcome.message, "configuration change not applied");
                    }
                    let key = Bytes::from(outcome_key(&tx.id.0));
                    writes.set(&key, Some(&Bytes::from(outcome.encode_to_vec())), tx, index)?;
                }
            }
            batch_index(writes.batch, index_cf, tx, height, index);
        }

        let header = BlockHeader {
            chain_id: self.chain_id().to_owned(),
            height,
            prev_hash: tip.hash.to_vec(),
            tx_root: tx_root(&tx_ids).to_vec(),
            state_root: acc.root().to_vec(),
            timestamp_ms: proposal.timestamp_ms,
            proposer: proposal.proposer.to_vec(),
            validators_hash: self.validators_hash_at(height).to_vec(),
            tx_count: proposal.txs.len() as u32,
            next_validators_hash: self.next_validators_hash(config.as_ref(), height),
        };
        let hash = header_hash(&header);
        let block = Block {
            header: Some(header),
            txs: proposal.txs.iter().map(|t| t.signed.clone()).collect(),
        };
        let new_tip = Tip {
            height,
            hash,
            timestamp_ms: proposal.timestamp_ms,
            txs_committed: tip.txs_committed + proposal.txs.len() as u64,
        };
        batch.put_cf(
            cf(db, CF_BLOCKS)?,
            height_key(height),
            block.encode_to_vec(),
        );
        batch.put_cf(cf(db, CF_BLOCK_HASH)?, hash, height_key(height));
        batch.put_cf(
            cf(db, CF_META)?,
            META_TIP,
            tip_record(&new_tip, &acc).encode(),
        );
        if let Some(cert) = certificate {
            batch.put_cf(cf(db, CF_CONSENSUS)?, certificate_key(height), cert);
        }
        db.write_opt(batch, &sync_write())?;

        *acc_guard = acc;
        if let Some(c) = config {
            self.set_config(c);
        }
        match self.tip.write() {
            Ok(mut t) => *t = new_tip,
            Err(poisoned) => *poisoned.into_inner() = new_tip,
        }
        Ok(CommittedBlock {
            block: Arc::new(block),
            hash,
            height,
            timestamp_ms: proposal.timestamp_ms,
            tx_ids,
            txs: proposal.txs.clone(),
            commit_duration: started.elapsed(),
            contract_events,
            contract_calls,
        })
    }

    /// One configuration change: judged by governance, then its effects
    /// written. Installing code stores it (once it compiles); a deployment
    /// the change puts in force runs the contract's `init` (first version)
    /// or `upgrade` (later versions, when exported), and a failure there
    /// rejects the deployment instead.
    fn execute_config(
        &self,
        writes: &mut BlockWrites<'_>,
        base: &ConsortiumConfig,
        config: &mut Option<ConsortiumConfig>,
        tx: &VerifiedTx,
        index: u32,
        change: &crate::proto::ConfigChange,
    ) -> Result<ConfigOutcome, LedgerError> {
        let refuse = |message: String| ConfigOutcome {
            applied: false,
            proposal_id: 0,
            message,
        };
        let target = match &change.change {
            Some(Change::Vote(v)) => writes.proposal(v.proposal_id)?,
            _ => None,
        };
        // Deployments name installed code.
        if let Some(Change::DeployContract(d)) = &change.change {
            let key = Bytes::from(code_key(&d.code_hash));
            if writes.current(&key)?.is_none() {
                return Ok(refuse(format!(
                    "no code with hash {} is installed; install it first",
                    hex::encode(&d.code_hash)
                )));
            }
        }
        let ctx = governance::Context {
            height: writes.height,
            block_ms: writes.block_ms,
            tx_id: tx.id.0,
        };
        let sender = tx.sender.to_bytes();
        let mut effects = match governance::apply(base, &sender, change, target.as_ref(), &ctx) {
            Ok(effects) => effects,
            Err(refusal) => return Ok(refuse(refusal.to_string())),
        };
        if let Some(Change::InstallCode(install)) = &change.change {
            if let Err(e) = self.contracts.compile(&install.code) {
                return Ok(refuse(format!("the code cannot be installed: {e}")));
            }
            let hash = kubeledger_contract::code_hash(&install.code);
            let key = Bytes::from(code_key(&hash));
            writes.set(&key, Some(&Bytes::from(install.code.clone())), tx, index)?;
            effects.outcome.message = format!(
                "{}; code hash {}",
                effects.outcome.message,
                hex::encode(hash)
            );
        }
        if let Some(next) = &effects.config {
            if let Some(failed) =
                self.start_deployments(writes, base, next, effects.proposal.as_ref(), (tx, index))?
            {
                // The deployment does not take effect: the proposal is
                // rejected with the reason, the configuration stays.
                if let Some(p) = effects.proposal.as_mut() {
                    p.state = crate::proto::ProposalState::Rejected as i32;
                    p.reason = failed.clone();
                    p.effective_height = 0;
                }
                effects.config = None;
                effects.outcome.applied = false;
                effects.outcome.message = failed;
            }
        }
        if let Some(c) = effects.config {
            let bytes = Bytes::from(c.encode_to_vec());
            writes.set(&Bytes::from_static(CONFIG_KEY), Some(&bytes), tx, index)?;
            *config = Some(c);
        }
        if let Some(p) = effects.proposal {
            let key = Bytes::from(proposal_key(p.id));
            writes.set(&key, Some(&Bytes::from(p.encode_to_vec())), tx, index)?;
        }
        Ok(effects.outcome)
    }

    /// Runs the `init` or `upgrade` of each contract `next` deploys anew
    /// (against `base`), applying its writes; says why when one fails.
    fn start_deployments(
        &self,
        writes: &mut BlockWrites<'_>,
        base: &ConsortiumConfig,
        next: &ConsortiumConfig,
        proposal: Option<&ConfigProposal>,
        (tx, index): (&VerifiedTx, u32),
    ) -> Result<Option<String>, LedgerError> {
        for info in &next.contracts {
            let before = contracts::deployed(base, &info.name);
            if before.is_some_and(|b| b.version == info.version && b.code_hash == info.code_hash) {
                continue;
            }
            let input = match proposal
                .and_then(|p| p.change.as_ref())
                .and_then(|c| c.change.as_ref())
            {
                Some(Change::DeployContract(d)) if d.name == info.name => d.init_input.clone(),
                _ => Vec::new(),
            };
            let entry = if info.version == 1 { "init" } else { "upgrade" };
            let call = EntryCall {
                function: entry,
                input,
                fuel: kubeledger_protocol::tx::envelope::DEFAULT_CALL_FUEL,
                optional: true,
            };
            let outcome = self.run(writes, info, call, (tx, index))?;
            if let Some(outcome) = outcome.filter(|o| !o.ok) {
                return Ok(Some(format!(
                    "contract {} version {}: {entry} failed: {}",
                    info.name, info.version, outcome.failure
                )));
            }
        }
        Ok(None)
    }

    /// One Invoke: the deployed contract's entry point, its writes applied
    /// when it succeeds.
    fn execute_call(
        &self,
        writes: &mut BlockWrites<'_>,
        config: &ConsortiumConfig,
        tx: &VerifiedTx,
        index: u32,
        call: &crate::proto::ContractCall,
    ) -> Result<crate::proto::ContractOutcome, LedgerError> {
        let Some(info) = contracts::deployed(config, &call.contract) else {
            return Ok(contracts::refused(
                "unknown_contract",
                format!("no contract named {} is deployed", call.contract),
            ));
        };
        if call.function == "init" || call.function == "upgrade" {
            return Ok(contracts::refused(
                "unknown_function",
                format!("{} runs only when the contract is deployed", call.function),
            ));
        }
        let fuel = if call.fuel == 0 {
            kubeledger_protocol::tx::envelope::DEFAULT_CALL_FUEL
        } else {
            call.fuel
        };
        let entry = EntryCall {
            function: &call.function,
            input: call.input.clone(),
            fuel,
            optional: false,
        };
        let outcome = self.run(writes, info, entry, (tx, index))?;
        Ok(outcome.unwrap_or_else(|| {
            contracts::refused(
                "unknown_function",
                format!(
                    "contract {} has no entry point {}",
                    call.contract, call.function
                ),
            )
        }))
    }

    /// Runs `function` of `info` over the block's state and applies the
    /// writes of a success. `None` when `optional` and the contract does not
    /// export it (an upgrade without an `upgrade` entry point).
    fn run(
        &self,
        writes: &mut BlockWrites<'_>,
        info: &crate::proto::ContractInfo,
        entry: EntryCall<'_>,
        (tx, index): (&VerifiedTx, u32),
    ) -> Result<Option<crate::proto::ContractOutcome>, LedgerError> {
        let EntryCall {
            function,
            input,
            fuel,
            optional,
        } = entry;
        let view = contracts::BlockView {
            db: writes.db,
            state_cf: writes.state_cf,
            overlay: writes.overlay,
        };
        let compiled = match self.compiled(info, &view) {
            Ok(c) => c,
            Err(refused) => return Ok(Some(refused)),
        };
        if optional && !compiled.entry_points.iter().any(|e| e == function) {
            return Ok(None);
        }
        let call = kubeledger_contract::Call {
            contract: info.name.clone(),
            function: function.to_owned(),
            input,
            caller: tx.sender.to_bytes(),
            height: writes.height,
            time_ms: writes.block_ms,
            fuel,
            read_only: false,
        };
        let outcome = self.contracts.execute(&compiled, call, &view);
        if outcome.result.is_ok() {
            for w in &outcome.writes {
                let key = Bytes::from(w.key.clone());
                let value = w.value.clone().map(Bytes::from);
                writes.set(&key, value.as_ref(), tx, index)?;
            }
        }
        Ok(Some(contracts::to_proto(
            &info.name,
            info.version,
            &outcome,
        )))
    }

    fn check_unique(&self, ids: &[TxId]) -> Result<(), LedgerError> {
        let mut seen = HashSet::with_capacity(ids.len());
        for id in ids {
            if !seen.insert(*id) {
                return Err(LedgerError::DuplicateInBlock(*id));
            }
        }
        for (id, committed) in ids.iter().zip(self.contains_txs(ids)?) {
            if committed {
                return Err(LedgerError::DuplicateCommitted(*id));
            }
        }
        Ok(())
    }

    /// Reads the current value of every key the proposal touches, in one
    /// batched lookup.
    fn load_current_values(&self, txs: &[Arc<VerifiedTx>]) -> Result<Overlay, LedgerError> {
        let mut keys: Vec<&Bytes> = txs.iter().map(|t| t.write.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        let state_cf = cf(self.db(), CF_STATE)?;
        let values =
            self.db()
                .batched_multi_get_cf(state_cf, keys.iter().map(|k| k.as_ref()), true);
        let mut overlay = Overlay::with_capacity(keys.len());
        for (key, value) in keys.into_iter().zip(values) {
            let stored = match value? {
                Some(bytes) => Some(StoredValue::decode(&bytes)?),
                None => None,
            };
            overlay.insert(key.clone(), stored);
        }
        Ok(overlay)
    }
}
