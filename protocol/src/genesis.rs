//! The consortium genesis file: chain id, chain parameters and validators.
//!
//! Every node of a consortium loads the same file; the operator generates it
//! once all founding members have keys, `kubeledger up` for local runs. The
//! genesis block (height 0) commits to it, so a node refuses to start on a
//! data directory created from a different genesis.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::chain_params::{
    view_change_bytes, ChainParams, MAX_CONSENSUS_MESSAGE_BYTES, VIEW_CHANGE_SLOT_OVERHEAD,
};
use crate::crypto::{keys, Hash32};

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("cannot read genesis file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("genesis file {path} is not valid JSON for a genesis: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid genesis: {0}")]
    Invalid(String),
}

/// One validator node of the consortium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    pub name: String,
    /// ed25519 public key, hex.
    pub public_key: String,
    /// host:port of its peer endpoint.
    pub peer_address: String,
    /// The member organisation running it.
    #[serde(default)]
    pub member: String,
}

/// A founding member organisation and the key that signs its
/// configuration transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    #[serde(default)]
    pub organization: String,
    /// ed25519 public key of the member's admin key, hex.
    pub admin_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AdmissionMode {
    /// The consortium admin's proposals take effect at once.
    #[default]
    Automatic,
    /// Proposals need the approval of a share of the members.
    Vote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum VoteComparator {
    GreaterThan,
    #[default]
    AtLeast,
}

/// How configuration proposals are decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admission {
    pub mode: AdmissionMode,
    /// Share of the current members whose approval decides a proposal.
    pub threshold_percent: u32,
    pub comparator: VoteComparator,
    /// Block time after which an undecided proposal lapses.
    pub expiry_ms: u64,
    /// The member whose admin key is the consortium admin; the first
    /// member when empty.
    pub consortium_admin: String,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            mode: AdmissionMode::Automatic,
            threshold_percent: 67,
            comparator: VoteComparator::AtLeast,
            expiry_ms: 24 * 3600 * 1000,
            consortium_admin: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub params: ChainParams,
    pub validators: Vec<Validator>,
    /// Founding members with their admin keys. Without them the
    /// configuration cannot change after genesis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
}

