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
            let mut config: ConsortiumConfig =
                decode_config_record(&stored.value, "configuration")?;
            governance::genesis_config::fill_validators(&mut config, genesis);
            Ok(config)
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
        ChainParams::from_proto(&governance::params_at(&self.config(), height))
    }

    /// Hash of the validator set that orders the block at `height` (past
    /// the tip, as currently scheduled), as its header records it.
    pub fn validators_hash_at(&self, height: u64) -> [u8; 32] {
        let config = self.config();
        let epoch = governance::validators::epoch_at(&config, height);
        if epoch.base == 0 {
            *self.validators_hash()
        } else {
            governance::validators::validators_hash(epoch.validators)
        }
    }

    /// For the header of block `height`: the hash of the next block's
    /// validator set when that block starts a new epoch, else empty.
    /// `after` is the configuration as this block leaves it (`None`:
    /// unchanged).
    pub(super) fn next_validators_hash(
        &self,
        after: Option<&ConsortiumConfig>,
        height: u64,
    ) -> Vec<u8> {
        let before = self.config();
        let after = after.unwrap_or(&before);
        let this = governance::validators::epoch_at(&before, height);
        let next = governance::validators::epoch_at(after, height + 1);
        if next.base == this.base || next.base == 0 {
            return Vec::new();
        }
        governance::validators::validators_hash(next.validators).to_vec()
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
            Some(b) => {
                let mut config: ConsortiumConfig = decode_config_record(&b, "configuration")?;
                governance::genesis_config::fill_validators(&mut config, self.genesis());
                Ok(config)
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ed25519_dalek::SigningKey;

    use crate::block::Proposal as Block;
    use crate::config::StorageConfig;
    use crate::genesis::{Admission, AdmissionMode, ChainParams, Genesis, Member, Validator};
    use crate::governance::keys::CONFIG_KEY;
    use crate::ledger::Ledger;
    use crate::proto::{config_change::Change, ProposalState, UpdateParams, Vote};
    use crate::tx::envelope::{config, decode, put, sign};
    use crate::tx::VerifiedTx;

    fn admin(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[50 + i; 32])
    }

    fn genesis() -> Genesis {
        Genesis {
            chain_id: "cfg".into(),
            created_at_ms: 1,
            params: ChainParams::default(),
            validators: (0..4u8)
                .map(|i| Validator {
                    name: format!("n{i}"),
                    public_key: hex::encode(
                        SigningKey::from_bytes(&[i + 1; 32])
                            .verifying_key()
                            .to_bytes(),
                    ),
                    peer_address: "127.0.0.1:1".into(),
                    member: format!("org{i}"),
                })
                .collect(),
            members: (0..4u8)
                .map(|i| Member {
                    name: format!("org{i}"),
                    organization: String::new(),
                    admin_key: hex::encode(admin(i).verifying_key().to_bytes()),
                })
                .collect(),
            admission: Some(Admission {
                mode: AdmissionMode::Vote,
                threshold_percent: 50,
                ..Admission::default()
            }),
        }
    }

    fn tx(
        key: &SigningKey,
        nonce: u64,
        payload: crate::proto::tx_body::Payload,
    ) -> Arc<VerifiedTx> {
        Arc::new(
            decode(
                sign(key, "cfg", nonce, 1, payload),
                "cfg",
                &ChainParams::default().tx_limits(),
            )
            .expect("valid"),
        )
    }

    fn commit(ledger: &Ledger, txs: Vec<Arc<VerifiedTx>>) {
        let tip = ledger.tip();
        ledger
            .commit(&Block {
                height: tip.height + 1,
                timestamp_ms: tip.timestamp_ms + 200,
                proposer: [0; 32],
                txs,
            })
            .expect("commit");
    }

    #[test]
    fn configuration_changes_persist_are_committed_to_and_keep_their_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path(), genesis(), &StorageConfig::default()).expect("open");
        assert_eq!(ledger.config().version, 0);
        assert_eq!(ledger.config().members.len(), 4);
        commit(&ledger, vec![tx(&admin(9), 1, put("k", "v"))]);
        let root_before = ledger.header(1).expect("h").expect("block 1").state_root;

        // Proposal 1 (org0 approves by proposing) and org1's vote in the
        // same block: 2 of 4 = 50% >= 50%, in force from 2 + 21.
        let update = config(Change::UpdateParams(UpdateParams {
            block_interval_ms: Some(1_000),
            ..Default::default()
        }));
        let vote = config(Change::Vote(Vote {
            proposal_id: 1,
            approve: true,
        }));
        // A stranger's change is committed with its refusal as outcome.
        let stranger = tx(&admin(9), 2, vote.clone());
        commit(
            &ledger,
            vec![
                tx(&admin(0), 1, update),
                tx(&admin(1), 1, vote),
                stranger.clone(),
            ],
        );
        let p = ledger.proposal(1).expect("read").expect("proposal 1");
        assert_eq!(p.state, ProposalState::Approved as i32);
        assert_eq!(p.effective_height, 23);
        let refused = ledger
            .config_outcome(&stranger.id.0)
            .expect("read")
            .expect("outcome recorded");
        assert!(!refused.applied);
        assert!(
            refused.message.contains("not the admin key"),
            "{}",
            refused.message
        );
        assert_eq!(ledger.params_at(22).block_interval_ms, 200);
        assert_eq!(ledger.params_at(23).block_interval_ms, 1_000);
        let root_after = ledger.header(2).expect("h").expect("block 2").state_root;
        assert_ne!(
            root_before, root_after,
            "configuration is in the state root"
        );

        // Reopened, the ledger reads the configuration back from state.
        drop(ledger);
        let ledger =
            Ledger::open(dir.path(), genesis(), &StorageConfig::default()).expect("reopen");
        assert_eq!(ledger.config().version, 2);
        assert_eq!(ledger.params_at(23).block_interval_ms, 1_000);
        assert_eq!(ledger.proposals(None, 10).expect("list").len(), 1);
        assert_eq!(ledger.config_at(1).expect("at 1").version, 0);
        assert_eq!(ledger.config_at(2).expect("at 2").version, 2);
        let history = ledger.history(CONFIG_KEY, None, 10).expect("history");
        assert_eq!(history.entries.len(), 2, "one version per applied change");
    }
}
