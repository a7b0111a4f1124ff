//! The consortium genesis document, in the node's `genesis.json` format.
//!
//! Built once, when every founding member has published its node keys, and never
//! changed afterwards: the operator keeps the exact JSON text in the Consortium
//! status and copies that text, byte for byte, into every member namespace.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::build::names;
use crate::crd::{parse_duration, Consortium, ConsortiumSpec, EffectiveConfig, Member};
use crate::{Error, Result};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    pub chain_id: String,
    pub created_at_ms: u64,
    pub params: GenesisParams,
    pub validators: Vec<GenesisValidator>,
}

/// Chain parameters, field for field the node's `ChainParams` (same names,
/// types and order), so the node's `deny_unknown_fields` parser accepts them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GenesisParams {
    pub block_interval_ms: u32,
    pub max_block_txs: u32,
    pub max_block_bytes: u64,
    pub max_tx_bytes: u64,
    pub max_key_bytes: u32,
    pub max_value_bytes: u64,
    pub checkpoint_interval: u32,
    pub view_change_timeout_ms: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GenesisValidator {
    pub name: String,
    pub public_key: String,
    pub peer_address: String,
    pub member: String,
}

impl Genesis {
    /// The canonical text stored and distributed.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    pub fn effective_config(&self) -> EffectiveConfig {
        EffectiveConfig {
            chain_id: self.chain_id.clone(),
            block_interval_ms: self.params.block_interval_ms,
            max_block_txs: self.params.max_block_txs,
            max_block_bytes: self.params.max_block_bytes,
            max_tx_bytes: self.params.max_tx_bytes,
            max_key_bytes: self.params.max_key_bytes,
            max_value_bytes: self.params.max_value_bytes,
            checkpoint_interval: self.params.checkpoint_interval,
            view_change_timeout_ms: self.params.view_change_timeout_ms,
        }
    }
}

/// Hex SHA-256 of a genesis text.
pub fn genesis_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn millis(field: &str, s: &str) -> Result<u32> {
    let d = parse_duration(s)?;
    u32::try_from(d.as_millis())
        .map_err(|_| Error::InvalidSpec(format!("{field} {s:?} is too long")))
}

/// Chain parameters from the spec. The CRD's schema and CEL rules say the same;
/// repeating the node's own genesis checks here keeps `render` (which has no API
/// server to enforce them) from producing a genesis the node would refuse.
pub fn chain_params(spec: &ConsortiumSpec) -> Result<GenesisParams> {
    let invalid = |m: &str| Err(Error::InvalidSpec(m.to_string()));
    let block_interval_ms = millis("blockInterval", &spec.block_interval)?;
    let view_change_timeout_ms = millis("viewChangeTimeout", &spec.view_change_timeout)?;
    if !(10..=60_000).contains(&block_interval_ms) {
        return invalid("blockInterval must be between 10ms and 1m");
    }
    if view_change_timeout_ms <= block_interval_ms {
        return invalid("viewChangeTimeout must be longer than blockInterval");
    }
    if !(1..=100_000).contains(&spec.max_block_txs) {
        return invalid("maxBlockTxs must be between 1 and 100000");
    }
    if !(256..=16 * 1024 * 1024).contains(&spec.max_tx_bytes) {
        return invalid("maxTxBytes must be between 256 bytes and 16 MiB");
    }
    if spec.max_tx_bytes > spec.max_block_bytes || spec.max_block_bytes > 64 * 1024 * 1024 {
        return invalid("maxBlockBytes must be at least maxTxBytes and at most 64 MiB");
    }
    if spec.max_key_bytes == 0 || spec.max_value_bytes == 0 {
        return invalid("maxKeyBytes and maxValueBytes must be positive");
    }
    if spec.checkpoint_interval == 0 {
        return invalid("checkpointInterval must be positive");
    }
    Ok(GenesisParams {
        block_interval_ms,
        max_block_txs: spec.max_block_txs,
        max_block_bytes: spec.max_block_bytes,
        max_tx_bytes: spec.max_tx_bytes,
        max_key_bytes: spec.max_key_bytes,
        max_value_bytes: spec.max_value_bytes,
        checkpoint_interval: spec.checkpoint_interval,
        view_change_timeout_ms,
    })
}

