//! Contracts in the ledger: installed code under `code/<hash>`, deployed
//! contracts in the consortium configuration, each contract's state under
//! its reserved namespace, and the outcome of every call at the outcome
//! key of its transaction. Execution is [`kubeledger_contract`]'s pure
//! engine over a read-only view of the state as the block has left it so
//! far; the writes of a successful call are applied here, one key version
//! at a time like any other write.

use std::collections::HashMap;

use bytes::Bytes;
use rocksdb::{Direction, IteratorMode, DB};

use super::store::{cf, StoredValue, CF_STATE};
use super::{Ledger, LedgerError};
use crate::governance::keys::code_key;
use crate::proto::{ConsortiumConfig, ContractEvent, ContractInfo, ContractOutcome};
use kubeledger_contract::{Call, ContractState, Outcome};

/// The state as a block has left it so far: its writes over the stored
/// state. With no writes, the committed state.
pub(super) struct BlockView<'a> {
    pub(super) db: &'a DB,
    pub(super) state_cf: &'a rocksdb::ColumnFamily,
    pub(super) overlay: &'a HashMap<Bytes, Option<StoredValue>>,
}

impl BlockView<'_> {
    fn stored(&self, key: &[u8]) -> Option<Vec<u8>> {
        // A value that cannot be read is absent to the contract; the
        // ledger's own reads report the corruption.
        let bytes = self.db.get_pinned_cf(self.state_cf, key).ok()??;
        StoredValue::decode(&bytes).ok().map(|v| v.value.to_vec())
    }
}

impl ContractState for BlockView<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.overlay.get(key) {
            Some(v) => v.as_ref().map(|v| v.value.to_vec()),
            None => self.stored(key),
        }
    }

    fn first_key(&self, from: &[u8], to: Option<&[u8]>) -> Option<Vec<u8>> {
        let in_range = |k: &[u8]| k >= from && to.is_none_or(|t| k < t);
        // Stored keys from `from` on, skipping those this block deleted.
        let stored = self
            .db
            .iterator_cf(self.state_cf, IteratorMode::From(from, Direction::Forward))
            .map_while(Result::ok)
            .map(|(k, _)| k)
            .take_while(|k| to.is_none_or(|t| k.as_ref() < t))
            .find(|k| !matches!(self.overlay.get(k.as_ref()), Some(None)))
            .map(|k| k.to_vec());
        let written = self
            .overlay
            .iter()
            .filter(|(k, v)| v.is_some() && in_range(k))
            .map(|(k, _)| k.to_vec())
            .min();
        match (stored, written) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// An outcome as stored: `version` of `contract` ran.
pub(super) fn to_proto(contract: &str, version: u64, outcome: &Outcome) -> ContractOutcome {
    let (ok, output, failure_kind, failure) = match &outcome.result {
        Ok(output) => (true, output.clone(), String::new(), String::new()),
        Err(f) => (false, Vec::new(), f.kind().to_owned(), f.to_string()),
    };
    ContractOutcome {
        ok,
        output,
        failure_kind,
        failure,
        fuel_used: outcome.fuel_used,
        events: outcome
            .events
            .iter()
            .map(|e| ContractEvent {
                contract: contract.to_owned(),
                topic: e.topic.clone(),
                data: e.data.clone(),
            })
            .collect(),
        version,
    }
}

/// An outcome for a call that could not start.
pub(super) fn refused(kind: &str, message: String) -> ContractOutcome {
    ContractOutcome {
        ok: false,
        failure_kind: kind.to_owned(),
        failure: message,
        ..Default::default()
    }
}

pub(super) fn deployed<'c>(config: &'c ConsortiumConfig, name: &str) -> Option<&'c ContractInfo> {
    config.contracts.iter().find(|c| c.name == name)
}

impl Ledger {
    /// Whether `code` would install: it compiles under the engine's rules
    /// (the compiled module is cached for when it runs).
    pub fn check_contract_code(
        &self,
        code: &[u8],
    ) -> Result<(), kubeledger_contract::CompileError> {
        self.contracts.compile(code).map(|_| ())
    }

    /// The compiled code of `info`, from its installed bytes (the engine
    /// caches it by hash), read through `view`.
    pub(super) fn compiled(
        &self,
        info: &ContractInfo,
        view: &BlockView<'_>,
    ) -> Result<kubeledger_contract::Compiled, ContractOutcome> {
        let Some(code) = view.get(&code_key(&info.code_hash)) else {
            return Err(refused(
                "unknown_code",
                format!(
                    "the code {} of contract {} is not installed",
                    hex::encode(&info.code_hash),
                    info.name
                ),
            ));
        };
        self.contracts.compile(&code).map_err(|e| {
            refused(
                "instantiate",
                format!("contract {} does not compile: {e}", info.name),
            )
        })
    }

    /// The events the contract call `tx_id` emitted (none if it failed or
    /// was not a call).
    pub fn contract_events(&self, tx_id: &[u8; 32]) -> Result<Vec<ContractEvent>, LedgerError> {
        use prost::Message;
        let Some(stored) = self.get(&crate::governance::keys::outcome_key(tx_id))? else {
            return Ok(Vec::new());
        };
        Ok(ContractOutcome::decode(stored.value.as_ref())
            .map(|o| if o.ok { o.events } else { Vec::new() })
            .unwrap_or_default())
    }

    /// Runs a read-only call of a deployed contract over the committed
    /// state, on this node alone (Query).
    pub fn query_contract(
        &self,
        contract: &str,
        function: &str,
        input: Vec<u8>,
        caller: [u8; 32],
        fuel: u64,
    ) -> Result<(ContractOutcome, u64), LedgerError> {
        let config = self.config();
        let tip = self.tip();
        let Some(info) = deployed(&config, contract) else {
            return Ok((
                refused(
                    "unknown_contract",
                    format!("no contract named {contract} is deployed"),
                ),
                tip.height,
            ));
        };
        let overlay = HashMap::new();
        let view = BlockView {
            db: self.db(),
            state_cf: cf(self.db(), CF_STATE)?,
            overlay: &overlay,
        };
        let compiled = match self.compiled(info, &view) {
            Ok(c) => c,
            Err(outcome) => return Ok((outcome, tip.height)),
        };
        let call = Call {
            contract: contract.to_owned(),
            function: function.to_owned(),
            input,
            caller,
            height: tip.height,
            time_ms: tip.timestamp_ms,
            fuel,
            read_only: true,
        };
        let outcome = self.contracts.execute(&compiled, call, &view);
        Ok((to_proto(contract, info.version, &outcome), tip.height))
    }
}
