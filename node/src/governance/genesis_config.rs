//! The configuration at height 0, derived from the genesis file. It is not
//! written to state: state holds a configuration only once a change has
//! been applied, and until then the genesis file is the configuration.

use super::params::to_proto;
use crate::crypto::keys;
use crate::genesis::{self, Genesis};
use crate::proto::{
    AdmissionMode, AdmissionPolicy, ConsortiumConfig, MemberInfo, NodeInfo, VoteComparator,
};

pub fn from_genesis(genesis: &Genesis) -> ConsortiumConfig {
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
                .filter(|v| v.member == m.name)
                .map(|v| NodeInfo {
                    name: v.name.clone(),
                    public_key: keys::parse_public(&v.public_key)
                        .map(|k| k.to_bytes().to_vec())
                        .unwrap_or_default(),
                    peer_address: v.peer_address.clone(),
                })
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
        version: 0,
        params: Some(to_proto(&genesis.params)),
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
        pending_validator_changes: Vec::new(),
    }
}
