//! Reading the consortium configuration and its proposals from state.

use std::sync::Arc;

use rocksdb::DB;

use super::execute::decode_config_record;
use super::store::{cf, StoredValue, CF_STATE};
use super::{Ledger, LedgerError};
use crate::genesis::{ChainParams, Genesis};
use crate::governance::{
    self,
    apply::effective_state,
    keys::{outcome_key, proposal_key, CONFIG_KEY},
};
use crate::proto::{ConfigOutcome, ConsortiumConfig, Proposal, ProposalState};

/// The configuration as stored, or the genesis configuration if no change
/// was ever applied.
pub(super) fn load(db: &DB, genesis: &Genesis) -> Result<ConsortiumConfig, LedgerError> {
    match db.get_pinned_cf(cf(db, CF_STATE)?, CONFIG_KEY)? {
        Some(bytes) => {
            let stored = StoredValue::decode(&bytes)?;
            decode_config_record(&stored.value, "configuration")
        }
        None => Ok(governance::genesis_config::from_genesis(genesis)),
    }
}

impl Ledger {
    /// The configuration as of the tip.
    pub fn config(&self) -> Arc<ConsortiumConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(super) fn set_config(&self, config: ConsortiumConfig) {
        let config = Arc::new(config);
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// Chain parameters in force for the block at `height` (at or after
    /// the tip's next block; earlier heights may have had others).
    pub fn params_at(&self, height: u64) -> ChainParams {
        governance::params::from_proto(&governance::params_at(&self.config(), height))
    }

    /// The configuration as it was after block `height`: the last version
    /// written at or below it, or the genesis configuration.
    pub fn config_at(&self, height: u64) -> Result<ConsortiumConfig, LedgerError> {
        let mut found: Option<Vec<u8>> = None;
        let mut after = None;
        loop {
            let page = self.history(CONFIG_KEY, after, 256)?;
            for e in &page.entries {
                if e.height > height {
                    return self.decode_config(found);
                }
                found = Some(e.value.clone());
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return self.decode_config(found),
            }
        }
    }

    fn decode_config(&self, bytes: Option<Vec<u8>>) -> Result<ConsortiumConfig, LedgerError> {
        match bytes {
            Some(b) => decode_config_record(&b, "configuration"),
            None => Ok(governance::genesis_config::from_genesis(self.genesis())),
        }
    }

    /// A stored proposal, its state as of the tip's block time.
    pub fn proposal(&self, id: u64) -> Result<Option<Proposal>, LedgerError> {
        let Some(stored) = self.get(&proposal_key(id))? else {
            return Ok(None);
        };
        let mut p: Proposal = decode_config_record(&stored.value, "proposal")?;
        p.state = effective_state(&p, self.tip().timestamp_ms) as i32;
        Ok(Some(p))
    }

    /// Up to `limit` proposals, newest first, optionally only those in
    /// `state` (as of the tip's block time).
    pub fn proposals(
        &self,
        state: Option<ProposalState>,
        limit: usize,
    ) -> Result<Vec<Proposal>, LedgerError> {
        let next = self.config().next_proposal_id;
        let mut out = Vec::new();
        for id in (1..next).rev() {
            if out.len() >= limit {
                break;
            }
            if let Some(p) = self.proposal(id)? {
                if state.is_none_or(|s| p.state == s as i32) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    /// What became of a committed configuration transaction.
    pub fn config_outcome(&self, tx_id: &[u8; 32]) -> Result<Option<ConfigOutcome>, LedgerError> {
        match self.get(&outcome_key(tx_id))? {
            Some(stored) => Ok(Some(decode_config_record(&stored.value, "outcome")?)),
            None => Ok(None),
        }
    }
}
