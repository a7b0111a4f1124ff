//! The consortium genesis document, in the node's `genesis.json` format.
//!
//! Built once, when every founding member has published its node keys, and never
//! changed afterwards: the operator keeps the exact JSON text in the Consortium
//! status and copies that text, byte for byte, into every member namespace.

use sha2::{Digest, Sha256};

use crate::build::names;
use crate::crd::{
    parse_duration, AdmissionMode, AdmissionPolicy, Consortium, EffectiveConfig, Member,
    VoteComparator,
};
use crate::{Error, Result};

/// The node's own genesis types: the operator writes exactly what the node
/// parses, by construction.
pub use kubeledger_protocol::genesis::{
    Admission as GenesisAdmission, Genesis, Member as GenesisMember, Validator as GenesisValidator,
};
use kubeledger_protocol::genesis::{
    AdmissionMode as ChainAdmissionMode, VoteComparator as ChainVoteComparator,
};

/// Threshold, comparator and expiry the node uses when no vote is configured.
const DEFAULT_THRESHOLD_PERCENT: u32 = 67;
const DEFAULT_EXPIRY_MS: u64 = 24 * 3600 * 1000;

/// The genesis admission policy of a Consortium whose consortium admin is
/// `admin` (the first founder).
pub fn admission(policy: &AdmissionPolicy, admin: &str) -> Result<GenesisAdmission> {
    let (threshold_percent, comparator, expiry_ms) = match &policy.vote {
        Some(v) => {
            let expiry = parse_duration(&v.expiry)?;
            let expiry_ms = u64::try_from(expiry.as_millis())
                .ok()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    Error::InvalidSpec(format!(
                        "admission.vote.expiry {:?} must be a positive duration",
                        v.expiry
                    ))
                })?;
            (u32::from(v.threshold_percent), v.comparator, expiry_ms)
        }
        None => (
            DEFAULT_THRESHOLD_PERCENT,
            VoteComparator::AtLeast,
            DEFAULT_EXPIRY_MS,
        ),
    };
    if !(1..=100).contains(&threshold_percent) {
        return Err(Error::InvalidSpec(
            "admission.vote.thresholdPercent must be between 1 and 100".into(),
        ));
    }
    if policy.mode == AdmissionMode::Vote && policy.vote.is_none() {
        return Err(Error::InvalidSpec(
            "admission mode Vote requires the vote settings".into(),
        ));
    }
    Ok(GenesisAdmission {
        mode: match policy.mode {
            AdmissionMode::Automatic => ChainAdmissionMode::Automatic,
            AdmissionMode::Vote => ChainAdmissionMode::Vote,
        },
        threshold_percent,
        comparator: match comparator {
            VoteComparator::GreaterThan => ChainVoteComparator::GreaterThan,
            VoteComparator::AtLeast => ChainVoteComparator::AtLeast,
        },
        expiry_ms,
        consortium_admin: admin.to_string(),
    })
}

/// A genesis as the Consortium status shows it. (Its canonical text, stored
/// and distributed, is the node's `Genesis::to_json`.)
pub trait GenesisText {
    /// The parameters as the Consortium status shows them.
    fn effective_config(&self) -> EffectiveConfig;
}

impl GenesisText for Genesis {
    fn effective_config(&self) -> EffectiveConfig {
        EffectiveConfig::new(&self.chain_id, &self.params)
    }
}

/// Hex SHA-256 of a genesis text.
pub fn genesis_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Why genesis cannot be built yet (not an error: the founders are still starting).
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    MissingFounder(String),
    MissingKeys(String),
    MissingAdminKey(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::MissingFounder(m) => write!(f, "founding member {m} does not exist yet"),
            NotReady::MissingKeys(m) => {
                write!(f, "founding member {m} has not published its node keys yet")
            }
            NotReady::MissingAdminKey(m) => {
                write!(f, "founding member {m} has not published its admin key yet")
            }
        }
    }
}

