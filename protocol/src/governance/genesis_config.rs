//! The configuration at height 0, derived from the genesis file. It is not
//! written to state: state holds a configuration only once a change has
//! been applied, and until then the genesis file is the configuration.

use crate::crypto::keys;
use crate::genesis::{self, Genesis};
use crate::proto::{
    AdmissionMode, AdmissionPolicy, ConsortiumConfig, MemberInfo, NodeInfo, VoteComparator,
};

pub fn from_genesis(genesis: &Genesis) -> ConsortiumConfig {
    let validators = genesis_validators(genesis);
    let members = genesis
        .members
        .iter()
        .map(|m| MemberInfo {
            name: m.name.clone(),
            organization: m.organization.clone(),
            // Validated when the genesis file was loaded.
            admin_key: keys::parse_public(&m.admin_key)
                .map(|k| k.to_bytes().to_vec())
                .unwrap_or_default(),
            nodes: genesis
                .validators
                .iter()
                .zip(&validators)
                .filter(|(v, _)| v.member == m.name)
                .map(|(_, node)| node.clone())
                .collect(),
            admitted_at: 0,
        })
        .collect();
    let admission = genesis.admission.clone().unwrap_or_default();
    let consortium_admin = if admission.consortium_admin.is_empty() {
        genesis
            .members
            .first()
            .map(|m| m.name.clone())
            .unwrap_or_default()
    } else {
        admission.consortium_admin.clone()
    };
    ConsortiumConfig {
        contracts: Vec::new(),
        version: 0,
        params: Some(genesis.params.to_proto()),
        scheduled: None,
        members,
        admission: Some(AdmissionPolicy {
            mode: match admission.mode {
                genesis::AdmissionMode::Automatic => AdmissionMode::Automatic,
                genesis::AdmissionMode::Vote => AdmissionMode::Vote,
            } as i32,
            threshold_percent: admission.threshold_percent,
            comparator: match admission.comparator {
                genesis::VoteComparator::GreaterThan => VoteComparator::GreaterThan,
                genesis::VoteComparator::AtLeast => VoteComparator::AtLeast,
            } as i32,
            expiry_ms: admission.expiry_ms,
            consortium_admin,
        }),
        next_proposal_id: 1,
        updated_height: 0,
        validators,
        validators_from: 1,
        scheduled_validators: None,
    }
}

/// The genesis validators, in replica index order.
pub fn genesis_validators(genesis: &Genesis) -> Vec<NodeInfo> {
    genesis
        .validators
        .iter()
        .map(|v| NodeInfo {
            name: v.name.clone(),
            // Validated when the genesis file was loaded.
            public_key: keys::parse_public(&v.public_key)
                .map(|k| k.to_bytes().to_vec())
                .unwrap_or_default(),
            peer_address: v.peer_address.clone(),
        })
        .collect()
}

/// A configuration stored before it recorded the validator set has the
/// genesis set in force.
pub fn fill_validators(config: &mut ConsortiumConfig, genesis: &Genesis) {
    if config.validators.is_empty() {
        config.validators = genesis_validators(genesis);
        config.validators_from = 1;
    }
}