/// Why genesis cannot be built yet (not an error: the founders are still starting).
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    MissingFounder(String),
    MissingKeys(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::MissingFounder(m) => write!(f, "founding member {m} does not exist yet"),
            NotReady::MissingKeys(m) => {
                write!(f, "founding member {m} has not published its node keys yet")
            }
        }
    }
}

/// Builds genesis from the founders (in `spec.founders` order; `members` may hold
/// more Members than the founders). Each founder must have published one public
/// key per node in its status.
pub fn build_genesis(
    consortium: &Consortium,
    members: &[Member],
    created_at_ms: u64,
    cluster_domain: &str,
) -> Result<std::result::Result<Genesis, NotReady>> {
    let params = chain_params(&consortium.spec)?;
    let mut validators = Vec::new();
    for founder in &consortium.spec.founders {
        let id = format!("{}/{}", founder.namespace, founder.name);
        let Some(member) = members.iter().find(|m| {
            m.metadata.name.as_deref() == Some(founder.name.as_str())
                && m.metadata.namespace.as_deref() == Some(founder.namespace.as_str())
        }) else {
            return Ok(Err(NotReady::MissingFounder(id)));
        };
        let keys = member
            .status
            .as_ref()
            .map(|s| s.node_public_keys.clone())
            .unwrap_or_default();
        for node in names::node_names(&founder.name, member.spec.replicas) {
            let Some(key) = keys.iter().find(|k| k.name == node) else {
                return Ok(Err(NotReady::MissingKeys(id)));
            };
            if validators.iter().any(|v: &GenesisValidator| v.name == node) {
                return Err(Error::InvalidSpec(format!(
                    "node name {node} is used by two founding members; Member names must be unique across namespaces"
                )));
            }
            validators.push(GenesisValidator {
                peer_address: names::peer_address(
                    &node,
                    &founder.name,
                    &founder.namespace,
                    cluster_domain,
                ),
                name: node,
                public_key: key.public_key.clone(),
                member: founder.name.clone(),
            });
        }
    }
    Ok(Ok(Genesis {
        chain_id: consortium.spec.chain_id.clone(),
        created_at_ms,
        params,
        validators,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn genesis_from_founders_with_keys() {
        let c = fixtures::consortium();
        let members = fixtures::members_with_keys();
        let g = build_genesis(&c, &members, 1_764_000_000_000, "cluster.local")
            .expect("valid")
            .expect("ready");
        assert_eq!(g.chain_id, "escrow-prod");
        assert_eq!(g.validators.len(), 3);
        assert_eq!(g.validators[0].name, "org1-0");
        assert_eq!(
            g.validators[0].peer_address,
            "org1-0.org1-nodes.org1.svc.cluster.local:7051"
        );
        assert_eq!(g.params.block_interval_ms, 200);
        let json: serde_json::Value =
            serde_json::from_str(&g.to_json().expect("json")).expect("parse");
        assert_eq!(json["params"]["view_change_timeout_ms"], 2000);
    }

    #[test]
    fn genesis_waits_for_keys() {
        let c = fixtures::consortium();
        let mut members = fixtures::members_with_keys();
        members[1].status = None;
        let r = build_genesis(&c, &members, 0, "cluster.local").expect("valid");
        assert_eq!(r, Err(NotReady::MissingKeys("org2/org2".into())));
        let r = build_genesis(&c, &members[..1], 0, "cluster.local").expect("valid");
        assert_eq!(r, Err(NotReady::MissingFounder("org2/org2".into())));
    }
}
