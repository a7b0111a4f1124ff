//! A Consortium's chain parameters: what its spec asks the chain for, and the
//! status types that show what genesis fixed and what the chain holds. The
//! parameters themselves, and their live and fixed halves, are the chain's
//! own (`kubeledger_protocol::chain_params`).

use kubeledger_protocol::chain_params::{ChainParams, FixedParams, LiveParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{parse_duration, ConsortiumSpec, ProposalStatus};
use crate::{Error, Result};

impl ConsortiumSpec {
    /// The chain parameters this spec asks for. The CRD's schema and CEL
    /// rules say the same; checking here too keeps `render` (which has no
    /// API server to enforce them) from producing a genesis the node would
    /// refuse.
    pub fn chain_params(&self) -> Result<ChainParams> {
        let invalid = |m: &str| Err(Error::InvalidSpec(m.to_string()));
        let block_interval_ms = millis("blockInterval", &self.block_interval)?;
        let view_change_timeout_ms = millis("viewChangeTimeout", &self.view_change_timeout)?;
        if !(10..=60_000).contains(&block_interval_ms) {
            return invalid("blockInterval must be between 10ms and 1m");
        }
        if view_change_timeout_ms <= block_interval_ms {
            return invalid("viewChangeTimeout must be longer than blockInterval");
        }
        if !(1..=100_000).contains(&self.max_block_txs) {
            return invalid("maxBlockTxs must be between 1 and 100000");
        }
        if !(256..=16 * 1024 * 1024).contains(&self.max_tx_bytes) {
            return invalid("maxTxBytes must be between 256 bytes and 16 MiB");
        }
        if self.max_tx_bytes > self.max_block_bytes || self.max_block_bytes > 64 * 1024 * 1024 {
            return invalid("maxBlockBytes must be at least maxTxBytes and at most 64 MiB");
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return invalid("maxKeyBytes and maxValueBytes must be positive");
        }
        if self.checkpoint_interval == 0 {
            return invalid("checkpointInterval must be positive");
        }
        Ok(ChainParams {
            block_interval_ms,
            max_block_txs: self.max_block_txs,
            max_block_bytes: self.max_block_bytes,
            max_tx_bytes: self.max_tx_bytes,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            checkpoint_interval: self.checkpoint_interval,
            view_change_timeout_ms,
        })
    }
}

fn millis(field: &str, s: &str) -> Result<u32> {
    let d = parse_duration(s)?;
    u32::try_from(d.as_millis())
        .map_err(|_| Error::InvalidSpec(format!("{field} {s:?} is too long")))
}

/// Chain parameters as fixed by genesis.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveConfig {
    pub chain_id: String,
    #[serde(flatten)]
    pub live: LiveParams,
    #[serde(flatten)]
    pub fixed: FixedParams,
}

impl EffectiveConfig {
    pub fn new(chain_id: &str, params: &ChainParams) -> Self {
        Self {
            chain_id: chain_id.to_string(),
            live: params.live(),
            fixed: params.fixed(),
        }
    }
}

/// The on-chain configuration, as last read from a validator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainConfigStatus {
    /// Configuration version: 0 at genesis, +1 with every applied change.
    pub version: u64,
    /// Height the configuration was read at.
    pub height: u64,
    /// Parameters in force for the next block.
    #[serde(flatten)]
    pub params: LiveParams,
    /// First height at which these parameters applied (0: since genesis).
    pub from_height: u64,
    /// Parameters decided but not yet in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<ScheduledParamsStatus>,
    /// The open proposal to change parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_proposal: Option<ProposalStatus>,
    /// Members of the consortium on chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Why the spec's parameters are not (yet) proposed, or what the chain
    /// answered the last proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Parameters the chain refused to take; not proposed again until the
    /// spec asks for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_params: Option<String>,
}

/// Parameters decided on chain, in force from `fromHeight`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledParamsStatus {
    #[serde(flatten)]
    pub params: LiveParams,
    pub from_height: u64,
    pub proposal_id: u64,
}