impl Genesis {
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: path.to_owned(),
            source,
        })?;
        let genesis: Genesis =
            serde_json::from_str(&text).map_err(|source| GenesisError::Parse {
                path: path.to_owned(),
                source,
            })?;
        genesis.validate()?;
        Ok(genesis)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id.is_empty()
            || self.chain_id.len() > 64
            || !self
                .chain_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(GenesisError::Invalid(format!(
                "chain_id {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                self.chain_id
            )));
        }
        if self.validators.is_empty() {
            return Err(GenesisError::Invalid(
                "at least one validator is required".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.validators {
            let key = keys::parse_public(&v.public_key)
                .map_err(|e| GenesisError::Invalid(format!("validator {}: {e}", v.name)))?;
            if !seen.insert(key.to_bytes()) {
                return Err(GenesisError::Invalid(format!(
                    "validator {} repeats a public key",
                    v.name
                )));
            }
        }
        self.validate_members()?;
        self.params.validate()
    }

    fn validate_members(&self) -> Result<(), GenesisError> {
        let bad = |m: String| Err(GenesisError::Invalid(m));
        let mut names = std::collections::BTreeSet::new();
        let mut admin_keys = std::collections::BTreeSet::new();
        for m in &self.members {
            if !crate::governance::apply::valid_name(&m.name) {
                return bad(format!(
                    "member name {:?} must be 1-63 characters of [a-z0-9.-]",
                    m.name
                ));
            }
            if !names.insert(m.name.as_str()) {
                return bad(format!("member {} is listed twice", m.name));
            }
            let key = keys::parse_public(&m.admin_key)
                .map_err(|e| GenesisError::Invalid(format!("member {} admin_key: {e}", m.name)))?;
            if !admin_keys.insert(key.to_bytes()) {
                return bad(format!(
                    "member {} repeats another member's admin key",
                    m.name
                ));
            }
        }
        if !self.members.is_empty() {
            for v in &self.validators {
                if !names.contains(v.member.as_str()) {
                    return bad(format!(
                        "validator {} belongs to member {:?}, which is not in members",
                        v.name, v.member
                    ));
                }
            }
        }
        if let Some(a) = &self.admission {
            if self.members.is_empty() {
                return bad("admission needs members with admin keys".into());
            }
            if !(1..=100).contains(&a.threshold_percent) {
                return bad("admission.threshold_percent must be between 1 and 100".into());
            }
            if a.expiry_ms == 0 {
                return bad("admission.expiry_ms must be positive".into());
            }
            if !a.consortium_admin.is_empty() && !names.contains(a.consortium_admin.as_str()) {
                return bad(format!(
                    "admission.consortium_admin {:?} is not a member",
                    a.consortium_admin
                ));
            }
        }
        Ok(())
    }

    /// Hash of the validator set: SHA-256 over the public keys in order.
    pub fn validators_hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"kubeledger-validators-v1");
        for v in &self.validators {
            h.update(v.public_key.trim().to_ascii_lowercase().as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }

    /// Hash of the whole genesis (its canonical JSON), recorded in block 0.
    pub fn hash(&self) -> Hash32 {
        crate::crypto::sha256(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

/// A one-validator chain `"t"` with default parameters, for unit tests
/// (here, and in the node's with the `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub fn single_validator_for_tests(key: &ed25519_dalek::SigningKey) -> Genesis {
    Genesis {
        chain_id: "t".into(),
        created_at_ms: 1,
        params: ChainParams::default(),
        validators: vec![Validator {
            name: "n0".into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            peer_address: "127.0.0.1:1".into(),
            member: String::new(),
        }],
        members: Vec::new(),
        admission: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Genesis {
        Genesis {
            chain_id: "escrow-dev".into(),
            created_at_ms: 1,
            params: ChainParams::default(),
            validators: vec![Validator {
                name: "n0".into(),
                public_key: hex::encode(keys::generate().verifying_key().to_bytes()),
                peer_address: "127.0.0.1:7051".into(),
                member: "org1".into(),
            }],
            members: Vec::new(),
            admission: None,
        }
    }

    #[test]
    fn round_trips_through_json_and_validates() {
        let g = sample();
        let parsed: Genesis = serde_json::from_str(&g.to_json()).expect("json");
        assert_eq!(parsed, g);
        parsed.validate().expect("valid");
    }

    #[test]
    fn rejects_bad_values_with_a_reason() {
        let mut g = sample();
        g.chain_id = "bad id!".into();
        assert!(g.validate().unwrap_err().to_string().contains("chain_id"));
        let mut g = sample();
        g.params.block_interval_ms = 0;
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("block_interval_ms"));
        let mut g = sample();
        g.validators[0].public_key = "zz".into();
        assert!(g.validate().is_err());
        let mut g = sample();
        g.validators.push(g.validators[0].clone());
        assert!(g.validate().unwrap_err().to_string().contains("repeats"));
    }

    #[test]
    fn parameters_whose_view_change_would_not_fit_a_message_are_refused() {
        // 2 x 10 blocks of 4 MiB: fits.
        sample().params.validate().expect("defaults fit");
        // The CRD's largest blocks (64 MiB) with its default interval: a
        // window of 20 such blocks is over 1 GiB.
        let p = ChainParams {
            max_block_bytes: 64 * 1024 * 1024,
            ..ChainParams::default()
        };
        let err = p.validate().unwrap_err().to_string();
        assert!(
            err.contains("VIEW-CHANGE") && err.contains("checkpoint_interval 10"),
            "{err}"
        );
        // Or a long interval of ordinary blocks.
        let p = ChainParams {
            checkpoint_interval: 100_000,
            ..ChainParams::default()
        };
        assert!(p.validate().is_err());
        // The largest interval that still fits 4 MiB blocks passes.
        let mut p = ChainParams::default();
        let per_block = p.max_block_bytes + VIEW_CHANGE_SLOT_OVERHEAD;
        p.checkpoint_interval = (MAX_CONSENSUS_MESSAGE_BYTES as u64 / per_block / 2) as u32;
        p.validate().expect("the largest interval that fits");
        p.checkpoint_interval += 1;
        assert!(p.validate().is_err());
    }

    #[test]
    fn members_and_admission_are_checked() {
        let mut g = sample();
        let admin = hex::encode(keys::generate().verifying_key().to_bytes());
        g.members.push(Member {
            name: "org1".into(),
            organization: "Org One".into(),
            admin_key: admin.clone(),
        });
        g.admission = Some(Admission::default());
        g.validate().expect("valid");
        let parsed: Genesis = serde_json::from_str(&g.to_json()).expect("json");
        assert_eq!(parsed, g);

        let mut dup = g.clone();
        dup.members.push(Member {
            name: "org2".into(),
            organization: String::new(),
            admin_key: admin,
        });
        assert!(dup
            .validate()
            .unwrap_err()
            .to_string()
            .contains("admin key"));
        let mut orphan = g.clone();
        orphan.validators[0].member = "nobody".into();
        assert!(orphan
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not in members"));
        let mut bad_admin = g.clone();
        if let Some(a) = bad_admin.admission.as_mut() {
            a.consortium_admin = "org9".into();
        }
        assert!(bad_admin.validate().is_err());
        let mut bad_threshold = g;
        if let Some(a) = bad_threshold.admission.as_mut() {
            a.threshold_percent = 0;
        }
        assert!(bad_threshold.validate().is_err());
    }

    #[test]
    fn a_genesis_without_members_keeps_its_json_and_hash() {
        let g = sample();
        assert!(!g.to_json().contains("members"));
        assert!(!g.to_json().contains("admission"));
    }
}