/// Builds genesis from the founders (in `spec.founders` order; `members` may hold
/// more Members than the founders). Each founder must have published one public
/// key per node and its admin public key in its status. The first founder is
/// the consortium admin.
pub fn build_genesis(
    consortium: &Consortium,
    members: &[Member],
    created_at_ms: u64,
    cluster_domain: &str,
) -> Result<std::result::Result<Genesis, NotReady>> {
    let params = consortium.spec.chain_params()?;
    let first = consortium
        .spec
        .founders
        .first()
        .ok_or_else(|| Error::InvalidSpec("at least one founding member is required".into()))?;
    let admission = admission(&consortium.spec.admission, &first.name)?;
    let mut validators = Vec::new();
    let mut genesis_members = Vec::new();
    for founder in &consortium.spec.founders {
        let id = format!("{}/{}", founder.namespace, founder.name);
        if founder.name.len() > 63 {
            return Err(Error::InvalidSpec(format!(
                "founding member name {} is longer than the 63 characters a chain member name may have",
                founder.name
            )));
        }
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
        let Some(admin_key) = member
            .status
            .as_ref()
            .and_then(|s| s.admin_public_key.clone())
        else {
            return Ok(Err(NotReady::MissingAdminKey(id)));
        };
        if genesis_members
            .iter()
            .any(|g: &GenesisMember| g.name == founder.name)
        {
            return Err(Error::InvalidSpec(format!(
                "founding member name {} is used twice; Member names must be unique across namespaces",
                founder.name
            )));
        }
        genesis_members.push(GenesisMember {
            name: founder.name.clone(),
            organization: member.spec.organization.clone(),
            admin_key,
        });
    }
    Ok(Ok(Genesis {
        chain_id: consortium.spec.chain_id.clone(),
        created_at_ms,
        params,
        validators,
        members: genesis_members,
        admission: Some(admission),
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
        let json: serde_json::Value = serde_json::from_str(&g.to_json()).expect("parse");
        assert_eq!(json["params"]["view_change_timeout_ms"], 2000);
        // The node's `members` and `admission`, in its field order.
        assert_eq!(
            json["members"][0],
            serde_json::json!({
                "name": "org1",
                "organization": "Org One",
                "admin_key": fixtures::admin_public_key("org1"),
            })
        );
        assert_eq!(json["members"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            json["admission"],
            serde_json::json!({
                "mode": "Automatic",
                "threshold_percent": 67,
                "comparator": "AtLeast",
                "expiry_ms": 86_400_000u64,
                "consortium_admin": "org1",
            })
        );
    }

    #[test]
    fn admission_follows_the_vote_policy() {
        let mut c = fixtures::consortium();
        c.spec.admission = AdmissionPolicy {
            mode: AdmissionMode::Vote,
            vote: Some(crate::crd::VotePolicy {
                threshold_percent: 50,
                comparator: VoteComparator::GreaterThan,
                expiry: "1h".into(),
            }),
        };
        let g = build_genesis(&c, &fixtures::members_with_keys(), 0, "cluster.local")
            .expect("valid")
            .expect("ready");
        assert_eq!(
            g.admission,
            Some(GenesisAdmission {
                mode: ChainAdmissionMode::Vote,
                threshold_percent: 50,
                comparator: ChainVoteComparator::GreaterThan,
                expiry_ms: 3_600_000,
                consortium_admin: "org1".into(),
            })
        );
        c.spec.admission.vote = None;
        assert!(build_genesis(&c, &fixtures::members_with_keys(), 0, "cluster.local").is_err());
    }

    #[test]
    fn genesis_waits_for_admin_keys() {
        let c = fixtures::consortium();
        let mut members = fixtures::members_with_keys();
        if let Some(s) = members[1].status.as_mut() {
            s.admin_public_key = None;
        }
        let r = build_genesis(&c, &members, 0, "cluster.local").expect("valid");
        assert_eq!(r, Err(NotReady::MissingAdminKey("org2/org2".into())));
    }

    #[test]
    fn genesis_without_members_keeps_the_old_format() {
        let text = r#"{"chain_id":"x","created_at_ms":1,"params":{"block_interval_ms":200,"max_block_txs":1,"max_block_bytes":1024,"max_tx_bytes":256,"max_key_bytes":1,"max_value_bytes":1,"checkpoint_interval":1,"view_change_timeout_ms":2000},"validators":[]}"#;
        let g: Genesis = serde_json::from_str(text).expect("old genesis parses");
        assert!(g.members.is_empty() && g.admission.is_none());
        assert_eq!(serde_json::to_string(&g).expect("json"), text);
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
